//! What the store says of a file: its kind, its `Stat`, its content `Version`, and file times
//! (clamped so that no arithmetic on them can overflow).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::os::fd::AsFd;

use rustix::fs::Timestamps;

/// What kind of thing a backing path is. Only `File` and `Dir` are ever served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// Symlinks, FIFOs, sockets, devices: never followed or served.
    Other,
}

/// The parts of `stat` the filesystem uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub kind: Kind,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    /// Permission bits only (no file type).
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Stat {
    pub(super) fn from_raw(st: &rustix::fs::Stat) -> Stat {
        let fmt = st.st_mode & libc::S_IFMT;
        let kind = match fmt {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            _ => Kind::Other,
        };
        Stat {
            kind,
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: system_time(st.st_atime, st.st_atime_nsec as i64),
            mtime: system_time(st.st_mtime, st.st_mtime_nsec as i64),
            ctime: system_time(st.st_ctime, st.st_ctime_nsec as i64),
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
        }
    }

    /// `lstat` of a trusted path (the library's entry paths are the developer's, as in the
    /// seed): a trailing symlink is reported as [`Kind::Other`], never followed.
    pub fn of_path(path: &std::path::Path) -> std::io::Result<Stat> {
        Ok(Stat::from_raw(&rustix::fs::lstat(path)?))
    }

    /// Identifies one version of one file's content: any write or replace changes it.
    pub fn version(&self) -> Version {
        Version {
            dev: self.dev,
            ino: self.ino,
            size: self.size,
            mtime: self.mtime,
            ctime: self.ctime,
        }
    }
}

/// A directory at one moment: its inode, mtime and ctime. Any name created, removed or
/// renamed in it moves its times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DirStamp {
    pub ino: u64,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

impl DirStamp {
    pub fn of(st: &Stat) -> DirStamp {
        DirStamp {
            ino: st.ino,
            mtime: st.mtime,
            ctime: st.ctime,
        }
    }

    /// The stamp of an open directory, asked of the filesystem itself (`AT_STATX_FORCE_SYNC`):
    /// not from the attribute cache a FUSE or NFS client keeps in the kernel.
    pub(super) fn fresh(dir: &impl AsFd) -> Option<DirStamp> {
        use rustix::fs::{AtFlags, StatxFlags};
        let flags = AtFlags::EMPTY_PATH | AtFlags::STATX_FORCE_SYNC;
        let mask = StatxFlags::INO | StatxFlags::MTIME | StatxFlags::CTIME;
        let st = rustix::fs::statx(dir, "", flags, mask).ok()?;
        let time = |t: rustix::fs::StatxTimestamp| system_time(t.tv_sec, i64::from(t.tv_nsec));
        Some(DirStamp {
            ino: st.stx_ino,
            mtime: time(st.stx_mtime),
            ctime: time(st.stx_ctime),
        })
    }
}

/// A directory's stamps just before and just after one change a store made in it: other
/// mounts that see the directory go from one to the other know that this was all that
/// happened there (SPEC §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirChange {
    pub before: DirStamp,
    pub after: DirStamp,
}

/// The identity of a file's content, for caches keyed on "unchanged since".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

/// A file time as `SystemTime`. Times too far out to represent (a corrupt or hostile
/// timestamp such as `i64::MIN` seconds) are clamped, never a panic.
/// The time `nanos` nanoseconds from the Unix epoch, clamped like every file time (the
/// inverse of how the change journal writes times).
pub fn system_time_from_nanos(nanos: i64) -> SystemTime {
    system_time(nanos.div_euclid(1_000_000_000), nanos.rem_euclid(1_000_000_000))
}

pub(super) fn system_time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= FAR_SECS as i64 {
        return far_future();
    }
    if secs <= -(FAR_SECS as i64) {
        return far_past();
    }
    let nanos = Duration::from_nanos(nsecs.clamp(0, 999_999_999) as u64);
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nanos
    }
}

/// About 10,000 years, in seconds.
const FAR_SECS: u64 = 315_000_000_000;

/// The latest and earliest times we compute with (about ±10,000 years): far enough for any
/// real file, near enough that adding a duration to them never overflows.
pub(super) fn far_future() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(FAR_SECS)
}

pub(super) fn far_past() -> SystemTime {
    UNIX_EPOCH - Duration::from_secs(FAR_SECS)
}

pub(super) fn timespec(t: SystemTime) -> rustix::fs::Timespec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => rustix::fs::Timespec {
            tv_sec: d.as_secs() as i64,
            tv_nsec: d.subsec_nanos() as _,
        },
        Err(e) => {
            let d = e.duration();
            let mut secs = -(d.as_secs() as i64);
            let mut nanos = d.subsec_nanos() as i64;
            if nanos > 0 {
                secs -= 1;
                nanos = 1_000_000_000 - nanos;
            }
            rustix::fs::Timespec {
                tv_sec: secs,
                tv_nsec: nanos as _,
            }
        }
    }
}

/// A time to set on a file; `None` in [`Store::set_times`](super::Store::set_times) leaves it unchanged.
#[derive(Debug, Clone, Copy)]
pub enum SetTime {
    Now,
    At(SystemTime),
}

/// `utimensat` times: `None` leaves a time as it is.
pub(super) fn set_timestamps(atime: Option<SetTime>, mtime: Option<SetTime>) -> Timestamps {
    let conv = |t: Option<SetTime>| match t {
        None => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        Some(SetTime::Now) => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        Some(SetTime::At(t)) => timespec(t),
    };
    Timestamps {
        last_access: conv(atime),
        last_modification: conv(mtime),
    }
}
