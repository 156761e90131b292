//! Directory listings: a snapshot of the visible names at `opendir`, served by offset, with
//! attributes for `readdirplus` so `ls -l` needs no lookup per name.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;

use super::handles::{Handle, Listed};
use super::*;

/// From this many names on, a listing is judged on every CPU at once.
const PARALLEL_LISTING: usize = 512;

/// A listing of one directory as read from the backing dir: every name that may be shown, with
/// what `stat` said of it. Reused by the next `opendir` of the directory for up to
/// [`KERNEL_TTL`] while nothing changed beneath the root (see [`CacheFs::recent_listing`]).
#[derive(Debug)]
pub(super) struct Snapshot {
    taken: SystemTime,
    /// [`Store::changes`] when it was taken.
    changes: u64,
    items: Vec<(OsString, Stat)>,
}

/// Listings larger than this are not kept for reuse (memory: about 100 bytes a name).
const SNAPSHOT_MAX_NAMES: usize = 100_000;

/// How many directories' listings are kept for reuse.
pub(super) const SNAPSHOTS_KEPT: usize = 16;

impl CacheFs {
    /// Snapshot the visible content of a directory: subdirectories and fresh or stale valid
    /// entries, plus the directories fill rules name that do not exist yet. Scratch files,
    /// expired and corrupt entries, our staging files and anything else are left out.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let key = self.path_of(ino)?;
        let now = self.clock.now();
        let (snapshot, judged) = match self.recent_listing(&key, now) {
            Some((snapshot, age)) => {
                // Judged again now (the state of an entry depends on the time); the kernel may
                // keep what it is told only for what is left of the second the listing's
                // attributes may be old, so nothing shows changes later than §2 allows.
                let judged = snapshot
                    .items
                    .iter()
                    .filter_map(|(name, st)| self.shown(&key, name, *st, age))
                    .collect::<Vec<_>>();
                (snapshot, judged)
            }
            None => self.take_listing(&key, now)?,
        };
        let dir_attr = self
            .getattr(ino, None)
            .map(|e| e.attr)
            .unwrap_or_else(|_| self.fill_dir_attr(ino));
        let mut listed = Vec::with_capacity(judged.len() + 2);
        listed.push(Listed {
            name: ".".into(),
            attr: dir_attr,
            ttl: Duration::ZERO,
        });
        listed.push(Listed {
            name: "..".into(),
            attr: dir_attr,
            ttl: Duration::ZERO,
        });
        for dir in self
            .fill_dirs
            .iter()
            .filter(|d| d.parent() == Some(key.as_path()))
        {
            let name = dir.file_name().unwrap_or_default();
            if !snapshot.items.iter().any(|(listed, _)| listed == name) {
                let attr = self.fill_dir_attr(0);
                listed.push(Listed {
                    name: name.to_os_string(),
                    attr,
                    ttl: KERNEL_TTL,
                });
            }
        }
        listed.extend(judged);
        Ok(self.add_handle(Handle::Dir { ino, items: listed }))
    }

    /// The listing of `key` taken less than [`KERNEL_TTL`] ago, and how long ago, if nothing
    /// changed beneath the root since: nothing written, removed, renamed or created through
    /// the mount, and no change reported by the watcher or a refresh (`Store::changes`). An
    /// `ls -l` repeated within the second then costs no `stat` per name. Never on a network
    /// or FUSE backing dir, whose changes from other machines nobody reports at once.
    fn recent_listing(&self, key: &Path, now: SystemTime) -> Option<(Arc<Snapshot>, Duration)> {
        if self.store.is_remote() {
            return None;
        }
        let snapshot = self.listings.lock().get(key)?.clone();
        let age = now.duration_since(snapshot.taken).ok()?;
        (age < KERNEL_TTL && snapshot.changes == self.store.changes()).then_some((snapshot, age))
    }

    /// Read and judge the listing of `key`; keep it for reuse. Returns it (every name that may
    /// be shown, with its `stat`), and what is shown now.
    fn take_listing(&self, key: &Path, now: SystemTime) -> FsResult<(Arc<Snapshot>, Vec<Listed>)> {
        let changes = self.store.changes();
        let items = match self.store.read_dir(key) {
            Ok(items) => items,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && self.is_fill_dir(key) => Vec::new(),
            Err(e) => return Err(FsError::io(key.display(), e)),
        };
        {
            // A name in the listing with the inode seen gone from it is back.
            let mut gone = self.gone.lock();
            if !gone.is_empty() {
                for item in &items {
                    let child = key.join(&item.name);
                    if gone.get(&child).is_some_and(|(ino, _)| *ino == item.ino) {
                        gone.remove(&child);
                    }
                }
            }
        }
        let dir_fd = self.store.dir(key).ok();
        let read = self.judge_listing(key, dir_fd.as_ref(), items);
        let mut items = Vec::with_capacity(read.len());
        let mut judged = Vec::with_capacity(read.len());
        for (name, st, listed) in read {
            items.push((name, st));
            judged.extend(listed);
        }
        let snapshot = Arc::new(Snapshot {
            taken: now,
            changes,
            items,
        });
        let keep = dir_fd.is_some()
            && !self.store.is_remote()
            && snapshot.items.len() <= SNAPSHOT_MAX_NAMES;
        if keep {
            self.listings
                .lock()
                .put(key.to_path_buf(), snapshot.clone());
        }
        Ok((snapshot, judged))
    }

    /// Each name of a listing that may be shown, with its `stat`, and its entry if it is shown
    /// now: one `stat` each, which is most of an `ls -l`'s time while its caller waits. A large
    /// listing is judged on every CPU at once (each in its own part, in order): on two CPUs,
    /// 10,000 names took 23 ms on one thread.
    fn judge_listing(
        &self,
        key: &Path,
        dir_fd: Option<&OwnedFd>,
        items: Vec<store::DirItem>,
    ) -> Vec<(OsString, Stat, Option<Listed>)> {
        let parts = std::thread::available_parallelism().map_or(1, |n| n.get());
        if parts < 2 || items.len() < PARALLEL_LISTING {
            return items
                .into_iter()
                .filter_map(|item| self.judge_listed(key, dir_fd, item))
                .collect();
        }
        let per_part = items.len().div_ceil(parts);
        let mut items = items.into_iter();
        let chunks: Vec<Vec<store::DirItem>> = (0..parts)
            .map(|_| items.by_ref().take(per_part).collect())
            .collect();
        std::thread::scope(|scope| {
            let judging: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .into_iter()
                            .filter_map(|item| self.judge_listed(key, dir_fd, item))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            judging
                .into_iter()
                .flat_map(|part| part.join().unwrap_or_default())
                .collect()
        })
    }

    /// One name of a listing that may be shown (`None`: not a file or directory, a staging or
    /// scratch file, or gone), with its `stat`, and its entry if it is shown now.
    fn judge_listed(
        &self,
        key: &Path,
        dir_fd: Option<&OwnedFd>,
        item: store::DirItem,
    ) -> Option<(OsString, Stat, Option<Listed>)> {
        let name = item.name.as_os_str();
        if item.kind == Some(Kind::Other) || store::is_staging_name(name) {
            return None;
        }
        if item.kind == Some(Kind::File) && !store::is_entry_name(name) {
            return None; // scratch files are not listed
        }
        let st = match dir_fd {
            Some(dir) => Store::stat_in(dir, name).ok()?,
            None => {
                let child = key.join(name);
                let st = self.store.stat(&child).ok()?;
                if self.is_gone(&child, &st) {
                    return Some((item.name, st, None));
                }
                st
            }
        };
        let listed = self.shown(key, &item.name, st, Duration::ZERO);
        Some((item.name, st, listed))
    }

    /// The entry of `name` in the listing of `dir`, as `st` says it is, if it is shown now: a
    /// subdirectory or a visible entry. `age` is how old `st` is: the kernel may keep what it
    /// is told only for what is left of its second.
    fn shown(&self, dir: &Path, name: &OsStr, st: Stat, age: Duration) -> Option<Listed> {
        match self.judge_stat(&dir.join(name), st) {
            Ok((st, seen @ (Seen::Dir | Seen::Entry(_)))) => Some(Listed {
                name: name.to_os_string(),
                attr: Attr::from_stat(0, &st),
                ttl: self.ttl(seen).saturating_sub(age),
            }),
            _ => None,
        }
    }

    /// Hand the listed names from `offset` on to `add` until it says the reply is full; the
    /// offset of item i is i + 1. Inode numbers are those the names are bound to, or the
    /// backing inode for names not looked up yet.
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, u64, Kind, &OsStr) -> bool,
    ) -> FsResult<()> {
        let handle = self.handle(fh)?;
        let Handle::Dir { ino, items } = &*handle else {
            return Err(errno(libc::ENOTDIR));
        };
        let nodes = self.nodes.read();
        for (i, item) in items.iter().enumerate().skip(offset as usize) {
            let child = match item.name.to_str() {
                Some(".") => *ino,
                Some("..") => ROOT,
                _ => nodes
                    .find(*ino, &item.name)
                    .unwrap_or(item.attr.stat.ino.max(1)),
            };
            if add(i as u64 + 1, child, item.attr.stat.kind, &item.name) {
                break;
            }
        }
        Ok(())
    }

    /// Like `readdir`, with each name's attributes. Every name handed to the kernel here
    /// counts as a lookup (the kernel will forget it), so `add` says when the reply is full
    /// and that name is taken back.
    pub fn readdirplus(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, &OsStr, &Entry) -> bool,
    ) -> FsResult<()> {
        let handle = self.handle(fh)?;
        let Handle::Dir { ino, items } = &*handle else {
            return Err(errno(libc::ENOTDIR));
        };
        let dir = self.path_of(*ino)?;
        for (i, item) in items.iter().enumerate().skip(offset as usize) {
            let next = i as u64 + 1;
            if item.name == "." || item.name == ".." {
                // The kernel takes no reference for these.
                let attr = Attr {
                    ino: if item.name == "." { *ino } else { ROOT },
                    ..item.attr
                };
                if add(next, &item.name, &Entry::new(attr, Duration::ZERO)) {
                    break;
                }
                continue;
            }
            let id = (item.attr.stat.dev, item.attr.stat.ino);
            let version = item.attr.version();
            let child = self.bind_found(*ino, &item.name, item.attr.stat.kind, id, version);
            let mut entry = match self.pinned_attr(child, &dir.join(&item.name)) {
                Ok(Some(pinned)) => pinned,
                _ => Entry::new(
                    Attr {
                        ino: child,
                        ..item.attr
                    },
                    item.ttl,
                ),
            };
            // A listing gives one timeout for the name and its attributes.
            entry.ttl = self.grant(*ino, &item.name, child, entry.ttl).ttl;
            entry.name_ttl = entry.ttl;
            let entry = self.describe(entry);
            if add(next, &item.name, &entry) {
                self.forget(child, 1);
                break;
            }
        }
        Ok(())
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles.write().remove(&fh);
    }
}
