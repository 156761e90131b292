//! Kernel attribute invalidations, sent from one thread that nobody waits for.
//!
//! The mount keeps the kernel coherent at reply time (see `fs::coherence`): names and
//! attributes are cached for at most a second, and names being written are not cached at all.
//! What is left for notifications is a hint that an inode's attributes changed (a publish, a
//! change in the backing dir), so other processes see it before their second is up.
//!
//! Only attribute invalidations are ever sent. They take no lock in the kernel, so the thread
//! that delivers them can never sleep on a directory or page lock held by a request that waits
//! for this daemon: entry invalidations (`inval_entry`) take the parent directory's lock, and a
//! daemon killed while delivering one never finishes exiting (FUSE-NOTES: Traps). No request
//! handler waits for a delivery. The queue is bounded and deduplicated: an inode already queued
//! is not queued twice, and when the queue is full a hint is dropped (the one-second bound
//! still holds without it).

use std::collections::HashSet;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use parking_lot::Mutex;
use tracing::debug;

/// At most this many inodes wait for delivery; more are dropped.
const QUEUE: usize = 4096;

/// Something that can deliver attribute invalidations to the kernel (the fuser notifier, or a
/// test).
pub trait Deliver: Send + 'static {
    fn attributes(&self, ino: u64) -> std::io::Result<()>;
}

impl Deliver for fuser::Notifier {
    fn attributes(&self, ino: u64) -> std::io::Result<()> {
        // Offset -1: attributes only, no page range (no page lock is taken).
        self.inval_inode(fuser::INodeNo(ino), -1, 0)
    }
}

/// The sending side, held by the filesystem.
#[derive(Debug, Clone)]
pub struct Invalidator {
    queue: SyncSender<u64>,
    queued: Arc<Mutex<HashSet<u64>>>,
}

impl Invalidator {
    /// Start the notifier thread; it ends when every `Invalidator` clone is dropped.
    pub fn spawn(deliver: impl Deliver) -> std::io::Result<Invalidator> {
        let (queue, rx) = sync_channel(QUEUE);
        let queued = Arc::new(Mutex::new(HashSet::new()));
        let pending = queued.clone();
        std::thread::Builder::new()
            .name("invalidate".into())
            .spawn(move || deliver_all(rx, &pending, deliver))?;
        Ok(Invalidator { queue, queued })
    }

    /// Tell the kernel that `ino`'s attributes changed; returns at once.
    pub fn attributes(&self, ino: u64) {
        if !self.queued.lock().insert(ino) {
            return; // already on its way
        }
        match self.queue.try_send(ino) {
            Ok(()) => {}
            Err(TrySendError::Full(ino) | TrySendError::Disconnected(ino)) => {
                self.queued.lock().remove(&ino);
                debug!(ino, "attribute invalidation dropped: queue full");
            }
        }
    }
}

fn deliver_all(rx: Receiver<u64>, queued: &Mutex<HashSet<u64>>, deliver: impl Deliver) {
    for ino in rx {
        queued.lock().remove(&ino);
        // ENOENT: the kernel does not hold that inode; nothing to forget.
        if let Err(e) = deliver.attributes(ino) {
            debug!(ino, "invalidation not delivered: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{channel, Sender};
    use std::time::Duration;

    struct Record(Mutex<Sender<u64>>);

    impl Deliver for Record {
        fn attributes(&self, ino: u64) -> std::io::Result<()> {
            let _ = self.0.lock().send(ino);
            Ok(())
        }
    }

    #[test]
    fn invalidations_are_delivered_in_order() {
        let (tx, rx) = channel();
        let inv = Invalidator::spawn(Record(Mutex::new(tx))).unwrap();
        inv.attributes(7);
        inv.attributes(9);
        let got: Vec<u64> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(got, vec![7, 9]);
    }

    /// A delivery that blocks (as a kernel lock would) never blocks a sender: the queue is
    /// bounded, duplicates are folded and overflow is dropped.
    #[test]
    fn a_stuck_delivery_never_blocks_senders() {
        struct Stuck(Mutex<Receiver<()>>);
        impl Deliver for Stuck {
            fn attributes(&self, _ino: u64) -> std::io::Result<()> {
                let _ = self.0.lock().recv();
                Ok(())
            }
        }
        let (release, wait) = channel();
        let inv = Invalidator::spawn(Stuck(Mutex::new(wait))).unwrap();
        let started = std::time::Instant::now();
        for ino in 0..(QUEUE as u64 * 3) {
            inv.attributes(ino % (QUEUE as u64 * 2));
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(inv.queued.lock().len() <= QUEUE + 1);
        drop(release);
    }
}
