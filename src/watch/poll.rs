//! `--watch poll[=INTERVAL]`: every interval, the content version (device, inode, size, mtime
//! and ctime to the nanosecond) of every entry under the backing root is compared with the
//! last round's, and each entry that appeared, changed or went is reported. Nothing is missed
//! for being within the same second as an earlier change, and it works where no notification
//! reaches this machine (NFS, CephFS, JuiceFS written by other machines). One walk per
//! interval: its cost grows with the number of files, which is why inotify is the default.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::{entry_changed, Change, OnChange};
use crate::inspect;
use crate::store::{self, Store, Version};

/// Start polling `root` on a thread of its own; setting the returned flag stops it.
pub(super) fn spawn(
    on_change: OnChange,
    root: &Path,
    interval: Duration,
) -> io::Result<Arc<AtomicBool>> {
    let store = Store::open(root, false)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let mut seen = versions(&store).unwrap_or_default();
    std::thread::Builder::new()
        .name("watch-poll".into())
        .spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(interval);
                match versions(&store) {
                    Ok(now) => {
                        report(&on_change, &seen, &now);
                        seen = now;
                    }
                    Err(e) => {
                        warn!("polling the backing dir: {e}; treating everything as changed");
                        on_change(Change::Everything);
                    }
                }
            }
        })?;
    Ok(stop)
}

/// The content version of every entry file under the root.
fn versions(store: &Store) -> io::Result<HashMap<PathBuf, Version>> {
    let walk = inspect::walk_files(store, Path::new(""))?;
    Ok(walk
        .files
        .into_iter()
        .filter(|f| store::is_entry_name(f.key.file_name().unwrap_or_default()))
        .map(|f| (f.key, f.stat.version()))
        .collect())
}

/// Report what differs between two rounds.
fn report(
    on_change: &OnChange,
    before: &HashMap<PathBuf, Version>,
    now: &HashMap<PathBuf, Version>,
) {
    for (key, version) in now {
        if before.get(key) != Some(version) {
            entry_changed(on_change, key);
        }
    }
    for key in before.keys().filter(|key| !now.contains_key(*key)) {
        entry_changed(on_change, key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    #[test]
    fn changes_within_one_second_are_seen_and_cachettas_own_dir_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        std::fs::write(&path, "1").unwrap();
        let (sender, reports) = mpsc::channel();
        let on_change: OnChange = Box::new(move |change| {
            if let Change::Entry(rel) = change {
                let _ = sender.send(rel.to_path_buf());
            }
        });
        let stop = spawn(on_change, dir.path(), Duration::from_millis(20)).unwrap();
        std::fs::create_dir_all(dir.path().join(".cachetta/locks")).unwrap();
        std::fs::write(dir.path().join(".cachetta/locks/y.json"), "").unwrap();
        // Same size, same second: only the nanoseconds of mtime and ctime differ.
        std::fs::write(&path, "2").unwrap();
        let got = reports.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(got, PathBuf::from("x.json"));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            reports.recv_timeout(Duration::from_secs(5)).unwrap(),
            PathBuf::from("x.json")
        );
        let quiet = Instant::now() + Duration::from_millis(100);
        while let Some(left) = quiet.checked_duration_since(Instant::now()) {
            if let Ok(other) = reports.recv_timeout(left) {
                panic!("reported {other:?}");
            }
        }
        stop.store(true, Ordering::Relaxed);
    }
}
