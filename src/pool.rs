//! A bounded pool of threads for background work (a mount's refreshes, the library's
//! background recomputations): at most `max` threads, started when work is queued and ended
//! when the queue is empty, so none exist while idle. Work beyond `max` waits in a FIFO queue.

use std::collections::VecDeque;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use tracing::{error, warn};

/// One piece of work. Called with `Ok(())` on a pool thread to do it, or with the error on the
/// submitting thread when no thread could be started for it (it will never run).
pub type Work = Box<dyn FnOnce(Result<(), &io::Error>) + Send>;

/// Clones share the pool.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    name: &'static str,
    max: usize,
    state: Mutex<State>,
    /// Signalled when the last thread exits.
    idle: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Work>,
    threads: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.state.lock();
        f.debug_struct("Pool")
            .field("name", &self.inner.name)
            .field("threads", &state.threads)
            .field("queued", &state.queue.len())
            .finish()
    }
}

impl Pool {
    /// A pool of at most `max` (at least 1) threads named `name`.
    pub fn new(name: &'static str, max: usize) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                name,
                max: max.max(1),
                state: Mutex::new(State::default()),
                idle: Condvar::new(),
            }),
        }
    }

    /// Queue `work`, starting a thread for it if fewer than `max` run.
    pub fn submit(&self, work: Work) {
        {
            let mut state = self.inner.state.lock();
            state.queue.push_back(work);
            if state.threads >= self.inner.max {
                return;
            }
            state.threads += 1;
        }
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new()
            .name(self.inner.name.into())
            .spawn(move || inner.work());
        if let Err(e) = spawned {
            warn!(pool = self.inner.name, error = %e, "cannot start a thread");
            let refused = {
                let mut state = self.inner.state.lock();
                state.threads -= 1;
                if state.threads > 0 {
                    // The running threads will take the queue.
                    return;
                }
                self.inner.idle.notify_all();
                std::mem::take(&mut state.queue)
            };
            for work in refused {
                work(Err(&e));
            }
        }
    }

    /// Wait until no work is queued or running, or `deadline` passes; whether it is idle.
    pub fn wait_idle(&self, deadline: Instant) -> bool {
        let mut state = self.inner.state.lock();
        while state.threads > 0 {
            if self.inner.idle.wait_until(&mut state, deadline).timed_out() {
                return false;
            }
        }
        true
    }

    /// (threads running, work queued) now.
    pub fn usage(&self) -> (usize, usize) {
        let state = self.inner.state.lock();
        (state.threads, state.queue.len())
    }
}

impl Inner {
    /// One pool thread: do queued work until there is none.
    fn work(&self) {
        loop {
            let work = {
                let mut state = self.state.lock();
                match state.queue.pop_front() {
                    Some(work) => work,
                    None => {
                        state.threads -= 1;
                        if state.threads == 0 {
                            self.idle.notify_all();
                        }
                        return;
                    }
                }
            };
            // A panic ends that work, not the thread (whose count the pool keeps).
            if catch_unwind(AssertUnwindSafe(|| work(Ok(())))).is_err() {
                error!(pool = self.name, "background work panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn at_most_max_threads_run_and_all_work_is_done() {
        let pool = Pool::new("pool-test", 2);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..20 {
            let (running, most, done) = (running.clone(), most.clone(), done.clone());
            pool.submit(Box::new(move |started| {
                started.unwrap();
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                running.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        assert!(pool.wait_idle(Instant::now() + Duration::from_secs(30)));
        assert_eq!(done.load(Ordering::SeqCst), 20);
        assert!(most.load(Ordering::SeqCst) <= 2);
        assert_eq!(pool.usage(), (0, 0), "no thread is left while idle");
    }

    #[test]
    fn a_panicking_work_does_not_stop_the_pool() {
        let pool = Pool::new("pool-test", 1);
        let done = Arc::new(AtomicUsize::new(0));
        pool.submit(Box::new(|_| panic!("boom")));
        let counted = done.clone();
        pool.submit(Box::new(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        assert!(pool.wait_idle(Instant::now() + Duration::from_secs(30)));
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }
}
