//! One request as the kernel leaves it in a ring entry, and the reply written back into the same
//! entry: decoding `fuse_in_header` and the op's argument, encoding `fuse_out_header` and the
//! reply body. Pure functions over the entry's buffers, tested without a kernel; nothing here
//! calls the filesystem or touches a ring.

use std::fmt;
use std::time::SystemTime;

use zerocopy::{FromBytes, IntoBytes};

use super::abi::{
    FuseAttr, FuseAttrOut, FuseGetattrIn, FuseInHeader, FuseKstatfs, FuseOutHeader,
    FuseUringReqHeader, FUSE_GETATTR, FUSE_GETATTR_FH, FUSE_STATFS,
};
use crate::fs::Entry;
use crate::fuse::file_attr;

/// What a request asks, of the operations the ring serves so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Statfs,
    /// `fh` when the kernel names an open file (`FUSE_GETATTR_FH`).
    Getattr {
        fh: Option<u64>,
    },
    /// Any other opcode: answered with [`refusal`]'s errno.
    Other,
}

/// A decoded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub unique: u64,
    pub opcode: u32,
    pub nodeid: u64,
    pub pid: u32,
    pub op: Op,
}

/// Why an entry's contents cannot be a request from this kernel. Each is answered `EIO` (to the
/// entry's `commit_id`, which the kernel looks the request up by) and logged once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// `fuse_in_header.len` is shorter than the header itself.
    ShortHeader { len: u32 },
    /// `unique` is 0, which the kernel never gives a request that expects a reply.
    NoUnique,
    /// The header's `unique` is not the entry's `commit_id`.
    CommitMismatch { unique: u64, commit_id: u64 },
    /// The op's argument is longer than `len` says was sent.
    ShortArgument {
        opcode: u32,
        len: u32,
        needed: usize,
    },
    /// `payload_sz` is more than the payload buffer holds.
    PayloadOverrun { payload_sz: u32, capacity: usize },
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Malformed::ShortHeader { len } => write!(
                f,
                "request length {len} is shorter than fuse_in_header ({} bytes)",
                size_of::<FuseInHeader>()
            ),
            Malformed::NoUnique => write!(f, "request has unique 0"),
            Malformed::CommitMismatch { unique, commit_id } => {
                write!(f, "request unique {unique} is not the entry's commit_id {commit_id}")
            }
            Malformed::ShortArgument {
                opcode,
                len,
                needed,
            } => write!(
                f,
                "opcode {opcode}: request length {len} leaves no room for its {needed}-byte argument"
            ),
            Malformed::PayloadOverrun {
                payload_sz,
                capacity,
            } => write!(
                f,
                "payload_sz {payload_sz} is more than the {capacity}-byte payload buffer"
            ),
        }
    }
}

/// Decode the request in an entry's header buffer; `payload_len` is the size of the entry's
/// payload buffer. The headers are fixed-size arrays, so nothing here can read out of bounds:
/// what is checked is what the kernel says about the request.
pub fn decode(header: &FuseUringReqHeader, payload_len: usize) -> Result<Request, Malformed> {
    let (ih, _) = FuseInHeader::read_from_prefix(&header.in_out[..])
        .expect("in_out (128 bytes) holds a fuse_in_header (40)");
    let ent = &header.ring_ent_in_out;
    if (ih.len as usize) < size_of::<FuseInHeader>() {
        return Err(Malformed::ShortHeader { len: ih.len });
    }
    if ih.unique == 0 {
        return Err(Malformed::NoUnique);
    }
    if ih.unique != ent.commit_id {
        return Err(Malformed::CommitMismatch {
            unique: ih.unique,
            commit_id: ent.commit_id,
        });
    }
    if ent.payload_sz as usize > payload_len {
        return Err(Malformed::PayloadOverrun {
            payload_sz: ent.payload_sz,
            capacity: payload_len,
        });
    }
    let op = match ih.opcode {
        FUSE_STATFS => Op::Statfs,
        FUSE_GETATTR => {
            let needed = size_of::<FuseGetattrIn>();
            if (ih.len as usize) < size_of::<FuseInHeader>() + needed {
                return Err(Malformed::ShortArgument {
                    opcode: ih.opcode,
                    len: ih.len,
                    needed,
                });
            }
            let (arg, _) = FuseGetattrIn::read_from_prefix(&header.op_in[..])
                .expect("op_in (128 bytes) holds a fuse_getattr_in (16)");
            let fh = (arg.getattr_flags & FUSE_GETATTR_FH != 0).then_some(arg.fh);
            Op::Getattr { fh }
        }
        _ => Op::Other,
    };
    Ok(Request {
        unique: ih.unique,
        opcode: ih.opcode,
        nodeid: ih.nodeid,
        pid: ih.pid,
        op,
    })
}

/// A reply, before it is written into the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Attr(FuseAttrOut),
    Statfs(FuseKstatfs),
    /// A positive errno.
    Error(i32),
}

/// Write `reply` to request `unique` into the entry: `fuse_out_header` in `in_out`, the body at
/// the start of the payload, its length in `ring_ent_in_out.payload_sz` (the kernel refuses a
/// body whose length is not exactly the reply's struct). An errno the kernel would refuse
/// (not in 1..512) and a body the payload cannot hold become `EIO`.
pub fn encode(header: &mut FuseUringReqHeader, payload: &mut [u8], unique: u64, reply: &Reply) {
    let body: &[u8] = match reply {
        Reply::Attr(out) => out.as_bytes(),
        Reply::Statfs(out) => out.as_bytes(),
        Reply::Error(_) => &[],
    };
    let (error, body) = match *reply {
        Reply::Error(errno) if (1..512).contains(&errno) => (-errno, body),
        Reply::Error(_) => (-libc::EIO, body),
        _ if body.len() > payload.len() => (-libc::EIO, &[][..]),
        _ => (0, body),
    };
    payload[..body.len()].copy_from_slice(body);
    let oh = FuseOutHeader {
        len: (size_of::<FuseOutHeader>() + body.len()) as u32,
        error,
        unique,
    };
    oh.write_to_prefix(&mut header.in_out[..])
        .expect("in_out (128 bytes) holds a fuse_out_header (16)");
    header.ring_ent_in_out.payload_sz = body.len() as u32;
}

/// The opcodes cachetta's fuser adapter serves on the classic transport (fuser answers
/// `ENOSYS` to the others; `FORGET`, `BATCH_FORGET` and `INTERRUPT` never come on a ring).
const SERVED_ON_CLASSIC: &[u32] = &[
    1,  // LOOKUP
    3,  // GETATTR
    4,  // SETATTR
    5,  // READLINK
    6,  // SYMLINK
    8,  // MKNOD
    9,  // MKDIR
    10, // UNLINK
    11, // RMDIR
    12, // RENAME
    13, // LINK
    14, // OPEN
    15, // READ
    16, // WRITE
    17, // STATFS
    18, // RELEASE
    20, // FSYNC
    21, // SETXATTR
    22, // GETXATTR
    23, // LISTXATTR
    24, // REMOVEXATTR
    25, // FLUSH
    27, // OPENDIR
    28, // READDIR
    29, // RELEASEDIR
    30, // FSYNCDIR
    34, // ACCESS
    35, // CREATE
    39, // IOCTL
    44, // READDIRPLUS
    45, // RENAME2 (fuser hands it to `rename`)
];

/// The errno for an opcode the ring does not serve yet (step 2 of issue #24 serves `STATFS` and
/// `GETATTR` only). Two answers, chosen so that nothing the kernel learns from them outlives
/// what it would learn on the classic transport:
/// - `ENOSYS` where fuser answers `ENOSYS` today (an opcode the adapter does not implement,
///   e.g. `STATX`): the kernel then does what it does on classic (for `STATX`, remember
///   `no_statx` and send `GETATTR` instead, which is how a `stat` asking for the birth time
///   still works).
/// - `EIO` for an opcode cachetta serves on classic: `ENOSYS` would make the kernel stop
///   sending many of them for the connection's life (`getxattr`, `listxattr`, `access`,
///   `flush`, `fsync`, `create`... FUSE-NOTES "Traps"), and `EOPNOTSUPP` would read as "this
///   filesystem cannot", where the truth is "this transport does not yet". `EIO` latches
///   nothing in the kernel and tells the caller the request failed.
pub fn refusal(opcode: u32) -> i32 {
    if SERVED_ON_CLASSIC.contains(&opcode) {
        libc::EIO
    } else {
        libc::ENOSYS
    }
}

/// `fuse_attr_out` of an entry: the attributes the fuser adapter gives on classic
/// (`fuse::file_attr`), encoded as the kernel's struct.
pub fn attr_out(entry: &Entry) -> FuseAttrOut {
    FuseAttrOut {
        attr_valid: entry.ttl.as_secs(),
        attr_valid_nsec: entry.ttl.subsec_nanos(),
        dummy: 0,
        attr: fuse_attr(&file_attr(&entry.attr)),
    }
}

/// `fuse_attr` of the adapter's attributes, field by field.
pub fn fuse_attr(a: &fuser::FileAttr) -> FuseAttr {
    let (atime, atimensec) = split_time(a.atime);
    let (mtime, mtimensec) = split_time(a.mtime);
    let (ctime, ctimensec) = split_time(a.ctime);
    FuseAttr {
        ino: a.ino.0,
        size: a.size,
        blocks: a.blocks,
        atime,
        mtime,
        ctime,
        atimensec,
        mtimensec,
        ctimensec,
        mode: mode_type(a.kind) | u32::from(a.perm),
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: a.flags,
    }
}

/// The `S_IF*` bits of a file type.
pub fn mode_type(kind: fuser::FileType) -> u32 {
    use fuser::FileType;
    match kind {
        FileType::NamedPipe => libc::S_IFIFO,
        FileType::CharDevice => libc::S_IFCHR,
        FileType::BlockDevice => libc::S_IFBLK,
        FileType::Directory => libc::S_IFDIR,
        FileType::RegularFile => libc::S_IFREG,
        FileType::Symlink => libc::S_IFLNK,
        FileType::Socket => libc::S_IFSOCK,
    }
}

/// `fuse_kstatfs` of the backing filesystem's `statvfs`, narrowed as the adapter narrows it.
pub fn kstatfs(s: &rustix::fs::StatVfs) -> FuseKstatfs {
    FuseKstatfs {
        blocks: s.f_blocks,
        bfree: s.f_bfree,
        bavail: s.f_bavail,
        files: s.f_files,
        ffree: s.f_ffree,
        bsize: s.f_bsize as u32,
        namelen: s.f_namemax as u32,
        frsize: s.f_frsize as u32,
        padding: 0,
        spare: [0; 6],
    }
}

/// Seconds (the kernel reads the `u64` as signed) and nanoseconds since the epoch; a time
/// before it is negative seconds with the nanoseconds counted forward, as `timespec` has it.
fn split_time(t: SystemTime) -> (u64, u32) {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX) as u64,
            d.subsec_nanos(),
        ),
        Err(before) => {
            let d = before.duration();
            let secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => (secs as u64, 0),
                nanos => (secs.saturating_sub(1) as u64, 1_000_000_000 - nanos),
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests;
