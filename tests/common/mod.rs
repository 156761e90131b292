//! Real-mount test harness: a `cachetta mount` daemon over a fresh temp dir, unmounted on drop.
//!
//! Every mount test starts with `if !require_fuse() { return; }`, builds a [`Mount`], and
//! asserts what a user of the mountpoint sees. Ages are made with `utimensat` on the backing
//! file, never by sleeping. Nothing here knows the daemon's internals.

#![allow(dead_code)]

use std::ffi::{CString, OsStr, OsString};
use std::fmt::Debug;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::IntoRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

/// How long the daemon gets to show up in `/proc/self/mountinfo`.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the daemon gets to exit after a signal before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);

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
    // Declared last so it is removed after `Drop::drop` has unmounted.
    _dir: TempDir,
}

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
        }
    }
}

impl MountBuilder {
    /// Write `toml` to `ROOT/config.toml` and pass `--config` with it.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_owned());
        self
    }

    /// Extra arguments after `mount MNT --backing DIR [--config FILE]`.
    /// An environment variable for the daemon (e.g. `CACHETTA_PASSTHROUGH=0`).
    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((name.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    pub fn args<S: AsRef<OsStr>>(mut self, args: &[S]) -> Self {
        self.args
            .extend(args.iter().map(|a| a.as_ref().to_os_string()));
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
        set_path_mtime(&path, SystemTime::now() - age).expect("set mtime");
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
        argv.extend(self.args);
        let mount = Mount {
            mnt: self.mnt,
            backing: self.backing,
            root: self.root,
            config_path,
            stderr_path,
            argv,
            env: self.env,
            child: None,
            _dir: self.dir,
        };
        let child = mount.spawn_daemon();
        (mount, child)
    }
}

impl Mount {
    /// Start the daemon process (its stderr appends to `daemon.stderr`).
    fn spawn_daemon(&self) -> Child {
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .expect("open stderr file");
        let stdout = File::create(self.root.join("daemon.stdout")).expect("create stdout file");
        let xdg = self.root.join("xdg");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cachetta"));
        cmd.args(&self.argv)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // Keep the developer's own config, cache and state out of the test.
            .env("XDG_CONFIG_HOME", xdg.join("config"))
            .env("XDG_CACHE_HOME", xdg.join("cache"))
            .env("XDG_STATE_HOME", xdg.join("state"))
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let _fork = forking();
        cmd.spawn().expect("spawn cachetta mount")
    }

    /// Start the daemon again over the same mountpoint and backing dir (after it exited or was
    /// killed) and wait until it answers.
    #[track_caller]
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        self.child = Some(self.spawn_daemon());
        // A dead mount left by a killed daemon answers ENOTCONN until the new one replaces it.
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        let dead =
            |mnt: &Path| fs::metadata(mnt).is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN));
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
        set_path_mtime(&self.backing_path(rel), time).expect("utimensat on backing file");
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

    /// Sorted names in a directory of the backing dir. Panics on error.
    pub fn list_backing(&self, rel: impl AsRef<Path>) -> Vec<OsString> {
        list_dir(&self.backing_path(rel))
    }

    /// Run `sh -c script` with the mount root as working directory.
    pub fn sh(&self, script: &str) -> Output {
        self.run("sh", &["-c", script])
    }

    /// Run a program with the mount root as working directory, capturing its output.
    pub fn run<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> Output {
        let child = {
            let _fork = forking();
            Command::new(program)
                .args(args)
                .current_dir(&self.mnt)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("run {program}: {e}"))
        };
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"))
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

/// The mountinfo entries for `path`: `(mount point, filesystem type)`, unescaped.
fn mounts_at(path: &Path) -> Vec<String> {
    let info = fs::read("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let want = path.as_os_str().as_bytes();
    let mut types = Vec::new();
    for line in info.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        if unescape_mountinfo(point) == want {
            types.push(right.split(' ').next().unwrap_or("").to_owned());
        }
    }
    types
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d[0] <= b'3' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Whether anything is mounted at `path`.
pub fn is_mounted(path: &Path) -> bool {
    !mounts_at(path).is_empty()
}

/// Whether a FUSE filesystem is mounted at `path`.
pub fn is_fuse_mount(path: &Path) -> bool {
    mounts_at(path).iter().any(|t| t.starts_with("fuse"))
}

/// Lazily detach whatever is mounted at `path` (also works for a dead FUSE mount).
pub fn force_unmount(path: &Path) {
    let c = cstring(path);
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        eprintln!(
            "umount2({}, MNT_DETACH) failed: {}",
            path.display(),
            io::Error::last_os_error()
        );
    }
}

/// Abort the FUSE connection mounted at `path` through the fusectl filesystem: every request
/// waiting on it fails with `ENOTCONN`. The last resort for a hung daemon, so a test fails
/// instead of hanging. Returns whether an abort was written.
pub fn abort_connection(path: &Path) -> bool {
    let Some(minor) = mount_minor(path) else {
        return false;
    };
    let control = Path::new("/sys/fs/fuse/connections");
    if !control.join(minor.to_string()).exists() {
        let _ = Command::new("mount")
            .args(["-t", "fusectl", "none"])
            .arg(control)
            .status();
    }
    fs::write(control.join(minor.to_string()).join("abort"), "1").is_ok()
}

/// The device minor of the filesystem mounted at `path` (the `0:N` field of mountinfo).
fn mount_minor(path: &Path) -> Option<u32> {
    let info = fs::read("/proc/self/mountinfo").ok()?;
    let want = path.as_os_str().as_bytes();
    info.split(|&b| b == b'\n').find_map(|line| {
        let line = String::from_utf8_lossy(line);
        let fields: Vec<&str> = line.split(' ').collect();
        let (dev, point) = (fields.get(2)?, fields.get(4)?);
        if unescape_mountinfo(point) != want {
            return None;
        }
        dev.strip_prefix("0:")?.parse().ok()
    })
}

pub fn cstring(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

/// Create parents and write `bytes` to `path` (plain `fs::write`, no mount involved).
#[track_caller]
pub fn write_file(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create parent dirs");
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Set a file's mtime with `utimensat` (atime untouched). Works on any path, mounted or not.
pub fn set_path_mtime(path: &Path, time: SystemTime) -> io::Result<()> {
    let since = time.duration_since(UNIX_EPOCH).expect("time after 1970");
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: since.as_secs() as libc::time_t,
            tv_nsec: since.subsec_nanos() as libc::c_long,
        },
    ];
    let c = cstring(path);
    // SAFETY: `c` is a valid C string and `times` two timespecs, both alive for the call.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The errno of a failed call; panics (showing the value) if it succeeded.
#[track_caller]
pub fn errno_of<T: Debug>(result: io::Result<T>) -> i32 {
    match result {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("expected an OS error, got {e}")),
    }
}

/// Turn a libc return value (`-1` = failure) into an `io::Result`.
pub fn check_rc(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Close a file and report what `close(2)` says (dropping a `File` ignores close errors,
/// and cachetta validates JSON at close).
pub fn close_fd(file: File) -> io::Result<()> {
    let fd = file.into_raw_fd();
    // SAFETY: we own `fd` (taken from the File) and close it exactly once.
    check_rc(unsafe { libc::close(fd) }).map(|_| ())
}

/// Sorted entry names of a directory. Panics on error.
#[track_caller]
pub fn list_dir(path: &Path) -> Vec<OsString> {
    let mut names: Vec<OsString> = fs::read_dir(path)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", path.display()))
        .map(|e| e.expect("read_dir entry").file_name())
        .collect();
    names.sort();
    names
}

/// `names` as OsStrings, sorted, for comparing with [`list_dir`].
pub fn names(names: &[&str]) -> Vec<OsString> {
    let mut v: Vec<OsString> = names.iter().map(OsString::from).collect();
    v.sort();
    v
}

/// Poll `cond` every 20 ms until it holds or `timeout` passes; returns the last answer.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

/// Sleep until the wall clock reaches `t` (returns at once if it already has).
pub fn sleep_until(t: SystemTime) {
    if let Ok(left) = t.duration_since(SystemTime::now()) {
        thread::sleep(left);
    }
}

/// Assert a command succeeded, showing its output if not.
#[track_caller]
pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed with {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Assert two byte strings are equal, showing them as text when they differ.
#[track_caller]
pub fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got == want,
        "{what}: got {:?}, want {:?}",
        String::from_utf8_lossy(&got[..got.len().min(300)]),
        String::from_utf8_lossy(&want[..want.len().min(300)])
    );
}

/// Whether `text` names line `line`: `line 3`, `line: 3` or `file:3:`-style.
pub fn mentions_line(text: &str, line: u32) -> bool {
    let n = line.to_string();
    let followed_by_non_digit = |rest: &str| !rest.starts_with(|c: char| c.is_ascii_digit());
    let lower = text.to_lowercase();
    for prefix in ["line ", "line: ", "line=", ":"] {
        let pat = format!("{prefix}{n}");
        let mut from = 0;
        while let Some(pos) = lower[from..].find(&pat) {
            let end = from + pos + pat.len();
            let preceded_ok =
                prefix != ":" || !lower[..from + pos].ends_with(|c: char| c.is_ascii_digit());
            if followed_by_non_digit(&lower[end..]) && preceded_ok {
                return true;
            }
            from = end;
        }
    }
    false
}

pub const HOUR: Duration = Duration::from_secs(3600);
pub const MINUTE: Duration = Duration::from_secs(60);

/// Forking copies every open descriptor of this process, and the child's `exec` closes the
/// copies: a close that, by SPEC §3, publishes what a writer in another test thread has
/// staged. Every spawn here holds `forking()`; a test that keeps a written entry open
/// without closing it holds `no_forks()` meanwhile (after its own `start()`).
static FORKS: std::sync::RwLock<()> = std::sync::RwLock::new(());

pub fn forking() -> std::sync::RwLockReadGuard<'static, ()> {
    FORKS.read().unwrap_or_else(|e| e.into_inner())
}

pub fn no_forks() -> std::sync::RwLockWriteGuard<'static, ()> {
    FORKS.write().unwrap_or_else(|e| e.into_inner())
}

/// The entry reads back as `bytes` both through the mount and in the backing dir.
#[track_caller]
pub fn assert_entry(m: &Mount, rel: &str, bytes: &[u8]) {
    assert_eq!(
        fs::read(m.path(rel)).unwrap(),
        bytes,
        "{rel} through the mount"
    );
    assert_eq!(
        fs::read(m.backing_path(rel)).unwrap(),
        bytes,
        "{rel} in backing dir"
    );
}
