//! `cachetta unmount [MOUNTPOINT]`: remove a cachetta mount, lazily when it is busy.
//!
//! Only a FUSE mount (type `fuse` or `fuse.cachetta` in `/proc/self/mountinfo`) is ever
//! unmounted, so a typo never detaches some other filesystem. Reading mountinfo and the
//! unmounting itself are [`crate::umount`], shared with the daemon's own shutdown.

use std::path::{Path, PathBuf};

use clap::Args;

use super::CommonArgs;
use crate::config;
use crate::exit_codes::{ExitCode, Failure, Outcome};
use crate::umount::{self, Unmounted};

/// Filesystem types `unmount` agrees to remove.
const FUSE_TYPES: [&str; 2] = ["fuse", "fuse.cachetta"];

#[derive(Debug, Args)]
pub struct UnmountArgs {
    /// The mount to remove (default ~/.cachetta).
    pub mountpoint: Option<PathBuf>,
    /// Accepted like every command; unmounting needs no configuration.
    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn run(args: UnmountArgs) -> Outcome {
    let given = args.mountpoint.unwrap_or_else(config::default_mountpoint);
    let path = resolve_mountpoint(&given);
    let not_mounted = || Failure::failed(format_args!("{} is not a mount point", path.display()));
    match umount::mounted_type(&path).map_err(Failure::failed)? {
        None => return Err(not_mounted()),
        Some(fstype) if !FUSE_TYPES.contains(&fstype.as_str()) => {
            return Err(Failure::failed(format_args!(
                "{} is a {fstype} mount, not a cachetta mount; leaving it alone",
                path.display()
            )))
        }
        Some(_) => {}
    }
    match umount::unmount_or_detach(&path).map_err(Failure::failed)? {
        Unmounted::Cleanly => println!("unmounted {}", path.display()),
        Unmounted::Lazily => println!(
            "{} is busy: detached it lazily; it is gone for new users and goes away once the last open file in it is closed",
            path.display()
        ),
        Unmounted::NotMounted => return Err(not_mounted()),
    }
    Ok(ExitCode::Success)
}

/// The absolute path the kernel lists the mount under. Only the parent is canonicalized:
/// `stat` of a dead FUSE mount itself fails with `ENOTCONN`, and it must still be unmountable.
fn resolve_mountpoint(given: &Path) -> PathBuf {
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
}
