//! One `cachetta mount` daemon per workload: started as a child over the bench's backing dir,
//! asked for its request counters and memory, and always stopped (SIGTERM, then SIGKILL and a
//! lazy unmount) when dropped, so a failing bench never leaves a mount behind.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::ops::{AddAssign, Sub};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(5);

/// What a daemon needs besides its mountpoint.
#[derive(Clone, Copy)]
pub struct DaemonSpec<'a> {
    pub binary: &'a Path,
    pub backing: &'a Path,
    /// Where the daemon's stderr goes, and where its pid is written for `scripts/bench`'s trap.
    pub run_dir: &'a Path,
    /// More `cachetta mount` arguments, for experiments (`--watch poll=1h`...).
    pub extra_args: &'a [String],
}

/// Per-op request counts of `user.cachetta.stats`'s `requests` object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Requests(pub BTreeMap<String, u64>);

impl Sub for &Requests {
    type Output = Requests;
    fn sub(self, earlier: &Requests) -> Requests {
        Requests(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(*earlier.0.get(k).unwrap_or(&0))))
                .collect(),
        )
    }
}

impl AddAssign<&Requests> for Requests {
    fn add_assign(&mut self, other: &Requests) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }
}

/// A mounted daemon. Dropping it unmounts.
pub struct Daemon {
    pub mnt: PathBuf,
    child: Child,
    pid_file: PathBuf,
    log: PathBuf,
    /// The requests one `requests()` snapshot itself adds (its own `getxattr`), subtracted
    /// from every diff so the counters show only the workload.
    snapshot_cost: Requests,
}

impl Daemon {
    /// Mount at `mnt` with `config` and wait until the mount is in `/proc/self/mountinfo`.
    /// `passthrough: false` sets `CACHETTA_PASSTHROUGH=0` in the daemon's environment.
    pub fn start(
        spec: &DaemonSpec,
        mnt: &Path,
        config: &Path,
        passthrough: bool,
    ) -> Result<Daemon> {
        fs::create_dir_all(mnt).with_context(|| format!("creating {}", mnt.display()))?;
        let name = mnt.file_name().unwrap_or_default().to_string_lossy();
        let log = spec.run_dir.join(format!("daemon-{name}.log"));
        let stderr = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(spec.binary);
        command
            .arg("mount")
            .arg(mnt)
            .arg("--backing")
            .arg(spec.backing)
            .arg("--config")
            .arg(config)
            .args(spec.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if !passthrough {
            command.env("CACHETTA_PASSTHROUGH", "0");
        }
        let child = command
            .spawn()
            .with_context(|| format!("running {}", spec.binary.display()))?;
        let pid_file = spec.run_dir.join(format!("daemon-{name}.pid"));
        fs::write(&pid_file, child.id().to_string())?;
        let mut daemon = Daemon {
            mnt: mnt.to_path_buf(),
            child,
            pid_file,
            log,
            snapshot_cost: Requests::default(),
        };
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        while !is_mounted(mnt) {
            if let Some(status) = daemon.child.try_wait()? {
                let log = fs::read_to_string(&daemon.log).unwrap_or_default();
                bail!("cachetta mount exited ({status}) before mounting; its log:\n{log}");
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not appear in /proc/self/mountinfo within {MOUNT_TIMEOUT:?}",
                    mnt.display()
                );
            }
            thread::sleep(POLL);
        }
        daemon.requests()?;
        let first = daemon.requests()?;
        daemon.snapshot_cost = &daemon.requests()? - &first;
        Ok(daemon)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The whole `user.cachetta.stats` object of the mount root.
    pub fn stats(&self) -> Result<serde_json::Value> {
        let value = getxattr(&self.mnt, "user.cachetta.stats")?;
        serde_json::from_slice(&value).context("user.cachetta.stats is not JSON")
    }

    pub fn requests(&self) -> Result<Requests> {
        let stats = self.stats()?;
        let object = stats["requests"]
            .as_object()
            .context("user.cachetta.stats has no `requests` object")?;
        Ok(Requests(
            object
                .iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect(),
        ))
    }

    /// Run `f` and add the requests it caused to `total`.
    pub fn counted<T>(&self, total: &mut Requests, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let before = self.requests()?;
        let out = f()?;
        let after = self.requests()?;
        *total += &(&(&after - &before) - &self.snapshot_cost);
        Ok(out)
    }

    /// `VmRSS` and `VmHWM` of the daemon, KiB.
    pub fn memory_kib(&self) -> Result<(u64, u64)> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            line.split_whitespace().nth(1)?.parse().ok()
        };
        Ok((
            field("VmRSS:").context("no VmRSS")?,
            field("VmHWM:").context("no VmHWM")?,
        ))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory-safety preconditions; the pid is our own unreaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(POLL);
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            eprintln!(
                "bench: daemon {pid} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it (log: {})",
                self.log.display()
            );
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if is_mounted(&self.mnt) {
            eprintln!("bench: {} still mounted; detaching it", self.mnt.display());
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        let _ = fs::remove_file(&self.pid_file);
    }
}

/// Whether `mnt` is a mount point in this mount namespace.
pub fn is_mounted(mnt: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = mnt.to_string_lossy();
    info.lines()
        .any(|line| line.split(' ').nth(4) == Some(want.as_ref()))
}

/// One `getxattr(2)` call with a buffer large enough for the stats (no size probe, so one
/// request reaches the daemon).
pub fn getxattr(path: &Path, name: &str) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 256 * 1024];
    let n = rustix::fs::getxattr(path, name, &mut buf[..])
        .map_err(std::io::Error::from)
        .with_context(|| format!("getxattr {name} on {}", path.display()))?;
    buf.truncate(n);
    Ok(buf)
}
