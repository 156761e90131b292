//! The library's error type. "No usable entry" is not an error: reads answer `Ok(None)` for a
//! missing, expired or corrupt entry, as the seed's `read_cache` yields `None`.

use std::io;
use std::path::PathBuf;

use crate::hash::HashError;

/// What can go wrong calling the library, beyond a cache miss.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file system refused (permissions, disk full, a file where a directory should be).
    /// Never "not found": a missing entry is a miss.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The value has no JSON form (serde_json refused it, e.g. a map with tuple keys).
    #[error("cannot write the value as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The call's arguments have no cache key (see [`crate::hash::try_hash`]).
    #[error(transparent)]
    Args(#[from] HashError),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Result` with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
