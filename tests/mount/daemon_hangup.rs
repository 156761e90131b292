//! SIGHUP: a mount started from a terminal stops when the terminal hangs up (a real pty whose
//! master is closed), unless started under `nohup`; a mount no terminal can hang up on
//! (`--daemon`, or started with `setsid` like under systemd) keeps serving, and a daemon
//! reopens its log file (logrotate).

use std::ffi::CString;
use std::fs::{self, File};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use crate::daemon_scene::*;

/// Spawn `cmd` (a foreground mount) with stderr to `ROOT/daemon.stderr` and wait for the mount.
fn start(s: &Scene, cmd: &mut Command) -> Child {
    let stderr = File::create(s.path("daemon.stderr")).unwrap();
    let mut child = spawn(cmd.stdout(Stdio::null()).stderr(stderr));
    let up = eventually(MOUNT_TIMEOUT, || {
        is_fuse_mount(&s.mnt()) || child.try_wait().ok().flatten().is_some()
    });
    assert!(
        up && is_fuse_mount(&s.mnt()),
        "no mount; stderr:\n{}",
        s.stderr()
    );
    child
}

/// A new pseudo-terminal: its master, and the path of its slave.
fn pty() -> (OwnedFd, CString) {
    // SAFETY: posix_openpt returns a new descriptor we own (or -1); grantpt, unlockpt and
    // ptsname_r only act on it, and ptsname_r writes at most `name.len()` bytes.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(
            master >= 0,
            "posix_openpt: {}",
            std::io::Error::last_os_error()
        );
        let master = OwnedFd::from_raw_fd(master);
        assert_eq!(libc::grantpt(master.as_raw_fd()), 0);
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(
            libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
            0
        );
        let slave = std::ffi::CStr::from_ptr(name.as_ptr()).to_owned();
        (master, slave)
    }
}

/// Start a foreground mount in a session of its own whose controlling terminal is a new pty,
/// like one started from a login shell; with `nohup`, SIGHUP is ignored when it starts.
/// Returns the pty's master: dropping it hangs the terminal up.
fn on_a_terminal(s: &Scene, nohup: bool) -> (Child, OwnedFd) {
    let (master, slave) = pty();
    let mut cmd = s.command(&s.mount_args(&[]));
    // SAFETY: between fork and exec the closure only calls setsid, open, ioctl and signal,
    // which are async-signal-safe, and allocates nothing (`slave` was made before).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let tty = libc::open(slave.as_ptr(), libc::O_RDWR);
            if tty < 0 || libc::ioctl(tty, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if nohup && libc::signal(libc::SIGHUP, libc::SIG_IGN) == libc::SIG_ERR {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    (start(s, &mut cmd), master)
}

#[test]
fn closing_the_terminal_of_a_foreground_mount_stops_it_cleanly() {
    if !require_fuse() {
        return;
    }
    let s = Scene::new();
    let (mut child, master) = on_a_terminal(&s, false);
    // The kernel hangs up the slave and sends SIGHUP to its session.
    drop(master);
    let status = wait_timeout(&mut child, STOP_TIMEOUT)
        .unwrap_or_else(|| panic!("still running after the hangup; stderr:\n{}", s.stderr()));
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        s.stderr()
    );
    assert!(!is_mounted(&s.mnt()), "still mounted after the hangup");
    let stderr = s.stderr();
    assert!(stderr.contains("signal=\"SIGHUP\""), "{stderr}");
}

#[test]
fn a_mount_started_under_nohup_outlives_its_terminal() {
    if !require_fuse() {
        return;
    }
    let s = Scene::new();
    write_file(&s.backing().join("x.json"), b"[0]");
    let (mut child, master) = on_a_terminal(&s, true);
    drop(master);
    assert!(
        eventually(Duration::from_secs(5), || s.stderr().contains("SIGHUP")),
        "SIGHUP was not logged; stderr:\n{}",
        s.stderr()
    );
    assert!(child.try_wait().unwrap().is_none(), "{}", s.stderr());
    assert_eq!(fs::read(s.mnt().join("x.json")).unwrap(), b"[0]");
    assert!(stop(&mut child, libc::SIGTERM).success());
}

#[test]
fn sighup_without_a_terminal_leaves_a_foreground_mount_serving() {
    if !require_fuse() {
        return;
    }
    let s = Scene::new();
    write_file(&s.backing().join("x.json"), b"[1]");
    let mut cmd = s.command(&s.mount_args(&[]));
    // As under systemd: a session of its own, with no controlling terminal.
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = start(&s, &mut cmd);
    signal(child.id() as libc::pid_t, libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || s.stderr().contains("SIGHUP")),
        "SIGHUP was not logged; stderr:\n{}",
        s.stderr()
    );
    assert!(child.try_wait().unwrap().is_none(), "{}", s.stderr());
    assert_eq!(fs::read(s.mnt().join("x.json")).unwrap(), b"[1]");
    assert!(stop(&mut child, libc::SIGTERM).success());
    assert!(!is_mounted(&s.mnt()));
}

#[test]
fn sighup_makes_a_daemon_reopen_its_rotated_log_file_and_keep_serving() {
    if !require_fuse() {
        return;
    }
    let s = Scene::new();
    write_file(&s.backing().join("x.json"), b"[2]");
    s.mount_daemon(&[]);
    let log = s.home().state_home().join("cachetta/cachetta.log");
    let rotated = log.with_extension("log.1");
    // logrotate without copytruncate: rename, then SIGHUP.
    fs::rename(&log, &rotated).unwrap();
    let pids = s.daemon_pids();
    assert_eq!(pids.len(), 1, "daemons: {pids:?}");
    signal(pids[0], libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || s
            .log()
            .contains("reopened the log file")),
        "no new log file; rotated one:\n{}",
        fs::read_to_string(&rotated).unwrap_or_default()
    );
    assert_eq!(fs::read(s.mnt().join("x.json")).unwrap(), b"[2]");
    s.unmount();
    let old = fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("ready") && !old.contains("unmounted"), "{old}");
    let new = s.log();
    assert!(new.contains("unmounted") && !new.contains("ready"), "{new}");
}
