//! The config file: TOML read with spans, so that a bad value is reported with its file, line
//! and key, and resolved over the defaults into a [`Config`]. The model and rule matching are in
//! [`super`]; value syntax (durations, sizes, commands) in `units`.

use std::fmt::Display;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::{Spanned, Value};

use super::pattern::Matcher;
use super::units::{
    boolean, command, count, duration, positive, size, string, unknown_key_problem,
};
use super::{apply_overrides, defaults_in, Config, ConfigError, Dirs, Overrides, Rule, Settings};

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
    stale_if_error: Raw,
    early_refresh: Raw,
    lru_entries: Raw,
    lru_bytes: Raw,
    max_entry_bytes: Raw,
    max_refreshes: Raw,
    gc_interval: Raw,
    sync_writes: Raw,
    watch: Raw,
    full_scan_interval: Raw,
    metrics_addr: Raw,
    transport: Raw,
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
    stale_if_error: Raw,
    early_refresh: Raw,
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
    stale_if_error: &'a Raw,
    early_refresh: &'a Raw,
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
            stale_if_error: &self.stale_if_error,
            early_refresh: &self.early_refresh,
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
            stale_if_error: &self.stale_if_error,
            early_refresh: &self.early_refresh,
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

pub(super) fn from_toml_in(
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
    if let Some(d) = src.get(&raw.full_scan_interval, "full_scan_interval", duration)? {
        config.full_scan_interval = d;
    }
    if let Some(addr) = src.get(&raw.metrics_addr, "metrics_addr", |v| string(v).map(str::to_owned))? {
        // Empty is unset, as with the flag.
        config.metrics_addr = Some(addr).filter(|a| !a.is_empty());
    }
    if let Some(t) = src.get(&raw.transport, "transport", |v| string(v)?.parse())? {
        config.transport = t;
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
    if let Some(d) = src.get(raw.stale_if_error, "stale_if_error", duration)? {
        s.stale_if_error = d;
    }
    if let Some(b) = src.get(raw.early_refresh, "early_refresh", boolean)? {
        s.early_refresh = b;
    }
    Ok(s)
}

