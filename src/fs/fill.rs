//! Refresh commands as the filesystem sees them: a stale read starts one, a missed lookup
//! under a `fill_on_miss` rule waits for one, and the directories such rules name are shown
//! (and created on first use) before they exist.

use std::ffi::OsStr;
use std::path::Path;

use super::*;
use crate::refresh::{Outcome, Reason};
use crate::store;

impl CacheFs {
    /// The refresh state of a key, for `info` and its attributes.
    pub(super) fn with_refresh_state(
        &self,
        key: &Path,
        mut info: crate::inspect::Info,
    ) -> crate::inspect::Info {
        info.refreshing = self.refresher.is_running(key);
        info.refresh_error = self.refresher.last_error(key);
        info
    }

    /// A stale entry was opened for reading: refresh it in the background (shared with any
    /// refresh already running; nothing during its backoff). Reading never waits for it.
    pub(super) fn on_stale_read(&self, key: &Path) {
        self.refresher.start(key, Reason::Stale);
    }

    /// Whether a missed `.json` lookup should run the key's refresh and wait for it.
    pub fn may_fill(&self, parent: u64, name: &OsStr) -> bool {
        if !store::is_entry_name(name) {
            return false;
        }
        let Ok(key) = self.child_path(parent, name) else {
            return false;
        };
        let settings = self.config.settings_for(key.as_os_str()).settings;
        settings.fill_on_miss && settings.refresh.is_some()
    }

    /// Read-through: a lookup that missed runs the key's refresh (or joins the one running),
    /// and `reply` gets the new entry, or `ENOENT`, once it ends. No thread waits for it: the
    /// refresh worker replies (so a flood of missed lookups costs no thread each).
    pub fn lookup_filling(
        self: &Arc<Self>,
        parent: u64,
        name: &OsStr,
        reply: impl FnOnce(FsResult<Entry>) + Send + 'static,
    ) {
        let key = match self.lookup_quietly(parent, name) {
            Err(e) if e.errno == libc::ENOENT => match self.child_path(parent, name) {
                Ok(key) => key,
                Err(e) => return reply(Err(e)),
            },
            other => return reply(other),
        };
        let (fs, name, run_key) = (self.clone(), name.to_os_string(), key.clone());
        let then = move |outcome: Outcome| {
            reply(match outcome {
                Outcome::Published => fs.lookup_quietly(parent, &name),
                outcome => {
                    debug!(key = %key.display(), ?outcome, "read-through gave no entry");
                    Err(errno(libc::ENOENT))
                }
            })
        };
        self.refresher
            .run_then(&run_key, Reason::Miss, Box::new(then));
    }

    /// Before creating something in `dir`: a fill directory shown before it exists is made
    /// in the backing dir now (with any missing parents), as a fill would.
    pub(super) fn materialize_fill_dir(&self, dir: &Path) -> FsResult<()> {
        if self.is_fill_dir(dir) && self.store.stat(dir).is_err() {
            self.store
                .mkdir_all(dir)
                .map_err(|e| FsError::io(dir.display(), e))?;
        }
        Ok(())
    }

    pub(super) fn is_fill_dir(&self, key: &Path) -> bool {
        self.fill_dirs.iter().any(|d| d == key)
    }

    /// A directory a fill rule names, before its first fill creates it in the backing dir.
    pub(super) fn fill_dir_attr(&self, ino: u64) -> Attr {
        let root = self.store.stat(Path::new("")).ok();
        let now = self.clock.now();
        let (uid, gid) = root.map_or((0, 0), |r| (r.uid, r.gid));
        Attr::synthetic(ino, Kind::Dir, 0o755, uid, gid, now)
    }
}
