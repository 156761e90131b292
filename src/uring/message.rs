//! One request as the kernel leaves it in a ring entry: `fuse_in_header` in `in_out`, the op's
//! first argument in `op_in`, names and written data in the payload. Decoding is pure, over the
//! entry's buffers, and tested without a kernel; every malformed entry is an error, never a
//! panic. The reply written back into the same entry is [`super::reply`]'s (re-exported here).

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;

use zerocopy::FromBytes;

use super::abi::*;
pub use super::reply::*;

/// What a request asks, decoded. Names and written data borrow the entry's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    Lookup {
        name: &'a OsStr,
    },
    /// `fh` when the kernel names an open file (`FUSE_GETATTR_FH`).
    Getattr {
        fh: Option<u64>,
    },
    Setattr(FuseSetattrIn),
    /// `READLINK`, `SYMLINK`, `MKNOD`, `LINK`: answered without their arguments, as the
    /// adapter answers them.
    Readlink,
    Special,
    Mkdir {
        name: &'a OsStr,
        mode: u32,
        umask: u32,
    },
    Unlink {
        name: &'a OsStr,
    },
    Rmdir {
        name: &'a OsStr,
    },
    Rename {
        name: &'a OsStr,
        newdir: u64,
        newname: &'a OsStr,
        flags: u32,
    },
    Open {
        flags: u32,
    },
    Read {
        fh: u64,
        offset: u64,
        size: u32,
    },
    Write {
        fh: u64,
        offset: u64,
        data: &'a [u8],
    },
    Statfs,
    Release {
        fh: u64,
    },
    Fsync {
        fh: u64,
    },
    Setxattr {
        name: &'a OsStr,
        value: &'a [u8],
        flags: u32,
    },
    Getxattr {
        name: &'a OsStr,
        size: u32,
    },
    Listxattr {
        size: u32,
    },
    Removexattr {
        name: &'a OsStr,
    },
    Flush {
        fh: u64,
    },
    Opendir,
    Readdir {
        fh: u64,
        offset: u64,
        size: u32,
        plus: bool,
    },
    Releasedir {
        fh: u64,
    },
    Fsyncdir,
    Access,
    Create {
        name: &'a OsStr,
        mode: u32,
        umask: u32,
        flags: u32,
    },
    Ioctl,
    /// The kernel's last request at unmount (sent on the ring once it is ready).
    Destroy,
    /// Any other opcode: answered with [`refusal`]'s errno.
    Other,
}

/// A decoded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub unique: u64,
    pub opcode: u32,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub op: Op<'a>,
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
    /// A name in the payload has no terminating NUL within `payload_sz`.
    NameWithoutNul { opcode: u32 },
    /// The op says its data is longer than the payload the kernel wrote (a write, an xattr
    /// value), or asks for a reply longer than the payload can hold (a read, a listing).
    Oversized { opcode: u32, size: u32, room: usize },
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
            Malformed::NameWithoutNul { opcode } => {
                write!(f, "opcode {opcode}: a name in the payload has no terminating NUL")
            }
            Malformed::Oversized { opcode, size, room } => write!(
                f,
                "opcode {opcode}: size {size} is more than the {room} bytes there is room for"
            ),
        }
    }
}

/// Decode the request in an entry: its header buffer and its whole payload buffer. Nothing here
/// can read out of bounds (the headers are fixed-size arrays, the payload is sliced with
/// checks): what is checked is what the kernel says about the request.
pub fn decode<'a>(
    header: &FuseUringReqHeader,
    payload: &'a [u8],
) -> Result<Request<'a>, Malformed> {
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
    let Some(sent) = payload.get(..ent.payload_sz as usize) else {
        return Err(Malformed::PayloadOverrun {
            payload_sz: ent.payload_sz,
            capacity: payload.len(),
        });
    };
    let args = Args {
        opcode: ih.opcode,
        len: ih.len,
        op_in: &header.op_in,
        sent,
        room: payload.len(),
    };
    Ok(Request {
        unique: ih.unique,
        opcode: ih.opcode,
        nodeid: ih.nodeid,
        uid: ih.uid,
        gid: ih.gid,
        pid: ih.pid,
        op: args.op()?,
    })
}

/// One request's arguments: `op_in` and the bytes the kernel wrote to the payload.
struct Args<'h, 'a> {
    opcode: u32,
    len: u32,
    op_in: &'h [u8; FUSE_URING_OP_IN_OUT_SZ],
    sent: &'a [u8],
    /// The payload buffer's size: the most a reply can hold.
    room: usize,
}

impl<'a> Args<'_, 'a> {
    fn op(&self) -> Result<Op<'a>, Malformed> {
        Ok(match self.opcode {
            FUSE_LOOKUP => Op::Lookup {
                name: self.names::<1>()?[0],
            },
            FUSE_GETATTR => {
                let arg: FuseGetattrIn = self.arg()?;
                let fh = (arg.getattr_flags & FUSE_GETATTR_FH != 0).then_some(arg.fh);
                Op::Getattr { fh }
            }
            FUSE_SETATTR => Op::Setattr(self.arg()?),
            FUSE_READLINK => Op::Readlink,
            FUSE_SYMLINK | FUSE_MKNOD | FUSE_LINK => Op::Special,
            FUSE_MKDIR => {
                let arg: FuseMkdirIn = self.arg()?;
                Op::Mkdir {
                    name: self.names::<1>()?[0],
                    mode: arg.mode,
                    umask: arg.umask,
                }
            }
            FUSE_UNLINK => Op::Unlink {
                name: self.names::<1>()?[0],
            },
            FUSE_RMDIR => Op::Rmdir {
                name: self.names::<1>()?[0],
            },
            FUSE_RENAME | FUSE_RENAME2 => {
                let (newdir, flags) = if self.opcode == FUSE_RENAME {
                    (self.arg::<FuseRenameIn>()?.newdir, 0)
                } else {
                    let arg: FuseRename2In = self.arg()?;
                    (arg.newdir, arg.flags)
                };
                let [name, newname] = self.names::<2>()?;
                Op::Rename {
                    name,
                    newdir,
                    newname,
                    flags,
                }
            }
            FUSE_OPEN => Op::Open {
                flags: self.arg::<FuseOpenIn>()?.flags,
            },
            FUSE_READ => {
                let arg: FuseReadIn = self.arg()?;
                Op::Read {
                    fh: arg.fh,
                    offset: arg.offset,
                    size: self.fits(arg.size)?,
                }
            }
            FUSE_WRITE => {
                let arg: FuseWriteIn = self.arg()?;
                let data = self
                    .sent
                    .get(..arg.size as usize)
                    .ok_or(Malformed::Oversized {
                        opcode: self.opcode,
                        size: arg.size,
                        room: self.sent.len(),
                    })?;
                Op::Write {
                    fh: arg.fh,
                    offset: arg.offset,
                    data,
                }
            }
            FUSE_STATFS => Op::Statfs,
            FUSE_RELEASE => Op::Release {
                fh: self.arg::<FuseReleaseIn>()?.fh,
            },
            FUSE_FSYNC => Op::Fsync {
                fh: self.arg::<FuseFsyncIn>()?.fh,
            },
            FUSE_SETXATTR => {
                let arg: FuseSetxattrIn = self.arg()?;
                let (name, rest) = self.name_at(self.sent)?;
                let value = rest.get(..arg.size as usize).ok_or(Malformed::Oversized {
                    opcode: self.opcode,
                    size: arg.size,
                    room: rest.len(),
                })?;
                Op::Setxattr {
                    name,
                    value,
                    flags: arg.flags,
                }
            }
            FUSE_GETXATTR => {
                let arg: FuseGetxattrIn = self.arg()?;
                Op::Getxattr {
                    name: self.names::<1>()?[0],
                    size: self.fits(arg.size)?,
                }
            }
            FUSE_LISTXATTR => Op::Listxattr {
                size: self.fits(self.arg::<FuseGetxattrIn>()?.size)?,
            },
            FUSE_REMOVEXATTR => Op::Removexattr {
                name: self.names::<1>()?[0],
            },
            FUSE_FLUSH => Op::Flush {
                fh: self.arg::<FuseFlushIn>()?.fh,
            },
            FUSE_OPENDIR => {
                self.arg::<FuseOpenIn>()?;
                Op::Opendir
            }
            FUSE_READDIR | FUSE_READDIRPLUS => {
                let arg: FuseReadIn = self.arg()?;
                Op::Readdir {
                    fh: arg.fh,
                    offset: arg.offset,
                    size: self.fits(arg.size)?,
                    plus: self.opcode == FUSE_READDIRPLUS,
                }
            }
            FUSE_RELEASEDIR => Op::Releasedir {
                fh: self.arg::<FuseReleaseIn>()?.fh,
            },
            FUSE_FSYNCDIR => Op::Fsyncdir,
            FUSE_ACCESS => Op::Access,
            FUSE_CREATE => {
                let arg: FuseCreateIn = self.arg()?;
                Op::Create {
                    name: self.names::<1>()?[0],
                    mode: arg.mode,
                    umask: arg.umask,
                    flags: arg.flags,
                }
            }
            FUSE_IOCTL => Op::Ioctl,
            FUSE_DESTROY => Op::Destroy,
            _ => Op::Other,
        })
    }

    /// The op's fixed argument from `op_in`, if `len` says it was sent.
    fn arg<T: FromBytes>(&self) -> Result<T, Malformed> {
        let needed = size_of::<T>();
        let short = Malformed::ShortArgument {
            opcode: self.opcode,
            len: self.len,
            needed,
        };
        if (self.len as usize) < size_of::<FuseInHeader>() + needed {
            return Err(short);
        }
        T::read_from_prefix(&self.op_in[..])
            .map(|(arg, _)| arg)
            .map_err(|_| short)
    }

    /// `N` NUL-terminated names at the start of the payload.
    fn names<const N: usize>(&self) -> Result<[&'a OsStr; N], Malformed> {
        let mut names = [OsStr::new(""); N];
        let mut rest = self.sent;
        for name in &mut names {
            (*name, rest) = self.name_at(rest)?;
        }
        Ok(names)
    }

    fn name_at(&self, bytes: &'a [u8]) -> Result<(&'a OsStr, &'a [u8]), Malformed> {
        let end = bytes
            .iter()
            .position(|&b| b == 0)
            .ok_or(Malformed::NameWithoutNul {
                opcode: self.opcode,
            })?;
        Ok((OsStr::from_bytes(&bytes[..end]), &bytes[end + 1..]))
    }

    /// A reply size the payload can hold.
    fn fits(&self, size: u32) -> Result<u32, Malformed> {
        if size as usize > self.room {
            return Err(Malformed::Oversized {
                opcode: self.opcode,
                size,
                room: self.room,
            });
        }
        Ok(size)
    }
}

/// The opcodes cachetta's fuser adapter serves on the classic transport, with the name of their
/// per-op stats (fuser answers `ENOSYS` to the others; `FORGET`, `BATCH_FORGET` and `INTERRUPT`
/// never come on a ring). `RENAME2` is counted as `rename`, as fuser hands it to `rename`.
pub const SERVED_ON_CLASSIC: &[(u32, &str)] = &[
    (FUSE_LOOKUP, "lookup"),
    (FUSE_GETATTR, "getattr"),
    (FUSE_SETATTR, "setattr"),
    (FUSE_READLINK, "readlink"),
    (FUSE_SYMLINK, "symlink"),
    (FUSE_MKNOD, "mknod"),
    (FUSE_MKDIR, "mkdir"),
    (FUSE_UNLINK, "unlink"),
    (FUSE_RMDIR, "rmdir"),
    (FUSE_RENAME, "rename"),
    (FUSE_LINK, "link"),
    (FUSE_OPEN, "open"),
    (FUSE_READ, "read"),
    (FUSE_WRITE, "write"),
    (FUSE_STATFS, "statfs"),
    (FUSE_RELEASE, "release"),
    (FUSE_FSYNC, "fsync"),
    (FUSE_SETXATTR, "setxattr"),
    (FUSE_GETXATTR, "getxattr"),
    (FUSE_LISTXATTR, "listxattr"),
    (FUSE_REMOVEXATTR, "removexattr"),
    (FUSE_FLUSH, "flush"),
    (FUSE_OPENDIR, "opendir"),
    (FUSE_READDIR, "readdir"),
    (FUSE_RELEASEDIR, "releasedir"),
    (FUSE_FSYNCDIR, "fsyncdir"),
    (FUSE_ACCESS, "access"),
    (FUSE_CREATE, "create"),
    (FUSE_IOCTL, "ioctl"),
    (FUSE_READDIRPLUS, "readdirplus"),
    (FUSE_RENAME2, "rename2"),
    (FUSE_DESTROY, "destroy"),
];

/// The name of an opcode the adapter serves, as the ring's counts print it; `other` otherwise.
pub fn op_name(opcode: u32) -> &'static str {
    SERVED_ON_CLASSIC
        .iter()
        .find(|(op, _)| *op == opcode)
        .map_or("other", |(_, name)| name)
}

/// The errno for an opcode the ring does not serve (all but `STATFS` and `GETATTR` under step
/// 2's experiment; those the adapter does not implement either). Two answers, chosen so that nothing the kernel learns from them outlives
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
    if SERVED_ON_CLASSIC.iter().any(|(op, _)| *op == opcode) {
        libc::EIO
    } else {
        libc::ENOSYS
    }
}

#[cfg(test)]
pub(super) mod tests;
