//! What every test binary shares (`#[path = "../common/mod.rs"] mod common;`): the isolated
//! runner of the `cachetta` binary ([`Isolated`]), the real-mount harness ([`Mount`]), extended
//! attributes on rustix, mtimes set one way ([`set_mtime`]), child processes under the
//! [`forking`] lock, and the serial sections that keep tests in one process from disturbing
//! each other; GlusterFS for the tests of a shared backing dir ([`SharedBacking`]). Mounts are
//! found with the crate's own mountinfo parser (`cachetta::umount`).

// Each binary uses its own part of the support.
#![allow(dead_code, unused_imports, unused_macros)]

mod binary;
mod files;
#[cfg(feature = "mount")]
mod gluster;
#[cfg(feature = "mount")]
mod mount;
mod process;
mod xattr;

pub use binary::*;
pub use files::*;
#[cfg(feature = "mount")]
pub use gluster::*;
#[cfg(feature = "mount")]
pub use mount::*;
pub use process::*;
pub use xattr::*;

/// How long the daemon gets to exit after a signal before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

const POLL: Duration = Duration::from_millis(20);

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// The filesystem types mounted at `path`, bottom first, with their device numbers. The
/// calling thread's mount table: a test thread may have a mount namespace of its own (`fstab`),
/// and `/proc/self` is the main thread's.
#[cfg(feature = "mount")]
fn mounts_at(path: &Path) -> Vec<cachetta::umount::MountEntry> {
    let info = fs::read("/proc/thread-self/mountinfo").expect("read /proc/thread-self/mountinfo");
    cachetta::umount::parse_mountinfo(&info)
        .filter(|m| m.mount_point == path)
        .collect()
}

/// Whether anything is mounted at `path`.
#[cfg(feature = "mount")]
pub fn is_mounted(path: &Path) -> bool {
    !mounts_at(path).is_empty()
}

/// Whether a FUSE filesystem is mounted at `path`.
#[cfg(feature = "mount")]
pub fn is_fuse_mount(path: &Path) -> bool {
    mounts_at(path).iter().any(|m| m.fstype.starts_with("fuse"))
}

/// Lazily detach whatever is mounted at `path` (also works for a dead FUSE mount).
pub fn force_unmount(path: &Path) {
    let c = cstring(path);
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        eprintln!(
            "umount2({}, MNT_DETACH) failed: {}",
            path.display(),
            io::Error::last_os_error()
        );
    }
}

#[cfg(feature = "mount")]
/// Abort the FUSE connection mounted at `path` through the fusectl filesystem: every request
/// waiting on it fails with `ENOTCONN`. The last resort for a hung daemon, so a test fails
/// instead of hanging. Returns whether an abort was written.
pub fn abort_connection(path: &Path) -> bool {
    let Some(minor) = mount_minor(path) else {
        return false;
    };
    let control = Path::new("/sys/fs/fuse/connections");
    if !control.join(minor.to_string()).exists() {
        let _ = output(
            Command::new("mount")
                .args(["-t", "fusectl", "none"])
                .arg(control),
        );
    }
    fs::write(control.join(minor.to_string()).join("abort"), "1").is_ok()
}

/// The device minor of the topmost filesystem mounted at `path` (its FUSE connection).
#[cfg(feature = "mount")]
fn mount_minor(path: &Path) -> Option<u32> {
    mounts_at(path).last().map(|m| m.device.1)
}

/// Poll `cond` every 20 ms until it holds or `timeout` passes; returns the last answer.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

/// Sleep until the wall clock reaches `t` (returns at once if it already has).
pub fn sleep_until(t: SystemTime) {
    if let Ok(left) = t.duration_since(SystemTime::now()) {
        thread::sleep(left);
    }
}

/// Assert two byte strings are equal, showing them as text when they differ.
#[track_caller]
pub fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got == want,
        "{what}: got {:?}, want {:?}",
        String::from_utf8_lossy(&got[..got.len().min(300)]),
        String::from_utf8_lossy(&want[..want.len().min(300)])
    );
}

/// Whether `text` names line `line`: `line 3`, `line: 3` or `file:3:`-style.
pub fn mentions_line(text: &str, line: u32) -> bool {
    let n = line.to_string();
    let followed_by_non_digit = |rest: &str| !rest.starts_with(|c: char| c.is_ascii_digit());
    let lower = text.to_lowercase();
    for prefix in ["line ", "line: ", "line=", ":"] {
        let pat = format!("{prefix}{n}");
        let mut from = 0;
        while let Some(pos) = lower[from..].find(&pat) {
            let end = from + pos + pat.len();
            let preceded_ok =
                prefix != ":" || !lower[..from + pos].ends_with(|c: char| c.is_ascii_digit());
            if followed_by_non_digit(&lower[end..]) && preceded_ok {
                return true;
            }
            from = end;
        }
    }
    false
}

pub const HOUR: Duration = Duration::from_secs(3600);
pub const MINUTE: Duration = Duration::from_secs(60);

#[cfg(feature = "mount")]
/// The entry reads back as `bytes` both through the mount and in the backing dir.
#[track_caller]
pub fn assert_entry(m: &Mount, rel: &str, bytes: &[u8]) {
    assert_eq!(
        fs::read(m.path(rel)).unwrap(),
        bytes,
        "{rel} through the mount"
    );
    assert_eq!(
        fs::read(m.backing_path(rel)).unwrap(),
        bytes,
        "{rel} in backing dir"
    );
}

/// `echo 2 > /proc/sys/vm/drop_caches` makes every kernel in this machine forget its dentries
/// and inodes, and with them the page cache: a test in another thread that counts what the
/// kernel's caches spare the daemon would count the refills. Such a test holds
/// `kernel_caches_kept()`; the one that drops them holds `dropping_kernel_caches()`.
static KERNEL_CACHES: RwLock<()> = RwLock::new(());

pub fn kernel_caches_kept() -> RwLockReadGuard<'static, ()> {
    KERNEL_CACHES.read().unwrap_or_else(|e| e.into_inner())
}

pub fn dropping_kernel_caches() -> RwLockWriteGuard<'static, ()> {
    KERNEL_CACHES.write().unwrap_or_else(|e| e.into_inner())
}
