//! The binary's command line, without mounting: help, and configuration errors that must stop
//! `cachetta mount` before it mounts (exit 2, naming file, line and key).

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::{force_unmount, is_mounted, mentions_line, Isolated, OutputAssertExt};

/// A temp dir with a mountpoint and backing dir, and the isolated home the binary runs in.
/// Should a broken binary mount anyway (and be killed by the timeout), the mount is detached
/// on drop.
struct Scene {
    home: Isolated,
}

impl Scene {
    fn new() -> Scene {
        Scene {
            home: Isolated::new(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.home.root().join(rel)
    }

    fn config(&self, text: &str) -> PathBuf {
        let p = self.path("config.toml");
        fs::write(&p, text).unwrap();
        p
    }

    /// Run `cachetta mount MNT --backing BACKING` plus `args` to its end.
    fn mount(&self, args: &[&std::ffi::OsStr]) -> std::process::Output {
        let mut argv = vec![
            std::ffi::OsString::from("mount"),
            self.path("mnt").into_os_string(),
            "--backing".into(),
            self.path("backing").into_os_string(),
        ];
        argv.extend(args.iter().map(|a| a.to_os_string()));
        self.home.run(&argv)
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let mnt = self.path("mnt");
        if is_mounted(&mnt) {
            force_unmount(&mnt);
        }
    }
}

fn cachetta(args: &[&str]) -> assert_cmd::assert::Assert {
    Isolated::new().run(args).assert()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn file_name(p: &Path) -> &str {
    p.file_name().unwrap().to_str().unwrap()
}

#[test]
fn mount_help_describes_its_flags() {
    let out = cachetta(&["mount", "--help"]).success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    for flag in [
        "--backing",
        "--config",
        "--duration",
        "--stale",
        "--read-only",
    ] {
        assert!(
            text.contains(flag),
            "`mount --help` does not mention {flag}:\n{text}"
        );
    }
}

#[test]
fn top_level_help_lists_mount() {
    let out = cachetta(&["--help"]).success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(text.contains("mount"), "{text}");
}

#[test]
fn unknown_config_key_exits_2_naming_file_line_and_key() {
    let s = Scene::new();
    let cfg = s.config("duration = \"1h\"\nstale = \"5m\"\ndurration = \"2h\"\n");
    let out = s.mount(&[("--config").as_ref(), cfg.as_os_str()]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains(file_name(&cfg)), "file not named: {stderr}");
    assert!(mentions_line(&stderr, 3), "line 3 not named: {stderr}");
    assert!(stderr.contains("durration"), "key not named: {stderr}");
}

#[test]
fn unknown_key_in_a_rule_exits_2_naming_file_line_and_key() {
    let s = Scene::new();
    let cfg = s.config("[[rule]]\nmatch = \"a/*.json\"\nrefresh_every = \"1m\"\n");
    let out = s.mount(&["--config".as_ref(), cfg.as_os_str()]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains(file_name(&cfg)), "file not named: {stderr}");
    assert!(mentions_line(&stderr, 3), "line 3 not named: {stderr}");
    assert!(stderr.contains("refresh_every"), "key not named: {stderr}");
}

#[test]
fn bad_size_value_exits_2_naming_file_line_and_key() {
    let s = Scene::new();
    let cfg = s.config("\nmax_entry_bytes = \"lots\"\n");
    let out = s.mount(&["--config".as_ref(), cfg.as_os_str()]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains(file_name(&cfg)), "file not named: {stderr}");
    assert!(mentions_line(&stderr, 2), "line 2 not named: {stderr}");
    assert!(
        stderr.contains("max_entry_bytes"),
        "key not named: {stderr}"
    );
}

#[test]
fn missing_config_file_exits_2_naming_it() {
    let s = Scene::new();
    let cfg = s.path("does-not-exist.toml");
    let out = s.mount(&["--config".as_ref(), cfg.as_os_str()]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("does-not-exist.toml"),
        "file not named: {stderr}"
    );
}

#[test]
fn bad_duration_flag_exits_2() {
    let s = Scene::new();
    let out = s.mount(&["--duration".as_ref(), "soon".as_ref()]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("soon") || stderr.contains("duration"),
        "{stderr}"
    );
}

#[test]
fn config_errors_do_not_leave_a_mount() {
    let s = Scene::new();
    let cfg = s.config("bogus = 1\n");
    let out = s.mount(&["--config".as_ref(), cfg.as_os_str()]);
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr_of(&out));
    assert!(!is_mounted(&s.path("mnt")));
}
