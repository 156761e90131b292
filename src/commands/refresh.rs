//! `cachetta refresh [--wait] [--mountpoint MP] KEY...`: refresh on demand (SPEC §12) through
//! a running mount: each KEY is set as `user.cachetta.refresh` on the mount root, which starts
//! its refresh in the background (warming a missing key). `--wait` then watches the root's
//! record of recent demands until each has ended (no request of the mount is ever held open).
//! The mount never lets the kernel remember a key under a refresh rule as missing, so a warmed
//! entry is visible the moment its refresh is done.
//!
//! Exit codes: 0 when every refresh started (with `--wait`: every entry was replaced); 2 when
//! a KEY is malformed (nothing is started then) or the daemon refuses one because its rule has
//! no refresh command (the other keys are still refreshed, and waited for); otherwise 1 when a
//! refresh failed, was declined, timed out, was cancelled, or its outcome scrolled away.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::thread;
use std::time::Duration;

use clap::Args;
use rustix::io::Errno;
use serde::Deserialize;

use super::live::{resolve_mountpoint, LiveMount};
use super::CommonArgs;
use crate::config;
use crate::exit_codes::{ExitCode, Failure, Outcome};
use crate::inspect;
use crate::store;

/// The root attribute that demands a refresh when set and lists recent demands when read.
const REFRESH_XATTR: &str = "user.cachetta.refresh";

/// How often `--wait` reads the record of demands.
const POLL: Duration = Duration::from_millis(50);

/// With `--wait`, keys are demanded and waited for this many at a time: the root keeps only
/// the 128 most recent demands, and a batch must not push its own out.
const BATCH: usize = 64;

#[derive(Debug, Args)]
pub struct RefreshArgs {
    /// The keys: paths relative to the cache root (`weather/paris.json`), or paths of entries
    /// under the mountpoint, absolute or starting with `./` or `../`
    /// (`~/.cachetta/weather/paris.json`).
    #[arg(required = true, value_name = "KEY")]
    pub keys: Vec<PathBuf>,
    /// Wait for the refreshes to end; exit 1 unless every entry was replaced.
    #[arg(long)]
    pub wait: bool,
    /// The mount (default ~/.cachetta).
    #[arg(long, value_name = "MP")]
    pub mountpoint: Option<PathBuf>,
    /// Accepted like every command; the mount's daemon has the rules.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// One demand as the root attribute lists it (the daemon's `fs::demand`).
#[derive(Debug, Deserialize)]
struct Demand {
    id: u64,
    key: String,
    outcome: String,
    #[serde(default)]
    error: Option<String>,
}

/// How one key's demand ended, as far as this command knows.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// Started (without `--wait`) or replaced (with it).
    Done,
    /// The daemon refused the key: its rule has no refresh command.
    NoRefreshRule,
    /// Anything else, with the line that says what.
    Failed(String),
}

pub fn run(args: RefreshArgs) -> Outcome {
    let given = args.mountpoint.unwrap_or_else(config::default_mountpoint);
    let root = resolve_mountpoint(&given);
    let mut keys = Vec::new();
    let mut seen = HashSet::new();
    for arg in &args.keys {
        let key = key_of(arg, &root, &given)?;
        if seen.insert(key.clone()) {
            keys.push(key);
        }
    }
    let mount = LiveMount::find(&given)?;
    let batch = if args.wait { BATCH } else { keys.len() };
    let total = if args.wait { keys.len() as u64 } else { 0 };
    let bar = super::progress::bar(total, "refreshing");
    let mut ended = Vec::new();
    for keys in keys.chunks(batch.max(1)) {
        ended.extend(demand_batch(&mount, keys, args.wait, &bar)?);
    }
    bar.finish_and_clear();
    let mut code = ExitCode::Success;
    for (key, end) in ended {
        match end {
            Ended::Done if args.wait => println!("refreshed {key}"),
            Ended::Done => println!("started refresh of {key}"),
            Ended::NoRefreshRule => {
                eprintln!("cachetta: {key}: no rule gives this key a refresh command, so there is nothing to refresh it with");
                code = ExitCode::Usage;
            }
            Ended::Failed(why) => {
                eprintln!("cachetta: {key}: {why}");
                if code == ExitCode::Success {
                    code = ExitCode::Failure;
                }
            }
        }
    }
    Ok(code)
}

/// Demand every key of a batch, then (with `wait`) follow each demand to its end.
fn demand_batch(
    mount: &LiveMount,
    keys: &[String],
    wait: bool,
    bar: &indicatif::ProgressBar,
) -> Result<Vec<(String, Ended)>, Failure> {
    // Only demands newer than the ones listed now can be ours.
    let before = if wait { newest_id(&demands(mount)?) } else { 0 };
    let mut ended: Vec<(String, Ended)> = Vec::new();
    let mut waiting: Vec<(usize, Option<u64>)> = Vec::new();
    for key in keys {
        match mount.set(REFRESH_XATTR, key.as_bytes()) {
            Ok(()) if wait => {
                // The newest demand of this key now is ours, or a later one that joined or
                // followed it: either way a refresh that started after we asked.
                let target = demands(mount)?
                    .iter()
                    .filter(|d| d.id > before && d.key == *key)
                    .map(|d| d.id)
                    .max();
                waiting.push((ended.len(), target));
                ended.push((key.clone(), Ended::Done));
            }
            Ok(()) => ended.push((key.clone(), Ended::Done)),
            Err(Errno::INVAL) => ended.push((key.clone(), Ended::NoRefreshRule)),
            Err(e @ (Errno::NOTCONN | Errno::NODATA | Errno::NOTSUP)) => {
                return Err(mount.failure(REFRESH_XATTR, e))
            }
            Err(e) => ended.push((
                key.clone(),
                Ended::Failed(format!("cannot start its refresh: {e}")),
            )),
        }
    }
    while !waiting.is_empty() {
        let listed = demands(mount)?;
        waiting.retain(|&(at, target)| {
            let demand = target.and_then(|id| listed.iter().find(|d| d.id == id));
            let end = match demand {
                Some(d) if d.outcome == "running" => return true,
                Some(d) => ending(d),
                None => Ended::Failed(
                    "outcome unknown: more than 128 refreshes were demanded meanwhile and its record scrolled away (see the entry's user.cachetta.info)".into(),
                ),
            };
            ended[at].1 = end;
            bar.inc(1);
            false
        });
        if !waiting.is_empty() {
            thread::sleep(POLL);
        }
    }
    Ok(ended)
}

/// What a finished demand means to the user.
fn ending(demand: &Demand) -> Ended {
    let error = demand
        .error
        .as_deref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    Ended::Failed(match demand.outcome.as_str() {
        "ok" => return Ended::Done,
        "failed" => format!("refresh failed{error}"),
        "declined" => "refresh declined by the rule's condition; nothing was cached".into(),
        "timeout" => format!("refresh still running after its refresh_timeout{error}"),
        "cancelled" => {
            format!("refresh cancelled (the entry was removed, or the mount is going down){error}")
        }
        other => format!("refresh ended with outcome {other:?}{error}"),
    })
}

/// The root's record of recent demands, oldest first.
fn demands(mount: &LiveMount) -> Result<Vec<Demand>, Failure> {
    let raw = mount.get(REFRESH_XATTR)?;
    serde_json::from_slice(&raw).map_err(|e| {
        Failure::failed(format_args!(
            "{REFRESH_XATTR} of {} is not the list of demands this command knows: {e}",
            mount.root().display()
        ))
    })
}

fn newest_id(demands: &[Demand]) -> u64 {
    demands.iter().map(|d| d.id).max().unwrap_or(0)
}

/// The key an argument names: as given when it is relative (`weather/paris.json`), or its
/// place under the mountpoint when it is a path (absolute, or starting with `./` or `../`).
/// A key that names no entry is a usage error (exit code 2).
fn key_of(arg: &Path, root: &Path, given: &Path) -> Result<String, Failure> {
    let is_path = matches!(
        arg.components().next(),
        Some(Component::RootDir | Component::CurDir | Component::ParentDir)
    );
    let relative = if is_path {
        let path = lexical(arg);
        [root.to_path_buf(), lexical(given)]
            .iter()
            .find_map(|root| path.strip_prefix(root).ok().map(Path::to_path_buf))
            .ok_or_else(|| {
                Failure::usage(format_args!(
                    "{} is not under the mountpoint {}",
                    arg.display(),
                    root.display()
                ))
            })?
    } else {
        arg.to_path_buf()
    };
    let key = inspect::relative_key(&relative)
        .filter(|key| store::is_entry_name(key.file_name().unwrap_or_default()))
        .ok_or_else(|| {
            Failure::usage(format_args!(
                "{} is not an entry key: name a *.json file relative to the cache root (like weather/paris.json), without `..`",
                arg.display()
            ))
        })?;
    key.to_str().map(str::to_owned).ok_or_else(|| {
        Failure::usage(format_args!(
            "{} is not UTF-8; refresh on demand takes UTF-8 keys",
            arg.display()
        ))
    })
}

/// `path` made absolute, with `.` and `..` resolved by name (the entry need not exist yet).
fn lexical(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(outcome: &str, error: Option<&str>) -> Demand {
        Demand {
            id: 1,
            key: "x.json".into(),
            outcome: outcome.into(),
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn only_ok_counts_as_done() {
        assert_eq!(ending(&demand("ok", None)), Ended::Done);
        for outcome in ["failed", "declined", "timeout", "cancelled", "new"] {
            assert!(matches!(ending(&demand(outcome, None)), Ended::Failed(_)));
        }
    }

    #[test]
    fn a_failure_carries_the_command_error() {
        let Ended::Failed(line) = ending(&demand("failed", Some("exit status 3: boom"))) else {
            panic!("not a failure")
        };
        assert_eq!(line, "refresh failed: exit status 3: boom");
    }

    #[test]
    fn lexical_resolves_dots_by_name() {
        assert_eq!(
            lexical(Path::new("/a/./b/../c.json")),
            Path::new("/a/c.json")
        );
        assert!(lexical(Path::new("./x.json")).is_absolute());
    }

    #[test]
    fn demands_parse_from_the_root_attribute() {
        let raw = r#"[{"id":3,"key":"a.json","outcome":"running"},
                      {"id":4,"key":"b.json","outcome":"failed","error":"boom"}]"#;
        let listed: Vec<Demand> = serde_json::from_str(raw).unwrap();
        assert_eq!(newest_id(&listed), 4);
        assert_eq!(listed[1].error.as_deref(), Some("boom"));
    }
}
