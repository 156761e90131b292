//! The ring: one `IoUring` with 128-byte SQEs, the buffers of its FUSE entries (a 288-byte
//! `fuse_uring_req_header` and a payload each), REGISTER of every entry on the connection, and
//! the loop that hands each request to a handler and commits its reply with the command that
//! also fetches the entry's next request. It knows the FUSE commands, not the filesystem: the
//! handler decodes and answers (see `serve`).
//!
//! A handler may answer later, from another thread ([`Defer::later`]): the entry then waits,
//! holding the kernel's request, and the reply comes back to the ring's thread (the only one
//! that submits to the ring) through a [`Mailbox`]: a queue and an eventfd whose read the ring
//! always keeps in flight, so the wait for completions also wakes for replies.
//!
//! Buffers are shared with the kernel: from the moment an entry's command is submitted until its
//! completion arrives, the kernel may write them, and nothing here holds a reference to them.
//! An entry's buffers are freed only once its command has completed for good (connection gone);
//! a loop that stops any other way leaks them rather than free memory the kernel may still write.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::ptr::NonNull;
use std::sync::Arc;

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use tracing::{debug, error, info, warn};
use zerocopy::IntoBytes;

use super::abi::{
    FuseOutHeader, FuseUringCmd, FuseUringCmdReq, FuseUringReqHeader, FUSE_URING_IOV_SEGS,
};

mod mailbox;
pub use mailbox::{Defer, Deferred, Mailbox, Writer};

/// `max_write` the daemon asks for when it offers a ring (pinned here because the payload
/// buffers are sized from it before the mount). 1 MiB, not fuser's 16 MiB: the kernel caps
/// `max_pages` at `fs.fuse.max_pages_limit` (256 pages by default), so no request carries more
/// than 1 MiB on either transport, but it sizes every ring entry's payload from the uncapped
/// `max_write` (`fuse_uring_create()`). 16 MiB would cost 16 times the memory per entry for
/// nothing.
pub const MAX_WRITE: u32 = 1024 * 1024;

/// `FUSE_MIN_READ_BUFFER`, the kernel's floor of `max_payload_sz`.
const FUSE_MIN_READ_BUFFER: usize = 8192;

/// Entries per queue: one is enough for the kernel to use the ring; more let requests made on a
/// CPU wait in their entries while one is being answered, and an entry whose request is
/// answered later (a read-through lookup waiting for its command) holds one until then. A
/// queue whose every entry waits would stall its CPU's requests until one is answered, so a
/// queue that runs short grows (up to [`MAX_ENTRIES_PER_QUEUE`], see
/// `Rings::keep_entries_free`); 128 to start with. Each costs its header and a payload of [`MAX_WRITE`], 128 MiB of
/// address space per CPU, zeroed lazily: only the pages of payloads the kernel has written are
/// resident (docs/uring.md, "Step 4").
pub const ENTRIES_PER_QUEUE: usize = 128;

/// A queue whose entries nearly all hold requests waiting for later replies (read-through
/// lookups waiting for their commands) gets more entries, up to this many: past them, the
/// requests its CPU makes wait for an entry, where classic `/dev/fuse` has no such bound.
pub const MAX_ENTRIES_PER_QUEUE: usize = 1024;

/// How many of a queue's entries must stay free for requests that are answered at once; fewer,
/// and the queue's entries are doubled (see [`MAX_ENTRIES_PER_QUEUE`]).
const FREE_ENTRIES_KEPT: usize = 16;

/// The `user_data` of the mailbox's eventfd read (slots are numbered from 0).
const WAKE: u64 = u64::MAX;

/// Where `/sys` lists the CPUs the kernel counts in `num_possible_cpus()`, its number of queues.
const POSSIBLE_CPUS: &str = "/sys/devices/system/cpu/possible";

/// Byte offset of `__u32 len` in `struct io_uring_sqe` (uapi `io_uring.h`: opcode u8 @0, flags
/// u8 @1, ioprio u16 @2, fd s32 @4, off u64 @8, addr u64 @16, len u32 @24).
const SQE_LEN_OFFSET: usize = 24;

/// The kernel's `max_payload_sz` (`fuse_uring_create()`): the largest of 8 KiB, `max_write` and
/// `max_pages` pages. A REGISTER whose payload is shorter fails with `EINVAL`.
pub fn payload_size(max_write: u32, max_pages: u32, page_size: usize) -> usize {
    FUSE_MIN_READ_BUFFER
        .max(max_write as usize)
        .max(max_pages as usize * page_size)
}

/// The payload of every entry when the daemon asks for [`MAX_WRITE`]: fuser replies with
/// `max_pages` = `max(max_write, max_readahead)` in pages, and the adapter keeps
/// `max_readahead` at most `MAX_WRITE`, so both terms are `MAX_WRITE` rounded up to a page.
pub fn default_payload_size() -> usize {
    let page = rustix::param::page_size();
    payload_size(MAX_WRITE, (MAX_WRITE as usize).div_ceil(page) as u32, page)
}

/// `num_possible_cpus()`: the kernel makes one queue per possible CPU, and uses the ring only
/// once every one has an entry.
pub fn possible_cpus() -> io::Result<u16> {
    let text = std::fs::read_to_string(POSSIBLE_CPUS)?;
    count_cpu_list(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot read the CPU list {text:?} in {POSSIBLE_CPUS}"),
        )
    })
}

/// The number of CPUs in a kernel CPU list (`0-1`, `0`, `0-3,8-11`).
fn count_cpu_list(text: &str) -> Option<u16> {
    let mut count: u32 = 0;
    for part in text.trim().split(',') {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let n = part.parse::<u32>().ok()?;
                (n, n)
            }
        };
        count += last.checked_sub(first)? + 1;
    }
    u16::try_from(count).ok().filter(|n| *n > 0)
}

/// A buffer the kernel writes while a command is in flight: a raw allocation, never borrowed
/// across a submission, freed on drop.
struct KernelBuf<T: ?Sized> {
    ptr: NonNull<T>,
}

impl<T: ?Sized> KernelBuf<T> {
    fn new(boxed: Box<T>) -> Self {
        KernelBuf {
            ptr: NonNull::from(Box::leak(boxed)),
        }
    }

    fn addr(&self) -> *mut T {
        self.ptr.as_ptr()
    }
}

impl<T: ?Sized> Drop for KernelBuf<T> {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `Box::leak` in `new` and is freed only here, once. The owner
        // (`Slot`) is dropped only when the kernel holds no command for it (see `Rings::drop`).
        drop(unsafe { Box::from_raw(self.ptr.as_ptr()) });
    }
}

// SAFETY: a `KernelBuf` owns its allocation like a `Box`; the ring moves to its thread whole.
unsafe impl<T: ?Sized + Send> Send for KernelBuf<T> {}

/// Where an entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Built, not yet handed to the kernel.
    New,
    /// REGISTER submitted: the kernel owns the buffers.
    Registering,
    /// A request was answered and COMMIT_AND_FETCH submitted: the kernel owns the buffers.
    Committing,
    /// A request is held for a reply that comes later through the mailbox: the buffers are
    /// ours, and no command is in flight for the entry.
    Waiting,
    /// Its command ended for good; the kernel holds nothing of it.
    Done,
}

/// One ring entry: its queue, its two buffers, and the two iovecs REGISTER points to.
struct Slot {
    qid: u16,
    header: KernelBuf<FuseUringReqHeader>,
    payload: KernelBuf<[u8]>,
    iov: IoVecs,
    state: State,
}

impl Slot {
    /// A new entry of queue `qid` with a payload of `payload` bytes, not yet registered.
    fn new(qid: u16, payload: usize) -> Slot {
        let header = KernelBuf::new(Box::<FuseUringReqHeader>::default());
        // Zeroed by calloc: pages the kernel never writes are never touched.
        let payload = KernelBuf::new(vec![0u8; payload].into_boxed_slice());
        let iov = IoVecs(Box::new([
            libc::iovec {
                iov_base: header.addr().cast(),
                iov_len: size_of::<FuseUringReqHeader>(),
            },
            libc::iovec {
                iov_base: payload.addr().cast(),
                iov_len: payload.addr().len(),
            },
        ]));
        Slot {
            qid,
            header,
            payload,
            iov,
            state: State::New,
        }
    }
}

/// The iovecs of one entry's two buffers, which the kernel reads at REGISTER.
struct IoVecs(Box<[libc::iovec; 2]>);

// SAFETY: the iovecs only hold the addresses of their own slot's buffers (`KernelBuf`, `Send`),
// which move to the ring's thread together with them.
unsafe impl Send for IoVecs {}

/// Why the ring does not serve.
#[derive(Debug)]
pub enum RegisterError {
    /// The kernel answered a REGISTER with this error. It then clears the connection's
    /// io_uring flag and serves it through `/dev/fuse`, so the mount works on classic.
    Refused { qid: u16, errno: i32 },
    /// The commands never reached the kernel: a connection that negotiated the ring waits for
    /// it forever, so the mount must not go on.
    NotSubmitted(io::Error),
}

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegisterError::Refused { qid, errno } => write!(
                f,
                "the kernel refused to register a ring entry on queue {qid}: {}",
                io::Error::from_raw_os_error(*errno)
            ),
            RegisterError::NotSubmitted(e) => {
                write!(f, "cannot submit the ring's REGISTER commands: {e}")
            }
        }
    }
}

/// The ring of one thread and its entries, spread evenly over the queues it serves (one, when
/// each queue has its thread).
pub struct Rings {
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    qids: Vec<u16>,
    /// Each entry's payload size.
    payload: usize,
    slots: Vec<Slot>,
    /// The connection's fd (a duplicate of the session's), held as long as the ring serves.
    fd: Option<OwnedFd>,
    /// Completions read while registering, served first.
    early: Vec<(u64, i32)>,
    /// Where later replies arrive, and the 8 bytes its eventfd is read into.
    mailbox: Arc<Mailbox>,
    wake_buf: Option<KernelBuf<[u8; 8]>>,
    /// Whether the eventfd read is in flight (the kernel may write `wake_buf`).
    wake_armed: bool,
}

/// How the loop ended.
#[derive(Debug)]
pub enum Ended {
    /// Every entry's command ended (the connection is gone).
    Disconnected,
    /// The ring stopped while the connection may live on (waiting on it failed, or an entry
    /// was lost); the entries still in the kernel's hands were leaked. The mount must end:
    /// requests on a queue without an entry wait forever.
    Failed(io::Error),
}

impl Rings {
    /// A ring with `per_queue` entries on each of the queues `qids`, each with a payload of
    /// `payload` bytes. Nothing is registered yet, so no connection depends on it.
    pub fn new(qids: &[u16], per_queue: usize, payload: usize) -> io::Result<Rings> {
        if qids.is_empty() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let count = qids.len() * per_queue;
        // One SQE per entry at first, and the mailbox's read (a full queue is submitted before
        // more is pushed, see `push`).
        let depth = u32::try_from((count + 1).next_power_of_two())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // A completion for every entry the queues may grow to, and the mailbox's read.
        let most = qids.len() * MAX_ENTRIES_PER_QUEUE.max(per_queue);
        let completions = u32::try_from((most + 1).next_power_of_two())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // `Entry128` sets IORING_SETUP_SQE128, which the FUSE commands need.
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .setup_cqsize(completions.max(depth * 2))
            .build(depth)?;
        let slots = (0..count)
            .map(|i| Slot::new(qids[i % qids.len()], payload))
            .collect();
        Ok(Rings {
            ring,
            qids: qids.to_vec(),
            payload,
            slots,
            fd: None,
            early: Vec::new(),
            mailbox: Arc::new(Mailbox::new()?),
            wake_buf: Some(KernelBuf::new(Box::new([0u8; 8]))),
            wake_armed: false,
        })
    }

    /// The queues the entries are spread over.
    pub fn qids(&self) -> &[u16] {
        &self.qids
    }

    /// Hand every entry to the connection behind `fd` (REGISTER). Returns once the commands
    /// are submitted; a REGISTER the kernel refuses completes at once and is reported.
    pub fn register(&mut self, fd: OwnedFd) -> Result<(), RegisterError> {
        let raw = fd.as_raw_fd();
        self.fd = Some(fd);
        for i in 0..self.slots.len() {
            let entry = register_entry(raw, &self.slots[i], i);
            self.push(&entry).map_err(RegisterError::NotSubmitted)?;
            self.slots[i].state = State::Registering;
        }
        self.arm_wake().map_err(RegisterError::NotSubmitted)?;
        self.ring.submit().map_err(RegisterError::NotSubmitted)?;
        let mut refused = None;
        let mut completed = Vec::new();
        self.take_completions(&mut completed);
        for (data, res) in completed {
            match self.slots.get_mut(data as usize) {
                Some(slot) if res < 0 => {
                    slot.state = State::Done;
                    refused.get_or_insert((slot.qid, -res));
                }
                _ => self.early.push((data, res)),
            }
        }
        match refused {
            Some((qid, errno)) => Err(RegisterError::Refused { qid, errno }),
            None => Ok(()),
        }
    }

    /// Serve until every entry's command has ended. `handle` gets each request's queue, header
    /// and payload buffers, and writes the reply into them; it must not panic (see `serve`).
    pub fn run(
        mut self,
        mut handle: impl FnMut(u16, &mut FuseUringReqHeader, &mut [u8], &Defer),
    ) -> Ended {
        let mut done = std::mem::take(&mut self.early);
        // Only a failed command ends an entry (REGISTER's refusals included, before this
        // loop): whether every entry has ended is worth asking only after one.
        let mut any_failed = true;
        loop {
            any_failed |= done.iter().any(|&(_, res)| res < 0);
            for (data, res) in done.drain(..) {
                let handled = if data == WAKE {
                    self.wake(res)
                } else {
                    self.complete(data as usize, res, &mut handle)
                };
                if let Err(e) = handled {
                    // Dropping `self` closes the ring and the fd, and leaks the entries the
                    // kernel may still write.
                    return Ended::Failed(e);
                }
            }
            if std::mem::take(&mut any_failed) && self.slots.iter().all(|s| s.state == State::Done)
            {
                return Ended::Disconnected;
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                // A signal for another thread of the daemon landed here.
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    error!("waiting on the io_uring ring failed: {e}");
                    return Ended::Failed(e);
                }
            }
            self.take_completions(&mut done);
        }
    }

    /// Move the completions the kernel has posted into `into` (kept across waits, so a
    /// request costs no allocation here).
    fn take_completions(&mut self, into: &mut Vec<(u64, i32)>) {
        into.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
    }

    /// Keep a read of the mailbox's eventfd in flight.
    fn arm_wake(&mut self) -> io::Result<()> {
        let Some(buf) = &self.wake_buf else {
            return Ok(());
        };
        let read = opcode::Read::new(
            types::Fd(self.mailbox.event.as_raw_fd()),
            buf.addr().cast(),
            8,
        )
        .build()
        .user_data(WAKE);
        self.push(&squeue::Entry128::from(read))?;
        self.wake_armed = true;
        Ok(())
    }

    /// The mailbox's eventfd was read (or the read failed): commit every later reply posted,
    /// and read it again while any entry may still get one.
    fn wake(&mut self, res: i32) -> io::Result<()> {
        self.wake_armed = false;
        if res < 0 && -res != libc::EINTR && -res != libc::EAGAIN {
            // Cancelled as the ring goes, or a broken eventfd: the replies still come, but
            // only the next completion of an entry will find them.
            debug!(
                "the io_uring mailbox read ended: {}",
                io::Error::from_raw_os_error(-res)
            );
        }
        for (slot, commit_id, write) in self.mailbox.take() {
            self.deliver(slot, commit_id, write)?;
        }
        if res >= 0 || -res == libc::EINTR || -res == libc::EAGAIN {
            self.arm_wake()?;
        }
        Ok(())
    }

    /// Write a later reply into its waiting entry and commit it.
    fn deliver(&mut self, slot: usize, commit_id: u64, write: Option<Writer>) -> io::Result<()> {
        let fd = self.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd());
        let Some(s) = self.slots.get_mut(slot) else {
            error!(
                slot,
                "a later reply for an io_uring entry that does not exist"
            );
            return Ok(());
        };
        if s.state != State::Waiting {
            error!(slot, ?s.state, commit_id, "a later reply for an io_uring entry that waits for none; dropped");
            return Ok(());
        }
        // SAFETY: a `Waiting` slot's last command completed with a request, so the kernel has
        // handed the entry to us and writes neither buffer until the slot's next command is
        // submitted below; the buffers are live allocations of the right sizes, and these are
        // the only references to them, gone before that submission.
        let (header, payload) = unsafe { (&mut *s.header.addr(), &mut *s.payload.addr()) };
        let written = write.map(|write| {
            std::panic::catch_unwind(AssertUnwindSafe(|| write(header, payload))).is_ok()
        });
        if written != Some(true) {
            if written == Some(false) {
                error!(commit_id, "writing a later reply panicked; answered EIO");
            }
            write_eio(header, commit_id);
        }
        let next = commit_entry(fd, s, slot, commit_id);
        self.push(&next)
    }

    /// The completion of `slot`'s command: a request to answer, or the end of the entry.
    /// `Err` when an entry is lost while the connection may live on: its queue may be left
    /// without one, and requests made on that CPU would wait forever.
    fn complete(
        &mut self,
        slot: usize,
        res: i32,
        handle: &mut impl FnMut(u16, &mut FuseUringReqHeader, &mut [u8], &Defer),
    ) -> io::Result<()> {
        let fd = self.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd());
        let Some(s) = self.slots.get_mut(slot) else {
            error!(slot, "completion for an io_uring entry that does not exist");
            return Ok(());
        };
        let next = if res < 0 {
            let errno = -res;
            let e = io::Error::from_raw_os_error(errno);
            match (s.state, errno) {
                // The connection is gone (unmount, abort, the daemon's own end).
                (_, libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED) => {
                    debug!(qid = s.qid, "io_uring entry ended: {e}");
                    s.state = State::Done;
                    return Ok(());
                }
                // The kernel did not take the reply (it ends the waiting request itself, or
                // never found it); the entry would be lost to its queue, so register it again
                // rather than leave the queue short.
                (State::Committing, _) => {
                    warn!(
                        qid = s.qid,
                        "io_uring commit failed ({e}); registering the entry again"
                    );
                    s.state = State::Registering;
                    register_entry(fd, s, slot)
                }
                (state, _) => {
                    error!(qid = s.qid, ?state, "io_uring entry failed: {e}");
                    s.state = State::Done;
                    return Err(e);
                }
            }
        } else {
            // SAFETY: the completion of this slot's command means the kernel has handed the
            // entry to us (`FRRS_USERSPACE`) and writes neither buffer until the slot's next
            // command is submitted below; the buffers are live allocations of the right sizes,
            // and these are the only references to them, gone before that submission.
            let (header, payload) = unsafe { (&mut *s.header.addr(), &mut *s.payload.addr()) };
            let commit_id = header.ring_ent_in_out.commit_id;
            let defer = Defer {
                mailbox: &self.mailbox,
                slot,
                commit_id,
                taken: Cell::new(false),
            };
            let qid = s.qid;
            handle(qid, header, payload, &defer);
            if defer.taken.get() {
                // The reply comes through the mailbox; the kernel's request waits in the entry.
                s.state = State::Waiting;
                return self.keep_entries_free(qid);
            }
            commit_entry(fd, s, slot, commit_id)
        };
        self.push(&next)
    }

    /// When nearly all of queue `qid`'s entries hold requests waiting for later replies,
    /// register as many again (up to [`MAX_ENTRIES_PER_QUEUE`]), so that the requests its CPU
    /// makes meanwhile find an entry: 200 read-through lookups waiting for their commands on
    /// one CPU stalled every other request made there until the commands ended.
    fn keep_entries_free(&mut self, qid: u16) -> io::Result<()> {
        let (mut live, mut waiting) = (0, 0);
        for s in self.slots.iter().filter(|s| s.qid == qid) {
            live += usize::from(s.state != State::Done);
            waiting += usize::from(s.state == State::Waiting);
        }
        if live - waiting > FREE_ENTRIES_KEPT || live >= MAX_ENTRIES_PER_QUEUE {
            return Ok(());
        }
        let Some(fd) = self.fd.as_ref().map(|fd| fd.as_raw_fd()) else {
            return Ok(());
        };
        let added = live.min(MAX_ENTRIES_PER_QUEUE - live);
        for _ in 0..added {
            let index = self.slots.len();
            self.slots.push(Slot::new(qid, self.payload));
            let entry = register_entry(fd, &self.slots[index], index);
            self.push(&entry)?;
            self.slots[index].state = State::Registering;
        }
        info!(
            qid,
            waiting,
            entries = live + added,
            "io_uring queue grown: its entries were nearly all waiting for later replies"
        );
        Ok(())
    }

    /// Queue one SQE, submitting what is queued first if the submission queue is full (the
    /// queues' entries may outnumber it once grown).
    fn push(&mut self, entry: &squeue::Entry128) -> io::Result<()> {
        if self.ring.submission().is_full() {
            self.ring.submit()?;
        }
        // SAFETY: every address in the SQE (REGISTER's iovecs, and through them the buffers;
        // the mailbox read's 8-byte buffer) belongs to this ring and outlives the command:
        // slots are dropped only once every command has completed, the wake buffer only when
        // its read is not in flight, or they are leaked (see `run` and `Drop`).
        let pushed = unsafe { self.ring.submission().push(entry) };
        pushed.map_err(|_| {
            error!("the io_uring submission queue is full; an entry is lost");
            io::Error::from(io::ErrorKind::OutOfMemory)
        })
    }
}

impl Drop for Rings {
    fn drop(&mut self) {
        // Dropping the ring closes it and the kernel cancels what is in flight, but not
        // synchronously: free the buffers only when no command is outstanding.
        if self
            .slots
            .iter()
            .any(|s| matches!(s.state, State::Registering | State::Committing))
        {
            std::mem::forget(std::mem::take(&mut self.slots));
        }
        if self.wake_armed {
            std::mem::forget(self.wake_buf.take());
        }
    }
}

/// A FUSE io_uring command on `fd`: `cmd_req` in the SQE's 80-byte command area.
fn command(
    fd: i32,
    cmd: FuseUringCmd,
    cmd_req: &FuseUringCmdReq,
    addr: Option<u64>,
) -> squeue::Entry128 {
    let mut area = [0u8; 80];
    area[..size_of::<FuseUringCmdReq>()].copy_from_slice(cmd_req.as_bytes());
    opcode::UringCmd80::new(types::Fd(fd), cmd as u32)
        .cmd(area)
        .addr(addr)
        .build()
}

/// COMMIT_AND_FETCH of the reply now in `slot`'s buffers.
fn commit_entry(fd: i32, s: &mut Slot, slot: usize, commit_id: u64) -> squeue::Entry128 {
    let commit = FuseUringCmdReq {
        commit_id,
        qid: s.qid,
        ..FuseUringCmdReq::default()
    };
    s.state = State::Committing;
    command(fd, FuseUringCmd::CommitAndFetch, &commit, None).user_data(slot as u64)
}

/// An `EIO` reply with no body, for a later reply that never came or could not be written.
fn write_eio(header: &mut FuseUringReqHeader, unique: u64) {
    let oh = FuseOutHeader {
        len: size_of::<FuseOutHeader>() as u32,
        error: -libc::EIO,
        unique,
    };
    header.in_out[..size_of::<FuseOutHeader>()].copy_from_slice(oh.as_bytes());
    header.ring_ent_in_out.payload_sz = 0;
}

/// REGISTER for `slot`: `addr` = its two iovecs, `len` = 2.
fn register_entry(fd: i32, slot: &Slot, index: usize) -> squeue::Entry128 {
    let req = FuseUringCmdReq {
        qid: slot.qid,
        ..FuseUringCmdReq::default()
    };
    let mut entry = command(
        fd,
        FuseUringCmd::Register,
        &req,
        Some(slot.iov.0.as_ptr() as u64),
    )
    .user_data(index as u64);
    set_sqe_len(&mut entry, FUSE_URING_IOV_SEGS);
    entry
}

/// Set the SQE's `len`, which io-uring 0.7.16's `UringCmd80` has no setter for and REGISTER
/// needs (`fuse_uring_get_iovec_from_sqe()` refuses any other count than 2).
fn set_sqe_len(entry: &mut squeue::Entry128, len: u32) {
    let base: *mut u8 = std::ptr::from_mut(entry).cast();
    // SAFETY: `Entry128` is `#[repr(C)]` and starts with `Entry`, itself `#[repr(C)]` around
    // the kernel's 64-byte `struct io_uring_sqe`, whose `len` is the u32 at byte 24 (the test
    // below checks both against the fields the builder sets). The write is inside the 128
    // bytes of `*entry`, unaligned-safe, and a u32 has no invalid bit patterns.
    unsafe { base.add(SQE_LEN_OFFSET).cast::<u32>().write_unaligned(len) };
}

#[cfg(test)]
mod tests;
