//! Mount lifecycle: directories created, clean exit on signals, config errors, `--read-only`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::time::SystemTime;

use crate::common::*;

#[test]
fn mount_creates_missing_mountpoint_and_backing_dirs() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().missing_dirs().start();
    assert!(is_fuse_mount(&m.mnt));
    assert!(m.backing.is_dir(), "backing dir was not created");
    fs::write(m.path("x.json"), b"{}").unwrap();
    assert_eq!(fs::read(m.backing_path("x.json")).unwrap(), b"{}");
}

#[test]
fn sigterm_unmounts_and_exits_zero() {
    if !require_fuse() {
        return;
    }
    let mut m = Mount::new().backing_file("x.json", "{}").start();
    assert_eq!(fs::read(m.path("x.json")).unwrap(), b"{}");
    let status = m.stop_with(libc::SIGTERM);
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(!is_mounted(&m.mnt), "still mounted after SIGTERM");
    assert_eq!(fs::read(m.backing_path("x.json")).unwrap(), b"{}");
}

#[test]
fn sigint_unmounts_and_exits_zero() {
    if !require_fuse() {
        return;
    }
    let mut m = Mount::new().start();
    let status = m.stop_with(libc::SIGINT);
    assert!(status.success(), "exit status after SIGINT: {status}");
    assert!(!is_mounted(&m.mnt), "still mounted after SIGINT");
}

#[test]
fn unknown_config_key_exits_2_naming_file_line_and_key() {
    let (status, stderr) = Mount::new()
        .config("duration = \"1h\"\nbogus_key = 3\n")
        .run_expecting_exit();
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("config.toml"), "file not named: {stderr}");
    assert!(mentions_line(&stderr, 2), "line 2 not named: {stderr}");
    assert!(stderr.contains("bogus_key"), "key not named: {stderr}");
}

#[test]
fn bad_duration_value_exits_2_naming_file_line_and_key() {
    let (status, stderr) = Mount::new()
        .config("stale = \"0s\"\n\n[[rule]]\nmatch = \"a/*.json\"\nduration = \"soon\"\n")
        .run_expecting_exit();
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("config.toml"), "file not named: {stderr}");
    assert!(mentions_line(&stderr, 5), "line 5 not named: {stderr}");
    assert!(stderr.contains("duration"), "key not named: {stderr}");
}

#[test]
fn config_with_every_documented_key_mounts() {
    if !require_fuse() {
        return;
    }
    let b = Mount::new();
    let backing = b.backing().display().to_string();
    let config = format!(
        r#"
backing = "{backing}"
duration = "7d"
stale = "0s"
lru_entries = 1024
lru_bytes = "64MiB"
max_entry_bytes = "256MiB"
max_refreshes = 4
refresh_timeout = "60s"
refresh_backoff = "10s"
gc_interval = "1h"
sync_writes = false

[[rule]]
match = "weather/{{city}}.json"
duration = "1h"
stale = "30m"
refresh = "echo '{{}}'"
refresh_timeout = "20s"
refresh_backoff = 30
fill_on_miss = false
condition = "cat >/dev/null"

[[rule]]
match = "plain/**"
duration = 90
stale = "0"
"#
    );
    let m = b.config(&config).backing_file("x.json", "[1]").start();
    assert_eq!(fs::read(m.path("x.json")).unwrap(), b"[1]");
}

#[test]
fn duration_flag_overrides_config_file() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .config("duration = \"1h\"\n")
        .args(&["--duration", "10s"])
        .backing_file_aged("old.json", "{}", MINUTE)
        .backing_file("new.json", "{}")
        .start();
    assert_eq!(m.list(""), names(&["new.json"]));
    assert_eq!(errno_of(fs::metadata(m.path("old.json"))), libc::ENOENT);
}

#[test]
fn stale_flag_overrides_config_file() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .config("duration = \"10s\"\nstale = \"0s\"\n")
        .args(&["--stale", "1h"])
        .backing_file_aged("old.json", "{}", MINUTE)
        .start();
    assert_eq!(fs::read(m.path("old.json")).unwrap(), b"{}");
}

#[test]
fn read_only_mount_serves_reads_and_refuses_every_change_with_erofs() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .args(&["--read-only"])
        .backing_file("x.json", "{\"a\":1}")
        .backing_file("dir/y.json", "{}")
        .backing_file("scratch.tmp", "not json")
        .start();
    assert_eq!(fs::read(m.path("x.json")).unwrap(), b"{\"a\":1}");

    let open_write = OpenOptions::new().write(true).open(m.path("x.json"));
    assert_eq!(errno_of(open_write), libc::EROFS, "open for writing");
    assert_eq!(
        errno_of(fs::write(m.path("new.json"), b"{}")),
        libc::EROFS,
        "create"
    );
    assert_eq!(
        errno_of(fs::write(m.path("scratch.tmp"), b"x")),
        libc::EROFS,
        "scratch write"
    );
    assert_eq!(
        errno_of(fs::remove_file(m.path("x.json"))),
        libc::EROFS,
        "rm"
    );
    assert_eq!(
        errno_of(fs::create_dir(m.path("newdir"))),
        libc::EROFS,
        "mkdir"
    );
    assert_eq!(
        errno_of(fs::DirBuilder::new().mode(0o755).create(m.path("dir/sub"))),
        libc::EROFS,
        "mkdir in subdir"
    );
    assert_eq!(
        errno_of(fs::rename(m.path("x.json"), m.path("z.json"))),
        libc::EROFS,
        "rename"
    );
    assert_eq!(
        errno_of(fs::remove_dir(m.path("dir"))),
        libc::EROFS,
        "rmdir"
    );
    assert_eq!(
        errno_of(set_mtime(&m.path("x.json"), SystemTime::now())),
        libc::EROFS,
        "utimensat"
    );
    let touch = m.run("touch", &["x.json"]);
    assert!(
        !touch.status.success(),
        "touch succeeded on a read-only mount"
    );
    let truncate = m.run("truncate", &["-s", "0", "x.json"]);
    assert!(
        !truncate.status.success(),
        "truncate succeeded on a read-only mount"
    );

    assert_eq!(fs::read(m.backing_path("x.json")).unwrap(), b"{\"a\":1}");
    assert_eq!(m.list_backing(""), names(&["dir", "scratch.tmp", "x.json"]));
    assert_eq!(
        fs::read(m.backing_path("scratch.tmp")).unwrap(),
        b"not json"
    );
}

#[test]
fn read_only_mount_refuses_appending() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .args(&["--read-only"])
        .backing_file("n.json", "1")
        .start();
    let result = OpenOptions::new()
        .append(true)
        .open(m.path("n.json"))
        .and_then(|mut f| f.write_all(b"2"));
    assert_eq!(errno_of(result), libc::EROFS);
    assert_eq!(fs::read(m.backing_path("n.json")).unwrap(), b"1");
}
