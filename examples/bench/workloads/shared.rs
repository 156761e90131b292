//! `shared-refresh` (issue #14, SPEC §13): two mounts over one backing dir of their own, both
//! with `--watch poll=200ms` as mounts on two machines sharing NFS would run. Each round ages
//! its own key into the stale window and 40 readers (20 per mount) read it at once; the key's
//! refresh command counts its runs in a file outside the backing dir and sleeps 1 s before it
//! prints. Goal: the command runs exactly once a round, across both mounts. Also timed: until
//! each mount serves the new entry. Not a native-vs-mount ratio, so it has a table of its own.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::Bench;
use crate::daemon::{getxattr, Daemon, DaemonSpec};
use crate::dataset::{
    set_age, Layout, SHARED_COMMAND_SECS, SHARED_NEW, SHARED_OLD, STALE_DURATION,
};
use crate::report::{fmt_secs, max, median};

const READERS_PER_MOUNT: usize = 20;
const WATCH_POLL: Duration = Duration::from_millis(200);
/// How often the harness reads the key on each mount while it waits for the new entry.
const CHECK_EVERY: Duration = Duration::from_millis(10);
/// Longer than this without the new entry on both mounts counts as a miss.
const GIVE_UP_AFTER: Duration = Duration::from_secs(15);

/// What one round saw.
struct Round {
    runs: usize,
    /// The slowest of the 40 concurrent reads.
    slowest_read: f64,
    /// Reads of the 40 that got the old entry (a stale read is answered at once).
    old_reads: usize,
    /// Since the readers started: until mount A, mount B served the new entry.
    new_on: [Option<f64>; 2],
    /// Failed reads, the readers' and the harness's checks'.
    errors: usize,
}

impl Round {
    fn both(&self) -> Option<f64> {
        Some(self.new_on[0]?.max(self.new_on[1]?))
    }
    fn first(&self) -> Option<f64> {
        match self.new_on {
            [Some(a), Some(b)] => Some(a.min(b)),
            [one, other] => one.or(other),
        }
    }
}

fn runs_so_far(runs: &Path) -> Result<usize> {
    match fs::read_to_string(runs) {
        Ok(text) => Ok(text.lines().count()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("reading {}", runs.display())),
    }
}

/// One reader's result: what it read (or the error) and how long the read took.
type Read = (std::io::Result<Vec<u8>>, f64);

/// `READERS_PER_MOUNT` readers per mount read `paths[mount]` at once, while this thread runs
/// `then` from the moment they are let go; every read, and what `then` returned.
fn readers(
    paths: &[PathBuf; 2],
    then: impl FnOnce(Instant) -> [Option<f64>; 2],
) -> (Vec<Read>, [Option<f64>; 2]) {
    let start_line = Barrier::new(2 * READERS_PER_MOUNT + 1);
    thread::scope(|s| {
        let handles: Vec<_> = paths
            .iter()
            .flat_map(|p| std::iter::repeat_n(p, READERS_PER_MOUNT))
            .map(|path| {
                let start_line = &start_line;
                s.spawn(move || {
                    start_line.wait();
                    let began = Instant::now();
                    let read = fs::read(path);
                    (read, began.elapsed().as_secs_f64())
                })
            })
            .collect();
        start_line.wait();
        let seen = then(Instant::now());
        let reads = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (reads, seen)
    })
}

/// Read `paths` every `CHECK_EVERY` until both hold the new entry or `GIVE_UP_AFTER` passes:
/// since `t0`, when each first did. Failed reads are added to `errors`.
fn wait_for_new(paths: &[PathBuf; 2], t0: Instant, errors: &mut usize) -> [Option<f64>; 2] {
    let mut seen = [None, None];
    while seen.iter().any(Option::is_none) && t0.elapsed() < GIVE_UP_AFTER {
        for (i, path) in paths.iter().enumerate() {
            if seen[i].is_some() {
                continue;
            }
            match fs::read(path) {
                Ok(bytes) if bytes == SHARED_NEW => seen[i] = Some(t0.elapsed().as_secs_f64()),
                Ok(_) => {}
                Err(_) => *errors += 1,
            }
        }
        thread::sleep(CHECK_EVERY);
    }
    seen
}

/// Until neither mount says the key is refreshing (a run that started late would still count).
fn wait_until_idle(keys: &[PathBuf; 2]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let idle = keys.iter().all(|k| {
            getxattr(k, "user.cachetta.refreshing").is_ok_and(|v| v.as_slice() == b"false")
        });
        if idle {
            break;
        }
        thread::sleep(CHECK_EVERY);
    }
}

fn refreshes_started(d: &Daemon) -> Result<u64> {
    Ok(d.stats()?["refreshes_started"].as_u64().unwrap_or(0))
}

fn fmt_opt(t: Option<f64>) -> String {
    t.map_or_else(
        || format!("not within {}", fmt_secs(GIVE_UP_AFTER.as_secs_f64())),
        fmt_secs,
    )
}

impl<'a> Bench<'a> {
    /// Two mounts of `shared-refresh`'s backing dir; each stopped when dropped.
    fn shared_mounts(&mut self) -> Result<[Daemon; 2]> {
        let mut args = self.spec.extra_args.to_vec();
        if !args.iter().any(|a| a.starts_with("--watch")) {
            args.push("--watch".into());
            args.push(format!("poll={}ms", WATCH_POLL.as_millis()));
        }
        let spec = DaemonSpec {
            binary: self.spec.binary,
            backing: &self.layout.shared_backing,
            run_dir: self.spec.run_dir,
            extra_args: &args,
        };
        let config = self.layout.shared_config.clone();
        let a = self.mount_with(&spec, &config, true)?;
        let b = self.mount_with(&spec, &config, true)?;
        Ok([a, b])
    }

    pub fn shared_refresh(&mut self) -> Result<()> {
        let mounts = self.shared_mounts()?;
        let started_before = [
            refreshes_started(&mounts[0])?,
            refreshes_started(&mounts[1])?,
        ];
        let mut rounds = Vec::new();
        for r in 0..self.plan.rounds {
            rounds.push(self.shared_round(&mounts, r)?);
        }
        let started = [
            refreshes_started(&mounts[0])? - started_before[0],
            refreshes_started(&mounts[1])? - started_before[1],
        ];
        self.shared_report(&rounds, started);
        Ok(())
    }

    fn shared_round(&self, mounts: &[Daemon; 2], r: usize) -> Result<Round> {
        set_age(
            &Layout::shared_key(&self.layout.shared_backing, r),
            STALE_DURATION + STALE_DURATION / 2,
        )?;
        let keys = [
            Layout::shared_key(&mounts[0].mnt, r),
            Layout::shared_key(&mounts[1].mnt, r),
        ];
        for key in &keys {
            let state = getxattr(key, "user.cachetta.state")?;
            if state != b"stale" {
                bail!(
                    "{} is {:?}, not stale, after aging its backing file",
                    key.display(),
                    String::from_utf8_lossy(&state)
                );
            }
        }
        let runs_before = runs_so_far(&self.layout.shared_runs)?;
        let mut errors = 0;
        let (reads, new_on) = readers(&keys, |t0| wait_for_new(&keys, t0, &mut errors));
        wait_until_idle(&keys);
        // A second run that lost the race by a hair would start right after the first ended.
        thread::sleep(WATCH_POLL);
        let runs = runs_so_far(&self.layout.shared_runs)? - runs_before;
        let mut round = Round {
            runs,
            slowest_read: max(&reads.iter().map(|(_, t)| *t).collect::<Vec<_>>()),
            old_reads: 0,
            new_on,
            errors,
        };
        for (read, _) in &reads {
            match read {
                Ok(bytes) if bytes == SHARED_OLD => round.old_reads += 1,
                Ok(_) => {}
                Err(_) => round.errors += 1,
            }
        }
        Ok(round)
    }

    fn shared_report(&mut self, rounds: &[Round], started: [u64; 2]) {
        let n = rounds.len();
        let runs: Vec<String> = rounds.iter().map(|r| r.runs.to_string()).collect();
        let once = rounds.iter().all(|r| r.runs == 1);
        let both: Vec<f64> = rounds.iter().filter_map(Round::both).collect();
        let first: Vec<f64> = rounds.iter().filter_map(Round::first).collect();
        let slowest: Vec<f64> = rounds.iter().map(|r| r.slowest_read).collect();
        let readers = 2 * READERS_PER_MOUNT;
        let all_old = rounds.iter().all(|r| r.old_reads == readers);
        let errors: usize = rounds.iter().map(|r| r.errors).sum();
        let yes_no = |met: bool| if met { "yes" } else { "**no**" };
        let mut table = format!(
            "## shared-refresh: two mounts over one backing dir\n\n\
             Both mounts `--watch poll={poll}ms`; each of {n} rounds ages its own key into the \
             stale window, and {readers} readers ({per} per mount) read it at once. The key's \
             refresh command appends a line to a file outside the backing dir, sleeps \
             {secs} s, then prints the new entry.\n\n\
             | figure | measured | goal | met? |\n|---|---|---|---|\n",
            poll = WATCH_POLL.as_millis(),
            per = READERS_PER_MOUNT,
            secs = SHARED_COMMAND_SECS,
        );
        table += &format!(
            "| refresh command runs per round (both mounts together) | {} | exactly 1 | {} |\n",
            runs.join(", "),
            yes_no(once)
        );
        table += &format!(
            "| the {readers} reads at once: answered with the stale entry, slowest (median / max over rounds) | \
             {} of {} with the old entry; {} / {} | all of them, at once | {} |\n",
            rounds.iter().map(|r| r.old_reads).sum::<usize>(),
            readers * n,
            fmt_secs(median(&slowest)),
            fmt_secs(max(&slowest)),
            yes_no(all_old)
        );
        table += &format!(
            "| until both mounts serve the new entry (median / max) | {} / {} | within {} in every round | {} |\n",
            if both.is_empty() { "—".into() } else { fmt_secs(median(&both)) },
            if both.is_empty() { "—".into() } else { fmt_secs(max(&both)) },
            fmt_secs(GIVE_UP_AFTER.as_secs_f64()),
            yes_no(both.len() == n)
        );
        table += &format!(
            "| until the first mount serves it (median) | {} | — (the command alone takes {secs} s) | — |\n",
            if first.is_empty() { "—".into() } else { fmt_secs(median(&first)) },
            secs = SHARED_COMMAND_SECS,
        );
        table += &format!(
            "| failed reads (readers and the harness's checks every {} ms) | {errors} | none | {} |\n",
            CHECK_EVERY.as_millis(),
            yes_no(errors == 0)
        );
        table += &format!(
            "\nRefreshes started (`refreshes_started`): mount A {}, mount B {}. Per round, since \
             the readers started, the new entry on mount A / mount B:",
            started[0], started[1]
        );
        for (i, r) in rounds.iter().enumerate() {
            table += &format!(
                "{} {}: {} / {}",
                if i == 0 { "" } else { ";" },
                i + 1,
                fmt_opt(r.new_on[0]),
                fmt_opt(r.new_on[1])
            );
        }
        table += ".\n";
        self.own_tables.push(table);
    }
}
