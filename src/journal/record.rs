//! One journal record: what a mount did to one entry (or knows of one content version), as one
//! line of JSON. The wire shape, its version check and the checks on what a shared file may
//! claim (a key is a plain relative entry path) live here; reading and writing lines are in
//! the parent module.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::entry_policy::EntryPolicy;
use crate::store::{self, DirChange, DirStamp, Stat};

/// The record format this build writes and reads. A record with a larger `v` is skipped (with
/// one log line per reader): a newer cachetta on another machine may know more.
pub const VERSION: u32 = 1;

/// What a record says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// New content (or new attributes) at `key`: the version is what is there now.
    Put,
    /// `key` was removed (or renamed away).
    Del,
    /// A mount judged the content version at `key` (JSON validity, policy) without changing
    /// it: for the validity work (SPEC §13, "a fresh mount does not read again").
    Judged,
    /// The writer lost records (its queue overflowed, or the journal could not be written for
    /// a while): readers do one full walk.
    Gap,
    /// The first line of a compacted journal; `bytes` is the size of what follows it.
    Compacted,
    /// A change in the directory `key` (the root is `""`) that is no entry's (a scratch file
    /// created or removed, a staging file renamed away): only its `dir` times matter.
    Dir,
}

/// Which content version of a file a record is about: inode, size, mtime and ctime to the
/// nanosecond. Not `st_dev`, which differs between the machines sharing a backing dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileVersion {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl FileVersion {
    /// The store's [`Version`](crate::store::Version) of this content as a file on device
    /// `dev` (the journal leaves the device out: it differs between machines).
    pub fn on_device(&self, dev: u64) -> crate::store::Version {
        crate::store::Version {
            dev,
            ino: self.ino,
            size: self.size,
            mtime: crate::store::system_time_from_nanos(self.mtime_ns),
            ctime: crate::store::system_time_from_nanos(self.ctime_ns),
        }
    }

    pub fn of(stat: &Stat) -> FileVersion {
        FileVersion {
            ino: stat.ino,
            size: stat.size,
            mtime_ns: unix_nanos(stat.mtime),
            ctime_ns: unix_nanos(stat.ctime),
        }
    }

    /// Whether `stat` is this very version (ctime included: any write or rename changes it).
    pub fn matches(&self, stat: &Stat) -> bool {
        *self == FileVersion::of(stat)
    }
}

/// How the change a record tells of moved the times of the key's directory: its inode, and
/// (mtime, ctime) in nanoseconds since the epoch just before and just after the change (a list,
/// so that a record may one day tell of several). A reader that saw the directory at one
/// change's "before" and sees it at the last one's "after", each "after" being the next
/// "before", knows that these were all that happened there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DirTimes {
    pub ino: u64,
    pub moves: Vec<[[i64; 2]; 2]>,
}

impl DirTimes {
    /// The changes of one directory (those of another, by inode, are left out); `None` if
    /// there are none.
    pub fn of(changes: &[DirChange]) -> Option<DirTimes> {
        let ino = changes.first()?.before.ino;
        let moves = changes
            .iter()
            .filter(|c| c.before.ino == ino && c.after.ino == ino)
            .map(|c| [stamp_nanos(&c.before), stamp_nanos(&c.after)])
            .collect();
        Some(DirTimes { ino, moves })
    }
}

/// A directory's (mtime, ctime) in nanoseconds, as [`DirTimes`] has them.
pub fn stamp_nanos(stamp: &DirStamp) -> [i64; 2] {
    [unix_nanos(stamp.mtime), unix_nanos(stamp.ctime)]
}

/// Nanoseconds since the epoch, saturating (beyond ±292 years only a hostile mtime goes, and
/// ctime, which nobody can set, still tells such versions apart).
fn unix_nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

/// One record. See the module docs of `crate::journal` for the line format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The format version, [`VERSION`] for every record this build writes.
    pub v: u32,
    /// The mount (or `cachetta gc` run) that wrote it: `host:pid:random`.
    pub writer: String,
    pub op: Op,
    /// The entry, relative to the backing root; empty for [`Op::Gap`] and [`Op::Compacted`].
    pub key: PathBuf,
    /// The content version the record is about ([`Op::Put`], [`Op::Judged`]).
    pub version: Option<FileVersion>,
    /// Whether that version is valid JSON, when the writer knew.
    pub valid: Option<bool>,
    /// That version's per-entry policy attributes, when the writer knew (an entry without
    /// overrides is `Some(EntryPolicy::default())`).
    pub policy: Option<EntryPolicy>,
    /// [`Op::Compacted`]: the size of the records after the first line.
    pub bytes: Option<u64>,
    /// The times of the key's directory around the change ([`Op::Put`], [`Op::Del`]), when
    /// the writer had them: a reader whose view of the directory they explain need not list
    /// it again.
    pub dir: Option<DirTimes>,
}

impl Record {
    /// A record of `op` at `key` by `writer`, with nothing else known yet.
    pub fn new(writer: &str, op: Op, key: &Path) -> Record {
        Record {
            v: VERSION,
            writer: writer.to_owned(),
            op,
            key: key.to_path_buf(),
            version: None,
            valid: None,
            policy: None,
            bytes: None,
            dir: None,
        }
    }

    /// New content at `key`, with what the writer knows of it.
    pub fn put(writer: &str, key: &Path, stat: &Stat) -> Record {
        Record {
            version: Some(FileVersion::of(stat)),
            ..Record::new(writer, Op::Put, key)
        }
    }

    pub fn del(writer: &str, key: &Path) -> Record {
        Record::new(writer, Op::Del, key)
    }

    /// A judgement of the version `stat` at `key`: valid JSON or not, and its policy.
    pub fn judged(
        writer: &str,
        key: &Path,
        stat: &Stat,
        valid: bool,
        policy: Option<EntryPolicy>,
    ) -> Record {
        Record {
            version: Some(FileVersion::of(stat)),
            valid: Some(valid),
            policy,
            ..Record::new(writer, Op::Judged, key)
        }
    }

    /// Whether this record names an entry whose listing may have changed (put or del).
    pub fn changes_entry(&self) -> bool {
        matches!(self.op, Op::Put | Op::Del)
    }

    /// The record as one line of JSON, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(&Wire::from(self)).expect("a record always serializes");
        line.push(b'\n');
        line
    }

    /// Parse one line (without its newline).
    pub fn from_line(line: &[u8]) -> Result<Record, Unreadable> {
        match serde_json::from_slice::<Wire>(line) {
            Ok(wire) if wire.v > VERSION => Err(Unreadable::Future(wire.v)),
            Ok(wire) => wire.into_record().ok_or(Unreadable::Garbage),
            // A newer format may change more than fields; its `v` still says so.
            Err(_) => match serde_json::from_slice::<VersionOnly>(line) {
                Ok(VersionOnly { v }) if v > VERSION => Err(Unreadable::Future(v)),
                _ => Err(Unreadable::Garbage),
            },
        }
    }
}

/// Why a line is not a record this build can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// Not a record: a torn line (its writer was killed mid-write), or garbage.
    Garbage,
    /// A record of a later format version.
    Future(u32),
}

#[derive(Deserialize)]
struct VersionOnly {
    v: u32,
}

/// A key as JSON: a string when it is UTF-8, else the array of its bytes (names are bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum WireKey {
    #[default]
    None,
    Text(String),
    Bytes(Vec<u8>),
}

impl WireKey {
    fn is_none(&self) -> bool {
        *self == WireKey::None
    }
}

/// A policy as JSON: each override in whole nanoseconds, absent where the rule applies.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct WirePolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duration_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stale_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stale_if_error_ns: Option<u64>,
}

fn nanos(d: Option<Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The line as written: flat, every field optional but `v` and `op`.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    v: u32,
    #[serde(default)]
    writer: String,
    op: Op,
    #[serde(default, skip_serializing_if = "WireKey::is_none")]
    key: WireKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ino: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtime_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ctime_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    valid: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    policy: Option<WirePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dir: Option<DirTimes>,
}

impl From<&Record> for Wire {
    fn from(r: &Record) -> Wire {
        let raw = r.key.as_os_str().as_bytes();
        let key = match std::str::from_utf8(raw) {
            _ if raw.is_empty() => WireKey::None,
            Ok(text) => WireKey::Text(text.to_owned()),
            Err(_) => WireKey::Bytes(raw.to_vec()),
        };
        Wire {
            v: r.v,
            writer: r.writer.clone(),
            op: r.op,
            key,
            ino: r.version.map(|v| v.ino),
            size: r.version.map(|v| v.size),
            mtime_ns: r.version.map(|v| v.mtime_ns),
            ctime_ns: r.version.map(|v| v.ctime_ns),
            valid: r.valid,
            policy: r.policy.map(|p| WirePolicy {
                duration_ns: nanos(p.duration),
                stale_ns: nanos(p.stale),
                stale_if_error_ns: nanos(p.stale_if_error),
            }),
            bytes: r.bytes,
            dir: r.dir.clone(),
        }
    }
}

impl Wire {
    /// The record, if it says something this build can act on safely: entry ops name an entry
    /// (a relative path of plain components, ending in `.json`, outside `.cachetta/`), and
    /// versions are whole.
    fn into_record(self) -> Option<Record> {
        let key = match self.key {
            WireKey::None => PathBuf::new(),
            WireKey::Text(text) => PathBuf::from(text),
            WireKey::Bytes(bytes) => PathBuf::from(OsStr::from_bytes(&bytes)),
        };
        let version = match (self.ino, self.size, self.mtime_ns, self.ctime_ns) {
            (Some(ino), Some(size), Some(mtime_ns), Some(ctime_ns)) => Some(FileVersion {
                ino,
                size,
                mtime_ns,
                ctime_ns,
            }),
            (None, None, None, None) => None,
            _ => return None,
        };
        let about_entry = matches!(self.op, Op::Put | Op::Del | Op::Judged);
        if about_entry && !is_entry_key(&key) {
            return None;
        }
        if self.op == Op::Dir && !is_dir_key(&key) {
            return None;
        }
        if matches!(self.op, Op::Put | Op::Judged) && version.is_none() {
            return None;
        }
        let duration = |ns: Option<u64>| ns.map(Duration::from_nanos);
        Some(Record {
            v: self.v,
            writer: self.writer,
            op: self.op,
            key,
            version,
            valid: self.valid,
            policy: self.policy.map(|p| EntryPolicy {
                duration: duration(p.duration_ns),
                stale: duration(p.stale_ns),
                stale_if_error: duration(p.stale_if_error_ns),
            }),
            bytes: self.bytes,
            dir: self.dir,
        })
    }
}

/// Whether `key` is a directory's path below the root (the root is `""`), outside
/// `.cachetta/`.
pub fn is_dir_key(key: &Path) -> bool {
    key.components().all(|c| matches!(c, Component::Normal(_))) && !store::is_reserved(key)
}

/// Whether `key` is an entry's path: relative, plain components only, an entry name at the
/// end, not in `.cachetta/`. The journal is only ever written with such keys.
pub fn is_entry_key(key: &Path) -> bool {
    let plain = key.components().all(|c| matches!(c, Component::Normal(_)));
    plain && key.file_name().is_some_and(store::is_entry_name) && !store::is_reserved(key)
}
