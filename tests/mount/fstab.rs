//! `mount -t fuse.cachetta` and fstab (SPEC §14), through the real mount(8) and `mount.fuse3`:
//! a mount with `-o` options, one from an fstab file whose line carries systemd's options,
//! `mount -a` run twice, `umount` ending the daemon, and a bad option refused with exit 2 and
//! nothing mounted.
//!
//! mount(8) clears `PATH`, so `mount.fuse3`'s `sh -c cachetta ...` finds the binary only in
//! sh's default `PATH`. Each test runs on a thread of its own in a private mount namespace
//! where the built binary is bound over `/usr/local/sbin` and `/usr/local/bin` (first in
//! dash's and bash's default `PATH`): the machine's directories are never touched, and every
//! mount the test makes lives and dies in that namespace.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;
use crate::daemon_scene::*;

/// The directories of sh's default `PATH` that come before `/usr/bin` (dash, then bash).
const FIRST_ON_DEFAULT_PATH: &[&str] = &["/usr/local/sbin", "/usr/local/bin"];

/// Run `test` on a new thread in a private mount namespace where `cachetta` is the binary
/// under test for any `sh` with the default `PATH`. Panics (never skips) if that cannot be
/// set up: the caller has passed `require_fuse()`, so it is root.
fn with_cachetta_installed(test: impl FnOnce() + Send) {
    std::thread::scope(|scope| {
        let outcome = scope
            .spawn(|| {
                let _bin = InstalledBinary::bind();
                test();
            })
            .join();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    });
}

/// A directory holding a `cachetta` symlink to the built binary, bound over
/// [`FIRST_ON_DEFAULT_PATH`] in this thread's own mount namespace.
struct InstalledBinary {
    _dir: tempfile::TempDir,
}

impl InstalledBinary {
    fn bind() -> InstalledBinary {
        // SAFETY: unshare has no memory-safety preconditions; CLONE_NEWNS gives this thread
        // (and the processes it spawns) a copy of the mount table and nothing else.
        check("unshare(CLONE_NEWNS)", unsafe {
            libc::unshare(libc::CLONE_NEWNS)
        });
        // Where `/` is a shared mount (systemd), the copy would pass our mounts back out.
        mount_syscall(None, Path::new("/"), libc::MS_REC | libc::MS_PRIVATE);
        let dir = tempfile::tempdir().expect("create temp dir");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_cachetta"), dir.path().join("cachetta"))
            .expect("symlink the binary");
        for target in FIRST_ON_DEFAULT_PATH {
            mount_syscall(Some(dir.path()), Path::new(target), libc::MS_BIND);
        }
        InstalledBinary { _dir: dir }
    }
}

impl Drop for InstalledBinary {
    fn drop(&mut self) {
        // The namespace goes with the thread; unbinding first lets the temp dir go cleanly.
        for target in FIRST_ON_DEFAULT_PATH {
            force_unmount(Path::new(target));
        }
    }
}

fn mount_syscall(source: Option<&Path>, target: &Path, flags: libc::c_ulong) {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("path without NUL");
    let source = source.map(c);
    let target_c = c(target);
    // SAFETY: every pointer is a NUL-terminated string that outlives the call, or null where
    // mount(2) allows it (no source and no data for a propagation change).
    let rc = unsafe {
        libc::mount(
            source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target_c.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    check(&format!("mount(2) on {}", target.display()), rc);
}

#[track_caller]
fn check(what: &str, rc: libc::c_int) {
    assert_eq!(rc, 0, "{what}: {}", io::Error::last_os_error());
}

/// mount(8) or umount(8) with `args`, in the scene's isolated home (`XDG_*` reach cachetta
/// through mount(8); `HOME` does not, `mount.fuse3` sets root's).
fn run_mount8(s: &Scene, program: &str, args: &[&Path]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    s.home().isolate(&mut cmd);
    output(&mut cmd)
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A scene with the backing dir and mountpoint made (mount(8) wants an existing target).
fn scene() -> Scene {
    let s = Scene::new();
    fs::create_dir_all(s.backing()).expect("create backing dir");
    fs::create_dir_all(s.mnt()).expect("create mountpoint");
    s
}

/// The mount serves: an entry written through it lands in the backing dir, with the duration
/// the `-o` options gave (1h).
#[track_caller]
fn assert_serves_with_an_hour(s: &Scene) {
    assert!(is_fuse_mount(&s.mnt()), "not mounted; log:\n{}", s.log());
    let entry = s.mnt().join("weather.json");
    fs::write(&entry, b"{\"t\":21}").expect("write through the mount");
    assert_eq!(
        fs::read(s.backing().join("weather.json")).expect("read the backing file"),
        b"{\"t\":21}"
    );
    let duration = getxattr(&entry, "user.cachetta.duration").expect("user.cachetta.duration");
    assert_eq!(String::from_utf8_lossy(&duration), "3600");
}

/// `umount MOUNTPOINT` ends the daemon, which logs a clean stop from outside: the way
/// `serve` exits 0 (a failure would log an error first).
#[track_caller]
fn assert_umount_ends_the_daemon(s: &Scene) {
    let daemons = s.daemon_pids();
    assert_eq!(daemons.len(), 1, "cachetta processes: {daemons:?}");
    let out = run_mount8(s, "umount", &[&s.mnt()]);
    assert!(out.status.success(), "umount: {}", text(&out));
    assert!(
        eventually(STOP_TIMEOUT, || !alive(daemons[0])),
        "the daemon outlived umount; log:\n{}",
        s.log()
    );
    assert!(!is_mounted(&s.mnt()), "still mounted after umount");
    let log = s.log();
    assert!(
        log.contains("unmounted from outside; shutting down")
            && log.contains("INFO cachetta::mount: unmounted"),
        "no clean stop in the log:\n{log}"
    );
    assert!(
        !log.contains("ERROR") && !log.contains("WARN"),
        "the stop logged problems:\n{log}"
    );
}

#[test]
fn mount_t_fuse_cachetta_with_options_mounts_and_umount_ends_the_daemon() {
    if !require_fuse() {
        return;
    }
    with_cachetta_installed(|| {
        let s = scene();
        let (backing, mnt) = (s.backing(), s.mnt());
        let options = PathBuf::from(format!(
            "duration=1h,rw,nosuid,nodev,transport={}",
            test_transport()
        ));
        let out = run_mount8(
            &s,
            "mount",
            &[
                Path::new("-t"),
                Path::new("fuse.cachetta"),
                &backing,
                &mnt,
                Path::new("-o"),
                &options,
            ],
        );
        assert!(
            out.status.success(),
            "mount -t fuse.cachetta: {}",
            text(&out)
        );
        // mount(8) returned only once the mount answered: no waiting here.
        assert_serves_with_an_hour(&s);
        assert_umount_ends_the_daemon(&s);
    });
}

#[test]
fn fstab_line_with_systemd_options_mounts_with_mount_t_file() {
    if !require_fuse() {
        return;
    }
    with_cachetta_installed(|| {
        let s = scene();
        let fstab = s.path("fstab");
        fs::write(
            &fstab,
            format!(
                "# cachetta\n{} {} fuse.cachetta duration=1h,noauto,nofail,x-systemd.automount,_netdev,transport={} 0 0\n",
                s.backing().display(),
                s.mnt().display(),
                test_transport()
            ),
        )
        .expect("write the fstab file");
        let out = run_mount8(&s, "mount", &[Path::new("-T"), &fstab, &s.mnt()]);
        assert!(out.status.success(), "mount -T FSTAB: {}", text(&out));
        assert_serves_with_an_hour(&s);
        assert_umount_ends_the_daemon(&s);
    });
}

#[test]
fn mount_a_twice_finds_its_fstab_line_already_mounted() {
    if !require_fuse() {
        return;
    }
    with_cachetta_installed(|| {
        let s = scene();
        let fstab = s.path("fstab");
        let line = format!(
            "{} {} fuse.cachetta duration=1h,nofail,transport={} 0 0\n",
            s.backing().display(),
            s.mnt().display(),
            test_transport()
        );
        fs::write(&fstab, line).expect("write the fstab file");
        for round in ["first", "second"] {
            let out = run_mount8(&s, "mount", &[Path::new("-a"), Path::new("-T"), &fstab]);
            assert!(out.status.success(), "{round} mount -a: {}", text(&out));
        }
        assert_eq!(s.daemon_pids().len(), 1, "one daemon for the line");
        // What mount(8) compares with the fstab line: its source and type.
        let out = run_mount8(
            &s,
            "findmnt",
            &[
                Path::new("-n"),
                Path::new("-o"),
                Path::new("SOURCE,FSTYPE"),
                &s.mnt(),
            ],
        );
        let shown = String::from_utf8_lossy(&out.stdout);
        let want = format!("{} fuse.cachetta", s.backing().display());
        assert_eq!(shown.split_whitespace().collect::<Vec<_>>().join(" "), want);
        assert_umount_ends_the_daemon(&s);
    });
}

#[test]
fn bad_mount_option_fails_with_exit_2_naming_it_and_mounts_nothing() {
    if !require_fuse() {
        return;
    }
    with_cachetta_installed(|| {
        let s = scene();
        for (options, named) in [
            ("rw,duration=banana", ["--duration", "banana"]),
            ("rw,nosuid,colour=blue", ["unknown mount option", "colour"]),
        ] {
            let options = PathBuf::from(options);
            let out = run_mount8(
                &s,
                "mount",
                &[
                    Path::new("-t"),
                    Path::new("fuse.cachetta"),
                    &s.backing(),
                    &s.mnt(),
                    Path::new("-o"),
                    &options,
                ],
            );
            assert_eq!(out.status.code(), Some(2), "{}", text(&out));
            let stderr = String::from_utf8_lossy(&out.stderr);
            for needle in named {
                assert!(stderr.contains(needle), "{needle:?} not in: {}", text(&out));
            }
            assert!(!is_mounted(&s.mnt()), "{} got mounted", s.mnt().display());
            assert!(s.daemon_pids().is_empty(), "a daemon was left running");
        }
    });
}
