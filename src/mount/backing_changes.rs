//! How changes made behind the mount's back reach the filesystem: the watch thread, whose
//! reports (`watch::Change`) become `CacheFs` calls, and what the change journal says other
//! mounts (this one before a restart included) already judged.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{debug, warn};

use crate::fs::CacheFs;
use crate::journal;
use crate::store::Store;
use crate::watch::{self, Change};

/// Changes behind the mount's back reach the kernel as they happen; only then may the kernel
/// cache names and attributes for long. Setting up the watch walks the whole backing dir, so
/// it happens beside the session, not before it.
pub(super) fn spawn_watch_thread(
    fs: Arc<CacheFs>,
    backing: PathBuf,
    mode: crate::config::WatchMode,
    poll: watch::PollOptions,
) {
    let spawned = std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || {
            match watch::start(on_backing_change(fs.clone()), &backing, mode, poll) {
                Ok(watch) => {
                    fs.set_watching(true);
                    // The watch lives as long as the process.
                    std::mem::forget(watch);
                }
                Err(e) => warn!(
                    "cannot watch {} ({e}); changes made outside the mount show within 1 s",
                    backing.display()
                ),
            }
        });
    if let Err(e) = spawned {
        warn!(
            "cannot start the watch thread ({e}); changes made outside the mount show within 1 s"
        );
    }
}

/// What the mounts of the backing dir announced in the change journal (this one before a
/// restart included) of which content versions are valid JSON, and with which policy: a
/// fresh mount's first listing then reads no file any mount already judged (SPEC §13).
pub(super) fn learn_from_journal(fs: &CacheFs, backing: &Path) {
    let Some(dev) = fs.backing_dev() else { return };
    let records = Store::open(backing, false).and_then(|store| journal::load_all(&store));
    match records {
        Ok(records) => {
            for record in &records {
                learn_record(fs, Some(dev), record);
            }
            debug!(
                records = records.len(),
                "learnt what the change journal says was judged"
            );
        }
        Err(e) => warn!("cannot read the change journal ({e}); entries are judged by reading them"),
    }
}

/// Take in what one journal record says was judged of a content version.
fn learn_record(fs: &CacheFs, dev: Option<u64>, record: &journal::Record) {
    if let (Some(dev), Some(version)) = (dev, &record.version) {
        fs.learn(version.on_device(dev), record.valid, record.policy);
    }
}

/// The watch's reports reach the filesystem, except the changes the mount made itself (files
/// it published: the kernel saw those happen).
fn on_backing_change(fs: Arc<CacheFs>) -> watch::OnChange {
    let dev = fs.backing_dev();
    // Names seen gone matter where a filesystem client may still answer for them; a local
    // filesystem's answers are the truth, and its inode numbers are reused at once.
    let remote = fs.backing_is_remote();
    Box::new(move |change| match change {
        Change::Entry(rel) if fs.is_own_change(rel) => {}
        Change::Entry(rel) => {
            debug!(path = %rel.display(), "backing dir changed");
            fs.backing_changed(rel);
        }
        Change::Everything => fs.backing_changed_everywhere(),
        // What other mounts published or judged, and of which version: its entry is
        // reported next, as a `Change::Entry`.
        Change::Record(record) => {
            debug!(writer = record.writer, op = ?record.op, key = %record.key.display(), "journal record");
            learn_record(&fs, dev, record);
            if remote && record.op == crate::journal::Op::Del {
                // Another mount removed it: whatever this machine's client still answers for
                // the name is gone.
                fs.backing_gone(&record.key, None);
            }
        }
        Change::Gone { rel, ino } if remote => fs.backing_gone(rel, Some(ino)),
        Change::Listed { rel, ino } if remote => fs.backing_listed(rel, ino),
        Change::Listing { dir, names } if remote => {
            fs.backing_dir_listed(dir, |name| names.get(name).map(|(ino, _)| *ino))
        }
        Change::Gone { .. } | Change::Listed { .. } | Change::Listing { .. } => {}
    })
}
