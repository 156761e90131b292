//! Running one shell command for a refresh: `/bin/sh -c` in its own process group, output
//! captured with limits, a deadline, and the whole group killed and reaped at the end.
//!
//! Knows nothing of keys, rules or the backing dir's contents; [`super`] decides what to run.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags, Signal};

/// How much of a command's stderr is kept for the log and the error line.
pub const STDERR_KEPT: usize = 4096;

/// The kill switch of one refresh, shared between the thread running it and whoever may
/// cancel it (`rm`, unmount).
///
/// `pgid` is set only while the process group leader is alive or an unreaped zombie, so its
/// id cannot have been reused by an unrelated process when a signal is sent to it.
#[derive(Debug, Default)]
pub struct Control {
    cancelled: bool,
    started: bool,
    pgid: Option<Pid>,
}

impl Control {
    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }

    /// Claim the refresh for a worker: false when it was cancelled before it could start.
    pub fn start(&mut self) -> bool {
        self.started = !self.cancelled;
        self.started
    }

    /// Mark the refresh cancelled and kill the process group it is running, if any. Whether a
    /// worker had started it.
    pub fn cancel(&mut self) -> bool {
        self.cancelled = true;
        if let Some(pgid) = self.pgid {
            kill_group(pgid);
        }
        self.started
    }
}

/// What to run.
#[derive(Debug)]
pub struct Invocation<'a> {
    pub command: &'a str,
    pub cwd: &'a Path,
    /// Added to the daemon's own environment.
    pub env: &'a [(OsString, OsString)],
    /// The command's stdin; `None` is `/dev/null`.
    pub stdin: Option<File>,
    /// Where stdout goes, streamed (never held in memory). `None`: `/dev/null`.
    pub stdout: Option<Sink>,
    pub timeout: Duration,
}

/// A file that takes a command's stdout as it comes, up to `limit` bytes; past that the command
/// is killed ([`Ended::OutputTooLarge`]).
#[derive(Debug)]
pub struct Sink {
    pub file: File,
    pub limit: u64,
}

/// How a command ended.
#[derive(Debug)]
pub enum Ended {
    /// It exited (or was killed by a signal not ours) before the deadline.
    Exited(ExitStatus),
    TimedOut,
    /// It wrote more than the stdout limit; it was killed.
    OutputTooLarge,
    /// The refresh was cancelled before the command could start.
    Cancelled,
}

#[derive(Debug)]
pub struct Finished {
    pub ended: Ended,
    /// How many bytes of stdout went to the sink.
    pub stdout_bytes: u64,
    /// The first [`STDERR_KEPT`] bytes of stderr.
    pub stderr: Vec<u8>,
}

/// Run a command to its end. Whatever happens, when this returns no process of the command's
/// group is left running and the shell has been reaped: when the shell exits, anything it left
/// behind in its group is killed too, so that nothing holds the output pipe open or outlives
/// the refresh. (A command that really wants a long-lived process can `setsid` it; the output
/// is what is in the pipe when the shell has exited, whoever still holds the pipe open.)
pub fn run(inv: Invocation<'_>, control: &Mutex<Control>) -> io::Result<Finished> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(inv.command)
        .current_dir(inv.cwd)
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .stdin(inv.stdin.map_or_else(Stdio::null, Stdio::from))
        .stdout(if inv.stdout.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .process_group(0);

    // Spawning under the control lock: a cancel either comes first (and nothing starts) or
    // finds the group id to kill.
    let mut child = {
        let mut ctl = control.lock();
        if ctl.cancelled {
            return Ok(Finished {
                ended: Ended::Cancelled,
                stdout_bytes: 0,
                stderr: Vec::new(),
            });
        }
        let child = cmd.spawn()?;
        ctl.pgid = Some(Pid::from_child(&child));
        child
    };
    let pgid = Pid::from_child(&child);

    let result = watch(&mut child, pgid, inv.stdout, inv.timeout);
    // Whatever `watch` saw, make sure the group is gone, then reap the shell. The group id is
    // forgotten before reaping, so no one can signal a reused id afterwards.
    kill_group(pgid);
    control.lock().pgid = None;
    let status = child.wait();
    let (ended, stdout_bytes, stderr) = result?;
    let ended = match ended {
        Some(ended) => ended,
        None => Ended::Exited(status?),
    };
    Ok(Finished {
        ended,
        stdout_bytes,
        stderr,
    })
}

/// Capture the pipes until the shell exited and the pipes are drained (closed, or empty), or
/// the deadline passed, or stdout went past its limit. `None` means the shell exited in time.
///
/// Waits with `poll` on a pidfd and the two pipes at once: no signal handler, no sleep loop, and
/// the shell stays unreaped (so its group id stays ours) until [`run`] reaps it.
fn watch(
    child: &mut Child,
    pgid: Pid,
    mut sink: Option<Sink>,
    timeout: Duration,
) -> io::Result<(Option<Ended>, u64, Vec<u8>)> {
    let deadline = Instant::now()
        .checked_add(timeout)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(3_155_760_000));
    let pidfd: OwnedFd = rustix::process::pidfd_open(pgid, PidfdFlags::empty())?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let mut stdout = 0u64;
    let mut stderr = Vec::new();
    let mut exited = false;
    let mut chunk = vec![0u8; 64 * 1024];

    loop {
        if exited && out.is_none() && err.is_none() {
            return Ok((None, stdout, stderr));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok((Some(Ended::TimedOut), stdout, stderr));
        }
        let (pid_ready, out_ready, err_ready) = {
            let mut fds = Vec::with_capacity(3);
            let wanted = PollFlags::IN;
            if !exited {
                fds.push(PollFd::new(&pidfd, wanted));
            }
            if let Some(out) = &out {
                fds.push(PollFd::from_borrowed_fd(out.as_fd(), wanted));
            }
            if let Some(err) = &err {
                fds.push(PollFd::from_borrowed_fd(err.as_fd(), wanted));
            }
            // Once the shell is gone (and its group killed), what is left in the pipes is read
            // without waiting: a process that escaped the group (`setsid`) may hold them open
            // for ever, and its later output is not the command's.
            let timeout = if exited {
                Timespec::default()
            } else {
                Timespec::try_from(left).unwrap_or(Timespec {
                    tv_sec: i64::MAX,
                    tv_nsec: 0,
                })
            };
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            if exited && fds.iter().all(|fd| fd.revents().is_empty()) {
                return Ok((None, stdout, stderr));
            }
            let mut ready = fds.iter().map(|fd| !fd.revents().is_empty());
            let pid_ready = !exited && ready.next().unwrap_or(false);
            let out_ready = out.is_some() && ready.next().unwrap_or(false);
            let err_ready = err.is_some() && ready.next().unwrap_or(false);
            (pid_ready, out_ready, err_ready)
        };
        if pid_ready {
            exited = true;
            // Leftovers of the shell would keep the pipes open; they go with it.
            kill_group(pgid);
        }
        // One read per readiness, so a flooding pipe cannot starve the deadline or the other.
        if out_ready {
            if let (Some(pipe), Some(sink)) = (&mut out, &mut sink) {
                match read_chunk(pipe, &mut chunk)? {
                    0 => out = None,
                    n => {
                        stdout += n as u64;
                        if stdout > sink.limit {
                            return Ok((Some(Ended::OutputTooLarge), stdout, stderr));
                        }
                        sink.file.write_all(&chunk[..n])?;
                    }
                }
            }
        }
        if err_ready {
            if let Some(pipe) = &mut err {
                if read_some(pipe, &mut stderr, STDERR_KEPT)? {
                    err = None;
                }
            }
        }
    }
}

/// One `read` from a pipe known to be readable; 0 at end of file.
fn read_chunk(pipe: &mut impl Read, chunk: &mut [u8]) -> io::Result<usize> {
    loop {
        match pipe.read(chunk) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// One `read` from a pipe known to be readable, keeping at most `keep` bytes in `buf` and
/// dropping the rest. True at end of file.
fn read_some(pipe: &mut impl Read, buf: &mut Vec<u8>, keep: usize) -> io::Result<bool> {
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match pipe.read(&mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                let room = keep.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..n.min(room)]);
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

fn kill_group(pgid: Pid) {
    // ESRCH (nothing left in the group) is the usual answer and fine.
    let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
}

/// One line describing how a command that did not succeed ended, e.g. `exit status 3`.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}
