//! The daemon's signals. SIGINT and SIGTERM ask for a clean stop, and a second signal during
//! that stop ends it at once. SIGHUP stops the mount only when it means what the kernel means
//! by it, that the mount's terminal went away; a mount no terminal can hang up on (`--daemon`,
//! systemd, `setsid`, `nohup`) only gets SIGHUP on purpose, as any daemon does (logrotate's
//! `postrotate`), and there it reopens the log file and keeps serving.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::{error, info, warn};

use super::Event;
use crate::daemon::logging;
use crate::umount;

/// The log file SIGHUP reopens.
pub struct LogFile {
    /// The descriptor the log lines go to; reopening points it at the new file.
    pub file: Arc<File>,
    pub path: PathBuf,
    /// stderr is the log file too (`--daemon`), and follows it.
    pub is_stderr: bool,
}

/// What SIGHUP means to this mount.
pub enum Hangup {
    /// The terminal the mount was started from went away: stop, as on SIGTERM.
    Stop,
    /// Sent on purpose: reopen the log file, if there is one, and keep serving.
    Reopen(Option<LogFile>),
}

impl Hangup {
    /// Decide once, at start and after `--daemon` detached: a hung-up terminal can no longer
    /// be asked whether it is one. Call it before the signals are hooked, which replaces an
    /// inherited "ignore".
    pub fn decide(log: Option<LogFile>) -> Hangup {
        if has_controlling_terminal() && !hangup_ignored() {
            Hangup::Stop
        } else {
            Hangup::Reopen(log)
        }
    }

    fn reopen(&self) {
        match self {
            Hangup::Stop => {}
            Hangup::Reopen(None) => {
                info!("SIGHUP: no log file to reopen, and no terminal that could hang up on this mount (or nohup); still serving")
            }
            Hangup::Reopen(Some(log)) => {
                match logging::reopen(&log.file, &log.path, log.is_stderr) {
                    // Logged after the switch, so it is the new file's first line.
                    Ok(()) => info!(path = %log.path.display(), "SIGHUP: reopened the log file"),
                    Err(e) => warn!(
                        "SIGHUP: cannot reopen the log file {} ({e}); logging on to the old one",
                        log.path.display()
                    ),
                }
            }
        }
    }
}

/// Whether the process has a controlling terminal, the only source of a hangup: `/dev/tty`
/// opens only then. `--daemon` left it with `setsid`; systemd never gives one.
fn has_controlling_terminal() -> bool {
    File::options()
        .read(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/tty")
        .is_ok()
}

/// Whether SIGHUP was ignored when we started (`nohup cachetta mount &`): the user asked for
/// the mount to outlive the terminal.
fn hangup_ignored() -> bool {
    // SAFETY: with a null new action, sigaction only reads the current one into `old`, a
    // zeroed `sigaction` struct that outlives the call.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// The signals the thread hears; hook them before mounting, so that a SIGTERM the moment the
/// mount appears unmounts it rather than killing the daemon.
pub fn hook() -> std::io::Result<Signals> {
    Signals::new([SIGINT, SIGTERM, SIGHUP])
}

/// The first stopping signal asks the main thread for a clean stop; a second one, while that
/// stop waits (a refresh command that will not die, a busy mount), detaches the mount and
/// exits at once. A SIGHUP that does not stop ([`Hangup::Reopen`]) is handled here.
pub fn spawn_thread(
    mut signals: Signals,
    hangup: Hangup,
    events: Sender<Event>,
    mnt: PathBuf,
    unmounted: Arc<AtomicBool>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stopping = false;
            for signal in signals.forever() {
                if signal == SIGHUP && !matches!(hangup, Hangup::Stop) {
                    hangup.reopen();
                    continue;
                }
                if !stopping {
                    stopping = true;
                    let _ = events.send(Event::Signal(signal));
                    continue;
                }
                warn!(signal = signal_name(signal), "second signal: exiting now");
                if !unmounted.load(Ordering::SeqCst) {
                    if let Err(e) = umount::detach(&mnt) {
                        error!("{e}");
                    }
                }
                std::process::exit(0);
            }
        })?;
    Ok(())
}
