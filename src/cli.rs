//! The command-line surface: the clap definition of the commands (each command's flags live
//! with it), dispatch, and the one place a failure is printed and turned into the exit code.

use clap::{CommandFactory, Parser, Subcommand};

use crate::commands::{completions, gc, info, ls, man, refresh, stats, unmount};
use crate::exit_codes::{ExitCode, Outcome};
use crate::mount;

#[derive(Debug, Parser)]
#[command(
    name = "cachetta",
    version,
    about = "File-based JSON caching, served as a filesystem",
    long_about = "File-based JSON caching, served as a filesystem.\n\n\
        `cachetta mount` puts a FUSE filesystem at ~/.cachetta, backed by ~/.cache/cachetta: \
        every cache entry is a JSON file in it, served until it expires (then it is gone), \
        with stale-while-revalidate, refresh commands, an in-memory hot set and inspection \
        (getfattr -d shows an entry's age, state and ttl); rm invalidates. The other \
        commands list, inspect, clean up and refresh the cache. The configuration is \
        cachetta.toml(5)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount the cache (default ~/.cachetta) in the foreground (or --daemon); Ctrl-C unmounts.
    Mount(mount::MountArgs),
    /// Unmount a cachetta mount (default ~/.cachetta); detaches lazily if it is busy.
    Unmount(unmount::UnmountArgs),
    /// List the entries under a key prefix, from the backing dir and config (no mount needed).
    Ls(ls::LsArgs),
    /// Print what cachetta knows about one key as a JSON object (exit 1 if there is no such file).
    Info(info::InfoArgs),
    /// Remove expired entries, and scratch files untouched for an hour, from the backing dir.
    Gc(gc::GcArgs),
    /// Refresh keys now through a running mount (warming missing ones); --wait for the outcome.
    Refresh(refresh::RefreshArgs),
    /// Print a running mount's counters: a table with the hit ratio, --json or --prometheus.
    Stats(stats::StatsArgs),
    /// Print the completion script for a shell: bash, zsh or fish.
    Completions(completions::CompletionsArgs),
    /// Write the man pages into a directory (for packaging).
    #[command(hide = true)]
    Man(man::ManArgs),
}

/// Parse the command line (clap exits 2 on bad usage), run the command, print its failure.
pub fn run() -> std::process::ExitCode {
    // `mount -t fuse.cachetta` and fstab call us as a mount helper (`mount::helper_argv`).
    let args = match mount::helper_argv(std::env::args_os().collect(), &Cli::command()) {
        Ok(args) => args,
        Err(failure) => return report(Err(failure)).into(),
    };
    let cli = Cli::parse_from(args);
    let outcome = match cli.command {
        Command::Mount(args) => mount::run(args),
        Command::Unmount(args) => unmount::run(args),
        Command::Ls(args) => ls::run(args),
        Command::Info(args) => info::run(args),
        Command::Gc(args) => gc::run(args),
        Command::Refresh(args) => refresh::run(args),
        Command::Stats(args) => stats::run(args),
        Command::Completions(args) => completions::run(args, Cli::command()),
        Command::Man(args) => man::run(args, Cli::command()),
    };
    report(outcome).into()
}

/// The exit code of `outcome`, after printing its failure (if any) as `cachetta: {message}`.
fn report(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("cachetta: {failure}");
            failure.code
        }
    }
}
