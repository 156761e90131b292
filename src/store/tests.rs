//! Tests of `store`.

use super::stat::{far_future, far_past, system_time};
use super::*;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, UNIX_EPOCH};

#[test]
fn file_times_out_of_range_are_clamped_never_a_panic() {
    assert_eq!(system_time(i64::MIN, 0), far_past());
    assert_eq!(system_time(i64::MAX, 999_999_999), far_future());
    assert_eq!(
        system_time(-1, 500_000_000),
        UNIX_EPOCH - Duration::from_millis(500)
    );
    assert_eq!(system_time(0, -5), UNIX_EPOCH);
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false).unwrap();
    (dir, store)
}

#[test]
fn json_validation_accepts_any_value_and_rejects_garbage() {
    assert!(is_valid_json(b"{\"a\":1}\n"));
    assert!(is_valid_json(b" 3 "));
    assert!(is_valid_json(b"\"x\""));
    assert!(!is_valid_json(b""));
    assert!(!is_valid_json(b"{\"a\":1"));
    assert!(!is_valid_json(b"{} {}"));
    assert!(!is_valid_json(b"\"\xff\""));
}

#[test]
fn entry_names_end_in_json_and_staging_names_are_not_entries() {
    assert!(is_entry_name(OsStr::new("x.json")));
    assert!(!is_entry_name(OsStr::new("x.json.tmp")));
    assert!(!is_entry_name(OsStr::new(".cachetta-staging.1.2.json")));
    assert!(is_staging_name(OsStr::new(".cachetta-staging.1.2.tmp")));
}

#[test]
fn symlinks_are_never_followed_in_any_component() {
    let (dir, store) = store();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.json"), "{}").unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.json"),
        dir.path().join("s.json"),
    )
    .unwrap();
    assert!(store.stat(Path::new("link/secret.json")).is_err());
    assert!(store
        .open_file(Path::new("link/secret.json"), OFlags::RDONLY, Mode::empty())
        .is_err());
    assert_eq!(store.stat(Path::new("s.json")).unwrap().kind, Kind::Other);
    let err = store
        .open_file(Path::new("s.json"), OFlags::RDONLY, Mode::empty())
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    assert!(store.stat(Path::new("../x")).is_err());
}

#[test]
fn publish_replaces_atomically_and_sets_mtime() {
    let (dir, store) = store();
    std::fs::write(dir.path().join("x.json"), "{\"old\":1}").unwrap();
    let (old, _) = store
        .open_file(Path::new("x.json"), OFlags::RDONLY, Mode::empty())
        .unwrap();
    let mut staging = store.create_staging(Path::new(""), 0o640).unwrap();
    staging.file.write_all(b"{\"new\":2}").unwrap();
    let mtime = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    store
        .publish(staging, Path::new("x.json"), Some(mtime))
        .unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("x.json")).unwrap(),
        b"{\"new\":2}"
    );
    assert_eq!(read_all(&old, 100).unwrap(), b"{\"old\":1}");
    let st = store.stat(Path::new("x.json")).unwrap();
    assert_eq!(st.mtime, mtime);
    assert_eq!(st.perm, 0o640);
    let names: Vec<_> = store
        .read_dir(Path::new(""))
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, vec![OsString::from("x.json")]);
}

#[test]
fn streamed_validation_agrees_with_whole_buffer_validation() {
    let big_string = format!("\"{}\"", "é€😀".repeat(100_000));
    let cases: Vec<Vec<u8>> = vec![
        b"{\"a\":1}\n".to_vec(),
        b"  [1, 2]  ".to_vec(),
        b"".to_vec(),
        b"{\"a\":".to_vec(),
        b"\"\xff\"".to_vec(),
        b"{\"\xe2\x82\":1}".to_vec(),
        b"\"ok\xc3\"".to_vec(),
        b"[1] x".to_vec(),
        big_string.clone().into_bytes(),
        {
            let mut cut = big_string.into_bytes();
            cut.insert(300_001, 0xff);
            cut
        },
    ];
    for bytes in cases {
        let file = tempfile::tempfile().unwrap();
        file.write_all_at(&bytes, 0).unwrap();
        let whole = is_valid_json(&bytes);
        let what = String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).into_owned();
        assert_eq!(file_is_valid_json(&file, u64::MAX).unwrap(), whole, "{what:?}");
        let now = file_is_valid_json_now(&file, u64::MAX, bytes.len() as u64);
        assert_eq!(now.unwrap(), whole, "in memory: {what:?}");
    }
    let file = tempfile::tempfile().unwrap();
    file.write_all_at(&vec![b' '; 1000], 0).unwrap();
    assert_eq!(
        file_is_valid_json(&file, 999).unwrap_err().raw_os_error(),
        Some(libc::EFBIG)
    );
    let file = tempfile::tempfile().unwrap();
    file.write_all_at(&vec![b' '; 100_000], 0).unwrap();
    assert_eq!(
        file_is_valid_json_now(&file, 99_999, 100_000).unwrap_err().raw_os_error(),
        Some(libc::EFBIG),
        "past the limit"
    );
}

#[test]
fn read_all_stops_past_the_limit() {
    let (dir, store) = store();
    std::fs::write(dir.path().join("big"), vec![b'x'; 100]).unwrap();
    let (f, _) = store
        .open_file(Path::new("big"), OFlags::RDONLY, Mode::empty())
        .unwrap();
    assert_eq!(
        read_all(&f, 99).unwrap_err().raw_os_error(),
        Some(libc::EFBIG)
    );
    assert_eq!(read_all(&f, 100).unwrap().len(), 100);
}

#[test]
fn fifo_is_not_opened() {
    let (dir, store) = store();
    let path = dir.path().join("p.json");
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: c is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let err = store
        .open_file(Path::new("p.json"), OFlags::RDONLY, Mode::empty())
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
}

/// `RENAME_NOREPLACE` as NFS and GlusterFS get it (they refuse the flag with `EINVAL`): by link
/// and unlink for files, look-then-rename for directories; never replacing what is there.
#[test]
fn rename_without_the_noreplace_flag_never_replaces_and_moves_files_and_dirs() {
    let (dir, store) = store();
    std::fs::write(dir.path().join("a.json"), "1").unwrap();
    std::fs::write(dir.path().join("b.json"), "2").unwrap();
    std::fs::create_dir(dir.path().join("d")).unwrap();
    let root = store.dir(Path::new("")).unwrap();
    let by_link = |from: &str, to: &str| {
        Store::rename_noreplace_by_link(&root, OsStr::new(from), &root, OsStr::new(to))
    };
    let err = by_link("a.json", "b.json").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
    assert_eq!(std::fs::read_to_string(dir.path().join("a.json")).unwrap(), "1");
    assert_eq!(std::fs::read_to_string(dir.path().join("b.json")).unwrap(), "2");
    by_link("a.json", "c.json").unwrap();
    assert!(!dir.path().join("a.json").exists());
    assert_eq!(std::fs::read_to_string(dir.path().join("c.json")).unwrap(), "1");
    let err = by_link("d", "c.json").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
    by_link("d", "e").unwrap();
    assert!(dir.path().join("e").is_dir());
    assert!(!dir.path().join("d").exists());
}

#[test]
fn estale_is_retried_a_bounded_number_of_times_then_taken_as_gone() {
    let relearned = std::cell::Cell::new(0);
    let mut calls = 0;
    let got = retry_stale(
        || relearned.set(relearned.get() + 1),
        || {
            calls += 1;
            if calls < 3 {
                Err(io::Error::from_raw_os_error(libc::ESTALE))
            } else {
                Ok(calls)
            }
        },
    );
    assert_eq!(got.unwrap(), 3);
    assert_eq!(relearned.get(), 2);
    let mut calls = 0;
    let err = retry_stale(
        || {},
        || -> io::Result<()> {
            calls += 1;
            Err(io::Error::from_raw_os_error(libc::ESTALE))
        },
    )
    .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    assert_eq!(calls, ESTALE_RETRIES + 1);
}

#[test]
fn small_and_large_files_are_judged_alike_whatever_size_was_expected() {
    // Around the size read whole (64 KiB), with right and wrong size hints (a file that grew
    // or shrank since it was stat-ed), and limits below and above the size.
    for len in [0usize, 5, 4095, 4096, 65_535, 65_536, 65_537, 200_000] {
        for valid in [true, false] {
            let mut bytes = vec![b' '; len];
            if len >= 2 && valid {
                bytes[0] = b'1';
            } else if len >= 2 {
                bytes[0] = b'{';
            }
            let file = tempfile::tempfile().unwrap();
            file.write_all_at(&bytes, 0).unwrap();
            let want = is_valid_json(&bytes);
            for hint in [None, Some(0), Some(len as u64), Some(len as u64 / 2), Some(1 << 20)] {
                for limit in [u64::MAX, len as u64, (len as u64).saturating_sub(1)] {
                    let got = file_is_valid_json_sized(&file, limit, hint);
                    let streamed = file_is_valid_json(&file, limit);
                    match (&got, &streamed) {
                        (Ok(a), Ok(b)) => assert_eq!(a, b, "len {len} hint {hint:?} limit {limit}"),
                        (Err(a), Err(b)) => assert_eq!(a.raw_os_error(), b.raw_os_error()),
                        _ => panic!("len {len} hint {hint:?} limit {limit}: {got:?} vs {streamed:?}"),
                    }
                    if limit == u64::MAX {
                        assert_eq!(got.unwrap(), want, "len {len} hint {hint:?}");
                    }
                }
            }
        }
    }
}

/// Where descriptor `fd` of this process points, if it is open.
fn fd_target(fd: i32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()
}

#[test]
fn a_replaced_entry_is_closed_by_the_closer_thread_or_in_place_without_one() {
    use std::os::fd::AsRawFd;
    let (dir, store) = store();
    let path = dir.path().join("replaced.json");
    std::fs::write(&path, "{}").unwrap();
    let open = || {
        let file = File::open(&path).unwrap();
        (file.as_raw_fd(), file)
    };
    // Without a closer (the library): closed at once.
    let (fd, file) = open();
    store.close_later(file);
    assert_ne!(fd_target(fd).as_deref(), Some(path.as_path()));
    // With one (the daemon): closed soon, by its thread.
    store.defer_closes().unwrap();
    let (fd, file) = open();
    store.close_later(file);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fd_target(fd).as_deref() == Some(path.as_path()) {
        assert!(std::time::Instant::now() < deadline, "never closed");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A publish that replaces a file is an exchange and an unlink (no data flush inside it on
/// ext4), and still leaves what a rename leaves (the replacing case is
/// `publish_replaces_atomically_and_sets_mtime`): onto a missing name it is a rename, and a
/// directory in the way is never exchanged away.
#[test]
fn a_publish_leaves_what_a_rename_leaves_whatever_is_in_the_way() {
    let (dir, store) = store();
    let names = || {
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let mut staging = store.create_staging(Path::new(""), 0o644).unwrap();
    staging.file.write_all(b"1").unwrap();
    store.publish(staging, Path::new("new.json"), None).unwrap();
    assert_eq!(std::fs::read(dir.path().join("new.json")).unwrap(), b"1");

    std::fs::create_dir(dir.path().join("d.json")).unwrap();
    std::fs::write(dir.path().join("d.json/inside"), "x").unwrap();
    let mut staging = store.create_staging(Path::new(""), 0o644).unwrap();
    staging.file.write_all(b"2").unwrap();
    let err = store
        .publish(staging, Path::new("d.json"), None)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EISDIR));
    assert_eq!(
        std::fs::read(dir.path().join("d.json/inside")).unwrap(),
        b"x"
    );
    assert_eq!(names(), vec![OsString::from("d.json"), OsString::from("new.json")]);
}

/// A file renamed onto an entry through the mount goes aside to a staging name and is
/// exchanged with the entry: what is left is what `rename(2)` leaves, and where the rename
/// fails, the file is back at its own name.
#[test]
fn a_rename_onto_an_entry_leaves_what_a_rename_leaves() {
    let (dir, store) = store();
    let path = |name: &str| dir.path().join(name);
    let names = || {
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    std::fs::write(path("x.json"), "1").unwrap();
    std::fs::write(path("tmp"), "2").unwrap();
    let reader = std::fs::File::open(path("x.json")).unwrap();
    store
        .rename_onto_entry(Path::new("tmp"), Path::new("x.json"))
        .unwrap();
    assert_eq!(std::fs::read_to_string(path("x.json")).unwrap(), "2");
    assert_eq!(read_all(&reader, 10).unwrap(), b"1", "a reader keeps the old file");
    assert_eq!(names(), ["x.json"]);

    std::fs::write(path("tmp"), "3").unwrap();
    store
        .rename_onto_entry(Path::new("tmp"), Path::new("y.json"))
        .unwrap();
    assert_eq!(std::fs::read_to_string(path("y.json")).unwrap(), "3");

    std::fs::create_dir(path("d.json")).unwrap();
    std::fs::write(path("tmp"), "4").unwrap();
    let err = store
        .rename_onto_entry(Path::new("tmp"), Path::new("d.json"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EISDIR));
    assert_eq!(std::fs::read_to_string(path("tmp")).unwrap(), "4");
    assert_eq!(names(), ["d.json", "tmp", "x.json", "y.json"]);
}
