//! A running cachetta mount, reached through the attributes of its root (SPEC §5, §12): the
//! checks that a path is one ([`LiveMount::find`]), reading an attribute of the root, and
//! setting one. What the commands do with them is in `stats` and `refresh`; what the
//! daemon answers is `fs::xattr`.

use std::path::{Path, PathBuf};

use rustix::io::Errno;

use crate::exit_codes::Failure;
use crate::umount;

/// Filesystem types a cachetta mount shows in mountinfo (`fuse.cachetta`; plain `fuse` when
/// mounted without the subtype). The commands that act on a mount accept nothing else.
pub(super) const FUSE_TYPES: [&str; 2] = ["fuse", "fuse.cachetta"];

/// The attribute of the root holding the mount's counters; every cachetta mount answers it.
pub(super) const STATS_XATTR: &str = "user.cachetta.stats";

/// The root of a live cachetta mount.
#[derive(Debug, Clone)]
pub(super) struct LiveMount {
    root: PathBuf,
}

impl LiveMount {
    /// The mount at `given` (default `~/.cachetta` is the caller's business), or exit code 1
    /// with a message saying what is there instead: nothing mounted, another filesystem, a
    /// dead mount, or a FUSE mount without cachetta's attributes.
    pub fn find(given: &Path) -> Result<LiveMount, Failure> {
        let root = resolve_mountpoint(given);
        match umount::mounted_type(&root).map_err(Failure::failed)? {
            None => {
                return Err(Failure::failed(format_args!(
                    "{} is not a mount point (mount it with `cachetta mount {0}`)",
                    root.display()
                )))
            }
            Some(fstype) if !FUSE_TYPES.contains(&fstype.as_str()) => {
                return Err(Failure::failed(format_args!(
                    "{} is a {fstype} mount, not a cachetta mount",
                    root.display()
                )))
            }
            Some(_) => {}
        }
        let mount = LiveMount { root };
        mount.get(STATS_XATTR)?;
        Ok(mount)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The whole value of the root's attribute `name`, or exit code 1 with a message.
    pub fn get(&self, name: &str) -> Result<Vec<u8>, Failure> {
        read_xattr(&self.root, name).map_err(|e| self.failure(name, e))
    }

    /// Set the root's attribute `name` to `value`; the errno is the caller's to explain.
    pub fn set(&self, name: &str, value: &[u8]) -> Result<(), Errno> {
        rustix::fs::setxattr(&self.root, name, value, rustix::fs::XattrFlags::empty())
    }

    /// What an attribute error on the root means to the user.
    pub fn failure(&self, name: &str, e: Errno) -> Failure {
        let root = self.root.display();
        match e {
            Errno::NOTCONN => Failure::failed(format_args!(
                "{root}: the mount's daemon is gone (transport endpoint is not connected); `cachetta unmount {root}` removes the dead mount"
            )),
            Errno::NODATA | Errno::NOTSUP => Failure::failed(format_args!(
                "{root} is a FUSE mount but not a cachetta mount (its root has no {name})"
            )),
            e => Failure::failed(format_args!("cannot read {name} of {root}: {e}")),
        }
    }
}

/// An attribute's whole value: ask its length, read; ask again if it grew in between.
fn read_xattr(path: &Path, name: &str) -> Result<Vec<u8>, Errno> {
    loop {
        let len = rustix::fs::getxattr_query(path, name)?;
        let mut buf = vec![0u8; len];
        match rustix::fs::getxattr(path, name, &mut buf[..]) {
            Ok(got) => {
                buf.truncate(got);
                return Ok(buf);
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The absolute path the kernel lists the mount under. Only the parent is canonicalized:
/// `stat` of a dead FUSE mount itself fails with `ENOTCONN`, and it must still be found.
pub(super) fn resolve_mountpoint(given: &Path) -> PathBuf {
    let absolute = std::path::absolute(given).unwrap_or_else(|_| given.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => parent
            .canonicalize()
            .map(|p| p.join(name))
            .unwrap_or(absolute.clone()),
        _ => absolute.canonicalize().unwrap_or(absolute),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_mountpoint_keeps_the_last_component_unresolved() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        let got = resolve_mountpoint(&dir.path().join("./mnt"));
        assert_eq!(got, real.join("mnt"));
    }

    #[test]
    fn a_plain_directory_is_not_a_mount() {
        let dir = tempfile::tempdir().unwrap();
        let failure = LiveMount::find(dir.path()).unwrap_err();
        assert_eq!(failure.code, crate::exit_codes::ExitCode::Failure);
        assert!(failure.message.contains("not a mount point"), "{failure}");
    }
}
