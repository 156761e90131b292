//! Several mounts over one backing dir (SPEC §13): two daemons on this machine, both with
//! `--watch poll=200ms`, as mounts on different machines would run. A key's refresh runs on
//! one of them at a time (a `flock` in `.cachetta/locks/`), each sees the other's writes and
//! removals within a second (plus the filesystem client's own cache time) and never a torn
//! entry, and `.cachetta/` never shows.
//!
//! Every scenario runs twice ([`over_each_shared_backing`]): `local::NAME` over one dir of a
//! local filesystem, `glusterfs::NAME` over one dir of a GlusterFS volume that the first mount
//! reaches through client A and the second through client B, as two machines would.
//!
//! Refresh commands count their runs in `ROOT/outside/runs` of the first mount (one line per
//! run).

use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

over_each_shared_backing!(
    a_stale_key_read_on_two_mounts_runs_its_refresh_once,
    a_fill_on_miss_key_looked_up_on_two_mounts_runs_its_command_once,
    a_killed_lock_holder_does_not_block_the_other_mount,
    writes_and_removals_on_one_mount_show_on_the_other_within_a_second,
    writes_and_removals_show_within_a_second_on_a_mount_without_passthrough,
    a_writer_storm_on_one_mount_never_shows_a_torn_entry_on_the_other,
    a_writer_storm_never_shows_a_torn_entry_on_a_mount_without_passthrough,
    cachettas_own_directory_never_shows,
    a_publish_on_one_mount_reaches_the_other_through_the_journal,
);

const OLD: &str = r#"{"v":"old"}"#;
const NEW_LINE: &str = "{\"v\":\"new\"}\n";

/// Two mounts of one backing dir on `on` under `toml` (which may name `{out}`, the runs
/// directory); the first is given the backing dir's files by `setup`.
pub fn two_mounts(
    on: &SharedBacking,
    toml: &str,
    setup: impl FnOnce(MountBuilder) -> MountBuilder,
) -> (Mount, Mount) {
    two_mounts_with(on, toml, setup, |b| b)
}

/// [`two_mounts`], the second one built further by `second`.
pub fn two_mounts_with(
    on: &SharedBacking,
    toml: &str,
    setup: impl FnOnce(MountBuilder) -> MountBuilder,
    second: impl FnOnce(MountBuilder) -> MountBuilder,
) -> (Mount, Mount) {
    two_mounts_in(&on.dir(), toml, setup, second)
}

/// [`two_mounts_with`] over a backing dir made already.
pub fn two_mounts_in(
    dir: &SharedDir,
    toml: &str,
    setup: impl FnOnce(MountBuilder) -> MountBuilder,
    second: impl FnOnce(MountBuilder) -> MountBuilder,
) -> (Mount, Mount) {
    let first = dir.first(Mount::new());
    let out = first.root().join("outside");
    let toml = toml.replace("{out}", &out.display().to_string());
    let a = setup(first.config(&toml).args(&["--watch", "poll=200ms"])).start();
    let b = dir
        .second(second(Mount::new()), &a)
        .config(&toml)
        .args(&["--watch", "poll=200ms"])
        .start();
    (a, b)
}

fn runs(a: &Mount) -> usize {
    fs::read_to_string(a.outside_path("runs"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Read `key` on both mounts from `per_mount` threads each, all at once; every read's bytes.
fn read_on_both(a: &Mount, b: &Mount, key: &str, per_mount: usize) -> Vec<Vec<u8>> {
    let paths: Vec<PathBuf> = [a, b].iter().map(|m| m.path(key)).collect();
    let start = Arc::new(Barrier::new(2 * per_mount));
    let readers: Vec<_> = paths
        .iter()
        .flat_map(|path| std::iter::repeat_n(path.clone(), per_mount))
        .map(|path| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            })
        })
        .collect();
    readers.into_iter().map(|r| r.join().unwrap()).collect()
}

fn a_stale_key_read_on_two_mounts_runs_its_refresh_once(on: &SharedBacking) {
    let toml = "duration = \"1h\"\nstale = \"1h\"\n[[rule]]\nmatch = \"x.json\"\n\
                refresh = 'echo run >> {out}/runs; sleep 1; echo \"{\\\"v\\\":\\\"new\\\"}\"'\n";
    let (a, b) = two_mounts(on, toml, |m| {
        m.backing_file_aged("x.json", OLD, Duration::from_secs(90 * 60))
    });
    for read in read_on_both(&a, &b, "x.json", 20) {
        assert_bytes(&read, OLD.as_bytes(), "a stale read is answered at once");
    }
    let refreshed = eventually(Duration::from_secs(10), || {
        [&a, &b]
            .iter()
            .all(|m| fs::read(m.path("x.json")).is_ok_and(|r| r == NEW_LINE.as_bytes()))
    });
    assert!(refreshed, "{} / {}", info(&a, "x.json"), info(&b, "x.json"));
    assert!(eventually(Duration::from_secs(5), || {
        attr(&a, "x.json", "refreshing").as_deref() == Some("false")
            && attr(&b, "x.json", "refreshing").as_deref() == Some("false")
    }));
    assert_eq!(runs(&a), 1, "the refresh ran on one mount, once");
    assert_eq!(
        stat(&a, "refreshes_started") + stat(&b, "refreshes_started"),
        1
    );
}

fn a_fill_on_miss_key_looked_up_on_two_mounts_runs_its_command_once(on: &SharedBacking) {
    let toml = "[[rule]]\nmatch = \"x.json\"\nfill_on_miss = true\n\
                refresh = 'echo run >> {out}/runs; sleep 1; echo \"{\\\"v\\\":\\\"new\\\"}\"'\n";
    let (a, b) = two_mounts(on, toml, |m| m);
    for read in read_on_both(&a, &b, "x.json", 10) {
        assert_bytes(
            &read,
            NEW_LINE.as_bytes(),
            "every reader gets the filled entry",
        );
    }
    assert_eq!(runs(&a), 1, "the command ran on one mount, once");
}

fn a_killed_lock_holder_does_not_block_the_other_mount(on: &SharedBacking) {
    // The first run hangs (and records its process group to be ended); later runs publish.
    let toml = "duration = \"1h\"\nstale = \"1h\"\n[[rule]]\nmatch = \"x.json\"\n\
                refresh = 'echo run >> {out}/runs; if [ ! -e {out}/hung ]; then echo $$ > {out}/hung; \
                sleep 30; fi; echo \"{\\\"v\\\":\\\"new\\\"}\"'\n";
    let (mut a, b) = two_mounts(on, toml, |m| {
        m.backing_file_aged("x.json", OLD, Duration::from_secs(90 * 60))
    });
    let hung = a.outside_path("hung");
    let _end_hung = EndGroupOnDrop(hung.clone());
    assert_bytes(
        &fs::read(a.path("x.json")).unwrap(),
        OLD.as_bytes(),
        "stale read on a",
    );
    assert!(
        eventually(Duration::from_secs(10), || hung.exists()),
        "a's refresh never ran"
    );
    a.stop_with(libc::SIGKILL);
    // b's next stale read runs the refresh itself: the lock died with a.
    assert_bytes(
        &fs::read(b.path("x.json")).unwrap(),
        OLD.as_bytes(),
        "stale read on b",
    );
    let refreshed = eventually(Duration::from_secs(10), || {
        fs::read(b.path("x.json")).is_ok_and(|r| r == NEW_LINE.as_bytes())
    });
    assert!(refreshed, "b never refreshed; {}", info(&b, "x.json"));
    assert_eq!(runs(&a), 2);
}

/// Kill the process group whose leader's pid is in the file, when the test ends.
struct EndGroupOnDrop(PathBuf);

impl Drop for EndGroupOnDrop {
    fn drop(&mut self) {
        if let Some(pgid) = fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory is
            // touched.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

fn writes_and_removals_on_one_mount_show_on_the_other_within_a_second(on: &SharedBacking) {
    let (a, b) = two_mounts(on, "duration = \"1h\"\n", |m| m.backing_file("x.json", OLD));
    shows_within_a_second(on, &a, &b);
}

/// The same where the second mount serves reads itself (no passthrough, as for ordinary
/// users): from the kernel's page cache and its own hot set, which must not keep old content.
fn writes_and_removals_show_within_a_second_on_a_mount_without_passthrough(on: &SharedBacking) {
    let (a, b) = two_mounts_with(
        on,
        "duration = \"1h\"\n",
        |m| m.backing_file("x.json", OLD),
        |m| m.env("CACHETTA_PASSTHROUGH", "0"),
    );
    assert_eq!(stats(&b)["passthrough"], false);
    for _ in 0..3 {
        // Cached by the kernel and kept in the hot set.
        assert_bytes(
            &fs::read(b.path("x.json")).unwrap(),
            OLD.as_bytes(),
            "b warm",
        );
    }
    shows_within_a_second(on, &a, &b);
}

/// A write on `a` is read on `b`, and a removal on `a` answers `ENOENT` on `b`, each within a
/// second plus the filesystem client's own cache time; meanwhile `b` answers the old entry or
/// the new state, never another error (`ESTALE`, `EIO`).
fn shows_within_a_second(on: &SharedBacking, a: &Mount, b: &Mount) {
    let bound = Duration::from_secs(1) + on.client_cache();
    assert_bytes(
        &fs::read(b.path("x.json")).unwrap(),
        OLD.as_bytes(),
        "b before",
    );
    let mut errors = Vec::new();
    fs::write(a.path("x.json"), NEW_LINE).unwrap();
    let written = Instant::now();
    let seen = eventually(Duration::from_secs(10), || {
        match fs::read(b.path("x.json")) {
            Ok(r) => r == NEW_LINE.as_bytes(),
            Err(e) => {
                errors.push(format!("read after the write: {e}"));
                false
            }
        }
    });
    let took = written.elapsed();
    assert!(
        seen && took <= bound,
        "took {took:?} (bound {bound:?}); {errors:?}"
    );
    fs::remove_file(a.path("x.json")).unwrap();
    let removed = Instant::now();
    let gone = eventually(Duration::from_secs(10), || {
        match fs::metadata(b.path("x.json")) {
            Ok(_) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) => {
                errors.push(format!("stat after the removal: {e}"));
                false
            }
        }
    });
    let took = removed.elapsed();
    assert!(
        gone && took <= bound,
        "took {took:?} (bound {bound:?}); {errors:?}"
    );
    assert!(
        errors.is_empty(),
        "b answered {} errors; the first: {:?}",
        errors.len(),
        &errors[..errors.len().min(8)]
    );
}

/// A JSON value whose length says which it is: a torn or mixed read cannot parse as one.
fn value(n: usize) -> String {
    format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(n * 997 % 20_000))
}

fn a_writer_storm_on_one_mount_never_shows_a_torn_entry_on_the_other(on: &SharedBacking) {
    on.storm_with_known_retry(|| {
        let (a, b) = two_mounts(on, "duration = \"1h\"\n", |m| {
            m.backing_file("x.json", value(0))
        });
        storm_on_a_read_on_b(&a, &b);
    });
}

fn a_writer_storm_never_shows_a_torn_entry_on_a_mount_without_passthrough(on: &SharedBacking) {
    on.storm_with_known_retry(|| {
        let (a, b) = two_mounts_with(
            on,
            "duration = \"1h\"\n",
            |m| m.backing_file("x.json", value(0)),
            |m| m.env("CACHETTA_PASSTHROUGH", "0"),
        );
        storm_on_a_read_on_b(&a, &b);
    });
}

/// 4 writers on `a` and 4 readers on `b`, for 3 s: every read succeeds and is one whole
/// written value.
fn storm_on_a_read_on_b(a: &Mount, b: &Mount) {
    let end = Instant::now() + Duration::from_secs(3);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let path = a.path("x.json");
            thread::spawn(move || {
                let mut n = w;
                while Instant::now() < end {
                    n += 4;
                    fs::write(&path, value(n)).unwrap_or_else(|e| panic!("write on a: {e}"));
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let path = b.path("x.json");
            thread::spawn(move || {
                let (mut reads, mut failed) = (0, Vec::new());
                while Instant::now() < end {
                    let bytes = match fs::read(&path) {
                        Ok(bytes) => bytes,
                        Err(e) => {
                            failed.push(format!("read on b: {e}"));
                            continue;
                        }
                    };
                    let v: serde_json::Value = serde_json::from_slice(&bytes)
                        .unwrap_or_else(|e| panic!("torn read ({e}): {} bytes", bytes.len()));
                    let n = v["n"].as_u64().unwrap() as usize;
                    assert_eq!(bytes, value(n).as_bytes(), "a mix of two writes");
                    reads += 1;
                }
                (reads, failed)
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let (mut reads, mut failed) = (0, Vec::new());
    for r in readers {
        let (n, f) = r.join().unwrap();
        reads += n;
        failed.extend(f);
    }
    let mut kinds = std::collections::BTreeMap::new();
    for f in &failed {
        *kinds.entry(f.as_str()).or_insert(0) += 1;
    }
    assert!(
        failed.is_empty(),
        "{} of {} reads failed: {kinds:?}",
        failed.len(),
        reads + failed.len(),
    );
    assert!(reads > 0);
}

fn cachettas_own_directory_never_shows(on: &SharedBacking) {
    let toml = "[[rule]]\nmatch = \"x.json\"\nfill_on_miss = true\nrefresh = 'echo 1'\n";
    let (a, _b) = two_mounts(on, toml, |m| m.backing_file("keep.json", OLD));
    assert_bytes(&fs::read(a.path("x.json")).unwrap(), b"1\n", "filled");
    assert!(a.backing_path(".cachetta/locks/x.json.lock").is_file());
    assert!(!a.list("").iter().any(|n| n == ".cachetta"));
    assert_eq!(errno_of(fs::metadata(a.path(".cachetta"))), libc::ENOENT);
    assert!(fs::create_dir(a.path(".cachetta")).is_err());
    assert!(fs::write(a.path(".cachetta/x.json"), "1").is_err());
    let config = a.config_path.clone().unwrap();
    let common = [
        "--config".as_ref(),
        config.as_os_str(),
        "--backing".as_ref(),
        a.backing.as_os_str(),
    ];
    let ls = a.cachetta(
        &[
            &["ls".as_ref(), "--all".as_ref(), "--json".as_ref()],
            &common[..],
        ]
        .concat(),
    );
    assert!(ls.status.success(), "{ls:?}");
    assert!(
        !String::from_utf8_lossy(&ls.stdout).contains(".cachetta"),
        "{ls:?}"
    );
    let gc = a.cachetta(&[&["gc".as_ref(), "--dry-run".as_ref()], &common[..]].concat());
    assert!(
        !String::from_utf8_lossy(&gc.stdout).contains(".cachetta"),
        "{gc:?}"
    );
    // `rm -r` of everything in the mount leaves it.
    a.sh("rm -rf ./* ./.[!.]*");
    assert!(a.backing_path(".cachetta/locks").is_dir());
    assert!(!a.backing_path("keep.json").exists());
}

/// The lines of the journal that are `op` records for `key`, parsed.
fn journal_records(m: &Mount, op: &str, key: &str) -> Vec<serde_json::Value> {
    fs::read_to_string(m.backing_path(".cachetta/journal"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|r| r["op"] == op && r["key"] == key)
        .collect()
}

/// The daemon log lines in which `m` took in another mount's journal record for `key`.
fn journal_lines_seen(m: &Mount, key: &str) -> usize {
    m.stderr()
        .lines()
        .filter(|l| l.contains("journal record") && l.contains(key))
        .count()
}

fn a_publish_on_one_mount_reaches_the_other_through_the_journal(on: &SharedBacking) {
    use std::os::unix::fs::MetadataExt;
    // No full walks: what b learns, it learns from the journal and the directory times.
    let toml = "duration = \"1h\"\nfull_scan_interval = \"0\"\n";
    let (a, b) = two_mounts_with(
        on,
        toml,
        |m| m.backing_file("x.json", OLD),
        |m| m.args(&["-v"]),
    );
    assert_bytes(
        &fs::read(b.path("x.json")).unwrap(),
        OLD.as_bytes(),
        "b before",
    );
    fs::write(a.path("x.json"), NEW_LINE).unwrap();
    let written = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || {
            fs::read(b.path("x.json")).is_ok_and(|r| r == NEW_LINE.as_bytes())
        }),
        "b never read the new entry"
    );
    assert!(
        written.elapsed() < Duration::from_secs(1),
        "{:?}",
        written.elapsed()
    );
    // a announced exactly the version it published, validated, with its policy (none).
    assert!(eventually(Duration::from_secs(5), || !journal_records(
        &a, "put", "x.json"
    )
    .is_empty()));
    let meta = fs::metadata(a.backing_path("x.json")).unwrap();
    let put = journal_records(&a, "put", "x.json").pop().unwrap();
    assert_eq!(put["v"], 1);
    assert_eq!(put["ino"], meta.ino());
    assert_eq!(put["size"], meta.size());
    assert_eq!(
        put["mtime_ns"],
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
    );
    assert_eq!(
        put["ctime_ns"],
        meta.ctime() * 1_000_000_000 + meta.ctime_nsec()
    );
    assert_eq!(put["valid"], true);
    assert_eq!(put["policy"], serde_json::json!({}));
    assert!(
        eventually(Duration::from_secs(5), || journal_lines_seen(&b, "x.json")
            >= 1),
        "b never took in a's record; b's log:\n{}",
        b.stderr()
    );
    // A change of times through a moves no directory time: only the journal tells b.
    let seen = journal_lines_seen(&b, "x.json");
    let out = a.sh("touch -d '10 minutes ago' x.json");
    assert!(out.status.success(), "{out:?}");
    assert!(
        eventually(Duration::from_secs(5), || journal_lines_seen(&b, "x.json")
            > seen),
        "b never heard of the touch; b's log:\n{}",
        b.stderr()
    );
    // And a removal.
    fs::remove_file(a.path("x.json")).unwrap();
    assert!(eventually(Duration::from_secs(5), || !journal_records(
        &a, "del", "x.json"
    )
    .is_empty()));
    // Within the kernel's second, plus the filesystem client's own cache time (SPEC §13).
    assert!(eventually(
        Duration::from_secs(1) + on.client_cache(),
        || !b.path("x.json").exists()
    ));
}
