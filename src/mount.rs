//! `cachetta mount`: start-up checks, the FUSE session, and a clean unmount on signals.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tracing::{error, info, warn};

use crate::cli::{self, MountArgs, EXIT_USAGE};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Overrides};
use crate::fs::CacheFs;
use crate::fuse::FuseAdapter;
use crate::gc;
use crate::invalidate::Invalidator;
use crate::store::Store;
use crate::watch;

/// FUSE worker threads: requests block on disk I/O, so more than the two cores.
const WORKER_THREADS: usize = 8;

/// Workers that may wait for a kernel invalidation at once; the others stay free to serve
/// the request that holds the lock the invalidation needs.
const INVALIDATION_WAITERS: usize = WORKER_THREADS - 2;

fn refuse(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("cachetta: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// `~/.cachetta`, where `mount` and `unmount` act when no mountpoint is given.
pub fn default_mountpoint() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
        .join(".cachetta")
}

fn absolute(path: &Path) -> PathBuf {
    path.canonicalize()
        .unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

pub fn run(args: MountArgs) -> ExitCode {
    cli::init_logging(args.verbose, args.quiet);
    let overrides = Overrides {
        duration: args.duration,
        stale: args.stale,
        ..Overrides::default()
    };
    let config = match cli::load_config(&args.common, overrides) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mountpoint = args.mountpoint.clone().unwrap_or_else(default_mountpoint);
    if let Err(e) = std::fs::create_dir_all(&mountpoint) {
        return refuse(format_args!(
            "cannot create mountpoint {}: {e}",
            mountpoint.display()
        ));
    }
    let store = match Store::open(&config.backing, config.sync_writes) {
        Ok(s) => s,
        Err(e) => {
            return refuse(format_args!(
                "cannot open backing dir {}: {e}",
                config.backing.display()
            ))
        }
    };
    let mnt = absolute(&mountpoint);
    let backing = store.root_path().to_path_buf();
    if mnt.starts_with(&backing) || backing.starts_with(&mnt) {
        return refuse(format_args!(
            "the mountpoint {} and the backing dir {} must not contain each other; choose another --backing or mountpoint",
            mnt.display(),
            backing.display()
        ));
    }

    let watch_mode = config.watch;
    let config = Arc::new(config);
    let fs = CacheFs::new(config.clone(), store, Arc::new(SystemClock), args.read_only);
    let mut options = vec![
        fuser::MountOption::FSName("cachetta".into()),
        fuser::MountOption::Subtype("cachetta".into()),
    ];
    if args.read_only {
        options.push(fuser::MountOption::RO);
    }
    let mut fuse_config = fuser::Config::default();
    fuse_config.mount_options = options;
    fuse_config.n_threads = Some(WORKER_THREADS);
    fuse_config.clone_fd = true;

    // Hook the signals before mounting: a SIGTERM that arrives the moment the mount appears
    // must unmount it, not kill the daemon and leave a dead mount behind.
    let signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(s) => s,
        Err(e) => return refuse(format_args!("cannot install signal handlers: {e}")),
    };
    let mut session = match fuser::Session::new(FuseAdapter::new(fs.clone()), &mnt, &fuse_config) {
        Ok(s) => s,
        Err(e) => return refuse(format_args!("cannot mount at {}: {e}", mnt.display())),
    };
    info!(mountpoint = %mnt.display(), backing = %backing.display(), "mounted");
    if let Err(e) = spawn_gc_thread(config, &backing) {
        error!("cannot start the gc thread: {e}");
    }

    match Invalidator::spawn(session.notifier(), INVALIDATION_WAITERS) {
        Ok(invalidator) => fs.set_invalidator(invalidator),
        Err(e) => warn!("cannot start the kernel notifier ({e}); kernel caching stays short"),
    }
    // Changes behind the mount's back reach the kernel as they happen; only then may the
    // kernel cache names and attributes for long. Setting up the watch walks the whole
    // backing dir, so it happens beside the session, not before it.
    if fs.has_invalidator() {
        let (fs, backing) = (fs.clone(), backing.clone());
        std::thread::Builder::new()
            .name("watch".into())
            .spawn(
                move || match watch::start(fs.clone(), &backing, watch_mode) {
                    Ok(watch) => {
                        fs.set_watching(true);
                        // The watch lives as long as the process.
                        std::mem::forget(watch);
                    }
                    Err(e) => warn!(
                        "cannot watch {} ({e}); changes made outside the mount show within 1 s",
                        backing.display()
                    ),
                },
            )
            .ok();
    }
    let unmounter = session.unmount_callable();
    if let Err(e) = spawn_signal_thread(signals, unmounter, mnt.clone()) {
        error!("cannot install signal handlers: {e}");
    }
    let result = session.run();
    // Running refresh commands die with the mount, whole process groups.
    fs.shutdown();
    match result {
        Ok(()) => {
            info!(mountpoint = %mnt.display(), "unmounted");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("session ended with an error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// On SIGINT/SIGTERM/SIGHUP: unmount (lazily if busy), then let the session loop end; a second
/// signal, or a session that does not end, forces the exit.
fn spawn_signal_thread(
    mut signals: signal_hook::iterator::Signals,
    mut unmounter: fuser::SessionUnmounter,
    mnt: PathBuf,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Some(signal) = signals.forever().next() else {
                return;
            };
            info!(signal, "shutting down");
            if let Err(e) = unmounter.unmount() {
                warn!("unmount failed ({e}); detaching lazily");
                lazy_unmount(&mnt);
            }
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_secs(5));
                warn!("session did not end in time; exiting");
                std::process::exit(0);
            });
            if signals.forever().next().is_some() {
                warn!("second signal: exiting now");
                std::process::exit(0);
            }
        })?;
    Ok(())
}

/// Sweep the backing dir every `gc_interval` (the first sweep one interval after mounting;
/// `0` disables). The thread has its own `Store` handle, so requests never wait for it, and it
/// ends with the process.
fn spawn_gc_thread(config: Arc<Config>, backing: &Path) -> std::io::Result<()> {
    let interval = config.gc_interval;
    if interval.is_zero() {
        info!("gc disabled (gc_interval = 0)");
        return Ok(());
    }
    let store = Store::open(backing, config.sync_writes)?;
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

/// `umount -l`: detach the mount even while files in it are open.
pub fn lazy_unmount(mnt: &Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(c) = std::ffi::CString::new(mnt.as_os_str().as_bytes()) {
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}
