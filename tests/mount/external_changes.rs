//! Changes made directly in the backing dir show through the mount within 1 s, and no stale
//! byte is served after that, even when the kernel or the hot set had the old content.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use crate::common::*;

/// SPEC: "within 1 s"; 0.3 s more for scheduling on a busy CI machine.
const WITHIN: Duration = Duration::from_millis(1300);

#[test]
fn new_entry_in_backing_dir_appears() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("sub/other.json", "{}").start();
    // Warm the negative lookup and the directory listing.
    assert_eq!(errno_of(fs::metadata(m.path("x.json"))), libc::ENOENT);
    assert_eq!(m.list("sub"), names(&["other.json"]));
    m.write_backing("x.json", "{\"new\":1}");
    m.write_backing("sub/y.json", "[]");
    assert!(
        eventually(WITHIN, || fs::read(m.path("x.json")).ok().as_deref()
            == Some(b"{\"new\":1}")),
        "new entry not readable within {WITHIN:?}"
    );
    assert!(
        eventually(WITHIN, || m.list("sub") == names(&["other.json", "y.json"])),
        "new entry not listed within {WITHIN:?}: {:?}",
        m.list("sub")
    );
}

#[test]
fn entry_deleted_in_backing_dir_vanishes() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("x.json", "{}").start();
    assert_eq!(fs::read(m.path("x.json")).unwrap(), b"{}");
    fs::remove_file(m.backing_path("x.json")).unwrap();
    assert!(
        eventually(WITHIN, || fs::metadata(m.path("x.json")).is_err()),
        "deleted entry still visible after {WITHIN:?}"
    );
    assert_eq!(errno_of(fs::read(m.path("x.json"))), libc::ENOENT);
    assert_eq!(m.list(""), names(&[]));
}

#[test]
fn entry_replaced_in_backing_dir_is_read_anew() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("x.json", "{\"v\":1}").start();
    for _ in 0..3 {
        assert_eq!(fs::read(m.path("x.json")).unwrap(), b"{\"v\":1}");
    }
    // The way Python cachetta writes: temp file + rename.
    m.write_backing("x.json.tmp", "{\"v\":2, \"longer\": true}");
    fs::rename(m.backing_path("x.json.tmp"), m.backing_path("x.json")).unwrap();
    assert!(
        eventually(WITHIN, || fs::read(m.path("x.json")).ok().as_deref()
            == Some(b"{\"v\":2, \"longer\": true}")),
        "replaced entry not read anew within {WITHIN:?}"
    );
}

#[test]
fn entry_overwritten_in_place_with_same_size_is_read_anew() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("x.json", "{\"v\":1}").start();
    for _ in 0..3 {
        assert_eq!(fs::read(m.path("x.json")).unwrap(), b"{\"v\":1}");
    }
    // Same inode, same size: only the mtime and the bytes change.
    let f = OpenOptions::new()
        .write(true)
        .open(m.backing_path("x.json"))
        .unwrap();
    f.write_all_at(b"2", 5).unwrap();
    drop(f);
    assert!(
        eventually(WITHIN, || fs::read(m.path("x.json")).ok().as_deref()
            == Some(b"{\"v\":2}")),
        "overwritten entry not read anew within {WITHIN:?}"
    );
}

#[test]
fn entry_corrupted_in_backing_dir_vanishes() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("x.json", "{\"v\":1}").start();
    assert_eq!(fs::read(m.path("x.json")).unwrap(), b"{\"v\":1}");
    m.write_backing("x.json", "{\"v\":");
    assert!(
        eventually(WITHIN, || fs::read(m.path("x.json")).is_err()),
        "corrupted entry still served after {WITHIN:?}"
    );
    assert_eq!(errno_of(fs::metadata(m.path("x.json"))), libc::ENOENT);
    assert_eq!(m.list(""), names(&[]));
}

#[test]
fn entry_aged_in_backing_dir_after_being_read_vanishes() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .config("duration = \"1h\"\n")
        .backing_file("x.json", "{\"t\":1}")
        .start();
    assert_eq!(fs::read(m.path("x.json")).unwrap(), b"{\"t\":1}");
    assert_eq!(m.list(""), names(&["x.json"]));
    m.set_mtime_ago("x.json", 2 * HOUR);
    assert!(
        eventually(WITHIN, || fs::metadata(m.path("x.json")).is_err()),
        "still visible to stat {WITHIN:?} after being aged in the backing dir"
    );
    assert_eq!(errno_of(fs::read(m.path("x.json"))), libc::ENOENT);
    assert_eq!(m.list(""), names(&[]));
}
