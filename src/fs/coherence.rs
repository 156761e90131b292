//! What the kernel may cache, decided when we reply, so that no request ever waits for a
//! kernel notification.
//!
//! Every name and attribute the kernel caches expires within [`KERNEL_TTL`](super::KERNEL_TTL)
//! (and at the entry's next state change). That bounds what others see; a writer must see its
//! own write at once (SPEC §3), so a name that is being written is not cached at all: every
//! reply for it carries a zero timeout while a writer has it open and for [`COOLDOWN`] after.
//!
//! The kernel may still hold the name from a reply made before the writing began. So a
//! writer's open of an inode that was ever handed out with a nonzero timeout is refused with
//! `ESTALE`: the caller moves the name to a fresh inode, the kernel looks the name up again
//! (`LOOKUP_REVAL`), gets the fresh inode with a zero timeout, drops the old dentry and
//! retries the open once, transparently. Deciding "long timeout" and "writer allowed" under
//! one lock means no reply that was computed before the writing began can outlive it.

use foldhash::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

/// How long a name stays uncached after its last writer closed. Any value works; a longer one
/// spares the next writer of a busy name its `ESTALE` round.
pub const COOLDOWN: Duration = Duration::from_secs(2);

/// Past this many tracked names, finished ones are swept.
const SWEEP_AT: usize = 4096;

#[derive(Debug, Default)]
pub struct Coherence {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Names with an open writer, or one that closed less than `COOLDOWN` ago.
    writing: HashMap<(u64, OsString), Writing>,
    /// Inodes that were handed to the kernel with a nonzero entry timeout.
    long_granted: HashSet<u64>,
    /// Inodes a writer was admitted to: every open of one reads what its name holds at that
    /// open, so the kernel may keep the name bound to it (never its attributes).
    live: HashSet<u64>,
}

/// What the kernel may cache of a reply that binds a name to an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The attributes (and the name, for a reply that has one timeout).
    pub ttl: Duration,
    /// The name: longer than `ttl` only for a live inode.
    pub name_ttl: Duration,
}

impl Grant {
    fn both(ttl: Duration) -> Grant {
        Grant { ttl, name_ttl: ttl }
    }
}

#[derive(Debug, Clone, Copy)]
struct Writing {
    open: u32,
    last_close: SystemTime,
    /// When a writer of the name was last refused: its open is being retried.
    last_refused: Option<SystemTime>,
}

impl Writing {
    fn active(&self, now: SystemTime) -> bool {
        self.open > 0
            || now
                .duration_since(self.last_close)
                .map_or(true, |d| d < COOLDOWN)
    }
}

impl Inner {
    fn is_writing(&mut self, key: &(u64, OsString), now: SystemTime) -> bool {
        match self.writing.get(key) {
            Some(w) if w.active(now) => true,
            Some(_) => {
                self.writing.remove(key);
                false
            }
            None => false,
        }
    }
}

impl Coherence {
    /// The timeouts to hand out with `ino` bound at `name` in `parent`: `ttl`; zero while the
    /// name is being written; for a live inode, `ttl` for the name and zero for its attributes.
    pub fn grant(
        &self,
        parent: u64,
        name: &OsStr,
        ino: u64,
        ttl: Duration,
        now: SystemTime,
    ) -> Grant {
        if ttl.is_zero() {
            return Grant::both(ttl);
        }
        let mut inner = self.inner.lock();
        if inner.live.contains(&ino) {
            return Grant {
                ttl: Duration::ZERO,
                name_ttl: ttl,
            };
        }
        if !inner.writing.is_empty() && inner.is_writing(&(parent, name.to_os_string()), now) {
            return Grant::both(Duration::ZERO);
        }
        inner.long_granted.insert(ino);
        Grant::both(ttl)
    }

    /// Whether `ino` is live: a writer was admitted to it (see [`Coherence::make_live`]).
    pub fn is_live(&self, ino: u64) -> bool {
        let inner = self.inner.lock();
        !inner.live.is_empty() && inner.live.contains(&ino)
    }

    /// A writer was admitted to `ino` (by `writer_enter` here and by the pins): from now on
    /// every read-open of it reads what its name holds at that open, with direct I/O, so the
    /// name may stay bound to it while it is written and the writer still reads its own
    /// write at once.
    pub fn make_live(&self, ino: u64) {
        self.inner.lock().live.insert(ino);
    }

    /// Whether `name` in `parent` is being written (readers then use no kernel passthrough, so
    /// a writer's open is never refused by the kernel).
    pub fn is_writing(&self, parent: u64, name: &OsStr, now: SystemTime) -> bool {
        let mut inner = self.inner.lock();
        !inner.writing.is_empty() && inner.is_writing(&(parent, name.to_os_string()), now)
    }

    /// Whether a lookup of `name` must not hand out `ino` again: the name is being written and
    /// the kernel may cache `ino` for long. Then the lookup binds a fresh inode, so the open
    /// that a refused writer retries can never be refused twice.
    pub fn unfit_for_writers(&self, parent: u64, name: &OsStr, ino: u64, now: SystemTime) -> bool {
        let mut inner = self.inner.lock();
        inner.long_granted.contains(&ino) && inner.is_writing(&(parent, name.to_os_string()), now)
    }

    /// A writer opens `ino`, bound at `name`: counted, or refused (false) when the kernel may
    /// hold the name with a nonzero timeout. A refusal still starts the uncached time, so the
    /// retry finds the name uncached.
    pub fn writer_enter(&self, parent: u64, name: &OsStr, ino: u64, now: SystemTime) -> bool {
        let mut inner = self.inner.lock();
        if inner.writing.len() >= SWEEP_AT {
            inner.writing.retain(|_, w| w.active(now));
        }
        let refused = inner.long_granted.contains(&ino);
        let w = inner
            .writing
            .entry((parent, name.to_os_string()))
            .or_insert(Writing {
                open: 0,
                last_close: now,
                last_refused: None,
            });
        if refused {
            w.last_close = w.last_close.max(now);
            w.last_refused = Some(now);
            return false;
        }
        w.open += 1;
        true
    }

    /// A writer of `name` closed (or its open failed after `writer_enter` admitted it).
    pub fn writer_exit(&self, parent: u64, name: &OsStr, now: SystemTime) {
        self.writer_gone(parent, name, now, false);
    }

    /// A writer that `writer_enter` admitted is refused after all (the inode's reads are passed
    /// through, or the kernel holds its pages): it no longer counts, and its retry is protected
    /// like that of a writer refused here.
    pub fn writer_refused(&self, parent: u64, name: &OsStr, now: SystemTime) {
        self.writer_gone(parent, name, now, true);
    }

    fn writer_gone(&self, parent: u64, name: &OsStr, now: SystemTime, refused: bool) {
        if let Some(w) = self
            .inner
            .lock()
            .writing
            .get_mut(&(parent, name.to_os_string()))
        {
            w.open = w.open.saturating_sub(1);
            w.last_close = w.last_close.max(now);
            if refused {
                w.last_refused = Some(now);
            }
        }
    }

    /// A rename through the mount replaced what `name` in `parent` held. The kernel moved its
    /// own dentry onto the new inode, so the name's uncached time after its last writer ends
    /// here: readers of the new inode may be passed through. Not while a writer has the name
    /// open, nor within `COOLDOWN` of a refused writer, whose retried open must find the name
    /// uncached (else it would be refused twice, and the caller would see `ESTALE`).
    pub fn replaced(&self, parent: u64, name: &OsStr, now: SystemTime) {
        let mut inner = self.inner.lock();
        if inner.writing.is_empty() {
            return;
        }
        let key = (parent, name.to_os_string());
        let quiet = |w: &Writing| {
            w.open == 0
                && w.last_refused
                    .is_none_or(|at| now.duration_since(at).is_ok_and(|since| since >= COOLDOWN))
        };
        if inner.writing.get(&key).is_some_and(quiet) {
            inner.writing.remove(&key);
        }
    }

    /// The kernel forgot `ino`.
    pub fn forget(&self, ino: u64) {
        let mut inner = self.inner.lock();
        inner.long_granted.remove(&ino);
        inner.live.remove(&ino);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    #[test]
    fn a_name_is_not_cached_while_written_and_for_a_cooldown_after() {
        let c = Coherence::default();
        let name = OsStr::new("x.json");
        assert!(c.writer_enter(1, name, 5, at(0)));
        assert_eq!(c.grant(1, name, 5, T, at(0)).ttl, Duration::ZERO);
        assert_eq!(
            c.grant(1, OsStr::new("y.json"), 6, T, at(0)).ttl,
            T,
            "other names are unaffected"
        );
        c.writer_exit(1, name, at(10));
        assert_eq!(c.grant(1, name, 5, T, at(11)).ttl, Duration::ZERO);
        assert_eq!(c.grant(1, name, 5, T, at(10) + COOLDOWN).ttl, T);
    }

    #[test]
    fn a_rename_onto_the_name_ends_its_cooldown_but_not_an_open_writer() {
        let c = Coherence::default();
        let name = OsStr::new("x.json");
        assert!(c.writer_enter(1, name, 5, at(0)));
        c.writer_exit(1, name, at(0));
        assert!(c.is_writing(1, name, at(1)), "cooling down");
        c.replaced(1, name, at(1));
        assert!(!c.is_writing(1, name, at(1)));
        assert_eq!(c.grant(1, name, 7, T, at(1)).ttl, T);
        assert!(c.writer_enter(1, name, 8, at(1)));
        c.replaced(1, name, at(1));
        assert!(c.is_writing(1, name, at(1)), "a writer still has it open");
        assert_eq!(c.grant(1, name, 9, T, at(1)).ttl, Duration::ZERO);
    }

    #[test]
    fn a_rename_onto_the_name_keeps_it_uncached_for_a_refused_writers_retry() {
        let c = Coherence::default();
        let name = OsStr::new("x.json");
        assert_eq!(c.grant(1, name, 5, T, at(0)).ttl, T);
        assert!(
            !c.writer_enter(1, name, 5, at(0)),
            "refused: the kernel may cache 5"
        );
        c.replaced(1, name, at(0));
        assert_eq!(
            c.grant(1, name, 6, T, at(0)).ttl,
            Duration::ZERO,
            "the retry's lookup still finds the name uncached"
        );
        assert!(c.writer_enter(1, name, 6, at(0)));
        c.writer_exit(1, name, at(0));
        c.replaced(1, name, at(0) + COOLDOWN);
        assert!(!c.is_writing(1, name, at(0) + COOLDOWN));
        // Admitted here, then refused for the inode's passthrough readers: the same.
        assert!(c.writer_enter(1, name, 7, at(10)));
        c.writer_refused(1, name, at(10));
        c.replaced(1, name, at(10));
        assert_eq!(c.grant(1, name, 8, T, at(10)).ttl, Duration::ZERO);
    }

    #[test]
    fn a_writer_of_an_inode_handed_out_for_long_is_refused_once() {
        let c = Coherence::default();
        let name = OsStr::new("x.json");
        assert_eq!(c.grant(1, name, 5, T, at(0)).ttl, T);
        assert!(!c.writer_enter(1, name, 5, at(0)), "the kernel may cache 5");
        // The retry looks the name up again: a fresh inode, handed out uncached.
        assert_eq!(c.grant(1, name, 6, T, at(0)).ttl, Duration::ZERO);
        assert!(c.writer_enter(1, name, 6, at(0)));
        c.forget(5);
        assert!(c.writer_enter(1, name, 5, at(0)), "forgotten by the kernel");
    }

    #[test]
    fn a_live_inode_keeps_its_name_for_long_but_never_its_attributes() {
        let c = Coherence::default();
        let name = OsStr::new("x.json");
        assert!(c.writer_enter(1, name, 5, at(0)));
        c.make_live(5);
        assert!(c.is_live(5));
        let live = Grant {
            ttl: Duration::ZERO,
            name_ttl: T,
        };
        assert_eq!(c.grant(1, name, 5, T, at(0)), live, "while written");
        c.writer_exit(1, name, at(0));
        assert_eq!(c.grant(1, name, 5, T, at(0) + COOLDOWN), live, "and after");
        assert!(
            c.writer_enter(1, name, 5, at(1)),
            "never refused: never long-granted"
        );
        c.forget(5);
        assert!(!c.is_live(5));
    }
}
