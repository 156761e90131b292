//! Kernel cache invalidations, sent from dedicated threads.
//!
//! The kernel may be waiting on the very request that causes an invalidation, so handlers
//! never notify the kernel themselves: they queue an [`Invalidation`] here. Names and page
//! ranges go through one thread (delivering them may need a directory or page lock, held by a
//! request that waits for a free worker); a handler that needs their effect before it replies
//! waits a bounded time, never forever, and fewer handlers wait at once than there are
//! workers, so the request holding the lock always finds one. Attribute-only invalidations take no lock in the kernel, so they go
//! through a second thread and a handler may wait for them freely.

use std::ffi::OsString;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, sync_channel, Sender, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

/// One thing the kernel must forget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// An inode's attributes and cached data.
    Inode(u64),
    /// An inode's attributes only (size, mtime): lock-free in the kernel.
    Attributes(u64),
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
            Invalidation::Attributes(ino) => self.inval_inode(fuser::INodeNo(*ino), -1, 0),
            Invalidation::Entry(parent, name) => self.inval_entry(fuser::INodeNo(*parent), name),
        }
    }
}

type Message = (Invalidation, Option<SyncSender<()>>);

/// How long a handler waits for an invalidation to reach the kernel.
const ACK_WAIT: Duration = Duration::from_secs(1);

/// The sending side, held by the filesystem.
#[derive(Debug, Clone)]
pub struct Invalidator {
    names: Sender<Message>,
    attributes: Sender<Message>,
    waiters: Arc<AtomicUsize>,
    max_waiters: usize,
}

impl Invalidator {
    /// Start the notifier threads; they end when every `Invalidator` clone is dropped. At most
    /// `max_waiters` handlers wait at once (keep it below the number of workers).
    pub fn spawn(
        deliver: impl Deliver + Clone,
        max_waiters: usize,
    ) -> std::io::Result<Invalidator> {
        Ok(Invalidator {
            names: deliver_thread("invalidate", deliver.clone())?,
            attributes: deliver_thread("invalidate-attrs", deliver)?,
            waiters: Arc::new(AtomicUsize::new(0)),
            max_waiters,
        })
    }

    /// Queue an invalidation and return at once.
    pub fn send(&self, inv: Invalidation) {
        let queue = match inv {
            Invalidation::Attributes(_) => &self.attributes,
            _ => &self.names,
        };
        let _ = queue.send((inv, None));
    }

    /// Queue an invalidation and wait (bounded) until it has been delivered, unless another
    /// handler is already waiting (then just queue it).
    pub fn send_and_wait(&self, inv: Invalidation) {
        if let Invalidation::Attributes(ino) = inv {
            return self.attributes_now(ino);
        }
        if self.waiters.fetch_add(1, Ordering::SeqCst) >= self.max_waiters {
            self.waiters.fetch_sub(1, Ordering::SeqCst);
            return self.send(inv);
        }
        wait_for(&self.names, inv);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Invalidate an inode's attributes and wait until the kernel has done it.
    pub fn attributes_now(&self, ino: u64) {
        wait_for(&self.attributes, Invalidation::Attributes(ino));
    }
}

fn wait_for(queue: &Sender<Message>, inv: Invalidation) {
    let (ack_tx, ack_rx) = sync_channel(1);
    if queue.send((inv, Some(ack_tx))).is_ok() {
        let _ = ack_rx.recv_timeout(ACK_WAIT);
    }
}

fn deliver_thread(name: &str, deliver: impl Deliver) -> std::io::Result<Sender<Message>> {
    let (tx, rx) = channel::<Message>();
    std::thread::Builder::new()
        .name(name.into())
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
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone)]
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
        let inv = Invalidator::spawn(Record(seen.clone()), 1).unwrap();
        inv.send(Invalidation::Inode(7));
        inv.send_and_wait(Invalidation::Entry(1, "x.json".into()));
        inv.attributes_now(9);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                Invalidation::Inode(7),
                Invalidation::Entry(1, "x.json".into()),
                Invalidation::Attributes(9)
            ]
        );
    }
}
