//! The state of one writable open of an entry: a small state machine whose transitions are the
//! writing rules of SPEC §3. It does the staging file's own I/O on a `Store` passed in;
//! validating and publishing at a close are the caller's (`CacheFs::commit`), which reports
//! the outcome back ([`WriteState::published`], [`WriteState::keep`], [`WriteState::fail`]).
//! Recognising which handle an `O_TRUNC` belongs to is the caller's too
//! (`CacheFs::truncate_of_fresh_open`).

use std::fs::File;
use std::mem;
use std::os::unix::fs::FileExt;
use std::path::Path;

use tracing::warn;

use crate::error::{FsError, FsResult};
use crate::store::{self, SetTime, Staging, Store};

/// What a writable open reads, and what its staging starts from, while nothing is staged.
#[derive(Debug)]
enum Base {
    /// No entry: created by this open, or gone or hidden since the kernel's lookup. An empty
    /// file.
    Missing,
    /// The entry as opened, or as this open last published it.
    Entry(File),
    /// The entry, truncated at open (`O_TRUNC`): an empty file that keeps the entry's `user.*`
    /// attributes.
    Truncated(File),
}

/// Where an open is between its closes.
#[derive(Debug)]
enum Phase {
    /// Nothing staged: since the open, or since the last publish.
    Clean,
    /// Written since the open or the last close: the next close validates and publishes.
    Written { staging: Staging, times: Times },
    /// Staged content a close did not publish (invalid, too large, or its name was removed
    /// meanwhile): kept, so the writer may fix it; a close publishes again only after new
    /// writes.
    Kept(Staging),
    /// A write, truncate or publish failed with this errno: the staged content is gone, and
    /// nothing from this open is ever published.
    Failed(i32),
}

/// The times a publish gives the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Times {
    /// "now": the entry is fresh.
    Now,
    /// The ones the writer set on the staged content after its last write.
    Set,
}

/// What a close does (see [`WriteState::close`]).
#[derive(Debug)]
pub enum Close {
    /// An earlier write failed: answer its errno, publish nothing.
    Failed(i32),
    /// Nothing written since the open or the last close: publish nothing, succeed.
    Unwritten,
    /// Validate and publish this content, with these times.
    Publish { staging: Staging, times: Times },
}

/// The writer's side of a writable open of an entry: what it started from, what it staged.
#[derive(Debug)]
pub struct WriteState {
    base: Base,
    phase: Phase,
    /// `O_APPEND`: every write goes to the end of the staged content.
    append: bool,
    /// Permission bits and owner for newly published content.
    pub perm: u32,
    pub owner: Option<(u32, u32)>,
}

impl WriteState {
    /// An open for writing of an entry (`base`, if it exists and is shown). Nothing is staged
    /// yet: the entry stays as it is until a close after a write (SPEC §3: writes are staged).
    /// With `o_trunc` it reads as empty and its first write starts from empty; otherwise from
    /// the entry's content.
    pub fn open(
        base: Option<File>,
        o_trunc: bool,
        append: bool,
        perm: u32,
        owner: Option<(u32, u32)>,
    ) -> Self {
        let base = match base {
            None => Base::Missing,
            Some(file) if o_trunc => Base::Truncated(file),
            Some(file) => Base::Entry(file),
        };
        WriteState {
            base,
            phase: Phase::Clean,
            append,
            perm,
            owner,
        }
    }

    /// Whether the open found an entry (`O_CREAT | O_EXCL` then fails).
    pub fn has_entry(&self) -> bool {
        !matches!(self.base, Base::Missing)
    }

    /// The truncate to 0 that carries out this open's `O_TRUNC` (the kernel sends it after the
    /// open; see `CacheFs::truncate_of_fresh_open`). SPEC §3: "`O_TRUNC` at open is not a
    /// write": the entry is untouched and a close publishes nothing, but reads now see an
    /// empty file and the first write starts from empty. Taken only while nothing is staged;
    /// false otherwise (a write got there first: this is no `O_TRUNC`).
    pub fn truncate_at_open(&mut self) -> bool {
        if matches!(self.phase, Phase::Written { .. } | Phase::Kept(_)) {
            return false;
        }
        self.base = match mem::replace(&mut self.base, Base::Missing) {
            Base::Entry(file) => Base::Truncated(file),
            base => base,
        };
        true
    }

    /// A write of `data` at `offset` (SPEC §3): staged, unseen by anyone else until a close.
    /// The first one starts the staging from the base; with `O_APPEND` it goes to the end
    /// whatever the offset; past `max` bytes it fails with `EFBIG`. Any failure is
    /// [`WriteState::fail`]; after one, every write answers its errno.
    pub fn write(
        &mut self,
        store: &Store,
        key: &Path,
        offset: u64,
        data: &[u8],
        max: u64,
    ) -> FsResult<()> {
        let append = self.append;
        self.stage(store, key, |file| {
            let offset = if append {
                file.metadata()?.len()
            } else {
                offset
            };
            if offset.saturating_add(data.len() as u64) > max {
                return Err(FsError::warn(
                    libc::EFBIG,
                    "the entry would exceed max_entry_bytes",
                ));
            }
            file.write_all_at(data, offset)
                .map_err(|e| FsError::io(key.display(), e))
        })
    }

    /// A truncate (or extension) to `size` after the open, through it or of the entry's path:
    /// a write (SPEC §3), staged and validated at close like one. Past `max` bytes it fails
    /// with `EFBIG` (before anything is staged); after a failure it answers that errno.
    pub fn truncate(&mut self, store: &Store, key: &Path, size: u64, max: u64) -> FsResult<()> {
        if let Phase::Failed(e) = self.phase {
            return Err(FsError::errno(e));
        }
        if size > max {
            let err = FsError::warn(libc::EFBIG, "larger than max_entry_bytes");
            return Err(self.fail(store, key, err));
        }
        self.stage(store, key, |file| {
            file.set_len(size)
                .map_err(|e| FsError::io(key.display(), e))
        })
    }

    /// Times the writer sets on the open file (`futimens`, as `cp -a`, `tar x` and `rsync -a`
    /// do after writing) go to the staged content, and the next publish keeps them instead of
    /// "now" (SPEC §3). Only while written since the last close; otherwise false: they are for
    /// the entry as it is (`touch`).
    pub fn set_times(&mut self, atime: Option<SetTime>, mtime: Option<SetTime>) -> FsResult<bool> {
        let Phase::Written { staging, times } = &mut self.phase else {
            return Ok(false);
        };
        Store::set_file_times(&staging.file, atime, mtime)?;
        *times = Times::Set;
        Ok(true)
    }

    /// A close of a descriptor (SPEC §3). After a failure: its errno, nothing published.
    /// Nothing written since the open or the last close: nothing to publish, success. Else the
    /// staged content to validate and publish, with the times to give it: "now", unless the
    /// writer set them after its last write. The caller then reports what became of it:
    /// [`WriteState::published`], [`WriteState::keep`] or [`WriteState::fail`].
    pub fn close(&mut self) -> Close {
        match mem::replace(&mut self.phase, Phase::Clean) {
            Phase::Written { staging, times } => Close::Publish { staging, times },
            Phase::Failed(e) => {
                self.phase = Phase::Failed(e);
                Close::Failed(e)
            }
            unwritten => {
                self.phase = unwritten;
                Close::Unwritten
            }
        }
    }

    /// A close published the staged content as `published`: writing may go on from it (reads
    /// see it, the next write starts from it), and a later close publishes again (SPEC §3).
    pub fn published(&mut self, published: File) {
        self.base = Base::Entry(published);
        self.phase = Phase::Clean;
    }

    /// A close did not publish `staging`: it was invalid JSON or too large (that close fails,
    /// the entry stays as it was, SPEC §3), or the name was removed meanwhile. The content
    /// stays staged so the writer may fix it; the next close publishes only after new writes.
    pub fn keep(&mut self, staging: Staging) {
        self.phase = Phase::Kept(staging);
    }

    /// A write, truncate or publish failed (a full disk, an I/O error, too large): the staged
    /// content is incomplete, so it is removed, every later write, truncate and close answers
    /// the first failure's errno, and nothing from this open is ever published (SPEC §3).
    /// Returns `err`, to answer now.
    pub fn fail(&mut self, store: &Store, key: &Path, err: FsError) -> FsError {
        match mem::replace(&mut self.phase, Phase::Failed(err.errno)) {
            Phase::Failed(first) => self.phase = Phase::Failed(first),
            Phase::Written { staging, .. } | Phase::Kept(staging) => store.discard(staging),
            Phase::Clean => {}
        }
        warn!(key = %key.display(), errno = err.errno, "write failed: {}; nothing from this open will be published", err.message);
        FsError::new(err.errno, err.message)
    }

    /// The last close of the open: staged data is dropped (SPEC §3). Returns it, to discard.
    pub fn release(&mut self) -> Option<Staging> {
        match mem::replace(&mut self.phase, Phase::Clean) {
            Phase::Written { staging, .. } | Phase::Kept(staging) => Some(staging),
            phase => {
                self.phase = phase;
                None
            }
        }
    }

    /// The file reads through this open are served from: its staged content if any, else its
    /// base (`None`: an empty file).
    pub fn current(&self) -> Option<&File> {
        match (&self.phase, &self.base) {
            (Phase::Written { staging, .. } | Phase::Kept(staging), _) => Some(&staging.file),
            (_, Base::Entry(file)) => Some(file),
            _ => None,
        }
    }

    /// The staged content, if any (for `fsync`).
    pub fn staged(&self) -> Option<&File> {
        match &self.phase {
            Phase::Written { staging, .. } | Phase::Kept(staging) => Some(&staging.file),
            _ => None,
        }
    }

    /// Apply `change` to the staged content, staging it first if nothing is: the new phase is
    /// written, with "now" for times (a write after the writer set them resets them, SPEC §3).
    fn stage(
        &mut self,
        store: &Store,
        key: &Path,
        change: impl FnOnce(&File) -> FsResult<()>,
    ) -> FsResult<()> {
        let staging = match mem::replace(&mut self.phase, Phase::Clean) {
            Phase::Failed(e) => {
                self.phase = Phase::Failed(e);
                return Err(FsError::errno(e));
            }
            Phase::Written { staging, .. } | Phase::Kept(staging) => staging,
            Phase::Clean => match self.new_staging(store, key) {
                Ok(staging) => staging,
                Err(e) => return Err(self.fail(store, key, FsError::io(key.display(), e))),
            },
        };
        let changed = change(&staging.file);
        self.phase = Phase::Written {
            staging,
            times: Times::Now,
        };
        changed.map_err(|e| self.fail(store, key, e))
    }

    /// A staging file beside `key`, starting as the base: its `user.*` attributes (the entry is
    /// replaced by rename, they must come along) and, unless truncated, its content.
    fn new_staging(&self, store: &Store, key: &Path) -> std::io::Result<Staging> {
        let staging = store.create_staging(store::split(key).0, self.perm)?;
        if let Some((uid, gid)) = self.owner {
            // Best effort: only root may give files away.
            let _ = std::os::unix::fs::fchown(&staging.file, Some(uid), Some(gid));
        }
        match &self.base {
            Base::Missing => {}
            Base::Truncated(base) => store::copy_user_xattrs(base, &staging.file),
            Base::Entry(base) => {
                store::copy_user_xattrs(base, &staging.file);
                if let Err(e) = store::copy_contents(base, &staging.file) {
                    store.discard(staging);
                    return Err(e);
                }
            }
        }
        Ok(staging)
    }
}

#[cfg(test)]
mod tests;
