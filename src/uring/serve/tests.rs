//! Ring entries answered by a real `CacheFs` over a temp backing dir, with no kernel: each
//! family of ops as the kernel would send it, the reply read back as the kernel reads it.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use zerocopy::{FromBytes, IntoBytes};

use super::*;
use crate::clock::SystemClock;
use crate::config::{Config, Overrides};
use crate::store::Store;
use crate::uring::abi::*;
use crate::uring::message::tests::{entry, getattr_in, out_header};
use crate::uring::ring::Mailbox;

const PAYLOAD: usize = 8192;

fn filesystem() -> (tempfile::TempDir, Arc<CacheFs>) {
    filesystem_with("")
}

fn filesystem_with(toml: &str) -> (tempfile::TempDir, Arc<CacheFs>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.json"), "{}").unwrap();
    let config = Config::from_toml(toml, Path::new("test.toml"), &Overrides::default()).unwrap();
    let store = Store::open(dir.path(), false).unwrap();
    let fs = CacheFs::new(Arc::new(config), store, Arc::new(SystemClock), false);
    (dir, fs)
}

/// One request through `handle` with a ring's `Defer`, as the ring gives it; the header and
/// payload after, and whether the handler left it to be answered later.
fn handle_one(
    fs: &Arc<CacheFs>,
    served: &Served,
    scope: Scope,
    header: &mut FuseUringReqHeader,
    payload: &mut [u8],
) -> Arc<Mailbox> {
    let mailbox = Mailbox::detached();
    let commit_id = header.ring_ent_in_out.commit_id;
    let defer = mailbox.defer(0, commit_id);
    handle(fs, served, scope, header, payload, &defer);
    assert!(!defer.was_deferred(), "answered at once");
    mailbox
}

/// A request for node `nodeid` with `arg` in `op_in` and `sent` in the payload, served with
/// every op on; its `fuse_out_header` and reply body.
fn ask(
    fs: &Arc<CacheFs>,
    served: &Served,
    opcode: u32,
    nodeid: u64,
    arg: &[u8],
    sent: &[u8],
) -> (FuseOutHeader, Vec<u8>) {
    static UNIQUE: AtomicU64 = AtomicU64::new(1000);
    let unique = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let len = (40 + arg.len() + sent.len()) as u32;
    let mut header = entry(opcode, len, unique, arg);
    header.in_out[16..24].copy_from_slice(&nodeid.to_ne_bytes());
    header.ring_ent_in_out.payload_sz = sent.len() as u32;
    let mut payload = vec![0; PAYLOAD];
    payload[..sent.len()].copy_from_slice(sent);
    handle_one(fs, served, Scope::Every, &mut header, &mut payload);
    let oh = out_header(&header);
    assert_eq!(oh.unique, unique);
    assert_eq!(
        oh.len as usize,
        16 + header.ring_ent_in_out.payload_sz as usize
    );
    let body = payload[..header.ring_ent_in_out.payload_sz as usize].to_vec();
    (oh, body)
}

fn ok(answer: (FuseOutHeader, Vec<u8>)) -> Vec<u8> {
    assert_eq!(answer.0.error, 0, "{:?}", answer.0);
    answer.1
}

fn read_as<T: FromBytes>(body: &[u8]) -> T {
    T::read_from_prefix(body).unwrap().0
}

fn name(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn lookup(fs: &Arc<CacheFs>, served: &Served, parent: u64, n: &str) -> (FuseOutHeader, Vec<u8>) {
    ask(fs, served, FUSE_LOOKUP, parent, &[], &name(n))
}

#[test]
fn statfs_on_the_ring_answers_the_backing_filesystem_and_is_counted() {
    let (dir, fs) = filesystem();
    let served = Served::default();
    let mut header = entry(FUSE_STATFS, 40, 21, &[]);
    let mut payload = vec![0; PAYLOAD];
    handle_one(
        &fs,
        &served,
        Scope::StatfsGetattr,
        &mut header,
        &mut payload,
    );

    let oh = out_header(&header);
    assert_eq!((oh.error, oh.unique, oh.len), (0, 21, 16 + 80));
    let (st, _) = FuseKstatfs::read_from_prefix(&payload[..]).unwrap();
    let backing = rustix::fs::statvfs(dir.path()).unwrap();
    assert_eq!(st.blocks, backing.f_blocks);
    assert_eq!(st.bsize as u64, backing.f_bsize);
    assert_eq!(served.count(FUSE_STATFS), 1);
    // The same per-op stats the fuser adapter counts in.
    assert_eq!(fs.requests().statfs.count.load(Ordering::Relaxed), 1);
}

#[test]
fn getattr_of_the_root_on_the_ring_is_a_directory() {
    let (_dir, fs) = filesystem();
    let served = Served::default();
    let mut header = entry(FUSE_GETATTR, 56, 22, &getattr_in(0, 0));
    let mut payload = vec![0; PAYLOAD];
    handle_one(
        &fs,
        &served,
        Scope::StatfsGetattr,
        &mut header,
        &mut payload,
    );

    let oh = out_header(&header);
    assert_eq!((oh.error, oh.unique, oh.len), (0, 22, 16 + 104));
    let (out, _) = FuseAttrOut::read_from_prefix(&payload[..]).unwrap();
    assert_eq!(out.attr.ino, 1);
    assert_eq!(out.attr.mode & libc::S_IFMT, libc::S_IFDIR);
    assert_eq!(served.count(FUSE_GETATTR), 1);
    assert_eq!(fs.requests().getattr.count.load(Ordering::Relaxed), 1);
}

#[test]
fn getattr_of_an_unknown_inode_is_the_filesystems_error() {
    let (_dir, fs) = filesystem();
    let served = Served::default();
    // Node ids are the kernel's, from lookups; nothing looked up 999.
    let (oh, body) = ask(&fs, &served, FUSE_GETATTR, 999, &getattr_in(0, 0), &[]);
    assert!(oh.error < 0, "{oh:?}");
    assert!(body.is_empty());
}

#[test]
fn under_statfs_getattr_other_opcodes_are_refused_and_counted_apart() {
    let (_dir, fs) = filesystem();
    let served = Served::default();
    for (opcode, errno) in [(22, libc::EIO), (1, libc::EIO), (52, libc::ENOSYS)] {
        let mut header = entry(opcode, 60, 30 + u64::from(opcode), &[]);
        header.ring_ent_in_out.payload_sz = 4;
        let mut payload = vec![0; PAYLOAD];
        handle_one(
            &fs,
            &served,
            Scope::StatfsGetattr,
            &mut header,
            &mut payload,
        );
        assert_eq!(out_header(&header).error, -errno, "opcode {opcode}");
    }
    assert_eq!(served.refused.load(Ordering::Relaxed), 3);
    assert_eq!(served.count(FUSE_STATFS), 0);
    assert_eq!(served.count(FUSE_LOOKUP), 0);
}

#[test]
fn with_every_op_on_an_opcode_the_adapter_lacks_is_enosys_as_fuser_answers_it() {
    let (_dir, fs) = filesystem();
    let served = Served::default();
    // STATX: the kernel then falls back to GETATTR, as on classic.
    let (oh, _) = ask(&fs, &served, 52, 1, &[0; 24], &[]);
    assert_eq!(oh.error, -libc::ENOSYS);
    assert_eq!(served.refused.load(Ordering::Relaxed), 1);
}

#[test]
fn a_malformed_entry_is_answered_eio_to_its_commit_id() {
    let (_dir, fs) = filesystem();
    let served = Served::default();
    let mut header = entry(FUSE_STATFS, 12, 40, &[]);
    let mut payload = vec![0; PAYLOAD];
    handle_one(&fs, &served, Scope::Every, &mut header, &mut payload);
    let oh = out_header(&header);
    assert_eq!((oh.error, oh.unique), (-libc::EIO, 40));
    assert_eq!(served.malformed.load(Ordering::Relaxed), 1);
    assert_eq!(
        served.to_string(),
        "statfs 0, getattr 0, refused 0 (opcodes []), malformed 1; by queue []"
    );
}

#[test]
fn a_name_without_its_nul_is_eio_and_counted_malformed() {
    let (_dir, fs) = filesystem();
    let served = Served::default();
    let (oh, _) = ask(&fs, &served, FUSE_LOOKUP, 1, &[], b"x.json");
    assert_eq!(oh.error, -libc::EIO);
    assert_eq!(served.malformed.load(Ordering::Relaxed), 1);
    assert_eq!(fs.requests().lookup.count.load(Ordering::Relaxed), 0);
}

#[test]
fn lookup_finds_an_entry_and_answers_a_miss_as_the_adapter_does() {
    let (_dir, fs) = filesystem();
    let served = Served::default();
    let out: FuseEntryOut = read_as(&ok(lookup(&fs, &served, 1, "x.json")));
    assert!(out.nodeid > 1);
    assert_eq!(out.attr.ino, out.nodeid);
    assert_eq!(out.attr.size, 2);
    assert_eq!(out.attr.mode & libc::S_IFMT, libc::S_IFREG);
    assert_eq!(out.attr.blksize, 4096);
    assert_eq!(
        (out.entry_valid, out.entry_valid_nsec),
        (out.attr_valid, out.attr_valid_nsec)
    );
    // A name that is not there: a negative entry (node id 0) or ENOENT, never anything else.
    let (oh, body) = lookup(&fs, &served, 1, "none.json");
    if oh.error == 0 {
        assert_eq!(read_as::<FuseEntryOut>(&body).nodeid, 0);
    } else {
        assert_eq!(oh.error, -libc::ENOENT);
    }
    assert_eq!(served.count(FUSE_LOOKUP), 2);
    assert_eq!(fs.requests().lookup.count.load(Ordering::Relaxed), 2);
}

#[test]
fn create_write_release_then_open_and_read_it_back() {
    let (dir, fs) = filesystem();
    let served = Served::default();
    let create = FuseCreateIn {
        flags: (libc::O_WRONLY | libc::O_CREAT) as u32,
        mode: libc::S_IFREG | 0o644,
        umask: 0o022,
        open_flags: 0,
    };
    let body = ok(ask(
        &fs,
        &served,
        FUSE_CREATE,
        1,
        create.as_bytes(),
        &name("y.json"),
    ));
    assert_eq!(body.len(), 128 + 16, "fuse_entry_out then fuse_open_out");
    let created: FuseEntryOut = read_as(&body);
    let opened: FuseOpenOut = read_as(&body[128..]);
    assert_eq!(
        opened.open_flags & fuser::FopenFlags::FOPEN_DIRECT_IO.bits(),
        fuser::FopenFlags::FOPEN_DIRECT_IO.bits(),
        "created files are written through the daemon"
    );
    let data = br#"{"a":1}"#;
    let write = FuseWriteIn {
        fh: opened.fh,
        size: data.len() as u32,
        ..FuseWriteIn::default()
    };
    let written: FuseWriteOut = read_as(&ok(ask(
        &fs,
        &served,
        FUSE_WRITE,
        created.nodeid,
        write.as_bytes(),
        data,
    )));
    assert_eq!(written.size, data.len() as u32);
    let flush = FuseFlushIn {
        fh: opened.fh,
        ..FuseFlushIn::default()
    };
    ok(ask(
        &fs,
        &served,
        FUSE_FLUSH,
        created.nodeid,
        flush.as_bytes(),
        &[],
    ));
    let release = FuseReleaseIn {
        fh: opened.fh,
        ..FuseReleaseIn::default()
    };
    assert!(ok(ask(
        &fs,
        &served,
        FUSE_RELEASE,
        created.nodeid,
        release.as_bytes(),
        &[]
    ))
    .is_empty());
    assert_eq!(std::fs::read(dir.path().join("y.json")).unwrap(), data);

    let found: FuseEntryOut = read_as(&ok(lookup(&fs, &served, 1, "y.json")));
    let open = FuseOpenIn {
        flags: libc::O_RDONLY as u32,
        open_flags: 0,
    };
    let opened: FuseOpenOut = read_as(&ok(ask(
        &fs,
        &served,
        FUSE_OPEN,
        found.nodeid,
        open.as_bytes(),
        &[],
    )));
    assert_eq!(opened.backing_id, 0, "no backing ids on the ring");
    let read = FuseReadIn {
        fh: opened.fh,
        size: 4096,
        ..FuseReadIn::default()
    };
    assert_eq!(
        ok(ask(
            &fs,
            &served,
            FUSE_READ,
            found.nodeid,
            read.as_bytes(),
            &[]
        )),
        data
    );
    let release = FuseReleaseIn {
        fh: opened.fh,
        ..FuseReleaseIn::default()
    };
    ok(ask(
        &fs,
        &served,
        FUSE_RELEASE,
        found.nodeid,
        release.as_bytes(),
        &[],
    ));
    for (op, stats) in [
        (FUSE_CREATE, &fs.requests().create),
        (FUSE_WRITE, &fs.requests().write),
        (FUSE_READ, &fs.requests().read),
        (FUSE_RELEASE, &fs.requests().release),
    ] {
        assert_eq!(
            served.count(op),
            stats.count.load(Ordering::Relaxed),
            "opcode {op}"
        );
        assert!(served.count(op) >= 1, "opcode {op}");
    }
}

/// The names of a `READDIR` (`plus` false) or `READDIRPLUS` reply, walking it as the kernel does.
fn listed(body: &[u8], plus: bool) -> Vec<(String, u64, u32)> {
    let mut names = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let head = if plus { 128 } else { 0 };
        let d: FuseDirent = read_as(&body[at + head..]);
        let start = at + head + 24;
        let n = String::from_utf8(body[start..start + d.namelen as usize].to_vec()).unwrap();
        if plus {
            let e: FuseEntryOut = read_as(&body[at..]);
            assert_eq!(e.nodeid, d.ino, "{n}");
        }
        names.push((n, d.ino, d.typ));
        at += (head + 24 + d.namelen as usize).next_multiple_of(8);
    }
    assert_eq!(at, body.len(), "entries padded to 8 fill the reply exactly");
    names
}

#[test]
fn mkdir_then_list_with_readdir_and_readdirplus() {
    let (_dir, fs) = filesystem();
    let served = Served::default();
    let mkdir = FuseMkdirIn {
        mode: 0o755,
        umask: 0o022,
    };
    let made: FuseEntryOut = read_as(&ok(ask(
        &fs,
        &served,
        FUSE_MKDIR,
        1,
        mkdir.as_bytes(),
        &name("d"),
    )));
    assert_eq!(made.attr.mode & libc::S_IFMT, libc::S_IFDIR);

    let open = FuseOpenIn::default();
    for (opcode, plus) in [(FUSE_READDIR, false), (FUSE_READDIRPLUS, true)] {
        let dir: FuseOpenOut = read_as(&ok(ask(
            &fs,
            &served,
            FUSE_OPENDIR,
            1,
            open.as_bytes(),
            &[],
        )));
        let read = FuseReadIn {
            fh: dir.fh,
            size: 4096,
            ..FuseReadIn::default()
        };
        let names = listed(
            &ok(ask(&fs, &served, opcode, 1, read.as_bytes(), &[])),
            plus,
        );
        let find = |n: &str| names.iter().find(|(name, _, _)| name == n).cloned();
        assert_eq!(
            find("d").map(|(_, _, typ)| typ),
            Some(libc::DT_DIR as u32),
            "{names:?}"
        );
        assert_eq!(
            find("x.json").map(|(_, _, typ)| typ),
            Some(libc::DT_REG as u32),
            "{names:?}"
        );
        // A reply too small for one entry is empty, not an error.
        let tiny = FuseReadIn { size: 8, ..read };
        assert!(ok(ask(&fs, &served, opcode, 1, tiny.as_bytes(), &[])).is_empty());
        let release = FuseReleaseIn {
            fh: dir.fh,
            ..FuseReleaseIn::default()
        };
        ok(ask(
            &fs,
            &served,
            FUSE_RELEASEDIR,
            1,
            release.as_bytes(),
            &[],
        ));
    }
    assert_eq!(served.count(FUSE_READDIRPLUS), 2);
    assert_eq!(fs.requests().readdirplus.count.load(Ordering::Relaxed), 2);
    ok(ask(&fs, &served, FUSE_RMDIR, 1, &[], &name("d")));
}

#[test]
fn rename2_and_unlink_move_and_remove_the_backing_file() {
    let (dir, fs) = filesystem();
    let served = Served::default();
    let rename = FuseRename2In {
        newdir: 1,
        flags: 0,
        padding: 0,
    };
    let mut names = name("x.json");
    names.extend(name("z.json"));
    ok(ask(
        &fs,
        &served,
        FUSE_RENAME2,
        1,
        rename.as_bytes(),
        &names,
    ));
    assert!(dir.path().join("z.json").exists() && !dir.path().join("x.json").exists());
    // Plain RENAME: an 8-byte argument.
    let mut back = name("z.json");
    back.extend(name("x.json"));
    ok(ask(
        &fs,
        &served,
        FUSE_RENAME,
        1,
        FuseRenameIn { newdir: 1 }.as_bytes(),
        &back,
    ));
    assert!(dir.path().join("x.json").exists());
    // A rename whose second name has no NUL is malformed.
    let (oh, _) = ask(
        &fs,
        &served,
        FUSE_RENAME,
        1,
        FuseRenameIn { newdir: 1 }.as_bytes(),
        b"x.json\0y",
    );
    assert_eq!(oh.error, -libc::EIO);
    ok(ask(&fs, &served, FUSE_UNLINK, 1, &[], &name("x.json")));
    assert!(!dir.path().join("x.json").exists());
    assert_eq!(served.count(FUSE_UNLINK), 1);
}

#[test]
fn xattrs_follow_the_size_protocol() {
    let (_dir, fs) = filesystem();
    let served = Served::default();
    let attr = name("user.cachetta.stats");
    let probe = FuseGetxattrIn {
        size: 0,
        padding: 0,
    };
    let size: FuseGetxattrOut = read_as(&ok(ask(
        &fs,
        &served,
        FUSE_GETXATTR,
        1,
        probe.as_bytes(),
        &attr,
    )));
    assert!(size.size > 0);
    let short = FuseGetxattrIn {
        size: 1,
        padding: 0,
    };
    let (oh, _) = ask(&fs, &served, FUSE_GETXATTR, 1, short.as_bytes(), &attr);
    assert_eq!(oh.error, -libc::ERANGE);
    let room = FuseGetxattrIn {
        size: 4096,
        padding: 0,
    };
    let value = ok(ask(&fs, &served, FUSE_GETXATTR, 1, room.as_bytes(), &attr));
    assert!(
        value.starts_with(b"{"),
        "{}",
        String::from_utf8_lossy(&value)
    );
    // Missing: never ENOSYS (the kernel would stop asking).
    let (oh, _) = ask(
        &fs,
        &served,
        FUSE_GETXATTR,
        1,
        room.as_bytes(),
        &name("user.none"),
    );
    assert_ne!(oh.error, -libc::ENOSYS);
    assert!(oh.error < 0);
    let list: FuseGetxattrOut = read_as(&ok(ask(
        &fs,
        &served,
        FUSE_LISTXATTR,
        1,
        probe.as_bytes(),
        &[],
    )));
    let names = ok(ask(
        &fs,
        &served,
        FUSE_LISTXATTR,
        1,
        FuseGetxattrIn {
            size: list.size,
            padding: 0,
        }
        .as_bytes(),
        &[],
    ));
    assert_eq!(names.len(), list.size as usize);
    assert!(names.ends_with(&[0]), "NUL-separated");
    // A size beyond what the payload can hold is malformed, not a panic.
    let huge = FuseGetxattrIn {
        size: u32::MAX,
        padding: 0,
    };
    let (oh, _) = ask(&fs, &served, FUSE_GETXATTR, 1, huge.as_bytes(), &attr);
    assert_eq!(oh.error, -libc::EIO);
}

#[test]
fn ioctl_readlink_access_and_special_files_answer_as_the_adapter() {
    let (_dir, fs) = filesystem();
    let served = Served::default();
    assert_eq!(
        ask(&fs, &served, FUSE_IOCTL, 1, &[0; 32], &[]).0.error,
        -libc::ENOTTY
    );
    assert_eq!(
        ask(&fs, &served, FUSE_READLINK, 1, &[], &[]).0.error,
        -libc::EINVAL
    );
    ok(ask(
        &fs,
        &served,
        FUSE_ACCESS,
        1,
        &[4, 0, 0, 0, 0, 0, 0, 0],
        &[],
    ));
    let special = fs.refuse_special().errno;
    let mknod = [0u8; 16];
    assert_eq!(
        ask(&fs, &served, FUSE_MKNOD, 1, &mknod, &name("p")).0.error,
        -special
    );
    let mut link = name("l");
    link.extend(name("x.json"));
    assert_eq!(
        ask(&fs, &served, FUSE_SYMLINK, 1, &[], &link).0.error,
        -special
    );
}

#[test]
fn setattr_truncates_through_the_open_file_and_answers_the_new_attributes() {
    let (dir, fs) = filesystem();
    let served = Served::default();
    let found: FuseEntryOut = read_as(&ok(lookup(&fs, &served, 1, "x.json")));
    let set = FuseSetattrIn {
        valid: FATTR_MODE,
        mode: 0o600,
        ..FuseSetattrIn::default()
    };
    let (oh, body) = ask(
        &fs,
        &served,
        FUSE_SETATTR,
        found.nodeid,
        set.as_bytes(),
        &[],
    );
    // Whatever the filesystem decides about a mode change, the reply is its answer encoded.
    match oh.error {
        0 => assert_eq!(read_as::<FuseAttrOut>(&body).attr.ino, found.nodeid),
        e => assert!(e < 0),
    }
    assert!(dir.path().join("x.json").exists());
    assert_eq!(served.count(FUSE_SETATTR), 1);
}

#[test]
fn a_read_through_lookup_is_answered_later_through_the_mailbox() {
    let (dir, fs) = filesystem_with(
        "[[rule]]\nmatch = \"filled/*.json\"\nrefresh = \"echo '{\\\"n\\\":1}'\"\nfill_on_miss = true\n",
    );
    std::fs::create_dir(dir.path().join("filled")).unwrap();
    let served = Served::default();
    let parent: FuseEntryOut = read_as(&ok(lookup(&fs, &served, 1, "filled")));

    let mut header = entry(FUSE_LOOKUP, 40 + 7, 77, &[]);
    header.in_out[16..24].copy_from_slice(&parent.nodeid.to_ne_bytes());
    header.ring_ent_in_out.payload_sz = 7;
    let mut payload = vec![0; PAYLOAD];
    payload[..7].copy_from_slice(b"a.json\0");
    let mailbox = Mailbox::detached();
    let defer = mailbox.defer(3, 77);
    handle(
        &fs,
        &served,
        Scope::Every,
        &mut header,
        &mut payload,
        &defer,
    );
    assert!(defer.was_deferred(), "the lookup waits for its command");

    let (slot, commit_id, write) = mailbox
        .wait(Duration::from_secs(20))
        .expect("a later reply");
    assert_eq!((slot, commit_id), (3, 77));
    let write = write.expect("a reply, not a dropped one");
    let mut header = FuseUringReqHeader::default();
    write(&mut header, &mut payload);
    let oh = out_header(&header);
    assert_eq!((oh.error, oh.unique), (0, 77));
    let out: FuseEntryOut = read_as(&payload);
    assert_eq!(out.attr.size, 8, "the command's output, filled");
    assert_eq!(served.count(FUSE_LOOKUP), 2);
}

#[test]
fn a_later_reply_dropped_unsent_answers_eio() {
    let mailbox = Mailbox::detached();
    drop(mailbox.defer(5, 9).later());
    let (slot, commit_id, write) = mailbox.wait(Duration::from_secs(1)).unwrap();
    assert_eq!((slot, commit_id), (5, 9));
    assert!(write.is_none(), "the ring answers EIO for it");
}

#[test]
fn destroy_is_acknowledged_and_counted_but_not_in_the_adapters_stats() {
    let (_dir, fs) = filesystem();
    let served = Served::default();
    assert!(ok(ask(&fs, &served, FUSE_DESTROY, 1, &[], &[])).is_empty());
    assert_eq!(served.count(FUSE_DESTROY), 1);
    assert_eq!(served.refused.load(Ordering::Relaxed), 0);
    assert!(served.to_string().contains(", destroy 1,"), "{served}");
}
