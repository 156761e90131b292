//! The poller's directories: one `stat` each per interval; a directory whose times moved is
//! either explained by the journal's records (each carries the directory's times around its
//! change) or listed again and compared with its last listing.

use super::*;
use crate::journal::stamp_nanos;

/// A directory to look at this round: its stamp now, and whether it must be listed whatever
/// the journal says.
pub(super) type Moved = (PathBuf, DirStamp, bool);

impl Poller {
    /// One `stat` per directory: the ones whose times moved (or that are due for another
    /// listing). Directories that went are dropped here. `None` when the root cannot be read.
    pub(super) fn stat_dirs(&mut self) -> Option<Vec<Moved>> {
        let mut known: Vec<PathBuf> = self.dirs.keys().cloned().collect();
        // Parents first: a removed directory takes its subdirectories with it.
        known.sort_by_key(|dir| dir.components().count());
        let mut moved = Vec::new();
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
                Err(e) if dir.as_os_str().is_empty() => {
                    self.root_failed(&e);
                    return None;
                }
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
            let stamp = DirStamp::of(&st);
            let rounds = VERIFY_ROUNDS
                .max(u32::try_from(state.names.len() / VERIFY_NAMES).unwrap_or(u32::MAX));
            let unverified = state
                .unverified_since
                .is_some_and(|since| since.elapsed() >= self.interval.saturating_mul(rounds));
            // A second look after a listing is a listing only if the times did not move since:
            // if they did, the journal may explain that as well as any other move.
            let recheck = state.recheck && stamp == state.times;
            if stamp != state.times || recheck || unverified {
                moved.push((dir, stamp, recheck || unverified));
            }
        }
        Some(moved)
    }

    /// Take in the moved directories whose moves the journal's records explain; the others
    /// are left.
    pub(super) fn explain_moved(&mut self, moved: Vec<Moved>) -> Vec<Moved> {
        moved
            .into_iter()
            .filter(|(dir, stamp, must_list)| {
                self.dirs.contains_key(dir) && (*must_list || !self.explain(dir, *stamp))
            })
            .collect()
    }

    /// List the moved directories again and compare.
    pub(super) fn list_moved(&mut self, moved: Vec<Moved>) {
        for (dir, stamp, must_list) in moved {
            if !self.dirs.contains_key(&dir) {
                continue;
            }
            if tracing::enabled!(tracing::Level::TRACE) {
                let known = self.dirs.get(&dir).map(|d| stamp_nanos(&d.times));
                let moves: Vec<_> = self
                    .pending
                    .get(&dir)
                    .into_iter()
                    .flatten()
                    .filter_map(|(r, _)| r.dir.as_ref().map(|d| d.moves.clone()))
                    .collect();
                tracing::trace!(dir = %dir.display(), must_list, ?known, now = ?stamp_nanos(&stamp), ?moves, "listing");
            }
            self.pending.remove(&dir);
            self.listings += 1;
            match self.list(&dir) {
                Ok(now) => self.compare(&dir, now),
                Err(e) if dir.as_os_str().is_empty() => return self.root_failed(&e),
                Err(_) => self.forget_dir(&dir),
            }
        }
    }

    /// Whether the records of changes in `dir` lead from its last known stamp to `now`, one
    /// change's "before" to the next one's "after", with nothing else in between: then apply
    /// them to its names. A change whose times did not move (a clock too coarse to tell)
    /// explains nothing.
    fn explain(&mut self, dir: &Path, now: DirStamp) -> bool {
        let (Some(state), Some(pending)) = (self.dirs.get(dir), self.pending.get(dir)) else {
            return false;
        };
        if state.times.ino != now.ino {
            return false;
        }
        // Each move the records tell of, by its "before", and the records that tell it (a
        // rename within the directory is a del and a put of one move).
        let mut moves: HashMap<[i64; 2], ([i64; 2], Vec<usize>)> = HashMap::new();
        for (i, (record, _)) in pending.iter().enumerate() {
            let Some(times) = record.dir.as_ref().filter(|d| d.ino == now.ino) else {
                continue;
            };
            for [before, after] in &times.moves {
                if before == after {
                    return false;
                }
                let (to, told_by) = moves.entry(*before).or_insert((*after, Vec::new()));
                if to != after {
                    // Two changes from one state: not a history these records can tell.
                    return false;
                }
                told_by.push(i);
            }
        }
        let (mut at, target) = (stamp_nanos(&state.times), stamp_nanos(&now));
        let mut used = std::collections::BTreeSet::new();
        for _ in 0..=moves.len() {
            if at == target {
                break;
            }
            let Some((after, told_by)) = moves.get(&at) else {
                return false;
            };
            used.extend(told_by.iter().copied());
            at = *after;
        }
        if at != target {
            return false;
        }
        let Some(pending) = self.pending.remove(dir) else {
            return false;
        };
        let (explained, left): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .enumerate()
            .partition(|(i, _)| used.contains(i));
        let left: Vec<(Record, u32)> = left.into_iter().map(|(_, p)| p).collect();
        if !left.is_empty() {
            self.pending.insert(dir.to_path_buf(), left);
        }
        let explained: Vec<Record> = explained.into_iter().map(|(_, (r, _))| r).collect();
        let state = self.dirs.get_mut(dir).expect("checked above");
        for record in &explained {
            let name = store::split(&record.key).1.to_os_string();
            match (record.op, record.version) {
                (Op::Put, Some(version)) => {
                    state.names.insert(name, (version.ino, Some(Kind::File)));
                }
                (Op::Del, _) => {
                    state.names.remove(&name);
                }
                _ => {}
            }
        }
        state.times = now;
        state.recheck = false;
        state.unverified_since.get_or_insert_with(Instant::now);
        true
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
                    went.push((name.clone(), old.0, old.1));
                    appeared.push((name.clone(), *ino, *kind));
                }
                None => appeared.push((name.clone(), *ino, *kind)),
            }
        }
        for (name, (ino, kind)) in &before.names {
            if !now.names.contains_key(name) {
                went.push((name.clone(), *ino, *kind));
            }
        }
        (self.on_change)(Change::Listing {
            dir,
            names: &now.names,
        });
        self.dirs.insert(dir.to_path_buf(), now);
        for (name, ino, kind) in went {
            let key = dir.join(&name);
            if kind == Some(Kind::Dir) || self.dirs.contains_key(&key) {
                self.forget_dir(&key);
            } else {
                if store::is_entry_name(&name) {
                    (self.on_change)(Change::Gone { rel: &key, ino });
                }
                self.report(&key);
            }
        }
        for (name, ino, kind) in appeared {
            let key = dir.join(&name);
            match self.kind_of(&key, kind) {
                Some(Kind::Dir) => self.take_in_dir(&key),
                _ => {
                    if store::is_entry_name(&name) {
                        (self.on_change)(Change::Listed { rel: &key, ino });
                    }
                    self.report(&key);
                }
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
