//! The one error type of the filesystem layer: an errno, a message, and how loudly to log it.

use std::io;

/// How a failed request is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// An ordinary answer such as ENOENT: not logged above debug.
    Quiet,
    /// A refused request the user should hear about (invalid JSON, too large).
    Warn,
    /// Something went wrong on our side or in the backing dir.
    Error,
    /// The backing dir's server is away (a distributed filesystem's client answered
    /// `ENOTCONN`): logged once per outage, not once per request.
    Outage,
}

/// What the backing dir's client answers while its server is away. The mount answers `EIO`
/// instead: to every tool (and to `cachetta mount`'s own check) `ENOTCONN` from a FUSE mount
/// means its daemon is dead.
pub fn is_outage(errno: i32) -> bool {
    matches!(
        errno,
        libc::ENOTCONN | libc::ECONNABORTED | libc::ESHUTDOWN | libc::EHOSTDOWN
    )
}

/// Whether an I/O error is the backing dir's server being away.
pub fn is_outage_error(e: &io::Error) -> bool {
    e.raw_os_error().is_some_and(is_outage)
}

/// An outage this long after the last failure it caused is a new one, logged again.
const OUTAGE_QUIET: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether a failure for an unreachable backing dir (a request's, the watcher's, the
/// journal's) starts an outage: the whole daemon logs one line per outage, not one per
/// request or per round.
pub fn outage_is_new() -> bool {
    static LAST: parking_lot::Mutex<Option<std::time::Instant>> = parking_lot::Mutex::new(None);
    let now = std::time::Instant::now();
    let mut last = LAST.lock();
    let new = last.is_none_or(|at| now.duration_since(at) > OUTAGE_QUIET);
    *last = Some(now);
    new
}

/// A failed filesystem request.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FsError {
    pub errno: i32,
    pub message: String,
    pub level: Level,
    /// The I/O error this one reports, if any (`std::error::Error::source`).
    #[source]
    pub source: Option<io::Error>,
}

impl FsError {
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        FsError {
            errno,
            message: message.into(),
            level: Level::Quiet,
            source: None,
        }
    }

    pub fn warn(errno: i32, message: impl Into<String>) -> Self {
        FsError {
            errno,
            message: message.into(),
            level: Level::Warn,
            source: None,
        }
    }

    pub fn errno(errno: i32) -> Self {
        FsError::new(errno, io::Error::from_raw_os_error(errno).to_string())
    }

    /// An I/O error on the backing dir, with what we were doing.
    pub fn io(context: impl std::fmt::Display, err: io::Error) -> Self {
        let errno = err.raw_os_error().unwrap_or(libc::EIO);
        if is_outage(errno) {
            return FsError {
                errno: libc::EIO,
                message: format!("{context}: {err}"),
                level: Level::Outage,
                source: Some(err),
            };
        }
        let level = match errno {
            // Ordinary answers, not faults: nothing there, not allowed, not supported.
            libc::ENOENT
            | libc::EEXIST
            | libc::ENOTEMPTY
            | libc::ENOTDIR
            | libc::EISDIR
            | libc::ENODATA
            | libc::ENOTSUP
            | libc::ERANGE
            | libc::EPERM
            | libc::EACCES
            | libc::ENAMETOOLONG
            | libc::EXDEV
            | libc::ELOOP => Level::Quiet,
            _ => Level::Error,
        };
        FsError {
            errno,
            message: format!("{context}: {err}"),
            level,
            source: Some(err),
        }
    }
}

impl From<io::Error> for FsError {
    fn from(err: io::Error) -> Self {
        FsError::io("backing dir", err)
    }
}

pub type FsResult<T> = Result<T, FsError>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn an_io_error_keeps_its_errno_and_its_source() {
        let err = FsError::io("x.json", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(err.errno, libc::ENOSPC);
        assert_eq!(err.level, Level::Error);
        let source = err.source().expect("the io::Error");
        assert_eq!(
            source.to_string(),
            io::Error::from_raw_os_error(libc::ENOSPC).to_string()
        );
        assert!(FsError::errno(libc::ENOENT).source().is_none());
    }

    #[test]
    fn a_backing_server_away_is_eio_never_enotconn() {
        for errno in [libc::ENOTCONN, libc::ECONNABORTED] {
            let err = FsError::io("x.json", io::Error::from_raw_os_error(errno));
            assert_eq!(err.errno, libc::EIO);
            assert_eq!(err.level, Level::Outage);
        }
    }
}
