//! The workloads of issue #5. Each one mounts a fresh daemon, warms up both sides, then runs
//! rounds that alternate native and mount (the order flips every round, so drift from other
//! load on the machine falls on both), and records a results row and the daemon's counters.
//!
//! Per-op workloads take each round's median latency; bulk workloads (a whole directory, a
//! whole file) take each round's total time. The table shows the median over rounds.

mod cold;
mod shared;
mod storm;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Result};

use crate::daemon::{getxattr, Daemon, DaemonSpec, Requests};
use crate::dataset::{set_age, small_json, Layout, SMALL, STALE_DURATION};
use crate::ops::{
    atomic_write, drop_caches, list_long, read_whole, real_ls_l, stat_all, statfs, threaded_reads,
    time_each, time_once, ListPhases,
};
use crate::report::{fmt_secs, max, median, percentile, CounterLine, Row, Unit};

/// How much each workload does.
pub struct Plan {
    pub rounds: usize,
    pub small_ops: usize,
    pub write_ops: usize,
    pub thread_run: Duration,
    pub threads: usize,
    pub stale_reads: usize,
    pub warmup: usize,
}

/// How a mount differs from the default one. The variants are context rows that say what a
/// feature costs or saves; they have no goal.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Default,
    /// `CACHETTA_PASSTHROUGH=0`: every read goes through the daemon.
    NoPassthrough,
    /// `watch = "poll=1h"`: no inotify watcher reacting to the backing dir.
    PollWatch,
}

impl Variant {
    fn suffix(self) -> &'static str {
        match self {
            Variant::Default => "",
            Variant::NoPassthrough => ", no passthrough",
            Variant::PollWatch => ", watch = poll (no inotify)",
        }
    }
}

/// Bytes read per round of the warm sequential read.
const WARM_ROUND_BYTES: u64 = 4 << 30;

/// Latencies of one side of a per-op workload, pooled over rounds.
#[derive(Default)]
struct Pooled {
    samples: Vec<f64>,
}

impl Pooled {
    /// Add a round's samples; returns the round's median.
    fn round(&mut self, samples: Vec<f64>) -> f64 {
        let m = median(&samples);
        self.samples.extend(samples);
        m
    }
    fn line(&self, what: &str) -> String {
        let mean = self.samples.iter().sum::<f64>() / self.samples.len() as f64;
        format!(
            "| {what} | {} | {} | {} | {} | {} |",
            self.samples.len(),
            fmt_secs(percentile(&self.samples, 50.0)),
            fmt_secs(mean),
            fmt_secs(percentile(&self.samples, 99.0)),
            fmt_secs(max(&self.samples))
        )
    }
}

pub struct Bench<'a> {
    pub layout: &'a Layout,
    pub spec: DaemonSpec<'a>,
    pub plan: Plan,
    pub rows: Vec<Row>,
    pub counters: Vec<CounterLine>,
    /// Latency distributions (Markdown table lines) of the per-op workloads.
    pub latencies: Vec<String>,
    pub notes: Vec<String>,
    /// Workloads that are no native-vs-mount comparison print a table of their own (Markdown,
    /// with its heading).
    pub own_tables: Vec<String>,
    /// The measured FUSE round trip (mount − native getxattr), seconds.
    round_trip: f64,
    mounts: usize,
}

/// `reads` timed reads of a 4 KiB entry.
fn timed_reads(path: &Path, reads: usize, buf: &mut [u8]) -> Result<Vec<f64>> {
    time_each(reads, |_| {
        ensure!(read_whole(path, buf)? == SMALL as u64);
        Ok(())
    })
}

/// Run `native` and `mount` once per round, alternating which goes first.
fn alternate(
    rounds: usize,
    mut native: impl FnMut(usize) -> Result<f64>,
    mut mount: impl FnMut(usize) -> Result<f64>,
) -> Result<(f64, f64)> {
    let (mut n, mut m) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        if r % 2 == 0 {
            n.push(native(r)?);
            m.push(mount(r)?);
        } else {
            m.push(mount(r)?);
            n.push(native(r)?);
        }
    }
    Ok((median(&n), median(&m)))
}

impl<'a> Bench<'a> {
    pub fn new(layout: &'a Layout, spec: DaemonSpec<'a>, plan: Plan) -> Self {
        Bench {
            layout,
            spec,
            plan,
            rows: Vec::new(),
            counters: Vec::new(),
            latencies: Vec::new(),
            notes: Vec::new(),
            own_tables: Vec::new(),
            round_trip: f64::NAN,
            mounts: 0,
        }
    }

    fn native(&self) -> &Path {
        &self.layout.native
    }

    fn mount(&mut self, variant: Variant) -> Result<Daemon> {
        let config = match variant {
            Variant::PollWatch => self.layout.config_poll.clone(),
            _ => self.layout.config.clone(),
        };
        let spec = self.spec;
        self.mount_with(&spec, &config, variant != Variant::NoPassthrough)
    }

    /// A fresh mount of `spec.backing` at the next `mntN`.
    fn mount_with(
        &mut self,
        spec: &DaemonSpec,
        config: &Path,
        passthrough: bool,
    ) -> Result<Daemon> {
        self.mounts += 1;
        let mnt = self.layout.work.join(format!("mnt{}", self.mounts));
        Daemon::start(spec, &mnt, config, passthrough)
    }

    fn record(
        &mut self,
        workload: &str,
        daemon: &Daemon,
        ops: u64,
        op_name: &'static str,
        requests: Requests,
        extra_per_op: f64,
    ) -> Result<()> {
        self.counters.push(CounterLine {
            workload: workload.to_owned(),
            ops,
            op_name,
            requests,
            extra_per_op,
            rss_kib: daemon.memory_kib()?,
        });
        Ok(())
    }

    /// A per-op workload: `op(root, round, i)` timed one call at a time.
    fn per_op(
        &mut self,
        workload: &str,
        daemon: &Daemon,
        ops: usize,
        mut op: impl FnMut(&Path, usize, usize) -> Result<()>,
    ) -> Result<(f64, f64, Requests)> {
        let native = self.native().to_path_buf();
        for i in 0..self.plan.warmup {
            op(&native, usize::MAX, i)?;
            op(&daemon.mnt, usize::MAX, i)?;
        }
        let (mut pn, mut pm) = (Pooled::default(), Pooled::default());
        let mut requests = Requests::default();
        let op = std::cell::RefCell::new(op);
        let (n, m) = alternate(
            self.plan.rounds,
            |r| Ok(pn.round(time_each(ops, |i| op.borrow_mut()(&native, r, i))?)),
            |r| {
                let samples = daemon.counted(&mut requests, || {
                    time_each(ops, |i| op.borrow_mut()(&daemon.mnt, r, i))
                })?;
                Ok(pm.round(samples))
            },
        )?;
        self.latencies.push(pn.line(&format!("{workload}, native")));
        self.latencies.push(pm.line(&format!("{workload}, mount")));
        Ok((n, m, requests))
    }

    /// The cost of one request that does nearly nothing in the daemon: `statfs` of the root
    /// (the daemon answers with the backing filesystem's `statvfs`).
    pub fn round_trip(&mut self) -> Result<()> {
        let name = "FUSE round trip (statfs of the root)";
        let d = self.mount(Variant::Default)?;
        let ops = self.plan.small_ops;
        let (n, m, req) = self.per_op(name, &d, ops, |root, _, _| statfs(root))?;
        self.round_trip = m - n;
        self.rows
            .push(Row::compare(name, n, m, Unit::Seconds, None));
        self.record(
            name,
            &d,
            (ops * self.plan.rounds) as u64,
            "statfs",
            req,
            m - n,
        )
    }

    /// Open, read to EOF and close the same 4 KiB entry over and over. Without passthrough
    /// (a context row), the reads go to the daemon too.
    pub fn hot_read(&mut self, variant: Variant) -> Result<()> {
        let name = &format!("hot 4 KiB open+read+close{}", variant.suffix());
        let d = self.mount(variant)?;
        let ops = self.plan.small_ops;
        let mut buf = vec![0u8; 64 * 1024];
        let (n, m, req) = self.per_op(name, &d, ops, |root, _, _| {
            ensure!(read_whole(&Layout::hot(root), &mut buf)? == SMALL as u64);
            Ok(())
        })?;
        let mut row = Row::compare(name, n, m, Unit::Seconds, None);
        let extra = m - n;
        let total_ops = (ops * self.plan.rounds) as u64;
        if variant == Variant::Default {
            // Limited by the open round trip: nothing but `open` (and the `release` the
            // kernel sends after the close, in the background) reaches the daemon.
            let others: u64 = req
                .0
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "open" | "release"))
                .map(|(_, n)| n)
                .sum();
            row.goal = format!(
                "only `open` + `release` reach the daemon; +{} per read = {:.2} × RT",
                fmt_secs(extra),
                extra / self.round_trip
            );
            row.met = Some(others * 100 < total_ops && req.0.get("open") == Some(&total_ops));
        }
        self.rows.push(row);
        self.record(name, &d, total_ops, "reads", req, extra)
    }

    /// The hot read from several threads at once: operations per second in all.
    pub fn hot_read_threads(&mut self, variant: Variant) -> Result<()> {
        let threads = self.plan.threads;
        let name = format!(
            "hot 4 KiB read, {threads} threads (ops/s){}",
            variant.suffix()
        );
        let d = self.mount(variant)?;
        let run_for = self.plan.thread_run;
        let native = Layout::hot(self.native());
        let mounted = Layout::hot(&d.mnt);
        threaded_reads(&native, threads, run_for / 5)?;
        threaded_reads(&mounted, threads, run_for / 5)?;
        let mut requests = Requests::default();
        let mut mount_ops = 0;
        let rate = |(ops, secs): (u64, f64)| ops as f64 / secs;
        let (n, m) = alternate(
            self.plan.rounds,
            |_| Ok(rate(threaded_reads(&native, threads, run_for)?)),
            |_| {
                let done =
                    d.counted(&mut requests, || threaded_reads(&mounted, threads, run_for))?;
                mount_ops += done.0;
                Ok(rate(done))
            },
        )?;
        self.rows
            .push(Row::compare(&name, n, m, Unit::Rate("ops/s"), None));
        self.record(&name, &d, mount_ops, "reads", requests, 1.0 / m - 1.0 / n)
    }

    /// `stat` of every entry of the big directory, after one warming pass.
    pub fn stat_all(&mut self) -> Result<()> {
        let name = format!("warm stat, {} entries (all)", self.layout.entries);
        self.stat_workload(&name, Variant::Default, 0.8, stat_all)
    }

    /// `each` (a `stat` of every entry, timed) on both sides, once to warm up, then in
    /// alternating rounds; the row has goal `goal`.
    pub(super) fn stat_workload(
        &mut self,
        name: &str,
        variant: Variant,
        goal: f64,
        each: impl Fn(&[PathBuf]) -> Result<f64>,
    ) -> Result<()> {
        let entries = self.layout.entries;
        let d = self.mount(variant)?;
        let native = self.layout.entry_paths(self.native());
        let mounted = self.layout.entry_paths(&d.mnt);
        each(&native)?;
        each(&mounted)?;
        let mut requests = Requests::default();
        let (n, m) = alternate(
            self.plan.rounds,
            |_| each(&native),
            |_| d.counted(&mut requests, || each(&mounted)),
        )?;
        self.rows
            .push(Row::compare(name, n, m, Unit::Seconds, Some(goal)));
        let ops = (entries * self.plan.rounds) as u64;
        let extra = (m - n) / entries as f64;
        self.record(name, &d, ops, "stats", requests, extra)
    }

    /// `ls -l` of the big directory: readdir + lstat of each entry, in process; then the real
    /// `ls -l` once on each side.
    pub fn list_long(&mut self) -> Result<()> {
        let entries = self.layout.entries;
        let name = format!("ls -l of {entries} entries (in process)");
        let d = self.mount(Variant::Default)?;
        let native = Layout::many(self.native());
        let mounted = Layout::many(&d.mnt);
        let phases = std::cell::RefCell::new([Vec::new(), Vec::new()]);
        let list = |dir: &Path, side: usize| -> Result<f64> {
            let p = list_long(dir)?;
            ensure!(
                p.count == entries,
                "{} lists {} entries, not {entries}",
                dir.display(),
                p.count
            );
            let total = p.total();
            phases.borrow_mut()[side].push(p);
            Ok(total)
        };
        list(&native, 0)?;
        list(&mounted, 1)?;
        phases.borrow_mut().iter_mut().for_each(Vec::clear);
        let mut requests = Requests::default();
        let (n, m) = alternate(
            self.plan.rounds,
            |_| list(&native, 0),
            |_| d.counted(&mut requests, || list(&mounted, 1)),
        )?;
        self.rows
            .push(Row::compare(&name, n, m, Unit::Seconds, Some(0.7)));
        let ops = self.plan.rounds as u64;
        self.record(&name, &d, ops, "listings", requests, m - n)?;
        let phase = |side: usize, f: fn(&ListPhases) -> f64| {
            fmt_secs(median(
                &phases.borrow()[side].iter().map(f).collect::<Vec<_>>(),
            ))
        };
        for (side, what) in [(0, "native"), (1, "mount")] {
            self.notes.push(format!(
                "{name}, {what}: opendir {}, reading the names {}, lstat of all {}",
                phase(side, |p| p.opendir),
                phase(side, |p| p.readdir),
                phase(side, |p| p.lstat),
            ));
        }

        let real = format!("real `ls -l` of {entries} entries (1 run each)");
        let n = real_ls_l(&native)?;
        let mut requests = Requests::default();
        let m = d.counted(&mut requests, || real_ls_l(&mounted))?;
        self.rows
            .push(Row::compare(&real, n, m, Unit::Seconds, None));
        self.record(&real, &d, 1, "listing", requests, m - n)
    }

    /// Sequential read of the big entry, 1 MiB at a time, warm (page cache) or cold (after
    /// `drop_caches` before every read), through a passthrough mount and one without.
    pub fn sequential(&mut self, cold: bool) -> Result<()> {
        let mib = self.layout.big_bytes >> 20;
        let temp = if cold { "cold" } else { "warm" };
        let pt = self.mount(Variant::Default)?;
        let no_pt = self.mount(Variant::NoPassthrough)?;
        let native = Layout::big(self.native());
        let big_bytes = self.layout.big_bytes;
        // A warm pass takes milliseconds: several per round (each with its own open) make a
        // round long enough to time. A cold round is one pass after dropping the caches.
        let passes = if cold {
            1
        } else {
            (WARM_ROUND_BYTES / big_bytes).max(1)
        };
        let read = |path: &Path| -> Result<f64> {
            let mut buf = vec![0u8; 1 << 20];
            if cold {
                drop_caches()?;
            }
            let (secs, ()) = time_once(|| {
                for _ in 0..passes {
                    let n = read_whole(path, &mut buf)?;
                    ensure!(n == big_bytes, "read {n} bytes of {}", path.display());
                }
                Ok(())
            })?;
            Ok((passes * mib) as f64 / secs)
        };
        let mounts = [(&pt, "passthrough"), (&no_pt, "no passthrough")];
        // Warm-up, and the daemons' one-time JSON validation of the entry on first lookup.
        read(&native)?;
        for (d, _) in mounts {
            read(&Layout::big(&d.mnt))?;
        }
        let mut native_rates = Vec::new();
        let mut rates = [Vec::new(), Vec::new()];
        let mut requests = [Requests::default(), Requests::default()];
        for r in 0..self.plan.rounds {
            // Rotate the order: native, pt, no-pt; pt, no-pt, native; ...
            for slot in 0..3 {
                match (slot + r) % 3 {
                    0 => native_rates.push(read(&native)?),
                    k => {
                        let (d, _) = mounts[k - 1];
                        let rate =
                            d.counted(&mut requests[k - 1], || read(&Layout::big(&d.mnt)))?;
                        rates[k - 1].push(rate);
                    }
                }
            }
        }
        let n = median(&native_rates);
        let goal = if cold { 0.85 } else { 0.95 };
        let list = |rates: &[f64]| {
            rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.notes.push(format!(
            "sequential read {mib} MiB, {temp}, MiB/s per round: native {}; passthrough {}; \
             no passthrough {}",
            list(&native_rates),
            list(&rates[0]),
            list(&rates[1])
        ));
        for (k, (d, how)) in mounts.iter().enumerate() {
            let name = if k == 0 {
                format!("sequential read {mib} MiB, {temp} (MiB/s)")
            } else {
                format!("sequential read {mib} MiB, {temp}, {how} (MiB/s)")
            };
            let goal = (k == 0).then_some(goal);
            self.rows.push(Row::compare(
                &name,
                n,
                median(&rates[k]),
                Unit::Rate("MiB/s"),
                goal,
            ));
            let reqs = std::mem::take(&mut requests[k]);
            let extra = mib as f64 / median(&rates[k]) - mib as f64 / n;
            let reads = self.plan.rounds as u64 * passes;
            self.record(&name, d, reads, "file reads", reqs, extra)?;
        }
        Ok(())
    }

    /// The atomic-write idiom with 4 KiB of JSON: scratch file in the same dir, rename onto
    /// `name.json`.
    pub fn atomic_writes(&mut self, variant: Variant) -> Result<()> {
        let name = &format!(
            "smallwrite: atomic 4 KiB write (temp + rename){}",
            variant.suffix()
        );
        let d = self.mount(variant)?;
        let ops = self.plan.write_ops;
        let (n, m, req) = self.per_op(name, &d, ops, |root, r, i| {
            let tag = (r as u64).wrapping_mul(1 << 20) + i as u64;
            let tmp = format!("name.json.{r}.{i}.tmp");
            atomic_write(&Layout::writes(root), &tmp, &small_json(SMALL, tag))
        })?;
        let goal = (variant == Variant::Default).then_some(0.45);
        self.rows
            .push(Row::compare(name, n, m, Unit::Seconds, goal));
        let mount_ops = (ops * self.plan.rounds) as u64;
        let published = d.stats()?["writes_ok"].as_u64().unwrap_or(0);
        self.notes.push(format!(
            "{name}: the mount counted writes_ok = {published} for {} renames (warm-up included)",
            mount_ops + self.plan.warmup as u64
        ));
        self.record(name, &d, mount_ops, "writes", req, m - n)
    }

    /// Reads of a stale entry while its (5 s) refresh runs, next to reads of a fresh entry of
    /// the same size under the same rule. Each round ages its own key, so each round starts a
    /// refresh of its own with its first read.
    pub fn stale_reads(&mut self) -> Result<()> {
        let name = "stale 4 KiB read while its refresh runs";
        let d = self.mount(Variant::Default)?;
        let reads = self.plan.stale_reads;
        let mut buf = vec![0u8; 64 * 1024];
        let native = self.native().to_path_buf();
        let stats_before = d.stats()?;
        let (mut native_lat, mut fresh_lat, mut stale_lat) =
            (Pooled::default(), Pooled::default(), Pooled::default());
        let mut requests = Requests::default();
        let mut refreshing_throughout = 0;
        for r in 0..self.plan.rounds {
            let age = STALE_DURATION + STALE_DURATION / 2;
            set_age(&Layout::stale_key(&self.layout.backing, r), age)?;
            let stale_key = Layout::stale_key(&d.mnt, r);
            let state = getxattr(&stale_key, "user.cachetta.state")?;
            if state != b"stale" {
                bail!(
                    "{} is {:?}, not stale, after aging its backing file",
                    stale_key.display(),
                    String::from_utf8_lossy(&state)
                );
            }
            let native_key = Layout::stale_key(&native, r);
            let fresh_key = Layout::fresh_key(&d.mnt);
            let native_first = r % 2 == 0;
            if native_first {
                native_lat.round(timed_reads(&native_key, reads, &mut buf)?);
            }
            d.counted(&mut requests, || {
                // Fresh first in the rounds where native went first, stale first otherwise.
                if native_first {
                    fresh_lat.round(timed_reads(&fresh_key, reads, &mut buf)?);
                }
                stale_lat.round(timed_reads(&stale_key, reads, &mut buf)?);
                if !native_first {
                    fresh_lat.round(timed_reads(&fresh_key, reads, &mut buf)?);
                }
                Ok(())
            })?;
            if !native_first {
                native_lat.round(timed_reads(&native_key, reads, &mut buf)?);
            }
            if getxattr(&stale_key, "user.cachetta.refreshing")? == b"true" {
                refreshing_throughout += 1;
            }
        }
        let stats_after = d.stats()?;
        let delta =
            |k: &str| stats_after[k].as_u64().unwrap_or(0) - stats_before[k].as_u64().unwrap_or(0);
        let rounds = self.plan.rounds;
        self.notes.push(format!(
            "stale reads: {rounds} rounds of {reads} stale reads; the refresh was still running \
             after the last read in {refreshing_throughout} of {rounds} rounds; \
             stale_served +{}, refreshes_started +{}, refreshes_ok +{} during the rounds",
            delta("stale_served"),
            delta("refreshes_started"),
            delta("refreshes_ok"),
        ));
        let p = |pool: &Pooled, q| percentile(&pool.samples, q);
        let (fresh50, fresh99) = (p(&fresh_lat, 50.0), p(&fresh_lat, 99.0));
        let (stale50, stale99) = (p(&stale_lat, 50.0), p(&stale_lat, 99.0));
        self.rows.push(Row {
            workload: format!("{name}: p50 / p99"),
            native: format!(
                "{} / {}",
                fmt_secs(p(&native_lat, 50.0)),
                fmt_secs(p(&native_lat, 99.0))
            ),
            mount: format!(
                "{} / {} (stale), {} / {} (fresh)",
                fmt_secs(stale50),
                fmt_secs(stale99),
                fmt_secs(fresh50),
                fmt_secs(fresh99)
            ),
            ratio: fresh50 / stale50,
            goal: "stale ≈ fresh: ratio (fresh/stale p50) ≥ 0.8, p99 ≤ 2× fresh, refresh running"
                .into(),
            met: Some(
                fresh50 / stale50 >= 0.8
                    && stale99 <= 2.0 * fresh99
                    && refreshing_throughout == rounds,
            ),
        });
        self.latencies
            .push(native_lat.line(&format!("{name}, native")));
        self.latencies
            .push(fresh_lat.line(&format!("{name}, mount, fresh entry")));
        self.latencies
            .push(stale_lat.line(&format!("{name}, mount, stale entry")));
        let ops = (2 * reads * rounds) as u64;
        let extra = percentile(&stale_lat.samples, 50.0) - percentile(&native_lat.samples, 50.0);
        self.record(name, &d, ops, "reads (stale + fresh)", requests, extra)
    }
}
