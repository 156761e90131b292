//! Faults (issue #11): a full disk, writes in progress that gc or `rmdir` must not touch. Every
//! entry stays the old or the new content, no staging file is left behind, and the mount keeps
//! working once the fault is gone.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::common::*;

/// A small tmpfs mounted over a directory, unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(at).unwrap();
        let out = output(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(at),
        );
        assert_success("mount tmpfs", &out);
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        force_unmount(&self.0);
    }
}

/// Write `chunks` through one open (`O_TRUNC`) and close it: the first error of a write, and
/// the result of the close.
fn write_then_close(
    path: &Path,
    chunks: impl Iterator<Item = Vec<u8>>,
) -> (Option<i32>, Option<i32>) {
    let mut f = File::create(path).unwrap();
    let mut write_error = None;
    for chunk in chunks {
        if let Err(e) = f.write_all(&chunk) {
            write_error = e.raw_os_error();
            break;
        }
    }
    let close_error = close_fd(f).err().and_then(|e| e.raw_os_error());
    (write_error, close_error)
}

#[test]
fn a_full_disk_fails_write_and_close_with_enospc_and_publishes_nothing() {
    if !require_fuse() {
        return;
    }
    let b = Mount::new();
    let _tmpfs = Tmpfs::mount(b.backing(), "3m");
    let m = b.start();
    let _no_forks = no_forks();
    let old = b"{\"old\":true}".to_vec();
    fs::write(m.path("x.json"), &old).unwrap();

    // A 5 MiB JSON number: any prefix of it is valid JSON too.
    let mut first = true;
    let chunks = (0..80).map(|_| {
        let mut chunk = if std::mem::take(&mut first) {
            b"0.".to_vec()
        } else {
            Vec::new()
        };
        chunk.resize(chunk.len() + 64 * 1024, b'1');
        chunk
    });
    let (write_error, close_error) = write_then_close(&m.path("x.json"), chunks);
    assert_eq!(
        write_error,
        Some(libc::ENOSPC),
        "a write fails for lack of space"
    );
    assert_eq!(
        close_error,
        Some(libc::ENOSPC),
        "and the close says so again, not EINVAL"
    );
    assert_eq!(
        fs::read(m.path("x.json")).unwrap(),
        old,
        "the old entry stays"
    );
    assert_eq!(fs::read(m.backing_path("x.json")).unwrap(), old);
    assert!(
        staging_files(&m.backing).is_empty(),
        "{:?}",
        staging_files(&m.backing)
    );
    let stats = stats(&m);
    assert_eq!(
        stats["writes_rejected"], 0,
        "a full disk is not a rejected write"
    );

    // A small write while the disk is full: fails too, the entry stays.
    let filler = m.backing_path("filler");
    let mut f = File::create(&filler).unwrap();
    let block = vec![b'x'; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    drop(f);
    let (write_error, close_error) =
        write_then_close(&m.path("x.json"), std::iter::once(b"{\"a\":1}".to_vec()));
    assert!(
        write_error == Some(libc::ENOSPC) || close_error == Some(libc::ENOSPC),
        "a 7-byte write on a full disk: write {write_error:?}, close {close_error:?}"
    );
    assert_eq!(close_error, Some(libc::ENOSPC));
    assert_eq!(fs::read(m.path("x.json")).unwrap(), old);
    assert!(staging_files(&m.backing).is_empty());

    // Space again: the mount works as before.
    fs::remove_file(&filler).unwrap();
    fs::write(m.path("x.json"), b"{\"new\":1}").unwrap();
    assert_entry(&m, "x.json", b"{\"new\":1}");
}

fn set_backing_age(m: &Mount, name: &str, age: Duration) {
    set_mtime(&m.backing.join(name), SystemTime::now() - age).unwrap();
}

fn gc(m: &Mount) -> String {
    let out = m.cachetta(&["gc".as_ref(), "--backing".as_ref(), m.backing.as_os_str()]);
    assert_success("cachetta gc", &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn gc_leaves_alone_what_writers_hold_open_however_old() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().start();
    // No `no_forks()` here: `cachetta gc` is spawned while the writer is open. The spawned
    // child's close of its copy of the descriptor is a close like any other (SPEC §3).
    // An idle writer of an entry: its staging file, aged two hours.
    let mut writer = File::create(m.path("x.json")).unwrap();
    writer.write_all(b"[1, 2").unwrap();
    let staged = staging_files(&m.backing);
    assert_eq!(staged.len(), 1, "{staged:?}");
    set_backing_age(&m, &staged[0], 2 * HOUR);
    // An editor's swap file, open through the mount, aged two hours.
    let mut swap = File::create(m.path(".x.json.swp")).unwrap();
    swap.write_all(b"swap").unwrap();
    set_backing_age(&m, ".x.json.swp", 2 * HOUR);
    // And an abandoned scratch file nobody holds.
    fs::write(m.backing_path("abandoned.tmp"), b"x").unwrap();
    set_backing_age(&m, "abandoned.tmp", 2 * HOUR);

    let swept = gc(&m);
    assert!(swept.contains("abandoned.tmp"), "{swept}");
    assert!(
        m.backing_path(&staged[0]).exists(),
        "gc removed a staging file in use: {swept}"
    );
    assert!(
        m.backing_path(".x.json.swp").exists(),
        "gc removed an open swap file: {swept}"
    );
    writer.write_all(b"]").unwrap();
    close_fd(writer).unwrap();
    assert_entry(&m, "x.json", b"[1, 2]");
    drop(swap);
}

#[test]
fn rmdir_never_removes_a_write_in_progress() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().start();
    let _no_forks = no_forks();
    fs::create_dir(m.path("d")).unwrap();
    let mut writer = File::create(m.path("d/x.json")).unwrap();
    writer.write_all(b"{\"v\":").unwrap();
    assert_eq!(errno_of(fs::remove_dir(m.path("d"))), libc::ENOTEMPTY);
    writer.write_all(b"1}").unwrap();
    close_fd(writer).unwrap();
    assert_entry(&m, "d/x.json", b"{\"v\":1}");
}

#[test]
fn with_allow_other_another_user_owns_what_they_make_and_cannot_read_what_is_not_theirs() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    if !require_fuse() {
        return;
    }
    const NOBODY: u32 = 65534;
    let b = Mount::new().args(&["--allow-other"]);
    // Let the other user reach the mountpoint, and create in the root (like /tmp).
    fs::set_permissions(b.root(), fs::Permissions::from_mode(0o755)).unwrap();
    let b = b.prepare(|backing| {
        fs::set_permissions(backing, fs::Permissions::from_mode(0o1777)).unwrap();
        fs::write(backing.join("secret.json"), b"{}").unwrap();
        fs::set_permissions(
            backing.join("secret.json"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    });
    let m = b.start();
    let as_nobody = |script: &str| {
        let _fork = forking();
        Command::new("sh")
            .args(["-c", script])
            .current_dir(&m.mnt)
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap()
    };
    let out = as_nobody("cat secret.json");
    assert!(!out.status.success(), "nobody read a 0600 entry of root's");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_nobody(
        r#"set -e
mkdir mine
echo '{"a":1}' > mine/x.json
echo '{"a":2}' > mine/x.json
python3 -c '
import os, tempfile
fd, tmp = tempfile.mkstemp(dir="mine", suffix=".tmp")
os.write(fd, b"[3]"); os.close(fd)
os.replace(tmp, "mine/y.json")'
cat mine/x.json mine/y.json"#,
    );
    assert_success("nobody's writes in a directory of their own", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{\"a\":2}\n[3]");
    for rel in ["mine", "mine/x.json", "mine/y.json"] {
        let meta = fs::metadata(m.backing_path(rel)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (NOBODY, NOBODY),
            "{rel} belongs to its maker"
        );
    }
}

#[test]
fn files_with_absurd_timestamps_are_judged_without_a_panic() {
    if !require_fuse() {
        return;
    }
    let b = Mount::new();
    // tmpfs keeps any 64-bit time (ext4 would clamp it).
    let _tmpfs = Tmpfs::mount(b.backing(), "4m");
    let m = b.start();
    fs::create_dir(m.backing_path("olddir")).unwrap();
    for (name, secs) in [
        ("past.json", i64::MIN),
        ("future.json", i64::MAX),
        ("olddir", i64::MIN),
    ] {
        let path = m.backing_path(name);
        if !path.is_dir() {
            fs::write(&path, b"{}").unwrap();
        }
        set_mtime_raw(&path, secs, 0).unwrap();
    }
    // The one in the distant past is expired; the one in the future is fresh (clock skew).
    let mut listed = m.list("");
    listed.sort();
    assert_eq!(listed, names(&["future.json", "olddir"]));
    let out = m.run("ls", &["-la", "olddir", "."]);
    assert_success("ls -la", &out);
    assert_eq!(errno_of(fs::metadata(m.path("past.json"))), libc::ENOENT);
    assert_eq!(fs::read(m.path("future.json")).unwrap(), b"{}");
    let out = m.run("getfattr", &["-d", "future.json"]);
    assert_success("getfattr", &out);
    for args in [&["ls", "--all"][..], &["gc", "--dry-run"][..]] {
        let mut full: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        full.extend(["--backing".as_ref(), m.backing.as_os_str()]);
        let out = m.cachetta(&full);
        assert_success(&format!("cachetta {}", args.join(" ")), &out);
    }
    assert!(!m.stderr().contains("panicked"), "{}", m.stderr());
}

#[test]
fn a_scratch_file_renamed_onto_an_entry_while_open_publishes_only_what_was_validated() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new().start();
    let _no_forks = no_forks();
    let mut f = File::create(m.path("x.json.tmp")).unwrap();
    f.write_all(b"[1]").unwrap();
    fs::rename(m.path("x.json.tmp"), m.path("x.json")).unwrap();
    // The writer goes on writing through its descriptor: none of it reaches the entry.
    f.write_all(b", 2]").unwrap();
    close_fd(f).unwrap();
    assert_entry(&m, "x.json", b"[1]");
    assert!(!m.backing_path("x.json.tmp").exists());
    // Invalid content is refused the same way, and the entry stays.
    let mut f = File::create(m.path("y.tmp")).unwrap();
    f.write_all(b"[oops").unwrap();
    assert_eq!(
        errno_of(fs::rename(m.path("y.tmp"), m.path("x.json"))),
        libc::EINVAL
    );
    close_fd(f).unwrap();
    assert_entry(&m, "x.json", b"[1]");
}

fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Children of `pid` that are zombies (exited, never reaped).
fn zombie_children(pid: u32) -> Vec<String> {
    let mut zombies = Vec::new();
    for proc_dir in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = fs::read_to_string(proc_dir.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1) == Some(&pid.to_string().as_str()) && fields.first() == Some(&"Z") {
            zombies.push(stat);
        }
    }
    zombies
}

#[test]
fn hostile_refresh_commands_cost_no_memory_leave_no_zombie_and_stale_content_stays() {
    if !require_fuse() {
        return;
    }
    let b = Mount::new();
    let escaped = b.root().join("escaped.pid");
    let config = format!(
        r#"
duration = "5m"
stale = "1h"
refresh_timeout = "2s"
refresh_backoff = "1h"
max_entry_bytes = "100MiB"
[[rule]]
match = "hang.json"
refresh = "sleep 100"
[[rule]]
match = "escape.json"
refresh = "setsid sh -c 'echo $$ > {}; exec sleep 100' & echo '{{\"escaped\":1}}'"
[[rule]]
match = "flood.json"
refresh = "head -c 1073741824 /dev/zero | tr '\\0' 1"
[[rule]]
match = "garbage.json"
refresh = "echo 'not json at all'"
[[rule]]
match = "fails.json"
refresh = "echo oops >&2; exit 3"
"#,
        escaped.display()
    );
    let keys = ["hang", "escape", "flood", "garbage", "fails"];
    let mut b = b.config(&config);
    for key in keys {
        b = b.backing_file_aged(
            format!("{key}.json"),
            format!("{{\"old\":\"{key}\"}}"),
            10 * MINUTE,
        );
    }
    let m = b.start();
    let pid = m.pid().unwrap();
    let idle = rss_kib(pid);
    let started = std::time::Instant::now();
    // Each read is answered at once with the stale content, and starts the refresh.
    for key in keys {
        let got = fs::read(m.path(format!("{key}.json"))).unwrap();
        assert_eq!(got, format!("{{\"old\":\"{key}\"}}").as_bytes(), "{key}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stale reads waited"
    );
    let attr = |key: &str, name: &str| -> Option<String> {
        let value = getxattr(&m.path(format!("{key}.json")), name).ok()?;
        Some(String::from_utf8_lossy(&value).into_owned())
    };
    let mut peak = idle;
    assert!(
        eventually(Duration::from_secs(20), || {
            peak = peak.max(rss_kib(pid));
            keys.iter()
                .all(|k| attr(k, "user.cachetta.refreshing").as_deref() == Some("false"))
        }),
        "refreshes still running: {:?}",
        keys.map(|k| attr(k, "user.cachetta.refreshing"))
    );
    // The escaped command's own output counted; the process it left is no child of ours.
    assert_eq!(
        fs::read(m.path("escape.json")).unwrap(),
        b"{\"escaped\":1}\n"
    );
    for key in ["hang", "flood", "garbage", "fails"] {
        let got = fs::read(m.path(format!("{key}.json"))).unwrap();
        assert_eq!(
            got,
            format!("{{\"old\":\"{key}\"}}").as_bytes(),
            "{key} lost its content"
        );
        let error = attr(key, "user.cachetta.refresh_error");
        assert!(error.is_some(), "{key}: no refresh_error");
    }
    assert!(
        peak < idle + 64 * 1024,
        "daemon RSS went from {idle} KiB to {peak} KiB"
    );
    // A refresh's shell is reaped as it ends (one may be between its exit and its reaping).
    assert!(
        eventually(Duration::from_secs(5), || zombie_children(pid).is_empty()),
        "zombies: {:?}",
        zombie_children(pid)
    );
    if let Ok(text) = fs::read_to_string(&escaped) {
        if let Ok(escaped_pid) = text.trim().parse::<i32>() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(escaped_pid, libc::SIGKILL) };
        }
    }
}
