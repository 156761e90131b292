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
    assert_eq!(hot.usage().0, 1, "a write keeps what it wrote");
    // Swap the kept bytes for the same file version: a read that answers 2 came from memory.
    let version = disk::meta(&path).unwrap().unwrap().version();
    hot.insert(path.clone(), version, Arc::from(&b"2"[..]));
    assert_eq!(cache.read::<i32>().unwrap(), Some(2));
    // Clones share it; `lru_size` on a clone makes a new one.
    assert_eq!(cache.clone().read::<i32>().unwrap(), Some(2));
    assert_eq!(cache.clone().lru_size(4).read::<i32>().unwrap(), Some(1));
}

#[test]
fn a_kept_copy_is_never_served_for_a_removed_or_rewritten_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("x.json")).lru_size(4);
    cache.write(&1).unwrap();
    assert_eq!(cache.read::<i32>().unwrap(), Some(1));
    cache.invalidate().unwrap();
    let hot = cache.hot.clone().unwrap();
    assert_eq!(
        hot.usage(),
        (0, 0),
        "invalidate drops the kept copy (SPEC §7)"
    );
    assert_eq!(cache.read::<i32>().unwrap(), None);
    std::fs::write(dir.path().join("x.json"), "3").unwrap();
    assert_eq!(cache.read::<i32>().unwrap(), Some(3));
}

#[test]
fn hot_set_keeps_nothing_over_a_quarter_of_lru_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("f"))
        .lru_size(8)
        .lru_bytes(40);
    cache.at(&("small",)).unwrap().write(&"0123456").unwrap();
    cache.at(&("large",)).unwrap().write(&"0123456789").unwrap();
    assert_eq!(cache.hot.as_ref().unwrap().usage(), (1, 9));
}

#[test]
fn hot_set_keeps_at_most_lru_size_entries() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("f")).lru_size(2);
    for i in 0..5 {
        cache.cached(&(i,), move || i).unwrap();
    }
    assert_eq!(cache.hot.as_ref().unwrap().usage().0, 2);
}

#[test]
fn background_refreshes_share_a_bounded_pool() {
    use crate::clock::ManualClock;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant, SystemTime};

    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let minute = Duration::from_secs(60);
    let cache = Cachetta::new(dir.path().join("pool"))
        .clock(clock.clone())
        .duration(minute)
        .stale_duration(minute);
    let keys = 3 * super::cached::BACKGROUND_REFRESHES;
    for key in 0..keys {
        cache.at(&(key,)).unwrap().write(&0).unwrap();
    }
    clock.advance(minute + Duration::from_secs(1));
    let (running, most, done) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    for key in 0..keys {
        let (running, most, done) = (running.clone(), most.clone(), done.clone());
        let stale = cache
            .cached(&(key,), move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
                running.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
                1
            })
            .unwrap();
        assert_eq!(stale, 0, "a stale entry answers at once");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::SeqCst) < keys {
        assert!(
            Instant::now() < deadline,
            "the background refreshes never ended"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let most = most.load(Ordering::SeqCst);
    assert!(
        (1..=super::cached::BACKGROUND_REFRESHES).contains(&most),
        "{most} ran at once"
    );
    // `done` counts computations, which end just before their value is published.
    for key in 0..keys {
        while cache.at(&(key,)).unwrap().read::<i32>().unwrap() != Some(1) {
            assert!(
                Instant::now() < deadline,
                "key {key} never got its new value"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn a_panicking_background_refresh_shows_in_info_and_the_stale_value_stays() {
    use crate::clock::ManualClock;
    use std::time::{Duration, Instant, SystemTime};

    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let minute = Duration::from_secs(60);
    let cache = Cachetta::new(dir.path().join("p.json"))
        .clock(clock.clone())
        .duration(minute)
        .stale_duration(minute);
    cache.write(&1).unwrap();
    clock.advance(minute + Duration::from_secs(1));
    let got: i32 = cache.cached(&(), || panic!("upstream down")).unwrap();
    assert_eq!(got, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while cache.info().refreshing {
        assert!(Instant::now() < deadline, "the refresh never ended");
        std::thread::sleep(Duration::from_millis(5));
    }
    let error = cache
        .info()
        .refresh_error
        .expect("the panic is the refresh error");
    assert!(error.contains("upstream down"), "{error}");
    assert_eq!(cache.at(&()).unwrap().info().state, Some(InfoState::Stale));
}
