//! The library API end to end, on real files in a temp dir: every `Cachetta` method, expiry by
//! a moved clock and by `utimensat`, corrupt files, the hot set against changes made behind
//! its back, and `cached` computing once for many concurrent callers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use cachetta::clock::ManualClock;
use cachetta::{hash, Cachetta, InfoState};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

const MINUTE: Duration = Duration::from_secs(60);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A cache at `dir/name` on a clock that only moves when told.
fn manual(dir: &Path, name: &str) -> (Cachetta, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(t0()));
    (Cachetta::new(dir.join(name)).clock(clock.clone()), clock)
}

/// Set a file's mtime, as `touch -m -d` does.
fn set_mtime(path: &Path, mtime: SystemTime) {
    crate::common::set_mtime(path, mtime).unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Weather {
    city: String,
    celsius: f64,
}

// --- configuration -------------------------------------------------------------------------

#[test]
fn defaults_are_seven_days_reading_and_writing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("x.json"));
    let info = cache.info();
    assert_eq!(info.duration, 7 * 24 * 3600);
    assert_eq!(info.stale_duration, 0);
    cache.write(&1).unwrap();
    assert_eq!(cache.read::<i32>().unwrap(), Some(1));
}

#[test]
fn clone_with_builders_is_the_seeds_copy() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("x.json"));
    cache.write(&1).unwrap();
    let blind = cache.clone().read_enabled(false);
    assert_eq!(blind.read::<i32>().unwrap(), None);
    assert_eq!(cache.read::<i32>().unwrap(), Some(1));
    let longer = cache.clone().duration(Duration::from_secs(2 * 86400));
    assert_eq!(longer.info().duration, 2 * 86400);
    assert_eq!(cache.info().duration, 7 * 86400);
}

#[test]
fn write_disabled_writes_nothing_and_cached_still_returns() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("x.json")).write_enabled(false);
    cache.write(&1).unwrap();
    assert_eq!(cache.cached(&(), || 5).unwrap(), 5);
    assert!(names(dir.path()).is_empty());
}

#[test]
fn read_disabled_always_computes_and_still_writes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("x.json")).read_enabled(false);
    assert_eq!(cache.cached(&(), || 1).unwrap(), 1);
    assert_eq!(cache.cached(&(), || 2).unwrap(), 2);
    let reader = Cachetta::new(dir.path().join("x.json"));
    assert_eq!(reader.read::<i32>().unwrap(), Some(2));
}

// --- paths ---------------------------------------------------------------------------------

#[test]
fn join_and_slash_are_the_same_subpath() {
    let dir = tempfile::tempdir().unwrap();
    let root = Cachetta::new(dir.path());
    let a = &root / "users" / "me.json";
    let b = root.join("users/me.json");
    a.write(&json!({"id": 1})).unwrap();
    assert_eq!(b.read::<Value>().unwrap(), Some(json!({"id": 1})));
    assert!(dir.path().join("users/me.json").is_file());
}

#[test]
fn auto_keys_put_each_argument_list_in_a_sibling_file() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("weather.json"));
    cache.cached(&("paris",), || 20).unwrap();
    cache.cached(&("oslo",), || 3).unwrap();
    cache.cached(&(), || 0).unwrap();
    let mut want = vec![
        format!("weather-{}.json", hash(&("paris",))),
        format!("weather-{}.json", hash(&("oslo",))),
        "weather.json".to_string(),
    ];
    want.sort();
    assert_eq!(names(dir.path()), want);
    assert_eq!(
        cache.at(&("oslo",)).unwrap().read::<i32>().unwrap(),
        Some(3)
    );
}

#[test]
fn folder_path_holds_one_hashed_entry_per_argument_list() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("llm"));
    cache
        .cached(&("prompt", 0.5), || "answer".to_string())
        .unwrap();
    assert_eq!(
        names(&dir.path().join("llm")),
        vec![format!("{}.json", hash(&("prompt", 0.5)))]
    );
}

#[test]
fn dynamic_path_is_a_function_of_the_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    let cache =
        Cachetta::dynamic(move |args| base.join(format!("{}.json", args[0].as_str().unwrap())));
    let w = cache
        .cached(&("paris",), || Weather {
            city: "paris".into(),
            celsius: 21.5,
        })
        .unwrap();
    assert_eq!(w.celsius, 21.5);
    assert_eq!(names(dir.path()), vec!["paris.json"]);
    let root = Cachetta::new(dir.path());
    let by_fn = root.join_fn(|args| format!("{}/{}.json", args[0].as_str().unwrap(), args[1]));
    by_fn.cached(&("user", 7), || 1).unwrap();
    assert!(dir.path().join("user/7.json").is_file());
}

// --- read and write ------------------------------------------------------------------------

#[test]
fn write_then_read_round_trips_a_struct() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("w.json"));
    let w = Weather {
        city: "oslo".into(),
        celsius: -3.0,
    };
    cache.write(&w).unwrap();
    assert_eq!(cache.read::<Weather>().unwrap(), Some(w));
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("w.json")).unwrap()).unwrap();
    assert_eq!(on_disk, json!({"city": "oslo", "celsius": -3.0}));
}

#[test]
fn missing_entry_reads_none() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("nope/x.json"));
    assert_eq!(cache.read::<Value>().unwrap(), None);
    assert!(
        !dir.path().join("nope").exists(),
        "a read must not create directories"
    );
}

#[test]
fn write_is_atomic_creates_directories_and_leaves_no_staging_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/x.json");
    let cache = Cachetta::new(&path);
    cache.write(&json!({"v": "old"})).unwrap();
    let old = std::fs::File::open(&path).unwrap();
    let big: Vec<u64> = (0..200_000).collect();
    cache.write(&big).unwrap();
    // A reader that opened the old entry keeps reading all of it: it was replaced by rename.
    assert_eq!(std::io::read_to_string(old).unwrap(), r#"{"v":"old"}"#);
    assert_eq!(cache.read::<Vec<u64>>().unwrap(), Some(big));
    assert_eq!(names(&dir.path().join("a/b")), vec!["x.json"]);
}

#[test]
fn entry_expires_when_the_clock_passes_its_duration() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, clock) = manual(dir.path(), "x.json");
    let cache = cache.duration(MINUTE);
    cache.write(&1).unwrap();
    clock.advance(Duration::from_secs(59));
    assert_eq!(cache.read::<i32>().unwrap(), Some(1));
    clock.advance(Duration::from_secs(1));
    assert_eq!(cache.read::<i32>().unwrap(), None);
    assert!(
        cache.exists(),
        "expiry hides the entry, it does not delete it"
    );
}

#[test]
fn entry_aged_with_utimensat_expires() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.json");
    let cache = Cachetta::new(&path).duration(Duration::from_secs(3600));
    cache.write(&1).unwrap();
    assert_eq!(cache.read::<i32>().unwrap(), Some(1));
    set_mtime(&path, SystemTime::now() - Duration::from_secs(2 * 3600));
    assert_eq!(cache.read::<i32>().unwrap(), None);
    let info = cache.info();
    assert_eq!(info.state, Some(InfoState::Expired));
    assert!(info.expired && !info.stale);
    assert!(info.age.unwrap() >= 7200.0);
    set_mtime(&path, SystemTime::now());
    assert_eq!(cache.read::<i32>().unwrap(), Some(1));
}

#[test]
fn future_mtime_is_fresh_with_age_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.json");
    let cache = Cachetta::new(&path).duration(MINUTE);
    cache.write(&1).unwrap();
    set_mtime(&path, SystemTime::now() + Duration::from_secs(3600));
    assert_eq!(cache.read::<i32>().unwrap(), Some(1));
    assert_eq!(cache.age(), Some(Duration::ZERO));
    assert_eq!(cache.info().age, Some(0.0));
}

#[test]
fn corrupt_entry_is_a_miss_and_cached_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.json");
    std::fs::write(&path, b"{\"truncated\": ").unwrap();
    let cache = Cachetta::new(&path);
    assert_eq!(cache.read::<Value>().unwrap(), None);
    let info = cache.info();
    assert_eq!(info.state, Some(InfoState::Corrupt));
    assert!(info.exists && !info.stale);
    assert_eq!(
        cache.cached(&(), || json!({"ok": true})).unwrap(),
        json!({"ok": true})
    );
    assert_eq!(cache.read::<Value>().unwrap(), Some(json!({"ok": true})));
}

#[test]
fn invalid_utf8_and_empty_files_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [("e.json", &b""[..]), ("u.json", &b"\"\xff\""[..])] {
        std::fs::write(dir.path().join(name), bytes).unwrap();
        let cache = Cachetta::new(dir.path().join(name));
        assert_eq!(cache.read::<Value>().unwrap(), None, "{name}");
        assert_eq!(cache.info().state, Some(InfoState::Corrupt), "{name}");
    }
}

#[test]
fn entry_of_another_type_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("x.json"));
    cache.write(&"text").unwrap();
    assert_eq!(cache.read::<Weather>().unwrap(), None);
    assert_eq!(cache.read::<String>().unwrap(), Some("text".into()));
}

#[test]
fn symlinked_entry_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("real.json"), "1").unwrap();
    std::os::unix::fs::symlink(dir.path().join("real.json"), dir.path().join("link.json")).unwrap();
    let cache = Cachetta::new(dir.path().join("link.json"));
    assert_eq!(cache.read::<i32>().unwrap(), None);
    assert!(!cache.exists());
}

#[test]
fn file_in_place_of_a_directory_is_a_miss_to_read_and_an_error_to_write() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), "x").unwrap();
    let cache = Cachetta::new(dir.path().join("file/x.json"));
    assert_eq!(cache.read::<i32>().unwrap(), None);
    let err = cache.write(&1).unwrap_err();
    assert!(matches!(err, cachetta::library::Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("file"), "{err}");
}

// --- invalidate, clear, exists, age, info --------------------------------------------------

#[test]
fn invalidate_deletes_whatever_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, clock) = manual(dir.path(), "x.json");
    let cache = cache.duration(MINUTE);
    cache.write(&1).unwrap();
    clock.advance(MINUTE * 10);
    assert!(cache.exists());
    cache.invalidate().unwrap();
    assert!(!cache.exists());
    assert_eq!(cache.age(), None);
    cache.invalidate().unwrap();
}

#[test]
fn clear_sweeps_only_entries_past_duration_plus_stale() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, clock) = manual(dir.path(), "llm");
    let cache = cache.duration(MINUTE).stale_duration(MINUTE);
    cache.cached(&("old",), || 1).unwrap();
    std::fs::create_dir_all(dir.path().join("llm/sub")).unwrap();
    (&cache / "sub/deep.json").write(&2).unwrap();
    std::fs::write(dir.path().join("llm/notes.txt"), "not an entry").unwrap();
    clock.advance(MINUTE * 2);
    cache.cached(&("new",), || 3).unwrap();
    clock.advance(MINUTE);
    // old: 3 min (dead), deep: 3 min (dead), new: 1 min (stale, still servable).
    cache.clear().unwrap();
    assert!(!cache.at(&("old",)).unwrap().exists());
    assert!(!dir.path().join("llm/sub/deep.json").exists());
    assert!(dir.path().join("llm/sub").is_dir(), "directories stay");
    assert!(cache.at(&("new",)).unwrap().exists());
    assert!(
        dir.path().join("llm/notes.txt").exists(),
        "only entries are swept"
    );
}

#[test]
fn clear_of_an_entry_path_sweeps_its_automatic_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, clock) = manual(dir.path(), "w.json");
    let cache = cache.duration(MINUTE);
    cache.cached(&("a",), || 1).unwrap();
    cache.cached(&(), || 0).unwrap();
    std::fs::write(dir.path().join("w-other.json"), "1").unwrap();
    clock.advance(MINUTE);
    cache.clear().unwrap();
    assert_eq!(names(dir.path()), vec!["w-other.json"]);
}

#[test]
fn clear_force_removes_the_folder_and_writes_recreate_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("llm"));
    cache.cached(&("a",), || 1).unwrap();
    cache.clear_force().unwrap();
    assert!(!dir.path().join("llm").exists());
    cache.clear_force().unwrap();
    cache.cached(&("a",), || 2).unwrap();
    assert_eq!(cache.at(&("a",)).unwrap().read::<i32>().unwrap(), Some(2));
}

#[test]
fn age_and_info_follow_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, clock) = manual(dir.path(), "x.json");
    let cache = cache.duration(MINUTE).stale_duration(MINUTE / 2);
    let missing = cache.info();
    assert!(!missing.exists && !missing.expired && !missing.stale);
    assert_eq!(
        (missing.state, missing.age, missing.size),
        (None, None, None)
    );
    cache.write(&json!([1, 2, 3])).unwrap();
    clock.advance(Duration::from_millis(70_250));
    assert_eq!(cache.age(), Some(Duration::from_millis(70_250)));
    let info = cache.info();
    assert_eq!(info.state, Some(InfoState::Stale));
    assert!(info.exists && info.expired && info.stale && !info.refreshing);
    assert_eq!(info.age, Some(70.25));
    assert_eq!(info.ttl, Some(-10));
    assert_eq!((info.duration, info.stale_duration), (60, 30));
    assert_eq!(info.size, Some(7));
    assert_eq!(PathBuf::from(&info.path), dir.path().join("x.json"));
    let text = serde_json::to_string(&info).unwrap();
    assert!(text.starts_with(r#"{"exists":true,"state":"stale","age":70.25,"ttl":-10,"expired":true,"stale":true,"duration":60,"stale_duration":30,"stale_if_error":0,"overrides":[],"path":"#), "{text}");
    assert!(
        text.ends_with(r#""size":7,"refreshing":false,"last_refresh":null}"#),
        "{text}"
    );
}

// --- the hot set ---------------------------------------------------------------------------

#[test]
fn hot_set_never_hides_a_change_made_behind_its_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.json");
    let cache = Cachetta::new(&path).lru_size(8);
    cache.write(&1).unwrap();
    assert_eq!(cache.read::<i32>().unwrap(), Some(1));
    // Same size, new content, written by someone else.
    std::fs::write(&path, "2").unwrap();
    assert_eq!(cache.read::<i32>().unwrap(), Some(2));
    std::fs::remove_file(&path).unwrap();
    assert_eq!(cache.read::<i32>().unwrap(), None);
}

#[test]
fn hot_set_honours_duration() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, clock) = manual(dir.path(), "x.json");
    let cache = cache.duration(MINUTE).lru_size(8);
    cache.write(&1).unwrap();
    assert_eq!(cache.read::<i32>().unwrap(), Some(1));
    clock.advance(MINUTE);
    assert_eq!(cache.read::<i32>().unwrap(), None);
}

/// The names of the files opened in `dir` since the last call, from an inotify watch made
/// with `IN_OPEN` (a `stat` is no open: only reading an entry's bytes makes one).
struct Opens {
    fd: rustix::fd::OwnedFd,
}

impl Opens {
    fn watch(dir: &Path) -> Opens {
        use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).unwrap();
        inotify::add_watch(&fd, dir, WatchFlags::OPEN).unwrap();
        Opens { fd }
    }

    fn take(&self) -> Vec<String> {
        use rustix::fs::inotify::{ReadFlags, Reader};
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = Reader::new(&self.fd, &mut buf);
        let mut opened = Vec::new();
        loop {
            match reader.next() {
                Ok(event) if event.events().contains(ReadFlags::OPEN) => opened.push(
                    event
                        .file_name()
                        .map_or("<the dir>".into(), |n| n.to_string_lossy().into_owned()),
                ),
                Ok(_) => {}
                Err(rustix::io::Errno::AGAIN) => return opened,
                Err(e) => panic!("reading inotify events: {e}"),
            }
        }
    }
}

#[test]
fn hot_set_is_safe_across_threads() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("many")).lru_size(4);
    let run = |keys: u32| -> usize {
        let computed = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..8)
            .map(|t| {
                let (cache, computed) = (cache.clone(), computed.clone());
                thread::spawn(move || {
                    for i in 0..50u32 {
                        let key = (i % keys,);
                        let computed = computed.clone();
                        let got = cache
                            .cached(&key, move || {
                                computed.fetch_add(1, Ordering::SeqCst);
                                i % keys * 100
                            })
                            .unwrap();
                        assert_eq!(got, i % keys * 100, "thread {t}");
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        computed.load(Ordering::SeqCst)
    };
    // More keys than the hot set holds: entries come and go under eight threads.
    assert_eq!(run(10), 10, "each key is computed once, then read");
    // As many keys as it holds, all written (so kept) a moment ago: 400 reads from eight
    // threads are served from memory. Not one opens a file; without the hot set every read
    // would.
    for k in 0..4u32 {
        cache.at(&(k,)).unwrap().write(&(k * 100)).unwrap();
    }
    let opens = Opens::watch(&dir.path().join("many"));
    assert_eq!(run(4), 0, "the entries are fresh: nothing is computed");
    let opened = opens.take();
    assert!(
        opened.is_empty(),
        "{} files opened to serve hot entries: {:?}...",
        opened.len(),
        &opened[..opened.len().min(4)]
    );
    // The watch does see an open: a read of an entry the hot set does not hold.
    cache.at(&(9,)).unwrap().read::<u32>().unwrap();
    assert_eq!(opens.take().len(), 1);
}

// --- cached --------------------------------------------------------------------------------

#[test]
fn cached_computes_on_a_miss_and_reads_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("x.json"));
    let calls = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let calls = calls.clone();
        let got = cache
            .cached(&(), move || {
                calls.fetch_add(1, Ordering::SeqCst);
                "v".to_string()
            })
            .unwrap();
        assert_eq!(got, "v");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn concurrent_cached_calls_on_one_key_compute_once() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("slow.json"));
    let calls = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(16));
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let (cache, calls, start) = (cache.clone(), calls.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                cache
                    .cached(&("k",), move || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        thread::sleep(Duration::from_millis(300));
                        Weather {
                            city: "k".into(),
                            celsius: 1.0,
                        }
                    })
                    .unwrap()
            })
        })
        .collect();
    for c in callers {
        assert_eq!(c.join().unwrap().city, "k");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn callers_that_joined_a_panicking_computation_compute_for_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("p.json"));
    let (started_tx, started_rx) = mpsc::channel();
    let leader = {
        let cache = cache.clone();
        thread::spawn(move || {
            cache.cached(&(), move || -> i32 {
                started_tx.send(()).unwrap();
                thread::sleep(Duration::from_millis(200));
                panic!("leader fails");
            })
        })
    };
    started_rx.recv().unwrap();
    let follower = cache.cached(&(), || 7).unwrap();
    assert_eq!(follower, 7);
    assert!(
        leader.join().is_err(),
        "the panic reaches the leader's caller"
    );
}

#[test]
fn condition_decides_what_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("c.json"))
        .condition(|v| v.get("ok") == Some(&Value::Bool(true)));
    let got = cache.cached(&(), || json!({"ok": false})).unwrap();
    assert_eq!(got, json!({"ok": false}));
    assert!(!cache.exists());
    cache.cached(&(), || json!({"ok": true})).unwrap();
    assert_eq!(cache.read::<Value>().unwrap(), Some(json!({"ok": true})));
}

#[test]
fn failed_computation_writes_nothing_and_shows_in_info() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("f.json"));
    let got: anyhow::Result<i32> = cache.try_cached(&(), || Err(anyhow::anyhow!("upstream 503")));
    assert_eq!(got.unwrap_err().to_string(), "upstream 503");
    assert!(!cache.exists());
    assert_eq!(cache.info().refresh_error.as_deref(), Some("upstream 503"));
    let ok: anyhow::Result<i32> = cache.try_cached(&(), || Ok(1));
    assert_eq!(ok.unwrap(), 1);
    assert_eq!(cache.info().refresh_error, None);
}

#[test]
fn stale_entry_is_served_at_once_and_refreshed_once_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, clock) = manual(dir.path(), "s.json");
    let cache = cache.duration(MINUTE).stale_duration(MINUTE);
    cache.write(&1).unwrap();
    clock.advance(MINUTE + Duration::from_secs(1));
    let calls = Arc::new(AtomicUsize::new(0));
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
    for _ in 0..5 {
        let (calls, release_rx) = (calls.clone(), release_rx.clone());
        let got = cache
            .cached(&(), move || {
                calls.fetch_add(1, Ordering::SeqCst);
                release_rx.lock().unwrap().recv().unwrap();
                2
            })
            .unwrap();
        assert_eq!(got, 1, "the stale value comes back at once");
    }
    assert!(cache.info().refreshing);
    release_tx.send(()).unwrap();
    wait_until("the background refresh", || {
        cache.read::<i32>().unwrap() == Some(2)
    });
    wait_until("the refresh to end", || !cache.info().refreshing);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.info().state, Some(InfoState::Fresh));
}

#[test]
fn read_never_returns_a_stale_value() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, clock) = manual(dir.path(), "s.json");
    let cache = cache.duration(MINUTE).stale_duration(MINUTE);
    cache.write(&1).unwrap();
    clock.advance(MINUTE);
    assert_eq!(cache.read::<i32>().unwrap(), None);
}

#[test]
fn expired_entry_past_the_stale_window_is_recomputed_in_the_foreground() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, clock) = manual(dir.path(), "s.json");
    let cache = cache.duration(MINUTE).stale_duration(MINUTE);
    cache.write(&1).unwrap();
    clock.advance(MINUTE * 2);
    assert_eq!(cache.cached(&(), || 2).unwrap(), 2);
}

#[test]
fn invalidate_during_a_computation_wins() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("rm.json"));
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let computing = {
        let cache = cache.clone();
        thread::spawn(move || {
            cache.cached(&(), move || {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                1
            })
        })
    };
    started_rx.recv().unwrap();
    cache.invalidate().unwrap();
    release_tx.send(()).unwrap();
    assert_eq!(computing.join().unwrap().unwrap(), 1);
    assert!(
        !cache.exists(),
        "the result of a computation invalidated meanwhile is not written"
    );
}

#[test]
fn wrap_returns_a_caching_function() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let cache = Cachetta::new(dir.path().join("sq"));
    let square = cache.wrap(move |n: u64| {
        counted.fetch_add(1, Ordering::SeqCst);
        n * n
    });
    assert_eq!(square(3).unwrap(), 9);
    assert_eq!(square(3).unwrap(), 9);
    assert_eq!(square(4).unwrap(), 16);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let shared = Arc::new(square);
    let other = shared.clone();
    thread::spawn(move || assert_eq!(other(5).unwrap(), 25))
        .join()
        .unwrap();
}

#[test]
fn arguments_without_a_key_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("k.json"));
    let mut mixed = std::collections::BTreeMap::new();
    mixed.insert(vec![1], 1);
    let err = cache.cached(&(mixed,), || 1).unwrap_err();
    assert!(!err.to_string().is_empty());
}
