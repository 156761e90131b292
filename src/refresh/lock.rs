//! One refresh per key across every mount of one backing dir (SPEC §13): while a mount runs a
//! key's refresh it holds an exclusive `flock` on `.cachetta/locks/<key>.lock` at the backing
//! root. The lock dies with its holder (a killed mount never blocks the others), and the
//! descriptor is close-on-exec, so a refresh command never inherits it.
//!
//! Lock files are never removed: removing a lock file while another mount waits on it would
//! let two mounts lock two different files. There is one per key ever refreshed, empty.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustix::fs::{FlockOperation, Mode, OFlags};
use sha2::{Digest, Sha256};

use super::command::Control;
use crate::store::{Store, RESERVED_DIR};

/// Longest lock file name kept readable; longer keys get a digest instead.
const NAME_MAX: usize = 200;

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub(super) struct KeyLock {
    file: File,
}

impl Drop for KeyLock {
    /// Unlocked, not only closed: a process being spawned at this moment (a refresh command
    /// of another key, between its fork and its exec) holds a copy of every descriptor, and
    /// the lock would live until that copy closed. An explicit unlock releases it whatever
    /// copies exist. (A refresh seen "running elsewhere" that way was skipped: CI, once.)
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.file, FlockOperation::Unlock);
    }
}

/// Whether this mount may run the key's refresh.
#[derive(Debug)]
pub(super) enum Taken {
    Ours(KeyLock),
    /// Another mount (or another refresher of this backing dir) is running it.
    Elsewhere,
}

/// The directory of the lock files, relative to the backing root.
fn lock_dir() -> PathBuf {
    Path::new(RESERVED_DIR).join("locks")
}

/// The lock file of `key`: the key with `%` and `/` escaped (`weather%2Fparis.json.lock`), or a
/// SHA-256 digest of it when that would be too long for a file name. Distinct keys never share
/// a file.
fn lock_name(key: &Path) -> OsString {
    let mut name = Vec::new();
    for &b in key.as_os_str().as_bytes() {
        match b {
            b'%' => name.extend_from_slice(b"%25"),
            b'/' => name.extend_from_slice(b"%2F"),
            b => name.push(b),
        }
    }
    if name.len() > NAME_MAX {
        let digest = Sha256::digest(key.as_os_str().as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        name = format!("%sha256-{hex}").into_bytes();
    }
    name.extend_from_slice(b".lock");
    OsString::from_vec(name)
}

/// Tries at making the lock dir and opening a lock file in it before giving up.
const CREATE_TRIES: u32 = 20;

/// Take `key`'s lock without waiting.
pub(super) fn try_lock(store: &Store, key: &Path) -> io::Result<Taken> {
    let file = open_lock_file(store, &lock_dir(), &lock_name(key))?;
    match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Taken::Ours(KeyLock { file })),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(Taken::Elsewhere),
        Err(e) => Err(e.into()),
    }
}

/// Open (creating it and its directory if need be) the lock file `name` in `dir`.
///
/// Two mounts on two GlusterFS clients making the lock dir at the same moment: one's `mkdir`
/// answers `EEXIST` while the other's is still in progress, and the directory does not resolve
/// there yet (`ENOENT`) for a few milliseconds. Taken for "cannot lock", that ran a key's
/// refresh on both mounts (the shared test, 1 run in 6). So the dir is made and the file
/// opened again, after a growing pause, until it works or `CREATE_TRIES` have failed.
fn open_lock_file(store: &Store, dir: &Path, name: &OsStr) -> io::Result<File> {
    let path = dir.join(name);
    // Read-write: on NFS, flock is a POSIX lock, and an exclusive one needs a writable file.
    let flags = OFlags::RDWR | OFlags::CREATE;
    let missing = |e: &io::Error| e.raw_os_error() == Some(libc::ENOENT);
    let mut tries = 0;
    loop {
        let err = match store.open_file(&path, flags, Mode::from_raw_mode(0o666)) {
            Ok((file, _)) => return Ok(file),
            Err(e) => e,
        };
        tries += 1;
        if !missing(&err) || tries >= CREATE_TRIES {
            return Err(err);
        }
        if tries > 1 {
            std::thread::sleep(Duration::from_millis(u64::from(tries * 2).min(50)));
        }
        match store.mkdir_all(dir) {
            Ok(()) => {}
            Err(e) if missing(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Wait until the mount holding `key`'s lock lets go of it (its refresh is over), `deadline`
/// passes or the refresh is cancelled here. Whether it let go. The lock is checked often at
/// first, then every 100 ms: a lock held elsewhere may live on another machine, where no
/// notification reaches us.
pub(super) fn wait_released(
    store: &Store,
    key: &Path,
    deadline: Instant,
    control: &Mutex<Control>,
) -> io::Result<bool> {
    let mut pause = Duration::from_millis(5);
    loop {
        if let Taken::Ours(lock) = try_lock(store, key)? {
            drop(lock);
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline || control.lock().is_cancelled() {
            return Ok(false);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_its_own_lock_file_name() {
        assert_eq!(lock_name(Path::new("x.json")), "x.json.lock");
        assert_eq!(
            lock_name(Path::new("weather/paris.json")),
            "weather%2Fparis.json.lock"
        );
        assert_ne!(
            lock_name(Path::new("a/b.json")),
            lock_name(Path::new("a%2Fb.json"))
        );
        let long = "d/".repeat(150) + "x.json";
        let name = lock_name(Path::new(&long));
        assert!(name.len() < 100 && name.as_bytes().starts_with(b"%sha256-"));
    }

    #[test]
    fn a_lock_dir_that_cannot_be_made_is_an_error_at_once_and_a_missing_one_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        std::fs::create_dir(dir.path().join(RESERVED_DIR)).unwrap();
        std::fs::write(dir.path().join(lock_dir()), "not a dir").unwrap();
        let started = Instant::now();
        let err = try_lock(&store, Path::new("x.json")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR), "{err}");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "no retrying"
        );
        std::fs::remove_file(dir.path().join(lock_dir())).unwrap();
        assert!(matches!(
            try_lock(&store, Path::new("x.json")).unwrap(),
            Taken::Ours(_)
        ));
    }

    #[test]
    fn a_held_lock_is_elsewhere_until_it_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let one = Store::open(dir.path(), false).unwrap();
        let other = Store::open(dir.path(), false).unwrap();
        let key = Path::new("w/x.json");
        let Taken::Ours(held) = try_lock(&one, key).unwrap() else {
            panic!("the first taker holds it");
        };
        assert!(matches!(try_lock(&other, key).unwrap(), Taken::Elsewhere));
        assert!(matches!(
            try_lock(&other, Path::new("y.json")).unwrap(),
            Taken::Ours(_)
        ));
        let control = Mutex::new(Control::default());
        let soon = Instant::now() + Duration::from_millis(30);
        assert!(!wait_released(&other, key, soon, &control).unwrap());
        drop(held);
        let later = Instant::now() + Duration::from_secs(5);
        assert!(wait_released(&other, key, later, &control).unwrap());
        assert!(dir.path().join(".cachetta/locks/w%2Fx.json.lock").is_file());
        // A copy of the descriptor (a child between fork and exec) does not keep it locked.
        let Taken::Ours(held) = try_lock(&one, key).unwrap() else {
            panic!("free again");
        };
        let copy = held.file.try_clone().unwrap();
        drop(held);
        assert!(
            matches!(try_lock(&other, key).unwrap(), Taken::Ours(_)),
            "released though a copy of its descriptor is open"
        );
        drop(copy);
    }
}
