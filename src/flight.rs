//! Keyed single flight: at most one computation of a key at a time, shared by every caller that
//! needs the key meanwhile, with "rm wins" over a running one and each key's last error and
//! backoff. The mount's refresher runs refresh commands through it and the library's `cached`
//! its computations, so both coalesce, cancel and remember failures the same way.
//!
//! Locks: one mutex over the key map, held only for map updates; per flight, a publish mutex
//! that the leader holds while it publishes and [`Flights::cancel`] while it marks the flight
//! discarded. So a cancel either comes first (nothing is published) or finds the publish
//! complete, and nothing that runs after `cancel` returns can publish.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Condvar, Mutex};

/// Keys whose memory (last error, expired backoff) may be forgotten to bound the map; keys with
/// an error are kept until the map holds [`MAX_REMEMBERED_ERRORS`].
const MIN_PRUNE_AT: usize = 1024;
const MAX_REMEMBERED_ERRORS: usize = 65_536;

/// Called once with a flight's outcome, instead of waiting for it.
pub type Then<O> = Box<dyn FnOnce(O) + Send>;

/// The flights of one family of keys (one mount's refreshes, or the library's computations).
/// Clones share them.
pub struct Flights<O, D = ()> {
    inner: Arc<Inner<O, D>>,
}

impl<O, D> Clone for Flights<O, D> {
    fn clone(&self) -> Self {
        Flights {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<O, D> {
    keys: Mutex<Keys<O, D>>,
    /// What waiters get from a leader dropped without finishing (an error path or a panic).
    abandoned: O,
}

struct Keys<O, D> {
    map: HashMap<PathBuf, KeyState<O, D>>,
    /// Forget idle keys once the map grows past this (see [`Keys::prune`]).
    prune_at: usize,
}

/// What is remembered about a key between flights.
struct KeyState<O, D> {
    flight: Option<Arc<Flight<O, D>>>,
    last_error: Option<String>,
    backoff_until: Option<SystemTime>,
}

impl<O, D> Default for KeyState<O, D> {
    fn default() -> Self {
        KeyState {
            flight: None,
            last_error: None,
            backoff_until: None,
        }
    }
}

/// One computation of one key, shared by its leader and every caller waiting for it.
pub struct Flight<O, D = ()> {
    key: PathBuf,
    data: D,
    outcome: Mutex<Option<O>>,
    done: Condvar,
    then: Mutex<Vec<Then<O>>>,
    /// Set by `cancel`: the result must not be published.
    discarded: AtomicBool,
    publish: Mutex<()>,
}

impl<O: Clone, D> Flight<O, D> {
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// What the leader attached to the flight when it began (the refresher: the command's
    /// reason and process control).
    pub fn data(&self) -> &D {
        &self.data
    }

    /// Whether [`Flights::cancel`] discarded this flight: its result is not to be published.
    pub fn is_discarded(&self) -> bool {
        self.discarded.load(Ordering::SeqCst)
    }

    /// The outcome, once there is one.
    pub fn outcome(&self) -> Option<O> {
        self.outcome.lock().clone()
    }

    /// Block until the flight ends.
    pub fn wait(&self) -> O {
        let mut outcome = self.outcome.lock();
        loop {
            if let Some(outcome) = &*outcome {
                return outcome.clone();
            }
            self.done.wait(&mut outcome);
        }
    }

    /// Block until the flight ends or `deadline` passes (`None`).
    pub fn wait_until(&self, deadline: Instant) -> Option<O> {
        let mut outcome = self.outcome.lock();
        while outcome.is_none() {
            if self.done.wait_until(&mut outcome, deadline).timed_out() {
                break;
            }
        }
        outcome.clone()
    }

    /// Wait for the flight to end without blocking an async runtime.
    #[cfg(feature = "tokio")]
    pub async fn wait_async(&self) -> O
    where
        O: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.then(Box::new(move |outcome| {
            let _ = tx.send(outcome);
        }));
        // The sender is always used: `then` answers now or when the flight completes, and a
        // flight always completes (a dropped leader completes it as abandoned).
        rx.await.expect("a flight always completes")
    }

    /// Call `then` with the outcome: now if there is one, else when it comes.
    pub fn then(&self, then: Then<O>) {
        let mut waiting = self.then.lock();
        // `then` is held across the look at `outcome`: `complete` records the outcome before
        // it takes `then`, so a waiter pushed here is always found (lock order: `then`, then
        // `outcome`; `complete` never holds both).
        #[allow(clippy::significant_drop_in_scrutinee)]
        if let Some(outcome) = self.outcome.lock().clone() {
            drop(waiting);
            return then(outcome);
        }
        waiting.push(then);
    }

    /// Record the outcome and wake everyone waiting; the first outcome wins. Whether this
    /// call's outcome was the one recorded.
    pub fn complete(&self, outcome: O) -> bool {
        {
            let mut recorded = self.outcome.lock();
            if recorded.is_some() {
                return false;
            }
            *recorded = Some(outcome.clone());
        }
        self.done.notify_all();
        for then in std::mem::take(&mut *self.then.lock()) {
            then(outcome.clone());
        }
        true
    }

    fn discard(&self) {
        let _publishing = self.publish.lock();
        self.discarded.store(true, Ordering::SeqCst);
    }
}

/// How a caller takes part in a key's flight.
pub enum Begin<O: Clone, D> {
    /// No flight was running: compute, then [`Lead::finish`].
    Lead(Lead<O, D>),
    /// One is running: wait for it.
    Joined(Arc<Flight<O, D>>),
    /// The key's last flight failed or was declined less than its backoff ago.
    BackingOff,
}

/// How a flight ended, for the key's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// It published: no error, no backoff.
    Ok,
    /// The value was refused (a condition said no): no error, but a backoff.
    Declined { backoff: Duration },
    /// It failed: the error (kept as one line) and a backoff.
    Failed { error: String, backoff: Duration },
    /// Nothing to remember (cancelled, or a result that says nothing about the key).
    Nothing,
}

impl<O: Clone, D> Flights<O, D> {
    /// Flights whose dropped leaders end with `abandoned`.
    pub fn new(abandoned: O) -> Self {
        Flights {
            inner: Arc::new(Inner {
                keys: Mutex::new(Keys {
                    map: HashMap::new(),
                    prune_at: MIN_PRUNE_AT,
                }),
                abandoned,
            }),
        }
    }

    /// Lead `key`'s flight, or join the one running. With `respect_backoff`, a key in its
    /// backoff window is refused ([`Begin::BackingOff`]); `data` is attached to a new flight.
    pub fn begin(
        &self,
        key: &Path,
        now: SystemTime,
        respect_backoff: bool,
        data: impl FnOnce() -> D,
    ) -> Begin<O, D> {
        let mut keys = self.inner.keys.lock();
        if let Some(ks) = keys.map.get(key) {
            if let Some(flight) = &ks.flight {
                return Begin::Joined(flight.clone());
            }
            if respect_backoff && ks.backoff_until.is_some_and(|until| now < until) {
                return Begin::BackingOff;
            }
        }
        let flight = Arc::new(Flight {
            key: key.to_path_buf(),
            data: data(),
            outcome: Mutex::new(None),
            done: Condvar::new(),
            then: Mutex::new(Vec::new()),
            discarded: AtomicBool::new(false),
            publish: Mutex::new(()),
        });
        keys.map.entry(key.to_path_buf()).or_default().flight = Some(flight.clone());
        keys.prune(now);
        Begin::Lead(Lead {
            flights: self.clone(),
            flight,
            finished: false,
        })
    }

    /// `rm` wins: detach `key`'s running flight so that nothing it computes is published once
    /// this returns (a publish in progress is waited for), and forget the key's last error and
    /// backoff. The detached flight, if there was one, for the caller to stop.
    pub fn cancel(&self, key: &Path) -> Option<Arc<Flight<O, D>>> {
        let flight = self.inner.keys.lock().map.remove(key)?.flight?;
        flight.discard();
        Some(flight)
    }

    /// Whether a flight of `key` is running.
    pub fn is_running(&self, key: &Path) -> bool {
        let keys = self.inner.keys.lock();
        keys.map.get(key).is_some_and(|ks| ks.flight.is_some())
    }

    /// The key's last failure, one line; `None` after a success or a decline, or if none ran.
    pub fn last_error(&self, key: &Path) -> Option<String> {
        let keys = self.inner.keys.lock();
        keys.map.get(key).and_then(|ks| ks.last_error.clone())
    }

    /// Every flight running now.
    pub fn running(&self) -> Vec<Arc<Flight<O, D>>> {
        let keys = self.inner.keys.lock();
        keys.map
            .values()
            .filter_map(|ks| ks.flight.clone())
            .collect()
    }

    /// Detach `flight` from its key (if still attached) and remember how it went.
    fn settle(&self, flight: &Arc<Flight<O, D>>, settled: Settled, now: SystemTime) {
        let mut keys = self.inner.keys.lock();
        let Some(ks) = keys.map.get_mut(&flight.key) else {
            return;
        };
        if !ks.flight.as_ref().is_some_and(|f| Arc::ptr_eq(f, flight)) {
            // Cancelled: the key's memory is no longer this flight's.
            return;
        }
        ks.flight = None;
        match settled {
            Settled::Ok => {
                ks.last_error = None;
                ks.backoff_until = None;
            }
            Settled::Declined { backoff } => {
                ks.last_error = None;
                ks.backoff_until = now.checked_add(backoff);
            }
            Settled::Failed { error, backoff } => {
                ks.last_error = Some(one_line(&error));
                ks.backoff_until = now.checked_add(backoff);
            }
            Settled::Nothing => {}
        }
        if ks.last_error.is_none() && ks.backoff_until.is_none() {
            keys.map.remove(&flight.key);
        }
    }
}

impl<O, D> Keys<O, D> {
    /// Bound the per-key memory: once the map has doubled since the last sweep, forget keys
    /// with nothing running, no error and no backoff left, and past [`MAX_REMEMBERED_ERRORS`]
    /// their errors too.
    fn prune(&mut self, now: SystemTime) {
        if self.map.len() <= self.prune_at {
            return;
        }
        let idle = |ks: &KeyState<O, D>| {
            ks.flight.is_none() && ks.backoff_until.is_none_or(|until| until <= now)
        };
        self.map
            .retain(|_, ks| !idle(ks) || ks.last_error.is_some());
        if self.map.len() > MAX_REMEMBERED_ERRORS {
            self.map.retain(|_, ks| !idle(ks));
        }
        self.prune_at = (self.map.len() * 2).max(MIN_PRUNE_AT);
    }
}

/// The right, and duty, to compute one key. Dropped without [`Lead::finish`] (an error path or
/// a panic), it ends the flight as abandoned, so no one waits forever.
pub struct Lead<O: Clone, D> {
    flights: Flights<O, D>,
    flight: Arc<Flight<O, D>>,
    finished: bool,
}

impl<O: Clone, D> Lead<O, D> {
    pub fn flight(&self) -> &Arc<Flight<O, D>> {
        &self.flight
    }

    /// Run `write` unless the flight was cancelled; `None` when it was (nothing written).
    pub fn publish<R>(&self, write: impl FnOnce() -> R) -> Option<R> {
        let _publishing = self.flight.publish.lock();
        if self.flight.is_discarded() {
            return None;
        }
        Some(write())
    }

    /// End the flight: remember `settled` for the key (unless it was cancelled meanwhile),
    /// then hand `outcome` to every waiter.
    pub fn finish(mut self, outcome: O, settled: Settled, now: SystemTime) {
        self.end(outcome, settled, now);
    }

    fn end(&mut self, outcome: O, settled: Settled, now: SystemTime) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.flights.settle(&self.flight, settled, now);
        self.flight.complete(outcome);
    }
}

impl<O: Clone, D> Drop for Lead<O, D> {
    fn drop(&mut self) {
        let abandoned = self.flights.inner.abandoned.clone();
        self.end(abandoned, Settled::Nothing, SystemTime::now());
    }
}

/// A message as one line: its non-empty lines, trimmed and joined by a space, without control
/// characters (`refresh_error` is an attribute value and a table cell).
pub fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn flights() -> Flights<Option<u32>> {
        Flights::new(None)
    }

    fn lead(flights: &Flights<Option<u32>>, key: &str) -> Lead<Option<u32>, ()> {
        match flights.begin(Path::new(key), SystemTime::now(), true, || ()) {
            Begin::Lead(lead) => lead,
            _ => panic!("{key}: expected to lead"),
        }
    }

    #[test]
    fn second_caller_joins_and_gets_the_leaders_outcome() {
        let flights = flights();
        let lead = lead(&flights, "a.json");
        let Begin::Joined(flight) =
            flights.begin(Path::new("a.json"), SystemTime::now(), true, || ())
        else {
            panic!("second caller must join");
        };
        assert!(flights.is_running(Path::new("a.json")));
        let waiter = thread::spawn(move || flight.wait());
        lead.finish(Some(1), Settled::Ok, SystemTime::now());
        assert_eq!(waiter.join().unwrap(), Some(1));
        assert!(!flights.is_running(Path::new("a.json")));
    }

    #[test]
    fn a_dropped_leader_ends_the_flight_as_abandoned() {
        let flights = flights();
        let lead = lead(&flights, "a.json");
        let flight = lead.flight().clone();
        drop(lead);
        assert_eq!(flight.wait(), None);
        assert!(matches!(
            flights.begin(Path::new("a.json"), SystemTime::now(), true, || ()),
            Begin::Lead(_)
        ));
    }

    #[test]
    fn cancel_stops_a_running_flight_from_publishing_and_forgets_the_key() {
        let flights = flights();
        let key = Path::new("a.json");
        let now = SystemTime::now();
        let first = lead(&flights, "a.json");
        let error = "boom\nsecond".to_string();
        let backoff = Duration::from_secs(60);
        first.finish(None, Settled::Failed { error, backoff }, now);
        assert_eq!(flights.last_error(key).as_deref(), Some("boom second"));
        assert!(matches!(
            flights.begin(key, now, true, || ()),
            Begin::BackingOff
        ));
        let Begin::Lead(running) = flights.begin(key, now, false, || ()) else {
            panic!("backoff is only respected when asked");
        };
        assert!(flights.cancel(key).is_some());
        assert_eq!(running.publish(|| "written"), None);
        assert_eq!(flights.last_error(key), None, "rm clears the last error");
        let Begin::Lead(_next) = flights.begin(key, now, true, || ()) else {
            panic!("after rm a new flight may start at once");
        };
        // The cancelled leader's finish does not touch the new flight's key.
        running.finish(Some(2), Settled::Ok, now);
        assert!(flights.is_running(key));
    }

    #[test]
    fn then_is_answered_now_or_at_completion() {
        let flights = flights();
        let lead = lead(&flights, "a.json");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = |seen: &Arc<Mutex<Vec<Option<u32>>>>| {
            let seen = seen.clone();
            Box::new(move |o| seen.lock().push(o)) as Then<Option<u32>>
        };
        lead.flight().then(record(&seen));
        let flight = lead.flight().clone();
        lead.finish(Some(3), Settled::Ok, SystemTime::now());
        flight.then(record(&seen));
        assert_eq!(*seen.lock(), vec![Some(3), Some(3)]);
        assert!(!flight.complete(Some(4)), "the first outcome wins");
    }

    #[test]
    fn declined_backs_off_without_an_error_and_ok_clears_both() {
        let flights = flights();
        let key = Path::new("a.json");
        let now = SystemTime::now();
        let backoff = Duration::from_secs(10);
        lead(&flights, "a.json").finish(None, Settled::Declined { backoff }, now);
        assert_eq!(flights.last_error(key), None);
        assert!(matches!(
            flights.begin(key, now, true, || ()),
            Begin::BackingOff
        ));
        let later = now + backoff;
        let Begin::Lead(lead) = flights.begin(key, later, true, || ()) else {
            panic!("the backoff is over");
        };
        lead.finish(Some(1), Settled::Ok, later);
        assert!(
            flights.inner.keys.lock().map.is_empty(),
            "nothing left to remember"
        );
    }

    #[test]
    fn one_line_joins_lines_and_drops_control_characters() {
        assert_eq!(one_line("\n  first\r\nsecond\n"), "first second");
        assert_eq!(one_line("a\x1b[31mred\tb"), "a[31mredb");
    }
}
