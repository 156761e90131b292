//! A reply written back into a ring entry: `fuse_out_header` in `in_out`, the body in the
//! payload, its length in `payload_sz`; and the kernel structs of the fields the fuser adapter
//! decides (`crate::fuse`: attributes, entries, open flags), encoded and nothing more. Pure
//! functions over the entry's buffers, tested without a kernel.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime};

use zerocopy::IntoBytes;

use super::abi::*;
use crate::fs::Entry;
use crate::fuse::file_attr;

/// A reply, before it is written into the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Attr(FuseAttrOut),
    Entry(FuseEntryOut),
    Open(FuseOpenOut),
    /// `CREATE`: the entry, then the open.
    Created(FuseEntryOut, FuseOpenOut),
    Written(FuseWriteOut),
    Statfs(FuseKstatfs),
    /// The length of an xattr value or list, when the caller asked with size 0.
    XattrSize(FuseGetxattrOut),
    /// Bytes as they are: read data, an xattr value or list, a directory listing.
    Data(Vec<u8>),
    /// Success with no body.
    Empty,
    /// A positive errno.
    Error(i32),
}

/// Write `reply` to request `unique` into the entry: `fuse_out_header` in `in_out`, the body at
/// the start of the payload, its length in `ring_ent_in_out.payload_sz` (the kernel refuses a
/// body whose length is not exactly the reply's struct). An errno the kernel would refuse
/// (not in 1..512) and a body the payload cannot hold become `EIO`.
pub fn encode(header: &mut FuseUringReqHeader, payload: &mut [u8], unique: u64, reply: &Reply) {
    let parts: [&[u8]; 2] = match reply {
        Reply::Attr(out) => [out.as_bytes(), &[]],
        Reply::Entry(out) => [out.as_bytes(), &[]],
        Reply::Open(out) => [out.as_bytes(), &[]],
        Reply::Created(entry, open) => [entry.as_bytes(), open.as_bytes()],
        Reply::Written(out) => [out.as_bytes(), &[]],
        Reply::Statfs(out) => [out.as_bytes(), &[]],
        Reply::XattrSize(out) => [out.as_bytes(), &[]],
        Reply::Data(data) => [data, &[]],
        Reply::Empty | Reply::Error(_) => [&[], &[]],
    };
    let size = parts[0].len() + parts[1].len();
    let (error, size) = match *reply {
        Reply::Error(errno) if (1..512).contains(&errno) => (-errno, 0),
        Reply::Error(_) => (-libc::EIO, 0),
        _ if size > payload.len() => (-libc::EIO, 0),
        _ => (0, size),
    };
    if size > 0 {
        let (first, second) = payload.split_at_mut(parts[0].len());
        first.copy_from_slice(parts[0]);
        second[..parts[1].len()].copy_from_slice(parts[1]);
    }
    let oh = FuseOutHeader {
        len: (size_of::<FuseOutHeader>() + size) as u32,
        error,
        unique,
    };
    oh.write_to_prefix(&mut header.in_out[..])
        .expect("in_out (128 bytes) holds a fuse_out_header (16)");
    header.ring_ent_in_out.payload_sz = size as u32;
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
pub(crate) fn split_time(t: SystemTime) -> (u64, u32) {
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

/// `fuse_entry_out` of an entry: node id = inode, generation 0, the entry's timeouts for the
/// name and the attributes, as the adapter replies.
pub fn entry_out(entry: &Entry) -> FuseEntryOut {
    FuseEntryOut {
        entry_valid: entry.name_ttl.as_secs(),
        entry_valid_nsec: entry.name_ttl.subsec_nanos(),
        ..entry_out_of(&file_attr(&entry.attr), entry.ttl)
    }
}

/// `fuse_entry_out` of the adapter's attributes and a timeout (a negative entry has node id 0).
pub fn entry_out_of(attr: &fuser::FileAttr, ttl: Duration) -> FuseEntryOut {
    FuseEntryOut {
        nodeid: attr.ino.0,
        generation: 0,
        entry_valid: ttl.as_secs(),
        attr_valid: ttl.as_secs(),
        entry_valid_nsec: ttl.subsec_nanos(),
        attr_valid_nsec: ttl.subsec_nanos(),
        attr: fuse_attr(attr),
    }
}

/// `fuse_open_out` without a backing id.
pub fn open_out(fh: u64, flags: fuser::FopenFlags) -> FuseOpenOut {
    FuseOpenOut {
        fh,
        open_flags: flags.bits(),
        backing_id: 0,
    }
}

/// A `READDIR` or `READDIRPLUS` reply, built entry by entry up to the size the kernel asked.
#[derive(Debug)]
pub struct Listing {
    buf: Vec<u8>,
    size: usize,
}

impl Listing {
    pub fn new(size: u32) -> Self {
        Listing {
            buf: Vec::new(),
            size: size as usize,
        }
    }

    /// Add a `fuse_dirent`; `true` when it does not fit (the listing is full), as fuser's
    /// `ReplyDirectory::add` answers.
    pub fn add(&mut self, ino: u64, next: u64, kind: fuser::FileType, name: &OsStr) -> bool {
        self.push(None, ino, next, kind, name)
    }

    /// Add a `fuse_direntplus`: the entry, then its `fuse_dirent`.
    pub fn add_plus(
        &mut self,
        entry: &FuseEntryOut,
        next: u64,
        kind: fuser::FileType,
        name: &OsStr,
    ) -> bool {
        self.push(Some(entry), entry.nodeid, next, kind, name)
    }

    fn push(
        &mut self,
        entry: Option<&FuseEntryOut>,
        ino: u64,
        next: u64,
        kind: fuser::FileType,
        name: &OsStr,
    ) -> bool {
        let name = name.as_bytes();
        let head = entry.map_or(0, |_| size_of::<FuseEntryOut>()) + size_of::<FuseDirent>();
        let len = (head + name.len()).next_multiple_of(FUSE_DIRENT_ALIGN);
        if self.buf.len() + len > self.size {
            return true;
        }
        let start = self.buf.len();
        if let Some(entry) = entry {
            self.buf.extend_from_slice(entry.as_bytes());
        }
        let dirent = FuseDirent {
            ino,
            off: next,
            namelen: name.len() as u32,
            typ: mode_type(kind) >> 12,
        };
        self.buf.extend_from_slice(dirent.as_bytes());
        self.buf.extend_from_slice(name);
        self.buf.resize(start + len, 0);
        false
    }

    pub fn into_reply(self) -> Reply {
        Reply::Data(self.buf)
    }
}

/// The time a `setattr` names: seconds (signed, as the kernel means them) and nanoseconds.
pub fn time_of(secs: u64, nsec: u32) -> SystemTime {
    let secs = secs as i64;
    let nanos = Duration::from_nanos(u64::from(nsec.min(999_999_999)));
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64) + nanos
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nanos
    }
}
