//! Child processes of a test: spawning without publishing another test's writes (the
//! [`forking`] lock), waiting with a timeout, signalling, and whether a pid still runs.

use std::fs;
use std::io::{self, Read};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::STOP_TIMEOUT;

/// How long a command that ends by itself (`cachetta gc`, a refused mount, `mount --daemon`,
/// `unmount`, a shell one-liner) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Forking copies every open descriptor of this process, and the child's `exec` closes the
/// copies: a close that, by SPEC §3, publishes what a writer in another test thread has
/// staged. Every spawn holds `forking()` (use [`spawn`] or [`output`]); a test that keeps a
/// written entry open without closing it holds `no_forks()` meanwhile (after its own
/// `start()`). One lock for the whole test binary: the tests of every module share it.
static FORKS: RwLock<()> = RwLock::new(());

pub fn forking() -> RwLockReadGuard<'static, ()> {
    FORKS.read().unwrap_or_else(|e| e.into_inner())
}

pub fn no_forks() -> RwLockWriteGuard<'static, ()> {
    FORKS.write().unwrap_or_else(|e| e.into_inner())
}

/// `cmd.spawn()` while holding [`forking`].
#[track_caller]
pub fn spawn(cmd: &mut Command) -> Child {
    let _fork = forking();
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()))
}

/// Run `cmd` to its end with stdin empty and stdout and stderr captured, spawned while holding
/// [`forking`]; killed (and the test failed) after [`COMMAND_TIMEOUT`].
#[track_caller]
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    wait_output(spawn(cmd), COMMAND_TIMEOUT)
}

/// Wait for `child` to exit, killing it after `timeout`; its stdout and stderr must be piped.
#[track_caller]
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

fn read_all(r: Option<&mut impl Read>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(r) = r {
        let _ = r.read_to_end(&mut buf);
    }
    buf
}

/// The child's exit status, or `None` if it still runs after `timeout`.
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
        panic!("process still running {STOP_TIMEOUT:?} after signal {sig}; killed it")
    })
}

pub fn signal(pid: libc::pid_t, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) };
}

/// Whether `pid` runs. A zombie (dead, not yet reaped by its parent; an orphan may linger so
/// until the container's init reaps it, and some never do) runs nothing, so it does not.
pub fn alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists; it sends nothing.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
    }
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S ...`: the state follows the last `)`.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// Whether no live process has this pid (see [`alive`]).
pub fn process_gone(pid: libc::pid_t) -> bool {
    !alive(pid)
}

/// The pid a command wrote to `path` (`echo $! > path`), once it is there in full.
pub fn pid_in(path: &std::path::Path) -> Option<libc::pid_t> {
    let text = fs::read_to_string(path).ok()?;
    let text = text.strip_suffix('\n')?;
    text.parse().ok()
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
