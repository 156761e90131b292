//! `scripts/bench --soak` (issue #11): 100,000 keys written, read and removed through one mount
//! in a loop, for 10 minutes (`--soak-minutes`). The daemon's RSS is sampled every pass; after
//! a warm-up of two passes it must stay flat (within 10 %). At the end,
//! `echo 2 > drop_caches` makes the kernel forget its inodes, and the daemon's inode table must
//! return to its baseline.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use crate::daemon::{Daemon, DaemonSpec};

const KEYS: usize = 100_000;
const DIRS: usize = 100;

fn rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

fn inodes(d: &Daemon) -> Result<u64> {
    d.stats()?["inodes"].as_u64().context("no inodes in stats")
}

/// One pass: every key written, read back and removed.
fn pass(root: &Path, n: usize) -> Result<()> {
    let mut buf = Vec::new();
    for dir in 0..DIRS {
        fs::create_dir_all(root.join(format!("d{dir}")))?;
    }
    for k in 0..KEYS {
        let path = root.join(format!("d{}/k{k}.json", k % DIRS));
        let body = format!("{{\"pass\":{n},\"key\":{k},\"pad\":\"{:0200}\"}}", k);
        File::create(&path)?.write_all(body.as_bytes())?;
    }
    for k in 0..KEYS {
        let path = root.join(format!("d{}/k{k}.json", k % DIRS));
        buf.clear();
        File::open(&path)?.read_to_end(&mut buf)?;
        ensure!(
            buf.starts_with(b"{\"pass\":"),
            "{} read back wrong",
            path.display()
        );
    }
    for k in 0..KEYS {
        fs::remove_file(root.join(format!("d{}/k{k}.json", k % DIRS)))?;
    }
    Ok(())
}

/// Run the soak and print its report (Markdown).
pub fn run(spec: &DaemonSpec, work: &Path, config: &Path, minutes: u64) -> Result<()> {
    let mnt = work.join("mnt-soak");
    let d = Daemon::start(spec, &mnt, config, true)?;
    let baseline = inodes(&d)?;
    let started = Instant::now();
    let run_for = Duration::from_secs(minutes * 60);
    let mut samples = Vec::new();
    let mut passes = 0;
    while passes == 0 || started.elapsed() < run_for {
        let t = Instant::now();
        pass(&d.mnt, passes)?;
        passes += 1;
        let rss = rss_kib(d.pid())?;
        eprintln!(
            "bench: soak pass {passes} in {:.1} s, RSS {rss} KiB, {} inodes",
            t.elapsed().as_secs_f64(),
            inodes(&d)?
        );
        samples.push((started.elapsed().as_secs(), rss));
    }
    let before_drop = inodes(&d)?;
    fs::write("/proc/sys/vm/drop_caches", "2")?;
    std::thread::sleep(Duration::from_secs(1));
    let after_drop = inodes(&d)?;
    // Warm-up: the first two passes, while the daemon's tables and the allocator's arenas
    // grow to what 100,000 live keys need.
    let warm_index = 2.min(samples.len() - 1);
    let warm = samples[warm_index].1;
    let peak = samples
        .iter()
        .skip(warm_index)
        .map(|s| s.1)
        .max()
        .unwrap_or(warm);
    let last = samples.last().map_or(warm, |s| s.1);
    let flat = (peak as f64) <= warm as f64 * 1.10;
    println!("## Soak ({minutes} min, {KEYS} keys per pass, {passes} passes)\n");
    println!("| figure | value |\n|---|---|");
    println!("| RSS after the warm-up (two passes) | {warm} KiB |");
    println!("| RSS peak after warm-up | {peak} KiB |");
    println!("| RSS at the end | {last} KiB |");
    println!(
        "| RSS flat within 10 % | {} |",
        if flat { "yes" } else { "**no**" }
    );
    println!("| inode table: at mount / before drop_caches / after `echo 2` | {baseline} / {before_drop} / {after_drop} |");
    println!(
        "| inode table back to baseline | {} |",
        if after_drop <= baseline {
            "yes"
        } else {
            "**no**"
        }
    );
    println!(
        "\nRSS per pass (s since start: KiB): {}",
        samples
            .iter()
            .map(|(t, r)| format!("{t}: {r}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
