//! The way back to the ring's thread for replies given later by another thread (a read-through
//! lookup answered when its command ends): the handler takes a [`Deferred`] from its [`Defer`],
//! and whoever answers posts the reply's [`Writer`] to the ring's [`Mailbox`], whose eventfd the
//! ring keeps a read on. Only the ring's thread submits to the ring.

use std::cell::Cell;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use parking_lot::Mutex;

use super::FuseUringReqHeader;

/// What a later reply writes into its entry's buffers: the header and the payload.
pub type Writer = Box<dyn FnOnce(&mut FuseUringReqHeader, &mut [u8]) + Send>;

/// Later replies on their way to the ring's thread.
pub struct Mailbox {
    /// `(slot, commit_id, writer)`; no writer means the answer was dropped: `EIO`.
    queue: Mutex<Vec<(usize, u64, Option<Writer>)>>,
    pub(super) event: OwnedFd,
}

impl Mailbox {
    pub(super) fn new() -> io::Result<Mailbox> {
        let event = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)?;
        Ok(Mailbox {
            queue: Mutex::new(Vec::new()),
            event,
        })
    }

    fn post(&self, slot: usize, commit_id: u64, write: Option<Writer>) {
        self.queue.lock().push((slot, commit_id, write));
        // A full counter (2^64 - 2 posts unread) is the only failure, and then a wake-up is
        // already pending.
        let _ = rustix::io::write(&self.event, &1u64.to_ne_bytes());
    }

    pub(super) fn take(&self) -> Vec<(usize, u64, Option<Writer>)> {
        std::mem::take(&mut *self.queue.lock())
    }
}

#[cfg(test)]
impl Mailbox {
    /// A mailbox with no ring, for handlers tested without a kernel.
    pub(crate) fn detached() -> Arc<Mailbox> {
        Arc::new(Mailbox::new().unwrap())
    }

    /// The `Defer` a ring would give the handler of `slot`'s request.
    pub(crate) fn defer(self: &Arc<Self>, slot: usize, commit_id: u64) -> Defer<'_> {
        Defer {
            mailbox: self,
            slot,
            commit_id,
            taken: Cell::new(false),
        }
    }

    /// Wait up to `timeout` for a later reply, as the ring's eventfd read would.
    pub(crate) fn wait(
        &self,
        timeout: std::time::Duration,
    ) -> Option<(usize, u64, Option<Writer>)> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(first) = self.take().into_iter().next() {
                return Some(first);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
impl Defer<'_> {
    pub(crate) fn was_deferred(&self) -> bool {
        self.taken.get()
    }
}

/// Given to the handler with each request: [`Defer::later`] keeps the entry waiting for a reply
/// from another thread instead of committing what the handler wrote.
pub struct Defer<'r> {
    pub(super) mailbox: &'r Arc<Mailbox>,
    pub(super) slot: usize,
    pub(super) commit_id: u64,
    pub(super) taken: Cell<bool>,
}

impl Defer<'_> {
    /// The way to answer this request later, from any thread.
    pub fn later(&self) -> Deferred {
        self.taken.set(true);
        Deferred {
            mailbox: self.mailbox.clone(),
            slot: self.slot,
            commit_id: self.commit_id,
            sent: false,
        }
    }
}

/// A request's reply to come. Dropped without [`Deferred::reply`], it answers `EIO`, so the
/// entry never waits forever.
pub struct Deferred {
    mailbox: Arc<Mailbox>,
    slot: usize,
    commit_id: u64,
    sent: bool,
}

impl Deferred {
    /// Hand the reply to the ring's thread, which writes it with `write` and commits it.
    pub fn reply(mut self, write: Writer) {
        self.sent = true;
        self.mailbox.post(self.slot, self.commit_id, Some(write));
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        if !self.sent {
            self.mailbox.post(self.slot, self.commit_id, None);
        }
    }
}
