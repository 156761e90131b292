//! The Rust library: Python cachetta's API over the filesystem's own engine.
//!
//! A [`Cachetta`] reads and writes JSON entry files with the mount's own parts: the same
//! `policy` arithmetic, the same `Store` (staged, atomic replace in the entry's directory; a
//! symlink at the entry is never followed), the same hot set (`hot`), single flight (`flight`),
//! bounded background pool (`pool`) and sweep (`gc`). So a Rust program, a Python program and
//! `cat ~/.cachetta/x.json` all see one cache. What lives here: the configuration and the
//! plain operations. The decorator (`cached`) is in `cached.rs`, `clear` in `clear.rs`,
//! `exists`/`age`/`info` in `inspection.rs`, the async API in `async_io.rs`.
//!
//! ```
//! use std::time::Duration;
//! use cachetta::Cachetta;
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("cache.json");
//! # fn fetch_data() -> Vec<u32> { vec![1, 2, 3] }
//!
//! let cache = Cachetta::new(path).duration(Duration::from_secs(24 * 3600));
//!
//! let data: Vec<u32> = match cache.read()? {
//!     Some(data) => data,
//!     None => {
//!         let data = fetch_data();
//!         cache.write(&data)?;
//!         data
//!     }
//! };
//! assert_eq!(cache.read::<Vec<u32>>()?, Some(data));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "tokio")]
mod async_io;
mod cached;
mod clear;
mod disk;
mod error;
mod inspection;
mod path;

use std::fmt;
use std::io;
use std::ops::Div;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tracing::{debug, warn};

use crate::clock::{Clock, SystemClock};
use crate::entry_policy::EntryPolicy;
use crate::hot::{HotSet, DEFAULT_MAX_BYTES};
use crate::policy::{evaluate, EntryState, Timing, Verdict};
use crate::store::{self, Kind};

pub use crate::inspect::{Info, InfoState};
pub use error::{Error, Result};

use path::PathSpec;

/// How long an entry is fresh unless told otherwise: 7 days, as in the seed.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// A predicate on a computed value: `true` to cache it.
type Condition = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

/// A file-based JSON cache: the seed's `Cachetta`, in Rust form.
///
/// Configure with the builder methods; `clone()` and builders are the seed's `copy(...)`.
/// Clones share the in-memory hot set (see [`Cachetta::lru_size`]).
///
/// | Python | Rust |
/// |---|---|
/// | `Cachetta(path="x.json")` | [`Cachetta::new("x.json")`](Cachetta::new) |
/// | `Cachetta(path=lambda city: f"w/{city}.json")` | [`Cachetta::dynamic(\|args\| ...)`](Cachetta::dynamic) |
/// | `duration=`, `stale_duration=`, `condition=`, `lru_size=` | same-named builders |
/// | `read=False`, `write=False` | [`read_enabled(false)`](Cachetta::read_enabled), [`write_enabled(false)`](Cachetta::write_enabled) |
/// | `cache / "x.json"`, `cache / fn` | `&cache / "x.json"`, [`join`](Cachetta::join), [`join_fn`](Cachetta::join_fn) |
/// | `cache.copy(read=False)` | `cache.clone().read_enabled(false)` |
/// | `read_cache(cache)`, `write_cache(cache, v)` | [`read`](Cachetta::read), [`write`](Cachetta::write) |
/// | `@cache` / `cache(fn)` / `cache.wrap(fn)` | [`cached`](Cachetta::cached), [`wrap`](Cachetta::wrap) |
/// | `invalidate`, `clear`, `clear(force=True)` | [`invalidate`](Cachetta::invalidate), [`clear`](Cachetta::clear), [`clear_force`](Cachetta::clear_force) |
/// | `exists`, `age`, `info` | [`exists`](Cachetta::exists), [`age`](Cachetta::age), [`info`](Cachetta::info) |
/// | `cache._get_path(*args)` | [`path_for`](Cachetta::path_for) |
/// | `a`-prefixed async methods | `_async`-suffixed methods (cargo feature `tokio`) |
#[derive(Clone)]
pub struct Cachetta {
    path: PathSpec,
    duration: Duration,
    stale_duration: Duration,
    read: bool,
    write: bool,
    condition: Option<Condition>,
    hot: Option<Arc<HotSet<PathBuf>>>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Cachetta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cachetta")
            .field("path", &self.path)
            .field("duration", &self.duration)
            .field("stale_duration", &self.stale_duration)
            .field("read", &self.read)
            .field("write", &self.write)
            .field("condition", &self.condition.is_some())
            .field("lru", &self.hot.as_ref().map(|h| h.usage()))
            .finish()
    }
}

/// An entry as found on disk (or in the hot set), decoded.
pub(crate) struct Found<T> {
    pub value: T,
    pub bytes: Arc<[u8]>,
    pub verdict: Verdict,
}

impl Cachetta {
    /// A cache at `path`: one entry when the name ends in `.json`, otherwise a folder holding
    /// one `<hash>.json` entry per argument list. Relative paths are taken from the current
    /// directory at each call, as in the seed.
    ///
    /// Defaults: duration 7 days, no stale window, reading and writing on, no condition, no
    /// hot set, the system clock.
    ///
    /// ```
    /// use cachetta::Cachetta;
    /// let cache = Cachetta::new("/tmp/cachetta-doc/me.json");
    /// assert_eq!(cache.path_for(&())?, std::path::Path::new("/tmp/cachetta-doc/me.json"));
    /// # Ok::<(), cachetta::library::Error>(())
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::with_spec(PathSpec::Fixed(path.into()))
    }

    /// A cache whose path is a function of the call's positional arguments (the seed's dynamic
    /// paths, `path=lambda ...`). The function sees the arguments as JSON values; a returned
    /// name that does not end in `.json` is a folder and gets `<hash>.json` inside it. The
    /// plain methods (`read`, `write`, `info`, ...) call it with no arguments: fix the
    /// arguments first with [`at`](Cachetta::at).
    ///
    /// ```
    /// use cachetta::Cachetta;
    /// let cache = Cachetta::dynamic(|args| {
    ///     format!("/tmp/cachetta-doc/weather/{}.json", args[0].as_str().unwrap_or("_"))
    /// });
    /// assert_eq!(
    ///     cache.path_for(&("paris",))?,
    ///     std::path::Path::new("/tmp/cachetta-doc/weather/paris.json")
    /// );
    /// # Ok::<(), cachetta::library::Error>(())
    /// ```
    pub fn dynamic<F, P>(path: F) -> Self
    where
        F: Fn(&[Value]) -> P + Send + Sync + 'static,
        P: Into<PathBuf>,
    {
        Self::with_spec(PathSpec::Dynamic(Arc::new(move |args| path(args).into())))
    }

    fn with_spec(path: PathSpec) -> Self {
        Cachetta {
            path,
            duration: DEFAULT_DURATION,
            stale_duration: Duration::ZERO,
            read: true,
            write: true,
            condition: None,
            hot: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// How long an entry is fresh after it is written.
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// How long after `duration` [`cached`](Cachetta::cached) still answers with the old value
    /// while it recomputes in the background (stale-while-revalidate). Zero (the default): no
    /// stale window. [`read`](Cachetta::read) never returns a stale value, as in the seed.
    pub fn stale_duration(mut self, stale: Duration) -> Self {
        self.stale_duration = stale;
        self
    }

    /// The seed's `read=`: with `false`, reads always miss (`cached` always computes).
    pub fn read_enabled(mut self, read: bool) -> Self {
        self.read = read;
        self
    }

    /// The seed's `write=`: with `false`, writes do nothing.
    pub fn write_enabled(mut self, write: bool) -> Self {
        self.write = write;
        self
    }

    /// Keep up to `entries` recently read or written entries in memory (0: none, the
    /// default), and at most [`lru_bytes`](Cachetta::lru_bytes) of them (64 MiB unless set).
    /// It is the mount's hot set: a kept copy is served only while the file on disk is
    /// unchanged (same device, inode, size, mtime and ctime, checked with one `lstat` per read)
    /// and the entry is fresh, so a change by anyone else is never hidden; an entry larger than
    /// a quarter of the byte bound is never kept. Safe to share across threads; this cache and
    /// its later clones and joins share the new hot set.
    pub fn lru_size(mut self, entries: usize) -> Self {
        let max_bytes = self
            .hot
            .as_ref()
            .map_or(DEFAULT_MAX_BYTES, |h| h.limits().1);
        self.hot = (entries > 0).then(|| Arc::new(HotSet::new(entries, max_bytes)));
        self
    }

    /// Bound the hot set of [`lru_size`](Cachetta::lru_size) to `bytes` (the mount's
    /// `lru_bytes`); it replaces the hot set, as `lru_size` does.
    pub fn lru_bytes(mut self, bytes: u64) -> Self {
        if let Some(hot) = &self.hot {
            self.hot = Some(Arc::new(HotSet::new(hot.limits().0, bytes)));
        }
        self
    }

    /// Cache a computed value only when `condition` holds for it (the seed's `condition=`).
    /// It sees the value as JSON, as written to the file; a value it refuses is still returned.
    ///
    /// ```
    /// use cachetta::Cachetta;
    /// # let dir = tempfile::tempdir()?;
    /// let cache = Cachetta::new(dir.path().join("x.json")).condition(|v| !v.is_null());
    /// let got: Option<u32> = cache.cached(&(), || None)?;
    /// assert_eq!(got, None);
    /// assert!(!cache.exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn condition(mut self, condition: impl Fn(&Value) -> bool + Send + Sync + 'static) -> Self {
        self.condition = Some(Arc::new(condition));
        self
    }

    /// Where "now" comes from (for tests that move time, e.g. [`crate::clock::ManualClock`]).
    /// Writes stamp entries with this clock's time.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A cache at `sub` beneath this one (the seed's `cache / "sub"`; also `&cache / "sub"`).
    ///
    /// ```
    /// use cachetta::Cachetta;
    /// let root = Cachetta::new("/tmp/cachetta-doc");
    /// let me = &root / "users" / "me.json";
    /// assert_eq!(me.path_for(&())?, root.join("users/me.json").path_for(&())?);
    /// # Ok::<(), cachetta::library::Error>(())
    /// ```
    pub fn join(&self, sub: impl AsRef<Path>) -> Cachetta {
        Cachetta {
            path: self.path.join(sub.as_ref().to_path_buf()),
            ..self.clone()
        }
    }

    /// A cache at a path computed from the call's arguments beneath this one (the seed's
    /// `cache / fn`).
    ///
    /// ```
    /// use cachetta::Cachetta;
    /// let root = Cachetta::new("/tmp/cachetta-doc");
    /// let by_kind = root.join_fn(|args| format!("{}/{}.json", args[0].as_str().unwrap(), args[1]));
    /// assert_eq!(
    ///     by_kind.path_for(&("user", 42))?,
    ///     std::path::Path::new("/tmp/cachetta-doc/user/42.json")
    /// );
    /// # Ok::<(), cachetta::library::Error>(())
    /// ```
    pub fn join_fn<F, P>(&self, sub: F) -> Cachetta
    where
        F: Fn(&[Value]) -> P + Send + Sync + 'static,
        P: Into<PathBuf>,
    {
        Cachetta {
            path: self.path.join_fn(Arc::new(move |args| sub(args).into())),
            ..self.clone()
        }
    }

    /// The absolute entry path a call with `args` reads and writes (the seed's `_get_path`).
    ///
    /// `args` is the positional argument list, as for [`crate::hash()`]: a tuple, array or
    /// `Vec`, `()` for none. With arguments, a fixed `name.json` becomes the sibling
    /// `name-<hash>.json` (the seed's automatic cache keys) and a folder gets `<hash>.json`
    /// inside it; a dynamic path is used as its function returns it.
    ///
    /// ```
    /// use cachetta::{hash, Cachetta};
    /// let cache = Cachetta::new("/tmp/cachetta-doc/weather.json");
    /// let key = hash(&("paris", 3));
    /// assert_eq!(
    ///     cache.path_for(&("paris", 3))?,
    ///     std::path::PathBuf::from(format!("/tmp/cachetta-doc/weather-{key}.json"))
    /// );
    /// let folder = Cachetta::new("/tmp/cachetta-doc/llm");
    /// assert_eq!(
    ///     folder.path_for(&("paris", 3))?,
    ///     std::path::PathBuf::from(format!("/tmp/cachetta-doc/llm/{key}.json"))
    /// );
    /// # Ok::<(), cachetta::library::Error>(())
    /// ```
    pub fn path_for<A: Serialize + ?Sized>(&self, args: &A) -> Result<PathBuf> {
        self.path.resolve(args)
    }

    /// This cache fixed at the entry for `args`, so the plain methods (`read`, `write`,
    /// `invalidate`, `exists`, `age`, `info`) act on it: the seed's `read_cache(cache, *args)`,
    /// `cache.invalidate(*args)` and so on.
    ///
    /// ```
    /// use cachetta::Cachetta;
    /// # let dir = tempfile::tempdir()?;
    /// let cache = Cachetta::new(dir.path().join("weather.json"));
    /// let forecast: String = cache.cached(&("paris",), || "sunny".to_string())?;
    /// assert_eq!(cache.at(&("paris",))?.read::<String>()?, Some(forecast));
    /// cache.at(&("paris",))?.invalidate()?;
    /// assert!(!cache.at(&("paris",))?.exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn at<A: Serialize + ?Sized>(&self, args: &A) -> Result<Cachetta> {
        Ok(Cachetta {
            path: PathSpec::Fixed(self.path_for(args)?),
            ..self.clone()
        })
    }

    /// The entry the plain methods act on: the path for no arguments.
    fn entry_path(&self) -> PathBuf {
        self.path
            .resolve(&())
            .expect("no arguments always have a JSON form and a key")
    }

    fn timing(&self) -> Timing {
        Timing {
            duration: self.duration,
            stale: self.stale_duration,
            stale_if_error: Duration::ZERO,
        }
    }

    /// The entry's value if it is fresh; `None` when it is missing, stale, expired, corrupt
    /// (not valid JSON, logged at warn), not a `T` (logged at warn), or reading is disabled.
    /// `Err` only when the file system refuses (e.g. permission denied).
    ///
    /// ```
    /// use cachetta::Cachetta;
    /// # let dir = tempfile::tempdir()?;
    /// let cache = Cachetta::new(dir.path().join("x.json"));
    /// assert_eq!(cache.read::<u32>()?, None);
    /// cache.write(&7)?;
    /// assert_eq!(cache.read::<u32>()?, Some(7));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        if !self.read {
            debug!("reading disabled, skipping cache");
            return Ok(None);
        }
        let path = self.entry_path();
        let found = self
            .lookup::<T>(&path, false)
            .map_err(|e| Error::io(&path, e))?;
        Ok(found.map(|f| f.value))
    }

    /// Write `value` as the entry: serde_json, staged beside the entry and renamed over it
    /// (readers see the old entry or the new, never part of one), creating the directories,
    /// stamped fresh. Does nothing when writing is disabled.
    ///
    /// ```
    /// use cachetta::Cachetta;
    /// # let dir = tempfile::tempdir()?;
    /// let cache = Cachetta::new(dir.path().join("a/b/x.json"));
    /// cache.write(&serde_json::json!({"a": 1}))?;
    /// assert_eq!(std::fs::read_to_string(dir.path().join("a/b/x.json"))?, r#"{"a":1}"#);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        if !self.write {
            debug!("writing disabled, skipping cache");
            return Ok(());
        }
        let path = self.entry_path();
        let bytes = serde_json::to_vec(value)?;
        self.store_bytes(&path, bytes.into())
            .map_err(|e| Error::io(&path, e))
    }

    /// Delete the entry file, whatever its state; nothing to delete is fine. A `cached`
    /// computation of this entry running at the time does not write its result afterwards:
    /// the delete wins, as `rm` does on the mount.
    ///
    /// ```
    /// use cachetta::Cachetta;
    /// # let dir = tempfile::tempdir()?;
    /// let cache = Cachetta::new(dir.path().join("x.json"));
    /// cache.write(&1)?;
    /// cache.invalidate()?;
    /// assert!(!cache.exists());
    /// cache.invalidate()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn invalidate(&self) -> Result<()> {
        let path = self.entry_path();
        // First stop a computation of it from writing afterwards: the delete wins.
        cached::cancel(&path);
        // The kept copy goes with it (SPEC §7).
        if let Some(hot) = &self.hot {
            hot.forget(&path);
        }
        disk::remove(&path)
            .map(drop)
            .map_err(|e| Error::io(&path, e))
    }

    /// The entry at `path` if it is fresh (or, with `allow_stale`, stale) and decodes as a
    /// `T`. Served from the hot set when the file is unchanged since it was kept.
    pub(crate) fn lookup<T: DeserializeOwned>(
        &self,
        path: &Path,
        allow_stale: bool,
    ) -> io::Result<Option<Found<T>>> {
        let Some(stat) = disk::meta(path)? else {
            debug!(path = %path.display(), "cache miss: no entry");
            return Ok(None);
        };
        if stat.kind != Kind::File {
            debug!(path = %path.display(), "cache miss: not a regular file");
            return Ok(None);
        }
        let servable = |verdict: &Verdict| match verdict.state {
            EntryState::Fresh => true,
            EntryState::Stale => allow_stale,
            // The library has no refresh command for stale-if-error to wait on.
            EntryState::Grace | EntryState::Expired => false,
        };
        // The entry's own policy attributes (SPEC §12) override this cache's timing.
        let timing = EntryPolicy::of_path(path).apply(self.timing(), false);
        let verdict = evaluate(stat.mtime, self.clock.now(), timing);
        if !servable(&verdict) {
            debug!(path = %path.display(), state = verdict.state.as_str(), "cache miss");
            return Ok(None);
        }
        if let Some(bytes) = self
            .hot
            .as_ref()
            .and_then(|hot| hot.get(&path.to_path_buf(), &stat.version()))
        {
            return Ok(decode(path, &bytes).map(|value| Found {
                value,
                bytes,
                verdict,
            }));
        }
        let Some((bytes, stat)) = disk::load(path)? else {
            return Ok(None);
        };
        // Judge what was actually read: the file may have been replaced since the lstat.
        let verdict = evaluate(stat.mtime, self.clock.now(), timing);
        if !servable(&verdict) {
            return Ok(None);
        }
        let Some(value) = decode(path, &bytes) else {
            return Ok(None);
        };
        let bytes: Arc<[u8]> = bytes.into();
        if let Some(hot) = &self.hot {
            hot.insert(path.to_path_buf(), stat.version(), bytes.clone());
        }
        Ok(Some(Found {
            value,
            bytes,
            verdict,
        }))
    }

    /// Publish `bytes` as the entry at `path` and keep them in the hot set.
    pub(crate) fn store_bytes(&self, path: &Path, bytes: Arc<[u8]>) -> io::Result<()> {
        let version = disk::publish(path, &bytes, self.clock.now())?;
        debug!(path = %path.display(), "wrote cache entry");
        if let Some(hot) = &self.hot {
            hot.insert(path.to_path_buf(), version, bytes);
        }
        Ok(())
    }
}

/// `bytes` as a `T`, or `None` with a warning saying why (the seed logs corrupt data too).
fn decode<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Option<T> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Some(value),
        Err(e) if store::is_valid_json(bytes) => {
            warn!(path = %path.display(), error = %e, "cache entry is not the type asked for; treating it as a miss");
            None
        }
        Err(_) => {
            warn!(path = %path.display(), "corrupt cache entry (not valid JSON); treating it as a miss");
            None
        }
    }
}

impl<P: AsRef<Path>> Div<P> for &Cachetta {
    type Output = Cachetta;

    fn div(self, sub: P) -> Cachetta {
        self.join(sub)
    }
}

impl<P: AsRef<Path>> Div<P> for Cachetta {
    type Output = Cachetta;

    fn div(self, sub: P) -> Cachetta {
        self.join(sub)
    }
}

#[cfg(test)]
mod tests;

/// `docs/library.md` (the README's "From Rust" section), so its examples are compiled and run.
#[cfg(doctest)]
#[doc = include_str!("../../docs/library.md")]
pub struct FromRustDocs;
