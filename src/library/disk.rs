//! One entry file at an absolute path, through the filesystem's [`Store`]: a store opened at
//! the entry's directory reads and replaces the entry by name, never following a symlink at
//! the entry itself, and writes stage the new content in that same directory and `rename` it
//! into place. The directories on the way to the entry are the caller's (trusted, as in the
//! seed, where `path` is developer input). Sweeping is gc's ([`crate::gc::remove_expired`]).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use rustix::fs::{Mode, OFlags};

use crate::publish::{publish_entry, Checked, PolicyFrom};
use crate::store::{self, Kind, Stat, Store, Version};

/// Mode of a new entry: the seed writes through `mkstemp`, so its cache files are private.
/// Replacing an entry keeps the mode it had.
pub(crate) const NEW_ENTRY_MODE: u32 = 0o600;

fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
    )
}

/// One `lstat` of `path`: `None` when nothing is there.
pub(crate) fn meta(path: &Path) -> io::Result<Option<Stat>> {
    match Stat::of_path(path) {
        Ok(stat) => Ok(Some(stat)),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The entry's directory and name (a relative path's directory is the current one).
pub(crate) fn split(path: &Path) -> (&Path, &Path) {
    let (dir, name) = store::split(path);
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    (dir, Path::new(name))
}

/// A store at an existing directory; `None` when it does not exist (reads never create).
pub(crate) fn existing_store(dir: &Path) -> io::Result<Option<Store>> {
    match std::fs::metadata(dir) {
        Ok(md) if md.is_dir() => Store::open(dir, false).map(Some),
        Ok(_) => Ok(None),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The regular file at `path`, open for reading, and its stat; `None` when there is none (or
/// something that is not a regular file, which is never served).
pub(crate) fn open(path: &Path) -> io::Result<Option<(File, Stat)>> {
    let (dir, name) = split(path);
    let Some(store) = existing_store(dir)? else {
        return Ok(None);
    };
    match store.open_file(name, OFlags::RDONLY, Mode::empty()) {
        Ok(found) => Ok(Some(found)),
        Err(e) if is_missing(&e) || e.raw_os_error() == Some(libc::EISDIR) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The whole content of the regular file at `path` and the stat it was read from.
pub(crate) fn load(path: &Path) -> io::Result<Option<(Vec<u8>, Stat)>> {
    let Some((file, stat)) = open(path)? else {
        return Ok(None);
    };
    Ok(Some((store::read_all(&file, u64::MAX)?, stat)))
}

/// Replace the entry at `path` with `bytes`, atomically, with mtime `mtime`, creating its
/// directories. Returns the version now on disk.
pub(crate) fn publish(path: &Path, bytes: &[u8], mtime: SystemTime) -> io::Result<Version> {
    let (dir, name) = split(path);
    let store = Store::open(dir, false)?;
    // The entry keeps its mode and its `user.*` attributes (its own policy among them).
    let old = store.open_file(name, OFlags::RDONLY, Mode::empty()).ok();
    let perm = old
        .as_ref()
        .map_or(NEW_ENTRY_MODE, |(_, st)| u32::from(st.perm));
    let mut staging = match store.create_staging(Path::new(""), perm) {
        Ok(staging) => staging,
        // A cachetta mount reserves the staging prefix for itself: write there as any program
        // does, through a scratch file renamed onto the entry (which the mount validates).
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            return publish_via_scratch(&store, name, bytes, perm, mtime);
        }
        Err(e) => return Err(e),
    };
    if let Some((old, _)) = &old {
        store::copy_user_xattrs(old, &staging.file);
    }
    if let Err(e) = staging.file.write_all(bytes) {
        store.discard(staging);
        return Err(e);
    }
    let content = Checked::serialized(staging);
    let published = publish_entry(&store, content, name, Some(mtime), PolicyFrom::Entry)?;
    match published.version {
        Some(version) => Ok(version),
        None => Ok(Store::fstat(&published.file)?.version()),
    }
}

/// The write idiom of SPEC §3 for a directory that refuses staging names: a scratch file
/// (`.name.json.<pid>.<n>.tmp`: not an entry, never listed, removed by gc if left behind),
/// renamed onto the entry. The mount it is written through publishes it (`crate::publish`):
/// it checks the content and carries the entry's policy attributes.
fn publish_via_scratch(
    store: &Store,
    name: &Path,
    bytes: &[u8],
    perm: u32,
    mtime: SystemTime,
) -> io::Result<Version> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let (scratch, file) = loop {
        let mut scratch = OsString::from(".");
        scratch.push(name.as_os_str());
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        scratch.push(format!(".{}.{seq}.tmp", std::process::id()));
        let scratch = PathBuf::from(scratch);
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL;
        match store.open_file(&scratch, flags, Mode::from_raw_mode(perm)) {
            Ok((file, _)) => break (scratch, file),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(e) => return Err(e),
        }
    };
    let written = (&file)
        .write_all(bytes)
        .and_then(|()| file.set_modified(mtime))
        .and_then(|()| store.rename(&scratch, name, false));
    if let Err(e) = written {
        let _ = store.unlink(&scratch);
        return Err(e);
    }
    Ok(Store::fstat(&file)?.version())
}

/// Delete the file at `path`; `false` when there was none.
pub(crate) fn remove(path: &Path) -> io::Result<bool> {
    let (dir, name) = split(path);
    let Some(store) = existing_store(dir)? else {
        return Ok(false);
    };
    match store.unlink(name) {
        Ok(()) => Ok(true),
        Err(e) if is_missing(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Remove `path` wholesale: a folder with everything in it, or one file.
pub(crate) fn remove_all(path: &Path) -> io::Result<()> {
    match meta(path)? {
        None => Ok(()),
        Some(m) if m.kind == Kind::Dir => match std::fs::remove_dir_all(path) {
            Err(e) if is_missing(&e) => Ok(()),
            other => other,
        },
        Some(_) => remove(path).map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn meta_version_matches_the_stores_for_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        let written = publish(&path, b"{\"a\":1}", SystemTime::now()).unwrap();
        assert_eq!(meta(&path).unwrap().unwrap().version(), written);
        let (bytes, stat) = load(&path).unwrap().unwrap();
        assert_eq!(bytes, b"{\"a\":1}");
        assert_eq!(stat.version(), written);
    }

    #[test]
    fn publish_creates_directories_and_leaves_no_staging_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/x.json");
        publish(&path, b"1", SystemTime::now()).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.json")]);
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, NEW_ENTRY_MODE);
    }

    #[test]
    fn replacing_keeps_the_entrys_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        std::fs::write(&path, "1").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o640))
            .unwrap();
        publish(&path, b"2", SystemTime::now()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o640);
    }

    #[test]
    fn reading_never_creates_directories_or_follows_a_symlinked_entry() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("nope/x.json")).unwrap().is_none());
        assert!(!dir.path().join("nope").exists());
        std::fs::write(dir.path().join("real.json"), "1").unwrap();
        std::os::unix::fs::symlink(dir.path().join("real.json"), dir.path().join("l.json"))
            .unwrap();
        assert!(load(&dir.path().join("l.json")).unwrap().is_none());
        assert_eq!(
            meta(&dir.path().join("l.json")).unwrap().unwrap().kind,
            Kind::Other
        );
    }
}
