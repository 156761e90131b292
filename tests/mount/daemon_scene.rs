//! The harness of the daemon tests: a [`Scene`] is a temp dir in which a test starts
//! `cachetta mount` itself (with `--daemon`, in the foreground, twice on one mountpoint).
//! Dropping it ends every cachetta process whose command line names the scene's directory (by
//! PID) and detaches every mount it made, even when the test panicked.

#![allow(dead_code)]

use std::cell::RefCell;
use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;

use crate::common::*;
use tempfile::TempDir;

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
        self.home().log()
    }

    pub fn watch_mount(&self, path: PathBuf) {
        self.mount_paths.borrow_mut().push(path);
    }

    /// The isolated home every `cachetta` of the scene runs in.
    pub fn home(&self) -> Isolated {
        Isolated::within(&self.root)
    }

    /// `cachetta ARGS` in the scene's isolated home.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        self.home().command(args)
    }

    /// `cachetta mount MNT --backing BACKING EXTRA... --transport T`, as arguments (the
    /// transport tests mount with, unless `extra` names one).
    pub fn mount_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec![
            "mount".to_string(),
            self.mnt().display().to_string(),
            "--backing".to_string(),
            self.backing().display().to_string(),
        ];
        let extra = extra.iter().map(OsString::from).collect();
        args.extend(
            with_test_transport(extra)
                .into_iter()
                .map(|a| a.to_string_lossy().into_owned()),
        );
        args
    }

    /// Run a command that must end by itself (within [`COMMAND_TIMEOUT`]).
    #[track_caller]
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        self.home().run(args)
    }

    /// `cachetta mount --daemon ...`: must return 0, with the mount answering.
    #[track_caller]
    pub fn mount_daemon(&self, extra: &[&str]) {
        self.mount_daemon_env(extra, &[]);
    }

    /// [`Scene::mount_daemon`] with more environment for the daemon.
    #[track_caller]
    pub fn mount_daemon_env(&self, extra: &[&str], env: &[(&str, &str)]) {
        let mut args = self.mount_args(extra);
        args.insert(1, "--daemon".into());
        let mut cmd = self.command(&args);
        cmd.envs(env.iter().copied());
        let out = output(&mut cmd);
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
        let mut child = spawn(cmd.stdout(Stdio::null()).stderr(stderr));
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

#[track_caller]
pub fn assert_refused(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
}
