//! The backing dir: every access goes through a directory fd with `openat2`
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), so no path component is ever a followed symlink
//! and nothing outside the backing dir can be reached. Also JSON validation and the staged,
//! atomic publish of new entry content. Knows nothing of FUSE or of expiry.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags, RenameFlags, ResolveFlags, Timestamps};

/// Staging files start with this prefix; they are never shown, never entries, and gc may
/// remove old ones.
pub const STAGING_PREFIX: &str = ".cachetta-staging.";

/// Entries are regular files whose name ends with this suffix.
pub const ENTRY_SUFFIX: &str = ".json";

/// Whether a file name denotes a cache entry (as opposed to a scratch file).
pub fn is_entry_name(name: &OsStr) -> bool {
    name.as_bytes().ends_with(ENTRY_SUFFIX.as_bytes()) && !is_staging_name(name)
}

/// Whether a file name is one of our own staging files.
pub fn is_staging_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(STAGING_PREFIX.as_bytes())
}

/// Whether `bytes` is one complete JSON value in UTF-8 (surrounding whitespace allowed).
pub fn is_valid_json(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok(),
        Err(_) => false,
    }
}

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
    fn from_raw(st: &rustix::fs::Stat) -> Stat {
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
fn system_time(secs: i64, nsecs: i64) -> SystemTime {
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
fn far_future() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(FAR_SECS)
}

fn far_past() -> SystemTime {
    UNIX_EPOCH - Duration::from_secs(FAR_SECS)
}

fn timespec(t: SystemTime) -> rustix::fs::Timespec {
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

/// A time to set on a file; `None` in [`Store::set_times`] leaves it unchanged.
#[derive(Debug, Clone, Copy)]
pub enum SetTime {
    Now,
    At(SystemTime),
}

/// `utimensat` times: `None` leaves a time as it is.
fn set_timestamps(atime: Option<SetTime>, mtime: Option<SetTime>) -> Timestamps {
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

/// One name in a directory listing.
#[derive(Debug, Clone)]
pub struct DirItem {
    pub name: OsString,
    /// From `d_type`; `None` when the filesystem did not say.
    pub kind: Option<Kind>,
}

/// A staging file: new content being written beside its target, published by `rename`.
#[derive(Debug)]
pub struct Staging {
    dir: OwnedFd,
    name: OsString,
    pub file: File,
}

impl Staging {
    pub fn name(&self) -> &OsStr {
        &self.name
    }
}

/// The backing directory.
#[derive(Debug)]
pub struct Store {
    root: OwnedFd,
    root_path: PathBuf,
    sync_writes: bool,
    staging_seq: AtomicU64,
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

fn dot_if_empty(rel: &Path) -> &Path {
    if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    }
}

/// Split `a/b/c.json` into (`a/b`, `c.json`).
pub fn split(rel: &Path) -> (&Path, &OsStr) {
    let parent = rel.parent().unwrap_or(Path::new(""));
    let name = rel.file_name().unwrap_or(OsStr::new("."));
    (parent, name)
}

impl Store {
    /// Open (creating if missing) the backing dir at `root`.
    pub fn open(root: &Path, sync_writes: bool) -> io::Result<Store> {
        std::fs::create_dir_all(root)?;
        let root_path = root.canonicalize()?;
        let fd = rustix::fs::open(
            &root_path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Store {
            root: fd,
            root_path,
            sync_writes,
            staging_seq: AtomicU64::new(0),
        })
    }

    pub fn root_path(&self) -> &Path {
        &self.root_path
    }

    /// Absolute path of a backing file, for display and for refresh commands.
    pub fn absolute(&self, rel: &Path) -> PathBuf {
        self.root_path.join(rel)
    }

    fn open_at(&self, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let rel = dot_if_empty(rel);
        loop {
            // openat2 may answer EAGAIN when a rename raced with the resolution; just retry.
            match rustix::fs::openat2(&self.root, rel, flags | OFlags::CLOEXEC, mode, RESOLVE) {
                Err(rustix::io::Errno::AGAIN) => continue,
                Err(rustix::io::Errno::XDEV) => {
                    return Err(io::Error::from_raw_os_error(libc::ENOENT))
                }
                other => return Ok(other?),
            }
        }
    }

    /// A directory beneath the root, for `*at` calls.
    pub fn dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.open_at(rel, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
    }

    /// `lstat` of a path beneath the root; a trailing symlink is reported, never followed.
    pub fn stat(&self, rel: &Path) -> io::Result<Stat> {
        let fd = self.open_at(rel, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty())?;
        Ok(Stat::from_raw(&rustix::fs::fstat(&fd)?))
    }

    /// `lstat` of `name` in an open directory: one syscall, for listings.
    pub fn stat_in(dir: &OwnedFd, name: &OsStr) -> io::Result<Stat> {
        Ok(Stat::from_raw(&rustix::fs::statat(
            dir,
            name,
            AtFlags::SYMLINK_NOFOLLOW,
        )?))
    }

    /// `fstat` of an open file.
    pub fn fstat(file: &impl AsFd) -> io::Result<Stat> {
        Ok(Stat::from_raw(&rustix::fs::fstat(file)?))
    }

    /// Open a regular file beneath the root. Anything that is not a regular file is `ENOENT`
    /// (never served), whatever raced with us.
    pub fn open_file(&self, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<(File, Stat)> {
        // O_NONBLOCK: opening a FIFO that replaced the file must not hang the request.
        let fd = self
            .open_at(rel, flags | OFlags::NOFOLLOW | OFlags::NONBLOCK, mode)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    io::Error::from_raw_os_error(libc::ENOENT)
                } else {
                    e
                }
            })?;
        let st = Stat::from_raw(&rustix::fs::fstat(&fd)?);
        if st.kind != Kind::File {
            return Err(io::Error::from_raw_os_error(if st.kind == Kind::Dir {
                libc::EISDIR
            } else {
                libc::ENOENT
            }));
        }
        Ok((File::from(fd), st))
    }

    pub fn read_dir(&self, rel: &Path) -> io::Result<Vec<DirItem>> {
        let fd = self.open_at(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        let dir = rustix::fs::Dir::read_from(&fd)?;
        let mut items = Vec::new();
        for item in dir {
            let item = item?;
            let name = item.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let kind = match item.file_type() {
                rustix::fs::FileType::RegularFile => Some(Kind::File),
                rustix::fs::FileType::Directory => Some(Kind::Dir),
                rustix::fs::FileType::Unknown => None,
                _ => Some(Kind::Other),
            };
            items.push(DirItem {
                name: OsStr::from_bytes(name).to_os_string(),
                kind,
            });
        }
        Ok(items)
    }

    /// Create a staging file in directory `dir_rel`, beside where it will be published.
    pub fn create_staging(&self, dir_rel: &Path, perm: u32) -> io::Result<Staging> {
        let dir = self.open_at(dir_rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        loop {
            let seq = self.staging_seq.fetch_add(1, Ordering::Relaxed);
            let name = format!("{STAGING_PREFIX}{}.{seq}.tmp", std::process::id());
            let flags =
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match rustix::fs::openat(
                &dir,
                name.as_str(),
                flags,
                Mode::from_raw_mode(perm & 0o7777),
            ) {
                Ok(fd) => {
                    // The umask may have narrowed the mode; the entry keeps the mode asked for.
                    // The lock tells gc (ours or another process's) that a writer holds it.
                    let ready = rustix::fs::fchmod(&fd, Mode::from_raw_mode(perm & 0o7777))
                        .and_then(|()| {
                            rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive)
                        });
                    if let Err(e) = ready {
                        let _ = rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty());
                        return Err(e.into());
                    }
                    return Ok(Staging {
                        dir,
                        name: name.into(),
                        file: File::from(fd),
                    });
                }
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Publish a staging file as `target` (path relative to the root) with mtime `mtime`:
    /// readers see the old content or the new, never a mix. The staging file's fd stays valid
    /// and now refers to the published content.
    /// `mtime` `None` keeps the times the staging file has (set by the writer, SPEC §3).
    pub fn publish(
        &self,
        staging: Staging,
        target: &Path,
        mtime: Option<SystemTime>,
    ) -> io::Result<File> {
        let (parent, name) = split(target);
        let prepared = (|| -> io::Result<OwnedFd> {
            if let Some(mtime) = mtime {
                let ts = Timestamps {
                    last_access: timespec(mtime),
                    last_modification: timespec(mtime),
                };
                rustix::fs::futimens(&staging.file, &ts)?;
            }
            if self.sync_writes {
                staging.file.sync_all()?;
            }
            let dir = self.open_at(parent, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
            rustix::fs::renameat(&staging.dir, staging.name.as_os_str(), &dir, name)?;
            Ok(dir)
        })();
        let target_dir = match prepared {
            Ok(dir) => dir,
            Err(e) => {
                // Nothing was published: no staging file may stay behind (a full disk must
                // not get fuller).
                let _ =
                    rustix::fs::unlinkat(&staging.dir, staging.name.as_os_str(), AtFlags::empty());
                return Err(e);
            }
        };
        // A published entry is no writer's staging any more.
        let _ = rustix::fs::flock(&staging.file, FlockOperation::Unlock);
        if self.sync_writes {
            // The entry is published whatever this says; only its durability is in doubt.
            if let Err(e) = rustix::fs::fsync(&target_dir) {
                tracing::warn!(key = %target.display(), "published, but the directory could not be synced: {e}");
            }
        }
        Ok(staging.file)
    }

    /// Set the times of an open file (a staging file whose writer set them).
    pub fn set_file_times(
        file: &File,
        atime: Option<SetTime>,
        mtime: Option<SetTime>,
    ) -> io::Result<()> {
        Ok(rustix::fs::futimens(file, &set_timestamps(atime, mtime))?)
    }

    /// Whether a file is held by a writer (a staging file of this or another cachetta
    /// process, a scratch file open through a mount): it holds a `flock` on it. Such files are
    /// never swept or removed as leftovers.
    pub fn is_held(&self, rel: &Path) -> bool {
        let Ok((file, _)) = self.open_file(rel, OFlags::RDONLY, Mode::empty()) else {
            return false;
        };
        matches!(
            rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive),
            Err(rustix::io::Errno::WOULDBLOCK)
        )
    }

    /// Mark a file open through the mount as held (see [`Store::is_held`]).
    pub fn hold(file: &File) {
        let _ = rustix::fs::flock(file, FlockOperation::NonBlockingLockShared);
    }

    /// Remove a staging file that will not be published.
    pub fn discard(&self, staging: Staging) {
        let _ = rustix::fs::unlinkat(&staging.dir, staging.name.as_os_str(), AtFlags::empty());
    }

    pub fn unlink(&self, rel: &Path) -> io::Result<()> {
        let (parent, name) = split(rel);
        let dir = self.dir(parent)?;
        Ok(rustix::fs::unlinkat(&dir, name, AtFlags::empty())?)
    }

    pub fn rmdir(&self, rel: &Path) -> io::Result<()> {
        let (parent, name) = split(rel);
        let dir = self.dir(parent)?;
        Ok(rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR)?)
    }

    pub fn mkdir(&self, rel: &Path, perm: u32) -> io::Result<Stat> {
        let (parent, name) = split(rel);
        let dir = self.dir(parent)?;
        rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(perm & 0o7777))?;
        Ok(Stat::from_raw(&rustix::fs::statat(
            &dir,
            name,
            AtFlags::SYMLINK_NOFOLLOW,
        )?))
    }

    /// `mkdir -p` of a directory beneath the root.
    pub fn mkdir_all(&self, rel: &Path) -> io::Result<()> {
        let mut at = PathBuf::new();
        for part in rel.components() {
            at.push(part);
            match self.mkdir(&at, 0o755) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn rename(&self, from: &Path, to: &Path, noreplace: bool) -> io::Result<()> {
        let (from_parent, from_name) = split(from);
        let (to_parent, to_name) = split(to);
        let from_dir = self.dir(from_parent)?;
        let to_dir = self.dir(to_parent)?;
        let flags = if noreplace {
            RenameFlags::NOREPLACE
        } else {
            RenameFlags::empty()
        };
        Ok(rustix::fs::renameat_with(
            &from_dir, from_name, &to_dir, to_name, flags,
        )?)
    }

    pub fn set_times(
        &self,
        rel: &Path,
        atime: Option<SetTime>,
        mtime: Option<SetTime>,
    ) -> io::Result<()> {
        let ts = set_timestamps(atime, mtime);
        let (parent, name) = split(rel);
        let dir = self.dir(parent)?;
        Ok(rustix::fs::utimensat(
            &dir,
            name,
            &ts,
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    pub fn set_mode(&self, rel: &Path, perm: u32) -> io::Result<()> {
        // fchmodat cannot refuse symlinks, so go through an O_PATH fd that is known not to be one.
        let fd = self.open_at(rel, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty())?;
        if Stat::from_raw(&rustix::fs::fstat(&fd)?).kind == Kind::Other {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        Ok(rustix::fs::chmodat(
            rustix::fs::CWD,
            proc_fd_path(&fd),
            Mode::from_raw_mode(perm & 0o7777),
            AtFlags::empty(),
        )?)
    }

    pub fn set_owner(&self, rel: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        let (parent, name) = split(rel);
        let dir = self.dir(parent)?;
        let uid = uid.map(rustix::fs::Uid::from_raw);
        let gid = gid.map(rustix::fs::Gid::from_raw);
        Ok(rustix::fs::chownat(
            &dir,
            name,
            uid,
            gid,
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// A file or directory opened to read or change its extended attributes.
    fn open_for_xattr(&self, rel: &Path) -> io::Result<OwnedFd> {
        let fd = self.open_at(
            rel,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        if Stat::from_raw(&rustix::fs::fstat(&fd)?).kind == Kind::Other {
            return Err(io::Error::from_raw_os_error(libc::ENOTSUP));
        }
        Ok(fd)
    }

    pub fn get_xattr(&self, rel: &Path, name: &OsStr) -> io::Result<Vec<u8>> {
        let fd = self.open_for_xattr(rel)?;
        loop {
            let len = rustix::fs::fgetxattr_query(&fd, name)?;
            let mut buf = vec![0u8; len];
            match rustix::fs::fgetxattr(&fd, name, &mut buf[..]) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(rustix::io::Errno::RANGE) => continue, // grew meanwhile
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The NUL-separated names of a file's extended attributes.
    pub fn list_xattr(&self, rel: &Path) -> io::Result<Vec<u8>> {
        let fd = self.open_for_xattr(rel)?;
        loop {
            let len = rustix::fs::flistxattr_query(&fd)?;
            let mut buf = vec![0u8; len];
            match rustix::fs::flistxattr(&fd, &mut buf[..]) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(rustix::io::Errno::RANGE) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub fn set_xattr(&self, rel: &Path, name: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
        let fd = self.open_for_xattr(rel)?;
        let flags = rustix::fs::XattrFlags::from_bits_retain(flags as u32);
        Ok(rustix::fs::fsetxattr(&fd, name, value, flags)?)
    }

    pub fn remove_xattr(&self, rel: &Path, name: &OsStr) -> io::Result<()> {
        let fd = self.open_for_xattr(rel)?;
        Ok(rustix::fs::fremovexattr(&fd, name)?)
    }

    pub fn statfs(&self) -> io::Result<rustix::fs::StatVfs> {
        Ok(rustix::fs::fstatvfs(&self.root)?)
    }
}

fn proc_fd_path(fd: &impl AsFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// Whether a file holds one complete JSON value in UTF-8, read in chunks from offset 0 (a
/// large entry is never held in memory whole). `EFBIG` past `limit` bytes.
pub fn file_is_valid_json(file: &File, limit: u64) -> io::Result<bool> {
    let checked = Utf8Checked {
        file,
        pos: 0,
        limit,
        pending: [0; 4],
        pending_len: 0,
        invalid: false,
    };
    // A small entry gets a small buffer: most entries are a few KiB.
    let size = file.metadata().map_or(0, |m| m.len());
    let capacity = (size as usize).saturating_add(1).clamp(4096, 256 * 1024);
    let mut reader = io::BufReader::with_capacity(capacity, checked);
    let parsed = serde_json::from_reader::<_, serde::de::IgnoredAny>(&mut reader);
    let checked = reader.into_inner();
    if let Err(e) = &parsed {
        if let Some(kind) = e.io_error_kind() {
            if checked.pos > limit {
                return Err(io::Error::from_raw_os_error(libc::EFBIG));
            }
            return Err(io::Error::from(kind));
        }
    }
    Ok(parsed.is_ok() && !checked.invalid && checked.pending_len == 0)
}

/// Reads a file from offset 0 and checks, on the way, that the bytes are UTF-8 (serde_json's
/// streaming parser does not look inside strings it skips).
struct Utf8Checked<'a> {
    file: &'a File,
    pos: u64,
    limit: u64,
    /// The start of a character cut by the end of the last chunk.
    pending: [u8; 4],
    pending_len: usize,
    invalid: bool,
}

impl Utf8Checked<'_> {
    fn check(&mut self, mut bytes: &[u8]) {
        while self.pending_len > 0 && !bytes.is_empty() && !self.invalid {
            self.pending[self.pending_len] = bytes[0];
            self.pending_len += 1;
            bytes = &bytes[1..];
            match std::str::from_utf8(&self.pending[..self.pending_len]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_some() || self.pending_len == 4 => self.invalid = true,
                Err(_) => {}
            }
        }
        if self.invalid || self.pending_len > 0 {
            return;
        }
        if let Err(e) = std::str::from_utf8(bytes) {
            match e.error_len() {
                Some(_) => self.invalid = true,
                None => {
                    let rest = &bytes[e.valid_up_to()..];
                    self.pending[..rest.len()].copy_from_slice(rest);
                    self.pending_len = rest.len();
                }
            }
        }
    }
}

impl io::Read for Utf8Checked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        if self.pos > self.limit {
            return Err(io::Error::from_raw_os_error(libc::EFBIG));
        }
        self.check(&buf[..n]);
        Ok(n)
    }
}

/// Read a whole file from offset 0, failing with `EFBIG` past `limit` bytes.
pub fn read_all(file: &File, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = file.read_at(&mut chunk, buf.len() as u64)?;
        if n == 0 {
            return Ok(buf);
        }
        if buf.len() as u64 + n as u64 > limit {
            return Err(io::Error::from_raw_os_error(libc::EFBIG));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Copy the `user.*` extended attributes of `from` onto `to` (best effort: a filesystem
/// without user xattrs has none to copy).
pub fn copy_user_xattrs(from: &File, to: &File) {
    let Ok(len) = rustix::fs::flistxattr_query(from) else {
        return;
    };
    let mut names = vec![0u8; len];
    let Ok(n) = rustix::fs::flistxattr(from, &mut names[..]) else {
        return;
    };
    for name in names[..n]
        .split(|&b| b == 0)
        .filter(|n| n.starts_with(b"user."))
    {
        let name = OsStr::from_bytes(name);
        let Ok(len) = rustix::fs::fgetxattr_query(from, name) else {
            continue;
        };
        let mut value = vec![0u8; len];
        if let Ok(n) = rustix::fs::fgetxattr(from, name, &mut value[..]) {
            let _ = rustix::fs::fsetxattr(to, name, &value[..n], rustix::fs::XattrFlags::empty());
        }
    }
}

/// Copy all of `from` into `to` (both from offset 0), in the kernel where it can.
pub fn copy_contents(from: &File, to: &File) -> io::Result<u64> {
    let mut off_in = 0u64;
    let mut off_out = 0u64;
    loop {
        match rustix::fs::copy_file_range(from, Some(&mut off_in), to, Some(&mut off_out), 1 << 30)
        {
            Ok(0) => return Ok(off_out),
            Ok(_) => {}
            Err(rustix::io::Errno::XDEV | rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS)
                if off_out == 0 =>
            {
                let mut buf = vec![0u8; 64 * 1024];
                let mut pos = 0u64;
                loop {
                    let n = from.read_at(&mut buf, pos)?;
                    if n == 0 {
                        return Ok(pos);
                    }
                    to.write_all_at(&buf[..n], pos)?;
                    pos += n as u64;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn file_times_out_of_range_are_clamped_never_a_panic() {
        assert_eq!(system_time(i64::MIN, 0), far_past());
        assert_eq!(system_time(i64::MAX, 999_999_999), far_future());
        assert_eq!(
            system_time(-1, 500_000_000),
            UNIX_EPOCH - Duration::from_millis(500)
        );
        assert_eq!(system_time(0, -5), UNIX_EPOCH);
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        (dir, store)
    }

    #[test]
    fn json_validation_accepts_any_value_and_rejects_garbage() {
        assert!(is_valid_json(b"{\"a\":1}\n"));
        assert!(is_valid_json(b" 3 "));
        assert!(is_valid_json(b"\"x\""));
        assert!(!is_valid_json(b""));
        assert!(!is_valid_json(b"{\"a\":1"));
        assert!(!is_valid_json(b"{} {}"));
        assert!(!is_valid_json(b"\"\xff\""));
    }

    #[test]
    fn entry_names_end_in_json_and_staging_names_are_not_entries() {
        assert!(is_entry_name(OsStr::new("x.json")));
        assert!(!is_entry_name(OsStr::new("x.json.tmp")));
        assert!(!is_entry_name(OsStr::new(".cachetta-staging.1.2.json")));
        assert!(is_staging_name(OsStr::new(".cachetta-staging.1.2.tmp")));
    }

    #[test]
    fn symlinks_are_never_followed_in_any_component() {
        let (dir, store) = store();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.json"), "{}").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.json"),
            dir.path().join("s.json"),
        )
        .unwrap();
        assert!(store.stat(Path::new("link/secret.json")).is_err());
        assert!(store
            .open_file(Path::new("link/secret.json"), OFlags::RDONLY, Mode::empty())
            .is_err());
        assert_eq!(store.stat(Path::new("s.json")).unwrap().kind, Kind::Other);
        let err = store
            .open_file(Path::new("s.json"), OFlags::RDONLY, Mode::empty())
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        assert!(store.stat(Path::new("../x")).is_err());
    }

    #[test]
    fn publish_replaces_atomically_and_sets_mtime() {
        let (dir, store) = store();
        std::fs::write(dir.path().join("x.json"), "{\"old\":1}").unwrap();
        let (old, _) = store
            .open_file(Path::new("x.json"), OFlags::RDONLY, Mode::empty())
            .unwrap();
        let mut staging = store.create_staging(Path::new(""), 0o640).unwrap();
        staging.file.write_all(b"{\"new\":2}").unwrap();
        let mtime = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        store
            .publish(staging, Path::new("x.json"), Some(mtime))
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("x.json")).unwrap(),
            b"{\"new\":2}"
        );
        assert_eq!(read_all(&old, 100).unwrap(), b"{\"old\":1}");
        let st = store.stat(Path::new("x.json")).unwrap();
        assert_eq!(st.mtime, mtime);
        assert_eq!(st.perm, 0o640);
        let names: Vec<_> = store
            .read_dir(Path::new(""))
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, vec![OsString::from("x.json")]);
    }

    #[test]
    fn streamed_validation_agrees_with_whole_buffer_validation() {
        let big_string = format!("\"{}\"", "é€😀".repeat(100_000));
        let cases: Vec<Vec<u8>> = vec![
            b"{\"a\":1}\n".to_vec(),
            b"  [1, 2]  ".to_vec(),
            b"".to_vec(),
            b"{\"a\":".to_vec(),
            b"\"\xff\"".to_vec(),
            b"{\"\xe2\x82\":1}".to_vec(),
            b"\"ok\xc3\"".to_vec(),
            b"[1] x".to_vec(),
            big_string.clone().into_bytes(),
            {
                let mut cut = big_string.into_bytes();
                cut.insert(300_001, 0xff);
                cut
            },
        ];
        for bytes in cases {
            let file = tempfile::tempfile().unwrap();
            file.write_all_at(&bytes, 0).unwrap();
            let streamed = file_is_valid_json(&file, u64::MAX).unwrap();
            assert_eq!(
                streamed,
                is_valid_json(&bytes),
                "{:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
            );
        }
        let file = tempfile::tempfile().unwrap();
        file.write_all_at(&vec![b' '; 1000], 0).unwrap();
        assert_eq!(
            file_is_valid_json(&file, 999).unwrap_err().raw_os_error(),
            Some(libc::EFBIG)
        );
    }

    #[test]
    fn read_all_stops_past_the_limit() {
        let (dir, store) = store();
        std::fs::write(dir.path().join("big"), vec![b'x'; 100]).unwrap();
        let (f, _) = store
            .open_file(Path::new("big"), OFlags::RDONLY, Mode::empty())
            .unwrap();
        assert_eq!(
            read_all(&f, 99).unwrap_err().raw_os_error(),
            Some(libc::EFBIG)
        );
        assert_eq!(read_all(&f, 100).unwrap().len(), 100);
    }

    #[test]
    fn fifo_is_not_opened() {
        let (dir, store) = store();
        let path = dir.path().join("p.json");
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: c is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let err = store
            .open_file(Path::new("p.json"), OFlags::RDONLY, Mode::empty())
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }
}
