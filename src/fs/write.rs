//! The write path: staged writes to entries, validated and published at each `close`,
//! plus `create`, `setattr` (truncate, touch, chmod) and `fsync`.

use std::ffi::OsStr;
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use tracing::{debug, warn};

use super::handles::{Handle, WriteHandle};
use super::write_state::{Close, Times, WriteState};
use super::*;
use crate::publish::{self, Checked, PolicyFrom, Refusal, Unfit};
use crate::stats::bump;
use crate::store::{self, SetTime, Staging};

impl CacheFs {
    pub fn setattr(
        &self,
        caller: Caller,
        ino: u64,
        fh: Option<u64>,
        changes: Changes,
    ) -> FsResult<Entry> {
        self.writable()?;
        let key = self.path_of(ino)?;
        if let Some(size) = changes.size {
            self.truncate(caller, ino, &key, fh, size)?;
        }
        // "now" comes from our clock, like every other time the mount computes with.
        let now = |t: Option<SetTime>| {
            t.map(|t| match t {
                SetTime::Now => SetTime::At(self.clock.now()),
                t => t,
            })
        };
        let (atime, mtime) = (now(changes.atime), now(changes.mtime));
        let times = atime.is_some() || mtime.is_some();
        let staged_times = times && self.set_staged_times(caller, ino, atime, mtime)?;
        let exists = self.store.stat(&key).is_ok();
        if exists {
            if let Some(mode) = changes.mode {
                self.store
                    .set_mode(&key, mode)
                    .map_err(|e| FsError::io(key.display(), e))?;
            }
            if changes.uid.is_some() || changes.gid.is_some() {
                self.store
                    .set_owner(&key, changes.uid, changes.gid)
                    .map_err(|e| FsError::io(key.display(), e))?;
            }
            if times && !staged_times {
                self.store
                    .set_times(&key, atime, mtime)
                    .map_err(|e| FsError::io(key.display(), e))?;
            }
        }
        match self.getattr(ino, fh) {
            // The change itself hid the entry (`touch -d` into its past): it was made, so it
            // succeeds, with the file's attributes and nothing for the kernel to keep; the next
            // lookup answers ENOENT.
            Err(e) if e.errno == libc::ENOENT && exists => match self.store.stat(&key) {
                Ok(st) => Ok(Entry::new(Attr::from_stat(ino, &st), Duration::ZERO)),
                Err(_) => Err(e),
            },
            answer => answer,
        }
    }

    /// Times set by a writer on the entry it is writing (`futimens`, as `cp -a` and `tar x` do
    /// after writing) go to its staged content and are published with it, instead of "now"
    /// (SPEC §3). False when the caller has no staged write of `ino`: then they apply to the
    /// entry as it is (`touch`).
    fn set_staged_times(
        &self,
        caller: Caller,
        ino: u64,
        atime: Option<SetTime>,
        mtime: Option<SetTime>,
    ) -> FsResult<bool> {
        let writer = self
            .handles
            .read()
            .values()
            .find_map(|handle| match &**handle {
                Handle::Write(w) if w.ino == ino && w.pid == caller.pid => Some(handle.clone()),
                _ => None,
            });
        let Some(handle) = writer else {
            return Ok(false);
        };
        let Handle::Write(w) = &*handle else {
            return Ok(false);
        };
        let mut state = w.state.lock();
        state.set_times(atime, mtime)
    }

    /// The kernel carries out `open(O_TRUNC)` as an open followed by a truncate to 0 from the
    /// same process, and that truncate names no handle: `fuse_setattr` drops the file of an
    /// `ATTR_OPEN` truncate unless the filesystem asked for atomic `O_TRUNC` (we do not: it
    /// would zero the size the kernel keeps for the inode, under the feet of its readers). So
    /// a truncate without a handle, from a process with an open of the inode that nothing was
    /// written or truncated through yet, is taken as that open's `O_TRUNC`
    /// ([`WriteState::truncate_at_open`]): its staging starts empty, the entry itself is
    /// untouched until the writer's close. The scan reads only the handles' fixed fields, so
    /// the table's lock is never held while waiting for a writer's `state`.
    fn truncate_of_fresh_open(&self, ino: u64, pid: u32) -> bool {
        let fresh = self
            .handles
            .read()
            .values()
            .find_map(|handle| match &**handle {
                Handle::Write(w) if w.ino == ino && w.pid == pid && w.is_untouched() => {
                    Some(handle.clone())
                }
                _ => None,
            });
        let Some(handle) = fresh else {
            return false;
        };
        let Handle::Write(w) = &*handle else {
            return false;
        };
        // The table's lock is not held here: this waits, if at all, only for the same open.
        let mut state = w.state.lock();
        state.truncate_at_open()
    }

    /// Truncate (or extend) the staged content of an entry: a write, validated at close.
    fn stage_truncate(&self, state: &mut WriteState, key: &Path, size: u64) -> FsResult<()> {
        state.truncate(&self.store, key, size, self.config.max_entry_bytes)
    }

    /// `ftruncate` on a writable handle is a staged write; `truncate(path)` of an entry is a
    /// whole write on its own, validated at once.
    pub(super) fn truncate(
        &self,
        caller: Caller,
        ino: u64,
        key: &Path,
        fh: Option<u64>,
        size: u64,
    ) -> FsResult<()> {
        if fh.is_none() && self.truncate_of_fresh_open(ino, caller.pid) {
            return Ok(());
        }
        // A handle the kernel names must exist: a truncate through a closed one is refused,
        // never taken for a truncate of the entry itself.
        let handle = fh.map(|fh| self.handle(fh)).transpose()?;
        match handle.as_deref() {
            Some(Handle::Write(w)) => {
                w.touch();
                self.stage_truncate(&mut w.state.lock(), key, size)
            }
            Some(Handle::Scratch { file, .. }) => Ok(file.set_len(size)?),
            _ if store::is_entry_name(key.file_name().unwrap_or_default()) => {
                let mut state = self.start_write(caller, key, false, 0o644, false)?;
                self.stage_truncate(&mut state, key, size)?;
                let result = match state.close() {
                    Close::Publish { staging, times } => {
                        self.commit(ino, &mut state, key, staging, times)
                    }
                    Close::Failed(e) => Err(errno(e)),
                    Close::Unwritten => Ok(()),
                };
                if let Some(staging) = state.release() {
                    self.store.discard(staging);
                }
                result
            }
            _ => {
                let (file, _) = self
                    .store
                    .open_file(key, OFlags::WRONLY, Mode::empty())
                    .map_err(|e| FsError::io(key.display(), e))?;
                Ok(file.set_len(size)?)
            }
        }
    }

    /// The starting state of a writable open of entry `key`.
    pub(super) fn start_write(
        &self,
        caller: Caller,
        key: &Path,
        o_trunc: bool,
        perm: u32,
        append: bool,
    ) -> FsResult<WriteState> {
        // The name was shown by a lookup: an entry that stale-if-error keeps is the base of
        // this write (an append appends to it), as it is what a read would get.
        let base = match self.store.open_file(key, OFlags::RDONLY, Mode::empty()) {
            Ok((file, st))
                if !matches!(
                    self.judge_as(key, &st, Some(&file), super::judge::Grace::Serve),
                    Seen::Hidden
                ) =>
            {
                Some((file, st))
            }
            _ => None,
        };
        let (perm, owner) = match &base {
            // A rewrite keeps the entry's owner (only root can give files away).
            Some((_, st)) => (
                st.perm as u32,
                rustix::process::geteuid()
                    .is_root()
                    .then_some((st.uid, st.gid)),
            ),
            None => (perm, self.owner_for(caller)),
        };
        Ok(WriteState::open(
            base.map(|(f, _)| f),
            o_trunc,
            append,
            perm,
            owner,
        ))
    }

    pub fn create(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> FsResult<(Entry, Opened)> {
        self.writable()?;
        let key = self.child_path(parent, name)?;
        let perm = mode & !umask & 0o7777;
        self.materialize_fill_dir(store::split(&key).0)?;
        if store::is_staging_name(name) {
            return Err(errno(libc::EPERM));
        }
        if !store::is_entry_name(name) {
            let ino = self.bind_created(parent, name);
            let opened = match self.writer_enter(ino) {
                Ok(at) => self
                    .open_scratch(ino, &key, flags, Some(perm), self.owner_for(caller))
                    .inspect_err(|_| self.writer_exit(ino, &at)),
                Err(e) => Err(e),
            };
            let opened = match opened {
                Ok(o) => o,
                Err(e) => {
                    self.forget(ino, 1);
                    return Err(e);
                }
            };
            // The file just created, as its own descriptor says (no second walk of the path).
            let st = match &*self.handle(opened.fh)? {
                Handle::Scratch { file, .. } => Store::fstat(file)?,
                _ => self.store.stat(&key)?,
            };
            let entry = Entry::granted(
                Attr::from_stat(ino, &st),
                self.grant(parent, name, ino, KERNEL_TTL),
            );
            return Ok((self.describe(entry), opened));
        }
        // O_CREAT without O_TRUNC on an entry that exists keeps its content.
        let state = self.start_write(
            caller,
            &key,
            flags & libc::O_TRUNC != 0,
            perm,
            flags & libc::O_APPEND != 0,
        )?;
        if state.has_entry() && flags & libc::O_EXCL != 0 {
            return Err(errno(libc::EEXIST));
        }
        let ino = self.bind_created(parent, name);
        let at = match self.writer_enter(ino) {
            Ok(at) => at,
            Err(e) => {
                self.forget(ino, 1);
                return Err(e);
            }
        };
        let handle = Handle::Write(WriteHandle::new(ino, at.0, at.1, caller.pid, state));
        let entry = self
            .handle_attr(ino, &handle)?
            .expect("write handles have attributes");
        let fh = self.add_handle(handle);
        // ttl 0: until published, the name is not visible to anyone else, and once published
        // its writer must see it at once.
        Ok((
            self.describe(Entry::new(entry.attr, Duration::ZERO)),
            Opened {
                fh,
                ino,
                mode: OpenMode::DirectIo,
                noflush: false,
            },
        ))
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let handle = self.handle(fh)?;
        match &*handle {
            Handle::Scratch { file, .. } => {
                file.write_all_at(data, offset)?;
                Ok(data.len() as u32)
            }
            Handle::Write(w) => {
                w.touch();
                let mut state = w.state.lock();
                let key = self.path_of(w.ino).unwrap_or_default();
                let max = self.config.max_entry_bytes;
                state.write(&self.store, &key, offset, data, max)?;
                Ok(data.len() as u32)
            }
            Handle::Read { .. } | Handle::Dir { .. } => Err(errno(libc::EBADF)),
        }
    }

    /// A `close` of a descriptor: validate and publish what was written since the last one.
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let handle = self.handle(fh)?;
        let Handle::Write(w) = &*handle else {
            return Ok(());
        };
        let mut state = w.state.lock();
        let (staging, times) = match state.close() {
            Close::Publish { staging, times } => (staging, times),
            Close::Unwritten => return Ok(()),
            Close::Failed(e) => {
                // Said once at the write that failed; every close answers it again.
                return Err(FsError::new(
                    e,
                    "an earlier write failed; nothing was published",
                ));
            }
        };
        let Some(key) = self.nodes.read().path(w.ino) else {
            // Removed while open: like writing to an unlinked file, the data goes nowhere.
            state.keep(staging);
            return Ok(());
        };
        self.commit(w.ino, &mut state, &key, staging, times)
    }

    /// Content refused as the entry `key` (a write's, or the file renamed from `from`):
    /// counted, logged once, answered with its errno; the entry is unchanged.
    pub(super) fn refused(&self, key: &Path, from: Option<&Path>, refusal: Refusal) -> FsError {
        bump(&self.stats.writes_rejected);
        let why = refusal.reason();
        match from {
            None => warn!(key = %key.display(), "write refused: {why}; the entry is unchanged"),
            Some(from) => {
                warn!(key = %key.display(), from = %from.display(), "rename refused: {why}; the entry is unchanged")
            }
        }
        FsError::warn(refusal.errno(), why)
    }

    /// Validate the staged content a close handed over and publish it as `key`, telling
    /// `state` what became of it.
    pub(super) fn commit(
        &self,
        ino: u64,
        state: &mut WriteState,
        key: &Path,
        staging: Staging,
        times: Times,
    ) -> FsResult<()> {
        let checked = match Checked::check(staging, self.config.max_entry_bytes) {
            Ok(checked) => checked,
            Err((staging, Unfit::Refused(refusal))) => {
                state.keep(staging);
                return Err(self.refused(key, None, refusal));
            }
            Err((staging, Unfit::Io(e))) => {
                self.store.discard(staging);
                return Err(state.fail(&self.store, key, FsError::io(key.display(), e)));
            }
        };
        let mtime = match times {
            Times::Now => Some(self.clock.now()),
            Times::Set => None,
        };
        let published =
            match publish::publish_entry(&self.store, checked, key, mtime, PolicyFrom::Entry) {
                Ok(published) => published,
                // The staging file is gone (publish removes it on failure); the entry is as it was.
                Err(e) => return Err(state.fail(&self.store, key, FsError::io(key.display(), e))),
            };
        if let Some(version) = published.version {
            self.remember_own_publish(version, published.policy);
        }
        state.published(published.file);
        // No kernel notification is waited for: the writer's name is uncached (see
        // `coherence`), so its next `stat` or `cat` looks it up again and finds what it wrote.
        self.content_changed(ino);
        bump(&self.stats.writes_ok);
        debug!(key = %key.display(), "entry written");
        Ok(())
    }

    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        let handle = self.handle(fh)?;
        match &*handle {
            Handle::Scratch { file, .. } => Ok(file.sync_all()?),
            Handle::Write(w) => {
                if let Some(staging) = w.state.lock().staged() {
                    staging.sync_all()?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
