//! How the mount shows a backing file: visible or hidden (expired, corrupt, staging, or past
//! its stale window with no failing refresh to keep it), JSON validity and per-entry policy per
//! content version, and how long the kernel may cache what it is told.

use super::*;
use crate::entry_policy::EntryPolicy;

/// What is known of one content version. Setting a policy attribute changes the file's ctime,
/// so a changed policy is a new version.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Known {
    /// One complete JSON value within `max_entry_bytes`.
    valid: Option<bool>,
    /// The entry's own policy attributes.
    policy: Option<EntryPolicy>,
}

/// Whether an entry past its stale window, inside its stale-if-error window, is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Grace {
    /// Only while its refresh fails: a refresh since the entry was written failed or was
    /// declined (lookups, listings, attributes).
    IfFailing,
    /// Always: an open of a name a lookup showed, or the answer of a lookup whose refresh did
    /// not succeed.
    Serve,
}

impl CacheFs {
    /// The entry's own policy attributes, read from `file` (opened by the caller) once per
    /// version. `None` when not known and there is no file to read them from.
    pub(super) fn policy_of(&self, st: &Stat, file: Option<&File>) -> Option<EntryPolicy> {
        let version = st.version();
        let known = self.known.lock().get(&version).and_then(|k| k.policy);
        if let Some(policy) = known {
            return Some(policy);
        }
        let policy = EntryPolicy::of_file(file?);
        self.remember(version, |known| known.policy = Some(policy));
        Some(policy)
    }

    /// Whether the content version (read through `file`, opened by the caller) is one complete
    /// JSON value; parsed once per version.
    fn is_valid(&self, key: &Path, st: &Stat, file: Option<&File>) -> bool {
        let version = st.version();
        let known = self.known.lock().get(&version).and_then(|k| k.valid);
        if let Some(valid) = known {
            return valid;
        }
        // Not opened (gone, or unreadable): hidden now, judged again next time.
        let Some(file) = file else { return false };
        let valid = match store::file_is_valid_json_now(file, self.config.max_entry_bytes, st.size)
        {
            Ok(valid) => valid,
            Err(e) if e.raw_os_error() == Some(libc::EFBIG) => false,
            Err(_) => return false,
        };
        if !valid {
            warn!(key = %key.display(), "corrupt entry hidden: not valid JSON (or over max_entry_bytes)");
        }
        self.remember(version, |known| known.valid = Some(valid));
        // Read once for every mount of the backing dir, and for this one after a restart.
        let policy = self.known.lock().get(&version).and_then(|k| k.policy);
        self.store.tell_judged(
            key,
            st,
            store::Judged {
                valid,
                policy: policy.map(|p| p.overrides()),
            },
        );
        valid
    }

    /// What a mount (this one before a restart, or another) established of a content version
    /// and announced in the change journal: JSON validity and policy attributes, so this
    /// mount need not read that version again (SPEC §13). Tied to the exact version: an
    /// outside rewrite changes it, and is judged again.
    pub fn learn(&self, version: Version, valid: Option<bool>, policy: Option<EntryPolicy>) {
        if valid.is_none() && policy.is_none() {
            return;
        }
        self.remember(version, |known| {
            if valid.is_some() {
                known.valid = valid;
            }
            if policy.is_some() {
                known.policy = policy;
            }
        });
    }

    /// The device the backing dir's files are on, for versions learnt without one.
    pub fn backing_dev(&self) -> Option<u64> {
        self.store.stat(Path::new("")).ok().map(|st| st.dev)
    }

    /// Remember a version this mount published (a write, a rename onto an entry, a refresh):
    /// valid JSON with these policy attributes, so the next lookup need not open it again, and
    /// its own change, so the watcher's report of it is not news ([`CacheFs::is_own_change`]).
    pub(super) fn remember_own_publish(&self, version: Version, policy: EntryPolicy) {
        self.remember(version, |known| {
            known.valid = Some(true);
            known.policy = Some(policy);
        });
        self.remember_published(version);
    }

    /// Add to what is known of a version, under the cache's lock (requests judge the same
    /// version at once: no update may undo another). Bounded: the memory of a long-running
    /// daemon must not grow with every entry ever written. When full, what is known of large
    /// entries stays (judging one again reads it whole: a 256 MiB entry took a second, at the
    /// lookup of a reader who had only asked to open it) unless they fill half of it.
    fn remember(&self, version: Version, update: impl FnOnce(&mut Known)) {
        let mut cache = self.known.lock();
        if cache.len() >= VALIDITY_CACHE_MAX && !cache.contains_key(&version) {
            cache.retain(|version, _| version.size >= VALIDITY_KEPT_BYTES);
            if cache.len() >= VALIDITY_CACHE_MAX / 2 {
                cache.clear();
            }
        }
        update(cache.entry(version).or_default());
    }

    /// Whether what is known of `st`'s version is complete (no need to open the file).
    pub(super) fn is_known(&self, st: &Stat) -> bool {
        self.known
            .lock()
            .get(&st.version())
            .is_some_and(|k| k.valid.is_some() && k.policy.is_some())
    }

    /// The timing of the entry `key` whose content has `policy`: its rule's, overridden.
    pub(super) fn timing_of(&self, key: &Path, policy: &EntryPolicy) -> policy::Timing {
        policy.timing_under(self.config.settings_for(key.as_os_str()).settings)
    }

    /// How the mount shows the backing file `key` with metadata `st`.
    pub(super) fn judge(&self, key: &Path, st: &Stat, file: Option<&File>) -> Seen {
        self.judge_as(key, st, file, Grace::IfFailing)
    }

    pub(super) fn judge_as(
        &self,
        key: &Path,
        st: &Stat,
        file: Option<&File>,
        grace: Grace,
    ) -> Seen {
        let name = key.file_name().unwrap_or_default();
        if store::is_reserved(key) {
            return Seen::Hidden;
        }
        match st.kind {
            Kind::Dir => Seen::Dir,
            Kind::Other => Seen::Hidden,
            Kind::File if store::is_staging_name(name) => Seen::Hidden,
            Kind::File if !store::is_entry_name(name) => Seen::Scratch,
            Kind::File => {
                let Some(policy) = self.policy_of(st, file) else {
                    return Seen::Hidden;
                };
                let timing = self.timing_of(key, &policy);
                let verdict = policy::evaluate(st.mtime, self.clock.now(), timing);
                let shown = match verdict.state {
                    EntryState::Fresh | EntryState::Stale => true,
                    EntryState::Grace => grace == Grace::Serve || self.refresh_is_failing(key, st),
                    EntryState::Expired => false,
                };
                // Expired content is never parsed.
                if !shown || !self.is_valid(key, st, file) {
                    return Seen::Hidden;
                }
                Seen::Entry(verdict)
            }
        }
    }

    /// Whether a refresh of `key` failed or was declined since the content `st` was written:
    /// then stale-if-error keeps showing it.
    fn refresh_is_failing(&self, key: &Path, st: &Stat) -> bool {
        self.refresher
            .last_refresh(key)
            .is_some_and(|last| !last.ok && last.at >= st.mtime)
    }

    /// How long the kernel may cache what it is told of a thing seen as `seen`.
    pub(super) fn ttl(&self, seen: Seen) -> Duration {
        match seen {
            Seen::Entry(v) => v.until_change.map_or(Duration::ZERO, |d| d.min(KERNEL_TTL)),
            _ => KERNEL_TTL,
        }
    }

    /// The timeout of a reply that binds `name` in `parent` to `ino` (zero while the name is
    /// being written; see `coherence`).
    pub(super) fn grant(
        &self,
        parent: u64,
        name: &OsStr,
        ino: u64,
        ttl: Duration,
    ) -> coherence::Grant {
        self.coherence
            .grant(parent, name, ino, ttl, self.clock.now())
    }

    /// The attribute timeout of `ino` (zero while its name is being written).
    pub(super) fn attr_ttl(&self, ino: u64, ttl: Duration) -> Duration {
        if ttl.is_zero() || self.coherence.is_live(ino) {
            return Duration::ZERO;
        }
        // `nodes` then `coherence`, the documented order: the name stays bound to `ino`
        // while it is asked about.
        #[allow(clippy::significant_drop_in_scrutinee)]
        match self.nodes.read().name_of(ino) {
            Some((parent, name)) if self.coherence.is_writing(parent, &name, self.clock.now()) => {
                Duration::ZERO
            }
            _ => ttl,
        }
    }

    /// Stat and judge a path; hidden things are `ENOENT`. An entry whose validity is not yet
    /// known is opened and judged as opened, so a replace racing with us can never make a
    /// valid entry look corrupt.
    pub(super) fn visible(&self, key: &Path) -> FsResult<(Stat, Seen)> {
        self.visible_as(key, Grace::IfFailing)
    }

    pub(super) fn visible_as(&self, key: &Path, grace: Grace) -> FsResult<(Stat, Seen)> {
        let st = self
            .store
            .stat(key)
            .map_err(|e| FsError::io(key.display(), e))?;
        if self.is_gone(key, &st) {
            return Err(errno(libc::ENOENT));
        }
        self.judge_stat_as(key, st, grace)
    }

    /// Judge what `st` says is at `key`, opening an entry whose validity or policy is not
    /// known yet.
    pub(super) fn judge_stat(&self, key: &Path, st: Stat) -> FsResult<(Stat, Seen)> {
        self.judge_stat_as(key, st, Grace::IfFailing)
    }

    fn judge_stat_as(&self, key: &Path, mut st: Stat, grace: Grace) -> FsResult<(Stat, Seen)> {
        let mut opened = None;
        let name = key.file_name().unwrap_or_default();
        if st.kind == Kind::File && store::is_entry_name(name) && !self.is_known(&st) {
            if let Ok((file, fst)) = self.store.open_file(key, OFlags::RDONLY, Mode::empty()) {
                st = fst;
                opened = Some(file);
            }
        }
        let mut seen = self.judge_as(key, &st, opened.as_ref(), grace);
        if matches!(seen, Seen::Hidden) && opened.is_none() && !self.is_known(&st) {
            // What was known a moment ago is gone (the cache was cleared): open and judge.
            if let Ok((file, fst)) = self.store.open_file(key, OFlags::RDONLY, Mode::empty()) {
                st = fst;
                seen = self.judge_as(key, &st, Some(&file), grace);
            }
        }
        match seen {
            Seen::Hidden => Err(errno(libc::ENOENT)),
            seen => Ok((st, seen)),
        }
    }
}
