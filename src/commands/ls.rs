//! `cachetta ls [PREFIX] [--all] [--json]`: the entries under a key prefix with their state,
//! age, time to live and size, as a table or as JSON.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::{open_store, print, relative_arg, CommonArgs};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Overrides};
use crate::exit_codes::{Failure, Outcome};
use crate::inspect::{self, human_duration, Info, InfoState};
use crate::store::Store;

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

/// One row of `ls --json`: the key, then every field of `info`.
#[derive(Serialize)]
struct Listed<'a> {
    key: String,
    #[serde(flatten)]
    info: &'a Info,
}

pub fn run(args: LsArgs) -> Outcome {
    let config = args.common.load_config(Overrides::default())?;
    let prefix = match args.prefix.as_deref() {
        None => PathBuf::new(),
        Some(prefix) => relative_arg(prefix, "PREFIX")?,
    };
    let store = open_store(&config)?;
    let rows = match &store {
        Some(store) => list(store, &config, &prefix, args.all)?,
        None if prefix.as_os_str().is_empty() => Vec::new(),
        None => {
            return Err(Failure::failed(format_args!(
                "no such directory: {} (the backing dir {} does not exist yet)",
                prefix.display(),
                config.backing.display()
            )))
        }
    };
    if args.json {
        let listed: Vec<Listed> = rows
            .iter()
            .map(|(key, info)| Listed {
                key: key.to_string_lossy().into_owned(),
                info,
            })
            .collect();
        let json = serde_json::to_string_pretty(&listed).unwrap_or_else(|_| "[]".into());
        return print(&(json + "\n"));
    }
    print(&table(&rows))
}

/// The files under `prefix` with their info, sorted by key bytes; only fresh and stale
/// entries unless `all`.
fn list(
    store: &Store,
    config: &Config,
    prefix: &Path,
    all: bool,
) -> Result<Vec<(PathBuf, Info)>, Failure> {
    let walk = crate::store::walk_files(store, prefix).map_err(|e| {
        let why = match e.raw_os_error() {
            Some(libc::ENOENT) => "no such directory".to_string(),
            Some(libc::ENOTDIR) => "not a directory".to_string(),
            Some(libc::ELOOP) => "a symlink, which cachetta never follows".to_string(),
            _ => e.to_string(),
        };
        Failure::failed(format_args!(
            "cannot list {}: {why} (in backing dir {})",
            prefix.display(),
            store.root_path().display()
        ))
    })?;
    for (dir, e) in &walk.unreadable {
        eprintln!("cachetta: skipping {}: {e}", dir.display());
    }
    let now = SystemClock.now();
    let bar = super::progress::bar(walk.files.len() as u64, "checking");
    let mut rows: Vec<(PathBuf, Info)> = walk
        .files
        .into_iter()
        .map(|found| {
            let info = inspect::entry_info(store, config, &found.key, now);
            bar.inc(1);
            (found.key, info)
        })
        .filter(|(_, info)| info.exists && (all || info.is_visible()))
        .collect();
    bar.finish_and_clear();
    rows.sort_by(|a, b| {
        a.0.as_os_str()
            .as_encoded_bytes()
            .cmp(b.0.as_os_str().as_encoded_bytes())
    });
    Ok(rows)
}

/// Aligned columns KEY, STATE, AGE, TTL, SIZE (bytes); a header even when empty.
fn table(rows: &[(PathBuf, Info)]) -> String {
    let mut cells: Vec<[String; 5]> =
        vec![["KEY", "STATE", "AGE", "TTL", "SIZE"].map(String::from)];
    for (key, info) in rows {
        let seconds = |value: Option<i64>| value.map_or_else(|| "-".to_string(), human_duration);
        let ttl = match info.state {
            Some(InfoState::Scratch) => "-".to_string(),
            _ => seconds(info.ttl),
        };
        cells.push([
            key.to_string_lossy().into_owned(),
            info.state.map_or("-", InfoState::as_str).to_string(),
            seconds(info.age.map(|age| age.floor() as i64)),
            ttl,
            info.size
                .map_or_else(|| "-".to_string(), |size| size.to_string()),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &cells {
        let [key, state, age, ttl, size] = row;
        let line = format!(
            "{key:<kw$}  {state:<sw$}  {age:>aw$}  {ttl:>tw$}  {size:>zw$}",
            kw = widths[0],
            sw = widths[1],
            aw = widths[2],
            tw = widths[3],
            zw = widths[4],
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
