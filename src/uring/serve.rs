//! Serving a ring: each request decoded ([`message`]), answered by the same `CacheFs` calls the
//! fuser adapter makes (counted and timed in the same per-op stats, panics caught the same
//! way), and its reply encoded; and the thread that registers the ring's entries and serves
//! them until the connection ends. Which requests it answers is its [`Scope`]: every op the
//! adapter serves ([`ops`]), or step 2's `statfs` and `getattr`; the others get
//! [`message::refusal`]'s errno.

use std::fmt;
use std::os::fd::OwnedFd;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::abi::{FuseUringReqHeader, FUSE_GETATTR, FUSE_STATFS};
use super::message::{self, decode, encode, op_name, Op, Reply, Request};
use super::ring::{Defer, Ended, RegisterError, Rings};
use crate::fs::CacheFs;
use crate::fuse::counted;
use crate::stats::bump;

mod ops;
use ops::op_stats;

/// How long the mount waits for the ring's thread to say its entries are registered.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// Which requests the ring answers; the others get [`message::refusal`]'s errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `statfs` and `getattr` only (step 2's experiment).
    StatfsGetattr,
    /// Every op the fuser adapter serves.
    Every,
}

/// What the ring answered, since the mount: the proof that requests went over it.
#[derive(Debug, Default)]
pub struct Served {
    /// Requests taken from each queue (one per possible CPU; the kernel queues a request on
    /// the queue of the CPU its caller runs on).
    pub by_queue: Vec<AtomicU64>,
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
    /// `statfs 2, getattr 1, lookup 3, ..., refused 0, malformed 0; by queue [4, 2]`: statfs and
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
        write!(
            f,
            ", refused {} (opcodes {refused:?}), malformed {}; by queue {by_queue:?}",
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
    served: &Served,
    scope: Scope,
    header: &mut FuseUringReqHeader,
    payload: &mut [u8],
    defer: &Defer,
) {
    // The kernel finds the waiting request by `commit_id`; replying to it ends that request
    // even when the rest of the entry makes no sense.
    let commit_id = header.ring_ent_in_out.commit_id;
    // `answer` catches the filesystem's panics itself; this is for a bug of the ring's own.
    let reply = std::panic::catch_unwind(AssertUnwindSafe(|| match decode(header, payload) {
        Ok(req) => answer(fs, served, scope, &req, defer),
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
    served: &Served,
    scope: Scope,
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
    let stats = match (scope, req.op) {
        (_, Op::Statfs | Op::Getattr { .. }) | (Scope::Every, _) => {
            op_stats(fs.requests(), req.opcode)
        }
        (Scope::StatfsGetattr, _) => None,
    };
    let Some(stats) = stats else {
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
        reply = ops::respond(fs, req, defer);
    });
    reply
}

/// The ring's thread, once its entries are registered.
#[derive(Debug)]
pub struct Running {
    thread: JoinHandle<()>,
    pub served: Arc<Served>,
}

impl Running {
    /// Wait up to `timeout` for the thread to end (it does once the connection is gone and
    /// every entry has come back); whether it did.
    pub fn finish(self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
            true
        } else {
            warn!(
                "the io_uring ring still serves {}s after the session ended",
                timeout.as_secs()
            );
            false
        }
    }
}

/// Register `rings` on the connection behind `fd` (a duplicate of the session's) from a thread
/// of their own, which then serves them until the connection ends; returns once the
/// registration is known. The thread registers itself because the kernel runs part of each
/// request's delivery in the context of the task that submitted the entry's command.
///
/// On `Refused` the kernel has gone back to `/dev/fuse` and the thread only waits for the end
/// of the entries that did register; on `NotSubmitted` the connection waits for a ring that
/// will not come, and the caller must give the mount up. So must it when `stopped` is called
/// (with the reason): the ring stopped serving while the connection lives.
pub fn start(
    rings: Rings,
    fd: OwnedFd,
    fs: Arc<CacheFs>,
    scope: Scope,
    stopped: impl FnOnce(String) + Send + 'static,
) -> Result<Running, RegisterError> {
    let served = Arc::new(Served {
        by_queue: (0..rings.queues()).map(|_| AtomicU64::new(0)).collect(),
        ..Served::default()
    });
    let (report, registered) = mpsc::channel();
    let counts = served.clone();
    let thread = std::thread::Builder::new()
        .name("uring".into())
        .spawn(move || {
            let mut rings = rings;
            let result = rings.register(fd);
            let submitted = !matches!(result, Err(RegisterError::NotSubmitted(_)));
            let _ = report.send(result);
            if !submitted {
                return;
            }
            let ended = rings.run(|qid, header, payload, defer| {
                if let Some(queue) = counts.by_queue.get(usize::from(qid)) {
                    bump(queue);
                }
                handle(&fs, &counts, scope, header, payload, defer)
            });
            match ended {
                Ended::Disconnected => {
                    info!("io_uring ring ended with the connection; served {counts}")
                }
                Ended::Failed(e) => {
                    error!("io_uring ring stopped ({e}); served {counts}");
                    stopped(format!("the io_uring ring stopped serving: {e}"));
                }
            }
        })
        .map_err(RegisterError::NotSubmitted)?;
    match registered.recv_timeout(REGISTER_TIMEOUT) {
        Ok(Ok(())) => Ok(Running { thread, served }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(RegisterError::NotSubmitted(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the ring's thread did not register its entries in time",
        ))),
    }
}

#[cfg(test)]
pub(crate) mod tests;
