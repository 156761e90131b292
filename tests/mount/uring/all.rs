//! `--transport uring`: every op cachetta serves, served on the ring. Each test
//! runs real programs (`cat`, `ls -l`, `getfattr`, `setfattr`, `rm`, `mv`) or many threads on
//! the mount, and the ring's own per-op counts, logged when it ends, prove where they were
//! answered: by name, and with nothing refused or malformed.

use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::{answered, statvfs, wait_ready, UringParam, ON_THE_RING};
use crate::common::*;

/// A read-through rule (SPEC §6): a lookup of a missing `filled/*.json` runs the command and
/// is answered when it ends, from the refresh worker's thread.
const FILL: &str = r#"
[[rule]]
match = "filled/*.json"
fill_on_miss = true
refresh = "echo '{\"filled\":true}'"

[[rule]]
match = "slow/*.json"
fill_on_miss = true
refresh = "sleep 30; echo '{}'"

[[rule]]
match = "second/*.json"
fill_on_miss = true
refresh = "sleep 1; echo '{\"late\":1}'"
"#;

#[track_caller]
fn all_mount() -> Mount {
    let m = Mount::new()
        .backing_file("x.json", r#"{"x":1}"#)
        .prepare(|backing| {
            fs::create_dir_all(backing.join("filled")).unwrap();
            fs::create_dir_all(backing.join("slow")).unwrap();
            fs::create_dir_all(backing.join("second")).unwrap();
        })
        .config(FILL)
        .args(ON_THE_RING)
        .start();
    wait_ready(&m, 1);
    m
}

/// The counts of the ring's last "served ..." line: op name → requests answered.
pub(super) fn served_ops(stderr: &str) -> HashMap<String, u64> {
    let line = stderr
        .lines()
        .rfind(|l| l.contains("io_uring ring ended"))
        .unwrap_or_else(|| panic!("no ring ended:\n{stderr}"));
    let counts = &line[line.find("served ").expect("served") + 7..];
    let counts = &counts[..counts.find(';').expect("; by queue")];
    counts
        .split(", ")
        .map(|pair| {
            let (name, n) = pair.split_once(' ').expect("name count");
            let n = n.split(' ').next().expect("a count");
            (name.to_owned(), n.parse().expect("a count"))
        })
        .collect()
}

#[track_caller]
fn assert_served(stderr: &str, ops: &[&str]) {
    let counts = served_ops(stderr);
    for op in ops {
        assert!(
            counts.get(*op).copied().unwrap_or(0) >= 1,
            "{op} was not served on the ring: {counts:?}\n{stderr}"
        );
    }
    // Every reply was taken by the kernel, and every entry made sense.
    for trouble in ["commit failed", "malformed request", "panicked"] {
        assert!(!stderr.contains(trouble), "{trouble}:\n{stderr}");
    }
    // STATX alone may be refused: ENOSYS, as fuser answers it on classic, and the kernel then
    // asks GETATTR for good.
    let refused = &stderr[stderr.rfind("(opcodes [").expect("refused opcodes") + 10..];
    let refused = &refused[..refused.find(']').expect("a list")];
    assert!(
        refused.is_empty() || refused == "52",
        "refused on the ring: opcodes [{refused}]\n{stderr}"
    );
    assert_eq!(counts.get("malformed"), Some(&0), "{counts:?}\n{stderr}");
}

#[test]
fn a_shell_session_is_served_on_the_ring_op_by_op() {
    let Some(_param) = UringParam::set(true) else {
        return;
    };
    let mut m = all_mount();
    let script = r#"
set -e
cat x.json
echo '{"y":2}' > y.json
cat y.json
printf '{"z":3}' > z.json.tmp && mv z.json.tmp z.json
cat z.json
ls -l
getfattr --only-values -n user.cachetta.stats . | head -c 1
setfattr -n user.cachetta.duration -v 1h x.json
getfattr -d -m - x.json > /dev/null
rm y.json
test ! -e y.json
mkdir d && rmdir d
sync x.json
cat filled/a.json
"#;
    let out = answered(&m.mnt, "the shell session", {
        let mnt = m.mnt.clone();
        let script = script.to_owned();
        move || {
            output(
                std::process::Command::new("sh")
                    .args(["-c", &script])
                    .current_dir(mnt),
            )
        }
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{out:?}\nstdout:\n{stdout}\nstderr:\n{}",
        m.stderr()
    );
    assert!(
        stdout.starts_with("{\"x\":1}{\"y\":2}\n{\"z\":3}"),
        "{stdout}"
    );
    assert!(
        stdout.contains("z.json") && stdout.contains("x.json"),
        "{stdout}"
    );
    assert!(stdout.ends_with("{\"filled\":true}\n"), "{stdout}");
    assert_eq!(fs::read(m.backing_path("z.json")).unwrap(), br#"{"z":3}"#);
    assert!(!m.backing_path("y.json").exists());
    assert_eq!(
        getxattr(&m.backing_path("x.json"), "user.cachetta.duration").unwrap(),
        b"3600"
    );
    let status = m.stop();
    assert!(status.success(), "daemon exited with {status}");
    let stderr = m.stderr();
    assert_served(
        &stderr,
        &[
            "lookup",
            "getattr",
            "open",
            "read",
            "release",
            "create",
            "write",
            "flush",
            "rename2",
            "unlink",
            "opendir",
            "readdirplus",
            "releasedir",
            "getxattr",
            "listxattr",
            "setxattr",
            "mkdir",
            "rmdir",
            "fsync",
            "statfs",
        ],
    );
}

#[test]
fn odd_names_and_xattr_size_probing_are_served_on_the_ring() {
    let Some(_param) = UringParam::set(true) else {
        return;
    };
    let mut m = all_mount();
    let names: [&[u8]; 4] = [
        b"sp ace.json",
        b"caf\xc3\xa9.json",
        b"new\nline.json",
        b"\xff\xfe.json",
    ];
    answered(&m.mnt, "odd names", {
        let mnt = m.mnt.clone();
        move || {
            for name in names {
                let path = mnt.join(std::ffi::OsStr::from_bytes(name));
                fs::write(&path, b"[1]").unwrap();
                assert_eq!(fs::read(&path).unwrap(), b"[1]");
                let listed = fs::read_dir(&mnt)
                    .unwrap()
                    .any(|e| e.unwrap().file_name().as_bytes() == name);
                assert!(listed, "{:?} listed", String::from_utf8_lossy(name));
                fs::remove_file(&path).unwrap();
            }
            // Size 0 asks for the length; too small a buffer is ERANGE; missing is ENODATA.
            let len = getxattr_sized(&mnt, "user.cachetta.stats", 0).unwrap();
            assert!(len > 0);
            let short = getxattr_sized(&mnt, "user.cachetta.stats", 1);
            assert_eq!(errno_of(short), libc::ERANGE);
            let missing = getxattr(&mnt.join("x.json"), "user.nothing");
            assert_eq!(errno_of(missing), libc::ENODATA);
            assert!(!listxattr(&mnt).unwrap().is_empty());
        }
    });
    for name in names {
        assert!(!m.backing_path(std::ffi::OsStr::from_bytes(name)).exists());
    }
    let status = m.stop();
    assert!(status.success(), "daemon exited with {status}");
    assert_served(
        &m.stderr(),
        &["create", "write", "read", "unlink", "getxattr", "listxattr"],
    );
}

#[test]
fn sixteen_threads_read_and_write_at_once_on_the_ring_with_no_torn_read() {
    let Some(_param) = UringParam::set(true) else {
        return;
    };
    let mut m = all_mount();
    let keys = ["k0.json", "k1.json", "k2.json", "k3.json"];
    // Whole values are `{"w":W,"i":I,"pad":"ppp..."}` of a size that depends on W and I: a
    // torn read (half of one, half of another) fails to parse or has the wrong length.
    let value = |w: usize, i: usize| {
        let pad = "p".repeat(1000 + (w * 977 + i * 31) % 7000);
        format!(r#"{{"w":{w},"i":{i},"pad":"{pad}"}}"#)
    };
    for key in keys {
        fs::write(m.path(key), value(99, 0)).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (torn, reads, writes) = answered(&m.mnt, "16 readers and writers", {
        let mnt = m.mnt.clone();
        let stop = stop.clone();
        move || {
            let workers: Vec<_> = (0..16)
                .map(|t| {
                    let (mnt, stop) = (mnt.clone(), stop.clone());
                    thread::spawn(move || {
                        let (mut torn, mut reads, mut writes) = (Vec::new(), 0, 0);
                        let deadline = Instant::now() + Duration::from_secs(3);
                        let mut i = 0;
                        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                            let key = keys[(t + i) % keys.len()];
                            i += 1;
                            if t % 2 == 0 {
                                // Writers: in place, or staged and renamed over.
                                let body = value(t, i);
                                let done = if i % 2 == 0 {
                                    fs::write(mnt.join(key), &body)
                                } else {
                                    let tmp = mnt.join(format!("{key}.{t}.tmp"));
                                    fs::write(&tmp, &body)
                                        .and_then(|()| fs::rename(&tmp, mnt.join(key)))
                                };
                                done.unwrap_or_else(|e| panic!("writer {t}: {e}"));
                                writes += 1;
                            } else {
                                let got = fs::read(mnt.join(key))
                                    .unwrap_or_else(|e| panic!("reader {t}: {e}"));
                                reads += 1;
                                let whole = serde_json::from_slice::<serde_json::Value>(&got)
                                    .ok()
                                    .and_then(|v| Some((v["w"].as_u64()?, v["i"].as_u64()?)))
                                    .is_some_and(|(w, i)| {
                                        value(w as usize, i as usize).as_bytes() == got
                                    });
                                if !whole {
                                    torn.push(
                                        String::from_utf8_lossy(&got[..got.len().min(80)])
                                            .into_owned(),
                                    );
                                }
                            }
                        }
                        (torn, reads, writes)
                    })
                })
                .collect();
            let mut all = (Vec::new(), 0, 0);
            for w in workers {
                let (torn, reads, writes) = w.join().expect("no worker panicked");
                all.0.extend(torn);
                all.1 += reads;
                all.2 += writes;
            }
            all
        }
    });
    assert!(
        torn.is_empty(),
        "{} torn reads, e.g. {:?}",
        torn.len(),
        &torn[..torn.len().min(3)]
    );
    assert!(reads > 0 && writes > 0, "reads {reads}, writes {writes}");
    let status = m.stop();
    assert!(status.success(), "daemon exited with {status}");
    let stderr = m.stderr();
    assert_served(&stderr, &["read", "write", "rename", "create", "release"]);
    let counts = served_ops(&stderr);
    assert!(
        counts["read"] >= reads,
        "every read reached the ring ({reads} made): {counts:?}"
    );
}

#[test]
fn kill_9_with_a_read_through_waiting_in_the_ring_leaves_enotconn_and_a_remount_works() {
    let Some(_param) = UringParam::set(true) else {
        return;
    };
    let mut m = all_mount();
    // A lookup whose command takes 30 s: its request waits in a ring entry.
    let waiting = {
        let path = m.path("slow/a.json");
        thread::spawn(move || fs::metadata(path).map(|_| ()))
    };
    thread::sleep(Duration::from_millis(500));
    assert!(!waiting.is_finished(), "the read-through is waiting");
    let pid = m.pid().expect("daemon pid") as libc::pid_t;
    m.signal_and_wait(libc::SIGKILL)
        .expect("the daemon dies of SIGKILL");
    assert!(!alive(pid));
    let started = Instant::now();
    let errno = errno_of(waiting.join().unwrap());
    assert!(
        is_dead_mount_errno(errno),
        "the waiting lookup ends with the connection, errno {errno}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "at once, not when the command ends"
    );
    let dead = answered(&m.mnt, "statfs of the dead mount", {
        let mnt = m.mnt.clone();
        move || statvfs(mnt)
    });
    let errno = errno_of(dead);
    assert!(is_dead_mount_errno(errno), "errno {errno}");

    m.restart();
    wait_ready(&m, 2);
    let body = answered(&m.mnt, "read after the remount", {
        let path = m.path("x.json");
        move || fs::read(path)
    })
    .expect("read after the remount");
    assert_eq!(body, br#"{"x":1}"#);
    let status = m.stop();
    assert!(status.success(), "daemon exited with {status}");
    let stderr = m.stderr();
    assert_eq!(
        stderr.matches("io_uring ring registered").count(),
        2,
        "{stderr}"
    );
    // The reads themselves are passed through to the backing file (step 5): no `read` here.
    assert_served(&stderr, &["lookup", "open"]);
}

#[test]
fn a_caller_killed_while_its_read_through_waits_in_the_ring_leaves_the_ring_serving() {
    let Some(_param) = UringParam::set(true) else {
        return;
    };
    let mut m = all_mount();
    // `stat` of a name whose read-through takes 1 s, killed while its lookup waits in an entry.
    let mut caller = spawn(std::process::Command::new("stat").arg(m.path("second/a.json")));
    thread::sleep(Duration::from_millis(300));
    caller.kill().unwrap();
    let _ = caller.wait();
    // Meanwhile, and once the late reply has been given to the kernel, the ring serves.
    for when in ["while the reply is pending", "after the late reply"] {
        let body = answered(&m.mnt, "read", {
            let path = m.path("x.json");
            move || fs::read(path)
        })
        .unwrap_or_else(|e| panic!("read {when}: {e}"));
        assert_eq!(body, br#"{"x":1}"#, "{when}");
        thread::sleep(Duration::from_millis(1500));
    }
    let again = answered(&m.mnt, "the filled name", {
        let path = m.path("second/a.json");
        move || fs::read(path)
    })
    .expect("the name the killed caller asked for, filled");
    assert_eq!(
        again,
        br#"{"late":1}"#.iter().chain(b"\n").copied().collect::<Vec<_>>()
    );
    let status = m.stop();
    assert!(status.success(), "daemon exited with {status}");
    // The reads themselves are passed through to the backing file (step 5): no `read` here.
    assert_served(&m.stderr(), &["lookup", "open"]);
}

#[test]
fn a_stop_with_a_read_through_waiting_in_the_ring_ends_promptly() {
    let Some(_param) = UringParam::set(true) else {
        return;
    };
    let mut m = all_mount();
    let waiting = {
        let path = m.path("slow/b.json");
        thread::spawn(move || fs::metadata(path).map(|_| ()))
    };
    thread::sleep(Duration::from_millis(500));
    assert!(!waiting.is_finished(), "the read-through is waiting");
    let started = Instant::now();
    let status = m.stop();
    let stopped = started.elapsed();
    let result = waiting.join().unwrap();
    let stderr = m.stderr();
    assert!(
        stopped < Duration::from_secs(10),
        "the stop took {stopped:?} (the command takes 30 s):\n{stderr}"
    );
    assert!(status.success(), "daemon exited with {status}:\n{stderr}");
    assert!(result.is_err(), "the waiting lookup ends with the mount");
}

/// A ring mount with `x.json` and an empty `flood/` whose keys are filled by `command` on a miss
/// ([`flood_config`]).
fn flood_on_the_ring(command: &str, timeout: &str) -> Mount {
    let m = Mount::new()
        .backing_file("x.json", r#"{"x":1}"#)
        .prepare(|backing| fs::create_dir_all(backing.join("flood")).unwrap())
        .config(&flood_config(command, timeout))
        .args(ON_THE_RING)
        .start();
    wait_ready(&m, 1);
    m
}

/// 200 read-through lookups at once, each waiting in a ring entry for its command (2 at a time,
/// 0.3 s each) or its 1 s `refresh_timeout`: a queue has 128 entries and grows when they run
/// short, so they all wait at once and are answered in a few seconds. With 4 entries per queue
/// this took 34 s, and requests behind them stalled.
#[test]
fn two_hundred_read_throughs_at_once_are_answered_in_seconds_on_the_ring() {
    let Some(_param) = UringParam::set(true) else {
        return;
    };
    let mut m = flood_on_the_ring("sleep 0.3; echo '{}'", "1s");
    let lookups = stats_at_once(&m, "flood", 200);
    let started = Instant::now();
    // Meanwhile, requests that do not wait are answered at once: no queue is out of entries.
    let x = m.path("x.json");
    let quick = Instant::now();
    assert!(answered(&m.mnt, "statfs", {
        let mnt = m.mnt.clone();
        move || statvfs(mnt).is_ok()
    }));
    assert!(answered(&m.mnt, "stat", move || fs::metadata(x).is_ok()));
    let quick = quick.elapsed();
    let found = lookups
        .into_iter()
        .map(|l| l.join().unwrap())
        .filter(|&found| found)
        .count();
    let took = started.elapsed();
    eprintln!("200 read-throughs answered in {took:?}; a statfs and a stat meanwhile in {quick:?}");
    let status = m.stop();
    let stderr = m.stderr();
    assert!(status.success(), "daemon exited with {status}:\n{stderr}");
    assert!(found >= 2, "only {found} lookups got their entry");
    // Generous bounds, for a machine running the whole suite at once (CI once took 990 ms for
    // the quick pair): with 8 entries in all, before step 4, the flood took 34 s and the quick
    // pair waited for it.
    assert!(
        took < Duration::from_secs(15),
        "200 read-throughs took {took:?} on the ring:\n{stderr}"
    );
    assert!(
        quick < Duration::from_secs(4),
        "a statfs and a stat behind 200 waiting read-throughs took {quick:?}:\n{stderr}"
    );
    let counts = served_ops(&stderr);
    assert!(
        counts.get("lookup").copied().unwrap_or(0) >= 200,
        "the lookups were not served on the ring: {counts:?}\n{stderr}"
    );
}

/// Pin the calling thread to CPU 0: the kernel puts its requests on queue 0.
fn on_cpu_0() {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes within it; the call reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0,
            "cannot pin a thread to CPU 0"
        );
    }
}

/// 300 read-through lookups made on one CPU, each waiting in an entry of that CPU's queue for
/// its command (4 s, 2 at a time) or its 5 s `refresh_timeout`: more than the queue's 128
/// entries. The queue grows, so a `stat` made on that CPU meanwhile is answered at once; with
/// a fixed 128 it waited until the first commands ended (4 s).
#[test]
fn a_queue_whose_entries_all_wait_for_read_throughs_grows() {
    let Some(_param) = UringParam::set(true) else {
        return;
    };
    let mut m = flood_on_the_ring("sleep 4; echo '{}'", "5s");
    let lookups = stats_at_once_after(&m, "flood", 300, on_cpu_0);
    // Let them all reach the daemon and wait there.
    thread::sleep(Duration::from_millis(500));
    let x = m.path("x.json");
    let quick = answered(&m.mnt, "stat on CPU 0", move || {
        on_cpu_0();
        let began = Instant::now();
        let found = fs::metadata(x).is_ok();
        (found, began.elapsed())
    });
    for l in lookups {
        l.join().unwrap();
    }
    let status = m.stop();
    let stderr = m.stderr();
    assert!(status.success(), "daemon exited with {status}:\n{stderr}");
    assert!(quick.0, "x.json was not found");
    // The commands end after 4 s: a stat that waited for one of their entries took that long.
    assert!(
        quick.1 < Duration::from_secs(2),
        "a stat behind 300 waiting read-throughs on its CPU took {:?}:\n{stderr}",
        quick.1
    );
    assert!(
        stderr.contains("io_uring queue grown"),
        "300 waiting read-throughs on one CPU did not grow its queue:\n{stderr}"
    );
}
