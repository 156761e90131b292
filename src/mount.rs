//! `cachetta mount` (also as mount(8)'s helper, [`helper`]): the start-up checks
//! ([`checks`]), the fork for `--daemon` (before any thread starts), the FUSE session,
//! readiness reports once the mount answers (and `STATUS=` to systemd after, [`status`]), and
//! a clean stop on signals ([`signals`]) or when unmounted from outside.
//!
//! The session runs on fuser's background thread; the main thread waits for [`Event`]s from
//! the readiness probe, the signal thread, and the session's end (the adapter's `destroy`,
//! once the kernel connection is gone). Nothing polls the connection: a poller of `/dev/fuse`
//! is woken by every request. The mount is only ever unmounted here, by path, and never by
//! fuser: fuser 0.18 unmounts again when its session ends (its "still mounted?" test is
//! inverted), which fails with `EINVAL` after an external `umount` and could unmount a newer
//! mount at the same path.

mod args;
mod backing_changes;
mod checks;
mod helper;
mod http;
mod metrics;
mod ring;
mod signals;
mod status;

pub use args::MountArgs;
pub use helper::helper_argv;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::clock::{Clock, SystemClock};
use crate::config::{self, Config};
use crate::daemon::logging;
use crate::daemon::notify::Systemd;
use crate::daemon::{self, Forked, ReadyPipe};
use crate::exit_codes::{ExitCode, Failure, Outcome};
use crate::fs::CacheFs;
use crate::fuse::FuseAdapter;
use crate::gc;
use crate::invalidate::Invalidator;
use crate::journal;
use crate::store::Store;
use crate::umount::{self, Unmounted};
use crate::watch;

/// FUSE worker threads: requests block on disk I/O, so more than the two cores; no request
/// waits for another (read-through is answered by the refresh worker), so not many more.
/// Measured with `scripts/bench --quick` on 2 vCPUs: 4 workers read a hot entry without
/// passthrough in ~28-40 µs against ~45-52 µs with 8 and 2 (fewer wake-ups of idle threads),
/// with the same storm figures.
const WORKER_THREADS: usize = 4;

/// How long a stop waits for the mount to go away (files still open in a lazily detached
/// mount keep it) before the daemon exits anyway.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// `statfs` type of every FUSE mount.
const FUSE_SUPER_MAGIC: u32 = 0x6573_5546;

/// Who hears about readiness and failures: the terminal (or, with `--daemon`, the parent
/// waiting on the pipe), the log file, and systemd.
struct Reporter {
    pipe: Option<ReadyPipe>,
    systemd: Option<Systemd>,
    logs_to_file: bool,
}

impl Reporter {
    /// Report a failure: a daemon sends it to the waiting parent (which prints it) and exits
    /// with its code; in the foreground it goes to the log file, if there is one, and back to
    /// `cli` to print.
    fn fail(&mut self, failure: Failure) -> Outcome {
        match self.pipe.take() {
            Some(pipe) => {
                error!("{failure}");
                pipe.failed(&failure);
                Ok(failure.code)
            }
            None => {
                if self.logs_to_file {
                    error!("{failure}");
                }
                Err(failure)
            }
        }
    }

    fn ready(&mut self, mnt: &Path) {
        info!(mountpoint = %mnt.display(), "ready");
        let daemonized = self.pipe.is_some();
        if let Some(pipe) = self.pipe.take() {
            pipe.ready();
        }
        if daemonized {
            // Only with NotifyAccess=all would systemd take this from a forked child.
            self.notify(&format!("READY=1\nMAINPID={}", std::process::id()));
        } else {
            self.notify("READY=1");
        }
    }

    fn notify(&self, state: &str) {
        if let Some(systemd) = &self.systemd {
            if let Err(e) = systemd.notify(state) {
                warn!("cannot tell systemd {state:?}: {e}");
            }
        }
    }
}

/// What the start-up checks established; nothing is mounted and no thread runs yet.
struct Prepared {
    config: Config,
    store: Store,
    mnt: PathBuf,
    read_only: bool,
    allow_other: bool,
    /// `metrics_addr`, bound; served once the filesystem exists.
    metrics: Option<http::Endpoint>,
}

pub fn run(args: MountArgs) -> Outcome {
    limit_malloc_arenas();
    let log_path = args
        .log_file
        .clone()
        .or_else(|| args.daemon.then(logging::default_file));
    let log_file = match &log_path {
        None => None,
        Some(path) => match logging::open_file(path) {
            Ok(file) => Some(Arc::new(file)),
            Err(e) => {
                return Err(Failure::usage(format_args!(
                    "cannot open the log file {}: {e}; choose another --log-file",
                    path.display()
                )))
            }
        },
    };
    // Before `Systemd::from_env`, which takes NOTIFY_SOCKET out of the environment.
    logging::init(args.verbose, args.quiet, log_file.clone());
    let mut reporter = Reporter {
        pipe: None,
        systemd: Systemd::from_env(),
        logs_to_file: log_file.is_some(),
    };
    // A bad configuration is printed, not logged, like every command's.
    let config = args.common.load_config(args.overrides())?;
    let prepared = match prepare(&args, config) {
        Ok(p) => p,
        Err(refusal) => return reporter.fail(Failure::usage(refusal)),
    };
    if let (true, Some(file), Some(path)) = (args.daemon, &log_file, &log_path) {
        match daemon::detach(file, path) {
            Ok(Forked::Exit(outcome)) => return outcome,
            Ok(Forked::Daemon(pipe)) => reporter.pipe = Some(pipe),
            Err(e) => {
                return reporter.fail(Failure::failed(format_args!(
                    "cannot start the daemon: {e}"
                )))
            }
        }
    }
    let log = log_file.zip(log_path).map(|(file, path)| signals::LogFile {
        file,
        path,
        is_stderr: args.daemon,
    });
    serve(prepared, reporter, log)
}

/// The start-up checks, each a refusal (exit code 2).
fn prepare(args: &MountArgs, config: Config) -> Result<Prepared, checks::Refusal> {
    ring::required(config.transport).map_err(checks::Refusal)?;
    let mnt = checks::resolve(
        &args
            .mountpoint
            .clone()
            .unwrap_or_else(config::default_mountpoint),
    );
    // Before creating anything: neither directory may end up inside the other.
    checks::separate(&mnt, &checks::resolve(&config.backing))?;
    checks::mountpoint_free(&mnt)?;
    if let Err(e) = std::fs::create_dir_all(&mnt) {
        return Err(checks::Refusal(format!(
            "cannot create the mountpoint {}: {e}",
            mnt.display()
        )));
    }
    let mnt = mnt.canonicalize().unwrap_or(mnt);
    checks::usable_mountpoint(&mnt, args.allow_non_empty)?;
    let store = Store::open(&config.backing, config.sync_writes).map_err(|e| {
        checks::Refusal(format!(
            "cannot open the backing dir {}: {e}",
            config.backing.display()
        ))
    })?;
    checks::separate(&mnt, store.root_path())?;
    // Absolute from here on: the daemon moves to `/`.
    let config = Config {
        backing: store.root_path().to_path_buf(),
        ..config
    };
    if !args.read_only {
        checks::writable_backing(store.root_path())?;
    }
    if args.allow_non_empty {
        checks::note_hidden_files(&mnt);
    }
    // Last: nothing else can refuse the mount once the port is taken.
    let metrics = match &config.metrics_addr {
        None => None,
        Some(addr) => Some(http::Endpoint::bind(addr).map_err(|e| {
            checks::Refusal(format!(
                "cannot serve metrics on {addr:?}: {e}; give --metrics-addr (or metrics_addr in \
                 the config) a free host:port, e.g. 127.0.0.1:9464"
            ))
        })?),
    };
    Ok(Prepared {
        config,
        store,
        mnt,
        read_only: args.read_only,
        allow_other: args.allow_other,
        metrics,
    })
}

/// What the main thread hears while the mount runs.
#[derive(Debug)]
enum Event {
    /// A `statfs` of the mountpoint went through the daemon: the mount answers.
    Answered,
    /// The mount cannot go on: the readiness probe or the io_uring ring says why.
    Failed(String),
    Signal(i32),
    /// The kernel connection is gone: the mount was unmounted (by us or from outside).
    Ended,
}

fn serve(prepared: Prepared, mut reporter: Reporter, log: Option<signals::LogFile>) -> Outcome {
    let Prepared {
        config,
        store,
        mnt,
        read_only,
        allow_other,
        metrics,
    } = prepared;
    // A thread: only now, after `--daemon`'s fork (which refuses to fork with threads).
    if let Err(e) = store.defer_closes() {
        warn!("no closer thread ({e}); replaced entries are closed inside their publish");
    }
    let backing = store.root_path().to_path_buf();
    let watch_mode = config.watch;
    // Other mounts of the backing dir hear of this one's publishes and removals through the
    // change journal; a read-only mount has none to tell, but reads theirs. Only a
    // `--watch poll` mount writes it, the mode of a shared backing dir (SPEC §13): announcing
    // every change costs a write two directory `statx`es and a wake-up of the appender
    // (measured: storm-trunc 3,112 → 1,946 writes/s, smallwrite 314 → 391 µs), which a backing
    // dir only this machine writes (inotify) does not need.
    let journal = match (read_only, watch_mode) {
        (false, crate::config::WatchMode::Poll(_)) => Store::open(&backing, false)
            .ok()
            .and_then(|own| journal::observe_store(&store, own)),
        _ => None,
    };
    let poll = watch::PollOptions {
        full_scan_interval: config.full_scan_interval,
        journal_writer: Some(
            journal
                .as_ref()
                .map_or_else(journal::writer_id, |j| j.writer().to_owned()),
        ),
    };
    let transport = config.transport;
    let config = Arc::new(config);
    let fs = CacheFs::new(config.clone(), store, Arc::new(SystemClock), read_only);
    backing_changes::learn_from_journal(&fs, &backing);

    // Before hooking SIGHUP, which replaces an inherited "ignore" (nohup).
    let hangup = signals::Hangup::decide(log);
    let hooked = match signals::hook() {
        Ok(s) => s,
        Err(e) => {
            return reporter.fail(Failure::failed(format_args!(
                "cannot install signal handlers: {e}"
            )))
        }
    };
    let (events, inbox) = mpsc::channel();
    let session_end = events.clone();
    let adapter = FuseAdapter::new(fs.clone()).on_destroy(Box::new(move || {
        let _ = session_end.send(Event::Ended);
    }));
    // Before the mount, so that no ring means classic (or no mount) and never a mount waiting
    // for one.
    let (adapter, ring_wanted) = match ring::prepare(adapter, transport) {
        Ok(prepared) => prepared,
        Err(problem) => return reporter.fail(Failure::failed(problem)),
    };
    let fuse = fuse_config(read_only, allow_other, &backing);
    let session = match fuser::Session::new(adapter, &mnt, &fuse) {
        Ok(s) => s,
        Err(e) => {
            let fuse_dev_closed = rustix::fs::access(
                "/dev/fuse",
                rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK,
            )
            .is_err();
            let hint = match e.raw_os_error() {
                // fuser opens /dev/fuse itself before it asks fusermount3 to mount; Debian's
                // udev rule makes it 0666, but some machines keep it root's alone.
                Some(libc::EACCES | libc::EPERM) if fuse_dev_closed => {
                    " (/dev/fuse is not open to this user: it is usually mode 0666, e.g. `sudo chmod 0666 /dev/fuse`)"
                }
                Some(libc::EACCES | libc::EPERM) => {
                    " (as an ordinary user, mounting needs fusermount3 from the fuse3 package, and --allow-other needs user_allow_other in /etc/fuse.conf)"
                }
                Some(libc::ENOENT | libc::ENODEV) => " (is the fuse kernel module loaded? is there a /dev/fuse?)",
                _ => "",
            };
            return reporter.fail(Failure::failed(format_args!(
                "cannot mount at {}: {e}{hint}",
                mnt.display()
            )));
        }
    };
    info!(mountpoint = %mnt.display(), backing = %backing.display(), allow_other, "mounted");
    let ring = match ring::start(ring_wanted, &session, fs.clone(), events.clone()) {
        Ok(ring) => ring,
        Err(problem) => {
            unmount_self(&mnt);
            return reporter.fail(Failure::failed(problem));
        }
    };
    let on_ring = ring.is_some();
    fs.set_serving_on_ring(on_ring);
    // The ring answers from now on (classic only once the session is spawned, below): the
    // probe starts as soon as the mount can answer, or an unmount right after the first
    // answer would be taken for a mount that never came.
    if on_ring {
        spawn_probe(mnt.clone(), events.clone());
    }

    if let Err(e) = spawn_gc_thread(config, &backing, journal) {
        error!("cannot start the gc thread: {e}");
    }
    match Invalidator::spawn(session.notifier()) {
        Ok(invalidator) => fs.set_invalidator(invalidator),
        Err(e) => warn!("cannot start the kernel notifier ({e}); kernel caching stays short"),
    }
    if let Some(endpoint) = metrics {
        metrics::serve(endpoint, fs.clone(), &mnt, &backing);
    }
    if fs.has_invalidator() {
        backing_changes::spawn_watch_thread(fs.clone(), backing, watch_mode, poll);
    }

    let unmounted = Arc::new(AtomicBool::new(false));
    let helpers = signals::spawn_thread(
        hooked,
        hangup,
        events.clone(),
        mnt.clone(),
        unmounted.clone(),
    );
    if let Err(e) = helpers {
        unmount_self(&mnt);
        return reporter.fail(Failure::failed(format_args!(
            "cannot start a helper thread: {e}"
        )));
    }
    // Takes the mount away from the session, so that fuser never unmounts it (see the top).
    let background = match session.spawn() {
        Ok(b) => b,
        Err(e) => {
            return reporter.fail(Failure::failed(format_args!(
                "cannot start the FUSE session: {e}"
            )))
        }
    };
    if !on_ring {
        spawn_probe(mnt.clone(), events);
    }

    let mut status = None;
    let why = loop {
        match inbox.recv() {
            Ok(Event::Answered) => {
                reporter.ready(&mnt);
                status = reporter.systemd.clone().and_then(|systemd| {
                    status::StatusThread::spawn(fs.clone(), systemd)
                        .inspect_err(|e| warn!("cannot start the status thread ({e}); systemctl status shows no counters"))
                        .ok()
                });
            }
            Ok(Event::Failed(why)) => break Err(why),
            Ok(Event::Signal(signal)) => {
                info!(signal = signals::signal_name(signal), "shutting down");
                break Ok(false);
            }
            Ok(Event::Ended) | Err(_) => {
                info!(mountpoint = %mnt.display(), "unmounted from outside; shutting down");
                break Ok(true);
            }
        }
    };
    if let Some(status) = status.take() {
        status.stop();
    }
    reporter.notify("STOPPING=1");
    let code = match &why {
        Err(problem) => reporter.fail(Failure::failed(problem)),
        Ok(_) if reporter.pipe.is_some() => {
            // The parent hears of it and exits 1; the stop itself went as asked.
            let _ = reporter.fail(Failure::failed("stopped before the mount answered"));
            Ok(ExitCode::Success)
        }
        Ok(_) => Ok(ExitCode::Success),
    };
    // Refuse new refreshes and kill running ones, whole process groups.
    fs.shutdown();
    let already_gone = why == Ok(true) || ended(&inbox, Duration::ZERO);
    if !already_gone {
        unmount_self(&mnt);
        unmounted.store(true, Ordering::SeqCst);
        if !ended(&inbox, STOP_TIMEOUT) {
            warn!(
                "the mount is still in use {}s after unmounting (open files in it?); exiting",
                STOP_TIMEOUT.as_secs()
            );
        }
    }
    // The session's threads end on their own once the connection is gone; give them a moment
    // to finish `destroy`, then leak the session rather than let fuser unmount a second time.
    let deadline = Instant::now() + Duration::from_secs(1);
    while !background.guard.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::mem::forget(background);
    // The ring's entries come back once the connection is gone; then it drops its fd.
    if let Some(ring) = ring {
        ring.finish(Duration::from_secs(2));
    }
    info!(mountpoint = %mnt.display(), "unmounted");
    code
}

/// At most two malloc arenas. glibc gives each thread that allocates its own arena, and memory
/// freed in one is only reused there: measured with `scripts/bench --soak` (100,000 keys a
/// pass), the daemon's RSS levelled off at 118 MiB after three passes with the default, and at
/// 89 MiB after one with two arenas, and the passes took no longer.
fn limit_malloc_arenas() {
    // SAFETY: `mallopt` only sets an allocator parameter; it is called before any thread of
    // ours starts, and glibc serialises it with allocations anyway.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// The mount shows in mountinfo as an fstab line names it (SPEC §14): the backing dir as
/// source, type `fuse.cachetta`; otherwise `mount -a` does not see a line already mounted and
/// mounts it again (refused: exit 2). fuser hands `Subtype` only to fusermount3 (the kernel
/// then says plain `fuse`); as a kernel option it reaches both. fusermount3 splits its options
/// at commas, so a backing dir with one in its path goes by `cachetta`.
fn fuse_config(read_only: bool, allow_other: bool, backing: &Path) -> fuser::Config {
    let source = match backing.to_str() {
        Some(path) if !path.contains(',') => path,
        _ => "cachetta",
    };
    let mut options = vec![
        fuser::MountOption::FSName(source.into()),
        fuser::MountOption::CUSTOM("subtype=cachetta".into()),
    ];
    if read_only {
        options.push(fuser::MountOption::RO);
    }
    let mut config = fuser::Config::default();
    if allow_other {
        // Other users get in, and the kernel checks the backing files' owner and mode.
        config.acl = fuser::SessionACL::All;
        options.push(fuser::MountOption::DefaultPermissions);
    }
    config.mount_options = options;
    config.n_threads = Some(WORKER_THREADS);
    config.clone_fd = true;
    config
}

/// Wait up to `timeout` for [`Event::Ended`], dropping other events.
fn ended(inbox: &Receiver<Event>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match inbox.recv_timeout(left) {
            Ok(Event::Ended) => return true,
            Ok(_) => continue,
            Err(RecvTimeoutError::Timeout) => return false,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}

/// Unmount our own mount, lazily when busy; failures are logged (we are stopping anyway).
fn unmount_self(mnt: &Path) {
    match umount::unmount_or_detach(mnt) {
        Ok(Unmounted::Lazily) => {
            warn!(mountpoint = %mnt.display(), "mount busy; detached it lazily")
        }
        Ok(_) => {}
        Err(e) => error!("{e}"),
    }
}

/// `statfs` of the mountpoint from a thread that is not a FUSE worker (a worker would wait on
/// itself): it succeeds, with FUSE's magic number, once the session answers requests.
fn spawn_probe(mnt: PathBuf, events: Sender<Event>) {
    let probe = move || {
        let event = match rustix::fs::statfs(&mnt) {
            // f_type's width differs between architectures; the magic fits in 32 bits.
            Ok(st) if st.f_type as u32 == FUSE_SUPER_MAGIC => Event::Answered,
            Ok(st) => Event::Failed(format!(
                "{} is not the FUSE mount after mounting (filesystem type {:#x}); was it unmounted at once?",
                mnt.display(),
                st.f_type
            )),
            Err(e) => Event::Failed(format!(
                "the mount at {} does not answer: {}",
                mnt.display(),
                std::io::Error::from(e)
            )),
        };
        let _ = events.send(event);
    };
    if let Err(e) = std::thread::Builder::new()
        .name("ready-probe".into())
        .spawn(probe)
    {
        error!("cannot start the readiness probe ({e}); readiness is never reported");
    }
}

/// Sweep the backing dir every `gc_interval` (the first sweep one interval after mounting;
/// `0` disables). The thread has its own `Store` handle, so requests never wait for it, and it
/// ends with the process. Its removals go to the change journal, like the mount's.
fn spawn_gc_thread(
    config: Arc<Config>,
    backing: &Path,
    journal: Option<Arc<journal::Appender>>,
) -> std::io::Result<()> {
    let interval = config.gc_interval;
    if interval.is_zero() {
        info!("gc disabled (gc_interval = 0)");
        return Ok(());
    }
    let store = Store::open(backing, config.sync_writes)?;
    if let Some(journal) = journal {
        store.set_observer(journal);
    }
    std::thread::Builder::new()
        .name("gc".into())
        .spawn(move || loop {
            std::thread::sleep(interval);
            let started = std::time::Instant::now();
            match gc::sweep(&store, &config, SystemClock.now(), false) {
                Ok(swept) if swept.is_empty() => info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "gc: nothing to remove"
                ),
                Ok(swept) => info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "gc: removed {}",
                    gc::summary(&swept)
                ),
                Err(e) => warn!("gc: cannot sweep {}: {e}", store.root_path().display()),
            }
        })?;
    Ok(())
}
