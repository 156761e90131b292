//! The inode table: stable FUSE inode numbers for names in the backing dir.
//!
//! An inode stands for a *name* (parent inode + file name), not for a backing inode: entries
//! are replaced by rename on every write, and the kernel must keep seeing one file. Inode
//! numbers are never reused, so generation is always 0. Nodes live while the kernel holds a
//! lookup reference (`forget` drops them).
//!
//! A node whose name was taken over by another node (a rename onto it, a rotation) is
//! *replaced*: it still resolves to its name, so a process that looked the name up a moment
//! before the replace opens the new content instead of failing. Only a removed node (`rm`,
//! `rmdir`) resolves to nothing.

use foldhash::{HashMap, HashMapExt};
use std::ffi::{OsStr, OsString};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::store::Kind;

pub const ROOT: u64 = 1;

#[derive(Debug)]
struct Node {
    parent: u64,
    name: OsString,
    /// True once the name was removed (`rm`, `rmdir`).
    removed: bool,
    kind: Kind,
    lookups: u64,
}

#[derive(Debug)]
pub struct Nodes {
    map: HashMap<u64, Node>,
    /// hashbrown's map, so a name is looked up by reference ([`Name`]) without copying it:
    /// a listing of 10,000 entries looks up every one of them.
    names: hashbrown::HashMap<(u64, OsString), u64>,
    next: u64,
}

/// A (parent, name) key borrowed, for lookups in `names`. Hashes as the owned key does.
struct Name<'a>(u64, &'a OsStr);

impl Hash for Name<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.0, self.1).hash(state);
    }
}

impl hashbrown::Equivalent<(u64, OsString)> for Name<'_> {
    fn equivalent(&self, key: &(u64, OsString)) -> bool {
        self.0 == key.0 && self.1 == key.1.as_os_str()
    }
}

impl Default for Nodes {
    fn default() -> Self {
        let mut map = HashMap::new();
        map.insert(
            ROOT,
            Node {
                parent: ROOT,
                name: OsString::new(),
                removed: false,
                kind: Kind::Dir,
                lookups: 1,
            },
        );
        Nodes {
            map,
            names: hashbrown::HashMap::new(),
            next: ROOT + 1,
        }
    }
}

impl Nodes {
    /// Path of a node relative to the backing root; `None` if unknown or removed.
    pub fn path(&self, ino: u64) -> Option<PathBuf> {
        let mut parts = Vec::new();
        let mut at = ino;
        while at != ROOT {
            let node = self.map.get(&at)?;
            if node.removed {
                return None;
            }
            parts.push(node.name.as_os_str());
            at = node.parent;
        }
        let mut path = PathBuf::new();
        for part in parts.iter().rev() {
            path.push(part);
        }
        Some(path)
    }

    /// The inode bound to `name` in `parent`, if any, without taking a reference.
    /// The names bound under `parent` (a walk of every name: for the watcher's occasional
    /// listing of a changed directory, not for requests).
    pub fn children(&self, parent: u64) -> impl Iterator<Item = OsString> + '_ {
        self.names
            .keys()
            .filter(move |(p, _)| *p == parent)
            .map(|(_, name)| name.clone())
    }

    pub fn find(&self, parent: u64, name: &OsStr) -> Option<u64> {
        self.names.get(&Name(parent, name)).copied()
    }

    /// Bind `name` in `parent` to an inode (reusing the existing one) and take one lookup
    /// reference, as every successful entry reply to the kernel does.
    pub fn bind(&mut self, parent: u64, name: &OsStr, kind: Kind) -> u64 {
        if let Some(&ino) = self.names.get(&Name(parent, name)) {
            if let Some(node) = self.map.get_mut(&ino) {
                if node.kind == kind {
                    node.lookups += 1;
                    return ino;
                }
                // A file became a directory (or the reverse) behind our back: new inode.
            }
        }
        let ino = self.next;
        self.next += 1;
        self.map.insert(
            ino,
            Node {
                parent,
                name: name.to_os_string(),
                removed: false,
                kind,
                lookups: 1,
            },
        );
        self.names.insert((parent, name.to_os_string()), ino);
        ino
    }

    /// The name was removed: its node keeps serving open handles until forgotten.
    /// The name is gone; returns the node it was bound to.
    pub fn remove(&mut self, parent: u64, name: &OsStr) -> Option<u64> {
        let ino = self.names.remove(&Name(parent, name))?;
        if let Some(node) = self.map.get_mut(&ino) {
            node.removed = true;
        }
        Some(ino)
    }

    /// The name's content moved on: the next lookup gets a fresh node, while this one keeps
    /// resolving to the name for whoever still holds it. Returns that node.
    pub fn replace(&mut self, parent: u64, name: &OsStr) -> Option<u64> {
        self.names.remove(&Name(parent, name))
    }

    /// `from` was renamed to `to`; whatever `to` named before is replaced, and its node
    /// returned.
    pub fn rename(&mut self, from: (u64, &OsStr), to: (u64, &OsStr)) -> Option<u64> {
        let replaced = self.replace(to.0, to.1);
        if let Some(ino) = self.names.remove(&Name(from.0, from.1)) {
            if let Some(node) = self.map.get_mut(&ino) {
                node.parent = to.0;
                node.name = to.1.to_os_string();
            }
            self.names.insert((to.0, to.1.to_os_string()), ino);
        }
        replaced
    }

    /// The kernel dropped `n` lookup references; true when the node is gone.
    pub fn forget(&mut self, ino: u64, n: u64) -> bool {
        if ino == ROOT {
            return false;
        }
        let Some(node) = self.map.get_mut(&ino) else {
            return false;
        };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups > 0 {
            return false;
        }
        let node = self.map.remove(&ino).expect("present");
        let key = (node.parent, node.name);
        if self.names.get(&key) == Some(&ino) {
            self.names.remove(&key);
        }
        true
    }

    /// The inode bound to a path relative to the root, walking known names only.
    pub fn resolve(&self, rel: &Path) -> Option<u64> {
        let mut at = ROOT;
        for part in rel.components() {
            at = self.find(at, part.as_os_str())?;
        }
        Some(at)
    }

    /// Every bound name and every inode, for a full invalidation.
    pub fn everything(&self) -> (Vec<(u64, OsString)>, Vec<u64>) {
        (
            self.names.keys().cloned().collect(),
            self.map.keys().copied().collect(),
        )
    }

    /// The (parent, name) that `ino` resolves to, bound or replaced (not removed).
    pub fn name_of(&self, ino: u64) -> Option<(u64, OsString)> {
        let node = self.map.get(&ino).filter(|n| !n.removed)?;
        Some((node.parent, node.name.clone()))
    }

    /// The (parent, name) that `ino` is currently bound to, if any.
    pub fn bound_name(&self, ino: u64) -> Option<(u64, OsString)> {
        let node = self.map.get(&ino)?;
        let key = (node.parent, node.name.clone());
        (self.names.get(&key) == Some(&ino)).then_some(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_renames_of_parent_directories() {
        let mut nodes = Nodes::default();
        let dir = nodes.bind(ROOT, OsStr::new("a"), Kind::Dir);
        let file = nodes.bind(dir, OsStr::new("x.json"), Kind::File);
        assert_eq!(nodes.path(file), Some(PathBuf::from("a/x.json")));
        nodes.rename((ROOT, OsStr::new("a")), (ROOT, OsStr::new("b")));
        assert_eq!(nodes.path(file), Some(PathBuf::from("b/x.json")));
    }

    #[test]
    fn the_same_name_keeps_its_inode_and_counts_lookups() {
        let mut nodes = Nodes::default();
        let a = nodes.bind(ROOT, OsStr::new("x.json"), Kind::File);
        let b = nodes.bind(ROOT, OsStr::new("x.json"), Kind::File);
        assert_eq!(a, b);
        nodes.forget(a, 1);
        assert_eq!(nodes.find(ROOT, OsStr::new("x.json")), Some(a));
        nodes.forget(a, 1);
        assert_eq!(nodes.find(ROOT, OsStr::new("x.json")), None);
        assert_eq!(nodes.len(), 1);
    }

    #[test]
    fn removed_nodes_have_no_path_and_replaced_ones_keep_their_name() {
        let mut nodes = Nodes::default();
        let a = nodes.bind(ROOT, OsStr::new("a.json"), Kind::File);
        let b = nodes.bind(ROOT, OsStr::new("b.json"), Kind::File);
        nodes.rename((ROOT, OsStr::new("a.json")), (ROOT, OsStr::new("b.json")));
        assert_eq!(nodes.path(b), Some(PathBuf::from("b.json")));
        assert_eq!(nodes.find(ROOT, OsStr::new("b.json")), Some(a));
        assert_eq!(nodes.path(a), Some(PathBuf::from("b.json")));
        nodes.remove(ROOT, OsStr::new("b.json"));
        assert_eq!(nodes.path(a), None);
        assert_eq!(nodes.path(b), Some(PathBuf::from("b.json")));
    }
}
