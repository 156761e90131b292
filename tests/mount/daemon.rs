//! The daemon's lifecycle: start-up refusals (exit 2), `--daemon` readiness, dead mounts after
//! a kill -9, clean stops on signals and on an external unmount, `--allow-other`,
//! `--allow-non-empty`, `--log-file`. Every test runs in a [`Scene`]; systemd's part is in
//! `daemon_systemd`.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::common::*;
use crate::daemon_scene::*;

// ---- flags -------------------------------------------------------------------------------

#[test]
fn mount_help_lists_the_daemon_flags() {
    let s = Scene::new();
    let out = s.run(&["mount", "--help"]);
    assert_success("mount --help", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--daemon",
        "--log-file",
        "--allow-other",
        "--allow-non-empty",
        "--watch",
        "--lru-entries",
        "--lru-bytes",
        "--verbose",
        "--quiet",
    ] {
        assert!(text.contains(flag), "`mount --help` lacks {flag}:\n{text}");
    }
}

#[test]
fn bad_flag_values_exit_2_naming_the_value() {
    let s = Scene::new();
    for (flag, value) in [
        ("--watch", "sometimes"),
        ("--watch", "poll=0"),
        ("--lru-bytes", "lots"),
        ("--lru-entries", "many"),
    ] {
        let out = s.run(&s.mount_args(&[flag, value]));
        assert_refused(&out, &[flag]);
        assert!(!is_mounted(&s.mnt()));
    }
}

/// A JSON string of `len` bytes.
fn json_of_len(len: usize) -> Vec<u8> {
    let mut v = vec![b'"'];
    v.resize(len - 1, b'x');
    v.push(b'"');
    v
}

/// The `user.cachetta.stats` of the scene's mount.
fn scene_stats(s: &Scene) -> serde_json::Value {
    let raw = getxattr(&s.mnt(), "user.cachetta.stats").expect("getxattr user.cachetta.stats");
    serde_json::from_slice(&raw).expect("stats are JSON")
}

/// Whether the daemon's log says it was told of a change of `name` in the backing dir.
fn log_tells_change(s: &Scene, name: &str) -> bool {
    s.log()
        .lines()
        .any(|l| l.contains("backing dir changed") && l.contains(name))
}

#[test]
fn watch_and_lru_flags_take_effect() {
    if !require_fuse() {
        return;
    }
    // Without passthrough every first read reaches the daemon, which keeps what it read in the
    // hot set that `lru_entries` and `lru_bytes` of the stats measure.
    let s = Scene::new();
    // A minute old: notify's poll watcher compares mtimes in whole seconds, so a change in
    // the second the file was written would go unseen.
    for i in 0..12 {
        let path = s.backing().join(format!("s{i}.json"));
        write_file(&path, &json_of_len(50));
        set_mtime(&path, SystemTime::now() - MINUTE).unwrap();
    }
    for i in 0..4 {
        write_file(&s.backing().join(format!("l{i}.json")), &json_of_len(255));
    }
    s.mount_daemon_env(
        &[
            "--watch",
            "poll=1s",
            "--full-scan-interval",
            "3s",
            "--lru-entries",
            "8",
            "--lru-bytes",
            "1KiB",
            "-v",
        ],
        &[("CACHETTA_PASSTHROUGH", "0")],
    );
    for i in 0..12 {
        assert_eq!(
            fs::read(s.mnt().join(format!("s{i}.json"))).unwrap(),
            json_of_len(50)
        );
    }
    let stats = scene_stats(&s);
    assert_eq!(stats["passthrough"], false, "{stats}");
    // Twelve read, 600 bytes: --lru-entries keeps eight.
    assert_eq!(stats["lru_entries"], 8, "--lru-entries 8: {stats}");
    // Four more of 255 bytes (a quarter of 1 KiB is still kept): eight would be 1220 bytes,
    // so --lru-bytes evicts down to 1 KiB.
    for i in 0..4 {
        fs::read(s.mnt().join(format!("l{i}.json"))).unwrap();
    }
    let stats = scene_stats(&s);
    let (entries, bytes) = (
        stats["lru_entries"].as_u64().unwrap(),
        stats["lru_bytes"].as_u64().unwrap(),
    );
    assert!(
        (4 * 255..=1024).contains(&bytes) && entries < 8,
        "--lru-bytes 1KiB: {stats}"
    );

    // --watch poll=1s: an entry replaced behind the mount's back is seen within a poll or two
    // (its directory's times moved)...
    assert!(eventually(MOUNT_TIMEOUT, || scene_stats(&s)["watching"] == true));
    write_file(&s.backing().join("new.tmp"), b"[1]");
    fs::rename(s.backing().join("new.tmp"), s.backing().join("s0.json")).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || log_tells_change(&s, "s0.json")),
        "the poll watcher did not report a change within 5 s; log:\n{}",
        s.log()
    );
    // ...and one rewritten in place (no directory time moves) at the next full walk, every
    // --full-scan-interval.
    write_file(&s.backing().join("s1.json"), b"[2]");
    assert!(
        eventually(Duration::from_secs(8), || log_tells_change(&s, "s1.json")),
        "the full walk did not report an in-place rewrite within 8 s; log:\n{}",
        s.log()
    );
    s.unmount();

    // ...and it is polling, not inotify: polling once an hour, nothing is reported of a change
    // that inotify would have reported at once.
    let s = Scene::new();
    write_file(&s.backing().join("x.json"), b"{}");
    set_mtime(&s.backing().join("x.json"), SystemTime::now() - MINUTE).unwrap();
    s.mount_daemon(&["--watch", "poll=1h", "-v"]);
    assert!(eventually(MOUNT_TIMEOUT, || scene_stats(&s)["watching"] == true));
    write_file(&s.backing().join("x.json"), b"[2]");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !log_tells_change(&s, "x.json"),
        "a change was reported although --watch poll=1h polls once an hour; log:\n{}",
        s.log()
    );
    s.unmount();
}

// ---- refusals ----------------------------------------------------------------------------

#[test]
fn mountpoint_inside_the_backing_dir_is_refused_with_exit_2() {
    let s = Scene::new();
    let out = s.run(&[
        "mount".as_ref(),
        s.backing().join("sub").as_os_str(),
        "--backing".as_ref(),
        s.backing().as_os_str(),
    ]);
    assert_refused(&out, &["must not contain each other", "--backing"]);
    assert!(
        !s.backing().join("sub").exists(),
        "the refused mountpoint was created inside the backing dir"
    );
}

#[test]
fn backing_dir_inside_the_mountpoint_is_refused_with_exit_2() {
    let s = Scene::new();
    let out = s.run(&[
        "mount".as_ref(),
        s.mnt().as_os_str(),
        "--backing".as_ref(),
        s.mnt().join("data").as_os_str(),
    ]);
    assert_refused(&out, &["must not contain each other"]);
}

#[test]
fn non_empty_mountpoint_is_refused_with_exit_2() {
    let s = Scene::new();
    write_file(&s.mnt().join("notes.txt"), b"mine");
    let out = s.run(&s.mount_args(&[]));
    assert_refused(&out, &["not empty", "--allow-non-empty"]);
    assert!(!is_mounted(&s.mnt()));
    assert_eq!(fs::read(s.mnt().join("notes.txt")).unwrap(), b"mine");
}

#[test]
fn refusal_with_daemon_is_printed_by_the_parent_with_exit_2() {
    let s = Scene::new();
    write_file(&s.mnt().join("notes.txt"), b"mine");
    let out = s.run(&s.mount_args(&["--daemon"]));
    assert_refused(&out, &["not empty", "--allow-non-empty"]);
    assert!(s.daemon_pids().is_empty(), "a daemon was left running");
    assert!(!is_mounted(&s.mnt()));
}

#[test]
fn unopenable_log_file_is_refused_with_exit_2() {
    let s = Scene::new();
    let out = s.run(&s.mount_args(&["--daemon", "--log-file", "/proc/cachetta/x.log"]));
    assert_refused(&out, &["/proc/cachetta/x.log", "--log-file"]);
    assert!(s.daemon_pids().is_empty(), "a daemon was left running");
}

#[test]
fn mounting_over_a_live_mount_is_refused_with_exit_2() {
    if !require_fuse() {
        return;
    }
    let s = Scene::new();
    s.mount_daemon(&[]);
    let out = s.run(&[
        "mount".as_ref(),
        s.mnt().as_os_str(),
        "--backing".as_ref(),
        s.path("other").as_os_str(),
    ]);
    assert_refused(&out, &["already mounted", "cachetta unmount"]);
    // The first mount is untouched.
    write_file(&s.backing().join("x.json"), b"[1]");
    assert_eq!(fs::read(s.mnt().join("x.json")).unwrap(), b"[1]");
    s.unmount();
}

#[test]
fn unwritable_backing_dir_is_refused_unless_read_only() {
    if !require_fuse() {
        return;
    }
    let s = Scene::new();
    let backing = s.backing();
    write_file(&backing.join("x.json"), b"{}");
    let ro = output(
        Command::new("mount")
            .args(["-o", "bind,ro"])
            .arg(&backing)
            .arg(&backing),
    );
    assert_success("mount -o bind,ro", &ro);
    s.watch_mount(backing.clone());

    let out = s.run(&s.mount_args(&[]));
    assert_refused(&out, &["not writable", "--read-only"]);
    assert!(!is_mounted(&s.mnt()));

    s.mount_daemon(&["--read-only"]);
    assert_eq!(fs::read(s.mnt().join("x.json")).unwrap(), b"{}");
    s.unmount();
}

#[test]
fn allow_non_empty_mounts_over_files_and_leaves_them_in_place() {
    if !require_fuse() {
        return;
    }
    let s = Scene::new();
    write_file(&s.mnt().join("notes.txt"), b"mine");
    write_file(&s.backing().join("x.json"), b"{}");
    s.mount_daemon(&["--allow-non-empty"]);
    assert_eq!(list_dir(&s.mnt()), names(&["x.json"]));
    s.unmount();
    assert_eq!(fs::read(s.mnt().join("notes.txt")).unwrap(), b"mine");
}

// ---- --daemon and stopping ---------------------------------------------------------------

#[test]
fn daemon_returns_only_once_the_mount_answers_20_cycles() {
    if !require_fuse() {
        return;
    }
    let s = Scene::new();
    write_file(&s.backing().join("x.json"), b"{\"n\":1}");
    for cycle in 0..20 {
        s.mount_daemon(&[]);
        // No sleep: `mount --daemon && cat x.json`.
        let got = fs::read(s.mnt().join("x.json"))
            .unwrap_or_else(|e| panic!("cycle {cycle}: read right after mount --daemon: {e}"));
        assert_eq!(got, b"{\"n\":1}", "cycle {cycle}");
        s.unmount();
        assert!(!is_mounted(&s.mnt()), "cycle {cycle}: still mounted");
    }
    let log = s.log();
    assert_eq!(
        log.matches("cachetta::mount: ready").count(),
        20,
        "log:\n{log}"
    );
    // fuser may log a failed reply to a request that the unmount cancelled; the daemon itself
    // must neither warn nor try to unmount a second time.
    let own_warnings = log
        .lines()
        .any(|l| l.contains("WARN cachetta") || l.contains("ERROR cachetta"));
    assert!(
        !own_warnings && !log.contains("Failed to umount") && !log.contains("Unmount failed"),
        "an unmount from outside left warnings:\n{log}"
    );
}

#[test]
fn external_unmount_ends_the_foreground_daemon_with_exit_0_and_no_warning() {
    if !require_fuse() {
        return;
    }
    let s = Scene::new();
    let mut child = s.foreground(&[], &[]);
    let out = s.run(&["unmount".to_string(), s.mnt().display().to_string()]);
    assert_success("cachetta unmount", &out);
    let status = wait_timeout(&mut child, STOP_TIMEOUT).expect("daemon still running");
    assert!(status.success(), "exit status {status}");
    let stderr = s.stderr();
    assert!(
        stderr.contains("unmounted from outside"),
        "stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("WARN") && !stderr.contains("Failed to umount"),
        "stderr:\n{stderr}"
    );
}

#[test]
fn dead_mount_after_kill_9_is_detached_and_mounted_again() {
    if !require_fuse() {
        return;
    }
    let s = Scene::new();
    write_file(&s.backing().join("x.json"), b"{}");
    s.mount_daemon(&[]);
    let pids = s.daemon_pids();
    assert_eq!(pids.len(), 1, "daemons: {pids:?}");
    signal(pids[0], libc::SIGKILL);
    assert!(eventually(STOP_TIMEOUT, || !alive(pids[0])));
    let errno = errno_of(fs::metadata(s.mnt()));
    assert!(
        is_dead_mount_errno(errno),
        "kill -9 should leave a dead mount, stat says errno {errno}"
    );

    s.mount_daemon(&[]);
    assert_eq!(fs::read(s.mnt().join("x.json")).unwrap(), b"{}");
    assert!(s.log().contains("detached a dead mount"), "{}", s.log());
    s.unmount();
    assert!(!is_mounted(&s.mnt()), "a mount is left (the dead one?)");
}

#[test]
fn sigterm_kills_a_running_refresh_command_unmounts_and_exits_0() {
    if !require_fuse() {
        return;
    }
    let s = Scene::new();
    let pidfile = s.path("sleep.pid");
    let config = format!(
        "duration = \"10s\"\nstale = \"1h\"\n\n[[rule]]\nmatch = \"slow.json\"\nrefresh = \"sleep 100 & echo $! > '{}'; wait\"\n",
        pidfile.display()
    );
    fs::write(s.path("config.toml"), config).unwrap();
    write_file(&s.backing().join("slow.json"), b"\"old\"");
    set_mtime(
        &s.backing().join("slow.json"),
        std::time::SystemTime::now() - MINUTE,
    )
    .unwrap();
    let config_path = s.path("config.toml").display().to_string();
    let mut child = s.foreground(&["--config", &config_path], &[]);

    // Reading a stale entry starts its refresh in the background.
    assert_eq!(fs::read(s.mnt().join("slow.json")).unwrap(), b"\"old\"");
    let mut sleep_pid = 0;
    assert!(
        eventually(Duration::from_secs(10), || {
            sleep_pid = fs::read_to_string(&pidfile)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0);
            sleep_pid > 0
        }),
        "the refresh command did not start; stderr:\n{}",
        s.stderr()
    );
    assert!(alive(sleep_pid));

    let status = stop(&mut child, libc::SIGTERM);
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(!is_mounted(&s.mnt()), "still mounted after SIGTERM");
    assert!(
        eventually(Duration::from_secs(2), || !alive(sleep_pid)),
        "the refresh command's sleep (pid {sleep_pid}) survived the daemon"
    );
    if alive(sleep_pid) {
        signal(sleep_pid, libc::SIGKILL);
    }
}

#[test]
fn a_second_signal_ends_a_stop_that_waits_for_a_busy_mount() {
    if !require_fuse() {
        return;
    }
    let s = Scene::new();
    write_file(&s.backing().join("x.json"), b"{}");
    let mut child = s.foreground(&[], &[]);
    // An open file keeps the mount busy: the stop detaches it lazily, then waits.
    let open = File::open(s.mnt().join("x.json")).unwrap();
    signal(child.id() as libc::pid_t, libc::SIGTERM);
    assert!(
        eventually(STOP_TIMEOUT, || !is_mounted(&s.mnt())),
        "the busy mount was not detached"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon did not wait for the busy mount"
    );
    let second = Instant::now();
    let status = stop(&mut child, libc::SIGINT);
    assert!(status.success(), "exit status: {status}");
    assert!(
        second.elapsed() < Duration::from_secs(3),
        "the second signal took {:?}",
        second.elapsed()
    );
    drop(open);
}

#[test]
fn log_file_in_the_foreground_gets_the_logs() {
    if !require_fuse() {
        return;
    }
    let s = Scene::new();
    let log = s.path("logs/here.log");
    let mut child = s.foreground(&["--log-file", log.to_str().unwrap()], &[]);
    assert!(stop(&mut child, libc::SIGTERM).success());
    let text = fs::read_to_string(&log).unwrap();
    for needle in ["mounted", "ready", "shutting down", "unmounted"] {
        assert!(text.contains(needle), "{needle:?} not in log:\n{text}");
    }
    assert!(
        !s.stderr().contains("mounted"),
        "logs went to stderr too:\n{}",
        s.stderr()
    );
}

// ---- --allow-other -----------------------------------------------------------------------

/// Run `argv` as nobody (uid/gid 65534), or `None` when setpriv is not installed.
fn as_nobody(argv: &[&std::ffi::OsStr]) -> Option<Output> {
    let out = {
        let _fork = forking();
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(argv)
            .stdin(Stdio::null())
            .output()
    };
    match out {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipping the other-user part: setpriv is not installed");
            None
        }
        Err(e) => panic!("run setpriv: {e}"),
    }
}

/// A scene whose directories other users may traverse, with a world-readable and a private
/// entry owned by root.
fn scene_for_other_users() -> Scene {
    let s = Scene::new();
    fs::set_permissions(&s.root, fs::Permissions::from_mode(0o755)).unwrap();
    write_file(&s.backing().join("public.json"), b"{\"p\":1}");
    write_file(&s.backing().join("private.json"), b"{\"secret\":1}");
    fs::set_permissions(s.backing(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(
        s.backing().join("public.json"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    fs::set_permissions(
        s.backing().join("private.json"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    s
}

#[test]
fn allow_other_lets_other_users_in_under_the_backing_files_modes() {
    if !require_fuse() {
        return;
    }
    let s = scene_for_other_users();
    s.mount_daemon(&["--allow-other"]);
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mountinfo
        .lines()
        .find(|l| l.contains(&format!(" {} ", s.mnt().display())))
        .expect("mount in mountinfo");
    assert!(
        line.contains("allow_other") && line.contains("default_permissions"),
        "{line}"
    );
    let public = s.mnt().join("public.json");
    let private = s.mnt().join("private.json");
    if let Some(out) = as_nobody(&["cat".as_ref(), public.as_os_str()]) {
        assert_success("cat public.json as nobody", &out);
        assert_eq!(out.stdout, b"{\"p\":1}");
        let out = as_nobody(&["cat".as_ref(), private.as_os_str()]).unwrap();
        assert!(!out.status.success(), "nobody read a 0600 root file");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The owner still reads everything.
    assert_eq!(fs::read(&private).unwrap(), b"{\"secret\":1}");
    s.unmount();
}

#[test]
fn without_allow_other_other_users_are_kept_out() {
    if !require_fuse() {
        return;
    }
    let s = scene_for_other_users();
    s.mount_daemon(&[]);
    let public = s.mnt().join("public.json");
    if let Some(out) = as_nobody(&["cat".as_ref(), public.as_os_str()]) {
        assert!(!out.status.success(), "nobody entered a private mount");
    }
    assert_eq!(fs::read(&public).unwrap(), b"{\"p\":1}");
    s.unmount();
}
