//! `cachetta man --dir DIR` (hidden): write the man pages (`cachetta.1`, `cachetta-mount.1`,
//! ..., `cachetta.toml.5`) into DIR, one path per line on stdout. What `scripts/package` calls;
//! the pages themselves are `crate::manual`.

use std::path::PathBuf;

use clap::Args;

use crate::exit_codes::{Failure, Outcome};
use crate::manual;

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The directory to write the pages into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

/// Write the pages of `cli` (the `cachetta` command as clap defines it).
pub fn run(args: ManArgs, cli: clap::Command) -> Outcome {
    let written = manual::write_all(cli, &args.dir).map_err(|e| {
        Failure::failed(format_args!(
            "cannot write the man pages into {}: {e}",
            args.dir.display()
        ))
    })?;
    let listing: String = written
        .iter()
        .map(|path| format!("{}\n", path.display()))
        .collect();
    super::print(&listing)
}
