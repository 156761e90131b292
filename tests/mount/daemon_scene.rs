//! The harness of the daemon tests: a [`Scene`] is a temp dir in which a test starts
//! `cachetta mount` itself (with `--daemon`, in the foreground, twice on one mountpoint).
//! Dropping it ends every cachetta process whose command line names the scene's directory (by
//! PID) and detaches every mount it made, even when the test panicked.

#![allow(dead_code)]

use std::cell::RefCell;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use tempfile::TempDir;

/// How long a one-shot command (a refused mount, `mount --daemon`, `unmount`) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Scene {
    pub root: PathBuf,
    /// Paths that may end up mounted (mountpoints, a backing dir bound read-only).
    mount_paths: RefCell<Vec<PathBuf>>,
    _dir: TempDir,
}

impl Scene {
    pub fn new() -> Scene {
        let dir = tempfile::tempdir().expect("create temp dir");
        let root = dir.path().canonicalize().expect("canonicalize temp dir");
        Scene {
            mount_paths: RefCell::new(vec![root.join("mnt"), root.join("backing")]),
            root,
            _dir: dir,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn mnt(&self) -> PathBuf {
        self.path("mnt")
    }

    pub fn backing(&self) -> PathBuf {
        self.path("backing")
    }

    /// The default `--daemon` log file, under the scene's `XDG_STATE_HOME`.
    pub fn log(&self) -> String {
        fs::read_to_string(self.path("xdg/state/cachetta/cachetta.log")).unwrap_or_default()
    }

    pub fn watch_mount(&self, path: PathBuf) {
        self.mount_paths.borrow_mut().push(path);
    }

    /// `cachetta ARGS` with the XDG dirs inside the scene and no systemd variables.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cachetta"));
        cmd.args(args)
            .env("XDG_CONFIG_HOME", self.path("xdg/config"))
            .env("XDG_CACHE_HOME", self.path("xdg/cache"))
            .env("XDG_STATE_HOME", self.path("xdg/state"))
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .env_remove("CACHETTA_LOG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// `cachetta mount MNT --backing BACKING EXTRA...`, as arguments.
    pub fn mount_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec![
            "mount".to_string(),
            self.mnt().display().to_string(),
            "--backing".to_string(),
            self.backing().display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Run a command that must end by itself (within [`COMMAND_TIMEOUT`]).
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cachetta");
        wait_output(child, COMMAND_TIMEOUT)
    }

    /// `cachetta mount --daemon ...`: must return 0, with the mount answering.
    #[track_caller]
    pub fn mount_daemon(&self, extra: &[&str]) {
        let mut args = self.mount_args(extra);
        args.insert(1, "--daemon".into());
        let out = self.run(&args);
        if !out.status.success() {
            panic!(
                "mount --daemon failed with {}\nstderr: {}\nlog:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
    }

    /// `cachetta unmount MNT`, then wait for the daemon to exit by itself.
    #[track_caller]
    pub fn unmount(&self) {
        let out = self.run(&["unmount".to_string(), self.mnt().display().to_string()]);
        assert_success("cachetta unmount", &out);
        assert!(
            eventually(STOP_TIMEOUT, || self.daemon_pids().is_empty()),
            "the daemon did not exit after its mount was unmounted; log:\n{}",
            self.log()
        );
    }

    /// Start `cachetta mount` in the foreground, stderr to `ROOT/daemon.stderr`; returns once
    /// the mount answers.
    #[track_caller]
    pub fn foreground(&self, extra: &[&str], env: &[(&str, &Path)]) -> Child {
        let mut cmd = self.command(&self.mount_args(extra));
        for (name, value) in env {
            cmd.env(name, value);
        }
        let stderr = File::create(self.path("daemon.stderr")).expect("create stderr file");
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn cachetta mount");
        let up = eventually(MOUNT_TIMEOUT, || {
            is_fuse_mount(&self.mnt()) || child.try_wait().ok().flatten().is_some()
        });
        assert!(
            up && is_fuse_mount(&self.mnt()),
            "cachetta mount did not mount; stderr:\n{}",
            self.stderr()
        );
        fs::metadata(self.mnt()).expect("stat of the mount root");
        child
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.path("daemon.stderr")).unwrap_or_default()
    }

    /// Live cachetta processes whose command line names a path in this scene.
    pub fn daemon_pids(&self) -> Vec<libc::pid_t> {
        let root = self.root.as_os_str().as_encoded_bytes();
        let mut pids = Vec::new();
        for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let mut args = cmdline.split(|&b| b == 0);
            let is_cachetta = args.next().is_some_and(|a| a.ends_with(b"cachetta"));
            if is_cachetta && args.any(|a| a.starts_with(root)) && alive(pid) {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let pids = self.daemon_pids();
        for &pid in &pids {
            signal(pid, libc::SIGTERM);
        }
        if !eventually(STOP_TIMEOUT, || self.daemon_pids().is_empty()) {
            for pid in self.daemon_pids() {
                signal(pid, libc::SIGKILL);
            }
        }
        for path in self.mount_paths.borrow().iter() {
            for _ in 0..4 {
                if !is_mounted(path) {
                    break;
                }
                force_unmount(path);
            }
        }
        if thread::panicking() {
            eprintln!(
                "---- scene {} ----\nleft running: {pids:?}\n---- stderr ----\n{}\n---- log ----\n{}\n---- end ----",
                self.root.display(),
                self.stderr(),
                self.log()
            );
        }
    }
}

pub fn signal(pid: libc::pid_t, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) };
}

/// Whether `pid` runs (a zombie, dead but not yet reaped by its new parent, does not).
pub fn alive(pid: libc::pid_t) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

/// Wait for `child` to exit, killing it after `timeout`; its stdout and stderr must be piped.
pub fn wait_output(mut child: Child, timeout: Duration) -> Output {
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let readers = (
        thread::spawn(move || read_all(out.as_mut())),
        thread::spawn(move || read_all(err.as_mut())),
    );
    let status = wait_timeout(&mut child, timeout).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("command still running after {timeout:?}; killed it")
    });
    Output {
        status,
        stdout: readers.0.join().unwrap(),
        stderr: readers.1.join().unwrap(),
    }
}

pub fn read_all(r: Option<&mut impl Read>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(r) = r {
        let _ = r.read_to_end(&mut buf);
    }
    buf
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Send `sig` to a child and wait for it to exit (killing it after [`STOP_TIMEOUT`]).
#[track_caller]
pub fn stop(child: &mut Child, sig: i32) -> ExitStatus {
    signal(child.id() as libc::pid_t, sig);
    wait_timeout(child, STOP_TIMEOUT).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("cachetta mount still running {STOP_TIMEOUT:?} after signal {sig}; killed it")
    })
}

#[track_caller]
pub fn assert_refused(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
}
