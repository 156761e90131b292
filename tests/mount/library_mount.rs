//! Two processes, one cache: values written by the library are read through a real mount of
//! the same backing dir, and the other way round, with the same expiry rules.
//!
//! Needs FUSE: `/dev/fuse` and root. Without them the tests print "skipping" and pass, unless
//! `CACHETTA_REQUIRE_FUSE=1`, when they fail.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::common::*;
use cachetta::{Cachetta, InfoState};
use serde_json::{json, Value};

/// The mount's `user.cachetta.info` of `path`, as JSON.
fn mount_info(path: &Path) -> Value {
    let info = getxattr(path, "user.cachetta.info")
        .unwrap_or_else(|e| panic!("getxattr user.cachetta.info of {}: {e}", path.display()));
    serde_json::from_slice(&info).expect("user.cachetta.info is a JSON object")
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
    if !require_fuse() {
        return;
    }
    let mount = Mount::new().args(&["--duration", "1h"]).start();
    let hour = Duration::from_secs(3600);

    // Library → mount.
    let x = Cachetta::new(mount.backing_path("x.json")).duration(hour);
    x.write(&json!({"from": "library", "n": [1, 2, 3]}))
        .unwrap();
    let through_mount: Value =
        serde_json::from_slice(&std::fs::read(mount.path("x.json")).unwrap()).unwrap();
    assert_eq!(through_mount, json!({"from": "library", "n": [1, 2, 3]}));

    // Library → mount, with an automatic key in a folder.
    let folder = Cachetta::new(mount.backing_path("weather")).duration(hour);
    folder.cached(&("paris",), || json!({"c": 21})).unwrap();
    let key = folder.path_for(&("paris",)).unwrap();
    let name = key.strip_prefix(&mount.backing).unwrap();
    let through_mount: Value =
        serde_json::from_slice(&std::fs::read(mount.mnt.join(name)).unwrap()).unwrap();
    assert_eq!(through_mount, json!({"c": 21}));

    // Mount → library.
    std::fs::write(mount.path("y.json"), br#"{"from": "mount"}"#).unwrap();
    let y = Cachetta::new(mount.backing_path("y.json")).duration(hour);
    assert_eq!(y.read::<Value>().unwrap(), Some(json!({"from": "mount"})));
    assert_eq!(y.info().state, Some(InfoState::Fresh));

    // The library pointed at the mount itself: its staged write is a scratch file renamed
    // onto the entry, which the mount validates and publishes.
    let z = Cachetta::new(mount.path("sub/z.json")).duration(hour);
    z.write(&[1, 2]).unwrap();
    assert_eq!(
        std::fs::read(mount.backing_path("sub/z.json")).unwrap(),
        b"[1,2]"
    );
    assert_eq!(z.read::<Vec<i32>>().unwrap(), Some(vec![1, 2]));

    // The same expiry on both sides.
    let old = Cachetta::new(mount.backing_path("old.json")).duration(hour);
    old.write(&"old").unwrap();
    mount.set_mtime("old.json", SystemTime::now() - 2 * hour);
    assert_eq!(old.read::<String>().unwrap(), None);
    let gone = std::fs::metadata(mount.path("old.json")).unwrap_err();
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
    let mut seen = mount_info(&mount.path("x.json"));
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
    if !require_fuse() {
        return;
    }
    let mount = Mount::new().start();
    let cache = Cachetta::new(mount.backing_path("rm.json"));
    cache.write(&1).unwrap();
    assert_eq!(std::fs::read(mount.path("rm.json")).unwrap(), b"1");
    cache.invalidate().unwrap();
    assert!(
        eventually(Duration::from_secs(2), || std::fs::metadata(
            mount.path("rm.json")
        )
        .is_err()),
        "the mount still shows an invalidated entry"
    );
    std::fs::write(mount.path("rm.json"), b"2").unwrap();
    assert_eq!(cache.read::<i32>().unwrap(), Some(2));
}
