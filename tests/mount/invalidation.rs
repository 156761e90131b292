//! Invalidation and directories: `rm`, `rm -r`, `rmdir` of directories holding only invisible
//! files, `mkdir -p`, and `mv` of entries and directories.

use std::fs::{self, File};
use std::io::Read;

use crate::common::*;

#[test]
fn rm_deletes_the_backing_file_and_the_entry_is_gone_at_once() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .backing_file("x.json", "{\"v\":1}")
        .backing_file("y.json", "{}")
        .start();
    // Warm every cache first.
    for _ in 0..3 {
        assert_eq!(fs::read(m.path("x.json")).unwrap(), b"{\"v\":1}");
    }
    assert_eq!(m.list(""), names(&["x.json", "y.json"]));
    assert_success("rm", &m.run("rm", &["x.json"]));
    assert!(!m.backing_path("x.json").exists());
    assert_eq!(errno_of(fs::metadata(m.path("x.json"))), libc::ENOENT);
    assert_eq!(errno_of(File::open(m.path("x.json"))), libc::ENOENT);
    assert_eq!(m.list(""), names(&["y.json"]));
}

#[test]
fn rm_of_an_open_entry_keeps_the_reader_going() {
    if !require_fuse() {
        return;
    }
    let body = format!("[{}]", vec!["7"; 100_000].join(","));
    let m = Mount::new().backing_file("x.json", &body).start();
    let mut reader = File::open(m.path("x.json")).unwrap();
    fs::remove_file(m.path("x.json")).unwrap();
    let mut got = Vec::new();
    reader.read_to_end(&mut got).unwrap();
    assert!(
        got == body.as_bytes(),
        "open reader lost its entry after rm"
    );
    assert_eq!(errno_of(fs::metadata(m.path("x.json"))), libc::ENOENT);
}

#[test]
fn entry_can_be_recreated_after_rm() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("x.json", "{\"v\":1}").start();
    assert_eq!(fs::read(m.path("x.json")).unwrap(), b"{\"v\":1}");
    fs::remove_file(m.path("x.json")).unwrap();
    fs::write(m.path("x.json"), b"{\"v\":2}").unwrap();
    assert_eq!(fs::read(m.path("x.json")).unwrap(), b"{\"v\":2}");
}

#[test]
fn rm_r_clears_a_directory_including_invisible_files() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .config("duration = \"1h\"\n")
        .backing_file("dir/a.json", "{}")
        .backing_file("dir/sub/b.json", "[]")
        .backing_file_aged("dir/sub/expired.json", "{}", 2 * HOUR)
        .backing_file("dir/corrupt.json", "{")
        .backing_file("dir/scratch.tmp", "x")
        .backing_file("keep.json", "{}")
        .start();
    let out = m.run("rm", &["-r", "dir"]);
    assert_success("rm -r", &out);
    assert!(!m.backing_path("dir").exists(), "backing dir/ still there");
    assert_eq!(errno_of(fs::metadata(m.path("dir"))), libc::ENOENT);
    assert_eq!(m.list(""), names(&["keep.json"]));
}

#[test]
fn rmdir_removes_a_directory_holding_only_invisible_files() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .config("duration = \"1h\"\n")
        .backing_file_aged("d/expired.json", "{}", 2 * HOUR)
        .backing_file("d/corrupt.json", "not json")
        .backing_file("d/notes.tmp", "scratch")
        .start();
    assert_eq!(m.list("d"), names(&[]));
    fs::remove_dir(m.path("d")).unwrap();
    assert!(!m.backing_path("d").exists(), "backing d/ still there");
    assert_eq!(errno_of(fs::metadata(m.path("d"))), libc::ENOENT);
    assert_eq!(m.list(""), names(&[]));
}

#[test]
fn rmdir_of_an_empty_directory_succeeds() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().start();
    fs::create_dir(m.path("d")).unwrap();
    fs::remove_dir(m.path("d")).unwrap();
    assert!(!m.backing_path("d").exists());
}

#[test]
fn rmdir_of_a_directory_with_a_visible_entry_fails_enotempty() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .backing_file("d/live.json", "{}")
        .backing_file("d/notes.tmp", "scratch")
        .backing_file("e/sub/.keep", "")
        .start();
    assert_eq!(errno_of(fs::remove_dir(m.path("d"))), libc::ENOTEMPTY);
    assert_eq!(m.list_backing("d"), names(&["live.json", "notes.tmp"]));
    assert_eq!(fs::read(m.path("d/live.json")).unwrap(), b"{}");
    // A subdirectory is visible too.
    assert_eq!(errno_of(fs::remove_dir(m.path("e"))), libc::ENOTEMPTY);
    assert!(m.backing_path("e/sub/.keep").exists());
}

#[test]
fn mkdir_p_creates_nested_directories_in_the_backing_dir() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().start();
    assert_success("mkdir -p", &m.run("mkdir", &["-p", "a/b/c"]));
    assert!(m.backing_path("a/b/c").is_dir());
    assert_eq!(m.list("a/b"), names(&["c"]));
    // Again: mkdir -p of existing directories succeeds.
    assert_success("mkdir -p again", &m.run("mkdir", &["-p", "a/b/c"]));
    assert_eq!(
        errno_of(fs::create_dir(m.path("a"))),
        libc::EEXIST,
        "mkdir of an existing directory"
    );
}

#[test]
fn mv_renames_an_entry() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .backing_file("x.json", "{\"v\":1}")
        .backing_file("y.json", "{\"v\":2}")
        .start();
    assert_eq!(fs::read(m.path("x.json")).unwrap(), b"{\"v\":1}");
    assert_success("mv", &m.run("mv", &["x.json", "z.json"]));
    assert_eq!(errno_of(fs::metadata(m.path("x.json"))), libc::ENOENT);
    assert_eq!(fs::read(m.path("z.json")).unwrap(), b"{\"v\":1}");
    // Onto an existing entry: replaces it.
    assert_success("mv onto", &m.run("mv", &["z.json", "y.json"]));
    assert_eq!(fs::read(m.path("y.json")).unwrap(), b"{\"v\":1}");
    assert_eq!(m.list(""), names(&["y.json"]));
    assert_eq!(m.list_backing(""), names(&["y.json"]));
}

#[test]
fn mv_moves_an_entry_into_another_directory() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .backing_file("x.json", "{}")
        .prepare(|dir| fs::create_dir(dir.join("sub")).unwrap())
        .start();
    assert_success("mv", &m.run("mv", &["x.json", "sub/"]));
    assert_eq!(m.list(""), names(&["sub"]));
    assert_eq!(m.list("sub"), names(&["x.json"]));
    assert_eq!(fs::read(m.backing_path("sub/x.json")).unwrap(), b"{}");
}

#[test]
fn mv_moves_a_directory_with_all_its_files() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .backing_file("a/x.json", "{\"x\":1}")
        .backing_file("a/deep/y.json", "[]")
        .backing_file("a/scratch.tmp", "s")
        .start();
    assert_success("mv dir", &m.run("mv", &["a", "b"]));
    assert_eq!(errno_of(fs::metadata(m.path("a"))), libc::ENOENT);
    assert_eq!(m.list("b"), names(&["deep", "x.json"]));
    assert_eq!(fs::read(m.path("b/x.json")).unwrap(), b"{\"x\":1}");
    assert_eq!(fs::read(m.path("b/deep/y.json")).unwrap(), b"[]");
    assert_eq!(fs::read(m.path("b/scratch.tmp")).unwrap(), b"s");
    assert!(!m.backing_path("a").exists());
}

#[test]
fn entry_written_after_its_directory_was_renamed_lands_in_the_new_place() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("a/x.json", "{}").start();
    assert_eq!(fs::read(m.path("a/x.json")).unwrap(), b"{}");
    fs::rename(m.path("a"), m.path("b")).unwrap();
    fs::write(m.path("b/x.json"), b"{\"after\":1}").unwrap();
    assert_eq!(
        fs::read(m.backing_path("b/x.json")).unwrap(),
        b"{\"after\":1}"
    );
    assert!(!m.backing_path("a").exists());
}
