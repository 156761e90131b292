//! Flags + TOML file + defaults resolved into one [`Config`], and rule matching on keys.
//!
//! Knows nothing of FUSE or of the backing dir's contents.

mod pattern;

use pattern::{unescape_literal, Matcher};
use std::ffi::{OsStr, OsString};
use std::fmt::Display;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::{Spanned, Value};

/// The policy settings a rule may name; a rule inherits the ones it does not name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub duration: Duration,
    pub stale: Duration,
    pub refresh: Option<String>,
    pub fill_on_miss: bool,
    pub condition: Option<String>,
    pub refresh_timeout: Duration,
    pub refresh_backoff: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            duration: Duration::from_secs(7 * 24 * 3600),
            stale: Duration::ZERO,
            refresh: None,
            fill_on_miss: false,
            condition: None,
            refresh_timeout: Duration::from_secs(60),
            refresh_backoff: Duration::from_secs(10),
        }
    }
}

impl Settings {
    pub fn timing(&self) -> crate::policy::Timing {
        crate::policy::Timing {
            duration: self.duration,
            stale: self.stale,
        }
    }
}

/// One `[[rule]]`: a `match` pattern and its resolved settings.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The pattern as written, e.g. `weather/{city}.json`.
    pub pattern: String,
    pub settings: Settings,
    matcher: Matcher,
}

impl Rule {
    /// A rule from a `match` pattern; the error says what is wrong with the pattern.
    pub fn new(pattern: &str, settings: Settings) -> Result<Rule, ConfigError> {
        let matcher = Matcher::compile(pattern).map_err(|problem| ConfigError {
            message: format!("invalid pattern {pattern:?}: {problem}"),
        })?;
        Ok(Rule {
            pattern: pattern.to_owned(),
            settings,
            matcher,
        })
    }

    /// The `(name, raw bytes)` of each `{capture}`, in pattern order, if `key` matches.
    pub fn captures(&self, key: &OsStr) -> Option<Vec<(String, Vec<u8>)>> {
        self.matcher.captures(key.as_bytes())
    }

    /// The `{capture}` names of the pattern, in order.
    pub fn capture_names(&self) -> &[String] {
        &self.matcher.names
    }

    /// The directories the pattern names literally, outermost first: `a/b/*.json` → `a`, `a/b`.
    pub fn literal_dirs(&self) -> Vec<PathBuf> {
        let segments: Vec<&str> = self.pattern.split('/').collect();
        let dirs = &segments[..segments.len().saturating_sub(1)];
        let mut prefix = PathBuf::new();
        let mut out = Vec::new();
        for segment in dirs {
            match unescape_literal(segment) {
                Some(literal) => {
                    prefix.push(literal);
                    out.push(prefix.clone());
                }
                None => break,
            }
        }
        out
    }
}

/// How the backing dir is watched for changes made behind the mount's back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    Inotify,
    Poll(Duration),
}

impl WatchMode {
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
}

/// `inotify`, `poll` or `poll=INTERVAL`: the syntax of both the `watch` key and `--watch`.
impl FromStr for WatchMode {
    type Err = String;

    fn from_str(s: &str) -> Result<WatchMode, String> {
        let s = s.trim();
        match s {
            "inotify" => Ok(WatchMode::Inotify),
            "poll" => Ok(WatchMode::Poll(WatchMode::DEFAULT_POLL_INTERVAL)),
            _ => match s.strip_prefix("poll=") {
                Some(interval) => match parse_duration(interval)? {
                    Duration::ZERO => Err("the poll interval must be more than 0".to_owned()),
                    interval => Ok(WatchMode::Poll(interval)),
                },
                None => Err(format!(
                    "invalid watch mode {s:?} (expected inotify, poll or poll=INTERVAL such as poll=5s)"
                )),
            },
        }
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub backing: PathBuf,
    /// Top-level settings (defaults overridden by the file's top level and by flags).
    pub defaults: Settings,
    pub rules: Vec<Rule>,
    pub lru_entries: usize,
    pub lru_bytes: u64,
    pub max_entry_bytes: u64,
    pub max_refreshes: usize,
    pub gc_interval: Duration,
    pub sync_writes: bool,
    pub watch: WatchMode,
}

/// What command-line flags may override; `None` leaves the file's or default value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub backing: Option<PathBuf>,
    pub duration: Option<Duration>,
    pub stale: Option<Duration>,
    pub lru_entries: Option<usize>,
    pub lru_bytes: Option<u64>,
    pub watch: Option<WatchMode>,
}

/// The rule that applies to one key, and what its `{captures}` matched.
#[derive(Debug, Clone)]
pub struct Matched<'a> {
    pub settings: &'a Settings,
    /// Index into `Config::rules`, `None` when only the defaults apply.
    pub rule: Option<usize>,
    /// `(name, value)` per `{name}` in the pattern, in pattern order. Values are raw key bytes.
    pub captures: Vec<(String, Vec<u8>)>,
}

/// A configuration problem, with the file, line and key it concerns when known.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    pub message: String,
}

impl Config {
    /// Resolve the configuration: `explicit` is `--config FILE` (must exist); otherwise the
    /// default file `$XDG_CONFIG_HOME/cachetta/config.toml` is read if present.
    pub fn load(explicit: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        load_in(explicit, overrides, &Dirs::from_env())
    }

    /// Parse TOML text; `origin` names the file in error messages.
    pub fn from_toml(
        text: &str,
        origin: &Path,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        from_toml_in(text, origin, overrides, &Dirs::from_env())
    }

    /// The defaults alone, with overrides applied.
    pub fn defaults(overrides: &Overrides) -> Config {
        defaults_in(overrides, &Dirs::from_env())
    }

    /// The first rule whose `match` fits `key` (a path relative to the cache root, `/`-separated,
    /// raw bytes), else the top-level settings.
    pub fn settings_for(&self, key: &OsStr) -> Matched<'_> {
        for (i, rule) in self.rules.iter().enumerate() {
            if let Some(captures) = rule.captures(key) {
                return Matched {
                    settings: &rule.settings,
                    rule: Some(i),
                    captures,
                };
            }
        }
        Matched {
            settings: &self.defaults,
            rule: None,
            captures: Vec::new(),
        }
    }

    /// The directories that `fill_on_miss` rules name literally (`weather` for
    /// `weather/{city}.json`), so the mount can show them before they exist. No duplicates.
    pub fn fill_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for rule in self.rules.iter().filter(|r| r.settings.fill_on_miss) {
            for dir in rule.literal_dirs() {
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
        dirs
    }

    /// The default config file: `$XDG_CONFIG_HOME/cachetta/config.toml`.
    pub fn default_file() -> PathBuf {
        Dirs::from_env().config_file()
    }
}

/// A duration as in the config file: humantime (`90s`, `1h 30m`, `7d`) or bare seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("duration {s:?} is too large"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e} (write e.g. 90s, 15m, 1h 30m, 7d)"))
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

/// Where the defaults live; read from the environment once, passed in so tests need no env.
#[derive(Debug, Clone)]
struct Dirs {
    home: PathBuf,
    cache_home: PathBuf,
    config_home: PathBuf,
}

impl Dirs {
    fn from_env() -> Dirs {
        Dirs::from_vars(|name| std::env::var_os(name))
    }

    fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Dirs {
        let home = var("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(std::env::home_dir)
            .unwrap_or_else(|| PathBuf::from("/"));
        // The XDG spec says relative values are invalid and must be ignored.
        let xdg = |name: &str, fallback: &str| {
            var(name)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| home.join(fallback))
        };
        Dirs {
            cache_home: xdg("XDG_CACHE_HOME", ".cache"),
            config_home: xdg("XDG_CONFIG_HOME", ".config"),
            home,
        }
    }

    fn config_file(&self) -> PathBuf {
        self.config_home.join("cachetta").join("config.toml")
    }

    fn default_backing(&self) -> PathBuf {
        self.cache_home.join("cachetta")
    }

    /// `~` or `~/rest` at the start means $HOME; `~user` is not supported.
    fn expand_tilde(&self, path: &Path) -> Result<PathBuf, String> {
        let bytes = path.as_os_str().as_bytes();
        match bytes {
            b"~" => Ok(self.home.clone()),
            [b'~', b'/', rest @ ..] => Ok(self.home.join(OsStr::from_bytes(rest))),
            [b'~', ..] => Err(format!(
                "{:?}: `~user` is not supported; write the full path",
                path
            )),
            _ => Ok(path.to_path_buf()),
        }
    }
}

fn load_in(
    explicit: Option<&Path>,
    overrides: &Overrides,
    dirs: &Dirs,
) -> Result<Config, ConfigError> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => dirs.config_file(),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => from_toml_in(&text, &path, overrides, dirs),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
            Ok(defaults_in(overrides, dirs))
        }
        Err(e) => Err(ConfigError {
            message: format!("{}: cannot read config file: {e}", path.display()),
        }),
    }
}

fn defaults_in(overrides: &Overrides, dirs: &Dirs) -> Config {
    let mut config = Config {
        backing: dirs.default_backing(),
        defaults: Settings::default(),
        rules: Vec::new(),
        lru_entries: 1024,
        lru_bytes: 64 << 20,
        max_entry_bytes: 256 << 20,
        max_refreshes: 4,
        gc_interval: Duration::from_secs(3600),
        sync_writes: false,
        watch: WatchMode::Inotify,
    };
    apply_overrides(&mut config, overrides, dirs);
    config
}

/// Flags set the top level; a rule that names its own `duration` keeps it, a rule that does not
/// inherits the flag's value (rules are resolved after this).
fn apply_overrides(config: &mut Config, overrides: &Overrides, dirs: &Dirs) {
    if let Some(backing) = &overrides.backing {
        // A flag's `~user` is left alone: the shell had its chance to expand it.
        config.backing = dirs
            .expand_tilde(backing)
            .unwrap_or_else(|_| backing.clone());
    }
    if let Some(duration) = overrides.duration {
        config.defaults.duration = duration;
    }
    if let Some(stale) = overrides.stale {
        config.defaults.stale = stale;
    }
    if let Some(n) = overrides.lru_entries {
        config.lru_entries = n;
    }
    if let Some(n) = overrides.lru_bytes {
        config.lru_bytes = n;
    }
    if let Some(watch) = overrides.watch {
        config.watch = watch;
    }
}

type Raw = Option<Spanned<Value>>;

/// The file as written. Values stay raw (with their spans) so that a bad one is reported with
/// its key and line; serde only checks the shape and rejects unknown keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    backing: Raw,
    duration: Raw,
    stale: Raw,
    refresh: Raw,
    fill_on_miss: Raw,
    condition: Raw,
    refresh_timeout: Raw,
    refresh_backoff: Raw,
    lru_entries: Raw,
    lru_bytes: Raw,
    max_entry_bytes: Raw,
    max_refreshes: Raw,
    gc_interval: Raw,
    sync_writes: Raw,
    watch: Raw,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "match")]
    pattern: Raw,
    duration: Raw,
    stale: Raw,
    refresh: Raw,
    fill_on_miss: Raw,
    condition: Raw,
    refresh_timeout: Raw,
    refresh_backoff: Raw,
}

/// The rule-settable keys of one table (the top level or a `[[rule]]`).
struct RawSettings<'a> {
    duration: &'a Raw,
    stale: &'a Raw,
    refresh: &'a Raw,
    fill_on_miss: &'a Raw,
    condition: &'a Raw,
    refresh_timeout: &'a Raw,
    refresh_backoff: &'a Raw,
}

impl RawFile {
    fn settings(&self) -> RawSettings<'_> {
        RawSettings {
            duration: &self.duration,
            stale: &self.stale,
            refresh: &self.refresh,
            fill_on_miss: &self.fill_on_miss,
            condition: &self.condition,
            refresh_timeout: &self.refresh_timeout,
            refresh_backoff: &self.refresh_backoff,
        }
    }
}

impl RawRule {
    fn settings(&self) -> RawSettings<'_> {
        RawSettings {
            duration: &self.duration,
            stale: &self.stale,
            refresh: &self.refresh,
            fill_on_miss: &self.fill_on_miss,
            condition: &self.condition,
            refresh_timeout: &self.refresh_timeout,
            refresh_backoff: &self.refresh_backoff,
        }
    }
}

/// The text being parsed, for turning spans into `file:line:` prefixes.
struct Source<'a> {
    text: &'a str,
    origin: &'a Path,
}

impl Source<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn at(&self, span: Option<Range<usize>>, problem: impl Display) -> ConfigError {
        let message = match span {
            Some(span) => format!(
                "{}:{}: {problem}",
                self.origin.display(),
                self.line(span.start)
            ),
            None => format!("{}: {problem}", self.origin.display()),
        };
        ConfigError { message }
    }

    fn key_error(&self, raw: &Spanned<Value>, key: &str, problem: impl Display) -> ConfigError {
        self.at(Some(raw.span()), format_args!("key `{key}`: {problem}"))
    }

    /// Convert the value of `key` if present; a failure names the file, line and key.
    fn get<T>(
        &self,
        raw: &Raw,
        key: &str,
        convert: impl Fn(&Value) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match raw {
            None => Ok(None),
            Some(raw) => convert(raw.get_ref())
                .map(Some)
                .map_err(|problem| self.key_error(raw, key, problem)),
        }
    }

    fn serde_error(&self, e: toml::de::Error) -> ConfigError {
        let message = e.message().trim_end().replace('\n', "; ");
        let spanned_text = e.span().and_then(|span| self.text.get(span));
        let problem = if let Some(rest) = message.strip_prefix("unknown field ") {
            unknown_key_problem(rest)
        } else if message.starts_with("invalid type") {
            // Every other field is a raw value, so only `rule` can have the wrong shape.
            format!("key `rule`: {message} (write each rule as a [[rule]] table)")
        } else if let (Some(key), "duplicate key") = (spanned_text, message.as_str()) {
            format!("duplicate key `{}`", key.trim())
        } else {
            message
        };
        self.at(e.span(), problem)
    }
}

/// Reword serde's "unknown field `x`, expected one of `a`, `b`" and suggest the closest key.
fn unknown_key_problem(rest: &str) -> String {
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

fn from_toml_in(
    text: &str,
    origin: &Path,
    overrides: &Overrides,
    dirs: &Dirs,
) -> Result<Config, ConfigError> {
    let src = Source { text, origin };
    let raw: RawFile = toml::from_str(text).map_err(|e| src.serde_error(e))?;
    let mut config = defaults_in(&Overrides::default(), dirs);

    if let Some(backing) = src.get(&raw.backing, "backing", |v| {
        let path = dirs.expand_tilde(Path::new(string(v)?))?;
        // A relative path is taken from the config file's directory, not from wherever the
        // daemon happens to start.
        Ok(match origin.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path,
        })
    })? {
        config.backing = backing;
    }
    config.defaults = resolve_settings(&src, &config.defaults, &raw.settings())?;
    if let Some(n) = src.get(&raw.lru_entries, "lru_entries", |v| {
        let n = count(v)?;
        usize::try_from(n).map_err(|_| format!("{n} is too large"))
    })? {
        config.lru_entries = n;
    }
    if let Some(n) = src.get(&raw.lru_bytes, "lru_bytes", size)? {
        config.lru_bytes = n;
    }
    if let Some(n) = src.get(&raw.max_entry_bytes, "max_entry_bytes", |v| {
        positive(size(v)?, "max_entry_bytes")
    })? {
        config.max_entry_bytes = n;
    }
    if let Some(n) = src.get(&raw.max_refreshes, "max_refreshes", |v| {
        let n = positive(count(v)?, "max_refreshes")?;
        usize::try_from(n).map_err(|_| format!("{n} is too large"))
    })? {
        config.max_refreshes = n;
    }
    if let Some(d) = src.get(&raw.gc_interval, "gc_interval", duration)? {
        config.gc_interval = d;
    }
    if let Some(b) = src.get(&raw.sync_writes, "sync_writes", boolean)? {
        config.sync_writes = b;
    }
    if let Some(w) = src.get(&raw.watch, "watch", |v| string(v)?.parse())? {
        config.watch = w;
    }

    // Flags go on the top level before the rules inherit from it.
    apply_overrides(&mut config, overrides, dirs);

    for raw_rule in &raw.rule {
        let rule = raw_rule.get_ref();
        let Some(pattern_raw) = &rule.pattern else {
            return Err(src.at(
                Some(raw_rule.span()),
                "a [[rule]] without key `match` (add e.g. match = \"weather/*.json\")",
            ));
        };
        let pattern =
            string(pattern_raw.get_ref()).map_err(|p| src.key_error(pattern_raw, "match", p))?;
        let matcher = Matcher::compile(pattern).map_err(|problem| {
            src.key_error(
                pattern_raw,
                "match",
                format_args!("invalid pattern {pattern:?}: {problem}"),
            )
        })?;
        config.rules.push(Rule {
            pattern: pattern.to_owned(),
            settings: resolve_settings(&src, &config.defaults, &rule.settings())?,
            matcher,
        });
    }
    Ok(config)
}

/// `base` with every key the table names replaced.
fn resolve_settings(
    src: &Source<'_>,
    base: &Settings,
    raw: &RawSettings<'_>,
) -> Result<Settings, ConfigError> {
    let mut s = base.clone();
    if let Some(d) = src.get(raw.duration, "duration", duration)? {
        s.duration = d;
    }
    if let Some(d) = src.get(raw.stale, "stale", duration)? {
        s.stale = d;
    }
    if let Some(cmd) = src.get(raw.refresh, "refresh", command)? {
        s.refresh = cmd;
    }
    if let Some(b) = src.get(raw.fill_on_miss, "fill_on_miss", boolean)? {
        s.fill_on_miss = b;
    }
    if let Some(cmd) = src.get(raw.condition, "condition", command)? {
        s.condition = cmd;
    }
    if let Some(d) = src.get(raw.refresh_timeout, "refresh_timeout", |v| {
        // A zero timeout would kill every command before it starts.
        positive(duration(v)?, "refresh_timeout")
    })? {
        s.refresh_timeout = d;
    }
    if let Some(d) = src.get(raw.refresh_backoff, "refresh_backoff", duration)? {
        s.refresh_backoff = d;
    }
    Ok(s)
}

fn type_error(expected: &str, v: &Value) -> String {
    format!("expected {expected}, found {}", v.type_str())
}

fn string(v: &Value) -> Result<&str, String> {
    v.as_str().ok_or_else(|| type_error("a string", v))
}

fn boolean(v: &Value) -> Result<bool, String> {
    v.as_bool().ok_or_else(|| type_error("true or false", v))
}

/// An empty command means none, so a rule can switch off a command set at the top level.
fn command(v: &Value) -> Result<Option<String>, String> {
    let cmd = string(v)?;
    Ok((!cmd.trim().is_empty()).then(|| cmd.to_owned()))
}

fn count(v: &Value) -> Result<u64, String> {
    match v {
        Value::Integer(n) => u64::try_from(*n).map_err(|_| format!("{n} is negative")),
        _ => Err(type_error("a whole number", v)),
    }
}

fn duration(v: &Value) -> Result<Duration, String> {
    match v {
        Value::Integer(n) => u64::try_from(*n)
            .map(Duration::from_secs)
            .map_err(|_| format!("duration {n} is negative")),
        Value::String(s) => parse_duration(s),
        _ => Err(type_error(
            "a duration such as \"90s\" or \"1h 30m\", or whole seconds",
            v,
        )),
    }
}

fn size(v: &Value) -> Result<u64, String> {
    match v {
        Value::Integer(n) => u64::try_from(*n).map_err(|_| format!("size {n} is negative")),
        Value::String(s) => parse_size(s),
        _ => Err(type_error("a size such as \"64MiB\" or a byte count", v)),
    }
}

fn positive<T: Default + PartialEq>(value: T, key: &str) -> Result<T, String> {
    if value == T::default() {
        Err(format!("{key} must be more than 0"))
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs() -> Dirs {
        Dirs::from_vars(|name| match name {
            "HOME" => Some("/home/u".into()),
            _ => None,
        })
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_with(text, &Overrides::default())
    }

    fn parse_with(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        from_toml_in(text, Path::new("/etc/cachetta.toml"), overrides, &dirs())
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(e) => e.message,
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn rule(pattern: &str) -> Rule {
        match Rule::new(pattern, Settings::default()) {
            Ok(rule) => rule,
            Err(e) => panic!("{e}"),
        }
    }

    fn caps(pattern: &str, key: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
        rule(pattern).captures(OsStr::from_bytes(key))
    }

    fn matches(pattern: &str, key: &str) -> bool {
        caps(pattern, key.as_bytes()).is_some()
    }

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.backing, PathBuf::from("/home/u/.cache/cachetta"));
        assert_eq!(c.defaults, Settings::default());
        assert_eq!(c.defaults.duration, secs(7 * 86400));
        assert!(c.rules.is_empty());
        assert_eq!(c.lru_entries, 1024);
        assert_eq!(c.lru_bytes, 64 * 1024 * 1024);
        assert_eq!(c.max_entry_bytes, 256 * 1024 * 1024);
        assert_eq!(c.max_refreshes, 4);
        assert_eq!(c.gc_interval, secs(3600));
        assert!(!c.sync_writes);
        assert_eq!(c.watch, WatchMode::Inotify);
    }

    #[test]
    fn default_dirs_follow_xdg_and_ignore_relative_values() {
        let d = Dirs::from_vars(|name| match name {
            "HOME" => Some("/home/u".into()),
            "XDG_CACHE_HOME" => Some("/var/cache/u".into()),
            "XDG_CONFIG_HOME" => Some("relative/config".into()),
            _ => None,
        });
        assert_eq!(d.default_backing(), PathBuf::from("/var/cache/u/cachetta"));
        assert_eq!(
            d.config_file(),
            PathBuf::from("/home/u/.config/cachetta/config.toml")
        );
    }

    #[test]
    fn every_top_level_key_is_parsed() {
        let c = parse(
            r#"
            backing = "/srv/cache"
            duration = "1h"
            stale = "30m"
            refresh = "echo {}"
            fill_on_miss = true
            condition = "jq -e ."
            refresh_timeout = "20s"
            refresh_backoff = "1m"
            lru_entries = 10
            lru_bytes = "1MiB"
            max_entry_bytes = 2048
            max_refreshes = 2
            gc_interval = "0"
            sync_writes = true
            watch = "poll=5s"
            "#,
        )
        .unwrap();
        assert_eq!(c.backing, PathBuf::from("/srv/cache"));
        assert_eq!(
            c.defaults,
            Settings {
                duration: secs(3600),
                stale: secs(1800),
                refresh: Some("echo {}".into()),
                fill_on_miss: true,
                condition: Some("jq -e .".into()),
                refresh_timeout: secs(20),
                refresh_backoff: secs(60),
            }
        );
        assert_eq!(c.lru_entries, 10);
        assert_eq!(c.lru_bytes, 1 << 20);
        assert_eq!(c.max_entry_bytes, 2048);
        assert_eq!(c.max_refreshes, 2);
        assert_eq!(c.gc_interval, Duration::ZERO);
        assert!(c.sync_writes);
        assert_eq!(c.watch, WatchMode::Poll(secs(5)));
    }

    #[test]
    fn every_rule_key_is_parsed() {
        let c = parse(
            r#"
            [[rule]]
            match = "weather/{city}.json"
            duration = "1h"
            stale = "30m"
            refresh = "curl -fsS \"https://wttr.in/$CACHETTA_CITY?format=j1\""
            refresh_timeout = "20s"
            refresh_backoff = "5s"
            fill_on_miss = true
            condition = "jq -e '.current_condition != null' >/dev/null"
            "#,
        )
        .unwrap();
        let r = &c.rules[0];
        assert_eq!(r.pattern, "weather/{city}.json");
        assert_eq!(r.capture_names(), ["city"]);
        assert_eq!(
            r.settings,
            Settings {
                duration: secs(3600),
                stale: secs(1800),
                refresh: Some("curl -fsS \"https://wttr.in/$CACHETTA_CITY?format=j1\"".into()),
                fill_on_miss: true,
                condition: Some("jq -e '.current_condition != null' >/dev/null".into()),
                refresh_timeout: secs(20),
                refresh_backoff: secs(5),
            }
        );
    }

    #[test]
    fn watch_accepts_inotify_poll_and_poll_with_interval() {
        assert_eq!("inotify".parse(), Ok(WatchMode::Inotify));
        assert_eq!("poll".parse(), Ok(WatchMode::Poll(secs(2))));
        assert_eq!("poll=1m".parse(), Ok(WatchMode::Poll(secs(60))));
        assert!("poll=0".parse::<WatchMode>().is_err());
        assert!("fanotify".parse::<WatchMode>().is_err());
    }

    #[test]
    fn rule_inherits_unnamed_settings_from_top_level_which_inherits_from_defaults() {
        let c = parse(
            r#"
            stale = "5m"
            refresh = "make-it"
            [[rule]]
            match = "a/*.json"
            duration = "1h"
            "#,
        )
        .unwrap();
        let s = &c.rules[0].settings;
        assert_eq!(s.duration, secs(3600)); // the rule's own
        assert_eq!(s.stale, secs(300)); // the top level's
        assert_eq!(s.refresh.as_deref(), Some("make-it"));
        assert_eq!(s.refresh_timeout, secs(60)); // the default
        assert_eq!(c.defaults.duration, secs(7 * 86400));
    }

    #[test]
    fn empty_command_in_a_rule_switches_off_the_inherited_one() {
        let c = parse("refresh = \"x\"\n[[rule]]\nmatch = \"a.json\"\nrefresh = \"\"\n").unwrap();
        assert_eq!(c.rules[0].settings.refresh, None);
    }

    #[test]
    fn flags_override_the_file_and_rules_inherit_them() {
        let overrides = Overrides {
            backing: Some("~/elsewhere".into()),
            duration: Some(secs(5)),
            stale: Some(secs(6)),
            lru_entries: Some(7),
            lru_bytes: Some(8),
            watch: Some(WatchMode::Poll(secs(9))),
        };
        let c = parse_with(
            r#"
            backing = "/srv/cache"
            duration = "1h"
            stale = "1h"
            lru_entries = 1
            lru_bytes = 1
            watch = "inotify"
            [[rule]]
            match = "own/*.json"
            duration = "2h"
            [[rule]]
            match = "**"
            "#,
            &overrides,
        )
        .unwrap();
        assert_eq!(c.backing, PathBuf::from("/home/u/elsewhere"));
        assert_eq!(c.defaults.duration, secs(5));
        assert_eq!(c.defaults.stale, secs(6));
        assert_eq!(c.lru_entries, 7);
        assert_eq!(c.lru_bytes, 8);
        assert_eq!(c.watch, WatchMode::Poll(secs(9)));
        assert_eq!(c.rules[0].settings.duration, secs(7200));
        assert_eq!(c.rules[0].settings.stale, secs(6));
        assert_eq!(c.rules[1].settings.duration, secs(5));
    }

    #[test]
    fn flags_apply_without_a_file() {
        let overrides = Overrides {
            duration: Some(secs(5)),
            ..Overrides::default()
        };
        assert_eq!(defaults_in(&overrides, &dirs()).defaults.duration, secs(5));
    }

    #[test]
    fn zero_as_integer_string_and_humantime_are_all_zero() {
        for spelling in ["0", "\"0\"", "\"0s\""] {
            let c = parse(&format!("stale = {spelling}\nduration = {spelling}")).unwrap();
            assert_eq!(c.defaults.stale, Duration::ZERO, "{spelling}");
            assert_eq!(c.defaults.duration, Duration::ZERO, "{spelling}");
        }
    }

    #[test]
    fn durations_take_humantime_forms_and_bare_seconds() {
        for (text, want) in [
            ("90s", 90),
            ("15m", 900),
            ("1h 30m", 5400),
            ("1h30m", 5400),
            ("7d", 7 * 86400),
            ("90", 90),
            (" 42 ", 42),
        ] {
            assert_eq!(parse_duration(text), Ok(secs(want)), "{text}");
        }
        assert_eq!(parse("duration = 90").unwrap().defaults.duration, secs(90));
    }

    #[test]
    fn negative_float_and_garbage_durations_are_errors() {
        for text in [
            "duration = -1",
            "duration = 1.5",
            "duration = \"-5s\"",
            "duration = \"1.5\"",
            "duration = true",
        ] {
            let msg = error(text);
            assert!(msg.contains("key `duration`"), "{text}: {msg}");
        }
        assert!(error("duration = -1").contains("negative"));
        assert!(error("duration = 1.5").contains("float"));
    }

    #[test]
    fn sizes_take_binary_suffixes_and_bare_byte_counts() {
        for (text, want) in [
            ("0", 0),
            ("512", 512),
            ("4KiB", 4096),
            ("4 KiB", 4096),
            ("64MiB", 64 << 20),
            ("2GiB", 2 << 30),
            ("1TiB", 1 << 40),
            ("3K", 3072),
            ("3M", 3 << 20),
            ("3G", 3 << 30),
            ("10B", 10),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        let c = parse("lru_bytes = 1000\nmax_entry_bytes = \"1GiB\"").unwrap();
        assert_eq!((c.lru_bytes, c.max_entry_bytes), (1000, 1 << 30));
    }

    #[test]
    fn ambiguous_negative_and_unknown_sizes_are_errors() {
        for text in [
            "1KB",
            "1MB",
            "MiB",
            "1 parsec",
            "-1",
            "1.5MiB",
            "99999999999999GiB",
            "",
        ] {
            assert!(parse_size(text).is_err(), "{text}");
        }
        assert!(parse_size("1KB").unwrap_err().contains("KiB"));
        assert!(error("lru_bytes = -1").contains("key `lru_bytes`"));
    }

    #[test]
    fn tilde_in_backing_expands_to_home() {
        assert_eq!(
            parse("backing = \"~\"").unwrap().backing,
            PathBuf::from("/home/u")
        );
        assert_eq!(
            parse("backing = \"~/c\"").unwrap().backing,
            PathBuf::from("/home/u/c")
        );
        assert!(error("backing = \"~bob/c\"").contains("key `backing`"));
    }

    #[test]
    fn relative_backing_is_taken_from_the_config_files_directory() {
        assert_eq!(
            parse("backing = \"data\"").unwrap().backing,
            PathBuf::from("/etc/data")
        );
    }

    #[test]
    fn zero_where_it_would_stall_everything_is_an_error() {
        assert!(error("max_refreshes = 0").contains("key `max_refreshes`"));
        assert!(error("max_entry_bytes = 0").contains("key `max_entry_bytes`"));
        assert!(error("refresh_timeout = \"0s\"").contains("key `refresh_timeout`"));
    }

    #[test]
    fn unknown_key_error_names_file_line_and_key() {
        let msg = error("duration = \"1h\"\n\ndurtion = \"2h\"\n");
        assert!(
            msg.starts_with("/etc/cachetta.toml:3: unknown key `durtion`"),
            "{msg}"
        );
        assert!(msg.contains("did you mean `duration`?"), "{msg}");
    }

    #[test]
    fn unknown_key_in_a_rule_names_file_line_and_key() {
        let msg = error("[[rule]]\nmatch = \"a.json\"\nfil_on_miss = true\n");
        assert!(
            msg.starts_with("/etc/cachetta.toml:3: unknown key `fil_on_miss`"),
            "{msg}"
        );
        // Top-level-only keys are unknown inside a rule.
        let msg = error("[[rule]]\nmatch = \"a.json\"\nlru_bytes = 1\n");
        assert!(
            msg.starts_with("/etc/cachetta.toml:3: unknown key `lru_bytes`"),
            "{msg}"
        );
    }

    #[test]
    fn bad_value_error_names_file_line_and_key() {
        let msg = error("lru_entries = 3\n\n\n\n\n\nduration = \"ten\"\n");
        assert!(
            msg.starts_with("/etc/cachetta.toml:7: key `duration`: invalid duration \"ten\""),
            "{msg}"
        );
        let msg = error("[[rule]]\nmatch = \"a.json\"\nstale = \"soon\"\n");
        assert!(
            msg.starts_with("/etc/cachetta.toml:3: key `stale`:"),
            "{msg}"
        );
        let msg = error("sync_writes = \"yes\"");
        assert!(
            msg.starts_with("/etc/cachetta.toml:1: key `sync_writes`: expected true or false"),
            "{msg}"
        );
        let msg = error("\nwatch = \"sometimes\"");
        assert!(
            msg.starts_with("/etc/cachetta.toml:2: key `watch`:"),
            "{msg}"
        );
    }

    #[test]
    fn rule_without_match_error_names_file_line_and_key() {
        let msg = error("duration = \"1h\"\n\n[[rule]]\nduration = \"2h\"\n");
        assert!(msg.starts_with("/etc/cachetta.toml:"), "{msg}");
        assert!(msg.contains("`match`"), "{msg}");
        let line: usize = msg["/etc/cachetta.toml:".len()..]
            .split(':')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!((3..=4).contains(&line), "{msg}");
    }

    #[test]
    fn invalid_pattern_error_names_file_line_and_key() {
        for pattern in [
            "a/{city.json",
            "a/{1x}.json",
            "a/{a,b}.json",
            "a/{x}/{x}.json",
            "/abs.json",
            "a/../b.json",
            "{key}.json",
            "a}.json",
            "a\\b",
        ] {
            let msg = error(&format!("[[rule]]\n\nmatch = {pattern:?}\n"));
            assert!(
                msg.starts_with("/etc/cachetta.toml:3: key `match`: invalid pattern"),
                "{pattern}: {msg}"
            );
        }
    }

    #[test]
    fn rule_that_is_not_an_array_of_tables_names_the_key() {
        let msg = error("\n[rule]\nmatch = \"a.json\"\n");
        assert!(
            msg.starts_with("/etc/cachetta.toml:2: key `rule`:"),
            "{msg}"
        );
    }

    #[test]
    fn duplicate_key_error_names_the_key() {
        let msg = error("duration = 1\nduration = 2\n");
        assert!(
            msg.starts_with("/etc/cachetta.toml:2: duplicate key `duration`"),
            "{msg}"
        );
    }

    #[test]
    fn toml_syntax_error_names_file_and_line() {
        let msg = error("duration = \"1h\"\nstale = \n");
        assert!(msg.starts_with("/etc/cachetta.toml:2:"), "{msg}");
    }

    #[test]
    fn missing_explicit_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.toml");
        let msg = load_in(Some(&path), &Overrides::default(), &dirs())
            .unwrap_err()
            .message;
        assert!(msg.contains("nope.toml"), "{msg}");
    }

    #[test]
    fn missing_default_file_gives_defaults_and_present_one_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_path_buf();
        let d = Dirs::from_vars(|name| (name == "HOME").then(|| home.clone().into()));
        let c = load_in(None, &Overrides::default(), &d).unwrap();
        assert_eq!(c.defaults, Settings::default());

        let file = d.config_file();
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "durtion = 1\n").unwrap();
        let msg = load_in(None, &Overrides::default(), &d)
            .unwrap_err()
            .message;
        assert!(
            msg.starts_with(&format!("{}:1: unknown key `durtion`", file.display())),
            "{msg}"
        );

        std::fs::write(&file, "duration = 1\n").unwrap();
        let c = load_in(None, &Overrides::default(), &d).unwrap();
        assert_eq!(c.defaults.duration, secs(1));
    }

    #[test]
    fn star_and_question_mark_stay_within_one_segment() {
        assert!(matches("*.json", "a.json"));
        assert!(matches("*.json", ".json"));
        assert!(!matches("*.json", "d/a.json"));
        assert!(matches("d/*.json", "d/a.json"));
        assert!(!matches("d/*.json", "d/e/a.json"));
        assert!(matches("d/?.json", "d/a.json"));
        assert!(matches("d/?.json", "d/é.json"));
        assert!(!matches("d/?.json", "d/ab.json"));
        assert!(!matches("?", "/"));
    }

    #[test]
    fn double_star_matches_zero_or_more_segments() {
        assert!(matches("a/**/b.json", "a/b.json"));
        assert!(matches("a/**/b.json", "a/x/b.json"));
        assert!(matches("a/**/b.json", "a/x/y/b.json"));
        assert!(!matches("a/**/b.json", "a/xb.json"));
        assert!(matches("**", "x.json"));
        assert!(matches("**", "x/y/z.json"));
        assert!(matches("**/*.json", "x.json"));
        assert!(matches("**/*.json", "x/y/z.json"));
        assert!(!matches("**/*.json", "x/y/z.txt"));
        assert!(matches("a/**", "a/x/y.json"));
        assert!(!matches("a/**", "b/x.json"));
    }

    #[test]
    fn patterns_are_anchored_on_the_whole_key() {
        assert!(!matches("a.json", "xa.json"));
        assert!(!matches("a.json", "a.json.bak"));
        assert!(!matches("a/*.json", "b/a/x.json"));
    }

    #[test]
    fn regex_metacharacters_are_literal() {
        assert!(matches("a.b+c(d)[e]^$|.json", "a.b+c(d)[e]^$|.json"));
        assert!(!matches("a.json", "axjson"));
        assert!(!matches("a+.json", "aa.json"));
        assert!(matches("café/*.json", "café/x.json"));
        assert!(matches("lit\\{x\\}\\*.json", "lit{x}*.json"));
        assert!(!matches("lit\\*.json", "litx.json"));
    }

    #[test]
    fn named_captures_return_raw_bytes_in_pattern_order() {
        assert_eq!(
            caps("weather/{city}.json", b"weather/paris.json"),
            Some(vec![("city".into(), b"paris".to_vec())])
        );
        assert_eq!(
            caps("{country}/{city}-{day}.json", b"fr/paris-mon.json"),
            Some(vec![
                ("country".into(), b"fr".to_vec()),
                ("city".into(), b"paris".to_vec()),
                ("day".into(), b"mon".to_vec()),
            ])
        );
        // A capture is a non-empty part of one segment.
        assert_eq!(caps("weather/{city}.json", b"weather/.json"), None);
        assert_eq!(caps("weather/{city}.json", b"weather/a/b.json"), None);
    }

    #[test]
    fn non_utf8_keys_match_and_capture() {
        let key = b"weather/p\xffris.json";
        assert_eq!(
            caps("weather/{city}.json", key),
            Some(vec![("city".into(), b"p\xffris".to_vec())])
        );
        assert!(caps("weather/*.json", key).is_some());
        assert!(caps("**", key).is_some());
        assert!(caps("weather/p?ris.json", key).is_some());
    }

    #[test]
    fn first_matching_rule_wins_else_top_level() {
        let c = parse(
            r#"
            duration = "1m"
            [[rule]]
            match = "w/{city}.json"
            duration = "1h"
            [[rule]]
            match = "w/*.json"
            duration = "2h"
            [[rule]]
            match = "**/*.json"
            duration = "3h"
            "#,
        )
        .unwrap();
        let m = c.settings_for(OsStr::new("w/paris.json"));
        assert_eq!((m.rule, m.settings.duration), (Some(0), secs(3600)));
        assert_eq!(m.captures, vec![("city".to_string(), b"paris".to_vec())]);
        let m = c.settings_for(OsStr::new("x/y.json"));
        assert_eq!((m.rule, m.settings.duration), (Some(2), secs(3 * 3600)));
        assert!(m.captures.is_empty());
        let m = c.settings_for(OsStr::new("x.txt"));
        assert_eq!((m.rule, m.settings.duration), (None, secs(60)));
        assert!(m.captures.is_empty());
    }

    #[test]
    fn capture_names_are_checked() {
        for bad in [
            "{}.json",
            "{1a}.json",
            "{a-b}.json",
            "{a,b}.json",
            "{a}{A}.json",
            "{name}.json",
            "{Reason}.json",
        ] {
            assert!(Rule::new(bad, Settings::default()).is_err(), "{bad}");
        }
        for good in ["{_a1}.json", "{City}.json", "{a}-{b}.json"] {
            assert!(Rule::new(good, Settings::default()).is_ok(), "{good}");
        }
    }

    #[test]
    fn fill_dirs_are_the_literal_prefixes_of_fill_on_miss_rules() {
        let c = parse(
            r#"
            [[rule]]
            match = "weather/{city}.json"
            fill_on_miss = true
            [[rule]]
            match = "a/b/*.json"
            fill_on_miss = true
            [[rule]]
            match = "a/c/*/d/*.json"
            fill_on_miss = true
            [[rule]]
            match = "no/fill/*.json"
            [[rule]]
            match = "top.json"
            fill_on_miss = true
            "#,
        )
        .unwrap();
        let want: Vec<PathBuf> = ["weather", "a", "a/b", "a/c"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(c.fill_dirs(), want);
    }
}
