//! FUSE-over-io_uring, issue #24, SPEC §15: with `--transport uring`, `statfs` and `getattr`
//! are served on the ring (proved by the daemon's count of what the ring served, which it logs
//! when the ring ends), from many threads and on each caller's CPU; an unmount from outside
//! and a kill -9 end the ring (a dead mount answers `ENOTCONN`, no hang, and a new daemon
//! replaces it). Every op on the ring: [`all`]; passthrough: [`passthrough`]; what each
//! `transport` value does with `enable_uring` on and off: [`transport`].
//!
//! `enable_uring` is a machine-wide kernel setting: [`UringParam`] sets it for one test at a
//! time and always puts back the value it found. Mounts of other tests made meanwhile name
//! their transport (`CACHETTA_TEST_TRANSPORT`, classic unless set), so it does not change
//! theirs; under `uring` the tests that switch it off are skipped (they run in the classic
//! pass), as they would refuse the other tests' mounts.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crate::common::*;

mod all;
mod passthrough;
mod transport;

const PARAM: &str = "/sys/module/fuse/parameters/enable_uring";
/// The flag of a mount that must be served on the ring.
const ON_THE_RING: &[&str] = &["--transport", "uring"];
/// Longer than any request takes; a request that waits this long is hung.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One test at a time owns `enable_uring`.
static PARAM_OWNER: Mutex<()> = Mutex::new(());

/// `enable_uring` set to a value for as long as this lives; the value it found is written back
/// on drop, panics included.
struct UringParam {
    found: String,
    _owner: MutexGuard<'static, ()>,
}

impl UringParam {
    /// Set `enable_uring` to `on`. `None` (after a message) when this machine cannot, which
    /// fails the test instead under `CACHETTA_REQUIRE_FUSE=1`.
    fn set(on: bool) -> Option<UringParam> {
        if !require_fuse() {
            return None;
        }
        if !on && test_transport() == "uring" {
            eprintln!(
                "skipping: enable_uring off would refuse the other tests' --transport uring \
                 mounts meanwhile; this test runs with CACHETTA_TEST_TRANSPORT=classic"
            );
            return None;
        }
        let owner = PARAM_OWNER.lock().unwrap_or_else(|e| e.into_inner());
        let problem = match fs::read_to_string(PARAM) {
            Err(e) => format!("cannot read {PARAM}: {e} (a kernel without CONFIG_FUSE_IO_URING?)"),
            Ok(found) => match fs::write(PARAM, if on { "1" } else { "0" }) {
                Ok(()) => {
                    return Some(UringParam {
                        found: found.trim().to_owned(),
                        _owner: owner,
                    })
                }
                Err(e) => format!("cannot write {PARAM}: {e}"),
            },
        };
        if std::env::var_os("CACHETTA_REQUIRE_FUSE").is_some_and(|v| v == "1") {
            panic!("CACHETTA_REQUIRE_FUSE=1 but FUSE-over-io_uring cannot be switched: {problem}");
        }
        eprintln!("skipping: {problem}; CACHETTA_REQUIRE_FUSE=1 makes this fail");
        None
    }
}

impl Drop for UringParam {
    fn drop(&mut self) {
        if let Err(e) = fs::write(PARAM, &self.found) {
            eprintln!("cannot put {PARAM} back to {:?}: {e}", self.found);
        }
    }
}

/// A mount on the ring, once its daemon says it is ready: its own probe (a statfs,
/// on the ring when there is one) found the mount answering. Before that, an unmount would be
/// taken for a mount that never came (exit 1), and a stop would leave the probe's statfs out of
/// the counts.
#[track_caller]
fn ring_mount() -> Mount {
    let m = Mount::new()
        .backing_file("x.json", "{}")
        .args(ON_THE_RING)
        .start();
    wait_ready(&m, 1);
    m
}

/// Run `f` (which touches the mount) on a thread of its own; if it has not returned within
/// [`ANSWER_TIMEOUT`], abort the connection (so nothing stays stuck in it) and fail.
fn answered<T: Send + 'static>(
    mnt: &Path,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(ANSWER_TIMEOUT) {
        Ok(v) => v,
        Err(_) => {
            abort_connection(mnt);
            panic!("{what} did not return within {ANSWER_TIMEOUT:?}: a request hangs");
        }
    }
}

fn statvfs(path: PathBuf) -> std::io::Result<libc::statvfs> {
    let c = cstring(&path);
    // SAFETY: all-zero is a valid statvfs; it is filled in by the call below.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and a writable statvfs.
    check_rc(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
    Ok(st)
}

/// Wait until the daemon(s) that wrote `m`'s stderr have said `ready` `times` times: their own
/// probe found the mount answering.
#[track_caller]
fn wait_ready(m: &Mount, times: usize) {
    let said = || m.stderr().matches("cachetta::mount: ready").count();
    assert!(
        eventually(MOUNT_TIMEOUT, || said() >= times),
        "the daemon never said it was ready ({} of {times}):\n{}",
        said(),
        m.stderr()
    );
}

/// The requests each queue served (`marker` `"by queue ["`) or each CPU answered (`"on CPU ["`),
/// from each "served ..." line the daemon logged when a ring ended (`by queue [3, 5]`).
fn served_list(stderr: &str, marker: &str) -> Vec<Vec<u64>> {
    stderr
        .lines()
        .filter(|l| l.contains("io_uring ring ended"))
        .map(|l| {
            let list = &l[l.find(marker).expect("the list in the line") + marker.len()..];
            list[..list.find(']').expect("a closed list")]
                .split(", ")
                .map(|n| n.parse().expect("a number"))
                .collect()
        })
        .collect()
}

/// `(statfs, getattr)` of each "served ..." line the daemon logged when a ring ended.
fn served(stderr: &str) -> Vec<(u64, u64)> {
    let count = |line: &str, name: &str| -> u64 {
        let rest = &line[line.find(name).expect("count in the line") + name.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().expect("a number")
    };
    stderr
        .lines()
        .filter(|l| l.contains("io_uring ring ended"))
        .map(|l| (count(l, "served statfs "), count(l, ", getattr ")))
        .collect()
}

#[test]
fn statfs_and_getattr_are_served_on_the_ring_and_the_mount_stops_cleanly() {
    let Some(_param) = UringParam::set(true) else {
        return;
    };
    let mut m = ring_mount();
    let stats = 3;
    for _ in 0..stats {
        let mounted = answered(&m.mnt, "statfs", {
            let mnt = m.mnt.clone();
            move || statvfs(mnt)
        })
        .expect("statfs of the mount");
        let backing = statvfs(m.backing.clone()).unwrap();
        assert_eq!(mounted.f_bsize, backing.f_bsize, "block size");
        assert_eq!(mounted.f_blocks, backing.f_blocks, "total blocks");
        assert_eq!(mounted.f_files, backing.f_files, "total inodes");
        assert!(mounted.f_namemax >= 255, "namemax {}", mounted.f_namemax);
    }
    let root = answered(&m.mnt, "stat", {
        let mnt = m.mnt.clone();
        move || fs::metadata(mnt)
    })
    .expect("stat of the mount root");
    let backing = fs::metadata(&m.backing).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(root.is_dir());
    assert_eq!(root.ino(), 1, "the root's inode is FUSE's root id");
    assert_eq!(root.mode(), backing.mode(), "type and permissions");
    assert_eq!((root.uid(), root.gid()), (backing.uid(), backing.gid()));
    assert_eq!(root.mtime(), backing.mtime());

    assert_eq!(
        crate::common::stats(&m)["transport"],
        "uring",
        "{}",
        m.stderr()
    );

    let status = m.stop();
    assert!(status.success(), "daemon exited with {status}");
    assert!(!is_mounted(&m.mnt));
    let stderr = m.stderr();
    assert!(
        stderr.contains("io_uring ring registered"),
        "stderr:\n{stderr}"
    );
    let counts = served(&stderr);
    assert_eq!(counts.len(), 1, "one ring, ended once:\n{stderr}");
    let (statfs, getattr) = counts[0];
    // Ours, and the daemon's own readiness probe.
    assert!(
        statfs > stats,
        "statfs served on the ring: {statfs}\n{stderr}"
    );
    assert!(
        getattr >= 1,
        "getattr served on the ring: {getattr}\n{stderr}"
    );
}

#[test]
fn requests_from_many_threads_at_once_are_all_served_on_the_ring() {
    let Some(_param) = UringParam::set(true) else {
        return;
    };
    let mut m = ring_mount();
    let cpus = usize::from(cachetta::uring::ring::possible_cpus().unwrap());
    // Many callers at once; and one caller pinned to each CPU, whose requests the kernel must
    // put on that CPU's queue, and that queue's thread (pinned to the same CPU) must answer
    // (the others go wherever the scheduler runs them: on a busy machine, maybe all on one CPU).
    let (threads, each) = (8, 200);
    let results = answered(&m.mnt, "statfs from many threads", {
        let mnt = m.mnt.clone();
        move || {
            let callers = (0..threads).map(|_| None).chain((0..cpus).map(Some));
            let workers: Vec<_> = callers
                .map(|cpu| {
                    let mnt = mnt.clone();
                    thread::spawn(move || {
                        let pinned = cpu.filter(|&cpu| pin_to(cpu));
                        let failed = (0..each).filter(|_| statvfs(mnt.clone()).is_err());
                        (pinned, failed.count())
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap())
                .collect::<Vec<_>>()
        }
    });
    let failures: usize = results.iter().map(|(_, failed)| failed).sum();
    assert_eq!(failures, 0, "statfs calls that failed");
    let status = m.stop();
    assert!(status.success(), "daemon exited with {status}");
    let stderr = m.stderr();
    let counts = served(&stderr);
    assert_eq!(counts.len(), 1, "{stderr}");
    assert!(
        counts[0].0 >= ((threads + cpus) * each) as u64,
        "statfs served on the ring: {}\n{stderr}",
        counts[0].0
    );
    let queues = &served_list(&stderr, "by queue [")[0];
    assert_eq!(queues.len(), cpus, "one queue per possible CPU:\n{stderr}");
    let on_cpu = &served_list(&stderr, "on CPU [")[0];
    assert_eq!(on_cpu.len(), cpus, "one count per possible CPU:\n{stderr}");
    // Each queue has its own thread, pinned to the queue's CPU.
    assert_eq!(
        stderr
            .matches("io_uring queue's thread pinned to its CPU")
            .count(),
        cpus,
        "{stderr}"
    );
    let pinned: Vec<usize> = results.iter().filter_map(|(cpu, _)| *cpu).collect();
    assert!(!pinned.is_empty(), "no caller could be pinned to a CPU");
    for cpu in pinned {
        assert!(
            queues[cpu] >= each as u64,
            "queue {cpu} served {} requests; its pinned caller made {each}:\n{stderr}",
            queues[cpu]
        );
        // ...and answered on that CPU, by the queue's pinned thread: no cross-CPU wake-up.
        assert!(
            on_cpu[cpu] >= each as u64,
            "{} requests answered on CPU {cpu}; its pinned caller made {each}:\n{stderr}",
            on_cpu[cpu]
        );
    }
    assert_eq!(
        queues, on_cpu,
        "every request answered on its queue's CPU:\n{stderr}"
    );
}

/// Pin the calling thread to `cpu`; false when the kernel refuses (an offline CPU).
fn pin_to(cpu: usize) -> bool {
    if cpu >= libc::CPU_SETSIZE as usize {
        return false;
    }
    // SAFETY: an all-zero `cpu_set_t` is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sets one bit of `set`; `cpu` is below CPU_SETSIZE (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid set of the size given.
    unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) == 0 }
}

#[test]
fn an_unmount_from_outside_ends_the_ring_and_the_daemon() {
    let Some(_param) = UringParam::set(true) else {
        return;
    };
    let mut m = ring_mount();
    let out = answered(&m.mnt, "umount", {
        let mnt = m.mnt.clone();
        move || output(std::process::Command::new("umount").arg(mnt))
    });
    assert!(out.status.success(), "umount: {out:?}");
    // Signal 0 sends nothing: this only waits for the daemon to exit on its own.
    let status = m
        .signal_and_wait(0)
        .expect("the daemon exits once its mount is gone");
    assert!(status.success(), "daemon exited with {status}");
    let stderr = m.stderr();
    assert!(
        stderr.contains("unmounted from outside") && served(&stderr).len() == 1,
        "the ring ended with the session:\n{stderr}"
    );
}

#[test]
fn kill_9_with_the_ring_registered_leaves_enotconn_and_a_new_daemon_mounts_again() {
    let Some(_param) = UringParam::set(true) else {
        return;
    };
    let mut m = ring_mount();
    answered(&m.mnt, "stat", {
        let mnt = m.mnt.clone();
        move || fs::metadata(mnt)
    })
    .expect("stat before the kill");
    let pid = m.pid().expect("daemon pid") as libc::pid_t;
    m.signal_and_wait(libc::SIGKILL)
        .expect("the daemon dies of SIGKILL");
    assert!(!alive(pid));
    // Requests the kernel cannot answer from its caches (the root's attributes it may): a
    // statfs, and a lookup of a name never looked up. Both fail at once, as on classic.
    let dead_statfs = answered(&m.mnt, "statfs of the dead mount", {
        let mnt = m.mnt.clone();
        move || statvfs(mnt)
    });
    let dead_lookup = answered(&m.mnt, "lookup in the dead mount", {
        let path = m.path("x.json");
        move || fs::metadata(path)
    });
    for (what, result) in [
        ("statfs", dead_statfs.map(|_| ())),
        ("lookup", dead_lookup.map(|_| ())),
    ] {
        let errno = errno_of(result);
        assert!(
            is_dead_mount_errno(errno),
            "kill -9 should leave a dead mount, {what} says errno {errno}"
        );
    }

    m.restart();
    // `restart` takes the root's cached attributes for an answer: wait for the new daemon's
    // own word that its mount answers.
    wait_ready(&m, 2);
    answered(&m.mnt, "statfs after the remount", {
        let mnt = m.mnt.clone();
        move || statvfs(mnt)
    })
    .expect("statfs after the remount");
    let status = m.stop();
    assert!(status.success(), "daemon exited with {status}");
    let stderr = m.stderr();
    assert_eq!(
        stderr.matches("io_uring ring registered").count(),
        2,
        "both daemons served on a ring:\n{stderr}"
    );
    assert!(
        served(&stderr).iter().any(|&(statfs, _)| statfs >= 1),
        "{stderr}"
    );
}
