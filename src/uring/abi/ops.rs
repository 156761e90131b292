//! The per-operation structs of `include/uapi/linux/fuse.h` (7.45) that cachetta's requests carry
//! and its replies return, and their opcodes. On a ring the kernel puts an op's first argument
//! (these `*_in` structs) in `op_in` and the rest (names, written data) in the payload; a reply
//! is the `*_out` struct, or data, in the payload. Field names follow the C header.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::FuseAttr;

pub const FUSE_LOOKUP: u32 = 1;
pub const FUSE_FORGET: u32 = 2;
pub const FUSE_SETATTR: u32 = 4;
pub const FUSE_READLINK: u32 = 5;
pub const FUSE_SYMLINK: u32 = 6;
pub const FUSE_MKNOD: u32 = 8;
pub const FUSE_MKDIR: u32 = 9;
pub const FUSE_UNLINK: u32 = 10;
pub const FUSE_RMDIR: u32 = 11;
pub const FUSE_RENAME: u32 = 12;
pub const FUSE_LINK: u32 = 13;
pub const FUSE_OPEN: u32 = 14;
pub const FUSE_READ: u32 = 15;
pub const FUSE_WRITE: u32 = 16;
pub const FUSE_RELEASE: u32 = 18;
pub const FUSE_FSYNC: u32 = 20;
pub const FUSE_SETXATTR: u32 = 21;
pub const FUSE_GETXATTR: u32 = 22;
pub const FUSE_LISTXATTR: u32 = 23;
pub const FUSE_REMOVEXATTR: u32 = 24;
pub const FUSE_FLUSH: u32 = 25;
pub const FUSE_OPENDIR: u32 = 27;
pub const FUSE_READDIR: u32 = 28;
pub const FUSE_RELEASEDIR: u32 = 29;
pub const FUSE_FSYNCDIR: u32 = 30;
pub const FUSE_ACCESS: u32 = 34;
pub const FUSE_CREATE: u32 = 35;
pub const FUSE_INTERRUPT: u32 = 36;
pub const FUSE_DESTROY: u32 = 38;
pub const FUSE_IOCTL: u32 = 39;
pub const FUSE_BATCH_FORGET: u32 = 42;
pub const FUSE_READDIRPLUS: u32 = 44;
pub const FUSE_RENAME2: u32 = 45;

/// `fuse_setattr_in::valid` bits.
pub const FATTR_MODE: u32 = 1 << 0;
pub const FATTR_UID: u32 = 1 << 1;
pub const FATTR_GID: u32 = 1 << 2;
pub const FATTR_SIZE: u32 = 1 << 3;
pub const FATTR_ATIME: u32 = 1 << 4;
pub const FATTR_MTIME: u32 = 1 << 5;
pub const FATTR_FH: u32 = 1 << 6;
pub const FATTR_ATIME_NOW: u32 = 1 << 7;
pub const FATTR_MTIME_NOW: u32 = 1 << 8;

/// `FUSE_DIRENT_ALIGN`: each `fuse_dirent` starts at a multiple of 8.
pub const FUSE_DIRENT_ALIGN: usize = 8;

macro_rules! wire {
    ($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(
            Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable,
            KnownLayout,
        )]
        pub struct $name { $(pub $field: $ty),* }
    };
}

wire!(
    /// `struct fuse_entry_out`: the reply to `LOOKUP`, `MKDIR`... and the head of `CREATE`'s.
    FuseEntryOut {
        nodeid: u64,
        generation: u64,
        entry_valid: u64,
        attr_valid: u64,
        entry_valid_nsec: u32,
        attr_valid_nsec: u32,
        attr: FuseAttr,
    }
);
wire!(
    /// `struct fuse_setattr_in`.
    FuseSetattrIn {
        valid: u32,
        padding: u32,
        fh: u64,
        size: u64,
        lock_owner: u64,
        atime: u64,
        mtime: u64,
        ctime: u64,
        atimensec: u32,
        mtimensec: u32,
        ctimensec: u32,
        mode: u32,
        unused4: u32,
        uid: u32,
        gid: u32,
        unused5: u32,
    }
);
wire!(
    /// `struct fuse_mkdir_in`; the name follows in the payload.
    FuseMkdirIn { mode: u32, umask: u32 }
);
wire!(
    /// `struct fuse_rename_in` (`RENAME`); old and new names follow in the payload.
    FuseRenameIn { newdir: u64 }
);
wire!(
    /// `struct fuse_rename2_in` (`RENAME2`).
    FuseRename2In { newdir: u64, flags: u32, padding: u32 }
);
wire!(
    /// `struct fuse_open_in` (`OPEN`, `OPENDIR`).
    FuseOpenIn { flags: u32, open_flags: u32 }
);
wire!(
    /// `struct fuse_create_in`; the name follows in the payload.
    FuseCreateIn { flags: u32, mode: u32, umask: u32, open_flags: u32 }
);
wire!(
    /// `struct fuse_open_out`: the reply to `OPEN`/`OPENDIR`, the tail of `CREATE`'s.
    FuseOpenOut { fh: u64, open_flags: u32, backing_id: i32 }
);
wire!(
    /// `struct fuse_release_in` (`RELEASE`, `RELEASEDIR`).
    FuseReleaseIn { fh: u64, flags: u32, release_flags: u32, lock_owner: u64 }
);
wire!(
    /// `struct fuse_flush_in`.
    FuseFlushIn { fh: u64, unused: u32, padding: u32, lock_owner: u64 }
);
wire!(
    /// `struct fuse_read_in` (`READ`, `READDIR`, `READDIRPLUS`).
    FuseReadIn {
        fh: u64,
        offset: u64,
        size: u32,
        read_flags: u32,
        lock_owner: u64,
        flags: u32,
        padding: u32,
    }
);
wire!(
    /// `struct fuse_write_in`; the data follows in the payload.
    FuseWriteIn {
        fh: u64,
        offset: u64,
        size: u32,
        write_flags: u32,
        lock_owner: u64,
        flags: u32,
        padding: u32,
    }
);
wire!(
    /// `struct fuse_write_out`.
    FuseWriteOut { size: u32, padding: u32 }
);
wire!(
    /// `struct fuse_fsync_in` (`FSYNC`, `FSYNCDIR`).
    FuseFsyncIn { fh: u64, fsync_flags: u32, padding: u32 }
);
wire!(
    /// The first 8 bytes of `struct fuse_setxattr_in`, all the kernel sends unless the daemon
    /// asked for `FUSE_SETXATTR_EXT` (`FUSE_COMPAT_SETXATTR_IN_SIZE`); name and value follow
    /// in the payload either way.
    FuseSetxattrIn { size: u32, flags: u32 }
);
wire!(
    /// `struct fuse_getxattr_in` (`GETXATTR`, `LISTXATTR`): the caller's buffer size.
    FuseGetxattrIn { size: u32, padding: u32 }
);
wire!(
    /// `struct fuse_getxattr_out`: the length, when the caller asked with size 0.
    FuseGetxattrOut { size: u32, padding: u32 }
);
wire!(
    /// `struct fuse_dirent` without its name: ino, the offset of the next entry, the name's
    /// length and `DT_*` type; the name follows, padded to [`FUSE_DIRENT_ALIGN`].
    FuseDirent { ino: u64, off: u64, namelen: u32, typ: u32 }
);

#[cfg(test)]
mod tests {
    //! Sizes and offsets worked out by hand from the C header (x86-64 and aarch64 SysV rules).
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn entry_out_layout() {
        // Four u64, two u32, then the 88-byte fuse_attr: 40 + 88 = 128.
        assert_eq!(size_of::<FuseAttr>(), 88);
        assert_eq!(size_of::<FuseEntryOut>(), 128);
        assert_eq!(align_of::<FuseEntryOut>(), 8);
        assert_eq!(offset_of!(FuseEntryOut, generation), 8);
        assert_eq!(offset_of!(FuseEntryOut, entry_valid), 16);
        assert_eq!(offset_of!(FuseEntryOut, attr_valid), 24);
        assert_eq!(offset_of!(FuseEntryOut, entry_valid_nsec), 32);
        assert_eq!(offset_of!(FuseEntryOut, attr_valid_nsec), 36);
        assert_eq!(offset_of!(FuseEntryOut, attr), 40);
    }

    #[test]
    fn setattr_in_layout() {
        assert_eq!(size_of::<FuseSetattrIn>(), 88);
        assert_eq!(offset_of!(FuseSetattrIn, fh), 8);
        assert_eq!(offset_of!(FuseSetattrIn, size), 16);
        assert_eq!(offset_of!(FuseSetattrIn, lock_owner), 24);
        assert_eq!(offset_of!(FuseSetattrIn, atime), 32);
        assert_eq!(offset_of!(FuseSetattrIn, mtime), 40);
        assert_eq!(offset_of!(FuseSetattrIn, ctime), 48);
        assert_eq!(offset_of!(FuseSetattrIn, atimensec), 56);
        assert_eq!(offset_of!(FuseSetattrIn, mtimensec), 60);
        assert_eq!(offset_of!(FuseSetattrIn, ctimensec), 64);
        assert_eq!(offset_of!(FuseSetattrIn, mode), 68);
        assert_eq!(offset_of!(FuseSetattrIn, uid), 76);
        assert_eq!(offset_of!(FuseSetattrIn, gid), 80);
        assert_eq!(offset_of!(FuseSetattrIn, unused5), 84);
    }

    #[test]
    fn small_in_and_out_layouts() {
        assert_eq!(size_of::<FuseMkdirIn>(), 8);
        assert_eq!(size_of::<FuseRenameIn>(), 8);
        assert_eq!(size_of::<FuseRename2In>(), 16);
        assert_eq!(offset_of!(FuseRename2In, flags), 8);
        assert_eq!(size_of::<FuseOpenIn>(), 8);
        assert_eq!(size_of::<FuseCreateIn>(), 16);
        assert_eq!(offset_of!(FuseCreateIn, umask), 8);
        assert_eq!(size_of::<FuseOpenOut>(), 16);
        assert_eq!(offset_of!(FuseOpenOut, open_flags), 8);
        assert_eq!(offset_of!(FuseOpenOut, backing_id), 12);
        assert_eq!(size_of::<FuseReleaseIn>(), 24);
        assert_eq!(offset_of!(FuseReleaseIn, lock_owner), 16);
        assert_eq!(size_of::<FuseFlushIn>(), 24);
        assert_eq!(size_of::<FuseWriteOut>(), 8);
        assert_eq!(size_of::<FuseFsyncIn>(), 16);
        assert_eq!(size_of::<FuseSetxattrIn>(), 8);
        assert_eq!(size_of::<FuseGetxattrIn>(), 8);
        assert_eq!(size_of::<FuseGetxattrOut>(), 8);
    }

    #[test]
    fn read_and_write_in_layout() {
        for (size, fh, offset, sz, lock, flags) in [
            (
                size_of::<FuseReadIn>(),
                offset_of!(FuseReadIn, fh),
                offset_of!(FuseReadIn, offset),
                offset_of!(FuseReadIn, size),
                offset_of!(FuseReadIn, lock_owner),
                offset_of!(FuseReadIn, flags),
            ),
            (
                size_of::<FuseWriteIn>(),
                offset_of!(FuseWriteIn, fh),
                offset_of!(FuseWriteIn, offset),
                offset_of!(FuseWriteIn, size),
                offset_of!(FuseWriteIn, lock_owner),
                offset_of!(FuseWriteIn, flags),
            ),
        ] {
            assert_eq!((size, fh, offset, sz, lock, flags), (40, 0, 8, 16, 24, 32));
        }
    }

    #[test]
    fn dirent_head_is_24_bytes_and_entry_plus_is_152() {
        assert_eq!(size_of::<FuseDirent>(), 24);
        assert_eq!(offset_of!(FuseDirent, off), 8);
        assert_eq!(offset_of!(FuseDirent, namelen), 16);
        assert_eq!(offset_of!(FuseDirent, typ), 20);
        // fuse_direntplus: fuse_entry_out then fuse_dirent.
        assert_eq!(size_of::<FuseEntryOut>() + size_of::<FuseDirent>(), 152);
    }
}
