//! `--watch poll[=INTERVAL]`, at the cost of what changed (SPEC §13). Every interval:
//!
//! - the other mounts' records in the change journal (`crate::journal`) since the last
//!   interval: each is handed on ([`Change::Record`]) and its entry reported;
//! - one `stat` per directory of the backing tree: a directory whose inode, mtime or ctime
//!   changed is listed again (names and `d_ino`, no `stat` per file) and compared with its last
//!   listing, so what other programs create, rename or remove is reported; new directories
//!   are taken in, removed ones dropped. A directory that changed is listed once more at the
//!   next interval, since a change within the same tick of the directory's clock leaves its
//!   times as they were;
//! - every `full_scan_interval` (and once whenever the journal cannot vouch for what happened:
//!   unreadable, replaced, truncated, or a writer's gap), the full walk: every entry's content
//!   version (device, inode, size, mtime and ctime to the nanosecond) compared with the last
//!   walk's. Only that sees an in-place rewrite by a program outside every mount.
//!
//! So a quiet interval costs one `stat` per directory and one of the journal, whatever the
//! number of entries. Without a journal (`PollOptions::journal_writer` is `None`, or the
//! journal cannot be read), every interval is a full walk, as before the journal.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, warn};

use super::{entry_changed, Change, OnChange, PollOptions};
use crate::journal::{JournalReader, Poll};
use crate::store::{self, Kind, Stat, Store, Version};

/// Start polling `root` every `interval` on a thread of its own; setting the returned flag
/// stops it. The first full walk is made before this returns.
pub(super) fn spawn(
    on_change: OnChange,
    root: &Path,
    interval: Duration,
    options: PollOptions,
) -> io::Result<Arc<AtomicBool>> {
    let mut poller = Poller::new(on_change, Store::open(root, false)?, options);
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::Builder::new()
        .name("watch-poll".into())
        .spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(interval);
                poller.round();
            }
        })?;
    Ok(stop)
}

/// What a directory held at its last listing.
#[derive(Debug)]
struct DirState {
    /// Its inode, mtime and ctime when it was listed.
    times: (u64, SystemTime, SystemTime),
    /// Name → (`d_ino`, kind from `d_type`).
    names: HashMap<OsString, (u64, Option<Kind>)>,
    /// List it again at the next round even if its times did not change.
    recheck: bool,
}

fn times(st: &Stat) -> (u64, SystemTime, SystemTime) {
    (st.ino, st.mtime, st.ctime)
}

/// The poller's memory of the backing tree, and what it reports to.
pub(super) struct Poller {
    store: Store,
    on_change: OnChange,
    options: PollOptions,
    journal: Option<JournalReader>,
    /// Every directory below the root (the root is `""`), by path.
    dirs: HashMap<PathBuf, DirState>,
    /// Every entry's content version at the last full walk.
    versions: HashMap<PathBuf, Version>,
    last_full_walk: Instant,
    /// The root could not be read at the last round (said once until it can).
    failing: bool,
    /// Entries reported this round, so that one found twice (in the journal and in its
    /// directory) is reported once.
    reported: HashSet<PathBuf>,
}

impl Poller {
    /// A poller that has just walked the whole tree.
    pub(super) fn new(on_change: OnChange, store: Store, options: PollOptions) -> Poller {
        // The journal's end first: what is appended during the walk is read after it.
        let journal = options
            .journal_writer
            .as_deref()
            .map(|own| JournalReader::at_end(&store, own));
        let mut poller = Poller {
            store,
            on_change,
            options,
            journal,
            dirs: HashMap::new(),
            versions: HashMap::new(),
            last_full_walk: Instant::now(),
            failing: false,
            reported: HashSet::new(),
        };
        if let Ok((mut dirs, versions)) = poller.walk() {
            // A change within the tick of a directory's listing leaves its times as they were.
            dirs.values_mut().for_each(|state| state.recheck = true);
            (poller.dirs, poller.versions) = (dirs, versions);
        }
        poller
    }

    /// One interval's work.
    pub(super) fn round(&mut self) {
        self.reported.clear();
        let mut full_walk = match self.journal.as_mut().map(|j| j.poll(&self.store)) {
            Some(Poll::New(records)) => {
                self.records(&records, true);
                false
            }
            Some(Poll::Reset(records)) => {
                // The walk reports what changed; the records' entries may be the whole tree.
                debug!("the journal cannot vouch for what changed: one full walk");
                self.records(&records, false);
                true
            }
            Some(Poll::Unavailable) | None => true,
        };
        let every = self.options.full_scan_interval;
        full_walk |= !every.is_zero() && self.last_full_walk.elapsed() >= every;
        if full_walk {
            self.full_walk();
        } else {
            self.scan_dirs();
        }
    }

    /// Hand on the other mounts' records, and report the entries they changed if `report`.
    fn records(&mut self, records: &[crate::journal::Record], report: bool) {
        for record in records {
            (self.on_change)(Change::Record(record));
            if report && record.changes_entry() {
                self.report(&record.key);
            }
        }
    }

    fn report(&mut self, key: &Path) {
        if self.reported.insert(key.to_path_buf()) {
            entry_changed(&self.on_change, key);
        }
    }

    /// The backing root cannot be read: anything may have changed (said once until it can).
    fn root_failed(&mut self, e: &io::Error) {
        if !self.failing {
            warn!("polling the backing dir: {e}; treating everything as changed");
            (self.on_change)(Change::Everything);
        }
        self.failing = true;
    }

    /// Every directory and every entry's version, compared with the last full walk.
    fn full_walk(&mut self) {
        self.last_full_walk = Instant::now();
        let (dirs, versions) = match self.walk() {
            Ok(found) => found,
            Err(e) => return self.root_failed(&e),
        };
        self.failing = false;
        let changed: Vec<PathBuf> = versions
            .iter()
            .filter(|(key, version)| self.versions.get(*key) != Some(version))
            .map(|(key, _)| key.clone())
            .chain(
                self.versions
                    .keys()
                    .filter(|key| !versions.contains_key(*key))
                    .cloned(),
            )
            .collect();
        for key in changed {
            self.report(&key);
        }
        // Directories whose times moved may have changed again within the same tick.
        let mut dirs = dirs;
        for (path, state) in &mut dirs {
            state.recheck = self
                .dirs
                .get(path)
                .is_none_or(|old| old.times != state.times);
        }
        (self.dirs, self.versions) = (dirs, versions);
    }

    /// List every directory and `stat` every entry. Fails only when the root cannot be read.
    #[allow(clippy::type_complexity)]
    fn walk(&self) -> io::Result<(HashMap<PathBuf, DirState>, HashMap<PathBuf, Version>)> {
        let mut dirs = HashMap::new();
        let mut versions = HashMap::new();
        let mut pending = vec![PathBuf::new()];
        while let Some(dir) = pending.pop() {
            let state = match self.list(&dir) {
                Ok(state) => state,
                Err(e) if dir.as_os_str().is_empty() => return Err(e),
                Err(e) => {
                    debug!(dir = %dir.display(), "not polled: {e}");
                    continue;
                }
            };
            // One `fstatat` per entry, beside the directory's descriptor.
            let fd = self.store.dir(&dir);
            for (name, (_, kind)) in &state.names {
                let key = dir.join(name);
                match self.kind_of(&key, *kind) {
                    Some(Kind::Dir) => pending.push(key),
                    Some(Kind::File) if store::is_entry_name(name) => {
                        let stat = match &fd {
                            Ok(fd) => Store::stat_in(fd, name),
                            Err(_) => self.store.stat(&key),
                        };
                        match stat {
                            Ok(st) if st.kind == Kind::File => {
                                versions.insert(key, st.version());
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
            dirs.insert(dir, state);
        }
        Ok((dirs, versions))
    }

    /// A directory's times and names; cachetta's own `.cachetta/` and anything that is
    /// neither a file nor a directory left out.
    fn list(&self, dir: &Path) -> io::Result<DirState> {
        let st = self.store.stat(dir)?;
        if st.kind != Kind::Dir {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        let names = self
            .store
            .read_dir(dir)?
            .into_iter()
            .filter(|item| item.kind != Some(Kind::Other))
            .filter(|item| !store::is_reserved(&dir.join(&item.name)))
            .map(|item| (item.name, (item.ino, item.kind)))
            .collect();
        Ok(DirState {
            times: times(&st),
            names,
            recheck: false,
        })
    }

    /// What `key` is: as its directory listing said, or by `stat` where it did not.
    fn kind_of(&self, key: &Path, listed: Option<Kind>) -> Option<Kind> {
        listed.or_else(|| self.store.stat(key).ok().map(|st| st.kind))
    }

    /// One `stat` per directory; the ones that changed are listed again and compared.
    fn scan_dirs(&mut self) {
        let mut known: Vec<PathBuf> = self.dirs.keys().cloned().collect();
        // Parents first: a removed directory takes its subdirectories with it.
        known.sort_by_key(|dir| dir.components().count());
        for dir in known {
            let Some(state) = self.dirs.get(&dir) else {
                continue;
            };
            let st = match self.store.stat(&dir) {
                Ok(st) if st.kind == Kind::Dir => st,
                Ok(_) => {
                    self.forget_dir(&dir);
                    continue;
                }
                Err(e) if dir.as_os_str().is_empty() => return self.root_failed(&e),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    self.forget_dir(&dir);
                    continue;
                }
                Err(e) => {
                    debug!(dir = %dir.display(), "not polled this round: {e}");
                    continue;
                }
            };
            if dir.as_os_str().is_empty() {
                self.failing = false;
            }
            if times(&st) == state.times && !state.recheck {
                continue;
            }
            match self.list(&dir) {
                Ok(now) => self.compare(&dir, now),
                Err(e) if dir.as_os_str().is_empty() => return self.root_failed(&e),
                Err(_) => self.forget_dir(&dir),
            }
        }
    }

    /// Report what differs between a directory's last listing and `now`, and keep `now`.
    fn compare(&mut self, dir: &Path, mut now: DirState) {
        let Some(before) = self.dirs.remove(dir) else {
            return;
        };
        now.recheck = now.times != before.times;
        let mut appeared = Vec::new();
        let mut went = Vec::new();
        for (name, (ino, kind)) in &now.names {
            match before.names.get(name) {
                Some((old_ino, _)) if old_ino == ino => {}
                Some(old) => {
                    went.push((name.clone(), old.1));
                    appeared.push((name.clone(), *kind));
                }
                None => appeared.push((name.clone(), *kind)),
            }
        }
        for (name, (_, kind)) in &before.names {
            if !now.names.contains_key(name) {
                went.push((name.clone(), *kind));
            }
        }
        self.dirs.insert(dir.to_path_buf(), now);
        for (name, kind) in went {
            let key = dir.join(&name);
            if kind == Some(Kind::Dir) || self.dirs.contains_key(&key) {
                self.forget_dir(&key);
            } else {
                self.report(&key);
            }
        }
        for (name, kind) in appeared {
            let key = dir.join(&name);
            match self.kind_of(&key, kind) {
                Some(Kind::Dir) => self.take_in_dir(&key),
                _ => self.report(&key),
            }
        }
    }

    /// A directory that appeared: list it and everything below it, reporting every entry.
    fn take_in_dir(&mut self, dir: &Path) {
        let mut pending = vec![dir.to_path_buf()];
        while let Some(dir) = pending.pop() {
            let Ok(mut state) = self.list(&dir) else {
                continue;
            };
            state.recheck = true;
            for (name, (_, kind)) in &state.names {
                let key = dir.join(name);
                match self.kind_of(&key, *kind) {
                    Some(Kind::Dir) => pending.push(key),
                    _ => {
                        if self.reported.insert(key.clone()) {
                            entry_changed(&self.on_change, &key);
                        }
                    }
                }
            }
            self.dirs.insert(dir, state);
        }
    }

    /// A directory that went (or is no longer one): report every entry it held, below it too.
    fn forget_dir(&mut self, dir: &Path) {
        let mut pending = vec![dir.to_path_buf()];
        while let Some(dir) = pending.pop() {
            let Some(state) = self.dirs.remove(&dir) else {
                continue;
            };
            for name in state.names.keys() {
                let key = dir.join(name);
                if self.dirs.contains_key(&key) {
                    pending.push(key);
                } else {
                    self.report(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
