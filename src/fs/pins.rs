//! Which backing file each open inode serves.
//!
//! While an inode is open for reading it serves exactly one backing file (a *pin*): every
//! read-open of it shares that file, so a kernel passthrough backing (one per inode, the
//! kernel refuses a second) never mixes two versions of an entry. When the entry is replaced
//! while pinned, its name moves to a fresh inode (see `CacheFs::rotate`) and the pinned one
//! lives on for its readers until they close.
//!
//! The kernel also refuses a direct-I/O open (our writers, scratch files) on an inode with a
//! passthrough backing, and applies each open only after our reply. So the choice is made
//! here, under one lock: a writer registers on the inode before its reply, and a reader starts
//! a passthrough pin only while no writer is registered; a writer that finds a passthrough pin
//! is refused (the caller moves the name to a fresh inode and the kernel retries).

use foldhash::HashMap;
use std::fs::File;
use std::sync::Arc;

/// A backing file's identity: (device, inode).
pub type FileId = (u64, u64);

#[derive(Debug)]
pub struct Pin {
    pub id: FileId,
    /// Unique per pin, so a late release never drops the backing of a newer pin.
    pub generation: u64,
    pub file: Arc<File>,
    /// Reads go to the backing file in the kernel, not through the daemon.
    pub passthrough: bool,
    opens: u32,
}

#[derive(Debug, Default)]
pub struct Pins {
    pins: HashMap<u64, Pin>,
    /// Open direct-I/O handles (writers, scratch files) per inode.
    writers: HashMap<u64, u32>,
    next_generation: u64,
}

/// What an open got from [`Pins::acquire`] or [`Pins::join`].
#[derive(Debug)]
pub struct Acquired {
    pub file: Arc<File>,
    pub passthrough: bool,
    pub generation: u64,
}

impl Pins {
    pub fn get(&self, ino: u64) -> Option<&Pin> {
        self.pins.get(&ino)
    }

    /// Join the inode's pin if it has one (dropping `file`), else pin `file`, passed through
    /// if `passthrough` and no writer has the inode open.
    pub fn acquire(&mut self, ino: u64, id: FileId, file: File, passthrough: bool) -> Acquired {
        if let Some(acquired) = self.join(ino) {
            return acquired;
        }
        let passthrough = passthrough && !self.writers.contains_key(&ino);
        self.next_generation += 1;
        let generation = self.next_generation;
        let file = Arc::new(file);
        let pin = Pin {
            id,
            generation,
            file: file.clone(),
            passthrough,
            opens: 1,
        };
        self.pins.insert(ino, pin);
        Acquired {
            file,
            passthrough,
            generation,
        }
    }

    /// Join an existing pin only.
    pub fn join(&mut self, ino: u64) -> Option<Acquired> {
        let pin = self.pins.get_mut(&ino)?;
        pin.opens += 1;
        Some(Acquired {
            file: pin.file.clone(),
            passthrough: pin.passthrough,
            generation: pin.generation,
        })
    }

    /// One open of `ino` ended; the pin's generation when that was its last open.
    pub fn release(&mut self, ino: u64) -> Option<u64> {
        let pin = self.pins.get_mut(&ino)?;
        pin.opens = pin.opens.saturating_sub(1);
        if pin.opens == 0 {
            return self.pins.remove(&ino).map(|pin| pin.generation);
        }
        None
    }

    /// A writer wants the inode; refused while its reads are passed through.
    pub fn writer_enter(&mut self, ino: u64) -> bool {
        if self.pins.get(&ino).is_some_and(|pin| pin.passthrough) {
            return false;
        }
        *self.writers.entry(ino).or_default() += 1;
        true
    }

    /// Whether a writer (or a scratch file's opener) has the inode open.
    pub fn has_writer(&self, ino: u64) -> bool {
        self.writers.contains_key(&ino)
    }

    pub fn writer_exit(&mut self, ino: u64) {
        if let Some(n) = self.writers.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                self.writers.remove(&ino);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> File {
        tempfile::tempfile().unwrap()
    }

    #[test]
    fn every_open_of_a_pinned_inode_shares_its_file() {
        let mut pins = Pins::default();
        let a = pins.acquire(5, (1, 10), file(), true);
        let b = pins.acquire(5, (1, 11), file(), false);
        assert!(Arc::ptr_eq(&a.file, &b.file));
        assert!(b.passthrough, "a joiner follows the pin's mode");
        assert_eq!(pins.get(5).unwrap().id, (1, 10));
        assert_eq!(pins.release(5), None);
        assert_eq!(pins.release(5), Some(a.generation));
        assert!(pins.get(5).is_none());
    }

    #[test]
    fn writers_and_passthrough_exclude_each_other() {
        let mut pins = Pins::default();
        assert!(pins.writer_enter(5));
        assert!(
            !pins.acquire(5, (1, 10), file(), true).passthrough,
            "a writer is open"
        );
        pins.release(5);
        pins.writer_exit(5);
        let again = pins.acquire(5, (1, 10), file(), true);
        assert!(again.passthrough);
        assert!(!pins.writer_enter(5));
    }
}
