//! The model test's harness: a [`CacheFs`] over a temporary backing dir with a manual clock,
//! driven the way the kernel drives it (a lookup before each use of a name, the refresh a
//! missed lookup may wait for, `O_TRUNC` as an open and a truncate from the same process),
//! each step done to the [`Model`] too, and the check that the two agree.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;

use super::model::{self, has_refresh, Body, Knob, Model, FEED, KEYS};
use super::Op;
use crate::clock::ManualClock;
use crate::config::{Config, Overrides};
use crate::fs::*;
use crate::store::{SetTime, Store};

const WRITER: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 7,
};
/// A second process writing the same key.
const OTHER_WRITER: Caller = Caller { pid: 8, ..WRITER };
/// Every reader (`cat`, the readers held open).
const READER: Caller = Caller { pid: 9, ..WRITER };
/// At most this many readers are held open at once.
const HELD_MAX: usize = 3;
/// Scratch files' mtimes come from the backing filesystem's clock, which may lag the precise
/// clock by a tick.
const COARSE_CLOCK: Duration = Duration::from_millis(50);

/// A reader held open: the bytes it opened, and the bytes written in place behind the
/// mount's back since (an open file shows those; a replace it never shows).
struct Held {
    key: &'static str,
    fh: u64,
    bytes: Vec<u8>,
    rewritten: Vec<Vec<u8>>,
}

pub(super) struct World {
    dir: tempfile::TempDir,
    upstream: tempfile::TempDir,
    clock: Arc<ManualClock>,
    fs: Arc<CacheFs>,
    feed: u64,
    model: Model,
    held: Vec<Held>,
    /// The names the kernel keeps bound to an inode, and until when by `kernel_clock`.
    dentries: HashMap<&'static str, (u64, Duration)>,
    /// The kernel's monotonic clock: only forward jumps of the wall clock move it.
    kernel_clock: Duration,
    /// Keys changed behind the mount's back (or by a refresh) since the kernel got their name:
    /// reads through that name may show the change up to 1 s late (SPEC §2).
    behind: HashSet<&'static str>,
}

fn fail(what: impl std::fmt::Display, e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!("{what}: {e}"))
}

fn errno_of<T>(r: &FsResult<T>) -> Option<i32> {
    r.as_ref().err().map(|e| e.errno)
}

impl World {
    pub(super) fn new(passthrough: bool) -> World {
        let dir = tempfile::tempdir().unwrap();
        let upstream = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(FEED)).unwrap();
        let toml = model::config_toml(upstream.path().to_str().unwrap());
        let config =
            Config::from_toml(&toml, Path::new("model.toml"), &Overrides::default()).unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let fs = CacheFs::new(Arc::new(config), store, clock.clone(), false);
        fs.enable_passthrough(passthrough);
        let feed = fs.lookup(ROOT, OsStr::new(FEED)).unwrap().attr.ino;
        World {
            dir,
            upstream,
            clock,
            fs,
            feed,
            model: Model::default(),
            held: Vec::new(),
            dentries: HashMap::new(),
            kernel_clock: Duration::ZERO,
            behind: HashSet::new(),
        }
    }

    fn backing(&self, key: &str) -> std::path::PathBuf {
        self.dir.path().join(key)
    }

    /// The directory inode and the name of a key.
    fn place(&self, key: &'static str) -> (u64, &'static OsStr) {
        match key.split_once('/') {
            Some((_, name)) => (self.feed, OsStr::new(name)),
            None => (ROOT, OsStr::new(key)),
        }
    }

    /// A lookup as the fuse adapter answers it: a miss that a refresh may fill (stale-if-error)
    /// waits for the refresh.
    fn kernel_lookup(&self, parent: u64, name: &OsStr) -> FsResult<Entry> {
        let found = self.fs.lookup(parent, name);
        if errno_of(&found) == Some(libc::ENOENT) {
            if let Some(fill) = self.fs.fill(parent, name) {
                let (tx, rx) = mpsc::channel();
                self.fs.lookup_filling(fill, move |r| {
                    let _ = tx.send(r);
                });
                return rx
                    .recv_timeout(Duration::from_secs(30))
                    .expect("a fill answers");
            }
        }
        found
    }

    /// Wait until no refresh runs: refreshes start in the background, and the model says
    /// what each one did when it ends.
    fn settle(&self) -> Result<(), TestCaseError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for key in KEYS.into_iter().filter(|k| has_refresh(k)) {
            while self.fs.refresher.is_running(Path::new(key)) {
                if Instant::now() > deadline {
                    return Err(fail(key, "refresh still running after 30 s"));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        Ok(())
    }

    /// The kernel's lookup of a key, and what the model says it must answer; on a match,
    /// the entry (if any) with its size and mtime checked.
    fn look(&mut self, key: &'static str) -> Result<Option<Entry>, TestCaseError> {
        let want = self.model.lookup(key, self.clock.now());
        let (parent, name) = self.place(key);
        let found = self.kernel_lookup(parent, name);
        self.settle()?;
        match want {
            None => {
                prop_assert_eq!(errno_of(&found), Some(libc::ENOENT), "{} is hidden", key);
                self.dentries.remove(key);
                Ok(None)
            }
            Some(_) => {
                let entry = found.map_err(|e| fail(format_args!("lookup {key}"), e))?;
                self.same_file(key, &entry.attr, "lookup")?;
                self.bounded(key, entry.ttl, "lookup")?;
                self.bounded(key, entry.name_ttl, "lookup's name")?;
                let until = self.kernel_clock + entry.name_ttl;
                self.dentries.insert(key, (entry.attr.ino, until));
                if !has_refresh(key) {
                    self.behind.remove(key);
                }
                Ok(Some(entry))
            }
        }
    }

    /// Attributes agree with the model's file: size and mtime.
    fn same_file(&self, key: &'static str, attr: &Attr, what: &str) -> Result<(), TestCaseError> {
        let file = &self.model.files[key];
        prop_assert_eq!(
            attr.stat.size,
            file.bytes.len() as u64,
            "{} size of {}",
            what,
            key
        );
        prop_assert_eq!(attr.stat.mtime, file.mtime, "{} mtime of {}", what, key);
        Ok(())
    }

    /// The kernel may keep what it was told no longer than until the entry's next change, and
    /// never over 1 s (SPEC §2).
    fn bounded(&self, key: &'static str, ttl: Duration, what: &str) -> Result<(), TestCaseError> {
        let now = self.clock.now();
        let next = self.model.judge(key, now).and_then(|j| j.next_change);
        let bound = next.unwrap_or(Duration::ZERO).min(Duration::from_secs(1));
        prop_assert!(
            ttl <= bound,
            "{} of {} may be cached {:?}, past {:?}",
            what,
            key,
            ttl,
            bound
        );
        Ok(())
    }

    /// The inode the kernel still has `key` bound to, if its name has not expired.
    fn cached(&self, key: &'static str) -> Option<u64> {
        let (ino, until) = self.dentries.get(key)?;
        (*until > self.kernel_clock).then_some(*ino)
    }

    /// `cat` through the name the kernel kept (no lookup): what the model holds now, unless
    /// the key changed behind the mount's back since, or can be refreshed. Read-your-writes
    /// (SPEC §3) rests on this: the kernel keeps a name being written bound to its inode.
    fn cat_cached(&mut self, key: &'static str) -> Result<(), TestCaseError> {
        let Some(ino) = self.cached(key) else {
            return Ok(());
        };
        let now = self.clock.now();
        let strict = !self.behind.contains(key) && !has_refresh(key);
        let visible = self.model.lookup(key, now).is_some();
        let opened = self.fs.open(READER, ino, libc::O_RDONLY);
        self.model.on_read(key, now);
        self.settle()?;
        if !strict {
            if let Ok(opened) = opened {
                self.fs.release(opened.fh);
            }
            return Ok(());
        }
        if !visible {
            prop_assert_eq!(
                errno_of(&opened),
                Some(libc::ENOENT),
                "{} is hidden, through the name the kernel kept",
                key
            );
            return Ok(());
        }
        let opened = opened.map_err(|e| fail(format_args!("open {key} as kept"), e))?;
        let got = self.fs.read(opened.fh, 0, 1 << 16);
        self.fs.release(opened.fh);
        let got = got.map_err(|e| fail(format_args!("read {key} as kept"), e))?;
        let want = &self.model.files[key].bytes;
        prop_assert!(
            &got == want,
            "{} reads {:?} through the name the kernel kept, not {:?}",
            key,
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want)
        );
        Ok(())
    }

    /// Open an existing name for writing the way the kernel does, retrying once on `ESTALE`
    /// after a new lookup.
    fn open_for_writing(
        &mut self,
        caller: Caller,
        key: &'static str,
        ino: u64,
        flags: i32,
    ) -> Result<Opened, TestCaseError> {
        let opened = match self.fs.open(caller, ino, flags) {
            Err(e) if e.errno == libc::ESTALE => match self.look(key)? {
                Some(entry) => self.fs.open(caller, entry.attr.ino, flags),
                None => Err(e),
            },
            other => other,
        };
        opened.map_err(|e| fail(format_args!("open {key} for writing"), e))
    }

    /// `open(O_WRONLY|O_TRUNC)` of a visible entry and the kernel's follow-up truncate, from
    /// the opening process.
    fn open_truncating(
        &mut self,
        caller: Caller,
        key: &'static str,
        ino: u64,
    ) -> Result<Opened, TestCaseError> {
        let opened = self.open_for_writing(caller, key, ino, libc::O_WRONLY | libc::O_TRUNC)?;
        let truncate = Changes {
            size: Some(0),
            ..Changes::default()
        };
        self.fs
            .setattr(caller, opened.ino, None, truncate)
            .map_err(|e| fail(format_args!("truncate {key}"), e))?;
        Ok(opened)
    }

    /// Open a looked-up entry for reading (a stale one starts its refresh, which is let end)
    /// and return the handle with the bytes it must read.
    fn open_for_reading(
        &mut self,
        key: &'static str,
        ino: u64,
    ) -> Result<(u64, Vec<u8>), TestCaseError> {
        let now = self.clock.now();
        let bytes = self.model.files[key].bytes.clone();
        let opened = self.fs.open(READER, ino, libc::O_RDONLY);
        let opened = opened.map_err(|e| fail(format_args!("open {key}"), e))?;
        self.model.on_read(key, now);
        self.settle()?;
        Ok((opened.fh, bytes))
    }

    /// Open `ino` (the entry `key`) for reading and read it whole: the model's bytes.
    fn read_whole(&mut self, key: &'static str, ino: u64) -> Result<(), TestCaseError> {
        let (fh, want) = self.open_for_reading(key, ino)?;
        let got = self.fs.read(fh, 0, 1 << 16);
        self.fs.release(fh);
        let got = got.map_err(|e| fail(format_args!("read {key}"), e))?;
        prop_assert!(
            got == want,
            "{} reads {:?}, not {:?}",
            key,
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
        Ok(())
    }

    /// `cat`: a lookup, and if the model says there is an entry, its bytes read whole.
    fn cat(&mut self, key: &'static str) -> Result<(), TestCaseError> {
        let Some(entry) = self.look(key)? else {
            return Ok(());
        };
        self.read_whole(key, entry.attr.ino)
    }

    /// The close of a writer, as the model wants it: published if valid, else `EINVAL`.
    fn close(&mut self, key: &'static str, fh: u64, body: &Body) -> Result<(), TestCaseError> {
        let closed = self.fs.flush(fh);
        self.fs.release(fh);
        match body {
            Body::Valid(_) => {
                prop_assert!(closed.is_ok(), "close of {}: {:?}", key, closed);
                let now = self.clock.now();
                self.model.write(key, body.bytes(), now);
            }
            Body::Invalid => prop_assert_eq!(errno_of(&closed), Some(libc::EINVAL)),
        }
        Ok(())
    }

    pub(super) fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.clock.now();
        match op {
            Op::Truncating(k, body) => {
                let key = KEYS[*k];
                let opened = match self.look(key)? {
                    Some(entry) => self.open_truncating(WRITER, key, entry.attr.ino)?,
                    None => {
                        let (parent, name) = self.place(key);
                        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
                        let created = self.fs.create(WRITER, parent, name, 0o644, 0o022, flags);
                        created
                            .map_err(|e| fail(format_args!("create {key}"), e))?
                            .1
                    }
                };
                self.fs.write(opened.fh, 0, &body.bytes()).unwrap();
                self.close(key, opened.fh, body)?;
            }
            Op::TwoWriters(k, first, second, second_closes_first) => {
                let key = KEYS[*k];
                let Some(entry) = self.look(key)? else {
                    return Ok(());
                };
                let a = self.open_truncating(WRITER, key, entry.attr.ino)?;
                let Some(entry) = self.look(key)? else {
                    return Err(fail(key, "hidden while its first writer writes"));
                };
                let b = self.open_truncating(OTHER_WRITER, key, entry.attr.ino)?;
                self.fs.write(a.fh, 0, &first.bytes()).unwrap();
                self.fs.write(b.fh, 0, &second.bytes()).unwrap();
                let mut closes = [(a.fh, first), (b.fh, second)];
                if *second_closes_first {
                    closes.reverse();
                }
                let [(fh, body), (last_fh, last_body)] = closes;
                self.close(key, fh, body)?;
                self.cat(key)?;
                self.close(key, last_fh, last_body)?;
            }
            Op::Renaming(k, body, set_time) => {
                let key = KEYS[*k];
                // The kernel moves the temp file's name onto the key's.
                self.dentries.remove(key);
                let (parent, name) = self.place(key);
                let tmp = format!("{}.tmp", name.to_str().unwrap());
                let tmp = OsStr::new(&tmp);
                let _ = self.kernel_lookup(parent, tmp);
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
                let written_after = SystemTime::now();
                let (_, opened) = self
                    .fs
                    .create(WRITER, parent, tmp, 0o644, 0o022, flags)
                    .map_err(|e| fail("create the temp file", e))?;
                self.fs.write(opened.fh, 0, &body.bytes()).unwrap();
                let written_before = SystemTime::now();
                let set_to = set_time.map(|secs| now - Duration::from_secs(secs.into()));
                if let Some(at) = set_to {
                    let times = Changes {
                        mtime: Some(SetTime::At(at)),
                        ..Changes::default()
                    };
                    let set = self.fs.setattr(WRITER, opened.ino, None, times);
                    let set = set.map_err(|e| fail("futimens of the temp file", e))?;
                    prop_assert_eq!(set.attr.stat.mtime, at, "futimens answers the time it set");
                }
                self.fs.flush(opened.fh).unwrap();
                self.fs.release(opened.fh);
                // The kernel looks the target up before it renames.
                self.look(key)?;
                let renamed = self.fs.rename(parent, tmp, parent, name, 0);
                match body {
                    Body::Valid(_) => {
                        prop_assert!(renamed.is_ok(), "rename onto {}: {:?}", key, renamed);
                        // A renamed scratch file keeps its own mtime: the time set on it, or
                        // that of its last write, which only the backing file can tell.
                        let mtime = match set_to {
                            Some(at) => at,
                            None => {
                                let meta = std::fs::metadata(self.backing(key)).unwrap();
                                let mtime = meta.modified().unwrap();
                                prop_assert!(
                                    mtime + COARSE_CLOCK >= written_after
                                        && mtime <= written_before,
                                    "the temp file's mtime is the time of its write"
                                );
                                mtime
                            }
                        };
                        self.model.write(key, body.bytes(), mtime);
                    }
                    Body::Invalid => {
                        prop_assert_eq!(errno_of(&renamed), Some(libc::EINVAL));
                        self.fs.unlink(parent, tmp).unwrap();
                    }
                }
            }
            Op::CachedWrite(k, body) => {
                let key = KEYS[*k];
                let ino = match self.cached(key) {
                    Some(ino) => ino,
                    None => match self.look(key)? {
                        Some(entry) => entry.attr.ino,
                        None => return Ok(()),
                    },
                };
                let opened = self.open_truncating(WRITER, key, ino)?;
                self.fs.write(opened.fh, 0, &body.bytes()).unwrap();
                self.close(key, opened.fh, body)?;
                self.cat_cached(key)?;
            }
            Op::CachedCat(k) => self.cat_cached(KEYS[*k])?,
            Op::Remove(k) => {
                let key = KEYS[*k];
                self.dentries.remove(key);
                // `rm` looks the name up first: a hidden entry is "no such file".
                if self.look(key)?.is_some() {
                    let (parent, name) = self.place(key);
                    let removed = self.fs.unlink(parent, name);
                    removed.map_err(|e| fail(format_args!("rm {key}"), e))?;
                    self.model.removed(key);
                }
            }
            Op::Touch(k, secs, by_fd) => {
                let key = KEYS[*k];
                let Some(entry) = self.look(key)? else {
                    return Ok(());
                };
                let ago = Duration::from_secs(secs.unsigned_abs().into());
                let at = if *secs >= 0 { now - ago } else { now + ago };
                let changes = Changes {
                    mtime: Some(SetTime::At(at)),
                    ..Changes::default()
                };
                if *by_fd {
                    // GNU touch: open(O_WRONLY|O_CREAT), futimens, close (no write: nothing
                    // is published, the times are set on the entry as it is).
                    let opened =
                        self.open_for_writing(WRITER, key, entry.attr.ino, libc::O_WRONLY)?;
                    // futimens reaches FUSE as a setattr without a file handle (the kernel's
                    // vfs_utimes): the filesystem knows the writer by its pid.
                    let touched = self.fs.setattr(WRITER, opened.ino, None, changes);
                    self.model.files.get_mut(key).expect("looked up").mtime = at;
                    let closed = self.fs.flush(opened.fh);
                    self.fs.release(opened.fh);
                    let touched = touched.map_err(|e| fail(format_args!("futimens {key}"), e))?;
                    self.same_file(key, &touched.attr, "futimens")?;
                    prop_assert!(
                        closed.is_ok(),
                        "close after futimens of {}: {:?}",
                        key,
                        closed
                    );
                } else {
                    // utimensat by path (`os.utime`, `touch -h`): no open file.
                    let touched = self.fs.setattr(WRITER, entry.attr.ino, None, changes);
                    self.model.files.get_mut(key).expect("looked up").mtime = at;
                    let touched = touched.map_err(|e| fail(format_args!("utimensat {key}"), e))?;
                    self.same_file(key, &touched.attr, "utimensat")?;
                }
            }
            Op::Jump(secs) => {
                let by = Duration::from_secs(secs.unsigned_abs().into());
                if *secs >= 0 {
                    self.clock.advance(by);
                    self.kernel_clock += by;
                } else {
                    self.clock.set(now - by);
                }
            }
            Op::Append(k) => {
                let key = KEYS[*k];
                if let Some(entry) = self.look(key)? {
                    let flags = libc::O_WRONLY | libc::O_APPEND;
                    let opened = self.open_for_writing(WRITER, key, entry.attr.ino, flags)?;
                    self.fs.write(opened.fh, 0, b" ").unwrap();
                    let closed = self.fs.flush(opened.fh);
                    self.fs.release(opened.fh);
                    prop_assert!(closed.is_ok(), "append to {}: {:?}", key, closed);
                    let mut bytes = self.model.files[key].bytes.clone();
                    bytes.push(b' ');
                    self.model.write(key, bytes, now);
                }
            }
            Op::External(k, body) => {
                let key = KEYS[*k];
                self.behind.insert(key);
                let path = self.backing(key);
                std::fs::write(&path, body.bytes()).unwrap();
                let file = std::fs::File::options().write(true).open(&path).unwrap();
                file.set_modified(now).unwrap();
                self.fs.backing_changed(Path::new(key));
                self.model.write(key, body.bytes(), now);
                for held in self.held.iter_mut().filter(|h| h.key == key) {
                    held.rewritten.push(body.bytes());
                }
            }
            Op::ExternalReplace(k, body) => {
                let key = KEYS[*k];
                self.behind.insert(key);
                let (_, name) = self.place(key);
                let tmp = self
                    .backing(key)
                    .with_file_name(format!(".{}.outside", name.to_str().unwrap()));
                std::fs::write(&tmp, body.bytes()).unwrap();
                let file = std::fs::File::options().write(true).open(&tmp).unwrap();
                file.set_modified(now).unwrap();
                std::fs::rename(&tmp, self.backing(key)).unwrap();
                self.fs.backing_changed(Path::new(key));
                self.model.replaced_behind(key, body.bytes(), now);
            }
            Op::ExternalDelete(k) => {
                let key = KEYS[*k];
                self.behind.insert(key);
                let _ = std::fs::remove_file(self.backing(key));
                self.fs.backing_changed(Path::new(key));
                self.model.deleted_behind(key);
            }
            Op::SetPolicy(k, knob, secs) => {
                let key = KEYS[*k];
                let Some(entry) = self.look(key)? else {
                    return Ok(());
                };
                // Only on an entry `stat` shows (the attributes of one a lookup served while its
                // refresh runs again are not specified).
                if self.model.listed(key, now).is_some() {
                    let value = format!("{secs}s");
                    let name = OsStr::new(knob.xattr());
                    let set = self.fs.setxattr(entry.attr.ino, name, value.as_bytes(), 0);
                    prop_assert!(set.is_ok(), "setfattr {} on {}: {:?}", value, key, set);
                    let value = Duration::from_secs((*secs).into());
                    self.model.overrides.insert((key, *knob), value);
                }
            }
            Op::RemovePolicy(k, knob) => {
                let key = KEYS[*k];
                let Some(entry) = self.look(key)? else {
                    return Ok(());
                };
                if self.model.listed(key, now).is_some() {
                    let name = OsStr::new(knob.xattr());
                    let removed = self.fs.removexattr(entry.attr.ino, name);
                    match self.model.overrides.remove(&(key, *knob)) {
                        Some(_) => prop_assert!(removed.is_ok(), "setfattr -x {key}: {removed:?}"),
                        None => prop_assert_eq!(errno_of(&removed), Some(libc::ENODATA)),
                    }
                }
            }
            Op::Upstream(f, body) => {
                let key = KEYS.into_iter().filter(|k| has_refresh(k)).nth(*f).unwrap();
                let (_, name) = self.place(key);
                let path = self.upstream.path().join(name);
                match body {
                    Some(body) => {
                        std::fs::write(path, body.bytes()).unwrap();
                        self.model.upstream.insert(key, body.clone());
                    }
                    None => {
                        let _ = std::fs::remove_file(path);
                        self.model.upstream.remove(key);
                    }
                }
            }
            Op::Hold(k) => {
                let key = KEYS[*k];
                if self.held.len() < HELD_MAX {
                    if let Some(entry) = self.look(key)? {
                        let (fh, bytes) = self.open_for_reading(key, entry.attr.ino)?;
                        let rewritten = Vec::new();
                        let held = Held {
                            key,
                            fh,
                            bytes,
                            rewritten,
                        };
                        self.held.push(held);
                    }
                }
            }
            Op::Release(i) => {
                if !self.held.is_empty() {
                    let held = self.held.remove(i % self.held.len());
                    self.fs.release(held.fh);
                }
            }
        }
        Ok(())
    }

    /// The names a directory lists.
    fn listing(&self, ino: u64) -> Vec<String> {
        let fh = self.fs.opendir(ino).unwrap();
        let mut listed = Vec::new();
        self.fs
            .readdir(fh, 0, |_, _, _, name| {
                listed.push(name.to_string_lossy().into_owned());
                false
            })
            .unwrap();
        self.fs.releasedir(fh);
        listed.retain(|n| n != "." && n != "..");
        listed.sort();
        listed
    }

    /// The filesystem and the model agree on everything a user can see.
    pub(super) fn check(&mut self) -> Result<(), TestCaseError> {
        let now = self.clock.now();
        for (ino, dir) in [(ROOT, None), (self.feed, Some(FEED))] {
            let mut want: Vec<String> = KEYS
                .into_iter()
                .filter(|k| self.model.listed(k, now).is_some())
                .filter_map(|k| match (k.split_once('/'), dir) {
                    (None, None) => Some(k.to_string()),
                    (Some((d, name)), Some(dir)) if d == dir => Some(name.to_string()),
                    _ => None,
                })
                .collect();
            if dir.is_none() {
                want.push(FEED.to_string());
            }
            want.sort();
            prop_assert_eq!(
                self.listing(ino),
                want,
                "listing of {:?}",
                dir.unwrap_or("/")
            );
        }
        for key in KEYS {
            let Some(entry) = self.look(key)? else {
                continue;
            };
            let ino = entry.attr.ino;
            let attr = self.fs.getattr(ino, None);
            match self.model.listed(key, self.clock.now()) {
                // A lookup served it, but stat does not (docs/cache-control.md).
                None => prop_assert_eq!(errno_of(&attr), Some(libc::ENOENT), "stat {}", key),
                Some(state) => {
                    let attr = attr.map_err(|e| fail(format_args!("stat {key}"), e))?;
                    self.same_file(key, &attr.attr, "getattr")?;
                    self.bounded(key, attr.ttl, "getattr")?;
                    let got = self.fs.getxattr(ino, OsStr::new("user.cachetta.state"));
                    let got = got.map_err(|e| fail(format_args!("state of {key}"), e))?;
                    prop_assert_eq!(String::from_utf8_lossy(&got), state, "state of {}", key);
                    for knob in Knob::ALL {
                        let got = self.fs.getxattr(ino, OsStr::new(knob.xattr()));
                        let got = got.map_err(|e| fail(knob.xattr(), e))?;
                        let want = self.model.effective(key, knob).as_secs().to_string();
                        prop_assert_eq!(
                            String::from_utf8_lossy(&got),
                            want,
                            "{:?} of {}",
                            knob,
                            key
                        );
                    }
                }
            }
            self.read_whole(key, ino)?;
        }
        for held in &self.held {
            let got = self.fs.read(held.fh, 0, 1 << 16);
            let got = got.map_err(|e| fail(format_args!("held reader of {}", held.key), e))?;
            let whole = got == held.bytes || held.rewritten.contains(&got);
            prop_assert!(
                whole,
                "a reader held open on {} reads {:?}, opened on {:?}",
                held.key,
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&held.bytes)
            );
        }
        Ok(())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for held in self.held.drain(..) {
            self.fs.release(held.fh);
        }
    }
}
