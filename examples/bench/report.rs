//! Medians, percentiles and the printed tables (Markdown, so they paste into docs/bench.md).

use std::fmt::Write as _;

use crate::daemon::Requests;

pub fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

/// Nearest-rank percentile.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::max)
}

/// How a measured value reads: a time (lower is better) or a rate (higher is better).
#[derive(Clone, Copy)]
pub enum Unit {
    Seconds,
    /// Per second, with this unit name ("MiB/s", "ops/s").
    Rate(&'static str),
}

pub fn fmt_value(value: f64, unit: Unit) -> String {
    match unit {
        Unit::Seconds => fmt_secs(value),
        Unit::Rate(name) if value >= 10_000.0 => format!("{:.0} {name}", value),
        Unit::Rate(name) => format!("{:.1} {name}", value),
    }
}

pub fn fmt_secs(secs: f64) -> String {
    if secs < 1e-3 {
        format!("{:.1} µs", secs * 1e6)
    } else if secs < 1.0 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{secs:.2} s")
    }
}

/// One line of the results table.
pub struct Row {
    pub workload: String,
    pub native: String,
    pub mount: String,
    /// native time / mount time, or mount rate / native rate: higher is better.
    pub ratio: f64,
    pub goal: String,
    /// `None` when the row has no goal (context only).
    pub met: Option<bool>,
}

impl Row {
    /// A row whose ratio goal is `goal` (or none).
    pub fn compare(workload: &str, native: f64, mount: f64, unit: Unit, goal: Option<f64>) -> Row {
        let ratio = match unit {
            Unit::Seconds => native / mount,
            Unit::Rate(_) => mount / native,
        };
        Row {
            workload: workload.to_owned(),
            native: fmt_value(native, unit),
            mount: fmt_value(mount, unit),
            ratio,
            goal: goal.map_or("—".into(), |g| format!("≥ {g}")),
            met: goal.map(|g| ratio >= g),
        }
    }
}

pub fn results_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| workload | native (median) | mount (median) | ratio | goal | met? |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.3} | {} | {} |",
            r.workload, r.native, r.mount, r.ratio, r.goal, met
        );
    }
    out
}

/// What the daemon saw during one workload's mount runs.
pub struct CounterLine {
    pub workload: String,
    /// The operations those runs made (to show requests per operation).
    pub ops: u64,
    pub op_name: &'static str,
    pub requests: Requests,
    /// Mount median − native median for one op, seconds (spread over the requests per op
    /// below, it says what each request costs).
    pub extra_per_op: f64,
    pub rss_kib: (u64, u64),
}

pub fn counters_table(lines: &[CounterLine]) -> String {
    let mut out = String::from(
        "| workload | ops through the mount | requests per op (total) | mount − native per op | per request | daemon RSS / peak |\n|---|---|---|---|---|---|\n",
    );
    for line in lines {
        let per_op: Vec<String> = line
            .requests
            .0
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(name, &n)| {
                format!(
                    "{name} {} ({n})",
                    fmt_per_op(n as f64 / line.ops.max(1) as f64)
                )
            })
            .collect();
        let per_op = if per_op.is_empty() {
            "none".to_owned()
        } else {
            per_op.join(", ")
        };
        let requests_per_op = line.requests.0.values().sum::<u64>() as f64 / line.ops.max(1) as f64;
        let per_request = if requests_per_op > 0.0 {
            fmt_signed(line.extra_per_op / requests_per_op)
        } else {
            "—".to_owned()
        };
        let _ = writeln!(
            out,
            "| {} | {} {} | {} | {} | {} | {:.1} / {:.1} MiB |",
            line.workload,
            line.ops,
            line.op_name,
            per_op,
            fmt_signed(line.extra_per_op),
            per_request,
            line.rss_kib.0 as f64 / 1024.0,
            line.rss_kib.1 as f64 / 1024.0
        );
    }
    out
}

fn fmt_signed(secs: f64) -> String {
    if secs < 0.0 {
        format!("−{}", fmt_secs(-secs))
    } else {
        format!("+{}", fmt_secs(secs))
    }
}

fn fmt_per_op(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.0}")
    } else if x >= 0.01 {
        format!("{x:.2}")
    } else {
        format!("{x:.4}")
    }
}
