//! The journal's writer thread: the [`Store`]'s observer turns each change into records and
//! queues them; one thread appends what has gathered with one `flock` and one `write`. So a
//! publish never waits for the journal (on a network filesystem, a lock and a write are round
//! trips to the server), and a storm of publishes costs a few appends a second.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use super::{journal_path, DirTimes, Journal, Op, Record};
use crate::store::{self, DirChange, Kind, Observed, Observer, Store};

/// Records waiting to be appended, at most; past that they are dropped and a gap is recorded
/// (other mounts then do one full walk: nothing is lost).
const QUEUE: usize = 4096;

/// Records appended in one write, at most.
const BATCH: usize = 1024;

enum Message {
    Record(Record),
    /// Answered once everything queued before it was appended (or failed).
    Flush(mpsc::Sender<()>),
}

/// Queues records for the journal and appends them on a thread of its own.
#[derive(Debug)]
pub struct Appender {
    writer: String,
    queue: SyncSender<Message>,
    /// Records were dropped (a full queue): the next append starts with a gap.
    overflowed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Message")
    }
}

impl Appender {
    /// Start the thread that appends to `journal`. It ends when the appender is dropped.
    pub fn spawn(journal: Journal) -> std::io::Result<Arc<Appender>> {
        let (queue, inbox) = mpsc::sync_channel(QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        let writer = journal.writer().to_owned();
        let lost = overflowed.clone();
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || run(&journal, &inbox, &lost))?;
        Ok(Arc::new(Appender {
            writer,
            queue,
            overflowed,
        }))
    }

    /// This mount's writer id: its records carry it, and its reader skips them.
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// Queue a record; never waits.
    pub fn record(&self, record: Record) {
        match self.queue.try_send(Message::Record(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if !self.overflowed.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "{} falls behind ({QUEUE} records queued); other mounts will walk the backing dir once",
                        journal_path().display()
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Wait up to `timeout` until every record queued so far is appended (or its append
    /// failed). Whether that happened in time.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done, wait) = mpsc::channel();
        if self.queue.send(Message::Flush(done)).is_err() {
            return false;
        }
        wait.recv_timeout(timeout).is_ok()
    }
}

impl Observer for Appender {
    fn observe(&self, change: Observed<'_>) {
        for record in records_of(&self.writer, change) {
            self.record(record);
        }
    }
}

/// The records that tell of a change: entries put and deleted, each with how it moved its
/// directory's times; a change in a directory that is no entry's, with those times alone.
fn records_of(writer: &str, change: Observed<'_>) -> Vec<Record> {
    let entry = |key: &Path| super::is_entry_key(key);
    let with_dir = |mut record: Record, changes: &[DirChange]| {
        record.dir = DirTimes::of(changes);
        record
    };
    // A change beside the entries: only its directory's times are news.
    let in_dir = |key: &Path, changes: &[DirChange]| {
        let dir = store::split(key).0;
        let record = with_dir(Record::new(writer, Op::Dir, dir), changes);
        (super::is_dir_key(dir) && record.dir.is_some()).then_some(record)
    };
    let mut records = Vec::new();
    match change {
        Observed::Published {
            key,
            stat,
            judged,
            dir,
        } => {
            let changes: Vec<DirChange> = dir.into_iter().collect();
            if !entry(key) {
                records.extend(in_dir(key, &changes));
                return records;
            }
            let mut record = with_dir(Record::put(writer, key, stat), &changes);
            if let Some(judged) = judged {
                record.valid = Some(judged.valid);
                record.policy = judged
                    .policy
                    .map(crate::entry_policy::EntryPolicy::from_overrides);
            }
            records.push(record);
        }
        Observed::Removed { key, dir } => {
            let changes: Vec<DirChange> = dir.into_iter().collect();
            match entry(key) {
                true => records.push(with_dir(Record::del(writer, key), &changes)),
                false => records.extend(in_dir(key, &changes)),
            }
        }
        Observed::Renamed {
            from,
            to,
            stat,
            from_dir,
            to_dir,
        } => {
            let Some(stat) = stat.filter(|st| st.kind == Kind::File) else {
                // A directory moved (or what moved is unknown now): without its directories'
                // times, the other mounts list both and find what is below.
                if entry(from) {
                    records.push(Record::del(writer, from));
                }
                return records;
            };
            let from_changes: Vec<DirChange> = from_dir.into_iter().collect();
            let to_changes: Vec<DirChange> = to_dir.into_iter().collect();
            match entry(from) {
                true => records.push(with_dir(Record::del(writer, from), &from_changes)),
                false => records.extend(in_dir(from, &from_changes)),
            }
            match entry(to) {
                true => records.push(with_dir(Record::put(writer, to, stat), &to_changes)),
                false => records.extend(in_dir(to, &to_changes)),
            }
        }
        Observed::Changed {
            key,
            stat: Some(stat),
        } if entry(key) => records.push(Record::put(writer, key, stat)),
        Observed::Changed { .. } => {}
        Observed::Created { dir, change } => {
            records.extend(in_dir(&dir.join("x"), &[change]));
        }
        Observed::Judged { key, stat, judged } if entry(key) => {
            records.push(Record::judged(
                writer,
                key,
                stat,
                judged.valid,
                judged
                    .policy
                    .map(crate::entry_policy::EntryPolicy::from_overrides),
            ));
        }
        Observed::Judged { .. } => {}
    }
    records
}

/// The thread: append what has gathered, batch by batch, until the appender is dropped.
fn run(journal: &Journal, inbox: &Receiver<Message>, overflowed: &AtomicBool) {
    // Records could not be appended (the journal was unusable): the next append starts with a
    // gap, so readers walk once.
    let mut lost = false;
    let mut failing = false;
    while let Ok(first) = inbox.recv() {
        let mut records = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Record(record) => records.push(record),
                Message::Flush(done) => flushes.push(done),
            }
            next = if records.len() < BATCH {
                inbox.try_recv().ok()
            } else {
                None
            };
        }
        if overflowed.swap(false, Ordering::Relaxed) || lost {
            records.insert(0, Record::new(journal.writer(), Op::Gap, Path::new("")));
        }
        if !records.is_empty() {
            match journal.append(&records) {
                Ok(()) => {
                    if failing {
                        tracing::info!("{} can be written again", journal_path().display());
                    }
                    (lost, failing) = (false, false);
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(
                            "cannot append to {}: {e}; other mounts will find this mount's changes by walking the backing dir",
                            journal_path().display()
                        );
                    }
                    (lost, failing) = (true, true);
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// The journal of `store`'s backing dir with its appender running, set as `store`'s observer;
/// `None` (said in the log) when the appender cannot start.
pub fn observe_store(store: &Store, journal_store: Store) -> Option<Arc<Appender>> {
    let journal = Journal::new(journal_store, super::writer_id());
    match Appender::spawn(journal) {
        Ok(appender) => {
            store.set_observer(appender.clone());
            Some(appender)
        }
        Err(e) => {
            tracing::warn!("cannot start the journal's thread ({e}); other mounts will find this mount's changes by walking the backing dir");
            None
        }
    }
}
