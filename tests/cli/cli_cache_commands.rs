//! `cachetta refresh` and `cachetta stats` without a mount: their arguments (clap's exit 2,
//! keys that name no entry), and a path that is not a cachetta mount (exit 1). What they do
//! against a real mount is `tests/mount/cache_commands.rs`.

use std::process::Output;

use crate::common::{Isolated, OutputAssertExt};

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn refresh_and_stats_help_describe_their_flags() {
    let home = Isolated::new();
    for (command, flags) in [
        ("refresh", &["--wait", "--mountpoint", "KEY"][..]),
        ("stats", &["--json", "--prometheus", "MOUNTPOINT"][..]),
    ] {
        let out = home.run(&[command, "--help"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{}", stderr_of(&out));
        for flag in flags {
            assert!(
                text.contains(flag),
                "`{command} --help` lacks {flag}:\n{text}"
            );
        }
    }
    let top = home.run(&["--help"]);
    let text = String::from_utf8_lossy(&top.stdout).into_owned();
    assert!(text.contains("refresh") && text.contains("stats"), "{text}");
}

#[test]
fn refresh_without_a_key_is_a_usage_error() {
    Isolated::new().run(&["refresh", "--wait"]).assert().code(2);
}

#[test]
fn stats_takes_json_or_prometheus_not_both() {
    Isolated::new()
        .run(&["stats", "--json", "--prometheus"])
        .assert()
        .code(2);
}

#[test]
fn refresh_of_keys_that_name_no_entry_is_a_usage_error_before_anything_starts() {
    let home = Isolated::new();
    let mnt = home.root().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mnt = mnt.to_str().unwrap();
    for key in ["notes.txt", "../x.json", "w/", "/elsewhere/x.json"] {
        let out = home.run(&["refresh", "--mountpoint", mnt, "ok.json", key]);
        assert_eq!(out.status.code(), Some(2), "{key:?}: {}", stderr_of(&out));
        assert!(
            stderr_of(&out).starts_with("cachetta: "),
            "{}",
            stderr_of(&out)
        );
    }
}

#[test]
fn refresh_and_stats_of_a_directory_that_is_not_a_mount_exit_1() {
    let home = Isolated::new();
    let dir = home.root().join("plain");
    std::fs::create_dir(&dir).unwrap();
    let dir = dir.to_str().unwrap();
    for args in [
        &["stats", dir][..],
        &["stats", dir, "--prometheus"][..],
        &["refresh", "--mountpoint", dir, "x.json"][..],
        &["refresh", "--wait", "--mountpoint", dir, "x.json"][..],
    ] {
        let out = home.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr_of(&out));
        assert!(
            stderr_of(&out).contains("not a mount point"),
            "{args:?}: {}",
            stderr_of(&out)
        );
    }
}

#[test]
fn stats_defaults_to_the_home_mountpoint() {
    let home = Isolated::new();
    let out = home.run(&["stats"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let want = home.home().join(".cachetta");
    assert!(
        stderr_of(&out).contains(want.to_str().unwrap()),
        "{}",
        stderr_of(&out)
    );
}
