//! The kernel passthrough backings, shared by both transports: one per inode pin while any of
//! its opens uses it, whichever transport answered them. The map's lock is held only to find
//! or swap a slot: registering a backing (an ioctl), replying and closing one (another ioctl)
//! happen outside it, so opens of other inodes never wait for them.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, OnceLock};

use fuser::BackingId;
use parking_lot::Mutex;
use tracing::error;

use crate::fs::CacheFs;

/// `FUSE_DEV_IOC_BACKING_CLOSE`: `_IOW(229, 2, uint32_t)` (`<linux/fuse.h>`).
const FUSE_DEV_IOC_BACKING_CLOSE: libc::c_ulong = 0x4004_e502;

/// Every pin's backing; both transports hold the same one.
#[derive(Default)]
pub struct Backings {
    slots: Mutex<HashMap<u64, Arc<Backing>>>,
}

/// One pin's kernel backing: registered by the first open of the pin that gets here (the
/// others of the same pin wait for it, and only they), closed when the last `Arc` goes, which
/// is never before an open that holds it is done replying.
pub struct Backing {
    generation: u64,
    /// `None` when the kernel refused the registration (its opens then use direct I/O).
    id: OnceLock<Option<Registered>>,
}

/// A backing id registered on the connection: through fuser's reply (classic transport), or
/// with an ioctl on the ring's duplicate of the connection (closed the same way on drop).
pub enum Registered {
    Fuser(BackingId),
    Raw(RawBacking),
}

/// A backing id the ring registered; closed when dropped.
pub struct RawBacking {
    id: u32,
    dev: Arc<OwnedFd>,
}

impl RawBacking {
    /// Register `file` as a backing on the connection behind `dev`.
    pub fn register(dev: &Arc<OwnedFd>, file: &std::fs::File) -> io::Result<Self> {
        let id = BackingId::create_raw(&**dev, file)?;
        Ok(RawBacking {
            id,
            dev: dev.clone(),
        })
    }

    pub fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for RawBacking {
    fn drop(&mut self) {
        // SAFETY: the ioctl reads one `u32` through the pointer, which points at `self.id`
        // for the whole call; `dev` is an open fd of the connection the id was registered on.
        let rc = unsafe {
            libc::ioctl(
                self.dev.as_raw_fd(),
                FUSE_DEV_IOC_BACKING_CLOSE,
                &self.id as *const u32,
            )
        };
        if rc < 0 {
            error!(
                id = self.id,
                "cannot close a passthrough backing: {}",
                io::Error::last_os_error()
            );
        }
    }
}

impl Backing {
    /// The registered backing; `None` when the kernel refused it.
    pub fn registered(&self) -> Option<&Registered> {
        self.id.get().and_then(Option::as_ref)
    }
}

impl Backings {
    /// The backing of the pin `generation` of `ino`, registered with `register` by the pin's
    /// first open (a refusal is told to `fs` once). The caller keeps the `Arc` until its reply
    /// is sent.
    pub fn backing(
        &self,
        fs: &CacheFs,
        ino: u64,
        generation: u64,
        register: impl FnOnce() -> io::Result<Registered>,
    ) -> Arc<Backing> {
        let (slot, replaced) = {
            let mut slots = self.slots.lock();
            match slots.get(&ino) {
                Some(slot) if slot.generation == generation => (slot.clone(), None),
                _ => {
                    let slot = Arc::new(Backing {
                        generation,
                        id: OnceLock::new(),
                    });
                    let replaced = slots.insert(ino, slot.clone());
                    (slot, replaced)
                }
            }
        };
        // An older pin's backing is closed here, outside the map's lock.
        drop(replaced);
        slot.id.get_or_init(|| match register() {
            Ok(id) => Some(id),
            Err(e) => {
                fs.passthrough_refused(&e);
                None
            }
        });
        slot
    }

    /// The last open of pin `generation` of `ino` was released: the kernel no longer needs
    /// its backing. It is closed once dropped, outside the map's lock.
    pub fn released(&self, ino: u64, generation: u64) {
        let removed = {
            let mut slots = self.slots.lock();
            if slots
                .get(&ino)
                .is_some_and(|slot| slot.generation == generation)
            {
                slots.remove(&ino)
            } else {
                None
            }
        };
        drop(removed);
    }
}
