//! A model test (proptest), in the spirit of mountpoint-s3's reftests: random sequences of
//! operations on [`CacheFs`] with a manual clock, through the mount's ways in (O_TRUNC writes,
//! temp file + rename, `rm`, `touch -d`) and behind its back (writes, deletes, corruption in the
//! backing dir), with clock jumps both ways and per-entry durations set and removed with
//! `setfattr`. After every step the filesystem must agree with a small reference model judged
//! by `policy`: the listing, each lookup, the bytes read, `user.cachetta.state` and
//! `user.cachetta.duration`.
//!
//! `PROPTEST_CASES` raises the number of cases (default 2,000); failures shrink and are kept in
//! `proptest-regressions/` as regression cases.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::*;
use crate::clock::ManualClock;
use crate::config::{Config, Overrides};
use crate::policy::{self, Timing};

const KEYS: [&str; 3] = ["a.json", "b.json", "c.json"];
const TIMING: Timing = Timing {
    duration: Duration::from_secs(60),
    stale: Duration::from_secs(30),
    stale_if_error: Duration::ZERO,
};
const ME: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 7,
};

#[derive(Debug, Clone)]
enum Body {
    Valid(u16),
    Invalid,
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Valid(n) => format!("{{\"n\":{n}}}").into_bytes(),
            Body::Invalid => b"{\"n\":".to_vec(),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// `open(O_WRONLY|O_TRUNC)`, write, close.
    Truncating(usize, Body),
    /// A temp file written and closed, then renamed onto the key.
    Renaming(usize, Body),
    Remove(usize),
    /// `touch -d '<secs> seconds ago'`.
    Touch(usize, u16),
    /// The clock jumps by this many seconds (either way).
    Jump(i16),
    /// `open(O_WRONLY|O_APPEND)` of a visible entry, a space appended, close.
    Append(usize),
    /// Behind the mount's back: a write in place with mtime now.
    External(usize, Body),
    /// Behind the mount's back: a new file renamed over the key, mtime now.
    ExternalReplace(usize, Body),
    ExternalDelete(usize),
    /// `setfattr -n user.cachetta.duration -v <secs>` on a visible entry.
    SetDuration(usize, u8),
    /// `setfattr -x user.cachetta.duration`.
    RemoveDuration(usize),
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![4 => any::<u16>().prop_map(Body::Valid), 1 => Just(Body::Invalid)]
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    prop_oneof![
        3 => (key.clone(), body()).prop_map(|(k, b)| Op::Truncating(k, b)),
        3 => (key.clone(), body()).prop_map(|(k, b)| Op::Renaming(k, b)),
        1 => key.clone().prop_map(Op::Remove),
        1 => (key.clone(), 0..200u16).prop_map(|(k, s)| Op::Touch(k, s)),
        2 => (-100..100i16).prop_map(Op::Jump),
        1 => key.clone().prop_map(Op::Append),
        2 => (key.clone(), body()).prop_map(|(k, b)| Op::External(k, b)),
        1 => (key.clone(), body()).prop_map(|(k, b)| Op::ExternalReplace(k, b)),
        1 => key.clone().prop_map(Op::ExternalDelete),
        2 => (key.clone(), 0..150u8).prop_map(|(k, s)| Op::SetDuration(k, s)),
        1 => key.prop_map(Op::RemoveDuration),
    ]
}

/// What the backing dir holds, as far as the model knows.
#[derive(Debug, Default)]
struct Model {
    files: BTreeMap<&'static str, (Vec<u8>, SystemTime)>,
    /// Per-entry durations: kept by every write through the mount and by writes in place
    /// behind its back; gone with the file (`rm`, a delete or a replace behind its back).
    durations: BTreeMap<&'static str, Duration>,
}

impl Model {
    fn timing(&self, key: &str) -> Timing {
        Timing {
            duration: self.durations.get(key).copied().unwrap_or(TIMING.duration),
            ..TIMING
        }
    }

    fn state(&self, key: &str, now: SystemTime) -> Option<&'static str> {
        let (bytes, mtime) = self.files.get(key)?;
        if serde_json::from_slice::<serde_json::Value>(bytes).is_err() {
            return None;
        }
        let state = policy::evaluate(*mtime, now, self.timing(key)).state;
        state.is_visible().then(|| state.as_str())
    }

    fn gone(&mut self, key: &str) {
        self.files.remove(key);
        self.durations.remove(key);
    }
}

struct World {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    fs: Arc<CacheFs>,
    model: Model,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_toml(
            "duration = \"60s\"\nstale = \"30s\"\n",
            Path::new("model.toml"),
            &Overrides::default(),
        )
        .unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let fs = CacheFs::new(Arc::new(config), store, clock.clone(), false);
        World {
            dir,
            clock,
            fs,
            model: Model::default(),
        }
    }

    fn backing(&self, key: &str) -> std::path::PathBuf {
        self.dir.path().join(key)
    }

    /// A lookup as the kernel makes it before touching a name.
    fn lookup(&self, key: &str) -> FsResult<Entry> {
        self.fs.lookup(ROOT, OsStr::new(key))
    }

    /// The inode of a name the model says is visible.
    fn ino(&self, key: &str) -> Result<u64, TestCaseError> {
        let entry = self.lookup(key);
        let entry = entry.map_err(|e| TestCaseError::fail(format!("lookup {key}: {e}")))?;
        Ok(entry.attr.ino)
    }

    /// Open an existing name for writing the way the kernel does, retrying once on `ESTALE`.
    fn open_for_writing(&self, key: &str, flags: i32) -> FsResult<Opened> {
        let ino = self.lookup(key)?.attr.ino;
        match self.fs.open(ME, ino, flags) {
            Err(e) if e.errno == libc::ESTALE => {
                let ino = self.lookup(key)?.attr.ino;
                self.fs.open(ME, ino, flags)
            }
            other => other,
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.clock.now();
        match op {
            Op::Truncating(k, body) => {
                let key = KEYS[*k];
                let visible = self.model.state(key, now).is_some();
                let opened = if visible {
                    let o = self
                        .open_for_writing(key, libc::O_WRONLY | libc::O_TRUNC)
                        .map_err(|e| TestCaseError::fail(format!("open {key}: {e}")))?;
                    // The kernel's follow-up truncate of O_TRUNC, from the opening process.
                    self.fs
                        .setattr(
                            ME,
                            o.ino,
                            None,
                            Changes {
                                size: Some(0),
                                ..Changes::default()
                            },
                        )
                        .map_err(|e| TestCaseError::fail(format!("truncate {key}: {e}")))?;
                    o
                } else {
                    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
                    self.fs
                        .create(ME, ROOT, OsStr::new(key), 0o644, 0o022, flags)
                        .map_err(|e| TestCaseError::fail(format!("create {key}: {e}")))?
                        .1
                };
                self.fs.write(opened.fh, 0, &body.bytes()).unwrap();
                let closed = self.fs.flush(opened.fh);
                self.fs.release(opened.fh);
                match body {
                    Body::Valid(_) => {
                        prop_assert!(closed.is_ok(), "close of {key}: {closed:?}");
                        self.model.files.insert(key, (body.bytes(), now));
                    }
                    Body::Invalid => {
                        prop_assert_eq!(closed.map_err(|e| e.errno), Err(libc::EINVAL));
                    }
                }
            }
            Op::Renaming(k, body) => {
                let key = KEYS[*k];
                let tmp = format!("{key}.tmp");
                let _ = self.lookup(&tmp);
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
                let (_, opened) = self
                    .fs
                    .create(ME, ROOT, OsStr::new(&tmp), 0o644, 0o022, flags)
                    .map_err(|e| TestCaseError::fail(format!("create {tmp}: {e}")))?;
                self.fs.write(opened.fh, 0, &body.bytes()).unwrap();
                self.fs.flush(opened.fh).unwrap();
                self.fs.release(opened.fh);
                let renamed = self
                    .fs
                    .rename(ROOT, OsStr::new(&tmp), ROOT, OsStr::new(key), 0);
                match body {
                    Body::Valid(_) => {
                        prop_assert!(renamed.is_ok(), "rename onto {key}: {renamed:?}");
                        // A renamed scratch file keeps its own mtime: the time of its write.
                        let mtime = std::fs::metadata(self.backing(key))
                            .unwrap()
                            .modified()
                            .unwrap();
                        self.model.files.insert(key, (body.bytes(), mtime));
                    }
                    Body::Invalid => {
                        prop_assert_eq!(renamed.map_err(|e| e.errno), Err(libc::EINVAL));
                        self.fs.unlink(ROOT, OsStr::new(&tmp)).unwrap();
                    }
                }
            }
            Op::Remove(k) => {
                let key = KEYS[*k];
                // `rm` looks the name up first: a hidden entry is "no such file".
                if self.lookup(key).is_ok() {
                    self.fs.unlink(ROOT, OsStr::new(key)).unwrap();
                    self.model.gone(key);
                }
            }
            Op::Touch(k, secs) => {
                let key = KEYS[*k];
                if let Ok(entry) = self.lookup(key) {
                    let at = now - Duration::from_secs(u64::from(*secs));
                    let changes = Changes {
                        mtime: Some(SetTime::At(at)),
                        ..Changes::default()
                    };
                    let _ = self.fs.setattr(ME, entry.attr.ino, None, changes);
                    if let Some(file) = self.model.files.get_mut(key) {
                        file.1 = at;
                    }
                }
            }
            Op::Jump(secs) => {
                let by = Duration::from_secs(secs.unsigned_abs().into());
                if *secs >= 0 {
                    self.clock.advance(by);
                } else {
                    self.clock.set(now - by);
                }
            }
            Op::External(k, body) => {
                let key = KEYS[*k];
                let path = self.backing(key);
                std::fs::write(&path, body.bytes()).unwrap();
                std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_modified(now)
                    .unwrap();
                self.fs.backing_changed(Path::new(key));
                self.model.files.insert(key, (body.bytes(), now));
            }
            Op::Append(k) => {
                let key = KEYS[*k];
                if self.model.state(key, now).is_some() {
                    let opened = self
                        .open_for_writing(key, libc::O_WRONLY | libc::O_APPEND)
                        .map_err(|e| TestCaseError::fail(format!("open {key}: {e}")))?;
                    self.fs.write(opened.fh, 0, b" ").unwrap();
                    let closed = self.fs.flush(opened.fh);
                    self.fs.release(opened.fh);
                    prop_assert!(closed.is_ok(), "append to {key}: {closed:?}");
                    let file = self.model.files.get_mut(key).expect("visible");
                    file.0.push(b' ');
                    file.1 = now;
                }
            }
            Op::ExternalReplace(k, body) => {
                let key = KEYS[*k];
                let tmp = self.dir.path().join(format!(".{key}.outside"));
                std::fs::write(&tmp, body.bytes()).unwrap();
                std::fs::File::options()
                    .write(true)
                    .open(&tmp)
                    .unwrap()
                    .set_modified(now)
                    .unwrap();
                std::fs::rename(&tmp, self.backing(key)).unwrap();
                self.fs.backing_changed(Path::new(key));
                self.model.durations.remove(key);
                self.model.files.insert(key, (body.bytes(), now));
            }
            Op::ExternalDelete(k) => {
                let key = KEYS[*k];
                let _ = std::fs::remove_file(self.backing(key));
                self.fs.backing_changed(Path::new(key));
                self.model.gone(key);
            }
            Op::SetDuration(k, secs) => {
                let key = KEYS[*k];
                if self.model.state(key, now).is_some() {
                    let ino = self.ino(key)?;
                    let value = format!("{secs}s");
                    let set = self.fs.setxattr(
                        ino,
                        OsStr::new("user.cachetta.duration"),
                        value.as_bytes(),
                        0,
                    );
                    prop_assert!(set.is_ok(), "setfattr {key}: {set:?}");
                    self.model
                        .durations
                        .insert(key, Duration::from_secs(u64::from(*secs)));
                }
            }
            Op::RemoveDuration(k) => {
                let key = KEYS[*k];
                if self.model.state(key, now).is_some() {
                    let ino = self.ino(key)?;
                    let removed = self
                        .fs
                        .removexattr(ino, OsStr::new("user.cachetta.duration"));
                    match self.model.durations.remove(key) {
                        Some(_) => prop_assert!(removed.is_ok(), "setfattr -x {key}: {removed:?}"),
                        None => prop_assert_eq!(removed.map_err(|e| e.errno), Err(libc::ENODATA)),
                    }
                }
            }
        }
        Ok(())
    }

    /// The filesystem and the model agree on everything a user can see.
    fn check(&self) -> Result<(), TestCaseError> {
        let now = self.clock.now();
        let fh = self.fs.opendir(ROOT).unwrap();
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
        let want: Vec<String> = KEYS
            .iter()
            .filter(|k| self.model.state(k, now).is_some())
            .map(|k| k.to_string())
            .collect();
        prop_assert_eq!(&listed, &want, "listing");
        for key in KEYS {
            let found = self.lookup(key);
            match self.model.state(key, now) {
                None => prop_assert_eq!(
                    found.map(|_| ()).map_err(|e| e.errno),
                    Err(libc::ENOENT),
                    "{} should be hidden",
                    key
                ),
                Some(state) => {
                    let entry =
                        found.map_err(|e| TestCaseError::fail(format!("lookup {key}: {e}")))?;
                    let opened = self.fs.open(ME, entry.attr.ino, libc::O_RDONLY);
                    let opened =
                        opened.map_err(|e| TestCaseError::fail(format!("open {key}: {e}")))?;
                    let bytes = self.fs.read(opened.fh, 0, 1 << 16).unwrap();
                    self.fs.release(opened.fh);
                    prop_assert_eq!(&bytes, &self.model.files[key].0, "bytes of {}", key);
                    let got = self
                        .fs
                        .getxattr(entry.attr.ino, OsStr::new("user.cachetta.state"))
                        .unwrap();
                    prop_assert_eq!(String::from_utf8_lossy(&got), state, "state of {}", key);
                    let duration = self
                        .fs
                        .getxattr(entry.attr.ino, OsStr::new("user.cachetta.duration"))
                        .unwrap();
                    let want = self.model.timing(key).duration.as_secs().to_string();
                    prop_assert_eq!(
                        String::from_utf8_lossy(&duration),
                        want,
                        "duration of {}",
                        key
                    );
                }
            }
        }
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn the_filesystem_agrees_with_its_model(ops in proptest::collection::vec(op(), 1..25)) {
        let mut world = World::new();
        world.check()?;
        for op in &ops {
            world.apply(op)?;
            world.check()?;
        }
    }
}
