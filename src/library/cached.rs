//! The decorator: `cached` reads the entry, and on a miss computes the value, writes it when
//! `condition` allows, and returns it. Inside the stale window it answers with the old value at
//! once and recomputes in the background, on a bounded pool. One computation per entry at a
//! time: callers that need the entry meanwhile wait for it and share its value.
//!
//! The engine is the mount's: [`crate::flight`] (one flight per entry path across every
//! `Cachetta` of the process, "rm wins", the last error) and [`crate::pool`] (at most
//! [`BACKGROUND_REFRESHES`] background recomputations at once, the rest queued).

use std::any::Any;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, error, warn};

use super::{Cachetta, Error, Found, Result};
use crate::flight::{self, Begin, Flights, Settled};
use crate::policy::EntryState;
use crate::pool::Pool;

/// At most this many background recomputations of stale entries run at once in a process (the
/// mount's default `max_refreshes`); more wait in a queue.
pub const BACKGROUND_REFRESHES: usize = 4;

/// What a computation gave the callers that joined it: the value as JSON bytes, or `None` when
/// it failed or panicked (a joined caller then computes for itself).
pub(crate) type Computed = Option<Arc<[u8]>>;

pub(crate) type Lead = flight::Lead<Computed, ()>;

/// The library's flights: one per entry path, across every `Cachetta` value, sync and async.
static FLIGHTS: LazyLock<Flights<Computed>> = LazyLock::new(|| Flights::new(None));

/// The library's background recomputations (sync API; the async one bounds its tasks the same).
static POOL: LazyLock<Pool> = LazyLock::new(|| Pool::new("cachetta-refresh", BACKGROUND_REFRESHES));

/// The library keeps no backoff: a failed computation may be retried by the next caller.
const NO_BACKOFF: Duration = Duration::ZERO;

/// Lead the computation of `path`, or join the one running.
pub(crate) fn begin(path: &Path) -> Begin<Computed, ()> {
    FLIGHTS.begin(path, std::time::SystemTime::now(), false, || ())
}

/// Lead the computation of `path` if none is running (a background refresh starts only then).
pub(crate) fn lead_if_idle(path: &Path) -> Option<Lead> {
    match begin(path) {
        Begin::Lead(lead) => Some(lead),
        Begin::Joined(_) | Begin::BackingOff => None,
    }
}

/// `invalidate` wins: a computation of `path` running now writes nothing once this returns.
pub(crate) fn cancel(path: &Path) {
    FLIGHTS.cancel(path);
}

pub(crate) fn is_running(path: &Path) -> bool {
    FLIGHTS.is_running(path)
}

pub(crate) fn last_error(path: &Path) -> Option<String> {
    FLIGHTS.last_error(path)
}

/// A background computation that did not settle (it panicked, or could not start): fail its
/// flight with `message`, which `info` shows as `refresh_error`.
pub(crate) fn abandon(lead: Lead, message: String) {
    let failed = Settled::Failed {
        error: message,
        backoff: NO_BACKOFF,
    };
    lead.finish(None, failed, std::time::SystemTime::now());
}

/// What a caller does after looking at the entry.
pub(crate) enum Lookup<T> {
    /// Fresh: the answer.
    Hit(T),
    /// Stale: the answer, and a refresh should start.
    Stale(T),
    /// Nothing servable.
    Miss,
}

impl Cachetta {
    /// The seed's decorator, for one call: the entry for `args` if it is fresh, else
    /// `compute()`, written when `condition` allows and returned.
    ///
    /// `args` is the positional argument list (a tuple, array or `Vec`; `()` for none). It picks
    /// the entry, as [`path_for`](Cachetta::path_for) shows: `name-<hash>.json` beside a
    /// `name.json` path, `<hash>.json` in a folder path, or what a dynamic path returns.
    ///
    /// Inside the stale window (see [`stale_duration`](Cachetta::stale_duration)) the old value
    /// is returned at once and `compute` runs on a background thread, which is why it must be
    /// `Send + 'static` (move clones in). At most one computation of an entry runs at a time in
    /// the process; concurrent callers wait for it and get its value.
    ///
    /// `Err` when the computed value cannot be written (the callers that joined still get it)
    /// or has no JSON form, or `args` has no key. A panic in `compute` reaches this caller;
    /// joined callers then compute for themselves.
    ///
    /// ```
    /// use cachetta::Cachetta;
    /// # let dir = tempfile::tempdir()?;
    /// let cache = Cachetta::new(dir.path().join("square.json"));
    /// let square = |n: u64| cache.cached(&(n,), move || n * n);
    /// assert_eq!(square(12)?, 144);
    /// assert_eq!(cache.at(&(12,))?.read::<u64>()?, Some(144));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cached<A, T, F>(&self, args: &A, compute: F) -> Result<T>
    where
        A: Serialize + ?Sized,
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.try_cached(args, move || Ok::<T, Error>(compute()))
    }

    /// [`cached`](Cachetta::cached) for a computation that can fail: an `Err` is returned to
    /// this caller and nothing is written (a background refresh's failure is logged and shown
    /// in [`info`](Cachetta::info) as `refresh_error`). The error type takes in the library's
    /// own errors (`anyhow::Error` does).
    ///
    /// ```
    /// use cachetta::Cachetta;
    /// # let dir = tempfile::tempdir()?;
    /// let cache = Cachetta::new(dir.path().join("me.json"));
    /// let me: anyhow::Result<String> = cache.try_cached(&(), || Err(anyhow::anyhow!("offline")));
    /// assert!(me.is_err());
    /// assert!(!cache.exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_cached<A, T, E, F>(&self, args: &A, compute: F) -> Result<T, E>
    where
        A: Serialize + ?Sized,
        T: Serialize + DeserializeOwned + Send + 'static,
        E: From<Error> + Display + Send + 'static,
        F: FnOnce() -> Result<T, E> + Send + 'static,
    {
        let path = self.path_for(args)?;
        self.cached_at(path, compute)
    }

    /// `f` with caching: the seed's `cache.wrap(fn)` (and `@cache`). The argument (a tuple for
    /// several) is the cache key, as in [`cached`](Cachetta::cached).
    ///
    /// ```
    /// use cachetta::Cachetta;
    /// # let dir = tempfile::tempdir()?;
    /// let cache = Cachetta::new(dir.path().join("weather"));
    /// let forecast = cache.wrap(|(city, days): (String, u32)| format!("{city}: sun for {days}d"));
    /// assert_eq!(forecast(("paris".into(), 3))?, "paris: sun for 3d");
    /// assert!(cache.at(&("paris", 3))?.exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wrap<A, T, F>(&self, f: F) -> impl Fn(A) -> Result<T> + Send + Sync + 'static
    where
        A: Serialize + Send + 'static,
        T: Serialize + DeserializeOwned + Send + 'static,
        F: Fn(A) -> T + Send + Sync + 'static,
    {
        let cache = self.clone();
        let f = Arc::new(f);
        move |args: A| {
            let path = cache.path_for(&args)?;
            let f = f.clone();
            cache.cached_at(path, move || Ok::<T, Error>(f(args)))
        }
    }

    fn cached_at<T, E, F>(&self, path: PathBuf, compute: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        E: From<Error> + Display + Send + 'static,
        F: FnOnce() -> Result<T, E> + Send + 'static,
    {
        loop {
            match self.look(&path) {
                Lookup::Hit(value) => return Ok(value),
                Lookup::Stale(value) => {
                    self.refresh_in_background(&path, compute);
                    return Ok(value);
                }
                Lookup::Miss => {}
            }
            match begin(&path) {
                Begin::Joined(flight) => {
                    debug!(path = %path.display(), "joining the running computation");
                    if let Some(value) = joined(&path, flight.wait()) {
                        return Ok(value);
                    }
                }
                Begin::Lead(lead) => {
                    // Someone may have written it between our look and our lead.
                    if let Lookup::Hit(found) = self.look_found::<T>(&path) {
                        lead.finish(Some(found.bytes), Settled::Nothing, self.clock.now());
                        return Ok(found.value);
                    }
                    return self.settle(lead, &path, compute());
                }
                Begin::BackingOff => unreachable!("the library's flights keep no backoff"),
            }
        }
    }

    /// The entry at `path` as `cached` sees it; an unreadable file is a miss.
    pub(crate) fn look<T: DeserializeOwned>(&self, path: &Path) -> Lookup<T> {
        match self.look_found(path) {
            Lookup::Hit(found) => Lookup::Hit(found.value),
            Lookup::Stale(found) => Lookup::Stale(found.value),
            Lookup::Miss => Lookup::Miss,
        }
    }

    pub(crate) fn look_found<T: DeserializeOwned>(&self, path: &Path) -> Lookup<Found<T>> {
        if !self.read {
            return Lookup::Miss;
        }
        match self.lookup::<T>(path, true) {
            Ok(Some(found)) if found.verdict.state == EntryState::Fresh => Lookup::Hit(found),
            Ok(Some(found)) => Lookup::Stale(found),
            Ok(None) => Lookup::Miss,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read cache entry; computing");
                Lookup::Miss
            }
        }
    }

    /// After the leader's computation: write the value if it qualifies, hand it to the callers
    /// that joined, remember how it went, and return it.
    pub(crate) fn settle<T, E>(
        &self,
        lead: Lead,
        path: &Path,
        computed: Result<T, E>,
    ) -> Result<T, E>
    where
        T: Serialize,
        E: From<Error> + Display,
    {
        let now = self.clock.now();
        let failed = |error: String| Settled::Failed {
            error,
            backoff: NO_BACKOFF,
        };
        let value = match computed {
            Ok(value) => value,
            Err(e) => {
                lead.finish(None, failed(e.to_string()), now);
                return Err(e);
            }
        };
        let bytes: Arc<[u8]> = match serde_json::to_vec(&value) {
            Ok(bytes) => bytes.into(),
            Err(e) => {
                lead.finish(None, failed(e.to_string()), now);
                return Err(Error::from(e).into());
            }
        };
        let mut written = Ok(());
        let mut settled = Settled::Ok;
        if self.write && self.allows(&value) {
            match lead.publish(|| self.store_bytes(path, bytes.clone())) {
                Some(result) => written = result.map_err(|e| Error::io(path, e)),
                None => {
                    debug!(path = %path.display(), "entry invalidated while computing; not written")
                }
            }
        } else if self.write {
            settled = Settled::Declined {
                backoff: NO_BACKOFF,
            };
        }
        if let Err(e) = &written {
            settled = failed(e.to_string());
        }
        // Joined callers get the value even when it could not be written.
        lead.finish(Some(bytes), settled, now);
        written.map(|()| value).map_err(Into::into)
    }

    fn allows<T: Serialize>(&self, value: &T) -> bool {
        let Some(condition) = &self.condition else {
            return true;
        };
        match serde_json::to_value(value) {
            Ok(json) => {
                let ok = condition(&json);
                if !ok {
                    debug!("condition declined the value; not caching it");
                }
                ok
            }
            Err(_) => false,
        }
    }

    /// Recompute a stale entry in the background, on the bounded pool, unless a computation
    /// of it is running.
    fn refresh_in_background<T, E, F>(&self, path: &Path, compute: F)
    where
        T: Serialize + Send + 'static,
        E: From<Error> + Display + Send + 'static,
        F: FnOnce() -> Result<T, E> + Send + 'static,
    {
        let Some(lead) = lead_if_idle(path) else {
            return;
        };
        debug!(path = %path.display(), "serving stale entry; refreshing in the background");
        let cache = self.clone();
        let path = path.to_path_buf();
        POOL.submit(Box::new(move |started| {
            if let Err(e) = started {
                return abandon(lead, format!("cannot start a background refresh: {e}"));
            }
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(compute)) {
                Ok(computed) => {
                    if let Err(e) = cache.settle(lead, &path, computed) {
                        error!(path = %path.display(), error = %e, "background refresh failed");
                    }
                }
                Err(panic) => {
                    let message = panic_message(&*panic);
                    error!(path = %path.display(), error = %message, "background refresh panicked");
                    abandon(lead, message);
                }
            }
        }));
    }
}

/// A joined computation's value as a `T`; `None` when it failed (the caller computes itself).
pub(crate) fn joined<T: DeserializeOwned>(path: &Path, computed: Computed) -> Option<T> {
    match computed {
        Some(bytes) => match serde_json::from_slice(&bytes) {
            Ok(value) => Some(value),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "joined computation's value is not the type asked for");
                None
            }
        },
        None => None,
    }
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown payload".into());
    format!("computation panicked: {detail}")
}
