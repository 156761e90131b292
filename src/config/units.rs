//! The config's units and value types: durations (humantime or bare seconds, at most 100
//! years), sizes (`KiB`/`MiB`/`GiB` or bytes), reading TOML values as them, and the "did you
//! mean" of an unknown key.

use std::time::Duration;

use toml::Value;

/// A duration as in the config file: humantime (`90s`, `1h 30m`, `7d`) or bare seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("duration {s:?} is too large"))?
    } else {
        humantime::parse_duration(s)
            .map_err(|e| format!("invalid duration {s:?}: {e} (write e.g. 90s, 15m, 1h 30m, 7d)"))?
    };
    capped(d).map_err(|e| format!("duration {s:?} {e}"))
}

/// The longest duration any setting takes: 100 years (of 365.25 days, as humantime's `100y`).
/// Longer is surely a typo, and keeping every duration this short means no time arithmetic
/// can overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(3_155_760_000);

fn capped(d: Duration) -> Result<Duration, String> {
    if d > MAX_DURATION {
        Err("is over the 100-year maximum".into())
    } else {
        Ok(d)
    }
}

/// A size as in the config file: a byte count, or a number with `KiB`, `MiB`, `GiB`, `TiB`
/// (or `K`, `M`, `G`, `T`, also powers of 1024, as systemd and `du -h` read them).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits_end);
    let unit = unit.trim();
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        // KB is 1000 to some readers and 1024 to others: make the user say which.
        "kb" | "mb" | "gb" | "tb" => {
            return Err(format!(
                "ambiguous size unit {unit:?} in {s:?}: write KiB, MiB, GiB (powers of 1024) or a byte count"
            ))
        }
        _ => {
            return Err(format!(
                "invalid size {s:?} (write a byte count or a number with KiB, MiB, GiB)"
            ))
        }
    };
    if number.is_empty() {
        return Err(format!(
            "invalid size {s:?} (write a byte count or a number with KiB, MiB, GiB)"
        ));
    }
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| format!("size {s:?} is too large"))
}

pub(super) fn type_error(expected: &str, v: &Value) -> String {
    format!("expected {expected}, found {}", v.type_str())
}

pub(super) fn string(v: &Value) -> Result<&str, String> {
    v.as_str().ok_or_else(|| type_error("a string", v))
}

pub(super) fn boolean(v: &Value) -> Result<bool, String> {
    v.as_bool().ok_or_else(|| type_error("true or false", v))
}

/// An empty command means none, so a rule can switch off a command set at the top level.
pub(super) fn command(v: &Value) -> Result<Option<String>, String> {
    let cmd = string(v)?;
    Ok((!cmd.trim().is_empty()).then(|| cmd.to_owned()))
}

pub(super) fn count(v: &Value) -> Result<u64, String> {
    match v {
        Value::Integer(n) => u64::try_from(*n).map_err(|_| format!("{n} is negative")),
        _ => Err(type_error("a whole number", v)),
    }
}

pub(super) fn duration(v: &Value) -> Result<Duration, String> {
    match v {
        Value::Integer(n) => u64::try_from(*n)
            .map(Duration::from_secs)
            .map_err(|_| format!("duration {n} is negative"))
            .and_then(|d| capped(d).map_err(|e| format!("duration {n} {e}"))),
        Value::String(s) => parse_duration(s),
        _ => Err(type_error(
            "a duration such as \"90s\" or \"1h 30m\", or whole seconds",
            v,
        )),
    }
}

pub(super) fn size(v: &Value) -> Result<u64, String> {
    match v {
        Value::Integer(n) => u64::try_from(*n).map_err(|_| format!("size {n} is negative")),
        Value::String(s) => parse_size(s),
        _ => Err(type_error("a size such as \"64MiB\" or a byte count", v)),
    }
}

pub(super) fn positive<T: Default + PartialEq>(value: T, key: &str) -> Result<T, String> {
    if value == T::default() {
        Err(format!("{key} must be more than 0"))
    } else {
        Ok(value)
    }
}

/// Reword serde's "unknown field `x`, expected one of `a`, `b`" and suggest the closest key.
pub(super) fn unknown_key_problem(rest: &str) -> String {
    let (key, expected) = match rest.split_once(", expected ") {
        Some((key, expected)) => (key, expected),
        None => (rest, ""),
    };
    let name = key.trim_matches('`');
    let closest = expected
        .split(", ")
        .map(|k| k.trim_start_matches("one of ").trim_matches('`'))
        .filter(|k| !k.is_empty())
        .map(|k| (edit_distance(name, k), k))
        .min();
    let mut problem = format!("unknown key {key}");
    if let Some((distance, suggestion)) = closest {
        if distance <= 2 {
            problem.push_str(&format!(" (did you mean `{suggestion}`?)"));
        }
    }
    if !expected.is_empty() {
        problem.push_str(&format!("; expected {expected}"));
    }
    problem
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}
