//! `cachetta stats [MOUNTPOINT] [--json | --prometheus | --watch [INTERVAL]]`: a running
//! mount's counters (`user.cachetta.stats` on its root, SPEC §5 and §12) for people (a table led
//! by the hit ratio), as that JSON object, for Prometheus (the mapping is in `prometheus`), or
//! as a line of rates every interval, like vmstat (SPEC §14).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Map, Value};

use super::live::{LiveMount, STATS_XATTR};
use super::{print, prometheus, CommonArgs};
use crate::config;
use crate::exit_codes::{Failure, Outcome};

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The mount to ask (default ~/.cachetta).
    pub mountpoint: Option<PathBuf>,
    /// Print the object of `user.cachetta.stats` as the daemon gave it.
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,
    /// Print the Prometheus text format (0.0.4), for node_exporter's textfile collector.
    #[arg(long)]
    pub prometheus: bool,
    /// Print one line of rates every INTERVAL (default 1s), like vmstat: hits, misses, stale
    /// reads, refreshes and writes a second, and the hit ratio over the interval.
    #[arg(
        long,
        value_name = "INTERVAL",
        num_args = 0..=1,
        default_missing_value = "1s",
        value_parser = watch_interval,
        conflicts_with_all = ["json", "prometheus"]
    )]
    pub watch: Option<Duration>,
    /// With --watch: stop after this many lines.
    #[arg(long, value_name = "N", requires = "watch")]
    pub count: Option<u64>,
    /// Accepted like every command; the counters come from the mount alone.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The counters in the order the table shows them (SPEC §5); fields a newer daemon adds follow,
/// then the requests that reached the daemon.
const TABLE_ORDER: &[&str] = &[
    "hits",
    "misses",
    "stale_served",
    "lru_hits",
    "refreshes_started",
    "refreshes_ok",
    "refreshes_failed",
    "refreshes_declined",
    "writes_ok",
    "writes_rejected",
    "lru_entries",
    "lru_bytes",
    "inodes",
    "uptime_s",
    "transport",
    "passthrough",
    "watching",
];

pub fn run(args: StatsArgs) -> Outcome {
    let given = args.mountpoint.unwrap_or_else(config::default_mountpoint);
    let mount = LiveMount::find(&given)?;
    if let Some(interval) = args.watch {
        return watch(&mount, interval, args.count);
    }
    let raw = mount.get(STATS_XATTR)?;
    let stats = object(&mount, &raw)?;
    if args.json {
        let mut text = String::from_utf8_lossy(&raw).into_owned();
        text.push('\n');
        return print(&text);
    }
    if args.prometheus {
        return print(&prometheus::exposition(&stats));
    }
    print(&table(&stats))
}

/// `user.cachetta.stats` as the JSON object it must be.
fn object(mount: &LiveMount, raw: &[u8]) -> Result<Map<String, Value>, Failure> {
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(stats)) => Ok(stats),
        _ => Err(Failure::failed(format_args!(
            "{STATS_XATTR} of {} is not a JSON object",
            mount.root().display()
        ))),
    }
}

/// `--watch`'s INTERVAL: the config's duration syntax, at least 10 ms.
fn watch_interval(text: &str) -> Result<Duration, String> {
    let interval = config::parse_duration(text)?;
    if interval < Duration::from_millis(10) {
        return Err("the interval must be at least 10ms".into());
    }
    Ok(interval)
}

/// The counters `--watch` shows as rates, with their column heads.
const RATES: &[(&str, &str)] = &[
    ("hits", "hits/s"),
    ("misses", "misses/s"),
    ("stale_served", "stale/s"),
    ("refreshes_started", "refreshes/s"),
    ("writes_ok", "writes/s"),
];

/// A head line every this many lines, as vmstat does.
const HEAD_EVERY: u64 = 20;

/// `--watch`: one line of rates per interval until `count` lines (or forever, or until the
/// mount goes away: then the failure says so).
fn watch(mount: &LiveMount, interval: Duration, count: Option<u64>) -> Outcome {
    let read = || -> Result<(Instant, Map<String, Value>), Failure> {
        let raw = mount.get(STATS_XATTR)?;
        Ok((Instant::now(), object(mount, &raw)?))
    };
    let mut last = read()?;
    let mut lines = 0u64;
    while count.is_none_or(|count| lines < count) {
        std::thread::sleep(interval);
        let now = read()?;
        let mut text = String::new();
        if lines.is_multiple_of(HEAD_EVERY) {
            text.push_str(&head());
        }
        text.push_str(&rates_line(&last, &now));
        let mut out = std::io::stdout().lock();
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => {}
            // `cachetta stats --watch | head`: the reader is done, and so are we.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(e) => return Err(Failure::failed(format_args!("cannot write output: {e}"))),
        }
        last = now;
        lines += 1;
    }
    Ok(crate::exit_codes::ExitCode::Success)
}

fn head() -> String {
    let mut line = String::new();
    for (_, head) in RATES {
        line.push_str(&format!("{head:>12}"));
    }
    line.push_str(&format!("{:>8}{:>10}\n", "hit%", "entries"));
    line
}

/// The rates between two reads of the counters, the hit ratio over that interval, and the
/// entries kept in memory now.
fn rates_line(
    (then, before): &(Instant, Map<String, Value>),
    (now, after): &(Instant, Map<String, Value>),
) -> String {
    let count = |stats: &Map<String, Value>, name: &str| {
        stats.get(name).and_then(Value::as_u64).unwrap_or(0)
    };
    let delta = |name: &str| count(after, name).saturating_sub(count(before, name));
    let seconds = now.duration_since(*then).as_secs_f64().max(1e-3);
    let mut line = String::new();
    for (name, _) in RATES {
        line.push_str(&format!("{:>12.1}", delta(name) as f64 / seconds));
    }
    let ratio = crate::stats::hit_ratio(delta("hits"), delta("misses"));
    line.push_str(&format!(
        "{:>8}{:>10}\n",
        ratio.trim_end_matches('%'),
        count(after, "lru_entries")
    ));
    line
}

/// The hit ratio of the counters in `stats` (see [`crate::stats::hit_ratio`]).
pub fn hit_ratio(stats: &Map<String, Value>) -> String {
    let count = |name: &str| stats.get(name).and_then(Value::as_u64).unwrap_or(0);
    crate::stats::hit_ratio(count("hits"), count("misses"))
}

/// One line per counter, names left-aligned and values right-aligned, the hit ratio first.
/// Requests the daemon never saw (0) are left out.
fn table(stats: &Map<String, Value>) -> String {
    let mut rows = vec![("hit ratio".to_string(), hit_ratio(stats))];
    let shown = |value: &Value| match value {
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    };
    let known = TABLE_ORDER
        .iter()
        .filter_map(|&name| Some((name, stats.get(name)?)));
    let newer = stats
        .iter()
        .filter(|(name, _)| name.as_str() != "requests" && !TABLE_ORDER.contains(&name.as_str()))
        .map(|(name, value)| (name.as_str(), value));
    for (name, value) in known.chain(newer) {
        if let Some(value) = shown(value) {
            rows.push((name.to_string(), value));
        }
    }
    if let Some(Value::Object(requests)) = stats.get("requests") {
        for (op, value) in requests {
            if value.as_u64() != Some(0) {
                if let Some(value) = shown(value) {
                    rows.push((format!("requests.{op}"), value));
                }
            }
        }
    }
    let name_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let value_width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(name, value)| format!("{name:<name_width$}  {value:>value_width$}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn hit_ratio_is_hits_over_lookups_and_na_before_any() {
        assert_eq!(hit_ratio(&object(json!({"hits": 3, "misses": 1}))), "75.0%");
        assert_eq!(hit_ratio(&object(json!({"hits": 2, "misses": 1}))), "66.7%");
        assert_eq!(hit_ratio(&object(json!({"hits": 0, "misses": 0}))), "n/a");
    }

    #[test]
    fn table_aligns_names_left_and_values_right() {
        let stats = object(json!({
            "misses": 1, "hits": 1000, "passthrough": false, "transport": "uring",
            "requests": {"lookup": 12, "open": 0}
        }));
        assert_eq!(
            table(&stats),
            "hit ratio        99.9%\n\
             hits              1000\n\
             misses               1\n\
             transport        uring\n\
             passthrough      false\n\
             requests.lookup     12\n"
        );
    }
}
