//! Tests of `write_state`: one per transition, on a backing dir in a temp dir, no mount. Each
//! asserts what the writer (or a reader of the entry) would see.

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::time::{Duration, UNIX_EPOCH};

use tempfile::TempDir;

use super::*;

const MAX: u64 = 1 << 20;

fn key() -> &'static Path {
    Path::new("x.json")
}

/// A backing dir, with the entry `x.json` holding `entry` if given, opened as a base.
fn backing(entry: Option<&str>) -> (TempDir, Store, Option<File>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false).unwrap();
    let base = entry.map(|content| {
        std::fs::write(dir.path().join(key()), content).unwrap();
        File::open(dir.path().join(key())).unwrap()
    });
    (dir, store, base)
}

fn open(base: Option<File>, o_trunc: bool) -> WriteState {
    WriteState::open(base, o_trunc, false, 0o644, None)
}

fn text(file: Option<&File>) -> String {
    let Some(file) = file else {
        return String::new();
    };
    let mut buf = vec![0; file.metadata().unwrap().len() as usize];
    file.read_exact_at(&mut buf, 0).unwrap();
    String::from_utf8(buf).unwrap()
}

/// What a read through the open shows.
fn reads(state: &WriteState) -> String {
    text(state.current())
}

/// The entry as everyone else sees it.
fn entry(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.path().join(key())).unwrap_or_default()
}

fn staging_files(dir: &TempDir) -> usize {
    std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|item| store::is_staging_name(&item.as_ref().unwrap().file_name()))
        .count()
}

fn write(state: &mut WriteState, store: &Store, offset: u64, data: &str) -> FsResult<()> {
    state.write(store, key(), offset, data.as_bytes(), MAX)
}

/// A close that hands content over, published as `CacheFs::commit` would: by rename.
fn close_and_publish(state: &mut WriteState, dir: &TempDir) -> (String, Times) {
    let Close::Publish { staging, times } = state.close() else {
        panic!("the close has nothing to publish");
    };
    let content = text(Some(&staging.file));
    let from = dir.path().join(staging.name());
    std::fs::rename(&from, dir.path().join(key())).unwrap();
    state.published(File::open(dir.path().join(key())).unwrap());
    (content, times)
}

/// A close whose content is refused (invalid JSON), as `CacheFs::commit` does.
fn close_and_refuse(state: &mut WriteState) -> String {
    let Close::Publish { staging, .. } = state.close() else {
        panic!("the close has nothing to validate");
    };
    let content = text(Some(&staging.file));
    state.keep(staging);
    content
}

fn io_error(errno: i32) -> FsError {
    FsError::io(key().display(), std::io::Error::from_raw_os_error(errno))
}

#[test]
fn an_open_reads_the_entry_as_it_is_and_stages_nothing() {
    let (dir, _store, base) = backing(Some(r#"{"a":1}"#));
    let mut state = open(base, false);
    assert!(state.has_entry());
    assert_eq!(reads(&state), r#"{"a":1}"#);
    assert!(state.staged().is_none());
    assert!(matches!(state.close(), Close::Unwritten));
    assert_eq!(staging_files(&dir), 0);
}

#[test]
fn an_o_trunc_open_reads_empty_and_its_first_write_starts_from_empty() {
    let (dir, store, base) = backing(Some(r#"{"old":1}"#));
    let mut state = open(base, true);
    assert!(state.has_entry());
    assert_eq!(reads(&state), "");
    write(&mut state, &store, 0, "{}").unwrap();
    assert_eq!(reads(&state), "{}");
    assert_eq!(entry(&dir), r#"{"old":1}"#, "staged until the close");
    assert_eq!(close_and_publish(&mut state, &dir).0, "{}");
}

#[test]
fn an_open_of_no_entry_reads_empty_and_writes_from_empty() {
    let (dir, store, base) = backing(None);
    let mut state = open(base, false);
    assert!(!state.has_entry());
    assert_eq!(reads(&state), "");
    write(&mut state, &store, 0, "1").unwrap();
    assert_eq!(
        close_and_publish(&mut state, &dir),
        ("1".into(), Times::Now)
    );
}

#[test]
fn a_write_is_staged_on_a_copy_of_the_entry_which_stays_as_it_was() {
    let (dir, store, base) = backing(Some(r#"{"a":1}"#));
    let mut state = open(base, false);
    write(&mut state, &store, 5, "2").unwrap();
    assert_eq!(reads(&state), r#"{"a":2}"#);
    assert_eq!(text(state.staged()), r#"{"a":2}"#);
    assert_eq!(entry(&dir), r#"{"a":1}"#);
    assert_eq!(staging_files(&dir), 1);
}

#[test]
fn an_append_write_goes_to_the_end_whatever_the_offset() {
    let (dir, store, base) = backing(Some("[1"));
    let mut state = WriteState::open(base, false, true, 0o644, None);
    write(&mut state, &store, 0, ",2").unwrap();
    write(&mut state, &store, 0, "]").unwrap();
    assert_eq!(close_and_publish(&mut state, &dir).0, "[1,2]");
}

#[test]
fn a_write_past_max_entry_bytes_fails_with_efbig_and_so_does_everything_after() {
    let (dir, store, base) = backing(Some("[1]"));
    let mut state = open(base, false);
    let err = state.write(&store, key(), 2, b"...", 4).unwrap_err();
    assert_eq!(err.errno, libc::EFBIG);
    assert_eq!(staging_files(&dir), 0, "no staging file left behind");
    assert_eq!(reads(&state), "[1]", "reads show the entry as opened");
    assert_eq!(
        write(&mut state, &store, 0, "2").unwrap_err().errno,
        libc::EFBIG
    );
    assert!(matches!(state.close(), Close::Failed(libc::EFBIG)));
    assert!(matches!(state.close(), Close::Failed(libc::EFBIG)));
    assert_eq!(entry(&dir), "[1]");
}

#[test]
fn a_failure_drops_the_staged_content_and_every_later_call_answers_its_errno() {
    let (dir, store, base) = backing(Some("[1]"));
    let mut state = open(base, false);
    write(&mut state, &store, 0, "[2]").unwrap();
    let err = state.fail(&store, key(), io_error(libc::ENOSPC));
    assert_eq!(err.errno, libc::ENOSPC);
    assert_eq!(staging_files(&dir), 0);
    assert!(state.staged().is_none());
    assert_eq!(
        write(&mut state, &store, 0, "[3]").unwrap_err().errno,
        libc::ENOSPC
    );
    let past_max = state.truncate(&store, key(), MAX + 1, MAX).unwrap_err();
    assert_eq!(past_max.errno, libc::ENOSPC, "the first failure, not EFBIG");
    assert_eq!(state.set_times(Some(SetTime::Now), None).ok(), Some(false));
    // A second failure does not replace the first.
    state.fail(&store, key(), io_error(libc::EIO));
    assert!(matches!(state.close(), Close::Failed(libc::ENOSPC)));
    assert_eq!(state.release().map(|_| ()), None);
    assert_eq!(entry(&dir), "[1]");
}

#[test]
fn a_truncate_after_open_is_a_write() {
    let (dir, store, base) = backing(Some(r#"{"a":1}xx"#));
    let mut state = open(base, false);
    state.truncate(&store, key(), 7, MAX).unwrap();
    assert_eq!(reads(&state), r#"{"a":1}"#);
    assert_eq!(entry(&dir), r#"{"a":1}xx"#);
    assert_eq!(
        close_and_publish(&mut state, &dir),
        (r#"{"a":1}"#.into(), Times::Now)
    );
}

#[test]
fn a_truncate_past_max_entry_bytes_fails_with_efbig_before_staging_anything() {
    let (dir, store, base) = backing(Some("[1]"));
    let mut state = open(base, false);
    let err = state.truncate(&store, key(), 11, 10).unwrap_err();
    assert_eq!(err.errno, libc::EFBIG);
    assert_eq!(staging_files(&dir), 0);
    assert_eq!(
        write(&mut state, &store, 0, "[2]").unwrap_err().errno,
        libc::EFBIG
    );
    assert!(matches!(state.close(), Close::Failed(libc::EFBIG)));
}

#[test]
fn o_trunc_after_open_is_not_a_write_but_empties_what_the_open_starts_from() {
    let (dir, store, base) = backing(Some(r#"{"old":1}"#));
    let mut state = open(base, false);
    assert!(state.truncate_at_open());
    assert_eq!(reads(&state), "");
    assert!(matches!(state.close(), Close::Unwritten));
    assert_eq!(entry(&dir), r#"{"old":1}"#);
    assert_eq!(staging_files(&dir), 0);
    write(&mut state, &store, 0, "{}").unwrap();
    assert_eq!(close_and_publish(&mut state, &dir).0, "{}");
}

#[test]
fn o_trunc_after_open_is_not_taken_once_something_is_staged() {
    let (_dir, store, base) = backing(Some("[1]"));
    let mut state = open(base, false);
    write(&mut state, &store, 1, "2").unwrap();
    assert!(!state.truncate_at_open());
    assert_eq!(reads(&state), "[2]");
    close_and_refuse(&mut state);
    assert!(!state.truncate_at_open(), "kept content is staged too");
    assert_eq!(reads(&state), "[2]");
}

#[test]
fn a_close_without_new_writes_publishes_nothing() {
    let (dir, store, base) = backing(Some("[1]"));
    let mut state = open(base, false);
    assert!(matches!(state.close(), Close::Unwritten));
    write(&mut state, &store, 1, "2").unwrap();
    close_and_publish(&mut state, &dir);
    assert!(matches!(state.close(), Close::Unwritten));
    assert_eq!(staging_files(&dir), 0);
}

#[test]
fn a_close_after_writes_publishes_them_with_now() {
    let (dir, store, base) = backing(Some("[1]"));
    let mut state = open(base, false);
    write(&mut state, &store, 1, "2").unwrap();
    assert_eq!(
        close_and_publish(&mut state, &dir),
        ("[2]".into(), Times::Now)
    );
    assert_eq!(entry(&dir), "[2]");
}

#[test]
fn times_set_after_the_last_write_are_published() {
    let (dir, store, base) = backing(Some("[1]"));
    let mut state = open(base, false);
    write(&mut state, &store, 1, "2").unwrap();
    let at = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let set = state.set_times(Some(SetTime::At(at)), Some(SetTime::At(at)));
    assert_eq!(set.ok(), Some(true));
    assert_eq!(
        state
            .staged()
            .unwrap()
            .metadata()
            .unwrap()
            .modified()
            .unwrap(),
        at
    );
    assert_eq!(
        close_and_publish(&mut state, &dir),
        ("[2]".into(), Times::Set)
    );
}

#[test]
fn a_write_after_setting_times_publishes_with_now_again() {
    let (dir, store, base) = backing(Some("[1]"));
    let mut state = open(base, false);
    write(&mut state, &store, 1, "2").unwrap();
    assert_eq!(state.set_times(None, Some(SetTime::Now)).ok(), Some(true));
    write(&mut state, &store, 1, "3").unwrap();
    assert_eq!(
        close_and_publish(&mut state, &dir),
        ("[3]".into(), Times::Now)
    );
}

#[test]
fn a_truncate_after_setting_times_publishes_with_now_again() {
    let (dir, store, base) = backing(Some("[1]  "));
    let mut state = open(base, false);
    write(&mut state, &store, 1, "2").unwrap();
    assert_eq!(state.set_times(None, Some(SetTime::Now)).ok(), Some(true));
    state.truncate(&store, key(), 3, MAX).unwrap();
    assert_eq!(
        close_and_publish(&mut state, &dir),
        ("[2]".into(), Times::Now)
    );
}

#[test]
fn times_set_with_nothing_written_since_the_last_close_are_for_the_entry() {
    let (dir, store, base) = backing(Some("[1]"));
    let mut state = open(base, false);
    assert_eq!(state.set_times(None, Some(SetTime::Now)).ok(), Some(false));
    write(&mut state, &store, 1, "2").unwrap();
    close_and_publish(&mut state, &dir);
    assert_eq!(state.set_times(None, Some(SetTime::Now)).ok(), Some(false));
    write(&mut state, &store, 0, "{").unwrap();
    close_and_refuse(&mut state);
    assert_eq!(state.set_times(None, Some(SetTime::Now)).ok(), Some(false));
}

#[test]
fn a_refused_close_keeps_the_staged_content_for_the_writer_to_fix() {
    let (dir, store, base) = backing(Some("[1]"));
    let mut state = open(base, true);
    write(&mut state, &store, 0, "{").unwrap();
    assert_eq!(close_and_refuse(&mut state), "{");
    assert_eq!(entry(&dir), "[1]", "the previous entry stays as it was");
    assert_eq!(reads(&state), "{");
    assert!(matches!(state.close(), Close::Unwritten), "no new writes");
    assert_eq!(staging_files(&dir), 1);
    write(&mut state, &store, 1, "}").unwrap();
    assert_eq!(
        close_and_publish(&mut state, &dir),
        ("{}".into(), Times::Now)
    );
}

#[test]
fn after_a_publish_the_open_goes_on_from_what_it_published() {
    let (dir, store, base) = backing(Some("[1]"));
    let mut state = open(base, true);
    write(&mut state, &store, 0, "{}").unwrap();
    close_and_publish(&mut state, &dir);
    assert_eq!(reads(&state), "{}");
    assert!(state.staged().is_none());
    write(&mut state, &store, 2, "  ").unwrap();
    assert_eq!(close_and_publish(&mut state, &dir).0, "{}  ");
}

#[test]
fn a_failed_publish_answers_its_errno_from_then_on() {
    let (dir, store, base) = backing(Some("[1]"));
    let mut state = open(base, false);
    write(&mut state, &store, 1, "2").unwrap();
    let Close::Publish { staging, .. } = state.close() else {
        panic!("the close has nothing to publish");
    };
    // The publish removes the staging file when it fails.
    store.discard(staging);
    state.fail(&store, key(), io_error(libc::EIO));
    assert!(matches!(state.close(), Close::Failed(libc::EIO)));
    assert_eq!(
        write(&mut state, &store, 0, "[3]").unwrap_err().errno,
        libc::EIO
    );
    assert_eq!(entry(&dir), "[1]");
    assert_eq!(staging_files(&dir), 0);
}

#[test]
fn the_last_close_drops_the_staged_content() {
    let (dir, store, base) = backing(Some("[1]"));
    let mut state = open(base, false);
    assert!(state.release().is_none());
    write(&mut state, &store, 1, "2").unwrap();
    store.discard(state.release().expect("written content"));
    assert_eq!(staging_files(&dir), 0);
    write(&mut state, &store, 0, "{").unwrap();
    close_and_refuse(&mut state);
    store.discard(state.release().expect("kept content"));
    assert_eq!(staging_files(&dir), 0);
    assert_eq!(entry(&dir), "[1]");
}

#[test]
fn staged_content_carries_the_entry_user_attributes_even_after_o_trunc() {
    let (_dir, store, base) = backing(Some("[1]"));
    let base = base.unwrap();
    let name = OsStr::new("user.note");
    if rustix::fs::fsetxattr(&base, name, b"kept", rustix::fs::XattrFlags::empty()).is_err() {
        return; // The temp dir's filesystem has no user attributes.
    }
    let mut state = open(Some(base), true);
    write(&mut state, &store, 0, "{}").unwrap();
    let mut value = [0u8; 16];
    let n = rustix::fs::fgetxattr(state.staged().unwrap(), name, &mut value).unwrap();
    assert_eq!(&value[..n], b"kept");
}
