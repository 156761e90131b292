//! Many programs at once (issue #10): `O_TRUNC` writers, temp-file + rename writers and readers
//! on the same keys. Every operation takes the time of its own I/O (the old bug's signature
//! was a one-second stall), no call fails, every read is a whole value some writer wrote, a
//! writer reads its own write back at once, and a kill -9 in the middle leaves a dead mount
//! that the next `cachetta mount` replaces, with every entry whole.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const KEYS: usize = 20;
/// The bug being guarded against stalled operations for one second; real I/O here takes
/// milliseconds even on a busy CI machine.
const STALL: Duration = Duration::from_millis(500);

fn key(k: usize) -> String {
    format!("k{k:02}.json")
}

/// A value that names its writer and sequence number, sized 4 KiB to ~64 KiB, so a torn or
/// mixed read can never equal a value.
fn value(k: usize, writer: usize, n: usize) -> Vec<u8> {
    let pad_len = if (k + n).is_multiple_of(2) {
        4000
    } else {
        60_000
    } + (n * 37) % 997;
    let pad = char::from(b'a' + (writer % 26) as u8)
        .to_string()
        .repeat(pad_len);
    format!("{{\"k\":{k},\"w\":{writer},\"n\":{n},\"pad\":\"{pad}\"}}").into_bytes()
}

/// Whether `bytes` is exactly a value some writer wrote for key `k`.
fn is_whole_value(k: usize, bytes: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return false;
    };
    let field = |name: &str| v.get(name).and_then(|x| x.as_u64()).map(|x| x as usize);
    match (field("k"), field("w"), field("n")) {
        (Some(vk), Some(w), Some(n)) => vk == k && value(k, w, n) == bytes,
        _ => false,
    }
}

/// `open(O_WRONLY|O_CREAT|O_TRUNC)`, write, close (checked): `curl > x.json`, `jq > x.json`.
fn write_truncating(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    close_fd(f)
}

/// Write a temp file beside `path`, close it, rename it onto `path` (Python's
/// `tempfile` + `os.replace`, editors, `sed -i`).
fn write_renaming(path: &Path, tag: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.{tag}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    close_fd(f)?;
    fs::rename(&tmp, path)
}

fn seeded_mount() -> Mount {
    seeded(true)
}

/// The keys seeded in the backing dir; `passthrough: false` is an ordinary user's mount (reads
/// through the daemon and the kernel's page cache).
fn seeded(passthrough: bool) -> Mount {
    let mut b = Mount::new();
    if !passthrough {
        b = b.env("CACHETTA_PASSTHROUGH", "0");
    }
    for k in 0..KEYS {
        b = b.backing_file(key(k), value(k, 99, 0));
    }
    b.start()
}

#[derive(Default)]
struct Outcome {
    ops: usize,
    slowest: Duration,
    problems: Vec<String>,
}

impl Outcome {
    fn timed(&mut self, what: &str, op: impl FnOnce() -> Result<(), String>) {
        let started = Instant::now();
        let result = op();
        let took = started.elapsed();
        self.ops += 1;
        self.slowest = self.slowest.max(took);
        if let Err(e) = result {
            self.problems.push(format!("{what}: {e}"));
        } else if took >= STALL {
            self.problems.push(format!("{what} took {took:?}"));
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.ops += other.ops;
        self.slowest = self.slowest.max(other.slowest);
        self.problems.extend(other.problems);
    }
}

#[test]
fn a_storm_of_writers_and_readers_never_stalls_fails_or_tears() {
    storm_test(true);
}

#[test]
fn a_storm_without_passthrough_never_stalls_fails_or_tears() {
    storm_test(false);
}

fn storm_test(passthrough: bool) {
    if !require_fuse() {
        return;
    }
    let m = Arc::new(seeded(passthrough));
    // A fork in another test thread would close copies of our writers' descriptors.
    let _no_forks = no_forks();
    const THREADS: usize = 16;
    const OPS: usize = 150;
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let m = m.clone();
            thread::spawn(move || {
                let mut out = Outcome::default();
                for n in 1..=OPS {
                    let k = (t * 7 + n * 3) % KEYS;
                    let path = m.path(key(k));
                    match (t + n) % 3 {
                        0 => out.timed("O_TRUNC write", || {
                            write_truncating(&path, &value(k, t, n)).map_err(|e| e.to_string())
                        }),
                        1 => out.timed("temp+rename write", || {
                            write_renaming(&path, &format!("{t}"), &value(k, t, n))
                                .map_err(|e| e.to_string())
                        }),
                        _ => out.timed("read", || {
                            let bytes = fs::read(&path).map_err(|e| e.to_string())?;
                            if is_whole_value(k, &bytes) {
                                Ok(())
                            } else {
                                Err(format!("{} bytes that no writer wrote", bytes.len()))
                            }
                        }),
                    }
                }
                out
            })
        })
        .collect();
    let mut all = Outcome::default();
    for w in workers {
        all.merge(w.join().unwrap());
    }
    assert_eq!(all.ops, THREADS * OPS);
    assert!(
        all.problems.is_empty(),
        "{} of {} operations went wrong (slowest {:?}):\n{}",
        all.problems.len(),
        all.ops,
        all.slowest,
        all.problems[..all.problems.len().min(20)].join("\n")
    );
    for k in 0..KEYS {
        let bytes = fs::read(m.path(key(k))).unwrap();
        assert!(is_whole_value(k, &bytes), "{} is torn", key(k));
    }
    let log = m.stderr();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    assert!(
        warnings.is_empty(),
        "the storm logged warnings:\n{}",
        warnings.join("\n")
    );
}

#[test]
fn a_writer_reads_its_own_write_at_once_while_others_hold_old_versions_open() {
    read_your_writes_test(true);
}

#[test]
fn without_passthrough_a_writer_reads_its_own_write_at_once() {
    read_your_writes_test(false);
}

fn read_your_writes_test(passthrough: bool) {
    if !require_fuse() {
        return;
    }
    let m = Arc::new(seeded(passthrough));
    let _no_forks = no_forks();
    const WRITERS: usize = 8;
    const WRITES: usize = 60;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Holders open a key, read it whole, keep it open while the writers replace it, and read
    // it again from the start: the version they opened, whole, every time.
    let holders: Vec<_> = (0..8)
        .map(|h| {
            let (m, stop) = (m.clone(), stop.clone());
            thread::spawn(move || -> Vec<String> {
                let mut problems = Vec::new();
                let mut n = h;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let k = n % KEYS;
                    let result = (|| -> io::Result<()> {
                        let mut f = File::open(m.path(key(k)))?;
                        let mut first = Vec::new();
                        f.read_to_end(&mut first)?;
                        thread::sleep(Duration::from_millis(3));
                        let mut again = vec![0; first.len() + 1];
                        let got = read_at_full(&f, &mut again)?;
                        again.truncate(got);
                        if !is_whole_value(k, &first) || again != first {
                            return Err(io::Error::other(format!(
                                "held version of {} changed or torn ({} then {} bytes)",
                                key(k),
                                first.len(),
                                again.len()
                            )));
                        }
                        Ok(())
                    })();
                    if let Err(e) = result {
                        problems.push(e.to_string());
                    }
                }
                problems
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let m = m.clone();
            thread::spawn(move || -> Vec<String> {
                let mut problems = Vec::new();
                for n in 1..=WRITES {
                    // Each writer owns keys w and w + 8 (the holders read all of them).
                    let k = if n % 2 == 0 { w } else { w + WRITERS };
                    let path = m.path(key(k));
                    let v = value(k, w, n);
                    let how = if n % 3 == 0 { "rename" } else { "O_TRUNC" };
                    let written = if how == "rename" {
                        write_renaming(&path, "ryw", &v)
                    } else {
                        write_truncating(&path, &v)
                    };
                    if let Err(e) = written {
                        problems.push(format!("{how} write of {}: {e}", key(k)));
                        continue;
                    }
                    match fs::read(&path) {
                        Ok(got) if got == v => {}
                        Ok(got) => problems.push(format!(
                            "after its {how} write of {} ({} bytes) the writer read {} bytes",
                            key(k),
                            v.len(),
                            got.len()
                        )),
                        Err(e) => problems.push(format!("read back {}: {e}", key(k))),
                    }
                    match fs::metadata(&path) {
                        Ok(st) if st.len() == v.len() as u64 => {}
                        Ok(st) => problems.push(format!(
                            "after its {how} write of {} ({} bytes) stat said {}",
                            key(k),
                            v.len(),
                            st.len()
                        )),
                        Err(e) => problems.push(format!("stat {}: {e}", key(k))),
                    }
                }
                problems
            })
        })
        .collect();
    let mut problems: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in holders {
        problems.extend(h.join().unwrap());
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems[..problems.len().min(20)].join("\n")
    );
}

fn read_at_full(f: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

#[test]
fn python_writers_in_eight_threads_write_a_hundred_entries_a_second() {
    if !require_fuse() {
        return;
    }
    let m = seeded_mount();
    let script = r#"
import json, os, sys, threading, time
root = sys.argv[1]
errors = []
def writer(t):
    for n in range(50):
        p = os.path.join(root, "py%d-%d.json" % (t, n % 5))
        try:
            with open(p, "w") as f:
                json.dump({"t": t, "n": n, "pad": "x" * 4000}, f)
            with open(p) as f:
                if json.load(f)["n"] != n:
                    errors.append("%s: read back another value" % p)
        except Exception as e:
            errors.append("%s: %r" % (p, e))
threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
start = time.monotonic()
for th in threads: th.start()
for th in threads: th.join()
took = time.monotonic() - start
print("%.1f" % (400 / took))
for e in errors[:10]: print(e, file=sys.stderr)
sys.exit(1 if errors else 0)
"#;
    let out = m.run("python3", &["-c", script, &m.mnt.to_string_lossy()]);
    assert_success("python writers", &out);
    let rate: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(
        rate >= 100.0,
        "python wrote {rate} entries/s through the mount"
    );
    let log = m.stderr();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    assert!(
        warnings.is_empty(),
        "python's writes logged warnings (isatty's ioctl?):\n{}",
        warnings.join("\n")
    );
}

/// The storm a killed daemon leaves behind: this test binary run again as a child process
/// that writes through `CACHETTA_STORM_MNT` until it is killed. Ignored unless run so.
#[test]
#[ignore = "run by kill_9_during_a_storm_leaves_a_dead_mount_that_remounts_whole"]
fn storm_child_process() {
    let Some(mnt) = std::env::var_os("CACHETTA_STORM_MNT") else {
        return;
    };
    let mnt = PathBuf::from(mnt);
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let mnt = mnt.clone();
            thread::spawn(move || {
                for n in (t * 1_000_000 + 1).. {
                    let k = n % KEYS;
                    let path = mnt.join(key(k));
                    let _ = if t % 2 == 0 {
                        write_truncating(&path, &value(k, t, n))
                    } else {
                        write_renaming(&path, &format!("c{t}"), &value(k, t, n))
                    };
                    let _ = fs::read(&path);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}

/// Child storm processes, killed by PID when dropped. If one cannot die (stuck in the kernel
/// on a hung connection), the connection is aborted first, so the test fails instead of
/// hanging.
struct Storm {
    children: Vec<Child>,
    mnt: PathBuf,
}

impl Storm {
    fn start(mnt: &Path, processes: usize) -> Storm {
        let exe = std::env::current_exe().unwrap();
        let children = (0..processes)
            .map(|_| {
                let _fork = forking();
                Command::new(&exe)
                    .args([
                        "--exact",
                        "storm::storm_child_process",
                        "--ignored",
                        "--nocapture",
                    ])
                    .env("CACHETTA_STORM_MNT", mnt)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        Storm {
            children,
            mnt: mnt.to_path_buf(),
        }
    }

    /// Kill every child; true if all were gone within `within`.
    fn end(&mut self, within: Duration) -> bool {
        for c in &mut self.children {
            let _ = c.kill();
        }
        let deadline = Instant::now() + within;
        let mut all_gone = true;
        for c in &mut self.children {
            loop {
                if c.try_wait().ok().flatten().is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    all_gone = false;
                    abort_connection(&self.mnt);
                    let _ = c.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        self.children.clear();
        all_gone
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        self.end(Duration::from_secs(5));
    }
}

/// The crash loop of issues #10 and #11: 50 times, kill -9 the daemon in the middle of a storm
/// of `O_TRUNC` and temp+rename writers. Each time the daemon is gone at once, the next mount
/// comes up unaided over the dead one, and every entry is a whole value some writer wrote; no
/// staging file is ever shown, and `cachetta gc` removes the leftovers at the end.
#[test]
fn kill_9_during_a_storm_leaves_a_dead_mount_that_remounts_whole() {
    if !require_fuse() {
        return;
    }
    let mut m = seeded_mount();
    for round in 0..50 {
        let mut storm = Storm::start(&m.mnt, 2);
        thread::sleep(Duration::from_millis(200 + 37 * (round % 10) as u64));
        let pid = m.pid().unwrap();
        let killed = Instant::now();
        let status = m.signal_and_wait(libc::SIGKILL);
        let took = killed.elapsed();
        if status.is_none() {
            abort_connection(&m.mnt);
            let _ = m.signal_and_wait(libc::SIGKILL);
        }
        assert!(
            status.is_some() && took < Duration::from_secs(2),
            "round {round}: daemon {pid} still there {took:?} after kill -9 (hung in the kernel)"
        );
        let storm_gone = storm.end(Duration::from_secs(5));
        assert!(storm_gone, "round {round}: writers hung on the dead mount");
        // The dead mount answers ENOTCONN; the next mount replaces it.
        m.restart();
        for k in 0..KEYS {
            let bytes = fs::read(m.path(key(k)))
                .unwrap_or_else(|e| panic!("round {round}: {} after remount: {e}", key(k)));
            assert!(
                is_whole_value(k, &bytes),
                "round {round}: {} is torn",
                key(k)
            );
            let backing = fs::read(m.backing_path(key(k))).unwrap();
            assert_eq!(
                backing,
                bytes,
                "round {round}: {} differs in the backing dir",
                key(k)
            );
        }
        let listed = m.list("");
        assert!(
            listed
                .iter()
                .all(|n| n.to_string_lossy().ends_with(".json")),
            "round {round}: the mount lists non-entries: {listed:?}"
        );
        for staging in staging_names(&m) {
            assert_eq!(
                errno_of(fs::metadata(m.path(&staging))),
                libc::ENOENT,
                "round {round}: {staging} shows through the mount"
            );
        }
    }
    // The killed daemons' staging files are left over; gc removes them (aged past the few
    // seconds in which a live writer would hold them).
    m.stop();
    for staging in staging_names(&m) {
        m.set_mtime_ago(&staging, Duration::from_secs(60));
    }
    let out = m.cachetta(&["gc".as_ref(), "--backing".as_ref(), m.backing.as_os_str()]);
    assert_success("cachetta gc", &out);
    assert_eq!(
        staging_names(&m),
        Vec::<String>::new(),
        "gc left staging files"
    );
    m.restart();
    for k in 0..KEYS {
        assert!(is_whole_value(k, &fs::read(m.path(key(k))).unwrap()));
    }
}

/// Staging files in the backing root.
fn staging_names(m: &Mount) -> Vec<String> {
    fs::read_dir(&m.backing)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".cachetta-staging."))
        .collect()
}
