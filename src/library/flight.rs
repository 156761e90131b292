//! Single flight per entry: at most one computation of a key runs at a time in this process,
//! and every caller that needs the same key meanwhile waits for it and shares its result.
//! Keyed by the entry's absolute path, across every `Cachetta` value, sync and async alike
//! (the mount's "at most one refresh per key", for code).
//!
//! Also remembers, per key, whether a computation is running and how the last one failed,
//! which `info()` reports as `refreshing` and `refresh_error`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use parking_lot::{Condvar, Mutex};

/// More remembered failures than this and the oldest are forgotten wholesale; they are
/// diagnostics, not state.
const ERRORS_MAX: usize = 4096;

/// How a computation ended, as the callers that joined it see it.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// The computed value, as JSON bytes.
    Value(Arc<[u8]>),
    /// It failed or panicked; a joined caller runs the computation itself.
    Failed,
}

/// One running computation of one key.
#[derive(Debug, Default)]
pub(crate) struct Flight {
    state: Mutex<State>,
    finished: Condvar,
    /// Set by `invalidate`: the result must not be written (the delete wins).
    discarded: AtomicBool,
    /// Held across "not discarded? then write" and across "discard, then delete", so a delete
    /// is never followed by the write of a computation that was running at the time.
    publish: Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    outcome: Option<Outcome>,
    #[cfg(feature = "tokio")]
    wakers: Vec<std::task::Waker>,
}

impl Flight {
    /// Block until the computation ends.
    pub(crate) fn wait(&self) -> Outcome {
        let mut state = self.state.lock();
        loop {
            if let Some(outcome) = &state.outcome {
                return outcome.clone();
            }
            self.finished.wait(&mut state);
        }
    }

    /// Wait for the computation to end without blocking the async runtime.
    #[cfg(feature = "tokio")]
    pub(crate) fn wait_async(self: Arc<Self>) -> WaitFlight {
        WaitFlight { flight: self }
    }

    fn finish(&self, outcome: Outcome) {
        let mut state = self.state.lock();
        state.outcome = Some(outcome);
        #[cfg(feature = "tokio")]
        for waker in state.wakers.drain(..) {
            waker.wake();
        }
        drop(state);
        self.finished.notify_all();
    }
}

/// The future of [`Flight::wait_async`].
#[cfg(feature = "tokio")]
pub(crate) struct WaitFlight {
    flight: Arc<Flight>,
}

#[cfg(feature = "tokio")]
impl std::future::Future for WaitFlight {
    type Output = Outcome;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Outcome> {
        let mut state = self.flight.state.lock();
        if let Some(outcome) = &state.outcome {
            return std::task::Poll::Ready(outcome.clone());
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        std::task::Poll::Pending
    }
}

/// What a caller is to do about a key.
pub(crate) enum Role {
    /// Compute it, then [`Lead::finish`].
    Leader(Lead),
    /// Someone else is computing it: wait.
    Follower(Arc<Flight>),
}

/// The right, and duty, to compute one key. Dropped without [`Lead::finish`] (an error path or
/// a panic), it ends the flight as failed so no one waits forever.
#[derive(Debug)]
pub(crate) struct Lead {
    path: PathBuf,
    flight: Arc<Flight>,
    finished: bool,
}

impl Lead {
    /// Run `write` unless the key was invalidated since this computation started. `None` when
    /// the result was discarded.
    pub(crate) fn publish<R>(&self, write: impl FnOnce() -> R) -> Option<R> {
        let _guard = self.flight.publish.lock();
        if self.flight.discarded.load(Ordering::SeqCst) {
            return None;
        }
        Some(write())
    }

    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.end(outcome);
    }

    fn end(&mut self, outcome: Outcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        {
            let mut flights = REGISTRY.flights.lock();
            if flights
                .get(&self.path)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                flights.remove(&self.path);
            }
        }
        self.flight.finish(outcome);
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.end(Outcome::Failed);
    }
}

struct Registry {
    flights: Mutex<HashMap<PathBuf, Arc<Flight>>>,
    errors: Mutex<HashMap<PathBuf, String>>,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry {
    flights: Mutex::new(HashMap::new()),
    errors: Mutex::new(HashMap::new()),
});

/// Lead the computation of `path`, or join the one running.
pub(crate) fn join_or_lead(path: &Path) -> Role {
    let mut flights = REGISTRY.flights.lock();
    if let Some(flight) = flights.get(path) {
        return Role::Follower(flight.clone());
    }
    let flight = Arc::new(Flight::default());
    flights.insert(path.to_path_buf(), flight.clone());
    Role::Leader(Lead {
        path: path.to_path_buf(),
        flight,
        finished: false,
    })
}

/// Lead the computation of `path` if none is running (a background refresh starts only then).
pub(crate) fn lead_if_idle(path: &Path) -> Option<Lead> {
    match join_or_lead(path) {
        Role::Leader(lead) => Some(lead),
        Role::Follower(_) => None,
    }
}

pub(crate) fn is_running(path: &Path) -> bool {
    REGISTRY.flights.lock().contains_key(path)
}

/// Run `delete` so that a computation of `path` running now does not write after it.
pub(crate) fn discard_then<R>(path: &Path, delete: impl FnOnce() -> R) -> R {
    let running = REGISTRY.flights.lock().get(path).cloned();
    match running {
        Some(flight) => {
            let _guard = flight.publish.lock();
            flight.discarded.store(true, Ordering::SeqCst);
            delete()
        }
        None => delete(),
    }
}

/// Remember how the last computation of `path` went: `Some(message)` for a failure.
pub(crate) fn record(path: &Path, failure: Option<String>) {
    let mut errors = REGISTRY.errors.lock();
    match failure {
        Some(message) => {
            if errors.len() >= ERRORS_MAX {
                errors.clear();
            }
            // One line, like the filesystem's `refresh_error`.
            let line = message.lines().collect::<Vec<_>>().join(" ");
            errors.insert(path.to_path_buf(), line);
        }
        None => {
            errors.remove(path);
        }
    }
}

pub(crate) fn last_error(path: &Path) -> Option<String> {
    REGISTRY.errors.lock().get(path).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn second_caller_joins_and_gets_the_leaders_value() {
        let path = Path::new("/flight-test/join.json");
        let Role::Leader(lead) = join_or_lead(path) else {
            panic!("first caller must lead");
        };
        let Role::Follower(flight) = join_or_lead(path) else {
            panic!("second caller must follow");
        };
        assert!(is_running(path));
        let waiter = thread::spawn(move || flight.wait());
        lead.finish(Outcome::Value(Arc::from(&b"1"[..])));
        match waiter.join().unwrap() {
            Outcome::Value(bytes) => assert_eq!(&*bytes, b"1"),
            Outcome::Failed => panic!("expected the value"),
        }
        assert!(!is_running(path));
    }

    #[test]
    fn dropped_lead_fails_the_flight_instead_of_hanging() {
        let path = Path::new("/flight-test/drop.json");
        let Role::Leader(lead) = join_or_lead(path) else {
            panic!("first caller must lead");
        };
        let Role::Follower(flight) = join_or_lead(path) else {
            panic!("second caller must follow");
        };
        drop(lead);
        assert!(matches!(flight.wait(), Outcome::Failed));
        assert!(lead_if_idle(path).is_some());
    }

    #[test]
    fn discard_stops_a_running_computation_from_publishing() {
        let path = Path::new("/flight-test/discard.json");
        let lead = lead_if_idle(path).unwrap();
        assert!(lead_if_idle(path).is_none());
        assert_eq!(discard_then(path, || 5), 5);
        assert_eq!(lead.publish(|| "written"), None);
    }

    #[test]
    fn failures_are_remembered_until_a_success() {
        let path = Path::new("/flight-test/errors.json");
        record(path, Some("boom\nsecond line".into()));
        assert_eq!(last_error(path).as_deref(), Some("boom second line"));
        record(path, None);
        assert_eq!(last_error(path), None);
    }
}
