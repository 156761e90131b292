//! Copying a cache in keeps its ages (issue #15, SPEC §3): `cp -a`, `tar x` and `rsync -a` set
//! the times after writing, and the published entries carry those times, so an old entry is
//! old (or hidden) in the mount too.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::common::*;

const DAY: Duration = Duration::from_secs(86_400);

/// `user.cachetta.age` of an entry, in seconds.
fn age_of(path: &Path) -> i64 {
    let age = getxattr(path, "user.cachetta.age")
        .unwrap_or_else(|e| panic!("getxattr age of {}: {e}", path.display()));
    std::str::from_utf8(&age).unwrap().parse().unwrap()
}

fn mtime(path: &Path) -> SystemTime {
    fs::metadata(path).unwrap().modified().unwrap()
}

#[track_caller]
fn assert_age_near(path: &Path, want: Duration) {
    let got = age_of(path);
    assert!(
        (got - want.as_secs() as i64).abs() <= 2,
        "{}: age {got} s, want about {} s",
        path.display(),
        want.as_secs()
    );
}

/// A source cache dir (outside the mount) with entries of three ages.
fn source(m: &Mount) -> std::path::PathBuf {
    let src = m.outside_path("src");
    for (name, age) in [
        ("recent.json", 10 * MINUTE),
        ("old.json", 2 * DAY),
        ("ancient.json", 10 * DAY),
    ] {
        let path = src.join("weather").join(name);
        write_file(&path, format!("{{\"name\":\"{name}\"}}").as_bytes());
        // Whole seconds: tar keeps no more.
        let secs = (SystemTime::now() - age)
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        set_mtime(&path, SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).unwrap();
    }
    src
}

fn check_copied(m: &Mount, dest: &str) {
    let src = m.outside_path("src/weather");
    for (name, age) in [("recent.json", 10 * MINUTE), ("old.json", 2 * DAY)] {
        let path = m.path(format!("{dest}/{name}"));
        assert_age_near(&path, age);
        assert_eq!(
            mtime(&m.backing_path(format!("{dest}/{name}"))),
            mtime(&src.join(name)),
            "{dest}/{name}: the backing file carries the source mtime"
        );
    }
    assert_eq!(
        errno_of(fs::metadata(m.path(format!("{dest}/ancient.json")))),
        libc::ENOENT,
        "{dest}: an entry copied in already expired is hidden"
    );
}

fn mount_7d() -> Mount {
    Mount::new().config("duration = \"7d\"\n").start()
}

#[test]
fn cp_a_tar_and_rsync_a_keep_the_ages_of_a_copied_cache() {
    if !require_fuse() {
        return;
    }
    let m = mount_7d();
    let src = source(&m);
    let src_arg = src.join("weather");
    let src_arg = src_arg.to_string_lossy();

    fs::create_dir(m.path("cp")).unwrap();
    let out = m.sh(&format!(
        "cp -a '{src_arg}/.' '{}/'",
        m.path("cp").display()
    ));
    assert_success("cp -a", &out);
    check_copied(&m, "cp");

    fs::create_dir(m.path("tar")).unwrap();
    let out = m.sh(&format!(
        "tar -C '{src_arg}' -cf - . | tar -C '{}' -xf -",
        m.path("tar").display()
    ));
    assert_success("tar c | tar x", &out);
    check_copied(&m, "tar");

    fs::create_dir(m.path("rsync")).unwrap();
    let out = m.sh(&format!(
        "rsync -a '{src_arg}/' '{}/'",
        m.path("rsync").display()
    ));
    assert_success("rsync -a", &out);
    check_copied(&m, "rsync");
}

#[test]
fn cp_a_of_an_old_entry_over_a_fresh_one_makes_it_old() {
    if !require_fuse() {
        return;
    }
    let m = mount_7d();
    let src = source(&m);
    fs::write(m.path("old.json"), b"{\"fresh\":true}").unwrap();
    assert_age_near(&m.path("old.json"), Duration::ZERO);
    let out = m.run(
        "cp",
        &[
            "-a".as_ref(),
            src.join("weather/old.json").as_os_str(),
            m.path("old.json").as_os_str(),
        ],
    );
    assert_success("cp -a", &out);
    assert_age_near(&m.path("old.json"), 2 * DAY);
    assert_eq!(
        fs::read(m.path("old.json")).unwrap(),
        b"{\"name\":\"old.json\"}"
    );
}

#[test]
fn a_plain_write_after_touch_into_the_past_makes_an_entry_fresh_again() {
    if !require_fuse() {
        return;
    }
    let m = mount_7d();
    fs::write(m.path("x.json"), b"{}").unwrap();
    let out = m.sh(&format!(
        "touch -d '2 days ago' '{}'",
        m.path("x.json").display()
    ));
    assert_success("touch -d", &out);
    assert_age_near(&m.path("x.json"), 2 * DAY);
    let out = m.sh(&format!("echo '{{}}' > '{}'", m.path("x.json").display()));
    assert_success("echo >", &out);
    assert_age_near(&m.path("x.json"), Duration::ZERO);
}

#[test]
fn python_tempfile_utime_and_replace_keeps_the_time_it_set() {
    if !require_fuse() {
        return;
    }
    let m = mount_7d();
    let script = r#"
import os, sys, tempfile, time
d = sys.argv[1]
fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
with os.fdopen(fd, "w") as f:
    f.write('{"v": 1}')
t = time.time() - 3 * 3600
os.utime(tmp, (t, t))
os.replace(tmp, os.path.join(d, "x.json"))
"#;
    let out = m.run("python3", &["-c", script, &m.mnt.to_string_lossy()]);
    assert_success("python", &out);
    assert_age_near(&m.path("x.json"), 3 * HOUR);
}

#[test]
fn a_writer_that_sets_times_and_then_writes_again_publishes_now() {
    if !require_fuse() {
        return;
    }
    let m = mount_7d();
    let _no_forks = no_forks();
    let mut f = File::create(m.path("x.json")).unwrap();
    f.write_all(b"[1").unwrap();
    f.set_modified(SystemTime::now() - 2 * DAY).unwrap();
    f.write_all(b"]").unwrap();
    close_fd(f).unwrap();
    assert_age_near(&m.path("x.json"), Duration::ZERO);

    let mut f = File::create(m.path("y.json")).unwrap();
    f.write_all(b"[1]").unwrap();
    f.set_modified(SystemTime::now() - 2 * DAY).unwrap();
    close_fd(f).unwrap();
    assert_age_near(&m.path("y.json"), 2 * DAY);
}
