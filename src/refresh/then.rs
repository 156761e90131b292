//! Read-through callers that asked to be answered rather than to wait: each gets its
//! refresh's outcome, or [`Outcome::StillRunning`] once its wait (the key's
//! `refresh_timeout`) is over, whichever comes first. One thread keeps every deadline, so a
//! flood of missed lookups costs no thread each.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use tracing::warn;

use super::Outcome;

/// Called once with a refresh's outcome (a read-through lookup's reply).
pub type Then = Box<dyn FnOnce(Outcome) + Send>;

/// One caller's answer, given by whoever comes first: the refresh or the deadline.
#[derive(Clone)]
pub(super) struct Slot(Arc<Mutex<Option<Then>>>);

impl Slot {
    pub fn new(then: Then) -> Slot {
        Slot(Arc::new(Mutex::new(Some(then))))
    }

    /// Answer, unless answered already.
    pub fn answer(&self, outcome: Outcome) {
        let then = self.0.lock().take();
        if let Some(then) = then {
            then(outcome);
        }
    }
}

struct Timed {
    at: Instant,
    seq: u64,
    slot: Slot,
}

impl PartialEq for Timed {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
pub(super) struct Deadlines {
    heap: Mutex<(BinaryHeap<Reverse<Timed>>, u64)>,
    wake: Condvar,
    thread: OnceLock<()>,
}

impl Deadlines {
    /// Answer `slot` with `StillRunning` at `at`, unless its refresh answers first.
    pub fn add(self: &Arc<Self>, at: Instant, slot: Slot) {
        self.thread.get_or_init(|| {
            let me = self.clone();
            if let Err(e) = std::thread::Builder::new()
                .name("refresh-deadlines".into())
                .spawn(move || me.run())
            {
                warn!("cannot start the read-through deadline thread ({e}); waits end with their refresh");
            }
        });
        let mut heap = self.heap.lock();
        heap.1 += 1;
        let seq = heap.1;
        heap.0.push(Reverse(Timed { at, seq, slot }));
        self.wake.notify_one();
    }

    fn run(&self) {
        let mut heap = self.heap.lock();
        loop {
            let next = heap.0.peek().map(|Reverse(t)| t.at);
            match next {
                None => self.wake.wait(&mut heap),
                Some(at) if at > Instant::now() => {
                    self.wake.wait_until(&mut heap, at);
                }
                Some(_) => {
                    let Reverse(due) = heap.0.pop().expect("peeked");
                    drop(heap);
                    due.slot.answer(Outcome::StillRunning);
                    heap = self.heap.lock();
                }
            }
        }
    }
}
