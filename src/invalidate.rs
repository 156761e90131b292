//! Kernel cache invalidations, sent from one dedicated thread.
//!
//! The kernel may be waiting on the very request that causes an invalidation, so handlers
//! never notify the kernel themselves: they queue an [`Invalidation`] here. A handler that
//! needs its effect before it replies (a `close` that published new content) waits a bounded
//! time for the thread's acknowledgement, never forever.

use std::ffi::OsString;
use std::sync::mpsc::{channel, sync_channel, Sender};
use std::time::Duration;

use tracing::debug;

/// One thing the kernel must forget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// An inode's attributes and cached data.
    Inode(u64),
    /// A name in a directory (the dentry), so the next access looks it up again.
    Entry(u64, OsString),
}

/// Something that can deliver invalidations to the kernel (the fuser notifier, or a test).
pub trait Deliver: Send + 'static {
    fn deliver(&self, inv: &Invalidation) -> std::io::Result<()>;
}

impl Deliver for fuser::Notifier {
    fn deliver(&self, inv: &Invalidation) -> std::io::Result<()> {
        match inv {
            Invalidation::Inode(ino) => self.inval_inode(fuser::INodeNo(*ino), 0, 0),
            Invalidation::Entry(parent, name) => self.inval_entry(fuser::INodeNo(*parent), name),
        }
    }
}

type Message = (Invalidation, Option<std::sync::mpsc::SyncSender<()>>);

/// The sending side, held by the filesystem.
#[derive(Debug, Clone)]
pub struct Invalidator {
    tx: Sender<Message>,
}

/// How long a handler waits for an invalidation to reach the kernel.
const ACK_WAIT: Duration = Duration::from_millis(200);

impl Invalidator {
    /// Start the notifier thread; it ends when every `Invalidator` clone is dropped.
    pub fn spawn(deliver: impl Deliver) -> std::io::Result<Invalidator> {
        let (tx, rx) = channel::<Message>();
        std::thread::Builder::new()
            .name("invalidate".into())
            .spawn(move || {
                for (inv, ack) in rx {
                    // ENOENT: the kernel does not hold that inode or name; nothing to forget.
                    if let Err(e) = deliver.deliver(&inv) {
                        debug!(?inv, "invalidation not delivered: {e}");
                    }
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                }
            })?;
        Ok(Invalidator { tx })
    }

    /// Queue an invalidation and return at once.
    pub fn send(&self, inv: Invalidation) {
        let _ = self.tx.send((inv, None));
    }

    /// Queue an invalidation and wait (bounded) until it has been delivered.
    pub fn send_and_wait(&self, inv: Invalidation) {
        let (ack_tx, ack_rx) = sync_channel(1);
        if self.tx.send((inv, Some(ack_tx))).is_ok() {
            let _ = ack_rx.recv_timeout(ACK_WAIT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Record(Arc<Mutex<Vec<Invalidation>>>);

    impl Deliver for Record {
        fn deliver(&self, inv: &Invalidation) -> std::io::Result<()> {
            self.0.lock().unwrap().push(inv.clone());
            Ok(())
        }
    }

    #[test]
    fn invalidations_are_delivered_in_order_and_waited_for() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let inv = Invalidator::spawn(Record(seen.clone())).unwrap();
        inv.send(Invalidation::Inode(7));
        inv.send_and_wait(Invalidation::Entry(1, "x.json".into()));
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                Invalidation::Inode(7),
                Invalidation::Entry(1, "x.json".into())
            ]
        );
    }
}
