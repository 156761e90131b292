//! The filesystem as a plain struct: the rules of SPEC §§1–4 over the backing dir, with no
//! tie to the fuser bindings. Every operation returns `FsResult`; the `fuse` adapter only turns
//! results into replies, and tests can call these methods directly.

mod coherence;
mod dir;
mod fill;
mod handles;
mod nodes;
mod open;
mod page_cache;
mod pins;
mod write;
mod xattr;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustix::fs::{Mode, OFlags};
use tracing::{debug, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::error::{FsError, FsResult};
use crate::hot::HotSet;
use crate::invalidate::Invalidator;
use crate::policy::{self, EntryState, Verdict};
use crate::refresh::Refresher;
use crate::stats::{bump, Requests, Stats};
use crate::store::{self, Kind, SetTime, Stat, Store, Version};

use coherence::Coherence;
use handles::Handle;
pub use handles::Listed;
use nodes::Nodes;
pub use nodes::ROOT;
use page_cache::PageCache;
use pins::Pins;

/// The longest the kernel may cache a name or attributes: changes made behind the mount's
/// back show within this time (SPEC §2), with no kernel notification needed. Entries also
/// never get past their next state change (exact in time), and names being written are not
/// cached at all (see `coherence`).
pub const KERNEL_TTL: Duration = Duration::from_secs(1);

const NAME_MAX: usize = 255;

/// How many published versions the watcher can recognise as this mount's own.
const PUBLISHED_REMEMBERED: usize = 256;

/// The mount-wide counters, on the root directory.
pub const STATS_XATTR: &str = "user.cachetta.stats";
const VALIDITY_CACHE_MAX: usize = 100_000;

/// Attributes of a node as the kernel sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    /// The backing file's identity (device, inode); 0 for what has no backing file yet.
    pub dev: u64,
    pub backing_ino: u64,
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
    /// Attributes of something with no backing file yet (a new entry before its first
    /// publish, a fill directory before its first fill).
    fn synthetic(ino: u64, kind: Kind, perm: u16, uid: u32, gid: u32, now: SystemTime) -> Attr {
        Attr {
            ino,
            kind,
            dev: 0,
            backing_ino: 0,
            size: 0,
            blocks: 0,
            atime: now,
            mtime: now,
            ctime: now,
            perm,
            nlink: if kind == Kind::Dir { 2 } else { 1 },
            uid,
            gid,
        }
    }

    /// The version of a backing file these attributes describe (`None` for directories and
    /// for what has no backing file yet).
    fn version(&self) -> Option<Version> {
        (self.kind == Kind::File && self.backing_ino != 0).then_some(Version {
            dev: self.dev,
            ino: self.backing_ino,
            size: self.size,
            mtime: self.mtime,
            ctime: self.ctime,
        })
    }

    /// What a negative entry carries (the kernel reads none of it).
    pub fn absent() -> Attr {
        Attr::synthetic(0, Kind::File, 0, 0, 0, SystemTime::UNIX_EPOCH)
    }

    fn from_stat(ino: u64, st: &Stat) -> Attr {
        Attr {
            ino,
            kind: st.kind,
            dev: st.dev,
            backing_ino: st.ino,
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

/// How the kernel is to do I/O on an open file.
///
/// The kernel keeps one size per inode, which a writer's direct writes move under page-cached
/// readers of the same inode (cutting their reads short or padding them with zeros). So the
/// page cache is used only for inodes no writer can open and whose size the kernel was only
/// ever told one value of (see `page_cache`); otherwise passthrough or direct I/O, which read
/// the handle's own file.
#[derive(Debug, Clone)]
pub enum OpenMode {
    /// Every read and write comes to the daemon (staged writes, or no passthrough).
    DirectIo,
    /// Reads go through the kernel's page cache (no passthrough, and safe: see `page_cache`);
    /// `keep`: the pages the kernel has are of this version (`FOPEN_KEEP_CACHE`).
    PageCache { keep: bool },
    /// Reads go straight to this backing file in the kernel; `generation` names the pin.
    Passthrough { file: Arc<File>, generation: u64 },
}

/// How an open was answered.
#[derive(Debug, Clone)]
pub struct Opened {
    pub fh: u64,
    pub ino: u64,
    pub mode: OpenMode,
    /// Its `close` has nothing to report (a read-only open, or a scratch file, whose writes
    /// reach the backing file as they come), so the kernel need not send `flush`.
    pub noflush: bool,
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
    store: Arc<Store>,
    config: Arc<Config>,
    clock: Arc<dyn Clock>,
    read_only: bool,
    nodes: RwLock<Nodes>,
    pins: Mutex<Pins>,
    /// What the kernel may cache of each name (reply-time coherence).
    coherence: Coherence,
    /// Which entry inodes the kernel may read through its page cache.
    page_cache: PageCache,
    passthrough: AtomicBool,
    watching: AtomicBool,
    invalidator: OnceLock<Invalidator>,
    handles: RwLock<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Versions this mount published lately: the watcher leaves them alone.
    published: Mutex<std::collections::VecDeque<Version>>,
    /// JSON validity per content version, so an unchanged entry is parsed once.
    validity: Mutex<HashMap<Version, bool>>,
    stats: Arc<Stats>,
    /// Entry contents for reads that reach the daemon (SPEC §7).
    hot: HotSet,
    requests: Requests,
    refresher: Refresher,
    /// Directories a `fill_on_miss` rule names literally: shown even before they exist.
    fill_dirs: Vec<PathBuf>,
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
    /// The filesystem, sharing its store, config, clock and counters with its refresh
    /// runner. Published refreshes reach the kernel through `backing_changed`.
    pub fn new(
        config: Arc<Config>,
        store: Store,
        clock: Arc<dyn Clock>,
        read_only: bool,
    ) -> Arc<CacheFs> {
        let started = clock.now();
        let store = Arc::new(store);
        let stats = Arc::new(Stats::default());
        Arc::new_cyclic(|weak: &std::sync::Weak<CacheFs>| {
            let weak = weak.clone();
            let on_published: crate::refresh::OnPublished = Box::new(move |key: &Path| {
                if let Some(fs) = weak.upgrade() {
                    fs.backing_changed(key);
                }
            });
            let refresher = Refresher::new(
                store.clone(),
                config.clone(),
                clock.clone(),
                stats.clone(),
                on_published,
            );
            CacheFs {
                fill_dirs: config.fill_dirs(),
                hot: HotSet::new(config.lru_entries, config.lru_bytes),
                store,
                config,
                clock,
                read_only,
                nodes: RwLock::new(Nodes::default()),
                pins: Mutex::new(Pins::default()),
                coherence: Coherence::default(),
                page_cache: PageCache::default(),
                passthrough: AtomicBool::new(false),
                watching: AtomicBool::new(false),
                invalidator: OnceLock::new(),
                handles: RwLock::new(HashMap::new()),
                next_fh: AtomicU64::new(1),
                published: Mutex::new(std::collections::VecDeque::new()),
                validity: Mutex::new(HashMap::new()),
                stats,
                requests: Requests::default(),
                refresher,
                started,
            }
        })
    }

    /// Stop: kill running refresh commands (unmount, signals).
    pub fn shutdown(&self) {
        self.refresher.shutdown();
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

    /// Reads of large entries may use kernel passthrough (the adapter negotiated it).
    pub fn enable_passthrough(&self, on: bool) {
        self.passthrough.store(on, Ordering::Relaxed);
    }

    /// Where kernel invalidations go; until set, the kernel is never told anything.
    pub fn set_invalidator(&self, invalidator: Invalidator) {
        let _ = self.invalidator.set(invalidator);
    }

    pub fn has_invalidator(&self) -> bool {
        self.invalidator.get().is_some()
    }

    /// The backing dir is watched (shown in the stats; kernel timeouts do not depend on it).
    pub fn set_watching(&self, on: bool) {
        self.watching.store(on, Ordering::Relaxed);
    }

    /// Hint to the kernel that `ino`'s attributes changed. Never waited for.
    fn invalidate_attributes(&self, ino: u64) {
        if let Some(invalidator) = self.invalidator.get() {
            invalidator.attributes(ino);
        }
    }

    /// The name of `ino` now holds other content while `ino` is pinned to the old one: the
    /// name moves to a fresh inode at its next lookup. A process whose kernel entry for the
    /// name has expired (every name being written, and every name within a second) finds the
    /// fresh inode; holders of `ino` keep reading the old content whole.
    fn rotate(&self, ino: u64) {
        let mut nodes = self.nodes.write();
        if let Some((parent, name)) = nodes.bound_name(ino) {
            nodes.replace(parent, &name);
        }
    }

    /// `ino`'s content or attributes changed under it.
    fn content_changed(&self, ino: u64) {
        let pinned = self.pins.lock().get(ino).is_some();
        if pinned {
            self.rotate(ino);
        }
        self.invalidate_attributes(ino);
    }

    /// Something at `rel` (relative to the backing root) changed behind the mount's back
    /// (another program, or a refresh that published): pinned inodes move on, and the kernel
    /// is told the attributes of the directory and the file changed.
    pub fn backing_changed(&self, rel: &Path) {
        let (parent_rel, name) = store::split(rel);
        let (parent, child) = {
            let nodes = self.nodes.read();
            let Some(parent) = nodes.resolve(parent_rel) else {
                return;
            };
            (parent, nodes.find(parent, name))
        };
        self.invalidate_attributes(parent);
        if let Some(child) = child {
            self.content_changed(child);
        }
    }

    /// Whether the change the watcher saw at `rel` is one this mount made itself: a file we
    /// published (same device, inode, size and times). It needs no telling: the kernel saw it
    /// happen.
    pub fn is_own_change(&self, rel: &Path) -> bool {
        self.store
            .stat(rel)
            .is_ok_and(|st| self.published.lock().contains(&st.version()))
    }

    /// Remember a version this mount published, for [`CacheFs::is_own_change`].
    fn remember_published(&self, version: Version) {
        let mut published = self.published.lock();
        if published.len() >= PUBLISHED_REMEMBERED {
            published.pop_front();
        }
        published.push_back(version);
    }

    /// Events were lost: every pinned inode moves on and every attribute is suspect.
    pub fn backing_changed_everywhere(&self) {
        let (_, inodes) = self.nodes.read().everything();
        for ino in inodes {
            self.content_changed(ino);
        }
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

    /// Whether the content version (read through `file`, opened by the caller) is one complete
    /// JSON value; parsed once per version.
    fn is_valid(&self, key: &Path, st: &Stat, file: Option<&File>) -> bool {
        let version = st.version();
        if let Some(&valid) = self.validity.lock().get(&version) {
            return valid;
        }
        // Not opened (gone, or unreadable): hidden now, judged again next time.
        let Some(file) = file else { return false };
        let valid = match store::file_is_valid_json(file, self.config.max_entry_bytes) {
            Ok(valid) => valid,
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

    /// How long the kernel may cache what it is told of a thing seen as `seen`.
    fn ttl(&self, seen: Seen) -> Duration {
        match seen {
            Seen::Entry(v) => v.until_change.map_or(Duration::ZERO, |d| d.min(KERNEL_TTL)),
            _ => KERNEL_TTL,
        }
    }

    /// The timeout of a reply that binds `name` in `parent` to `ino` (zero while the name is
    /// being written; see `coherence`).
    fn grant(&self, parent: u64, name: &OsStr, ino: u64, ttl: Duration) -> Duration {
        self.coherence
            .grant(parent, name, ino, ttl, self.clock.now())
    }

    /// The attribute timeout of `ino` (zero while its name is being written).
    fn attr_ttl(&self, ino: u64, ttl: Duration) -> Duration {
        if ttl.is_zero() {
            return ttl;
        }
        match self.nodes.read().name_of(ino) {
            Some((parent, name)) if self.coherence.is_writing(parent, &name, self.clock.now()) => {
                Duration::ZERO
            }
            _ => ttl,
        }
    }

    /// Stat and judge a path; hidden things are `ENOENT`. An entry whose validity is not yet
    /// known is opened and judged as opened, so a replace racing with us can never make a
    /// valid entry look corrupt.
    fn visible(&self, key: &Path) -> FsResult<(Stat, Seen)> {
        let st = self
            .store
            .stat(key)
            .map_err(|e| FsError::io(key.display(), e))?;
        self.judge_stat(key, st)
    }

    /// Judge what `st` says is at `key`, opening an entry whose validity is not known yet.
    fn judge_stat(&self, key: &Path, mut st: Stat) -> FsResult<(Stat, Seen)> {
        let mut opened = None;
        let name = key.file_name().unwrap_or_default();
        if st.kind == Kind::File
            && store::is_entry_name(name)
            && !self.validity.lock().contains_key(&st.version())
        {
            if let Ok((file, fst)) = self.store.open_file(key, OFlags::RDONLY, Mode::empty()) {
                st = fst;
                opened = Some(file);
            }
        }
        match self.judge(key, &st, opened.as_ref()) {
            Seen::Hidden => Err(errno(libc::ENOENT)),
            seen => Ok((st, seen)),
        }
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<Entry> {
        let found = self.lookup_quietly(parent, name);
        if store::is_entry_name(name) && found.is_err() {
            bump(&self.stats.misses);
        }
        found
    }

    /// A lookup that counts no miss.
    fn lookup_quietly(&self, parent: u64, name: &OsStr) -> FsResult<Entry> {
        let key = self.child_path(parent, name)?;
        let (st, seen) = match self.visible(&key) {
            Ok(found) => found,
            Err(e) if e.errno == libc::ENOENT && self.is_fill_dir(&key) => {
                let ino = self.nodes.write().bind(parent, name, Kind::Dir);
                return Ok(Entry {
                    attr: self.fill_dir_attr(ino),
                    ttl: KERNEL_TTL,
                });
            }
            Err(e) => return Err(e),
        };
        let version = (st.kind == Kind::File).then(|| st.version());
        let ino = self.bind_found(parent, name, st.kind, (st.dev, st.ino), version);
        Ok(self.describe(Entry {
            attr: Attr::from_stat(ino, &st),
            ttl: self.grant(parent, name, ino, self.ttl(seen)),
        }))
    }

    /// Every reply with attributes goes through here: what the kernel was told of a file.
    fn describe(&self, entry: Entry) -> Entry {
        if entry.attr.kind == Kind::File {
            self.page_cache
                .reported(entry.attr.ino, entry.attr.version());
        }
        entry
    }

    /// Bind a name found holding the backing file `st` (a lookup, a listing) to its inode, or
    /// to a fresh one when the old inode cannot serve it: pinned to other content (its readers
    /// keep that), unfit for the name's writers (see `coherence`), or already described to the
    /// kernel as another version while nobody writes the name (a fresh inode keeps the page
    /// cache usable for the new version; see `page_cache`).
    fn bind_found(
        &self,
        parent: u64,
        name: &OsStr,
        kind: Kind,
        id: pins::FileId,
        version: Option<Version>,
    ) -> u64 {
        let bound = self.nodes.read().find(parent, name);
        let fresh = bound.is_some_and(|ino| {
            let pinned = self
                .pins
                .lock()
                .get(ino)
                .map(|pin| (pin.id, pin.passthrough));
            let now = self.clock.now();
            let writing = self.coherence.is_writing(parent, name, now);
            match pinned {
                Some((pinned_id, _)) if pinned_id != id => true,
                Some((_, true)) if writing => true,
                _ if writing => self.coherence.unfit_for_writers(parent, name, ino, now),
                _ => version.is_some_and(|v| self.page_cache.described_otherwise(ino, &v)),
            }
        });
        let mut nodes = self.nodes.write();
        if fresh && nodes.find(parent, name) == bound {
            nodes.replace(parent, name);
        }
        nodes.bind(parent, name, kind)
    }

    /// How long the kernel may remember that `name` in `parent` does not exist: as long as
    /// anything else, except where a lookup can make it exist (read-through) or its writer
    /// is at work.
    pub fn negative_ttl(&self, parent: u64, name: &OsStr) -> Duration {
        if self.may_fill(parent, name) || self.coherence.is_writing(parent, name, self.clock.now())
        {
            return Duration::ZERO;
        }
        KERNEL_TTL
    }

    pub fn forget(&self, ino: u64, n: u64) {
        if self.nodes.write().forget(ino, n) {
            self.coherence.forget(ino);
            self.page_cache.forget(ino);
        }
    }

    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> FsResult<Entry> {
        self.attributes(ino, fh).map(|e| self.describe(e))
    }

    fn attributes(&self, ino: u64, fh: Option<u64>) -> FsResult<Entry> {
        let key = self.path_of(ino)?;
        // Stat the name first, then look for a pin: a pin made after the stat is always of
        // content at least as new, so this never reports newer attributes over an older pin.
        let found = self.visible(&key);
        if let Some(entry) = self.pinned_attr(ino, &key)? {
            return Ok(entry);
        }
        match found {
            Ok((st, seen)) => {
                if let Some(Handle::Scratch { file, .. }) =
                    fh.and_then(|fh| self.handle(fh).ok()).as_deref()
                {
                    // A scratch file's writer sees its own file, even if renamed away.
                    let st = Store::fstat(file)?;
                    return Ok(Entry {
                        attr: Attr::from_stat(ino, &st),
                        ttl: self.ttl(seen),
                    });
                }
                Ok(Entry {
                    attr: Attr::from_stat(ino, &st),
                    ttl: self.attr_ttl(ino, self.ttl(seen)),
                })
            }
            Err(e) if e.errno == libc::ENOENT && self.is_fill_dir(&key) => Ok(Entry {
                attr: self.fill_dir_attr(ino),
                ttl: KERNEL_TTL,
            }),
            // Created and not yet published: its writer (`touch`, `futimens`) still sees it.
            // Staged sizes are never reported otherwise: the kernel keeps one size per inode.
            Err(e) => match self.writer_of(ino) {
                Some(handle) => Ok(self
                    .handle_attr(ino, &handle)?
                    .expect("write handles have attributes")),
                None => Err(e),
            },
        }
    }

    /// An open inode shows the version its readers read, to every asker: the kernel keeps one
    /// size per inode, and a smaller one would cut its readers short.
    fn pinned_attr(&self, ino: u64, key: &Path) -> FsResult<Option<Entry>> {
        let Some(file) = self.pins.lock().get(ino).map(|pin| pin.file.clone()) else {
            return Ok(None);
        };
        let st = Store::fstat(&*file)?;
        match self.judge(key, &st, Some(&file)) {
            Seen::Hidden => Err(errno(libc::ENOENT)),
            seen => Ok(Some(Entry {
                attr: Attr::from_stat(ino, &st),
                ttl: self.attr_ttl(ino, self.ttl(seen)),
            })),
        }
    }

    /// An open writable handle of `ino`, if any. Only the handles' fixed fields are read
    /// under the table's lock: a writer may hold its own state across I/O.
    fn writer_of(&self, ino: u64) -> Option<Arc<Handle>> {
        let handles = self.handles.read();
        handles
            .values()
            .find(|h| matches!(&***h, Handle::Write(w) if w.ino == ino))
            .cloned()
    }

    /// Attributes as one open handle sees them (its own version, or its staged content).
    fn handle_attr(&self, ino: u64, handle: &Handle) -> FsResult<Option<Entry>> {
        let st = match handle {
            Handle::Read { file, .. } => Store::fstat(&**file)?,
            Handle::Scratch { file, .. } => Store::fstat(file)?,
            Handle::Write(w) => {
                let state = w.state.lock();
                match state.current() {
                    Some(file) => Store::fstat(file)?,
                    None => {
                        // Created or truncated and nothing written yet: an empty file.
                        let now = self.clock.now();
                        let (uid, gid) = state.owner.unwrap_or((0, 0));
                        let attr =
                            Attr::synthetic(ino, Kind::File, state.perm as u16, uid, gid, now);
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

    pub fn mkdir(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> FsResult<Entry> {
        self.writable()?;
        let key = self.child_path(parent, name)?;
        self.materialize_fill_dir(store::split(&key).0)?;
        let mut st = self
            .store
            .mkdir(&key, mode & !umask)
            .map_err(|e| FsError::io(key.display(), e))?;
        if let Some((uid, gid)) = self.owner_for(caller) {
            // With --allow-other, a directory someone makes is theirs, as on any filesystem.
            self.store
                .set_owner(&key, Some(uid), Some(gid))
                .map_err(|e| FsError::io(key.display(), e))?;
            st = self.store.stat(&key)?;
        }
        let ino = self.nodes.write().bind(parent, name, Kind::Dir);
        Ok(Entry {
            attr: Attr::from_stat(ino, &st),
            ttl: self.grant(parent, name, ino, KERNEL_TTL),
        })
    }

    /// Whom a file the caller creates must belong to, when the daemon (root, serving other
    /// users with `--allow-other`) would otherwise make it root's.
    fn owner_for(&self, caller: Caller) -> Option<(u32, u32)> {
        (rustix::process::geteuid().is_root() && caller.uid != 0)
            .then_some((caller.uid, caller.gid))
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.writable()?;
        let key = self.child_path(parent, name)?;
        // rm wins over a refresh of the same key running now.
        self.refresher.cancel(&key);
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
            // Judged as opened: a valid entry being replaced right now never looks corrupt
            // here, so it is never removed as invisible.
            match self.visible(&child) {
                Ok((_, Seen::Dir | Seen::Entry(_))) => return Err(errno(libc::ENOTEMPTY)),
                // A write in progress (a staging or scratch file someone holds): not a leftover.
                _ if self.store.is_held(&child) => return Err(errno(libc::ENOTEMPTY)),
                Ok(_) => invisible.push(child),
                Err(e) if e.errno == libc::ENOENT => invisible.push(child),
                Err(e) => return Err(e),
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
        self.materialize_fill_dir(store::split(&to).0)?;
        if store::is_staging_name(newname) {
            return Err(errno(libc::EPERM));
        }
        let st = self
            .store
            .stat(&from)
            .map_err(|e| FsError::io(from.display(), e))?;
        if st.kind == Kind::File
            && store::is_entry_name(newname)
            && !store::is_entry_name(name)
            && self.is_open_scratch(parent, name)
        {
            // Someone still holds the scratch file open and could change it after it was
            // validated, or write on into the entry: publish a validated copy instead.
            if flags & libc::RENAME_NOREPLACE != 0 && self.store.stat(&to).is_ok() {
                return Err(errno(libc::EEXIST));
            }
            self.publish_copy(&from, &to)?;
            self.nodes
                .write()
                .rename((parent, name), (newparent, newname));
            return Ok(());
        }
        if st.kind == Kind::File && store::is_entry_name(newname) {
            self.check_rename_content(&from, &to)?;
            if !store::is_entry_name(name) {
                // Publishing a scratch file is a write. It keeps its own mtime: the time of
                // its last write, or the time its writer set (`rsync -a`, SPEC §3).
                bump(&self.stats.writes_ok);
            }
        }
        self.store
            .rename(&from, &to, flags & libc::RENAME_NOREPLACE != 0)
            .map_err(|e| FsError::io(format!("{} -> {}", from.display(), to.display()), e))?;
        if st.kind == Kind::File && store::is_entry_name(newname) {
            // Just validated: the next lookup need not parse it again (the rename itself
            // changed its ctime, so the version is taken now).
            if let Ok(now) = self.store.stat(&to) {
                if now.ino == st.ino {
                    self.validity.lock().insert(now.version(), true);
                    self.remember_published(now.version());
                    if let Some(ino) = self.nodes.read().find(parent, name) {
                        self.page_cache.renamed(ino, now.version());
                    }
                }
            }
        }
        self.nodes
            .write()
            .rename((parent, name), (newparent, newname));
        Ok(())
    }

    /// Whether a scratch file is open through the mount.
    fn is_open_scratch(&self, parent: u64, name: &OsStr) -> bool {
        let Some(ino) = self.nodes.read().find(parent, name) else {
            return false;
        };
        self.handles
            .read()
            .values()
            .any(|h| matches!(&**h, Handle::Scratch { ino: held, .. } if *held == ino))
    }

    /// Rename a scratch file that is still open onto an entry: its content as of now is
    /// copied into a staging file, validated there, and published with the scratch file's
    /// times and `user.*` attributes; then the scratch name goes. Later writes through the open
    /// descriptor reach only the old scratch file.
    fn publish_copy(&self, from: &Path, to: &Path) -> FsResult<()> {
        let io = |e| FsError::io(format!("{} -> {}", from.display(), to.display()), e);
        let (source, st) = self
            .store
            .open_file(from, OFlags::RDONLY, Mode::empty())
            .map_err(io)?;
        let staging = self
            .store
            .create_staging(store::split(to).0, st.perm as u32)
            .map_err(io)?;
        let copied = store::copy_contents(&source, &staging.file).and_then(|_| {
            store::copy_user_xattrs(&source, &staging.file);
            Store::set_file_times(
                &staging.file,
                Some(SetTime::At(st.atime)),
                Some(SetTime::At(st.mtime)),
            )
        });
        if let Err(e) = copied {
            self.store.discard(staging);
            return Err(io(e));
        }
        let verdict = store::file_is_valid_json(&staging.file, self.config.max_entry_bytes);
        let rejected = match verdict {
            Ok(true) => None,
            Ok(false) => Some((libc::EINVAL, "not valid JSON")),
            Err(e) if e.raw_os_error() == Some(libc::EFBIG) => {
                Some((libc::EFBIG, "larger than max_entry_bytes"))
            }
            Err(e) => {
                self.store.discard(staging);
                return Err(io(e));
            }
        };
        if let Some((errno, why)) = rejected {
            self.store.discard(staging);
            bump(&self.stats.writes_rejected);
            warn!(key = %to.display(), from = %from.display(), "rename refused: {why}; the entry is unchanged");
            return Err(FsError::warn(errno, why.to_string()));
        }
        let published = self.store.publish(staging, to, None).map_err(io)?;
        if let Ok(now) = Store::fstat(&published) {
            self.validity.lock().insert(now.version(), true);
            self.remember_published(now.version());
        }
        bump(&self.stats.writes_ok);
        // The name the kernel renamed away: gone here too (its open descriptor lives on).
        if let Err(e) = self.store.unlink(from) {
            warn!(from = %from.display(), "the renamed scratch file stayed behind: {e}");
        }
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
        match store::file_is_valid_json(&file, self.config.max_entry_bytes) {
            Ok(true) => Ok(()),
            Ok(false) => reject(libc::EINVAL, "not valid JSON"),
            Err(e) if e.raw_os_error() == Some(libc::EFBIG) => {
                reject(libc::EFBIG, "larger than max_entry_bytes")
            }
            Err(e) => Err(FsError::io(from.display(), e)),
        }
    }

    pub fn statfs(&self) -> FsResult<rustix::fs::StatVfs> {
        Ok(self.store.statfs()?)
    }

    /// The mount's counters as one JSON object (`user.cachetta.stats` on the root).
    pub fn stats_json(&self) -> String {
        let mut object = serde_json::Map::new();
        for (name, value) in self.stats.counters() {
            object.insert(name.into(), value.into());
        }
        object.insert("uptime_s".into(), self.uptime().as_secs().into());
        let (lru_entries, lru_bytes) = self.hot.usage();
        object.insert("lru_entries".into(), lru_entries.into());
        object.insert("lru_bytes".into(), lru_bytes.into());
        object.insert("inodes".into(), self.inode_count().into());
        // Which kernel-caching regime is on: long name/attribute caching needs the watcher;
        // reads that never reach the daemon need passthrough.
        object.insert(
            "watching".into(),
            self.watching.load(Ordering::Relaxed).into(),
        );
        object.insert(
            "passthrough".into(),
            self.passthrough.load(Ordering::Relaxed).into(),
        );
        let requests: serde_json::Map<_, _> = self
            .requests
            .counters()
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.into()))
            .collect();
        object.insert("requests".into(), requests.into());
        serde_json::Value::Object(object).to_string()
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
mod model_tests;
#[cfg(test)]
mod tests;
