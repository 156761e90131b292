//! Opening, reading and releasing files: reads of entries pin one version per inode (kernel
//! passthrough where it can, direct I/O from the hot set where it cannot), writes of entries
//! are staged, scratch files pass through.

use std::ffi::OsStr;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;
use rustix::fs::{Mode, OFlags};

use super::handles::Handle;
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
        self.writer_enter(ino)?;
        let opened = self.open_for_writing(caller, ino, &key, flags);
        if opened.is_err() {
            self.pins.lock().writer_exit(ino);
        }
        opened
    }

    pub(super) fn open_for_writing(
        &self,
        caller: Caller,
        ino: u64,
        key: &Path,
        flags: i32,
    ) -> FsResult<Opened> {
        if !store::is_entry_name(key.file_name().unwrap_or_default()) {
            return self.open_scratch(ino, key, flags, None);
        }
        let mut state = self.start_write(
            caller,
            key,
            flags & libc::O_TRUNC != 0,
            0o644,
            flags & libc::O_APPEND != 0,
        )?;
        if state.base.is_none() && !state.truncated {
            // Opening for write a name the kernel still has cached but that is gone or hidden.
            state.truncated = true;
        }
        state.ino = ino;
        let fh = self.add_handle(Handle::Write(Mutex::new(state)));
        Ok(Opened {
            fh,
            ino,
            mode: OpenMode::DirectIo,
            read_only: false,
        })
    }

    /// Register a direct-I/O open (writer, scratch file) on `ino`. The kernel refuses it on an
    /// inode whose reads are passed through; then the name moves to a fresh inode, reserved a
    /// moment for this writer, and `ESTALE` makes the kernel look the name up again and retry
    /// the open, transparently.
    pub(super) fn writer_enter(&self, ino: u64) -> FsResult<()> {
        if self.pins.lock().writer_enter(ino) {
            return Ok(());
        }
        // Whatever inode the name has by now (another replace may have moved it on already),
        // the writer's retry must find a fresh one.
        let name = self.nodes.read().name_of(ino);
        if let Some((parent, name)) = name {
            self.reserved
                .lock()
                .insert((parent, name.clone()), std::time::Instant::now());
            self.nodes.write().replace(parent, &name);
            self.invalidate(Invalidation::Entry(parent, name), true);
        }
        Err(errno(libc::ESTALE))
    }

    /// Whether a writer was just sent to look `ino`'s name up again (then readers must not
    /// start a passthrough pin on it).
    pub(super) fn reserved_for_writer(&self, ino: u64) -> bool {
        let Some(name) = self.nodes.read().bound_name(ino) else {
            return false;
        };
        let mut reserved = self.reserved.lock();
        reserved.retain(|_, at| at.elapsed() < WRITER_RESERVATION);
        reserved.contains_key(&name)
    }

    pub(super) fn open_entry_for_reading(&self, ino: u64, key: &Path) -> FsResult<Opened> {
        let joined = self.pins.lock().join(ino);
        let was_pinned = joined.is_some();
        let acquired = match joined {
            Some(acquired) => acquired,
            None => self.pin_current(ino, key)?,
        };
        let st = Store::fstat(&*acquired.file)?;
        let Seen::Entry(verdict) = self.judge(key, &st, Some(&acquired.file)) else {
            self.pins.lock().release(ino);
            bump(&self.stats.misses);
            return Err(errno(libc::ENOENT));
        };
        if was_pinned {
            let current = self.store.stat(key).ok().map(|now| (now.dev, now.ino));
            if current != Some((st.dev, st.ino)) {
                self.rotate(ino, false);
            }
        }
        bump(&self.stats.hits);
        if verdict.state == EntryState::Stale {
            bump(&self.stats.stale_served);
            self.on_stale_read(key);
        }
        let mode = if acquired.passthrough {
            OpenMode::Passthrough {
                file: acquired.file.clone(),
                generation: acquired.generation,
            }
        } else {
            OpenMode::DirectIo
        };
        let fh = self.add_handle(Handle::Read {
            ino,
            file: acquired.file,
        });
        Ok(Opened {
            fh,
            ino,
            mode,
            read_only: true,
        })
    }

    /// Bind a name that is being created. A node still pinned by readers of an older file at
    /// that name is left to them: the new file gets its own inode.
    pub(super) fn bind_created(&self, parent: u64, name: &OsStr) -> u64 {
        let old = self.nodes.read().find(parent, name);
        let pinned = old.is_some_and(|ino| self.pins.lock().get(ino).is_some());
        let mut nodes = self.nodes.write();
        if pinned {
            nodes.replace(parent, name);
        }
        nodes.bind(parent, name, Kind::File)
    }

    /// Pin the content the name holds now.
    pub(super) fn pin_current(&self, ino: u64, key: &Path) -> FsResult<pins::Acquired> {
        let (file, st) = self
            .store
            .open_file(key, OFlags::RDONLY, Mode::empty())
            .map_err(|e| FsError::io(key.display(), e))?;
        let passthrough =
            self.passthrough.load(Ordering::Relaxed) && !self.reserved_for_writer(ino);
        Ok(self
            .pins
            .lock()
            .acquire(ino, (st.dev, st.ino), file, passthrough))
    }

    pub(super) fn open_scratch(
        &self,
        ino: u64,
        key: &Path,
        flags: i32,
        create: Option<u32>,
    ) -> FsResult<Opened> {
        let mut oflags = OFlags::from_bits_retain(
            (flags & (libc::O_ACCMODE | libc::O_APPEND | libc::O_TRUNC)) as u32,
        );
        if create.is_some() {
            oflags |= OFlags::CREATE | OFlags::from_bits_retain((flags & libc::O_EXCL) as u32);
        }
        let mode = Mode::from_raw_mode(create.unwrap_or(0));
        let (file, _) = self
            .store
            .open_file(key, oflags, mode)
            .map_err(|e| FsError::io(key.display(), e))?;
        let fh = self.add_handle(Handle::Scratch { ino, file });
        Ok(Opened {
            fh,
            ino,
            mode: OpenMode::DirectIo,
            read_only: false,
        })
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let handle = self.handle(fh)?;
        let mut buf = vec![0u8; size as usize];
        let n = match &*handle {
            Handle::Read { file, .. } => return self.read_entry(file, offset, size),
            Handle::Scratch { file, .. } => read_full_at(file, &mut buf, offset)?,
            Handle::Write(state) => match state.lock().current() {
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
            Handle::Write(state) => {
                let mut state = state.lock();
                self.pins.lock().writer_exit(state.ino);
                if let Some(staging) = state.staging.take() {
                    self.store.discard(staging);
                }
                None
            }
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
    pub(super) fn read_entry(&self, file: &File, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let st = Store::fstat(file)?;
        let version = st.version();
        let content = match self.hot.get(&version) {
            Some(content) => {
                bump(&self.stats.lru_hits);
                content
            }
            None if offset == 0 && self.hot.admits(st.size) => {
                let content: Arc<[u8]> = store::read_all(file, st.size.saturating_add(1))?.into();
                if content.len() as u64 == st.size {
                    self.hot.insert(version, content.clone());
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
