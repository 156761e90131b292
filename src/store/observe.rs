//! What a [`Store`] tells its observer (the change journal, `crate::journal`) of the changes it
//! makes beneath its root: publishes, removals, renames, files created, attributes changed,
//! each with how it moved its directory's times (a fresh `statx` just before and just after).
//! Nothing here is done without an observer: the library's store has none.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::OFlags;

use super::{is_reserved, split, DirChange, DirStamp, Stat, Staging, Store};

/// What the publisher of staged content knows of it, handed to the store's [`Observer`] with
/// the publish, so that other mounts need not judge it again (SPEC §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judged {
    /// Whether it is one JSON value within `max_entry_bytes`.
    pub valid: bool,
    /// The entry's own policy overrides in `entry_policy::ATTRIBUTES` order (duration, stale,
    /// stale_if_error), `None` where the rule applies; the whole `None` when not known.
    pub policy: Option<[Option<Duration>; 3]>,
}

/// A change this store made beneath its root, as its [`Observer`] is told of it. Keys are
/// paths relative to the root, whatever their name (the observer picks the entries).
#[derive(Debug, Clone, Copy)]
pub enum Observed<'a> {
    /// New content was renamed onto `key`; `stat` is the published file's `fstat`, taken
    /// after the rename (which changes ctime on some filesystems). `dir` is the directory's
    /// times around the rename, `None` if they could not be had (likewise below).
    Published {
        key: &'a Path,
        stat: &'a Stat,
        judged: Option<Judged>,
        dir: Option<DirChange>,
    },
    /// `key` was removed.
    Removed {
        key: &'a Path,
        dir: Option<DirChange>,
    },
    /// `from` was renamed to `to`; `stat` is what is at `to` now (`None` if it could not be
    /// had).
    Renamed {
        from: &'a Path,
        to: &'a Path,
        stat: Option<&'a Stat>,
        from_dir: Option<DirChange>,
        to_dir: Option<DirChange>,
    },
    /// `key`'s times, mode, owner or extended attributes changed in place.
    Changed { key: &'a Path, stat: Option<&'a Stat> },
    /// A file was created in the directory `dir` (`open_file` with `O_CREAT`, a staging
    /// file).
    Created { dir: &'a Path, change: DirChange },
    /// Nothing changed, but the content version `stat` at `key` was judged by reading it
    /// ([`Store::tell_judged`]): other mounts, and this one after a restart, need not read it
    /// again (SPEC §13).
    Judged {
        key: &'a Path,
        stat: &'a Stat,
        judged: Judged,
    },
}

/// Told of every change a [`Store`] makes, after it succeeded, on the thread that made it:
/// the change journal (`crate::journal`) announces them to the other mounts of the backing
/// dir. Must not block.
pub trait Observer: Send + Sync {
    fn observe(&self, change: Observed<'_>);
}

impl std::fmt::Debug for dyn Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

impl Store {
    /// Tell `observer` of every change this store makes from now on (once; a second call is
    /// ignored). The mount and `cachetta gc` set the change journal; the library sets none.
    pub fn set_observer(&self, observer: Arc<dyn Observer>) {
        let _ = self.observer.set(observer);
    }

    /// Tell the observer what the content version `stat` at `key` was judged to be, by a
    /// reader that read it (the mount's lookups and listings).
    pub fn tell_judged(&self, key: &Path, stat: &Stat, judged: Judged) {
        self.observe(Observed::Judged { key, stat, judged });
    }

    pub(super) fn observe(&self, change: Observed<'_>) {
        if let Some(observer) = self.observer.get() {
            observer.observe(change);
        }
    }

    /// The stamp of `dir`, when an observer will want it (around a change in it).
    pub(super) fn stamp(&self, dir: &OwnedFd) -> Option<DirStamp> {
        self.observer.get().and_then(|_| DirStamp::fresh(dir))
    }

    /// The parent of `rel` and its stamp, when an observer will want to hear of a file
    /// created there.
    pub(super) fn stamp_parent(&self, rel: &Path, flags: OFlags) -> Option<(OwnedFd, DirStamp)> {
        self.observer.get()?;
        if !flags.contains(OFlags::CREATE) || is_reserved(rel) {
            return None;
        }
        let dir = self.dir(split(rel).0).ok()?;
        let stamp = DirStamp::fresh(&dir)?;
        Some((dir, stamp))
    }

    /// Tell the observer that `rel` changed in place (`fd`: the file, if it is open).
    pub(super) fn observe_changed(&self, rel: &Path, fd: Option<&OwnedFd>) {
        if self.observer.get().is_some() {
            let stat = match fd {
                Some(fd) => Store::fstat(fd),
                None => self.stat(rel),
            }
            .ok();
            self.observe(Observed::Changed {
                key: rel,
                stat: stat.as_ref(),
            });
        }
    }

    /// Tell the observer of a staging file created in `dir_rel` (open as `dir`), whose stamp
    /// was `before` just before.
    pub(super) fn observe_created(&self, dir_rel: &Path, dir: &OwnedFd, before: Option<DirStamp>) {
        if let Some((before, after)) = before.zip(self.stamp(dir)) {
            let change = DirChange { before, after };
            self.observe(Observed::Created {
                dir: dir_rel,
                change,
            });
        }
    }

    /// Tell the observer of a file `open_file` may have created at `rel` (`creating`: its
    /// directory and stamp before, when an observer wants them).
    pub(super) fn observe_created_by_open(
        &self,
        rel: &Path,
        creating: Option<(OwnedFd, DirStamp)>,
        opened: bool,
    ) {
        let Some((dir, before)) = creating.filter(|_| opened) else {
            return;
        };
        match self.stamp(&dir) {
            // Opened, not created: the directory did not change.
            Some(after) if after != before => {
                let change = DirChange { before, after };
                self.observe(Observed::Created {
                    dir: split(rel).0,
                    change,
                });
            }
            _ => {}
        }
    }

    /// Tell the observer of `staging` published as `key`, with its directory's stamps around
    /// the rename.
    pub(super) fn observe_published(
        &self,
        key: &Path,
        staging: &Staging,
        stamps: Option<(DirStamp, DirStamp)>,
    ) {
        if let (Some(_), Ok(stat)) = (self.observer.get(), Store::fstat(&staging.file)) {
            let dir = stamps.map(|(before, after)| DirChange { before, after });
            self.observe(Observed::Published {
                key,
                stat: &stat,
                judged: staging.judged,
                dir,
            });
        }
    }

    /// Tell the observer that `rel` was removed from `dir`, whose stamp was `before`.
    pub(super) fn observe_removed(&self, rel: &Path, dir: &OwnedFd, before: Option<DirStamp>) {
        if self.observer.get().is_some() {
            let dir = before.zip(self.stamp(dir));
            let dir = dir.map(|(before, after)| DirChange { before, after });
            self.observe(Observed::Removed { key: rel, dir });
        }
    }

    /// Tell the observer that `from` was renamed to `to` (in their open directories), whose
    /// directories had the stamps `before` just before.
    pub(super) fn observe_renamed(
        &self,
        (from, from_dir): (&Path, &OwnedFd),
        (to, to_dir): (&Path, &OwnedFd),
        before: (Option<DirStamp>, Option<DirStamp>),
    ) {
        if self.observer.get().is_some() {
            let stat = Store::stat_in(to_dir, split(to).1).ok();
            let change = |before: Option<DirStamp>, dir| {
                let after = self.stamp(dir)?;
                Some(DirChange { before: before?, after })
            };
            self.observe(Observed::Renamed {
                from,
                to,
                stat: stat.as_ref(),
                from_dir: change(before.0, from_dir),
                to_dir: change(before.1, to_dir),
            });
        }
    }

}
