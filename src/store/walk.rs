//! Walking the backing dir: every regular file under a directory, without following
//! anything and without cachetta's own `.cachetta/`. For `cachetta ls`, gc and their tests;
//! knows nothing of entries or expiry.

use std::io;
use std::path::{Path, PathBuf};

use super::{is_reserved, Kind, Stat, Store};

/// A regular file found by [`walk_files`].
#[derive(Debug, Clone)]
pub struct FoundFile {
    /// Path relative to the backing root.
    pub key: PathBuf,
    pub stat: Stat,
}

/// The regular files under a directory, and the subdirectories that could not be read.
#[derive(Debug, Default)]
pub struct Walk {
    pub files: Vec<FoundFile>,
    pub unreadable: Vec<(PathBuf, io::Error)>,
}

/// Every regular file under `dir` (relative to the backing root), recursively. Symlinks,
/// special files, cachetta's own `.cachetta/` and anything that vanishes meanwhile are
/// skipped; nothing is followed.
/// Fails only when `dir` itself cannot be read.
pub fn walk_files(store: &Store, dir: &Path) -> io::Result<Walk> {
    let mut walk = Walk::default();
    let mut pending = vec![dir.to_path_buf()];
    let mut first = true;
    while let Some(current) = pending.pop() {
        let items = match store.read_dir(&current) {
            Ok(items) => items,
            Err(e) if first => return Err(e),
            Err(e) => {
                walk.unreadable.push((current, e));
                continue;
            }
        };
        first = false;
        for item in items {
            let key = current.join(&item.name);
            if item.kind == Some(Kind::Other) || is_reserved(&key) {
                continue;
            }
            let Ok(stat) = store.stat(&key) else {
                continue;
            };
            match stat.kind {
                Kind::Dir => pending.push(key),
                Kind::File => walk.files.push(FoundFile { key, stat }),
                Kind::Other => {}
            }
        }
    }
    Ok(walk)
}
