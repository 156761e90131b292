//! Unit tests that look inside a `Cachetta`: that the hot set is really what answers.

use std::sync::Arc;

use super::*;

#[test]
fn unchanged_entry_is_served_from_the_hot_set() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("x.json")).lru_size(4);
    cache.write(&1).unwrap();
    let path = cache.entry_path();
    let hot = cache.hot.clone().unwrap();
    assert_eq!(hot.len(), 1, "a write keeps what it wrote");
    // Swap the kept bytes for the same file version: a read that answers 2 came from memory.
    let version = disk::meta(&path).unwrap().unwrap().version;
    hot.put(path.clone(), Arc::from(&b"2"[..]), version);
    assert_eq!(cache.read::<i32>().unwrap(), Some(2));
    // Clones share it; `lru_size` on a clone makes a new one.
    assert_eq!(cache.clone().read::<i32>().unwrap(), Some(2));
    assert_eq!(cache.clone().lru_size(4).read::<i32>().unwrap(), Some(1));
}

#[test]
fn invalidate_and_clear_force_drop_kept_copies() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("f")).lru_size(4);
    cache.cached(&("a",), || 1).unwrap();
    cache.at(&("b",)).unwrap().write(&2).unwrap();
    let hot = cache.hot.clone().unwrap();
    assert_eq!(hot.len(), 2);
    cache.at(&("a",)).unwrap().invalidate().unwrap();
    assert_eq!(hot.len(), 1);
    cache.clear_force().unwrap();
    assert_eq!(hot.len(), 0);
}

#[test]
fn hot_set_keeps_at_most_lru_size_entries() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("f")).lru_size(2);
    for i in 0..5 {
        cache.cached(&(i,), move || i).unwrap();
    }
    assert_eq!(cache.hot.as_ref().unwrap().len(), 2);
}
