//! The operations the workloads time, each the same syscalls a user's program would make,
//! run against a root that is either the plain native dir or the mount.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::IntoRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// open + read to EOF + close, as `cat` does. Returns the bytes read.
pub fn read_whole(path: &Path, buf: &mut [u8]) -> io::Result<u64> {
    let mut file = File::open(path)?;
    let mut total = 0;
    loop {
        let n = file.read(buf)?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// Time `op` `n` times, each call on its own. Returns seconds per call.
pub fn time_each(n: usize, mut op: impl FnMut(usize) -> Result<()>) -> Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        op(i)?;
        samples.push(start.elapsed().as_secs_f64());
    }
    Ok(samples)
}

/// Time `op` once. Returns seconds.
pub fn time_once<T>(op: impl FnOnce() -> Result<T>) -> Result<(f64, T)> {
    let start = Instant::now();
    let out = op()?;
    Ok((start.elapsed().as_secs_f64(), out))
}

/// Where the time of one `ls -l` went, seconds.
pub struct ListPhases {
    /// `opendir(3)`: the `open` of the directory.
    pub opendir: f64,
    /// Reading every name (`getdents64` until the end).
    pub readdir: f64,
    /// `lstat` of every name.
    pub lstat: f64,
    pub count: usize,
}

impl ListPhases {
    pub fn total(&self) -> f64 {
        self.opendir + self.readdir + self.lstat
    }
}

/// `ls -l` in process: open the dir, read every name, then `lstat` each.
pub fn list_long(dir: &Path) -> Result<ListPhases> {
    let t0 = Instant::now();
    let names = fs::read_dir(dir)?;
    let t1 = Instant::now();
    let paths = names
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<Vec<_>>>()?;
    let t2 = Instant::now();
    for path in &paths {
        fs::symlink_metadata(path)?;
    }
    let t3 = Instant::now();
    Ok(ListPhases {
        opendir: (t1 - t0).as_secs_f64(),
        readdir: (t2 - t1).as_secs_f64(),
        lstat: (t3 - t2).as_secs_f64(),
        count: paths.len(),
    })
}

/// The real `ls -l DIR >/dev/null`. Returns seconds of wall time.
pub fn real_ls_l(dir: &Path) -> Result<f64> {
    let (secs, status) = time_once(|| {
        Ok(Command::new("ls")
            .arg("-l")
            .arg(dir)
            .stdout(Stdio::null())
            .status()?)
    })?;
    if !status.success() {
        bail!("ls -l {} failed: {status}", dir.display());
    }
    Ok(secs)
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`.
pub fn drop_caches() -> Result<()> {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3").context("writing /proc/sys/vm/drop_caches (root?)")
}

/// `echo 2 > /proc/sys/vm/drop_caches`: the kernel forgets its dentries and inodes (on every
/// mount, and the backing filesystem's; the disk blocks stay cached).
pub fn forget_dentries() -> Result<()> {
    fs::write("/proc/sys/vm/drop_caches", "2").context("writing /proc/sys/vm/drop_caches (root?)")
}

/// The atomic-write idiom: write a scratch file in the same dir, close it (checking the close),
/// rename it onto `name.json`.
pub fn atomic_write(dir: &Path, tmp_name: &str, content: &[u8]) -> Result<()> {
    let tmp = dir.join(tmp_name);
    let mut file = File::create(&tmp)?;
    file.write_all(content)?;
    close_checked(file)?;
    fs::rename(&tmp, dir.join("name.json"))?;
    Ok(())
}

pub fn close_checked(file: File) -> io::Result<()> {
    let fd = file.into_raw_fd();
    // SAFETY: we own fd (taken out of the File) and close it exactly once.
    if unsafe { libc::close(fd) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `threads` threads doing `read_whole(path)` until `run_for` has passed. Returns the
/// operations done in all and the seconds they took.
pub fn threaded_reads(path: &Path, threads: usize, run_for: Duration) -> Result<(u64, f64)> {
    let ops = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let start_line = Barrier::new(threads + 1);
    let elapsed = thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut buf = vec![0u8; 64 * 1024];
                start_line.wait();
                let start = Instant::now();
                let mut mine = 0;
                while start.elapsed() < run_for {
                    if read_whole(path, &mut buf).is_err() {
                        failed.store(true, Ordering::Relaxed);
                        break;
                    }
                    mine += 1;
                }
                ops.fetch_add(mine, Ordering::Relaxed);
            });
        }
        start_line.wait();
        let start = Instant::now();
        // The scope joins every thread before returning.
        start
    })
    .elapsed();
    if failed.load(Ordering::Relaxed) {
        bail!("a reader thread failed on {}", path.display());
    }
    Ok((ops.load(Ordering::Relaxed), elapsed.as_secs_f64()))
}

/// `statfs(2)`: through the mount, one round trip to the daemon (which asks the backing
/// filesystem) that the kernel never caches and the daemon never logs.
pub fn statfs(path: &Path) -> Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: statfs is plain old data; all-zero is a valid value.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out-pointer.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut buf) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("statfs {}", path.display()));
    }
    Ok(())
}

/// `stat` of every path, timed as one.
pub fn stat_all(paths: &[std::path::PathBuf]) -> Result<f64> {
    Ok(time_once(|| {
        for p in paths {
            fs::metadata(p)?;
        }
        Ok(())
    })?
    .0)
}
