//! Looking at an entry without reading its value: `exists`, `age` and `info` (the seed's
//! inspection methods), judged by the same policy as reads.

use std::path::Path;
use std::time::Duration;

use super::{cached, disk, Cachetta, Info};
use crate::entry_policy::EntryPolicy;
use crate::inspect;
use crate::policy::evaluate;
use crate::store::{Kind, Stat, Version};

impl Cachetta {
    /// Whether the entry file exists, fresh or not (the seed's `exists()`).
    pub fn exists(&self) -> bool {
        matches!(disk::meta(&self.entry_path()), Ok(Some(st)) if st.kind == Kind::File)
    }

    /// How long ago the entry file was written; zero when its mtime is in the future; `None`
    /// when there is none (the seed's `age()`).
    ///
    /// ```
    /// use cachetta::Cachetta;
    /// # let dir = tempfile::tempdir()?;
    /// let cache = Cachetta::new(dir.path().join("x.json"));
    /// assert_eq!(cache.age(), None);
    /// cache.write(&1)?;
    /// assert!(cache.age().unwrap() < std::time::Duration::from_secs(60));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn age(&self) -> Option<Duration> {
        match disk::meta(&self.entry_path()) {
            Ok(Some(st)) if st.kind == Kind::File => {
                Some(evaluate(st.mtime, self.clock.now(), self.timing()).age)
            }
            _ => None,
        }
    }

    /// Everything about the entry, as the mount's `user.cachetta.info` attribute reports it
    /// (the seed's `info()`, plus `state`, `ttl`, `size`, ...). Never fails: a file that cannot
    /// be read is reported the way a read sees it (`corrupt`, or not there).
    ///
    /// ```
    /// use cachetta::{Cachetta, InfoState};
    /// # let dir = tempfile::tempdir()?;
    /// let cache = Cachetta::new(dir.path().join("x.json"));
    /// assert!(!cache.info().exists);
    /// cache.write(&[1, 2])?;
    /// let info = cache.info();
    /// assert_eq!((info.exists, info.state, info.size), (true, Some(InfoState::Fresh), Some(5)));
    /// assert_eq!(info.ttl, Some(7 * 24 * 3600));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn info(&self) -> Info {
        let path = self.entry_path();
        let timing = self.timing();
        let mut info = match disk::meta(&path) {
            Ok(Some(st)) if st.kind == Kind::File => {
                let (valid, version) = self.judge(&path, st);
                let policy = EntryPolicy::of_path(&path);
                let timing = policy.apply(timing, false);
                let now = self.clock.now();
                let (mtime, size) = (version.mtime, version.size);
                Info::of_entry(path.clone(), mtime, size, valid, timing, now)
                    .with_overrides(&policy)
            }
            _ => Info::missing(path.clone(), timing),
        };
        // The library's own refresh state: its in-process single flight, not the mount's.
        info.refreshing = cached::is_running(&path);
        info.refresh_error = cached::last_error(&path);
        info
    }

    /// Whether the file at `path`, last seen as `seen`, holds valid JSON (streamed, as the
    /// mount judges it; never read whole), and the version of it that was judged.
    fn judge(&self, path: &Path, seen: Stat) -> (bool, Version) {
        let kept = self
            .hot
            .as_ref()
            .is_some_and(|hot| hot.get(&path.to_path_buf(), &seen.version()).is_some());
        if kept {
            return (true, seen.version());
        }
        match disk::open(path) {
            Ok(Some((file, stat))) => (inspect::content_is_valid(&file, u64::MAX), stat.version()),
            _ => (false, seen.version()),
        }
    }
}
