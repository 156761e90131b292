//! The real-mount harness: a `cachetta mount` daemon over a fresh temp dir under `/tmp`,
//! started through the isolated runner and unmounted on drop.
//!
//! Every mount test starts with `if !require_fuse() { return; }`, builds a [`Mount`], and
//! asserts what a user of the mountpoint sees. Ages are made with [`set_mtime`] on the backing
//! file, never by sleeping. Nothing here knows the daemon's internals.

use std::any::Any;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use tempfile::TempDir;

use super::*;

/// How long the daemon gets to show up in `/proc/self/mountinfo`.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether real FUSE mounts can run here. Without root or `/dev/fuse` the test is skipped,
/// unless `CACHETTA_REQUIRE_FUSE=1` (CI) turns the skip into a failure.
pub fn require_fuse() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let problem = if euid != 0 {
        Some(format!("not running as root (euid {euid})"))
    } else {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .err()
            .map(|e| format!("cannot open /dev/fuse: {e}"))
    };
    let Some(problem) = problem else {
        return true;
    };
    if std::env::var_os("CACHETTA_REQUIRE_FUSE").is_some_and(|v| v == "1") {
        panic!("CACHETTA_REQUIRE_FUSE=1 but real FUSE mounts are unavailable: {problem}");
    }
    eprintln!("skipping: real FUSE mounts unavailable ({problem}); CACHETTA_REQUIRE_FUSE=1 makes this fail");
    false
}

/// The `--transport` every test mount asks for: `CACHETTA_TEST_TRANSPORT`, `classic` unless
/// set. Explicit, so that `enable_uring` (machine-wide, flipped by the uring tests while others
/// run) never decides which transport an unrelated test gets; under `uring` a mount that cannot
/// get its rings fails, as `--transport uring` does.
pub fn test_transport() -> String {
    std::env::var("CACHETTA_TEST_TRANSPORT").unwrap_or_else(|_| "classic".to_owned())
}

/// `extra` (a mount's arguments) with `--transport` [`test_transport`] added, unless it names
/// a transport itself.
pub fn with_test_transport(mut extra: Vec<OsString>) -> Vec<OsString> {
    if !extra
        .iter()
        .any(|a| a.to_str().is_some_and(|a| a.starts_with("--transport")))
    {
        extra.push("--transport".into());
        extra.push(test_transport().into());
    }
    extra
}

/// A running `cachetta mount` over `mnt`, backed by `backing`, both inside one temp dir.
pub struct Mount {
    pub mnt: PathBuf,
    pub backing: PathBuf,
    /// The temp dir holding everything; `root/outside` is a plain directory beside the mount.
    pub root: PathBuf,
    pub config_path: Option<PathBuf>,
    stderr_path: PathBuf,
    /// The daemon's arguments and extra environment, for restarts.
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    child: Option<Child>,
    /// What must outlive the mount (a shared backing dir's guard), dropped after unmounting.
    _held: Vec<Held>,
    // Declared last so it is removed after `Drop::drop` has unmounted.
    _dir: TempDir,
}

/// Something a mount keeps until it is unmounted (see [`MountBuilder::holding`]).
pub type Held = Arc<dyn Any + Send + Sync>;

/// Builds a [`Mount`]: config text, extra flags, and the backing dir's contents before mounting.
pub struct MountBuilder {
    dir: TempDir,
    root: PathBuf,
    mnt: PathBuf,
    backing: PathBuf,
    config: Option<String>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    create_dirs: bool,
    held: Vec<Held>,
    /// Whether `--transport` [`test_transport`] is added (unless the args name one).
    test_transport: bool,
}

impl Mount {
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> MountBuilder {
        let dir = tempfile::tempdir().expect("create temp dir");
        let root = dir.path().canonicalize().expect("canonicalize temp dir");
        fs::create_dir(root.join("outside")).expect("create outside dir");
        MountBuilder {
            mnt: root.join("mnt"),
            backing: root.join("backing"),
            root,
            dir,
            config: None,
            args: Vec::new(),
            env: Vec::new(),
            create_dirs: true,
            held: Vec::new(),
            test_transport: true,
        }
    }
}

impl MountBuilder {
    /// Use `backing` (another mount's backing dir, which must outlive this mount) instead of
    /// `ROOT/backing`: several mounts over one backing dir (SPEC §13).
    pub fn shared_backing(mut self, backing: &Path) -> Self {
        self.backing = backing.to_path_buf();
        self
    }

    /// Keep `guard` until this mount is unmounted: the guard of a backing dir on a shared
    /// filesystem, which two mounts hold and the last one to go removes.
    pub fn holding(mut self, guard: Held) -> Self {
        self.held.push(guard);
        self
    }

    /// Write `toml` to `ROOT/config.toml` and pass `--config` with it.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_owned());
        self
    }

    /// An environment variable for the daemon (e.g. `CACHETTA_PASSTHROUGH=0`).
    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((name.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Extra arguments after `mount MNT --backing DIR [--config FILE]`.
    pub fn args<S: AsRef<OsStr>>(mut self, args: &[S]) -> Self {
        self.args
            .extend(args.iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// No `--transport` flag: the config file's `transport`, or the default, decides.
    pub fn without_test_transport(mut self) -> Self {
        self.test_transport = false;
        self
    }

    /// Use a mountpoint and backing dir (with missing parents) that do not exist yet.
    /// Call before any `backing_*` method.
    pub fn missing_dirs(mut self) -> Self {
        self.mnt = self.root.join("missing/mnt");
        self.backing = self.root.join("missing/cache/backing");
        self.create_dirs = false;
        self
    }

    pub fn backing(&self) -> &Path {
        &self.backing
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Put a file in the backing dir before mounting (parents created, mtime now).
    pub fn backing_file(self, rel: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> Self {
        write_file(&self.backing.join(rel), bytes.as_ref());
        self
    }

    /// Put a file in the backing dir before mounting, with its mtime `age` in the past.
    pub fn backing_file_aged(
        self,
        rel: impl AsRef<Path>,
        bytes: impl AsRef<[u8]>,
        age: Duration,
    ) -> Self {
        let path = self.backing.join(rel);
        write_file(&path, bytes.as_ref());
        set_mtime(&path, SystemTime::now() - age).expect("set mtime");
        self
    }

    /// Anything else the backing dir needs before mounting (symlinks, FIFOs, hard links...).
    /// `f` gets the backing dir, which exists by then.
    pub fn prepare(self, f: impl FnOnce(&Path)) -> Self {
        fs::create_dir_all(&self.backing).expect("create backing dir");
        f(&self.backing);
        self
    }

    /// Spawn the daemon and wait until `mnt` is a FUSE mount that answers `stat`.
    #[track_caller]
    pub fn start(self) -> Mount {
        let (mut mount, child) = self.spawn();
        mount.child = Some(child);
        mount.wait_until_mounted();
        mount
    }

    /// Spawn the daemon when it is expected to refuse to run: waits for it to exit (10 s) and
    /// returns its status and stderr. Panics (after cleaning up) if it mounted instead.
    #[track_caller]
    pub fn run_expecting_exit(self) -> (ExitStatus, String) {
        let (mut mount, child) = self.spawn();
        mount.child = Some(child);
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            let child = mount.child.as_mut().expect("child");
            if let Some(status) = child.try_wait().expect("try_wait") {
                mount.child = None;
                assert!(
                    !is_mounted(&mount.mnt),
                    "daemon exited with {status} but left {} mounted",
                    mount.mnt.display()
                );
                return (status, mount.stderr());
            }
            if is_mounted(&mount.mnt) {
                panic!(
                    "expected cachetta mount to refuse and exit, but it mounted {}",
                    mount.mnt.display()
                );
            }
            if Instant::now() > deadline {
                panic!("expected cachetta mount to exit within {MOUNT_TIMEOUT:?}, it kept running");
            }
            thread::sleep(POLL);
        }
    }

    fn spawn(self) -> (Mount, Child) {
        if self.create_dirs {
            fs::create_dir_all(&self.mnt).expect("create mountpoint");
            fs::create_dir_all(&self.backing).expect("create backing dir");
        }
        let stderr_path = self.root.join("daemon.stderr");
        let mut argv: Vec<OsString> = vec![
            "mount".into(),
            self.mnt.clone().into(),
            "--backing".into(),
            self.backing.clone().into(),
        ];
        let config_path = self.config.as_ref().map(|text| {
            let path = self.root.join("config.toml");
            fs::write(&path, text).expect("write config");
            argv.push("--config".into());
            argv.push(path.clone().into());
            path
        });
        if self.test_transport {
            argv.extend(with_test_transport(self.args));
        } else {
            argv.extend(self.args);
        }
        let mount = Mount {
            mnt: self.mnt,
            backing: self.backing,
            root: self.root,
            config_path,
            stderr_path,
            argv,
            env: self.env,
            child: None,
            _held: self.held,
            _dir: self.dir,
        };
        let child = mount.spawn_daemon();
        (mount, child)
    }
}

impl Mount {
    /// Start the daemon process (its stderr appends to `daemon.stderr`), in the isolated home
    /// `ROOT/home`, `ROOT/xdg`.
    fn spawn_daemon(&self) -> Child {
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .expect("open stderr file");
        let stdout = File::create(self.root.join("daemon.stdout")).expect("create stdout file");
        let mut cmd = self.home().command(&self.argv);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(stdout)
            .stderr(stderr);
        spawn(&mut cmd)
    }

    /// The isolated home the daemon and [`Mount::cachetta`] run in.
    pub fn home(&self) -> Isolated {
        Isolated::within(&self.root)
    }

    /// Run `cachetta ARGS` (e.g. `gc --backing ...`) to its end in the mount's isolated home.
    #[track_caller]
    pub fn cachetta<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.home().run(args)
    }

    /// Start the daemon again over the same mountpoint and backing dir (after it exited or was
    /// killed) and wait until it answers.
    #[track_caller]
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        self.child = Some(self.spawn_daemon());
        // A dead mount left by a killed daemon answers ENOTCONN (or the like:
        // `is_dead_mount_errno`) until the new one replaces it.
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        let dead = |mnt: &Path| {
            fs::metadata(mnt).is_err_and(|e| e.raw_os_error().is_some_and(is_dead_mount_errno))
        };
        while dead(&self.mnt) && Instant::now() < deadline {
            thread::sleep(POLL);
        }
        self.wait_until_mounted();
    }

    /// The daemon's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Mount {
    #[track_caller]
    fn wait_until_mounted(&mut self) {
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        while !is_fuse_mount(&self.mnt) {
            let child = self.child.as_mut().expect("child");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                panic!(
                    "cachetta mount exited with {status} before mounting {}; stderr:\n{}",
                    self.mnt.display(),
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not become a FUSE mount within {MOUNT_TIMEOUT:?}; stderr:\n{}",
                    self.mnt.display(),
                    self.stderr()
                );
            }
            thread::sleep(POLL);
        }
        // The mount exists; make sure the daemon answers before the test starts. A hung
        // daemon leaves the probe thread blocked until Drop kills it.
        let (tx, rx) = mpsc::channel();
        let mnt = self.mnt.clone();
        thread::spawn(move || {
            let _ = tx.send(fs::metadata(&mnt).map(|m| m.is_dir()));
        });
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => panic!("mount root {} is not a directory", self.mnt.display()),
            Ok(Err(e)) => panic!("stat of mount root {} failed: {e}", self.mnt.display()),
            Err(_) => panic!("stat of mount root did not answer within {MOUNT_TIMEOUT:?}"),
        }
    }

    /// The daemon's stderr so far.
    pub fn stderr(&self) -> String {
        fs::read(&self.stderr_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.stderr_path.display()))
    }

    /// Send `signal` and wait up to [`STOP_TIMEOUT`] for the daemon to exit. `None` if it is
    /// still running (it is left running; Drop kills it).
    pub fn signal_and_wait(&mut self, signal: i32) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        if let Some(status) = child.try_wait().expect("try_wait") {
            self.child = None;
            return Some(status);
        }
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill has no memory-safety preconditions; the child is unreaped, so the PID
        // still names it.
        unsafe { libc::kill(pid, signal) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    /// SIGTERM the daemon and return its exit status; panics if it does not exit in time.
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_with(libc::SIGTERM)
    }

    pub fn stop_with(&mut self, signal: i32) -> ExitStatus {
        match self.signal_and_wait(signal) {
            Some(status) => status,
            None => {
                panic!("cachetta mount did not exit within {STOP_TIMEOUT:?} of signal {signal}")
            }
        }
    }

    /// Path of `rel` through the mount.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Path of `rel` in the backing dir.
    pub fn backing_path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.backing.join(rel)
    }

    /// Path of `rel` in `ROOT/outside`, a plain directory outside mount and backing dir.
    pub fn outside_path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join("outside").join(rel)
    }

    /// Write a file straight into the backing dir (parents created).
    pub fn write_backing(&self, rel: impl AsRef<Path>, bytes: impl AsRef<[u8]>) {
        write_file(&self.backing_path(rel), bytes.as_ref());
    }

    /// Set the backing file's mtime to `age` ago.
    pub fn set_mtime_ago(&self, rel: impl AsRef<Path>, age: Duration) {
        self.set_mtime(rel, SystemTime::now() - age);
    }

    /// Set the backing file's mtime.
    pub fn set_mtime(&self, rel: impl AsRef<Path>, time: SystemTime) {
        set_mtime(&self.backing_path(rel), time).expect("utimensat on backing file");
    }

    /// Mtime of the backing file.
    pub fn backing_mtime(&self, rel: impl AsRef<Path>) -> SystemTime {
        fs::symlink_metadata(self.backing_path(rel))
            .and_then(|m| m.modified())
            .expect("mtime of backing file")
    }

    /// Sorted names in a directory of the mount (`""` is the root). Panics on error.
    pub fn list(&self, rel: impl AsRef<Path>) -> Vec<OsString> {
        list_dir(&self.path(rel))
    }

    /// Sorted names in a directory of the backing dir, without cachetta's own `.cachetta/` at
    /// its root (the change journal is there once the mount has changed anything). Panics on
    /// error.
    pub fn list_backing(&self, rel: impl AsRef<Path>) -> Vec<OsString> {
        let mut names = list_dir(&self.backing_path(&rel));
        if rel.as_ref().as_os_str().is_empty() {
            names.retain(|n| n != ".cachetta");
        }
        names
    }

    /// Run `sh -c script` with the mount root as working directory.
    pub fn sh(&self, script: &str) -> Output {
        self.run("sh", &["-c", script])
    }

    /// Run a program with the mount root as working directory, capturing its output.
    #[track_caller]
    pub fn run<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> Output {
        output(Command::new(program).args(args).current_dir(&self.mnt))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let mut problems = Vec::new();
        if self.child.is_some() {
            match self.signal_and_wait(libc::SIGTERM) {
                Some(status) if !status.success() => {
                    problems.push(format!("daemon exited with {status} after SIGTERM"))
                }
                Some(_) => {}
                None => {
                    problems.push(format!(
                        "daemon still running {STOP_TIMEOUT:?} after SIGTERM; sent SIGKILL"
                    ));
                    if let Some(mut child) = self.child.take() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                }
            }
        }
        if is_mounted(&self.mnt) {
            problems.push("mountpoint still mounted after the daemon exited; detached".into());
            force_unmount(&self.mnt);
        }
        if thread::panicking() || !problems.is_empty() {
            eprintln!(
                "---- cachetta mount {} ----\n{}\n---- daemon stderr ----\n{}\n---- end ----",
                self.mnt.display(),
                problems.join("\n"),
                self.stderr()
            );
        }
    }
}

/// `n` `stat`s of `dir/k0.json` … `dir/k{n-1}.json` through `m`, one thread each, all let go
/// at once when this returns: whether each found its name.
pub fn stats_at_once(m: &Mount, dir: &str, n: usize) -> Vec<thread::JoinHandle<bool>> {
    stats_at_once_after(m, dir, n, || {})
}

/// [`stats_at_once`], each thread running `setup` first (pinning itself to a CPU, say).
pub fn stats_at_once_after(
    m: &Mount,
    dir: &str,
    n: usize,
    setup: fn(),
) -> Vec<thread::JoinHandle<bool>> {
    let start = Arc::new(std::sync::Barrier::new(n + 1));
    let lookups = (0..n)
        .map(|i| {
            let (path, start) = (m.path(format!("{dir}/k{i}.json")), start.clone());
            thread::spawn(move || {
                setup();
                start.wait();
                fs::metadata(path).is_ok()
            })
        })
        .collect();
    start.wait();
    lookups
}

/// The config of a read-through flood: keys `flood/{n}.json` are filled by `command` on a miss,
/// two commands at a time, each waited for at most `timeout`.
pub fn flood_config(command: &str, timeout: &str) -> String {
    format!(
        "max_refreshes = 2\n[[rule]]\nmatch = \"flood/{{n}}.json\"\nfill_on_miss = true\n\
         refresh = \"{command}\"\nrefresh_timeout = \"{timeout}\"\n"
    )
}
