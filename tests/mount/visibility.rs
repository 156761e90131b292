//! What the mount shows: fresh and stale entries, never expired, corrupt or special files;
//! scratch files by name only; rules, captures, nested dirs and raw-byte names.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

use crate::common::*;

const ONE_HOUR_ONE_HOUR_STALE: &str = "duration = \"1h\"\nstale = \"1h\"\n";

#[test]
fn fresh_and_stale_entries_are_listed_and_readable() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .config(ONE_HOUR_ONE_HOUR_STALE)
        .backing_file("fresh.json", "{\"f\":1}")
        .backing_file_aged("stale.json", "{\"s\":1}", 90 * MINUTE)
        .start();
    assert_eq!(m.list(""), names(&["fresh.json", "stale.json"]));
    assert_eq!(fs::read(m.path("fresh.json")).unwrap(), b"{\"f\":1}");
    assert_eq!(fs::read(m.path("stale.json")).unwrap(), b"{\"s\":1}");
    let meta = fs::metadata(m.path("stale.json")).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.len(), 7);
}

#[test]
fn expired_entry_is_hidden_from_readdir_stat_and_open() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .config(ONE_HOUR_ONE_HOUR_STALE)
        .backing_file("live.json", "{}")
        .backing_file_aged("gone.json", "{}", 2 * HOUR + MINUTE)
        .backing_file_aged("sub/gone.json", "{}", 3 * HOUR)
        .start();
    assert_eq!(m.list(""), names(&["live.json", "sub"]));
    assert_eq!(m.list("sub"), names(&[]));
    assert_eq!(errno_of(fs::metadata(m.path("gone.json"))), libc::ENOENT);
    assert_eq!(errno_of(File::open(m.path("gone.json"))), libc::ENOENT);
    assert_eq!(errno_of(fs::read(m.path("sub/gone.json"))), libc::ENOENT);
    // Hidden, not deleted: gc does that.
    assert!(m.backing_path("gone.json").exists());
}

#[test]
fn corrupt_entry_is_hidden_from_readdir_stat_and_open() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .backing_file("good.json", "[1,2]")
        .backing_file("bad.json", "{\"truncated\": [1, 2")
        .backing_file("empty.json", "")
        .backing_file("latin1.json", b"\"caf\xe9\"")
        .start();
    assert_eq!(m.list(""), names(&["good.json"]));
    for bad in ["bad.json", "empty.json", "latin1.json"] {
        assert_eq!(errno_of(fs::metadata(m.path(bad))), libc::ENOENT, "{bad}");
        assert_eq!(errno_of(File::open(m.path(bad))), libc::ENOENT, "{bad}");
    }
}

#[test]
fn any_json_value_is_a_valid_entry() {
    if !require_fuse() {
        return;
    }
    let values = [
        ("null.json", "null"),
        ("num.json", "42"),
        ("str.json", "\"hi\"\n"),
        ("arr.json", " [ ] "),
        ("bool.json", "true"),
        ("utf8.json", "{\"k\":\"caf\u{e9} \u{1f600}\"}"),
    ];
    let mut b = Mount::new();
    for (name, v) in values {
        b = b.backing_file(name, v);
    }
    let m = b.start();
    let mut expected: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
    expected.sort();
    assert_eq!(m.list(""), names(&expected));
    for (name, v) in values {
        assert_eq!(fs::read(m.path(name)).unwrap(), v.as_bytes(), "{name}");
    }
}

#[test]
fn scratch_files_are_unlisted_but_work_by_name() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .backing_file("entry.json", "{}")
        .backing_file("notes.txt", "plain text")
        .backing_file(".entry.json.swp", "swap")
        .start();
    assert_eq!(m.list(""), names(&["entry.json"]));

    // stat and read by name
    assert_eq!(fs::metadata(m.path("notes.txt")).unwrap().len(), 10);
    assert_eq!(fs::read(m.path("notes.txt")).unwrap(), b"plain text");
    assert_eq!(fs::read(m.path(".entry.json.swp")).unwrap(), b"swap");

    // create and write by name: no JSON validation for scratch files
    fs::write(m.path("draft"), b"not json at all").unwrap();
    assert_eq!(fs::read(m.path("draft")).unwrap(), b"not json at all");
    assert_eq!(
        fs::read(m.backing_path("draft")).unwrap(),
        b"not json at all"
    );
    fs::write(m.path("notes.txt"), b"rewritten").unwrap();
    assert_eq!(fs::read(m.backing_path("notes.txt")).unwrap(), b"rewritten");

    // rename between scratch names
    fs::rename(m.path("draft"), m.path("draft.bak")).unwrap();
    assert_eq!(errno_of(fs::metadata(m.path("draft"))), libc::ENOENT);
    assert_eq!(fs::read(m.path("draft.bak")).unwrap(), b"not json at all");

    // unlink
    fs::remove_file(m.path("draft.bak")).unwrap();
    fs::remove_file(m.path("notes.txt")).unwrap();
    assert_eq!(errno_of(fs::metadata(m.path("notes.txt"))), libc::ENOENT);
    assert_eq!(
        m.list_backing(""),
        names(&[".entry.json.swp", "entry.json"])
    );
    assert_eq!(m.list(""), names(&["entry.json"]));
}

#[test]
fn symlinks_fifos_and_sockets_in_backing_dir_are_never_listed_or_served() {
    if !require_fuse() {
        return;
    }
    let b = Mount::new();
    let outside = b.root().join("outside/secret.json");
    fs::write(&outside, "{\"secret\":true}").unwrap();
    let m = b
        .backing_file("real.json", "{\"real\":true}")
        .prepare(|dir| {
            symlink("real.json", dir.join("link-in.json")).unwrap();
            symlink(&outside, dir.join("link-out.json")).unwrap();
            symlink("real.json", dir.join("link-scratch")).unwrap();
            symlink("/nonexistent/x.json", dir.join("dangling.json")).unwrap();
            let fifo = cstring(&dir.join("fifo.json"));
            // SAFETY: valid C string for the duration of the call.
            check_rc(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }).unwrap();
            // The socket file outlives the listener.
            drop(UnixListener::bind(dir.join("sock.json")).unwrap());
        })
        .start();
    assert_eq!(m.list(""), names(&["real.json"]));
    for name in [
        "link-in.json",
        "link-out.json",
        "link-scratch",
        "dangling.json",
        "fifo.json",
        "sock.json",
    ] {
        assert_eq!(
            errno_of(fs::symlink_metadata(m.path(name))),
            libc::ENOENT,
            "lstat {name}"
        );
        assert_eq!(
            errno_of(fs::metadata(m.path(name))),
            libc::ENOENT,
            "stat {name}"
        );
        assert_eq!(
            errno_of(File::open(m.path(name))),
            libc::ENOENT,
            "open {name}"
        );
    }
}

#[test]
fn rule_with_its_own_duration_applies_to_its_keys_only() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .config("duration = \"1h\"\n\n[[rule]]\nmatch = \"short/*.json\"\nduration = \"10s\"\n")
        .backing_file_aged("short/old.json", "{}", MINUTE)
        .backing_file_aged("short/new.json", "{}", std::time::Duration::from_secs(2))
        .backing_file_aged("short/deeper/old.json", "{}", MINUTE)
        .backing_file_aged("long/old.json", "{}", MINUTE)
        .backing_file_aged("old.json", "{}", MINUTE)
        .start();
    assert_eq!(m.list("short"), names(&["deeper", "new.json"]));
    assert_eq!(
        errno_of(fs::metadata(m.path("short/old.json"))),
        libc::ENOENT
    );
    // `*` stays within one segment.
    assert_eq!(fs::read(m.path("short/deeper/old.json")).unwrap(), b"{}");
    assert_eq!(fs::read(m.path("long/old.json")).unwrap(), b"{}");
    assert_eq!(fs::read(m.path("old.json")).unwrap(), b"{}");
}

#[test]
fn first_matching_rule_wins_and_inherits_unnamed_settings_from_top_level() {
    if !require_fuse() {
        return;
    }
    let config = r#"
duration = "1h"
stale = "1h"

[[rule]]
match = "a/{x}.json"
duration = "10s"

[[rule]]
match = "a/*.json"
duration = "1h"
stale = "0s"
"#;
    let m = Mount::new()
        .config(config)
        // first rule: d = 10s, s = 1h inherited, so stale (visible) at 1 min
        .backing_file_aged("a/stale.json", "{}", MINUTE)
        // ... and expired past 10s + 1h
        .backing_file_aged("a/expired.json", "{}", HOUR + MINUTE)
        .start();
    assert_eq!(m.list("a"), names(&["stale.json"]));
    assert_eq!(fs::read(m.path("a/stale.json")).unwrap(), b"{}");
}

#[test]
fn capture_patterns_match_part_of_one_segment() {
    if !require_fuse() {
        return;
    }
    let config = r#"
duration = "1h"

[[rule]]
match = "weather/{city}.json"
duration = "10s"

[[rule]]
match = "user-{id}.json"
duration = "10s"

[[rule]]
match = "deep/**/x.json"
duration = "10s"
"#;
    let m = Mount::new()
        .config(config)
        .backing_file_aged("weather/paris.json", "{}", MINUTE)
        .backing_file_aged("weather/fr/paris.json", "{}", MINUTE)
        .backing_file_aged("user-42.json", "{}", MINUTE)
        .backing_file_aged("users.json", "{}", MINUTE)
        .backing_file_aged("deep/a/b/x.json", "{}", MINUTE)
        .backing_file_aged("deep/a/b/y.json", "{}", MINUTE)
        .start();
    assert_eq!(m.list("weather"), names(&["fr"]));
    assert_eq!(m.list("weather/fr"), names(&["paris.json"]));
    assert_eq!(m.list(""), names(&["deep", "users.json", "weather"]));
    assert_eq!(m.list("deep/a/b"), names(&["y.json"]));
}

#[test]
fn durations_accept_bare_seconds_and_humantime() {
    if !require_fuse() {
        return;
    }
    let config = r#"
duration = 90

[[rule]]
match = "h/*.json"
duration = "1h 30m"

[[rule]]
match = "zero-int/*.json"
duration = 0

[[rule]]
match = "zero-str/*.json"
duration = "0"

[[rule]]
match = "zero-s/*.json"
duration = "0s"

[[rule]]
match = "str/*.json"
duration = "120"
"#;
    let s = std::time::Duration::from_secs;
    let m = Mount::new()
        .config(config)
        .backing_file_aged("in.json", "{}", s(60))
        .backing_file_aged("out.json", "{}", s(120))
        .backing_file_aged("h/in.json", "{}", 80 * MINUTE)
        .backing_file_aged("h/out.json", "{}", 100 * MINUTE)
        .backing_file_aged("zero-int/x.json", "{}", s(10))
        .backing_file_aged("zero-str/x.json", "{}", s(10))
        .backing_file_aged("zero-s/x.json", "{}", s(10))
        .backing_file_aged("str/in.json", "{}", s(100))
        .backing_file_aged("str/out.json", "{}", s(130))
        .start();
    assert_eq!(
        m.list(""),
        names(&["h", "in.json", "str", "zero-int", "zero-s", "zero-str"])
    );
    assert_eq!(m.list("h"), names(&["in.json"]));
    assert_eq!(m.list("str"), names(&["in.json"]));
    for dir in ["zero-int", "zero-str", "zero-s"] {
        assert_eq!(m.list(dir), names(&[]), "{dir}");
    }
}

#[test]
fn entry_with_mtime_in_the_future_is_fresh() {
    if !require_fuse() {
        return;
    }
    let b = Mount::new()
        .config("duration = \"10s\"\n")
        .backing_file("future.json", "{}");
    let path = b.backing().join("future.json");
    set_mtime(&path, std::time::SystemTime::now() + HOUR).unwrap();
    let m = b.start();
    assert_eq!(fs::read(m.path("future.json")).unwrap(), b"{}");
}

#[test]
fn nested_directories_are_shown_including_empty_ones() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .backing_file("a/b/c/d.json", "{\"d\":4}")
        .prepare(|dir| fs::create_dir_all(dir.join("empty/inner")).unwrap())
        .backing_file_aged("only-expired/x.json", "{}", 30 * 24 * HOUR)
        .start();
    assert_eq!(m.list(""), names(&["a", "empty", "only-expired"]));
    assert!(fs::metadata(m.path("a/b")).unwrap().is_dir());
    assert_eq!(m.list("a/b/c"), names(&["d.json"]));
    assert_eq!(fs::read(m.path("a/b/c/d.json")).unwrap(), b"{\"d\":4}");
    assert_eq!(m.list("empty"), names(&["inner"]));
    assert_eq!(m.list("only-expired"), names(&[]));
}

#[test]
fn non_utf8_names_are_listed_read_and_written() {
    if !require_fuse() {
        return;
    }
    let latin1 = OsStr::from_bytes(b"caf\xe9.json");
    let dir = OsStr::from_bytes(b"d\xff\xfe");
    let m = Mount::new()
        .backing_file(latin1, "{\"latin1\":true}")
        .backing_file(Path::new(dir).join("x.json"), "[]")
        .start();
    let listed = m.list("");
    assert!(listed.iter().any(|n| n == latin1), "{listed:?}");
    assert!(listed.iter().any(|n| n == dir), "{listed:?}");
    assert_eq!(fs::read(m.path(latin1)).unwrap(), b"{\"latin1\":true}");
    assert_eq!(m.list(dir), names(&["x.json"]));

    let written = OsStr::from_bytes(b"\x80\x81.json");
    fs::write(m.path(Path::new(dir).join(written)), b"{\"w\":1}").unwrap();
    assert_eq!(
        fs::read(m.backing_path(Path::new(dir).join(written))).unwrap(),
        b"{\"w\":1}"
    );
    assert!(m.list(dir).iter().any(|n| n == written));
}

#[test]
fn owner_and_mode_are_those_of_the_backing_file() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .backing_file("x.json", "{}")
        .prepare(|dir| {
            fs::set_permissions(dir.join("x.json"), fs::Permissions::from_mode(0o640)).unwrap();
            let c = cstring(&dir.join("x.json"));
            // SAFETY: valid C string; as root we may chown to any ids.
            check_rc(unsafe { libc::chown(c.as_ptr(), 1234, 4321) }).unwrap();
        })
        .start();
    let meta = fs::metadata(m.path("x.json")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (1234, 4321));
}

#[test]
fn reading_through_the_mount_returns_every_byte_of_a_large_entry() {
    if !require_fuse() {
        return;
    }
    let big = format!("[{}]", vec!["\"0123456789abcdef\""; 100_000].join(","));
    let m = Mount::new().backing_file("big.json", &big).start();
    let mut got = Vec::new();
    File::open(m.path("big.json"))
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert_eq!(got.len(), big.len());
    assert!(got == big.as_bytes());
}

/// SPEC §13: the validity a mount established of a content version, recorded in the change
/// journal, is trusted by a fresh mount without reading the file, and only for that exact
/// version. The journal here says a file that is not JSON is valid: a mount that trusts it
/// shows the file (it read no content), and a record of another version of a second such
/// file (its ctime one nanosecond off) changes nothing: that file stays hidden.
#[test]
fn a_fresh_mount_trusts_the_journal_for_the_exact_version_it_names() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .config("duration = \"1h\"\n")
        .prepare(|backing| {
            fs::write(backing.join("trusted.json"), "not json").unwrap();
            fs::write(backing.join("other.json"), "not json either").unwrap();
            let record = |key: &str, ctime_shift: i64| {
                let meta = fs::metadata(backing.join(key)).unwrap();
                let ns = |s: i64, n: i64| s * 1_000_000_000 + n;
                format!(
                    "{{\"v\":1,\"writer\":\"elsewhere:1:0\",\"op\":\"judged\",\"key\":\"{key}\",\
                     \"ino\":{},\"size\":{},\"mtime_ns\":{},\"ctime_ns\":{},\"valid\":true}}\n",
                    meta.ino(),
                    meta.size(),
                    ns(meta.mtime(), meta.mtime_nsec()),
                    ns(meta.ctime(), meta.ctime_nsec()) + ctime_shift,
                )
            };
            fs::create_dir_all(backing.join(".cachetta")).unwrap();
            let journal = record("trusted.json", 0) + &record("other.json", 1);
            fs::write(backing.join(".cachetta/journal"), journal).unwrap();
        })
        .start();
    assert_eq!(m.list(""), names(&["trusted.json"]));
    assert_eq!(fs::read(m.path("trusted.json")).unwrap(), b"not json");
    assert_eq!(errno_of(fs::metadata(m.path("other.json"))), libc::ENOENT);
}
