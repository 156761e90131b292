//! Decoding and encoding ring entries by hand-built bytes, as the kernel would leave them.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime};

use zerocopy::IntoBytes;

use super::*;
use crate::fs::{Attr, Entry};
use crate::store::{Kind, Stat};
use crate::uring::abi::FuseUringEntInOut;
use crate::uring::reply::split_time;

const PAYLOAD: usize = 8192;
/// An empty payload buffer of the entries' size.
static ZEROS: [u8; PAYLOAD] = [0; PAYLOAD];

/// An entry holding a request as `fuse_uring_copy_to_ring` writes one: `fuse_in_header` in
/// `in_out`, the first argument in `op_in`, `commit_id` = the request's unique.
pub(in crate::uring) fn entry(
    opcode: u32,
    len: u32,
    unique: u64,
    op_in: &[u8],
) -> FuseUringReqHeader {
    let mut header = FuseUringReqHeader::default();
    let ih = FuseInHeader {
        len,
        opcode,
        unique,
        nodeid: 1,
        uid: 1000,
        gid: 1000,
        pid: 4242,
        total_extlen: 0,
        padding: 0,
    };
    header.in_out[..40].copy_from_slice(ih.as_bytes());
    header.op_in[..op_in.len()].copy_from_slice(op_in);
    header.ring_ent_in_out = FuseUringEntInOut {
        commit_id: unique,
        ..FuseUringEntInOut::default()
    };
    header
}

pub(in crate::uring) fn getattr_in(flags: u32, fh: u64) -> Vec<u8> {
    FuseGetattrIn {
        getattr_flags: flags,
        dummy: 0,
        fh,
    }
    .as_bytes()
    .to_vec()
}

#[test]
fn statfs_decodes_with_no_argument() {
    let req = decode(&entry(FUSE_STATFS, 40, 7, &[]), &ZEROS).unwrap();
    assert_eq!(
        req,
        Request {
            unique: 7,
            opcode: FUSE_STATFS,
            nodeid: 1,
            uid: 1000,
            gid: 1000,
            pid: 4242,
            op: Op::Statfs,
        }
    );
}

#[test]
fn getattr_decodes_its_file_handle_only_when_flagged() {
    let with = entry(FUSE_GETATTR, 56, 9, &getattr_in(FUSE_GETATTR_FH, 33));
    assert_eq!(
        decode(&with, &ZEROS).unwrap().op,
        Op::Getattr { fh: Some(33) }
    );
    let without = entry(FUSE_GETATTR, 56, 9, &getattr_in(0, 33));
    assert_eq!(
        decode(&without, &ZEROS).unwrap().op,
        Op::Getattr { fh: None }
    );
}

#[test]
fn a_length_shorter_than_the_header_is_malformed() {
    for len in [0, 1, 39] {
        assert_eq!(
            decode(&entry(FUSE_STATFS, len, 7, &[]), &ZEROS),
            Err(Malformed::ShortHeader { len })
        );
    }
}

#[test]
fn a_getattr_too_short_for_its_argument_is_malformed() {
    let short = entry(FUSE_GETATTR, 40 + 15, 9, &getattr_in(0, 0));
    assert_eq!(
        decode(&short, &ZEROS),
        Err(Malformed::ShortArgument {
            opcode: FUSE_GETATTR,
            len: 55,
            needed: 16
        })
    );
}

#[test]
fn unique_zero_and_a_commit_id_that_differs_are_malformed() {
    assert_eq!(
        decode(&entry(FUSE_STATFS, 40, 0, &[]), &ZEROS),
        Err(Malformed::NoUnique)
    );
    let mut other = entry(FUSE_STATFS, 40, 7, &[]);
    other.ring_ent_in_out.commit_id = 8;
    assert_eq!(
        decode(&other, &ZEROS),
        Err(Malformed::CommitMismatch {
            unique: 7,
            commit_id: 8
        })
    );
}

#[test]
fn a_payload_size_beyond_the_buffer_is_malformed() {
    let mut e = entry(FUSE_STATFS, 40, 7, &[]);
    e.ring_ent_in_out.payload_sz = PAYLOAD as u32 + 1;
    assert_eq!(
        decode(&e, &ZEROS),
        Err(Malformed::PayloadOverrun {
            payload_sz: PAYLOAD as u32 + 1,
            capacity: PAYLOAD
        })
    );
    e.ring_ent_in_out.payload_sz = PAYLOAD as u32;
    decode(&e, &ZEROS).unwrap();
}

#[test]
fn every_malformed_request_says_what_is_wrong() {
    let all = [
        Malformed::ShortHeader { len: 3 },
        Malformed::NoUnique,
        Malformed::CommitMismatch {
            unique: 1,
            commit_id: 2,
        },
        Malformed::ShortArgument {
            opcode: 3,
            len: 41,
            needed: 16,
        },
        Malformed::PayloadOverrun {
            payload_sz: 9,
            capacity: 8,
        },
        Malformed::NameWithoutNul { opcode: 1 },
        Malformed::Oversized {
            opcode: 15,
            size: 9,
            room: 8,
        },
    ];
    for m in all {
        assert!(!m.to_string().is_empty(), "{m:?}");
    }
}

#[test]
fn other_opcodes_decode_as_other() {
    // STATX (52), GETLK (31), and one no kernel sends.
    for opcode in [52, 31, 4096] {
        let req = decode(&entry(opcode, 60, 5, &[]), &ZEROS).unwrap();
        assert_eq!(req.op, Op::Other, "opcode {opcode}");
    }
}

/// An entry with `arg` in `op_in` and `sent` in a payload buffer of [`PAYLOAD`] bytes.
fn with_payload(opcode: u32, arg: &[u8], sent: &[u8]) -> (FuseUringReqHeader, Vec<u8>) {
    let mut header = entry(opcode, (40 + arg.len() + sent.len()) as u32, 5, arg);
    header.ring_ent_in_out.payload_sz = sent.len() as u32;
    let mut payload = vec![0xEE; PAYLOAD];
    payload[..sent.len()].copy_from_slice(sent);
    (header, payload)
}

fn op_of(opcode: u32, arg: &[u8], sent: &[u8]) -> Result<String, Malformed> {
    let (header, payload) = with_payload(opcode, arg, sent);
    decode(&header, &payload).map(|r| format!("{:?}", r.op))
}

#[test]
fn names_are_read_up_to_their_nul_from_the_payload() {
    assert_eq!(
        op_of(FUSE_LOOKUP, &[], b"a.json\0").unwrap(),
        r#"Lookup { name: "a.json" }"#
    );
    // Odd bytes are kept as they are: a name is any bytes but NUL and '/'.
    let (header, payload) = with_payload(FUSE_UNLINK, &[], b"sp ace\xff\n\0");
    let Op::Unlink { name } = decode(&header, &payload).unwrap().op else {
        panic!("unlink");
    };
    assert_eq!(name.as_bytes(), b"sp ace\xff\n");
    let (header, payload) = with_payload(
        FUSE_RENAME2,
        FuseRename2In {
            newdir: 9,
            flags: 1,
            padding: 0,
        }
        .as_bytes(),
        b"a\0b\0",
    );
    assert_eq!(
        decode(&header, &payload).unwrap().op,
        Op::Rename {
            name: OsStr::new("a"),
            newdir: 9,
            newname: OsStr::new("b"),
            flags: 1
        }
    );
    let mkdir = FuseMkdirIn {
        mode: 0o755,
        umask: 0o22,
    };
    assert_eq!(
        op_of(FUSE_MKDIR, mkdir.as_bytes(), b"d\0").unwrap(),
        r#"Mkdir { name: "d", mode: 493, umask: 18 }"#
    );
}

#[test]
fn a_name_without_its_nul_within_payload_sz_is_malformed() {
    for (opcode, arg, sent) in [
        (FUSE_LOOKUP, &[][..], &b"a.json"[..]),
        (FUSE_LOOKUP, &[][..], &b""[..]),
        (FUSE_RENAME, &[0u8; 8][..], &b"a\0b"[..]),
        (FUSE_CREATE, &[0u8; 16][..], &b"new"[..]),
        (FUSE_SETXATTR, &[0u8; 8][..], &b"user.x"[..]),
    ] {
        // The byte after payload_sz is not NUL either (the buffer is filled with 0xEE).
        assert_eq!(
            op_of(opcode, arg, sent),
            Err(Malformed::NameWithoutNul { opcode }),
            "opcode {opcode}"
        );
    }
}

#[test]
fn each_op_too_short_for_its_argument_is_malformed() {
    for (opcode, needed) in [
        (FUSE_SETATTR, 88),
        (FUSE_MKDIR, 8),
        (FUSE_RENAME, 8),
        (FUSE_RENAME2, 16),
        (FUSE_OPEN, 8),
        (FUSE_READ, 40),
        (FUSE_WRITE, 40),
        (FUSE_RELEASE, 24),
        (FUSE_FSYNC, 16),
        (FUSE_SETXATTR, 8),
        (FUSE_GETXATTR, 8),
        (FUSE_LISTXATTR, 8),
        (FUSE_FLUSH, 24),
        (FUSE_OPENDIR, 8),
        (FUSE_READDIR, 40),
        (FUSE_READDIRPLUS, 40),
        (FUSE_RELEASEDIR, 24),
        (FUSE_CREATE, 16),
    ] {
        let len = 40 + needed as u32 - 1;
        assert_eq!(
            decode(&entry(opcode, len, 5, &[]), &ZEROS),
            Err(Malformed::ShortArgument {
                opcode,
                len,
                needed
            }),
            "opcode {opcode}"
        );
    }
}

#[test]
fn write_data_and_xattr_values_come_from_the_payload_and_must_fit_it() {
    let write = FuseWriteIn {
        fh: 3,
        offset: 10,
        size: 4,
        ..FuseWriteIn::default()
    };
    let (header, payload) = with_payload(FUSE_WRITE, write.as_bytes(), b"abcd");
    assert_eq!(
        decode(&header, &payload).unwrap().op,
        Op::Write {
            fh: 3,
            offset: 10,
            data: b"abcd"
        }
    );
    let long = FuseWriteIn { size: 5, ..write };
    assert_eq!(
        op_of(FUSE_WRITE, long.as_bytes(), b"abcd"),
        Err(Malformed::Oversized {
            opcode: FUSE_WRITE,
            size: 5,
            room: 4
        })
    );
    let set = FuseSetxattrIn { size: 3, flags: 1 };
    let (header, payload) = with_payload(FUSE_SETXATTR, set.as_bytes(), b"user.a\0xyz");
    assert_eq!(
        decode(&header, &payload).unwrap().op,
        Op::Setxattr {
            name: OsStr::new("user.a"),
            value: b"xyz",
            flags: 1
        }
    );
    let big = FuseSetxattrIn { size: 4, flags: 0 };
    assert_eq!(
        op_of(FUSE_SETXATTR, big.as_bytes(), b"user.a\0xyz"),
        Err(Malformed::Oversized {
            opcode: FUSE_SETXATTR,
            size: 4,
            room: 3
        })
    );
}

#[test]
fn a_read_or_listing_larger_than_the_payload_can_hold_is_malformed() {
    for opcode in [FUSE_READ, FUSE_READDIR, FUSE_READDIRPLUS] {
        let read = FuseReadIn {
            size: PAYLOAD as u32 + 1,
            ..FuseReadIn::default()
        };
        assert_eq!(
            op_of(opcode, read.as_bytes(), &[]),
            Err(Malformed::Oversized {
                opcode,
                size: PAYLOAD as u32 + 1,
                room: PAYLOAD
            }),
        );
        let fits = FuseReadIn {
            size: PAYLOAD as u32,
            ..read
        };
        op_of(opcode, fits.as_bytes(), &[]).unwrap();
    }
}

#[test]
fn setattr_and_create_keep_their_fields() {
    let set = FuseSetattrIn {
        valid: FATTR_SIZE | FATTR_FH,
        fh: 7,
        size: 3,
        ..FuseSetattrIn::default()
    };
    let (header, payload) = with_payload(FUSE_SETATTR, set.as_bytes(), &[]);
    assert_eq!(decode(&header, &payload).unwrap().op, Op::Setattr(set));
    let create = FuseCreateIn {
        flags: 0o101,
        mode: 0o100644,
        umask: 0o22,
        open_flags: 0,
    };
    assert_eq!(
        op_of(FUSE_CREATE, create.as_bytes(), b"n.json\0").unwrap(),
        r#"Create { name: "n.json", mode: 33188, umask: 18, flags: 65 }"#
    );
}

#[test]
fn refusals_never_teach_the_kernel_to_stop_asking_for_what_classic_serves() {
    // FUSE-NOTES "Traps": never ENOSYS to getxattr or listxattr.
    for opcode in [22, 23, 1, 14, 25, 20, 34, 35, 44] {
        assert_eq!(refusal(opcode), libc::EIO, "opcode {opcode}");
    }
    // STATX: as fuser answers it, so that the kernel falls back to GETATTR.
    assert_eq!(refusal(52), libc::ENOSYS);
    // GETLK, BMAP, FALLOCATE, LSEEK: not implemented by the adapter either.
    for opcode in [31, 37, 43, 46] {
        assert_eq!(refusal(opcode), libc::ENOSYS, "opcode {opcode}");
    }
}

pub(in crate::uring) fn out_header(header: &FuseUringReqHeader) -> FuseOutHeader {
    FuseOutHeader::read_from_prefix(&header.in_out[..])
        .unwrap()
        .0
}

#[test]
fn an_attr_reply_is_the_header_then_exactly_fuse_attr_out() {
    let mut header = entry(FUSE_GETATTR, 56, 11, &getattr_in(0, 0));
    let mut payload = vec![0xAA; PAYLOAD];
    let out = FuseAttrOut {
        attr_valid: 2,
        attr_valid_nsec: 5,
        dummy: 0,
        attr: FuseAttr {
            ino: 1,
            mode: libc::S_IFDIR | 0o755,
            ..FuseAttr::default()
        },
    };
    encode(&mut header, &mut payload, 11, &Reply::Attr(out));
    assert_eq!(
        out_header(&header),
        FuseOutHeader {
            len: 16 + 104,
            error: 0,
            unique: 11
        }
    );
    assert_eq!(header.ring_ent_in_out.payload_sz, 104);
    assert_eq!(&payload[..104], out.as_bytes());
    // The mode, where the kernel reads it: attr at 16, mode at 60 in it.
    let mode = u32::from_ne_bytes(payload[76..80].try_into().unwrap());
    assert_eq!(mode, libc::S_IFDIR | 0o755);
    // The rest of the payload is left alone.
    assert_eq!(payload[104], 0xAA);
}

#[test]
fn a_statfs_reply_is_exactly_fuse_kstatfs() {
    let mut header = entry(FUSE_STATFS, 40, 12, &[]);
    let mut payload = vec![0; PAYLOAD];
    let st = FuseKstatfs {
        blocks: 100,
        bsize: 4096,
        namelen: 255,
        frsize: 4096,
        ..FuseKstatfs::default()
    };
    encode(&mut header, &mut payload, 12, &Reply::Statfs(st));
    assert_eq!(out_header(&header).len, 16 + 80);
    assert_eq!(header.ring_ent_in_out.payload_sz, 80);
    assert_eq!(&payload[..80], st.as_bytes());
}

#[test]
fn an_error_reply_has_no_body_and_a_negative_errno() {
    let mut header = entry(22, 60, 13, &[]);
    header.ring_ent_in_out.payload_sz = 20;
    let mut payload = vec![0; PAYLOAD];
    encode(&mut header, &mut payload, 13, &Reply::Error(libc::EIO));
    assert_eq!(
        out_header(&header),
        FuseOutHeader {
            len: 16,
            error: -libc::EIO,
            unique: 13
        }
    );
    assert_eq!(header.ring_ent_in_out.payload_sz, 0);
}

#[test]
fn an_errno_the_kernel_would_refuse_becomes_eio() {
    // The kernel rejects error <= -ERESTARTSYS (512) and any positive error.
    for errno in [0, -5, 512, 100_000] {
        let mut header = entry(FUSE_STATFS, 40, 14, &[]);
        let mut payload = vec![0; PAYLOAD];
        encode(&mut header, &mut payload, 14, &Reply::Error(errno));
        assert_eq!(out_header(&header).error, -libc::EIO, "errno {errno}");
    }
}

#[test]
fn a_body_the_payload_cannot_hold_becomes_eio() {
    let mut header = entry(FUSE_STATFS, 40, 15, &[]);
    let mut payload = vec![0; 10];
    encode(
        &mut header,
        &mut payload,
        15,
        &Reply::Statfs(FuseKstatfs::default()),
    );
    assert_eq!(out_header(&header).error, -libc::EIO);
    assert_eq!(header.ring_ent_in_out.payload_sz, 0);
}

fn stat_of(kind: Kind, mtime: SystemTime) -> Stat {
    Stat {
        kind,
        dev: 9,
        ino: 99,
        size: 1234,
        blocks: 8,
        atime: mtime,
        mtime,
        ctime: mtime,
        perm: 0o640,
        nlink: 1,
        uid: 1000,
        gid: 100,
    }
}

#[test]
fn attributes_are_given_as_the_fuser_adapter_gives_them() {
    let mtime = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123);
    let entry = Entry::new(
        Attr {
            ino: 5,
            stat: stat_of(Kind::File, mtime),
        },
        Duration::new(3, 500),
    );
    let out = attr_out(&entry);
    assert_eq!((out.attr_valid, out.attr_valid_nsec), (3, 500));
    let a = out.attr;
    // The inode is the mount's, not the backing file's.
    assert_eq!(a.ino, 5);
    assert_eq!((a.size, a.blocks), (1234, 8));
    assert_eq!((a.mtime, a.mtimensec), (1_700_000_000, 123));
    assert_eq!(a.mode, libc::S_IFREG | 0o640);
    assert_eq!((a.nlink, a.uid, a.gid, a.rdev), (1, 1000, 100, 0));
    assert_eq!((a.blksize, a.flags), (4096, 0));

    let dir = attr_out(&Entry::new(
        Attr {
            ino: 1,
            stat: stat_of(Kind::Dir, mtime),
        },
        Duration::ZERO,
    ));
    assert_eq!(dir.attr.mode, libc::S_IFDIR | 0o640);
    let other = attr_out(&Entry::new(
        Attr {
            ino: 2,
            stat: stat_of(Kind::Other, mtime),
        },
        Duration::ZERO,
    ));
    assert_eq!(other.attr.mode & libc::S_IFMT, libc::S_IFREG);
}

#[test]
fn a_time_before_the_epoch_is_negative_seconds_and_forward_nanoseconds() {
    let t = SystemTime::UNIX_EPOCH - Duration::new(1, 250_000_000);
    assert_eq!(split_time(t), ((-2i64) as u64, 750_000_000));
    let whole = SystemTime::UNIX_EPOCH - Duration::from_secs(3);
    assert_eq!(split_time(whole), ((-3i64) as u64, 0));
}

#[test]
fn statfs_is_the_backing_filesystems_as_the_adapter_narrows_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = rustix::fs::statvfs(dir.path()).unwrap();
    let k = kstatfs(&s);
    assert_eq!(
        (k.blocks, k.bfree, k.bavail, k.files, k.ffree),
        (s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree)
    );
    assert_eq!(k.bsize as u64, s.f_bsize);
    assert_eq!(k.namelen as u64, s.f_namemax);
    assert_eq!(k.frsize as u64, s.f_frsize);
}
