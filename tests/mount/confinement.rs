//! Confinement: nothing outside the backing dir is ever read or written through the mount,
//! whatever symlinks the backing dir holds.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::symlink;

use crate::common::*;

const SECRET: &[u8] = b"{\"secret\":true}";

/// A mount whose backing dir holds `escape -> ROOT/outside` and `leak.json ->
/// ROOT/outside/secret.json`, with `secret.json` in `outside`.
fn mount_with_escape_links() -> Mount {
    let b = Mount::new();
    let outside = b.root().join("outside");
    fs::write(outside.join("secret.json"), SECRET).unwrap();
    fs::create_dir(outside.join("sub")).unwrap();
    b.backing_file("x.json", "{\"inside\":true}")
        .prepare(|dir| {
            symlink(&outside, dir.join("escape")).unwrap();
            symlink(outside.join("secret.json"), dir.join("leak.json")).unwrap();
            symlink("..", dir.join("up")).unwrap();
        })
        .start()
}

fn assert_outside_untouched(m: &Mount) {
    assert_eq!(fs::read(m.outside_path("secret.json")).unwrap(), SECRET);
    assert_eq!(
        list_dir(&m.root.join("outside")),
        names(&["secret.json", "sub"]),
        "something was created or removed outside the backing dir"
    );
    assert_eq!(list_dir(&m.outside_path("sub")), names(&[]));
}

#[test]
fn symlinked_directory_in_backing_dir_is_not_traversable() {
    if !require_fuse() {
        return;
    }
    let m = mount_with_escape_links();
    assert_eq!(m.list(""), names(&["x.json"]));
    for rel in [
        "escape",
        "escape/secret.json",
        "escape/sub",
        "up",
        "up/outside/secret.json",
    ] {
        assert_eq!(
            errno_of(fs::metadata(m.path(rel))),
            libc::ENOENT,
            "stat {rel}"
        );
    }
    assert_eq!(
        errno_of(fs::read(m.path("escape/secret.json"))),
        libc::ENOENT
    );
    assert_eq!(errno_of(fs::read_dir(m.path("escape"))), libc::ENOENT);
    assert_outside_untouched(&m);
}

#[test]
fn writes_through_a_symlinked_directory_never_reach_outside() {
    if !require_fuse() {
        return;
    }
    let m = mount_with_escape_links();
    assert!(fs::write(m.path("escape/new.json"), b"{}").is_err());
    assert!(fs::write(m.path("escape/secret.json"), b"{\"pwned\":1}").is_err());
    assert!(fs::create_dir(m.path("escape/dir")).is_err());
    assert!(fs::remove_file(m.path("escape/secret.json")).is_err());
    assert!(fs::remove_dir(m.path("escape/sub")).is_err());
    assert!(fs::rename(m.path("x.json"), m.path("escape/x.json")).is_err());
    assert!(fs::write(m.path("up/outside/new.json"), b"{}").is_err());
    let _ = m.run("rm", &["-rf", "escape", "up"]);
    assert_outside_untouched(&m);
    assert_eq!(fs::read(m.path("x.json")).unwrap(), b"{\"inside\":true}");
}

#[test]
fn writing_an_entry_whose_backing_name_is_a_symlink_never_writes_its_target() {
    if !require_fuse() {
        return;
    }
    let m = mount_with_escape_links();
    assert_eq!(errno_of(fs::read(m.path("leak.json"))), libc::ENOENT);
    // Whether this write is refused or replaces the symlink with a regular file, the
    // symlink's target must not change.
    let result = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path("leak.json"))
        .and_then(|mut f| {
            f.write_all(b"{\"pwned\":1}")?;
            close_fd(f)
        });
    if result.is_ok() {
        assert_eq!(fs::read(m.path("leak.json")).unwrap(), b"{\"pwned\":1}");
        let meta = fs::symlink_metadata(m.backing_path("leak.json")).unwrap();
        assert!(
            meta.file_type().is_file(),
            "backing leak.json is not a regular file"
        );
    }
    let _ = m.sh("echo '{\"pwned\":2}' > leak.json");
    let _ = m.run("sed", &["-i", "s/true/false/", "leak.json"]);
    let _ = m.run("touch", &["-d", "2 hours ago", "leak.json"]);
    let _ = m.run("truncate", &["-s", "0", "leak.json"]);
    let _ = fs::remove_file(m.path("leak.json"));
    assert_outside_untouched(&m);
    let secret_age = fs::metadata(m.outside_path("secret.json"))
        .unwrap()
        .modified()
        .unwrap()
        .elapsed()
        .unwrap_or_default();
    assert!(secret_age < HOUR, "touch went through the symlink");
}

#[test]
fn dot_dot_inside_the_mount_stays_inside_the_mount() {
    if !require_fuse() {
        return;
    }
    let b = Mount::new();
    // A decoy beside the backing dir, where a `..` escape from backing/ would land.
    fs::write(b.root().join("decoy.json"), b"{\"decoy\":true}").unwrap();
    let m = b
        .backing_file("x.json", "{\"inside\":true}")
        .backing_file("a/b/y.json", "[]")
        .start();
    assert_eq!(
        fs::read(m.path("a/b/../../x.json")).unwrap(),
        b"{\"inside\":true}"
    );
    assert_eq!(m.list("a/.."), names(&["a", "x.json"]));
    assert_eq!(errno_of(fs::read(m.path("a/../decoy.json"))), libc::ENOENT);
    assert_eq!(
        errno_of(File::open(m.path("a/b/../../decoy.json"))),
        libc::ENOENT
    );
}

/// A directory of the backing dir swapped with a symlink to the outside, again and again
/// (`renameat2(RENAME_EXCHANGE)`), while readers walk the mount: not one byte from outside is
/// ever served (SPEC §2; every path is resolved with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`).
#[test]
fn a_directory_swapped_with_a_symlink_in_a_loop_never_serves_the_outside() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    if !require_fuse() {
        return;
    }
    let b = Mount::new();
    let outside = b.root().join("outside");
    fs::create_dir(outside.join("d")).unwrap();
    fs::write(outside.join("d/x.json"), SECRET).unwrap();
    let m = b
        .backing_file("d/x.json", "{\"inside\":true}")
        .prepare(|dir| symlink(outside.join("d"), dir.join("swap")).unwrap())
        .start();
    let stop = Arc::new(AtomicBool::new(false));
    let (a, z) = (
        cstring(&m.backing_path("d")),
        cstring(&m.backing_path("swap")),
    );
    let swapper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: both are valid NUL-terminated paths that outlive the call.
                let rc = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        z.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                check_rc(rc).unwrap();
                swaps += 1;
                // A breath between swaps, so readers also find the directory in place.
                std::thread::sleep(Duration::from_micros(50));
            }
            swaps
        })
    };
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (path, stop) = (m.path("d/x.json"), stop.clone());
            let listing = m.path("d");
            std::thread::spawn(move || -> (u64, Vec<String>) {
                let (mut reads, mut leaks) = (0, Vec::new());
                // At least 2 s, and until one read got through (each lookup that finds the
                // symlink is remembered as "no such name" for a second; 10 s at most).
                let started = Instant::now();
                let long_enough = |reads: u64| {
                    let t = started.elapsed();
                    (t >= Duration::from_secs(2) && reads > 0) || t >= Duration::from_secs(10)
                };
                while !long_enough(reads) {
                    if let Ok(bytes) = fs::read(&path) {
                        reads += 1;
                        if bytes == SECRET {
                            leaks.push("d/x.json served the outside file".into());
                        }
                    }
                    if let Ok(items) = fs::read_dir(&listing) {
                        for item in items.flatten() {
                            if let Ok(bytes) = fs::read(item.path()) {
                                if bytes == SECRET {
                                    leaks.push(format!("{} leaked", item.path().display()));
                                }
                            }
                        }
                    }
                }
                stop.store(true, Ordering::Relaxed);
                (reads, leaks)
            })
        })
        .collect();
    let mut leaks = Vec::new();
    let mut reads = 0;
    for r in readers {
        let (n, l) = r.join().unwrap();
        reads += n;
        leaks.extend(l);
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(leaks.is_empty(), "{leaks:?}");
    assert!(swaps > 100, "only {swaps} swaps");
    assert!(reads > 0, "no read got through");
    assert_eq!(fs::read(outside.join("d/x.json")).unwrap(), SECRET);
}
