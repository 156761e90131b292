//! What one refresh does, start to end: the command with its environment, the checks on its
//! output, the `condition`, and the publish. Scheduling, coalescing and bookkeeping are in
//! [`super`]; running a process is in [`super::command`].

use std::ffi::{OsStr, OsString};
use std::io::{self, Seek};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use tracing::{debug, warn};

use parking_lot::Mutex;

use super::command::{self, Control, Ended, Invocation, Sink};
use super::lock::{self, Taken};
use super::{Job, Lead, Outcome, Reason, Shared};
use crate::flight::one_line;
use crate::publish::{publish_entry, Checked, PolicyFrom, Published};
use crate::stats::bump;
use crate::store::{self, Staging, Store, ENTRY_SUFFIX};

/// What a run produced, before bookkeeping.
pub(super) struct Ran {
    pub outcome: Outcome,
    /// The stderr (first 4 KiB) of the command that decided the outcome, for the log.
    pub stderr: Vec<u8>,
    /// Another mount ran it (this one only waited): nothing to count or remember here.
    pub elsewhere: bool,
    /// What this run published, for the filesystem's memory of its own publishes.
    pub published: Option<Box<Published>>,
}

impl Ran {
    fn new(outcome: Outcome, stderr: Vec<u8>) -> Ran {
        Ran {
            outcome,
            stderr,
            elsewhere: false,
            published: None,
        }
    }
}

/// Run `lead`'s refresh, unless another mount of the backing dir is running it: then a
/// waiting caller (read-through, stale-if-error's lookup, a demand) waits for that one to end
/// and gets whatever entry it left, and a background refresh (a stale or early read) is
/// simply not needed.
pub(super) fn run_job(shared: &Shared, lead: &Lead) -> Ran {
    let key = lead.flight().key();
    let job = lead.flight().data();
    let _lock = match lock::try_lock(&shared.store, key) {
        Ok(Taken::Ours(lock)) => {
            // Replaced since this refresh was asked for (another mount's refresh that ended
            // just before this one got the lock, or a write): not needed any more. Opened, not
            // just `stat`-ed: another machine's publish must not hide behind a network
            // filesystem's attribute cache (GlusterFS: a refresh ran twice).
            let now = shared.store.stat_opened(key).ok().map(|st| st.version());
            if now.is_some() && now != job.seen {
                debug!(key = %key.display(), "entry replaced since the refresh was asked for; not running it");
                return Ran::new(Outcome::Superseded, Vec::new());
            }
            Some(lock)
        }
        Ok(Taken::Elsewhere) => return elsewhere(shared, key, job),
        Err(e) => {
            warn!(key = %key.display(), "cannot take the refresh lock in .cachetta/ ({e}); running the refresh without it");
            None
        }
    };
    run_command(shared, lead)
}

/// The refresh of `key` runs on another mount.
fn elsewhere(shared: &Shared, key: &Path, job: &Job) -> Ran {
    let ran = |outcome| Ran {
        elsewhere: true,
        ..Ran::new(outcome, Vec::new())
    };
    if matches!(job.reason, Reason::Stale | Reason::Early) {
        debug!(key = %key.display(), "refresh running on another mount; serving what is there");
        return ran(Outcome::Cancelled);
    }
    let before = shared.store.stat_opened(key).ok().map(|st| st.version());
    let timeout = shared
        .config
        .settings_for(key.as_os_str())
        .settings
        .refresh_timeout;
    debug!(key = %key.display(), "refresh running on another mount; waiting for it");
    match lock::wait_released(&shared.store, key, Instant::now() + timeout, &job.control) {
        Ok(true) => {}
        Ok(false) => return ran(Outcome::Failed("still running on another mount".into())),
        Err(e) => {
            return ran(Outcome::Failed(format!(
                "cannot wait for another mount: {e}"
            )))
        }
    }
    let after = shared.store.stat_opened(key).ok().map(|st| st.version());
    if after.is_some() && after != before {
        ran(Outcome::Published)
    } else {
        ran(Outcome::Failed(
            "the refresh on another mount published nothing".into(),
        ))
    }
}

/// Run the key's command, then its condition, and publish what they let through.
fn run_command(shared: &Shared, lead: &Lead) -> Ran {
    bump(&shared.stats.refreshes_started);
    let key = lead.flight().key();
    let job = lead.flight().data();
    let matched = shared.config.settings_for(key.as_os_str());
    let settings = matched.settings;
    let Some(refresh) = &settings.refresh else {
        return Ran::new(Outcome::NoCommand, Vec::new());
    };
    let run = Run {
        env: environment(&shared.store, key, job.reason, &matched.captures),
        cwd: shared.store.root_path(),
        timeout: settings.refresh_timeout,
        control: &job.control,
    };
    debug!(key = %key.display(), reason = job.reason.as_str(), "refresh started");
    let (output, stderr) = match output(shared, key, refresh, &run) {
        Ok(output) => output,
        Err(ran) => return ran,
    };
    if let Some(condition) = &settings.condition {
        if let Some(ran) = condition_refuses(condition, &output, &run) {
            shared.store.discard(output.into_staging());
            return ran;
        }
    }
    match publish(shared, lead, output) {
        Ok(Some(published)) => Ran {
            published: Some(Box::new(published)),
            ..Ran::new(Outcome::Published, stderr)
        },
        Ok(None) => cancelled(),
        Err(e) => failed(format!("cannot publish: {e}"), stderr),
    }
}

/// Where and how long the command and the condition of one refresh run.
struct Run<'a> {
    env: Vec<(OsString, OsString)>,
    cwd: &'a Path,
    timeout: Duration,
    control: &'a Mutex<Control>,
}

/// The command's output, streamed into a staging file as it comes (nothing of it is held in
/// memory, however large) and checked there; with the command's stderr. Or why there is none.
fn output(
    shared: &Shared,
    key: &Path,
    command: &str,
    run: &Run,
) -> Result<(Checked, Vec<u8>), Ran> {
    let limit = shared.config.max_entry_bytes;
    let staging = stage(shared, key)
        .map_err(|e| failed(format!("cannot stage the output: {e}"), Vec::new()))?;
    let discard = |staging, ran| {
        shared.store.discard(staging);
        ran
    };
    let sink = match staging.file.try_clone() {
        Ok(file) => file,
        Err(e) => {
            let ran = failed(format!("cannot stage the output: {e}"), Vec::new());
            return Err(discard(staging, ran));
        }
    };
    let invocation = Invocation {
        command,
        cwd: run.cwd,
        env: &run.env,
        stdin: None,
        stdout: Some(Sink { file: sink, limit }),
        timeout: run.timeout,
    };
    let finished = match command::run(invocation, run.control) {
        Ok(finished) => finished,
        Err(e) => {
            let ran = failed(format!("cannot run the command: {e}"), Vec::new());
            return Err(discard(staging, ran));
        }
    };
    debug!(key = %key.display(), bytes = finished.stdout_bytes, "refresh output staged");
    let stderr = finished.stderr;
    let why = match finished.ended {
        Ended::Exited(status) if status.success() => None,
        Ended::Exited(status) => Some(with_stderr(command::describe(status), &stderr)),
        Ended::Cancelled => return Err(discard(staging, cancelled())),
        Ended::TimedOut => Some(timed_out("", run.timeout)),
        Ended::OutputTooLarge => Some(format!(
            "output larger than max_entry_bytes ({limit} bytes)"
        )),
    };
    if let Some(why) = why {
        return Err(discard(staging, failed(why, stderr)));
    }
    match Checked::check(staging, limit) {
        Ok(checked) => Ok((checked, stderr)),
        Err((staging, _)) => Err(discard(
            staging,
            failed("output is not valid JSON".into(), stderr),
        )),
    }
}

/// Run the rule's `condition` with the output on its stdin: `None` when it lets the output be
/// published, or what came of the refresh instead (declined, failed, cancelled).
fn condition_refuses(condition: &str, output: &Checked, run: &Run) -> Option<Ran> {
    let stdin = match output
        .file()
        .try_clone()
        .and_then(|mut f| f.rewind().map(|()| f))
    {
        Ok(file) => file,
        Err(e) => {
            return Some(failed(
                format!("cannot pass output to condition: {e}"),
                Vec::new(),
            ))
        }
    };
    let invocation = Invocation {
        command: condition,
        cwd: run.cwd,
        env: &run.env,
        stdin: Some(stdin),
        stdout: None,
        timeout: run.timeout,
    };
    let finished = match command::run(invocation, run.control) {
        Ok(finished) => finished,
        Err(e) => return Some(failed(format!("cannot run condition: {e}"), Vec::new())),
    };
    let stderr = finished.stderr;
    match finished.ended {
        Ended::Exited(status) if status.success() => None,
        // A condition that exits non-zero says "don't cache this".
        Ended::Exited(status) if status.code().is_some() => {
            Some(Ran::new(Outcome::Declined, stderr))
        }
        Ended::Exited(status) => {
            let what = format!("condition {}", command::describe(status));
            Some(failed(with_stderr(what, &stderr), stderr))
        }
        Ended::Cancelled => Some(cancelled()),
        Ended::TimedOut => Some(failed(timed_out("condition ", run.timeout), stderr)),
        Ended::OutputTooLarge => Some(failed("condition output too large".into(), stderr)),
    }
}

/// A staging file for the output of `key`'s refresh: in the entry's directory, or at the
/// backing root while that directory does not exist yet (a refresh that fails creates no
/// directory; one that succeeds creates it at publish).
fn stage(shared: &Shared, key: &Path) -> io::Result<Staging> {
    let (dir, _) = store::split(key);
    // The entry keeps its mode and its `user.*` attributes (its own policy among them) when
    // it exists.
    let old = shared
        .store
        .open_file(key, OFlags::RDONLY, Mode::empty())
        .ok();
    let perm = old.as_ref().map_or(0o644, |(_, st)| u32::from(st.perm));
    let staging = match shared.store.create_staging(dir, perm) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            shared.store.create_staging(Path::new(""), perm)
        }
        other => other,
    }?;
    if let Some((old, _)) = &old {
        store::copy_user_xattrs(old, &staging.file);
    }
    Ok(staging)
}

/// Publish the checked output as the entry (creating missing directories), unless the
/// refresh has been cancelled: then `None`.
fn publish(shared: &Shared, lead: &Lead, output: Checked) -> io::Result<Option<Published>> {
    let key = lead.flight().key();
    let (dir, _) = store::split(key);
    if shared.store.stat(dir).is_err() {
        if let Err(e) = shared.store.mkdir_all(dir) {
            shared.store.discard(output.into_staging());
            return Err(e);
        }
    }
    // Under the flight's publish lock, which `cancel` takes too: either the cancel comes first
    // and nothing is published, or the publish is complete before `cancel` returns (and the
    // `rm` that follows removes it).
    let mut output = Some(output);
    let published = lead.publish(|| {
        let output = output.take().expect("published once");
        let now = Some(shared.clock.now());
        publish_entry(&shared.store, output, key, now, PolicyFrom::Entry)
    });
    match published {
        Some(result) => result.map(Some),
        None => {
            if let Some(output) = output {
                shared.store.discard(output.into_staging());
            }
            Ok(None)
        }
    }
}

/// The variables a refresh command gets on top of the daemon's environment (SPEC §6). Values
/// are the key's raw bytes; nothing is ever pasted into the command text.
fn environment(
    store: &Store,
    key: &Path,
    reason: Reason,
    captures: &[(String, Vec<u8>)],
) -> Vec<(OsString, OsString)> {
    let file_name = key.file_name().unwrap_or_default().as_bytes();
    let name = file_name
        .strip_suffix(ENTRY_SUFFIX.as_bytes())
        .unwrap_or(file_name);
    let var = |name: &str, value: &[u8]| {
        (
            OsString::from(format!("CACHETTA_{name}")),
            OsStr::from_bytes(value).to_os_string(),
        )
    };
    let mut env = vec![
        var("KEY", key.as_os_str().as_bytes()),
        var("NAME", name),
        var("ENTRY", store.absolute(key).as_os_str().as_bytes()),
        var("REASON", reason.as_str().as_bytes()),
    ];
    for (capture, value) in captures {
        env.push(var(&capture.to_ascii_uppercase(), value));
    }
    env
}

fn failed(error: String, stderr: Vec<u8>) -> Ran {
    Ran::new(Outcome::Failed(error), stderr)
}

fn cancelled() -> Ran {
    Ran::new(Outcome::Cancelled, Vec::new())
}

fn timed_out(what: &str, timeout: Duration) -> String {
    format!(
        "{what}timed out after {}",
        humantime::format_duration(timeout)
    )
}

/// `what: <first line of stderr>`, or just `what` when stderr says nothing; always one line.
pub(super) fn with_stderr(what: String, stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let first = text.lines().map(one_line).find(|line| !line.is_empty());
    match first {
        Some(first) => format!("{what}: {first}"),
        None => what,
    }
}
