//! The change journal (SPEC §13, "what watching costs grows with changes, not entries"): the
//! mounts of one backing dir announce their own publishes and removals to each other in
//! `.cachetta/journal` at the backing root, so a `--watch poll` mount reads what changed
//! instead of `stat`-ing every entry. Knows nothing of FUSE or of the watcher.
//!
//! # The file
//! One record per line, JSON (serde_json), appended and never rewritten in place:
//!
//! ```text
//! {"v":1,"writer":"web1:4242:9f3a0c17","op":"dir","key":"weather","dir":{"ino":77,"moves":[[[T0,T0],[T1,T1]]]}}
//! {"v":1,"writer":"web1:4242:9f3a0c17","op":"put","key":"weather/paris.json","ino":1311,"size":812,"mtime_ns":1765430400123456789,"ctime_ns":1765430400123456789,"valid":true,"policy":{"duration_ns":600000000000},"dir":{"ino":77,"moves":[[[T1,T1],[T2,T2]]]}}
//! {"v":1,"writer":"web1:4242:9f3a0c17","op":"del","key":"weather/oslo.json","dir":{"ino":77,"moves":[[[T2,T2],[T3,T3]]]}}
//! {"v":1,"writer":"web2:777:01b2c3d4","op":"judged","key":"a.json","ino":88,"size":2,"mtime_ns":..,"ctime_ns":..,"valid":false}
//! {"v":1,"writer":"web2:777:01b2c3d4","op":"gap"}
//! ```
//!
//! - `v` is the format version ([`VERSION`]); a reader skips records of a later one.
//! - `writer` is one mount's id (`host:pid:random`, [`writer_id`]): a mount does not report
//!   its own records (it made those changes), but follows its directories with them.
//! - `op` is [`Op`]: `put` (new content or attributes at `key`), `del`, `judged` (validity of a
//!   version established without changing it), `dir` (a change in the directory `key` that is
//!   no entry's: a scratch file created or removed), `gap` (the writer lost records: readers
//!   do a full walk) and `compacted` (first line of a compacted journal).
//! - `key` is the entry's path below the backing root, a string, or the array of its bytes
//!   when the name is not UTF-8.
//! - `ino`, `size`, `mtime_ns`, `ctime_ns` name the content version exactly ([`FileVersion`];
//!   never `st_dev`, which differs between machines); `valid` and `policy` (each per-entry
//!   override in nanoseconds, absent where the rule applies) are there when the writer knew.
//! - `dir` ([`DirTimes`]) is how the change moved its directory's times: the directory's inode
//!   and its (mtime, ctime) in nanoseconds just before and just after (a publish is two
//!   records: a `dir` when the staging file is created, the `put` when it is renamed onto the
//!   entry). A reader that saw the directory at one change's "before" and sees it at the last
//!   one's "after", each "after" the next one's "before", knows that nothing else happened
//!   there, and need not list it.
//!
//! Absent fields mean "not known"; unknown fields are ignored.
//!
//! # Writing
//! [`Journal::append`] takes an exclusive `flock` on the journal (it excludes across NFS and
//! GlusterFS clients), makes sure the file ends with a newline (a torn record left by a writer
//! killed mid-write is then a line of its own, which readers skip), writes the new lines with
//! one `write`, and unlocks. Past [`MAX_BYTES`] (or twice the size of the last compaction), the
//! appender that notices compacts it under that lock: the latest records per key, deleted keys
//! dropped, into `journal.new`, renamed over `journal`. [`Appender`] does all this on a thread
//! of its own, fed by the [`Store`]'s observer, so no request ever waits for the journal.
//!
//! # Reading
//! [`JournalReader`] keeps the journal's inode and an offset: each [`JournalReader::poll`]
//! `stat`s the journal and reads only the complete lines past the offset. A journal replaced
//! (compacted), truncated, removed or unreadable, or a `gap` record, is a
//! [`Poll::Reset`] or [`Poll::Unavailable`]: the watcher then does one full walk (or walks at
//! every interval while it stays unavailable).
//!
//! # For the validity of content versions (SPEC §13, "a fresh mount does not read again")
//! - [`load_all`]`(&Store) -> io::Result<Vec<Record>>`: every record at start, own ones too:
//!   what any mount published (`put` with `valid: Some(true)` and its `policy`) or judged
//!   (`judged`) of which [`FileVersion`]; [`FileVersion::matches`] tells whether a `stat` is
//!   that very version.
//! - `crate::watch::Change::Record(&Record)`: each other mount's `put`, `del` or `judged`
//!   record as the poll watcher reads it (before the `Change::Entry` of its key).
//! - [`Appender::record`]`(Record::judged(writer, key, &stat, valid, policy))` tells the other
//!   mounts what this one judged by reading; the mount's appender is the store's observer
//!   (`mount.rs` keeps it), and [`Appender::writer`] is its writer id. A publish's `put` already
//!   carries `valid` and `policy` when the publisher set `Staging::judged`.
//!
//! The journal is only ever reached through the store's `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)`; a journal that is a symlink, a directory or anything but a regular
//! file is refused (one log line, and full walks).

mod appender;
mod reader;
mod record;

#[cfg(test)]
mod tests;

pub use appender::{observe_store, Appender};
pub use reader::{JournalReader, Poll};
pub use record::{
    is_dir_key, is_entry_key, stamp_nanos, DirTimes, FileVersion, Op, Record, Unreadable, VERSION,
};

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, Mode, OFlags};

use crate::store::{Kind, Store, RESERVED_DIR};

/// The journal, relative to the backing root.
pub fn journal_path() -> PathBuf {
    Path::new(RESERVED_DIR).join("journal")
}

/// Where a compaction writes the new journal before renaming it over the old one.
fn compacting_path() -> PathBuf {
    Path::new(RESERVED_DIR).join("journal.new")
}

/// A journal larger than this (and than twice its size after the last compaction) is
/// compacted by the next appender. About 20,000 records.
pub const MAX_BYTES: u64 = 4 << 20;

/// The most a reader takes in one poll; more than that unread means it fell behind, and a
/// full walk is cheaper than reading it.
pub const MAX_READ: u64 = 64 << 20;

/// This process's writer id: `host:pid:random`, unique among the mounts of a backing dir.
pub fn writer_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() { "host".into() } else { host };
    // RandomState is seeded from the OS's random source, once per process.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        hasher.finish() as u32
    )
}

/// Why the journal cannot be used, with the path, for the one log line that says so.
fn refused(what: &str) -> io::Error {
    io::Error::other(format!(
        "{} {what}, not a journal; leaving it alone",
        journal_path().display()
    ))
}

/// The refusal of a journal path that holds something other than a regular file.
fn not_a_journal(kind: Kind) -> io::Error {
    match kind {
        Kind::Dir => refused("is a directory"),
        _ => refused("is a symlink or a special file"),
    }
}

/// Check what is at the journal's path: a regular file, nothing (`ENOENT`), or a refusal.
fn check_kind(store: &Store, path: &Path) -> io::Result<()> {
    match store.stat(path) {
        Ok(st) if st.kind == Kind::File => Ok(()),
        Ok(st) => Err(not_a_journal(st.kind)),
        Err(e) => Err(e),
    }
}

/// Open the journal to read; `ENOENT` when there is none.
fn open_to_read(store: &Store) -> io::Result<File> {
    let path = journal_path();
    check_kind(store, &path)?;
    Ok(store.open_file(&path, OFlags::RDONLY, Mode::empty())?.0)
}

/// Open (creating it and `.cachetta/` if missing) the journal to append.
fn open_to_append(store: &Store) -> io::Result<File> {
    let path = journal_path();
    match check_kind(store, &path) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            store.mkdir_all(Path::new(RESERVED_DIR))?
        }
        Err(e) => return Err(e),
    }
    // Read-write: on NFS, flock is a POSIX lock, and an exclusive one needs a writable file.
    let flags = OFlags::RDWR | OFlags::APPEND | OFlags::CREATE;
    match store.open_file(&path, flags, Mode::from_raw_mode(0o666)) {
        Ok((file, _)) => Ok(file),
        // A symlink raced in (the store never follows one): refuse it as such.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            check_kind(store, &path)?;
            Err(e)
        }
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) => Err(refused("is a directory")),
        Err(e) => Err(e),
    }
}

/// Every record in the journal, oldest first, own ones included: what every mount announced
/// and judged (at most the latest two per key since the last compaction, plus what came
/// after). Lines that are not records are skipped, with one log line. No journal is an empty
/// list; a journal that cannot be used is an error.
pub fn load_all(store: &Store) -> io::Result<Vec<Record>> {
    let file = match open_to_read(store) {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let size = Store::fstat(&file)?.size;
    let bytes = read_range(&file, 0, size)?;
    let mut skipped = Skipped::default();
    let (records, _) = parse_lines(&bytes, &mut skipped);
    skipped.log_once("loading");
    Ok(records)
}

/// `len` bytes of `file` from `offset` (fewer if it is shorter).
fn read_range(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0; usize::try_from(len).unwrap_or(usize::MAX)];
    let mut done = 0;
    while done < bytes.len() {
        match file.read_at(&mut bytes[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(done);
    Ok(bytes)
}

/// What a reader skipped, said once per reader (not once per line).
#[derive(Debug, Default)]
struct Skipped {
    garbage: usize,
    future: Option<u32>,
    said_garbage: bool,
    said_future: bool,
}

impl Skipped {
    fn log_once(&mut self, doing: &str) {
        if self.garbage > 0 && !self.said_garbage {
            self.said_garbage = true;
            tracing::warn!(
                lines = self.garbage,
                "{doing} {}: skipped lines that are not records (a record torn by a killed writer, or damage); said once",
                journal_path().display()
            );
        }
        if let (Some(v), false) = (self.future, self.said_future) {
            self.said_future = true;
            tracing::warn!(
                "{doing} {}: skipped records of format version {v} (this cachetta reads version {VERSION}; a newer cachetta shares this backing dir); said once",
                journal_path().display()
            );
        }
    }
}

/// The records in the complete lines of `bytes`, and how many bytes those lines take (up to
/// and including the last newline). Empty lines are nothing; others that are not records are
/// counted in `skipped`.
fn parse_lines(bytes: &[u8], skipped: &mut Skipped) -> (Vec<Record>, usize) {
    let Some(last_newline) = bytes.iter().rposition(|&b| b == b'\n') else {
        return (Vec::new(), 0);
    };
    let mut records = Vec::new();
    for line in bytes[..last_newline].split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match Record::from_line(line) {
            Ok(record) if record.op == Op::Compacted => {}
            Ok(record) => records.push(record),
            Err(Unreadable::Garbage) => skipped.garbage += 1,
            Err(Unreadable::Future(v)) => skipped.future = Some(v),
        }
    }
    (records, last_newline + 1)
}

/// The journal of one backing dir, for appending. Its store is its own (never observed: the
/// journal's own files are not entries).
#[derive(Debug)]
pub struct Journal {
    store: Store,
    writer: String,
}

impl Journal {
    /// The journal of `store`'s backing dir, written as `writer` ([`writer_id`]).
    pub fn new(store: Store, writer: String) -> Journal {
        Journal { store, writer }
    }

    pub fn writer(&self) -> &str {
        &self.writer
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Append `records` as one write under the journal's `flock`, compacting it when it has
    /// grown past its bound.
    pub fn append(&self, records: &[Record]) -> io::Result<()> {
        let lines: Vec<u8> = records.iter().flat_map(Record::to_line).collect();
        // A compaction between our open and our lock renames a new journal in: the lock we
        // got is on the old one. Open again (a compaction is rare; three is plenty).
        for _ in 0..3 {
            let file = open_to_append(&self.store)?;
            rustix::fs::flock(&file, FlockOperation::LockExclusive)?;
            let locked = fresh_stat(&file)?;
            let current = self.store.stat(&journal_path())?;
            if current.ino != locked.ino {
                continue;
            }
            let mut out = Vec::with_capacity(lines.len() + 1);
            // (A size a network filesystem's client kept from before another client's append
            // makes this an empty line at worst.)
            if locked.size > 0 && read_range(&file, locked.size - 1, 1)? != b"\n" {
                // The last record is torn (its writer was killed): end it, so ours is whole.
                out.push(b'\n');
            }
            out.extend_from_slice(&lines);
            (&file).write_all(&out)?;
            let size = locked.size + out.len() as u64;
            if size > MAX_BYTES && size > 2 * compacted_bytes(&file) {
                self.compact(&file, size)?;
            }
            // The lock goes with the descriptor.
            return Ok(());
        }
        Err(io::Error::other(
            "the journal kept being replaced while waiting for its lock",
        ))
    }

    /// Replace the journal (held locked as `file`, `size` bytes) by the latest records per key.
    fn compact(&self, file: &File, size: u64) -> io::Result<()> {
        let bytes = read_range(file, 0, size)?;
        let mut skipped = Skipped::default();
        let (records, _) = parse_lines(&bytes, &mut skipped);
        let kept = latest_per_key(records);
        let body: Vec<u8> = kept.iter().flat_map(Record::to_line).collect();
        let header = Record {
            bytes: Some(body.len() as u64),
            ..Record::new(&self.writer, Op::Compacted, Path::new(""))
        };
        let new_path = compacting_path();
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC;
        let (mut new, _) = self
            .store
            .open_file(&new_path, flags, Mode::from_raw_mode(0o666))?;
        new.write_all(&header.to_line())?;
        new.write_all(&body)?;
        new.sync_data()?;
        self.store.rename(&new_path, &journal_path(), false)?;
        tracing::info!(
            from = size,
            to = body.len(),
            records = kept.len(),
            "compacted {}",
            journal_path().display()
        );
        Ok(())
    }
}

/// The inode and size of an open file, asked of the filesystem itself (`AT_STATX_FORCE_SYNC`):
/// a network filesystem's client may keep a size from before another client's append.
fn fresh_stat(file: &File) -> io::Result<FreshStat> {
    use rustix::fs::{AtFlags, StatxFlags};
    let flags = AtFlags::EMPTY_PATH | AtFlags::STATX_FORCE_SYNC;
    let st = rustix::fs::statx(file, "", flags, StatxFlags::INO | StatxFlags::SIZE)?;
    Ok(FreshStat {
        ino: st.stx_ino,
        size: st.stx_size,
    })
}

struct FreshStat {
    ino: u64,
    size: u64,
}

/// The size recorded by the last compaction (its first line), 0 if there was none.
fn compacted_bytes(file: &File) -> u64 {
    let head = read_range(file, 0, 512).unwrap_or_default();
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    match Record::from_line(line) {
        Ok(record) if record.op == Op::Compacted => record.bytes.unwrap_or(0),
        _ => 0,
    }
}

/// What a compaction keeps: per key, its last `put` (or nothing, when its last change was a
/// `del`) and the last `judged` after it; in the order of their last appearance. Gaps are
/// dropped: a reader of the compacted journal does a full walk anyway (it sees the new inode).
fn latest_per_key(records: Vec<Record>) -> Vec<Record> {
    struct Kept {
        change: Option<(usize, Record)>,
        judged: Option<(usize, Record)>,
    }
    let mut per_key: HashMap<PathBuf, Kept> = HashMap::new();
    for (at, record) in records.into_iter().enumerate() {
        if !matches!(record.op, Op::Put | Op::Del | Op::Judged) {
            continue;
        }
        let kept = per_key.entry(record.key.clone()).or_insert(Kept {
            change: None,
            judged: None,
        });
        match record.op {
            Op::Judged => kept.judged = Some((at, record)),
            _ => {
                kept.judged = None;
                kept.change = Some((at, record));
            }
        }
    }
    let mut kept: Vec<(usize, Record)> = per_key
        .into_values()
        .flat_map(|k| {
            let change = k.change.filter(|(_, r)| r.op == Op::Put);
            change.into_iter().chain(k.judged)
        })
        .collect();
    kept.sort_by_key(|(at, _)| *at);
    kept.into_iter().map(|(_, r)| r).collect()
}
