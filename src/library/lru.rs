//! The library's hot set: recently read or written entries kept in memory, keyed by absolute
//! path. A kept copy is served only while the file is unchanged since it was kept (same
//! device, inode, size, mtime and ctime, the [`Version`] the filesystem's hot set compares),
//! so a write, `rm`, `touch` or replace by anyone (the mount, Python, `cp`) is never hidden
//! behind it. Expiry is not judged here: callers evaluate the policy on the file's current
//! mtime before asking.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use crate::store::Version;

/// Entry bytes kept in memory, each with the version of the file they were read from.
#[derive(Debug)]
pub(crate) struct HotSet {
    kept: Mutex<LruCache<PathBuf, Kept>>,
}

#[derive(Debug, Clone)]
struct Kept {
    bytes: Arc<[u8]>,
    version: Version,
}

impl HotSet {
    /// A hot set of at most `capacity` entries; `None` for a capacity of 0.
    pub(crate) fn new(capacity: usize) -> Option<HotSet> {
        let capacity = NonZeroUsize::new(capacity)?;
        Some(HotSet {
            kept: Mutex::new(LruCache::new(capacity)),
        })
    }

    /// The kept bytes of `path`, if they were read from exactly `current`. A copy of an older
    /// version is dropped.
    pub(crate) fn get(&self, path: &Path, current: &Version) -> Option<Arc<[u8]>> {
        let mut kept = self.kept.lock();
        match kept.get(path) {
            Some(k) if k.version == *current => Some(k.bytes.clone()),
            Some(_) => {
                kept.pop(path);
                None
            }
            None => None,
        }
    }

    pub(crate) fn put(&self, path: PathBuf, bytes: Arc<[u8]>, version: Version) {
        self.kept.lock().put(path, Kept { bytes, version });
    }

    pub(crate) fn remove(&self, path: &Path) {
        self.kept.lock().pop(path);
    }

    /// Drop every kept entry at or beneath `prefix`.
    pub(crate) fn remove_under(&self, prefix: &Path) {
        let mut kept = self.kept.lock();
        let doomed: Vec<PathBuf> = kept
            .iter()
            .filter(|(path, _)| path.starts_with(prefix))
            .map(|(path, _)| path.clone())
            .collect();
        for path in doomed {
            kept.pop(&path);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.kept.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn version(ino: u64, size: u64) -> Version {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Version {
            dev: 1,
            ino,
            size,
            mtime: t,
            ctime: t,
        }
    }

    #[test]
    fn kept_copy_is_served_only_for_the_same_version() {
        let hot = HotSet::new(4).unwrap();
        let path = PathBuf::from("/c/x.json");
        hot.put(path.clone(), Arc::from(&b"{}"[..]), version(7, 2));
        assert_eq!(hot.get(&path, &version(7, 2)).as_deref(), Some(&b"{}"[..]));
        assert!(hot.get(&path, &version(8, 2)).is_none());
        // The stale copy was dropped, not just skipped.
        assert!(hot.get(&path, &version(7, 2)).is_none());
        assert_eq!(hot.len(), 0);
    }

    #[test]
    fn least_recently_used_entry_is_evicted_at_capacity() {
        let hot = HotSet::new(2).unwrap();
        let v = version(1, 1);
        for name in ["/a.json", "/b.json"] {
            hot.put(PathBuf::from(name), Arc::from(&b"1"[..]), v);
        }
        assert!(hot.get(Path::new("/a.json"), &v).is_some());
        hot.put(PathBuf::from("/c.json"), Arc::from(&b"1"[..]), v);
        assert!(hot.get(Path::new("/b.json"), &v).is_none());
        assert!(hot.get(Path::new("/a.json"), &v).is_some());
        assert!(hot.get(Path::new("/c.json"), &v).is_some());
    }

    #[test]
    fn remove_under_drops_a_whole_folder() {
        let hot = HotSet::new(8).unwrap();
        let v = version(1, 1);
        for name in ["/c/a.json", "/c/d/b.json", "/cx.json"] {
            hot.put(PathBuf::from(name), Arc::from(&b"1"[..]), v);
        }
        hot.remove_under(Path::new("/c"));
        assert_eq!(hot.len(), 1);
        assert!(hot.get(Path::new("/cx.json"), &v).is_some());
    }

    #[test]
    fn zero_capacity_means_no_hot_set() {
        assert!(HotSet::new(0).is_none());
    }
}
