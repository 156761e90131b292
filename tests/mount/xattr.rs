//! Extended attributes answer like a filesystem that has them: `ENODATA` for a name that is
//! not there (never `ENOSYS`, which makes the kernel stop asking), and `listxattr` succeeds.

mod common;

use std::ffi::CString;
use std::path::Path;

use common::*;

fn getxattr(path: &Path, name: &str, buf: &mut [u8]) -> std::io::Result<usize> {
    let p = cstring(path);
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings; `buf` is writable for `buf.len()` bytes (null when empty).
    let rc = unsafe {
        libc::getxattr(
            p.as_ptr(),
            n.as_ptr(),
            if buf.is_empty() {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
            buf.len(),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

fn listxattr(path: &Path) -> std::io::Result<Vec<u8>> {
    let p = cstring(path);
    // SAFETY: valid C string; a null buffer of size 0 asks for the length.
    let len = unsafe { libc::listxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
    if len < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut buf = vec![0u8; len as usize + 256];
    // SAFETY: `buf` is writable for `buf.len()` bytes.
    let len = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(len as usize);
    Ok(buf)
}

#[test]
fn getxattr_of_an_unknown_name_is_enodata() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("x.json", "{}").start();
    for path in [m.path("x.json"), m.mnt.clone()] {
        let mut buf = [0u8; 64];
        assert_eq!(
            errno_of(getxattr(&path, "user.nope", &mut buf)),
            libc::ENODATA
        );
        assert_eq!(
            errno_of(getxattr(&path, "user.nope", &mut [])),
            libc::ENODATA
        );
        // Asked twice: an ENOSYS answer would have made the kernel answer EOPNOTSUPP now.
        assert_eq!(
            errno_of(getxattr(&path, "user.other", &mut buf)),
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
        let list = listxattr(&path).unwrap_or_else(|e| panic!("listxattr {}: {e}", path.display()));
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
    let mut buf = [0u8; 64];
    assert_eq!(
        errno_of(getxattr(&m.path("bad.json"), "user.nope", &mut buf)),
        libc::ENOENT
    );
}
