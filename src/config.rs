//! Flags + TOML file + defaults resolved into one [`Config`], and rule matching on keys.
//!
//! Knows nothing of FUSE or of the backing dir's contents.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    // private: the compiled matcher
}

/// How the backing dir is watched for changes made behind the mount's back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    Inotify,
    Poll(Duration),
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
        let _ = (explicit, overrides);
        todo!()
    }

    /// Parse TOML text; `origin` names the file in error messages.
    pub fn from_toml(
        text: &str,
        origin: &Path,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let _ = (text, origin, overrides);
        todo!()
    }

    /// The defaults alone, with overrides applied.
    pub fn defaults(overrides: &Overrides) -> Config {
        let _ = overrides;
        todo!()
    }

    /// The first rule whose `match` fits `key` (a path relative to the cache root, `/`-separated,
    /// raw bytes), else the top-level settings.
    pub fn settings_for(&self, key: &OsStr) -> Matched<'_> {
        let _ = key;
        todo!()
    }
}
