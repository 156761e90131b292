//! Reading the journal as it grows: a [`JournalReader`] keeps the journal's inode and how far
//! it has read, and each poll costs one `stat` while nothing was appended.

use std::io;

use super::{
    journal_path, not_a_journal, open_to_read, parse_lines, read_range, Op, Record, Skipped,
    MAX_READ,
};
use crate::store::{Kind, Store};

/// What one [`JournalReader::poll`] found.
#[derive(Debug)]
pub enum Poll {
    /// The records appended since the last poll (often none), this reader's own writer's
    /// included (`Record::writer` tells them apart).
    New(Vec<Record>),
    /// Changes may have been missed: the journal was replaced (compacted), truncated, removed
    /// or unreadable until now, the reader fell behind by more than it reads at once, or a
    /// writer recorded a gap. The records of the journal as it is now follow (when they
    /// could be read), own ones included; the watcher does one full walk.
    Reset(Vec<Record>),
    /// The journal cannot be used (said once in the log until it can be again): every change
    /// must be found by walking.
    Unavailable,
}

/// Where the reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// There is no journal yet: when one appears, all of it is new.
    Absent,
    /// Read up to `offset` of the journal with inode `ino`.
    Read { ino: u64, offset: u64 },
    /// The last poll could not read it.
    Broken,
}

/// A reader of the journal for one writer (its own mount), whose gaps are no news to it.
#[derive(Debug)]
pub struct JournalReader {
    own: String,
    at: At,
    skipped: Skipped,
}

impl JournalReader {
    /// A reader that starts at the journal's end as it is now: what is already in it is
    /// known to whoever just walked the backing dir. `own` is this mount's writer id.
    pub fn at_end(store: &Store, own: &str) -> JournalReader {
        let mut reader = JournalReader {
            own: own.to_owned(),
            at: At::Absent,
            skipped: Skipped::default(),
        };
        reader.at = match reader.end(store) {
            Ok(at) => at,
            Err(e) => {
                reader.unavailable(&e);
                At::Broken
            }
        };
        reader
    }

    /// The end of the journal: after its last complete line.
    fn end(&self, store: &Store) -> io::Result<At> {
        let file = match open_to_read(store) {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(At::Absent),
            Err(e) => return Err(e),
        };
        let st = Store::fstat(&file)?;
        let tail = st.size.min(64 << 10);
        let bytes = read_range(&file, st.size - tail, tail)?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        Ok(At::Read {
            ino: st.ino,
            offset: st.size - tail + complete as u64,
        })
    }

    /// What was appended since the last poll.
    pub fn poll(&mut self, store: &Store) -> Poll {
        match self.try_poll(store) {
            Ok(poll) => poll,
            Err(e) => {
                self.unavailable(&e);
                self.at = At::Broken;
                Poll::Unavailable
            }
        }
    }

    fn try_poll(&mut self, store: &Store) -> io::Result<Poll> {
        let st = match store.stat(&journal_path()) {
            Ok(st) if st.kind == Kind::File => st,
            Ok(st) => return Err(not_a_journal(st.kind)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let was = std::mem::replace(&mut self.at, At::Absent);
                return Ok(match was {
                    At::Absent => Poll::New(Vec::new()),
                    // Removed (someone cleared `.cachetta/`): what it held is gone.
                    _ => Poll::Reset(Vec::new()),
                });
            }
            Err(e) => return Err(e),
        };
        let (records, reset) = match self.at {
            At::Read { ino, offset } if ino == st.ino && st.size == offset => {
                return Ok(Poll::New(Vec::new()))
            }
            At::Read { ino, offset } if ino == st.ino && st.size > offset => {
                if st.size - offset > MAX_READ {
                    self.at = self.end(store)?;
                    return Ok(Poll::Reset(Vec::new()));
                }
                self.read_from(store, Some((ino, offset)))?
            }
            // Replaced or truncated, or unreadable until now: read it whole, and walk.
            At::Read { .. } | At::Broken => (self.read_from(store, None)?.0, true),
            // New: all of it is news.
            At::Absent => self.read_from(store, None)?,
        };
        let foreign_gap = records
            .iter()
            .any(|r| r.op == Op::Gap && r.writer != self.own);
        let records: Vec<Record> = records.into_iter().filter(|r| r.op != Op::Gap).collect();
        if reset || foreign_gap {
            Ok(Poll::Reset(records))
        } else {
            Ok(Poll::New(records))
        }
    }

    /// Read the complete lines of the journal from `from` (inode, offset), or from its start,
    /// and move on past them. Whether it had to start over (the journal was replaced since
    /// its `stat`).
    fn read_from(
        &mut self,
        store: &Store,
        from: Option<(u64, u64)>,
    ) -> io::Result<(Vec<Record>, bool)> {
        let file = open_to_read(store)?;
        let st = Store::fstat(&file)?;
        let (offset, restarted) = match from {
            Some((ino, offset)) if st.ino == ino && st.size >= offset => (offset, false),
            Some(_) => (0, true),
            None => (0, false),
        };
        let len = (st.size - offset).min(MAX_READ);
        let bytes = read_range(&file, offset, len)?;
        let (records, used) = parse_lines(&bytes, &mut self.skipped);
        self.skipped.log_once("reading");
        if self.at == At::Broken {
            tracing::info!("{} can be read again", journal_path().display());
        }
        self.at = At::Read {
            ino: st.ino,
            offset: offset + used as u64,
        };
        Ok((records, restarted))
    }

    /// Say once (until it works again) that the journal cannot be read.
    fn unavailable(&self, e: &io::Error) {
        // A server away is said once for the whole daemon (`error::outage_is_new`).
        if self.at != At::Broken && !crate::error::is_outage_error(e) {
            tracing::warn!(
                "cannot read {}: {e}; finding changes by walking the backing dir until it can be read",
                journal_path().display()
            );
        }
    }
}
