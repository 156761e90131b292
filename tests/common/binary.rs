//! The one way tests run the `cachetta` binary: in an isolated home (`HOME` and every XDG dir
//! inside the test's own directory, no systemd or log variables), so the developer's config,
//! cache, log and mountpoint never leak in; spawned under the [`forking`](super::forking)
//! lock; checked with `assert_cmd`'s `OutputAssertExt` (`home.run(..).assert().code(2)`).

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

/// Variables of the developer's environment the binary reads that a test must not inherit.
const SCRUBBED: &[&str] = &[
    "NOTIFY_SOCKET",
    "JOURNAL_STREAM",
    "CACHETTA_LOG",
    "RUST_LOG",
    "CACHETTA_PASSTHROUGH",
];

/// A home for the binary: `HOME` is `ROOT/home`, and `XDG_{CONFIG,CACHE,STATE}_HOME` are
/// `ROOT/xdg/{config,cache,state}`.
#[derive(Debug)]
pub struct Isolated {
    root: PathBuf,
    _dir: Option<TempDir>,
}

impl Isolated {
    /// A home in a temp dir of its own, removed on drop.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Isolated {
        let dir = tempfile::tempdir().expect("create temp dir");
        let root = dir.path().canonicalize().expect("canonicalize temp dir");
        Isolated {
            root,
            _dir: Some(dir),
        }
    }

    /// A home inside `root`, a directory the caller owns.
    pub fn within(root: &Path) -> Isolated {
        Isolated {
            root: root.to_path_buf(),
            _dir: None,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    pub fn config_home(&self) -> PathBuf {
        self.root.join("xdg/config")
    }

    pub fn cache_home(&self) -> PathBuf {
        self.root.join("xdg/cache")
    }

    pub fn state_home(&self) -> PathBuf {
        self.root.join("xdg/state")
    }

    /// The default `--daemon` log file, `$XDG_STATE_HOME/cachetta/cachetta.log`, so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.state_home().join("cachetta/cachetta.log")).unwrap_or_default()
    }

    /// `cachetta ARGS` in this home, stdin empty. Spawn it with
    /// [`spawn`](super::spawn) or run it with [`output`](super::output).
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cachetta"));
        cmd.args(args);
        self.isolate(&mut cmd);
        cmd
    }

    /// Put any command (a script that installs or runs the binary) in this home.
    pub fn isolate<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.config_home())
            .env("XDG_CACHE_HOME", self.cache_home())
            .env("XDG_STATE_HOME", self.state_home())
            .stdin(Stdio::null());
        for name in SCRUBBED {
            cmd.env_remove(name);
        }
        cmd
    }

    /// Run `cachetta ARGS` to its end (see [`output`](super::output)); check the result with
    /// `assert_cmd::assert::OutputAssertExt`.
    #[track_caller]
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        super::output(&mut self.command(args))
    }
}

pub use assert_cmd::assert::OutputAssertExt;
