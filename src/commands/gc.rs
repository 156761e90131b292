//! `cachetta gc [--dry-run]`: remove expired entries, and scratch files untouched for an hour,
//! from the backing dir (the sweep itself is [`crate::gc`], which the daemon runs too).

use clap::Args;

use super::{open_store, print, CommonArgs};
use crate::clock::{Clock, SystemClock};
use crate::config::Overrides;
use crate::daemon::logging;
use crate::exit_codes::{Failure, Outcome};
use crate::gc;
use crate::journal;
use crate::store::Store;

/// How long `gc` waits for its removals to reach the change journal before it exits (the
/// journal may be on a server that is away; mounts then find them by walking).
const JOURNAL_FLUSH: std::time::Duration = std::time::Duration::from_secs(10);

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
    // Mounts of this backing dir hear of the removals through the change journal.
    let journal = match (args.dry_run, Store::open(store.root_path(), false)) {
        (false, Ok(own)) => journal::observe_store(&store, own),
        _ => None,
    };
    let bar = std::cell::OnceCell::new();
    let mut progress = |checked: usize, total: usize| {
        bar.get_or_init(|| super::progress::bar(total as u64, "checking"))
            .set_position(checked as u64);
    };
    let now = SystemClock.now();
    let swept = gc::sweep_reporting(&store, &config, now, args.dry_run, &mut progress);
    if let Some(bar) = bar.get() {
        bar.finish_and_clear();
    }
    let swept = swept.map_err(|e| {
        Failure::failed(format_args!(
            "cannot sweep {}: {e}",
            store.root_path().display()
        ))
    });
    if let Some(journal) = journal {
        journal.flush(JOURNAL_FLUSH);
    }
    let swept = swept?;
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
