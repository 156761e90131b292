//! A mount over GlusterFS (SPEC §13 "on a real distributed filesystem", issue #20), where the
//! filesystem refuses what a local one allows: `renameat2` flags (`EINVAL`), and everything,
//! with `ENOTCONN`, while its server is away. `cachetta gc` and the daemon's gc remove expired
//! entries and nothing a writer holds; `rename` with `RENAME_NOREPLACE` works through the
//! mount; and while the brick is killed, the mount answers `EIO` or what it kept, within the
//! volume's ping-timeout, logs the outage once, is not taken for a dead mount, and serves again
//! by itself when the brick returns.
//!
//! The outage test breaks a volume of its own (`scripts/gluster up outage-PID`); the others
//! use a directory of their own on the volume of `CACHETTA_GLUSTER_A`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::common::*;

const FRESH: &[u8] = br#"{"fresh":true}"#;
const EXPIRED: &[u8] = br#"{"expired":true}"#;

/// A backing dir on GlusterFS as gc finds it: put there through client B (another machine),
/// with a mount over it through client A. (Fields drop in order: the writer closes before the
/// mount is unmounted.)
struct GcScene {
    /// A writer on the mount that has written part of `w.json` and not closed it.
    writer: File,
    /// Its staging file.
    writer_staging: String,
    /// A staging file a writer on client B holds (its `flock`).
    _held_on_b: File,
    m: Mount,
    dir: Arc<GlusterDir>,
}

const HELD_ON_B: &str = ".cachetta-staging.other-machine.1.tmp";
const ABANDONED: &str = ".cachetta-staging.abandoned.1.tmp";

/// Two expired entries (`expired.json`, `d/expired.json`), a fresh one, an abandoned staging
/// file nobody holds, a staging file a writer on client B holds, and the staging file of an
/// idle writer on the mount; every staging file aged two hours, past any grace gc gives.
fn gc_scene(clients: &GlusterClients, toml: &str) -> GcScene {
    let dir = clients.new_dir();
    let aged = |rel: &str, bytes: &[u8]| {
        write_file(&dir.b.join(rel), bytes);
        set_mtime(&dir.b.join(rel), SystemTime::now() - 2 * HOUR).unwrap();
    };
    aged("expired.json", EXPIRED);
    aged("d/expired.json", EXPIRED);
    aged(ABANDONED, b"[1,");
    write_file(&dir.b.join("fresh.json"), FRESH);
    let held_on_b = File::create(dir.b.join(HELD_ON_B)).unwrap();
    rustix::fs::flock(
        &held_on_b,
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    )
    .expect("flock through client B");
    (&held_on_b).write_all(b"[2,").unwrap();
    set_mtime(&dir.b.join(HELD_ON_B), SystemTime::now() - 2 * HOUR).unwrap();

    let m = Mount::new()
        .shared_backing(&dir.a)
        .holding(dir.clone())
        .config(toml)
        .start();
    let mut writer = File::create(m.path("w.json")).unwrap();
    writer.write_all(b"[1, 2").unwrap();
    let mut staged = staging_files(&dir.a);
    staged.retain(|n| n != HELD_ON_B && n != ABANDONED);
    assert_eq!(staged.len(), 1, "the writer's staging file: {staged:?}");
    let writer_staging = staged.remove(0);
    set_mtime(&dir.a.join(&writer_staging), SystemTime::now() - 2 * HOUR).unwrap();
    GcScene {
        writer,
        writer_staging,
        _held_on_b: held_on_b,
        m,
        dir,
    }
}

impl GcScene {
    /// The expired entries and the abandoned staging file are gone, as both clients see it.
    fn swept(&self) -> bool {
        ["expired.json", "d/expired.json", ABANDONED]
            .iter()
            .all(|rel| !self.dir.a.join(rel).exists() && !self.dir.b.join(rel).exists())
    }

    /// The fresh entry and both staging files in use are still there, and the idle writer's
    /// entry is published whole when it closes.
    fn assert_kept_and_finish(self) {
        for rel in ["fresh.json", HELD_ON_B, &self.writer_staging] {
            assert!(
                self.dir.a.join(rel).exists() && self.dir.b.join(rel).exists(),
                "gc removed {rel}"
            );
        }
        assert_eq!(fs::read(self.m.path("fresh.json")).unwrap(), FRESH);
        let mut writer = self.writer;
        writer.write_all(b"]").unwrap();
        close_fd(writer).unwrap();
        assert_eq!(fs::read(self.m.path("w.json")).unwrap(), b"[1, 2]");
        assert!(eventually(GLUSTER_CLIENT_CACHE * 3, || {
            fs::read(self.dir.b.join("w.json")).is_ok_and(|c| c == b"[1, 2]")
        }));
    }
}

#[test]
fn cachetta_gc_over_glusterfs_removes_expired_entries_and_leaves_fresh_and_held_files() {
    let Some(clients) = require_gluster() else {
        return;
    };
    // No `no_forks()`: `cachetta gc` runs while the writer is open (see faults.rs).
    let scene = gc_scene(&clients, "duration = \"1h\"\n");
    let config = scene.m.config_path.clone().unwrap();
    let out = scene.m.cachetta(&[
        "gc".as_ref(),
        "--backing".as_ref(),
        scene.dir.a.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_success("cachetta gc", &out);
    assert!(!stderr.contains("cannot remove"), "{stderr}");
    for rel in ["expired.json", "d/expired.json", ABANDONED] {
        assert!(stdout.contains(&format!("removed {rel} (")), "{stdout}");
    }
    assert!(
        eventually(GLUSTER_CLIENT_CACHE * 3, || scene.swept()),
        "{stdout}"
    );
    scene.assert_kept_and_finish();
}

#[test]
fn the_daemons_gc_over_glusterfs_removes_expired_entries_and_leaves_fresh_and_held_files() {
    let Some(clients) = require_gluster() else {
        return;
    };
    let scene = gc_scene(&clients, "duration = \"1h\"\ngc_interval = \"1s\"\n");
    let swept = eventually(Duration::from_secs(15), || scene.swept());
    let log = scene.m.stderr();
    assert!(swept, "not swept within 15 s; daemon log:\n{log}");
    assert!(!log.contains("cannot remove"), "{log}");
    // Two more sweeps with everything left in place.
    let sweeps = |log: &str| log.matches("gc: ").count();
    let so_far = sweeps(&log);
    assert!(
        eventually(Duration::from_secs(10), || sweeps(&scene.m.stderr())
            >= so_far + 2),
        "{}",
        scene.m.stderr()
    );
    scene.assert_kept_and_finish();
}

/// `renameat2(from, to, RENAME_NOREPLACE)` relative to the working directory.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (cstring(from), cstring(to));
    // SAFETY: both are valid NUL-terminated paths that outlive the call.
    check_rc(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    })
    .map(|_| ())
}

#[test]
fn rename_noreplace_through_a_mount_over_glusterfs_refuses_an_existing_target_and_moves_otherwise()
{
    let Some(clients) = require_gluster() else {
        return;
    };
    let dir = clients.new_dir();
    let m = Mount::new()
        .shared_backing(&dir.a)
        .holding(dir.clone())
        .start();
    fs::write(m.path("a.json"), b"[\"a\"]").unwrap();
    fs::write(m.path("b.json"), b"[\"b\"]").unwrap();
    assert_eq!(
        errno_of(rename_noreplace(&m.path("a.json"), &m.path("b.json"))),
        libc::EEXIST
    );
    assert_eq!(fs::read(m.path("a.json")).unwrap(), b"[\"a\"]");
    assert_eq!(fs::read(m.path("b.json")).unwrap(), b"[\"b\"]");
    rename_noreplace(&m.path("a.json"), &m.path("c.json"))
        .expect("renameat2(RENAME_NOREPLACE) onto a free name");
    assert_eq!(errno_of(fs::metadata(m.path("a.json"))), libc::ENOENT);
    assert_eq!(fs::read(m.path("c.json")).unwrap(), b"[\"a\"]");
    assert!(eventually(GLUSTER_CLIENT_CACHE * 3, || {
        fs::read(dir.b.join("c.json")).is_ok_and(|c| c == b"[\"a\"]")
            && !dir.b.join("a.json").exists()
    }));
}

/// Run `op` on a thread of its own: how long it took and its answer, or `None` if it has not
/// answered within 30 s (the thread is left behind).
fn timed<T: Send + 'static>(
    op: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> (Duration, Option<io::Result<T>>) {
    let (tx, rx) = mpsc::channel();
    let began = Instant::now();
    thread::spawn(move || {
        let _ = tx.send(op());
    });
    let answer = rx.recv_timeout(Duration::from_secs(30)).ok();
    (began.elapsed(), answer)
}

/// `cat`, `ls` and `stat` of an entry and of the mount root during an outage: each must
/// answer within the ping-timeout and a margin, with what it kept or `EIO`, never `ENOTCONN`.
fn outage_answers(m: &Mount, content: &'static [u8], limit: Duration) -> Vec<String> {
    let mut problems = Vec::new();
    let entry = m.path("x.json");
    let root = m.mnt.clone();
    let mut judge = |what: &str, (took, answer): (Duration, Option<io::Result<bool>>)| {
        let verdict = match answer {
            None => "no answer within 30 s".to_owned(),
            Some(Ok(true)) => String::new(),
            Some(Ok(false)) => "an answer that was never there".to_owned(),
            Some(Err(e)) if e.raw_os_error() == Some(libc::EIO) => String::new(),
            Some(Err(e)) => format!("{e}"),
        };
        if !verdict.is_empty() || took > limit {
            problems.push(format!("{what}: {verdict} after {took:?}"));
        }
    };
    let path = entry.clone();
    judge("cat x.json", timed(move || Ok(fs::read(path)? == content)));
    let path = root.clone();
    judge(
        "ls of the root",
        timed(move || {
            let names: Vec<_> = fs::read_dir(path)?.collect::<io::Result<_>>()?;
            Ok(names.iter().all(|n| n.file_name() == "x.json"))
        }),
    );
    let path = entry.clone();
    judge(
        "stat x.json",
        timed(move || Ok(fs::metadata(path)?.len() == content.len() as u64)),
    );
    let path = root.clone();
    judge(
        "stat of the root",
        timed(move || Ok(fs::metadata(path)?.is_dir())),
    );
    problems
}

/// Warnings and errors in the daemon's log after the first `skip` bytes.
fn warnings_after(m: &Mount, skip: usize) -> Vec<String> {
    m.stderr()[skip..]
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .map(str::to_owned)
        .collect()
}

/// `cachetta mount` on the mountpoint of a mount whose server is away: it must refuse
/// ("already mounted") and leave the mount alone. One that mounts instead is ended (SIGTERM,
/// which unmounts it). The problems found.
fn second_mount_refused(m: &Mount) -> Vec<String> {
    let config = m.config_path.clone().unwrap();
    let stderr_path = m.root.join("second-mount.stderr");
    let mut cmd = m.home().command(&[
        "mount".as_ref(),
        m.mnt.as_os_str(),
        "--backing".as_ref(),
        m.backing.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    cmd.stdout(Stdio::null())
        .stderr(File::create(&stderr_path).unwrap());
    let mut child = spawn(&mut cmd);
    let mut problems = Vec::new();
    let status = wait_timeout(&mut child, Duration::from_secs(15));
    if status.is_none() {
        problems.push("a second `cachetta mount` on the mountpoint kept running".to_owned());
        stop(&mut child, libc::SIGTERM);
    }
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    let refused = status.is_some_and(|s| s.code() == Some(2));
    if !refused || !stderr.contains("already mounted") {
        problems.push(format!(
            "a second `cachetta mount` exited with {status:?}, not refusing with \"already mounted\": {stderr}"
        ));
    }
    if !is_fuse_mount(&m.mnt) || m.pid().is_none_or(|pid| !alive(pid as libc::pid_t)) {
        problems.push("the mount was taken down by the second `cachetta mount`".to_owned());
    }
    problems
}

#[test]
fn while_the_brick_is_away_the_mount_answers_eio_or_kept_content_and_serves_again_by_itself() {
    if require_gluster().is_none() {
        return;
    }
    const CONTENT: &[u8] = br#"{"kept":true}"#;
    let volume = GlusterVolume::up(&format!("outage-{}", std::process::id()));
    let backing: PathBuf = volume.clients.a.join("cache");
    let m = Mount::new()
        .shared_backing(&backing)
        .config("duration = \"1h\"\n")
        .args(&["--watch", "poll=200ms"])
        .backing_file("x.json", CONTENT)
        .start();
    assert_eq!(fs::read(m.path("x.json")).unwrap(), CONTENT);
    let daemon = m.pid().unwrap();
    let log_before = m.stderr().len();

    let brick = volume.kill_brick();
    let limit = GLUSTER_PING_TIMEOUT + Duration::from_secs(2);
    let mut problems = Vec::new();
    // Rounds 0.6 s apart: the last comes after the kernel's cached names and attributes (1 s
    // at most) are gone, so the daemon answers it.
    for round in 0..3 {
        problems.extend(
            outage_answers(&m, CONTENT, limit)
                .into_iter()
                .map(|p| format!("round {round}, {p}")),
        );
        thread::sleep(Duration::from_millis(600));
    }
    problems.extend(second_mount_refused(&m));
    let warnings = warnings_after(&m, log_before);
    if warnings.len() != 1 {
        problems.push(format!(
            "{} warnings logged during the outage, not one; the first: {:#?}",
            warnings.len(),
            &warnings[..warnings.len().min(8)]
        ));
    }

    let restarted = volume.restart_brick(brick);
    let serves = eventually(Duration::from_secs(20), || {
        fs::read(m.path("x.json")).is_ok_and(|c| c == CONTENT)
            && fs::read_dir(&m.mnt).is_ok()
            && fs::metadata(&m.mnt).is_ok()
    });
    let took = restarted.elapsed();
    if !serves || took > Duration::from_secs(10) {
        problems.push(format!(
            "the mount serves again {took:?} after the brick's restart ({})",
            if serves {
                "too late"
            } else {
                "not within 20 s"
            }
        ));
    } else {
        fs::write(m.path("y.json"), b"[\"after\"]").unwrap();
        assert_eq!(fs::read(m.path("y.json")).unwrap(), b"[\"after\"]");
        if m.pid() != Some(daemon) || !is_fuse_mount(&m.mnt) {
            problems.push("the mount was replaced".to_owned());
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems: {problems:#?}\nlog during the outage:\n{}",
        problems.len(),
        m.stderr()[log_before..]
            .lines()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
