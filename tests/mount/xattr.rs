//! Extended attributes answer like a filesystem that has them: `ENODATA` for a name that is
//! not there (never `ENOSYS`, which makes the kernel stop asking), and `listxattr` succeeds.

use crate::common::*;

#[test]
fn getxattr_of_an_unknown_name_is_enodata() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("x.json", "{}").start();
    for path in [m.path("x.json"), m.mnt.clone()] {
        assert_eq!(
            errno_of(getxattr_sized(&path, "user.nope", 64)),
            libc::ENODATA
        );
        assert_eq!(
            errno_of(getxattr_sized(&path, "user.nope", 0)),
            libc::ENODATA
        );
        // Asked twice: an ENOSYS answer would have made the kernel answer EOPNOTSUPP now.
        assert_eq!(
            errno_of(getxattr_sized(&path, "user.other", 64)),
            libc::ENODATA
        );
    }
}

#[test]
fn listxattr_succeeds_on_entries_and_directories() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .backing_file("x.json", "{}")
        .backing_file("d/y.json", "{}")
        .start();
    for path in [m.path("x.json"), m.path("d"), m.mnt.clone()] {
        let list =
            listxattr_raw(&path).unwrap_or_else(|e| panic!("listxattr {}: {e}", path.display()));
        assert!(
            list.is_empty() || list.ends_with(&[0]),
            "not NUL-terminated: {list:?}"
        );
    }
}

#[test]
fn getxattr_on_a_hidden_entry_is_enoent() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("bad.json", "{").start();
    assert_eq!(
        errno_of(getxattr_sized(&m.path("bad.json"), "user.nope", 64)),
        libc::ENOENT
    );
}
