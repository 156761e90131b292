//! The `fuser::Filesystem` adapter: each handler calls the plain [`CacheFs`] and turns the
//! result into a reply. Nothing else lives here; errors are logged once, by level.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, Generation, INodeNo, InitFlags, IoctlFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tracing::{info, warn};

use crate::fs::{CacheFs, Changes, Lookup, OpenMode, Opened};

/// The adapter; it shares the filesystem with the daemon (which keeps an `Arc` for shutdown).
pub struct FuseAdapter {
    fs: Arc<CacheFs>,
    /// The kernel passthrough backing of each inode pin whose reads are passed through,
    /// shared with the io_uring ring.
    backings: Arc<Backings>,
    /// Called once the session ends (the kernel connection is gone).
    on_destroy: Option<Box<dyn FnOnce() + Send + Sync>>,
    /// Set when the daemon has io_uring rings ready: `init` asks for FUSE-over-io_uring and
    /// stores whether the kernel granted it.
    ring: Option<Arc<AtomicBool>>,
}

impl std::fmt::Debug for FuseAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FuseAdapter").finish_non_exhaustive()
    }
}

impl FuseAdapter {
    pub fn new(fs: Arc<CacheFs>) -> Self {
        FuseAdapter {
            fs,
            backings: Arc::default(),
            on_destroy: None,
            ring: None,
        }
    }

    /// The passthrough backings, for the io_uring ring to share.
    pub fn backings(&self) -> Arc<Backings> {
        self.backings.clone()
    }

    /// Ask the kernel for FUSE-over-io_uring at INIT; `granted` says afterwards whether it
    /// agreed. Only for a daemon whose rings already exist (`crate::uring`): once granted, the
    /// kernel holds every request until each queue has a ring entry.
    pub fn offer_ring(mut self, granted: Arc<AtomicBool>) -> Self {
        self.ring = Some(granted);
        self
    }

    /// Run `f` when the session ends: the mount was unmounted, by us or from outside.
    pub fn on_destroy(mut self, f: Box<dyn FnOnce() + Send + Sync>) -> Self {
        self.on_destroy = Some(f);
        self
    }

    /// Answer an open as the filesystem decided: passthrough (registering the inode's
    /// backing file with the kernel on its first open), page cache, or direct I/O.
    fn reply_opened(&self, reply: ReplyOpen, opened: Opened) {
        let fh = FileHandle(opened.fh);
        let OpenMode::Passthrough { file, generation } = &opened.mode else {
            // `open_flags` answers every mode but passthrough.
            let flags = open_flags(&opened).unwrap_or_else(unbacked_passthrough_flags);
            return reply.opened(fh, flags);
        };
        let slot = self
            .backings
            .backing(&self.fs, opened.ino, *generation, || {
                reply.open_backing(&**file).map(Registered::Fuser)
            });
        match slot.registered() {
            Some(Registered::Fuser(id)) => reply.opened_passthrough(fh, noflush(&opened), id),
            // No backing was registered (or the ring's, which fuser cannot send; a mount's
            // opens all come on one transport), so plain direct I/O is allowed here.
            _ => reply.opened(fh, unbacked_passthrough_flags()),
        }
    }
}

mod backing;
pub(crate) use backing::{Backings, RawBacking, Registered};
mod reply;
use reply::*;
pub(crate) use reply::{
    counted, create_flags, fail, file_attr, kind, negative_entry_attr, noflush, open_flags,
    opendir_flags, unbacked_passthrough_flags, xattr_answer, XattrAnswer, IOCTL_ERRNO,
    READLINK_ERRNO,
};

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Kernel passthrough (Linux >= 6.9, root): large reads never reach the daemon.
        let wanted = self.fs.passthrough_wanted();
        // Lookups in one directory may run at once (a read-through waiting for its command
        // must not hold up its neighbours); the inode table is locked on its own.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS) {
            warn!(?missing, "kernel lacks parallel directory operations");
        }
        // Listings carry attributes, so `ls -l` needs no lookup per name.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS) {
            warn!(?missing, "kernel lacks readdirplus");
        }
        let ring = self.ring.as_ref().is_some_and(|ring| {
            // The ring's payload buffers were sized for this max_write and for a readahead no
            // larger (fuser's max_pages follows the larger of the two). Lowering readahead
            // fails only when the kernel's offer is already smaller, which is as good.
            let _ = config.set_max_readahead(crate::uring::ring::MAX_WRITE);
            let asked = config.set_max_write(crate::uring::ring::MAX_WRITE).is_ok()
                && config
                    .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                    .is_ok();
            ring.store(asked, Ordering::SeqCst);
            asked
        });
        // Both transports register backing files (`Backings`).
        let granted = wanted
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        // Atomic O_TRUNC is deliberately not requested: see `CacheFs::truncate_of_fresh_open`.
        self.fs.enable_passthrough(granted);
        info!(
            passthrough = granted,
            io_uring = ring,
            "kernel connection ready"
        );
        Ok(())
    }

    fn destroy(&mut self) {
        self.fs.shutdown();
        if let Some(f) = self.on_destroy.take() {
            f();
        }
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        guarded(&self.fs.requests().lookup, req, parent.0, move || {
            match self.fs.lookup_answer(parent.0, name) {
                Ok(Lookup::Found(entry)) => reply_entry(reply, "lookup", Ok(entry)),
                // The refresh worker replies when the command ends: the workers stay free.
                Ok(Lookup::Filling(fill)) => self
                    .fs
                    .lookup_filling(fill, move |result| reply_entry(reply, "lookup", result)),
                Ok(Lookup::Missing { ttl }) if !ttl.is_zero() => {
                    reply.entry(&ttl, &negative_entry_attr(), Generation(0));
                }
                Ok(Lookup::Missing { .. }) => reply.error(Errno::ENOENT),
                Err(err) => reply.error(fail("lookup", err)),
            }
        });
    }

    fn forget(&self, req: &Request, ino: INodeNo, nlookup: u64) {
        guarded(&self.fs.requests().forget, req, ino.0, move || {
            self.fs.forget(ino.0, nlookup);
        });
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        guarded(&self.fs.requests().getattr, req, ino.0, move || {
            let answer = self.fs.getattr(ino.0, fh.map(|f| f.0));
            match answer {
                Ok(e) => reply.attr(&e.ttl, &file_attr(&e.attr)),
                Err(err) => reply.error(fail("getattr", err)),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        guarded(&self.fs.requests().setattr, req, ino.0, move || {
            let changes = Changes {
                mode,
                uid,
                gid,
                size,
                atime: set_time(atime),
                mtime: set_time(mtime),
            };
            match self
                .fs
                .setattr(caller(req), ino.0, fh.map(|f| f.0), changes)
            {
                Ok(e) => reply.attr(&e.ttl, &file_attr(&e.attr)),
                Err(err) => reply.error(fail("setattr", err)),
            }
        });
    }

    fn readlink(&self, req: &Request, _ino: INodeNo, reply: ReplyData) {
        guarded(&self.fs.requests().readlink, req, _ino.0, move || {
            reply.error(READLINK_ERRNO);
        });
    }

    fn mknod(
        &self,
        req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        guarded(&self.fs.requests().mknod, req, _parent.0, move || {
            reply.error(Errno::from_i32(self.fs.refuse_special().errno));
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        guarded(&self.fs.requests().mkdir, req, parent.0, move || {
            reply_entry(
                reply,
                "mkdir",
                self.fs.mkdir(caller(req), parent.0, name, mode, umask),
            );
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded(&self.fs.requests().unlink, req, parent.0, move || {
            reply_empty(reply, "unlink", self.fs.unlink(parent.0, name));
        });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded(&self.fs.requests().rmdir, req, parent.0, move || {
            reply_empty(reply, "rmdir", self.fs.rmdir(parent.0, name));
        });
    }

    fn symlink(
        &self,
        req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        guarded(&self.fs.requests().symlink, req, _parent.0, move || {
            reply.error(Errno::from_i32(self.fs.refuse_special().errno));
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        guarded(&self.fs.requests().rename, req, parent.0, move || {
            reply_empty(
                reply,
                "rename",
                self.fs
                    .rename(parent.0, name, newparent.0, newname, flags.bits()),
            );
        });
    }

    fn link(
        &self,
        req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        guarded(&self.fs.requests().link, req, _ino.0, move || {
            reply.error(Errno::from_i32(self.fs.refuse_special().errno));
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        guarded(&self.fs.requests().open, req, ino.0, move || {
            match self.fs.open(caller(req), ino.0, flags.0) {
                Ok(opened) => self.reply_opened(reply, opened),
                Err(err) => reply.error(fail("open", err)),
            }
        });
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        guarded(&self.fs.requests().read, req, _ino.0, move || {
            match self.fs.read(fh.0, offset, size) {
                Ok(data) => reply.data(&data),
                Err(err) => reply.error(fail("read", err)),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        guarded(&self.fs.requests().write, req, _ino.0, move || {
            match self.fs.write(fh.0, offset, data) {
                Ok(n) => reply.written(n),
                Err(err) => reply.error(fail("write", err)),
            }
        });
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        guarded(&self.fs.requests().flush, req, _ino.0, move || {
            reply_empty(reply, "flush", self.fs.flush(fh.0));
        });
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        guarded(&self.fs.requests().release, req, _ino.0, move || {
            if let Some((ino, generation)) = self.fs.release(fh.0) {
                self.backings.released(ino, generation);
            }
            reply.ok();
        });
    }

    fn fsync(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        guarded(&self.fs.requests().fsync, req, _ino.0, move || {
            reply_empty(reply, "fsync", self.fs.fsync(fh.0));
        });
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        guarded(&self.fs.requests().opendir, req, ino.0, move || {
            let answer = self.fs.opendir(ino.0);
            match answer {
                Ok(fh) => reply.opened(FileHandle(fh), opendir_flags()),
                Err(err) => reply.error(fail("opendir", err)),
            }
        });
    }

    fn readdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        guarded(&self.fs.requests().readdir, req, _ino.0, move || {
            let result = self.fs.readdir(fh.0, offset, |next, ino, item_kind, name| {
                reply.add(INodeNo(ino), next, kind(item_kind), name)
            });
            match result {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(fail("readdir", err)),
            }
        });
    }

    fn readdirplus(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        guarded(&self.fs.requests().readdirplus, req, _ino.0, move || {
            let result = self.fs.readdirplus(fh.0, offset, |next, name, e| {
                reply.add(
                    INodeNo(e.attr.ino),
                    next,
                    name,
                    &e.ttl,
                    &file_attr(&e.attr),
                    Generation(0),
                )
            });
            match result {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(fail("readdirplus", err)),
            }
        });
    }

    fn releasedir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        guarded(&self.fs.requests().releasedir, req, _ino.0, move || {
            self.fs.releasedir(fh.0);
            reply.ok();
        });
    }

    fn fsyncdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        guarded(&self.fs.requests().fsyncdir, req, _ino.0, move || {
            reply.ok();
        });
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        guarded(&self.fs.requests().statfs, req, _ino.0, move || {
            let answer = self.fs.statfs();
            match answer {
                Ok(s) => reply.statfs(
                    s.f_blocks,
                    s.f_bfree,
                    s.f_bavail,
                    s.f_files,
                    s.f_ffree,
                    s.f_bsize as u32,
                    s.f_namemax as u32,
                    s.f_frsize as u32,
                ),
                Err(err) => reply.error(fail("statfs", err)),
            }
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        guarded(&self.fs.requests().setxattr, req, ino.0, move || {
            reply_empty(
                reply,
                "setxattr",
                self.fs.setxattr(ino.0, name, value, flags),
            );
        });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        guarded(&self.fs.requests().getxattr, req, ino.0, move || {
            reply_xattr(reply, "getxattr", size, self.fs.getxattr(ino.0, name));
        });
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        guarded(&self.fs.requests().listxattr, req, ino.0, move || {
            reply_xattr(reply, "listxattr", size, self.fs.listxattr(ino.0));
        });
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded(&self.fs.requests().removexattr, req, ino.0, move || {
            reply_empty(reply, "removexattr", self.fs.removexattr(ino.0, name));
        });
    }

    fn access(&self, req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        guarded(&self.fs.requests().access, req, _ino.0, move || {
            // The backing files' own permissions decide when the operation itself runs.
            reply.ok();
        });
    }

    /// No ioctl is ours: every Python `open()` asks `TCGETS` (isatty), and the answer is the
    /// ordinary "not a terminal", with nothing logged.
    fn ioctl(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        guarded(&self.fs.requests().ioctl, req, _ino.0, move || {
            reply.error(IOCTL_ERRNO);
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        guarded(&self.fs.requests().create, req, parent.0, move || {
            let answer = self
                .fs
                .create(caller(req), parent.0, name, mode, umask, flags);
            match answer {
                Ok((e, opened)) => reply.created(
                    &e.ttl,
                    &file_attr(&e.attr),
                    Generation(0),
                    FileHandle(opened.fh),
                    create_flags(&opened),
                ),
                Err(err) => reply.error(fail("create", err)),
            }
        });
    }
}

#[cfg(test)]
mod tests;
