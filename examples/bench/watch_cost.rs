//! `scripts/bench --watch-cost` (issue #20, SPEC §13): what `--watch poll` costs a shared
//! backing dir. Two `cachetta mount --watch poll` daemons run over one directory seen through
//! two clients of one distributed filesystem (`CACHETTA_WATCH_COST_A` and
//! `CACHETTA_WATCH_COST_B`: the same directory through each client, e.g. two GlusterFS client
//! mounts of one volume). For each layout (20,000 entries in 20 directories, 100,000 in one):
//!
//! - **quiet**: 20 s with nothing changing;
//! - **1 publish/s**: 20 s with one entry written through mount A every second;
//! - **full walk every 1 s**: quiet again, with `--full-scan-interval 1s`, i.e. what every
//!   interval cost before the journal;
//!
//! each with the CPU time (utime + stime from `/proc/PID/stat`) of the filesystem's own
//! processes (for GlusterFS: the two client processes of those mounts, the volume's brick
//! process, and `glusterd`) and of the two daemons; then how long a publish through A takes to
//! be read through B. The data set is written once (through A) and kept for later runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::daemon::{Daemon, DaemonSpec};
use crate::report::{max, median};

/// How long each phase is measured.
const PHASE: Duration = Duration::from_secs(20);
/// The window in which the daemons must be (nearly) idle before a phase is measured.
const SETTLE: Duration = Duration::from_secs(3);
const LATENCY_SAMPLES: usize = 5;

/// The two views of the shared directory, from the environment.
pub fn dirs_from_env() -> Result<(PathBuf, PathBuf)> {
    let get = |name: &str| -> Result<PathBuf> {
        let dir = std::env::var_os(name).with_context(|| {
            format!("--watch-cost needs {name}: see the top of examples/bench/watch_cost.rs")
        })?;
        fs::canonicalize(&dir).with_context(|| format!("{name}={}", dir.to_string_lossy()))
    };
    Ok((get("CACHETTA_WATCH_COST_A")?, get("CACHETTA_WATCH_COST_B")?))
}

/// Entries in directories.
#[derive(Clone, Copy)]
struct Layout {
    dirs: usize,
    per_dir: usize,
}

impl Layout {
    fn name(&self) -> String {
        format!("watch-cost-{}x{}", self.dirs, self.per_dir)
    }

    fn describe(&self) -> String {
        let entries = self.dirs * self.per_dir;
        match self.dirs {
            1 => format!("{entries} entries in one directory"),
            n => format!("{entries} entries in {n} directories"),
        }
    }

    fn key(&self, n: usize) -> String {
        let (dir, i) = (n % self.dirs, (n / self.dirs) % self.per_dir);
        match self.dirs {
            1 => format!("e{i:06}.json"),
            _ => format!("d{dir:02}/e{i:06}.json"),
        }
    }

    /// Write the entries under `root` unless a marker beside it says they are there.
    fn prepare(&self, root: &Path) -> Result<()> {
        let marker = root.with_extension("ready");
        if marker.exists() {
            return Ok(());
        }
        let started = Instant::now();
        eprintln!("bench: writing {} in {}", self.describe(), root.display());
        for n in 0..self.dirs * self.per_dir {
            let path = root.join(self.key(n));
            if n < self.dirs {
                fs::create_dir_all(path.parent().unwrap())?;
            }
            fs::write(&path, format!("{{\"n\":{n},\"pad\":\"{:0100}\"}}", 0))?;
        }
        fs::write(&marker, "")?;
        eprintln!("bench: written in {:.0} s", started.elapsed().as_secs_f64());
        Ok(())
    }
}

/// utime + stime of a process, seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks as f64 / hz)
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The mount a path is on: (mountpoint, fstype, source), from `/proc/self/mountinfo`.
fn mount_of(path: &Path) -> Option<(PathBuf, String, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            let point = PathBuf::from(fields.get(4)?);
            let fstype = fields.get(dash + 1)?.to_string();
            let source = fields.get(dash + 2)?.to_string();
            path.starts_with(&point).then_some((point, fstype, source))
        })
        .max_by_key(|(point, _, _)| point.as_os_str().len())
}

/// The filesystem's own processes serving `a` and `b`: for GlusterFS, the client process of
/// each mount, the volume's brick process(es) and `glusterd`. Named, for the report.
fn filesystem_processes(a: &Path, b: &Path) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    let mounts: Vec<_> = [a, b].iter().filter_map(|p| mount_of(p)).collect();
    let volumes: Vec<String> = mounts
        .iter()
        .filter(|(_, fstype, _)| fstype == "fuse.glusterfs")
        .filter_map(|(_, _, source)| source.rsplit(":/").next().map(str::to_owned))
        .collect();
    if volumes.is_empty() {
        return found;
    }
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return found;
    };
    for pid in proc_dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        let (name, line) = (comm(pid), cmdline(pid));
        let client = name == "glusterfs"
            && mounts
                .iter()
                .any(|(point, _, _)| line.split(' ').any(|arg| Path::new(arg) == point));
        let brick = name == "glusterfsd"
            && volumes
                .iter()
                .any(|v| line.contains(&format!("--volfile-id {v}.")));
        if client || brick || name == "glusterd" {
            found.push((name, pid));
        }
    }
    found.sort();
    found
}

/// CPU seconds each process spent while `during` ran.
fn cpu_during(pids: &[u32], during: impl FnOnce() -> Result<()>) -> Result<Vec<f64>> {
    let before: Vec<f64> = pids
        .iter()
        .map(|p| cpu_seconds(*p).unwrap_or(0.0))
        .collect();
    during()?;
    Ok(pids
        .iter()
        .zip(before)
        .map(|(p, b)| cpu_seconds(*p).unwrap_or(b) - b)
        .collect())
}

/// Both daemons watching (their first walk done), then until the first rounds (which list
/// every directory once more) are over: the daemons and the filesystem's processes (`others`)
/// spend under 2 % of a core for [`SETTLE`] (unless they never will: `idle` false). How long
/// that took.
fn settle(daemons: &[&Daemon], others: &[u32], idle: bool) -> Result<Duration> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    for d in daemons {
        while d.stats()?["watching"] != true {
            if Instant::now() > deadline {
                bail!("{} never started watching", d.mnt.display());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    let mut pids: Vec<u32> = daemons.iter().map(|d| d.pid()).collect();
    pids.extend(others);
    if !idle {
        thread::sleep(SETTLE);
        return Ok(started.elapsed());
    }
    loop {
        let idle = || {
            thread::sleep(SETTLE);
            Ok(())
        };
        let cpu: f64 = cpu_during(&pids, idle)?.iter().sum();
        if cpu < 0.02 * SETTLE.as_secs_f64() || Instant::now() > deadline {
            return Ok(started.elapsed());
        }
    }
}

/// Write an entry through a mount, closed explicitly: a refused publish shows at close.
fn publish(path: &Path, body: &str) -> Result<()> {
    let mut file = fs::File::create(path)?;
    std::io::Write::write_all(&mut file, body.as_bytes())?;
    crate::ops::close_checked(file).with_context(|| format!("publishing {}", path.display()))
}

/// Seconds from a publish through `a` until `b` reads it, `LATENCY_SAMPLES` times.
fn publish_latency(a: &Daemon, b: &Daemon) -> Result<Vec<f64>> {
    let mut samples = Vec::new();
    for n in 0..LATENCY_SAMPLES {
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
        let body = format!("{{\"latency\":{n},\"at\":{}}}", at.as_nanos());
        let started = Instant::now();
        publish(&a.mnt.join("latency.json"), &body)?;
        loop {
            if fs::read(b.mnt.join("latency.json")).is_ok_and(|r| r == body.as_bytes()) {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("a publish through A was not read through B within 30 s");
            }
            thread::sleep(Duration::from_millis(10));
        }
        samples.push(started.elapsed().as_secs_f64());
        thread::sleep(Duration::from_millis(1500));
    }
    Ok(samples)
}

/// Run the workload and print its report (Markdown).
pub fn run(binary: &Path, work: &Path, extra_args: &[String]) -> Result<()> {
    let (dir_a, dir_b) = dirs_from_env()?;
    let processes = filesystem_processes(&dir_a, &dir_b);
    println!(
        "## Watch cost: two mounts with --watch poll over one shared directory\n\n\
         - A: {} ({})\n- B: {} ({})\n- filesystem processes measured: {}\n",
        dir_a.display(),
        mount_of(&dir_a).map_or("?".into(), |m| format!("{} {}", m.1, m.2)),
        dir_b.display(),
        mount_of(&dir_b).map_or("?".into(), |m| format!("{} {}", m.1, m.2)),
        if processes.is_empty() {
            "none found (not GlusterFS)".to_owned()
        } else {
            processes
                .iter()
                .map(|(name, pid)| format!("{name} {pid}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let config = work.join("watch-cost.toml");
    fs::write(&config, "duration = \"7d\"\n")?;
    println!(
        "| layout | phase | filesystem CPU s / {} s | of which: | daemons CPU s | publish on A read on B (median, max) |\n|---|---|---|---|---|---|",
        PHASE.as_secs()
    );
    let layouts = [
        Layout {
            dirs: 20,
            per_dir: 1_000,
        },
        Layout {
            dirs: 1,
            per_dir: 100_000,
        },
    ];
    for layout in layouts {
        let (root_a, root_b) = (dir_a.join(layout.name()), dir_b.join(layout.name()));
        layout.prepare(&root_a)?;
        let phases: [(&str, &[&str]); 3] = [
            ("quiet", &[]),
            ("1 publish/s", &[]),
            ("full walk every 1 s", &["--full-scan-interval", "1s"]),
        ];
        for (phase, args) in phases {
            let args: Vec<String> = ["--watch", "poll"]
                .iter()
                .chain(args)
                .map(|s| s.to_string())
                .chain(extra_args.iter().cloned())
                .collect();
            let spec = |backing| DaemonSpec {
                binary,
                backing,
                run_dir: work,
                extra_args: &args,
            };
            let a = Daemon::start(&spec(&root_a), &work.join("wc-a"), &config, true)?;
            let b = Daemon::start(&spec(&root_b), &work.join("wc-b"), &config, true)?;
            let fs_pids: Vec<u32> = processes.iter().map(|(_, pid)| *pid).collect();
            let settled = settle(&[&a, &b], &fs_pids, !phase.starts_with("full walk"))?;
            eprintln!(
                "bench: {} {phase}: both mounts settled {:.0} s after starting",
                layout.describe(),
                settled.as_secs_f64()
            );
            let mut pids: Vec<u32> = processes.iter().map(|(_, pid)| *pid).collect();
            pids.extend([a.pid(), b.pid()]);
            let cpu = cpu_during(&pids, || {
                let end = Instant::now() + PHASE;
                let mut n = 0;
                while Instant::now() < end {
                    if phase == "1 publish/s" {
                        let body = format!("{{\"n\":{n},\"publish\":true}}");
                        publish(&a.mnt.join(layout.key(n * 7919)), &body)?;
                        n += 1;
                    }
                    thread::sleep(Duration::from_secs(1).min(end - Instant::now()));
                }
                Ok(())
            })?;
            let fs_cpu: f64 = cpu[..processes.len()].iter().sum();
            let daemons_cpu: f64 = cpu[processes.len()..].iter().sum();
            let parts: Vec<String> = processes
                .iter()
                .zip(&cpu)
                .map(|((name, _), s)| format!("{name} {s:.2}"))
                .collect();
            let latency = if phase == "quiet" {
                let samples = publish_latency(&a, &b)?;
                format!("{:.2} s, {:.2} s", median(&samples), max(&samples))
            } else {
                String::new()
            };
            println!(
                "| {} | {phase} | {fs_cpu:.2} | {} | {daemons_cpu:.2} | {latency} |",
                layout.describe(),
                parts.join(", "),
            );
            drop(a);
            drop(b);
        }
    }
    println!(
        "\nCPU: utime + stime from /proc/PID/stat over each {} s phase, once both mounts' first \
         walk was done and the daemons and the filesystem's processes spent under 2 % of a core \
         for {} s. Latency: a write through mount A's path until a read through B's \
         returns it (reads every 10 ms).",
        PHASE.as_secs(),
        SETTLE.as_secs()
    );
    Ok(())
}
