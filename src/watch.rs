//! Changes made in the backing dir behind the mount's back (another program, `cp`, a Python
//! app) are pushed to the kernel as they happen, so the kernel may cache names and attributes
//! for long and still never serve a stale byte. `notify` delivers the events: inotify, or a
//! poll watcher for network filesystems where inotify sees nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::event::{EventKind, Flag, ModifyKind};
use notify::{Event, RecursiveMode, Watcher};
use tracing::{debug, warn};

use crate::config::WatchMode;
use crate::fs::CacheFs;
use crate::store;

/// Keeps the watcher alive; dropping it stops watching.
pub struct BackingWatch {
    _watcher: Box<dyn Watcher + Send>,
}

impl std::fmt::Debug for BackingWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackingWatch")
    }
}

/// Watch `root` recursively and tell `fs` about every change.
pub fn start(fs: Arc<CacheFs>, root: &Path, mode: WatchMode) -> notify::Result<BackingWatch> {
    let root_for_events = root.to_path_buf();
    let handler = move |result: notify::Result<Event>| match result {
        Ok(event) => on_event(&fs, &root_for_events, event),
        Err(e) => {
            // Lost events (e.g. the inotify queue overflowed): forget everything cached.
            warn!("watching the backing dir: {e}; invalidating every cached name");
            fs.backing_changed_everywhere();
        }
    };
    // Symlinks in the backing dir are never served, and following them could loop (`up -> ..`).
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut watcher: Box<dyn Watcher + Send> = match mode {
        WatchMode::Inotify => Box::new(notify::RecommendedWatcher::new(handler, config)?),
        WatchMode::Poll(interval) => Box::new(notify::PollWatcher::new(
            handler,
            config.with_poll_interval(interval),
        )?),
    };
    watcher.watch(root, RecursiveMode::Recursive)?;
    Ok(BackingWatch { _watcher: watcher })
}

fn on_event(fs: &CacheFs, root: &Path, event: Event) {
    if event.need_rescan() || event.flag() == Some(Flag::Rescan) {
        fs.backing_changed_everywhere();
        return;
    }
    if matches!(event.kind, EventKind::Access(_)) {
        return; // opens and reads change nothing
    }
    for path in &event.paths {
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let name = rel.file_name().unwrap_or_default();
        if store::is_staging_name(name) {
            continue; // our own in-flight writes; their publish (a rename) is reported too
        }
        // What this mount did itself (a publish, writes to a file it holds open) needs no
        // telling: the kernel saw it happen.
        let data_only = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_))
        );
        if fs.is_own_change(rel, data_only) {
            continue;
        }
        debug!(path = %rel.display(), kind = ?event.kind, "backing dir changed");
        fs.backing_changed(&PathBuf::from(rel));
    }
}
