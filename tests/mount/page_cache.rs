//! The ordinary user's mount (no kernel passthrough) reads entries through the kernel's page
//! cache (issue #16): a second `cat` of an unchanged entry sends no `read` to the daemon, and a
//! replaced entry is read anew, never from old pages, also while someone reads the old version.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use crate::common::*;

/// A JSON value of `len` bytes that says `tag`.
fn value(tag: &str, len: usize) -> Vec<u8> {
    let head = format!("{{\"tag\":\"{tag}\",\"pad\":\"");
    let mut v = head.into_bytes();
    v.resize(len - 2, b'x');
    v.extend_from_slice(b"\"}");
    v
}

fn without_passthrough() -> MountBuilder {
    Mount::new().env("CACHETTA_PASSTHROUGH", "0")
}

#[test]
fn a_second_cat_of_an_unchanged_entry_sends_no_read_to_the_daemon() {
    if !require_fuse() {
        return;
    }
    let _kept = kernel_caches_kept();
    let v = value("one", 4096);
    let m = without_passthrough().backing_file("x.json", &v).start();
    assert_eq!(fs::read(m.path("x.json")).unwrap(), v);
    let (reads, opens) = (requests(&m, "read"), requests(&m, "open"));
    for _ in 0..5 {
        assert_eq!(fs::read(m.path("x.json")).unwrap(), v);
    }
    assert_eq!(requests(&m, "open") - opens, 5, "every cat opens");
    assert_eq!(
        requests(&m, "read"),
        reads,
        "no cat after the first reads through the daemon"
    );
}

#[test]
fn a_replaced_entry_is_read_anew_never_from_old_pages() {
    if !require_fuse() {
        return;
    }
    let _kept = kernel_caches_kept();
    let v1 = value("one", 5000);
    let m = without_passthrough().backing_file("x.json", &v1).start();
    let _no_forks = no_forks();
    assert_eq!(fs::read(m.path("x.json")).unwrap(), v1);
    // Someone holds the old version open, with its pages cached.
    let mut holder = File::open(m.path("x.json")).unwrap();
    let mut held = Vec::new();
    holder.read_to_end(&mut held).unwrap();
    assert_eq!(held, v1);

    // Replaced through the mount, larger: the writer's cat sees all of it.
    let v2 = value("two", 9000);
    fs::write(m.path("x.json"), &v2).unwrap();
    assert_eq!(fs::read(m.path("x.json")).unwrap(), v2);
    let mut again = vec![0u8; 10_000];
    let n = holder.read_at(&mut again, 0).unwrap();
    assert_eq!(
        &again[..n],
        &v1[..],
        "the holder reads the version it opened, whole"
    );

    // Replaced through the mount, smaller.
    let v3 = value("three", 3000);
    fs::write(m.path("x.json"), &v3).unwrap();
    assert_eq!(fs::read(m.path("x.json")).unwrap(), v3);

    // Replaced in place behind the mount's back, same size: seen within a second, and every
    // read on the way is one version or the other, whole.
    let v4 = value("four", 3000);
    fs::write(m.backing_path("x.json"), &v4).unwrap();
    assert!(eventually(Duration::from_secs(3), || {
        let got = fs::read(m.path("x.json")).unwrap();
        assert!(
            got == v3 || got == v4,
            "a mixed read: {}",
            String::from_utf8_lossy(&got)
        );
        got == v4
    }));

    // Replaced by rename behind the mount's back.
    let v5 = value("five", 7000);
    let tmp = m.backing_path("x.json.new");
    fs::write(&tmp, &v5).unwrap();
    fs::rename(&tmp, m.backing_path("x.json")).unwrap();
    assert!(eventually(Duration::from_secs(3), || {
        let got = fs::read(m.path("x.json")).unwrap();
        assert!(
            got == v4 || got == v5,
            "a mixed read: {}",
            String::from_utf8_lossy(&got)
        );
        got == v5
    }));
    let n = holder.read_at(&mut again, 0).unwrap();
    assert_eq!(
        &again[..n],
        &v1[..],
        "the holder still reads its version whole"
    );
}
