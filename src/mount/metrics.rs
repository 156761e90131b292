//! The page of `GET /metrics` (SPEC §14): the counters and gauges of `cachetta stats
//! --prometheus` (the same mapping, so the names are the same), `cachetta_info`, and the
//! histograms of request latency per operation and of refresh duration. It is rendered on the
//! metrics thread from atomics and the two short locks `user.cachetta.stats` takes, so a
//! scrape never holds up a FUSE request.

use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;

use tracing::{error, info};

use super::http::Endpoint;
use crate::commands::prometheus::{self, escape_label};
use crate::fs::CacheFs;
use crate::stats::Snapshot;

/// `GET /metrics` on its own thread, from now until the process ends. The address goes to the
/// log, where a port chosen by the kernel (port 0) can be read.
pub fn serve(endpoint: Endpoint, fs: Arc<CacheFs>, mnt: &Path, backing: &Path) {
    let addr = endpoint.addr();
    let info = Info::new(mnt, backing, env!("CARGO_PKG_VERSION"));
    match endpoint.spawn(move || page(&fs, &info)) {
        Ok(()) => info!("metrics at http://{addr}/metrics"),
        Err(e) => error!("cannot start the metrics thread ({e}); no metrics are served"),
    }
}

/// What `cachetta_info` says of this daemon, rendered once.
#[derive(Debug, Clone)]
pub struct Info {
    line: String,
}

impl Info {
    pub fn new(mountpoint: &Path, backing: &Path, version: &str) -> Info {
        let label = |path: &Path| escape_label(&path.to_string_lossy());
        let line = format!(
            "cachetta_info{{mountpoint=\"{}\",backing=\"{}\",version=\"{}\"}} 1\n",
            label(mountpoint),
            label(backing),
            escape_label(version)
        );
        Info { line }
    }
}

const REQUEST_HISTOGRAM: (&str, &str) = (
    "cachetta_request_duration_seconds",
    "Time the daemon spent on each request, by operation (op), until its handler returned.",
);

const REFRESH_HISTOGRAM: (&str, &str) = (
    "cachetta_refresh_duration_seconds",
    "How long refresh commands took, of those counted as ok, failed or declined.",
);

/// The whole page for `fs`.
pub fn page(fs: &CacheFs, info: &Info) -> String {
    let mut out = prometheus::exposition(&fs.stats_object());
    out.push_str(
        "# HELP cachetta_info The mount this daemon serves, and cachetta's version.\n\
         # TYPE cachetta_info gauge\n",
    );
    out.push_str(&info.line);
    let (name, help) = REQUEST_HISTOGRAM;
    histogram_family(&mut out, name, help);
    for op in fs.requests().ops() {
        histogram(
            &mut out,
            name,
            Some(("op", op.name)),
            &op.latency.snapshot(),
        );
    }
    let (name, help) = REFRESH_HISTOGRAM;
    histogram_family(&mut out, name, help);
    histogram(
        &mut out,
        name,
        None,
        &fs.stats().refresh_duration.snapshot(),
    );
    out
}

fn histogram_family(out: &mut String, name: &str, help: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
}

/// The `_bucket`, `_sum` and `_count` samples of one histogram, with one optional label.
fn histogram(out: &mut String, name: &str, label: Option<(&str, &str)>, snap: &Snapshot) {
    let label = label.map(|(key, value)| format!("{key}=\"{}\"", escape_label(value)));
    for (le, count) in &snap.buckets {
        let labels = match &label {
            Some(label) => format!("{label},le=\"{le}\""),
            None => format!("le=\"{le}\""),
        };
        let _ = writeln!(out, "{name}_bucket{{{labels}}} {count}");
    }
    let labels = label.map(|l| format!("{{{l}}}")).unwrap_or_default();
    let _ = writeln!(out, "{name}_sum{labels} {}", snap.sum_seconds);
    let _ = writeln!(out, "{name}_count{labels} {}", snap.count);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Histogram, REFRESH_BOUNDS};
    use std::time::Duration;

    #[test]
    fn info_escapes_its_label_values() {
        let info = Info::new(
            Path::new("/mnt/a \"quoted\" name"),
            Path::new("/srv/back\\slash\nline"),
            "0.1.0",
        );
        assert_eq!(
            info.line,
            "cachetta_info{mountpoint=\"/mnt/a \\\"quoted\\\" name\",\
             backing=\"/srv/back\\\\slash\\nline\",version=\"0.1.0\"} 1\n"
        );
    }

    #[test]
    fn a_histogram_is_its_buckets_then_sum_and_count() {
        let h = Histogram::new(&REFRESH_BOUNDS[..2]);
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(1));
        let mut out = String::new();
        histogram(&mut out, "x_seconds", Some(("op", "lookup")), &h.snapshot());
        assert_eq!(
            out,
            "x_seconds_bucket{op=\"lookup\",le=\"0.01\"} 1\n\
             x_seconds_bucket{op=\"lookup\",le=\"0.05\"} 1\n\
             x_seconds_bucket{op=\"lookup\",le=\"+Inf\"} 2\n\
             x_seconds_sum{op=\"lookup\"} 1.005\n\
             x_seconds_count{op=\"lookup\"} 2\n"
        );
        let mut out = String::new();
        histogram(
            &mut out,
            "y_seconds",
            None,
            &Histogram::new(&REFRESH_BOUNDS[..1]).snapshot(),
        );
        assert_eq!(
            out,
            "y_seconds_bucket{le=\"0.01\"} 0\n\
             y_seconds_bucket{le=\"+Inf\"} 0\n\
             y_seconds_sum 0\n\
             y_seconds_count 0\n"
        );
    }
}
