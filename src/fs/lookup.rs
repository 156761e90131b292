//! Names and attributes: lookups (binding names to inodes), `forget`, `getattr`, and what
//! each reply describes to the kernel.

use super::judge::Grace;
use super::*;

impl CacheFs {
    /// The whole answer to a kernel lookup: the name, a read-through to wait for, or "no
    /// such name" with how long the kernel may remember that. The adapter only replies.
    pub fn lookup_answer(&self, parent: u64, name: &OsStr) -> FsResult<Lookup> {
        match self.lookup(parent, name) {
            Ok(entry) => Ok(Lookup::Found(entry)),
            Err(e) if e.errno == libc::ENOENT => Ok(match self.fill(parent, name) {
                Some(fill) => Lookup::Filling(fill),
                None => Lookup::Missing {
                    ttl: self.negative_ttl(parent, name),
                },
            }),
            Err(e) => Err(e),
        }
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<Entry> {
        let found = self.lookup_quietly(parent, name);
        if store::is_entry_name(name) && found.is_err() {
            bump(&self.stats.misses);
        }
        found
    }

    /// A lookup that counts no miss.
    pub(super) fn lookup_quietly(&self, parent: u64, name: &OsStr) -> FsResult<Entry> {
        self.lookup_as(parent, name, Grace::IfFailing)
    }

    pub(super) fn lookup_as(&self, parent: u64, name: &OsStr, grace: Grace) -> FsResult<Entry> {
        let key = self.child_path(parent, name)?;
        let (st, seen) = match self.visible_as(&key, grace) {
            Ok(found) => found,
            Err(e) if e.errno == libc::ENOENT && self.is_fill_dir(&key) => {
                let ino = self.nodes.write().bind(parent, name, Kind::Dir);
                return Ok(Entry::new(self.fill_dir_attr(ino), KERNEL_TTL));
            }
            Err(e) => return Err(e),
        };
        let version = (st.kind == Kind::File).then(|| st.version());
        let ino = self.bind_found(parent, name, st.kind, (st.dev, st.ino), version);
        Ok(self.describe(Entry::granted(
            Attr::from_stat(ino, &st),
            self.grant(parent, name, ino, self.ttl(seen)),
        )))
    }

    /// Every reply with attributes goes through here: what the kernel was told of a file.
    pub(super) fn describe(&self, entry: Entry) -> Entry {
        if entry.attr.stat.kind == Kind::File {
            self.page_cache
                .reported(entry.attr.ino, entry.attr.version());
        }
        entry
    }

    /// Bind a name found holding the backing file `st` (a lookup, a listing) to its inode, or
    /// to a fresh one when the old inode cannot serve it: pinned to other content (its readers
    /// keep that), unfit for the name's writers (see `coherence`), or already described to the
    /// kernel as another version while nobody writes the name (a fresh inode keeps the page
    /// cache usable for the new version; see `page_cache`).
    pub(super) fn bind_found(
        &self,
        parent: u64,
        name: &OsStr,
        kind: Kind,
        id: pins::FileId,
        version: Option<Version>,
    ) -> u64 {
        let bound = self.nodes.read().find(parent, name);
        let fresh = bound.is_some_and(|ino| {
            let pinned = self
                .pins
                .lock()
                .get(ino)
                .map(|pin| (pin.id, pin.passthrough));
            let now = self.clock.now();
            let writing = self.coherence.is_writing(parent, name, now);
            if self.coherence.is_live(ino) {
                // Kept while written; then a fresh inode, whose reads the kernel may cache.
                return !writing;
            }
            match pinned {
                Some((pinned_id, _)) if pinned_id != id => true,
                Some((_, true)) if writing => true,
                _ if writing => self.coherence.unfit_for_writers(parent, name, ino, now),
                _ => version.is_some_and(|v| self.page_cache.described_otherwise(ino, &v)),
            }
        });
        let mut nodes = self.nodes.write();
        if fresh && nodes.find(parent, name) == bound {
            nodes.replace(parent, name);
        }
        nodes.bind(parent, name, kind)
    }

    /// How long the kernel may remember that `name` in `parent` does not exist: as long as
    /// anything else, except where a refresh can make it exist at any moment (a key under a
    /// rule with a refresh command: read-through, stale-if-error, `cachetta refresh`, another
    /// mount) or its writer is at work.
    pub(super) fn negative_ttl(&self, parent: u64, name: &OsStr) -> Duration {
        if self.may_be_refreshed(parent, name)
            || self.coherence.is_writing(parent, name, self.clock.now())
        {
            return Duration::ZERO;
        }
        KERNEL_TTL
    }

    pub fn forget(&self, ino: u64, n: u64) {
        if self.nodes.write().forget(ino, n) {
            self.coherence.forget(ino);
            self.page_cache.forget(ino);
            self.hot.forget(&ino);
        }
    }

    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> FsResult<Entry> {
        self.attributes(ino, fh).map(|e| self.describe(e))
    }

    pub(super) fn attributes(&self, ino: u64, fh: Option<u64>) -> FsResult<Entry> {
        let key = self.path_of(ino)?;
        // Stat the name first, then look for a pin: a pin made after the stat is always of
        // content at least as new, so this never reports newer attributes over an older pin.
        let found = self.visible(&key);
        if let Some(entry) = self.pinned_attr(ino, &key)? {
            return Ok(entry);
        }
        match found {
            Ok((st, seen)) => {
                if let Some(Handle::Scratch { file, .. }) =
                    fh.and_then(|fh| self.handle(fh).ok()).as_deref()
                {
                    // A scratch file's writer sees its own file, even if renamed away.
                    let st = Store::fstat(file)?;
                    return Ok(Entry::new(Attr::from_stat(ino, &st), self.ttl(seen)));
                }
                Ok(Entry::new(
                    Attr::from_stat(ino, &st),
                    self.attr_ttl(ino, self.ttl(seen)),
                ))
            }
            Err(e) if e.errno == libc::ENOENT && self.is_fill_dir(&key) => {
                Ok(Entry::new(self.fill_dir_attr(ino), KERNEL_TTL))
            }
            // Created and not yet published: its writer (`touch`, `futimens`) still sees it.
            // Staged sizes are never reported otherwise: the kernel keeps one size per inode.
            Err(e) => match self.writer_of(ino) {
                Some(handle) => Ok(self
                    .handle_attr(ino, &handle)?
                    .expect("write handles have attributes")),
                None => Err(e),
            },
        }
    }

    /// An open inode shows the version its readers read, to every asker: the kernel keeps one
    /// size per inode, and a smaller one would cut its readers short.
    pub(super) fn pinned_attr(&self, ino: u64, key: &Path) -> FsResult<Option<Entry>> {
        if self.coherence.is_live(ino) {
            // Its opens read with direct I/O, which the kernel's size does not cut short.
            return Ok(None);
        }
        let Some(file) = self.pins.lock().get(ino).map(|pin| pin.file.clone()) else {
            return Ok(None);
        };
        let st = Store::fstat(&*file)?;
        match self.judge(key, &st, Some(&file)) {
            Seen::Hidden => Err(errno(libc::ENOENT)),
            seen => Ok(Some(Entry::new(
                Attr::from_stat(ino, &st),
                self.attr_ttl(ino, self.ttl(seen)),
            ))),
        }
    }

    /// An open writable handle of `ino`, if any. Only the handles' fixed fields are read
    /// under the table's lock: a writer may hold its own state across I/O.
    pub(super) fn writer_of(&self, ino: u64) -> Option<Arc<Handle>> {
        let handles = self.handles.read();
        handles
            .values()
            .find(|h| matches!(&***h, Handle::Write(w) if w.ino == ino))
            .cloned()
    }

    /// Attributes as one open handle sees them (its own version, or its staged content).
    pub(super) fn handle_attr(&self, ino: u64, handle: &Handle) -> FsResult<Option<Entry>> {
        let st = match handle {
            Handle::Read { file, .. } => Store::fstat(&**file)?,
            Handle::Scratch { file, .. } => Store::fstat(file)?,
            Handle::Write(w) => {
                let state = w.state.lock();
                match state.current() {
                    Some(file) => Store::fstat(file)?,
                    None => {
                        // Created or truncated and nothing written yet: an empty file.
                        let now = self.clock.now();
                        let (uid, gid) = state.owner.unwrap_or((0, 0));
                        let attr =
                            Attr::synthetic(ino, Kind::File, state.perm as u16, uid, gid, now);
                        return Ok(Some(Entry::new(attr, Duration::ZERO)));
                    }
                }
            }
            Handle::Dir { .. } => return Ok(None),
        };
        Ok(Some(Entry::new(Attr::from_stat(ino, &st), Duration::ZERO)))
    }
}
