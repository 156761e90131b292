//! Open file handles: what each `open` of an entry, a scratch file or a directory holds.
//!
//! A writable open of an entry never touches the entry itself: writes go to a staging file
//! beside it, created at the first write (a copy of the entry unless the open truncated), and
//! each `close` after new writes validates and publishes it by rename (its state machine is
//! `write_state`).

use std::ffi::OsString;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use std::time::Duration;

use super::write_state::WriteState;
use super::Attr;

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
    /// A read-only open of an entry: one version, read whole. `pinned`: the inode's pinned
    /// file, shared by its read-opens; else a live inode's open, with a file of its own.
    Read {
        ino: u64,
        file: Arc<File>,
        pinned: bool,
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
    untouched: AtomicBool,
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

    /// A write or truncate is coming through this handle: from now on a truncate without a
    /// handle is not its `O_TRUNC`. Said before taking `state`: a scan that still saw it
    /// untouched then checks, under `state`, whether anything was staged.
    pub fn touch(&self) {
        self.untouched.store(false, Ordering::Release);
    }

    /// Nothing written or truncated through it yet; read without taking `state` (see
    /// `CacheFs::truncate_of_fresh_open`).
    pub fn is_untouched(&self) -> bool {
        self.untouched.load(Ordering::Acquire)
    }
}
