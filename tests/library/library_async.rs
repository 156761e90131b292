//! The async API (feature `tokio`): the same behaviour as the sync one, with file I/O on the
//! blocking pool, and one computation per key shared by async and sync callers alike.
#![cfg(feature = "tokio")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cachetta::clock::ManualClock;
use cachetta::{Cachetta, InfoState};
use serde_json::{json, Value};

const MINUTE: Duration = Duration::from_secs(60);

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn write_async_then_read_async_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("a/x.json"));
    assert_eq!(cache.read_async::<Value>().await.unwrap(), None);
    cache.write_async(&json!({"k": [1, 2]})).await.unwrap();
    assert_eq!(
        cache.read_async::<Value>().await.unwrap(),
        Some(json!({"k": [1, 2]}))
    );
    assert!(cache.exists_async().await);
    assert!(cache.age_async().await.unwrap() < MINUTE);
    assert_eq!(cache.info_async().await.state, Some(InfoState::Fresh));
    cache.invalidate_async().await.unwrap();
    assert!(!cache.exists_async().await);
}

#[tokio::test]
async fn clear_async_keeps_fresh_entries_and_clear_force_async_removes_all() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("f"));
    cache.cached_async(&("a",), || async { 1 }).await.unwrap();
    cache.clear_async().await.unwrap();
    assert!(cache.at(&("a",)).unwrap().exists_async().await);
    cache.clear_force_async().await.unwrap();
    assert!(!dir.path().join("f").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cached_async_calls_on_one_key_compute_once() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("slow.json"));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (cache, calls) = (cache.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .cached_async(&("k",), move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "v".to_string()
                })
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "v");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_and_async_callers_share_one_computation() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("mixed.json"));
    let calls = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let leader = {
        let (cache, calls) = (cache.clone(), calls.clone());
        tokio::spawn(async move {
            cache
                .cached_async(&(), move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    started_tx.send(()).unwrap();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    1
                })
                .await
                .unwrap()
        })
    };
    started_rx.await.unwrap();
    let sync_caller = {
        let (cache, calls) = (cache.clone(), calls.clone());
        std::thread::spawn(move || {
            cache
                .cached(&(), move || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    2
                })
                .unwrap()
        })
    };
    assert_eq!(leader.await.unwrap(), 1);
    assert_eq!(
        tokio::task::spawn_blocking(move || sync_caller.join().unwrap())
            .await
            .unwrap(),
        1
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_does_not_cancel_the_computation() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("shield.json"));
    let gave_up = tokio::time::timeout(
        Duration::from_millis(50),
        cache.cached_async(&(), || async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            7
        }),
    )
    .await;
    assert!(gave_up.is_err());
    let later = cache.cached_async(&(), || async { 8 }).await.unwrap();
    assert_eq!(later, 7, "the running computation is joined, not restarted");
    assert_eq!(cache.read_async::<i32>().await.unwrap(), Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entry_is_served_and_refreshed_in_a_background_task() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ));
    let cache = Cachetta::new(dir.path().join("s.json"))
        .clock(clock.clone())
        .duration(MINUTE)
        .stale_duration(MINUTE);
    cache.write_async(&1).await.unwrap();
    clock.advance(MINUTE * 3 / 2);
    let calls = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let calls = calls.clone();
        let got = cache
            .cached_async(&(), move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                2
            })
            .await
            .unwrap();
        assert_eq!(got, 1);
    }
    eventually("the background refresh", || {
        cache.read::<i32>().unwrap() == Some(2)
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn failed_async_computation_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cachetta::new(dir.path().join("f.json"));
    let got: anyhow::Result<i32> = cache
        .try_cached_async(&(), || async { Err(anyhow::anyhow!("nope")) })
        .await;
    assert!(got.is_err());
    assert!(!cache.exists_async().await);
    assert_eq!(
        cache.info_async().await.refresh_error.as_deref(),
        Some("nope")
    );
}
