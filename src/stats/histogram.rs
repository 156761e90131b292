//! A latency histogram with fixed buckets in atomics: recording is two relaxed `fetch_add`s
//! and no lock, so a FUSE request never waits for a scrape; the cumulative counts Prometheus
//! wants are added up when they are read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One bucket's upper bound: in nanoseconds for the comparison, and as the `le` label text
/// (written out, so that `0.0001` never turns into `1.0000000000000002e-4`).
pub type Bound = (u64, &'static str);

/// Request latency: FUSE requests take tens of microseconds from the hot set and milliseconds
/// from a cold disk; anything past a second is a stall worth seeing on its own.
pub const REQUEST_BOUNDS: &[Bound] = &[
    (25_000, "0.000025"),
    (50_000, "0.00005"),
    (100_000, "0.0001"),
    (250_000, "0.00025"),
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (10_000_000, "0.01"),
    (50_000_000, "0.05"),
    (250_000_000, "0.25"),
    (1_000_000_000, "1"),
];

/// Refresh duration: commands run from a few milliseconds (a local file) to the default
/// 60 s `refresh_timeout` and beyond.
pub const REFRESH_BOUNDS: &[Bound] = &[
    (10_000_000, "0.01"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5"),
    (10_000_000_000, "10"),
    (30_000_000_000, "30"),
    (60_000_000_000, "60"),
    (300_000_000_000, "300"),
];

/// Observations counted per bucket (not cumulative, so one observation touches one counter),
/// the last one past every bound (`+Inf`), and their sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [Bound],
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

/// What a scrape reads: cumulative counts by `le` (`+Inf` last), the sum in seconds, and the
/// count, which always equals the `+Inf` bucket (both come from the same loads).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub buckets: Vec<(&'static str, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Histogram {
    /// `bounds` must rise strictly.
    pub fn new(bounds: &'static [Bound]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0].0 < w[1].0));
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Count one observation in the first bucket whose bound it does not exceed.
    pub fn observe(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self
            .bounds
            .iter()
            .position(|&(bound, _)| nanos <= bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The cumulative counts. Observations that land while this reads may show in the buckets
    /// and not yet in the sum (or the other way round); the next scrape has them.
    pub fn snapshot(&self) -> Snapshot {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        let labels = self.bounds.iter().map(|&(_, le)| le).chain(["+Inf"]);
        for (le, count) in labels.zip(self.counts.iter()) {
            total += count.load(Ordering::Relaxed);
            buckets.push((le, total));
        }
        Snapshot {
            buckets,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: &[Bound] = &[(1_000, "0.000001"), (1_000_000, "0.001")];

    #[test]
    fn observations_land_in_the_first_bucket_they_fit_and_counts_are_cumulative() {
        let h = Histogram::new(BOUNDS);
        h.observe(Duration::from_nanos(1_000)); // on the bound: `le` is inclusive
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_secs(2));
        let snap = h.snapshot();
        assert_eq!(
            snap.buckets,
            vec![("0.000001", 1), ("0.001", 3), ("+Inf", 4)]
        );
        assert_eq!(snap.count, 4);
        assert!((snap.sum_seconds - 2.001501).abs() < 1e-9, "{}", snap.sum_seconds);
    }

    #[test]
    fn an_empty_histogram_has_every_bucket_at_zero() {
        let snap = Histogram::new(BOUNDS).snapshot();
        assert_eq!(
            snap.buckets,
            vec![("0.000001", 0), ("0.001", 0), ("+Inf", 0)]
        );
        assert_eq!((snap.count, snap.sum_seconds), (0, 0.0));
    }

    #[test]
    fn a_duration_past_u64_nanoseconds_counts_in_the_last_bucket() {
        let h = Histogram::new(BOUNDS);
        h.observe(Duration::MAX);
        assert_eq!(h.snapshot().buckets.last(), Some(&("+Inf", 1)));
    }

    #[test]
    fn the_le_labels_say_the_bounds_in_seconds() {
        for &(nanos, le) in REQUEST_BOUNDS.iter().chain(REFRESH_BOUNDS).chain(BOUNDS) {
            let seconds: f64 = le.parse().unwrap();
            assert!((seconds * 1e9 - nanos as f64).abs() < 0.5, "{le} vs {nanos} ns");
        }
        for bounds in [REQUEST_BOUNDS, REFRESH_BOUNDS] {
            assert!(bounds.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }

    #[test]
    fn concurrent_observations_are_all_counted() {
        let h = Histogram::new(REQUEST_BOUNDS);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let h = &h;
                s.spawn(move || {
                    for i in 0..1_000u64 {
                        h.observe(Duration::from_micros((t * 1_000 + i) % 2_000));
                    }
                });
            }
        });
        assert_eq!(h.snapshot().count, 4_000);
    }
}
