//! The storms of issue #10: 8 writer threads and 8 reader threads on 20 keys (entries of
//! 4 KiB and 60 KiB) at once, for a few seconds, on the bare dir and through the mount.
//! Writers either `open(O_TRUNC)` + write + close, or write a temp file and rename it. Every
//! operation is timed; the row gives ops/s, and the latency lines p50/p99/max and errors.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{Bench, Variant};
use crate::daemon::Requests;
use crate::ops::{close_checked, read_whole};
use crate::report::{fmt_secs, max, percentile, Row, Unit};

const KEYS: usize = 20;
const WRITERS: usize = 8;
const READERS: usize = 8;

/// How the storm's writers write.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Writers {
    Truncating,
    Renaming,
}

/// What one side of a storm did.
struct Run {
    ops: u64,
    writes: u64,
    secs: f64,
    errors: u64,
    latencies: Vec<f64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }

    fn write_rate(&self) -> f64 {
        self.writes as f64 / self.secs
    }
}

fn value(k: usize, n: u64) -> Vec<u8> {
    let pad = if k.is_multiple_of(2) {
        4 * 1024
    } else {
        60 * 1024
    };
    format!("{{\"k\":{k},\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(pad)).into_bytes()
}

fn key_path(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("s{k:02}.json"))
}

fn write_one(dir: &Path, how: Writers, k: usize, n: u64, tag: usize) -> std::io::Result<()> {
    let path = key_path(dir, k);
    let target = match how {
        Writers::Truncating => path.clone(),
        Writers::Renaming => dir.join(format!("s{k:02}.json.{tag}.tmp")),
    };
    let mut f = File::create(&target)?;
    f.write_all(&value(k, n))?;
    close_checked(f)?;
    if how == Writers::Renaming {
        fs::rename(&target, &path)?;
    }
    Ok(())
}

/// Fill `dir` with the storm's keys.
fn seed(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    for k in 0..KEYS {
        fs::write(key_path(dir, k), value(k, 0))?;
    }
    Ok(())
}

/// Run one storm on `dir` for `run_for`.
fn storm(dir: &Path, how: Writers, run_for: Duration) -> Run {
    let stop = AtomicBool::new(false);
    let start_line = Barrier::new(WRITERS + READERS + 1);
    let results: Vec<(u64, u64, Vec<f64>)> = thread::scope(|s| {
        let mut handles = Vec::new();
        for t in 0..WRITERS + READERS {
            let (stop, start_line) = (&stop, &start_line);
            handles.push(s.spawn(move || {
                let mut buf = vec![0u8; 128 * 1024];
                let (mut ops, mut errors, mut lat) = (0, 0, Vec::new());
                start_line.wait();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let k = (t * 7 + n as usize) % KEYS;
                    let began = Instant::now();
                    let ok = if t < WRITERS {
                        write_one(dir, how, k, n, t).is_ok()
                    } else {
                        read_whole(&key_path(dir, k), &mut buf).is_ok()
                    };
                    lat.push(began.elapsed().as_secs_f64());
                    ops += 1;
                    errors += u64::from(!ok);
                }
                (ops, errors, lat)
            }));
        }
        start_line.wait();
        thread::sleep(run_for);
        stop.store(true, Ordering::Relaxed);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut run = Run {
        ops: 0,
        writes: 0,
        secs: run_for.as_secs_f64(),
        errors: 0,
        latencies: Vec::new(),
    };
    for (t, (ops, errors, lat)) in results.into_iter().enumerate() {
        if t < WRITERS {
            run.writes += ops;
        }
        run.ops += ops;
        run.errors += errors;
        run.latencies.extend(lat);
    }
    run
}

fn summary(run: &Run) -> String {
    format!(
        "{} ops/s ({} writes/s), p50 {}, p99 {}, max {}, {} errors",
        run.rate().round(),
        run.write_rate().round(),
        fmt_secs(percentile(&run.latencies, 50.0)),
        fmt_secs(percentile(&run.latencies, 99.0)),
        fmt_secs(max(&run.latencies)),
        run.errors
    )
}

impl<'a> Bench<'a> {
    /// One storm workload; returns the mount's rate (for comparing the two storms).
    pub fn storm(&mut self, how: Writers) -> Result<f64> {
        let (label, dir_name) = match how {
            Writers::Truncating => (
                "storm-trunc: 8 O_TRUNC writers + 8 readers, 20 keys",
                "storm-trunc",
            ),
            Writers::Renaming => (
                "storm-rename: 8 temp+rename writers + 8 readers, 20 keys",
                "storm-rename",
            ),
        };
        let name = format!("{label} (writes/s)");
        let d = self.mount(Variant::Default)?;
        let native = self.native().join(dir_name);
        let mounted = d.mnt.join(dir_name);
        seed(&native)?;
        seed(&mounted)?;
        let run_for = self.plan.thread_run * 5 / 2;
        storm(&native, how, run_for / 5);
        storm(&mounted, how, run_for / 5);
        let n = storm(&native, how, run_for);
        let mut requests = Requests::default();
        let m = d.counted(&mut requests, || Ok(storm(&mounted, how, run_for)))?;
        let p99 = percentile(&m.latencies, 99.0);
        let worst = max(&m.latencies);
        let mut row = Row::compare(
            &name,
            n.write_rate(),
            m.write_rate(),
            Unit::Rate("writes/s"),
            Some(0.15),
        );
        row.goal = "≥ 0.15, p99 ≤ 20 ms, max ≤ 200 ms, no errors".into();
        row.met = Some(row.ratio >= 0.15 && p99 <= 0.020 && worst <= 0.200 && m.errors == 0);
        self.rows.push(row);
        self.rows.push(Row::compare(
            &format!("{label}, all operations (ops/s)"),
            n.rate(),
            m.rate(),
            Unit::Rate("ops/s"),
            None,
        ));
        self.notes.push(format!(
            "{label}: native {}; mount {}",
            summary(&n),
            summary(&m)
        ));
        self.record(
            &name,
            &d,
            m.ops,
            "ops",
            requests,
            1.0 / m.rate() - 1.0 / n.rate(),
        )?;
        Ok(m.write_rate())
    }

    /// Both storms, and the goal that a truncating storm keeps within 1.5× of a renaming one.
    pub fn storms(&mut self) -> Result<()> {
        let trunc = self.storm(Writers::Truncating)?;
        let rename = self.storm(Writers::Renaming)?;
        let ratio = trunc / rename;
        self.rows.push(Row {
            workload: "storm-trunc writes/s ÷ storm-rename writes/s (mount)".into(),
            native: "—".into(),
            mount: format!("{trunc:.0} / {rename:.0}"),
            ratio,
            goal: "≥ 0.67 (within 1.5×)".into(),
            met: Some(ratio >= 1.0 / 1.5),
        });
        Ok(())
    }
}
