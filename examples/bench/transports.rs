//! `scripts/bench --transports` (issue #24, SPEC §15): the workloads the io_uring transport is
//! judged on, through two mounts of the same backing dir, one `--transport classic` and one
//! `--transport uring`, alternating round by round (the order flips every round); prints
//! uring ÷ classic per workload against the goal (×1.6 on the hot read and cold `stat`,
//! no other workload slower). Each mount's `user.cachetta.stats` must name the transport it
//! was asked for, so a ring that silently fell back to classic cannot pass for one.
//!
//! The kernel's `enable_uring` is machine-wide: `scripts/bench` sets it for the run and puts it
//! back; this module only checks that the ring was taken.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Result};

use crate::daemon::{Daemon, DaemonSpec};
use crate::dataset::{small_json, Layout, SMALL};
use crate::ops::{
    atomic_write, forget_dentries, list_long, read_whole, stat_all, statfs, threaded_reads,
    time_each,
};
use crate::report::{fmt_secs, fmt_value, median, percentile, Unit};
use crate::workloads::Plan;

/// The transports compared, in the order of the first round.
const TRANSPORTS: [&str; 2] = ["classic", "uring"];
/// The goal for the hot read and cold `stat`.
const GOAL: f64 = 1.6;
/// The untimed pause between `drop_caches` and a cold `stat` round.
const SETTLE_AFTER_DROP: std::time::Duration = std::time::Duration::from_secs(1);

/// One workload's result: per transport, each round's value.
struct Line {
    workload: String,
    unit: Unit,
    /// `Some(GOAL)` for the two workloads the goal names; the others must not be slower.
    goal: Option<f64>,
    rounds: [Vec<f64>; 2],
    /// Per transport, every sample of every round (per-op workloads only), for p50/p99.
    samples: [Vec<f64>; 2],
}

impl Line {
    /// uring ÷ classic as a speed-up: time classic / time uring, or rate uring / rate classic.
    fn speedup(&self, classic: f64, uring: f64) -> f64 {
        match self.unit {
            Unit::Seconds => classic / uring,
            Unit::Rate(_) => uring / classic,
        }
    }

    fn row(&self) -> String {
        let [c, u] = [median(&self.rounds[0]), median(&self.rounds[1])];
        let per_round: Vec<String> = (self.rounds[0].iter().zip(&self.rounds[1]))
            .map(|(&c, &u)| format!("{:.2}", self.speedup(c, u)))
            .collect();
        let ratio = self.speedup(c, u);
        let (goal, met) = match self.goal {
            Some(g) => (format!("≥ {g}"), ratio >= g),
            None => ("≥ 1 (not slower)".to_owned(), ratio >= 1.0),
        };
        format!(
            "| {} | {} | {} | ×{ratio:.2} | {} | {goal} | {} |",
            self.workload,
            fmt_value(c, self.unit),
            fmt_value(u, self.unit),
            per_round.join(", "),
            if met { "yes" } else { "**no**" }
        )
    }

    fn latency_rows(&self) -> Vec<String> {
        (0..2)
            .filter(|&t| !self.samples[t].is_empty())
            .map(|t| {
                let s = &self.samples[t];
                format!(
                    "| {}, {} | {} | {} | {} |",
                    self.workload,
                    TRANSPORTS[t],
                    s.len(),
                    fmt_secs(percentile(s, 50.0)),
                    fmt_secs(percentile(s, 99.0))
                )
            })
            .collect()
    }
}

/// The two mounts, classic first.
struct Pair {
    daemons: [Daemon; 2],
}

impl Pair {
    fn start(spec: &DaemonSpec, layout: &Layout, name: &str) -> Result<Pair> {
        let start = |transport: &str| -> Result<Daemon> {
            let mut args = spec.extra_args.to_vec();
            args.extend(["--transport".to_owned(), transport.to_owned()]);
            let spec = DaemonSpec {
                extra_args: &args,
                ..*spec
            };
            let mnt = layout.work.join(format!("mnt-{name}-{transport}"));
            let daemon = Daemon::start(&spec, &mnt, &layout.config, true)?;
            let serving = daemon.stats()?["transport"].clone();
            ensure!(
                serving == transport,
                "the `--transport {transport}` mount serves on {serving} (user.cachetta.stats)"
            );
            Ok(daemon)
        };
        Ok(Pair {
            daemons: [start(TRANSPORTS[0])?, start(TRANSPORTS[1])?],
        })
    }

    fn root(&self, t: usize) -> &Path {
        &self.daemons[t].mnt
    }
}

/// Run `measure(transport index, round)` once per transport and round, the order flipping
/// every round.
fn alternate(
    rounds: usize,
    mut measure: impl FnMut(usize, usize) -> Result<f64>,
) -> Result<[Vec<f64>; 2]> {
    let mut out = [Vec::new(), Vec::new()];
    for r in 0..rounds {
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for t in order {
            out[t].push(measure(t, r)?);
        }
    }
    Ok(out)
}

struct Run<'a> {
    spec: &'a DaemonSpec<'a>,
    layout: &'a Layout,
    plan: &'a Plan,
    lines: Vec<Line>,
}

impl Run<'_> {
    /// A per-op workload: each round's value is the median of `ops` timed calls of `op(root)`.
    fn per_op(
        &mut self,
        workload: &str,
        goal: Option<f64>,
        ops: usize,
        mut op: impl FnMut(&Path, usize, usize) -> Result<()>,
    ) -> Result<()> {
        let pair = Pair::start(self.spec, self.layout, &short(workload))?;
        for t in 0..2 {
            for i in 0..self.plan.warmup {
                op(pair.root(t), usize::MAX, i)?;
            }
        }
        let mut samples = [Vec::new(), Vec::new()];
        let rounds = alternate(self.plan.rounds, |t, r| {
            let s = time_each(ops, |i| op(pair.root(t), r, i))?;
            let m = median(&s);
            samples[t].extend(s);
            Ok(m)
        })?;
        self.lines.push(Line {
            workload: workload.to_owned(),
            unit: Unit::Seconds,
            goal,
            rounds,
            samples,
        });
        Ok(())
    }

    /// A bulk workload: each round's value is what `each(root)` returns (a time or a rate),
    /// after one untimed call per transport.
    fn bulk(
        &mut self,
        workload: &str,
        unit: Unit,
        goal: Option<f64>,
        each: impl Fn(&Path) -> Result<f64>,
    ) -> Result<()> {
        let pair = Pair::start(self.spec, self.layout, &short(workload))?;
        for t in 0..2 {
            each(pair.root(t))?;
        }
        let rounds = alternate(self.plan.rounds, |t, _| each(pair.root(t)))?;
        self.lines.push(Line {
            workload: workload.to_owned(),
            unit,
            goal,
            rounds,
            samples: [Vec::new(), Vec::new()],
        });
        Ok(())
    }
}

/// The workload's name as a mountpoint suffix.
fn short(workload: &str) -> String {
    workload
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join("-")
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "")
}

pub fn run(spec: &DaemonSpec, layout: &Layout, plan: &Plan) -> Result<()> {
    if !Path::new("/sys/module/fuse/parameters/enable_uring").exists() {
        bail!(
            "this kernel does not offer FUSE-over-io_uring (no \
             /sys/module/fuse/parameters/enable_uring; Linux ≥ 6.14 with CONFIG_FUSE_IO_URING)"
        );
    }
    let mut run = Run {
        spec,
        layout,
        plan,
        lines: Vec::new(),
    };
    let ops = plan.small_ops;
    let entries = layout.entries;
    run.per_op(
        "FUSE round trip (statfs of the root)",
        None,
        ops,
        |root, _, _| statfs(root),
    )?;
    let mut buf = vec![0u8; 64 * 1024];
    run.per_op(
        "hot 4 KiB open+read+close",
        Some(GOAL),
        ops,
        |root, _, _| {
            ensure!(read_whole(&Layout::hot(root), &mut buf)? == SMALL as u64);
            Ok(())
        },
    )?;
    let threads = plan.threads;
    run.bulk(
        &format!("hot 4 KiB read, {threads} threads (ops/s)"),
        Unit::Rate("ops/s"),
        None,
        |root| {
            let (done, secs) = threaded_reads(&Layout::hot(root), threads, plan.thread_run)?;
            Ok(done as f64 / secs)
        },
    )?;
    let paths = |root: &Path| -> Vec<PathBuf> { layout.entry_paths(root) };
    run.bulk(
        &format!("cold stat, {entries} entries (all)"),
        Unit::Seconds,
        Some(GOAL),
        |root| {
            let paths = paths(root);
            forget_dentries()?;
            // The drop makes the kernel send both mounts FORGETs for every entry; the other
            // mount's would be served meanwhile, on the CPU a ring's caller and its server
            // share. Let them finish first (untimed, as fsbench's `seqread --drop` does).
            std::thread::sleep(SETTLE_AFTER_DROP);
            stat_all(&paths)
        },
    )?;
    run.bulk(
        &format!("ls -l of {entries} entries (in process)"),
        Unit::Seconds,
        None,
        |root| {
            let listed = list_long(&Layout::many(root))?;
            ensure!(
                listed.count == entries,
                "listed {} of {entries}",
                listed.count
            );
            Ok(listed.total())
        },
    )?;
    run.per_op(
        "smallwrite: atomic 4 KiB write (temp + rename)",
        None,
        plan.write_ops,
        |root, r, i| {
            let tag = (r as u64).wrapping_mul(1 << 20) + i as u64;
            let tmp = format!("name.json.{r}.{i}.tmp");
            atomic_write(&Layout::writes(root), &tmp, &small_json(SMALL, tag))
        },
    )?;

    println!("## io_uring against classic\n");
    println!(
        "| workload | classic (median) | uring (median) | uring ÷ classic | per round | goal | met? |\n\
         |---|---|---|---|---|---|---|"
    );
    for line in &run.lines {
        println!("{}", line.row());
    }
    println!(
        "\nuring ÷ classic is a speed-up (classic time / uring time; for rates uring / classic): \
         higher is better. Per-op rows: median over rounds of each round's median latency; \
         bulk rows: median over rounds of each round's total (or rate). Both mounts over the \
         same backing dir, passthrough on, a fresh pair per workload.\n"
    );
    println!("## Latency distributions (all rounds pooled)\n");
    println!("| workload | samples | p50 | p99 |\n|---|---|---|---|");
    for line in &run.lines {
        for row in line.latency_rows() {
            println!("{row}");
        }
    }
    Ok(())
}
