//! Sweeping a cache: `clear` deletes the entries that can no longer be served, `clear_force`
//! everything the cache's path covers (the seed's `clear()` and `clear(force=True)`). The
//! sweep is gc's ([`crate::gc::remove_expired`]).

use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;

use super::{disk, path, Cachetta, Error, Result};
use crate::gc;

impl Cachetta {
    /// Delete the entries that can no longer be served (age ≥ duration + stale_duration): in a
    /// folder, every such `*.json` file beneath it (directories stay); for an entry path, the
    /// entry and its automatic-key siblings `name-<hash>.json`. Newer entries stay. The seed's
    /// `clear()`, with the mount's gc rules: an entry that is not valid JSON is kept (for you
    /// to look at; `clear_force` removes it), and one replaced while being judged is kept.
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
        let (timing, now) = (self.timing(), self.clock.now());
        let targets = self.clear_targets()?;
        let Some(base) = targets.first() else {
            return Ok(());
        };
        // Every target lies in one directory: the folder's parent, or the entry's.
        let (dir, _) = disk::split(base);
        let Some(store) = disk::existing_store(dir).map_err(|e| Error::io(dir, e))? else {
            return Ok(());
        };
        let keys: Vec<PathBuf> = targets
            .iter()
            .filter_map(|t| t.file_name().map(PathBuf::from))
            .collect();
        gc::remove_expired(&store, &keys, timing, now).map_err(|e| Error::io(base, e))?;
        Ok(())
    }

    /// Delete everything [`clear`](Cachetta::clear) looks at, whatever its age: the folder
    /// with all it holds (written again on the next write), or the entry and its
    /// automatic-key siblings. The seed's `clear(force=True)`.
    pub fn clear_force(&self) -> Result<()> {
        for target in self.clear_targets()? {
            disk::remove_all(&target).map_err(|e| Error::io(&target, e))?;
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
