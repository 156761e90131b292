//! Flags + TOML file + defaults resolved into one [`Config`] ([`Config::load`], whose errors
//! name the file, line and key), the default paths ([`default_mountpoint`]), and rule matching
//! on keys.
//!
//! Knows nothing of FUSE or of the backing dir's contents.

mod file;
mod pattern;
mod units;

pub use units::{parse_duration, parse_size, MAX_DURATION};

use pattern::{unescape_literal, Matcher};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use file::from_toml_in;

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
    /// How long past its stale window an entry is kept while its refresh fails (SPEC §12).
    pub stale_if_error: Duration,
    /// Refresh hot keys before they turn stale (XFetch, SPEC §12).
    pub early_refresh: bool,
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
            stale_if_error: Duration::ZERO,
            early_refresh: false,
        }
    }
}

impl Settings {
    /// The rule's timing; stale-if-error only for keys with a refresh command (it needs one
    /// to fail).
    pub fn timing(&self) -> crate::policy::Timing {
        crate::policy::Timing {
            duration: self.duration,
            stale: self.stale,
            stale_if_error: if self.refresh.is_some() {
                self.stale_if_error
            } else {
                Duration::ZERO
            },
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
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
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

/// How the mount takes its requests from the kernel (SPEC §15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// FUSE-over-io_uring where the kernel offers it, else classic.
    Auto,
    /// FUSE-over-io_uring or no mount.
    Uring,
    /// `/dev/fuse`: io_uring is never asked for.
    Classic,
}

/// `auto`, `uring` or `classic`: the syntax of both the `transport` key and `--transport`.
impl FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Transport, String> {
        match s.trim() {
            "auto" => Ok(Transport::Auto),
            "uring" => Ok(Transport::Uring),
            "classic" => Ok(Transport::Classic),
            other => Err(format!(
                "invalid transport {other:?} (expected auto, uring or classic)"
            )),
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
    /// `--watch poll`: walk every entry this often (SPEC §13); zero never.
    pub full_scan_interval: Duration,
    /// Where the mount serves `GET /metrics` (SPEC §14), as `host:port`; `None` serves nothing.
    /// Resolved and bound by `cachetta mount`, which refuses to start if it cannot.
    pub metrics_addr: Option<String>,
    /// Which kernel transport the mount asks for (SPEC §15).
    pub transport: Transport,
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
    pub full_scan_interval: Option<Duration>,
    /// `--metrics-addr`; an empty one turns off the file's `metrics_addr`.
    pub metrics_addr: Option<String>,
    pub transport: Option<Transport>,
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
        self.literal_dirs(|settings| settings.fill_on_miss)
    }

    /// The directories that rules with a `refresh` command name literally: a refresh may
    /// create them at any moment.
    pub fn refresh_dirs(&self) -> Vec<PathBuf> {
        self.literal_dirs(|settings| settings.refresh.is_some())
    }

    fn literal_dirs(&self, of: impl Fn(&Settings) -> bool) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for rule in self.rules.iter().filter(|r| of(&r.settings)) {
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

/// `~/.cachetta`, where `mount` and `unmount` act when no mountpoint is given.
pub fn default_mountpoint() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
        .join(".cachetta")
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
        full_scan_interval: Duration::from_secs(600),
        metrics_addr: None,
        transport: Transport::Auto,
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
    if let Some(every) = overrides.full_scan_interval {
        config.full_scan_interval = every;
    }
    if let Some(addr) = &overrides.metrics_addr {
        config.metrics_addr = Some(addr.clone()).filter(|a| !a.is_empty());
    }
    if let Some(transport) = overrides.transport {
        config.transport = transport;
    }
}

#[cfg(test)]
mod pattern_tests;
#[cfg(test)]
mod tests;
