//! Tests of the poll watcher, one round at a time: what it reports from the journal, from
//! directory times, and only from a full walk.

use super::*;
use std::sync::mpsc;

use crate::journal::{Journal, Record};

/// What the poller reported: `entry:KEY`, `record:KEY` or `everything`.
struct Reports(mpsc::Receiver<String>);

impl Reports {
    fn take(&self) -> Vec<String> {
        let mut got: Vec<String> = self.0.try_iter().collect();
        got.sort();
        got
    }
}

fn poller(root: &Path, options: PollOptions) -> (Poller, Reports) {
    let (sender, reports) = mpsc::channel();
    let on_change: OnChange = Box::new(move |change| {
        let _ = sender.send(match change {
            Change::Entry(key) => format!("entry:{}", key.display()),
            Change::Record(record) => format!("record:{}", record.key.display()),
            Change::Everything => "everything".into(),
            Change::Gone { rel, .. } => format!("gone:{}", rel.display()),
            Change::Listed { rel, .. } => format!("listed:{}", rel.display()),
            Change::Listing { .. } => return,
        });
    });
    let store = Store::open(root, false).unwrap();
    (Poller::new(on_change, store, options), Reports(reports))
}

fn with_journal() -> PollOptions {
    PollOptions {
        full_scan_interval: Duration::ZERO,
        journal_writer: Some("me".into()),
    }
}

/// Let the clock of directory times move past the last round's tick.
fn tick() {
    std::thread::sleep(Duration::from_millis(20));
}

/// A poller whose first rounds (which list every directory again once) are done.
fn settled(root: &Path, options: PollOptions) -> (Poller, Reports) {
    let (mut poller, reports) = poller(root, options);
    poller.round();
    poller.round();
    assert_eq!(reports.take(), Vec::<String>::new(), "nothing changed yet");
    tick();
    (poller, reports)
}

fn write(root: &Path, rel: &str, bytes: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Rewrite a file in place: same inode, same name, same directory times.
fn rewrite_in_place(root: &Path, rel: &str, bytes: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(root.join(rel))
        .unwrap();
    file.write_all(bytes.as_bytes()).unwrap();
}

fn strings(list: &[&str]) -> Vec<String> {
    let mut list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    list.sort();
    list
}

#[test]
fn creates_renames_and_removals_by_other_programs_show_through_directory_times() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "a/old.json", "1");
    write(root, "a/moved.json", "1");
    write(root, "b/keep.json", "1");
    let (mut poller, reports) = settled(root, with_journal());
    write(root, "a/new.json", "1");
    std::fs::rename(root.join("a/moved.json"), root.join("b/here.json")).unwrap();
    std::fs::remove_file(root.join("a/old.json")).unwrap();
    write(root, "b/notes.txt", "scratch files are not entries");
    poller.round();
    assert_eq!(
        reports.take(),
        strings(&[
            "entry:a/new.json",
            "entry:a/moved.json",
            "entry:b/here.json",
            "entry:a/old.json",
            // A name that went is said to have gone (with its inode), one that came to be
            // listed (with its own).
            "gone:a/moved.json",
            "gone:a/old.json",
            "listed:a/new.json",
            "listed:b/here.json",
        ])
    );
    // Renamed onto: same name, another inode.
    write(root, "c.json", "1");
    poller.round();
    reports.take();
    tick();
    write(root, "tmp", "2");
    std::fs::rename(root.join("tmp"), root.join("b/keep.json")).unwrap();
    poller.round();
    assert_eq!(
        reports.take(),
        strings(&[
            "entry:b/keep.json",
            "gone:b/keep.json",
            "listed:b/keep.json"
        ])
    );
}

#[test]
fn directories_that_appear_or_go_report_every_entry_in_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "gone/x/1.json", "1");
    write(root, "gone/2.json", "1");
    let (mut poller, reports) = settled(root, with_journal());
    std::fs::remove_dir_all(root.join("gone")).unwrap();
    write(root, "new/y/3.json", "1");
    poller.round();
    assert_eq!(
        reports.take(),
        strings(&[
            "entry:gone/x/1.json",
            "entry:gone/2.json",
            "entry:new/y/3.json"
        ])
    );
    // A directory renamed: its entries went from one path and appeared at another.
    tick();
    std::fs::rename(root.join("new"), root.join("newer")).unwrap();
    poller.round();
    assert_eq!(
        reports.take(),
        strings(&["entry:new/y/3.json", "entry:newer/y/3.json"])
    );
    // And a later change inside the new directory is seen.
    tick();
    poller.round();
    tick();
    write(root, "newer/y/4.json", "1");
    poller.round();
    assert_eq!(
        reports.take(),
        strings(&["entry:newer/y/4.json", "listed:newer/y/4.json"])
    );
}

#[test]
fn another_mounts_journal_record_is_handed_on_and_its_entry_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "x.json", "1");
    let (mut poller, reports) = settled(root, with_journal());
    let stat = Store::open(root, false)
        .unwrap()
        .stat(Path::new("x.json"))
        .unwrap();
    let theirs = Journal::new(Store::open(root, false).unwrap(), "them".into());
    let mine = Journal::new(Store::open(root, false).unwrap(), "me".into());
    theirs
        .append(&[
            Record::put("them", Path::new("x.json"), &stat),
            Record::judged("them", Path::new("y.json"), &stat, true, None),
        ])
        .unwrap();
    mine.append(&[Record::del("me", Path::new("mine.json"))])
        .unwrap();
    poller.round();
    assert_eq!(
        reports.take(),
        strings(&["record:x.json", "entry:x.json", "record:y.json"]),
        "a judgement changes no entry; one's own records are skipped"
    );
}

#[test]
fn an_in_place_rewrite_by_another_program_shows_only_in_the_full_walk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "d/x.json", "1");
    let (mut poller, reports) = settled(root, with_journal());
    rewrite_in_place(root, "d/x.json", "22");
    poller.round();
    poller.round();
    assert_eq!(
        reports.take(),
        Vec::<String>::new(),
        "directory times do not move"
    );
    poller.options.full_scan_interval = Duration::from_nanos(1);
    poller.round();
    assert_eq!(reports.take(), strings(&["entry:d/x.json"]));
}

#[test]
fn a_journal_that_cannot_be_read_makes_every_round_a_full_walk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "x.json", "1");
    std::fs::create_dir_all(root.join(".cachetta/journal")).unwrap();
    let (mut poller, reports) = settled(root, with_journal());
    rewrite_in_place(root, "x.json", "22");
    poller.round();
    assert_eq!(reports.take(), strings(&["entry:x.json"]));
    // Without a journal at all, likewise.
    let (mut poller, reports) = settled(root, PollOptions::default());
    rewrite_in_place(root, "x.json", "333");
    poller.round();
    assert_eq!(reports.take(), strings(&["entry:x.json"]));
}

#[test]
fn a_replaced_journal_means_one_full_walk_then_quiet_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "x.json", "1");
    let theirs = Journal::new(Store::open(root, false).unwrap(), "them".into());
    theirs
        .append(&[Record::del("them", Path::new("a.json"))])
        .unwrap();
    let (mut poller, reports) = settled(root, with_journal());
    rewrite_in_place(root, "x.json", "22");
    // Replaced, as a compaction does: the new one holds only what it kept.
    let other = root.join(".cachetta/new");
    std::fs::write(&other, Record::del("them", Path::new("b.json")).to_line()).unwrap();
    std::fs::rename(&other, root.join(".cachetta/journal")).unwrap();
    poller.round();
    assert_eq!(
        reports.take(),
        strings(&["record:b.json", "entry:x.json"]),
        "the records are handed on; the walk finds the change"
    );
    rewrite_in_place(root, "x.json", "333");
    poller.round();
    assert_eq!(reports.take(), Vec::<String>::new());
}

#[test]
fn cachettas_own_directory_and_scratch_files_are_never_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (mut poller, reports) = settled(root, with_journal());
    write(root, ".cachetta/locks/y.json.lock", "");
    write(root, ".cachetta/z.json", "");
    write(root, "scratch.tmp", "");
    write(root, ".cachetta-staging.1.2.tmp", "");
    poller.round();
    poller.options.full_scan_interval = Duration::from_nanos(1);
    poller.round();
    assert_eq!(reports.take(), Vec::<String>::new());
}

/// A store over `root` whose changes go to the journal as another mount's would; the
/// journal (and `.cachetta/`) exist already.
fn mount_store(root: &Path) -> (Store, std::sync::Arc<crate::journal::Appender>) {
    let store = Store::open(root, false).unwrap();
    let appender =
        crate::journal::observe_store(&store, Store::open(root, false).unwrap()).unwrap();
    appender.record(Record::del(appender.writer(), Path::new("never.json")));
    assert!(appender.flush(Duration::from_secs(5)));
    (store, appender)
}

fn publish(store: &Store, key: &str, bytes: &str) {
    let (dir, _) = store::split(Path::new(key));
    let mut staging = store.create_staging(dir, 0o644).unwrap();
    std::io::Write::write_all(&mut staging.file, bytes.as_bytes()).unwrap();
    store.publish(staging, Path::new(key), None).unwrap();
}

#[test]
fn a_mounts_publishes_and_removals_are_taken_from_the_journal_without_listing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "d/old.json", "1");
    write(root, "d/gone.json", "1");
    let (theirs, appender) = mount_store(root);
    let (mut poller, reports) = settled(root, with_journal());
    let listed = poller.listings;
    publish(&theirs, "d/new.json", "{}");
    publish(&theirs, "d/old.json", "{}");
    theirs.unlink(Path::new("d/gone.json")).unwrap();
    theirs
        .rename(Path::new("d/new.json"), Path::new("d/renamed.json"), false)
        .unwrap();
    assert!(appender.flush(Duration::from_secs(5)));
    poller.round();
    assert_eq!(
        reports.take(),
        strings(&[
            "record:d/new.json",
            "entry:d/new.json",
            "record:d/new.json",
            "record:d/old.json",
            "entry:d/old.json",
            "record:d/gone.json",
            "entry:d/gone.json",
            "record:d/renamed.json",
            "entry:d/renamed.json",
        ])
    );
    assert_eq!(poller.listings, listed, "no directory was listed");
    // What the poller knows of the directory is what a listing would say: an outside change
    // next to those names is found as the only one.
    tick();
    write(root, "d/outside.json", "1");
    poller.round();
    assert_eq!(
        reports.take(),
        strings(&["entry:d/outside.json", "listed:d/outside.json"])
    );
    assert_eq!(poller.listings, listed + 1);
}

#[test]
fn this_mounts_own_publishes_are_neither_reported_nor_listed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "d/x.json", "1");
    let (ours, appender) = mount_store(root);
    let options = PollOptions {
        full_scan_interval: Duration::ZERO,
        journal_writer: Some(appender.writer().to_owned()),
    };
    let (mut poller, reports) = settled(root, options);
    let listed = poller.listings;
    publish(&ours, "d/x.json", "{}");
    publish(&ours, "d/y.json", "{}");
    assert!(appender.flush(Duration::from_secs(5)));
    poller.round();
    poller.round();
    assert_eq!(reports.take(), Vec::<String>::new());
    assert_eq!(poller.listings, listed);
}

#[test]
fn an_outside_change_beside_a_journaled_one_lists_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "d/x.json", "1");
    let (theirs, appender) = mount_store(root);
    let (mut poller, reports) = settled(root, with_journal());
    let listed = poller.listings;
    // The other program first, then the mount: the mount's "before" is not what the poller
    // last saw.
    write(root, "d/outside.json", "1");
    tick();
    publish(&theirs, "d/x.json", "{}");
    assert!(appender.flush(Duration::from_secs(5)));
    poller.round();
    assert_eq!(
        reports.take(),
        strings(&[
            "record:d/x.json",
            "entry:d/x.json",
            "entry:d/outside.json",
            "gone:d/x.json",
            "listed:d/outside.json",
            "listed:d/x.json",
        ])
    );
    assert_eq!(poller.listings, listed + 1);
}

#[test]
fn a_directory_known_from_the_journal_is_listed_again_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "d/x.json", "1");
    let (theirs, appender) = mount_store(root);
    let (mut poller, reports) = settled(root, with_journal());
    publish(&theirs, "d/x.json", "{}");
    assert!(appender.flush(Duration::from_secs(5)));
    poller.round();
    reports.take();
    let listed = poller.listings;
    poller.round();
    assert_eq!(poller.listings, listed, "not yet");
    poller.interval = Duration::ZERO;
    poller.round();
    assert_eq!(poller.listings, listed + 1);
    poller.round();
    assert_eq!(poller.listings, listed + 1, "once");
    assert_eq!(reports.take(), Vec::<String>::new());
}

#[test]
fn a_mounts_publishes_during_and_after_a_listing_are_taken_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "d/x.json", "1");
    let (theirs, appender) = mount_store(root);
    let (mut poller, reports) = settled(root, with_journal());
    // Another program's change: listed, and to be looked at once more.
    write(root, "d/outside.json", "1");
    poller.round();
    let listed = poller.listings;
    // The mounts keep publishing: each round's move is explained, none is listed again.
    for n in 0..5 {
        tick();
        publish(&theirs, &format!("d/p{n}.json"), "{}");
        assert!(appender.flush(Duration::from_secs(5)));
        poller.round();
    }
    assert_eq!(poller.listings, listed);
    let got = reports.take();
    assert!(got.contains(&"entry:d/p4.json".to_string()), "{got:?}");
}

#[test]
fn a_directory_a_mount_renames_is_found_below_its_new_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "old/x.json", "1");
    let (theirs, appender) = mount_store(root);
    let (mut poller, reports) = settled(root, with_journal());
    theirs
        .rename(Path::new("old"), Path::new("new"), false)
        .unwrap();
    assert!(appender.flush(Duration::from_secs(5)));
    poller.round();
    assert_eq!(
        reports.take(),
        strings(&["entry:old/x.json", "entry:new/x.json"])
    );
    tick();
    write(root, "new/y.json", "1");
    poller.round();
    assert_eq!(
        reports.take(),
        strings(&["entry:new/y.json", "listed:new/y.json"])
    );
}
