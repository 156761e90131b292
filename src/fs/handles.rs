//! Open file handles: what each `open` of an entry, a scratch file or a directory holds.
//!
//! A writable open of an entry never touches the entry itself: writes go to a staging file
//! beside it, created at the first write (a copy of the entry unless the open truncated), and
//! each `close` after new writes validates and publishes it by rename.

use std::ffi::OsString;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use parking_lot::Mutex;

use std::time::Duration;

use super::Attr;
use crate::error::FsError;
use crate::store::{self, Staging, Store};

/// One listed directory entry, snapshotted at `opendir`.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: OsString,
    /// As listed (`ino` is not yet the name's inode).
    pub attr: Attr,
    pub ttl: Duration,
}

#[derive(Debug)]
pub enum Handle {
    /// A read-only open of an entry: the inode's pinned file, so it reads one version whole.
    Read {
        ino: u64,
        file: Arc<File>,
    },
    /// A writable open of an entry.
    Write(WriteHandle),
    /// Any open of a scratch file: plain pass-through, no validation.
    Scratch {
        ino: u64,
        file: File,
    },
    Dir {
        ino: u64,
        items: Vec<Listed>,
    },
}

/// A writable open of an entry. The fixed fields may be read by anyone holding the handle
/// table; `state` is the writer's own, held across its I/O (validation, publish), so nothing
/// else ever waits for it while holding a lock of its own.
#[derive(Debug)]
pub struct WriteHandle {
    pub ino: u64,
    /// The name the open was made at (for the writing-names bookkeeping at release).
    pub parent: u64,
    pub name: OsString,
    /// The process that opened it.
    pub pid: u32,
    /// Nothing written or truncated through it yet (so the kernel's `O_TRUNC` truncate that
    /// follows an open can be recognised without taking `state`).
    pub untouched: AtomicBool,
    pub state: Mutex<WriteState>,
}

impl WriteHandle {
    pub fn new(ino: u64, parent: u64, name: OsString, pid: u32, state: WriteState) -> Self {
        WriteHandle {
            ino,
            parent,
            name,
            pid,
            untouched: AtomicBool::new(true),
            state: Mutex::new(state),
        }
    }
}

/// The staged side of a writable entry open.
#[derive(Debug)]
pub struct WriteState {
    /// The content the open started from (or the last content it published).
    pub base: Option<File>,
    /// New content, once anything was written.
    pub staging: Option<Staging>,
    /// The open asked for O_TRUNC (or created the file): start from empty, not from `base`.
    pub truncated: bool,
    /// Written since the open or the last close.
    pub dirty: bool,
    /// The writer set the staged content's times after its last write: publish them, not
    /// "now".
    pub times_set: bool,
    /// The first write or truncate that failed (a full disk, an I/O error, too large): the
    /// staged content is incomplete, so every later write and close answers this errno and
    /// nothing is ever published from this open (SPEC §3).
    pub failed: Option<i32>,
    pub append: bool,
    /// Permission bits and owner for newly published content.
    pub perm: u32,
    pub owner: Option<(u32, u32)>,
}

impl WriteState {
    /// Remember the first failure, drop the staged content, and return the failure.
    pub fn fail(&mut self, store: &Store, key: &Path, err: FsError) -> FsError {
        if self.failed.is_none() {
            self.failed = Some(err.errno);
        }
        if let Some(staging) = self.staging.take() {
            store.discard(staging);
        }
        self.dirty = false;
        tracing::warn!(key = %key.display(), errno = err.errno, "write failed: {}; nothing from this open will be published", err.message);
        FsError::new(err.errno, err.message)
    }

    /// The staging file, created on first use in `dir` (the entry's directory).
    pub fn staging(&mut self, store: &Store, dir: &Path) -> std::io::Result<&File> {
        if self.staging.is_none() {
            let staging = store.create_staging(dir, self.perm)?;
            if let Some((uid, gid)) = self.owner {
                // Best effort: only root may give files away.
                let _ = std::os::unix::fs::fchown(&staging.file, Some(uid), Some(gid));
            }
            if let Some(base) = &self.base {
                // The entry is replaced by rename: its own `user.*` attributes come along.
                store::copy_user_xattrs(base, &staging.file);
            }
            if !self.truncated {
                if let Some(base) = &self.base {
                    if let Err(e) = store::copy_contents(base, &staging.file) {
                        store.discard(staging);
                        return Err(e);
                    }
                }
            }
            self.staging = Some(staging);
        }
        Ok(&self.staging.as_ref().expect("just set").file)
    }

    /// The file reads are served from: staged content if any, else the starting content.
    pub fn current(&self) -> Option<&File> {
        match (&self.staging, &self.base) {
            (Some(staging), _) => Some(&staging.file),
            (None, _) if self.truncated => None,
            (None, base) => base.as_ref(),
        }
    }
}
