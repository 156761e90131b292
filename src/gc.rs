//! Garbage collection of the backing dir: expired entries, and scratch or staging files left
//! alone for over an hour. Used by `cachetta gc` and by the daemon's periodic sweep.
//!
//! Never touches fresh, stale or corrupt entries (a corrupt file is kept for the user to look
//! at), directories, symlinks or special files. A file is removed only if it is still the very
//! file that was judged: it is first renamed aside, checked, and put back if it changed.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rustix::fs::{Mode, OFlags};
use tracing::warn;

use crate::config::Config;
use crate::entry_policy::EntryPolicy;
use crate::inspect;
use crate::store::FoundFile;
use crate::policy::{self, EntryState, Timing};
use crate::store::{self, Kind, Stat, Store, STAGING_PREFIX};

/// Scratch and staging files untouched for this long are abandoned and swept; younger ones
/// may belong to a write in progress.
pub const SCRATCH_MAX_AGE: Duration = Duration::from_secs(3600);

/// A staging file nobody holds is a leftover once it is this old (its writer locks it within
/// microseconds of creating it).
pub const STAGING_MAX_AGE: Duration = Duration::from_secs(10);

/// Why a file was (or would be) removed.
pub const REASON_EXPIRED: &str = "expired";
pub const REASON_SCRATCH: &str = "scratch";
pub const REASON_STAGING: &str = "staging";

/// One file removed by [`sweep`] (or that would be, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Path relative to the backing root.
    pub key: PathBuf,
    /// [`REASON_EXPIRED`], [`REASON_SCRATCH`] or [`REASON_STAGING`].
    pub reason: &'static str,
}

/// Remove expired entries and abandoned scratch/staging files under the backing root, as of
/// `now`; with `dry_run`, only list them. Fails only when the root cannot be read; problems
/// with single files or subdirectories are logged and skipped.
pub fn sweep(
    store: &Store,
    config: &Config,
    now: SystemTime,
    dry_run: bool,
) -> io::Result<Vec<Swept>> {
    sweep_reporting(store, config, now, dry_run, &mut |_, _| {})
}

/// [`sweep`], telling `progress` (files checked, files found) as it goes: for a progress bar.
pub fn sweep_reporting(
    store: &Store,
    config: &Config,
    now: SystemTime,
    dry_run: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> io::Result<Vec<Swept>> {
    let walk = store::walk_files(store, Path::new(""))?;
    for (dir, e) in &walk.unreadable {
        warn!(dir = %dir.display(), "gc: cannot read directory: {e}");
    }
    let mut swept = Vec::new();
    let total = walk.files.len();
    for (checked, found) in walk.files.into_iter().enumerate() {
        progress(checked, total);
        let Some(reason) = reason_to_remove(store, config, &found, now) else {
            continue;
        };
        if !dry_run {
            match remove_if_unchanged(store, &found.key, &found.stat) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    warn!(key = %found.key.display(), "gc: cannot remove: {e}");
                    continue;
                }
            }
        }
        swept.push(Swept {
            key: found.key,
            reason,
        });
    }
    swept.sort_by(|a, b| {
        a.key
            .as_os_str()
            .as_encoded_bytes()
            .cmp(b.key.as_os_str().as_encoded_bytes())
    });
    Ok(swept)
}

/// Why `found` should go, or `None` if it stays.
fn reason_to_remove(
    store: &Store,
    config: &Config,
    found: &FoundFile,
    now: SystemTime,
) -> Option<&'static str> {
    let name = found.key.file_name().unwrap_or_default();
    if !store::is_entry_name(name) {
        // A future mtime is not old: age counts as zero, as for entries.
        let age = now.duration_since(found.stat.mtime).unwrap_or_default();
        let staging = store::is_staging_name(name);
        // A staging file's writer locks it the moment it creates it, so one nobody holds for
        // a little while is a leftover of a killed daemon. Scratch files are the user's: an
        // hour, as SPEC §4 says.
        let max_age = if staging {
            STAGING_MAX_AGE
        } else {
            SCRATCH_MAX_AGE
        };
        // A file a writer holds (an idle writer, an editor's swap file) is not abandoned.
        if age < max_age || store.is_held(&found.key) {
            return None;
        }
        return Some(if staging {
            REASON_STAGING
        } else {
            REASON_SCRATCH
        });
    }
    let settings = config.settings_for(found.key.as_os_str()).settings;
    let timing = |policy: &EntryPolicy| policy.timing_under(settings);
    is_expired_entry(store, found, &timing, config.max_entry_bytes, now).then_some(REASON_EXPIRED)
}

/// Whether the entry `found` is expired at `now` under the timing `timing_of` gives for its own
/// policy attributes, still the file the walk saw, and valid JSON within `limit` bytes (a
/// corrupt entry is kept for the user to look at).
fn is_expired_entry(
    store: &Store,
    found: &FoundFile,
    timing_of: &dyn Fn(&EntryPolicy) -> Timing,
    limit: u64,
    now: SystemTime,
) -> bool {
    let Ok((file, st)) = store.open_file(&found.key, OFlags::RDONLY, Mode::empty()) else {
        return false;
    };
    let timing = timing_of(&EntryPolicy::of_file(&file));
    same_file(&st, &found.stat)
        && policy::evaluate(st.mtime, now, timing).state == EntryState::Expired
        && inspect::content_is_valid(&file, limit)
}

/// Remove the expired entries at `keys` (relative to the store) and, for each directory
/// among them, beneath it, judged by one `timing` and each entry's own policy attributes, with
/// gc's care: corrupt entries and files
/// replaced meanwhile stay. Symlinks are never followed and directories stay. Returns the
/// keys removed. The library's `clear`.
pub(crate) fn remove_expired(
    store: &Store,
    keys: &[PathBuf],
    timing: Timing,
    now: SystemTime,
) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for key in keys {
        match store.stat(key) {
            Ok(stat) if stat.kind == Kind::Dir => {
                found.extend(store::walk_files(store, key)?.files)
            }
            Ok(stat) if stat.kind == Kind::File => found.push(FoundFile {
                key: key.clone(),
                stat,
            }),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    let mut removed = Vec::new();
    for found in found {
        let name = found.key.file_name().unwrap_or_default();
        let timing_of = |policy: &EntryPolicy| policy.apply(timing, false);
        if !store::is_entry_name(name) || !is_expired_entry(store, &found, &timing_of, u64::MAX, now)
        {
            continue;
        }
        match remove_if_unchanged(store, &found.key, &found.stat) {
            Ok(true) => removed.push(found.key),
            Ok(false) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            // A cachetta mount reserves the staging names the file is set aside under; it
            // judges its own entries, so a plain unlink is all it takes there.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => match store.unlink(&found.key) {
                Ok(()) => removed.push(found.key),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// The same inode with the same content version (ctime is left out: renaming changes it).
fn same_file(a: &Stat, b: &Stat) -> bool {
    (a.dev, a.ino, a.size, a.mtime) == (b.dev, b.ino, b.size, b.mtime)
}

/// Remove `key` if it is still the file `judged`: rename it aside (a hidden staging name, so
/// a crash leaves only something gc removes later), compare, then unlink or put it back.
/// Returns whether it was removed. A writer that replaces the entry meanwhile always wins.
fn remove_if_unchanged(store: &Store, key: &Path, judged: &Stat) -> io::Result<bool> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let aside_name = format!(
        "{STAGING_PREFIX}gc.{}.{:016x}.{}.tmp",
        std::process::id(),
        process_token(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let aside = key.with_file_name(aside_name);
    // The name is this process's alone (pid, a random token for other machines' processes
    // with the same pid, a sequence), so a plain rename replaces nothing: no
    // `RENAME_NOREPLACE`, which NFS and GlusterFS refuse.
    store.rename(key, &aside, false)?;
    let moved = store.stat(&aside)?;
    if same_file(&moved, judged) {
        store.unlink(&aside)?;
        return Ok(true);
    }
    match store.rename(&aside, key, true) {
        Ok(()) => Ok(false),
        // An even newer file took the name: the one set aside is superseded anyway.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            store.unlink(&aside)?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// A random number drawn once per process (std's hasher keys come from the OS's randomness).
fn process_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static TOKEN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TOKEN.get_or_init(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    })
}

/// Count of swept files per reason, e.g. `3 (2 expired, 1 scratch)`, for summaries.
pub fn summary(swept: &[Swept]) -> String {
    let mut parts = Vec::new();
    for reason in [REASON_EXPIRED, REASON_SCRATCH, REASON_STAGING] {
        let n = swept.iter().filter(|s| s.reason == reason).count();
        if n > 0 {
            parts.push(format!("{n} {reason}"));
        }
    }
    let files = if swept.len() == 1 { "file" } else { "files" };
    if parts.is_empty() {
        format!("{} {files}", swept.len())
    } else {
        format!("{} {files} ({})", swept.len(), parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    /// duration 60 s, stale 30 s.
    fn setup() -> (tempfile::TempDir, Store, Config) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let config = Config::from_toml(
            "duration = 60\nstale = 30\n",
            Path::new("test.toml"),
            &crate::config::Overrides::default(),
        )
        .unwrap();
        (dir, store, config)
    }

    fn put(dir: &Path, key: &str, content: &str, age_secs: u64) {
        let path = dir.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(now() - Duration::from_secs(age_secs))
            .unwrap();
    }

    fn keys(swept: &[Swept]) -> Vec<(String, &'static str)> {
        swept
            .iter()
            .map(|s| (s.key.to_string_lossy().into_owned(), s.reason))
            .collect()
    }

    /// One of everything; returns what a sweep must remove.
    fn populate(dir: &Path) -> Vec<(String, &'static str)> {
        put(dir, "fresh.json", "{}", 10);
        put(dir, "stale.json", "{}", 70);
        put(dir, "expired.json", "{}", 90);
        put(dir, "sub/old.json", "[1]", 100_000);
        put(dir, "corrupt.json", "{", 100_000);
        put(dir, "notes.txt", "x", 3600);
        put(dir, "young.txt", "x", 3599);
        put(dir, "sub/.cachetta-staging.1.2.tmp", "{\"half", 7200);
        put(dir, ".cachetta-staging.9.9.tmp", "{\"half", 5);
        put(dir, ".cachetta-staging.8.8.tmp", "{\"half", 60);
        std::fs::create_dir_all(dir.join("empty/dir")).unwrap();
        std::os::unix::fs::symlink("expired.json", dir.join("link.json")).unwrap();
        vec![
            (".cachetta-staging.8.8.tmp".into(), REASON_STAGING),
            ("expired.json".into(), REASON_EXPIRED),
            ("notes.txt".into(), REASON_SCRATCH),
            ("sub/.cachetta-staging.1.2.tmp".into(), REASON_STAGING),
            ("sub/old.json".into(), REASON_EXPIRED),
        ]
    }

    #[test]
    fn sweep_removes_expired_entries_and_old_scratch_only() {
        let (dir, store, config) = setup();
        let want = populate(dir.path());
        let swept = sweep(&store, &config, now(), false).unwrap();
        assert_eq!(keys(&swept), want);
        for (key, _) in &want {
            assert!(!dir.path().join(key).exists(), "{key}");
        }
        for kept in [
            "fresh.json",
            "stale.json",
            "corrupt.json",
            "young.txt",
            ".cachetta-staging.9.9.tmp",
            "empty/dir",
        ] {
            assert!(dir.path().join(kept).exists(), "{kept}");
        }
        assert!(dir.path().join("link.json").symlink_metadata().is_ok());
        assert!(sweep(&store, &config, now(), false).unwrap().is_empty());
    }

    #[test]
    fn dry_run_lists_the_same_files_and_removes_nothing() {
        let (dir, store, config) = setup();
        let want = populate(dir.path());
        let before = store::walk_files(&store, Path::new(""))
            .unwrap()
            .files
            .len();
        let listed = sweep(&store, &config, now(), true).unwrap();
        assert_eq!(keys(&listed), want);
        let after = store::walk_files(&store, Path::new(""))
            .unwrap()
            .files
            .len();
        assert_eq!(before, after);
    }

    #[test]
    fn future_mtime_scratch_and_entries_are_kept() {
        let (dir, store, config) = setup();
        put(dir.path(), "x.json", "{}", 0);
        put(dir.path(), "x.tmp", "x", 0);
        let later = now() + Duration::from_secs(100_000);
        for name in ["x.json", "x.tmp"] {
            let file = std::fs::File::options()
                .write(true)
                .open(dir.path().join(name))
                .unwrap();
            file.set_modified(later).unwrap();
        }
        assert!(sweep(&store, &config, now(), false).unwrap().is_empty());
    }

    #[test]
    fn a_file_replaced_after_judging_is_put_back() {
        let (dir, store, _) = setup();
        put(dir.path(), "e.json", "{\"old\":1}", 1000);
        let judged = store.stat(Path::new("e.json")).unwrap();
        std::fs::write(dir.path().join("new.tmp"), "{\"new\":2}").unwrap();
        std::fs::rename(dir.path().join("new.tmp"), dir.path().join("e.json")).unwrap();
        assert!(!remove_if_unchanged(&store, Path::new("e.json"), &judged).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("e.json")).unwrap(),
            "{\"new\":2}"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("e.json")]);
        let current = store.stat(Path::new("e.json")).unwrap();
        assert!(remove_if_unchanged(&store, Path::new("e.json"), &current).unwrap());
        assert!(!dir.path().join("e.json").exists());
    }

    #[test]
    fn remove_expired_takes_one_timing_and_keeps_corrupt_and_young_entries() {
        let (dir, store, _) = setup();
        populate(dir.path());
        put(dir.path(), "other.json", "{}", 90);
        let timing = Timing {
            duration: Duration::from_secs(60),
            stale: Duration::from_secs(30),
            stale_if_error: Duration::ZERO,
        };
        let keys = [
            PathBuf::from("expired.json"),
            PathBuf::from("sub"),
            PathBuf::from("corrupt.json"),
            PathBuf::from("stale.json"),
            PathBuf::from("missing.json"),
            PathBuf::from("link.json"),
        ];
        let removed = remove_expired(&store, &keys, timing, now()).unwrap();
        assert_eq!(
            removed,
            vec![PathBuf::from("expired.json"), PathBuf::from("sub/old.json")]
        );
        for kept in [
            "corrupt.json",
            "stale.json",
            "other.json",
            "sub/.cachetta-staging.1.2.tmp",
        ] {
            assert!(dir.path().join(kept).exists(), "{kept}");
        }
        assert!(dir.path().join("sub").is_dir(), "directories stay");
        assert!(
            std::fs::symlink_metadata(dir.path().join("link.json")).is_ok(),
            "a symlink is neither followed nor removed"
        );
    }

    #[test]
    fn summary_counts_reasons() {
        let swept = |reason| Swept {
            key: PathBuf::from("k"),
            reason,
        };
        assert_eq!(summary(&[]), "0 files");
        assert_eq!(summary(&[swept(REASON_SCRATCH)]), "1 file (1 scratch)");
        assert_eq!(
            summary(&[
                swept(REASON_EXPIRED),
                swept(REASON_EXPIRED),
                swept(REASON_STAGING)
            ]),
            "3 files (2 expired, 1 staging)"
        );
    }
}
