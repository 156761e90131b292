//! Where `tracing` output goes: stderr in the foreground (no timestamps under systemd, whose
//! journal adds its own), or an append-only log file (`--log-file`, and always with
//! `--daemon`). `-v`/`-q` pick the level; `CACHETTA_LOG` or `RUST_LOG` override it.

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// `$XDG_STATE_HOME/cachetta/cachetta.log` (`~/.local/state/cachetta/cachetta.log`).
pub fn default_file() -> PathBuf {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    // The XDG spec says a relative value is invalid and must be ignored.
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home.join(".local/state"));
    state.join("cachetta").join("cachetta.log")
}

/// Open `path` for appending (created `0600` with its missing parent directories).
pub fn open_file(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    File::options()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// Whether systemd runs us: its journal stamps every line itself.
pub fn under_systemd() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some() || std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Install the global subscriber, writing to `file` or else to stderr. A second call is a
/// no-op.
pub fn init(verbose: u8, quiet: bool, file: Option<Arc<File>>) {
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = std::env::var("CACHETTA_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| format!("cachetta={level},fuser=warn"));
    let filter = EnvFilter::new(filter);
    match file {
        Some(file) => install(filter, file, false, true),
        None => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            install(filter, std::io::stderr, ansi, !under_systemd());
        }
    }
}

fn install<W>(filter: EnvFilter, writer: W, ansi: bool, timestamps: bool)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let _ = if timestamps {
        builder.try_init()
    } else {
        builder.without_time().try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_file_creates_parents_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/cachetta.log");
        std::io::Write::write_all(&mut open_file(&path).unwrap(), b"one\n").unwrap();
        std::io::Write::write_all(&mut open_file(&path).unwrap(), b"two\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
