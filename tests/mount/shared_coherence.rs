//! What two mounts of one shared backing dir show while it changes (SPEC §13, issue #20): a
//! storm of writers on one mount is read whole on the other, and a name created, rewritten in
//! place, renamed away, renamed onto and removed by a program outside every mount shows on
//! both within the bound, answering `ENOENT` once gone and never `ESTALE`. Each scenario runs
//! over a local dir and over GlusterFS ([`over_each_shared_backing`]), where the second mount
//! and the outside program are on client B, the first mount on client A.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use super::shared::two_mounts_in;
use crate::common::*;

over_each_shared_backing!(
    a_coherence_storm_on_one_mount_is_read_whole_on_the_other,
    changes_by_a_program_outside_every_mount_show_on_both_mounts_within_the_bound,
);

/// Every mount here runs `--watch poll=200ms`.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// The longest cachetta lets the kernel cache a name or its attributes.
const KERNEL_TTL: Duration = Duration::from_secs(1);

/// How long after a change in the backing dir a mount may still show the old state: the watch
/// interval, plus the filesystem client's own cache time, plus the kernel's.
fn visibility_bound(on: &SharedBacking) -> Duration {
    WATCH_INTERVAL + on.client_cache() + KERNEL_TTL
}

const STORM_KEYS: usize = 5;
const STORM_WRITERS: usize = 2;
const STORM_READERS: usize = 4;
const STORM_TIME: Duration = Duration::from_secs(4);
/// The sizes of the storm's values, 10 B to 200 kB.
const STORM_SIZES: [usize; 5] = [10, 700, 9_000, 60_000, 200_000];

fn storm_key(k: usize) -> String {
    format!("k{k}.json")
}

/// The value writer `w` writes as its `seq`-th write, to key `seq % STORM_KEYS`. It names its
/// key, writer and seq, and its length (10 B to 200 kB) follows from them: a torn or mixed
/// read, or another key's value, is no value a writer wrote.
fn storm_value(w: usize, seq: usize) -> String {
    let k = seq % STORM_KEYS;
    let len = STORM_SIZES[(seq / STORM_KEYS + w) % STORM_SIZES.len()];
    let head = format!("{{\"key\":{k},\"writer\":{w},\"seq\":{seq},\"pad\":\"");
    match len.checked_sub(head.len() + 2) {
        Some(pad) => format!("{head}{}\"}}", "x".repeat(pad)),
        None => format!("[{k},{w},{seq}]"),
    }
}

/// The (key, writer, seq) that read bytes claim to be, if they parse as a value.
fn storm_claim(bytes: &[u8]) -> Option<(usize, usize, usize)> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let n = |v: &serde_json::Value| v.as_u64().map(|n| n as usize);
    match &v {
        serde_json::Value::Array(a) if a.len() == 3 => Some((n(&a[0])?, n(&a[1])?, n(&a[2])?)),
        serde_json::Value::Object(o) => {
            Some((n(o.get("key")?)?, n(o.get("writer")?)?, n(o.get("seq")?)?))
        }
        _ => None,
    }
}

/// What the storm's threads share: each writer's latest seq begun, each key's first publish,
/// and every failure.
struct Storm {
    begun: [AtomicUsize; STORM_WRITERS],
    first_publish: [OnceLock<Instant>; STORM_KEYS],
    failures: Mutex<Vec<String>>,
    bound: Duration,
}

impl Storm {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }

    /// Judge one read of key `k` that began at `began`.
    fn judge(&self, k: usize, began: Instant, read: std::io::Result<Vec<u8>>) -> bool {
        match read {
            Ok(bytes) => {
                let whole = storm_claim(&bytes).filter(|&(key, w, seq)| {
                    key == k
                        && w < STORM_WRITERS
                        && seq <= self.begun[w].load(Ordering::SeqCst)
                        && storm_value(w, seq).as_bytes() == bytes
                });
                if whole.is_none() {
                    self.fail(format!(
                        "{}: {} bytes that are no whole value written to it: {:?}",
                        storm_key(k),
                        bytes.len(),
                        String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
                    ));
                }
                whole.is_some()
            }
            // Not yet published, or published so recently that this mount cannot know yet.
            Err(e)
                if e.raw_os_error() == Some(libc::ENOENT)
                    && self.first_publish[k]
                        .get()
                        .is_none_or(|&t| began < t + self.bound) =>
            {
                false
            }
            Err(e) => {
                self.fail(format!("{}: {e}", storm_key(k)));
                false
            }
        }
    }
}

/// For 4 s, 2 writers on `a` replace 5 keys (a scratch file renamed onto the key, or an
/// `O_TRUNC` write, in turn) with values of 10 B to 200 kB, while 4 readers on `b` read them
/// whole: no read fails (`ENOENT` only before a key's first publish has had time to show), and
/// every read is a whole value some writer wrote to that key.
fn a_coherence_storm_on_one_mount_is_read_whole_on_the_other(on: &SharedBacking) {
    on.storm_with_known_retry(|| {
        let (a, b) = two_mounts_in(&on.dir(), "duration = \"1h\"\n", |m| m, |m| m);
        let storm = Arc::new(Storm {
            begun: Default::default(),
            first_publish: Default::default(),
            failures: Mutex::new(Vec::new()),
            bound: visibility_bound(on),
        });
        let end = Instant::now() + STORM_TIME;
        let writers: Vec<_> = (0..STORM_WRITERS)
            .map(|w| {
                let (storm, mnt) = (storm.clone(), a.mnt.clone());
                thread::spawn(move || {
                    let mut seq = 0;
                    while Instant::now() < end {
                        storm.begun[w].store(seq, Ordering::SeqCst);
                        let k = seq % STORM_KEYS;
                        let path = mnt.join(storm_key(k));
                        let value = storm_value(w, seq);
                        let written = if (seq / STORM_KEYS).is_multiple_of(2) {
                            fs::write(&path, &value)
                        } else {
                            let scratch = mnt.join(format!("k{k}.w{w}.tmp"));
                            fs::write(&scratch, &value).and_then(|()| fs::rename(&scratch, &path))
                        };
                        match written {
                            Ok(()) => {
                                storm.first_publish[k].get_or_init(Instant::now);
                            }
                            Err(e) => storm.fail(format!("writer {w}, {}: {e}", storm_key(k))),
                        }
                        seq += 1;
                    }
                    seq
                })
            })
            .collect();
        let readers: Vec<_> = (0..STORM_READERS)
            .map(|r| {
                let (storm, mnt) = (storm.clone(), b.mnt.clone());
                thread::spawn(move || {
                    let mut whole = 0;
                    let mut k = r;
                    while Instant::now() < end {
                        k = (k + 1) % STORM_KEYS;
                        let began = Instant::now();
                        let read = fs::read(mnt.join(storm_key(k)));
                        whole += usize::from(storm.judge(k, began, read));
                    }
                    whole
                })
            })
            .collect();
        let writes: Vec<usize> = writers.into_iter().map(|t| t.join().unwrap()).collect();
        let whole: usize = readers.into_iter().map(|t| t.join().unwrap()).sum();
        let failures = storm.failures.lock().unwrap();
        let mut kinds = std::collections::BTreeMap::new();
        for f in failures.iter() {
            let kind = f.split_once(": ").map_or(f.as_str(), |(_, kind)| kind);
            *kinds
                .entry(kind.chars().take(60).collect::<String>())
                .or_insert(0) += 1;
        }
        assert!(
            failures.is_empty(),
            "{} failures ({whole} whole reads, writes {writes:?}), by kind: {kinds:#?}; the first: {:#?}",
            failures.len(),
            &failures[..failures.len().min(6)]
        );
        assert!(writes.iter().all(|&n| n > STORM_KEYS), "writes {writes:?}");
        assert!(whole > 0, "no read got a value");
    });
}

/// What one mount shows of a name: listed, its `stat` size, its content.
struct Seen {
    listed: bool,
    size: Result<u64, i32>,
    content: Result<Vec<u8>, i32>,
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let error = |e: i32| std::io::Error::from_raw_os_error(e).to_string();
        let size = self.size.map_or_else(error, |n| n.to_string());
        let content = match &self.content {
            Ok(c) => format!("{:?}", String::from_utf8_lossy(c)),
            Err(e) => error(*e),
        };
        write!(f, "listed {}, stat {size}, cat {content}", self.listed)
    }
}

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn see(mnt: &Path, name: &str) -> Result<Seen, String> {
    let listed = fs::read_dir(mnt)
        .map_err(|e| format!("ls: {e}"))?
        .map(|e| e.map(|e| e.file_name() == name))
        .collect::<Result<Vec<bool>, _>>()
        .map_err(|e| format!("ls: {e}"))?
        .contains(&true);
    Ok(Seen {
        listed,
        size: fs::metadata(mnt.join(name)).map(|m| m.len()).map_err(errno),
        content: fs::read(mnt.join(name)).map_err(errno),
    })
}

/// One name's state before and after a change: its content, or `None` for no entry.
struct Change<'a> {
    name: &'a str,
    before: Option<&'a [u8]>,
    after: Option<&'a [u8]>,
}

impl Change<'_> {
    /// Whether `seen` is the state after the change; `Err` if it is neither the state before
    /// nor after (nor, where `torn` allows it, an entry hidden while it is rewritten).
    fn judge(&self, seen: &Seen, torn: bool) -> Result<bool, String> {
        let states = [self.before, self.after];
        let size_of = |s: Option<&[u8]>| s.map(|c| c.len() as u64).ok_or(libc::ENOENT);
        let content_of = |s: Option<&[u8]>| s.map(<[u8]>::to_vec).ok_or(libc::ENOENT);
        let hidden_ok = torn || states.contains(&None);
        let listed_ok = states.iter().any(|s| s.is_some() == seen.listed) || hidden_ok;
        let size_ok = states.iter().any(|&s| size_of(s) == seen.size)
            || (hidden_ok && seen.size == Err(libc::ENOENT));
        let content_ok = states.iter().any(|&s| content_of(s) == seen.content)
            || (hidden_ok && seen.content == Err(libc::ENOENT));
        if !(listed_ok && size_ok && content_ok) {
            return Err(format!("{}: {seen}", self.name));
        }
        Ok(seen.listed == self.after.is_some()
            && seen.size == size_of(self.after)
            && seen.content == content_of(self.after))
    }
}

/// Wait until both mounts show every change's state after, in `ls`, `stat` and `cat`;
/// meanwhile they may show the state before, never anything else. Returns how long it took,
/// and fails if that is longer than `bound`.
fn both_show(step: &str, mounts: [&Mount; 2], changes: &[Change], torn: bool, bound: Duration) {
    let changed = Instant::now();
    let mut wrong = Vec::new();
    let mut not_yet = Vec::new();
    let shown = eventually(Duration::from_secs(10), || {
        not_yet.clear();
        for (label, m) in ["a", "b"].iter().zip(mounts) {
            for change in changes {
                let seen = see(&m.mnt, change.name);
                match seen
                    .as_ref()
                    .map_err(|e| e.clone())
                    .and_then(|s| change.judge(s, torn))
                {
                    Ok(true) => {}
                    Ok(false) => {
                        let seen = seen.map_or_else(|e| e, |s| s.to_string());
                        not_yet.push(format!("{} on {label}: {seen}", change.name));
                    }
                    Err(e) => {
                        wrong.push(format!("{:?} on {label}: {e}", changed.elapsed()));
                        not_yet.push(format!("{} on {label}: wrong", change.name));
                    }
                }
            }
        }
        not_yet.is_empty()
    });
    let took = changed.elapsed();
    eprintln!("{step}: shown on both mounts after {took:?}");
    assert!(
        wrong.is_empty(),
        "{step}: {} wrong answers; the first: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(12)]
    );
    assert!(
        shown,
        "{step}: not shown on both mounts within 10 s; still: {not_yet:#?}"
    );
    assert!(
        took <= bound,
        "{step}: shown on both mounts after {took:?}, more than {bound:?}"
    );
}

/// A program outside every mount (on GlusterFS: on client B, the second mount's machine)
/// creates a name, rewrites it in place, renames it away, renames another file onto it and
/// removes it: each shows on both mounts, in `ls`, `stat` and `cat`, within the watch
/// interval plus the client's cache time plus cachetta's kernel time to live, and a name once
/// gone answers `ENOENT`, never `ESTALE`.
fn changes_by_a_program_outside_every_mount_show_on_both_mounts_within_the_bound(
    on: &SharedBacking,
) {
    const CREATED: &[u8] = br#"{"step":"created"}"#;
    const REWRITTEN: &[u8] = br#"{"step":"rewritten in place","pad":"xxxxxxxxxxxxxxxx"}"#;
    const RENAMED_ONTO: &[u8] = br#"{"step":"renamed onto"}"#;
    let dir = on.dir();
    let (a, b) = two_mounts_in(&dir, "duration = \"1h\"\n", |m| m, |m| m);
    let outside = dir.outside(&a);
    let at = |name: &str| -> PathBuf { outside.join(name) };
    let bound = visibility_bound(on);
    let show = |step, changes: &[Change], torn| both_show(step, [&a, &b], changes, torn, bound);
    for name in ["x.json", "y.json"] {
        show(
            "before",
            &[Change {
                name,
                before: None,
                after: None,
            }],
            false,
        );
    }

    fs::write(at("x.json"), CREATED).unwrap();
    let x_created = Change {
        name: "x.json",
        before: None,
        after: Some(CREATED),
    };
    show("created", &[x_created], false);

    let mut file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(at("x.json"))
        .unwrap();
    file.write_all(REWRITTEN).unwrap();
    drop(file);
    let x_rewritten = Change {
        name: "x.json",
        before: Some(CREATED),
        after: Some(REWRITTEN),
    };
    show("rewritten in place", &[x_rewritten], true);

    fs::rename(at("x.json"), at("y.json")).unwrap();
    let renamed_away = [
        Change {
            name: "x.json",
            before: Some(REWRITTEN),
            after: None,
        },
        Change {
            name: "y.json",
            before: None,
            after: Some(REWRITTEN),
        },
    ];
    show("renamed away", &renamed_away, false);

    fs::write(at("y.json.tmp"), RENAMED_ONTO).unwrap();
    fs::rename(at("y.json.tmp"), at("y.json")).unwrap();
    let y_replaced = Change {
        name: "y.json",
        before: Some(REWRITTEN),
        after: Some(RENAMED_ONTO),
    };
    show("renamed onto", &[y_replaced], false);

    fs::remove_file(at("y.json")).unwrap();
    let y_removed = Change {
        name: "y.json",
        before: Some(RENAMED_ONTO),
        after: None,
    };
    show("removed", &[y_removed], false);
}
