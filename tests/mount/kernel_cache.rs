//! What reaches the daemon once the kernel's caches are warm (issue 5's structural targets),
//! counted by the mount's own per-request counters, plus the inode table shrinking back after
//! the kernel forgets. Deterministic: no timers, only request counts. Each counting test holds
//! `kernel_caches_kept()`, so no test in another thread makes the kernel drop its caches
//! meanwhile.

use std::fs;
use std::time::Duration;

use crate::common::*;

/// The per-request counters, without the `getxattr`s that reading them costs.
fn requests(m: &Mount) -> serde_json::Map<String, serde_json::Value> {
    let mut all = stats(m)["requests"]
        .as_object()
        .expect("requests object")
        .clone();
    all.remove("getxattr");
    all
}

/// What changed between two snapshots, as `name: delta` for the counters that moved.
fn delta(
    before: &serde_json::Map<String, serde_json::Value>,
    after: &serde_json::Map<String, serde_json::Value>,
) -> Vec<(String, u64)> {
    let mut moved: Vec<(String, u64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap() - before[k].as_u64().unwrap()))
        .filter(|(_, d)| *d > 0)
        .collect();
    moved.sort();
    moved
}

/// A mount whose backing dir is watched (so the kernel may cache names and attributes long).
fn watched_mount(b: MountBuilder) -> Mount {
    let m = b.start();
    assert!(
        eventually(Duration::from_secs(10), || stats(&m)["watching"] == true),
        "the backing dir never became watched"
    );
    m
}

fn passthrough(m: &Mount) -> bool {
    stats(m)["passthrough"] == true
}

/// Whether the mount got kernel passthrough. Root on Linux >= 6.9 gets it, and CI
/// (`CACHETTA_REQUIRE_FUSE=1`) is such a machine: there its absence fails the test, so the
/// passthrough checks never pass by not running. Elsewhere the caller checks what a mount
/// without passthrough does instead.
#[track_caller]
fn passthrough_or_required(m: &Mount) -> bool {
    let on = passthrough(m);
    if !on && std::env::var_os("CACHETTA_REQUIRE_FUSE").is_some_and(|v| v == "1") {
        panic!(
            "CACHETTA_REQUIRE_FUSE=1 but the mount got no kernel passthrough; stderr:\n{}",
            m.stderr()
        );
    }
    on
}

#[test]
fn cat_of_a_recently_read_fresh_entry_sends_only_open_and_release_and_no_read() {
    if !require_fuse() {
        return;
    }
    let _kept = kernel_caches_kept();
    let m = watched_mount(Mount::new().backing_file("x.json", "{\"a\":1}"));
    assert_eq!(fs::read(m.path("x.json")).unwrap(), b"{\"a\":1}");
    // The release of that read is sent after close returns: let it land first.
    assert!(eventually(Duration::from_secs(5), || requests(&m)
        ["release"]
        == 1));
    let before = requests(&m);
    assert_eq!(fs::read(m.path("x.json")).unwrap(), b"{\"a\":1}");
    let mut after = requests(&m);
    assert!(eventually(Duration::from_secs(5), || {
        after = requests(&m);
        after["release"] == 2
    }));
    let moved = delta(&before, &after);
    if passthrough_or_required(&m) {
        // The previous read was passed through, and the kernel marks the inode's atime stale
        // after every passthrough read (fs/fuse/passthrough.c, fuse_file_accessed), so the
        // fstat that `fs::read` (like `cat`) does costs one getattr. Nothing else comes.
        let getattr = moved
            .iter()
            .find(|(k, _)| k == "getattr")
            .map_or(0, |(_, n)| *n);
        assert!(getattr <= 1, "{moved:?}");
        let rest: Vec<_> = moved
            .iter()
            .filter(|(k, _)| k != "getattr")
            .cloned()
            .collect();
        assert_eq!(rest, vec![("open".into(), 1), ("release".into(), 1)]);
    } else {
        // Without passthrough the entry is opened either for the page cache, whose kept copy
        // serves the read (the fstat of `fs::read` then costs at most one getattr), or for
        // reads that come to the daemon (served from the hot set); which one is the open
        // mode's choice, on either transport. Nothing else comes.
        let count = |op: &str| moved.iter().find(|(k, _)| k == op).map_or(0, |(_, n)| *n);
        assert!(
            moved
                .iter()
                .all(|(k, _)| ["open", "read", "release", "getattr"].contains(&k.as_str())),
            "{moved:?}"
        );
        assert_eq!((count("open"), count("release")), (1, 1), "{moved:?}");
        assert!(count("getattr") <= 1, "{moved:?}");
    }
}

#[test]
fn stat_of_a_recently_stated_fresh_entry_sends_nothing() {
    if !require_fuse() {
        return;
    }
    let _kept = kernel_caches_kept();
    let m = watched_mount(Mount::new().backing_file("x.json", "{}"));
    let first = fs::metadata(m.path("x.json")).unwrap();
    let before = requests(&m);
    let second = fs::metadata(m.path("x.json")).unwrap();
    assert_eq!(first.len(), second.len());
    assert_eq!(delta(&before, &requests(&m)), vec![]);
}

#[test]
fn ls_l_of_a_warm_thousand_entry_directory_sends_no_request_per_entry() {
    if !require_fuse() {
        return;
    }
    let _kept = kernel_caches_kept();
    let m = watched_mount(Mount::new().prepare(|dir| {
        fs::create_dir(dir.join("d")).unwrap();
        for i in 0..1000 {
            fs::write(dir.join(format!("d/e{i}.json")), format!("{{\"i\":{i}}}")).unwrap();
        }
    }));
    let out = m.run("ls", &["-l", "d"]);
    assert!(out.status.success());
    let before = requests(&m);
    let out = m.run("ls", &["-l", "d"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1001);
    let moved = delta(&before, &requests(&m));
    let count = |name: &str| moved.iter().find(|(k, _)| k == name).map_or(0, |(_, n)| *n);
    assert_eq!(count("lookup"), 0, "{moved:?}");
    assert!(
        count("getattr") <= 2,
        "only the directory itself may be asked: {moved:?}"
    );
    assert!(count("readdirplus") >= 1, "{moved:?}");
    assert!(
        count("listxattr") + count("open") + count("read") == 0,
        "{moved:?}"
    );
}

#[test]
fn reading_a_large_entry_sends_no_read_requests_with_passthrough() {
    if !require_fuse() {
        return;
    }
    let _kept = kernel_caches_kept();
    let big = serde_json::to_vec(&"x".repeat(2 << 20)).unwrap();
    let m = watched_mount(Mount::new().backing_file("big.json", big.clone()));
    let count = |moved: &[(String, u64)], op: &str| {
        moved.iter().find(|(k, _)| k == op).map_or(0, |(_, n)| *n)
    };
    let before = requests(&m);
    assert_eq!(fs::read(m.path("big.json")).unwrap(), big);
    let moved = delta(&before, &requests(&m));
    if passthrough_or_required(&m) {
        assert_eq!(count(&moved, "read"), 0, "{moved:?}");
        return;
    }
    // Without passthrough the first read goes through the daemon, and the pages it filled
    // serve the next: a second read of the unchanged entry sends none.
    eprintln!("note: no kernel passthrough here; checking the page-cache path instead");
    assert!(count(&moved, "read") > 0, "{moved:?}");
    let before = requests(&m);
    assert_eq!(fs::read(m.path("big.json")).unwrap(), big);
    let moved = delta(&before, &requests(&m));
    assert_eq!(count(&moved, "read"), 0, "{moved:?}");
}

#[test]
fn an_entry_renamed_onto_right_after_an_in_place_write_is_read_with_passthrough() {
    if !require_fuse() {
        return;
    }
    let _kept = kernel_caches_kept();
    let m = watched_mount(Mount::new());
    let count = |moved: &[(String, u64)], op: &str| {
        moved.iter().find(|(k, _)| k == op).map_or(0, |(_, n)| *n)
    };
    // An in-place write: the name's readers go through the daemon for a moment after, so the
    // next in-place writer of the name is not refused by the kernel.
    fs::write(m.path("k.json"), "{}").unwrap();
    // A temp + rename write replaces it: the name now holds a file no writer has open.
    let v = serde_json::to_vec(&"y".repeat(60_000)).unwrap();
    fs::write(m.path(".k.json.tmp"), &v).unwrap();
    fs::rename(m.path(".k.json.tmp"), m.path("k.json")).unwrap();
    let before = requests(&m);
    for _ in 0..3 {
        assert_eq!(fs::read(m.path("k.json")).unwrap(), v);
    }
    let moved = delta(&before, &requests(&m));
    if passthrough_or_required(&m) {
        assert_eq!(count(&moved, "read"), 0, "{moved:?}");
    }
}

#[test]
fn the_inode_table_shrinks_back_once_the_kernel_forgets() {
    if !require_fuse() {
        return;
    }
    let _dropping = dropping_kernel_caches();
    let m = watched_mount(Mount::new().prepare(|dir| {
        for i in 0..3000 {
            fs::write(dir.join(format!("e{i}.json")), "{}").unwrap();
        }
    }));
    for i in 0..3000 {
        fs::metadata(m.path(format!("e{i}.json"))).unwrap();
    }
    let walked = stats(&m)["inodes"].as_u64().unwrap();
    assert!(walked >= 3000, "{walked}");
    // Ask the kernel to drop unused dentries and inodes: it then sends `forget`.
    assert!(eventually(Duration::from_secs(20), || {
        fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
        stats(&m)["inodes"].as_u64().unwrap() < 100
    }));
}

#[test]
fn the_hot_set_serves_reads_only_while_the_backing_file_is_unchanged() {
    if !require_fuse() {
        return;
    }
    // Without passthrough, reads that reach the daemon (here `O_DIRECT` ones; otherwise the
    // kernel's page cache answers) are served from the hot set.
    let m = Mount::new()
        .env("CACHETTA_PASSTHROUGH", "0")
        .backing_file("x.json", "{\"v\":1111}")
        .start();
    assert_eq!(stats(&m)["passthrough"], false);
    let read_direct = |path: &std::path::Path| {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .unwrap();
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).unwrap();
        buf
    };
    assert_eq!(read_direct(&m.path("x.json")), b"{\"v\":1111}");
    assert_eq!(read_direct(&m.path("x.json")), b"{\"v\":1111}");
    let kept = stats(&m);
    assert!(kept["lru_hits"].as_u64().unwrap() >= 1, "{kept}");
    assert_eq!(kept["lru_entries"], 1);

    // Rewritten in place behind the mount's back: same inode, same size, even the old mtime
    // put back. Only the ctime tells, and that is enough: no stale byte is served.
    let mtime = fs::metadata(m.backing_path("x.json"))
        .unwrap()
        .modified()
        .unwrap();
    fs::write(m.backing_path("x.json"), "{\"v\":2222}").unwrap();
    m.set_mtime("x.json", mtime);
    assert!(
        eventually(Duration::from_secs(1), || fs::read(m.path("x.json"))
            .unwrap()
            == b"{\"v\":2222}"),
        "the hot set served a changed file"
    );
}

/// SPEC §7: a write, `rm`, a refresh and a change behind the mount drop the key's kept copy
/// at once, rather than leaving it (never served, but counted in `lru_*`) until evicted.
fn every_change_drops_the_kept_copy(passthrough: bool) {
    let toml = "duration = \"1h\"\n[[rule]]\nmatch = \"r.json\"\n\
                refresh = 'echo \"{\\\"v\\\": 2}\"'\n";
    let keys = ["a.json", "b.json", "w.json", "r.json", "e.json"];
    let mut b = Mount::new().config(toml);
    if !passthrough {
        b = b.env("CACHETTA_PASSTHROUGH", "0");
    }
    for key in keys {
        b = b.backing_file(key, "{\"v\": 1}");
    }
    let m = b.start();
    assert_eq!(stats(&m)["passthrough"], passthrough);
    let read_direct = |key: &str| {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(m.path(key))
            .unwrap();
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).unwrap();
        buf
    };
    for key in keys {
        // Written through the mount, then read at once: with passthrough too, a name written
        // in the last moments is read through the daemon (read-your-writes), and so kept.
        fs::write(m.path(key), "{\"v\": 1}").unwrap();
        assert_eq!(read_direct(key), b"{\"v\": 1}", "{key}");
    }
    let kept = |m: &Mount| stats(m)["lru_entries"].as_u64().unwrap();
    assert_eq!(kept(&m), keys.len() as u64, "{}", stats(&m));

    fs::remove_file(m.path("a.json")).unwrap();
    fs::remove_file(m.path("b.json")).unwrap();
    assert_eq!(kept(&m), 3, "rm drops the copy: {}", stats(&m));
    fs::write(m.path("w.json"), "{\"v\": 3}").unwrap();
    assert_eq!(kept(&m), 2, "a write drops the copy: {}", stats(&m));
    setxattr(&m.path(""), "user.cachetta.refresh", b"r.json").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || kept(&m) == 1),
        "a refresh drops the copy: {}",
        stats(&m)
    );
    assert_eq!(fs::read(m.backing_path("r.json")).unwrap(), b"{\"v\": 2}\n");
    fs::write(m.backing_path("e.json"), "{\"v\": 4}").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || kept(&m) == 0),
        "a change behind the mount drops the copy: {}",
        stats(&m)
    );
    assert_eq!(stats(&m)["lru_bytes"], 0);
}

#[test]
fn every_change_drops_the_kept_copy_with_passthrough() {
    if !require_fuse() {
        return;
    }
    every_change_drops_the_kept_copy(true);
}

#[test]
fn every_change_drops_the_kept_copy_without_passthrough() {
    if !require_fuse() {
        return;
    }
    every_change_drops_the_kept_copy(false);
}
