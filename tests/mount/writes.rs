//! Writing through the mount: shell redirection, `cp`, `tee`, Python, staged publish at close,
//! appends, partial overwrites, truncation, the temp-file-then-rename idiom, `sed -i`, `touch`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::time::{Duration, SystemTime};

use crate::common::*;

/// How far from "now" a freshly written mtime may be.
const NOW_SLACK: Duration = Duration::from_secs(5);

fn assert_recent(t: SystemTime) {
    let now = SystemTime::now();
    let diff = now.duration_since(t).unwrap_or_else(|e| e.duration());
    assert!(diff < NOW_SLACK, "mtime {t:?} is not ~now ({now:?})");
}

#[test]
fn echo_redirect_creates_an_entry() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().start();
    let out = m.sh(r#"echo '{"a":1}' > x.json"#);
    assert_success("echo >", &out);
    assert_entry(&m, "x.json", b"{\"a\":1}\n");
    assert_eq!(m.list(""), names(&["x.json"]));
    assert_eq!(m.list_backing(""), names(&["x.json"]));
    assert_recent(m.backing_mtime("x.json"));
}

#[test]
fn echo_redirect_replaces_an_existing_entry() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .backing_file("x.json", "{\"old\":true}")
        .start();
    assert_success("echo >", &m.sh(r#"echo '[1,2,3]' > x.json"#));
    assert_entry(&m, "x.json", b"[1,2,3]\n");
    assert_eq!(m.list_backing(""), names(&["x.json"]));
}

#[test]
fn printf_redirect_like_jq_output_creates_an_entry() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().start();
    fs::create_dir(m.path("sub")).unwrap();
    let out = m.sh(r#"printf '{\n  "name": "x",\n  "n": 2\n}\n' > sub/out.json"#);
    assert_success("printf >", &out);
    assert_entry(
        &m,
        "sub/out.json",
        b"{\n  \"name\": \"x\",\n  \"n\": 2\n}\n",
    );
}

#[test]
fn cp_into_the_mount_creates_an_entry() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().start();
    let src = m.outside_path("src.json");
    let body = format!("{{\"data\":\"{}\"}}", "x".repeat(200_000));
    fs::write(&src, &body).unwrap();
    let out = m.run("cp", &[src.as_os_str(), m.path("copy.json").as_os_str()]);
    assert_success("cp", &out);
    assert_entry(&m, "copy.json", body.as_bytes());
    assert_eq!(m.list_backing(""), names(&["copy.json"]));
}

#[test]
fn tee_into_the_mount_creates_an_entry() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().start();
    let out = m.sh(r#"printf '{"t":true}' | tee x.json > /dev/null"#);
    assert_success("tee", &out);
    assert_entry(&m, "x.json", b"{\"t\":true}");
}

#[test]
fn python_json_dump_creates_an_entry() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().start();
    let script =
        "import json, sys\nwith open(sys.argv[1], 'w') as f:\n    json.dump({'p': [1, 2]}, f)\n";
    let out = m.run(
        "python3",
        &["-c", script, m.path("py.json").to_str().unwrap()],
    );
    assert_success("python json.dump", &out);
    assert_entry(&m, "py.json", b"{\"p\": [1, 2]}");
}

#[test]
fn python_mkstemp_then_os_replace_creates_an_entry() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("x.json", "{\"old\":1}").start();
    let script = r#"
import json, os, sys, tempfile
d = sys.argv[1]
fd, tmp = tempfile.mkstemp(dir=d)
with os.fdopen(fd, 'w') as f:
    json.dump({'new': 2}, f)
os.replace(tmp, os.path.join(d, 'x.json'))
"#;
    let out = m.run("python3", &["-c", script, m.mnt.to_str().unwrap()]);
    assert_success("python mkstemp + os.replace", &out);
    assert_entry(&m, "x.json", b"{\"new\": 2}");
    assert_eq!(m.list_backing(""), names(&["x.json"]));
}

#[test]
fn rename_of_scratch_file_onto_entry_publishes_it() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("x.json", "{\"old\":1}").start();
    fs::write(m.path("x.json.tmp"), b"{\"new\":2}").unwrap();
    fs::rename(m.path("x.json.tmp"), m.path("x.json")).unwrap();
    assert_entry(&m, "x.json", b"{\"new\":2}");
    assert_eq!(errno_of(fs::metadata(m.path("x.json.tmp"))), libc::ENOENT);
    assert_eq!(m.list_backing(""), names(&["x.json"]));
    assert_recent(m.backing_mtime("x.json"));
}

#[test]
fn sed_in_place_edits_an_entry() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("x.json", "{\"n\":1}\n").start();
    let out = m.run("sed", &["-i", "s/1/2/", "x.json"]);
    assert_success("sed -i", &out);
    assert_entry(&m, "x.json", b"{\"n\":2}\n");
    assert_eq!(m.list_backing(""), names(&["x.json"]));
}

/// Open a writer on `x.json` (holding `old`), write `new` without closing, and check what
/// readers see before and after the close.
fn check_readers_see_old_until_close(old: &str, new: &str) {
    let m = Mount::new().backing_file("x.json", old).start();
    // No other test thread may fork while the written entry is open (see `no_forks`).
    let _quiet = no_forks();
    let mut writer = File::create(m.path("x.json")).unwrap();
    writer.write_all(new.as_bytes()).unwrap();
    writer.flush().unwrap();
    // Written but not closed: every reader still gets the old entry, whole.
    let before = fs::read(m.path("x.json")).unwrap();
    assert_bytes(&before, old.as_bytes(), "read while the writer is open");
    assert_eq!(
        fs::metadata(m.path("x.json")).unwrap().len(),
        old.len() as u64
    );
    assert_eq!(fs::read(m.backing_path("x.json")).unwrap(), old.as_bytes());
    let reader = File::open(m.path("x.json")).unwrap();
    close_fd(writer).unwrap();
    let after = fs::read(m.path("x.json")).unwrap();
    assert_bytes(&after, new.as_bytes(), "read after the writer closed");
    assert_eq!(
        fs::metadata(m.path("x.json")).unwrap().len(),
        new.len() as u64
    );
    drop(reader);
    assert_eq!(m.list_backing(""), names(&["x.json"]));
}

#[test]
fn readers_see_the_old_entry_until_the_writer_closes() {
    if !require_fuse() {
        return;
    }
    check_readers_see_old_until_close("{\"v\":\"old\"}", "{\"v\":\"new\", \"more\": [1,2,3]}");
}

#[test]
fn readers_see_the_whole_old_entry_while_a_shorter_one_is_written() {
    if !require_fuse() {
        return;
    }
    check_readers_see_old_until_close("{\"v\":\"a longer old entry\"}", "[]");
}

#[test]
fn reader_opened_before_a_replace_reads_the_old_entry_whole() {
    if !require_fuse() {
        return;
    }
    let old = format!("[{}]", vec!["1"; 50_000].join(","));
    let new = format!("[{}]", vec!["2"; 60_000].join(","));
    let m = Mount::new().backing_file("x.json", &old).start();
    let mut reader = File::open(m.path("x.json")).unwrap();
    let mut first = [0u8; 10];
    reader.read_exact(&mut first).unwrap();
    fs::write(m.path("x.json"), &new).unwrap();
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    let mut got = first.to_vec();
    got.extend(rest);
    assert!(got == old.as_bytes(), "reader saw a mixed or new entry");
    assert_eq!(fs::read(m.path("x.json")).unwrap(), new.as_bytes());
}

#[test]
fn each_close_after_new_writes_publishes_again() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().start();
    let writer = File::create(m.path("x.json")).unwrap();
    writer.write_all_at(b"{\"v\":1}", 0).unwrap();
    // Close a duplicate: the open file has new writes, so this close publishes.
    // SAFETY: dup returns a new descriptor that the File below owns.
    let dup = unsafe { File::from_raw_fd(check_rc(libc::dup(writer.as_raw_fd())).unwrap()) };
    close_fd(dup).unwrap();
    assert_entry(&m, "x.json", b"{\"v\":1}");
    // Keep writing on the same open file; the next close publishes again.
    writer.set_len(0).unwrap();
    writer.write_all_at(b"{\"v\":22}", 0).unwrap();
    close_fd(writer).unwrap();
    assert_entry(&m, "x.json", b"{\"v\":22}");
}

#[test]
fn append_goes_through_staging_and_is_validated_at_close() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("n.json", "12").start();
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path("n.json"))
        .unwrap();
    f.write_all(b"34").unwrap();
    assert_eq!(
        fs::read(m.path("n.json")).unwrap(),
        b"12",
        "visible before close"
    );
    close_fd(f).unwrap();
    assert_entry(&m, "n.json", b"1234");

    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path("n.json"))
        .unwrap();
    f.write_all(b"x").unwrap();
    assert_eq!(errno_of(close_fd(f)), libc::EINVAL);
    assert_entry(&m, "n.json", b"1234");
}

#[test]
fn partial_overwrite_at_an_offset_keeps_the_rest_of_the_entry() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .backing_file("x.json", "{\"a\":111,\"b\":333}")
        .start();
    let f = OpenOptions::new()
        .write(true)
        .open(m.path("x.json"))
        .unwrap();
    f.write_all_at(b"222", 5).unwrap();
    close_fd(f).unwrap();
    assert_entry(&m, "x.json", b"{\"a\":222,\"b\":333}");

    let f = OpenOptions::new()
        .write(true)
        .open(m.path("x.json"))
        .unwrap();
    f.write_all_at(b"}", 1).unwrap();
    assert_eq!(errno_of(close_fd(f)), libc::EINVAL);
    assert_entry(&m, "x.json", b"{\"a\":222,\"b\":333}");
}

#[test]
fn ftruncate_goes_through_staging_and_is_validated_at_close() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("n.json", "123456").start();
    let f = OpenOptions::new()
        .write(true)
        .open(m.path("n.json"))
        .unwrap();
    f.set_len(3).unwrap();
    assert_eq!(
        fs::read(m.path("n.json")).unwrap(),
        b"123456",
        "visible before close"
    );
    close_fd(f).unwrap();
    assert_entry(&m, "n.json", b"123");

    let f = OpenOptions::new()
        .write(true)
        .open(m.path("n.json"))
        .unwrap();
    f.set_len(0).unwrap();
    assert_eq!(errno_of(close_fd(f)), libc::EINVAL);
    assert_entry(&m, "n.json", b"123");
}

#[test]
fn truncate_command_shortens_an_entry() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("n.json", "123456").start();
    assert_success("truncate -s 3", &m.run("truncate", &["-s", "3", "n.json"]));
    assert_entry(&m, "n.json", b"123");
    let out = m.run("truncate", &["-s", "0", "n.json"]);
    assert!(!out.status.success(), "truncate to empty JSON succeeded");
    assert_entry(&m, "n.json", b"123");
}

#[test]
fn truncate_syscall_on_a_path_is_validated_at_once() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("n.json", "123456").start();
    let c = cstring(&m.path("n.json"));
    // SAFETY: valid C string for the duration of the calls.
    check_rc(unsafe { libc::truncate(c.as_ptr(), 3) }).unwrap();
    assert_entry(&m, "n.json", b"123");
    // SAFETY: as above.
    let rc = check_rc(unsafe { libc::truncate(c.as_ptr(), 0) });
    assert_eq!(errno_of(rc), libc::EINVAL);
    assert_entry(&m, "n.json", b"123");
}

#[test]
fn truncating_open_without_writes_publishes_nothing() {
    if !require_fuse() {
        return;
    }
    // O_TRUNC at open is not a write: the close publishes nothing, so the entry stays.
    let m = Mount::new().backing_file("x.json", "{\"keep\":1}").start();
    let f = File::create(m.path("x.json")).unwrap();
    close_fd(f).unwrap();
    assert_entry(&m, "x.json", b"{\"keep\":1}");
}

#[test]
fn touch_makes_a_stale_entry_fresh() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .config("duration = \"1h\"\nstale = \"2h\"\n")
        .backing_file_aged("x.json", "{}", 2 * HOUR)
        .start();
    assert_success("touch", &m.run("touch", &["x.json"]));
    assert_recent(m.backing_mtime("x.json"));
    assert_recent(fs::metadata(m.path("x.json")).unwrap().modified().unwrap());
    assert_entry(&m, "x.json", b"{}");
}

#[test]
fn touch_with_a_past_date_ages_an_entry_until_it_expires() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .config("duration = \"1h\"\n")
        .backing_file("x.json", "{}")
        .start();
    assert_eq!(fs::read(m.path("x.json")).unwrap(), b"{}");
    assert_success(
        "touch -d",
        &m.run("touch", &["-d", "2 hours ago", "x.json"]),
    );
    let age = SystemTime::now()
        .duration_since(m.backing_mtime("x.json"))
        .unwrap();
    assert!(
        age > 2 * HOUR - NOW_SLACK && age < 2 * HOUR + NOW_SLACK,
        "age {age:?}"
    );
    // Expired by the touch: gone within the SPEC's 1 s (plus scheduling slack).
    assert!(
        eventually(Duration::from_millis(1300), || fs::metadata(
            m.path("x.json")
        )
        .is_err()),
        "entry aged past its duration by touch -d is still visible"
    );
    assert_eq!(errno_of(fs::metadata(m.path("x.json"))), libc::ENOENT);
    assert_eq!(errno_of(fs::read(m.path("x.json"))), libc::ENOENT);
    assert_eq!(m.list(""), names(&[]));
}

#[test]
fn written_entry_is_fresh_and_owned_like_a_normal_file() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().start();
    fs::write(m.path("x.json"), b"{}").unwrap();
    let meta = fs::metadata(m.path("x.json")).unwrap();
    let backing = fs::metadata(m.backing_path("x.json")).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.len(), 2);
    assert_eq!(meta.mode(), backing.mode());
    assert_eq!((meta.uid(), meta.gid()), (backing.uid(), backing.gid()));
    assert_recent(meta.modified().unwrap());
}

#[test]
fn writes_work_with_sync_writes() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().config("sync_writes = true\n").start();
    fs::write(m.path("x.json"), b"{\"synced\":true}").unwrap();
    assert_entry(&m, "x.json", b"{\"synced\":true}");
    fs::write(m.path("x.json.tmp"), b"[2]").unwrap();
    fs::rename(m.path("x.json.tmp"), m.path("x.json")).unwrap();
    assert_entry(&m, "x.json", b"[2]");
    assert_eq!(m.list_backing(""), names(&["x.json"]));
}

#[test]
fn hard_link_in_backing_dir_is_broken_by_a_write() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .backing_file("a.json", "{\"v\":1}")
        .prepare(|dir| fs::hard_link(dir.join("a.json"), dir.join("b.json")).unwrap())
        .start();
    assert_eq!(fs::read(m.path("b.json")).unwrap(), b"{\"v\":1}");
    fs::write(m.path("a.json"), b"{\"v\":2}").unwrap();
    assert_entry(&m, "a.json", b"{\"v\":2}");
    assert_entry(&m, "b.json", b"{\"v\":1}");
    assert_eq!(fs::metadata(m.backing_path("a.json")).unwrap().nlink(), 1);
    assert_eq!(fs::metadata(m.backing_path("b.json")).unwrap().nlink(), 1);
}

#[test]
fn entries_in_new_subdirectories_land_in_the_backing_dir() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().start();
    assert_success("mkdir -p", &m.run("mkdir", &["-p", "a/b"]));
    fs::write(m.path("a/b/x.json"), b"{\"deep\":1}").unwrap();
    assert_entry(&m, "a/b/x.json", b"{\"deep\":1}");
    assert_eq!(m.list_backing("a/b"), names(&["x.json"]));
}
