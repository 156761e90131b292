//! `cachetta refresh` and `cachetta stats` against a real mount (SPEC §12): refresh on demand
//! with and without `--wait`, its exit codes, one command run for many waiters, warming a
//! missing key; the counters as a table, as JSON and in the Prometheus text format, checked by
//! a strict parser of that format written here.
//!
//! Refresh commands are small `sh` lines that record what they did in `ROOT/outside`, beside
//! (never inside) the backing dir.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::Path;
use std::process::Output;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

const OLD: &str = r#"{"v":"old"}"#;

/// A mount whose keys `w/{city}.json` are refreshed by `refresh` (a TOML string literal, given
/// the `outside` dir) and whose other keys have no refresh command. `files` go into the
/// backing dir first, fresh.
fn mount_with(refresh: impl FnOnce(&Path) -> String, files: &[(&str, &str)]) -> Mount {
    let mut b = Mount::new();
    let outside = b.root().join("outside");
    let toml = format!(
        "duration = \"1h\"\n\n[[rule]]\nmatch = \"w/{{city}}.json\"\nrefresh = {}\n",
        refresh(&outside)
    );
    for (key, content) in files {
        b = b.backing_file(key, content);
    }
    b.config(&toml).start()
}

/// A command that records its run in `outside/count`, sleeps `sleep` seconds and prints
/// `{"city": ..., "reason": ...}`.
fn counting(outside: &Path, sleep: &str) -> String {
    format!(
        r#"'''echo run >> {}; sleep {sleep}; printf '{{"city":"%s","reason":"%s"}}' "$CACHETTA_CITY" "$CACHETTA_REASON"'''"#,
        sq(&outside.join("count"))
    )
}

fn new_content(city: &str) -> String {
    format!(r#"{{"city":"{city}","reason":"demand"}}"#)
}

/// `cachetta refresh FLAGS --mountpoint MNT KEYS` to its end.
fn refresh(m: &Mount, flags: &[&str], keys: &[&str]) -> Output {
    let mut argv: Vec<OsString> = vec!["refresh".into()];
    argv.extend(flags.iter().map(OsString::from));
    argv.extend(["--mountpoint".into(), m.mnt.clone().into_os_string()]);
    argv.extend(keys.iter().map(OsString::from));
    m.cachetta(&argv)
}

/// `cachetta stats MNT FLAGS` to its end.
fn stats_command(m: &Mount, flags: &[&str]) -> Output {
    let mut argv: Vec<OsString> = vec!["stats".into(), m.mnt.clone().into_os_string()];
    argv.extend(flags.iter().map(OsString::from));
    m.cachetta(&argv)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Assert the exit code, showing the output when it differs.
#[track_caller]
fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn refresh_wait_replaces_a_fresh_entry() {
    if !require_fuse() {
        return;
    }
    let m = mount_with(|out| counting(out, "0"), &[("w/paris.json", OLD)]);
    assert_eq!(attr(&m, "w/paris.json", "state").as_deref(), Some("fresh"));

    let out = refresh(&m, &["--wait"], &["w/paris.json"]);
    assert_code(&out, 0);
    assert_eq!(text(&out.stdout), "refreshed w/paris.json\n");
    assert_bytes(
        &fs::read(m.path("w/paris.json")).unwrap(),
        new_content("paris").as_bytes(),
        "entry after refresh --wait",
    );
    assert_eq!(lines(&m.outside_path("count")).len(), 1);
    assert_eq!(info(&m, "w/paris.json")["last_refresh"]["reason"], "demand");
}

#[test]
fn refresh_wait_of_a_failing_command_exits_1_with_its_error() {
    if !require_fuse() {
        return;
    }
    let m = mount_with(
        |_| "'echo boom-on-purpose >&2; exit 3'".into(),
        &[("w/paris.json", OLD)],
    );
    let out = refresh(&m, &["--wait"], &["w/paris.json"]);
    assert_code(&out, 1);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("w/paris.json") && stderr.contains("boom-on-purpose"),
        "{stderr}"
    );
    assert_bytes(
        &fs::read(m.path("w/paris.json")).unwrap(),
        OLD.as_bytes(),
        "entry after a failed refresh",
    );
}

#[test]
fn refresh_wait_of_a_declined_refresh_exits_1() {
    if !require_fuse() {
        return;
    }
    let b = Mount::new();
    let toml = "[[rule]]\nmatch = \"w/*.json\"\nrefresh = \"echo '{}'\"\ncondition = \"false\"\n";
    let m = b.config(toml).backing_file("w/paris.json", OLD).start();
    let out = refresh(&m, &["--wait"], &["w/paris.json"]);
    assert_code(&out, 1);
    assert!(
        text(&out.stderr).contains("declined"),
        "{}",
        text(&out.stderr)
    );
    assert_bytes(
        &fs::read(m.path("w/paris.json")).unwrap(),
        OLD.as_bytes(),
        "entry after a declined refresh",
    );
}

#[test]
fn refresh_of_a_key_without_a_refresh_rule_exits_2_and_the_other_keys_still_refresh() {
    if !require_fuse() {
        return;
    }
    let m = mount_with(
        |out| counting(out, "0"),
        &[("plain.json", OLD), ("w/paris.json", OLD)],
    );
    let out = refresh(&m, &[], &["plain.json"]);
    assert_code(&out, 2);
    assert!(
        text(&out.stderr).contains("plain.json"),
        "{}",
        text(&out.stderr)
    );

    let out = refresh(&m, &["--wait"], &["plain.json", "w/paris.json"]);
    assert_code(&out, 2);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("plain.json") && !stderr.contains("w/paris.json"),
        "{stderr}"
    );
    assert_eq!(text(&out.stdout), "refreshed w/paris.json\n");
    assert_bytes(
        &fs::read(m.path("w/paris.json")).unwrap(),
        new_content("paris").as_bytes(),
        "the key with a refresh rule",
    );
    assert_bytes(
        &fs::read(m.path("plain.json")).unwrap(),
        OLD.as_bytes(),
        "the key without one",
    );
}

#[test]
fn refresh_without_wait_exits_at_once_and_the_entry_is_replaced_shortly_after() {
    if !require_fuse() {
        return;
    }
    let m = mount_with(|out| counting(out, "2"), &[("w/paris.json", OLD)]);
    let start = Instant::now();
    let out = refresh(&m, &[], &["w/paris.json"]);
    let took = start.elapsed();
    assert_code(&out, 0);
    assert!(
        took < Duration::from_millis(1500),
        "refresh without --wait took {took:?} for a 2 s command"
    );
    assert_eq!(text(&out.stdout), "started refresh of w/paris.json\n");
    assert_eq!(
        attr(&m, "w/paris.json", "refreshing").as_deref(),
        Some("true")
    );
    assert_bytes(
        &fs::read(m.path("w/paris.json")).unwrap(),
        OLD.as_bytes(),
        "entry while its refresh runs",
    );
    let replaced = eventually(Duration::from_secs(10), || {
        fs::read(m.path("w/paris.json")).unwrap() == new_content("paris").as_bytes()
    });
    assert!(replaced, "not replaced within 10 s; stats {}", stats(&m));
}

#[test]
fn parallel_waits_of_one_key_run_the_command_once_and_all_succeed() {
    if !require_fuse() {
        return;
    }
    let m = mount_with(|out| counting(out, "2"), &[("w/paris.json", OLD)]);
    const WAITERS: usize = 20;
    let barrier = Barrier::new(WAITERS);
    let outputs: Vec<Output> = thread::scope(|s| {
        let waiters: Vec<_> = (0..WAITERS)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    refresh(&m, &["--wait"], &["w/paris.json"])
                })
            })
            .collect();
        waiters.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for out in &outputs {
        assert_code(out, 0);
    }
    assert_eq!(
        lines(&m.outside_path("count")).len(),
        1,
        "{WAITERS} demands of one key while it ran"
    );
    assert_bytes(
        &fs::read(m.path("w/paris.json")).unwrap(),
        new_content("paris").as_bytes(),
        "entry after the shared refresh",
    );
}

#[test]
fn refresh_wait_warms_a_missing_key_given_as_a_path_under_the_mountpoint() {
    if !require_fuse() {
        return;
    }
    let m = mount_with(|out| counting(out, "0"), &[]);
    let path = m.path("w/oslo.json");
    assert!(fs::metadata(&path).is_err(), "no fill_on_miss: not there");

    let out = refresh(&m, &["--wait"], &[path.to_str().unwrap()]);
    assert_code(&out, 0);
    assert_eq!(text(&out.stdout), "refreshed w/oslo.json\n");
    assert_bytes(
        &fs::read(&path).unwrap(),
        new_content("oslo").as_bytes(),
        "warmed entry",
    );
    assert_eq!(attr(&m, "w/oslo.json", "state").as_deref(), Some("fresh"));
}

#[test]
fn refresh_and_stats_refuse_a_path_that_is_not_a_cachetta_mount() {
    if !require_fuse() {
        return;
    }
    let m = mount_with(|out| counting(out, "0"), &[("w/paris.json", OLD)]);
    let inside = m.path("w");
    let out = m.cachetta(&[
        OsStr::new("refresh"),
        OsStr::new("--mountpoint"),
        inside.as_os_str(),
        OsStr::new("paris.json"),
    ]);
    assert_code(&out, 1);
    assert!(
        text(&out.stderr).contains("not a mount point"),
        "{}",
        text(&out.stderr)
    );
    for path in [inside.as_path(), Path::new("/proc")] {
        let out = m.cachetta(&[OsStr::new("stats"), path.as_os_str()]);
        assert_code(&out, 1);
        assert!(
            text(&out.stderr).contains("not a") && text(&out.stderr).contains("mount"),
            "{}",
            text(&out.stderr)
        );
    }
    assert!(lines(&m.outside_path("count")).is_empty());
}

/// Activity for the counters: `hits` reads of one entry and `misses` lookups of missing names.
fn traffic(m: &Mount, hits: usize, misses: usize) {
    for _ in 0..hits {
        fs::read(m.path("w/paris.json")).unwrap();
    }
    for i in 0..misses {
        assert!(fs::metadata(m.path(format!("missing-{i}.json"))).is_err());
    }
}

#[test]
fn stats_json_is_the_object_of_the_root_attribute() {
    if !require_fuse() {
        return;
    }
    let m = mount_with(|out| counting(out, "0"), &[("w/paris.json", OLD)]);
    traffic(&m, 3, 2);
    let attribute = stats(&m);
    let out = stats_command(&m, &["--json"]);
    assert_code(&out, 0);
    let printed: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let (attribute, printed) = (attribute.as_object().unwrap(), printed.as_object().unwrap());
    let names = |o: &serde_json::Map<String, Value>| o.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(printed), names(attribute));
    for (name, value) in attribute {
        match name.as_str() {
            // The command's own getxattr calls count; nothing else moves between the reads.
            "requests" => {
                assert_eq!(
                    names(value.as_object().unwrap()),
                    names(printed[name].as_object().unwrap())
                );
                for (op, count) in value.as_object().unwrap() {
                    let later = printed[name][op].as_u64().unwrap();
                    assert!(
                        later >= count.as_u64().unwrap(),
                        "requests.{op}: {count} then {later}"
                    );
                }
            }
            "uptime_s" => {
                let (before, after) = (value.as_u64().unwrap(), printed[name].as_u64().unwrap());
                assert!(
                    before <= after && after <= before + 1,
                    "uptime {before} then {after}"
                );
            }
            _ => assert_eq!(&printed[name], value, "{name}"),
        }
    }
    assert_eq!(printed["hits"], 3);
    assert_eq!(printed["misses"], 2);
}

#[test]
fn stats_table_shows_the_hit_ratio() {
    if !require_fuse() {
        return;
    }
    let m = mount_with(|out| counting(out, "0"), &[("w/paris.json", OLD)]);
    let row = |table: &str, name: &str| -> Option<String> {
        table.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?;
            rest.starts_with("  ").then(|| rest.trim().to_string())
        })
    };
    let out = stats_command(&m, &[]);
    assert_code(&out, 0);
    assert_eq!(row(&text(&out.stdout), "hit ratio").as_deref(), Some("n/a"));

    traffic(&m, 2, 1);
    let json: Value = serde_json::from_slice(&stats_command(&m, &["--json"]).stdout).unwrap();
    let (hits, misses) = (
        json["hits"].as_u64().unwrap(),
        json["misses"].as_u64().unwrap(),
    );
    assert_eq!((hits, misses), (2, 1));
    let out = stats_command(&m, &[]);
    assert_code(&out, 0);
    let table = text(&out.stdout);
    let expected = format!("{:.1}%", 100.0 * hits as f64 / (hits + misses) as f64);
    assert_eq!(row(&table, "hit ratio"), Some(expected), "{table}");
    assert_eq!(row(&table, "hits"), Some("2".into()), "{table}");
    assert_eq!(row(&table, "misses"), Some("1".into()), "{table}");
    // Aligned: every value ends in the same column.
    let widths: HashSet<usize> = table.lines().map(str::len).collect();
    assert_eq!(widths.len(), 1, "{table}");
}

#[test]
fn stats_prometheus_is_valid_text_exposition() {
    if !require_fuse() {
        return;
    }
    let m = mount_with(|out| counting(out, "0"), &[("w/paris.json", OLD)]);
    traffic(&m, 2, 1);
    let out = stats_command(&m, &["--prometheus"]);
    assert_code(&out, 0);
    let exposition = text(&out.stdout);
    let series = parse_exposition(&exposition).unwrap_or_else(|e| panic!("{e}:\n{exposition}"));
    let json = stats(&m);
    for counter in ["hits", "misses", "refreshes_ok", "writes_rejected"] {
        let name = format!("cachetta_{counter}_total");
        assert_eq!(
            series.get(&name),
            Some(&(json[counter].as_u64().unwrap() as f64)),
            "{name}"
        );
    }
    for gauge in [
        "cachetta_lru_entries",
        "cachetta_lru_bytes",
        "cachetta_uptime_seconds",
        "cachetta_passthrough",
    ] {
        assert!(series.contains_key(gauge), "{gauge} missing:\n{exposition}");
    }
    assert!(
        series
            .get("cachetta_requests_total{op=\"lookup\"}")
            .is_some_and(|&v| v >= 1.0),
        "{exposition}"
    );
}

/// The metric types of the text format.
const TYPES: [&str; 5] = ["counter", "gauge", "histogram", "summary", "untyped"];

/// A strict reader of the Prometheus text format 0.0.4, for what cachetta emits (counters and
/// gauges): every line a `# HELP`, a `# TYPE` or a sample; every sample's family has exactly
/// one `# HELP` and one `# TYPE` before its first sample, and its samples in one group;
/// counters end in `_total`; no series twice. Returns every series (`name{labels}`) → value.
fn parse_exposition(text: &str) -> Result<BTreeMap<String, f64>, String> {
    if !text.ends_with('\n') {
        return Err("the exposition does not end with a newline".into());
    }
    let mut help = HashSet::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut series = BTreeMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let at = |what: &str| format!("line {}: {what}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest
                .split_once(' ')
                .ok_or_else(|| at("HELP without text"))?;
            check_name(name).map_err(|e| at(&e))?;
            if !help.insert(name.to_string()) {
                return Err(at("second HELP"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| at("TYPE without type"))?;
            check_name(name).map_err(|e| at(&e))?;
            if !TYPES.contains(&kind) {
                return Err(at("invalid type"));
            }
            if kind == "counter" && !name.ends_with("_total") {
                return Err(at("counter without _total"));
            }
            if types.insert(name.to_string(), kind.to_string()).is_some() {
                return Err(at("second TYPE"));
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            return Err(at("neither HELP, TYPE nor a sample"));
        }
        let (name, labels, value) = parse_sample(line).map_err(|e| at(&e))?;
        if !help.contains(&name) || !types.contains_key(&name) {
            return Err(at("sample before its HELP and TYPE"));
        }
        if current.as_deref() != Some(name.as_str()) {
            if finished.contains(&name) {
                return Err(at("family split in two groups"));
            }
            if let Some(previous) = current.replace(name.clone()) {
                finished.insert(previous);
            }
        }
        let key = if labels.is_empty() {
            name
        } else {
            let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{name}{{{}}}", pairs.join(","))
        };
        if series.insert(key, value).is_some() {
            return Err(at("duplicate series"));
        }
    }
    Ok(series)
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("invalid metric name {name:?}"))
    }
}

/// `name{label="value",...} value [timestamp]`, labels sorted by name.
fn parse_sample(line: &str) -> Result<(String, BTreeMap<String, String>, f64), String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample without a value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inside) = rest.strip_prefix('{') {
        let mut chars = inside.char_indices().peekable();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            if c == '}' {
                end = Some(i);
                break;
            }
            let start = i;
            let mut eq = None;
            for (j, d) in chars.by_ref() {
                if d == '=' {
                    eq = Some(j);
                    break;
                }
            }
            let eq = eq.ok_or("a label without =")?;
            let label = &inside[start..eq];
            let valid = label
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("invalid label name {label:?}"));
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("an unquoted label value".into());
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        _ => return Err("an invalid escape in a label value".into()),
                    },
                    Some(c) => value.push(c),
                    None => return Err("an unterminated label value".into()),
                }
            }
            if labels.insert(label.to_string(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            match chars.peek().map(|&(_, c)| c) {
                Some(',') => {
                    chars.next();
                }
                Some('}') => {}
                _ => return Err("labels not separated by ,".into()),
            }
        }
        let end = end.ok_or("unterminated labels")?;
        rest = &inside[end + 1..];
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut fields = rest.split(' ');
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|e| format!("value {v:?}: {e}"))?,
    };
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|e| format!("timestamp {timestamp:?}: {e}"))?;
    }
    if fields.next().is_some() {
        return Err("more than a value and a timestamp".into());
    }
    Ok((name.to_string(), labels, value))
}

#[test]
fn the_exposition_parser_is_strict() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n\
                # HELP r_total R.\n# TYPE r_total counter\nr_total{op=\"x\\\"y\"} 2\nr_total{op=\"z\"} 3.5\n";
    let series = parse_exposition(good).unwrap();
    assert_eq!(series.get("r_total{op=\"x\"y\"}"), Some(&2.0));
    for bad in [
        "# TYPE a_total counter\na_total 1\n",             // no HELP
        "# HELP a_total A.\na_total 1\n",                  // no TYPE
        "# HELP a A.\n# TYPE a counter\na 1\n",            // counter without _total
        "# HELP a A.\n# TYPE a thing\na 1\n",              // invalid type
        "# HELP a A.\n# TYPE a gauge\na one\n",            // value
        "# HELP a A.\n# TYPE a gauge\na 1\na 2\n",         // duplicate series
        "# HELP a A.\n# HELP a A.\n# TYPE a gauge\na 1\n", // second HELP
        "# HELP a A.\n# TYPE a gauge\na 1",                // no final newline
        "# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\na 1\nb 1\na{x=\"1\"} 1\n", // split
        "# HELP a A.\n# TYPE a gauge\na{x=1} 1\n", // unquoted label
        "# HELP a A.\n# TYPE a gauge\n\na 1\n",    // empty line
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted: {bad:?}");
    }
}

#[test]
fn stats_watch_prints_a_line_of_rates_per_interval_and_stops_after_count() {
    if !require_fuse() {
        return;
    }
    let m = mount_with(|out| counting(out, "0"), &[("w/paris.json", OLD)]);
    // Reads during the watch: the hits column shows them as a rate.
    let reader = {
        let path = m.path("w/paris.json");
        std::thread::spawn(move || {
            let end = std::time::Instant::now() + Duration::from_millis(900);
            let mut reads = 0;
            while std::time::Instant::now() < end {
                fs::read(&path).unwrap();
                reads += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            reads
        })
    };
    let out = stats_command(&m, &["--watch", "300ms", "--count", "2"]);
    assert!(reader.join().unwrap() > 10);
    assert_code(&out, 0);
    let printed = text(&out.stdout);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 3, "a head and two lines: {printed}");
    assert!(
        lines[0].contains("hits/s") && lines[0].contains("hit%"),
        "{printed}"
    );
    let hits_per_second: f64 = lines[1].split_whitespace().next().unwrap().parse().unwrap();
    assert!(hits_per_second > 10.0, "{printed}");
    // A bad interval is a usage error.
    assert_code(&stats_command(&m, &["--watch", "1ms", "--count", "1"]), 2);
}
