//! `statfs` on the mount reports the backing filesystem.

use std::path::Path;

use crate::common::*;

fn statvfs(path: &Path) -> libc::statvfs {
    let c = cstring(path);
    // SAFETY: all-zero is a valid statvfs; it is filled in by the call below.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and a writable statvfs.
    check_rc(unsafe { libc::statvfs(c.as_ptr(), &mut st) })
        .unwrap_or_else(|e| panic!("statvfs {}: {e}", path.display()));
    st
}

#[test]
fn statfs_reports_the_backing_filesystem() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().backing_file("x.json", "{}").start();
    let mounted = statvfs(&m.mnt);
    let backing = statvfs(&m.backing);
    assert_eq!(mounted.f_bsize, backing.f_bsize, "block size");
    let total = |s: &libc::statvfs| s.f_blocks as f64 * s.f_frsize as f64;
    let (t_m, t_b) = (total(&mounted), total(&backing));
    assert!(t_b > 0.0, "backing filesystem reports no size");
    assert!(
        (t_m - t_b).abs() <= t_b * 0.01,
        "total size through the mount {t_m} vs backing {t_b}"
    );
    let free = |s: &libc::statvfs| s.f_bavail as f64 * s.f_frsize as f64;
    // Other tests write meanwhile; free space only needs to be in the same ballpark.
    assert!(
        (free(&mounted) - free(&backing)).abs() <= t_b * 0.05,
        "free space through the mount {} vs backing {}",
        free(&mounted),
        free(&backing)
    );
    assert!(mounted.f_namemax >= 255, "namemax {}", mounted.f_namemax);
}
