//! What the refresh tests share: reading `user.cachetta.*` attributes and the mount's stats,
//! the files refresh commands leave outside the backing dir, and whether a process is gone.
//!
//! Kept beside `tests/refresh*.rs` rather than in `tests/common` so the generic harness stays
//! as it is; it builds on [`crate::common`].

#![allow(dead_code)]

use std::ffi::CString;
use std::fs;
use std::io;
use std::path::Path;

use crate::common::*;

/// A stale entry's content before any refresh.
pub const OLD: &str = r#"{"v":"old"}"#;

/// Top-level config that makes an entry aged [`STALE_AGE`] stale (and one of age 0 fresh).
pub const STALE_WINDOW: &str = "duration = \"1h\"\nstale = \"1h\"\n";
pub const STALE_AGE: std::time::Duration = std::time::Duration::from_secs(90 * 60);

/// `path` in single quotes for a command line (test paths never hold a quote).
pub fn sq(path: &Path) -> String {
    let s = path.to_str().expect("UTF-8 test path");
    assert!(!s.contains('\''), "test path with a quote: {s}");
    format!("'{s}'")
}

/// The value of an extended attribute, `Err` with the errno when there is none.
pub fn xattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let p = cstring(path);
    let n = CString::new(name).expect("attribute name without NUL");
    loop {
        // SAFETY: valid C strings; a null buffer of size 0 asks for the length.
        let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; len as usize];
        // SAFETY: `buf` is writable for `buf.len()` bytes.
        let got =
            unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        // The value grew between the two calls: ask again.
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
    }
}

/// A `user.cachetta.*` attribute of an entry as text; `None` when it is absent (`ENODATA`).
/// Panics on any other error.
#[track_caller]
pub fn attr(m: &Mount, key: &str, name: &str) -> Option<String> {
    match xattr(&m.path(key), &format!("user.cachetta.{name}")) {
        Ok(v) => Some(String::from_utf8(v).expect("UTF-8 attribute")),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => None,
        Err(e) => panic!("getxattr user.cachetta.{name} of {key}: {e}"),
    }
}

/// The mount's `user.cachetta.stats` object.
#[track_caller]
pub fn stats(m: &Mount) -> serde_json::Value {
    let raw = xattr(&m.mnt, "user.cachetta.stats").expect("getxattr user.cachetta.stats");
    serde_json::from_slice(&raw).expect("stats are JSON")
}

/// One counter of the mount's stats.
#[track_caller]
pub fn stat(m: &Mount, counter: &str) -> u64 {
    let all = stats(m);
    all.get(counter)
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("stats have no counter {counter}: {all}"))
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

/// The pid a command wrote to `path` (`echo $! > path`), once it is there in full.
pub fn pid_in(path: &Path) -> Option<libc::pid_t> {
    let text = fs::read_to_string(path).ok()?;
    let text = text.strip_suffix('\n')?;
    text.parse().ok()
}

/// Whether no live process has this pid. An orphan that was killed may linger as a zombie
/// until the container's init reaps it (some never do); a zombie runs nothing, so it counts
/// as gone.
pub fn process_gone(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists; it sends nothing.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // `pid (comm) S ...`: the state follows the last `)`.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    matches!(state, Some('Z' | 'X'))
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

/// The attribute names `listxattr` gives for `path`.
pub fn xattr_names(path: &Path) -> Vec<String> {
    let p = cstring(path);
    // SAFETY: valid C string; a null buffer of size 0 asks for the length.
    let len = unsafe { libc::listxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
    assert!(
        len >= 0,
        "listxattr {}: {}",
        path.display(),
        io::Error::last_os_error()
    );
    // Room for a value that grows between the calls.
    let mut buf = vec![0u8; len as usize + 1024];
    // SAFETY: `buf` is writable for `buf.len()` bytes.
    let len = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        len >= 0,
        "listxattr {}: {}",
        path.display(),
        io::Error::last_os_error()
    );
    buf.truncate(len as usize);
    buf.split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

/// The entry's `user.cachetta.info` object.
#[track_caller]
pub fn info(m: &Mount, key: &str) -> serde_json::Value {
    let text = attr(m, key, "info").unwrap_or_else(|| panic!("{key} has no info"));
    serde_json::from_str(&text).expect("info is JSON")
}
