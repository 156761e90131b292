//! The daemon under systemd (SPEC §14): `READY=1`, `STATUS=` and `STOPPING=1` on
//! `NOTIFY_SOCKET`; log lines with syslog priorities and no timestamps when `JOURNAL_STREAM`
//! names stderr, and ordinary lines when it names something else. Every test runs in a
//! [`Scene`].

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;
use crate::daemon_scene::*;

/// `DEV:INODE` of `path`, as systemd writes `JOURNAL_STREAM`.
fn stream_of(path: &Path) -> String {
    let meta = fs::metadata(path).unwrap();
    format!("{}:{}", meta.dev(), meta.ino())
}

/// Start the daemon in the foreground with `JOURNAL_STREAM` set to what `journal_stream`
/// makes of its stderr file, and a `NOTIFY_SOCKET` it cannot use (a warning to log); stop it
/// with SIGTERM and return its stderr.
fn stderr_of_a_run(s: &Scene, journal_stream: impl FnOnce(&Path) -> String) -> String {
    let stderr = s.path("daemon.stderr");
    // `foreground` truncates this file, which keeps its inode.
    File::create(&stderr).unwrap();
    let value = journal_stream(&stderr);
    let mut child = s.foreground(
        &[],
        &[
            ("JOURNAL_STREAM", Path::new(&value)),
            ("NOTIFY_SOCKET", Path::new("vsock:2:1234")),
        ],
    );
    assert!(stop(&mut child, libc::SIGTERM).success());
    s.stderr()
}

#[test]
fn journal_stream_naming_stderr_gives_each_line_its_priority_and_no_timestamp() {
    if !require_fuse() {
        return;
    }
    let s = Scene::new();
    let stderr = stderr_of_a_run(&s, stream_of);
    let has = |prefix: &str, needle: &str| {
        stderr
            .lines()
            .any(|l| l.starts_with(prefix) && l.contains(needle))
    };
    assert!(has("<4>WARN ", "ignoring NOTIFY_SOCKET"), "{stderr}");
    assert!(has("<6>INFO ", "mounted"), "{stderr}");
    assert!(has("<6>INFO ", "ready"), "{stderr}");
    for line in stderr.lines() {
        let rest = line
            .strip_prefix(['<'])
            .and_then(|l| l.split_once('>'))
            .map(|(priority, rest)| (priority.to_owned(), rest));
        let Some((priority, rest)) = rest else {
            panic!("a line without a priority: {line:?}\n{stderr}");
        };
        assert!(
            ["3", "4", "6", "7"].contains(&priority.as_str()),
            "{line:?}"
        );
        assert!(
            !rest.starts_with(|c: char| c.is_ascii_digit()),
            "a timestamp in the journal: {line:?}"
        );
    }
}

#[test]
fn journal_stream_naming_another_file_leaves_timestamps_and_no_priorities() {
    if !require_fuse() {
        return;
    }
    let s = Scene::new();
    let other = s.path("other");
    fs::write(&other, b"").unwrap();
    // Inherited from a unit whose stderr went somewhere else: not the journal.
    let stderr = stderr_of_a_run(&s, |_| stream_of(&other));
    assert!(stderr.contains("ignoring NOTIFY_SOCKET"), "{stderr}");
    assert!(stderr.contains("ready"), "{stderr}");
    for line in stderr.lines() {
        assert!(
            line.starts_with(|c: char| c.is_ascii_digit()),
            "no timestamp: {line:?}\n{stderr}"
        );
        assert!(!line.contains("<4>") && !line.contains("<6>"), "{line:?}");
    }
}

#[test]
fn notify_socket_gets_ready_then_status_every_few_seconds_then_stopping_last() {
    if !require_fuse() {
        return;
    }
    let s = Scene::new();
    write_file(&s.backing().join("x.json"), b"[7]");
    let socket_path = s.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let recv = || {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap_or_else(|e| {
            panic!("no notification within 10 s ({e}); stderr:\n{}", s.stderr())
        });
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };

    // Spawned by hand: `foreground` waits for the mount, this test waits for the datagram.
    let stderr = File::create(s.path("daemon.stderr")).unwrap();
    let mut child = spawn(
        s.command(&s.mount_args(&[]))
            .env("NOTIFY_SOCKET", &socket_path)
            .stdout(Stdio::null())
            .stderr(stderr),
    );
    assert_eq!(recv(), "READY=1");
    // READY=1 means the mount answers now, not soon.
    assert!(is_fuse_mount(&s.mnt()));
    assert_eq!(
        recv(),
        "STATUS=hit ratio n/a, 0 entries in memory, 0 refreshing"
    );
    assert_eq!(fs::read(s.mnt().join("x.json")).unwrap(), b"[7]");
    // The next status (5 s later) counts the hit.
    let status = recv();
    assert!(
        status.starts_with("STATUS=hit ratio 100.0%, "),
        "{status:?}"
    );

    signal(child.id() as libc::pid_t, libc::SIGTERM);
    let mut last = recv();
    while last.starts_with("STATUS=") {
        last = recv();
    }
    assert_eq!(last, "STOPPING=1");
    let status = wait_timeout(&mut child, STOP_TIMEOUT).expect("daemon still running");
    assert!(status.success(), "exit status {status}");
    // The status thread ended before STOPPING=1.
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    let after = socket.recv(&mut buf).map(|n| buf[..n].to_vec());
    assert!(after.is_err(), "sent after STOPPING=1: {after:?}");
    let stderr = s.stderr();
    assert!(stderr.contains("ready"), "stderr:\n{stderr}");
}
