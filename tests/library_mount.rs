//! Two processes, one cache: values written by the library are read through a real mount of
//! the same backing dir, and the other way round, with the same expiry rules.
//!
//! Needs FUSE: `/dev/fuse` and root. Without them the tests print "skipping" and pass, unless
//! `CACHETTA_REQUIRE_FUSE=1`, when they fail.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use cachetta::{Cachetta, InfoState};
use serde_json::{json, Value};

/// Whether this machine can mount FUSE filesystems; `false` means skip (or panic when required).
fn fuse_available() -> bool {
    let usable = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok()
        && rustix::process::geteuid().is_root();
    if !usable {
        if std::env::var_os("CACHETTA_REQUIRE_FUSE").is_some_and(|v| v == "1") {
            panic!("CACHETTA_REQUIRE_FUSE=1 but /dev/fuse cannot be opened or we are not root");
        }
        eprintln!("skipping: FUSE is not available (needs /dev/fuse and root)");
    }
    usable
}

fn is_mounted(mountpoint: &Path) -> bool {
    let want = mountpoint.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(want.as_str()))
}

/// A `cachetta mount` child process over a fresh backing dir; unmounted and reaped on drop.
struct Mount {
    child: Child,
    mountpoint: PathBuf,
    backing: PathBuf,
    _dirs: Vec<tempfile::TempDir>,
}

impl Mount {
    fn start(extra: &[&str]) -> Mount {
        let tmp = |prefix: &str| {
            tempfile::Builder::new()
                .prefix(prefix)
                .tempdir_in("/tmp")
                .unwrap()
        };
        let (mnt, backing, config) = (tmp("lib-mnt"), tmp("lib-backing"), tmp("lib-config"));
        let mountpoint = mnt.path().canonicalize().unwrap();
        let backing_path = backing.path().canonicalize().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cachetta"))
            .arg("mount")
            .arg(&mountpoint)
            .arg("--backing")
            .arg(&backing_path)
            .args(extra)
            .env("XDG_CONFIG_HOME", config.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("cannot start cachetta mount");
        let mut mount = Mount {
            child,
            mountpoint,
            backing: backing_path,
            _dirs: vec![mnt, backing, config],
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_mounted(&mount.mountpoint) {
            if let Ok(Some(status)) = mount.child.try_wait() {
                panic!("cachetta mount exited early with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "mount did not appear within 10 s"
            );
            thread::sleep(Duration::from_millis(20));
        }
        mount
    }

    fn mnt(&self, key: &str) -> PathBuf {
        self.mountpoint.join(key)
    }

    fn backing(&self, key: &str) -> PathBuf {
        self.backing.join(key)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        if is_mounted(&self.mountpoint) {
            use std::os::unix::ffi::OsStrExt as _;
            let path = std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes()).unwrap();
            // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = self.child.wait();
    }
}

fn set_mtime(path: &Path, mtime: SystemTime) {
    let since = mtime.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let ts = rustix::fs::Timespec {
        tv_sec: since.as_secs() as i64,
        tv_nsec: since.subsec_nanos() as _,
    };
    let times = rustix::fs::Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    rustix::fs::utimensat(rustix::fs::CWD, path, &times, rustix::fs::AtFlags::empty()).unwrap();
}

/// The mount's `user.cachetta.info` of `path`, as JSON.
fn mount_info(path: &Path) -> Value {
    let mut buf = vec![0u8; 64 * 1024];
    let n = rustix::fs::getxattr(path, "user.cachetta.info", &mut buf)
        .unwrap_or_else(|e| panic!("getxattr user.cachetta.info of {}: {e}", path.display()));
    serde_json::from_slice(&buf[..n]).expect("user.cachetta.info is a JSON object")
}

/// Removes the fields that move with the clock (`age`, `ttl`) from `info`, returning them.
fn split_clock(info: &mut Value) -> (f64, i64) {
    let object = info.as_object_mut().expect("an info object");
    let age = object.remove("age").and_then(|v| v.as_f64()).expect("age");
    let ttl = object.remove("ttl").and_then(|v| v.as_i64()).expect("ttl");
    (age, ttl)
}

#[test]
fn library_and_mount_read_each_others_entries() {
    if !fuse_available() {
        return;
    }
    let mount = Mount::start(&["--duration", "1h"]);
    let hour = Duration::from_secs(3600);

    // Library → mount.
    let x = Cachetta::new(mount.backing("x.json")).duration(hour);
    x.write(&json!({"from": "library", "n": [1, 2, 3]}))
        .unwrap();
    let through_mount: Value =
        serde_json::from_slice(&std::fs::read(mount.mnt("x.json")).unwrap()).unwrap();
    assert_eq!(through_mount, json!({"from": "library", "n": [1, 2, 3]}));

    // Library → mount, with an automatic key in a folder.
    let folder = Cachetta::new(mount.backing("weather")).duration(hour);
    folder.cached(&("paris",), || json!({"c": 21})).unwrap();
    let key = folder.path_for(&("paris",)).unwrap();
    let name = key.strip_prefix(&mount.backing).unwrap();
    let through_mount: Value =
        serde_json::from_slice(&std::fs::read(mount.mountpoint.join(name)).unwrap()).unwrap();
    assert_eq!(through_mount, json!({"c": 21}));

    // Mount → library.
    std::fs::write(mount.mnt("y.json"), br#"{"from": "mount"}"#).unwrap();
    let y = Cachetta::new(mount.backing("y.json")).duration(hour);
    assert_eq!(y.read::<Value>().unwrap(), Some(json!({"from": "mount"})));
    assert_eq!(y.info().state, Some(InfoState::Fresh));

    // The library pointed at the mount itself: its staged write is a scratch file renamed
    // onto the entry, which the mount validates and publishes.
    let z = Cachetta::new(mount.mnt("sub/z.json")).duration(hour);
    z.write(&[1, 2]).unwrap();
    assert_eq!(
        std::fs::read(mount.backing("sub/z.json")).unwrap(),
        b"[1,2]"
    );
    assert_eq!(z.read::<Vec<i32>>().unwrap(), Some(vec![1, 2]));

    // The same expiry on both sides.
    let old = Cachetta::new(mount.backing("old.json")).duration(hour);
    old.write(&"old").unwrap();
    set_mtime(&mount.backing("old.json"), SystemTime::now() - 2 * hour);
    assert_eq!(old.read::<String>().unwrap(), None);
    let gone = std::fs::metadata(mount.mnt("old.json")).unwrap_err();
    assert_eq!(
        gone.kind(),
        std::io::ErrorKind::NotFound,
        "the mount hides it too"
    );
    let info = old.info();
    assert!(info.exists && info.expired && !info.stale);
    assert_eq!(info.state, Some(InfoState::Expired));
    assert!(info.ttl.unwrap() <= -3600, "{info:?}");
    assert_eq!((info.duration, info.stale_duration), (3600, 0));

    // The mount's `user.cachetta.info` tells the library's story, field for field; only the
    // clock moves between the two reads.
    let mut seen = mount_info(&mount.mnt("x.json"));
    let mut mine = serde_json::to_value(x.info()).unwrap();
    let ((seen_age, seen_ttl), (my_age, my_ttl)) = (split_clock(&mut seen), split_clock(&mut mine));
    assert_eq!(seen, mine);
    assert_eq!(seen["exists"], true);
    assert_eq!(seen["state"], "fresh");
    assert!(
        (seen_age - my_age).abs() < 2.0,
        "age {seen_age} vs {my_age}"
    );
    assert!((seen_ttl - my_ttl).abs() <= 1, "ttl {seen_ttl} vs {my_ttl}");
}

#[test]
fn mount_sees_an_invalidation_by_the_library() {
    if !fuse_available() {
        return;
    }
    let mount = Mount::start(&[]);
    let cache = Cachetta::new(mount.backing("rm.json"));
    cache.write(&1).unwrap();
    assert_eq!(std::fs::read(mount.mnt("rm.json")).unwrap(), b"1");
    cache.invalidate().unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while std::fs::metadata(mount.mnt("rm.json")).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the mount still shows an invalidated entry"
        );
        thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(mount.mnt("rm.json"), b"2").unwrap();
    assert_eq!(cache.read::<i32>().unwrap(), Some(2));
}
