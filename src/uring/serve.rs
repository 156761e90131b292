//! Serving a ring: each request decoded ([`message`]), answered by the same `CacheFs` calls the
//! fuser adapter makes (counted and timed in the same per-op stats, panics caught the same
//! way), and its reply encoded; and the thread that registers the ring's entries and serves
//! them until the connection ends. It answers every op the adapter serves ([`ops`]); the
//! others get [`message::refusal`]'s errno, as fuser answers them on classic.

use std::fmt;
use std::os::fd::OwnedFd;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::abi::{FuseUringReqHeader, FUSE_GETATTR, FUSE_STATFS};
use super::message::{self, decode, encode, op_name, Op, Reply, Request};
use super::ring::{Defer, Ended, RegisterError, Rings};
use crate::fs::CacheFs;
use crate::fuse::{counted, Backings};
use crate::stats::bump;

mod ops;
use ops::op_stats;

/// What the ring needs to register passthrough backings: the registry it shares with the
/// adapter, and a duplicate of the connection for the ioctls.
pub struct Passthrough {
    pub backings: Arc<Backings>,
    pub dev: Arc<OwnedFd>,
}

/// How long the mount waits for the ring's thread to say its entries are registered.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the ring answered, since the mount: the proof that requests went over it.
#[derive(Debug, Default)]
pub struct Served {
    /// Requests taken from each queue (one per possible CPU; the kernel queues a request on
    /// the queue of the CPU its caller runs on).
    pub by_queue: Vec<AtomicU64>,
    /// Requests answered on each CPU, as the serving thread found itself when it answered
    /// (each queue's thread is pinned to the queue's CPU, so this matches `by_queue` unless a
    /// CPU was offline when its thread started).
    pub by_cpu: Vec<AtomicU64>,
    /// Requests answered, by opcode (the few above 63 that exist are not served).
    by_opcode: OpCounts,
    /// Requests for an opcode the ring does not serve, answered with an errno; and by opcode.
    pub refused: AtomicU64,
    refused_by_opcode: OpCounts,
    /// Entries whose contents were not a request (answered `EIO`).
    pub malformed: AtomicU64,
}

#[derive(Debug)]
struct OpCounts([AtomicU64; 64]);

impl Default for OpCounts {
    fn default() -> Self {
        OpCounts(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl Served {
    /// How many requests with this opcode the ring answered.
    pub fn count(&self, opcode: u32) -> u64 {
        self.by_opcode
            .0
            .get(opcode as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn answered(&self, opcode: u32) {
        if let Some(c) = self.by_opcode.0.get(opcode as usize) {
            bump(c);
        }
    }
}

impl fmt::Display for Served {
    /// `statfs 2, getattr 1, lookup 3, ..., refused 0, malformed 0; by queue [4, 2]; on CPU [4, 2]`: statfs and
    /// getattr always, every other op the ring answered by name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        write!(
            f,
            "statfs {}, getattr {}",
            self.count(FUSE_STATFS),
            self.count(FUSE_GETATTR)
        )?;
        for (opcode, c) in self.by_opcode.0.iter().enumerate() {
            let opcode = opcode as u32;
            if n(c) > 0 && opcode != FUSE_STATFS && opcode != FUSE_GETATTR {
                write!(f, ", {} {}", op_name(opcode), n(c))?;
            }
        }
        let by_queue: Vec<u64> = self.by_queue.iter().map(n).collect();
        let refused: Vec<usize> = (self.refused_by_opcode.0.iter().enumerate())
            .filter(|(_, c)| n(c) > 0)
            .map(|(opcode, _)| opcode)
            .collect();
        let by_cpu: Vec<u64> = self.by_cpu.iter().map(n).collect();
        write!(
            f,
            ", refused {} (opcodes {refused:?}), malformed {}; by queue {by_queue:?}; on CPU {by_cpu:?}",
            n(&self.refused),
            n(&self.malformed)
        )
    }
}

/// Answer one ring entry in place: decode, answer, encode; or leave it to be answered later
/// through `defer`. Never panics: a malformed entry is answered `EIO` to its `commit_id`, with
/// one log line.
pub fn handle(
    fs: &Arc<CacheFs>,
    backings: Option<&Passthrough>,
    served: &Served,
    header: &mut FuseUringReqHeader,
    payload: &mut [u8],
    defer: &Defer,
) {
    // The kernel finds the waiting request by `commit_id`; replying to it ends that request
    // even when the rest of the entry makes no sense.
    let commit_id = header.ring_ent_in_out.commit_id;
    // `answer` catches the filesystem's panics itself; this is for a bug of the ring's own.
    let reply = std::panic::catch_unwind(AssertUnwindSafe(|| match decode(header, payload) {
        Ok(req) => answer(fs, backings, served, &req, defer),
        Err(why) => {
            bump(&served.malformed);
            warn!(
                commit_id,
                "malformed request on the io_uring ring ({why}); answered EIO"
            );
            Some(Reply::Error(libc::EIO))
        }
    }))
    .unwrap_or_else(|_| {
        error!(
            commit_id,
            "answering a request on the io_uring ring panicked; answered EIO"
        );
        Some(Reply::Error(libc::EIO))
    });
    if let Some(reply) = reply {
        encode(header, payload, commit_id, &reply);
    }
}

/// The filesystem's answer to a decoded request, counted and timed in the same per-op stats as
/// the adapter's; `None` when it comes later, through `defer`.
pub fn answer(
    fs: &Arc<CacheFs>,
    backings: Option<&Passthrough>,
    served: &Served,
    req: &Request,
    defer: &Defer,
) -> Option<Reply> {
    if req.op == Op::Destroy {
        // Acknowledged, as fuser acknowledges it on classic. The adapter's `destroy` (the
        // filesystem's shutdown) runs when fuser's session ends, which it does on unmount
        // whichever transport carried this request.
        served.answered(req.opcode);
        return Some(Reply::Empty);
    }
    let Some(stats) = op_stats(fs.requests(), req.opcode) else {
        bump(&served.refused);
        if let Some(c) = served.refused_by_opcode.0.get(req.opcode as usize) {
            bump(c);
        }
        let errno = message::refusal(req.opcode);
        debug!(
            opcode = req.opcode,
            id = req.unique,
            errno,
            "not served on the io_uring ring"
        );
        return Some(Reply::Error(errno));
    };
    // What a handler that panicked leaves (the panic is logged once by `counted`).
    let mut reply = Some(Reply::Error(libc::EIO));
    counted(stats, req.unique, req.nodeid, req.pid, || {
        served.answered(req.opcode);
        reply = ops::respond(fs, backings, req, defer);
    });
    reply
}

/// The rings' threads, one per queue, once their entries are registered.
#[derive(Debug)]
pub struct Running {
    threads: Vec<JoinHandle<()>>,
    pub served: Arc<Served>,
}

impl Running {
    /// Wait up to `timeout` for every thread to end (each does once the connection is gone and
    /// its entries have come back); whether they all did.
    pub fn finish(self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let ended = || self.threads.iter().all(|t| t.is_finished());
        while !ended() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if ended() {
            for thread in self.threads {
                let _ = thread.join();
            }
            true
        } else {
            let left = self.threads.iter().filter(|t| !t.is_finished()).count();
            warn!(
                "{left} io_uring ring thread(s) still serve {}s after the session ended",
                timeout.as_secs()
            );
            false
        }
    }
}

/// Pin the calling thread to `cpu`. A possible CPU that is offline cannot take it: the thread
/// then runs wherever the scheduler puts it, and says so.
fn pin_to(cpu: u16) {
    let cpu = usize::from(cpu);
    if cpu >= rustix::thread::CpuSet::MAX_CPU {
        warn!(
            cpu,
            "CPU beyond the affinity mask; its io_uring queue's thread runs unpinned"
        );
        return;
    }
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    match rustix::thread::sched_setaffinity(None, &set) {
        Ok(()) => info!(cpu, "io_uring queue's thread pinned to its CPU"),
        Err(e) => warn!(
            cpu,
            "cannot pin the io_uring queue's thread to its CPU (offline?): {e}; it runs unpinned"
        ),
    }
}

/// Register each of `rings` (one per queue) on the connection behind `fd` (a duplicate of the
/// session's) from a thread of its own, pinned to the CPU of its queue, which then serves it
/// until the connection ends; returns once every registration is known. Each thread registers
/// its own ring because the kernel runs part of each request's delivery in the context of the
/// task that submitted the entry's command, and each ring has that one submitter.
///
/// On `Refused` the kernel has gone back to `/dev/fuse` and the threads only wait for the end
/// of the entries that did register; on `NotSubmitted` the connection waits for a ring that
/// will not come, and the caller must give the mount up. So must it when `stopped` is called
/// (with the reason): a ring stopped serving while the connection lives.
pub fn start(
    rings: Vec<Rings>,
    fd: OwnedFd,
    fs: Arc<CacheFs>,
    backings: Arc<Backings>,
    stopped: impl Fn(String) + Send + Sync + 'static,
) -> Result<Running, RegisterError> {
    let queues = rings
        .iter()
        .flat_map(|r| r.qids())
        .max()
        .map_or(0, |q| q + 1);
    let served = Arc::new(Served {
        by_queue: (0..queues).map(|_| AtomicU64::new(0)).collect(),
        // Queue ids are CPU numbers, and a thread runs only on a possible CPU.
        by_cpu: (0..queues).map(|_| AtomicU64::new(0)).collect(),
        ..Served::default()
    });
    let stopped: Arc<dyn Fn(String) + Send + Sync> = Arc::new(stopped);
    let passthrough = Arc::new(Passthrough {
        backings,
        dev: Arc::new(fd.try_clone().map_err(RegisterError::NotSubmitted)?),
    });
    let live = Arc::new(AtomicUsize::new(rings.len()));
    let (report, registered) = mpsc::channel();
    let mut threads = Vec::with_capacity(rings.len());
    for mut rings in rings {
        let qid = rings.qids()[0];
        let fd = fd.try_clone().map_err(RegisterError::NotSubmitted)?;
        let (fs, passthrough, counts, stopped, live, report) = (
            fs.clone(),
            passthrough.clone(),
            served.clone(),
            stopped.clone(),
            live.clone(),
            report.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("uring-q{qid}"))
            .spawn(move || {
                if rings.qids().len() == 1 {
                    pin_to(qid);
                }
                let result = rings.register(fd);
                let submitted = !matches!(result, Err(RegisterError::NotSubmitted(_)));
                let _ = report.send(result);
                let ended = if submitted {
                    Some(rings.run(|qid, header, payload, defer| {
                        if let Some(queue) = counts.by_queue.get(usize::from(qid)) {
                            bump(queue);
                        }
                        let cpu = rustix::thread::sched_getcpu();
                        if let Some(on) = counts.by_cpu.get(cpu) {
                            bump(on);
                        }
                        handle(&fs, Some(&passthrough), &counts, header, payload, defer)
                    }))
                } else {
                    drop(rings);
                    None
                };
                if let Some(Ended::Failed(e)) = &ended {
                    error!(qid, "io_uring ring stopped ({e}); served {counts}");
                    stopped(format!(
                        "the io_uring ring of queue {qid} stopped serving: {e}"
                    ));
                }
                // The last thread to end speaks for all.
                if live.fetch_sub(1, Ordering::SeqCst) == 1 && submitted {
                    info!("io_uring ring ended with the connection; served {counts}");
                }
            })
            .map_err(RegisterError::NotSubmitted)?;
        threads.push(thread);
    }
    drop(fd);
    drop(report);
    let deadline = Instant::now() + REGISTER_TIMEOUT;
    let mut outcome = Ok(());
    for _ in 0..threads.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match registered.recv_timeout(left) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // Not submitted weighs more than refused: the mount must then be given up.
                if !matches!(outcome, Err(RegisterError::NotSubmitted(_))) {
                    outcome = Err(e);
                }
            }
            Err(_) => {
                return Err(RegisterError::NotSubmitted(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the rings' threads did not register their entries in time",
                )))
            }
        }
    }
    outcome.map(|()| Running { threads, served })
}

#[cfg(test)]
pub(crate) mod tests;
