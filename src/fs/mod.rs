//! The filesystem as a plain struct: the rules of SPEC §§1–4 over the backing dir, with no
//! tie to the fuser bindings. Every operation returns `FsResult`; the `fuse` adapter only turns
//! results into replies, and tests can call these methods directly.

mod coherence;
mod demand;
mod dir;
mod fill;
mod handles;
mod judge;
mod kernel;
mod lookup;
mod namespace;
mod nodes;
mod open;
mod page_cache;
mod pins;
mod write;
mod write_state;
mod xattr;

use foldhash::{HashMap, HashMapExt};
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
pub use fill::Fill;
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

/// How many names seen gone are remembered (see `gone` in `CacheFs`); past it, all are
/// forgotten and the filesystem's own answers are trusted again.
const GONE_REMEMBERED: usize = 65_536;

/// How many published versions the watcher can recognise as this mount's own.
const PUBLISHED_REMEMBERED: usize = 256;

/// The mount-wide counters, on the root directory.
pub const STATS_XATTR: &str = "user.cachetta.stats";
const VALIDITY_CACHE_MAX: usize = 100_000;
/// Entries at least this large keep what is known of them when the cache is full.
const VALIDITY_KEPT_BYTES: u64 = 1 << 20;

/// Attributes of a node as the kernel sees them: the node's own inode number, and the rest
/// as its backing file's `stat` says (so `stat.dev` and `stat.ino` are the backing file's
/// identity, both 0 for what has no backing file yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub stat: Stat,
}

impl Attr {
    /// Attributes of something with no backing file yet (a new entry before its first
    /// publish, a fill directory before its first fill).
    fn synthetic(ino: u64, kind: Kind, perm: u16, uid: u32, gid: u32, now: SystemTime) -> Attr {
        Attr {
            ino,
            stat: Stat {
                kind,
                dev: 0,
                ino: 0,
                size: 0,
                blocks: 0,
                atime: now,
                mtime: now,
                ctime: now,
                perm,
                nlink: if kind == Kind::Dir { 2 } else { 1 },
                uid,
                gid,
            },
        }
    }

    /// The version of a backing file these attributes describe (`None` for directories and
    /// for what has no backing file yet).
    fn version(&self) -> Option<Version> {
        (self.stat.kind == Kind::File && self.stat.ino != 0).then(|| self.stat.version())
    }

    /// What a negative entry carries (the kernel reads none of it).
    pub fn absent() -> Attr {
        Attr::synthetic(0, Kind::File, 0, 0, 0, SystemTime::UNIX_EPOCH)
    }

    fn from_stat(ino: u64, st: &Stat) -> Attr {
        let nlink = if st.kind == Kind::Dir { st.nlink } else { 1 };
        Attr {
            ino,
            stat: Stat { nlink, ..*st },
        }
    }
}

/// A name's attributes and how long the kernel may cache them.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub attr: Attr,
    /// How long the kernel may cache the attributes (and the name, unless `name_ttl` says
    /// otherwise).
    pub ttl: Duration,
    /// How long the kernel may cache the name: longer than `ttl` only for a live inode (every
    /// open of it reads what the name holds at that open; see `coherence`).
    pub name_ttl: Duration,
}

impl Entry {
    /// The name and its attributes, both cached for `ttl`.
    pub fn new(attr: Attr, ttl: Duration) -> Entry {
        Entry {
            attr,
            ttl,
            name_ttl: ttl,
        }
    }

    /// The name and its attributes, cached as `coherence` granted.
    pub fn granted(attr: Attr, grant: coherence::Grant) -> Entry {
        Entry {
            attr,
            ttl: grant.ttl,
            name_ttl: grant.name_ttl,
        }
    }
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

/// What a lookup answers (see [`CacheFs::lookup_answer`]).
#[derive(Debug)]
pub enum Lookup {
    /// The name, with its attributes.
    Found(Entry),
    /// Read-through: a refresh command may create the name; [`CacheFs::lookup_filling`]
    /// answers when it ends, so no worker waits for it.
    Filling(Fill),
    /// No such name. The kernel may remember that for `ttl` (a negative entry); zero means
    /// not at all, and the answer is plain `ENOENT`.
    Missing { ttl: Duration },
}

/// The filesystem.
///
/// **Locks.** No lock here is held across backing-dir I/O (on a network filesystem that is a
/// round trip every other request would queue behind) or while running a command; bind what
/// is needed under the lock, drop it, then do the I/O. Where two are held at once, they are
/// taken in this order, never the reverse:
///
/// 1. `nodes` (the inode table);
/// 2. then one of `coherence` (`judge::attr_ttl`, `open::pin_current`) or `page_cache`
///    (`namespace::rename`).
///
/// Every other lock is a leaf, taken alone and released before another is taken: `pins`,
/// `handles`, `published`, `known`, `gone`, `demands`, `hot`'s own, the refresher's, and the fuse
/// adapter's `backings` (held across the `/dev/fuse` ioctl that registers a backing file,
/// never across backing-dir I/O). Two locks are held across I/O, and only requests that must
/// wait for that very I/O wait for them:
///
/// - a writer's `state` (one per open file): its own staging file's validation and publish,
///   which only requests on that same open file wait for;
/// - then, inside it or alone, a key's lock in the store (`Store::lock_key`, see
///   `crate::publish`): carrying the entry's policy attributes onto new content and renaming
///   it, or changing a policy attribute (`xattr::lock_for_policy`); only publishes and policy
///   changes of that same key wait. Nothing else is taken while it is held but the store's
///   observer (the journal's appender).
///
/// `docs/concurrency.md` has the table.
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
    /// Requests come over FUSE-over-io_uring rather than `/dev/fuse` (shown in the stats).
    on_ring: AtomicBool,
    watching: AtomicBool,
    invalidator: OnceLock<Invalidator>,
    handles: RwLock<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Versions this mount published lately: the watcher leaves them alone.
    published: Mutex<std::collections::VecDeque<Version>>,
    /// JSON validity and policy attributes per content version, so an unchanged entry is
    /// parsed once.
    known: Mutex<HashMap<Version, judge::Known>>,
    /// Names the watcher saw go (not in their directory's listing any more, or removed by
    /// another mount), with the inode they had: a distributed filesystem's client may go on
    /// answering for such a name for a while (GlusterFS: a name renamed away by another client
    /// stays `stat`-able for seconds while its directory is being listed), and the mount must
    /// not show it. A stat of the name that finds another inode, or a report that the name is
    /// back, forgets it.
    gone: Mutex<HashMap<PathBuf, (u64, SystemTime)>>,
    /// The last listings of a few directories, reused by an `opendir` within the second while
    /// nothing changed (`dir::Snapshot`).
    listings: Mutex<lru::LruCache<PathBuf, Arc<dir::Snapshot>>>,
    stats: Arc<Stats>,
    /// Entry contents for reads that reach the daemon (SPEC §7).
    /// Kept copies by node (SPEC §7): a node's copy goes when its name is written, removed,
    /// refreshed or changed behind the mount (`kernel::content_changed`, `unlink`, `rename`).
    hot: HotSet<u64>,
    requests: Requests,
    refresher: Refresher,
    /// Refreshes asked for through `user.cachetta.refresh`, and how they went.
    demands: Mutex<demand::Demands>,
    /// Directories a `fill_on_miss` rule names literally: shown even before they exist.
    fill_dirs: Vec<PathBuf>,
    /// Directories a rule with a `refresh` command names literally: never remembered as
    /// missing, since a refresh may create them.
    refresh_dirs: Vec<PathBuf>,
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

/// Whether `/proc/self/status` (its text) shows CAP_SYS_ADMIN in the effective set, which the
/// kernel asks of whoever registers a passthrough backing file. Unknown: assume so (the first
/// refused open then turns passthrough off).
fn may_register_backing_files(status: Option<String>) -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    let effective = status.as_deref().and_then(|status| {
        let hex = status
            .lines()
            .find_map(|line| line.strip_prefix("CapEff:"))?;
        u64::from_str_radix(hex.trim(), 16).ok()
    });
    effective.is_none_or(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
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
            let on_published: crate::refresh::OnPublished = Box::new(move |key, published| {
                if let Some(fs) = weak.upgrade() {
                    // Checked by the refresh: the next lookup need not read it again.
                    if let Some(published) = published {
                        if let Some(version) = published.version {
                            fs.remember_own_publish(version, published.policy);
                        }
                    }
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
                refresh_dirs: config.refresh_dirs(),
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
                on_ring: AtomicBool::new(false),
                watching: AtomicBool::new(false),
                invalidator: OnceLock::new(),
                handles: RwLock::new(HashMap::new()),
                next_fh: AtomicU64::new(1),
                published: Mutex::new(std::collections::VecDeque::new()),
                known: Mutex::new(HashMap::new()),
                gone: Mutex::new(HashMap::new()),
                listings: Mutex::new(lru::LruCache::new(
                    std::num::NonZeroUsize::new(dir::SNAPSHOTS_KEPT).expect("not zero"),
                )),
                demands: Mutex::default(),
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

    /// Entries and bytes in the in-memory hot set (`lru_entries`, `lru_bytes`).
    pub fn lru_usage(&self) -> (usize, u64) {
        self.hot.usage()
    }

    /// How many keys have a refresh queued or running.
    pub fn refreshing(&self) -> usize {
        self.refresher.refreshing()
    }

    pub fn inode_count(&self) -> usize {
        self.nodes.read().len()
    }

    /// Whether the backing dir is on a network or FUSE filesystem (see `Store::is_remote`).
    pub fn backing_is_remote(&self) -> bool {
        self.store.is_remote()
    }

    /// Whether the backing dir is on a FUSE filesystem, where kernel passthrough is not used.
    pub fn backing_is_on_fuse(&self) -> bool {
        self.store.is_on_fuse()
    }

    /// Whether to ask the kernel for passthrough: unless `CACHETTA_PASSTHROUGH=0` (to
    /// measure, or to work around a kernel) or the backing dir is on a FUSE filesystem.
    pub fn passthrough_wanted(&self) -> bool {
        if std::env::var("CACHETTA_PASSTHROUGH").is_ok_and(|v| v == "0") {
            return false;
        }
        if !may_register_backing_files(std::fs::read_to_string("/proc/self/status").ok()) {
            // The kernel registers a backing file only for CAP_SYS_ADMIN (fuse_backing_open):
            // an ordinary user's every passthrough open would be refused, and the stats would
            // say "passthrough": true until the first one was.
            tracing::info!("no CAP_SYS_ADMIN: no kernel passthrough, reads go through the daemon");
            return false;
        }
        if self.backing_is_on_fuse() {
            // Measured over GlusterFS's client: the kernel's passthrough reads of a file
            // another client had replaced answered EIO (109 of 2,400 reads in a 4 s storm);
            // reads through the daemon of the same open files answered none.
            tracing::info!("the backing dir is on a FUSE filesystem: no kernel passthrough, reads go through the daemon");
            return false;
        }
        true
    }

    /// The kernel refused to register a backing file: reads go through the daemon from now
    /// on.
    pub fn passthrough_refused(&self, why: &std::io::Error) {
        warn!("kernel passthrough unavailable ({why}); reading through the daemon");
        self.enable_passthrough(false);
    }

    /// Reads of large entries may use kernel passthrough (the adapter negotiated it).
    pub fn enable_passthrough(&self, on: bool) {
        self.passthrough.store(on, Ordering::Relaxed);
    }

    /// Which transport serves the mount, once its rings are registered (or not): the stats'
    /// `"transport"`.
    pub fn set_serving_on_ring(&self, on: bool) {
        self.on_ring.store(on, Ordering::Relaxed);
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

    /// The key of `name` in `parent`. cachetta's own `.cachetta/` at the root is not there,
    /// whatever the operation.
    fn child_path(&self, parent: u64, name: &OsStr) -> FsResult<PathBuf> {
        check_name(name)?;
        if parent == ROOT && name == store::RESERVED_DIR {
            return Err(errno(libc::ENOENT));
        }
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

    pub fn statfs(&self) -> FsResult<rustix::fs::StatVfs> {
        Ok(self.store.statfs()?)
    }

    /// The mount's counters as one JSON object (`user.cachetta.stats` on the root).
    pub fn stats_json(&self) -> String {
        serde_json::Value::Object(self.stats_object()).to_string()
    }

    /// The fields of `user.cachetta.stats`. Atomics, and two locks held for a length each
    /// (the hot set's, the inode table's read lock): reading it never holds up a request.
    pub fn stats_object(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut object = serde_json::Map::new();
        for (name, value) in self.stats.counters() {
            object.insert(name.into(), value.into());
        }
        object.insert("uptime_s".into(), self.uptime().as_secs().into());
        let (lru_entries, lru_bytes) = self.lru_usage();
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
        let transport = if self.on_ring.load(Ordering::Relaxed) {
            "uring"
        } else {
            "classic"
        };
        object.insert("transport".into(), transport.into());
        let requests: serde_json::Map<_, _> = self
            .requests
            .counters()
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.into()))
            .collect();
        object.insert("requests".into(), requests.into());
        object
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
