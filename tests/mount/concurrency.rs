//! Concurrent replaces never make a reader fail: entries visible before and after a replace
//! are read whole, old or new, with no `ENOENT`, `ESTALE` or `EIO`.

use std::collections::HashSet;
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const KEYS: usize = 3;
const WRITERS: usize = 4;
const READERS: usize = 4;
const RUN_FOR: Duration = Duration::from_secs(3);

fn key(k: usize) -> String {
    format!("k{k}.json")
}

/// A value that spans several pages, so a mixed read cannot look whole.
fn value(k: usize, writer: usize, n: usize) -> String {
    let pad = char::from(b'a' + (writer as u8))
        .to_string()
        .repeat(5000 + 997 * (n % 13));
    format!("{{\"key\":{k},\"writer\":{writer},\"n\":{n},\"pad\":\"{pad}\"}}")
}

#[test]
fn readers_never_fail_or_see_mixed_entries_during_concurrent_replaces() {
    if !require_fuse() {
        return;
    }
    let mut b = Mount::new();
    // Every value a reader may see, per key; a value is added before it is written.
    let written: Arc<Vec<Mutex<HashSet<String>>>> =
        Arc::new((0..KEYS).map(|_| Mutex::new(HashSet::new())).collect());
    for k in 0..KEYS {
        let v = value(k, 9, 0);
        written[k].lock().unwrap().insert(v.clone());
        b = b.backing_file(key(k), v);
    }
    let m = Arc::new(b.start());
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let writes = Arc::new(AtomicUsize::new(0));

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (m, written, stop, writes) = (m.clone(), written.clone(), stop.clone(), writes.clone());
        writers.push(thread::spawn(move || -> Vec<String> {
            let mut errors = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let k = (w + n) % KEYS;
                let v = value(k, w, n);
                written[k].lock().unwrap().insert(v.clone());
                let result = if n % 2 == 0 {
                    fs::write(m.path(key(k)), &v)
                } else {
                    let tmp = m.path(format!("{}.tmp.{w}.{n}", key(k)));
                    fs::write(&tmp, &v).and_then(|()| fs::rename(&tmp, m.path(key(k))))
                };
                match result {
                    Ok(()) => {
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.push(format!("writer {w} #{n} on {}: {e}", key(k))),
                }
            }
            errors
        }));
    }

    let mut readers = Vec::new();
    for r in 0..READERS {
        let (m, written, stop, reads) = (m.clone(), written.clone(), stop.clone(), reads.clone());
        readers.push(thread::spawn(move || -> Vec<String> {
            let mut errors = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let k = (r + i) % KEYS;
                match fs::read(m.path(key(k))) {
                    Err(e) => errors.push(format!("reader {r} on {}: {e}", key(k))),
                    Ok(bytes) => {
                        reads.fetch_add(1, Ordering::Relaxed);
                        if serde_json::from_slice::<serde_json::Value>(&bytes).is_err() {
                            errors.push(format!(
                                "reader {r} on {}: invalid JSON ({} bytes)",
                                key(k),
                                bytes.len()
                            ));
                        } else {
                            let text = String::from_utf8(bytes).unwrap();
                            if !written[k].lock().unwrap().contains(&text) {
                                errors.push(format!(
                                    "reader {r} on {}: a value never written: {}...",
                                    key(k),
                                    &text[..80.min(text.len())]
                                ));
                            }
                        }
                    }
                }
            }
            errors
        }));
    }

    let start = Instant::now();
    thread::sleep(RUN_FOR);
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for t in writers.into_iter().chain(readers) {
        errors.extend(t.join().expect("thread panicked"));
    }
    let elapsed = start.elapsed();

    let (reads, writes) = (
        reads.load(Ordering::Relaxed),
        writes.load(Ordering::Relaxed),
    );
    assert!(
        errors.is_empty(),
        "{} failures in {elapsed:?} ({reads} good reads, {writes} writes); first ones:\n{}",
        errors.len(),
        errors
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(reads > 0 && writes > 0, "{reads} reads, {writes} writes");

    // Every key ends as one whole written value, and no staging or temp file is left.
    for k in 0..KEYS {
        let text = String::from_utf8(fs::read(m.path(key(k))).unwrap()).unwrap();
        assert!(written[k].lock().unwrap().contains(&text));
        assert_eq!(fs::read(m.backing_path(key(k))).unwrap(), text.as_bytes());
    }
    assert_eq!(m.list(""), names(&["k0.json", "k1.json", "k2.json"]));
    assert_eq!(
        m.list_backing(""),
        names(&["k0.json", "k1.json", "k2.json"])
    );
}
