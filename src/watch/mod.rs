//! Changes made in the backing dir behind the mount's back (another program, `cp`, a Python
//! app, another mount), reported through a callback ([`OnChange`]), as `refresh` reports
//! publishes: `mount` wires it to the filesystem, so inodes pinned to old content move on and
//! the kernel gets an attribute hint. Correctness does not hang on it (the kernel caches
//! nothing past a second, see `fs::coherence`); it makes changes show sooner. Nothing here
//! knows the filesystem.
//!
//! inotify is read directly, with a narrow mask: no `IN_OPEN`, `IN_ACCESS` or `IN_MODIFY`, so
//! the mount's own opens and writes cost no event, and events are taken in batches (one read
//! every [`BATCH`] at most) so a storm of writes costs a few wake-ups a second, not one per
//! event. `--watch poll` (`poll.rs`), for network filesystems where inotify sees nothing
//! (other machines' changes), reads the other mounts' change journal and the directories'
//! times every interval, and walks every entry only every `full_scan_interval`.

mod poll;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use tracing::{debug, warn};

use crate::config::WatchMode;
use crate::journal::Record;
use crate::store;

/// What the watch saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// The entry at this path (relative to the backing root) was created, replaced, removed or
    /// had its attributes changed, by anyone, the mount included.
    Entry(&'a Path),
    /// Events were lost: anything may have changed.
    Everything,
    /// Another mount's record in the change journal (`--watch poll` only), handed on before
    /// its entry is reported: what that mount published, removed or judged, and of which
    /// content version (see `crate::journal`).
    Record(&'a Record),
    /// `--watch poll` listed the directory of this entry and the name was not there any more,
    /// or held another inode than `ino`, the one it had: handed on before the entry is
    /// reported. A distributed filesystem's client may go on answering for the name by itself.
    Gone { rel: &'a Path, ino: u64 },
    /// `--watch poll` listed the directory of this entry and the name was there, holding
    /// `ino`, where it was not (or held another inode) at the last listing.
    Listed { rel: &'a Path, ino: u64 },
    /// `--watch poll` listed the directory `dir` (relative to the backing root) because it
    /// changed: every name in it now, with its `d_ino`. A name this mount serves that is not
    /// there is gone, even if the poller never saw it (created and renamed away between two
    /// listings) and the filesystem's client still answers for it.
    Listing {
        dir: &'a Path,
        names: &'a HashMap<std::ffi::OsString, (u64, Option<store::Kind>)>,
    },
}

/// How `--watch poll` works besides its interval.
#[derive(Debug, Clone, Default)]
pub struct PollOptions {
    /// Walk every entry this often, the one way an in-place rewrite by a program outside every
    /// mount shows in listings; zero never (except when the journal cannot vouch for what
    /// changed).
    pub full_scan_interval: Duration,
    /// This mount's writer id in the change journal: the other writers' records are read.
    /// `None` reads no journal, and every interval is then a full walk.
    pub journal_writer: Option<String>,
}

/// Called with every change, on the watch's own thread.
pub type OnChange = Box<dyn Fn(Change<'_>) + Send + Sync>;

/// At most one read of inotify events this often.
const BATCH: Duration = Duration::from_millis(20);

/// What is watched: changes of names and content, never opens, reads or partial writes.
fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW
}

/// Keeps the watcher alive; dropping it stops a poll watcher (the inotify thread ends with
/// the process).
pub struct BackingWatch {
    stop_polling: Option<Arc<AtomicBool>>,
}

impl Drop for BackingWatch {
    fn drop(&mut self) {
        if let Some(stop) = &self.stop_polling {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for BackingWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackingWatch")
    }
}

/// Watch `root` recursively and report every change to `on_change`.
pub fn start(
    on_change: OnChange,
    root: &Path,
    mode: WatchMode,
    poll: PollOptions,
) -> std::io::Result<BackingWatch> {
    match mode {
        WatchMode::Inotify => {
            let mut tree = Tree::new(root.to_path_buf())?;
            std::thread::Builder::new()
                .name("watch-inotify".into())
                .spawn(move || tree.run(&on_change))?;
            Ok(BackingWatch { stop_polling: None })
        }
        WatchMode::Poll(interval) => {
            let stop = poll::spawn(on_change, root, interval, poll)?;
            Ok(BackingWatch {
                stop_polling: Some(stop),
            })
        }
    }
}

/// A change at `rel`, reported if it is an entry's.
fn entry_changed(on_change: &OnChange, rel: &Path) {
    let name = rel.file_name().unwrap_or_default();
    // Directories, scratch files and staging files are never pinned, and the kernel keeps
    // nothing of them past a second: nothing to hurry along. `.cachetta/` is not shown.
    if !store::is_entry_name(name) || store::is_staging_name(name) || store::is_reserved(rel) {
        return;
    }
    on_change(Change::Entry(rel));
}

/// The inotify watches of a directory tree: one per directory, by path relative to the root.
struct Tree {
    inotify: Inotify,
    root: PathBuf,
    dirs: HashMap<WatchDescriptor, PathBuf>,
}

impl Tree {
    fn new(root: PathBuf) -> std::io::Result<Tree> {
        let mut tree = Tree {
            inotify: Inotify::init()?,
            root,
            dirs: HashMap::new(),
        };
        tree.add(Path::new(""))?;
        Ok(tree)
    }

    /// Watch the directory `rel` and every directory below it.
    fn add(&mut self, rel: &Path) -> std::io::Result<()> {
        let path = self.root.join(rel);
        let wd = self.inotify.watches().add(&path, mask())?;
        self.dirs.insert(wd, rel.to_path_buf());
        for item in std::fs::read_dir(&path)?.flatten() {
            // `file_type` does not follow symlinks: a symlinked directory is never watched.
            if item.file_type().is_ok_and(|t| t.is_dir()) {
                let child = rel.join(item.file_name());
                if let Err(e) = self.add(&child) {
                    debug!(dir = %child.display(), "not watched: {e}");
                }
            }
        }
        Ok(())
    }

    /// Watch everything again (a directory moved, so the paths of the watches are wrong).
    fn rebuild(&mut self) {
        for wd in std::mem::take(&mut self.dirs).into_keys() {
            let _ = self.inotify.watches().remove(wd);
        }
        if let Err(e) = self.add(Path::new("")) {
            warn!("watching the backing dir again: {e}");
        }
    }

    fn run(&mut self, on_change: &OnChange) {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let mut changed = HashSet::new();
            let mut new_dirs = Vec::new();
            let (mut rebuild, mut overflow) = (false, false);
            let events = match self.inotify.read_events_blocking(&mut buffer) {
                Ok(events) => events,
                Err(e) => {
                    warn!("watching the backing dir stopped: {e}");
                    return;
                }
            };
            for event in events {
                if event.mask.contains(EventMask::Q_OVERFLOW) {
                    overflow = true;
                    continue;
                }
                if event.mask.contains(EventMask::IGNORED) {
                    self.dirs.remove(&event.wd);
                    continue;
                }
                let (Some(dir), Some(name)) = (self.dirs.get(&event.wd), event.name) else {
                    continue;
                };
                let rel = dir.join(name);
                if event.mask.contains(EventMask::ISDIR) {
                    if event.mask.contains(EventMask::CREATE) {
                        new_dirs.push(rel);
                    } else if event
                        .mask
                        .intersects(EventMask::MOVED_FROM | EventMask::MOVED_TO)
                    {
                        rebuild = true;
                    }
                } else {
                    changed.insert(rel);
                }
            }
            if overflow {
                warn!("the backing dir's watch lost events; treating everything as changed");
                on_change(Change::Everything);
            }
            if rebuild {
                self.rebuild();
            } else {
                for dir in new_dirs {
                    if let Err(e) = self.add(&dir) {
                        debug!(dir = %dir.display(), "not watched: {e}");
                    }
                }
            }
            for rel in changed {
                entry_changed(on_change, &rel);
            }
            // Let a burst of events gather: a storm costs a few reads a second.
            std::thread::sleep(BATCH);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// The watch of `root`, and what it reported, as owned paths (`None` for everything).
    fn watched(root: &Path) -> (BackingWatch, mpsc::Receiver<Option<PathBuf>>) {
        let (sender, reports) = mpsc::channel();
        let on_change: OnChange = Box::new(move |change| {
            let _ = sender.send(match change {
                Change::Entry(rel) => Some(rel.to_path_buf()),
                Change::Everything
                | Change::Record(_)
                | Change::Gone { .. }
                | Change::Listed { .. }
                | Change::Listing { .. } => None,
            });
        });
        let watch = start(on_change, root, WatchMode::Inotify, PollOptions::default()).unwrap();
        (watch, reports)
    }

    #[test]
    fn entries_changed_in_any_directory_are_reported_and_other_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("weather")).unwrap();
        let (_watch, reports) = watched(dir.path());
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        std::fs::write(dir.path().join("weather/paris.json"), b"{}").unwrap();
        let first = reports.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(first, Some(PathBuf::from("weather/paris.json")));
    }
}
