//! Each family of ops answered on the ring by a real `CacheFs`, as the kernel would send them:
//! names, entries, files, directories, xattrs, and the ops the adapter answers without the
//! filesystem.

use std::sync::atomic::Ordering;

use zerocopy::IntoBytes;

use crate::uring::abi::*;
use crate::uring::serve::tests::{ask, filesystem, lookup, name, ok, read_as};
use crate::uring::serve::Served;

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
    assert_eq!(
        opened.backing_id, 0,
        "no backing id unless the fs passes the open through"
    );
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
fn setattr_decodes_its_valid_bits_and_answers_the_filesystems_attributes() {
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
