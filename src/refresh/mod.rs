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
mod lock;
mod run;
#[cfg(test)]
mod tests;
mod then;

use std::num::NonZeroUsize;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lru::LruCache;
use parking_lot::Mutex;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::flight::{self, Flights, Settled};
use crate::inspect::LastRefresh;
use crate::pool::Pool;
use crate::publish::Published;
use crate::stats::{bump, Stats};
use crate::store::{Store, Version, ENTRY_SUFFIX};
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
    /// An entry past its stale window is kept by stale-if-error only if this refresh fails.
    Error,
    /// Asked for: `cachetta refresh`, or `user.cachetta.refresh` on the mount root. Runs even
    /// during the key's backoff.
    Demand,
    /// A fresh entry of a hot key, refreshed before it turns stale (`early_refresh`).
    Early,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Stale => "stale",
            Reason::Miss => "miss",
            Reason::Error => "error",
            Reason::Demand => "demand",
            Reason::Early => "early",
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
    /// Not run: the entry was replaced since the refresh was asked for (another mount's
    /// refresh, a write). A caller waiting for new content has it.
    Superseded,
}

/// Called with the key after each publish (on a worker thread, before waiters are woken), so
/// the filesystem can drop what it caches about that entry: with what was published when this
/// mount published it, `None` when the entry was replaced by another mount or a writer.
pub type OnPublished = Box<dyn Fn(&Path, Option<&Published>) + Send + Sync>;

/// The refresh runner of one mount. Dropping it shuts it down.
pub struct Refresher {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (workers, queued) = self.shared.pool.usage();
        f.debug_struct("Refresher")
            .field("running", &self.shared.flights.running().len())
            .field("queued", &queued)
            .field("workers", &workers)
            .finish_non_exhaustive()
    }
}

struct Shared {
    store: Arc<Store>,
    config: Arc<Config>,
    clock: Arc<dyn Clock>,
    stats: Arc<Stats>,
    on_published: OnPublished,
    /// One flight per key: coalescing, "rm wins", last error and backoff.
    flights: Flights<Outcome, Job>,
    /// At most `max_refreshes` workers; the rest queue.
    pool: Pool,
    /// Set by [`Refresher::shutdown`]; checked under this lock when a refresh begins.
    shut_down: Mutex<bool>,
    /// When read-through callers stop waiting.
    deadlines: Arc<Deadlines>,
    /// Each key's last finished refresh (`info`'s `last_refresh`), for the most recent keys.
    history: Mutex<LruCache<PathBuf, Finished>>,
}

/// How many keys' last refresh is remembered.
const HISTORY_KEYS: usize = 65_536;

/// A finished refresh (published, declined or failed), as the key's history keeps it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finished {
    /// When it ended, on the refresher's clock.
    pub at: SystemTime,
    pub took: Duration,
    /// Whether it published; false for a failure or a decline.
    pub ok: bool,
    pub declined: bool,
    pub reason: Reason,
}

impl Finished {
    /// As `info` reports it.
    pub fn to_info(&self) -> LastRefresh {
        let at = match self.at.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(since) => since.as_secs_f64(),
            Err(before) => -before.duration().as_secs_f64(),
        };
        let outcome = match (self.ok, self.declined) {
            (true, _) => "ok",
            (false, true) => "declined",
            (false, false) => "failed",
        };
        LastRefresh {
            at,
            seconds: self.took.as_secs_f64(),
            outcome: outcome.into(),
            reason: self.reason.as_str().into(),
        }
    }
}

/// What a refresh's flight carries besides its key: why it runs, and its kill switch.
struct Job {
    reason: Reason,
    control: Mutex<Control>,
    /// The entry's content version when the refresh was asked for: if another mount (or
    /// anyone) replaces it before this refresh gets the key's lock, the refresh is not needed.
    seen: Option<Version>,
}

type Lead = flight::Lead<Outcome, Job>;
type Flight = flight::Flight<Outcome, Job>;

/// How long [`Refresher::shutdown`] waits for killed commands to be reaped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

enum Begin {
    Joined(Arc<Flight>),
    Started(Arc<Flight>),
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
        let pool = Pool::new("cachetta-refresh", config.max_refreshes);
        Refresher {
            shared: Arc::new(Shared {
                store,
                config,
                clock,
                stats,
                on_published,
                // A worker that panics mid-refresh leaves its waiters this.
                flights: Flights::new(Outcome::Failed("the refresh panicked".into())),
                pool,
                shut_down: Mutex::new(false),
                deadlines: Arc::default(),
                history: Mutex::new(LruCache::new(
                    NonZeroUsize::new(HISTORY_KEYS).expect("not zero"),
                )),
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
        let flight = match self.shared.begin(key, reason) {
            Begin::Started(flight) | Begin::Joined(flight) => flight,
            Begin::Refused(outcome) => return outcome,
        };
        flight
            .wait_until(self.wait_ends(key))
            .unwrap_or(Outcome::StillRunning)
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
            Begin::Started(flight) | Begin::Joined(flight) => {
                let slot = Slot::new(then);
                self.shared.deadlines.add(self.wait_ends(key), slot.clone());
                flight.then(Box::new(move |outcome| slot.answer(outcome)));
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
        let Some(flight) = self.shared.flights.cancel(key) else {
            return false;
        };
        stop(&flight);
        debug!(key = %key.display(), "refresh cancelled");
        true
    }

    /// The key's last finished refresh since this refresher started, if remembered.
    pub fn last_refresh(&self, key: &Path) -> Option<Finished> {
        self.shared.history.lock().peek(key).copied()
    }

    /// Whether a refresh of `key` is queued or running (`user.cachetta.refreshing`).
    pub fn is_running(&self, key: &Path) -> bool {
        self.shared.flights.is_running(key)
    }

    /// How many keys have a refresh queued or running.
    pub fn refreshing(&self) -> usize {
        self.shared.flights.running().len()
    }

    /// The key's last refresh failure, one line (`user.cachetta.refresh_error`); `None` when the
    /// last refresh succeeded or was declined, or none ran.
    pub fn last_error(&self, key: &Path) -> Option<String> {
        self.shared.flights.last_error(key)
    }

    /// Unmount: refuse new refreshes, drop queued ones, kill every running command's process
    /// group, and wait (up to 10 s) until all are reaped. Idempotent.
    pub fn shutdown(&self) {
        *self.shared.shut_down.lock() = true;
        for flight in self.shared.flights.running() {
            if let Some(flight) = self.shared.flights.cancel(flight.key()) {
                stop(&flight);
            }
        }
        if !self.shared.pool.wait_idle(Instant::now() + SHUTDOWN_GRACE) {
            warn!(
                workers = self.shared.pool.usage().0,
                "refresh commands still not reaped at shutdown"
            );
        }
    }

    /// Wait until no refresh is queued or running; for tests.
    #[cfg(test)]
    fn wait_idle(&self, timeout: Duration) -> bool {
        self.shared.pool.wait_idle(Instant::now() + timeout)
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Kill a cancelled refresh's command; one that no worker has started yet ends now, and its
/// worker will skip it.
fn stop(flight: &Flight) {
    if !flight.data().control.lock().cancel() {
        flight.complete(Outcome::Cancelled);
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
        let seen = self.store.stat(key).ok().map(|st| st.version());
        let lead = {
            // Held across the begin, so a shutdown either comes first or sees this flight.
            let shut_down = self.shut_down.lock();
            if *shut_down {
                return Begin::Refused(Outcome::ShutDown);
            }
            let job = || Job {
                reason,
                control: Mutex::new(Control::default()),
                seen,
            };
            // Asked for by a user: the backoff only holds back automatic refreshes.
            let respect_backoff = reason != Reason::Demand;
            match self.flights.begin(key, now, respect_backoff, job) {
                flight::Begin::Joined(flight) => return Begin::Joined(flight),
                flight::Begin::BackingOff => return Begin::Refused(Outcome::BackingOff),
                flight::Begin::Lead(lead) => lead,
            }
        };
        let flight = lead.flight().clone();
        let shared = self.clone();
        self.pool.submit(Box::new(move |started| match started {
            Ok(()) => shared.work(lead),
            Err(e) => {
                let error = format!("cannot start a worker thread: {e}");
                lead.finish(Outcome::Failed(error), Settled::Nothing, shared.clock.now());
            }
        }));
        Begin::Started(flight)
    }

    /// On a worker: run one refresh, unless it was cancelled while queued.
    fn work(&self, lead: Lead) {
        if !lead.flight().data().control.lock().start() {
            // Cancelled while queued: `stop` has answered its waiters; count nothing.
            return;
        }
        let started = Instant::now();
        let ran = run::run_job(self, &lead);
        self.finish(lead, ran, started.elapsed());
    }

    /// Count, log and remember what came of a refresh, then wake its waiters.
    fn finish(&self, lead: Lead, ran: Ran, took: Duration) {
        let flight = lead.flight();
        let key = flight.key().display();
        let reason = flight.data().reason.as_str();
        if ran.elsewhere || ran.outcome == Outcome::Superseded {
            // Another mount ran it, or the entry was replaced before it ran: the counts and
            // history are not this refresh's. A new entry is still news to this mount's caches.
            debug!(%key, reason, outcome = ?ran.outcome, "refresh not run here");
            if matches!(ran.outcome, Outcome::Published | Outcome::Superseded) {
                (self.on_published)(flight.key(), None);
            }
            lead.finish(ran.outcome, Settled::Nothing, self.clock.now());
            return;
        }
        let outcome = match ran.outcome {
            Outcome::Published => Outcome::Published,
            _ if flight.is_discarded() => Outcome::Cancelled,
            other => other,
        };
        let backoff = self
            .config
            .settings_for(flight.key().as_os_str())
            .settings
            .refresh_backoff;
        let settled = match &outcome {
            Outcome::Published => {
                bump(&self.stats.refreshes_ok);
                info!(%key, reason, "refresh published");
                (self.on_published)(flight.key(), ran.published.as_deref());
                Settled::Ok
            }
            Outcome::Declined => {
                bump(&self.stats.refreshes_declined);
                info!(%key, reason, "refresh declined by its condition");
                Settled::Declined { backoff }
            }
            Outcome::Failed(error) => {
                bump(&self.stats.refreshes_failed);
                let stderr = String::from_utf8_lossy(&ran.stderr);
                warn!(%key, reason, %error, stderr = %stderr.trim_end(), "refresh failed");
                Settled::Failed {
                    error: error.clone(),
                    backoff,
                }
            }
            _ => {
                debug!(%key, reason, ?outcome, "refresh discarded");
                Settled::Nothing
            }
        };
        let now = self.clock.now();
        if settled != Settled::Nothing {
            // The histogram's count is then refreshes_ok + _failed + _declined.
            self.stats.refresh_duration.observe(took);
            let finished = Finished {
                at: now,
                took,
                ok: settled == Settled::Ok,
                declined: matches!(settled, Settled::Declined { .. }),
                reason: flight.data().reason,
            };
            let key = flight.key().to_path_buf();
            self.history.lock().put(key, finished);
        }
        lead.finish(outcome, settled, now);
    }
}
