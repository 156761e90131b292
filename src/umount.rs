//! Taking a mount down, for the daemon's own shutdown and `cachetta unmount` alike: `umount`,
//! lazily (`umount -l`) when busy, and through `fusermount3` (`-u`, then `-uz`) when the kernel
//! says an ordinary user may not.

use std::path::Path;
use std::process::{Command, Stdio};

use rustix::io::Errno;
use rustix::mount::{unmount, UnmountFlags};

/// How a mount went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    /// Gone.
    Cleanly,
    /// Busy: detached, gone for new users, freed when its last open file closes.
    Lazily,
    /// Nothing was mounted there.
    NotMounted,
}

/// Unmount `path`, lazily if it is busy. The error says what failed, for a message or a log.
pub fn unmount_or_detach(path: &Path) -> Result<Unmounted, String> {
    match unmount(path, UnmountFlags::empty()) {
        Ok(()) => Ok(Unmounted::Cleanly),
        Err(Errno::INVAL) => Ok(Unmounted::NotMounted),
        Err(Errno::BUSY) => detach(path).map(|()| Unmounted::Lazily),
        Err(Errno::PERM) => fusermount(path),
        Err(e) => Err(format!("cannot unmount {}: {e}", path.display())),
    }
}

/// `umount -l`: detach the mount even while files in it are open.
pub fn detach(path: &Path) -> Result<(), String> {
    match unmount(path, UnmountFlags::DETACH) {
        Ok(()) | Err(Errno::INVAL) => Ok(()),
        Err(Errno::PERM) => run_fusermount(path, "-uz").map(|_| ()),
        Err(e) => Err(format!("cannot detach {}: {e}", path.display())),
    }
}

/// As an ordinary user, through the setuid helper; lazily if the mount is busy.
fn fusermount(path: &Path) -> Result<Unmounted, String> {
    match run_fusermount(path, "-u") {
        Ok(()) => Ok(Unmounted::Cleanly),
        Err(message) if message.contains("busy") => {
            run_fusermount(path, "-uz").map(|()| Unmounted::Lazily)
        }
        Err(message) => Err(message),
    }
}

fn run_fusermount(path: &Path, flag: &str) -> Result<(), String> {
    let output = Command::new("fusermount3")
        .arg(flag)
        .arg(path)
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "cannot unmount {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "cannot unmount {}: not permitted, and fusermount3 is not installed (package fuse3)",
            path.display()
        )),
        Err(e) => Err(format!("cannot run fusermount3: {e}")),
    }
}
