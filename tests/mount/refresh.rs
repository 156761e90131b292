//! Refresh commands on entries that exist (SPEC §6): stale-while-revalidate, what a failing
//! command leaves behind, `rm` and unmount winning over a running refresh, `max_refreshes`.
//! Read-through (`fill_on_miss`) is in `refresh_read_through.rs`.
//!
//! Every command here is a small `sh` line that never touches the network; what it did is
//! recorded in files under `ROOT/outside`, beside (never inside) the backing dir.

use std::fs;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// A stale entry's content before any refresh.
const OLD: &str = r#"{"v":"old"}"#;

/// Top-level config that makes an entry aged [`STALE_AGE`] stale (and one of age 0 fresh).
const STALE_WINDOW: &str = "duration = \"1h\"\nstale = \"1h\"\n";
const STALE_AGE: Duration = Duration::from_secs(90 * 60);

const NEW: &str = r#"{"v":"new","reason":"stale"}"#;

/// A mount whose `x.json` is stale, holding [`OLD`], under one rule. `rule` gets the
/// `outside` dir and returns the rule's settings (after its `match`); `top` is top-level
/// config.
fn stale_mount(top: &str, rule: impl FnOnce(&Path) -> String) -> Mount {
    let b = Mount::new();
    let outside = b.root().join("outside");
    let toml = format!(
        "{STALE_WINDOW}{top}\n[[rule]]\nmatch = \"x.json\"\n{}\n",
        rule(&outside)
    );
    b.config(&toml)
        .backing_file_aged("x.json", OLD, STALE_AGE)
        .start()
}

/// Read the stale `x.json` (answered with [`OLD`]), wait for its refresh to fail, and check
/// that nothing changed and the failure is counted. Returns `user.cachetta.refresh_error`.
#[track_caller]
fn read_and_wait_for_failure(m: &Mount) -> String {
    let mtime = m.backing_mtime("x.json");
    assert_bytes(
        &fs::read(m.path("x.json")).unwrap(),
        OLD.as_bytes(),
        "stale read",
    );
    let failed = eventually(Duration::from_secs(10), || {
        attr(m, "x.json", "refresh_error").is_some()
            && attr(m, "x.json", "refreshing").as_deref() == Some("false")
    });
    assert!(failed, "no refresh_error within 10 s; stats {}", stats(m));
    let error = attr(m, "x.json", "refresh_error").unwrap();
    assert!(!error.is_empty() && !error.contains('\n'), "{error:?}");
    let names = listxattr(&m.path("x.json")).unwrap();
    assert!(
        names.iter().any(|n| n == "user.cachetta.refresh_error"),
        "getfattr -d would not show refresh_error: {names:?}"
    );
    let info = info(m, "x.json");
    assert_eq!(info["refresh_error"], serde_json::json!(error), "{info}");
    assert_eq!(info["refreshing"], serde_json::json!(false), "{info}");

    assert_bytes(
        &fs::read(m.backing_path("x.json")).unwrap(),
        OLD.as_bytes(),
        "backing file after a failed refresh",
    );
    assert_eq!(
        m.backing_mtime("x.json"),
        mtime,
        "mtime after a failed refresh"
    );
    assert_bytes(
        &fs::read(m.path("x.json")).unwrap(),
        OLD.as_bytes(),
        "read after a failed refresh",
    );
    assert_eq!(attr(m, "x.json", "state").as_deref(), Some("stale"));
    assert_eq!(stat(m, "refreshes_started"), 1);
    assert_eq!(stat(m, "refreshes_failed"), 1);
    assert_eq!(stat(m, "refreshes_ok"), 0);
    // That read came inside the backoff (default 10 s): it started nothing. A refresh is
    // `refreshing` from the moment it is queued, before the open is answered.
    assert_eq!(attr(m, "x.json", "refreshing").as_deref(), Some("false"));
    error
}

#[test]
fn stale_reads_are_answered_at_once_while_one_refresh_runs_in_the_background() {
    if !require_fuse() {
        return;
    }
    let m = stale_mount("", |out| {
        format!(
            r#"refresh = '''echo run >> {}; sleep 3; printf '{{"v":"new","reason":"%s"}}' "$CACHETTA_REASON"'''"#,
            sq(&out.join("count"))
        )
    });
    let count = m.outside_path("count");

    const READERS: usize = 40;
    let barrier = Arc::new(Barrier::new(READERS));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (barrier, path) = (barrier.clone(), m.path("x.json"));
            thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                let got = fs::read(&path);
                (start, Instant::now(), got)
            })
        })
        .collect();
    let results: Vec<_> = readers.into_iter().map(|t| t.join().unwrap()).collect();
    let first = results.iter().map(|r| r.0).min().unwrap();
    let last = results.iter().map(|r| r.1).max().unwrap();
    for (_, _, got) in &results {
        let got = got.as_ref().expect("stale read");
        assert_bytes(got, OLD.as_bytes(), "stale read while refreshing");
    }
    // Time is the behaviour: no reader waits for the 3 s command.
    assert!(
        last - first < Duration::from_millis(1500),
        "{READERS} stale reads took {:?}",
        last - first
    );

    assert_eq!(attr(&m, "x.json", "refreshing").as_deref(), Some("true"));
    assert_eq!(attr(&m, "x.json", "state").as_deref(), Some("stale"));
    assert_eq!(info(&m, "x.json")["refreshing"], serde_json::json!(true));
    assert!(eventually(Duration::from_secs(2), || lines(&count).len() == 1));

    let refreshed = eventually(Duration::from_secs(10), || {
        fs::read(m.path("x.json")).unwrap() == NEW.as_bytes()
    });
    assert!(refreshed, "x.json was not refreshed within 10 s");
    assert_eq!(attr(&m, "x.json", "state").as_deref(), Some("fresh"));
    // The refresh ends a moment after its entry is published (it is counted and logged, and
    // its waiters are woken, after the rename): seen under load.
    assert!(
        eventually(Duration::from_secs(2), || attr(&m, "x.json", "refreshing")
            .as_deref()
            == Some("false")),
        "still refreshing 2 s after the refreshed entry was read"
    );
    assert_eq!(attr(&m, "x.json", "refresh_error"), None);
    assert!(!listxattr(&m.path("x.json"))
        .unwrap()
        .contains(&"user.cachetta.refresh_error".into()));
    assert_bytes(
        &fs::read(m.backing_path("x.json")).unwrap(),
        NEW.as_bytes(),
        "backing file after the refresh",
    );
    assert_eq!(lines(&count), ["run"], "the command ran more than once");
    assert_eq!(stat(&m, "refreshes_started"), 1);
    assert_eq!(stat(&m, "refreshes_ok"), 1);
    assert_eq!(stat(&m, "refreshes_failed"), 0);
    assert!(stat(&m, "stale_served") >= READERS as u64);
}

#[test]
fn metadata_access_to_a_stale_entry_starts_no_refresh() {
    if !require_fuse() {
        return;
    }
    let m = stale_mount("", |out| {
        format!(
            r#"refresh = '''echo run >> {}; printf '{{}}' '''"#,
            sq(&out.join("count"))
        )
    });
    let count = m.outside_path("count");

    fs::metadata(m.path("x.json")).unwrap();
    assert!(m.list("").contains(&"x.json".into()));
    assert_success("ls -l", &m.run("ls", &["-l", "."]));
    assert_success("ls -l x.json", &m.run("ls", &["-l", "x.json"]));
    assert_success("stat", &m.run("stat", &["x.json"]));
    assert_success("getfattr -d", &m.run("getfattr", &["-d", "x.json"]));
    assert_eq!(attr(&m, "x.json", "state").as_deref(), Some("stale"));
    assert!(attr(&m, "x.json", "info").is_some());

    // Time is the behaviour: for a second, nothing runs.
    thread::sleep(Duration::from_secs(1));
    assert_eq!(
        lines(&count),
        Vec::<String>::new(),
        "metadata access ran the command"
    );
    assert_eq!(stat(&m, "refreshes_started"), 0);
    assert_eq!(attr(&m, "x.json", "refreshing").as_deref(), Some("false"));

    // The command does run once the entry is read, so the silence above meant something.
    fs::read(m.path("x.json")).unwrap();
    assert!(eventually(Duration::from_secs(5), || lines(&count).len() == 1));
}

#[test]
fn a_failing_command_keeps_the_entry_and_reports_stderr_and_exit_status() {
    if !require_fuse() {
        return;
    }
    let m = stale_mount("", |out| {
        format!(
            r#"refresh = '''echo run >> {}; echo 'boom: upstream down' >&2; echo 'second line' >&2; exit 3'''"#,
            sq(&out.join("count"))
        )
    });
    let error = read_and_wait_for_failure(&m);
    assert!(error.contains("boom: upstream down"), "{error:?}");
    assert!(error.contains("exit status 3"), "{error:?}");
    assert!(!error.contains("second line"), "{error:?}");
    assert_eq!(lines(&m.outside_path("count")), ["run"]);
}

#[test]
fn a_hanging_command_is_killed_with_its_children_at_its_timeout() {
    if !require_fuse() {
        return;
    }
    let m = stale_mount("", |out| {
        format!(
            "refresh_timeout = \"1s\"\nrefresh = '''echo run >> {}; sleep 100 & echo $! > {}; wait'''",
            sq(&out.join("count")),
            sq(&out.join("pid"))
        )
    });
    let error = read_and_wait_for_failure(&m);
    assert!(error.contains("timed out"), "{error:?}");
    let pid = pid_in(&m.outside_path("pid")).expect("the command wrote its child's pid");
    assert!(
        eventually(Duration::from_secs(5), || process_gone(pid)),
        "the command's child {pid} still runs after the timeout"
    );
}

#[test]
fn output_that_is_not_json_is_not_published() {
    if !require_fuse() {
        return;
    }
    let m = stale_mount("", |out| {
        format!(
            "refresh = '''echo run >> {}; echo 'this is not json' '''",
            sq(&out.join("count"))
        )
    });
    let error = read_and_wait_for_failure(&m);
    assert!(error.contains("JSON"), "{error:?}");
}

#[test]
fn output_larger_than_max_entry_bytes_is_not_published() {
    if !require_fuse() {
        return;
    }
    // 10 KiB of valid JSON: only the size is wrong.
    let m = stale_mount("max_entry_bytes = \"1KiB\"", |out| {
        format!(
            r#"refresh = '''echo run >> {}; printf '"'; head -c 10240 /dev/zero | tr '\0' a; printf '"' '''"#,
            sq(&out.join("count"))
        )
    });
    let error = read_and_wait_for_failure(&m);
    assert!(error.contains("max_entry_bytes"), "{error:?}");
}

#[test]
fn a_later_successful_refresh_clears_the_refresh_error() {
    if !require_fuse() {
        return;
    }
    let m = stale_mount("refresh_backoff = \"1s\"", |out| {
        format!(
            r#"refresh = '''echo run >> {}; if [ -e {} ]; then echo 'flag says no' >&2; exit 1; fi; printf '{{"v":"new"}}' '''"#,
            sq(&out.join("count")),
            sq(&out.join("fail")),
        )
    });
    let flag = m.outside_path("fail");
    fs::write(&flag, "").unwrap();
    let error = read_and_wait_for_failure(&m);
    assert!(error.contains("flag says no"), "{error:?}");

    fs::remove_file(&flag).unwrap();
    // Reads inside the backoff start nothing; the first one after it refreshes.
    let refreshed = eventually(Duration::from_secs(10), || {
        fs::read(m.path("x.json")).unwrap() == br#"{"v":"new"}"#
    });
    assert!(refreshed, "x.json was not refreshed after the backoff");
    assert_eq!(attr(&m, "x.json", "refresh_error"), None);
    assert_eq!(attr(&m, "x.json", "state").as_deref(), Some("fresh"));
    assert_eq!(lines(&m.outside_path("count")).len(), 2);
    assert_eq!(stat(&m, "refreshes_ok"), 1);
}

#[test]
fn a_condition_that_says_no_keeps_the_stale_entry_without_an_error() {
    if !require_fuse() {
        return;
    }
    let m = stale_mount("", |out| {
        format!(
            r#"refresh = '''echo run >> {}; printf '{{"v":"new"}}' '''
condition = "exit 1""#,
            sq(&out.join("count"))
        )
    });
    let mtime = m.backing_mtime("x.json");
    assert_bytes(
        &fs::read(m.path("x.json")).unwrap(),
        OLD.as_bytes(),
        "stale read",
    );
    assert!(eventually(Duration::from_secs(10), || {
        stat(&m, "refreshes_declined") == 1
            && attr(&m, "x.json", "refreshing").as_deref() == Some("false")
    }));
    assert_eq!(attr(&m, "x.json", "refresh_error"), None);
    assert_eq!(stat(&m, "refreshes_failed"), 0);
    assert_eq!(stat(&m, "refreshes_ok"), 0);
    assert_bytes(
        &fs::read(m.backing_path("x.json")).unwrap(),
        OLD.as_bytes(),
        "backing file after a declined refresh",
    );
    assert_eq!(m.backing_mtime("x.json"), mtime);
    assert_eq!(attr(&m, "x.json", "state").as_deref(), Some("stale"));
    // A "no" waits out the backoff too: this read starts nothing.
    fs::read(m.path("x.json")).unwrap();
    assert_eq!(attr(&m, "x.json", "refreshing").as_deref(), Some("false"));
    assert_eq!(lines(&m.outside_path("count")), ["run"]);
}

#[test]
fn rm_during_a_refresh_wins() {
    if !require_fuse() {
        return;
    }
    let m = stale_mount("", |out| {
        format!(
            r#"refresh = '''echo run >> {}; sleep 2; printf '{{"v":"new"}}' '''"#,
            sq(&out.join("count"))
        )
    });
    let count = m.outside_path("count");
    fs::read(m.path("x.json")).unwrap();
    assert!(eventually(Duration::from_secs(5), || lines(&count).len() == 1));

    fs::remove_file(m.path("x.json")).unwrap();
    // Time is the behaviour: wait until the command would have finished and published.
    thread::sleep(Duration::from_secs(3));
    assert_eq!(
        errno_of(fs::metadata(m.path("x.json"))),
        libc::ENOENT,
        "the refresh brought back an entry that was removed"
    );
    assert!(
        !m.backing_path("x.json").exists(),
        "the refresh recreated the backing file"
    );
    assert!(!m.list("").contains(&"x.json".into()));
    assert_eq!(stat(&m, "refreshes_ok"), 0);
    assert_eq!(lines(&count), ["run"]);
}

#[test]
fn unmount_kills_running_refreshes_and_their_children() {
    if !require_fuse() {
        return;
    }
    let mut m = stale_mount("", |out| {
        format!(
            "refresh = '''sleep 100 & echo $! > {}; wait'''",
            sq(&out.join("pid"))
        )
    });
    fs::read(m.path("x.json")).unwrap();
    let mut pid = None;
    assert!(eventually(Duration::from_secs(5), || {
        pid = pid_in(&m.outside_path("pid"));
        pid.is_some()
    }));
    let pid = pid.unwrap();
    assert!(!process_gone(pid), "the command's child is not running yet");

    let status = m.stop();
    assert!(status.success(), "daemon exited with {status}");
    assert!(
        eventually(Duration::from_secs(5), || process_gone(pid)),
        "the command's child {pid} outlived the unmount"
    );
}

#[test]
fn no_more_than_max_refreshes_run_at_once() {
    if !require_fuse() {
        return;
    }
    const KEYS: usize = 4;
    let b = Mount::new();
    let out = b.root().join("outside");
    // Each run records `start end` in nanoseconds, in a file of its own outside the backing dir.
    let toml = format!(
        r#"{STALE_WINDOW}max_refreshes = 2
[[rule]]
match = "k*.json"
refresh = '''s=$(date +%s%N); sleep 1; e=$(date +%s%N); echo "$s $e" > {}/"$CACHETTA_NAME"; printf '{{"v":"new"}}' '''
"#,
        sq(&out)
    );
    let mut b = b.config(&toml);
    for k in 1..=KEYS {
        b = b.backing_file_aged(format!("k{k}.json"), OLD, STALE_AGE);
    }
    let m = b.start();

    for k in 1..=KEYS {
        assert_bytes(
            &fs::read(m.path(format!("k{k}.json"))).unwrap(),
            OLD.as_bytes(),
            "stale read",
        );
    }
    let intervals = || -> Option<Vec<(u128, u128)>> {
        (1..=KEYS)
            .map(|k| {
                let line = lines(&out.join(format!("k{k}"))).into_iter().next()?;
                let (s, e) = line.split_once(' ')?;
                Some((s.parse().ok()?, e.parse().ok()?))
            })
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(15), || intervals().is_some()),
        "not every refresh ran within 15 s; stats {}",
        stats(&m)
    );
    let intervals = intervals().unwrap();
    let most = intervals
        .iter()
        .map(|&(s, _)| {
            intervals
                .iter()
                .filter(|&&(s2, e2)| s2 <= s && s < e2)
                .count()
        })
        .max()
        .unwrap();
    assert!(most <= 2, "{most} refreshes ran at once: {intervals:?}");
    // And the queue is worked by two at once, not one.
    assert_eq!(most, 2, "refreshes ran one at a time: {intervals:?}");
    assert!(eventually(Duration::from_secs(5), || stat(
        &m,
        "refreshes_ok"
    ) == KEYS as u64));
}

#[test]
fn a_command_that_floods_stderr_still_refreshes() {
    if !require_fuse() {
        return;
    }
    // 8 MiB on stderr, far past any pipe buffer, then the output.
    let m = stale_mount("", |_| {
        r#"refresh = '''head -c 8388608 /dev/zero | tr '\0' e >&2; printf '{"v":"new"}' '''"#.into()
    });
    fs::read(m.path("x.json")).unwrap();
    let refreshed = eventually(Duration::from_secs(10), || {
        fs::read(m.path("x.json")).unwrap() == br#"{"v":"new"}"#
    });
    assert!(refreshed, "not refreshed; stats {}", stats(&m));
    assert_eq!(attr(&m, "x.json", "refresh_error"), None);
}

#[test]
fn a_command_is_done_when_its_shell_exits_even_with_a_child_left_behind() {
    if !require_fuse() {
        return;
    }
    // The child keeps stdout open; the refresh must not wait for it.
    let m = stale_mount("", |out| {
        format!(
            r#"refresh = '''sleep 100 & echo $! > {}; printf '{{"v":"new"}}' '''"#,
            sq(&out.join("pid"))
        )
    });
    fs::read(m.path("x.json")).unwrap();
    let refreshed = eventually(Duration::from_secs(10), || {
        fs::read(m.path("x.json")).unwrap() == br#"{"v":"new"}"#
    });
    assert!(refreshed, "not refreshed; stats {}", stats(&m));
    let pid = pid_in(&m.outside_path("pid")).expect("the command wrote its child's pid");
    assert!(
        eventually(Duration::from_secs(5), || process_gone(pid)),
        "the child {pid} the command left behind still runs"
    );
}
