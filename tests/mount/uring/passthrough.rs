//! `--transport uring` with kernel passthrough: opens answered on the ring carry a
//! backing id registered from the ring, shared with the adapter's registry (issue #24, step 5).

use std::fs;
use std::io::{Read, Write};
use std::sync::Arc;
use std::thread;

use super::all::served_ops;
use super::{answered, wait_ready, UringParam, ON_THE_RING};
use crate::common::*;

fn big(fill: &str) -> Vec<u8> {
    serde_json::to_vec(&fill.repeat(2 << 20)).unwrap()
}

#[track_caller]
fn ring_mount(files: &[(&str, Vec<u8>)]) -> Mount {
    let mut b = Mount::new().args(ON_THE_RING);
    for (name, contents) in files {
        b = b.backing_file(name, contents.clone());
    }
    let m = b.start();
    wait_ready(&m, 1);
    assert_eq!(
        stats(&m)["passthrough"],
        true,
        "no passthrough on the ring:\n{}",
        m.stderr()
    );
    m
}

fn reads(m: &Mount) -> u64 {
    stats(m)["requests"]["read"].as_u64().unwrap_or(0)
}

/// The ring answered opens, nothing went wrong on it, and the kernel took every backing.
#[track_caller]
fn stop_and_check(mut m: Mount) {
    assert_eq!(stats(&m)["passthrough"], true, "{}", m.stderr());
    let status = m.stop();
    assert!(status.success(), "daemon exited with {status}");
    let stderr = m.stderr();
    let counts = served_ops(&stderr);
    assert!(counts.get("open").copied().unwrap_or(0) >= 1, "{counts:?}");
    for trouble in [
        "commit failed",
        "malformed request",
        "panicked",
        "kernel passthrough unavailable",
        "cannot close a passthrough backing",
    ] {
        assert!(!stderr.contains(trouble), "{trouble}:\n{stderr}");
    }
}

#[test]
fn a_large_entry_opened_on_the_ring_is_read_with_no_read_request() {
    let Some(_param) = UringParam::set(true) else {
        return;
    };
    let _kept = kernel_caches_kept();
    let contents = big("x");
    let m = ring_mount(&[("big.json", contents.clone())]);
    let before = reads(&m);
    let path = m.path("big.json");
    let read = answered(&m.mnt, "the large read", move || fs::read(path).unwrap());
    assert_eq!(read, contents);
    assert_eq!(reads(&m), before, "reads went through the daemon");
    stop_and_check(m);
}

#[test]
fn many_opens_of_one_inode_at_once_share_its_backing() {
    let Some(_param) = UringParam::set(true) else {
        return;
    };
    let _kept = kernel_caches_kept();
    let contents = Arc::new(big("m"));
    let m = ring_mount(&[("many.json", (*contents).clone())]);
    let before = reads(&m);
    let path = m.path("many.json");
    answered(&m.mnt, "8 threads opening one inode", move || {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (path, contents) = (path.clone(), contents.clone());
                thread::spawn(move || {
                    for _ in 0..20 {
                        assert_eq!(fs::read(&path).unwrap(), *contents);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
    assert_eq!(reads(&m), before, "reads went through the daemon");
    stop_and_check(m);
}

#[test]
fn a_name_replaced_while_held_open_is_read_whole_by_old_and_new_readers() {
    let Some(_param) = UringParam::set(true) else {
        return;
    };
    let _kept = kernel_caches_kept();
    let (old, new) = (big("o"), big("n"));
    let m = ring_mount(&[("r.json", old.clone())]);
    let (name, tmp) = (m.path("r.json"), m.path(".r.json.tmp"));
    answered(&m.mnt, "old and new readers", move || {
        let mut held = fs::File::open(&name).unwrap();
        let mut first = vec![0; 4096];
        held.read_exact(&mut first).unwrap();
        fs::write(&tmp, &new).unwrap();
        fs::rename(&tmp, &name).unwrap();
        let mut rest = Vec::new();
        held.read_to_end(&mut rest).unwrap();
        first.extend(rest);
        assert!(
            first == old,
            "the old reader did not read the old file whole"
        );
        assert!(
            fs::read(&name).unwrap() == new,
            "a new reader did not read the new file"
        );
    });
    stop_and_check(m);
}

#[test]
fn after_the_last_release_a_writer_opens_the_inode() {
    let Some(_param) = UringParam::set(true) else {
        return;
    };
    let _kept = kernel_caches_kept();
    let contents = big("w");
    let m = ring_mount(&[("w.json", contents.clone())]);
    let name = m.path("w.json");
    answered(&m.mnt, "a reader, then a writer", move || {
        assert_eq!(fs::read(&name).unwrap(), contents);
        let mut w = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&name)
            .unwrap();
        w.write_all(b"[1]").unwrap();
        drop(w);
        assert_eq!(fs::read(&name).unwrap(), b"[1]");
    });
    stop_and_check(m);
}
