//! Each decoded request answered by the same `CacheFs` call the fuser adapter makes, its result
//! turned into reply fields by the adapter's own rules (`crate::fuse`: attributes, open flags,
//! errors logged once, the xattr size protocol), and only encoded here. A read-through lookup
//! is answered later, from the refresh worker, through the ring's mailbox.

use std::sync::Arc;

use super::super::abi::*;
use super::super::message::{
    attr_out, encode, entry_out, entry_out_of, kstatfs, open_out, time_of, Listing, Op, Reply,
    Request,
};
use super::super::ring::Defer;
use super::Passthrough;
use fuser::FopenFlags;

use crate::error::FsError;
use crate::fs::{CacheFs, Caller, Changes, Entry, Lookup, OpenMode, Opened};
use crate::fuse::{
    create_flags, fail, file_attr, kind, negative_entry_attr, noflush, open_flags, opendir_flags,
    unbacked_passthrough_flags, xattr_answer, RawBacking, Registered, XattrAnswer, IOCTL_ERRNO,
    READLINK_ERRNO,
};
use crate::stats::{OpStats, Requests};
use crate::store::SetTime;

/// The per-op stats an opcode is counted in, as the adapter counts it; `None` for an opcode
/// the adapter does not serve.
pub fn op_stats(r: &Requests, opcode: u32) -> Option<&OpStats> {
    Some(match opcode {
        FUSE_LOOKUP => &r.lookup,
        FUSE_GETATTR => &r.getattr,
        FUSE_SETATTR => &r.setattr,
        FUSE_READLINK => &r.readlink,
        FUSE_SYMLINK => &r.symlink,
        FUSE_MKNOD => &r.mknod,
        FUSE_MKDIR => &r.mkdir,
        FUSE_UNLINK => &r.unlink,
        FUSE_RMDIR => &r.rmdir,
        FUSE_RENAME | FUSE_RENAME2 => &r.rename,
        FUSE_LINK => &r.link,
        FUSE_OPEN => &r.open,
        FUSE_READ => &r.read,
        FUSE_WRITE => &r.write,
        FUSE_STATFS => &r.statfs,
        FUSE_RELEASE => &r.release,
        FUSE_FSYNC => &r.fsync,
        FUSE_SETXATTR => &r.setxattr,
        FUSE_GETXATTR => &r.getxattr,
        FUSE_LISTXATTR => &r.listxattr,
        FUSE_REMOVEXATTR => &r.removexattr,
        FUSE_FLUSH => &r.flush,
        FUSE_OPENDIR => &r.opendir,
        FUSE_READDIR => &r.readdir,
        FUSE_RELEASEDIR => &r.releasedir,
        FUSE_FSYNCDIR => &r.fsyncdir,
        FUSE_ACCESS => &r.access,
        FUSE_CREATE => &r.create,
        FUSE_IOCTL => &r.ioctl,
        FUSE_READDIRPLUS => &r.readdirplus,
        _ => return None,
    })
}

/// The reply to `req`, or `None` when it comes later through `defer`.
pub fn respond(
    fs: &Arc<CacheFs>,
    passthrough: Option<&Passthrough>,
    req: &Request,
    defer: &Defer,
) -> Option<Reply> {
    let caller = Caller {
        uid: req.uid,
        gid: req.gid,
        pid: req.pid,
    };
    let ino = req.nodeid;
    Some(match req.op {
        Op::Lookup { name } => match fs.lookup_answer(ino, name) {
            Ok(Lookup::Found(entry)) => Reply::Entry(entry_out(&entry)),
            Ok(Lookup::Filling(fill)) => {
                // The refresh worker answers when the command ends; the ring goes on serving.
                let later = defer.later();
                let unique = req.unique;
                fs.lookup_filling(fill, move |result| {
                    let reply = entry_reply("lookup", result);
                    later.reply(Box::new(move |header, payload| {
                        encode(header, payload, unique, &reply)
                    }));
                });
                return None;
            }
            Ok(Lookup::Missing { ttl }) if !ttl.is_zero() => {
                Reply::Entry(entry_out_of(&negative_entry_attr(), ttl))
            }
            Ok(Lookup::Missing { .. }) => Reply::Error(libc::ENOENT),
            Err(err) => error("lookup", err),
        },
        Op::Getattr { fh } => attr_reply("getattr", fs.getattr(ino, fh)),
        Op::Setattr(arg) => attr_reply(
            "setattr",
            fs.setattr(caller, ino, setattr_fh(&arg), changes(&arg)),
        ),
        Op::Readlink => Reply::Error(READLINK_ERRNO.code()),
        Op::Special => Reply::Error(fs.refuse_special().errno),
        Op::Mkdir { name, mode, umask } => {
            entry_reply("mkdir", fs.mkdir(caller, ino, name, mode, umask))
        }
        Op::Unlink { name } => empty_reply("unlink", fs.unlink(ino, name)),
        Op::Rmdir { name } => empty_reply("rmdir", fs.rmdir(ino, name)),
        Op::Rename {
            name,
            newdir,
            newname,
            flags,
        } => empty_reply("rename", fs.rename(ino, name, newdir, newname, flags)),
        Op::Open { flags } => match fs.open(caller, ino, flags as i32) {
            Ok(opened) => Reply::Open(opened_out(fs, passthrough, &opened)),
            Err(err) => error("open", err),
        },
        Op::Read { fh, offset, size } => match fs.read(fh, offset, size) {
            Ok(data) => Reply::Data(data),
            Err(err) => error("read", err),
        },
        Op::Write { fh, offset, data } => match fs.write(fh, offset, data) {
            Ok(size) => Reply::Written(FuseWriteOut { size, padding: 0 }),
            Err(err) => error("write", err),
        },
        Op::Statfs => match fs.statfs() {
            Ok(s) => Reply::Statfs(kstatfs(&s)),
            Err(err) => error("statfs", err),
        },
        Op::Release { fh } => {
            if let (Some((ino, generation)), Some(p)) = (fs.release(fh), passthrough) {
                // The last open of a pin: the kernel no longer needs its backing.
                p.backings.released(ino, generation);
            }
            Reply::Empty
        }
        Op::Fsync { fh } => empty_reply("fsync", fs.fsync(fh)),
        Op::Setxattr { name, value, flags } => {
            empty_reply("setxattr", fs.setxattr(ino, name, value, flags as i32))
        }
        Op::Getxattr { name, size } => {
            xattr_reply(xattr_answer("getxattr", size, fs.getxattr(ino, name)))
        }
        Op::Listxattr { size } => xattr_reply(xattr_answer("listxattr", size, fs.listxattr(ino))),
        Op::Removexattr { name } => empty_reply("removexattr", fs.removexattr(ino, name)),
        Op::Flush { fh } => empty_reply("flush", fs.flush(fh)),
        Op::Opendir => match fs.opendir(ino) {
            Ok(fh) => Reply::Open(open_out(fh, opendir_flags())),
            Err(err) => error("opendir", err),
        },
        Op::Readdir {
            fh,
            offset,
            size,
            plus: false,
        } => {
            let mut listing = Listing::new(size);
            match fs.readdir(fh, offset, |next, ino, item, name| {
                listing.add(ino, next, kind(item), name)
            }) {
                Ok(()) => listing.into_reply(),
                Err(err) => error("readdir", err),
            }
        }
        Op::Readdir {
            fh,
            offset,
            size,
            plus: true,
        } => {
            let mut listing = Listing::new(size);
            match fs.readdirplus(fh, offset, |next, name, e| {
                let attr = file_attr(&e.attr);
                listing.add_plus(&entry_out_of(&attr, e.ttl), next, attr.kind, name)
            }) {
                Ok(()) => listing.into_reply(),
                Err(err) => error("readdirplus", err),
            }
        }
        Op::Releasedir { fh } => {
            fs.releasedir(fh);
            Reply::Empty
        }
        // As the adapter: nothing to sync, and the backing files' own permissions decide.
        Op::Fsyncdir | Op::Access => Reply::Empty,
        Op::Create {
            name,
            mode,
            umask,
            flags,
        } => match fs.create(caller, ino, name, mode, umask, flags as i32) {
            Ok((e, opened)) => {
                Reply::Created(entry_out(&e), open_out(opened.fh, create_flags(&opened)))
            }
            Err(err) => error("create", err),
        },
        Op::Ioctl => Reply::Error(IOCTL_ERRNO.code()),
        Op::Destroy | Op::Other => Reply::Error(libc::ENOSYS),
    })
}

/// An open answered as the filesystem decided, as the adapter answers it: passthrough with the
/// pin's backing (registered here on its first open, on the ring's duplicate of the
/// connection), page cache, or direct I/O when the kernel refused the backing.
fn opened_out(fs: &CacheFs, passthrough: Option<&Passthrough>, opened: &Opened) -> FuseOpenOut {
    let (OpenMode::Passthrough { file, generation }, Some(p)) = (&opened.mode, passthrough) else {
        // `open_flags` answers every mode but passthrough.
        return open_out(
            opened.fh,
            open_flags(opened).unwrap_or_else(unbacked_passthrough_flags),
        );
    };
    let slot = p.backings.backing(fs, opened.ino, *generation, || {
        RawBacking::register(&p.dev, file).map(Registered::Raw)
    });
    match slot.registered() {
        Some(Registered::Raw(backing)) => FuseOpenOut {
            backing_id: backing.id() as i32,
            ..open_out(opened.fh, FopenFlags::FOPEN_PASSTHROUGH | noflush(opened))
        },
        // Refused (or fuser's, whose number the ring cannot read; a mount's opens all come on
        // one transport): no backing, so plain direct I/O is allowed.
        _ => open_out(opened.fh, unbacked_passthrough_flags()),
    }
}

fn error(op: &str, err: FsError) -> Reply {
    Reply::Error(fail(op, err).code())
}

fn entry_reply(op: &str, result: Result<Entry, FsError>) -> Reply {
    match result {
        Ok(e) => Reply::Entry(entry_out(&e)),
        Err(err) => error(op, err),
    }
}

fn attr_reply(op: &str, result: Result<Entry, FsError>) -> Reply {
    match result {
        Ok(e) => Reply::Attr(attr_out(&e)),
        Err(err) => error(op, err),
    }
}

fn empty_reply(op: &str, result: Result<(), FsError>) -> Reply {
    match result {
        Ok(()) => Reply::Empty,
        Err(err) => error(op, err),
    }
}

fn xattr_reply(answer: XattrAnswer) -> Reply {
    match answer {
        XattrAnswer::Size(size) => Reply::XattrSize(FuseGetxattrOut { size, padding: 0 }),
        XattrAnswer::Value(value) => Reply::Data(value),
        XattrAnswer::Error(errno) => Reply::Error(errno.code()),
    }
}

fn setattr_fh(arg: &FuseSetattrIn) -> Option<u64> {
    (arg.valid & FATTR_FH != 0).then_some(arg.fh)
}

/// What a `setattr` asks to change, as fuser decodes `fuse_setattr_in` for the adapter.
fn changes(arg: &FuseSetattrIn) -> Changes {
    let set = |bit: u32| arg.valid & bit != 0;
    let time = |bit, now, secs, nsec| {
        set(bit).then(|| {
            if set(now) {
                SetTime::Now
            } else {
                SetTime::At(time_of(secs, nsec))
            }
        })
    };
    Changes {
        mode: set(FATTR_MODE).then_some(arg.mode),
        uid: set(FATTR_UID).then_some(arg.uid),
        gid: set(FATTR_GID).then_some(arg.gid),
        size: set(FATTR_SIZE).then_some(arg.size),
        atime: time(FATTR_ATIME, FATTR_ATIME_NOW, arg.atime, arg.atimensec),
        mtime: time(FATTR_MTIME, FATTR_MTIME_NOW, arg.mtime, arg.mtimensec),
    }
}

#[cfg(test)]
mod tests;
