//! Refresh commands as the filesystem sees them: a stale read starts one, a missed lookup
//! under a `fill_on_miss` rule waits for one, and the directories such rules name are shown
//! (and created on first use) before they exist.

use std::ffi::OsStr;
use std::path::Path;

use super::judge::Grace;
use super::*;
use crate::refresh::{Outcome, Reason};
use crate::store;

/// A missed lookup that is to wait for its key's refresh (see [`CacheFs::fill`]).
#[derive(Debug)]
pub struct Fill {
    parent: u64,
    name: std::ffi::OsString,
    key: std::path::PathBuf,
    reason: Reason,
}

impl CacheFs {
    /// The refresh state of a key, for `info` and its attributes.
    pub(super) fn with_refresh_state(
        &self,
        key: &Path,
        mut info: crate::inspect::Info,
    ) -> crate::inspect::Info {
        info.refreshing = self.refresher.is_running(key);
        info.refresh_error = self.refresher.last_error(key);
        info.last_refresh = self.refresher.last_refresh(key).map(|last| last.to_info());
        info
    }

    /// An entry was opened for reading. A stale one starts its refresh in the background
    /// (stale-while-revalidate), one kept by stale-if-error retries its refresh, and a fresh
    /// one of an `early_refresh` key may start its refresh early. Each is shared with a refresh
    /// already running and held back by the key's backoff; reading never waits for it.
    pub(super) fn on_read(&self, key: &Path, verdict: &Verdict) {
        match verdict.state {
            EntryState::Stale => {
                self.refresher.start(key, Reason::Stale);
            }
            EntryState::Grace => {
                self.refresher.start(key, Reason::Error);
            }
            EntryState::Fresh if self.refreshes_early(key, verdict) => {
                self.refresher.start(key, Reason::Early);
            }
            EntryState::Fresh | EntryState::Expired => {}
        }
    }

    /// XFetch (Vattani et al., VLDB 2015): refresh with probability exp(−ttl / δ), ttl the time
    /// left until the entry turns stale and δ how long the key's last refresh took (1 s when
    /// none ran yet). A key read often is refreshed shortly before it would turn stale; one
    /// read rarely almost never early.
    fn refreshes_early(&self, key: &Path, verdict: &Verdict) -> bool {
        let settings = self.config.settings_for(key.as_os_str()).settings;
        if !settings.early_refresh || settings.refresh.is_none() {
            return false;
        }
        let delta = self
            .refresher
            .last_refresh(key)
            .map_or(1.0, |last| last.took.as_secs_f64())
            .max(0.001);
        let chance = (-verdict.ttl_secs.max(0.0) / delta).exp();
        fastrand::f64() < chance
    }

    /// Whether a missed `.json` lookup should run the key's refresh and wait for it: a
    /// `fill_on_miss` key (read-through), or an entry past its stale window that
    /// stale-if-error keeps if its refresh fails. What [`CacheFs::lookup_filling`] takes.
    pub(super) fn fill(&self, parent: u64, name: &OsStr) -> Option<Fill> {
        let reason = self.fill_reason(parent, name)?;
        let key = self.child_path(parent, name).ok()?;
        Some(Fill {
            parent,
            name: name.to_os_string(),
            key,
            reason,
        })
    }

    /// Whether a refresh may create `name` at any moment: an entry key whose rule has a
    /// refresh command, or a directory such a rule names.
    pub(super) fn may_be_refreshed(&self, parent: u64, name: &OsStr) -> bool {
        let Ok(key) = self.child_path(parent, name) else {
            return false;
        };
        if !store::is_entry_name(name) {
            return self.refresh_dirs.contains(&key);
        }
        let settings = self.config.settings_for(key.as_os_str()).settings;
        settings.refresh.is_some()
    }

    fn fill_reason(&self, parent: u64, name: &OsStr) -> Option<Reason> {
        if !store::is_entry_name(name) {
            return None;
        }
        let key = self.child_path(parent, name).ok()?;
        let settings = self.config.settings_for(key.as_os_str()).settings;
        settings.refresh.as_ref()?;
        match self.visible_as(&key, Grace::Serve) {
            Ok((_, Seen::Entry(verdict))) if verdict.state == EntryState::Grace => {
                Some(Reason::Error)
            }
            _ if settings.fill_on_miss => Some(Reason::Miss),
            _ => None,
        }
    }

    /// Read-through: a lookup that missed ([`CacheFs::fill`]) runs the key's refresh (or joins
    /// the one running), and `reply` gets the new entry, or `ENOENT`, once it ends. No thread
    /// waits for it: the refresh worker replies (so a flood of missed lookups costs no thread
    /// each).
    pub fn lookup_filling(
        self: &Arc<Self>,
        fill: Fill,
        reply: impl FnOnce(FsResult<Entry>) + Send + 'static,
    ) {
        let Fill {
            parent,
            name,
            key,
            reason,
        } = fill;
        let (fs, run_key) = (self.clone(), key.clone());
        let then = move |outcome: Outcome| {
            reply(match outcome {
                Outcome::Published | Outcome::Superseded => fs.lookup_quietly(parent, &name),
                // Stale-if-error: the refresh did not succeed, so the old entry is served.
                outcome if reason == Reason::Error => {
                    debug!(key = %key.display(), ?outcome, "refresh did not succeed; serving the entry stale-if-error keeps");
                    fs.lookup_as(parent, &name, Grace::Serve)
                }
                outcome => {
                    debug!(key = %key.display(), ?outcome, "read-through gave no entry");
                    Err(errno(libc::ENOENT))
                }
            })
        };
        self.refresher.run_then(&run_key, reason, Box::new(then));
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
