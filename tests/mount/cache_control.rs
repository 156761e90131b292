//! Cache control beyond expiry (SPEC §12), through a real mount: per-entry policy with
//! `setfattr`, stale-if-error, early refresh of hot keys, and each key's last refresh. The CLI
//! side (`cachetta refresh`, `cachetta stats`) is in `cache_commands.rs`.
//!
//! Refresh commands are small `sh` lines; a switch file under `ROOT/outside` decides whether
//! they succeed, so a test can turn an outage on and off.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use cachetta::Cachetta;

use crate::common::*;

const OLD: &str = r#"{"v":"old"}"#;
const NEW: &str = r#"{"v":"new"}"#;
/// What the refresh command prints: [`NEW`] and `echo`'s newline.
const NEW_LINE: &str = "{\"v\":\"new\"}\n";
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

/// `cachetta info --json`-style object from the CLI, with the mount's config.
fn cli_info(m: &Mount, key: &str) -> serde_json::Value {
    let config = m.config_path.as_ref().expect("a config file");
    let out = m.cachetta(&[
        "info".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--backing".as_ref(),
        m.backing.as_os_str(),
        key.as_ref(),
    ]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// `cachetta gc` with the mount's config and backing dir.
fn gc(m: &Mount) -> std::process::Output {
    let config = m.config_path.as_ref().expect("a config file");
    m.cachetta(&[
        "gc".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--backing".as_ref(),
        m.backing.as_os_str(),
    ])
}

fn ttl(m: &Mount, key: &str) -> i64 {
    attr(m, key, "ttl").expect("ttl").parse().unwrap()
}

#[test]
fn per_entry_duration_overrides_the_rule_until_it_is_removed() {
    if !require_fuse() {
        return;
    }
    let mut m = Mount::new()
        .config("duration = \"7d\"\n")
        .backing_file("x.json", OLD)
        .start();
    assert!(ttl(&m, "x.json") > 3600 * 24);

    let out = m.run(
        "setfattr",
        &["-n", "user.cachetta.duration", "-v", "1h", "x.json"],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        (3590..=3600).contains(&ttl(&m, "x.json")),
        "{}",
        ttl(&m, "x.json")
    );
    assert_eq!(attr(&m, "x.json", "duration").as_deref(), Some("3600"));
    assert_eq!(
        info(&m, "x.json")["overrides"],
        serde_json::json!(["duration"])
    );
    assert_eq!(
        getxattr(&m.backing_path("x.json"), "user.cachetta.duration").unwrap(),
        b"3600",
        "stored on the backing file as decimal seconds"
    );

    // A bad value changes nothing.
    let bad = setxattr(&m.path("x.json"), "user.cachetta.duration", b"soon");
    assert_eq!(errno_of(bad), libc::EINVAL);
    let negative = setxattr(&m.path("x.json"), "user.cachetta.stale_duration", b"-5s");
    assert_eq!(errno_of(negative), libc::EINVAL);
    assert_eq!(attr(&m, "x.json", "duration").as_deref(), Some("3600"));

    // The CLI and the library judge by the same attribute.
    let from_cli = cli_info(&m, "x.json");
    assert_eq!(from_cli["duration"], 3600, "{from_cli}");
    assert_eq!(from_cli["overrides"], serde_json::json!(["duration"]));
    let config = m.config_path.clone().unwrap();
    let ls = m.cachetta(&[
        "ls".as_ref(),
        "--json".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--backing".as_ref(),
        m.backing.as_os_str(),
    ]);
    let listed: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(listed[0]["key"], "x.json", "{listed}");
    assert_eq!(listed[0]["duration"], 3600, "{listed}");
    let library = Cachetta::new(m.backing_path("x.json"))
        .duration(WEEK)
        .info();
    assert_eq!(library.duration, 3600);
    assert!((3590..=3600).contains(&library.ttl.unwrap()));

    // It survives a rewrite through the mount, in place and by a scratch file renamed on.
    fs::write(m.path("x.json"), NEW).unwrap();
    assert_eq!(attr(&m, "x.json", "duration").as_deref(), Some("3600"));
    fs::write(m.path(".x.json.swp"), OLD).unwrap();
    fs::rename(m.path(".x.json.swp"), m.path("x.json")).unwrap();
    assert_eq!(attr(&m, "x.json", "duration").as_deref(), Some("3600"));
    assert_bytes(
        &fs::read(m.path("x.json")).unwrap(),
        OLD.as_bytes(),
        "after rename",
    );

    // And a remount.
    m.stop();
    m.restart();
    assert_eq!(attr(&m, "x.json", "duration").as_deref(), Some("3600"));

    // Shortening it hides the entry within SPEC §2's second; removing it brings the rule back.
    // (Not `setfattr -v 0s`: setfattr reads a value starting with 0s as base64.)
    setxattr(&m.path("x.json"), "user.cachetta.duration", b"0s").unwrap();
    let start = Instant::now();
    let hidden = eventually(Duration::from_secs(5), || !m.path("x.json").exists());
    let stored = getxattr(&m.backing_path("x.json"), "user.cachetta.duration");
    assert!(hidden, "{} {stored:?}", info(&m, "x.json"));
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        errno_of(fs::metadata(m.path("x.json"))),
        libc::ENOENT,
        "hidden, as any expired entry"
    );
    rustix::fs::removexattr(m.backing_path("x.json"), "user.cachetta.duration").unwrap();
    assert!(eventually(Duration::from_secs(5), || m
        .path("x.json")
        .exists()));
    assert!(ttl(&m, "x.json") > 3600 * 24, "the rule applies again");
    assert_eq!(info(&m, "x.json")["overrides"], serde_json::json!([]));
}

#[test]
fn setfattr_x_removes_an_override_and_other_cachetta_attributes_stay_read_only() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .config("duration = \"1h\"\nstale = \"1h\"\n")
        .backing_file("x.json", OLD)
        .backing_file("d/y.json", OLD)
        .start();
    let out = m.run(
        "setfattr",
        &["-n", "user.cachetta.stale_duration", "-v", "2h", "x.json"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        attr(&m, "x.json", "stale_duration").as_deref(),
        Some("7200")
    );
    let listed = m.run("getfattr", &["-d", "x.json"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(
        text.matches("user.cachetta.stale_duration=").count(),
        1,
        "{text}"
    );
    let out = m.run(
        "setfattr",
        &["-x", "user.cachetta.stale_duration", "x.json"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        attr(&m, "x.json", "stale_duration").as_deref(),
        Some("3600")
    );
    let absent = removexattr(&m.path("x.json"), "user.cachetta.stale_duration");
    assert_eq!(errno_of(absent), libc::ENODATA);
    let state = setxattr(&m.path("x.json"), "user.cachetta.state", b"fresh");
    assert_eq!(errno_of(state), libc::EPERM);
    let on_dir = setxattr(&m.path("d"), "user.cachetta.duration", b"1h");
    assert_eq!(errno_of(on_dir), libc::EPERM, "policy is per entry");
}

/// A mount whose `x.json` holds [`OLD`], past `duration + stale` (2 s), under a rule whose
/// refresh fails until `ROOT/outside/up` exists.
fn outage_mount(stale_if_error: &str) -> Mount {
    let b = Mount::new();
    let outside = b.root().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let toml = format!(
        "[[rule]]\nmatch = \"x.json\"\nduration = \"1s\"\nstale = \"1s\"\n\
         stale_if_error = \"{stale_if_error}\"\nrefresh_backoff = \"1s\"\n\
         refresh = '''if [ -e {up} ]; then echo '{NEW}'; else echo \"upstream down\" >&2; exit 1; fi'''\n",
        up = outside.join("up").display(),
    );
    b.config(&toml)
        .backing_file_aged("x.json", OLD, Duration::from_millis(2500))
        .start()
}

#[test]
fn stale_if_error_serves_the_old_entry_while_its_refresh_fails() {
    if !require_fuse() {
        return;
    }
    let m = outage_mount("1h");
    // The lookup runs the refresh and waits; it fails, so the old entry is served, stale.
    assert_bytes(
        &fs::read(m.path("x.json")).unwrap(),
        OLD.as_bytes(),
        "during the outage",
    );
    assert_eq!(attr(&m, "x.json", "state").as_deref(), Some("stale"));
    let error = attr(&m, "x.json", "refresh_error").expect("the failure is visible");
    assert!(error.contains("upstream down"), "{error}");
    let seen = info(&m, "x.json");
    assert_eq!(seen["stale_if_error"], 3600, "{seen}");
    assert_eq!(seen["last_refresh"]["outcome"], "failed", "{seen}");
    assert_eq!(seen["last_refresh"]["reason"], "error", "{seen}");
    // It stays, listed and readable, while refreshes keep failing.
    thread::sleep(Duration::from_millis(1200));
    assert!(m.list("").iter().any(|n| n == "x.json"));
    assert_bytes(
        &fs::read(m.path("x.json")).unwrap(),
        OLD.as_bytes(),
        "still",
    );
    // gc spares it inside the window.
    let gc = gc(&m);
    assert!(gc.status.success(), "{gc:?}");
    assert!(m.backing_path("x.json").exists(), "gc spares it");

    // The upstream is back: a read after the backoff refreshes it in the background.
    fs::write(m.outside_path("up"), "").unwrap();
    let recovered = eventually(Duration::from_secs(10), || {
        fs::read(m.path("x.json")).is_ok_and(|b| b == NEW_LINE.as_bytes())
    });
    assert!(recovered, "never refreshed; {}", info(&m, "x.json"));
    assert_eq!(attr(&m, "x.json", "state").as_deref(), Some("fresh"));
    assert_eq!(attr(&m, "x.json", "refresh_error"), None);
}

#[test]
fn a_per_entry_stale_if_error_keeps_an_entry_its_rule_would_hide() {
    if !require_fuse() {
        return;
    }
    let m = outage_mount("0s");
    let on_file = rustix::fs::XattrFlags::empty();
    rustix::fs::setxattr(
        m.backing_path("x.json"),
        "user.cachetta.stale_if_error",
        b"3600",
        on_file,
    )
    .unwrap();
    assert_bytes(
        &fs::read(m.path("x.json")).unwrap(),
        OLD.as_bytes(),
        "kept by the entry's own window",
    );
    assert_eq!(
        attr(&m, "x.json", "stale_if_error").as_deref(),
        Some("3600")
    );
    assert_eq!(
        info(&m, "x.json")["overrides"],
        serde_json::json!(["stale_if_error"])
    );
    assert!(attr(&m, "x.json", "refresh_error").is_some());
    rustix::fs::removexattr(m.backing_path("x.json"), "user.cachetta.stale_if_error").unwrap();
    let hidden = eventually(Duration::from_secs(5), || !m.path("x.json").exists());
    assert!(
        hidden,
        "the rule's 0s applies again: {}",
        info(&m, "x.json")
    );
}

#[test]
fn stale_if_error_ends_with_its_window() {
    if !require_fuse() {
        return;
    }
    let m = outage_mount("2s");
    assert_bytes(
        &fs::read(m.path("x.json")).unwrap(),
        OLD.as_bytes(),
        "inside the window",
    );
    // The window ends 4 s after the write (duration + stale + stale_if_error).
    let gone = eventually(Duration::from_secs(5), || !m.path("x.json").exists());
    assert!(gone, "still shown: {}", info(&m, "x.json"));
    let gc = gc(&m);
    assert!(gc.status.success(), "{gc:?}");
    assert!(
        !m.backing_path("x.json").exists(),
        "gc deletes it after the window"
    );
}

#[test]
fn stale_if_error_serves_a_fresh_entry_when_the_refresh_succeeds() {
    if !require_fuse() {
        return;
    }
    let m = outage_mount("1h");
    fs::write(m.outside_path("up"), "").unwrap();
    let read = fs::read(m.path("x.json")).unwrap();
    assert_bytes(&read, NEW_LINE.as_bytes(), "the lookup waited");
    assert_eq!(attr(&m, "x.json", "state").as_deref(), Some("fresh"));
    assert_eq!(info(&m, "x.json")["last_refresh"]["outcome"], "ok");
}

/// Read `x.json` every 20 ms for `run`, checking its state each time; returns the states seen.
fn read_continuously(m: &Mount, run: Duration) -> Vec<String> {
    let mut seen = Vec::new();
    let end = Instant::now() + run;
    while Instant::now() < end {
        let bytes = fs::read(m.path("x.json")).expect("a hot key is always there");
        assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_ok());
        seen.push(attr(m, "x.json", "state").unwrap_or_default());
        thread::sleep(Duration::from_millis(20));
    }
    seen
}

fn hot_key_mount(early: bool) -> Mount {
    let toml = format!(
        "[[rule]]\nmatch = \"x.json\"\nduration = \"3s\"\nstale = \"1m\"\n\
         early_refresh = {early}\nrefresh = 'sleep 0.5; echo \"{{\\\"at\\\": $(date +%s%N)}}\"'\n"
    );
    Mount::new()
        .config(&toml)
        .backing_file("x.json", OLD)
        .start()
}

#[test]
fn early_refresh_keeps_a_hot_key_from_turning_stale() {
    if !require_fuse() {
        return;
    }
    let m = hot_key_mount(true);
    let seen = read_continuously(&m, Duration::from_secs(10));
    assert!(!seen.iter().any(|s| s == "stale"), "served stale: {seen:?}");
    let started = stat(&m, "refreshes_started");
    assert!(
        started >= 2,
        "{started} refreshes in 10 s of a 3 s duration"
    );
    assert_eq!(info(&m, "x.json")["last_refresh"]["reason"], "early");
}

#[test]
fn without_early_refresh_a_hot_key_turns_stale() {
    if !require_fuse() {
        return;
    }
    let m = hot_key_mount(false);
    let seen = read_continuously(&m, Duration::from_secs(5));
    assert!(seen.iter().any(|s| s == "stale"), "never stale: {seen:?}");
}

/// Ask the mount to refresh `key` now, through the root attribute the CLI uses.
fn demand(m: &Mount, key: &str) {
    setxattr(&m.path(""), "user.cachetta.refresh", key.as_bytes()).unwrap();
}

fn last_refresh_after(m: &Mount, key: &str, after: f64) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let done = eventually(Duration::from_secs(10), || {
        last = info(m, key)["last_refresh"].clone();
        last["at"].as_f64().is_some_and(|at| at >= after)
    });
    assert!(done, "no refresh of {key} finished; last {last}");
    last
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn last_refresh_records_ok_failed_and_declined_refreshes() {
    if !require_fuse() {
        return;
    }
    let b = Mount::new();
    let outside = b.root().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let toml = format!(
        "[[rule]]\nmatch = \"x.json\"\nduration = \"1h\"\n\
         refresh = 'if [ -e {down} ]; then exit 3; fi; echo \"{{\\\"n\\\": 1}}\"'\n\
         condition = '! [ -e {no} ]'\n",
        down = outside.join("down").display(),
        no = outside.join("no").display(),
    );
    let m = b.config(&toml).backing_file("x.json", OLD).start();
    assert_eq!(info(&m, "x.json")["last_refresh"], serde_json::Value::Null);

    let before = unix_now() - 1.0;
    demand(&m, "x.json");
    let ok = last_refresh_after(&m, "x.json", before);
    assert_eq!(
        (ok["outcome"].as_str(), ok["reason"].as_str()),
        (Some("ok"), Some("demand")),
        "{ok}"
    );
    assert!(ok["seconds"].as_f64().unwrap() >= 0.0);

    fs::write(m.outside_path("down"), "").unwrap();
    let before = ok["at"].as_f64().unwrap() + 1e-6;
    demand(&m, "x.json");
    let failed = last_refresh_after(&m, "x.json", before);
    assert_eq!(failed["outcome"], "failed", "{failed}");
    assert!(attr(&m, "x.json", "refresh_error").is_some());

    fs::remove_file(m.outside_path("down")).unwrap();
    fs::write(m.outside_path("no"), "").unwrap();
    let before = failed["at"].as_f64().unwrap() + 1e-6;
    demand(&m, "x.json");
    let declined = last_refresh_after(&m, "x.json", before);
    assert_eq!(declined["outcome"], "declined", "{declined}");
    assert_eq!(
        attr(&m, "x.json", "refresh_error"),
        None,
        "a decline is no error"
    );
    let rooted = getxattr(&m.path(""), "user.cachetta.refresh").unwrap();
    let demands: serde_json::Value = serde_json::from_slice(&rooted).unwrap();
    let outcomes: Vec<_> = demands
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(outcomes, ["ok", "failed", "declined"], "{demands}");
    let refused = setxattr(&m.path(""), "user.cachetta.refresh", b"other.json");
    assert_eq!(errno_of(refused), libc::EINVAL, "no refresh rule for it");
}

#[test]
fn policy_changes_demands_writes_and_reads_hold_with_sixteen_threads() {
    if !require_fuse() {
        return;
    }
    let toml = "duration = \"1h\"\n[[rule]]\nmatch = \"k*.json\"\nrefresh_backoff = \"0s\"\n\
                refresh = 'echo \"{\\\"v\\\": \\\"refreshed\\\"}\"'\n";
    let keys = ["k0.json", "k1.json", "k2.json", "k3.json"];
    let mut b = Mount::new().config(toml);
    for key in keys {
        b = b.backing_file(key, OLD);
    }
    let m = b.start();
    let end = Instant::now() + Duration::from_secs(3);
    let slow = Duration::from_secs(2);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let (root, path) = (m.path(""), m.path(keys[t % 4]));
            let key = keys[t % 4];
            thread::spawn(move || {
                let mut ops = 0;
                while Instant::now() < end {
                    let started = Instant::now();
                    match t / 4 {
                        0 => {
                            let value = format!("{}h", 1 + ops % 5);
                            let set = setxattr(&path, "user.cachetta.duration", value.as_bytes());
                            set.unwrap_or_else(|e| panic!("setfattr {key}: {e}"));
                            if ops % 7 == 0 {
                                let removed = removexattr(&path, "user.cachetta.duration");
                                if let Err(e) = &removed {
                                    assert_eq!(
                                        e.raw_os_error(),
                                        Some(libc::ENODATA),
                                        "{key} removexattr: {e}"
                                    );
                                }
                            }
                        }
                        1 => fs::write(&path, format!("{{\"w\": {ops}}}")).unwrap(),
                        2 => {
                            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{key}: {e}"));
                            let parsed = serde_json::from_slice::<serde_json::Value>(&bytes);
                            assert!(parsed.is_ok(), "{key}: {bytes:?}");
                            let state = getxattr(&path, "user.cachetta.state")
                                .unwrap_or_else(|e| panic!("{key} getxattr: {e}"));
                            assert_eq!(state, b"fresh", "{key}");
                        }
                        _ => setxattr(&root, "user.cachetta.refresh", key.as_bytes()).unwrap(),
                    }
                    assert!(
                        started.elapsed() < slow,
                        "{key}: one operation took {:?}",
                        started.elapsed()
                    );
                    ops += 1;
                }
                ops
            })
        })
        .collect();
    let ops: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(ops > 16, "{ops} operations");
    for key in keys {
        setxattr(&m.path(key), "user.cachetta.duration", b"90m").unwrap();
        assert_eq!(attr(&m, key, "duration").as_deref(), Some("5400"), "{key}");
        let stored = getxattr(&m.backing_path(key), "user.cachetta.duration").unwrap();
        assert_eq!(stored, b"5400", "{key}: on the backing file");
    }
    assert!(!m.stderr().contains(" WARN "), "{}", m.stderr());
}
