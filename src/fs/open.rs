//! Opening, reading and releasing files: reads of entries pin one version per inode (kernel
//! passthrough where it can; else the kernel's page cache where that is safe, or direct I/O
//! from the hot set), writes of entries are staged, scratch files pass through.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};

use super::handles::{Handle, WriteHandle};
use super::judge::Grace;
use super::*;
use crate::stats::bump;
use crate::store::{self, Kind, Store};

impl CacheFs {
    pub fn open(&self, caller: Caller, ino: u64, flags: i32) -> FsResult<Opened> {
        let key = self.path_of(ino)?;
        let name = key.file_name().unwrap_or_default().to_os_string();
        let accmode = flags & libc::O_ACCMODE;
        if accmode != libc::O_RDONLY {
            self.writable()?;
        }
        if accmode == libc::O_RDONLY && store::is_entry_name(&name) {
            return self.open_entry_for_reading(ino, &key);
        }
        let at = self.writer_enter(ino)?;
        let opened = self.open_for_writing(caller, ino, &key, flags, &at);
        if opened.is_err() {
            self.writer_exit(ino, &at);
        }
        opened
    }

    pub(super) fn open_for_writing(
        &self,
        caller: Caller,
        ino: u64,
        key: &Path,
        flags: i32,
        at: &(u64, OsString),
    ) -> FsResult<Opened> {
        if !store::is_entry_name(key.file_name().unwrap_or_default()) {
            return self.open_scratch(ino, key, flags, None, None);
        }
        // A name the kernel still has cached but that is gone or hidden opens as empty.
        let state = self.start_write(
            caller,
            key,
            flags & libc::O_TRUNC != 0,
            0o644,
            flags & libc::O_APPEND != 0,
        )?;
        let handle = WriteHandle::new(ino, at.0, at.1.clone(), caller.pid, state);
        let fh = self.add_handle(Handle::Write(handle));
        Ok(Opened {
            fh,
            ino,
            mode: OpenMode::DirectIo,
            noflush: false,
        })
    }

    /// Register a direct-I/O open (writer, scratch file) on `ino`, at the name it is bound to
    /// (returned, for [`CacheFs::writer_exit`]). Refused with `ESTALE` when the kernel may
    /// cache the name for long (a writer must read its own write back at once), or when the
    /// inode's reads are passed through (the kernel refuses a direct-I/O open there). Either
    /// way the name moves to a fresh inode first, and `ESTALE` makes the kernel look the name
    /// up again, find that inode uncached, and retry the open, transparently (see `coherence`).
    pub(super) fn writer_enter(&self, ino: u64) -> FsResult<(u64, OsString)> {
        let (parent, name) = self
            .nodes
            .read()
            .name_of(ino)
            .ok_or_else(|| errno(libc::ENOENT))?;
        let entry = store::is_entry_name(&name);
        let now = self.clock.now();
        // `coherence.writer_enter` starts the name's uncached time even when it refuses, so the
        // retry always finds the name uncached; an inode with pages in the kernel's cache is
        // refused as well (a writer would move the size those pages are read up to).
        let counted = entry && self.coherence.writer_enter(parent, &name, ino, now);
        let admitted = !entry || (counted && !self.page_cache.has_pages(ino));
        if admitted && self.pins.lock().writer_enter(ino) {
            if entry {
                self.coherence.make_live(ino);
            }
            return Ok((parent, name));
        }
        if counted {
            self.coherence.writer_refused(parent, &name, now);
        }
        self.nodes.write().replace(parent, &name);
        Err(errno(libc::ESTALE))
    }

    /// A direct-I/O open registered by [`CacheFs::writer_enter`] ended.
    pub(super) fn writer_exit(&self, ino: u64, at: &(u64, OsString)) {
        self.pins.lock().writer_exit(ino);
        if store::is_entry_name(&at.1) {
            self.coherence.writer_exit(at.0, &at.1, self.clock.now());
        }
    }

    pub(super) fn open_entry_for_reading(&self, ino: u64, key: &Path) -> FsResult<Opened> {
        if self.coherence.is_live(ino) {
            return self.open_live(ino, key);
        }
        let joined = self.pins.lock().join(ino);
        let was_pinned = joined.is_some();
        let (acquired, pinned_now) = match joined {
            Some(acquired) => (acquired, None),
            None => self.pin_current(ino, key)?,
        };
        // A pin made by this open was stat'ed as it was opened: no second `fstat`.
        let st = match pinned_now.map_or_else(|| Store::fstat(&*acquired.file), Ok) {
            Ok(st) => st,
            Err(e) => {
                self.pins.lock().release(ino);
                if e.raw_os_error() == Some(libc::ESTALE) {
                    // The pinned file is gone on the server (another machine replaced it; a
                    // GlusterFS client may open lazily). Its name moves to a fresh inode, and
                    // ESTALE makes the kernel look it up again and retry the open once, which
                    // then opens what the name holds now.
                    self.rotate(ino);
                    return Err(FsError::new(
                        libc::ESTALE,
                        format!("{}: replaced on the server", key.display()),
                    ));
                }
                return Err(FsError::io(key.display(), e));
            }
        };
        // The name was shown by a lookup: an entry that stale-if-error keeps is served.
        let Seen::Entry(verdict) = self.judge_as(key, &st, Some(&acquired.file), Grace::Serve)
        else {
            self.pins.lock().release(ino);
            bump(&self.stats.misses);
            return Err(errno(libc::ENOENT));
        };
        if was_pinned {
            let current = self.store.stat(key).ok().map(|now| (now.dev, now.ino));
            if current != Some((st.dev, st.ino)) {
                self.rotate(ino);
            }
        }
        self.served(key, &verdict);
        let mode = if acquired.passthrough {
            OpenMode::Passthrough {
                file: acquired.file.clone(),
                generation: acquired.generation,
            }
        } else {
            match self.page_cache_open(ino, &st) {
                Some(keep) => OpenMode::PageCache { keep },
                None => OpenMode::DirectIo,
            }
        };
        let fh = self.add_handle(Handle::Read {
            ino,
            file: acquired.file,
            pinned: true,
        });
        Ok(Opened {
            fh,
            ino,
            mode,
            noflush: true,
        })
    }

    /// A read-open of a live inode (see `coherence`): it reads what the name holds now, with
    /// direct I/O, from a file of its own. No pin: the inode serves no one version, so its
    /// name stays bound to it while it is written.
    fn open_live(&self, ino: u64, key: &Path) -> FsResult<Opened> {
        let (file, st) = self.open_current(key)?;
        let Seen::Entry(verdict) = self.judge_as(key, &st, Some(&file), Grace::Serve) else {
            bump(&self.stats.misses);
            return Err(errno(libc::ENOENT));
        };
        self.served(key, &verdict);
        let fh = self.add_handle(Handle::Read {
            ino,
            file: Arc::new(file),
            pinned: false,
        });
        Ok(Opened {
            fh,
            ino,
            mode: OpenMode::DirectIo,
            noflush: true,
        })
    }

    /// Whether this read-open of `ino` (pinned to `st`) may read through the kernel's page
    /// cache, and keep the pages it has: never while the name is being written or a writer has
    /// the inode open (see `page_cache`).
    fn page_cache_open(&self, ino: u64, st: &Stat) -> Option<bool> {
        let (parent, name) = self.nodes.read().name_of(ino)?;
        if self.coherence.is_writing(parent, &name, self.clock.now())
            || self.pins.lock().has_writer(ino)
        {
            return None;
        }
        self.page_cache.open(ino, st.version())
    }

    /// Bind a name that is being created to a fresh inode: whatever inode the name had may
    /// still be pinned by readers of an older file, or cached by the kernel for long.
    pub(super) fn bind_created(&self, parent: u64, name: &OsStr) -> u64 {
        let mut nodes = self.nodes.write();
        nodes.replace(parent, name);
        nodes.bind(parent, name, Kind::File)
    }

    /// Open what `key` holds now for reading; `ENOENT` if the watcher saw it go.
    fn open_current(&self, key: &Path) -> FsResult<(File, Stat)> {
        let (file, st) = self
            .store
            .open_file(key, OFlags::RDONLY, Mode::empty())
            .map_err(|e| FsError::io(key.display(), e))?;
        if self.is_gone(key, &st) {
            return Err(errno(libc::ENOENT));
        }
        Ok((file, st))
    }

    /// A read-open served `key`, judged `verdict`: counted, and a stale entry's refresh
    /// started.
    fn served(&self, key: &Path, verdict: &Verdict) {
        bump(&self.stats.hits);
        if matches!(verdict.state, EntryState::Stale | EntryState::Grace) {
            bump(&self.stats.stale_served);
        }
        self.on_read(key, verdict);
    }

    /// Pin what `key` holds now for a read-open of `ino`; with its `Stat` when this call made
    /// the pin (`None` when another open pinned the inode meanwhile and this one joined it).
    pub(super) fn pin_current(
        &self,
        ino: u64,
        key: &Path,
    ) -> FsResult<(pins::Acquired, Option<Stat>)> {
        let (file, st) = self.open_current(key)?;
        // A name being written is read without passthrough, so its writer's open is never
        // refused by the kernel.
        let passthrough = self.passthrough.load(Ordering::Relaxed)
            && !self
                .nodes
                .read()
                .name_of(ino)
                .is_some_and(|(parent, name)| {
                    self.coherence.is_writing(parent, &name, self.clock.now())
                });
        let mut pins = self.pins.lock();
        if let Some(joined) = pins.join(ino) {
            return Ok((joined, None));
        }
        Ok((
            pins.acquire(ino, (st.dev, st.ino), file, passthrough),
            Some(st),
        ))
    }

    pub(super) fn open_scratch(
        &self,
        ino: u64,
        key: &Path,
        flags: i32,
        create: Option<u32>,
        owner: Option<(u32, u32)>,
    ) -> FsResult<Opened> {
        let mut oflags = OFlags::from_bits_retain(
            (flags & (libc::O_ACCMODE | libc::O_APPEND | libc::O_TRUNC)) as u32,
        );
        if create.is_some() {
            oflags |= OFlags::CREATE | OFlags::from_bits_retain((flags & libc::O_EXCL) as u32);
        }
        let mode = Mode::from_raw_mode(create.unwrap_or(0));
        let file = match (create, owner) {
            // Created for someone else (--allow-other): theirs, and only if it is new.
            (Some(_), Some((uid, gid))) => self.create_owned(key, oflags, mode, uid, gid),
            _ => self
                .store
                .open_file(key, oflags, mode)
                .map(|(file, _)| file),
        }
        .map_err(|e| FsError::io(key.display(), e))?;
        Store::hold(&file);
        let fh = self.add_handle(Handle::Scratch { ino, file });
        Ok(Opened {
            fh,
            ino,
            mode: OpenMode::DirectIo,
            noflush: true,
        })
    }

    /// Open `key`, creating it for `uid`:`gid` if it does not exist (an existing file keeps
    /// its owner).
    fn create_owned(
        &self,
        key: &Path,
        oflags: OFlags,
        mode: Mode,
        uid: u32,
        gid: u32,
    ) -> std::io::Result<File> {
        let existing = oflags & !(OFlags::CREATE | OFlags::EXCL);
        loop {
            if !oflags.contains(OFlags::EXCL) {
                match self.store.open_file(key, existing, mode) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    other => return other.map(|(file, _)| file),
                }
            }
            match self.store.open_file(key, oflags | OFlags::EXCL, mode) {
                Ok((file, _)) => {
                    std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
                    return Ok(file);
                }
                // Created by someone else meanwhile: open that one.
                Err(e)
                    if e.raw_os_error() == Some(libc::EEXIST) && !oflags.contains(OFlags::EXCL) => {
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let handle = self.handle(fh)?;
        let mut buf = vec![0u8; size as usize];
        let n = match &*handle {
            Handle::Read { ino, file, .. } => return self.read_entry(*ino, file, offset, size),
            Handle::Scratch { file, .. } => read_full_at(file, &mut buf, offset)?,
            Handle::Write(w) => match w.state.lock().current() {
                Some(file) => read_full_at(file, &mut buf, offset)?,
                None => 0,
            },
            Handle::Dir { .. } => return Err(errno(libc::EISDIR)),
        };
        buf.truncate(n);
        Ok(buf)
    }

    /// The last close of an open file. Returns the inode whose pin this released, if that was
    /// its last open (the adapter then drops the kernel's passthrough backing).
    pub fn release(&self, fh: u64) -> Option<(u64, u64)> {
        let handle = self.handles.write().remove(&fh)?;
        match &*handle {
            Handle::Write(w) => {
                let staging = w.state.lock().release();
                if let Some(staging) = staging {
                    self.store.discard(staging);
                }
                self.writer_exit(w.ino, &(w.parent, w.name.clone()));
                None
            }
            Handle::Read { pinned: false, .. } => None,
            Handle::Read { ino, .. } => self
                .pins
                .lock()
                .release(*ino)
                .map(|generation| (*ino, generation)),
            Handle::Scratch { ino, .. } => {
                self.pins.lock().writer_exit(*ino);
                None
            }
            Handle::Dir { .. } => None,
        }
    }

    /// A read of an entry that reached the daemon: from the hot set while the file is
    /// unchanged (one `fstat` tells), else from the file, keeping small entries for next time.
    pub(super) fn read_entry(
        &self,
        ino: u64,
        file: &File,
        offset: u64,
        size: u32,
    ) -> FsResult<Vec<u8>> {
        let st = Store::fstat(file)?;
        let version = st.version();
        let content = match self.hot.get(&ino, &version) {
            Some(content) => {
                bump(&self.stats.lru_hits);
                content
            }
            None if offset == 0 && self.hot.admits(st.size) => {
                let content: Arc<[u8]> = store::read_all(file, st.size.saturating_add(1))?.into();
                if content.len() as u64 == st.size {
                    self.hot.insert(ino, version, content.clone());
                }
                content
            }
            None => {
                let mut buf = vec![0u8; size as usize];
                let n = read_full_at(file, &mut buf, offset)?;
                buf.truncate(n);
                return Ok(buf);
            }
        };
        let start = (offset as usize).min(content.len());
        let end = start.saturating_add(size as usize).min(content.len());
        Ok(content[start..end].to_vec())
    }
}
