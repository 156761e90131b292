//! `scripts/bench` (issue #5): every workload against a plain native dir and through a fresh
//! `cachetta mount` of the same data, alternating, in one run; prints the medians, the
//! mount/native ratios against their goals, and the daemon's request counters and memory.
//!
//! Needs root (FUSE mounts, `drop_caches`). Run it through `scripts/bench`, which builds the
//! release binary and cleans up after a crash; `docs/bench.md` has a measured run.

mod daemon;
mod dataset;
mod ops;
mod report;
mod soak;
mod transports;
mod watch_cost;
mod workloads;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use daemon::DaemonSpec;
use dataset::Sizes;
use workloads::{Bench, Plan, Variant};

#[derive(Parser)]
#[command(about = "Benchmark cachetta mounts against the bare backing dir (needs root)")]
struct Args {
    /// About a minute: 64 MiB sequential file, 2k entries, 3 rounds.
    #[arg(long)]
    quick: bool,
    /// The cachetta binary (default: `cachetta` next to this example's directory, i.e. the
    /// same target profile).
    #[arg(long)]
    cachetta: Option<PathBuf>,
    /// Scratch directory for the data set and mountpoints (default: a new dir in /tmp).
    /// Everything in it is deleted at the end.
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// An extra argument for every `cachetta mount` (repeatable), to see what a setting
    /// costs: `--daemon-arg=--watch=poll=1h`.
    #[arg(long = "daemon-arg", allow_hyphen_values = true)]
    daemon_args: Vec<String>,
    /// A top-level line for the mounts' config file (repeatable), to see what a setting
    /// costs: `--config-line 'watch = "poll=1h"'`.
    #[arg(long = "config-line")]
    config_lines: Vec<String>,
    /// Run only the workloads whose name contains this (repeatable): `--only cold`.
    /// Names: round trip, hot read, hot read no passthrough, hot read threads, cold stat, stat,
    /// ls -l, sequential warm, sequential cold, atomic writes, storm-trunc, storm-rename,
    /// atomic writes poll watcher, stale reads, shared-refresh.
    #[arg(long)]
    only: Vec<String>,
    /// Rounds per workload (default 7, or 3 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Instead of the workloads: the soak (100,000 keys written, read and removed in a loop;
    /// RSS must stay flat and the inode table return to its baseline). Not run in CI.
    #[arg(long)]
    soak: bool,
    /// How long the soak runs.
    #[arg(long, default_value_t = 10)]
    soak_minutes: u64,
    /// Instead of the workloads: what `--watch poll` costs a backing dir shared by two mounts
    /// over a distributed filesystem (the shared directory through each of two clients in
    /// CACHETTA_WATCH_COST_A and CACHETTA_WATCH_COST_B; see examples/bench/watch_cost.rs).
    /// Not run in CI.
    #[arg(long)]
    watch_cost: bool,
    /// Instead of the workloads: the hot read, cold `stat` and a few others through a
    /// `--transport classic` and a `--transport uring` mount, alternating, with the
    /// uring ÷ classic ratio (issue #24). Needs `enable_uring` set: `scripts/bench` sets it.
    #[arg(long)]
    transports: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root: it mounts FUSE filesystems and writes /proc/sys/vm/drop_caches");
    }
    let binary = match args.cachetta {
        Some(path) => path,
        None => default_binary()?,
    };
    let binary = fs::canonicalize(&binary)
        .with_context(|| format!("{} (build it: cargo build --release)", binary.display()))?;
    let (mut sizes, plan) = sizes_and_plan(args.quick, args.rounds);
    if args.transports {
        // No sequential workload there: the big file only costs time to write.
        sizes.big_mib = 1;
    }
    let _own_dir;
    let work = match args.workdir {
        Some(dir) => {
            fs::create_dir_all(&dir)?;
            fs::canonicalize(&dir)?
        }
        None => {
            let dir = tempfile::Builder::new()
                .prefix("cachetta-bench.")
                .tempdir_in("/tmp")?;
            let path = dir.path().to_path_buf();
            _own_dir = dir;
            path
        }
    };
    let started = Instant::now();
    println!(
        "# cachetta bench{}\n",
        if args.quick { " (--quick)" } else { "" }
    );
    println!("{}", machine(&binary)?);
    if !args.daemon_args.is_empty() {
        println!("- daemon arguments added: {}", args.daemon_args.join(" "));
    }
    for line in &args.config_lines {
        println!("- config line added: {line}");
    }
    if args.watch_cost {
        return watch_cost::run(&binary, &work, &args.daemon_args);
    }
    println!(
        "- data: {} entries in one dir, {} MiB sequential file, 4 KiB small entries; {} rounds, \
         {} ops per round for per-op workloads ({} for writes), native = a plain sibling dir \
         with the same files, on the same filesystem as the backing dir ({})\n",
        sizes.entries,
        sizes.big_mib,
        plan.rounds,
        plan.small_ops,
        plan.write_ops,
        work.display()
    );

    eprintln!("bench: writing the data set in {}", work.display());
    let layout = dataset::prepare(&work, &sizes, &args.config_lines)?;
    eprintln!(
        "bench: data set ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let spec = DaemonSpec {
        binary: &binary,
        backing: &layout.backing,
        run_dir: &work,
        extra_args: &args.daemon_args,
    };
    if args.soak {
        return soak::run(&spec, &work, &layout.config, args.soak_minutes);
    }
    if args.transports {
        return transports::run(&spec, &layout, &plan);
    }
    let mut bench = Bench::new(&layout, spec, plan);
    type Step<'a> = (&'static str, fn(&mut Bench<'a>) -> Result<()>);
    let steps: [Step; 16] = [
        ("round trip", Bench::round_trip),
        ("hot read", |b| b.hot_read(Variant::Default)),
        ("hot read no passthrough", |b| {
            b.hot_read(Variant::NoPassthrough)
        }),
        ("hot read threads", |b| b.hot_read_threads(Variant::Default)),
        ("hot read threads no passthrough", |b| {
            b.hot_read_threads(Variant::NoPassthrough)
        }),
        ("cold stat", |b| b.cold_stat(Variant::Default)),
        ("cold stat no passthrough", |b| {
            b.cold_stat(Variant::NoPassthrough)
        }),
        ("stat", Bench::stat_all),
        ("ls -l", Bench::list_long),
        ("sequential warm", |b| b.sequential(false)),
        ("sequential cold", |b| b.sequential(true)),
        ("atomic writes smallwrite", |b| {
            b.atomic_writes(Variant::Default)
        }),
        ("storm-trunc storm-rename storms", Bench::storms),
        ("atomic writes poll watcher", |b| {
            b.atomic_writes(Variant::PollWatch)
        }),
        ("stale reads", Bench::stale_reads),
        ("shared-refresh", Bench::shared_refresh),
    ];
    for (name, step) in steps {
        // The round trip is the unit the hot read is measured in: it always runs.
        let wanted = args.only.is_empty()
            || name == "round trip"
            || args.only.iter().any(|o| name.contains(o.as_str()));
        if !wanted {
            continue;
        }
        let t = Instant::now();
        step(&mut bench).with_context(|| format!("workload `{name}`"))?;
        eprintln!("bench: {name} done in {:.1} s", t.elapsed().as_secs_f64());
    }

    println!("## Results\n");
    println!("{}", report::results_table(&bench.rows));
    println!(
        "Ratio = native time / mount time (for rates: mount / native); higher is better. \
         Per-op rows: median over rounds of each round's median latency. Bulk rows: median \
         over rounds of each round's total. RT = the FUSE round trip of the first row \
         (mount − native).\n"
    );
    for table in &bench.own_tables {
        println!("{table}");
    }
    println!("## Latency distributions (all rounds pooled)\n");
    println!("| workload | samples | p50 | mean | p99 | max |\n|---|---|---|---|---|---|");
    for line in &bench.latencies {
        println!("{line}");
    }
    println!("\n## Requests that reached the daemon (measured rounds only)\n");
    println!("{}", report::counters_table(&bench.counters));
    for note in &bench.notes {
        println!("- {note}");
    }
    print_log_warnings(&work);
    println!(
        "\nload average at the end: {}; total run time {:.0} s",
        load_average(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn sizes_and_plan(quick: bool, rounds: Option<usize>) -> (Sizes, Plan) {
    let rounds = rounds.unwrap_or(if quick { 3 } else { 7 });
    let sizes = Sizes {
        entries: if quick { 2_000 } else { 10_000 },
        big_mib: if quick { 64 } else { 512 },
        stale_keys: rounds,
    };
    let plan = Plan {
        rounds,
        small_ops: if quick { 3_000 } else { 10_000 },
        write_ops: if quick { 500 } else { 2_000 },
        thread_run: Duration::from_millis(if quick { 1_000 } else { 2_000 }),
        threads: 4,
        stale_reads: 1_000,
        warmup: 200,
    };
    (sizes, plan)
}

/// `target/<profile>/cachetta` for `target/<profile>/examples/bench`.
fn default_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot locate the target dir")?;
    Ok(profile_dir.join("cachetta"))
}

fn machine(binary: &Path) -> Result<String> {
    let out = |cmd: &str, args: &[&str]| -> String {
        Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|e| format!("({cmd}: {e})"))
    };
    let cpu = fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let mem_gib = fs::read_to_string("/proc/meminfo")?
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / (1024.0 * 1024.0));
    Ok(format!(
        "- machine: {} CPUs ({cpu}), {mem_gib:.0} GiB RAM, kernel {}, {}\n- binary: {}\n\
         - load average at the start: {}",
        out("nproc", &[]),
        out("uname", &["-r"]),
        out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        binary.display(),
        load_average()
    ))
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Warnings and errors the daemons logged (e.g. passthrough refused by the kernel).
fn print_log_warnings(work: &Path) {
    let Ok(dir) = fs::read_dir(work) else {
        return;
    };
    let mut logs: Vec<_> = dir
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let text = fs::read_to_string(&log).unwrap_or_default();
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        if !bad.is_empty() {
            println!(
                "- {} logged {} warnings/errors, first: `{}`",
                log.display(),
                bad.len(),
                bad[0].trim()
            );
        }
    }
}
