//! Inspection through the mount (SPEC §5): the `user.cachetta.*` attributes with the real
//! `getfattr`/`setfattr` binaries and raw xattr calls, the size protocol, read-only names,
//! other `user.*` names stored on the backing file, and the root's stats.

use std::fs;
use std::time::Duration;

use crate::common::*;

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
        errno_of(getxattr_sized(&path, "user.cachetta.state", 2)),
        libc::ERANGE
    );
    assert_eq!(getxattr_sized(&path, "user.cachetta.state", 64).unwrap(), 5);
    assert_eq!(
        errno_of(getxattr_sized(&path, "user.cachetta.nope", 64)),
        libc::ENODATA
    );
    assert_eq!(
        errno_of(getxattr_sized(&path, "user.other", 64)),
        libc::ENODATA
    );
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
        errno_of(setxattr(
            &m.path("fresh.json"),
            "user.cachetta.state",
            b"stale"
        )),
        libc::EPERM
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
        getxattr(&m.backing_path("fresh.json"), "user.source").unwrap(),
        b"api"
    );
    let out = m.run(
        "getfattr",
        &["-n", "user.source", "--only-values", "fresh.json"],
    );
    assert_eq!(out.stdout, b"api");
    fs::write(m.path("fresh.json"), "[3]").unwrap();
    assert_eq!(
        getxattr(&m.path("fresh.json"), "user.source").unwrap(),
        b"api"
    );
    assert_eq!(
        errno_of(setxattr(
            &m.path("fresh.json"),
            "user.big",
            &vec![b'x'; 65 * 1024]
        )),
        libc::E2BIG
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
