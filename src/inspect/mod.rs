//! What cachetta reports about one backing file: the [`Info`] object behind
//! `user.cachetta.info` and `cachetta info`, the plain-text `user.cachetta.*` attribute values,
//! human-readable durations for tables, and a symlink-safe walk of the backing dir for `ls`/gc.
//!
//! Built on `policy` (state arithmetic) and `store` (backing-dir access); knows nothing of FUSE.
//! [`Info`] is the one info type: the filesystem builds it with [`Info::from_stat`] from what
//! it already knows, the library (`Cachetta::info`) with [`Info::of_entry`] or
//! [`Info::missing`]; each then sets [`Info::refreshing`] and [`Info::refresh_error`] from its
//! own refresh runner.

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize, Serializer};

use crate::config::Config;
use crate::entry_policy::EntryPolicy;
use crate::policy::{self, EntryState, Timing};
use crate::store::{self, Kind, Stat, Store};

/// Prefix of every attribute cachetta computes; `setfattr` on these names is refused.
pub const ATTRIBUTE_PREFIX: &str = "user.cachetta.";

/// What a backing file is, as `info` and `ls` report it. A key with no regular file behind
/// it has no state (`Info::state` is `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InfoState {
    Fresh,
    Stale,
    Expired,
    /// A `.json` file that is not valid JSON (or over `max_entry_bytes`, or unreadable).
    Corrupt,
    /// A regular file whose name does not end in `.json`, including leftover staging files.
    Scratch,
}

impl InfoState {
    pub fn as_str(self) -> &'static str {
        match self {
            InfoState::Fresh => "fresh",
            InfoState::Stale => "stale",
            InfoState::Expired => "expired",
            InfoState::Corrupt => "corrupt",
            InfoState::Scratch => "scratch",
        }
    }

    /// Fresh and stale entries are what the mount shows.
    pub fn is_visible(self) -> bool {
        matches!(self, InfoState::Fresh | InfoState::Stale)
    }
}

impl From<EntryState> for InfoState {
    fn from(state: EntryState) -> Self {
        match state {
            EntryState::Fresh => InfoState::Fresh,
            // Kept by stale-if-error: served as stale while its refresh fails.
            EntryState::Stale | EntryState::Grace => InfoState::Stale,
            EntryState::Expired => InfoState::Expired,
        }
    }
}

/// Everything cachetta reports about one key: the `user.cachetta.info` object, also what
/// `cachetta info`, `ls --json` and the library's `Cachetta::info` return.
///
/// `expired` and `stale` keep Python `info()`'s meaning (expired once age ≥ duration; stale
/// when expired but inside the stale window), unlike `state`. The fields that only a file has
/// (`state`, `age`, `ttl`, `size`) are `None` (JSON `null`) when there is none, as Python's
/// `info()` reports `age: None` for a missing file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Info {
    /// A regular file is at [`Info::path`], whatever its state.
    pub exists: bool,
    pub state: Option<InfoState>,
    /// Seconds since mtime; 0 when mtime is in the future.
    pub age: Option<f64>,
    /// duration − floor(age): seconds until the entry turns stale, negative once it has.
    pub ttl: Option<i64>,
    pub expired: bool,
    pub stale: bool,
    /// The matching rule's duration, whole seconds.
    pub duration: u64,
    /// The matching rule's stale window, whole seconds.
    pub stale_duration: u64,
    /// The stale-if-error window (SPEC §12), whole seconds; 0 for keys without a refresh
    /// command. `duration`, `stale_duration` and this are the effective values: the entry's
    /// overrides, else its rule's.
    #[serde(default)]
    pub stale_if_error: u64,
    /// The short names of the entry's own policy attributes, e.g. `["duration"]`.
    #[serde(default)]
    pub overrides: Vec<String>,
    /// Absolute backing path; in JSON, non-UTF-8 bytes become U+FFFD.
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// Bytes.
    pub size: Option<u64>,
    /// A refresh of this key is running (the mount's refresh runner, or the library's
    /// computation in this process).
    pub refreshing: bool,
    /// The last refresh failure, on one line, if the last refresh failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_error: Option<String>,
    /// The key's last finished refresh since the mount started; `null` without a mount.
    #[serde(default)]
    pub last_refresh: Option<LastRefresh>,
}

/// One finished refresh, as `info`'s `last_refresh` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRefresh {
    /// When it finished, unix seconds.
    pub at: f64,
    /// How long it ran.
    pub seconds: f64,
    /// `ok`, `failed` or `declined`.
    pub outcome: String,
    /// `stale`, `miss`, `error`, `demand` or `early`.
    pub reason: String,
}

/// A path as a JSON string; bytes that are not UTF-8 become U+FFFD.
pub(crate) fn lossy_path<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

impl Info {
    /// A key with no regular file behind it (Python `info()`: not expired, not stale).
    pub fn missing(path: PathBuf, timing: Timing) -> Info {
        Info {
            exists: false,
            state: None,
            age: None,
            ttl: None,
            expired: false,
            stale: false,
            duration: timing.duration.as_secs(),
            stale_duration: timing.stale.as_secs(),
            stale_if_error: timing.stale_if_error.as_secs(),
            overrides: Vec::new(),
            path,
            size: None,
            refreshing: false,
            refresh_error: None,
            last_refresh: None,
        }
    }

    /// The info of an entry file at `path` (fresh, stale, expired, or corrupt unless
    /// `valid_json`), last modified at `mtime`, `size` bytes long, judged at `now`.
    pub fn of_entry(
        path: PathBuf,
        mtime: SystemTime,
        size: u64,
        valid_json: bool,
        timing: Timing,
        now: SystemTime,
    ) -> Info {
        let verdict = policy::evaluate(mtime, now, timing);
        let duration = timing.duration.as_secs();
        let whole_age = i64::try_from(verdict.age.as_secs()).unwrap_or(i64::MAX);
        let state = if valid_json {
            verdict.state.into()
        } else {
            InfoState::Corrupt
        };
        Info {
            exists: true,
            state: Some(state),
            age: Some(verdict.age.as_secs_f64()),
            ttl: Some(
                i64::try_from(duration)
                    .unwrap_or(i64::MAX)
                    .saturating_sub(whole_age),
            ),
            // Python's flags, computed from time alone (even for a corrupt file): a future
            // mtime is fresh, not expired.
            expired: verdict.state != EntryState::Fresh,
            stale: matches!(verdict.state, EntryState::Stale | EntryState::Grace),
            duration,
            stale_duration: timing.stale.as_secs(),
            stale_if_error: timing.stale_if_error.as_secs(),
            overrides: Vec::new(),
            path,
            size: Some(size),
            refreshing: false,
            refresh_error: None,
            last_refresh: None,
        }
    }

    /// The info of the regular file `key` (relative to the root) with metadata `st`, whose
    /// content is (`valid_json`) or is not one JSON value; `path` is its absolute backing path.
    /// `valid_json` is ignored for scratch files (names not ending in `.json`).
    pub fn from_stat(
        key: &Path,
        path: PathBuf,
        st: &Stat,
        valid_json: bool,
        timing: Timing,
        now: SystemTime,
    ) -> Info {
        let name = key.file_name().unwrap_or_default();
        if store::is_entry_name(name) {
            return Info::of_entry(path, st.mtime, st.size, valid_json, timing, now);
        }
        // Scratch files have no expiry; gc removes them by age alone.
        Info {
            state: Some(InfoState::Scratch),
            ttl: Some(0),
            expired: false,
            stale: false,
            ..Info::of_entry(path, st.mtime, st.size, true, timing, now)
        }
    }

    /// This info with the entry's own policy attributes named in `overrides`.
    pub fn with_overrides(mut self, policy: &EntryPolicy) -> Info {
        self.overrides = policy.overridden().into_iter().map(String::from).collect();
        self
    }

    /// Whether the mount shows this key (a fresh or stale entry).
    pub fn is_visible(&self) -> bool {
        self.state.is_some_and(InfoState::is_visible)
    }
}

/// The info of `key` (a path relative to the backing root) at `now`. Reads the file to tell
/// a corrupt entry from a valid one; anything that is not a regular file is `exists: false`.
pub fn entry_info(store: &Store, config: &Config, key: &Path, now: SystemTime) -> Info {
    let settings = config.settings_for(key.as_os_str()).settings;
    let timing = settings.timing();
    let path = store.absolute(key);
    let stat = match store.stat(key) {
        Ok(st) if st.kind == Kind::File => st,
        _ => return Info::missing(path, timing),
    };
    if !store::is_entry_name(key.file_name().unwrap_or_default()) {
        return Info::from_stat(key, path, &stat, true, timing, now);
    }
    match store.open_file(key, OFlags::RDONLY, Mode::empty()) {
        Ok((file, st)) => {
            let valid = content_is_valid(&file, config.max_entry_bytes);
            let policy = EntryPolicy::of_file(&file);
            let timing = policy.timing_under(settings);
            Info::from_stat(key, path, &st, valid, timing, now).with_overrides(&policy)
        }
        // Exists but cannot be read: the mount cannot serve it either.
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
            Info::from_stat(key, path, &stat, false, timing, now)
        }
        Err(_) => Info::missing(path, timing),
    }
}

/// Whether an entry file holds one JSON value within `limit` bytes, as the mount judges it.
pub fn content_is_valid(file: &std::fs::File, limit: u64) -> bool {
    store::file_is_valid_json(file, limit).unwrap_or(false)
}

/// The `user.cachetta.*` attributes of `info`, full names (with the `user.cachetta.` prefix),
/// in `getfattr -d` order. Values are plain text without a newline; `path` carries the raw
/// name bytes; `state`, `age` and `ttl` are present only for an existing file and
/// `refresh_error` only when set; `info` is the compact JSON object.
pub fn attributes(info: &Info) -> Vec<(&'static str, Vec<u8>)> {
    let text = |s: String| s.into_bytes();
    let flag = |b: bool| text(b.to_string());
    let mut attrs = Vec::new();
    if let Some(state) = info.state {
        attrs.push(("user.cachetta.state", text(state.as_str().to_string())));
    }
    if let Some(age) = info.age {
        attrs.push(("user.cachetta.age", text((age.floor() as i64).to_string())));
    }
    if let Some(ttl) = info.ttl {
        attrs.push(("user.cachetta.ttl", text(ttl.to_string())));
    }
    attrs.extend([
        ("user.cachetta.expired", flag(info.expired)),
        ("user.cachetta.stale", flag(info.stale)),
        ("user.cachetta.duration", text(info.duration.to_string())),
        (
            "user.cachetta.stale_duration",
            text(info.stale_duration.to_string()),
        ),
        (
            "user.cachetta.stale_if_error",
            text(info.stale_if_error.to_string()),
        ),
        (
            "user.cachetta.path",
            info.path.as_os_str().as_bytes().to_vec(),
        ),
        ("user.cachetta.refreshing", flag(info.refreshing)),
    ]);
    if let Some(error) = &info.refresh_error {
        attrs.push((
            "user.cachetta.refresh_error",
            text(crate::flight::one_line(error)),
        ));
    }
    let json = serde_json::to_vec(info).unwrap_or_else(|_| b"{}".to_vec());
    attrs.push(("user.cachetta.info", json));
    attrs
}

/// A duration for tables: the two largest non-zero units, e.g. `3h12m`, `45s`, `2d3h`, `-5m`.
pub fn human_duration(secs: i64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let sign = if secs < 0 { "-" } else { "" };
    let mut rest = secs.unsigned_abs();
    let Some(first) = UNITS.iter().position(|&(size, _)| rest >= size) else {
        return "0s".to_string();
    };
    let mut out = sign.to_string();
    for &(size, unit) in UNITS.iter().skip(first).take(2) {
        let count = rest / size;
        rest %= size;
        if count > 0 {
            out.push_str(&format!("{count}{unit}"));
        }
    }
    out
}

/// A user-given key or prefix as a clean relative path (`./a//b/` → `a/b`); `None` when it is
/// absolute or climbs out with `..`.
pub fn relative_key(input: &Path) -> Option<PathBuf> {
    let mut key = PathBuf::new();
    for part in input.components() {
        match part {
            Component::Normal(name) => key.push(name),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => return None,
        }
    }
    Some(key)
}

#[cfg(test)]
mod tests;
