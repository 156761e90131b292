//! The commands other than `mount` (a module of its own): [`ls`], [`info`] and [`gc`],
//! computed from the backing dir and the config alone (no mount needed); [`unmount`]; and
//! [`refresh`] and [`stats`], which talk to a running mount through its root's attributes
//! (`live`); [`completions`] and the hidden [`man`], which print or write what the clap
//! definitions describe. Each has its flags beside it and a `run(args) -> Outcome`; `cli`
//! prints a failure. Here: the flags every command takes ([`CommonArgs`]) and what the commands share.

pub mod completions;
pub mod gc;
pub mod info;
mod live;
pub mod ls;
pub mod man;
mod progress;
pub(crate) mod prometheus;
pub mod refresh;
pub mod stats;
pub mod unmount;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::config::{Config, Overrides};
use crate::exit_codes::{ExitCode, Failure, Outcome};
use crate::inspect;
use crate::store::Store;

/// Flags every command takes.
#[derive(Debug, Args, Clone, Default)]
pub struct CommonArgs {
    /// Config file (default $XDG_CONFIG_HOME/cachetta/config.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Backing directory (default $XDG_CACHE_HOME/cachetta).
    #[arg(long, value_name = "DIR")]
    pub backing: Option<PathBuf>,
}

impl CommonArgs {
    /// The configuration these flags select, with a command's own `overrides` (exit code 2 if
    /// it is invalid; the message names the file, line and key).
    pub fn load_config(&self, overrides: Overrides) -> Result<Config, Failure> {
        let overrides = Overrides {
            backing: self.backing.clone(),
            ..overrides
        };
        Config::load(self.config.as_deref(), &overrides).map_err(Failure::usage)
    }
}

/// Write all of `text` to stdout; a closed pipe (`cachetta ls | head`) is not an error.
fn print(text: &str) -> Outcome {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::Success),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::Success),
        Err(e) => Err(Failure::failed(format_args!("cannot write output: {e}"))),
    }
}

/// A key or prefix argument as a path relative to the root, or a usage error.
fn relative_arg(input: &Path, what: &str) -> Result<PathBuf, Failure> {
    inspect::relative_key(input).ok_or_else(|| {
        Failure::usage(format_args!(
            "{what} {} must be relative to the cache root (like weather/paris.json), without `..`",
            input.display()
        ))
    })
}

/// The backing dir, or `None` if it does not exist yet (an empty cache; never created here).
fn open_store(config: &Config) -> Result<Option<Store>, Failure> {
    if std::fs::symlink_metadata(&config.backing).is_err() {
        return Ok(None);
    }
    Store::open(&config.backing, config.sync_writes)
        .map(Some)
        .map_err(|e| {
            Failure::failed(format_args!(
                "cannot open backing dir {}: {e}",
                config.backing.display()
            ))
        })
}
