//! Turning the filesystem's answers into reply fields: attributes, open flags, errors (logged
//! once, by level), the xattr size protocol, negative entries, and the panic guard every handler
//! runs in. Both transports use these: the fuser adapter hands the fields to fuser's replies, the
//! io_uring ring (`crate::uring`) only encodes them as the kernel's structs.

use std::time::{Instant, SystemTime};

use fuser::{
    Errno, FileAttr, FileType, FopenFlags, Generation, INodeNo, ReplyEmpty, ReplyEntry, ReplyXattr,
    Request, TimeOrNow,
};
use tracing::{debug, error, warn};

use crate::error::{FsError, Level};
use crate::fs::{Attr, Caller, Entry, OpenMode, Opened};
use crate::stats::{bump, OpStats};
use crate::store::{Kind, SetTime};

/// Created files are never passthrough (they are written through the daemon).
pub(crate) fn create_flags(opened: &Opened) -> FopenFlags {
    FopenFlags::FOPEN_DIRECT_IO | noflush(opened)
}

/// `FOPEN_NOFLUSH` when the open's `close` has nothing to report, whatever its mode.
pub(crate) fn noflush(opened: &Opened) -> FopenFlags {
    if opened.noflush {
        FopenFlags::FOPEN_NOFLUSH
    } else {
        FopenFlags::empty()
    }
}

/// The open flags of an open the filesystem did not pass through; `None` for a passthrough
/// open, whose flags depend on whether the kernel takes its backing file.
pub(crate) fn open_flags(opened: &Opened) -> Option<FopenFlags> {
    let noflush = noflush(opened);
    match opened.mode {
        OpenMode::DirectIo => Some(FopenFlags::FOPEN_DIRECT_IO | noflush),
        OpenMode::PageCache { keep: true } => Some(FopenFlags::FOPEN_KEEP_CACHE | noflush),
        OpenMode::PageCache { keep: false } => Some(noflush),
        OpenMode::Passthrough { .. } => None,
    }
}

/// A passthrough open whose backing file the kernel refused (or that a transport cannot
/// register): plain direct I/O, which is allowed since no backing was registered.
pub(crate) fn unbacked_passthrough_flags() -> FopenFlags {
    FopenFlags::FOPEN_DIRECT_IO
}

/// The attributes of a negative entry (node id 0): the kernel remembers "no such name" for the
/// entry's timeout.
pub(crate) fn negative_entry_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        ..file_attr(&Attr::absent())
    }
}

/// `OPENDIR`'s flags: none (listings are read through the daemon each time).
pub(crate) fn opendir_flags() -> FopenFlags {
    FopenFlags::empty()
}

/// The errno of a request cachetta answers without the filesystem: `readlink` (no symlinks
/// here) and `ioctl` (none is ours: every Python `open()` asks `TCGETS`, and the answer is the
/// ordinary "not a terminal", with nothing logged).
pub(crate) const READLINK_ERRNO: Errno = Errno::EINVAL;
pub(crate) const IOCTL_ERRNO: Errno = Errno::ENOTTY;

pub(crate) fn kind(kind: Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::File | Kind::Other => FileType::RegularFile,
    }
}

pub(crate) fn file_attr(a: &Attr) -> FileAttr {
    let st = &a.stat;
    FileAttr {
        ino: INodeNo(a.ino),
        size: st.size,
        blocks: st.blocks,
        atime: st.atime,
        mtime: st.mtime,
        ctime: st.ctime,
        crtime: SystemTime::UNIX_EPOCH,
        kind: kind(st.kind),
        perm: st.perm,
        nlink: st.nlink,
        uid: st.uid,
        gid: st.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

pub(super) fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

pub(crate) fn fail(op: &str, err: FsError) -> Errno {
    match err.level {
        Level::Quiet => debug!(op, errno = err.errno, "{}", err.message),
        Level::Warn => warn!(op, errno = err.errno, "{}", err.message),
        Level::Error => error!(op, errno = err.errno, "{}", err.message),
        Level::Outage => {
            if crate::error::outage_is_new() {
                error!(
                    op,
                    "the backing dir is unreachable ({}); requests answer EIO until it is back",
                    err.message
                );
            } else {
                debug!(op, errno = err.errno, "{}", err.message);
            }
        }
    }
    Errno::from_i32(err.errno)
}

/// Run a request handler, counted and timed in `op`'s stats (two relaxed atomic adds, no
/// lock: a scrape of the metrics never slows a request). A panic inside it is logged once and
/// answered `EIO` (fuser answers a reply that is dropped unsent), and the worker thread lives
/// on to serve the next request.
pub(super) fn guarded(op: &OpStats, req: &Request, ino: u64, handler: impl FnOnce()) {
    counted(op, req.unique().0, ino, req.pid(), handler);
}

/// [`guarded`] for any transport: the request's id, inode and caller's pid, as the kernel gave
/// them. The io_uring transport (`crate::uring`) runs its handlers in it too.
pub(crate) fn counted(op: &OpStats, id: u64, ino: u64, pid: u32, handler: impl FnOnce()) {
    bump(&op.count);
    // One span per request, so `-vv` logs can be followed request by request.
    let _span = tracing::debug_span!("request", op = op.name, id, ino, pid).entered();
    let started = Instant::now();
    caught(op.name, handler);
    op.latency.observe(started.elapsed());
}

/// Run `handler`; a panic is logged once (the reply it drops answers `EIO`).
pub(super) fn caught(op: &'static str, handler: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(handler)) {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        error!(op, "request handler panicked ({why}); answered EIO");
    }
}

pub(super) fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(at) => SetTime::At(at),
    })
}

pub(super) fn reply_entry(reply: ReplyEntry, op: &str, result: Result<Entry, FsError>) {
    match result {
        Ok(e) => reply.entry_with_ttls(&e.ttl, &e.name_ttl, &file_attr(&e.attr), Generation(0)),
        Err(err) => reply.error(fail(op, err)),
    }
}

pub(super) fn reply_empty(reply: ReplyEmpty, op: &str, result: Result<(), FsError>) {
    match result {
        Ok(()) => reply.ok(),
        Err(err) => reply.error(fail(op, err)),
    }
}

/// The answer to `getxattr`/`listxattr` under the xattr size protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum XattrAnswer {
    /// The caller asked with size 0: the value's length.
    Size(u32),
    /// The value, which fits the caller's buffer.
    Value(Vec<u8>),
    Error(Errno),
}

/// The xattr size protocol: size 0 asks for the length; too small a buffer is `ERANGE`.
pub(crate) fn xattr_answer(op: &str, size: u32, result: Result<Vec<u8>, FsError>) -> XattrAnswer {
    match result {
        Ok(value) if size == 0 => XattrAnswer::Size(value.len() as u32),
        Ok(value) if value.len() > size as usize => XattrAnswer::Error(Errno::ERANGE),
        Ok(value) => XattrAnswer::Value(value),
        Err(err) => XattrAnswer::Error(fail(op, err)),
    }
}

pub(super) fn reply_xattr(
    reply: ReplyXattr,
    op: &str,
    size: u32,
    result: Result<Vec<u8>, FsError>,
) {
    match xattr_answer(op, size, result) {
        XattrAnswer::Size(n) => reply.size(n),
        XattrAnswer::Value(value) => reply.data(&value),
        XattrAnswer::Error(errno) => reply.error(errno),
    }
}
