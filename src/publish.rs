//! Publishing an entry: the one way new content becomes a key (SPEC §3, §12, §13). The mount's
//! writes, a scratch file renamed onto an entry, refreshes and the library all come here. The
//! content is checked (one JSON value within `max_entry_bytes`), takes the entry's policy
//! attributes, and replaces the entry atomically, under the key's lock ([`Store::lock_key`]).
//! A change of the entry's policy attributes through the mount takes that lock too, so a
//! policy set while new content was on its way is never undone by its publish.
//!
//! What the publisher learns (the published version, valid, with its policy) is handed back
//! as [`Published`], so the mount need not read again what it has just checked.

use std::fs::File;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use rustix::fs::{Mode, OFlags};

use crate::entry_policy::{self, EntryPolicy};
use crate::store::{self, Judged, Staging, Store, Version};

/// Why content was refused as an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotJson,
    TooLarge,
}

impl Refusal {
    /// The errno the writer's `close` (or `rename`) answers.
    pub fn errno(self) -> i32 {
        match self {
            Refusal::NotJson => libc::EINVAL,
            Refusal::TooLarge => libc::EFBIG,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NotJson => "not valid JSON",
            Refusal::TooLarge => "larger than max_entry_bytes",
        }
    }
}

/// Content that cannot become the entry: refused, or it could not be read.
#[derive(Debug)]
pub enum Unfit {
    Refused(Refusal),
    Io(io::Error),
}

impl From<io::Error> for Unfit {
    fn from(e: io::Error) -> Self {
        Unfit::Io(e)
    }
}

/// Whether `file` may be an entry: one JSON value in UTF-8, within `max_bytes`.
pub fn check(file: &File, max_bytes: u64) -> Result<(), Unfit> {
    check_sized(file, max_bytes, None)
}

/// [`check`] of a file whose size is known already (one `statx` fewer).
fn check_sized(file: &File, max_bytes: u64, size: Option<u64>) -> Result<(), Unfit> {
    match store::file_is_valid_json_sized(file, max_bytes, size) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Unfit::Refused(Refusal::NotJson)),
        Err(e) if e.raw_os_error() == Some(libc::EFBIG) => Err(Unfit::Refused(Refusal::TooLarge)),
        Err(e) => Err(Unfit::Io(e)),
    }
}

/// Staged content that passed [`check`]: the only content [`publish_entry`] takes.
#[derive(Debug)]
pub struct Checked(Staging);

impl Checked {
    /// Check `staging`; when it is unfit, it comes back with why.
    pub fn check(staging: Staging, max_bytes: u64) -> Result<Checked, (Staging, Unfit)> {
        match check(&staging.file, max_bytes) {
            Ok(()) => Ok(Checked(staging)),
            Err(unfit) => Err((staging, unfit)),
        }
    }

    /// Content the caller serialized itself with serde_json (the library's writes): JSON by
    /// construction, so not parsed again.
    pub(crate) fn serialized(staging: Staging) -> Checked {
        Checked(staging)
    }

    /// The checked content, for a `condition` to read before it is published.
    pub fn file(&self) -> &File {
        &self.0.file
    }

    /// Give the staging file back, to be discarded.
    pub fn into_staging(self) -> Staging {
        self.0
    }
}

/// Whose policy attributes (SPEC §12) the new content carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyFrom {
    /// The entry's, as they are at the publish: content written or refreshed for the key
    /// (its staging file began with a copy of the entry's `user.*` attributes). A policy set or
    /// removed meanwhile is not undone.
    Entry,
    /// Its own, and the entry's where it has none: a file renamed onto the entry, which brings
    /// its own attributes.
    OwnFirst,
}

/// What a publish put at the key.
#[derive(Debug)]
pub struct Published {
    /// The published file, still open.
    pub file: File,
    /// Its version as published; `None` only if it could not be `fstat`-ed.
    pub version: Option<Version>,
    /// The policy attributes it carries.
    pub policy: EntryPolicy,
}

/// Publish checked content as `key` with mtime `mtime` (`None`: the times it has). Readers
/// see the old entry or the new one, never a mix; on an error nothing was published and no
/// staging file stays behind.
pub fn publish_entry(
    store: &Store,
    content: Checked,
    key: &Path,
    mtime: Option<SystemTime>,
    policy_from: PolicyFrom,
) -> io::Result<Published> {
    let mut staging = content.0;
    let _key = store.lock_key(key);
    let (policy, replaced) = take_policy(store, key, &staging.file, policy_from);
    // What the other mounts learn through the journal: they need not read it again (§13).
    staging.judged = Some(Judged {
        valid: true,
        policy: Some(policy.overrides()),
    });
    let file = store.publish(staging, key, mtime)?;
    if let Some(replaced) = replaced {
        store.close_later(replaced);
    }
    let version = Store::fstat(&file).ok().map(|st| st.version());
    Ok(Published {
        file,
        version,
        policy,
    })
}

/// Rename the file `from` (not a staging file: a scratch file, or another entry) onto the
/// entry name `to`, once checked. It keeps its own policy attributes and takes the entry's
/// where it has none.
pub fn rename_onto(
    store: &Store,
    from: &Path,
    to: &Path,
    noreplace: bool,
    max_bytes: u64,
) -> Result<Published, Unfit> {
    let (file, st) = store.open_file(from, OFlags::RDONLY, Mode::empty())?;
    check_sized(&file, max_bytes, Some(st.size))?;
    let _key = store.lock_key(to);
    let (policy, replaced) = take_policy(store, to, &file, PolicyFrom::OwnFirst);
    store.settle(&file)?;
    match noreplace {
        true => store.rename(from, to, true)?,
        false => store.rename_onto_entry(from, to)?,
    }
    if let Some(replaced) = replaced {
        store.close_later(replaced);
    }
    // The rename changed its ctime, so the version is taken now, of the file itself.
    let version = Store::fstat(&file).ok().map(|now| now.version());
    Ok(Published {
        file,
        version,
        policy,
    })
}

/// Give `file`, about to become the entry `key`, its policy attributes; returns them, and the
/// entry it replaces, open: kept so until the publish is done, the file's blocks are not freed
/// inside it (see [`Store::close_later`]). Not on a network filesystem: an NFS client renames
/// a file it still has open out of the way (`.nfsXXXX`) instead of replacing it, a round trip
/// more, and the server frees the blocks anyway. Best effort, like every attribute copy.
fn take_policy(
    store: &Store,
    key: &Path,
    file: &File,
    from: PolicyFrom,
) -> (EntryPolicy, Option<File>) {
    let entry = store
        .open_file(key, OFlags::RDONLY, Mode::empty())
        .ok()
        .map(|(entry, _)| entry);
    if let Some(entry) = &entry {
        match from {
            PolicyFrom::Entry => entry_policy::follow(entry, file),
            PolicyFrom::OwnFirst => entry_policy::carry(entry, file),
        }
    }
    (
        EntryPolicy::of_file(file),
        entry.filter(|_| !store.is_remote()),
    )
}
