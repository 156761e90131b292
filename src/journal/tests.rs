//! Tests of the change journal: the line format, appending, reading as it grows, bad input,
//! compaction, and appenders racing.

use super::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime};

use crate::entry_policy::EntryPolicy;
use crate::store::Stat;

fn backing() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false).unwrap();
    (dir, store)
}

fn journal_of(dir: &tempfile::TempDir, writer: &str) -> Journal {
    Journal::new(Store::open(dir.path(), false).unwrap(), writer.to_owned())
}

fn stat_of(dir: &tempfile::TempDir, rel: &str, bytes: &str) -> Stat {
    let path = dir.path().join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    Stat::of_path(&path).unwrap()
}

fn journal_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join(".cachetta/journal")
}

fn new_records(poll: Poll) -> Vec<Record> {
    match poll {
        Poll::New(records) => records,
        other => panic!("expected new records, got {other:?}"),
    }
}

fn keys(records: &[Record]) -> Vec<&str> {
    records.iter().map(|r| r.key.to_str().unwrap()).collect()
}

#[test]
fn a_record_round_trips_through_its_line_with_version_validity_and_policy() {
    let (dir, _store) = backing();
    let st = stat_of(&dir, "a/b.json", "{}");
    let policy = EntryPolicy {
        duration: Some(Duration::from_secs(600)),
        stale: None,
        stale_if_error: Some(Duration::from_millis(1500)),
    };
    let record = Record::judged("h:1:2", Path::new("a/b.json"), &st, true, Some(policy));
    let line = record.to_line();
    assert_eq!(line.last(), Some(&b'\n'));
    let text = std::str::from_utf8(&line).unwrap();
    assert!(text.starts_with(r#"{"v":1,"writer":"h:1:2","op":"judged","key":"a/b.json","ino":"#));
    assert!(
        text.contains(r#""policy":{"duration_ns":600000000000,"stale_if_error_ns":1500000000}"#)
    );
    assert!(
        !text.contains("dev"),
        "st_dev differs between machines: {text}"
    );
    let back = Record::from_line(&line[..line.len() - 1]).unwrap();
    assert_eq!(back, record);
    assert!(back.version.unwrap().matches(&st));
    // Another file, or the same one rewritten, is another version.
    let other = stat_of(&dir, "a/c.json", "{}");
    assert!(!back.version.unwrap().matches(&other));
}

#[test]
fn a_key_that_is_not_utf8_is_written_as_its_bytes() {
    let key = Path::new(OsStr::from_bytes(b"caf\xe9.json"));
    let record = Record::del("w", key);
    let line = record.to_line();
    assert!(std::str::from_utf8(&line)
        .unwrap()
        .contains(r#""key":[99,97,102,233,46,106,115,111,110]"#));
    assert_eq!(Record::from_line(&line[..line.len() - 1]).unwrap().key, key);
}

#[test]
fn records_naming_anything_but_an_entry_below_the_root_are_not_records() {
    for key in [
        "/etc/passwd.json",
        "../x.json",
        "a/../../x.json",
        "./x.json",
        ".cachetta/x.json",
        "notes.txt",
        ".cachetta-staging.1.2.tmp",
        "",
    ] {
        let line = format!(r#"{{"v":1,"writer":"w","op":"del","key":"{key}"}}"#);
        assert_eq!(
            Record::from_line(line.as_bytes()),
            Err(Unreadable::Garbage),
            "{key}"
        );
    }
    // A put without its whole version says nothing exact.
    let line = r#"{"v":1,"writer":"w","op":"put","key":"x.json","ino":1,"size":2}"#;
    assert_eq!(Record::from_line(line.as_bytes()), Err(Unreadable::Garbage));
    let future = r#"{"v":2,"writer":"w","op":"rename","from":"a.json"}"#;
    assert_eq!(
        Record::from_line(future.as_bytes()),
        Err(Unreadable::Future(2))
    );
    // Fields this build does not know are ignored.
    let later = r#"{"v":1,"writer":"w","op":"del","key":"x.json","why":"gc"}"#;
    assert_eq!(
        Record::from_line(later.as_bytes()).unwrap().key,
        Path::new("x.json")
    );
}

#[test]
fn appended_records_are_read_by_a_reader_with_its_own_told_apart() {
    let (dir, store) = backing();
    let mut reader = JournalReader::at_end(&store, "me");
    assert!(
        new_records(reader.poll(&store)).is_empty(),
        "no journal yet"
    );
    let mine = journal_of(&dir, "me");
    let theirs = journal_of(&dir, "them");
    let st = stat_of(&dir, "x.json", "1");
    theirs
        .append(&[Record::put("them", Path::new("x.json"), &st)])
        .unwrap();
    mine.append(&[Record::del("me", Path::new("mine.json"))])
        .unwrap();
    theirs
        .append(&[
            Record::del("them", Path::new("y.json")),
            Record::judged("them", Path::new("x.json"), &st, false, None),
        ])
        .unwrap();
    let all = new_records(reader.poll(&store));
    assert_eq!(keys(&all), ["x.json", "mine.json", "y.json", "x.json"]);
    let records: Vec<Record> = all.into_iter().filter(|r| r.writer != "me").collect();
    assert_eq!(records[0].op, Op::Put);
    assert!(records[0].version.unwrap().matches(&st));
    assert_eq!(records[2].valid, Some(false));
    assert!(new_records(reader.poll(&store)).is_empty(), "read once");
    // load_all is everything, own records included.
    assert_eq!(load_all(&store).unwrap().len(), 4);
}

#[test]
fn a_reader_starting_at_the_end_reads_only_what_comes_after() {
    let (dir, store) = backing();
    let theirs = journal_of(&dir, "them");
    theirs
        .append(&[Record::del("them", Path::new("old.json"))])
        .unwrap();
    let mut reader = JournalReader::at_end(&store, "me");
    theirs
        .append(&[Record::del("them", Path::new("new.json"))])
        .unwrap();
    assert_eq!(keys(&new_records(reader.poll(&store))), ["new.json"]);
}

#[test]
fn a_record_torn_by_a_killed_writer_is_skipped_and_the_next_one_is_whole() {
    let (dir, store) = backing();
    let mut reader = JournalReader::at_end(&store, "me");
    let theirs = journal_of(&dir, "them");
    theirs
        .append(&[Record::del("them", Path::new("a.json"))])
        .unwrap();
    // A writer killed in the middle of its write: half a record, no newline.
    let torn = Record::del("dead", Path::new("torn.json")).to_line();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(journal_file(&dir))
        .unwrap();
    std::io::Write::write_all(&mut file, &torn[..torn.len() / 2]).unwrap();
    // Incomplete lines are not read yet.
    assert_eq!(keys(&new_records(reader.poll(&store))), ["a.json"]);
    theirs
        .append(&[Record::del("them", Path::new("b.json"))])
        .unwrap();
    assert_eq!(keys(&new_records(reader.poll(&store))), ["b.json"]);
    let all = load_all(&store).unwrap();
    assert_eq!(keys(&all), ["a.json", "b.json"]);
}

#[test]
fn lines_that_do_not_parse_and_future_records_are_skipped_and_the_rest_is_read() {
    let (dir, store) = backing();
    let mut reader = JournalReader::at_end(&store, "me");
    let theirs = journal_of(&dir, "them");
    theirs
        .append(&[Record::del("them", Path::new("a.json"))])
        .unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(journal_file(&dir))
        .unwrap();
    let junk = "not json at all\n{\"v\":1}\n{\"v\":7,\"op\":\"teleport\"}\n\n[1,2]\n";
    std::io::Write::write_all(&mut file, junk.as_bytes()).unwrap();
    theirs
        .append(&[Record::del("them", Path::new("b.json"))])
        .unwrap();
    assert_eq!(
        keys(&new_records(reader.poll(&store))),
        ["a.json", "b.json"]
    );
    assert_eq!(keys(&load_all(&store).unwrap()), ["a.json", "b.json"]);
}

#[test]
fn a_journal_that_is_a_symlink_or_a_directory_is_refused_and_left_alone() {
    for make in ["symlink", "dir"] {
        let (dir, store) = backing();
        std::fs::create_dir(dir.path().join(".cachetta")).unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "precious\n").unwrap();
        match make {
            "symlink" => std::os::unix::fs::symlink(&outside, journal_file(&dir)).unwrap(),
            _ => std::fs::create_dir(journal_file(&dir)).unwrap(),
        }
        let mut reader = JournalReader::at_end(&store, "me");
        assert!(matches!(reader.poll(&store), Poll::Unavailable), "{make}");
        let error = journal_of(&dir, "w")
            .append(&[Record::del("w", Path::new("a.json"))])
            .unwrap_err();
        assert!(
            error.to_string().contains("not a journal"),
            "{make}: {error}"
        );
        assert!(load_all(&store).is_err(), "{make}");
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious\n");
        let meta = std::fs::symlink_metadata(journal_file(&dir)).unwrap();
        assert_eq!(meta.is_symlink(), make == "symlink");
        assert_eq!(meta.is_dir(), make == "dir");
    }
}

#[test]
fn a_journal_that_cannot_be_created_fails_its_appends_and_its_reader() {
    let (dir, store) = backing();
    // `.cachetta` a regular file: nothing can be created in it (as when it is not writable).
    std::fs::write(dir.path().join(".cachetta"), "").unwrap();
    let journal = journal_of(&dir, "w");
    assert!(journal
        .append(&[Record::del("w", Path::new("a.json"))])
        .is_err());
    let mut reader = JournalReader::at_end(&store, "me");
    assert!(matches!(reader.poll(&store), Poll::Unavailable));
}

#[test]
fn a_removed_or_replaced_journal_resets_its_readers() {
    let (dir, store) = backing();
    let theirs = journal_of(&dir, "them");
    theirs
        .append(&[Record::del("them", Path::new("a.json"))])
        .unwrap();
    let mut reader = JournalReader::at_end(&store, "me");
    std::fs::remove_file(journal_file(&dir)).unwrap();
    assert!(matches!(reader.poll(&store), Poll::Reset(r) if r.is_empty()));
    theirs
        .append(&[Record::del("them", Path::new("b.json"))])
        .unwrap();
    // A journal that appears where there was none holds nothing the reader missed.
    assert_eq!(keys(&new_records(reader.poll(&store))), ["b.json"]);
    // Truncated below what was read (in place: cachetta itself only ever replaces it).
    theirs
        .append(&[Record::del("them", Path::new("c.json"))])
        .unwrap();
    assert_eq!(keys(&new_records(reader.poll(&store))), ["c.json"]);
    std::fs::write(
        journal_file(&dir),
        Record::del("them", Path::new("d.json")).to_line(),
    )
    .unwrap();
    match reader.poll(&store) {
        Poll::Reset(records) => assert_eq!(keys(&records), ["d.json"]),
        other => panic!("{other:?}"),
    }
    // Replaced by a rename, as a compaction does.
    let other = dir.path().join(".cachetta/other");
    std::fs::write(&other, Record::del("them", Path::new("e.json")).to_line()).unwrap();
    std::fs::rename(&other, journal_file(&dir)).unwrap();
    match reader.poll(&store) {
        Poll::Reset(records) => assert_eq!(keys(&records), ["e.json"]),
        other => panic!("{other:?}"),
    }
    theirs
        .append(&[Record::del("them", Path::new("f.json"))])
        .unwrap();
    assert_eq!(keys(&new_records(reader.poll(&store))), ["f.json"]);
}

#[test]
fn a_gap_recorded_by_a_writer_resets_its_readers() {
    let (dir, store) = backing();
    let mut reader = JournalReader::at_end(&store, "me");
    let theirs = journal_of(&dir, "them");
    theirs
        .append(&[
            Record::new("them", Op::Gap, Path::new("")),
            Record::del("them", Path::new("a.json")),
        ])
        .unwrap();
    match reader.poll(&store) {
        Poll::Reset(records) => assert_eq!(keys(&records), ["a.json"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn compaction_keeps_the_latest_records_per_key_and_bounds_the_size() {
    let (dir, store) = backing();
    let mut reader = JournalReader::at_end(&store, "me");
    let theirs = journal_of(&dir, "them");
    let st = stat_of(&dir, "k0.json", "{}");
    theirs
        .append(&[Record::put("them", Path::new("gone.json"), &st)])
        .unwrap();
    theirs
        .append(&[Record::del("them", Path::new("gone.json"))])
        .unwrap();
    let batch: Vec<Record> = (0..1000)
        .map(|i| Record::put("them", Path::new(&format!("k{}.json", i % 10)), &st))
        .collect();
    let mut compacted = false;
    for _ in 0..(2 * MAX_BYTES / 150_000) {
        theirs.append(&batch).unwrap();
        let size = std::fs::metadata(journal_file(&dir)).unwrap().len();
        assert!(size <= MAX_BYTES + 200_000, "{size}");
        match reader.poll(&store) {
            Poll::New(records) => assert!(!records.is_empty()),
            Poll::Reset(records) => {
                compacted = true;
                let mut kept = keys(&records);
                kept.sort();
                let want: Vec<String> = (0..10).map(|i| format!("k{i}.json")).collect();
                assert_eq!(
                    kept, want,
                    "the last put of each key; the deleted key dropped"
                );
                break;
            }
            Poll::Unavailable => panic!("unavailable"),
        }
    }
    assert!(compacted, "the journal was never compacted");
    assert!(!dir.path().join(".cachetta/journal.new").exists());
    let first = std::fs::read_to_string(journal_file(&dir)).unwrap();
    assert!(first.starts_with(r#"{"v":1,"writer":"them","op":"compacted","bytes":"#));
    assert!(first.len() < 4096);
    // Appends go on after it, and the reader reads them.
    theirs
        .append(&[Record::del("them", Path::new("k1.json"))])
        .unwrap();
    assert_eq!(keys(&new_records(reader.poll(&store))), ["k1.json"]);
}

#[test]
fn compaction_keeps_a_judgement_made_after_the_last_put() {
    let (dir, _) = backing();
    let st = stat_of(&dir, "a.json", "{}");
    let at = |op, key: &str| match op {
        Op::Put => Record::put("w", Path::new(key), &st),
        Op::Del => Record::del("w", Path::new(key)),
        _ => Record::judged("w", Path::new(key), &st, true, None),
    };
    let kept = latest_per_key(vec![
        at(Op::Judged, "a.json"),
        at(Op::Put, "a.json"),
        at(Op::Judged, "a.json"),
        at(Op::Put, "b.json"),
        at(Op::Del, "b.json"),
        at(Op::Judged, "b.json"),
        at(Op::Put, "c.json"),
        at(Op::Del, "c.json"),
        Record::new("w", Op::Gap, Path::new("")),
    ]);
    let kept: Vec<(Op, &str)> = kept
        .iter()
        .map(|r| (r.op, r.key.to_str().unwrap()))
        .collect();
    assert_eq!(
        kept,
        [
            (Op::Put, "a.json"),
            (Op::Judged, "a.json"),
            (Op::Judged, "b.json")
        ]
    );
}

/// The two views of one directory the appenders write through: by default one local dir
/// twice; `CACHETTA_JOURNAL_TEST_DIRS=A:B` names one directory seen through two clients of a
/// distributed filesystem (e.g. two GlusterFS client mounts), emptied first.
fn two_views() -> (Option<tempfile::TempDir>, [std::path::PathBuf; 2]) {
    if let Some(dirs) = std::env::var_os("CACHETTA_JOURNAL_TEST_DIRS") {
        let dirs = dirs.to_str().unwrap().to_owned();
        let (a, b) = dirs.split_once(':').unwrap();
        let _ = std::fs::remove_dir_all(Path::new(a).join(".cachetta"));
        return (None, [a.into(), b.into()]);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    (Some(dir), [path.clone(), path])
}

#[test]
fn two_appenders_at_once_never_interleave_their_lines() {
    let (_dir, views) = two_views();
    let store = Store::open(&views[0], false).unwrap();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let journal =
                Journal::new(Store::open(&views[w], false).unwrap(), format!("writer{w}"));
            std::thread::spawn(move || {
                for i in 0..300 {
                    // Long keys, so that a write is several pages' worth in some batches.
                    let key = format!("{}/{i}.json", "d".repeat(100 + i % 50));
                    let records = vec![Record::del(journal.writer(), Path::new(&key)); 1 + i % 40];
                    journal.append(&records).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let text = std::fs::read_to_string(views[1].join(".cachetta/journal")).unwrap();
    let mut count = 0;
    // An empty line is allowed: a writer that took a record for torn ends it first.
    for line in text.lines().filter(|l| !l.is_empty()) {
        let record = Record::from_line(line.as_bytes()).unwrap_or_else(|e| panic!("{e:?}: {line}"));
        assert!(record.writer.starts_with("writer"));
        count += 1;
    }
    let per_writer: usize = (0..300).map(|i| 1 + i % 40).sum();
    assert_eq!(count, 2 * per_writer);
    assert_eq!(load_all(&store).unwrap().len(), count);
}

#[test]
fn the_appender_journals_what_its_store_publishes_removes_and_renames() {
    let (dir, store) = backing();
    // The journal's own directory made first: its creation moves the root's times too.
    std::fs::create_dir(dir.path().join(".cachetta")).unwrap();
    std::fs::write(dir.path().join(".cachetta/journal"), "").unwrap();
    let appender = observe_store(&store, Store::open(dir.path(), false).unwrap()).unwrap();
    // Each change in its own tick of the filesystem's clock, so each moves the directory's
    // times (two in one tick would move them once: a load-dependent failure).
    let tick = || std::thread::sleep(Duration::from_millis(20));
    let mut staging = store.create_staging(Path::new(""), 0o644).unwrap();
    tick();
    std::io::Write::write_all(&mut staging.file, b"{}").unwrap();
    staging.judged = Some(crate::store::Judged {
        valid: true,
        policy: Some([Some(Duration::from_secs(60)), None, None]),
    });
    let published = store
        .publish(staging, Path::new("x.json"), Some(SystemTime::now()))
        .unwrap();
    let st = Store::fstat(&published).unwrap();
    tick();
    store
        .rename(Path::new("x.json"), Path::new("y.json"), false)
        .unwrap();
    tick();
    store.unlink(Path::new("y.json")).unwrap();
    tick();
    std::fs::write(dir.path().join("notes.txt"), "").unwrap();
    tick();
    store.unlink(Path::new("notes.txt")).unwrap();
    assert!(appender.flush(Duration::from_secs(5)));
    let all = load_all(&store).unwrap();
    let ops: Vec<(Op, &str)> = all
        .iter()
        .map(|r| (r.op, r.key.to_str().unwrap()))
        .collect();
    assert_eq!(
        ops,
        [
            (Op::Dir, ""),
            (Op::Put, "x.json"),
            (Op::Del, "x.json"),
            (Op::Put, "y.json"),
            (Op::Del, "y.json"),
            (Op::Dir, "")
        ],
        "the staging file's creation and a scratch file's removal only change the directory"
    );
    // Each change carries how it moved the directory's times, one after the other.
    let root = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(dir.path()).unwrap());
    let times: Vec<_> = all.iter().map(|r| r.dir.clone().unwrap()).collect();
    assert!(times.iter().all(|d| d.ino == root && d.moves.len() == 1));
    assert_eq!(times[2], times[3], "one rename, one move");
    let moves: Vec<[[i64; 2]; 2]> = times.into_iter().flat_map(|d| d.moves).collect();
    for (one, next) in [(0, 1), (1, 2), (3, 4)] {
        assert_eq!(moves[one][1], moves[next][0], "{moves:?}");
    }
    let all = &all[1..];
    assert_eq!(all[0].writer, appender.writer());
    assert_eq!(all[0].valid, Some(true));
    assert_eq!(
        all[0].policy.unwrap().duration,
        Some(Duration::from_secs(60))
    );
    assert_eq!(
        all[0].version,
        Some(FileVersion::of(&st)),
        "the version after the rename"
    );
    assert_eq!(all[2].valid, None, "a rename says nothing of validity");
}

#[test]
fn writer_ids_differ_between_journals_and_name_the_host_and_process() {
    let (a, b) = (writer_id(), writer_id());
    assert_ne!(a, b);
    assert!(a.contains(&format!(":{}:", std::process::id())), "{a}");
}
