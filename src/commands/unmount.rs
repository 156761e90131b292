//! `cachetta unmount [MOUNTPOINT]`: remove a cachetta mount, lazily when it is busy.
//!
//! Only a FUSE mount (type `fuse` or `fuse.cachetta` in `/proc/self/mountinfo`) is ever
//! unmounted, so a typo never detaches some other filesystem. The unmounting itself is
//! `crate::umount`, shared with the daemon's own shutdown.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::UnmountArgs;
use crate::umount::{self, Unmounted};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Filesystem types `unmount` agrees to remove.
const FUSE_TYPES: [&str; 2] = ["fuse", "fuse.cachetta"];

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("cachetta: {message}");
    ExitCode::FAILURE
}

pub fn run(args: UnmountArgs) -> ExitCode {
    let given = args
        .mountpoint
        .unwrap_or_else(crate::mount::default_mountpoint);
    let path = resolve_mountpoint(&given);
    let mountinfo = match std::fs::read(MOUNTINFO) {
        Ok(text) => text,
        Err(e) => return fail(format_args!("cannot read {MOUNTINFO}: {e}")),
    };
    match mount_type(&mountinfo, path.as_os_str()) {
        None => return fail(format_args!("{} is not a mount point", path.display())),
        Some(fstype) if !FUSE_TYPES.contains(&fstype.as_str()) => {
            return fail(format_args!(
                "{} is a {fstype} mount, not a cachetta mount; leaving it alone",
                path.display()
            ))
        }
        Some(_) => {}
    }
    match umount::unmount_or_detach(&path) {
        Ok(Unmounted::Cleanly) => unmounted(&path, false),
        Ok(Unmounted::Lazily) => unmounted(&path, true),
        Ok(Unmounted::NotMounted) => fail(format_args!("{} is not a mount point", path.display())),
        Err(e) => fail(e),
    }
}

fn unmounted(path: &Path, lazily: bool) -> ExitCode {
    if lazily {
        println!(
            "{} is busy: detached it lazily; it is gone for new users and goes away once the last open file in it is closed",
            path.display()
        );
    } else {
        println!("unmounted {}", path.display());
    }
    ExitCode::SUCCESS
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

/// The filesystem type of the topmost mount at `mountpoint` in mountinfo text, if any.
pub fn mount_type(mountinfo: &[u8], mountpoint: &OsStr) -> Option<String> {
    let mut found = None;
    for line in mountinfo.split(|&b| b == b'\n') {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        // id parent major:minor root mountpoint options [optional...] - fstype source super
        let Some(separator) = fields.iter().position(|f| *f == b"-") else {
            continue;
        };
        if separator < 6 || fields.len() <= separator + 1 {
            continue;
        }
        if unescape(fields[4]) == mountpoint.as_bytes() {
            found = Some(String::from_utf8_lossy(&unescape(fields[separator + 1])).into_owned());
        }
    }
    found
}

/// Undo mountinfo's octal escapes (`\040` for a space, `\134` for a backslash, ...).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field.get(i + 1..i + 4).filter(|d| {
            field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3'
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
60 22 0:50 / /root/.cachetta rw,nosuid,nodev,relatime shared:30 - fuse.cachetta cachetta rw,user_id=0
61 22 0:51 / /mnt/with\\040space rw shared:31 - fuse cachetta rw
62 22 0:52 / /mnt/stacked rw - tmpfs tmpfs rw
63 62 0:53 / /mnt/stacked rw - fuse.cachetta cachetta rw
64 22 0:54 / /mnt/under rw - fuse.cachetta cachetta rw
65 64 0:55 / /mnt/under rw - tmpfs tmpfs rw
";

    #[test]
    fn finds_the_type_of_the_topmost_mount() {
        let t = |p: &str| mount_type(SAMPLE, OsStr::new(p));
        assert_eq!(t("/root/.cachetta").as_deref(), Some("fuse.cachetta"));
        assert_eq!(t("/").as_deref(), Some("ext4"));
        assert_eq!(t("/mnt/with space").as_deref(), Some("fuse"));
        assert_eq!(t("/mnt/stacked").as_deref(), Some("fuse.cachetta"));
        assert_eq!(t("/mnt/under").as_deref(), Some("tmpfs"));
        assert_eq!(t("/root"), None);
        assert_eq!(t("/mnt/with\\040space"), None);
    }

    #[test]
    fn unescape_decodes_octal_and_keeps_other_backslashes() {
        assert_eq!(unescape(b"a\\040b\\134c\\011"), b"a b\\c\t");
        assert_eq!(unescape(b"x\\9yz\\04"), b"x\\9yz\\04");
    }

    #[test]
    fn resolve_mountpoint_keeps_the_last_component_unresolved() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        let got = resolve_mountpoint(&dir.path().join("./mnt"));
        assert_eq!(got, real.join("mnt"));
    }
}
