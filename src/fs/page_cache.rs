//! Which entry inodes the kernel may read through its page cache (mounts without kernel
//! passthrough, i.e. every ordinary user's; issue #16).
//!
//! The page cache is safe for an inode when two things hold: the pages it holds are of the
//! version being opened (else they are dropped at the open: no `FOPEN_KEEP_CACHE`), and the
//! size the kernel keeps for the inode is that version's (page-cache reads stop at it, so a
//! stale size would cut a read short). The daemon cannot see the kernel's size, but it knows
//! every size it ever told the kernel: an inode that was only ever described as one version
//! can only have that version's size. An inode ever described as two versions is "mixed" and
//! is read with direct I/O for the rest of its life; a lookup that finds the name at another
//! version binds a fresh inode instead (see `CacheFs::bind_found`), so the page cache serves
//! the new version too.
//!
//! No writer ever opens such an inode: writers only open inodes that were never handed out
//! for long (see `coherence`), and readers of a name being written use direct I/O.

use foldhash::HashMap;

use parking_lot::Mutex;

use crate::store::Version;

#[derive(Debug, Default)]
pub struct PageCache {
    inner: Mutex<HashMap<u64, Known>>,
}

#[derive(Debug, Clone, Copy)]
struct Known {
    /// The version every reply so far described, unless `mixed`.
    reported: Option<Version>,
    mixed: bool,
    /// The version whose pages the kernel may hold.
    cached: Option<Version>,
}

impl PageCache {
    /// A reply described `ino` as `version` (`None`: not a version of a backing file, such as
    /// a new entry's attributes before its first publish).
    pub fn reported(&self, ino: u64, version: Option<Version>) {
        let mut inner = self.inner.lock();
        let known = inner.entry(ino).or_insert(Known {
            reported: version,
            mixed: false,
            cached: None,
        });
        if version.is_none() || known.reported != version {
            known.mixed = true;
        }
    }

    /// `ino` was renamed onto an entry and now is `version`: the kernel made that change
    /// itself (its size is what it wrote, the new name is its own rename), so it starts afresh
    /// as one version, and the next lookup of the name need not bind a fresh inode.
    pub fn renamed(&self, ino: u64, version: Version) {
        self.inner.lock().insert(
            ino,
            Known {
                reported: Some(version),
                mixed: false,
                cached: None,
            },
        );
    }

    /// Whether a reply already described `ino` as something other than `version` (then a
    /// lookup should bind a fresh inode for `version`).
    pub fn described_otherwise(&self, ino: u64, version: &Version) -> bool {
        self.inner
            .lock()
            .get(&ino)
            .is_some_and(|k| k.mixed || k.reported.as_ref() != Some(version))
    }

    /// An open of `ino` pinned `version`: `None` if it must use direct I/O, else whether the
    /// kernel may keep the pages it has (`FOPEN_KEEP_CACHE`).
    pub fn open(&self, ino: u64, version: Version) -> Option<bool> {
        let mut inner = self.inner.lock();
        let known = inner.get_mut(&ino)?;
        if known.mixed || known.reported != Some(version) {
            return None;
        }
        let keep = known.cached == Some(version);
        known.cached = Some(version);
        Some(keep)
    }

    /// Whether the kernel may hold pages of `ino` (then no writer may open it: its writes
    /// would move the size the kernel keeps for those pages).
    pub fn has_pages(&self, ino: u64) -> bool {
        self.inner
            .lock()
            .get(&ino)
            .is_some_and(|k| k.cached.is_some())
    }

    /// The kernel forgot `ino`.
    pub fn forget(&self, ino: u64) {
        self.inner.lock().remove(&ino);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn version(size: u64) -> Version {
        Version {
            dev: 1,
            ino: 2,
            size,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn an_inode_described_as_one_version_is_page_cached_and_keeps_its_pages() {
        let pc = PageCache::default();
        pc.reported(5, Some(version(10)));
        assert_eq!(
            pc.open(5, version(10)),
            Some(false),
            "first open: no pages to keep"
        );
        assert_eq!(pc.open(5, version(10)), Some(true));
        assert_eq!(
            pc.open(5, version(11)),
            None,
            "the kernel's size would be wrong"
        );
    }

    #[test]
    fn an_inode_described_as_two_versions_is_read_directly_for_good() {
        let pc = PageCache::default();
        pc.reported(5, Some(version(10)));
        pc.reported(5, Some(version(11)));
        assert!(pc.described_otherwise(5, &version(11)));
        assert_eq!(pc.open(5, version(11)), None);
        assert_eq!(pc.open(5, version(10)), None);
        pc.reported(6, None);
        assert_eq!(
            pc.open(6, version(10)),
            None,
            "never described: unknown size"
        );
        assert_eq!(pc.open(7, version(10)), None);
    }
}
