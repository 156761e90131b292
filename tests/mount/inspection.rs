//! Inspection through the mount (SPEC §5): the `user.cachetta.*` attributes with the real
//! `getfattr`/`setfattr` binaries and raw xattr calls, the size protocol, read-only names,
//! other `user.*` names stored on the backing file, and the root's stats.

mod common;
#[path = "refresh_support/mod.rs"]
mod refresh_support;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use common::*;
use refresh_support::{attr, stats, xattr};

const HOUR: Duration = Duration::from_secs(3600);

fn cstr(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// `getxattr` with a caller-sized buffer: the raw size protocol.
fn getxattr_sized(path: &Path, name: &str, size: usize) -> Result<usize, i32> {
    let mut buf = vec![0u8; size];
    let name = CString::new(name).unwrap();
    let ptr = if size == 0 {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    // SAFETY: valid C strings; `buf` is writable for `size` bytes (or null with size 0).
    let n = unsafe { libc::getxattr(cstr(path).as_ptr(), name.as_ptr(), ptr, size) };
    if n < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    } else {
        Ok(n as usize)
    }
}

fn setxattr(path: &Path, name: &str, value: &[u8]) -> Result<(), i32> {
    let name = CString::new(name).unwrap();
    // SAFETY: valid C strings and a value buffer of `value.len()` bytes.
    let rc = unsafe {
        libc::setxattr(
            cstr(path).as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    } else {
        Ok(())
    }
}

fn stale_mount() -> Mount {
    Mount::new()
        .config("duration = \"1h\"\nstale = \"1h\"\n")
        .backing_file_aged("stale.json", "{\"s\":1}", HOUR + Duration::from_secs(600))
        .backing_file("fresh.json", "[1,2]")
        .start()
}

#[test]
fn getfattr_dump_lists_every_inspection_attribute() {
    if !require_fuse() {
        return;
    }
    let m = stale_mount();
    let out = m.run("getfattr", &["-d", "fresh.json"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "state",
        "age",
        "ttl",
        "expired",
        "stale",
        "duration",
        "stale_duration",
        "path",
        "refreshing",
        "info",
    ] {
        assert!(
            text.contains(&format!("user.cachetta.{name}=")),
            "{name} missing in:\n{text}"
        );
    }
    assert!(!text.contains("refresh_error"), "no refresh ran:\n{text}");
}

#[test]
fn attributes_agree_with_the_info_object_and_ttl_is_negative_while_stale() {
    if !require_fuse() {
        return;
    }
    let m = stale_mount();
    assert_eq!(attr(&m, "stale.json", "state").as_deref(), Some("stale"));
    assert_eq!(attr(&m, "stale.json", "expired").as_deref(), Some("true"));
    assert_eq!(attr(&m, "stale.json", "stale").as_deref(), Some("true"));
    let ttl: i64 = attr(&m, "stale.json", "ttl").unwrap().parse().unwrap();
    assert!((-610..=-599).contains(&ttl), "{ttl}");
    let info: serde_json::Value =
        serde_json::from_str(&attr(&m, "stale.json", "info").unwrap()).unwrap();
    assert_eq!(info["exists"], true);
    assert_eq!(info["state"], "stale");
    assert_eq!(info["stale"], true);
    assert_eq!(info["duration"], 3600);
    assert_eq!(info["stale_duration"], 3600);
    assert_eq!(info["size"], 7);
    assert_eq!(info["refreshing"], false);
    assert!(info["age"].as_f64().unwrap() >= 4200.0, "{info}");
    let path = fs::canonicalize(m.backing_path("stale.json")).unwrap();
    assert_eq!(info["path"], path.to_str().unwrap());
    assert_eq!(
        attr(&m, "stale.json", "path").unwrap(),
        path.to_str().unwrap()
    );

    assert_eq!(attr(&m, "fresh.json", "state").as_deref(), Some("fresh"));
    assert_eq!(attr(&m, "fresh.json", "expired").as_deref(), Some("false"));
    let ttl: i64 = attr(&m, "fresh.json", "ttl").unwrap().parse().unwrap();
    assert!((3590..=3600).contains(&ttl), "{ttl}");
}

#[test]
fn the_xattr_size_protocol_is_kept() {
    if !require_fuse() {
        return;
    }
    let m = stale_mount();
    let path = m.path("fresh.json");
    let len = getxattr_sized(&path, "user.cachetta.state", 0).unwrap();
    assert_eq!(len, "fresh".len());
    assert_eq!(
        getxattr_sized(&path, "user.cachetta.state", 2),
        Err(libc::ERANGE)
    );
    assert_eq!(getxattr_sized(&path, "user.cachetta.state", 64), Ok(5));
    assert_eq!(
        getxattr_sized(&path, "user.cachetta.nope", 64),
        Err(libc::ENODATA)
    );
    assert_eq!(getxattr_sized(&path, "user.other", 64), Err(libc::ENODATA));
}

#[test]
fn setfattr_on_inspection_attributes_is_eperm_and_changes_nothing() {
    if !require_fuse() {
        return;
    }
    let m = stale_mount();
    let before = fs::metadata(m.backing_path("fresh.json"))
        .unwrap()
        .modified()
        .unwrap();
    let out = m.run(
        "setfattr",
        &["-n", "user.cachetta.age", "-v", "5", "fresh.json"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{out:?}"
    );
    assert_eq!(
        setxattr(&m.path("fresh.json"), "user.cachetta.state", b"stale"),
        Err(libc::EPERM)
    );
    assert_eq!(attr(&m, "fresh.json", "state").as_deref(), Some("fresh"));
    let after = fs::metadata(m.backing_path("fresh.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);
}

#[test]
fn other_user_attributes_live_on_the_backing_file_and_survive_a_rewrite() {
    if !require_fuse() {
        return;
    }
    let m = stale_mount();
    let out = m.run(
        "setfattr",
        &["-n", "user.source", "-v", "api", "fresh.json"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        xattr(&m.backing_path("fresh.json"), "user.source").unwrap(),
        b"api"
    );
    let out = m.run(
        "getfattr",
        &["-n", "user.source", "--only-values", "fresh.json"],
    );
    assert_eq!(out.stdout, b"api");
    fs::write(m.path("fresh.json"), "[3]").unwrap();
    assert_eq!(xattr(&m.path("fresh.json"), "user.source").unwrap(), b"api");
    assert_eq!(
        setxattr(&m.path("fresh.json"), "user.big", &vec![b'x'; 65 * 1024]),
        Err(libc::E2BIG)
    );
}

#[test]
fn root_stats_count_what_the_mount_does() {
    if !require_fuse() {
        return;
    }
    let m = stale_mount();
    let before = stats(&m);
    fs::read(m.path("fresh.json")).unwrap();
    fs::read(m.path("stale.json")).unwrap();
    assert!(fs::read(m.path("nothere.json")).is_err());
    fs::write(m.path("new.json"), "{}").unwrap();
    let _ = m.sh("echo 'not json' > new.json");
    let after = stats(&m);
    let moved = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    assert_eq!(moved("hits"), 2);
    assert_eq!(moved("stale_served"), 1);
    assert!(moved("misses") >= 1);
    assert_eq!(moved("writes_ok"), 1);
    assert_eq!(moved("writes_rejected"), 1);
    assert!(after["uptime_s"].is_u64());
    assert!(after["requests"]["open"].as_u64().unwrap() > 0);
}
