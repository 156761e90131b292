//! The command-line surface: clap definitions, logging setup, and dispatch to the commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides, WatchMode};

/// Exit code for bad usage, bad configuration, and refused mounts.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "cachetta",
    version,
    about = "File-based JSON caching, served as a filesystem"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount the cache (default ~/.cachetta) in the foreground (or --daemon); Ctrl-C unmounts.
    Mount(MountArgs),
    /// Unmount a cachetta mount (default ~/.cachetta); detaches lazily if it is busy.
    Unmount(UnmountArgs),
    /// List the entries under a key prefix, from the backing dir and config (no mount needed).
    Ls(LsArgs),
    /// Print what cachetta knows about one key as a JSON object (exit 1 if there is no such file).
    Info(InfoArgs),
    /// Remove expired entries, and scratch files untouched for an hour, from the backing dir.
    Gc(GcArgs),
}

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

#[derive(Debug, Args)]
pub struct MountArgs {
    /// Where to mount (default ~/.cachetta).
    pub mountpoint: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Default duration for every key (e.g. 90s, 15m, 1h 30m, 7d; a bare number is seconds).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Default stale window.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub stale: Option<Duration>,
    /// Most entries kept in memory (default 1024; 0 keeps none).
    #[arg(long, value_name = "N")]
    pub lru_entries: Option<usize>,
    /// Most bytes kept in memory (e.g. 64MiB; KiB/MiB/GiB or a bare byte count).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub lru_bytes: Option<u64>,
    /// How changes made in the backing dir are noticed: inotify (default), or poll[=INTERVAL]
    /// for backing dirs on network filesystems, where inotify sees nothing.
    #[arg(long, value_name = "MODE", value_parser = parse_watch)]
    pub watch: Option<WatchMode>,
    /// Refuse every change with EROFS (the backing dir may then be read-only).
    #[arg(long)]
    pub read_only: bool,
    /// Let other users in (FUSE allow_other); the kernel then enforces the backing files'
    /// modes (default_permissions). Needs user_allow_other in /etc/fuse.conf unless root.
    #[arg(long)]
    pub allow_other: bool,
    /// Mount over a directory that has files in it (they are hidden while mounted, not lost).
    #[arg(long)]
    pub allow_non_empty: bool,
    /// Detach from the terminal once the mount answers, logging to --log-file.
    #[arg(long)]
    pub daemon: bool,
    /// Append logs to this file instead of stderr (with --daemon the default is
    /// $XDG_STATE_HOME/cachetta/cachetta.log).
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct UnmountArgs {
    /// The mount to remove (default ~/.cachetta).
    pub mountpoint: Option<PathBuf>,
    /// Accepted like every command; unmounting needs no configuration.
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// A directory relative to the cache root, e.g. `weather` (default: the whole cache).
    pub prefix: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Also list expired and corrupt entries and scratch files, which the mount hides.
    #[arg(long)]
    pub all: bool,
    /// Print one JSON array of objects: `key` plus every field of `cachetta info`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The key: a path relative to the cache root, e.g. `weather/paris.json`.
    pub key: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Only list what would be removed.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text)
}

fn parse_size(text: &str) -> Result<u64, String> {
    crate::config::parse_size(text)
}

fn parse_watch(text: &str) -> Result<WatchMode, String> {
    text.parse()
}

/// Load the configuration for a command, or say why not (exit code 2).
pub fn load_config(common: &CommonArgs, mut overrides: Overrides) -> Result<Config, ExitCode> {
    overrides.backing = common.backing.clone();
    Config::load(common.config.as_deref(), &overrides).map_err(|e| {
        eprintln!("cachetta: {e}");
        ExitCode::from(EXIT_USAGE)
    })
}

/// Set up `tracing` to stderr; `RUST_LOG` or `CACHETTA_LOG` override the verbosity flags.
pub fn init_logging(verbose: u8, quiet: bool) {
    crate::daemon::logging::init(verbose, quiet, None);
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Mount(args) => crate::mount::run(args),
        Command::Unmount(args) => crate::commands::unmount::run(args),
        Command::Ls(args) => crate::commands::ls(args),
        Command::Info(args) => crate::commands::info(args),
        Command::Gc(args) => crate::commands::gc(args),
    }
}
