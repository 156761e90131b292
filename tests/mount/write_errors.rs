//! Writes the mount refuses, and what is left afterwards: invalid JSON (`EINVAL` at close),
//! empty files, oversized entries (`EFBIG`), links and device nodes (`EPERM`), long names.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::symlink;

use crate::common::*;

#[test]
fn invalid_json_fails_at_close_with_einval_and_keeps_the_old_entry() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .backing_file("x.json", "{\"old\":true}")
        .start();
    // A fork in another test thread would close (publish) our descriptor's copy first.
    let _no_forks = no_forks();
    let mut f = File::create(m.path("x.json")).unwrap();
    f.write_all(b"nope").unwrap();
    assert_eq!(errno_of(close_fd(f)), libc::EINVAL);
    assert_entry(&m, "x.json", b"{\"old\":true}");
    assert_eq!(m.list(""), names(&["x.json"]));
    assert_eq!(
        m.list_backing(""),
        names(&["x.json"]),
        "staging file left behind"
    );
}

#[test]
fn invalid_json_for_a_new_key_leaves_no_entry() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().start();
    // A fork in another test thread would close (publish) our descriptor's copy first.
    let _no_forks = no_forks();
    let mut f = File::create(m.path("x.json")).unwrap();
    f.write_all(b"{\"unterminated\": ").unwrap();
    assert_eq!(errno_of(close_fd(f)), libc::EINVAL);
    assert_eq!(errno_of(fs::metadata(m.path("x.json"))), libc::ENOENT);
    assert_eq!(m.list(""), names(&[]));
}

#[test]
fn non_utf8_json_is_rejected() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("x.json", "\"ok\"").start();
    // A fork in another test thread would close (publish) our descriptor's copy first.
    let _no_forks = no_forks();
    let mut f = File::create(m.path("x.json")).unwrap();
    f.write_all(b"\"caf\xe9\"").unwrap();
    assert_eq!(errno_of(close_fd(f)), libc::EINVAL);
    assert_entry(&m, "x.json", b"\"ok\"");
}

#[test]
fn shell_echo_of_invalid_json_leaves_the_old_entry_byte_identical() {
    if !require_fuse() {
        return;
    }
    let old = b"{\n  \"old\": [1, 2, 3]\n}\n";
    let m = Mount::new().backing_file("x.json", old).start();
    // The shell may not report the failed close (dup2 over fd 1 ignores it), so only the
    // outcome is checked here; EINVAL at close is checked above with close(2) itself.
    let _ = m.sh("echo nope > x.json");
    assert_entry(&m, "x.json", old);
    assert_eq!(m.list_backing(""), names(&["x.json"]));
}

#[test]
fn empty_redirect_leaves_no_entry() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().start();
    let _ = m.sh(": > x.json");
    assert_eq!(errno_of(fs::metadata(m.path("x.json"))), libc::ENOENT);
    assert_eq!(m.list(""), names(&[]));
}

#[test]
fn touch_of_a_new_entry_leaves_no_entry() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().start();
    let _ = m.run("touch", &["new.json"]);
    assert_eq!(errno_of(fs::metadata(m.path("new.json"))), libc::ENOENT);
    assert_eq!(m.list(""), names(&[]));
}

#[test]
fn renaming_invalid_scratch_file_onto_entry_fails_einval_and_changes_nothing() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("x.json", "{\"old\":1}").start();
    fs::write(m.path("x.json.tmp"), b"not json").unwrap();
    assert_eq!(
        errno_of(fs::rename(m.path("x.json.tmp"), m.path("x.json"))),
        libc::EINVAL
    );
    assert_entry(&m, "x.json", b"{\"old\":1}");
    assert_eq!(fs::read(m.path("x.json.tmp")).unwrap(), b"not json");
    assert_eq!(m.list_backing(""), names(&["x.json", "x.json.tmp"]));
}

#[test]
fn renaming_invalid_scratch_file_onto_new_entry_name_fails_einval() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().start();
    fs::write(m.path("draft"), b"").unwrap();
    assert_eq!(
        errno_of(fs::rename(m.path("draft"), m.path("x.json"))),
        libc::EINVAL
    );
    assert_eq!(errno_of(fs::metadata(m.path("x.json"))), libc::ENOENT);
    assert_eq!(m.list_backing(""), names(&["draft"]));
}

#[test]
fn python_atomic_write_of_invalid_json_keeps_the_old_entry() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("x.json", "{\"old\":1}").start();
    let script = r#"
import os, sys, tempfile
d = sys.argv[1]
fd, tmp = tempfile.mkstemp(dir=d, suffix='.tmp')
with os.fdopen(fd, 'w') as f:
    f.write('{"broken": ')
try:
    os.replace(tmp, os.path.join(d, 'x.json'))
except OSError as e:
    print(e.errno)
    os.unlink(tmp)
"#;
    let out = m.run("python3", &["-c", script, m.mnt.to_str().unwrap()]);
    assert_success("python", &out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        libc::EINVAL.to_string()
    );
    assert_entry(&m, "x.json", b"{\"old\":1}");
    assert_eq!(m.list_backing(""), names(&["x.json"]));
}

#[test]
fn entry_larger_than_max_entry_bytes_fails_efbig_and_keeps_the_old_entry() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .config("max_entry_bytes = \"1KiB\"\n")
        .backing_file("x.json", "{\"small\":1}")
        .start();
    // A fork in another test thread would close (publish) our descriptor's copy first.
    let _no_forks = no_forks();
    let big = format!("\"{}\"", "a".repeat(2000));
    let mut f = File::create(m.path("x.json")).unwrap();
    // EFBIG may come from the write that crosses the limit or from the close.
    let errno = match f.write_all(big.as_bytes()) {
        Err(e) => {
            drop(f);
            e.raw_os_error().expect("os error")
        }
        Ok(()) => errno_of(close_fd(f)),
    };
    assert_eq!(errno, libc::EFBIG);
    assert_entry(&m, "x.json", b"{\"small\":1}");
    assert_eq!(m.list_backing(""), names(&["x.json"]));
}

#[test]
fn entry_of_exactly_max_entry_bytes_is_accepted() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().config("max_entry_bytes = 1024\n").start();
    let exact = format!("\"{}\"", "b".repeat(1022));
    fs::write(m.path("x.json"), &exact).unwrap();
    assert_entry(&m, "x.json", exact.as_bytes());
}

#[test]
fn symlink_link_and_mknod_fail_eperm() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("x.json", "{}").start();
    assert_eq!(
        errno_of(symlink("x.json", m.path("l.json"))),
        libc::EPERM,
        "symlink"
    );
    assert_eq!(
        errno_of(symlink("x.json", m.path("link-scratch"))),
        libc::EPERM,
        "symlink with a scratch name"
    );
    assert_eq!(
        errno_of(fs::hard_link(m.path("x.json"), m.path("h.json"))),
        libc::EPERM,
        "link"
    );
    let fifo = cstring(&m.path("p.json"));
    // SAFETY: valid C string for the duration of the call.
    let rc = check_rc(unsafe { libc::mknod(fifo.as_ptr(), libc::S_IFIFO | 0o644, 0) });
    assert_eq!(errno_of(rc), libc::EPERM, "mknod fifo");
    let fifo = cstring(&m.path("fifo"));
    // SAFETY: as above.
    let rc = check_rc(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) });
    assert_eq!(errno_of(rc), libc::EPERM, "mkfifo");
    assert_eq!(m.list_backing(""), names(&["x.json"]));
}

#[test]
fn name_over_255_bytes_fails_enametoolong() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().start();
    let long = format!("{}.json", "n".repeat(251));
    assert_eq!(long.len(), 256);
    assert_eq!(
        errno_of(fs::write(m.path(&long), b"{}")),
        libc::ENAMETOOLONG,
        "create"
    );
    assert_eq!(
        errno_of(fs::metadata(m.path(&long))),
        libc::ENAMETOOLONG,
        "stat"
    );
    assert_eq!(
        errno_of(fs::create_dir(m.path("d".repeat(256)))),
        libc::ENAMETOOLONG,
        "mkdir"
    );
    fs::write(m.path("x.json"), b"{}").unwrap();
    assert_eq!(
        errno_of(fs::rename(m.path("x.json"), m.path(&long))),
        libc::ENAMETOOLONG,
        "rename"
    );
}

#[test]
fn name_of_255_bytes_works() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().start();
    let name = format!("{}.json", "n".repeat(250));
    assert_eq!(name.len(), 255);
    fs::write(m.path(&name), b"{\"long\":1}").unwrap();
    assert_eq!(fs::read(m.path(&name)).unwrap(), b"{\"long\":1}");
    assert_eq!(m.list(""), names(&[name.as_str()]));
}
