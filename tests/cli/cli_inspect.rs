//! The inspection commands (`ls`, `info`, `gc`, `unmount`) driven through the real binary over
//! a prepared backing dir; no mount needed. Ages are kept far from every boundary so the tests
//! do not depend on how fast they run.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::common::{set_mtime, Isolated, OutputAssertExt};

const CONFIG: &str = r#"
duration = "1h"
stale = "30m"

[[rule]]
match = "weather/{city}.json"
duration = "10m"
stale = "5m"
"#;

const STAGING: &str = ".cachetta-staging.1.1.tmp";

/// A backing dir with one file in every state, a config file, and an empty XDG home.
struct Fixture {
    backing: tempfile::TempDir,
    config_dir: tempfile::TempDir,
    home: Isolated,
}

impl Fixture {
    fn new() -> Fixture {
        let fixture = Fixture {
            backing: tempfile::tempdir().unwrap(),
            config_dir: tempfile::tempdir().unwrap(),
            home: Isolated::new(),
        };
        std::fs::write(fixture.config_file(), CONFIG).unwrap();
        let min = 60;
        fixture.put("fresh.json", "{\"a\":1}", min);
        fixture.put("stale.json", "[1,2]", 70 * min);
        fixture.put("expired.json", "{}", 2 * 60 * min);
        fixture.put("corrupt.json", "{\"a\":", 10);
        fixture.put("weather/paris.json", "{\"t\":20}", min);
        fixture.put("weather/rome.json", "{\"t\":25}", 12 * min);
        fixture.put("weather/oslo.json", "{\"t\":-5}", 20 * min);
        fixture.put("notes.txt", "scratch", 2 * 60 * min);
        fixture.put("new.txt", "scratch", 0);
        fixture.put(STAGING, "{\"half", 3 * 60 * min);
        std::os::unix::fs::symlink("fresh.json", fixture.backing.path().join("link.json")).unwrap();
        fixture
    }

    fn config_file(&self) -> PathBuf {
        self.config_dir.path().join("config.toml")
    }

    fn path(&self, key: &str) -> PathBuf {
        self.backing.path().join(key)
    }

    /// Write `content` at `key`, last modified `age_secs` ago.
    fn put(&self, key: &str, content: &str, age_secs: u64) {
        let path = self.path(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        set_mtime(&path, SystemTime::now() - Duration::from_secs(age_secs)).unwrap();
    }

    /// `cachetta ARGS --config CONFIG --backing BACKING` in the fixture's isolated home.
    fn cachetta(&self, args: &[&str]) -> std::process::Output {
        let mut argv: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
        argv.extend([
            "--config".into(),
            self.config_file().into(),
            "--backing".into(),
            self.backing.path().into(),
        ]);
        self.home.run(&argv)
    }

    /// Run, expect exit `code`, and return (stdout, stderr).
    fn run(&self, args: &[&str], code: i32) -> (String, String) {
        let output = self.cachetta(args);
        let stdout = String::from_utf8(output.stdout).unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(
            output.status.code(),
            Some(code),
            "cachetta {args:?}\nstdout: {stdout}\nstderr: {stderr}"
        );
        (stdout, stderr)
    }

    fn info(&self, key: &str, code: i32) -> Value {
        let (stdout, _) = self.run(&["info", key], code);
        serde_json::from_str(&stdout).unwrap()
    }
}

/// (key, state) of each table row, header checked and skipped.
fn table_rows(stdout: &str) -> Vec<(String, String)> {
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["KEY", "STATE", "AGE", "TTL", "SIZE"]);
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cells.len(), 5, "{line}");
            (cells[0].to_string(), cells[1].to_string())
        })
        .collect()
}

fn pairs(rows: &[(&str, &str)]) -> Vec<(String, String)> {
    rows.iter()
        .map(|(k, s)| (k.to_string(), s.to_string()))
        .collect()
}

#[test]
fn ls_lists_fresh_and_stale_entries_sorted_by_key() {
    let f = Fixture::new();
    let (stdout, _) = f.run(&["ls"], 0);
    assert_eq!(
        table_rows(&stdout),
        pairs(&[
            ("fresh.json", "fresh"),
            ("stale.json", "stale"),
            ("weather/paris.json", "fresh"),
            ("weather/rome.json", "stale"),
        ])
    );
    let fresh = stdout
        .lines()
        .find(|l| l.starts_with("fresh.json"))
        .unwrap();
    let cells: Vec<&str> = fresh.split_whitespace().collect();
    // A slow run adds seconds (`1m1s`, `58m59s`), never more.
    assert!(cells[2].starts_with("1m"), "{fresh}");
    assert!(
        cells[3].starts_with("59m") || cells[3].starts_with("58m"),
        "{fresh}"
    );
    assert_eq!(cells[4], "7");
    let rome = stdout
        .lines()
        .find(|l| l.starts_with("weather/rome"))
        .unwrap();
    assert!(
        rome.split_whitespace().nth(3).unwrap().starts_with("-2m"),
        "{rome}"
    );
}

#[test]
fn ls_all_adds_expired_corrupt_and_scratch_files() {
    let f = Fixture::new();
    let (stdout, _) = f.run(&["ls", "--all"], 0);
    assert_eq!(
        table_rows(&stdout),
        pairs(&[
            (STAGING, "scratch"),
            ("corrupt.json", "corrupt"),
            ("expired.json", "expired"),
            ("fresh.json", "fresh"),
            ("new.txt", "scratch"),
            ("notes.txt", "scratch"),
            ("stale.json", "stale"),
            ("weather/oslo.json", "expired"),
            ("weather/paris.json", "fresh"),
            ("weather/rome.json", "stale"),
        ])
    );
}

#[test]
fn ls_json_under_a_prefix_has_key_and_every_info_field() {
    let f = Fixture::new();
    let (stdout, _) = f.run(&["ls", "weather", "--json", "--all"], 0);
    let rows: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    let keys: Vec<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "weather/oslo.json",
            "weather/paris.json",
            "weather/rome.json"
        ]
    );
    let backing = f.backing.path().canonicalize().unwrap();
    for row in &rows {
        let key = row["key"].as_str().unwrap();
        assert_eq!(row["exists"], true, "{key}");
        assert_eq!(row["duration"], 600, "{key}");
        assert_eq!(row["stale_duration"], 300, "{key}");
        assert_eq!(row["refreshing"], false, "{key}");
        assert!(row.get("refresh_error").is_none(), "{key}");
        assert_eq!(
            Path::new(row["path"].as_str().unwrap()),
            backing.join(key),
            "{key}"
        );
        assert_eq!(
            row["size"].as_u64().unwrap(),
            std::fs::metadata(f.path(key)).unwrap().len()
        );
        let age = row["age"].as_f64().unwrap();
        let ttl = row["ttl"].as_i64().unwrap();
        assert_eq!(ttl, 600 - age.floor() as i64, "{key}");
    }
    let by_key = |k: &str| rows.iter().find(|r| r["key"] == k).unwrap();
    let paris = by_key("weather/paris.json");
    assert_eq!(paris["state"], "fresh");
    assert_eq!(
        (paris["expired"].clone(), paris["stale"].clone()),
        (false.into(), false.into())
    );
    assert!((60.0..90.0).contains(&paris["age"].as_f64().unwrap()));
    let rome = by_key("weather/rome.json");
    assert_eq!(rome["state"], "stale");
    assert_eq!(
        (rome["expired"].clone(), rome["stale"].clone()),
        (true.into(), true.into())
    );
    let oslo = by_key("weather/oslo.json");
    assert_eq!(oslo["state"], "expired");
    assert_eq!(
        (oslo["expired"].clone(), oslo["stale"].clone()),
        (true.into(), false.into())
    );

    let (visible, _) = f.run(&["ls", "weather/", "--json"], 0);
    let visible: Vec<Value> = serde_json::from_str(&visible).unwrap();
    assert_eq!(visible.len(), 2);
}

#[test]
fn ls_of_a_missing_prefix_fails_with_exit_1() {
    let f = Fixture::new();
    let (stdout, stderr) = f.run(&["ls", "nowhere"], 1);
    assert!(stdout.is_empty());
    assert!(stderr.contains("no such directory"), "{stderr}");
    let (_, stderr) = f.run(&["ls", "fresh.json"], 1);
    assert!(stderr.contains("not a directory"), "{stderr}");
    f.run(&["ls", "../elsewhere"], 2);
}

#[test]
fn info_reports_each_state_with_exit_codes() {
    let f = Fixture::new();
    let fresh = f.info("fresh.json", 0);
    assert_eq!(fresh["exists"], true);
    assert_eq!(fresh["state"], "fresh");
    assert_eq!(fresh["duration"], 3600);
    assert_eq!(fresh["stale_duration"], 1800);
    assert_eq!(fresh["size"], 7);

    let stale = f.info("stale.json", 0);
    assert_eq!(stale["state"], "stale");
    assert_eq!(
        (stale["expired"].clone(), stale["stale"].clone()),
        (true.into(), true.into())
    );
    assert!(stale["ttl"].as_i64().unwrap() < 0);

    let expired = f.info("expired.json", 0);
    assert_eq!(expired["exists"], true);
    assert_eq!(expired["state"], "expired");
    assert_eq!(expired["stale"], false);
    assert_eq!(expired["expired"], true);

    let corrupt = f.info("corrupt.json", 0);
    assert_eq!(corrupt["exists"], true);
    assert_eq!(corrupt["state"], "corrupt");

    let (stdout, stderr) = f.run(&["info", "missing.json"], 1);
    let missing: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(missing["exists"], false);
    for field in ["state", "age", "ttl", "size"] {
        assert!(missing[field].is_null(), "{field}: {missing}");
    }
    assert_eq!(
        (&missing["expired"], &missing["stale"]),
        (&json!(false), &json!(false))
    );
    assert!(missing["path"].as_str().unwrap().ends_with("missing.json"));
    assert!(stderr.contains("missing.json"), "{stderr}");

    assert_eq!(f.info("link.json", 1)["exists"], false);
    assert_eq!(f.info("weather", 1)["exists"], false);
    f.run(&["info", "/etc/passwd"], 2);
}

#[test]
fn gc_dry_run_lists_then_gc_removes_only_expired_and_old_scratch() {
    let f = Fixture::new();
    let doomed = [
        (STAGING, "staging"),
        ("expired.json", "expired"),
        ("notes.txt", "scratch"),
        ("weather/oslo.json", "expired"),
    ];
    let (stdout, _) = f.run(&["gc", "--dry-run"], 0);
    let mut lines = stdout.lines();
    for (key, reason) in doomed {
        assert_eq!(
            lines.next().unwrap(),
            format!("would remove {key} ({reason})")
        );
        assert!(f.path(key).exists(), "{key} removed by a dry run");
    }
    assert_eq!(
        lines.next().unwrap(),
        "would remove 4 files (2 expired, 1 scratch, 1 staging)"
    );

    let (stdout, _) = f.run(&["gc"], 0);
    assert!(
        stdout.contains("removed expired.json (expired)"),
        "{stdout}"
    );
    assert!(stdout.ends_with("removed 4 files (2 expired, 1 scratch, 1 staging)\n"));
    for (key, _) in doomed {
        assert!(!f.path(key).exists(), "{key} kept");
    }
    for key in [
        "fresh.json",
        "stale.json",
        "corrupt.json",
        "new.txt",
        "weather/paris.json",
        "weather/rome.json",
    ] {
        assert!(f.path(key).exists(), "{key} removed");
    }
    assert!(f.path("link.json").symlink_metadata().is_ok());
    let (stdout, _) = f.run(&["gc"], 0);
    assert_eq!(stdout, "nothing to remove\n");
}

#[test]
fn unmount_of_a_directory_that_is_not_mounted_fails_clearly() {
    let f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let (_, stderr) = f.run(&["unmount", dir.path().to_str().unwrap()], 1);
    assert!(stderr.contains("is not a mount point"), "{stderr}");
}

#[test]
fn a_missing_config_file_is_a_usage_error() {
    let f = Fixture::new();
    for command in [&["ls"][..], &["info", "fresh.json"], &["gc"]] {
        let mut argv: Vec<std::ffi::OsString> = command.iter().map(Into::into).collect();
        argv.extend([
            "--config".into(),
            "/nonexistent/cachetta.toml".into(),
            "--backing".into(),
            f.backing.path().into(),
        ]);
        f.home.run(&argv).assert().code(2);
    }
}

#[test]
fn every_inspection_command_has_help() {
    for command in ["ls", "info", "gc", "unmount"] {
        let output = Isolated::new().run(&[command, "--help"]);
        assert!(output.status.success(), "{command}");
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(
            text.contains("--config") && text.contains("--backing"),
            "{command}"
        );
    }
}
