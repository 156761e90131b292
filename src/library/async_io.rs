//! The async API (cargo feature `tokio`): the seed's `async_read_cache`/`async_write_cache`,
//! async decorator and `a`-prefixed methods. File I/O runs on tokio's blocking pool (the
//! seed's `asyncio.to_thread`); computations of one entry coalesce with sync and async callers
//! alike, through the same single flight, and at most [`BACKGROUND_REFRESHES`] background
//! recomputations run at once, as in the sync API.

use std::fmt::Display;
use std::future::Future;
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::error;

use tokio::sync::Semaphore;

use super::cached::{
    abandon, begin, joined, lead_if_idle, panic_message, Lookup, BACKGROUND_REFRESHES,
};
use super::{Cachetta, Error, Info, Result};
use crate::flight::{Begin, Settled};

/// Background recomputations hold one of these while they run.
static BACKGROUND: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(BACKGROUND_REFRESHES));

/// Run blocking file I/O on the blocking pool; a panic there reaches the caller.
async fn blocking<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> R {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("cachetta file I/O task did not finish: {e}"),
        },
    }
}

impl Cachetta {
    /// [`read`](Cachetta::read), with the file I/O on the blocking pool.
    ///
    /// ```
    /// use cachetta::Cachetta;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// let cache = Cachetta::new(dir.path().join("x.json"));
    /// cache.write_async(&vec!["a", "b"]).await?;
    /// assert_eq!(cache.read_async::<Vec<String>>().await?, Some(vec!["a".into(), "b".into()]));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read_async<T: DeserializeOwned + Send + 'static>(&self) -> Result<Option<T>> {
        let cache = self.clone();
        blocking(move || cache.read::<T>()).await
    }

    /// [`write`](Cachetta::write), with the file I/O on the blocking pool (the value is
    /// serialized first, on the caller's task).
    pub async fn write_async<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        if !self.write {
            return Ok(());
        }
        let bytes = serde_json::to_vec(value)?;
        let cache = self.clone();
        blocking(move || {
            let path = cache.entry_path();
            cache
                .store_bytes(&path, bytes.into())
                .map_err(|e| Error::io(&path, e))
        })
        .await
    }

    /// [`invalidate`](Cachetta::invalidate) on the blocking pool (the seed's `ainvalidate`).
    pub async fn invalidate_async(&self) -> Result<()> {
        let cache = self.clone();
        blocking(move || cache.invalidate()).await
    }

    /// [`clear`](Cachetta::clear) on the blocking pool (the seed's `aclear`).
    pub async fn clear_async(&self) -> Result<()> {
        let cache = self.clone();
        blocking(move || cache.clear()).await
    }

    /// [`clear_force`](Cachetta::clear_force) on the blocking pool (`aclear(force=True)`).
    pub async fn clear_force_async(&self) -> Result<()> {
        let cache = self.clone();
        blocking(move || cache.clear_force()).await
    }

    /// [`exists`](Cachetta::exists) on the blocking pool (the seed's `aexists`).
    pub async fn exists_async(&self) -> bool {
        let cache = self.clone();
        blocking(move || cache.exists()).await
    }

    /// [`age`](Cachetta::age) on the blocking pool (the seed's `aage`).
    pub async fn age_async(&self) -> Option<Duration> {
        let cache = self.clone();
        blocking(move || cache.age()).await
    }

    /// [`info`](Cachetta::info) on the blocking pool (the seed's `ainfo`).
    pub async fn info_async(&self) -> Info {
        let cache = self.clone();
        blocking(move || cache.info()).await
    }

    /// [`cached`](Cachetta::cached) for an async computation (the seed's decorator on an
    /// `async def`). The computation runs as a task of its own, so a caller that gives up
    /// waiting does not cancel it for the others (the seed's `asyncio.shield`); inside the
    /// stale window it runs in the background.
    ///
    /// ```
    /// use cachetta::Cachetta;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// let cache = Cachetta::new(dir.path().join("users"));
    /// let name: String = cache
    ///     .cached_async(&(42,), || async { "ada".to_string() })
    ///     .await?;
    /// assert_eq!(name, "ada");
    /// let again: String = cache.cached_async(&(42,), || async { unreachable!() }).await?;
    /// assert_eq!(again, "ada");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn cached_async<A, T, F, Fut>(&self, args: &A, compute: F) -> Result<T>
    where
        A: Serialize + ?Sized,
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        self.try_cached_async(args, move || async move { Ok::<T, Error>(compute().await) })
            .await
    }

    /// [`try_cached`](Cachetta::try_cached) for an async computation.
    pub async fn try_cached_async<A, T, E, F, Fut>(&self, args: &A, compute: F) -> Result<T, E>
    where
        A: Serialize + ?Sized,
        T: Serialize + DeserializeOwned + Send + 'static,
        E: From<Error> + Display + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let path = self.path_for(args)?;
        loop {
            let (cache, at) = (self.clone(), path.clone());
            match blocking(move || cache.look::<T>(&at)).await {
                Lookup::Hit(value) => return Ok(value),
                Lookup::Stale(value) => {
                    self.refresh_in_background_async(&path, compute);
                    return Ok(value);
                }
                Lookup::Miss => {}
            }
            match begin(&path) {
                Begin::Joined(flight) => {
                    if let Some(value) = joined(&path, flight.wait_async().await) {
                        return Ok(value);
                    }
                }
                Begin::BackingOff => unreachable!("the library's flights keep no backoff"),
                Begin::Lead(lead) => {
                    let cache = self.clone();
                    let at = path.clone();
                    let task = tokio::spawn(async move {
                        // Someone may have written it between our look and our lead.
                        let (again, again_at) = (cache.clone(), at.clone());
                        if let Lookup::Hit(found) =
                            blocking(move || again.look_found::<T>(&again_at)).await
                        {
                            let now = cache.clock.now();
                            lead.finish(Some(found.bytes), Settled::Nothing, now);
                            return Ok(found.value);
                        }
                        let computed = compute().await;
                        blocking(move || cache.settle(lead, &at, computed)).await
                    });
                    return match task.await {
                        Ok(result) => result,
                        Err(e) => match e.try_into_panic() {
                            Ok(panic) => std::panic::resume_unwind(panic),
                            Err(e) => Err(Error::io(&path, std::io::Error::other(e)).into()),
                        },
                    };
                }
            }
        }
    }

    /// Recompute a stale entry as a background task, unless a computation is running.
    fn refresh_in_background_async<T, E, F, Fut>(&self, path: &Path, compute: F)
    where
        T: Serialize + Send + 'static,
        E: From<Error> + Display + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let Some(lead) = lead_if_idle(path) else {
            return;
        };
        let cache = self.clone();
        let path = path.to_path_buf();
        tokio::spawn(async move {
            // The semaphore is never closed, so this always gets its permit.
            let _running = BACKGROUND.acquire().await;
            // A task of its own, so a panic in the computation is seen here as a JoinError.
            match tokio::spawn(compute()).await {
                Ok(computed) => {
                    let at = path.clone();
                    if let Err(e) = blocking(move || cache.settle(lead, &at, computed)).await {
                        error!(path = %path.display(), error = %e, "background refresh failed");
                    }
                }
                Err(e) => {
                    let message = match e.try_into_panic() {
                        Ok(panic) => panic_message(&*panic),
                        Err(e) => e.to_string(),
                    };
                    error!(path = %path.display(), error = %message, "background refresh failed");
                    abandon(lead, message);
                }
            }
        });
    }
}
