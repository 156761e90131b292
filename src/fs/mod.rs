//! The filesystem as a plain struct: the rules of SPEC §§1–4 over the backing dir, with no
//! tie to the fuser bindings. Every operation returns `FsResult`; the `fuse` adapter only turns
//! results into replies, and tests can call these methods directly.

mod handles;
mod nodes;
mod write;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustix::fs::{Mode, OFlags};
use tracing::{debug, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::error::{FsError, FsResult};
use crate::policy::{self, EntryState, Verdict};
use crate::stats::{bump, Requests, Stats};
use crate::store::{self, Kind, SetTime, Stat, Store, Version};

use handles::Handle;
pub use handles::Listed;
use nodes::Nodes;
pub use nodes::ROOT;

/// The longest the kernel may cache a name or attributes without asking again. Entries also
/// never get past their next state change (SPEC §2: exact in time).
pub const KERNEL_TTL_CAP: Duration = Duration::from_secs(1);

const NAME_MAX: usize = 255;

/// The mount-wide counters, on the root directory.
pub const STATS_XATTR: &str = "user.cachetta.stats";
const VALIDITY_CACHE_MAX: usize = 100_000;

/// Attributes of a node as the kernel sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Attr {
    fn from_stat(ino: u64, st: &Stat) -> Attr {
        Attr {
            ino,
            kind: st.kind,
            size: st.size,
            blocks: st.blocks,
            atime: st.atime,
            mtime: st.mtime,
            ctime: st.ctime,
            perm: st.perm,
            nlink: if st.kind == Kind::Dir { st.nlink } else { 1 },
            uid: st.uid,
            gid: st.gid,
        }
    }
}

/// A name's attributes and how long the kernel may cache them.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub attr: Attr,
    pub ttl: Duration,
}

/// How an open was answered.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    pub fh: u64,
    /// Each read goes to this handle's own fd (so concurrent versions never mix in the
    /// kernel's page cache).
    pub direct_io: bool,
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

/// What a `setattr` asks to change.
#[derive(Debug, Clone, Copy, Default)]
pub struct Changes {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
}

/// What a backing file is, as the mount shows it.
#[derive(Debug, Clone, Copy)]
enum Seen {
    Dir,
    Scratch,
    Entry(Verdict),
    /// Expired, corrupt, a staging file, or not a regular file or directory.
    Hidden,
}

/// The filesystem.
pub struct CacheFs {
    store: Store,
    config: Arc<Config>,
    clock: Arc<dyn Clock>,
    read_only: bool,
    nodes: RwLock<Nodes>,
    handles: RwLock<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// JSON validity per content version, so an unchanged entry is parsed once.
    validity: Mutex<HashMap<Version, bool>>,
    stats: Stats,
    requests: Requests,
    started: SystemTime,
}

impl std::fmt::Debug for CacheFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheFs")
            .field("backing", &self.store.root_path())
            .finish_non_exhaustive()
    }
}

fn errno(e: i32) -> FsError {
    FsError::errno(e)
}

fn check_name(name: &OsStr) -> FsResult<()> {
    if name.len() > NAME_MAX {
        return Err(errno(libc::ENAMETOOLONG));
    }
    if name.is_empty() || name.as_bytes().contains(&b'/') || name == "." || name == ".." {
        return Err(errno(libc::EINVAL));
    }
    Ok(())
}

impl CacheFs {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        clock: Arc<dyn Clock>,
        read_only: bool,
    ) -> CacheFs {
        let started = clock.now();
        CacheFs {
            store,
            config,
            clock,
            read_only,
            nodes: RwLock::new(Nodes::default()),
            handles: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            validity: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            requests: Requests::default(),
            started,
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn requests(&self) -> &Requests {
        &self.requests
    }

    pub fn uptime(&self) -> Duration {
        self.clock
            .now()
            .duration_since(self.started)
            .unwrap_or_default()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn inode_count(&self) -> usize {
        self.nodes.read().len()
    }

    fn writable(&self) -> FsResult<()> {
        if self.read_only {
            Err(errno(libc::EROFS))
        } else {
            Ok(())
        }
    }

    fn path_of(&self, ino: u64) -> FsResult<PathBuf> {
        self.nodes
            .read()
            .path(ino)
            .ok_or_else(|| errno(libc::ENOENT))
    }

    fn child_path(&self, parent: u64, name: &OsStr) -> FsResult<PathBuf> {
        check_name(name)?;
        Ok(self.path_of(parent)?.join(name))
    }

    fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        self.handles
            .read()
            .get(&fh)
            .cloned()
            .ok_or_else(|| errno(libc::EBADF))
    }

    fn add_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.write().insert(fh, Arc::new(handle));
        fh
    }

    /// Whether the content version is one complete JSON value; parsed once per version.
    fn is_valid(&self, key: &Path, st: &Stat, file: Option<&File>) -> bool {
        let version = st.version();
        if let Some(&valid) = self.validity.lock().get(&version) {
            return valid;
        }
        let opened;
        let file = match file {
            Some(f) => f,
            None => match self.store.open_file(key, OFlags::RDONLY, Mode::empty()) {
                Ok((f, now)) if now.version() == version => {
                    opened = f;
                    &opened
                }
                // Replaced or removed meanwhile: judge it next time, with its new version.
                _ => return false,
            },
        };
        let valid = match store::read_all(file, self.config.max_entry_bytes) {
            Ok(bytes) => store::is_valid_json(&bytes),
            Err(e) if e.raw_os_error() == Some(libc::EFBIG) => false,
            Err(_) => return false,
        };
        if !valid {
            warn!(key = %key.display(), "corrupt entry hidden: not valid JSON (or over max_entry_bytes)");
        }
        let mut cache = self.validity.lock();
        if cache.len() >= VALIDITY_CACHE_MAX {
            cache.clear();
        }
        cache.insert(version, valid);
        valid
    }

    /// How the mount shows the backing file `key` with metadata `st`.
    fn judge(&self, key: &Path, st: &Stat, file: Option<&File>) -> Seen {
        let name = key.file_name().unwrap_or_default();
        match st.kind {
            Kind::Dir => Seen::Dir,
            Kind::Other => Seen::Hidden,
            Kind::File if store::is_staging_name(name) => Seen::Hidden,
            Kind::File if !store::is_entry_name(name) => Seen::Scratch,
            Kind::File => {
                let settings = self.config.settings_for(key.as_os_str()).settings;
                let verdict = policy::evaluate(st.mtime, self.clock.now(), settings.timing());
                if !verdict.state.is_visible() || !self.is_valid(key, st, file) {
                    return Seen::Hidden;
                }
                Seen::Entry(verdict)
            }
        }
    }

    fn ttl(seen: Seen) -> Duration {
        match seen {
            Seen::Entry(v) => v
                .until_change
                .map_or(Duration::ZERO, |d| d.min(KERNEL_TTL_CAP)),
            _ => KERNEL_TTL_CAP,
        }
    }

    /// Stat and judge a path; hidden things are `ENOENT`.
    fn visible(&self, key: &Path) -> FsResult<(Stat, Seen)> {
        let st = self
            .store
            .stat(key)
            .map_err(|e| FsError::io(key.display(), e))?;
        match self.judge(key, &st, None) {
            Seen::Hidden => Err(errno(libc::ENOENT)),
            seen => Ok((st, seen)),
        }
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<Entry> {
        let key = self.child_path(parent, name)?;
        let found = self.visible(&key);
        if store::is_entry_name(name) && found.is_err() {
            bump(&self.stats.misses);
        }
        let (st, seen) = found?;
        let ino = self.nodes.write().bind(parent, name, st.kind);
        Ok(Entry {
            attr: Attr::from_stat(ino, &st),
            ttl: Self::ttl(seen),
        })
    }

    pub fn forget(&self, ino: u64, n: u64) {
        self.nodes.write().forget(ino, n);
    }

    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> FsResult<Entry> {
        if let Some(fh) = fh {
            if let Ok(handle) = self.handle(fh) {
                if let Some(entry) = self.handle_attr(ino, &handle)? {
                    return Ok(entry);
                }
            }
        }
        let key = self.path_of(ino)?;
        match self.visible(&key) {
            Ok((st, seen)) => Ok(Entry {
                attr: Attr::from_stat(ino, &st),
                ttl: Self::ttl(seen),
            }),
            Err(e) => match self.writer_of(ino) {
                // Created and not yet published: its writer (`touch`, `futimens`) still sees it.
                Some(handle) => Ok(self
                    .handle_attr(ino, &handle)?
                    .expect("write handles have attributes")),
                None => Err(e),
            },
        }
    }

    /// An open writable handle of `ino`, if any.
    fn writer_of(&self, ino: u64) -> Option<Arc<Handle>> {
        let handles = self.handles.read();
        handles
            .values()
            .find(|h| matches!(&***h, Handle::Write(s) if s.lock().ino == ino))
            .cloned()
    }

    /// Attributes as one open handle sees them (its own version, or its staged content).
    fn handle_attr(&self, ino: u64, handle: &Handle) -> FsResult<Option<Entry>> {
        let st = match handle {
            Handle::Read { file, .. } | Handle::Scratch { file, .. } => Store::fstat(file)?,
            Handle::Write(state) => {
                let state = state.lock();
                match state.current() {
                    Some(file) => Store::fstat(file)?,
                    None => {
                        // Created or truncated and nothing written yet: an empty file.
                        let now = self.clock.now();
                        let (uid, gid) = state.owner.unwrap_or((0, 0));
                        let attr = Attr {
                            ino,
                            kind: Kind::File,
                            size: 0,
                            blocks: 0,
                            atime: now,
                            mtime: now,
                            ctime: now,
                            perm: state.perm as u16,
                            nlink: 1,
                            uid,
                            gid,
                        };
                        return Ok(Some(Entry {
                            attr,
                            ttl: Duration::ZERO,
                        }));
                    }
                }
            }
            Handle::Dir { .. } => return Ok(None),
        };
        Ok(Some(Entry {
            attr: Attr::from_stat(ino, &st),
            ttl: Duration::ZERO,
        }))
    }

    pub fn open(&self, caller: Caller, ino: u64, flags: i32) -> FsResult<Opened> {
        let key = self.path_of(ino)?;
        let name = key.file_name().unwrap_or_default().to_os_string();
        let accmode = flags & libc::O_ACCMODE;
        if accmode != libc::O_RDONLY {
            self.writable()?;
        }
        if !store::is_entry_name(&name) {
            return self.open_scratch(&key, flags, None);
        }
        if accmode == libc::O_RDONLY {
            let (file, st) = self
                .store
                .open_file(&key, OFlags::RDONLY, Mode::empty())
                .map_err(|e| FsError::io(key.display(), e))?;
            let Seen::Entry(verdict) = self.judge(&key, &st, Some(&file)) else {
                bump(&self.stats.misses);
                return Err(errno(libc::ENOENT));
            };
            bump(&self.stats.hits);
            if verdict.state == EntryState::Stale {
                bump(&self.stats.stale_served);
                self.on_stale_read(&key);
            }
            let fh = self.add_handle(Handle::Read { file });
            return Ok(Opened {
                fh,
                direct_io: true,
            });
        }
        let mut state = self.start_write(
            caller,
            &key,
            flags & libc::O_TRUNC != 0,
            0o644,
            flags & libc::O_APPEND != 0,
        )?;
        if state.base.is_none() && !state.truncated {
            // Opening for write a name the kernel still has cached but that is gone or hidden.
            state.truncated = true;
        }
        state.ino = ino;
        let fh = self.add_handle(Handle::Write(Mutex::new(state)));
        Ok(Opened {
            fh,
            direct_io: true,
        })
    }

    /// The one place a read of a stale entry could start its refresh (refresh commands are a
    /// later layer; reading never waits for one).
    fn on_stale_read(&self, key: &Path) {
        debug!(key = %key.display(), "stale entry served");
    }

    fn open_scratch(&self, key: &Path, flags: i32, create: Option<u32>) -> FsResult<Opened> {
        let mut oflags = OFlags::from_bits_retain(
            (flags & (libc::O_ACCMODE | libc::O_APPEND | libc::O_TRUNC)) as u32,
        );
        if create.is_some() {
            oflags |= OFlags::CREATE | OFlags::from_bits_retain((flags & libc::O_EXCL) as u32);
        }
        let mode = Mode::from_raw_mode(create.unwrap_or(0));
        let (file, _) = self
            .store
            .open_file(key, oflags, mode)
            .map_err(|e| FsError::io(key.display(), e))?;
        let fh = self.add_handle(Handle::Scratch { file });
        Ok(Opened {
            fh,
            direct_io: false,
        })
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let handle = self.handle(fh)?;
        let mut buf = vec![0u8; size as usize];
        let n = match &*handle {
            Handle::Read { file, .. } | Handle::Scratch { file, .. } => {
                read_full_at(file, &mut buf, offset)?
            }
            Handle::Write(state) => match state.lock().current() {
                Some(file) => read_full_at(file, &mut buf, offset)?,
                None => 0,
            },
            Handle::Dir { .. } => return Err(errno(libc::EISDIR)),
        };
        buf.truncate(n);
        Ok(buf)
    }

    pub fn release(&self, fh: u64) {
        let handle = self.handles.write().remove(&fh);
        if let Some(handle) = handle {
            if let Handle::Write(state) = &*handle {
                if let Some(staging) = state.lock().staging.take() {
                    self.store.discard(staging);
                }
            }
        }
    }

    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let key = self.path_of(ino)?;
        let items = self
            .store
            .read_dir(&key)
            .map_err(|e| FsError::io(key.display(), e))?;
        let mut listed = Vec::with_capacity(items.len() + 2);
        listed.push(Listed {
            ino,
            kind: Kind::Dir,
            name: ".".into(),
        });
        listed.push(Listed {
            ino: ROOT,
            kind: Kind::Dir,
            name: "..".into(),
        });
        for item in items {
            if item.kind == Some(Kind::Other) || store::is_staging_name(&item.name) {
                continue;
            }
            if item.kind == Some(Kind::File) && !store::is_entry_name(&item.name) {
                continue; // scratch files are not listed
            }
            let child = key.join(&item.name);
            let Ok(st) = self.store.stat(&child) else {
                continue;
            };
            match self.judge(&child, &st, None) {
                Seen::Dir | Seen::Entry(_) => {
                    let known = self.nodes.read().find(ino, &item.name);
                    listed.push(Listed {
                        ino: known.unwrap_or(st.ino),
                        kind: st.kind,
                        name: item.name,
                    });
                }
                Seen::Scratch | Seen::Hidden => {}
            }
        }
        Ok(self.add_handle(Handle::Dir { items: listed }))
    }

    /// Listed names from `offset` on; the offset of item i is i + 1.
    pub fn readdir(&self, fh: u64, offset: u64) -> FsResult<Vec<(u64, Listed)>> {
        let handle = self.handle(fh)?;
        let Handle::Dir { items } = &*handle else {
            return Err(errno(libc::ENOTDIR));
        };
        Ok(items
            .iter()
            .enumerate()
            .skip(offset as usize)
            .map(|(i, item)| (i as u64 + 1, item.clone()))
            .collect())
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles.write().remove(&fh);
    }

    pub fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, umask: u32) -> FsResult<Entry> {
        self.writable()?;
        let key = self.child_path(parent, name)?;
        let st = self
            .store
            .mkdir(&key, mode & !umask)
            .map_err(|e| FsError::io(key.display(), e))?;
        let ino = self.nodes.write().bind(parent, name, Kind::Dir);
        Ok(Entry {
            attr: Attr::from_stat(ino, &st),
            ttl: KERNEL_TTL_CAP,
        })
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.writable()?;
        let key = self.child_path(parent, name)?;
        self.store
            .unlink(&key)
            .map_err(|e| FsError::io(key.display(), e))?;
        self.nodes.write().remove(parent, name);
        Ok(())
    }

    /// Remove a directory whose visible content is empty, with whatever invisible files
    /// (expired, corrupt, scratch, leftovers) it still holds.
    pub fn rmdir(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.writable()?;
        let key = self.child_path(parent, name)?;
        let items = self
            .store
            .read_dir(&key)
            .map_err(|e| FsError::io(key.display(), e))?;
        let mut invisible = Vec::new();
        for item in items {
            let child = key.join(&item.name);
            let Ok(st) = self.store.stat(&child) else {
                continue;
            };
            match self.judge(&child, &st, None) {
                Seen::Dir | Seen::Entry(_) => return Err(errno(libc::ENOTEMPTY)),
                Seen::Scratch | Seen::Hidden => invisible.push(child),
            }
        }
        for child in invisible {
            if let Err(e) = self.store.unlink(&child) {
                if e.raw_os_error() != Some(libc::ENOENT) {
                    return Err(FsError::io(child.display(), e));
                }
            }
        }
        self.store
            .rmdir(&key)
            .map_err(|e| FsError::io(key.display(), e))?;
        self.nodes.write().remove(parent, name);
        Ok(())
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> FsResult<()> {
        self.writable()?;
        if flags & !(libc::RENAME_NOREPLACE) != 0 {
            return Err(errno(libc::EINVAL));
        }
        let from = self.child_path(parent, name)?;
        let to = self.child_path(newparent, newname)?;
        if store::is_staging_name(newname) {
            return Err(errno(libc::EPERM));
        }
        let st = self
            .store
            .stat(&from)
            .map_err(|e| FsError::io(from.display(), e))?;
        if st.kind == Kind::File && store::is_entry_name(newname) {
            self.check_rename_content(&from, &to)?;
            if !store::is_entry_name(name) {
                // Publishing a scratch file is a write: the entry is fresh from now.
                let now = Some(SetTime::At(self.clock.now()));
                self.store
                    .set_times(&from, now, now)
                    .map_err(|e| FsError::io(from.display(), e))?;
                bump(&self.stats.writes_ok);
            }
        }
        self.store
            .rename(&from, &to, flags & libc::RENAME_NOREPLACE != 0)
            .map_err(|e| FsError::io(format!("{} -> {}", from.display(), to.display()), e))?;
        self.nodes
            .write()
            .rename((parent, name), (newparent, newname));
        Ok(())
    }

    /// A file renamed onto an entry name must be valid JSON within `max_entry_bytes`.
    fn check_rename_content(&self, from: &Path, to: &Path) -> FsResult<()> {
        let (file, _) = self
            .store
            .open_file(from, OFlags::RDONLY, Mode::empty())
            .map_err(|e| FsError::io(from.display(), e))?;
        let reject = |errno, why: &str| {
            bump(&self.stats.writes_rejected);
            warn!(key = %to.display(), from = %from.display(), "rename refused: {why}; the entry is unchanged");
            Err(FsError::warn(errno, why.to_string()))
        };
        match store::read_all(&file, self.config.max_entry_bytes) {
            Ok(bytes) if store::is_valid_json(&bytes) => Ok(()),
            Ok(_) => reject(libc::EINVAL, "not valid JSON"),
            Err(e) if e.raw_os_error() == Some(libc::EFBIG) => {
                reject(libc::EFBIG, "larger than max_entry_bytes")
            }
            Err(e) => Err(FsError::io(from.display(), e)),
        }
    }

    pub fn statfs(&self) -> FsResult<rustix::fs::StatVfs> {
        Ok(self.store.statfs()?)
    }

    pub fn getxattr(&self, ino: u64, name: &OsStr) -> FsResult<Vec<u8>> {
        self.path_of(ino)?;
        if ino == ROOT && name == STATS_XATTR {
            return Ok(self.stats_json().into_bytes());
        }
        Err(errno(libc::ENODATA))
    }

    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        self.path_of(ino)?;
        let mut names = Vec::new();
        if ino == ROOT {
            names.extend_from_slice(STATS_XATTR.as_bytes());
            names.push(0);
        }
        Ok(names)
    }

    /// The mount's counters as one JSON object (`user.cachetta.stats` on the root).
    pub fn stats_json(&self) -> String {
        let mut object = serde_json::Map::new();
        for (name, value) in self.stats.counters() {
            object.insert(name.into(), value.into());
        }
        object.insert("uptime_s".into(), self.uptime().as_secs().into());
        object.insert("lru_entries".into(), 0.into());
        object.insert("lru_bytes".into(), 0.into());
        object.insert("inodes".into(), self.inode_count().into());
        let requests: serde_json::Map<_, _> = self
            .requests
            .counters()
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.into()))
            .collect();
        object.insert("requests".into(), requests.into());
        serde_json::Value::Object(object).to_string()
    }

    pub fn setxattr(&self, ino: u64, name: &OsStr, _value: &[u8]) -> FsResult<()> {
        self.writable()?;
        self.path_of(ino)?;
        if name.as_bytes().starts_with(b"user.cachetta.") {
            return Err(errno(libc::EPERM));
        }
        Err(errno(libc::ENOTSUP))
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr) -> FsResult<()> {
        self.writable()?;
        self.path_of(ino)?;
        if name.as_bytes().starts_with(b"user.cachetta.") {
            return Err(errno(libc::EPERM));
        }
        Err(errno(libc::ENODATA))
    }

    /// Names the filesystem refuses to create: links and special files.
    pub fn refuse_special(&self) -> FsError {
        if self.read_only {
            errno(libc::EROFS)
        } else {
            errno(libc::EPERM)
        }
    }
}

/// `pread` until `buf` is full or end of file.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests;
