//! The hot set (SPEC §7): recently read entry contents kept in memory, for the mount's reads
//! that reach the daemon and for the library's reads alike. One copy per key (the mount: the
//! node the content was read through; the library: the entry's path), tagged with the
//! content's version (device, inode, size, mtime, ctime): a file that changed in any way (a
//! write, `rm`, `touch` or replace by anyone) is never served from here, and the copy goes as
//! soon as a read finds it changed, or when its owner says the key changed ([`HotSet::forget`]:
//! a write, `rm`, a refresh, a change seen by the watcher).
//! Keying the mount's copies by node also means a file created on the inode number another
//! just freed, in the same clock tick and with the same size (so the same version), is never
//! served another name's bytes.
//! Expiry is not judged here: callers evaluate the policy on the file's current mtime first.

use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use crate::store::Version;

/// The byte bound when none is given: the mount's default `lru_bytes`.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

#[derive(Debug)]
pub struct HotSet<K: std::hash::Hash + Eq> {
    inner: Mutex<Inner<K>>,
    max_bytes: u64,
}

#[derive(Debug)]
struct Inner<K: std::hash::Hash + Eq> {
    entries: LruCache<K, (Version, Arc<[u8]>)>,
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

    /// The copy kept for `key` if it is of `version`. A copy of another version is of a file
    /// that changed since: it goes.
    pub fn get(&self, key: &K, version: &Version) -> Option<Arc<[u8]>> {
        let mut inner = self.inner.lock();
        let kept = inner.entries.get(key)?;
        if kept.0 == *version {
            return Some(kept.1.clone());
        }
        inner.remove(key);
        None
    }

    /// Keep `content`, of `version`, as `key`'s copy (replacing any other).
    pub fn insert(&self, key: K, version: Version, content: Arc<[u8]>) {
        let size = content.len() as u64;
        if !self.admits(size) {
            return;
        }
        let mut inner = self.inner.lock();
        if let Some((_, (_, old))) = inner.entries.push(key, (version, content)) {
            // The key's own old copy, or the least recently used one, evicted by count.
            inner.bytes -= old.len() as u64;
        }
        inner.bytes += size;
        while inner.bytes > self.max_bytes {
            match inner.entries.pop_lru() {
                Some((_, (_, evicted))) => inner.bytes -= evicted.len() as u64,
                None => break,
            }
        }
    }

    /// `key` changed (written, removed, refreshed, changed behind the mount): its copy goes.
    pub fn forget(&self, key: &K) {
        self.inner.lock().remove(key);
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

impl<K: std::hash::Hash + Eq> Inner<K> {
    fn remove(&mut self, key: &K) {
        if let Some((_, content)) = self.entries.pop(key) {
            self.bytes -= content.len() as u64;
        }
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
        hot.insert(1, version(1), bytes(100));
        hot.insert(2, version(2), bytes(100));
        hot.insert(3, version(3), bytes(100));
        assert_eq!(hot.usage(), (2, 200));
        assert!(
            hot.get(&1, &version(1)).is_none(),
            "least recently used went first"
        );
        hot.insert(4, version(4), bytes(101));
        assert!(
            hot.get(&4, &version(4)).is_none(),
            "over a quarter of lru_bytes is not kept"
        );
        hot.insert(5, version(5), bytes(100));
        hot.insert(6, version(6), bytes(100));
        hot.insert(7, version(7), bytes(100));
        hot.insert(8, version(8), bytes(100));
        assert_eq!(hot.usage(), (2, 200), "bytes follow evictions by count");
    }

    #[test]
    fn a_changed_version_is_a_miss_and_its_copy_goes() {
        let hot = HotSet::new(10, 1 << 20);
        hot.insert(1, version(1), bytes(10));
        let mut changed = version(1);
        changed.size = 11;
        assert!(hot.get(&1, &version(1)).is_some());
        assert!(hot.get(&1, &changed).is_none());
        assert_eq!(hot.usage(), (0, 0));
    }

    #[test]
    fn one_copy_per_key_and_forget_drops_it() {
        let hot = HotSet::new(10, 1 << 20);
        hot.insert(1, version(1), bytes(10));
        hot.insert(1, version(2), bytes(20));
        assert_eq!(hot.usage(), (1, 20), "a new version replaces the key's copy");
        hot.insert(2, version(3), bytes(5));
        hot.forget(&1);
        assert_eq!(hot.usage(), (1, 5));
        assert!(hot.get(&2, &version(3)).is_some());
        hot.forget(&9);
        assert_eq!(hot.usage(), (1, 5), "forgetting an unknown key changes nothing");
    }
}
