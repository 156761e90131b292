//! The start-up checks of `cachetta mount`, run before anything is mounted or forked: each
//! failure is a [`Refusal`] whose message says what to do (exit code 2). A dead mount left by
//! a killed daemon is not a refusal: it is detached (by [`crate::umount`]) and the new mount
//! proceeds.

use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{Access, AtFlags, CWD};
use tracing::{info, warn};

use crate::umount;

/// Why `cachetta mount` will not start; the message is shown as `cachetta: {message}`.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn refusal(message: impl std::fmt::Display) -> Refusal {
    Refusal(message.to_string())
}

/// `path` made absolute with every existing ancestor resolved, the missing rest appended as
/// given. Works for paths that do not exist yet and for a dead FUSE mount (whose own `stat`
/// fails with `ENOTCONN`), which is how mountinfo lists them.
pub fn resolve(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut missing = Vec::new();
    let mut existing = absolute.as_path();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return missing
                .iter()
                .rev()
                .fold(real, |acc: PathBuf, name| acc.join(name));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// Neither directory may contain the other: the mount would serve its own backing files.
pub fn separate(mnt: &Path, backing: &Path) -> Result<(), Refusal> {
    if mnt.starts_with(backing) || backing.starts_with(mnt) {
        return Err(refusal(format_args!(
            "the mountpoint {} and the backing dir {} must not contain each other; choose another --backing or mountpoint",
            mnt.display(),
            backing.display()
        )));
    }
    Ok(())
}

/// Most dead mounts taken down from one mountpoint (each may hide another under it).
const MOST_DEAD_MOUNTS: usize = 8;

/// Refuse a mountpoint that is already a live mount; detach a dead FUSE mount (its daemon was
/// killed) and go on.
pub fn mountpoint_free(mnt: &Path) -> Result<(), Refusal> {
    for _ in 0..MOST_DEAD_MOUNTS {
        let Some(fstype) = umount::mounted_type(mnt).map_err(refusal)? else {
            return Ok(());
        };
        let is_fuse = fstype == "fuse" || fstype.starts_with("fuse.");
        // A FUSE mount whose daemon is gone answers ENOTCONN, or ECONNABORTED right after the
        // kill while the kernel tears the connection down (on io_uring also ECANCELED, for a
        // request the kernel put on a ring entry of the dead daemon). Asked with statfs, which the kernel
        // always sends to the daemon: a `stat` of the root is answered from the attributes the
        // kernel still caches for a while after the kill, as if the mount were alive.
        let dead = is_fuse
            && matches!(
                rustix::fs::statfs(mnt).err(),
                Some(
                    rustix::io::Errno::NOTCONN
                        | rustix::io::Errno::CONNABORTED
                        | rustix::io::Errno::CANCELED
                )
            );
        if !dead {
            let what = if is_fuse {
                format!(
                    "{} is already mounted (a FUSE filesystem, perhaps cachetta); unmount it first with `cachetta unmount {}`, or choose another mountpoint",
                    mnt.display(),
                    mnt.display()
                )
            } else {
                format!(
                    "{} is already a mount point ({fstype}); choose another mountpoint",
                    mnt.display()
                )
            };
            return Err(refusal(what));
        }
        umount::detach(mnt).map_err(|why| dead_mount_stays(mnt, why))?;
        info!(mountpoint = %mnt.display(), "detached a dead mount left by a daemon that is gone");
        // Something else may have been mounted underneath; judge that one the same way.
    }
    Err(dead_mount_stays(
        mnt,
        format!("{MOST_DEAD_MOUNTS} were detached and there is still one"),
    ))
}

fn dead_mount_stays(mnt: &Path, why: String) -> Refusal {
    refusal(format_args!(
        "a dead mount (its daemon is gone) is left at {} and cannot be detached: {why}; run `cachetta unmount {}` or `fusermount3 -uz {}`",
        mnt.display(),
        mnt.display(),
        mnt.display()
    ))
}

/// The mountpoint must be a directory, and an empty one unless `allow_non_empty`.
pub fn usable_mountpoint(mnt: &Path, allow_non_empty: bool) -> Result<(), Refusal> {
    let cannot = |e: io::Error| {
        refusal(format_args!(
            "cannot use {} as mountpoint: {e}",
            mnt.display()
        ))
    };
    let meta = std::fs::metadata(mnt).map_err(cannot)?;
    if !meta.is_dir() {
        return Err(refusal(format_args!(
            "the mountpoint {} is not a directory; choose a directory",
            mnt.display()
        )));
    }
    if allow_non_empty {
        return Ok(());
    }
    let mut entries = std::fs::read_dir(mnt).map_err(cannot)?;
    if entries.next().is_some() {
        return Err(refusal(format_args!(
            "the mountpoint {} is not empty; choose an empty directory, or pass --allow-non-empty to mount over its files (hidden while mounted, not deleted)",
            mnt.display()
        )));
    }
    Ok(())
}

/// Writes through the mount need a writable backing dir; `--read-only` mounts do not.
pub fn writable_backing(backing: &Path) -> Result<(), Refusal> {
    let wanted = Access::WRITE_OK | Access::EXEC_OK;
    match rustix::fs::accessat(CWD, backing, wanted, AtFlags::EACCESS) {
        Ok(()) => Ok(()),
        Err(e) => Err(refusal(format_args!(
            "the backing dir {} is not writable ({}); fix its permissions, choose another --backing, or mount with --read-only",
            backing.display(),
            io::Error::from(e)
        ))),
    }
}

/// Log (once) that the mountpoint had files, when mounting over them was allowed.
pub fn note_hidden_files(mnt: &Path) {
    if std::fs::read_dir(mnt).is_ok_and(|mut d| d.next().is_some()) {
        warn!(mountpoint = %mnt.display(), "mounting over a non-empty directory: its files are hidden until unmount");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        (dir, root)
    }

    #[test]
    fn resolve_keeps_missing_components_after_the_real_ancestor() {
        let (_dir, root) = temp();
        std::fs::create_dir(root.join("real")).unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("link")).unwrap();
        assert_eq!(
            resolve(&root.join("link/missing/mnt")),
            root.join("real/missing/mnt")
        );
        assert_eq!(resolve(&root.join("link")), root.join("real"));
    }

    #[test]
    fn nested_directories_are_refused_either_way() {
        let a = Path::new("/c/backing");
        assert!(separate(Path::new("/c/backing/mnt"), a).is_err());
        assert!(separate(Path::new("/c"), a).is_err());
        assert!(separate(a, a).is_err());
        assert!(separate(Path::new("/c/backing2"), a).is_ok());
    }

    #[test]
    fn non_empty_mountpoint_is_refused_unless_allowed() {
        let (_dir, root) = temp();
        assert_eq!(usable_mountpoint(&root, false), Ok(()));
        std::fs::write(root.join("f"), b"").unwrap();
        let refused = usable_mountpoint(&root, false).unwrap_err();
        assert!(refused.0.contains("--allow-non-empty"), "{refused}");
        assert_eq!(usable_mountpoint(&root, true), Ok(()));
    }

    #[test]
    fn a_file_is_not_a_mountpoint() {
        let (_dir, root) = temp();
        let file = root.join("f");
        std::fs::write(&file, b"").unwrap();
        let refused = usable_mountpoint(&file, true).unwrap_err();
        assert!(refused.0.contains("not a directory"), "{refused}");
    }

    #[test]
    fn an_unmounted_directory_is_free() {
        let (_dir, root) = temp();
        assert_eq!(mountpoint_free(&root), Ok(()));
    }
}
