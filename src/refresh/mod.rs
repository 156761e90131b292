//! Refresh commands (SPEC §6): who runs when, and what becomes of the output.
//!
//! One [`Refresher`] per mount. It coalesces callers per key (one refresh per key at a time,
//! shared by every caller), bounds how many run at once (`max_refreshes`, the rest wait in a
//! FIFO queue), keeps each key's backoff and last error, publishes good output through the
//! [`Store`], and lets `rm` ([`Refresher::cancel`]) and unmount ([`Refresher::shutdown`]) win
//! over a running refresh. How one command is run lives in `command.rs`.
//!
//! Threads: a worker thread is spawned when a refresh is queued and fewer than
//! `max_refreshes` workers exist; a worker keeps taking queued refreshes until the queue is
//! empty, then exits. So at most `max_refreshes` workers exist, and none while idle.
//!
//! Locks: one mutex over the bookkeeping, only ever held for map and queue updates; and per
//! refresh a `Control` mutex, held while spawning a process and while publishing,
//! which only `cancel`/`shutdown` of that same refresh ever wait for. No lock that another
//! key's caller needs is held while a command runs or I/O happens.
//!
//! Where SPEC §6 is silent, this module decides:
//! - A command is done when its shell exits: anything it left running in its process group is
//!   killed then, so a forgotten `&` can neither hold the output pipe open nor pile up.
//! - The `condition` gets the same environment and cwd, the output on stdin (a memfd, so it
//!   may read it or not), stdout discarded, its own `refresh_timeout`. Exiting non-zero is
//!   its "no"; being killed by a signal, timing out or failing to start is a failure.
//! - A "no" from the condition clears the key's last error, like a success ("no
//!   `refresh_error`"), and starts the backoff, like a failure.
//! - `cancel` (`rm`) kills the running command, and also clears the key's backoff and last
//!   error: after `rm`, the next read may refresh at once.
//! - `refreshing` is true from the moment a refresh is queued until it has finished.
//! - `refreshes_started` counts commands actually started (queued refreshes dropped by
//!   `cancel` or `shutdown` are not counted); a discarded refresh counts as none of
//!   ok/failed/declined.
//! - A published entry keeps the mode of the entry it replaces, else gets 0644.
//! - The command inherits the daemon's whole environment; the `CACHETTA_*` variables of the
//!   key override any inherited ones of the same name.
//! - Backoff is measured on the injected [`Clock`]; command timeouts and the wait of
//!   [`Refresher::run_and_wait`] on the monotonic clock, since they bound real elapsed time.

mod command;
mod run;
#[cfg(test)]
mod tests;
mod then;

use std::collections::{HashMap, VecDeque};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Condvar, Mutex};
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::stats::{bump, Stats};
use crate::store::{Store, ENTRY_SUFFIX};
use command::Control;
use run::Ran;
pub use then::Then;
use then::{Deadlines, Slot};

/// Why a refresh runs; passed to the command as `CACHETTA_REASON`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A stale entry was opened for reading (stale-while-revalidate).
    Stale,
    /// A lookup found no visible entry and the rule has `fill_on_miss` (read-through).
    Miss,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Stale => "stale",
            Reason::Miss => "miss",
        }
    }
}

/// What came of a refresh, as a caller of [`Refresher::run_and_wait`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The output was published: the entry is now fresh.
    Published,
    /// The rule's `condition` said no: nothing was cached (not a failure).
    Declined,
    /// The refresh failed; the one-line reason, also kept as [`Refresher::last_error`].
    Failed(String),
    /// Discarded by [`Refresher::cancel`] or [`Refresher::shutdown`]; nothing was published.
    Cancelled,
    /// Not run: the key failed or was declined less than `refresh_backoff` ago.
    BackingOff,
    /// Not run: no rule gives this key a `refresh` command (or it is not an entry key).
    NoCommand,
    /// Not run: the refresher has been shut down.
    ShutDown,
    /// The refresh is still going after the key's `refresh_timeout` of waiting (it may have
    /// been queued behind others); it carries on in the background.
    StillRunning,
}

/// Called with the key after each publish (on a worker thread, before waiters are woken), so
/// the filesystem can drop what it caches about that entry.
pub type OnPublished = Box<dyn Fn(&Path) + Send + Sync>;

/// The refresh runner of one mount. Dropping it shuts it down.
pub struct Refresher {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("Refresher")
            .field("keys", &state.keys.len())
            .field("queued", &state.queue.len())
            .field("workers", &state.workers)
            .finish_non_exhaustive()
    }
}

struct Shared {
    store: Arc<Store>,
    config: Arc<Config>,
    clock: Arc<dyn Clock>,
    stats: Arc<Stats>,
    on_published: OnPublished,
    state: Mutex<State>,
    /// Signalled when the last worker exits.
    idle: Condvar,
    /// When read-through callers stop waiting.
    deadlines: Arc<Deadlines>,
}

#[derive(Default)]
struct State {
    keys: HashMap<PathBuf, KeyState>,
    queue: VecDeque<Arc<Job>>,
    workers: usize,
    shut_down: bool,
    /// Forget idle keys once the map grows past this (see [`State::prune`]).
    prune_at: usize,
}

/// What is remembered about a key between refreshes.
#[derive(Default)]
struct KeyState {
    /// The refresh of this key that is queued or running.
    job: Option<Arc<Job>>,
    last_error: Option<String>,
    backoff_until: Option<SystemTime>,
}

/// One refresh of one key, shared by its worker and every caller waiting for it.
struct Job {
    key: PathBuf,
    reason: Reason,
    control: Mutex<Control>,
    outcome: Mutex<Option<Outcome>>,
    done: Condvar,
    /// Callers that asked to be answered instead of waiting ([`Refresher::run_then`]).
    then: Mutex<Vec<Slot>>,
}

impl Job {
    fn complete(&self, outcome: Outcome) {
        *self.outcome.lock() = Some(outcome.clone());
        self.done.notify_all();
        for slot in std::mem::take(&mut *self.then.lock()) {
            slot.answer(outcome.clone());
        }
    }

    /// Answer `slot` with the outcome: now if there is one, else when it comes.
    fn then(&self, slot: Slot) {
        let mut waiting = self.then.lock();
        if let Some(outcome) = self.outcome.lock().clone() {
            drop(waiting);
            return slot.answer(outcome);
        }
        waiting.push(slot);
    }
}

/// Keys whose memory (last error, expired backoff) may be forgotten to bound the map; keys with
/// an error are kept until the map holds this many.
const MIN_PRUNE_AT: usize = 1024;
const MAX_REMEMBERED_ERRORS: usize = 65_536;

/// How long [`Refresher::shutdown`] waits for killed commands to be reaped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

enum Begin {
    Joined(Arc<Job>),
    Started(Arc<Job>),
    Refused(Outcome),
}

impl Refresher {
    pub fn new(
        store: Arc<Store>,
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
        stats: Arc<Stats>,
        on_published: OnPublished,
    ) -> Refresher {
        Refresher {
            shared: Arc::new(Shared {
                store,
                config,
                clock,
                stats,
                on_published,
                state: Mutex::new(State {
                    prune_at: MIN_PRUNE_AT,
                    ..State::default()
                }),
                idle: Condvar::new(),
                deadlines: Arc::default(),
            }),
        }
    }

    /// Start a background refresh of `key` (stale-while-revalidate). Returns at once: true if
    /// this call queued a new refresh; false if one is already queued or running for the key
    /// (it is shared), the key is in its backoff window, no `refresh` applies, or the refresher
    /// is shut down.
    pub fn start(&self, key: &Path, reason: Reason) -> bool {
        matches!(self.shared.begin(key, reason), Begin::Started(_))
    }

    /// Read-through: start a refresh of `key`, or join the one queued or running, and wait for
    /// it, at most the key's `refresh_timeout`. Never waits during the backoff window.
    pub fn run_and_wait(&self, key: &Path, reason: Reason) -> Outcome {
        let job = match self.shared.begin(key, reason) {
            Begin::Started(job) | Begin::Joined(job) => job,
            Begin::Refused(outcome) => return outcome,
        };
        let deadline = self.wait_ends(key);
        let mut outcome = job.outcome.lock();
        while outcome.is_none() {
            if job.done.wait_until(&mut outcome, deadline).timed_out() {
                break;
            }
        }
        outcome.clone().unwrap_or(Outcome::StillRunning)
    }

    /// When a read-through caller of `key` stops waiting: its `refresh_timeout` from now.
    fn wait_ends(&self, key: &Path) -> Instant {
        let settings = self.shared.config.settings_for(key.as_os_str()).settings;
        // Durations are capped at 100 years (config), so this cannot overflow.
        Instant::now() + settings.refresh_timeout
    }

    /// Read-through without a waiting thread: start a refresh of `key`, or join the one queued
    /// or running, and call `then` with its outcome when it ends (at once if refused), or with
    /// [`Outcome::StillRunning`] after the key's `refresh_timeout`, as
    /// [`Refresher::run_and_wait`] would return.
    pub fn run_then(&self, key: &Path, reason: Reason, then: Then) {
        match self.shared.begin(key, reason) {
            Begin::Started(job) | Begin::Joined(job) => {
                let slot = Slot::new(then);
                self.shared.deadlines.add(self.wait_ends(key), slot.clone());
                job.then(slot);
            }
            Begin::Refused(outcome) => then(outcome),
        }
    }

    /// `rm` wins: forget `key`. A refresh of it that is queued is dropped; one that is running
    /// is killed, and its output is not published even if it is already done, unless the
    /// publish had happened before this call. Also clears the key's backoff and last error, so
    /// the next read of the key may refresh at once. Callers waiting for the refresh get
    /// [`Outcome::Cancelled`]. Returns whether a refresh was discarded.
    ///
    /// Call it *before* removing the backing file: once it returns, no refresh that was running
    /// can publish any more.
    pub fn cancel(&self, key: &Path) -> bool {
        let job = {
            let mut state = self.shared.state.lock();
            let Some(job) = state.keys.remove(key).and_then(|ks| ks.job) else {
                return false;
            };
            let queued = state.queue.len();
            state.queue.retain(|queued| !Arc::ptr_eq(queued, &job));
            if state.queue.len() != queued {
                job.complete(Outcome::Cancelled);
            }
            job
        };
        job.control.lock().cancel();
        debug!(key = %key.display(), "refresh cancelled");
        true
    }

    /// Whether a refresh of `key` is queued or running (`user.cachetta.refreshing`).
    pub fn is_running(&self, key: &Path) -> bool {
        let state = self.shared.state.lock();
        state.keys.get(key).is_some_and(|ks| ks.job.is_some())
    }

    /// The key's last refresh failure, one line (`user.cachetta.refresh_error`); `None` when the
    /// last refresh succeeded or was declined, or none ran.
    pub fn last_error(&self, key: &Path) -> Option<String> {
        let state = self.shared.state.lock();
        state.keys.get(key).and_then(|ks| ks.last_error.clone())
    }

    /// Unmount: refuse new refreshes, drop queued ones, kill every running command's process
    /// group, and wait (up to 10 s) until all are reaped. Idempotent.
    pub fn shutdown(&self) {
        let running: Vec<Arc<Job>> = {
            let mut state = self.shared.state.lock();
            state.shut_down = true;
            for job in std::mem::take(&mut state.queue) {
                if let Some(ks) = state.keys.get_mut(&job.key) {
                    ks.job = None;
                }
                job.complete(Outcome::Cancelled);
            }
            state
                .keys
                .values()
                .filter_map(|ks| ks.job.clone())
                .collect()
        };
        for job in &running {
            job.control.lock().cancel();
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut state = self.shared.state.lock();
        while state.workers > 0 {
            if self
                .shared
                .idle
                .wait_until(&mut state, deadline)
                .timed_out()
            {
                warn!(
                    workers = state.workers,
                    "refresh commands still not reaped at shutdown"
                );
                break;
            }
        }
    }

    /// Wait until no refresh is queued or running; for tests.
    #[cfg(test)]
    fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.state.lock();
        while state.workers > 0 {
            if self
                .shared
                .idle
                .wait_until(&mut state, deadline)
                .timed_out()
            {
                return false;
            }
        }
        true
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Whether `key` can name an entry: relative, plain components, ending in `.json`.
fn is_entry_key(key: &Path) -> bool {
    key.components().all(|c| matches!(c, Component::Normal(_)))
        && key
            .file_name()
            .is_some_and(|name| name.as_bytes().ends_with(ENTRY_SUFFIX.as_bytes()))
}

impl Shared {
    /// Join the key's refresh, or queue a new one, or say why not.
    fn begin(self: &Arc<Self>, key: &Path, reason: Reason) -> Begin {
        if !is_entry_key(key)
            || self
                .config
                .settings_for(key.as_os_str())
                .settings
                .refresh
                .is_none()
        {
            return Begin::Refused(Outcome::NoCommand);
        }
        let now = self.clock.now();
        let job = {
            let mut state = self.state.lock();
            if state.shut_down {
                return Begin::Refused(Outcome::ShutDown);
            }
            if let Some(ks) = state.keys.get(key) {
                if let Some(job) = &ks.job {
                    return Begin::Joined(job.clone());
                }
                if ks.backoff_until.is_some_and(|until| now < until) {
                    return Begin::Refused(Outcome::BackingOff);
                }
            }
            let job = Arc::new(Job {
                key: key.to_path_buf(),
                reason,
                control: Mutex::new(Control::default()),
                outcome: Mutex::new(None),
                done: Condvar::new(),
                then: Mutex::new(Vec::new()),
            });
            state.keys.entry(key.to_path_buf()).or_default().job = Some(job.clone());
            state.prune(now);
            state.queue.push_back(job.clone());
            if state.workers >= self.config.max_refreshes.max(1) {
                return Begin::Started(job);
            }
            state.workers += 1;
            job
        };
        let shared = self.clone();
        let spawned = std::thread::Builder::new()
            .name("cachetta-refresh".into())
            .spawn(move || shared.work());
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start a refresh worker thread");
            let mut state = self.state.lock();
            state.workers -= 1;
            if state.workers == 0 {
                // No worker will come for the queue: fail it rather than leave callers waiting.
                for job in std::mem::take(&mut state.queue) {
                    if let Some(ks) = state.keys.get_mut(&job.key) {
                        ks.job = None;
                    }
                    job.complete(Outcome::Failed(format!(
                        "cannot start a worker thread: {e}"
                    )));
                }
                self.idle.notify_all();
            }
        }
        Begin::Started(job)
    }

    /// A worker: run queued refreshes until there are none.
    fn work(&self) {
        loop {
            let job = {
                let mut state = self.state.lock();
                match state.queue.pop_front() {
                    Some(job) => job,
                    None => {
                        state.workers -= 1;
                        if state.workers == 0 {
                            self.idle.notify_all();
                        }
                        return;
                    }
                }
            };
            let ran = run::run_job(self, &job);
            self.finish(&job, ran);
        }
    }

    /// Count, log and remember what came of a refresh, then wake its waiters.
    fn finish(&self, job: &Arc<Job>, ran: Ran) {
        let key = job.key.display();
        let reason = job.reason.as_str();
        let outcome = match ran.outcome {
            Outcome::Published => Outcome::Published,
            _ if job.control.lock().is_cancelled() => Outcome::Cancelled,
            other => other,
        };
        match &outcome {
            Outcome::Published => {
                bump(&self.stats.refreshes_ok);
                info!(%key, reason, "refresh published");
                (self.on_published)(&job.key);
            }
            Outcome::Declined => {
                bump(&self.stats.refreshes_declined);
                info!(%key, reason, "refresh declined by its condition");
            }
            Outcome::Failed(error) => {
                bump(&self.stats.refreshes_failed);
                let stderr = String::from_utf8_lossy(&ran.stderr);
                warn!(%key, reason, %error, stderr = %stderr.trim_end(), "refresh failed");
            }
            _ => debug!(%key, reason, ?outcome, "refresh discarded"),
        }

        let now = self.clock.now();
        let mut state = self.state.lock();
        // A cancelled refresh was detached from its key; the key's memory is no longer its.
        if let Some(ks) = state.keys.get_mut(&job.key) {
            if ks.job.as_ref().is_some_and(|j| Arc::ptr_eq(j, job)) {
                ks.job = None;
                let backoff = self
                    .config
                    .settings_for(job.key.as_os_str())
                    .settings
                    .refresh_backoff;
                match &outcome {
                    Outcome::Published => {
                        ks.last_error = None;
                        ks.backoff_until = None;
                    }
                    Outcome::Declined => {
                        ks.last_error = None;
                        ks.backoff_until = now.checked_add(backoff);
                    }
                    Outcome::Failed(error) => {
                        ks.last_error = Some(error.clone());
                        ks.backoff_until = now.checked_add(backoff);
                    }
                    _ => {}
                }
                if ks.last_error.is_none() && ks.backoff_until.is_none() {
                    state.keys.remove(&job.key);
                }
            }
        }
        job.complete(outcome);
    }
}

impl State {
    /// Bound the per-key memory: once the map has doubled since the last sweep, forget keys
    /// with nothing running, no error and no backoff left, and past [`MAX_REMEMBERED_ERRORS`]
    /// their errors too.
    fn prune(&mut self, now: SystemTime) {
        if self.keys.len() <= self.prune_at {
            return;
        }
        let idle =
            |ks: &KeyState| ks.job.is_none() && ks.backoff_until.is_none_or(|until| until <= now);
        self.keys
            .retain(|_, ks| !idle(ks) || ks.last_error.is_some());
        if self.keys.len() > MAX_REMEMBERED_ERRORS {
            self.keys.retain(|_, ks| !idle(ks));
        }
        self.prune_at = (self.keys.len() * 2).max(MIN_PRUNE_AT);
    }
}
