//! Leaving the terminal (`cachetta mount --daemon`) and saying when the mount answers: to the
//! waiting parent over a pipe ([`ReadyPipe`]), to systemd over `NOTIFY_SOCKET` ([`notify`]).
//! Where the logs go is [`logging`]. Nothing here knows about FUSE; the `mount` command decides
//! when the mount is ready.

pub mod logging;
pub mod notify;

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::pipe::{pipe_with, PipeFlags};

use crate::exit_codes::{ExitCode, Failure, Outcome};

/// How long the parent waits for the daemon's mount to answer. Mounting takes milliseconds;
/// this only bounds a daemon stuck in the kernel.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// First byte on the readiness pipe when the mount answers. Any other first byte is the exit
/// code of a failure, followed by its message.
const READY: u8 = 0;

/// What [`detach`] leaves the calling process to do.
pub enum Forked {
    /// This process is done (the parent once the daemon answered or failed, or a child that
    /// could not detach and said so through the pipe): end with this outcome.
    Exit(Outcome),
    /// This process is the daemon, detached from the terminal; report through the pipe.
    Daemon(ReadyPipe),
}

/// The daemon's end of the readiness pipe. Reporting consumes it, so the parent's read ends.
#[derive(Debug)]
pub struct ReadyPipe(File);

impl ReadyPipe {
    /// The mount answers: the parent exits 0.
    pub fn ready(self) {
        let _ = (&self.0).write_all(&[READY]);
    }

    /// Mounting failed: the parent prints the message and exits with the code (never 0).
    pub fn failed(self, failure: &Failure) {
        let mut bytes = vec![failure.code.code().max(1)];
        bytes.extend_from_slice(failure.message.as_bytes());
        let _ = (&self.0).write_all(&bytes);
    }
}

/// Fork; the parent waits until the child reports on the readiness pipe and returns the exit
/// code to use, the child starts a new session, moves to `/`, and points stdin and stdout at
/// `/dev/null` and stderr at `log` (so a panic message lands in the log too).
///
/// Must be called while the process has a single thread: a child forked from a threaded
/// process may only call async-signal-safe functions, and the daemon does far more.
pub fn detach(log: &File, log_path: &Path) -> io::Result<Forked> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(io::Error::other(format!(
            "refusing to fork with {threads} threads running (a bug in cachetta)"
        )));
    }
    let (read, write) = pipe_with(PipeFlags::CLOEXEC)?;
    // SAFETY: the process has exactly one thread (checked just above), so no lock can be held
    // by a thread that does not exist in the child, and the child may do anything.
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Parent { child } => {
            drop(write);
            Ok(Forked::Exit(wait_for_daemon(read, child, log_path)))
        }
        ForkResult::Child => {
            drop(read);
            let pipe = ReadyPipe(File::from(write));
            match leave_terminal(log) {
                Ok(()) => Ok(Forked::Daemon(pipe)),
                Err(e) => {
                    let failure = Failure::failed(format!("cannot detach from the terminal: {e}"));
                    pipe.failed(&failure);
                    Ok(Forked::Exit(Ok(failure.code)))
                }
            }
        }
    }
}

fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// `setsid`, `chdir /` (so the daemon never keeps a directory busy), stdio away from the tty.
fn leave_terminal(log: &File) -> io::Result<()> {
    rustix::process::setsid()?;
    rustix::process::chdir("/")?;
    let null = File::options().read(true).write(true).open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    rustix::stdio::dup2_stdout(&null)?;
    rustix::stdio::dup2_stderr(log)?;
    Ok(())
}

/// The parent's side: wait for the daemon's first byte, then say what happened.
fn wait_for_daemon(read: OwnedFd, child: Pid, log_path: &Path) -> Outcome {
    let see_log = format!("see {}", log_path.display());
    match wait_readable(&read, READY_TIMEOUT) {
        Ok(true) => {}
        Ok(false) => {
            return Err(Failure::failed(format_args!(
                "the daemon (pid {child}) did not answer within {}s and keeps running; {see_log}",
                READY_TIMEOUT.as_secs()
            )))
        }
        Err(e) => {
            return Err(Failure::failed(format_args!(
                "cannot wait for the daemon (pid {child}): {e}"
            )))
        }
    }
    let mut pipe = File::from(read);
    let mut first = [0u8; 1];
    match pipe.read(&mut first) {
        Ok(1) if first[0] == READY => Ok(ExitCode::Success),
        Ok(1) => {
            let mut message = Vec::new();
            let _ = pipe.read_to_end(&mut message);
            // The daemon exits right after reporting; reap it so no zombie outlives us.
            let _ = waitpid(child, None);
            Err(Failure {
                code: ExitCode::from_reported(first[0]),
                message: String::from_utf8_lossy(&message).into_owned(),
            })
        }
        _ => {
            let how = match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => format!("exited with code {code}"),
                Ok(WaitStatus::Signaled(_, signal, _)) => format!("was killed by {signal:?}"),
                _ => "ended".to_string(),
            };
            Err(Failure::failed(format_args!(
                "the daemon {how} before the mount was ready; {see_log}"
            )))
        }
    }
}

/// Whether `fd` becomes readable (or hung up) within `timeout`.
fn wait_readable(fd: impl AsFd, timeout: Duration) -> io::Result<bool> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let spec = Timespec::try_from(left).map_err(io::Error::other)?;
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut fds, Some(&spec)) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_pipe_sends_one_zero_byte() {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        ReadyPipe(File::from(write)).ready();
        let mut got = Vec::new();
        File::from(read).read_to_end(&mut got).unwrap();
        assert_eq!(got, [READY]);
    }

    #[test]
    fn failure_sends_its_exit_code_then_the_message_and_never_zero() {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        let failure = Failure {
            code: ExitCode::Success,
            message: "no".into(),
        };
        ReadyPipe(File::from(write)).failed(&failure);
        let mut got = Vec::new();
        File::from(read).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"\x01no");
    }

    #[test]
    fn wait_readable_times_out_on_a_silent_pipe() {
        let (read, _write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        assert!(!wait_readable(&read, Duration::from_millis(10)).unwrap());
    }
}
