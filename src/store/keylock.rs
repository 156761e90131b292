//! One lock per key, for what must not interleave on one entry within this process: a publish
//! (the entry's policy attributes carried onto the new content, then the rename) and a change
//! of the entry's policy attributes through the mount. Only requests for the same key wait for
//! each other; the table holds only the keys locked right now.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{ArcMutexGuard, Mutex, RawMutex};

#[derive(Debug, Default)]
pub struct KeyLocks {
    locked: Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>,
}

/// Held while a key is locked; unlocks on drop.
#[must_use]
pub struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    key: PathBuf,
    held: Option<ArcMutexGuard<RawMutex, ()>>,
}

impl KeyLocks {
    /// Lock `key`, waiting for whoever holds it. The table's own lock is never held while
    /// waiting.
    pub fn lock(&self, key: &Path) -> KeyGuard<'_> {
        let lock = self
            .locked
            .lock()
            .entry(key.to_path_buf())
            .or_default()
            .clone();
        KeyGuard {
            locks: self,
            key: key.to_path_buf(),
            held: Some(lock.lock_arc()),
        }
    }

    /// How many keys have a lock now (locked or waited for): for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.locked.lock().len()
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut locked = self.locks.locked.lock();
        // Unlocked under the table's lock: a waiter either cloned the key's lock before (then
        // the count shows it and the lock stays) or will find the key absent and add a new one.
        drop(self.held.take());
        if locked.get(&self.key).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            locked.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

    #[test]
    fn one_key_is_held_by_one_thread_at_a_time_and_forgotten_when_free() {
        let locks = Arc::new(KeyLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let (locks, inside) = (locks.clone(), inside.clone());
                thread::spawn(move || {
                    for _ in 0..500 {
                        let key = Path::new(if t % 2 == 0 { "a.json" } else { "b.json" });
                        let _held = locks.lock(key);
                        let slot = if t % 2 == 0 { 1 } else { 1 << 16 };
                        let before = inside.fetch_add(slot, Ordering::SeqCst);
                        assert_eq!(before & (0xffff * slot), 0, "two holders of one key");
                        thread::yield_now();
                        inside.fetch_sub(slot, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(locks.len(), 0, "no key stays in the table once free");
    }

    #[test]
    fn different_keys_do_not_wait_for_each_other() {
        let locks = KeyLocks::default();
        let _a = locks.lock(Path::new("a.json"));
        let _b = locks.lock(Path::new("d/b.json"));
        assert_eq!(locks.len(), 2);
    }
}
