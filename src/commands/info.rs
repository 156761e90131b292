//! `cachetta info KEY`: what cachetta knows about one key, as a JSON object (exit code 1 when
//! there is no such file).

use std::path::PathBuf;

use clap::Args;

use super::{open_store, print, relative_arg, CommonArgs};
use crate::clock::{Clock, SystemClock};
use crate::config::Overrides;
use crate::exit_codes::{Failure, Outcome};
use crate::inspect::{self, Info};
use crate::store::Kind;

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The key: a path relative to the cache root, e.g. `weather/paris.json`.
    pub key: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn run(args: InfoArgs) -> Outcome {
    let config = args.common.load_config(Overrides::default())?;
    let key = relative_arg(&args.key, "KEY")?;
    if key.as_os_str().is_empty() {
        return Err(Failure::usage(
            "KEY must name a file, like weather/paris.json",
        ));
    }
    let store = open_store(&config)?;
    let info = match &store {
        Some(store) => inspect::entry_info(store, &config, &key, SystemClock.now()),
        None => {
            let timing = config.settings_for(key.as_os_str()).settings.timing();
            Info::missing(config.backing.join(&key), timing)
        }
    };
    let json = serde_json::to_string_pretty(&info).unwrap_or_else(|_| "{}".into());
    let printed = print(&(json + "\n"));
    if info.exists {
        return printed;
    }
    let why = match store.as_ref().and_then(|s| s.stat(&key).ok()) {
        Some(st) if st.kind == Kind::Dir => "is a directory, not an entry",
        Some(_) => "is not a regular file (symlinks and special files are never served)",
        None => "does not exist",
    };
    Err(Failure::failed(format_args!(
        "{} {why} ({})",
        key.display(),
        info.path.display()
    )))
}
