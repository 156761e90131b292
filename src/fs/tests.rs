//! The filesystem struct driven directly, with no kernel: a manual clock and a temp backing dir.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::clock::ManualClock;
use crate::config::{Config, Overrides};

const ME: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};

struct Fixture {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    fs: Arc<CacheFs>,
}

fn fixture(toml: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(toml, Path::new("test.toml"), &Overrides::default()).unwrap();
    let store = Store::open(dir.path(), false).unwrap();
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let fs = CacheFs::new(Arc::new(config), store, clock.clone(), false);
    Fixture { dir, clock, fs }
}

impl Fixture {
    fn put(&self, name: &str, body: &str, age: Duration) {
        let path = self.dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        let mtime = self.clock.now() - age;
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }

    fn names(&self) -> Vec<String> {
        let fh = self.fs.opendir(ROOT).unwrap();
        let mut names = Vec::new();
        self.fs
            .readdir(fh, 0, |_, _, _, name| {
                names.push(name.to_string_lossy().into_owned());
                false
            })
            .unwrap();
        self.fs.releasedir(fh);
        names.retain(|n| n != "." && n != "..");
        names
    }

    fn write_entry(&self, name: &str, body: &[u8]) -> FsResult<()> {
        let (_, opened) = self.fs.create(
            ME,
            ROOT,
            OsStr::new(name),
            0o644,
            0o022,
            libc::O_WRONLY | libc::O_TRUNC,
        )?;
        self.fs.write(opened.fh, 0, body)?;
        let result = self.fs.flush(opened.fh);
        self.fs.release(opened.fh);
        result
    }
}

impl Fixture {
    /// Open `name` for writing the way the kernel does: through the inode its lookup gave,
    /// and on `ESTALE` once more through the inode a fresh lookup gives.
    fn open_for_writing(&self, name: &str, flags: i32) -> Opened {
        let ino = self.fs.lookup(ROOT, OsStr::new(name)).unwrap().attr.ino;
        match self.fs.open(ME, ino, flags) {
            Err(e) if e.errno == libc::ESTALE => {
                let entry = self.fs.lookup(ROOT, OsStr::new(name)).unwrap();
                assert_eq!(
                    entry.ttl,
                    Duration::ZERO,
                    "a name being written is not cached"
                );
                self.fs.open(ME, entry.attr.ino, flags).unwrap()
            }
            opened => opened.unwrap(),
        }
    }
}

fn errno_of<T: std::fmt::Debug>(r: FsResult<T>) -> i32 {
    r.unwrap_err().errno
}

#[test]
fn expired_and_corrupt_entries_are_hidden_and_fresh_stale_shown() {
    let f = fixture("duration = \"60s\"\nstale = \"30s\"\n");
    f.put("fresh.json", "{}", Duration::from_secs(10));
    f.put("stale.json", "{}", Duration::from_secs(70));
    f.put("expired.json", "{}", Duration::from_secs(90));
    f.put("corrupt.json", "{", Duration::from_secs(1));
    f.put("scratch.tmp", "x", Duration::from_secs(1));
    let mut names = f.names();
    names.sort();
    assert_eq!(names, vec!["fresh.json", "stale.json"]);
    assert_eq!(
        errno_of(f.fs.lookup(ROOT, OsStr::new("expired.json"))),
        libc::ENOENT
    );
    assert_eq!(
        errno_of(f.fs.lookup(ROOT, OsStr::new("corrupt.json"))),
        libc::ENOENT
    );
    assert!(f.fs.lookup(ROOT, OsStr::new("scratch.tmp")).is_ok());
}

#[test]
fn kernel_ttl_never_passes_the_next_state_change() {
    let f = fixture("duration = \"60s\"\n");
    f.put("x.json", "{}", Duration::from_millis(59_700));
    let entry = f.fs.lookup(ROOT, OsStr::new("x.json")).unwrap();
    assert!(entry.ttl <= Duration::from_millis(300), "{:?}", entry.ttl);
    f.clock.advance(Duration::from_millis(300));
    assert_eq!(errno_of(f.fs.getattr(entry.attr.ino, None)), libc::ENOENT);
}

#[test]
fn invalid_json_at_close_is_einval_and_the_old_entry_stays() {
    let f = fixture("");
    f.write_entry("x.json", b"{\"v\":1}").unwrap();
    assert_eq!(errno_of(f.write_entry("x.json", b"{\"v\":")), libc::EINVAL);
    assert_eq!(
        std::fs::read(f.dir.path().join("x.json")).unwrap(),
        b"{\"v\":1}"
    );
    assert_eq!(f.fs.stats().writes_rejected.load(Ordering::Relaxed), 1);
    assert_eq!(f.fs.stats().writes_ok.load(Ordering::Relaxed), 1);
    let leftovers: Vec<_> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}

#[test]
fn a_close_without_new_writes_publishes_nothing_and_succeeds() {
    let f = fixture("");
    f.put("x.json", "{\"v\":1}", Duration::ZERO);
    let opened = f.open_for_writing("x.json", libc::O_WRONLY | libc::O_TRUNC);
    f.fs.flush(opened.fh).unwrap(); // the shell's close of the duplicate before writing
    f.fs.write(opened.fh, 0, b"[2]").unwrap();
    f.fs.flush(opened.fh).unwrap();
    f.fs.release(opened.fh);
    assert_eq!(std::fs::read(f.dir.path().join("x.json")).unwrap(), b"[2]");
}

#[test]
fn readers_see_the_old_entry_until_the_writer_closes() {
    let f = fixture("");
    f.put("x.json", "{\"v\":1}", Duration::ZERO);
    let writer = f.open_for_writing("x.json", libc::O_WRONLY | libc::O_TRUNC);
    let ino = writer.ino;
    f.fs.write(writer.fh, 0, b"{\"v\":2}").unwrap();
    let reader = f.fs.open(ME, ino, libc::O_RDONLY).unwrap();
    assert_eq!(f.fs.read(reader.fh, 0, 100).unwrap(), b"{\"v\":1}");
    f.fs.flush(writer.fh).unwrap();
    assert_eq!(
        f.fs.read(reader.fh, 0, 100).unwrap(),
        b"{\"v\":1}",
        "an open reader keeps its version"
    );
    // The written inode is live: the name stays bound to it (the kernel may keep that), and
    // each open of it reads what the name holds at that open.
    let found = f.fs.lookup(ROOT, OsStr::new("x.json")).unwrap();
    assert_eq!(found.attr.ino, ino);
    assert_eq!(found.ttl, Duration::ZERO, "its attributes are never cached");
    let again = f.fs.open(ME, ino, libc::O_RDONLY).unwrap();
    assert_eq!(f.fs.read(again.fh, 0, 100).unwrap(), b"{\"v\":2}");
    assert_eq!(
        f.fs.read(reader.fh, 0, 100).unwrap(),
        b"{\"v\":1}",
        "the first reader still reads its version"
    );
    f.fs.release(reader.fh);
    f.fs.release(again.fh);
}

#[test]
fn append_and_partial_overwrite_are_staged_on_top_of_the_old_content() {
    let f = fixture("");
    f.put("x.json", "[1, 2]", Duration::ZERO);
    let w = f.open_for_writing("x.json", libc::O_WRONLY);
    f.fs.write(w.fh, 1, b"7").unwrap();
    f.fs.flush(w.fh).unwrap();
    f.fs.release(w.fh);
    assert_eq!(
        std::fs::read(f.dir.path().join("x.json")).unwrap(),
        b"[7, 2]"
    );
    let a = f.open_for_writing("x.json", libc::O_WRONLY | libc::O_APPEND);
    f.fs.write(a.fh, 0, b" ").unwrap();
    f.fs.flush(a.fh).unwrap();
    f.fs.release(a.fh);
    assert_eq!(
        std::fs::read(f.dir.path().join("x.json")).unwrap(),
        b"[7, 2] "
    );
}

#[test]
fn writes_past_max_entry_bytes_are_efbig() {
    let f = fixture("max_entry_bytes = 8\n");
    assert_eq!(
        errno_of(f.write_entry("x.json", b"[1,2,3,4,5]")),
        libc::EFBIG
    );
    assert!(!f.dir.path().join("x.json").exists());
}

#[test]
fn a_successful_write_sets_mtime_to_now() {
    let f = fixture("");
    f.clock.advance(Duration::from_secs(3600));
    f.write_entry("x.json", b"1").unwrap();
    let mtime = std::fs::metadata(f.dir.path().join("x.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(mtime, f.clock.now());
}

#[test]
fn renaming_invalid_json_onto_an_entry_changes_nothing() {
    let f = fixture("");
    f.put("x.json", "{}", Duration::ZERO);
    f.put("tmp1", "{", Duration::ZERO);
    f.fs.lookup(ROOT, OsStr::new("tmp1")).unwrap();
    f.fs.lookup(ROOT, OsStr::new("x.json")).unwrap();
    assert_eq!(
        errno_of(f.fs.rename(ROOT, OsStr::new("tmp1"), ROOT, OsStr::new("x.json"), 0)),
        libc::EINVAL
    );
    assert_eq!(std::fs::read(f.dir.path().join("x.json")).unwrap(), b"{}");
    f.put("tmp2", "[3]", Duration::from_secs(5000));
    f.fs.rename(ROOT, OsStr::new("tmp2"), ROOT, OsStr::new("x.json"), 0)
        .unwrap();
    assert_eq!(std::fs::read(f.dir.path().join("x.json")).unwrap(), b"[3]");
    let mtime = std::fs::metadata(f.dir.path().join("x.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(
        mtime,
        f.clock.now() - Duration::from_secs(5000),
        "a scratch file renamed onto an entry keeps its own mtime (SPEC §3)"
    );
}

#[test]
fn rmdir_removes_invisible_leftovers_but_not_visible_entries() {
    let f = fixture("duration = \"60s\"\n");
    std::fs::create_dir(f.dir.path().join("d")).unwrap();
    f.put("d/old.json", "{}", Duration::from_secs(100));
    f.put("d/bad.json", "{", Duration::ZERO);
    f.put("d/tmp", "x", Duration::ZERO);
    f.put("d/ok.json", "{}", Duration::ZERO);
    f.fs.lookup(ROOT, OsStr::new("d")).unwrap();
    assert_eq!(errno_of(f.fs.rmdir(ROOT, OsStr::new("d"))), libc::ENOTEMPTY);
    std::fs::remove_file(f.dir.path().join("d/ok.json")).unwrap();
    f.fs.rmdir(ROOT, OsStr::new("d")).unwrap();
    assert!(!f.dir.path().join("d").exists());
}

#[test]
fn names_over_255_bytes_are_enametoolong_and_links_are_refused() {
    let f = fixture("");
    let long = "a".repeat(251) + ".json";
    assert_eq!(
        errno_of(f.fs.lookup(ROOT, OsStr::new(&long))),
        libc::ENAMETOOLONG
    );
    assert_eq!(f.fs.refuse_special().errno, libc::EPERM);
}

#[test]
fn a_write_to_a_removed_entry_goes_nowhere() {
    let f = fixture("");
    f.put("x.json", "{}", Duration::ZERO);
    let w = f.open_for_writing("x.json", libc::O_WRONLY | libc::O_TRUNC);
    f.fs.write(w.fh, 0, b"[1]").unwrap();
    f.fs.unlink(ROOT, OsStr::new("x.json")).unwrap();
    f.fs.flush(w.fh).unwrap();
    f.fs.release(w.fh);
    assert!(!f.dir.path().join("x.json").exists());
}

#[test]
fn read_only_refuses_changes_with_erofs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.json"), "{}").unwrap();
    let config = Config::from_toml("", Path::new("t.toml"), &Overrides::default()).unwrap();
    let fs = CacheFs::new(
        Arc::new(config),
        Store::open(dir.path(), false).unwrap(),
        Arc::new(crate::clock::SystemClock),
        true,
    );
    let ino = fs.lookup(ROOT, OsStr::new("x.json")).unwrap().attr.ino;
    assert_eq!(errno_of(fs.open(ME, ino, libc::O_WRONLY)), libc::EROFS);
    assert_eq!(errno_of(fs.unlink(ROOT, OsStr::new("x.json"))), libc::EROFS);
    assert_eq!(
        errno_of(fs.mkdir(ME, ROOT, OsStr::new("d"), 0o755, 0)),
        libc::EROFS
    );
    assert!(fs.open(ME, ino, libc::O_RDONLY).is_ok());
}

#[test]
fn listings_page_by_offset_and_resume_where_the_reply_filled_up() {
    let f = fixture("");
    for name in ["a.json", "b.json", "c.json"] {
        f.put(name, "{}", Duration::ZERO);
    }
    let fh = f.fs.opendir(ROOT).unwrap();
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let mut page = 0;
        f.fs.readdir(fh, offset, |next, _, _, name| {
            if page == 2 {
                return true; // full: this name is not taken
            }
            page += 1;
            offset = next;
            seen.push(name.to_string_lossy().into_owned());
            false
        })
        .unwrap();
        if page == 0 {
            break;
        }
    }
    f.fs.releasedir(fh);
    seen.sort();
    assert_eq!(seen, [".", "..", "a.json", "b.json", "c.json"]);
}

#[test]
fn a_writer_of_a_name_the_kernel_caches_is_sent_to_look_it_up_again_uncached() {
    let f = fixture("");
    f.put("x.json", "{}", Duration::ZERO);
    let cached = f.fs.lookup(ROOT, OsStr::new("x.json")).unwrap();
    assert!(cached.ttl > Duration::ZERO);
    assert_eq!(
        errno_of(f.fs.open(ME, cached.attr.ino, libc::O_WRONLY)),
        libc::ESTALE
    );
    let again = f.fs.lookup(ROOT, OsStr::new("x.json")).unwrap();
    assert_ne!(
        again.attr.ino, cached.attr.ino,
        "a fresh inode, not the cached one"
    );
    assert_eq!(again.ttl, Duration::ZERO);
    let w = f.fs.open(ME, again.attr.ino, libc::O_WRONLY).unwrap();
    f.fs.write(w.fh, 0, b"[1]").unwrap();
    f.fs.flush(w.fh).unwrap();
    let after = f.fs.lookup(ROOT, OsStr::new("x.json")).unwrap();
    assert_eq!(
        after.ttl,
        Duration::ZERO,
        "still uncached while the writer is open"
    );
    assert_eq!(
        after.attr.stat.size, 3,
        "the writer's lookup sees its write"
    );
    f.fs.release(w.fh);
    f.clock.advance(coherence::COOLDOWN);
    let later = f.fs.lookup(ROOT, OsStr::new("x.json")).unwrap();
    assert!(
        later.ttl > Duration::ZERO,
        "cached again once the writing is over"
    );
}

/// The adapter only replies: what a lookup answers (found, wait for a read-through, or missing
/// and for how long the kernel may remember that) is decided here.
#[test]
fn a_lookup_answers_found_filling_or_missing_with_how_long_to_remember_it() {
    let f = fixture(
        r#"
duration = "1h"
[[rule]]
match = "live/*.json"
refresh = "echo 1"
[[rule]]
match = "filled/*.json"
refresh = "echo 1"
fill_on_miss = true
"#,
    );
    f.put("a.json", "{}", Duration::ZERO);
    std::fs::create_dir_all(f.dir.path().join("live")).unwrap();
    std::fs::create_dir_all(f.dir.path().join("filled")).unwrap();
    let live = f.fs.lookup(ROOT, OsStr::new("live")).unwrap().attr.ino;
    let filled = f.fs.lookup(ROOT, OsStr::new("filled")).unwrap().attr.ino;
    assert!(matches!(
        f.fs.lookup_answer(ROOT, OsStr::new("a.json")),
        Ok(Lookup::Found(e)) if e.attr.stat.size == 2
    ));
    assert!(matches!(
        f.fs.lookup_answer(ROOT, OsStr::new("nothing.json")),
        Ok(Lookup::Missing { ttl }) if ttl == KERNEL_TTL
    ));
    // A refresh may create it at any moment (another mount, `cachetta refresh`).
    assert!(matches!(
        f.fs.lookup_answer(live, OsStr::new("x.json")),
        Ok(Lookup::Missing { ttl }) if ttl.is_zero()
    ));
    assert!(matches!(
        f.fs.lookup_answer(filled, OsStr::new("x.json")),
        Ok(Lookup::Filling(_))
    ));
}

/// A distributed filesystem's client may answer for a name another client renamed away; once
/// the watcher saw it go, the mount does not show it, until the name holds another file or is
/// reported back.
#[test]
fn a_name_seen_gone_is_hidden_until_it_holds_another_file_or_comes_back() {
    use std::os::unix::fs::MetadataExt;
    let f = fixture("duration = \"1h\"\n");
    f.put("a.json", "{}", Duration::ZERO);
    let name = OsStr::new("a.json");
    assert!(f.fs.lookup(ROOT, name).is_ok());
    // Seen gone after it was last changed.
    f.clock.advance(Duration::from_secs(1));
    f.fs.backing_gone(Path::new("a.json"), None);
    assert_eq!(f.fs.lookup(ROOT, name).unwrap_err().errno, libc::ENOENT);
    // A listing that has the name: it exists on the server after all.
    assert!(f.names().contains(&"a.json".to_string()));
    assert!(f.fs.lookup(ROOT, name).is_ok());
    // Reported back: the watcher's listing has the name with that inode again.
    f.fs.backing_gone(Path::new("a.json"), None);
    let ino = std::fs::metadata(f.dir.path().join("a.json"))
        .unwrap()
        .ino();
    f.fs.backing_listed(Path::new("a.json"), ino + 1);
    assert!(
        f.fs.lookup(ROOT, name).is_err(),
        "another inode listed: still gone"
    );
    f.fs.backing_listed(Path::new("a.json"), ino);
    assert!(f.fs.lookup(ROOT, name).is_ok());
    // Another file at the name: shown, and the memory of the old one is dropped.
    f.fs.backing_gone(Path::new("a.json"), None);
    let tmp = f.dir.path().join("new.tmp");
    std::fs::write(&tmp, "[1]").unwrap();
    std::fs::rename(&tmp, f.dir.path().join("a.json")).unwrap();
    assert_eq!(f.fs.lookup(ROOT, name).unwrap().attr.stat.size, 3);
    // Even on the inode number of the one seen gone: it changed after it was seen gone.
    let ino = std::fs::metadata(f.dir.path().join("a.json"))
        .unwrap()
        .ino();
    f.fs.backing_gone(Path::new("a.json"), Some(ino));
    f.clock.set(SystemTime::UNIX_EPOCH + Duration::from_secs(1));
    f.fs.backing_gone(Path::new("a.json"), Some(ino));
    assert!(
        f.fs.lookup(ROOT, name).is_ok(),
        "changed after it was seen gone"
    );
}

/// A name the kernel was given that the watcher's listing of its directory no longer has is
/// gone, though the watcher never saw it (created and renamed away between two listings).
#[test]
fn a_served_name_missing_from_its_directorys_listing_is_gone() {
    let f = fixture("duration = \"1h\"\n");
    f.put("a.json", "{}", Duration::ZERO);
    f.put("b.json", "{}", Duration::ZERO);
    let (a, b) = (OsStr::new("a.json"), OsStr::new("b.json"));
    assert!(f.fs.lookup(ROOT, a).is_ok());
    assert!(f.fs.lookup(ROOT, b).is_ok());
    f.clock.advance(Duration::from_secs(1));
    f.fs.backing_dir_listed(Path::new(""), |name| (name == b).then_some(1));
    assert_eq!(f.fs.lookup(ROOT, a).unwrap_err().errno, libc::ENOENT);
    assert!(f.fs.lookup(ROOT, b).is_ok());
}

#[test]
fn a_listing_is_reused_within_the_second_only_while_nothing_changed() {
    let f = fixture("duration = \"1h\"\n");
    f.put("a.json", "1", Duration::ZERO);
    assert_eq!(f.names(), ["a.json"]);
    // Behind the mount's back, with no watcher to say so: the listing of a moment ago holds
    // for what is left of its second (SPEC §2's bound for changes in the backing dir).
    f.put("b.json", "2", Duration::ZERO);
    assert_eq!(f.names(), ["a.json"], "reused within the second");
    f.clock.advance(Duration::from_secs(1));
    let mut names = f.names();
    names.sort();
    assert_eq!(names, ["a.json", "b.json"], "read again after it");
    // A change the watcher reports, or one made through the mount, is seen at once.
    std::fs::remove_file(f.dir.path().join("a.json")).unwrap();
    f.fs.backing_changed(Path::new("a.json"));
    assert_eq!(f.names(), ["b.json"], "a reported change is seen at once");
    f.write_entry("c.json", b"3").unwrap();
    let mut names = f.names();
    names.sort();
    assert_eq!(
        names,
        ["b.json", "c.json"],
        "a write through the mount is seen at once"
    );
    // The state of each name is judged anew at each listing: an entry that expires while
    // its listing is reused is not shown.
    f.put("old.json", "4", Duration::from_millis(3_599_500));
    f.fs.backing_changed(Path::new("old.json"));
    assert!(f.names().contains(&"old.json".to_string()));
    f.clock.advance(Duration::from_millis(700));
    assert!(
        !f.names().contains(&"old.json".to_string()),
        "expired, not shown"
    );
}

#[test]
fn passthrough_is_wanted_only_with_cap_sys_admin() {
    let status = |caps: &str| Some(format!("Name:\tcachetta\nCapInh:\t0\nCapEff:\t{caps}\n"));
    assert!(super::may_register_backing_files(status(
        "000001ffffffffff"
    )));
    assert!(!super::may_register_backing_files(status(
        "0000000000000000"
    )));
    assert!(super::may_register_backing_files(status(
        "0000000000200000"
    )));
    assert!(
        super::may_register_backing_files(None),
        "unknown: try, and learn"
    );
}

/// A daemon that saw 100,000 versions written still knows its large entries are JSON: judging
/// a 256 MiB entry again reads it whole, at the lookup of a reader who only asked to open it.
#[test]
fn what_is_known_of_a_large_entry_outlives_a_full_validity_cache() {
    let f = fixture("");
    let big = format!("[{}0]", "0,".repeat(600_000));
    f.put("big.json", &big, Duration::ZERO);
    f.put("small.json", "1", Duration::ZERO);
    for name in ["big.json", "small.json"] {
        f.fs.lookup(ROOT, OsStr::new(name)).unwrap();
    }
    let stat = |name: &str| f.fs.store.stat(Path::new(name)).unwrap();
    assert!(f.fs.is_known(&stat("big.json")) && f.fs.is_known(&stat("small.json")));
    for i in 0..VALIDITY_CACHE_MAX as u64 {
        let written = Version {
            dev: 0,
            ino: (1 << 40) + i,
            size: 10,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
        };
        f.fs.remember_own_publish(written, crate::entry_policy::EntryPolicy::default());
    }
    assert!(f.fs.is_known(&stat("big.json")), "kept");
    assert!(
        !f.fs.is_known(&stat("small.json")),
        "forgotten: cheap to judge again"
    );
}
