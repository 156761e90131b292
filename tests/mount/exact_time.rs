//! The view is exact in time: entries vanish from `stat`, `ls` and `cat` within a second of
//! expiring, whatever the kernel cached. These tests sleep, because time is the behaviour.
//!
//! Each test warms the kernel's caches (lookup, attributes, directory, page cache) shortly
//! before the state change, then checks one access path just after it, so one path's
//! answer cannot refresh another's cache.

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::common::*;

/// SPEC: "at most 1 s after it expires"; 0.3 s more for scheduling on a busy CI machine.
const GRACE: Duration = Duration::from_millis(1300);
/// Before the change, keep this much margin so a slow machine does not look like an early expiry.
const MARGIN: Duration = Duration::from_millis(700);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Write `x.json` through the mount and return its mtime (the start of its age).
fn write_entry(m: &Mount) -> SystemTime {
    fs::write(m.path("x.json"), b"{\"t\":1}").unwrap();
    m.backing_mtime("x.json")
}

/// Touch every cache the kernel has for `x.json` while it is still visible.
fn warm_caches(m: &Mount) {
    assert!(
        m.list("").iter().any(|n| n == "x.json"),
        "x.json not listed"
    );
    assert_eq!(fs::metadata(m.path("x.json")).unwrap().len(), 7);
    assert_eq!(fs::read(m.path("x.json")).unwrap(), b"{\"t\":1}");
}

fn three_second_mount() -> Mount {
    Mount::new()
        .config("duration = \"3s\"\nstale = \"0s\"\n")
        .start()
}

fn read_via_open(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    File::open(path)?.read_to_end(&mut v)?;
    Ok(v)
}

#[test]
fn expired_entry_is_gone_from_stat_within_a_second() {
    if !require_fuse() {
        return;
    }
    let m = three_second_mount();
    let t0 = write_entry(&m);
    warm_caches(&m);
    sleep_until(t0 + secs(3) - MARGIN);
    warm_caches(&m);
    sleep_until(t0 + secs(3) + GRACE);
    assert_eq!(errno_of(fs::metadata(m.path("x.json"))), libc::ENOENT);
}

#[test]
fn expired_entry_is_gone_from_readdir_within_a_second() {
    if !require_fuse() {
        return;
    }
    let m = three_second_mount();
    let t0 = write_entry(&m);
    warm_caches(&m);
    sleep_until(t0 + secs(3) - MARGIN);
    warm_caches(&m);
    sleep_until(t0 + secs(3) + GRACE);
    assert_eq!(m.list(""), names(&[]));
}

#[test]
fn expired_entry_is_gone_from_open_within_a_second() {
    if !require_fuse() {
        return;
    }
    let m = three_second_mount();
    let t0 = write_entry(&m);
    warm_caches(&m);
    sleep_until(t0 + secs(3) - MARGIN);
    warm_caches(&m);
    sleep_until(t0 + secs(3) + GRACE);
    assert_eq!(errno_of(read_via_open(&m.path("x.json"))), libc::ENOENT);
}

#[test]
fn entry_is_visible_until_its_duration_ends() {
    if !require_fuse() {
        return;
    }
    let m = three_second_mount();
    let t0 = write_entry(&m);
    warm_caches(&m);
    sleep_until(t0 + secs(3) - MARGIN);
    // Fresh until the end of its duration: listed, stat-able and readable.
    warm_caches(&m);
}

#[test]
fn stale_entry_stays_readable_after_duration_and_vanishes_after_stale_window() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .config("duration = \"2s\"\nstale = \"3s\"\n")
        .start();
    let t0 = write_entry(&m);
    warm_caches(&m);
    // Into the stale window: still served, same bytes.
    sleep_until(t0 + secs(2) + GRACE);
    warm_caches(&m);
    sleep_until(t0 + secs(5) - MARGIN);
    warm_caches(&m);
    // Past duration + stale: expired.
    sleep_until(t0 + secs(5) + GRACE);
    assert_eq!(errno_of(fs::metadata(m.path("x.json"))), libc::ENOENT);
    assert_eq!(m.list(""), names(&[]));
    assert_eq!(errno_of(read_via_open(&m.path("x.json"))), libc::ENOENT);
}

#[test]
fn rewriting_an_entry_before_expiry_restarts_its_duration() {
    if !require_fuse() {
        return;
    }
    let m = three_second_mount();
    let t0 = write_entry(&m);
    sleep_until(t0 + secs(2));
    let t1 = write_entry(&m);
    assert!(t1 >= t0 + secs(2), "rewrite did not move the mtime");
    // Past the first write's expiry, within the second's.
    sleep_until(t0 + secs(3) + GRACE);
    warm_caches(&m);
    sleep_until(t1 + secs(3) + GRACE);
    assert_eq!(errno_of(fs::metadata(m.path("x.json"))), libc::ENOENT);
}
