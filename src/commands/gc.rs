//! `cachetta gc [--dry-run]`: remove expired entries, and scratch files untouched for an hour,
//! from the backing dir (the sweep itself is [`crate::gc`], which the daemon runs too).

use clap::Args;

use super::{open_store, print, CommonArgs};
use crate::clock::{Clock, SystemClock};
use crate::config::Overrides;
use crate::daemon::logging;
use crate::exit_codes::{Failure, Outcome};
use crate::gc;

#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Only list what would be removed.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: GcArgs) -> Outcome {
    logging::init(0, true, None);
    let config = args.common.load_config(Overrides::default())?;
    let Some(store) = open_store(&config)? else {
        return print("nothing to remove\n");
    };
    let swept = gc::sweep(&store, &config, SystemClock.now(), args.dry_run).map_err(|e| {
        Failure::failed(format_args!(
            "cannot sweep {}: {e}",
            store.root_path().display()
        ))
    })?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut out = String::new();
    for s in &swept {
        out.push_str(&format!("{verb} {} ({})\n", s.key.display(), s.reason));
    }
    if swept.is_empty() {
        out.push_str("nothing to remove\n");
    } else {
        out.push_str(&format!("{verb} {}\n", gc::summary(&swept)));
    }
    print(&out)
}
