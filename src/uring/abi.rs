//! The kernel ABI of FUSE-over-io_uring, hand-written from `include/uapi/linux/fuse.h`: the INIT
//! bit, the ring entry's header buffer, the 80-byte command a `IORING_OP_URING_CMD` carries, and
//! the two INIT structs and two message headers the ring's buffers hold. Types only: nothing
//! here reads or writes a ring.
//!
//! Source: protocol 7.45 (Linux 6.18, the kernel these machines run), read from the linux-next
//! tree at commit d975d76af6d24b6f91a7464769bf7f7386a9a856. The io_uring part has not changed
//! since it came in with 7.42 (Linux 6.14); see docs/uring.md for what was read and why not
//! torvalds/linux itself. Field names follow the C header so the two can be read side by side.
//!
//! The message structs derive zerocopy's traits: the ring's buffers are read and written as
//! these structs with no `unsafe` (zerocopy checks at compile time that each has no padding).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

mod ops;
pub use ops::*;

/// `FUSE_OVER_IO_URING` (`1ULL << 41`) in the 64-bit INIT flags: the kernel sets it in
/// `fuse_init_in` when `enable_uring` is on; a server sets it in `fuse_init_out` to say it will
/// register rings, and the kernel then holds new requests until every queue has an entry.
pub const FUSE_OVER_IO_URING: u64 = 1 << 41;

/// Bits 32..63 of the INIT flags travel shifted down in `flags2` ("bits 32..63 get shifted down
/// 32 bits into the flags2 field"): `FUSE_OVER_IO_URING` is bit 9 there.
pub const FUSE_OVER_IO_URING_FLAGS2: u32 = (FUSE_OVER_IO_URING >> 32) as u32;

/// `FUSE_INIT_EXT` (`1 << 30`) in the low `flags`: without it `flags2` is not read, in either
/// direction.
pub const FUSE_INIT_EXT: u32 = 1 << 30;

/// Size of `fuse_uring_req_header::in_out`, room for a `fuse_in_header` (request) or a
/// `fuse_out_header` (reply).
pub const FUSE_URING_IN_OUT_HEADER_SZ: usize = 128;

/// Size of `fuse_uring_req_header::op_in`, room for the operation's own header (e.g.
/// `fuse_getattr_in`): the kernel copies an op's first argument there, the rest to the payload.
pub const FUSE_URING_OP_IN_OUT_SZ: usize = 128;

/// Not uapi: `fs/fuse/dev_uring.c` defines it, and REGISTER fails with `EINVAL` unless the
/// SQE's `len` is exactly this (an iovec for the header, one for the payload).
pub const FUSE_URING_IOV_SEGS: u32 = 2;

/// `struct fuse_uring_ent_in_out`: per-entry metadata, both directions. The kernel fills
/// `commit_id` (the request's unique) and `payload_sz` (bytes it wrote to the payload); the
/// reply puts the bytes it wrote in `payload_sz` and commits with that `commit_id`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct FuseUringEntInOut {
    pub flags: u64,
    pub commit_id: u64,
    pub payload_sz: u32,
    pub padding: u32,
    pub reserved: u64,
}

/// `struct fuse_uring_req_header`: the buffer of `iov[0]` at REGISTER, one per ring entry. Its
/// size is the minimum `iov[0].iov_len` the kernel accepts.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct FuseUringReqHeader {
    /// `struct fuse_in_header` on a request, `struct fuse_out_header` on a reply.
    pub in_out: [u8; FUSE_URING_IN_OUT_HEADER_SZ],
    /// The per-opcode header.
    pub op_in: [u8; FUSE_URING_OP_IN_OUT_SZ],
    pub ring_ent_in_out: FuseUringEntInOut,
}

impl Default for FuseUringReqHeader {
    fn default() -> Self {
        Self {
            in_out: [0; FUSE_URING_IN_OUT_HEADER_SZ],
            op_in: [0; FUSE_URING_OP_IN_OUT_SZ],
            ring_ent_in_out: FuseUringEntInOut::default(),
        }
    }
}

/// `enum fuse_uring_cmd`: the `cmd_op` of an `IORING_OP_URING_CMD` on a `/dev/fuse` fd. A C
/// enum is an `int`; the value travels in the SQE's 32-bit `cmd_op`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuseUringCmd {
    /// `FUSE_IO_URING_CMD_INVALID`: never sent; the kernel answers `EINVAL`.
    Invalid = 0,
    /// `FUSE_IO_URING_CMD_REGISTER`: hand the kernel an entry's buffers and wait for a request.
    Register = 1,
    /// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`: the reply is in the entry; wait for the next one.
    CommitAndFetch = 2,
}

/// `FUSE_IO_URING_CMD_REGISTER`, for code that wants the header's name.
pub const FUSE_IO_URING_CMD_REGISTER: u32 = FuseUringCmd::Register as u32;
/// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`, for code that wants the header's name.
pub const FUSE_IO_URING_CMD_COMMIT_AND_FETCH: u32 = FuseUringCmd::CommitAndFetch as u32;

/// Size of the command area of a 128-byte SQE (`IORING_SETUP_SQE128`), where
/// `fuse_uring_cmd_req` goes; the kernel refuses the command on a ring without SQE128.
pub const SQE128_CMD_SZ: usize = 80;

/// `struct fuse_uring_cmd_req`: the command payload of both commands.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct FuseUringCmdReq {
    pub flags: u64,
    /// The entry being committed (COMMIT_AND_FETCH): `ring_ent_in_out.commit_id` of its request.
    pub commit_id: u64,
    /// The queue (one per possible CPU) the entry belongs to.
    pub qid: u16,
    pub padding: [u8; 6],
}

/// `struct fuse_init_in` (7.36 and later: `flags2` and 11 unused words).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseInitIn {
    pub major: u32,
    pub minor: u32,
    pub max_readahead: u32,
    pub flags: u32,
    pub flags2: u32,
    pub unused: [u32; 11],
}

/// `struct fuse_init_out` (7.43 and later: `request_timeout`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseInitOut {
    pub major: u32,
    pub minor: u32,
    pub max_readahead: u32,
    pub flags: u32,
    pub max_background: u16,
    pub congestion_threshold: u16,
    pub max_write: u32,
    pub time_gran: u32,
    pub max_pages: u16,
    pub map_alignment: u16,
    pub flags2: u32,
    pub max_stack_depth: u32,
    pub request_timeout: u16,
    pub unused: [u16; 11],
}

/// `struct fuse_in_header`, which the kernel writes at the start of `in_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct FuseInHeader {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// Length of the extensions, in 8-byte units.
    pub total_extlen: u16,
    pub padding: u16,
}

/// `struct fuse_out_header`, which a reply writes at the start of `in_out`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct FuseOutHeader {
    pub len: u32,
    pub error: i32,
    pub unique: u64,
}

/// `FUSE_GETATTR`, the opcode of `fuse_in_header` for a `stat` the kernel cannot answer from
/// its cache; `op_in` holds a [`FuseGetattrIn`], the reply is a [`FuseAttrOut`].
pub const FUSE_GETATTR: u32 = 3;
/// `FUSE_STATFS`: no argument (the node id is the header's); the reply, `fuse_statfs_out`, is
/// exactly a [`FuseKstatfs`].
pub const FUSE_STATFS: u32 = 17;
/// `FUSE_GETATTR_FH` in `fuse_getattr_in::getattr_flags`: `fh` names an open file handle.
pub const FUSE_GETATTR_FH: u32 = 1;

/// `struct fuse_getattr_in`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct FuseGetattrIn {
    pub getattr_flags: u32,
    pub dummy: u32,
    pub fh: u64,
}

/// `struct fuse_attr` (7.9 and later: `blksize`; 7.38 and later: `flags`). The times are the
/// header's `uint64_t`, read by the kernel as signed seconds since the epoch.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct FuseAttr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: u64,
    pub mtime: u64,
    pub ctime: u64,
    pub atimensec: u32,
    pub mtimensec: u32,
    pub ctimensec: u32,
    /// File type bits (`S_IFDIR`...) and permission bits.
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
    pub flags: u32,
}

/// `struct fuse_attr_out`: the reply to `FUSE_GETATTR` (and `FUSE_SETATTR`).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct FuseAttrOut {
    /// How long the kernel may keep the attributes: seconds, then nanoseconds.
    pub attr_valid: u64,
    pub attr_valid_nsec: u32,
    pub dummy: u32,
    pub attr: FuseAttr,
}

/// `struct fuse_kstatfs`, the body of `struct fuse_statfs_out` (its only field, so the reply to
/// `FUSE_STATFS` is exactly this).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct FuseKstatfs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
    pub padding: u32,
    pub spare: [u32; 6],
}

/// Whether an INIT request's flags offer FUSE-over-io_uring: only through `flags2`, which only
/// counts when `FUSE_INIT_EXT` is set in `flags`.
pub fn init_offers_uring(flags: u32, flags2: u32) -> bool {
    flags & FUSE_INIT_EXT != 0 && flags2 & FUSE_OVER_IO_URING_FLAGS2 != 0
}

#[cfg(test)]
mod tests {
    //! Every number below is worked out by hand from the C header (7.45) under the x86-64 and
    //! aarch64 SysV rules: a field sits at the next multiple of its own alignment, a struct
    //! aligns to its widest field and its size rounds up to that. A C program compiled against
    //! the header text printed the same values (docs/uring.md, "Layout").
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn io_uring_bit_is_bit_41_and_bit_9_of_flags2() {
        assert_eq!(FUSE_OVER_IO_URING, 0x0000_0200_0000_0000);
        assert_eq!(FUSE_OVER_IO_URING_FLAGS2, 1 << 9);
        assert_eq!(FUSE_INIT_EXT, 0x4000_0000);
    }

    #[test]
    fn init_offers_uring_reads_flags2_only_with_init_ext() {
        assert!(init_offers_uring(FUSE_INIT_EXT, 1 << 9));
        assert!(init_offers_uring(FUSE_INIT_EXT | 1, (1 << 9) | (1 << 5)));
        assert!(!init_offers_uring(0, 1 << 9));
        assert!(!init_offers_uring(FUSE_INIT_EXT, 1 << 8));
        // Bit 9 of the low word is FUSE_SPLICE_READ, not io_uring.
        assert!(!init_offers_uring(FUSE_INIT_EXT | (1 << 9), 0));
    }

    #[test]
    fn command_codes_match_the_enum() {
        assert_eq!(FuseUringCmd::Invalid as u32, 0);
        assert_eq!(FUSE_IO_URING_CMD_REGISTER, 1);
        assert_eq!(FUSE_IO_URING_CMD_COMMIT_AND_FETCH, 2);
        // A C enum is an int.
        assert_eq!(size_of::<FuseUringCmd>(), 4);
    }

    #[test]
    fn ent_in_out_layout() {
        // u64 flags @0, u64 commit_id @8, u32 payload_sz @16, u32 padding @20, u64 reserved @24.
        assert_eq!(size_of::<FuseUringEntInOut>(), 32);
        assert_eq!(align_of::<FuseUringEntInOut>(), 8);
        assert_eq!(offset_of!(FuseUringEntInOut, flags), 0);
        assert_eq!(offset_of!(FuseUringEntInOut, commit_id), 8);
        assert_eq!(offset_of!(FuseUringEntInOut, payload_sz), 16);
        assert_eq!(offset_of!(FuseUringEntInOut, padding), 20);
        assert_eq!(offset_of!(FuseUringEntInOut, reserved), 24);
    }

    #[test]
    fn req_header_layout() {
        // char[128] @0, char[128] @128, then the 8-aligned ent_in_out @256: 256 + 32 = 288.
        assert_eq!(FUSE_URING_IN_OUT_HEADER_SZ, 128);
        assert_eq!(FUSE_URING_OP_IN_OUT_SZ, 128);
        assert_eq!(size_of::<FuseUringReqHeader>(), 288);
        assert_eq!(align_of::<FuseUringReqHeader>(), 8);
        assert_eq!(offset_of!(FuseUringReqHeader, in_out), 0);
        assert_eq!(offset_of!(FuseUringReqHeader, op_in), 128);
        assert_eq!(offset_of!(FuseUringReqHeader, ring_ent_in_out), 256);
    }

    #[test]
    fn cmd_req_layout_fits_the_sqe128_command_area() {
        // u64 flags @0, u64 commit_id @8, u16 qid @16, u8[6] padding @18: 24, 8-aligned.
        assert_eq!(size_of::<FuseUringCmdReq>(), 24);
        assert_eq!(align_of::<FuseUringCmdReq>(), 8);
        assert_eq!(offset_of!(FuseUringCmdReq, flags), 0);
        assert_eq!(offset_of!(FuseUringCmdReq, commit_id), 8);
        assert_eq!(offset_of!(FuseUringCmdReq, qid), 16);
        assert_eq!(offset_of!(FuseUringCmdReq, padding), 18);
        assert!(size_of::<FuseUringCmdReq>() <= SQE128_CMD_SZ);
    }

    #[test]
    fn init_in_layout() {
        // Five u32 then u32[11]: 20 + 44 = 64, 4-aligned; flags2 right after flags.
        assert_eq!(size_of::<FuseInitIn>(), 64);
        assert_eq!(align_of::<FuseInitIn>(), 4);
        assert_eq!(offset_of!(FuseInitIn, flags), 12);
        assert_eq!(offset_of!(FuseInitIn, flags2), 16);
        assert_eq!(offset_of!(FuseInitIn, unused), 20);
    }

    #[test]
    fn init_out_layout() {
        // u32 x4 @0..16, u16 x2 @16,18, u32 @20,24, u16 x2 @28,30, u32 flags2 @32,
        // u32 max_stack_depth @36, u16 request_timeout @40, u16[11] @42..64.
        assert_eq!(size_of::<FuseInitOut>(), 64);
        assert_eq!(align_of::<FuseInitOut>(), 4);
        assert_eq!(offset_of!(FuseInitOut, flags), 12);
        assert_eq!(offset_of!(FuseInitOut, max_background), 16);
        assert_eq!(offset_of!(FuseInitOut, max_write), 20);
        assert_eq!(offset_of!(FuseInitOut, max_pages), 28);
        assert_eq!(offset_of!(FuseInitOut, flags2), 32);
        assert_eq!(offset_of!(FuseInitOut, max_stack_depth), 36);
        assert_eq!(offset_of!(FuseInitOut, request_timeout), 40);
        assert_eq!(offset_of!(FuseInitOut, unused), 42);
    }

    #[test]
    fn message_headers_fit_the_in_out_area() {
        // u32 u32 u64 u64 u32 u32 u32 u16 u16: 40, 8-aligned.
        assert_eq!(size_of::<FuseInHeader>(), 40);
        assert_eq!(align_of::<FuseInHeader>(), 8);
        assert_eq!(offset_of!(FuseInHeader, unique), 8);
        assert_eq!(offset_of!(FuseInHeader, nodeid), 16);
        assert_eq!(offset_of!(FuseInHeader, pid), 32);
        assert_eq!(offset_of!(FuseInHeader, total_extlen), 36);
        // u32 i32 u64: 16.
        assert_eq!(size_of::<FuseOutHeader>(), 16);
        assert_eq!(align_of::<FuseOutHeader>(), 8);
        assert_eq!(offset_of!(FuseOutHeader, error), 4);
        assert_eq!(offset_of!(FuseOutHeader, unique), 8);
        assert!(size_of::<FuseInHeader>() <= FUSE_URING_IN_OUT_HEADER_SZ);
        assert!(size_of::<FuseOutHeader>() <= FUSE_URING_IN_OUT_HEADER_SZ);
    }

    #[test]
    fn getattr_and_statfs_messages_layout() {
        assert_eq!(FUSE_GETATTR, 3);
        assert_eq!(FUSE_STATFS, 17);
        // u32 getattr_flags @0, u32 dummy @4, u64 fh @8.
        assert_eq!(size_of::<FuseGetattrIn>(), 16);
        assert_eq!(offset_of!(FuseGetattrIn, fh), 8);
        // Six u64 (48), then ten u32: 88, 8-aligned.
        assert_eq!(size_of::<FuseAttr>(), 88);
        assert_eq!(align_of::<FuseAttr>(), 8);
        assert_eq!(offset_of!(FuseAttr, atimensec), 48);
        assert_eq!(offset_of!(FuseAttr, mode), 60);
        assert_eq!(offset_of!(FuseAttr, nlink), 64);
        assert_eq!(offset_of!(FuseAttr, rdev), 76);
        assert_eq!(offset_of!(FuseAttr, blksize), 80);
        assert_eq!(offset_of!(FuseAttr, flags), 84);
        // u64 attr_valid, u32 nsec, u32 dummy, then the attributes at 16: 104.
        assert_eq!(size_of::<FuseAttrOut>(), 104);
        assert_eq!(offset_of!(FuseAttrOut, attr_valid_nsec), 8);
        assert_eq!(offset_of!(FuseAttrOut, attr), 16);
        // Five u64 (40), four u32 (56), u32[6]: 80.
        assert_eq!(size_of::<FuseKstatfs>(), 80);
        assert_eq!(offset_of!(FuseKstatfs, bsize), 40);
        assert_eq!(offset_of!(FuseKstatfs, namelen), 44);
        assert_eq!(offset_of!(FuseKstatfs, frsize), 48);
        assert_eq!(offset_of!(FuseKstatfs, spare), 56);
    }
}
