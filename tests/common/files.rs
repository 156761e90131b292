//! Plain files and errnos, no mount involved: writing a file with its parents, setting a
//! modification time (the one way tests make an entry old: never by sleeping), listing a
//! directory, and turning a failed call into its errno.

use std::ffi::{CString, OsString};
use std::fmt::Debug;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::IntoRawFd;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, Timespec, Timestamps, CWD, UTIME_OMIT};

/// Set the modification time of `path` (atime untouched, symlinks followed), as `touch -m -d`
/// does. Works on any path, mounted or not.
pub fn set_mtime(path: &Path, time: SystemTime) -> io::Result<()> {
    let (tv_sec, tv_nsec) = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => (after.as_secs() as i64, after.subsec_nanos()),
        Err(e) => {
            let before = e.duration();
            match before.subsec_nanos() {
                0 => (-(before.as_secs() as i64), 0),
                n => (-(before.as_secs() as i64) - 1, 1_000_000_000 - n),
            }
        }
    };
    set_mtime_raw(path, tv_sec, tv_nsec)
}

/// [`set_mtime`] in seconds and nanoseconds since the epoch, for times a `SystemTime` cannot
/// hold (`i64::MIN`, `i64::MAX`).
pub fn set_mtime_raw(path: &Path, tv_sec: i64, tv_nsec: u32) -> io::Result<()> {
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec,
            tv_nsec: tv_nsec.into(),
        },
    };
    Ok(rustix::fs::utimensat(CWD, path, &times, AtFlags::empty())?)
}

/// Create parents and write `bytes` to `path` (plain `fs::write`, no mount involved).
#[track_caller]
pub fn write_file(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create parent dirs");
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub fn cstring(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

/// The errno of a failed call; panics (showing the value) if it succeeded.
#[track_caller]
pub fn errno_of<T: Debug>(result: io::Result<T>) -> i32 {
    match result {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("expected an OS error, got {e}")),
    }
}

/// What a request to a FUSE mount whose daemon was killed fails with: `ENOTCONN` once the
/// connection is gone; `ECONNABORTED` for a request caught while the kernel tears it down, and
/// on io_uring `ECANCELED` for one the kernel had put on a ring entry of the dead daemon.
pub fn is_dead_mount_errno(errno: i32) -> bool {
    matches!(errno, libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED)
}

/// Turn a libc return value (`-1` = failure) into an `io::Result`.
pub fn check_rc(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Close a file and report what `close(2)` says (dropping a `File` ignores close errors,
/// and cachetta validates JSON at close).
pub fn close_fd(file: File) -> io::Result<()> {
    let fd = file.into_raw_fd();
    // SAFETY: we own `fd` (taken from the File) and close it exactly once.
    check_rc(unsafe { libc::close(fd) }).map(|_| ())
}

/// Sorted entry names of a directory. Panics on error.
#[track_caller]
pub fn list_dir(path: &Path) -> Vec<OsString> {
    let mut names: Vec<OsString> = fs::read_dir(path)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", path.display()))
        .map(|e| e.expect("read_dir entry").file_name())
        .collect();
    names.sort();
    names
}

/// `names` as OsStrings, sorted, for comparing with [`list_dir`].
pub fn names(names: &[&str]) -> Vec<OsString> {
    let mut v: Vec<OsString> = names.iter().map(OsString::from).collect();
    v.sort();
    v
}

/// Every path under `dir` (not following symlinks) named exactly `name`.
pub fn find_named(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name() == name {
            found.push(path.clone());
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(find_named(&path, name));
        }
    }
    found
}

/// The lines of a file a command appends to; none while it does not exist.
pub fn lines(path: &Path) -> Vec<String> {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read {}: {e}", path.display()),
    }
}

/// `path` in single quotes for a command line (test paths never hold a quote).
pub fn sq(path: &Path) -> String {
    let s = path.to_str().expect("UTF-8 test path");
    assert!(!s.contains('\''), "test path with a quote: {s}");
    format!("'{s}'")
}

/// The prefix of cachetta's staging files.
pub const STAGING_PREFIX: &str = ".cachetta-staging.";

/// The staging files in `dir` (not below it).
pub fn staging_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(STAGING_PREFIX))
        .collect()
}
