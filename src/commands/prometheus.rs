//! `cachetta stats --prometheus`: the mount's counters (`user.cachetta.stats`) in the
//! Prometheus text exposition format 0.0.4, for node_exporter's textfile collector.
//!
//! The mapping: every counter `NAME` is `cachetta_NAME_total` (type counter); the gauges
//! `lru_entries`, `lru_bytes` and `inodes` keep their name (`cachetta_lru_entries`);
//! `uptime_s` is `cachetta_uptime_seconds` (a gauge, in base units as Prometheus wants); the
//! booleans `passthrough` and `watching` are gauges of 0 or 1; the per-operation `requests`
//! are one counter family, `cachetta_requests_total{op="lookup"}`. A field a newer daemon adds
//! comes out as a gauge `cachetta_NAME` (numbers and booleans; objects are left out), so
//! nothing is lost and nothing is claimed to be monotonic that might not be.

use serde_json::{Map, Value};

/// The two metric types the mapping uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Counter,
    Gauge,
}

impl Type {
    fn name(self) -> &'static str {
        match self {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
        }
    }
}

/// Every field of `user.cachetta.stats` cachetta knows: its name there, its metric name,
/// type and help text (SPEC §5 and §7).
const KNOWN: &[(&str, &str, Type, &str)] = &[
    (
        "hits",
        "cachetta_hits_total",
        Type::Counter,
        "Opens for reading of a visible entry, fresh or stale.",
    ),
    (
        "misses",
        "cachetta_misses_total",
        Type::Counter,
        "Lookups of a .json name with no visible entry.",
    ),
    (
        "stale_served",
        "cachetta_stale_served_total",
        Type::Counter,
        "Opens for reading of a stale entry.",
    ),
    (
        "lru_hits",
        "cachetta_lru_hits_total",
        Type::Counter,
        "Reads served from the daemon's in-memory hot set.",
    ),
    (
        "refreshes_started",
        "cachetta_refreshes_started_total",
        Type::Counter,
        "Refresh commands started.",
    ),
    (
        "refreshes_ok",
        "cachetta_refreshes_ok_total",
        Type::Counter,
        "Refreshes that replaced their entry.",
    ),
    (
        "refreshes_failed",
        "cachetta_refreshes_failed_total",
        Type::Counter,
        "Refreshes that failed (exit status, timeout, invalid or oversized output).",
    ),
    (
        "refreshes_declined",
        "cachetta_refreshes_declined_total",
        Type::Counter,
        "Refreshes whose condition command said not to cache the output.",
    ),
    (
        "writes_ok",
        "cachetta_writes_ok_total",
        Type::Counter,
        "Writes through the mount that were published.",
    ),
    (
        "writes_rejected",
        "cachetta_writes_rejected_total",
        Type::Counter,
        "Writes through the mount that were refused (invalid JSON, too large).",
    ),
    (
        "uptime_s",
        "cachetta_uptime_seconds",
        Type::Gauge,
        "Seconds since the mount started.",
    ),
    (
        "lru_entries",
        "cachetta_lru_entries",
        Type::Gauge,
        "Entries in the daemon's in-memory hot set.",
    ),
    (
        "lru_bytes",
        "cachetta_lru_bytes",
        Type::Gauge,
        "Bytes in the daemon's in-memory hot set.",
    ),
    (
        "inodes",
        "cachetta_inodes",
        Type::Gauge,
        "Inodes the daemon currently knows.",
    ),
    (
        "passthrough",
        "cachetta_passthrough",
        Type::Gauge,
        "1 when reads go through kernel FUSE passthrough, else 0.",
    ),
    (
        "watching",
        "cachetta_watching",
        Type::Gauge,
        "1 when the backing dir's watcher runs, else 0.",
    ),
];

/// The per-operation request counters, one family with an `op` label.
const REQUESTS: (&str, &str, &str) = (
    "requests",
    "cachetta_requests_total",
    "Requests of each kind (op) that reached the daemon.",
);

/// The exposition of `stats`, one family after another, each with its `# HELP` and `# TYPE`.
pub fn exposition(stats: &Map<String, Value>) -> String {
    let mut out = String::new();
    for (field, metric, kind, help) in KNOWN {
        if let Some(value) = stats.get(*field).and_then(sample_value) {
            family(&mut out, metric, *kind, help);
            out.push_str(&format!("{metric} {value}\n"));
        }
    }
    if let Some(Value::Object(ops)) = stats.get(REQUESTS.0) {
        let (_, metric, help) = REQUESTS;
        family(&mut out, metric, Type::Counter, help);
        for (op, value) in ops {
            if let Some(value) = sample_value(value) {
                let op = escape_label(op);
                out.push_str(&format!("{metric}{{op=\"{op}\"}} {value}\n"));
            }
        }
    }
    let known = |field: &str| field == REQUESTS.0 || KNOWN.iter().any(|k| k.0 == field);
    for (field, value) in stats.iter().filter(|(field, _)| !known(field)) {
        let (Some(value), Some(metric)) = (sample_value(value), metric_name(field)) else {
            continue;
        };
        let help = format!("{field} from user.cachetta.stats.");
        family(&mut out, &metric, Type::Gauge, &help);
        out.push_str(&format!("{metric} {value}\n"));
    }
    out
}

/// The `# HELP` and `# TYPE` lines that open a family.
fn family(out: &mut String, metric: &str, kind: Type, help: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    out.push_str(&format!(
        "# HELP {metric} {help}\n# TYPE {metric} {}\n",
        kind.name()
    ));
}

/// A JSON number or boolean as a sample value; anything else has none.
fn sample_value(value: &Value) -> Option<String> {
    match value {
        Value::Bool(b) => Some(u8::from(*b).to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `cachetta_` + an unknown field's name, if it makes a valid metric name.
fn metric_name(field: &str) -> Option<String> {
    let valid = !field.is_empty()
        && field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    valid.then(|| format!("cachetta_{field}"))
}

/// A label value with `\`, `"` and newlines escaped as the format asks.
pub(crate) fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn of(value: Value) -> String {
        exposition(value.as_object().unwrap())
    }

    #[test]
    fn counters_get_total_and_gauges_keep_their_name() {
        let text = of(json!({"hits": 3, "lru_bytes": 10, "uptime_s": 7}));
        assert_eq!(
            text,
            "# HELP cachetta_hits_total Opens for reading of a visible entry, fresh or stale.\n\
             # TYPE cachetta_hits_total counter\n\
             cachetta_hits_total 3\n\
             # HELP cachetta_uptime_seconds Seconds since the mount started.\n\
             # TYPE cachetta_uptime_seconds gauge\n\
             cachetta_uptime_seconds 7\n\
             # HELP cachetta_lru_bytes Bytes in the daemon's in-memory hot set.\n\
             # TYPE cachetta_lru_bytes gauge\n\
             cachetta_lru_bytes 10\n"
        );
    }

    #[test]
    fn booleans_are_gauges_of_zero_or_one() {
        let text = of(json!({"passthrough": true, "watching": false}));
        assert!(text.contains("\ncachetta_passthrough 1\n"), "{text}");
        assert!(text.contains("\ncachetta_watching 0\n"), "{text}");
    }

    #[test]
    fn requests_are_one_labelled_counter_family() {
        let text = of(json!({"requests": {"lookup": 4, "open": 2}}));
        assert_eq!(
            text.matches("# TYPE cachetta_requests_total counter\n")
                .count(),
            1
        );
        assert!(
            text.contains("cachetta_requests_total{op=\"lookup\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("cachetta_requests_total{op=\"open\"} 2\n"),
            "{text}"
        );
    }

    #[test]
    fn unknown_fields_become_gauges_and_odd_ones_are_left_out() {
        let text = of(json!({"queued": 2, "bad name": 1, "nested": {"a": 1}, "label": "x"}));
        assert_eq!(
            text,
            "# HELP cachetta_queued queued from user.cachetta.stats.\n\
             # TYPE cachetta_queued gauge\n\
             cachetta_queued 2\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
