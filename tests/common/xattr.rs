//! Extended attributes, the one way every test reads and sets them: thin `io::Result` wrappers
//! over `rustix::fs`, one call per syscall so the size protocol (`0` asks the length, too small
//! is `ERANGE`, missing is `ENODATA`, too big is `E2BIG`) stays testable; plus the
//! `user.cachetta.*` attributes of a [`Mount`] read as text and JSON.

use std::io;
use std::path::Path;

#[cfg(feature = "mount")]
use super::Mount;

/// One `getxattr(2)` with a buffer of `size` bytes (`0` asks for the length): the length of the
/// value, or the errno.
pub fn getxattr_sized(path: &Path, name: &str, size: usize) -> io::Result<usize> {
    if size == 0 {
        // rustix's slice buffer reports at most its own length; the query asks the kernel's.
        return Ok(rustix::fs::getxattr_query(path, name)?);
    }
    let mut buf = vec![0u8; size];
    Ok(rustix::fs::getxattr(path, name, &mut buf[..])?)
}

/// The whole value of an attribute (asks the length, then reads; asks again if it grew).
pub fn getxattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    loop {
        let len = rustix::fs::getxattr_query(path, name)?;
        let mut buf = vec![0u8; len];
        match rustix::fs::getxattr(path, name, &mut buf[..]) {
            Ok(got) => {
                buf.truncate(got);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The raw `listxattr(2)` answer: NUL-terminated names (asks the length, then reads; asks
/// again if the list grew).
pub fn listxattr_raw(path: &Path) -> io::Result<Vec<u8>> {
    loop {
        let len = rustix::fs::listxattr_query(path)?;
        let mut buf = vec![0u8; len];
        match rustix::fs::listxattr(path, &mut buf[..]) {
            Ok(got) => {
                buf.truncate(got);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The attribute names `listxattr(2)` gives for `path`.
pub fn listxattr(path: &Path) -> io::Result<Vec<String>> {
    Ok(listxattr_raw(path)?
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect())
}

/// `setxattr(2)`, creating or replacing.
pub fn setxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    Ok(rustix::fs::setxattr(
        path,
        name,
        value,
        rustix::fs::XattrFlags::empty(),
    )?)
}

/// `removexattr(2)`.
pub fn removexattr(path: &Path, name: &str) -> io::Result<()> {
    Ok(rustix::fs::removexattr(path, name)?)
}

#[cfg(feature = "mount")]
/// A `user.cachetta.*` attribute of an entry as text; `None` when it is absent (`ENODATA`).
/// Panics on any other error.
#[track_caller]
pub fn attr(m: &Mount, key: &str, name: &str) -> Option<String> {
    match getxattr(&m.path(key), &format!("user.cachetta.{name}")) {
        Ok(v) => Some(String::from_utf8(v).expect("UTF-8 attribute")),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => None,
        Err(e) => panic!("getxattr user.cachetta.{name} of {key}: {e}"),
    }
}

#[cfg(feature = "mount")]
/// The entry's `user.cachetta.info` object.
#[track_caller]
pub fn info(m: &Mount, key: &str) -> serde_json::Value {
    let text = attr(m, key, "info").unwrap_or_else(|| panic!("{key} has no info"));
    serde_json::from_str(&text).expect("info is JSON")
}

#[cfg(feature = "mount")]
/// The mount's `user.cachetta.stats` object.
#[track_caller]
pub fn stats(m: &Mount) -> serde_json::Value {
    let raw = getxattr(&m.mnt, "user.cachetta.stats").expect("getxattr user.cachetta.stats");
    serde_json::from_slice(&raw).expect("stats are JSON")
}

#[cfg(feature = "mount")]
/// One counter of the mount's stats.
#[track_caller]
pub fn stat(m: &Mount, counter: &str) -> u64 {
    let all = stats(m);
    all.get(counter)
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("stats have no counter {counter}: {all}"))
}

#[cfg(feature = "mount")]
/// How many `op` requests reached the daemon (the stats' `requests` object).
#[track_caller]
pub fn requests(m: &Mount, op: &str) -> u64 {
    stats(m)["requests"][op].as_u64().unwrap_or(0)
}
