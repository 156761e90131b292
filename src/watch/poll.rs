//! `--watch poll[=INTERVAL]`, at the cost of what changed (SPEC §13). Every interval:
//!
//! - one `stat` per directory of the backing tree (`dirs.rs`);
//! - the change journal (`crate::journal`) since the last interval: the other mounts' records
//!   are handed on ([`Change::Record`]) and their entries reported;
//! - each directory whose inode, mtime or ctime moved: if the journal's records (this mount's
//!   own included) explain the move exactly, each record carrying the directory's times just
//!   before and after its change, their changes are applied to what the poller knows of the
//!   directory and it is not listed. Otherwise (after [`JOURNAL_GRACE`] more for the journal:
//!   a mount appends its record a moment after its change) it is listed again (names and
//!   `d_ino`, no `stat` per file) and compared with its last listing, so what other programs create, rename or
//!   remove is reported; new directories are taken in, removed ones dropped. A directory listed
//!   after a change is listed once more at the next interval (a second change within the same
//!   tick of its clock leaves its times as they were), and one whose changes the journal
//!   explained is listed anyway once [`VERIFY_ROUNDS`] intervals have passed (more for
//!   large directories);
//! - every `full_scan_interval` (and once whenever the journal cannot vouch for what happened:
//!   unreadable, replaced, truncated, or a writer's gap), the full walk: every entry's content
//!   version (device, inode, size, mtime and ctime to the nanosecond) compared with the last
//!   walk's. Only that sees an in-place rewrite by a program outside every mount.
//!
//! So a quiet interval costs one `stat` per directory and one of the journal, and a publish by
//! a mount costs no listing, whatever the number of entries. Without a journal
//! (`PollOptions::journal_writer` is `None`, or the journal cannot be read), every interval is
//! a full walk, as before the journal.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::{entry_changed, Change, OnChange, PollOptions};
use crate::config::WatchMode;
use crate::journal::{JournalReader, Op, Poll, Record};
use crate::store::{self, DirStamp, Kind, Store, Version};

mod dirs;

/// A directory whose changes the journal explained is listed anyway after this many
/// intervals, or one interval per [`VERIFY_NAMES`] names it holds if that is longer: a change
/// by another program just before a mount's change in the same directory can hide behind it
/// when the mount's view of the directory was cached (a network filesystem's client keeps
/// attributes for a moment). So a directory that keeps changing costs a listing of at most
/// about [`VERIFY_NAMES`] names per interval, whatever its size.
pub(super) const VERIFY_ROUNDS: u32 = 10;

/// See [`VERIFY_ROUNDS`].
pub(super) const VERIFY_NAMES: usize = 1_000;

/// How long a round waits for the journal before it lists a directory whose move no record
/// explains yet: a mount appends its record a moment after its change (on a network
/// filesystem, a lock and a write to the server).
pub(super) const JOURNAL_GRACE: Duration = Duration::from_millis(50);

/// Start polling `root` every `interval` on a thread of its own; setting the returned flag
/// stops it. The first full walk is made before this returns.
pub(super) fn spawn(
    on_change: OnChange,
    root: &Path,
    interval: Duration,
    options: PollOptions,
) -> io::Result<Arc<AtomicBool>> {
    let mut poller = Poller::new(on_change, Store::open(root, false)?, options);
    poller.interval = interval;
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

/// What a directory held at its last listing, and the changes since that the journal told.
#[derive(Debug)]
struct DirState {
    /// Its inode, mtime and ctime as last seen.
    times: DirStamp,
    /// Name → (`d_ino`, kind from `d_type`).
    names: HashMap<OsString, (u64, Option<Kind>)>,
    /// List it again at the next round even if its times did not change.
    recheck: bool,
    /// Since when its names are known from the journal rather than from a listing.
    unverified_since: Option<Instant>,
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
    /// Records of changes in each directory (own ones too) not yet matched with a move of its
    /// times, and how many rounds ago they were read.
    pending: HashMap<PathBuf, Vec<(Record, u32)>>,
    /// The interval, which sets how soon a directory whose names come from the journal is
    /// listed anyway.
    interval: Duration,
    /// Directories listed, for tests.
    listings: usize,
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
            pending: HashMap::new(),
            interval: WatchMode::DEFAULT_POLL_INTERVAL,
            listings: 0,
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
        let every = self.options.full_scan_interval;
        let mut full_walk = !every.is_zero() && self.last_full_walk.elapsed() >= every;
        // Directories first, then the journal: the records of the changes seen in them are
        // appended by then (each right after its change).
        let moved = if full_walk {
            Vec::new()
        } else {
            match self.stat_dirs() {
                Some(moved) => moved,
                None => return,
            }
        };
        self.age_pending();
        full_walk |= !self.read_journal();
        if !full_walk {
            let mut unexplained = self.explain_moved(moved);
            // A move seen a moment before its record was appended: give the journal that
            // moment before listing a directory for it.
            if unexplained.iter().any(|(_, _, must_list)| !must_list) {
                std::thread::sleep(JOURNAL_GRACE);
                if !self.read_journal() {
                    return self.walk_fully();
                }
                unexplained = self.explain_moved(unexplained);
            }
            return self.list_moved(unexplained);
        }
        self.walk_fully();
    }

    fn walk_fully(&mut self) {
        self.pending.clear();
        self.full_walk();
    }

    /// Take in what was appended to the journal; false when it cannot vouch for what
    /// changed (a full walk is due).
    fn read_journal(&mut self) -> bool {
        match self.journal.as_mut().map(|j| j.poll(&self.store)) {
            Some(Poll::New(records)) => {
                self.records(records);
                true
            }
            Some(Poll::Reset(records)) => {
                // The walk reports what changed; the records' entries may be the whole tree.
                debug!("the journal cannot vouch for what changed: one full walk");
                for record in records.iter().filter(|r| !self.is_own(r)) {
                    (self.on_change)(Change::Record(record));
                }
                false
            }
            Some(Poll::Unavailable) | None => false,
        }
    }

    /// Records kept for a directory whose times never moved to meet them are forgotten after
    /// a while.
    fn age_pending(&mut self) {
        for pending in self.pending.values_mut() {
            pending.iter_mut().for_each(|(_, age)| *age += 1);
            pending.retain(|(_, age)| *age <= VERIFY_ROUNDS);
        }
        self.pending.retain(|_, pending| !pending.is_empty());
    }

    fn is_own(&self, record: &Record) -> bool {
        self.options.journal_writer.as_deref() == Some(record.writer.as_str())
    }

    /// Hand on the other mounts' records and report their entries; keep every record of a
    /// change in a directory (own ones too) until the directory's times are seen to move.
    fn records(&mut self, records: Vec<Record>) {
        for record in records {
            if !self.is_own(&record) && record.op != Op::Dir {
                (self.on_change)(Change::Record(&record));
                if record.changes_entry() {
                    self.report(&record.key);
                }
            }
            let dir = match record.op {
                Op::Put | Op::Del => store::split(&record.key).0.to_path_buf(),
                Op::Dir => record.key.clone(),
                _ => continue,
            };
            if record.dir.is_some() {
                self.pending.entry(dir).or_default().push((record, 0));
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
        if crate::error::is_outage_error(e) {
            // One line per outage for the whole daemon; the requests that fail say it too.
            if crate::error::outage_is_new() {
                warn!("the backing dir is unreachable ({e}); changes will be looked for again once it is back");
            }
        } else if !self.failing {
            warn!("polling the backing dir: {e}; treating everything as changed");
        }
        if !self.failing {
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
        self.listings += dirs.len();
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
            times: DirStamp::of(&st),
            names,
            recheck: false,
            unverified_since: None,
        })
    }

    /// What `key` is: as its directory listing said, or by `stat` where it did not.
    fn kind_of(&self, key: &Path, listed: Option<Kind>) -> Option<Kind> {
        listed.or_else(|| self.store.stat(key).ok().map(|st| st.kind))
    }
}

#[cfg(test)]
mod tests;
