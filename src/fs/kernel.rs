//! What the kernel is told, and changes made behind the mount's back: inodes pinned to old
//! content move on, and attribute hints go to the kernel (never waited for; see
//! `crate::invalidate`).

use super::*;

impl CacheFs {
    /// Hint to the kernel that `ino`'s attributes changed. Never waited for.
    pub(super) fn invalidate_attributes(&self, ino: u64) {
        if let Some(invalidator) = self.invalidator.get() {
            invalidator.attributes(ino);
        }
    }

    /// The name of `ino` now holds other content while `ino` is pinned to the old one: the
    /// name moves to a fresh inode at its next lookup. A process whose kernel entry for the
    /// name has expired (every name being written, and every name within a second) finds the
    /// fresh inode; holders of `ino` keep reading the old content whole.
    pub(super) fn rotate(&self, ino: u64) {
        if self.coherence.is_live(ino) {
            // Its next open reads the name's new content anyway.
            return;
        }
        let mut nodes = self.nodes.write();
        if let Some((parent, name)) = nodes.bound_name(ino) {
            nodes.replace(parent, &name);
        }
    }

    /// `ino`'s content or attributes changed under it: its kept copy goes (SPEC §7).
    pub(super) fn content_changed(&self, ino: u64) {
        self.hot.forget(&ino);
        let pinned = self.pins.lock().get(ino).is_some();
        if pinned {
            self.rotate(ino);
        }
        self.invalidate_attributes(ino);
    }

    /// Something at `rel` (relative to the backing root) changed behind the mount's back
    /// (another program, or a refresh that published): pinned inodes move on, and the kernel
    /// is told the attributes of the directory and the file changed.
    pub fn backing_changed(&self, rel: &Path) {
        // No listing taken before this is reused (`dir::Snapshot`).
        self.store.note_change();
        let (parent_rel, name) = store::split(rel);
        let (parent, child) = {
            let nodes = self.nodes.read();
            let Some(parent) = nodes.resolve(parent_rel) else {
                return;
            };
            (parent, nodes.find(parent, name))
        };
        self.invalidate_attributes(parent);
        if let Some(child) = child {
            self.content_changed(child);
        }
    }

    /// The watcher saw the name `rel` go: its directory's listing no longer has it (with the
    /// inode it had, when known), or another mount removed it. Until a stat by that name finds
    /// another inode, or a listing has the name with that inode again, the inode the
    /// filesystem's client still answers with for it is not shown (see `gone` in `CacheFs`).
    pub fn backing_gone(&self, rel: &Path, ino: Option<u64>) {
        let ino = match ino {
            Some(ino) => ino,
            // What the client answers for the name now, if anything, is what went.
            None => match self.store.stat(rel) {
                Ok(st) => st.ino,
                Err(_) => return,
            },
        };
        {
            let mut gone = self.gone.lock();
            if gone.len() >= GONE_REMEMBERED {
                gone.clear();
            }
            gone.insert(rel.to_path_buf(), (ino, self.clock.now()));
        }
        self.backing_changed(rel);
    }

    /// A listing of `rel`'s directory has the name, holding `ino`: if that is the file seen
    /// gone from it, it is back (renamed back, say).
    pub fn backing_listed(&self, rel: &Path, ino: u64) {
        let mut gone = self.gone.lock();
        if gone.get(rel).is_some_and(|(gone_ino, _)| *gone_ino == ino) {
            gone.remove(rel);
        }
    }

    /// The watcher listed the directory `dir` (`listed` says which inode each name there holds):
    /// an entry name the kernel was given under it that the listing does not have is gone,
    /// whatever the filesystem's client still answers for it (see `gone` in `CacheFs`).
    pub fn backing_dir_listed(&self, dir: &Path, listed: impl Fn(&OsStr) -> Option<u64>) {
        let missing: Vec<std::ffi::OsString> = {
            let nodes = self.nodes.read();
            let Some(parent) = nodes.resolve(dir) else {
                return;
            };
            nodes
                .children(parent)
                .filter(|name| store::is_entry_name(name) && listed(name).is_none())
                .collect()
        };
        for name in missing {
            let rel = dir.join(&name);
            if !self.gone.lock().contains_key(&rel) {
                self.backing_gone(&rel, None);
            }
        }
    }

    /// Whether `st`, found at `rel` by name, is a file the watcher saw go from that name. A
    /// different file there means the name was reused: forgotten.
    pub(super) fn is_gone(&self, rel: &Path, st: &Stat) -> bool {
        let mut gone = self.gone.lock();
        match gone.get(rel) {
            // Changed no later than it was seen gone: that file. (A file made since on the
            // freed inode number has a later ctime: renaming a file onto a name sets it.)
            Some(&(ino, at)) if ino == st.ino && st.ctime <= at => true,
            Some(_) => {
                gone.remove(rel);
                false
            }
            None => false,
        }
    }

    /// Whether the change the watcher saw at `rel` is one this mount made itself: a file we
    /// published (same device, inode, size and times). It needs no telling: the kernel saw it
    /// happen.
    pub fn is_own_change(&self, rel: &Path) -> bool {
        self.store
            .stat(rel)
            .is_ok_and(|st| self.published.lock().contains(&st.version()))
    }

    /// Remember a version this mount published, for [`CacheFs::is_own_change`].
    pub(super) fn remember_published(&self, version: Version) {
        let mut published = self.published.lock();
        if published.len() >= PUBLISHED_REMEMBERED {
            published.pop_front();
        }
        published.push_back(version);
    }

    /// Events were lost: every pinned inode moves on and every attribute is suspect.
    pub fn backing_changed_everywhere(&self) {
        self.store.note_change();
        let (_, inodes) = self.nodes.read().everything();
        for ino in inodes {
            self.content_changed(ino);
        }
    }
}
