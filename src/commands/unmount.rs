//! `cachetta unmount [MOUNTPOINT]`: remove a cachetta mount, lazily when it is busy.
//!
//! Only a FUSE mount (type `fuse` or `fuse.cachetta` in `/proc/self/mountinfo`) is ever
//! unmounted, so a typo never detaches some other filesystem. Reading mountinfo and the
//! unmounting itself are [`crate::umount`], shared with the daemon's own shutdown.

use std::path::PathBuf;

use clap::Args;

use super::live::{resolve_mountpoint, FUSE_TYPES};
use super::CommonArgs;
use crate::config;
use crate::exit_codes::{ExitCode, Failure, Outcome};
use crate::umount::{self, Unmounted};

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
