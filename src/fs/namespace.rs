//! Changes to the namespace: `mkdir`, `unlink`, `rmdir` and `rename` (validated when it
//! publishes an entry).

use super::*;
use crate::publish::{self, Checked, PolicyFrom, Unfit};

impl CacheFs {
    pub fn mkdir(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> FsResult<Entry> {
        self.writable()?;
        let key = self.child_path(parent, name)?;
        self.materialize_fill_dir(store::split(&key).0)?;
        let mut st = self
            .store
            .mkdir(&key, mode & !umask)
            .map_err(|e| FsError::io(key.display(), e))?;
        if let Some((uid, gid)) = self.owner_for(caller) {
            // With --allow-other, a directory someone makes is theirs, as on any filesystem.
            self.store
                .set_owner(&key, Some(uid), Some(gid))
                .map_err(|e| FsError::io(key.display(), e))?;
            st = self.store.stat(&key)?;
        }
        let ino = self.nodes.write().bind(parent, name, Kind::Dir);
        Ok(Entry::granted(
            Attr::from_stat(ino, &st),
            self.grant(parent, name, ino, KERNEL_TTL),
        ))
    }

    /// Whom a file the caller creates must belong to, when the daemon (root, serving other
    /// users with `--allow-other`) would otherwise make it root's.
    pub(super) fn owner_for(&self, caller: Caller) -> Option<(u32, u32)> {
        (rustix::process::geteuid().is_root() && caller.uid != 0)
            .then_some((caller.uid, caller.gid))
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.writable()?;
        let key = self.child_path(parent, name)?;
        // rm wins over a refresh of the same key running now.
        self.refresher.cancel(&key);
        self.store
            .unlink(&key)
            .map_err(|e| FsError::io(key.display(), e))?;
        let removed = self.nodes.write().remove(parent, name);
        if let Some(ino) = removed {
            self.hot.forget(&ino);
        }
        Ok(())
    }

    /// Remove a directory whose visible content is empty, with whatever invisible files
    /// (expired, corrupt, scratch, leftovers) it still holds.
    pub fn rmdir(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.writable()?;
        let key = self.child_path(parent, name)?;
        let items = self
            .store
            .read_dir(&key)
            .map_err(|e| FsError::io(key.display(), e))?;
        let mut invisible = Vec::new();
        for item in items {
            let child = key.join(&item.name);
            // Judged as opened: a valid entry being replaced right now never looks corrupt
            // here, so it is never removed as invisible.
            match self.visible(&child) {
                Ok((_, Seen::Dir | Seen::Entry(_))) => return Err(errno(libc::ENOTEMPTY)),
                // A write in progress (a staging or scratch file someone holds): not a leftover.
                _ if self.store.is_held(&child) => return Err(errno(libc::ENOTEMPTY)),
                Ok(_) => invisible.push(child),
                Err(e) if e.errno == libc::ENOENT => invisible.push(child),
                Err(e) => return Err(e),
            }
        }
        for child in invisible {
            if let Err(e) = self.store.unlink(&child) {
                if e.raw_os_error() != Some(libc::ENOENT) {
                    return Err(FsError::io(child.display(), e));
                }
            }
        }
        self.store
            .rmdir(&key)
            .map_err(|e| FsError::io(key.display(), e))?;
        self.nodes.write().remove(parent, name);
        Ok(())
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> FsResult<()> {
        self.writable()?;
        if flags & !(libc::RENAME_NOREPLACE) != 0 {
            return Err(errno(libc::EINVAL));
        }
        let from = self.child_path(parent, name)?;
        let to = self.child_path(newparent, newname)?;
        self.materialize_fill_dir(store::split(&to).0)?;
        if store::is_staging_name(newname) {
            return Err(errno(libc::EPERM));
        }
        let st = self
            .store
            .stat(&from)
            .map_err(|e| FsError::io(from.display(), e))?;
        if st.kind == Kind::File
            && store::is_entry_name(newname)
            && !store::is_entry_name(name)
            && self.is_open_scratch(parent, name)
        {
            // Someone still holds the scratch file open and could change it after it was
            // validated, or write on into the entry: publish a validated copy instead.
            if flags & libc::RENAME_NOREPLACE != 0 && self.store.stat(&to).is_ok() {
                return Err(errno(libc::EEXIST));
            }
            self.publish_copy(&from, &to)?;
            self.renamed((parent, name), (newparent, newname));
            return Ok(());
        }
        if st.kind == Kind::File && store::is_entry_name(newname) {
            let noreplace = flags & libc::RENAME_NOREPLACE != 0;
            let limit = self.config.max_entry_bytes;
            let published = publish::rename_onto(&self.store, &from, &to, noreplace, limit)
                .map_err(|unfit| self.unfit_rename(&from, &to, unfit))?;
            if !store::is_entry_name(name) {
                // Publishing a scratch file is a write. It keeps its own mtime: the time of
                // its last write, or the time its writer set (`rsync -a`, SPEC §3).
                bump(&self.stats.writes_ok);
            }
            if let Some(version) = published.version {
                // Just checked: the next lookup need not parse it again.
                self.remember_own_publish(version, published.policy);
                // `nodes` then `page_cache`, the documented order: the inode stays bound to
                // the name while the kernel's view of it is moved.
                #[allow(clippy::significant_drop_in_scrutinee)]
                if let Some(ino) = self.nodes.read().find(parent, name) {
                    self.page_cache.renamed(ino, version);
                }
            }
        } else {
            self.store
                .rename(&from, &to, flags & libc::RENAME_NOREPLACE != 0)
                .map_err(|e| FsError::io(format!("{} -> {}", from.display(), to.display()), e))?;
        }
        self.renamed((parent, name), (newparent, newname));
        Ok(())
    }

    /// After a rename in the backing dir: the inode table follows, and whatever the target
    /// name held before loses its kept copy (SPEC §7).
    fn renamed(&self, from: (u64, &OsStr), to: (u64, &OsStr)) {
        let replaced = self.nodes.write().rename(from, to);
        self.coherence.replaced(to.0, to.1, self.clock.now());
        if let Some(ino) = replaced {
            self.hot.forget(&ino);
        }
    }

    /// Whether a scratch file is open through the mount.
    pub(super) fn is_open_scratch(&self, parent: u64, name: &OsStr) -> bool {
        let Some(ino) = self.nodes.read().find(parent, name) else {
            return false;
        };
        self.handles
            .read()
            .values()
            .any(|h| matches!(&**h, Handle::Scratch { ino: held, .. } if *held == ino))
    }

    /// Rename a scratch file that is still open onto an entry: its content as of now is
    /// copied into a staging file, validated there, and published with the scratch file's
    /// times and `user.*` attributes; then the scratch name goes. Later writes through the open
    /// descriptor reach only the old scratch file.
    pub(super) fn publish_copy(&self, from: &Path, to: &Path) -> FsResult<()> {
        let io = |e| FsError::io(format!("{} -> {}", from.display(), to.display()), e);
        let (source, st) = self
            .store
            .open_file(from, OFlags::RDONLY, Mode::empty())
            .map_err(io)?;
        let staging = self
            .store
            .create_staging(store::split(to).0, st.perm as u32)
            .map_err(io)?;
        let copied = store::copy_contents(&source, &staging.file).and_then(|_| {
            store::copy_user_xattrs(&source, &staging.file);
            Store::set_file_times(
                &staging.file,
                Some(SetTime::At(st.atime)),
                Some(SetTime::At(st.mtime)),
            )
        });
        if let Err(e) = copied {
            self.store.discard(staging);
            return Err(io(e));
        }
        let checked = match Checked::check(staging, self.config.max_entry_bytes) {
            Ok(checked) => checked,
            Err((staging, unfit)) => {
                self.store.discard(staging);
                return Err(self.unfit_rename(from, to, unfit));
            }
        };
        let published =
            publish::publish_entry(&self.store, checked, to, None, PolicyFrom::OwnFirst)
                .map_err(io)?;
        if let Some(version) = published.version {
            self.remember_own_publish(version, published.policy);
        }
        bump(&self.stats.writes_ok);
        // The name the kernel renamed away: gone here too (its open descriptor lives on).
        if let Err(e) = self.store.unlink(from) {
            warn!(from = %from.display(), "the renamed scratch file stayed behind: {e}");
        }
        Ok(())
    }

    /// The error of a file renamed onto an entry name that cannot be the entry: a refusal
    /// (not JSON, too large) is counted and logged once; the entry is unchanged either way.
    fn unfit_rename(&self, from: &Path, to: &Path, unfit: Unfit) -> FsError {
        match unfit {
            Unfit::Refused(refusal) => self.refused(to, Some(from), refusal),
            Unfit::Io(e) => FsError::io(format!("{} -> {}", from.display(), to.display()), e),
        }
    }
}
