//! Mounts, as `/proc/self/mountinfo` lists them, and taking them down, for the daemon's own
//! shutdown, `cachetta unmount` and the clean-up of a dead mount before mounting alike:
//! `umount`, lazily (`umount -l`) when busy, and through `fusermount3` (`-u`, then `-uz`) when
//! the kernel says an ordinary user may not.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
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

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// The filesystem type of the topmost mount at `mountpoint` (absolute, as the kernel lists
/// it), if any. The error says what failed, for a message.
pub fn mounted_type(mountpoint: &Path) -> Result<Option<String>, String> {
    let mountinfo =
        std::fs::read(MOUNTINFO).map_err(|e| format!("cannot read {MOUNTINFO}: {e}"))?;
    Ok(mount_type(&mountinfo, mountpoint))
}

/// One mount, from one line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The `major:minor` of the mounted filesystem (a FUSE mount's minor names its connection
    /// under `/sys/fs/fuse/connections`).
    pub device: (u32, u32),
    /// Where it is mounted, unescaped.
    pub mount_point: PathBuf,
    /// `fuse`, `fuse.cachetta`, `ext4`, ...
    pub fstype: String,
}

/// Every mount in mountinfo text, in the kernel's order: a later mount at the same point is
/// stacked on the earlier one. Lines that do not parse are skipped.
pub fn parse_mountinfo(mountinfo: &[u8]) -> impl Iterator<Item = MountEntry> + '_ {
    mountinfo.split(|&b| b == b'\n').filter_map(|line| {
        // id parent major:minor root mountpoint options [optional...] - fstype source super
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let separator = fields.iter().position(|f| *f == b"-")?;
        if separator < 6 {
            return None;
        }
        let (major, minor) = std::str::from_utf8(fields[2]).ok()?.split_once(':')?;
        Some(MountEntry {
            device: (major.parse().ok()?, minor.parse().ok()?),
            mount_point: PathBuf::from(OsStr::from_bytes(&unescape(fields[4]))),
            fstype: String::from_utf8_lossy(&unescape(fields.get(separator + 1)?)).into_owned(),
        })
    })
}

/// The filesystem type of the topmost mount at `mountpoint` in mountinfo text, if any.
pub fn mount_type(mountinfo: &[u8], mountpoint: &Path) -> Option<String> {
    parse_mountinfo(mountinfo)
        .filter(|mount| mount.mount_point.as_os_str() == mountpoint.as_os_str())
        .last()
        .map(|mount| mount.fstype)
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
        let t = |p: &str| mount_type(SAMPLE, Path::new(p));
        assert_eq!(t("/root/.cachetta").as_deref(), Some("fuse.cachetta"));
        assert_eq!(t("/").as_deref(), Some("ext4"));
        assert_eq!(t("/mnt/with space").as_deref(), Some("fuse"));
        assert_eq!(t("/mnt/stacked").as_deref(), Some("fuse.cachetta"));
        assert_eq!(t("/mnt/under").as_deref(), Some("tmpfs"));
        assert_eq!(t("/root"), None);
        assert_eq!(t("/mnt/with\\040space"), None);
    }

    #[test]
    fn parses_every_mount_with_its_device_in_order() {
        let mounts: Vec<MountEntry> = parse_mountinfo(SAMPLE).collect();
        assert_eq!(mounts.len(), 7);
        assert_eq!(
            mounts[2],
            MountEntry {
                device: (0, 51),
                mount_point: PathBuf::from("/mnt/with space"),
                fstype: "fuse".into(),
            }
        );
        let stacked: Vec<&str> = mounts
            .iter()
            .filter(|m| m.mount_point == Path::new("/mnt/stacked"))
            .map(|m| m.fstype.as_str())
            .collect();
        assert_eq!(stacked, ["tmpfs", "fuse.cachetta"]);
    }

    #[test]
    fn skips_lines_that_do_not_parse() {
        let text = b"garbage\n1 2 x:y / /a rw - ext4 d rw\n3 4 0:9 / /b rw - fuse f rw\n\n";
        let points: Vec<PathBuf> = parse_mountinfo(text).map(|m| m.mount_point).collect();
        assert_eq!(points, [PathBuf::from("/b")]);
    }

    #[test]
    fn unescape_decodes_octal_and_keeps_other_backslashes() {
        assert_eq!(unescape(b"a\\040b\\134c\\011"), b"a b\\c\t");
        assert_eq!(unescape(b"x\\9yz\\04"), b"x\\9yz\\04");
    }
}
