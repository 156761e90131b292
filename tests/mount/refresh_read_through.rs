//! Read-through (SPEC §6, `fill_on_miss = true`): a lookup of a missing key runs the rule's
//! refresh and waits for it. What the command gets (environment only, never pasted into the
//! command text), fill directories, single flight, failures, `condition`, backoff.
//! Refreshes of entries that exist are in `refresh.rs`.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// A read-through rule whose command always fails, so only writes can create its fill dir,
/// `weather`. (Creating a file looks its name up first: that lookup runs the command.)
const FILL_WEATHER: &str = r#"
[[rule]]
match = "weather/{city}.json"
fill_on_miss = true
refresh = "exit 1"
"#;

/// A mount whose config is `toml(outside dir)`; the backing dir starts empty.
fn mount_with(toml: impl FnOnce(&Path) -> String) -> Mount {
    let b = Mount::new();
    let text = toml(&b.root().join("outside"));
    b.config(&text).start()
}

#[test]
fn a_miss_runs_the_command_with_its_environment_and_serves_the_output() {
    if !require_fuse() {
        return;
    }
    let m = mount_with(|_| {
        r#"
[[rule]]
match = "weather/{city}.json"
fill_on_miss = true
refresh = '''printf '{"city":"%s","key":"%s","name":"%s","reason":"%s","entry":"%s"}' "$CACHETTA_CITY" "$CACHETTA_KEY" "$CACHETTA_NAME" "$CACHETTA_REASON" "$CACHETTA_ENTRY"'''
"#
        .into()
    });
    // The fill dir is shown before it exists in the backing dir.
    assert!(!m.backing_path("weather").exists());
    assert_eq!(m.list(""), names(&["weather"]));
    assert!(fs::metadata(m.path("weather")).unwrap().is_dir());
    assert_eq!(m.list("weather"), names(&[]));

    let out = m.run("cat", &["weather/paris.json"]);
    assert_success("cat weather/paris.json", &out);
    let entry = m.backing_path("weather/paris.json");
    let want = format!(
        r#"{{"city":"paris","key":"weather/paris.json","name":"paris","reason":"miss","entry":"{}"}}"#,
        entry.display()
    );
    assert_bytes(&out.stdout, want.as_bytes(), "read-through output");

    // The first fill created the directory and the entry in the backing dir.
    assert!(m.backing_path("weather").is_dir());
    assert_bytes(&fs::read(&entry).unwrap(), want.as_bytes(), "backing file");
    assert_eq!(m.list("weather"), names(&["paris.json"]));
    assert_eq!(
        attr(&m, "weather/paris.json", "state").as_deref(),
        Some("fresh")
    );
    assert_eq!(attr(&m, "weather/paris.json", "refresh_error"), None);
    assert_eq!(stat(&m, "refreshes_started"), 1);
    assert_eq!(stat(&m, "refreshes_ok"), 1);
    assert!(stat(&m, "misses") >= 1);

    // Now it is a fresh entry: reading it again runs nothing.
    assert_bytes(
        &fs::read(m.path("weather/paris.json")).unwrap(),
        want.as_bytes(),
        "second read",
    );
    assert_eq!(stat(&m, "refreshes_started"), 1);
}

#[test]
fn concurrent_lookups_of_one_missing_key_run_the_command_once() {
    if !require_fuse() {
        return;
    }
    let m = mount_with(|out| {
        format!(
            r#"
[[rule]]
match = "weather/{{city}}.json"
fill_on_miss = true
refresh = '''echo run >> {}; sleep 1; printf '{{"city":"%s"}}' "$CACHETTA_CITY"'''
"#,
            sq(&out.join("count"))
        )
    });
    const READERS: usize = 16;
    let barrier = Arc::new(Barrier::new(READERS));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (barrier, path) = (barrier.clone(), m.path("weather/lyon.json"));
            thread::spawn(move || {
                barrier.wait();
                fs::read(path)
            })
        })
        .collect();
    for reader in readers {
        let got = reader.join().unwrap().expect("read-through read");
        assert_bytes(&got, br#"{"city":"lyon"}"#, "read-through read");
    }
    assert_eq!(lines(&m.outside_path("count")), ["run"]);
    assert_eq!(stat(&m, "refreshes_started"), 1);
}

#[test]
fn read_throughs_of_many_keys_queue_behind_max_refreshes_and_all_answer() {
    if !require_fuse() {
        return;
    }
    const KEYS: usize = 8;
    // One directory per key, so the kernel may send all the lookups at once.
    let m = Mount::new()
        .config(
            r#"max_refreshes = 2
[[rule]]
match = "{n}/k.json"
fill_on_miss = true
refresh = '''sleep 0.5; printf '{"n":%s}' "$CACHETTA_N"'''
"#,
        )
        .prepare(|backing| {
            for n in 0..KEYS {
                fs::create_dir(backing.join(n.to_string())).unwrap();
            }
        })
        .start();
    let start = Instant::now();
    let readers: Vec<_> = (0..KEYS)
        .map(|n| {
            let path = m.path(format!("{n}/k.json"));
            thread::spawn(move || (n, fs::read(path)))
        })
        .collect();
    for reader in readers {
        let (n, got) = reader.join().unwrap();
        let got = got.unwrap_or_else(|e| panic!("{n}/k.json: {e}"));
        assert_bytes(
            &got,
            format!(r#"{{"n":{n}}}"#).as_bytes(),
            "queued read-through",
        );
    }
    // Two at a time: four rounds of half a second (eight would be one at a time).
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "{KEYS} fills took only {took:?}"
    );
    assert!(
        took < Duration::from_millis(3500),
        "{KEYS} fills took {took:?}"
    );
    assert_eq!(stat(&m, "refreshes_ok"), KEYS as u64);
}

#[test]
fn a_read_through_does_not_hold_up_lookups_in_its_directory() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .config(
            r#"
[[rule]]
match = "weather/{city}.json"
fill_on_miss = true
refresh = '''sleep 3; printf '{}' '''
"#,
        )
        .backing_file("weather/fresh.json", "{}")
        .start();
    let slow = {
        let path = m.path("weather/slow.json");
        thread::spawn(move || fs::read(path))
    };
    assert!(eventually(Duration::from_secs(2), || stat(
        &m,
        "refreshes_started"
    ) == 1));
    let start = Instant::now();
    assert_bytes(
        &fs::read(m.path("weather/fresh.json")).unwrap(),
        b"{}",
        "fresh entry beside a read-through",
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "reading a fresh entry waited {:?} for a read-through of another key",
        start.elapsed()
    );
    assert_bytes(&slow.join().unwrap().unwrap(), b"{}", "slow read-through");
}

#[test]
fn other_requests_are_answered_while_a_read_through_waits() {
    if !require_fuse() {
        return;
    }
    let b = Mount::new().backing_file("other.json", "{}");
    let m = b
        .config(
            r#"
[[rule]]
match = "slow/{k}.json"
fill_on_miss = true
refresh = '''sleep 3; printf '{}' '''
"#,
        )
        .start();
    let slow = {
        let path = m.path("slow/a.json");
        thread::spawn(move || fs::read(path))
    };
    assert!(eventually(Duration::from_secs(2), || stat(
        &m,
        "refreshes_started"
    ) == 1));
    let start = Instant::now();
    assert_eq!(m.list(""), names(&["other.json", "slow"]));
    assert_bytes(
        &fs::read(m.path("other.json")).unwrap(),
        b"{}",
        "other entry",
    );
    fs::metadata(m.path("slow")).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "requests waited {:?} for a read-through of another key",
        start.elapsed()
    );
    assert_bytes(&slow.join().unwrap().unwrap(), b"{}", "slow read-through");
}

#[test]
fn read_through_failures_answer_enoent_and_cache_nothing() {
    if !require_fuse() {
        return;
    }
    let m = mount_with(|out| {
        format!(
            r#"max_entry_bytes = "1KiB"
[[rule]]
match = "exit/{{k}}.json"
fill_on_miss = true
refresh = '''echo 'boom' >&2; exit 3'''
[[rule]]
match = "hang/{{k}}.json"
fill_on_miss = true
refresh_timeout = "1s"
refresh = '''sleep 100 & echo $! > {}; wait'''
[[rule]]
match = "garbage/{{k}}.json"
fill_on_miss = true
refresh = '''echo 'this is not json' '''
[[rule]]
match = "big/{{k}}.json"
fill_on_miss = true
refresh = '''printf '"'; head -c 10240 /dev/zero | tr '\0' a; printf '"' '''
"#,
            sq(&out.join("pid"))
        )
    });
    for (n, key) in ["exit/a.json", "hang/a.json", "garbage/a.json", "big/a.json"]
        .into_iter()
        .enumerate()
    {
        let start = Instant::now();
        assert_eq!(errno_of(fs::read(m.path(key))), libc::ENOENT, "{key}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{key}: ENOENT took {:?}",
            start.elapsed()
        );
        assert!(!m.backing_path(key).exists(), "{key} was cached");
        // A waiter gives up at `refresh_timeout`, as the command is killed: the count may
        // follow a moment after the answer.
        assert!(
            eventually(Duration::from_secs(5), || stat(&m, "refreshes_failed")
                == n as u64 + 1),
            "{key}: refreshes_failed is {}",
            stat(&m, "refreshes_failed")
        );
        // And a second look, inside the backoff, answers the same.
        assert_eq!(errno_of(fs::metadata(m.path(key))), libc::ENOENT, "{key}");
    }
    assert_eq!(stat(&m, "refreshes_ok"), 0);
    let pid = pid_in(&m.outside_path("pid")).expect("the hanging command wrote its child's pid");
    assert!(
        eventually(Duration::from_secs(5), || process_gone(pid)),
        "the hanging command's child {pid} still runs"
    );
}

#[test]
fn a_condition_that_says_no_caches_nothing_and_is_not_a_failure() {
    if !require_fuse() {
        return;
    }
    // The output is `{"ok":true}` for `c/true.json`, `{"ok":false}` for `c/false.json`; the
    // condition reads it on stdin.
    let m = mount_with(|_| {
        r#"
[[rule]]
match = "c/{v}.json"
fill_on_miss = true
refresh = '''printf '{"ok":%s}' "$CACHETTA_V"'''
condition = '''grep -q '"ok":true' '''
"#
        .into()
    });
    assert_eq!(errno_of(fs::read(m.path("c/false.json"))), libc::ENOENT);
    assert!(!m.backing_path("c/false.json").exists());
    assert_eq!(stat(&m, "refreshes_declined"), 1);
    assert_eq!(stat(&m, "refreshes_failed"), 0);

    assert_bytes(
        &fs::read(m.path("c/true.json")).unwrap(),
        br#"{"ok":true}"#,
        "output the condition accepted",
    );
    assert_eq!(attr(&m, "c/true.json", "refresh_error"), None);
    assert_eq!(stat(&m, "refreshes_declined"), 1);
    assert_eq!(stat(&m, "refreshes_ok"), 1);
    assert_eq!(stat(&m, "refreshes_failed"), 0);
}

#[test]
fn after_a_failed_read_through_the_key_backs_off() {
    if !require_fuse() {
        return;
    }
    let m = mount_with(|out| {
        format!(
            r#"refresh_backoff = "2s"
[[rule]]
match = "*.json"
fill_on_miss = true
refresh = '''echo run >> {}; exit 1'''
"#,
            sq(&out.join("count"))
        )
    });
    let count = m.outside_path("count");
    assert_eq!(errno_of(fs::metadata(m.path("x.json"))), libc::ENOENT);
    let failed_at = Instant::now();
    assert_eq!(lines(&count).len(), 1);

    let start = Instant::now();
    assert_eq!(errno_of(fs::metadata(m.path("x.json"))), libc::ENOENT);
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "a lookup in the backoff took {:?}",
        start.elapsed()
    );
    assert_eq!(
        lines(&count).len(),
        1,
        "a lookup in the backoff ran the command"
    );

    let retried = eventually(Duration::from_secs(10), || {
        assert_eq!(errno_of(fs::metadata(m.path("x.json"))), libc::ENOENT);
        lines(&count).len() == 2
    });
    assert!(retried, "the command did not run again after the backoff");
    let waited = failed_at.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "the command ran again after only {waited:?}"
    );
    assert_eq!(stat(&m, "refreshes_failed"), 2);
}

#[test]
fn keys_reach_the_command_only_through_the_environment() {
    if !require_fuse() {
        return;
    }
    let keys = [
        "$(touch INJ).json",
        ";touch INJ2;.json",
        "`touch INJ3`.json",
        "'; touch INJ4; '.json",
        "\"; touch INJ5; \".json",
    ];
    let m = mount_with(|out| {
        format!(
            r#"
[[rule]]
match = "*.json"
fill_on_miss = true
refresh = '''printf '%s|%s\n' "$CACHETTA_KEY" "$CACHETTA_NAME" >> {}; pwd -P >> {}; printf '{{}}' '''
"#,
            sq(&out.join("keys")),
            sq(&out.join("cwd"))
        )
    });
    for key in keys {
        assert_bytes(&fs::read(m.path(key)).unwrap(), b"{}", key);
        assert!(
            m.backing_path(key).is_file(),
            "{key} not in the backing dir"
        );
    }
    let want: Vec<String> = keys
        .iter()
        .map(|k| format!("{k}|{}", k.strip_suffix(".json").unwrap()))
        .collect();
    assert_eq!(lines(&m.outside_path("keys")), want);
    let cwd = m.backing.display().to_string();
    assert_eq!(lines(&m.outside_path("cwd")), vec![cwd; keys.len()]);

    let here = std::env::current_dir().unwrap();
    for name in ["INJ", "INJ2", "INJ3", "INJ4", "INJ5"] {
        for dir in [m.root.as_path(), m.backing.as_path(), here.as_path()] {
            let found = find_named(dir, name);
            assert!(found.is_empty(), "a key ran as shell code: {found:?}");
        }
    }
}

#[test]
fn a_non_utf8_key_reaches_the_command_byte_exact() {
    if !require_fuse() {
        return;
    }
    let m = mount_with(|out| {
        format!(
            r#"
[[rule]]
match = "*.json"
fill_on_miss = true
refresh = '''printf '%s' "$CACHETTA_KEY" > {}; printf '{{}}' '''
"#,
            sq(&out.join("key"))
        )
    });
    let key = OsStr::from_bytes(b"caf\xe9.json");
    assert_bytes(&fs::read(m.path(key)).unwrap(), b"{}", "non-UTF-8 key");
    assert_bytes(
        &fs::read(m.outside_path("key")).unwrap(),
        key.as_bytes(),
        "CACHETTA_KEY",
    );
    assert!(m.backing_path(key).is_file());
}

#[test]
fn an_expired_or_corrupt_entry_is_filled_like_a_missing_one() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .config(
            r#"duration = "1h"
[[rule]]
match = "*.json"
fill_on_miss = true
refresh = '''printf '{"reason":"%s"}' "$CACHETTA_REASON"'''
"#,
        )
        .backing_file_aged("expired.json", r#"{"v":"old"}"#, 2 * HOUR)
        .backing_file("corrupt.json", "{not json")
        .start();
    for key in ["expired.json", "corrupt.json"] {
        assert_bytes(
            &fs::read(m.path(key)).unwrap(),
            br#"{"reason":"miss"}"#,
            key,
        );
        assert_bytes(
            &fs::read(m.backing_path(key)).unwrap(),
            br#"{"reason":"miss"}"#,
            key,
        );
        assert_eq!(attr(&m, key, "state").as_deref(), Some("fresh"));
    }
    assert_eq!(stat(&m, "refreshes_ok"), 2);
}

#[test]
fn nested_fill_dirs_are_shown_and_created_on_the_first_fill() {
    if !require_fuse() {
        return;
    }
    let m = mount_with(|_| {
        r#"
[[rule]]
match = "api/v1/{user}.json"
fill_on_miss = true
refresh = '''printf '{"user":"%s"}' "$CACHETTA_USER"'''
"#
        .into()
    });
    assert_eq!(m.list(""), names(&["api"]));
    assert_eq!(m.list("api"), names(&["v1"]));
    assert_eq!(m.list("api/v1"), names(&[]));
    assert!(!m.backing_path("api").exists());

    assert_bytes(
        &fs::read(m.path("api/v1/bob.json")).unwrap(),
        br#"{"user":"bob"}"#,
        "nested read-through",
    );
    assert!(m.backing_path("api/v1").is_dir());
    assert_eq!(m.list("api/v1"), names(&["bob.json"]));
}

// A fill dir is shown before it exists in the backing dir, so it must take writes like any
// directory does; the first write creates it.

#[test]
fn an_entry_can_be_written_into_a_fill_dir_before_it_exists() {
    if !require_fuse() {
        return;
    }
    let m = mount_with(|_| FILL_WEATHER.into());
    assert_success(
        "echo > weather/x.json",
        &m.sh(r#"echo '{"a":1}' > weather/x.json"#),
    );
    assert_bytes(
        &fs::read(m.backing_path("weather/x.json")).unwrap(),
        b"{\"a\":1}\n",
        "entry written into a fill dir",
    );
}

#[test]
fn the_write_idiom_works_in_a_fill_dir_before_it_exists() {
    if !require_fuse() {
        return;
    }
    // Temp file, then rename onto the entry: cachetta's libraries, `sed -i`, editors.
    let m = mount_with(|_| FILL_WEATHER.into());
    fs::write(m.path("weather/x.json.tmp"), r#"{"a":1}"#)
        .expect("create a scratch file in a fill dir before it exists");
    fs::rename(m.path("weather/x.json.tmp"), m.path("weather/x.json")).unwrap();
    assert_bytes(
        &fs::read(m.backing_path("weather/x.json")).unwrap(),
        br#"{"a":1}"#,
        "entry written by rename",
    );
}

#[test]
fn mkdir_works_in_a_fill_dir_before_it_exists() {
    if !require_fuse() {
        return;
    }
    let m = mount_with(|_| FILL_WEATHER.into());
    assert_success("mkdir -p", &m.run("mkdir", &["-p", "weather/a/b"]));
    assert!(m.backing_path("weather/a/b").is_dir());
}

#[test]
fn unmount_during_a_read_through_kills_the_command_and_answers_the_reader() {
    if !require_fuse() {
        return;
    }
    // `sleep 30`: far past the 5 s the test waits, short enough that a leaked one ends soon.
    let mut m = mount_with(|out| {
        format!(
            r#"
[[rule]]
match = "slow/{{k}}.json"
fill_on_miss = true
refresh = '''sleep 30 & echo $! > {}; wait'''
"#,
            sq(&out.join("pid"))
        )
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let path = m.path("slow/a.json");
    thread::spawn(move || {
        let _ = tx.send(fs::read(path));
    });
    let mut pid = None;
    assert!(eventually(Duration::from_secs(5), || {
        pid = pid_in(&m.outside_path("pid"));
        pid.is_some()
    }));
    let pid = pid.unwrap();

    let status = m
        .signal_and_wait(libc::SIGTERM)
        .expect("the daemon did not exit within 5 s of SIGTERM");
    assert!(status.success(), "daemon exited with {status}");
    let answer = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the waiting reader got no answer after the unmount");
    assert!(
        answer.is_err(),
        "read-through gave {answer:?} after unmount"
    );
    assert!(
        eventually(Duration::from_secs(5), || process_gone(pid)),
        "the command's child {pid} outlived the unmount"
    );
}

/// The daemon's thread count, from `/proc`.
fn threads_of(pid: u32) -> usize {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

#[test]
fn a_flood_of_missed_lookups_costs_no_thread_each() {
    if !require_fuse() {
        return;
    }
    let m = mount_with(|_| flood_config("sleep 0.3; echo '{}'", "1s"));
    let pid = m.pid().unwrap();
    let before = threads_of(pid);
    let lookups = stats_at_once(&m, "flood", 200);
    thread::sleep(Duration::from_millis(500));
    let during = threads_of(pid);
    // Every lookup gets its answer: the entry, or ENOENT once its `refresh_timeout` of
    // waiting is over (2 commands at a time, 0.3 s each: most are still queued then).
    let started = Instant::now();
    let found = lookups
        .into_iter()
        .map(|l| l.join().unwrap())
        .filter(|&found| found)
        .count();
    assert!(found >= 2, "only {found} lookups got their entry");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the lookups took {:?} to answer",
        started.elapsed()
    );
    assert!(
        during <= before + 4,
        "200 waiting lookups took the daemon from {before} to {during} threads"
    );
}
