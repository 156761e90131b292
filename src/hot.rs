//! The hot set (SPEC §7): recently read entry contents kept in memory, for the mount's reads
//! that reach the daemon and for the library's reads alike. A copy is keyed by the content's
//! version (device, inode, size, mtime, ctime), so a file that changed in any way (a write,
//! `rm`, `touch` or replace by anyone) is never served from here; stale copies simply age out.
//! The mount adds the node the content was read through to the key (`HotSet<(u64, Version)>`):
//! a file created on the inode number another just freed, in the same clock tick and with the
//! same size, has the same version, and must never be served another name's bytes.
//! Expiry is not judged here: callers evaluate the policy on the file's current mtime first.

use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use crate::store::Version;

/// The byte bound when none is given: the mount's default `lru_bytes`.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

#[derive(Debug)]
pub struct HotSet<K: std::hash::Hash + Eq = Version> {
    inner: Mutex<Inner<K>>,
    max_bytes: u64,
}

#[derive(Debug)]
struct Inner<K: std::hash::Hash + Eq> {
    entries: LruCache<K, Arc<[u8]>>,
    bytes: u64,
}

impl<K: std::hash::Hash + Eq> HotSet<K> {
    /// At most `max_entries` entries and `max_bytes` bytes; an entry over a quarter of
    /// `max_bytes` is never kept.
    pub fn new(max_entries: usize, max_bytes: u64) -> HotSet<K> {
        let cap = NonZeroUsize::new(max_entries.max(1)).expect("at least 1");
        let max_bytes = if max_entries == 0 { 0 } else { max_bytes };
        HotSet {
            inner: Mutex::new(Inner {
                entries: LruCache::new(cap),
                bytes: 0,
            }),
            max_bytes,
        }
    }

    /// Whether content of this size may be kept at all.
    pub fn admits(&self, size: u64) -> bool {
        size <= self.max_bytes / 4
    }

    pub fn get(&self, key: &K) -> Option<Arc<[u8]>> {
        self.inner.lock().entries.get(key).cloned()
    }

    pub fn insert(&self, key: K, content: Arc<[u8]>) {
        let size = content.len() as u64;
        if !self.admits(size) {
            return;
        }
        let mut inner = self.inner.lock();
        if let Some(old) = inner.entries.put(key, content) {
            inner.bytes -= old.len() as u64;
        }
        inner.bytes += size;
        while inner.bytes > self.max_bytes {
            match inner.entries.pop_lru() {
                Some((_, evicted)) => inner.bytes -= evicted.len() as u64,
                None => break,
            }
        }
        // LruCache evicts by count on its own; recount what it may have dropped.
        inner.bytes = inner.entries.iter().map(|(_, c)| c.len() as u64).sum();
    }

    /// (entries, bytes) at most.
    pub fn limits(&self) -> (usize, u64) {
        (self.inner.lock().entries.cap().get(), self.max_bytes)
    }

    /// (entries, bytes) kept now.
    pub fn usage(&self) -> (usize, u64) {
        let inner = self.inner.lock();
        (inner.entries.len(), inner.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn version(ino: u64) -> Version {
        Version {
            dev: 1,
            ino,
            size: 0,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
        }
    }

    fn bytes(n: usize) -> Arc<[u8]> {
        vec![b'x'; n].into()
    }

    #[test]
    fn bounded_by_entries_and_bytes_and_a_quarter_rule() {
        let hot = HotSet::new(2, 400);
        hot.insert(version(1), bytes(100));
        hot.insert(version(2), bytes(100));
        hot.insert(version(3), bytes(100));
        assert_eq!(hot.usage(), (2, 200));
        assert!(
            hot.get(&version(1)).is_none(),
            "least recently used went first"
        );
        hot.insert(version(4), bytes(101));
        assert!(
            hot.get(&version(4)).is_none(),
            "over a quarter of lru_bytes is not kept"
        );
    }

    #[test]
    fn a_changed_version_is_a_miss() {
        let hot = HotSet::new(10, 1 << 20);
        hot.insert(version(1), bytes(10));
        let mut changed = version(1);
        changed.size = 11;
        assert!(hot.get(&changed).is_none());
        assert!(hot.get(&version(1)).is_some());
    }
}
