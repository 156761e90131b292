//! Tests of `inspect`.

use super::*;
use std::time::Duration;

const NOW_SECS: u64 = 1_800_000_000;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

/// Backing dir with a config of duration 60 s, stale 30 s; `cold/**` has no stale window.
fn setup() -> (tempfile::TempDir, Store, Config) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false).unwrap();
    let toml = "duration = \"60s\"\nstale = \"30s\"\n\
                [[rule]]\nmatch = \"cold/**\"\nduration = \"10s\"\nstale = 0\n";
    let config = Config::from_toml(
        toml,
        Path::new("test.toml"),
        &crate::config::Overrides::default(),
    )
    .unwrap();
    (dir, store, config)
}

/// Write `content` at `key` with an mtime of `age` (negative: in the future) before `now()`.
fn put(dir: &Path, key: &str, content: &str, age: f64) {
    let path = dir.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, content).unwrap();
    let mtime = if age >= 0.0 {
        now() - Duration::from_secs_f64(age)
    } else {
        now() + Duration::from_secs_f64(-age)
    };
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(mtime).unwrap();
}

fn info(store: &Store, config: &Config, key: &str) -> Info {
    entry_info(store, config, Path::new(key), now())
}

#[test]
fn fresh_entry_reports_age_ttl_and_rule_values() {
    let (dir, store, config) = setup();
    put(dir.path(), "a.json", "{\"a\":1}", 12.5);
    let i = info(&store, &config, "a.json");
    assert!(i.exists);
    assert_eq!(i.state, Some(InfoState::Fresh));
    assert_eq!(i.age, Some(12.5));
    assert_eq!(i.ttl, Some(48));
    assert!(!i.expired && !i.stale);
    assert_eq!((i.duration, i.stale_duration), (60, 30));
    assert_eq!(i.size, Some(7));
    assert_eq!(i.path, store.root_path().join("a.json"));
}

#[test]
fn just_below_duration_is_fresh_and_at_duration_is_stale_and_python_expired() {
    let (dir, store, config) = setup();
    put(dir.path(), "below.json", "1", 59.9);
    put(dir.path(), "at.json", "1", 60.0);
    let below = info(&store, &config, "below.json");
    assert_eq!(below.state, Some(InfoState::Fresh));
    assert_eq!(below.ttl, Some(1));
    assert!(!below.expired);
    let at = info(&store, &config, "at.json");
    assert_eq!(at.state, Some(InfoState::Stale));
    assert_eq!(at.ttl, Some(0));
    assert!(at.expired && at.stale);
}

#[test]
fn stale_ttl_is_negative_and_end_of_window_is_expired() {
    let (dir, store, config) = setup();
    put(dir.path(), "s.json", "1", 89.9);
    put(dir.path(), "e.json", "1", 90.0);
    let s = info(&store, &config, "s.json");
    assert_eq!(s.state, Some(InfoState::Stale));
    assert_eq!(s.ttl, Some(-29));
    let e = info(&store, &config, "e.json");
    assert_eq!(e.state, Some(InfoState::Expired));
    assert!(e.exists && e.expired && !e.stale);
    assert_eq!(e.ttl, Some(-30));
}

#[test]
fn rule_without_stale_window_expires_at_duration() {
    let (dir, store, config) = setup();
    put(dir.path(), "cold/x.json", "1", 10.0);
    let i = info(&store, &config, "cold/x.json");
    assert_eq!(i.state, Some(InfoState::Expired));
    assert_eq!((i.duration, i.stale_duration), (10, 0));
    assert!(i.expired && !i.stale);
}

#[test]
fn future_mtime_is_fresh_with_age_zero() {
    let (dir, store, config) = setup();
    put(dir.path(), "f.json", "1", -500.0);
    let i = info(&store, &config, "f.json");
    assert_eq!(i.state, Some(InfoState::Fresh));
    assert_eq!(i.age, Some(0.0));
    assert_eq!(i.ttl, Some(60));
    assert!(!i.expired && !i.stale);
}

#[test]
fn invalid_json_is_corrupt_whatever_its_age() {
    let (dir, store, config) = setup();
    put(dir.path(), "c.json", "{\"a\":", 1.0);
    put(dir.path(), "empty.json", "", 1.0);
    put(dir.path(), "old.json", "nope", 1000.0);
    for key in ["c.json", "empty.json", "old.json"] {
        let i = info(&store, &config, key);
        assert!(i.exists, "{key}");
        assert_eq!(i.state, Some(InfoState::Corrupt), "{key}");
    }
    assert!(info(&store, &config, "old.json").expired);
}

#[test]
fn missing_symlink_and_directory_do_not_exist() {
    let (dir, store, config) = setup();
    put(dir.path(), "real.json", "1", 1.0);
    std::os::unix::fs::symlink("real.json", dir.path().join("link.json")).unwrap();
    std::fs::create_dir(dir.path().join("d.json")).unwrap();
    for key in ["nope.json", "link.json", "d.json", "../escape.json"] {
        let i = info(&store, &config, key);
        assert!(!i.exists, "{key}");
        assert_eq!((i.state, i.age, i.ttl, i.size), (None, None, None, None));
        assert!(!i.expired && !i.stale);
        assert_eq!(i.duration, 60);
    }
}

#[test]
fn scratch_files_have_no_expiry() {
    let (dir, store, config) = setup();
    put(dir.path(), "notes.txt", "not json", 5000.0);
    let i = info(&store, &config, "notes.txt");
    assert_eq!(i.state, Some(InfoState::Scratch));
    assert_eq!(i.age, Some(5000.0));
    assert_eq!(i.ttl, Some(0));
    assert!(!i.expired && !i.stale);
}

#[test]
fn info_json_has_every_field_and_omits_absent_refresh_error() {
    let (dir, store, config) = setup();
    put(dir.path(), "a.json", "{}", 2.0);
    let mut i = info(&store, &config, "a.json");
    let v: serde_json::Value = serde_json::to_value(&i).unwrap();
    let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    for key in [
        "exists",
        "state",
        "age",
        "ttl",
        "expired",
        "stale",
        "duration",
        "stale_duration",
        "path",
        "size",
        "refreshing",
    ] {
        assert!(keys.contains(&key.to_string()), "{key}");
    }
    assert!(!keys.contains(&"refresh_error".to_string()));
    assert_eq!(v["state"], "fresh");
    assert!(v["age"].is_f64());
    i.refresh_error = Some("exit 1".into());
    assert_eq!(serde_json::to_value(&i).unwrap()["refresh_error"], "exit 1");
}

#[test]
fn info_json_is_in_field_order_and_null_where_there_is_no_file() {
    let timing = Timing {
        duration: Duration::from_secs(60),
        stale: Duration::from_secs(30),
        stale_if_error: Duration::ZERO,
    };
    let path = PathBuf::from("/c/x.json");
    let one_second_old = now() - Duration::from_secs(1);
    let fresh = Info::of_entry(path.clone(), one_second_old, 7, true, timing, now());
    assert_eq!(
        serde_json::to_string(&fresh).unwrap(),
        r#"{"exists":true,"state":"fresh","age":1.0,"ttl":59,"expired":false,"stale":false,"duration":60,"stale_duration":30,"stale_if_error":0,"overrides":[],"path":"/c/x.json","size":7,"refreshing":false,"last_refresh":null}"#
    );
    let missing = Info::missing(path, timing);
    assert_eq!(
        serde_json::to_string(&missing).unwrap(),
        r#"{"exists":false,"state":null,"age":null,"ttl":null,"expired":false,"stale":false,"duration":60,"stale_duration":30,"stale_if_error":0,"overrides":[],"path":"/c/x.json","size":null,"refreshing":false,"last_refresh":null}"#
    );
    for info in [fresh, missing] {
        let json = serde_json::to_string(&info).unwrap();
        assert_eq!(serde_json::from_str::<Info>(&json).unwrap(), info);
    }
}

#[test]
fn corrupt_entry_keeps_the_time_flags() {
    let (dir, store, config) = setup();
    put(dir.path(), "c.json", "{", 70.5);
    let i = info(&store, &config, "c.json");
    assert_eq!(i.state, Some(InfoState::Corrupt));
    assert!(i.expired && i.stale);
    assert_eq!(i.ttl, Some(-10));
    assert!(!i.is_visible());
}

#[test]
fn missing_key_has_no_state_age_or_ttl_attribute() {
    let (_dir, store, config) = setup();
    let i = info(&store, &config, "nope.json");
    let names: Vec<_> = attributes(&i).into_iter().map(|(n, _)| n).collect();
    for absent in [
        "user.cachetta.state",
        "user.cachetta.age",
        "user.cachetta.ttl",
    ] {
        assert!(!names.contains(&absent), "{absent}");
    }
    assert!(names.contains(&"user.cachetta.info"));
}

#[test]
fn attributes_are_plain_text_with_integer_age() {
    let (dir, store, config) = setup();
    put(dir.path(), "s.json", "[1]", 75.7);
    let mut i = info(&store, &config, "s.json");
    i.refreshing = true;
    let attrs = attributes(&i);
    let get = |name: &str| {
        attrs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
    };
    assert_eq!(get("user.cachetta.state").unwrap(), "stale");
    assert_eq!(get("user.cachetta.age").unwrap(), "75");
    assert_eq!(get("user.cachetta.ttl").unwrap(), "-15");
    assert_eq!(get("user.cachetta.expired").unwrap(), "true");
    assert_eq!(get("user.cachetta.stale").unwrap(), "true");
    assert_eq!(get("user.cachetta.duration").unwrap(), "60");
    assert_eq!(get("user.cachetta.stale_duration").unwrap(), "30");
    assert_eq!(get("user.cachetta.refreshing").unwrap(), "true");
    assert_eq!(
        get("user.cachetta.path").unwrap(),
        store.root_path().join("s.json").to_str().unwrap()
    );
    assert!(get("user.cachetta.refresh_error").is_none());
    let json: serde_json::Value =
        serde_json::from_str(&get("user.cachetta.info").unwrap()).unwrap();
    assert_eq!(json["age"], 75.7);
    for (name, value) in &attrs {
        assert!(name.starts_with(ATTRIBUTE_PREFIX));
        assert!(!value.contains(&b'\n'), "{name}");
    }
}

#[test]
fn refresh_error_attribute_is_one_line() {
    let (dir, store, config) = setup();
    put(dir.path(), "a.json", "{}", 1.0);
    let mut i = info(&store, &config, "a.json");
    i.refresh_error = Some("exit status 2\n  curl: (6) no host\n".into());
    let attrs = attributes(&i);
    let (_, value) = attrs
        .iter()
        .find(|(n, _)| *n == "user.cachetta.refresh_error")
        .unwrap();
    assert_eq!(value, b"exit status 2 curl: (6) no host");
}

#[test]
fn non_utf8_path_is_raw_in_attribute_and_replaced_in_json() {
    use std::os::unix::ffi::OsStrExt;
    let (dir, store, config) = setup();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.json");
    std::fs::write(dir.path().join(name), "1").unwrap();
    let i = entry_info(&store, &config, Path::new(name), SystemTime::now());
    assert_eq!(i.state, Some(InfoState::Fresh));
    let attrs = attributes(&i);
    let path = &attrs
        .iter()
        .find(|(n, _)| *n == "user.cachetta.path")
        .unwrap()
        .1;
    assert!(path.ends_with(b"caf\xe9.json"));
    let json = serde_json::to_value(&i).unwrap();
    assert!(json["path"].as_str().unwrap().ends_with("caf\u{fffd}.json"));
}

#[test]
fn human_durations_show_two_largest_units() {
    assert_eq!(human_duration(0), "0s");
    assert_eq!(human_duration(45), "45s");
    assert_eq!(human_duration(90), "1m30s");
    assert_eq!(human_duration(300), "5m");
    assert_eq!(human_duration(-300), "-5m");
    assert_eq!(human_duration(3 * 3600 + 12 * 60 + 7), "3h12m");
    assert_eq!(human_duration(2 * 86_400 + 3 * 3600 + 59), "2d3h");
    assert_eq!(human_duration(86_400 + 30), "1d");
    assert_eq!(human_duration(i64::MIN).chars().next(), Some('-'));
}

#[test]
fn relative_keys_are_cleaned_and_escapes_refused() {
    assert_eq!(
        relative_key(Path::new("./a//b/")),
        Some(PathBuf::from("a/b"))
    );
    assert_eq!(relative_key(Path::new("")), Some(PathBuf::new()));
    assert_eq!(relative_key(Path::new("/etc/passwd")), None);
    assert_eq!(relative_key(Path::new("a/../../b")), None);
}

#[test]
fn walk_finds_regular_files_recursively_and_skips_symlinks() {
    let (dir, store, _) = setup();
    put(dir.path(), "a.json", "1", 1.0);
    put(dir.path(), "sub/deep/b.json", "1", 1.0);
    put(dir.path(), "sub/tmp.txt", "x", 1.0);
    let outside = tempfile::tempdir().unwrap();
    put(outside.path(), "secret.json", "1", 1.0);
    std::os::unix::fs::symlink(outside.path(), dir.path().join("sub/out")).unwrap();
    std::os::unix::fs::symlink("a.json", dir.path().join("l.json")).unwrap();
    let mut keys: Vec<_> = store::walk_files(&store, Path::new(""))
        .unwrap()
        .files
        .into_iter()
        .map(|f| f.key)
        .collect();
    keys.sort();
    let want: Vec<PathBuf> = ["a.json", "sub/deep/b.json", "sub/tmp.txt"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(keys, want);
    assert!(store::walk_files(&store, Path::new("nope")).is_err());
    assert!(store::walk_files(&store, Path::new("sub/out")).is_err());
}
