//! Sweeping a cache: `clear` deletes the entries that can no longer be served, `clear_force`
//! everything the cache's path covers (the seed's `clear()` and `clear(force=True)`).

use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;

use super::{disk, path, Cachetta, Error, Result};
use crate::policy::{evaluate, EntryState};

impl Cachetta {
    /// Delete the entries that can no longer be served (age ≥ duration + stale_duration): in a
    /// folder, every such `*.json` file beneath it (directories stay); for an entry path, the
    /// entry and its automatic-key siblings `name-<hash>.json`. Newer entries stay. The seed's
    /// `clear()`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cachetta::Cachetta;
    /// # let dir = tempfile::tempdir()?;
    /// let cache = Cachetta::new(dir.path().join("llm")).duration(Duration::from_secs(3600));
    /// cache.cached(&("a",), || 1)?;
    /// cache.clear()?;
    /// assert!(cache.at(&("a",))?.exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        let timing = self.timing();
        let now = self.clock.now();
        let doomed = move |mtime| evaluate(mtime, now, timing).state == EntryState::Expired;
        for target in self.clear_targets()? {
            let deleted = disk::sweep(&target, &doomed).map_err(|e| Error::io(&target, e))?;
            if let Some(hot) = &self.hot {
                for path in deleted {
                    hot.remove(&path);
                }
            }
        }
        Ok(())
    }

    /// Delete everything [`clear`](Cachetta::clear) looks at, whatever its age: the folder
    /// with all it holds (written again on the next write), or the entry and its
    /// automatic-key siblings. The seed's `clear(force=True)`.
    pub fn clear_force(&self) -> Result<()> {
        for target in self.clear_targets()? {
            disk::remove_all(&target).map_err(|e| Error::io(&target, e))?;
            if let Some(hot) = &self.hot {
                hot.remove_under(&target);
            }
        }
        Ok(())
    }

    /// The configured path (for a folder, the folder) and, for an entry path, its
    /// automatic-key siblings.
    fn clear_targets(&self) -> Result<Vec<PathBuf>> {
        let base = path::absolute(self.path.base(&())?);
        if path::is_folder(&base) {
            return Ok(vec![base]);
        }
        let mut targets = vec![base.clone()];
        let (Some(dir), Some(name)) = (base.parent(), base.file_name()) else {
            return Ok(targets);
        };
        let listing = match std::fs::read_dir(dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(targets),
            Err(e) => return Err(Error::io(dir, e)),
        };
        for item in listing {
            let item = item.map_err(|e| Error::io(dir, e))?;
            if path::is_auto_key_of(item.file_name().as_bytes(), name.as_bytes()) {
                targets.push(item.path());
            }
        }
        Ok(targets)
    }
}
