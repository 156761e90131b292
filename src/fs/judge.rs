//! How the mount shows a backing file: visible or hidden (expired, corrupt, staging), JSON
//! validity per content version, and how long the kernel may cache what it is told.

use super::*;

impl CacheFs {
    /// Whether the content version (read through `file`, opened by the caller) is one complete
    /// JSON value; parsed once per version.
    pub(super) fn is_valid(&self, key: &Path, st: &Stat, file: Option<&File>) -> bool {
        let version = st.version();
        if let Some(&valid) = self.validity.lock().get(&version) {
            return valid;
        }
        // Not opened (gone, or unreadable): hidden now, judged again next time.
        let Some(file) = file else { return false };
        let valid = match store::file_is_valid_json(file, self.config.max_entry_bytes) {
            Ok(valid) => valid,
            Err(e) if e.raw_os_error() == Some(libc::EFBIG) => false,
            Err(_) => return false,
        };
        if !valid {
            warn!(key = %key.display(), "corrupt entry hidden: not valid JSON (or over max_entry_bytes)");
        }
        self.remember_validity(version, valid);
        valid
    }

    /// Remember whether a content version is valid JSON (bounded: the memory of a long-running
    /// daemon must not grow with every entry ever written).
    pub(super) fn remember_validity(&self, version: Version, valid: bool) {
        let mut cache = self.validity.lock();
        if cache.len() >= VALIDITY_CACHE_MAX {
            cache.clear();
        }
        cache.insert(version, valid);
    }

    /// How the mount shows the backing file `key` with metadata `st`.
    pub(super) fn judge(&self, key: &Path, st: &Stat, file: Option<&File>) -> Seen {
        let name = key.file_name().unwrap_or_default();
        match st.kind {
            Kind::Dir => Seen::Dir,
            Kind::Other => Seen::Hidden,
            Kind::File if store::is_staging_name(name) => Seen::Hidden,
            Kind::File if !store::is_entry_name(name) => Seen::Scratch,
            Kind::File => {
                let settings = self.config.settings_for(key.as_os_str()).settings;
                let verdict = policy::evaluate(st.mtime, self.clock.now(), settings.timing());
                if !verdict.state.is_visible() || !self.is_valid(key, st, file) {
                    return Seen::Hidden;
                }
                Seen::Entry(verdict)
            }
        }
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
    pub(super) fn grant(&self, parent: u64, name: &OsStr, ino: u64, ttl: Duration) -> Duration {
        self.coherence
            .grant(parent, name, ino, ttl, self.clock.now())
    }

    /// The attribute timeout of `ino` (zero while its name is being written).
    pub(super) fn attr_ttl(&self, ino: u64, ttl: Duration) -> Duration {
        if ttl.is_zero() {
            return ttl;
        }
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
        let st = self
            .store
            .stat(key)
            .map_err(|e| FsError::io(key.display(), e))?;
        self.judge_stat(key, st)
    }

    /// Judge what `st` says is at `key`, opening an entry whose validity is not known yet.
    pub(super) fn judge_stat(&self, key: &Path, mut st: Stat) -> FsResult<(Stat, Seen)> {
        let mut opened = None;
        let name = key.file_name().unwrap_or_default();
        if st.kind == Kind::File
            && store::is_entry_name(name)
            && !self.validity.lock().contains_key(&st.version())
        {
            if let Ok((file, fst)) = self.store.open_file(key, OFlags::RDONLY, Mode::empty()) {
                st = fst;
                opened = Some(file);
            }
        }
        match self.judge(key, &st, opened.as_ref()) {
            Seen::Hidden => Err(errno(libc::ENOENT)),
            seen => Ok((st, seen)),
        }
    }
}
