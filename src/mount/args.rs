//! The flags of `cachetta mount`, and the command-line syntax of durations, sizes, watch
//! modes and transports (the same as the config file's, from [`crate::config`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::commands::CommonArgs;
use crate::config::{self, Overrides, Transport, WatchMode};

#[derive(Debug, Args)]
pub struct MountArgs {
    /// Where to mount (default ~/.cachetta).
    pub mountpoint: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Default duration for every key (e.g. 90s, 15m, 1h 30m, 7d; a bare number is seconds).
    #[arg(long, value_name = "D", value_parser = config::parse_duration)]
    pub duration: Option<Duration>,
    /// Default stale window.
    #[arg(long, value_name = "D", value_parser = config::parse_duration)]
    pub stale: Option<Duration>,
    /// Most entries kept in memory (default 1024; 0 keeps none).
    #[arg(long, value_name = "N")]
    pub lru_entries: Option<usize>,
    /// Most bytes kept in memory (e.g. 64MiB; KiB/MiB/GiB or a bare byte count).
    #[arg(long, value_name = "SIZE", value_parser = config::parse_size)]
    pub lru_bytes: Option<u64>,
    /// How changes made in the backing dir are noticed: inotify (default), or poll[=INTERVAL]
    /// for backing dirs on network filesystems, where inotify sees nothing: every INTERVAL
    /// (default 1s) it reads the other mounts' change journal and stats each directory.
    #[arg(long, value_name = "MODE", value_parser = parse_watch)]
    pub watch: Option<WatchMode>,
    /// With --watch poll: walk every entry this often (default 10m; 0 never), the one way an
    /// in-place rewrite by a program outside every mount shows in listings.
    #[arg(long, value_name = "D", value_parser = config::parse_duration)]
    pub full_scan_interval: Option<Duration>,
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
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464; port 0 picks a
    /// free one, logged at start); a bad address or a port in use refuses the mount.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// How the kernel's requests arrive: auto (default: FUSE-over-io_uring where the kernel
    /// offers it, else /dev/fuse), uring (io_uring or no mount) or classic (/dev/fuse).
    #[arg(long, value_name = "T", value_parser = parse_transport)]
    pub transport: Option<Transport>,
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

impl MountArgs {
    /// What these flags override in the configuration.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            duration: self.duration,
            stale: self.stale,
            lru_entries: self.lru_entries,
            lru_bytes: self.lru_bytes,
            watch: self.watch,
            full_scan_interval: self.full_scan_interval,
            metrics_addr: self.metrics_addr.clone(),
            transport: self.transport,
            ..Overrides::default()
        }
    }
}

fn parse_watch(text: &str) -> Result<WatchMode, String> {
    text.parse()
}

fn parse_transport(text: &str) -> Result<Transport, String> {
    text.parse()
}
