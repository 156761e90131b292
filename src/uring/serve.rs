//! Serving a ring: each request decoded ([`message`]), answered by the same `CacheFs` calls the
//! fuser adapter makes (counted and timed in the same per-op stats, panics caught the same
//! way), and its reply encoded; and the thread that registers the ring's entries and serves
//! them until the connection ends. So far `STATFS` and `GETATTR` (issue #24, step 2); every
//! other opcode gets [`message::refusal`]'s errno.

use std::fmt;
use std::os::fd::OwnedFd;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::abi::FuseUringReqHeader;
use super::message::{self, attr_out, decode, encode, kstatfs, Op, Reply, Request};
use super::ring::{Ended, RegisterError, Rings};
use crate::fs::CacheFs;
use crate::fuse::{counted, fail};
use crate::stats::bump;

/// How long the mount waits for the ring's thread to say its entries are registered.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the ring answered, since the mount: the proof that requests went over it.
#[derive(Debug, Default)]
pub struct Served {
    /// Requests taken from each queue (one per possible CPU; the kernel queues a request on
    /// the queue of the CPU its caller runs on).
    pub by_queue: Vec<AtomicU64>,
    pub statfs: AtomicU64,
    pub getattr: AtomicU64,
    /// Requests for an opcode the ring does not serve yet, answered with an errno.
    pub refused: AtomicU64,
    /// Entries whose contents were not a request (answered `EIO`).
    pub malformed: AtomicU64,
}

impl fmt::Display for Served {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let by_queue: Vec<u64> = self.by_queue.iter().map(n).collect();
        write!(
            f,
            "statfs {}, getattr {}, refused {}, malformed {}; by queue {by_queue:?}",
            n(&self.statfs),
            n(&self.getattr),
            n(&self.refused),
            n(&self.malformed)
        )
    }
}

/// Answer one ring entry in place: decode, answer, encode. Never panics: a malformed entry is
/// answered `EIO` to its `commit_id`, with one log line.
pub fn handle(fs: &CacheFs, served: &Served, header: &mut FuseUringReqHeader, payload: &mut [u8]) {
    // The kernel finds the waiting request by `commit_id`; replying to it ends that request
    // even when the rest of the entry makes no sense.
    let commit_id = header.ring_ent_in_out.commit_id;
    let decoded = decode(header, payload.len());
    // `answer` catches the filesystem's panics itself; this is for a bug of the ring's own.
    let reply = std::panic::catch_unwind(AssertUnwindSafe(|| match decoded {
        Ok(req) => answer(fs, served, &req),
        Err(why) => {
            bump(&served.malformed);
            warn!(
                commit_id,
                "malformed request on the io_uring ring ({why}); answered EIO"
            );
            Reply::Error(libc::EIO)
        }
    }))
    .unwrap_or_else(|_| {
        error!(
            commit_id,
            "answering a request on the io_uring ring panicked; answered EIO"
        );
        Reply::Error(libc::EIO)
    });
    encode(header, payload, commit_id, &reply);
}

/// The filesystem's answer to a decoded request.
pub fn answer(fs: &CacheFs, served: &Served, req: &Request) -> Reply {
    // What a handler that panicked leaves (the panic is logged once by `counted`).
    let mut reply = Reply::Error(libc::EIO);
    match req.op {
        Op::Statfs => counted(
            &fs.requests().statfs,
            req.unique,
            req.nodeid,
            req.pid,
            || {
                bump(&served.statfs);
                reply = match fs.statfs() {
                    Ok(s) => Reply::Statfs(kstatfs(&s)),
                    Err(err) => Reply::Error(fail("statfs", err).code()),
                };
            },
        ),
        Op::Getattr { fh } => counted(
            &fs.requests().getattr,
            req.unique,
            req.nodeid,
            req.pid,
            || {
                bump(&served.getattr);
                reply = match fs.getattr(req.nodeid, fh) {
                    Ok(entry) => Reply::Attr(attr_out(&entry)),
                    Err(err) => Reply::Error(fail("getattr", err).code()),
                };
            },
        ),
        Op::Other => {
            bump(&served.refused);
            let errno = message::refusal(req.opcode);
            debug!(
                opcode = req.opcode,
                id = req.unique,
                errno,
                "not served on the io_uring ring yet"
            );
            reply = Reply::Error(errno);
        }
    }
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
            let ended = rings.run(|qid, header, payload| {
                if let Some(queue) = counts.by_queue.get(usize::from(qid)) {
                    bump(queue);
                }
                handle(&fs, &counts, header, payload)
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
mod tests;
