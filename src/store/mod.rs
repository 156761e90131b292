//! The backing dir: every access goes through a directory fd with `openat2`
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), so no path component is ever a followed symlink
//! and nothing outside the backing dir can be reached. Also the staged, atomic publish of new
//! entry content; what files are (`stat`) and hold (`content`: JSON validation, copying) are in
//! the submodules. Knows nothing of FUSE or of expiry.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use rustix::fs::{
    AtFlags, FileType, FlockOperation, Mode, OFlags, RenameFlags, ResolveFlags, Timestamps,
};

mod content;
mod keylock;
mod observe;
mod stat;
mod walk;

pub use content::{
    copy_contents, copy_user_xattrs, file_is_valid_json, file_is_valid_json_now,
    file_is_valid_json_sized, is_valid_json,
    read_all, read_xattr,
};
pub use keylock::KeyGuard;
use keylock::KeyLocks;
pub use observe::{Judged, Observed, Observer};
use stat::{set_timestamps, timespec};
pub use walk::{walk_files, FoundFile, Walk};
pub use stat::{system_time_from_nanos, DirChange, DirStamp, Kind, SetTime, Stat, Version};

/// Staging files start with this prefix; they are never shown, never entries, and gc may
/// remove old ones.
pub const STAGING_PREFIX: &str = ".cachetta-staging.";

/// Entries are regular files whose name ends with this suffix.
pub const ENTRY_SUFFIX: &str = ".json";

/// Whether a file name denotes a cache entry (as opposed to a scratch file).
pub fn is_entry_name(name: &OsStr) -> bool {
    name.as_bytes().ends_with(ENTRY_SUFFIX.as_bytes()) && !is_staging_name(name)
}

/// cachetta's own directory at the backing root (SPEC §13): cross-mount refresh locks live in
/// it. Never shown through the mount, listed by `cachetta ls` or swept by gc.
pub const RESERVED_DIR: &str = ".cachetta";

/// Whether `rel` (relative to the backing root) is the reserved directory or inside it.
pub fn is_reserved(rel: &Path) -> bool {
    rel.components().next().is_some_and(|c| c.as_os_str() == RESERVED_DIR)
}

/// Whether a file name is one of our own staging files.
pub fn is_staging_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(STAGING_PREFIX.as_bytes())
}

/// One name in a directory listing.
#[derive(Debug, Clone)]
pub struct DirItem {
    pub name: OsString,
    /// From `d_type`; `None` when the filesystem did not say.
    pub kind: Option<Kind>,
    /// From `d_ino`: a name renamed onto gets another one, with no `stat` needed.
    pub ino: u64,
}

/// A staging file: new content being written beside its target, published by `rename`.
#[derive(Debug)]
pub struct Staging {
    dir: OwnedFd,
    name: OsString,
    pub file: File,
    /// What the publisher knows of the content, for the store's [`Observer`].
    pub judged: Option<Judged>,
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
    /// Set once the filesystem refused `RENAME_NOREPLACE` (NFS, GlusterFS): not asked again.
    noreplace_refused: AtomicBool,
    /// The backing filesystem refused `RENAME_EXCHANGE` once (`EINVAL`): publishes rename.
    exchange_refused: AtomicBool,
    /// On a network or FUSE filesystem, whose client caches what other machines changed.
    remote: bool,
    observer: OnceLock<Arc<dyn Observer>>,
    /// Per-key locks for publishes and policy changes (see `crate::publish`).
    keys: KeyLocks,
    /// Counts the changes made beneath the root through this store, and those its owner was
    /// told of ([`Store::note_change`]): a listing taken while it stood still is still true.
    changes: AtomicU64,
    /// Where [`Store::close_later`] sends files, once [`Store::defer_closes`] started it.
    closer: OnceLock<SyncSender<File>>,
}

/// Files waiting for the closer thread at most; past that a close happens in place. Small:
/// each is a descriptor, and the daemon keeps the soft `RLIMIT_NOFILE` it was given (often
/// 1024).
const CLOSER_QUEUE: usize = 64;

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
        let remote = fs_type(&fd).is_some_and(is_remote_fs_type);
        Ok(Store {
            root: fd,
            root_path,
            sync_writes,
            staging_seq: AtomicU64::new(0),
            noreplace_refused: AtomicBool::new(false),
            exchange_refused: AtomicBool::new(false),
            remote,
            observer: OnceLock::new(),
            keys: KeyLocks::default(),
            changes: AtomicU64::new(0),
            closer: OnceLock::new(),
        })
    }

    /// From now on, [`Store::close_later`] closes on a thread of its own (the daemon's choice;
    /// the library closes in place).
    pub fn defer_closes(&self) -> io::Result<()> {
        if self.closer.get().is_some() {
            return Ok(());
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<File>(CLOSER_QUEUE);
        std::thread::Builder::new()
            .name("closer".into())
            .spawn(move || {
                // Never worth preempting a request for: waking this thread with a file to
                // close took a publish 58 µs on average in a rename storm (two CPUs), the
                // woken closer running first. SCHED_BATCH forgoes that (sched(7)).
                let batch = libc::sched_param { sched_priority: 0 };
                // SAFETY: plain syscall on the calling thread (0), with a valid parameter.
                unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &batch) };
                rx.into_iter().for_each(drop)
            })?;
        let _ = self.closer.set(tx);
        Ok(())
    }

    /// Close `file`, the entry a publish just replaced, off the caller's path. The last close
    /// of a replaced file frees its blocks, and on some disks that waits for I/O: ext4 with
    /// online `discard` (this project's test machines) waits for a discard and for writeback
    /// of the file's pages, up to 140 ms measured in a rename storm, all of it inside the
    /// `rename` request and under the kernel's lock on the caller's directory (issue #22).
    /// Holding the file open across the rename and closing it here moves that cost to the
    /// closer thread. Closes in place when there is no closer or its queue is full.
    pub fn close_later(&self, file: File) {
        if let Some(closer) = self.closer.get() {
            // Full or gone: the file comes back and is closed here.
            let _ = closer.try_send(file);
        }
    }

    /// Lock `key` against the other publishes and policy changes of this process (see
    /// `crate::publish`). Held across the few calls that carry attributes and rename.
    pub fn lock_key(&self, key: &Path) -> KeyGuard<'_> {
        self.keys.lock(key)
    }

    /// How many changes beneath the root this store has made or been told of: while it stands
    /// still, what was read of the backing dir holds (up to changes nobody reported).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Something beneath the root changed (after the change: a listing that began before it
    /// sees the count move).
    pub fn note_change(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
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
        let mut stale = 0;
        loop {
            match rustix::fs::openat2(&self.root, rel, flags | OFlags::CLOEXEC, mode, RESOLVE) {
                // openat2 may answer EAGAIN when a rename raced with the resolution; just retry.
                Err(rustix::io::Errno::AGAIN) => continue,
                // A distributed filesystem's client answers ESTALE for a name another client
                // just replaced (its cached handle is gone): open the name again.
                Err(rustix::io::Errno::STALE) if stale < ESTALE_RETRIES => {
                    stale += 1;
                    self.relearn_names(rel);
                    stale_pause(stale);
                }
                Err(rustix::io::Errno::XDEV) => {
                    return Err(io::Error::from_raw_os_error(libc::ENOENT))
                }
                other => return Ok(other?),
            }
        }
    }

    /// Run `op`, which reaches `rel` by name afresh each time, again while it fails with
    /// `ESTALE` (a bounded number of times), relearning the names of `rel`'s directory before
    /// each retry.
    pub fn retry_stale<T>(&self, rel: &Path, op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        retry_stale(|| self.relearn_names(rel), op)
    }

    /// After `ESTALE` for `rel`: list its directory, so the filesystem's client (and the
    /// kernel above it) learn what each name is now. A GlusterFS client otherwise keeps
    /// answering from the file handle it cached for the name for up to its cache time (about
    /// a second of `ESTALE`s); one listing of the directory replaces it (measured: 2,400 reads
    /// in 4 s instead of 64, no read needing more than 18 attempts).
    fn relearn_names(&self, rel: &Path) {
        let parent = rel.parent().unwrap_or(Path::new(""));
        if let Ok(dir) = self.dir(parent) {
            relearn_names_in(&dir);
        }
    }

    /// A directory beneath the root, for `*at` calls.
    pub fn dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.open_at(rel, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
    }

    /// `lstat` of a path beneath the root; a trailing symlink is reported, never followed.
    pub fn stat(&self, rel: &Path) -> io::Result<Stat> {
        self.retry_stale(rel, || {
            let fd = self.open_at(rel, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty())?;
            Ok(Stat::from_raw(&rustix::fs::fstat(&fd)?))
        })
    }

    /// The `Stat` of the regular file at `rel` as its server has it now: the file is opened
    /// (an open reaches the server of a network filesystem, where a plain `stat` may be
    /// answered from the client's attribute cache for a second) and `fstat`-ed.
    pub fn stat_opened(&self, rel: &Path) -> io::Result<Stat> {
        let open = || {
            self.open_file(rel, OFlags::RDONLY, Mode::empty())
                .map(|(_, st)| st)
        };
        match open() {
            // A file another machine created a moment ago may not be known to this client
            // yet: once its directory is listed, it is.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && self.remote => {
                self.relearn_names(rel);
                open()
            }
            found => found,
        }
    }

    /// `lstat` of `name` in an open directory: one syscall, for listings.
    pub fn stat_in(dir: &OwnedFd, name: &OsStr) -> io::Result<Stat> {
        retry_stale(|| relearn_names_in(dir), || {
            Ok(Stat::from_raw(&rustix::fs::statat(
                dir,
                name,
                AtFlags::SYMLINK_NOFOLLOW,
            )?))
        })
    }

    /// `fstat` of an open file.
    pub fn fstat(file: &impl AsFd) -> io::Result<Stat> {
        Ok(Stat::from_raw(&rustix::fs::fstat(file)?))
    }

    /// Open a regular file beneath the root. Anything that is not a regular file is `ENOENT`
    /// (never served), whatever raced with us.
    pub fn open_file(&self, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<(File, Stat)> {
        let creating = self.stamp_parent(rel, flags);
        let opened = self.open_regular(rel, flags, mode);
        if flags.contains(OFlags::CREATE) {
            self.note_change();
        }
        self.observe_created_by_open(rel, creating, opened.is_ok());
        opened
    }

    fn open_regular(&self, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<(File, Stat)> {
        let (fd, st) = self.retry_stale(rel, || {
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
            Ok((fd, st))
        })?;
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
        self.retry_stale(rel, || self.read_dir_once(rel))
    }

    fn read_dir_once(&self, rel: &Path) -> io::Result<Vec<DirItem>> {
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
                ino: item.ino(),
            });
        }
        Ok(items)
    }

    /// A name for a staging file no other is using in this process.
    fn staging_name(&self) -> String {
        let seq = self.staging_seq.fetch_add(1, Ordering::Relaxed);
        format!("{STAGING_PREFIX}{}.{seq}.tmp", std::process::id())
    }

    /// Create a staging file in directory `dir_rel`, beside where it will be published.
    pub fn create_staging(&self, dir_rel: &Path, perm: u32) -> io::Result<Staging> {
        let dir = self.open_at(dir_rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        loop {
            let name = self.staging_name();
            let flags =
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let before = self.stamp(&dir);
            match rustix::fs::openat(
                &dir,
                name.as_str(),
                flags,
                Mode::from_raw_mode(perm & 0o7777),
            ) {
                Ok(fd) => {
                    self.observe_created(dir_rel, &dir, before);
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
                        judged: None,
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
        type Stamps = Option<(DirStamp, DirStamp)>;
        let prepared = (|| -> io::Result<(OwnedFd, Stamps)> {
            if let Some(mtime) = mtime {
                let ts = Timestamps {
                    last_access: timespec(mtime),
                    last_modification: timespec(mtime),
                };
                rustix::fs::futimens(&staging.file, &ts)?;
            }
            if self.sync_writes {
                staging.file.sync_all()?;
            } else {
                self.settle(&staging.file)?;
            }
            let dir = self.open_at(parent, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
            let before = self.stamp(&dir);
            self.replace_with(&staging.dir, staging.name.as_os_str(), &dir, name)?;
            let after = self.stamp(&dir);
            Ok((dir, before.zip(after)))
        })();
        let (target_dir, dir_change) = match prepared {
            Ok(done) => done,
            Err(e) => {
                // Nothing was published: no staging file may stay behind (a full disk must
                // not get fuller).
                let _ =
                    rustix::fs::unlinkat(&staging.dir, staging.name.as_os_str(), AtFlags::empty());
                return Err(e);
            }
        };
        self.note_change();
        // A published entry is no writer's staging any more.
        let _ = rustix::fs::flock(&staging.file, FlockOperation::Unlock);
        self.observe_published(target, &staging, dir_change);
        if self.sync_writes {
            // The entry is published whatever this says; only its durability is in doubt.
            if let Err(e) = rustix::fs::fsync(&target_dir) {
                tracing::warn!(key = %target.display(), "published, but the directory could not be synced: {e}");
            }
        }
        Ok(staging.file)
    }

    /// Whether a publish that replaces a file may be an exchange ([`Store::replace_with`]).
    fn exchanges(&self) -> bool {
        !self.remote && !self.sync_writes && !self.exchange_refused.load(Ordering::Relaxed)
    }

    /// Rename the file `from` onto the entry `to` (a file renamed onto an entry through the
    /// mount). Like [`Store::rename`], but where that replaces a file, `from` first moves to a
    /// staging name beside `to` (a rename that replaces nothing) and is then published from
    /// there as a staging file is ([`Store::replace_with`]): no flush of its data inside the
    /// rename on ext4, and the caller's own name never holds the old content. A kill -9
    /// between the two leaves the entry as it was and the file at a staging name, which is
    /// never shown and which gc removes.
    pub fn rename_onto_entry(&self, from: &Path, to: &Path) -> io::Result<()> {
        if !self.exchanges() {
            return self.rename(from, to, false);
        }
        self.renaming(from, to, |from_dir, from_name, to_dir, to_name| {
            let staging = self.staging_name();
            let flags = RenameFlags::NOREPLACE;
            if rustix::fs::renameat_with(from_dir, from_name, to_dir, staging.as_str(), flags)
                .is_err()
            {
                return self.rename_in(from_dir, from_name, to_dir, to_name, false);
            }
            let published = self.replace_with(to_dir, OsStr::new(&staging), to_dir, to_name);
            if published.is_err() {
                let _ = rustix::fs::renameat(to_dir, staging.as_str(), from_dir, from_name);
            }
            published
        })
    }

    /// Rename the staging file `from_name` (a regular file: the caller's own, or one it moved
    /// aside) onto `to_name`. Where that replaces a regular file on a local filesystem, the two
    /// are exchanged (`RENAME_EXCHANGE`) and the old file, now at `from_name`, is unlinked: ext4 flushes the new file's data to disk inside a `rename`
    /// that replaces a file (`auto_da_alloc`), and not inside an exchange (issue #22: 9 % of
    /// the daemon's time in the `O_TRUNC` storm). Readers see the old file or the new, as
    /// with a rename. Not with `sync_writes`, whose data is on disk already, nor on a network
    /// filesystem (NFS and GlusterFS do not all offer the exchange).
    fn replace_with(
        &self,
        from_dir: &OwnedFd,
        from_name: &OsStr,
        to_dir: &OwnedFd,
        to_name: &OsStr,
    ) -> io::Result<()> {
        // Only the target is looked at: a directory in its place must never be exchanged away,
        // not even for a moment.
        let exchange = self.exchanges()
            && rustix::fs::statat(to_dir, to_name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile);
        if exchange {
            let flags = RenameFlags::EXCHANGE;
            match rustix::fs::renameat_with(from_dir, from_name, to_dir, to_name, flags) {
                Ok(()) => match rustix::fs::unlinkat(from_dir, from_name, AtFlags::empty()) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => return Ok(()),
                    // Not a file after all (replaced meanwhile): undone, and renamed instead,
                    // which refuses what it must.
                    Err(_) => {
                        rustix::fs::renameat_with(from_dir, from_name, to_dir, to_name, flags)?;
                    }
                },
                Err(rustix::io::Errno::INVAL) => {
                    self.exchange_refused.store(true, Ordering::Relaxed);
                }
                Err(_) => {}
            }
        }
        Ok(rustix::fs::renameat(from_dir, from_name, to_dir, to_name)?)
    }

    /// Before `file` is renamed onto an entry: on a network filesystem, make its content reach
    /// the server. Its client may still hold it (GlusterFS's write-behind, NFS until close)
    /// when the rename gets there, and another machine would open the new entry and read it
    /// short, as not valid JSON. Nothing to do on a local filesystem.
    pub fn settle(&self, file: &File) -> io::Result<()> {
        if self.remote {
            file.sync_data()?;
        }
        Ok(())
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
        let before = self.stamp(&dir);
        rustix::fs::unlinkat(&dir, name, AtFlags::empty())?;
        self.note_change();
        self.observe_removed(rel, &dir, before);
        Ok(())
    }

    pub fn rmdir(&self, rel: &Path) -> io::Result<()> {
        let (parent, name) = split(rel);
        let dir = self.dir(parent)?;
        rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR)?;
        self.note_change();
        Ok(())
    }

    pub fn mkdir(&self, rel: &Path, perm: u32) -> io::Result<Stat> {
        let (parent, name) = split(rel);
        let dir = self.dir(parent)?;
        rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(perm & 0o7777))?;
        self.note_change();
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

    /// Rename `from` to `to`; with `noreplace`, fail with `EEXIST` rather than replace
    /// anything at `to`. Where the filesystem refuses `RENAME_NOREPLACE` (`EINVAL`: NFS,
    /// GlusterFS), a file is linked to its new name (`link` never replaces) and unlinked from
    /// its old one; see [`Store::rename_noreplace_by_link`].
    pub fn rename(&self, from: &Path, to: &Path, noreplace: bool) -> io::Result<()> {
        self.renaming(from, to, |from_dir, from_name, to_dir, to_name| {
            self.rename_in(from_dir, from_name, to_dir, to_name, noreplace)
        })
    }

    /// Move `from` to `to` by `rename`, given both directories and names, then record the
    /// change (for listings, the watcher and the journal).
    fn renaming(
        &self,
        from: &Path,
        to: &Path,
        rename: impl FnOnce(&OwnedFd, &OsStr, &OwnedFd, &OsStr) -> io::Result<()>,
    ) -> io::Result<()> {
        let (from_parent, from_name) = split(from);
        let (to_parent, to_name) = split(to);
        let from_dir = self.dir(from_parent)?;
        // A rename within one directory (a temp file renamed onto its entry) opens it once.
        let other_dir = match from_parent == to_parent {
            true => None,
            false => Some(self.dir(to_parent)?),
        };
        let to_dir = other_dir.as_ref().unwrap_or(&from_dir);
        let before = (self.stamp(&from_dir), self.stamp(to_dir));
        rename(&from_dir, from_name, to_dir, to_name)?;
        self.note_change();
        self.observe_renamed((from, &from_dir), (to, to_dir), before);
        Ok(())
    }

    fn rename_in(
        &self,
        from_dir: &OwnedFd,
        from_name: &OsStr,
        to_dir: &OwnedFd,
        to_name: &OsStr,
        noreplace: bool,
    ) -> io::Result<()> {
        if !noreplace {
            // Not an exchange: the caller's own name would hold the old file for a moment,
            // and after a kill -9 there, a retried `mv` would put the old content back.
            return Ok(rustix::fs::renameat(from_dir, from_name, to_dir, to_name)?);
        }
        if !self.noreplace_refused.load(Ordering::Relaxed) {
            match rustix::fs::renameat_with(
                from_dir,
                from_name,
                to_dir,
                to_name,
                RenameFlags::NOREPLACE,
            ) {
                Err(rustix::io::Errno::INVAL) => {}
                other => return Ok(other?),
            }
        }
        Self::rename_noreplace_by_link(from_dir, from_name, to_dir, to_name).inspect(|()| {
            if !self.noreplace_refused.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    "the backing filesystem refuses RENAME_NOREPLACE; renaming without replacing by link and unlink instead"
                );
            }
        })
    }

    /// `RENAME_NOREPLACE` without the flag. A regular file gets its new name by `linkat`,
    /// which fails with `EEXIST` whatever raced with it, and loses the old one by `unlinkat`
    /// (a crash in between leaves both names on the same content: nothing is lost or
    /// replaced). Anything else (a directory, or a filesystem without hard links) is renamed
    /// only if nothing is at `to` when looked at just before: the one case where a name
    /// created in that instant could be replaced.
    fn rename_noreplace_by_link(
        from_dir: &OwnedFd,
        from_name: &OsStr,
        to_dir: &OwnedFd,
        to_name: &OsStr,
    ) -> io::Result<()> {
        let st = Self::stat_in(from_dir, from_name)?;
        if st.kind == Kind::File {
            match rustix::fs::linkat(from_dir, from_name, to_dir, to_name, AtFlags::empty()) {
                Ok(()) => {
                    if let Err(e) = rustix::fs::unlinkat(from_dir, from_name, AtFlags::empty()) {
                        // Both names now hold the same content; the rename happened.
                        tracing::warn!(
                            "renamed by link, but the old name could not be removed: {e}"
                        );
                    }
                    return Ok(());
                }
                Err(rustix::io::Errno::PERM | rustix::io::Errno::NOTSUP | rustix::io::Errno::MLINK) => {}
                Err(e) => return Err(e.into()),
            }
        }
        match Self::stat_in(to_dir, to_name) {
            Ok(_) => Err(io::Error::from_raw_os_error(libc::EEXIST)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                Ok(rustix::fs::renameat(from_dir, from_name, to_dir, to_name)?)
            }
            Err(e) => Err(e),
        }
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
        rustix::fs::utimensat(&dir, name, &ts, AtFlags::SYMLINK_NOFOLLOW)?;
        self.note_change();
        self.observe_changed(rel, None);
        Ok(())
    }

    pub fn set_mode(&self, rel: &Path, perm: u32) -> io::Result<()> {
        // fchmodat cannot refuse symlinks, so go through an O_PATH fd that is known not to be one.
        let fd = self.open_at(rel, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty())?;
        if Stat::from_raw(&rustix::fs::fstat(&fd)?).kind == Kind::Other {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        let mode = Mode::from_raw_mode(perm & 0o7777);
        rustix::fs::chmodat(rustix::fs::CWD, proc_fd_path(&fd), mode, AtFlags::empty())?;
        self.note_change();
        self.observe_changed(rel, Some(&fd));
        Ok(())
    }

    pub fn set_owner(&self, rel: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        let (parent, name) = split(rel);
        let dir = self.dir(parent)?;
        let uid = uid.map(rustix::fs::Uid::from_raw);
        let gid = gid.map(rustix::fs::Gid::from_raw);
        rustix::fs::chownat(&dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
        self.note_change();
        self.observe_changed(rel, None);
        Ok(())
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
        self.retry_stale(rel, || {
            let fd = self.open_for_xattr(rel)?;
            read_xattr(|buf| rustix::fs::fgetxattr(&fd, name, buf))
        })
    }

    /// The NUL-separated names of a file's extended attributes.
    pub fn list_xattr(&self, rel: &Path) -> io::Result<Vec<u8>> {
        self.retry_stale(rel, || {
            let fd = self.open_for_xattr(rel)?;
            read_xattr(|buf| rustix::fs::flistxattr(&fd, buf))
        })
    }

    pub fn set_xattr(&self, rel: &Path, name: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
        let fd = self.open_for_xattr(rel)?;
        let flags = rustix::fs::XattrFlags::from_bits_retain(flags as u32);
        rustix::fs::fsetxattr(&fd, name, value, flags)?;
        self.note_change();
        self.observe_changed(rel, Some(&fd));
        Ok(())
    }

    pub fn remove_xattr(&self, rel: &Path, name: &OsStr) -> io::Result<()> {
        let fd = self.open_for_xattr(rel)?;
        rustix::fs::fremovexattr(&fd, name)?;
        self.note_change();
        self.observe_changed(rel, Some(&fd));
        Ok(())
    }

    /// Whether the backing dir is on a network or FUSE filesystem, whose client may answer
    /// for a while from what it cached of another machine's files.
    pub fn is_remote(&self) -> bool {
        self.remote
    }

    /// Whether the backing dir is on a FUSE filesystem (GlusterFS's client, JuiceFS, sshfs...).
    pub fn is_on_fuse(&self) -> bool {
        fs_type(&self.root) == Some(FUSE_SUPER_MAGIC)
    }

    pub fn statfs(&self) -> io::Result<rustix::fs::StatVfs> {
        Ok(rustix::fs::fstatvfs(&self.root)?)
    }
}

const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// The filesystem type (`statfs`'s `f_type`) of an open file or directory.
fn fs_type(fd: &impl AsFd) -> Option<i64> {
    // `f_type`'s integer type differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    rustix::fs::fstatfs(fd).ok().map(|st| st.f_type as i64)
}

/// Filesystems whose client may not know yet what another machine just changed: FUSE (the
/// GlusterFS and JuiceFS clients), NFS, CephFS, SMB.
fn is_remote_fs_type(f_type: i64) -> bool {
    const NFS: i64 = 0x6969;
    const CEPH: i64 = 0x00c3_6400;
    const SMB2: i64 = 0xfe53_4d42;
    const CIFS: i64 = 0xff53_4d42;
    matches!(f_type, FUSE_SUPER_MAGIC | NFS | CEPH | SMB2 | CIFS)
}

/// How many times a name is reached again after `ESTALE` before it is taken as gone. A
/// GlusterFS client whose name another client keeps replacing can answer it many times in a
/// row (FUSE-NOTES: 8,998 of 9,223 opens in one storm); each retry relearns the directory and
/// looks the name up afresh. With the pauses below, all of them take about 1.8 s at most:
/// longer than the client's own cache time (1 s), after which a name that is really gone
/// answers `ENOENT` by itself.
const ESTALE_RETRIES: u32 = 100;

/// Between retries: at once for the first eight (each already costs a listing round trip),
/// then a short, growing sleep (a replace on another client takes a round trip to settle):
/// 1 ms, 2 ms, ... at most 20 ms.
fn stale_pause(attempt: u32) {
    if attempt > 8 {
        let ms = u64::from(attempt - 8).min(20);
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Read the whole listing of the directory `dir` (an `O_PATH` fd will do) and drop it: see
/// [`Store::relearn_names`].
fn relearn_names_in(dir: &impl AsFd) {
    let Ok(fd) = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    if let Ok(listing) = rustix::fs::Dir::read_from(&fd) {
        listing.take_while(Result::is_ok).for_each(drop);
    }
}

/// Run `op` (which reaches a name afresh each time) again while it fails with `ESTALE`,
/// calling `relearn` before each retry. A name still `ESTALE` after every retry is gone as far
/// as anyone can tell: `ENOENT` (a reader of the mount never sees `ESTALE`, SPEC §13).
fn retry_stale<T>(relearn: impl Fn(), mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut attempt = 0;
    loop {
        match op() {
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) => {
                if attempt == ESTALE_RETRIES {
                    tracing::debug!("still ESTALE after {attempt} retries: taken as gone");
                    return Err(io::Error::from_raw_os_error(libc::ENOENT));
                }
                attempt += 1;
                relearn();
                stale_pause(attempt);
            }
            other => return other,
        }
    }
}

fn proc_fd_path(fd: &impl AsFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

#[cfg(test)]
mod tests;
