//! Parsing, inheritance, errors and rule precedence of the configuration (patterns themselves:
//! `pattern_tests.rs`).

use super::*;

fn dirs() -> Dirs {
    Dirs::from_vars(|name| match name {
        "HOME" => Some("/home/u".into()),
        _ => None,
    })
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_with(text, &Overrides::default())
}

fn parse_with(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
    from_toml_in(text, Path::new("/etc/cachetta.toml"), overrides, &dirs())
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => e.message,
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn empty_file_gives_the_documented_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.backing, PathBuf::from("/home/u/.cache/cachetta"));
    assert_eq!(c.defaults, Settings::default());
    assert_eq!(c.defaults.duration, secs(7 * 86400));
    assert!(c.rules.is_empty());
    assert_eq!(c.lru_entries, 1024);
    assert_eq!(c.lru_bytes, 64 * 1024 * 1024);
    assert_eq!(c.max_entry_bytes, 256 * 1024 * 1024);
    assert_eq!(c.max_refreshes, 4);
    assert_eq!(c.gc_interval, secs(3600));
    assert!(!c.sync_writes);
    assert_eq!(c.watch, WatchMode::Inotify);
    assert_eq!(c.full_scan_interval, secs(600));
    assert_eq!(c.metrics_addr, None);
}

#[test]
fn default_dirs_follow_xdg_and_ignore_relative_values() {
    let d = Dirs::from_vars(|name| match name {
        "HOME" => Some("/home/u".into()),
        "XDG_CACHE_HOME" => Some("/var/cache/u".into()),
        "XDG_CONFIG_HOME" => Some("relative/config".into()),
        _ => None,
    });
    assert_eq!(d.default_backing(), PathBuf::from("/var/cache/u/cachetta"));
    assert_eq!(
        d.config_file(),
        PathBuf::from("/home/u/.config/cachetta/config.toml")
    );
}

#[test]
fn every_top_level_key_is_parsed() {
    let c = parse(
        r#"
        backing = "/srv/cache"
        duration = "1h"
        stale = "30m"
        refresh = "echo {}"
        fill_on_miss = true
        condition = "jq -e ."
        refresh_timeout = "20s"
        refresh_backoff = "1m"
        lru_entries = 10
        lru_bytes = "1MiB"
        max_entry_bytes = 2048
        max_refreshes = 2
        gc_interval = "0"
        sync_writes = true
        watch = "poll=5s"
        full_scan_interval = "0"
        metrics_addr = "127.0.0.1:9464"
        "#,
    )
    .unwrap();
    assert_eq!(c.backing, PathBuf::from("/srv/cache"));
    assert_eq!(
        c.defaults,
        Settings {
            duration: secs(3600),
            stale: secs(1800),
            refresh: Some("echo {}".into()),
            fill_on_miss: true,
            condition: Some("jq -e .".into()),
            refresh_timeout: secs(20),
            refresh_backoff: secs(60),
            stale_if_error: secs(0),
            early_refresh: false,
        }
    );
    assert_eq!(c.lru_entries, 10);
    assert_eq!(c.lru_bytes, 1 << 20);
    assert_eq!(c.max_entry_bytes, 2048);
    assert_eq!(c.max_refreshes, 2);
    assert_eq!(c.gc_interval, Duration::ZERO);
    assert!(c.sync_writes);
    assert_eq!(c.watch, WatchMode::Poll(secs(5)));
    assert_eq!(c.full_scan_interval, Duration::ZERO);
    assert_eq!(c.metrics_addr.as_deref(), Some("127.0.0.1:9464"));
}

#[test]
fn every_rule_key_is_parsed() {
    let c = parse(
        r#"
        [[rule]]
        match = "weather/{city}.json"
        duration = "1h"
        stale = "30m"
        refresh = "curl -fsS \"https://wttr.in/$CACHETTA_CITY?format=j1\""
        refresh_timeout = "20s"
        refresh_backoff = "5s"
        fill_on_miss = true
        condition = "jq -e '.current_condition != null' >/dev/null"
        stale_if_error = "1h"
        early_refresh = true
        "#,
    )
    .unwrap();
    let r = &c.rules[0];
    assert_eq!(r.pattern, "weather/{city}.json");
    assert_eq!(r.capture_names(), ["city"]);
    assert_eq!(
        r.settings,
        Settings {
            duration: secs(3600),
            stale: secs(1800),
            refresh: Some("curl -fsS \"https://wttr.in/$CACHETTA_CITY?format=j1\"".into()),
            fill_on_miss: true,
            condition: Some("jq -e '.current_condition != null' >/dev/null".into()),
            refresh_timeout: secs(20),
            refresh_backoff: secs(5),
            stale_if_error: secs(3600),
            early_refresh: true,
        }
    );
}

#[test]
fn watch_accepts_inotify_poll_and_poll_with_interval() {
    assert_eq!("inotify".parse(), Ok(WatchMode::Inotify));
    assert_eq!("poll".parse(), Ok(WatchMode::Poll(secs(1))));
    assert_eq!("poll=1m".parse(), Ok(WatchMode::Poll(secs(60))));
    assert!("poll=0".parse::<WatchMode>().is_err());
    assert!("fanotify".parse::<WatchMode>().is_err());
}

#[test]
fn transport_is_auto_uring_or_classic_and_auto_by_default() {
    assert_eq!("auto".parse(), Ok(Transport::Auto));
    assert_eq!("uring".parse(), Ok(Transport::Uring));
    assert_eq!(" classic ".parse(), Ok(Transport::Classic));
    for bad in ["io_uring", "Uring", "", "dev"] {
        let e = bad.parse::<Transport>().unwrap_err();
        assert!(e.contains("expected auto, uring or classic"), "{bad:?}: {e}");
    }
    assert_eq!(parse("").unwrap().transport, Transport::Auto);
    assert_eq!(
        parse("transport = \"classic\"").unwrap().transport,
        Transport::Classic
    );
}

#[test]
fn rule_inherits_unnamed_settings_from_top_level_which_inherits_from_defaults() {
    let c = parse(
        r#"
        stale = "5m"
        refresh = "make-it"
        [[rule]]
        match = "a/*.json"
        duration = "1h"
        "#,
    )
    .unwrap();
    let s = &c.rules[0].settings;
    assert_eq!(s.duration, secs(3600)); // the rule's own
    assert_eq!(s.stale, secs(300)); // the top level's
    assert_eq!(s.refresh.as_deref(), Some("make-it"));
    assert_eq!(s.refresh_timeout, secs(60)); // the default
    assert_eq!(c.defaults.duration, secs(7 * 86400));
}

#[test]
fn empty_command_in_a_rule_switches_off_the_inherited_one() {
    let c = parse("refresh = \"x\"\n[[rule]]\nmatch = \"a.json\"\nrefresh = \"\"\n").unwrap();
    assert_eq!(c.rules[0].settings.refresh, None);
}

#[test]
fn flags_override_the_file_and_rules_inherit_them() {
    let overrides = Overrides {
        backing: Some("~/elsewhere".into()),
        duration: Some(secs(5)),
        stale: Some(secs(6)),
        lru_entries: Some(7),
        lru_bytes: Some(8),
        watch: Some(WatchMode::Poll(secs(9))),
        full_scan_interval: Some(secs(10)),
        metrics_addr: Some("[::1]:9100".into()),
        transport: Some(Transport::Classic),
    };
    let c = parse_with(
        r#"
        backing = "/srv/cache"
        duration = "1h"
        stale = "1h"
        lru_entries = 1
        lru_bytes = 1
        watch = "inotify"
        full_scan_interval = "1h"
        metrics_addr = "127.0.0.1:9464"
        transport = "uring"
        [[rule]]
        match = "own/*.json"
        duration = "2h"
        [[rule]]
        match = "**"
        "#,
        &overrides,
    )
    .unwrap();
    assert_eq!(c.backing, PathBuf::from("/home/u/elsewhere"));
    assert_eq!(c.defaults.duration, secs(5));
    assert_eq!(c.defaults.stale, secs(6));
    assert_eq!(c.lru_entries, 7);
    assert_eq!(c.lru_bytes, 8);
    assert_eq!(c.watch, WatchMode::Poll(secs(9)));
    assert_eq!(c.full_scan_interval, secs(10));
    assert_eq!(c.metrics_addr.as_deref(), Some("[::1]:9100"));
    assert_eq!(c.transport, Transport::Classic);
    assert_eq!(c.rules[0].settings.duration, secs(7200));
    assert_eq!(c.rules[0].settings.stale, secs(6));
    assert_eq!(c.rules[1].settings.duration, secs(5));
}

#[test]
fn an_empty_metrics_addr_serves_nothing_and_an_empty_flag_turns_off_the_files() {
    assert_eq!(parse("metrics_addr = \"\"\n").unwrap().metrics_addr, None);
    let off = Overrides {
        metrics_addr: Some(String::new()),
        ..Overrides::default()
    };
    let c = parse_with("metrics_addr = \"127.0.0.1:9464\"\n", &off).unwrap();
    assert_eq!(c.metrics_addr, None);
    let err = parse("metrics_addr = 9464\n").unwrap_err().message;
    assert!(err.contains("metrics_addr"), "{err}");
}

#[test]
fn flags_apply_without_a_file() {
    let overrides = Overrides {
        duration: Some(secs(5)),
        ..Overrides::default()
    };
    assert_eq!(defaults_in(&overrides, &dirs()).defaults.duration, secs(5));
}

#[test]
fn zero_as_integer_string_and_humantime_are_all_zero() {
    for spelling in ["0", "\"0\"", "\"0s\""] {
        let c = parse(&format!("stale = {spelling}\nduration = {spelling}")).unwrap();
        assert_eq!(c.defaults.stale, Duration::ZERO, "{spelling}");
        assert_eq!(c.defaults.duration, Duration::ZERO, "{spelling}");
    }
}

#[test]
fn durations_take_humantime_forms_and_bare_seconds() {
    for (text, want) in [
        ("90s", 90),
        ("15m", 900),
        ("1h 30m", 5400),
        ("1h30m", 5400),
        ("7d", 7 * 86400),
        ("90", 90),
        (" 42 ", 42),
    ] {
        assert_eq!(parse_duration(text), Ok(secs(want)), "{text}");
    }
    assert_eq!(parse("duration = 90").unwrap().defaults.duration, secs(90));
}

#[test]
fn negative_float_and_garbage_durations_are_errors() {
    for text in [
        "duration = -1",
        "duration = 1.5",
        "duration = \"-5s\"",
        "duration = \"1.5\"",
        "duration = true",
    ] {
        let msg = error(text);
        assert!(msg.contains("key `duration`"), "{text}: {msg}");
    }
    assert!(error("duration = -1").contains("negative"));
    assert!(error("duration = 1.5").contains("float"));
}

#[test]
fn sizes_take_binary_suffixes_and_bare_byte_counts() {
    for (text, want) in [
        ("0", 0),
        ("512", 512),
        ("4KiB", 4096),
        ("4 KiB", 4096),
        ("64MiB", 64 << 20),
        ("2GiB", 2 << 30),
        ("1TiB", 1 << 40),
        ("3K", 3072),
        ("3M", 3 << 20),
        ("3G", 3 << 30),
        ("10B", 10),
    ] {
        assert_eq!(parse_size(text), Ok(want), "{text}");
    }
    let c = parse("lru_bytes = 1000\nmax_entry_bytes = \"1GiB\"").unwrap();
    assert_eq!((c.lru_bytes, c.max_entry_bytes), (1000, 1 << 30));
}

#[test]
fn ambiguous_negative_and_unknown_sizes_are_errors() {
    for text in [
        "1KB",
        "1MB",
        "MiB",
        "1 parsec",
        "-1",
        "1.5MiB",
        "99999999999999GiB",
        "",
    ] {
        assert!(parse_size(text).is_err(), "{text}");
    }
    assert!(parse_size("1KB").unwrap_err().contains("KiB"));
    assert!(error("lru_bytes = -1").contains("key `lru_bytes`"));
}

#[test]
fn tilde_in_backing_expands_to_home() {
    assert_eq!(
        parse("backing = \"~\"").unwrap().backing,
        PathBuf::from("/home/u")
    );
    assert_eq!(
        parse("backing = \"~/c\"").unwrap().backing,
        PathBuf::from("/home/u/c")
    );
    assert!(error("backing = \"~bob/c\"").contains("key `backing`"));
}

#[test]
fn relative_backing_is_taken_from_the_config_files_directory() {
    assert_eq!(
        parse("backing = \"data\"").unwrap().backing,
        PathBuf::from("/etc/data")
    );
}

#[test]
fn zero_where_it_would_stall_everything_is_an_error() {
    assert!(error("max_refreshes = 0").contains("key `max_refreshes`"));
    assert!(error("max_entry_bytes = 0").contains("key `max_entry_bytes`"));
    assert!(error("refresh_timeout = \"0s\"").contains("key `refresh_timeout`"));
}

#[test]
fn unknown_key_error_names_file_line_and_key() {
    let msg = error("duration = \"1h\"\n\ndurtion = \"2h\"\n");
    assert!(
        msg.starts_with("/etc/cachetta.toml:3: unknown key `durtion`"),
        "{msg}"
    );
    assert!(msg.contains("did you mean `duration`?"), "{msg}");
}

#[test]
fn unknown_key_in_a_rule_names_file_line_and_key() {
    let msg = error("[[rule]]\nmatch = \"a.json\"\nfil_on_miss = true\n");
    assert!(
        msg.starts_with("/etc/cachetta.toml:3: unknown key `fil_on_miss`"),
        "{msg}"
    );
    // Top-level-only keys are unknown inside a rule.
    let msg = error("[[rule]]\nmatch = \"a.json\"\nlru_bytes = 1\n");
    assert!(
        msg.starts_with("/etc/cachetta.toml:3: unknown key `lru_bytes`"),
        "{msg}"
    );
}

#[test]
fn bad_value_error_names_file_line_and_key() {
    let msg = error("lru_entries = 3\n\n\n\n\n\nduration = \"ten\"\n");
    assert!(
        msg.starts_with("/etc/cachetta.toml:7: key `duration`: invalid duration \"ten\""),
        "{msg}"
    );
    let msg = error("[[rule]]\nmatch = \"a.json\"\nstale = \"soon\"\n");
    assert!(
        msg.starts_with("/etc/cachetta.toml:3: key `stale`:"),
        "{msg}"
    );
    let msg = error("sync_writes = \"yes\"");
    assert!(
        msg.starts_with("/etc/cachetta.toml:1: key `sync_writes`: expected true or false"),
        "{msg}"
    );
    let msg = error("\nwatch = \"sometimes\"");
    assert!(
        msg.starts_with("/etc/cachetta.toml:2: key `watch`:"),
        "{msg}"
    );
    let msg = error("\n\ntransport = \"io_uring\"");
    assert!(
        msg.starts_with("/etc/cachetta.toml:3: key `transport`: invalid transport \"io_uring\""),
        "{msg}"
    );
    let msg = error("transport = 1");
    assert!(
        msg.starts_with("/etc/cachetta.toml:1: key `transport`:"),
        "{msg}"
    );
    let msg = error("\n\nfull_scan_interval = \"often\"");
    assert!(
        msg.starts_with("/etc/cachetta.toml:3: key `full_scan_interval`:"),
        "{msg}"
    );
}

#[test]
fn rule_without_match_error_names_file_line_and_key() {
    let msg = error("duration = \"1h\"\n\n[[rule]]\nduration = \"2h\"\n");
    assert!(msg.starts_with("/etc/cachetta.toml:"), "{msg}");
    assert!(msg.contains("`match`"), "{msg}");
    let line: usize = msg["/etc/cachetta.toml:".len()..]
        .split(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!((3..=4).contains(&line), "{msg}");
}

#[test]
fn invalid_pattern_error_names_file_line_and_key() {
    for pattern in [
        "a/{city.json",
        "a/{1x}.json",
        "a/{a,b}.json",
        "a/{x}/{x}.json",
        "/abs.json",
        "a/../b.json",
        "{key}.json",
        "a}.json",
        "a\\b",
    ] {
        let msg = error(&format!("[[rule]]\n\nmatch = {pattern:?}\n"));
        assert!(
            msg.starts_with("/etc/cachetta.toml:3: key `match`: invalid pattern"),
            "{pattern}: {msg}"
        );
    }
}

#[test]
fn rule_that_is_not_an_array_of_tables_names_the_key() {
    let msg = error("\n[rule]\nmatch = \"a.json\"\n");
    assert!(
        msg.starts_with("/etc/cachetta.toml:2: key `rule`:"),
        "{msg}"
    );
}

#[test]
fn duplicate_key_error_names_the_key() {
    let msg = error("duration = 1\nduration = 2\n");
    assert!(
        msg.starts_with("/etc/cachetta.toml:2: duplicate key `duration`"),
        "{msg}"
    );
}

#[test]
fn toml_syntax_error_names_file_and_line() {
    let msg = error("duration = \"1h\"\nstale = \n");
    assert!(msg.starts_with("/etc/cachetta.toml:2:"), "{msg}");
}

#[test]
fn missing_explicit_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let msg = load_in(Some(&path), &Overrides::default(), &dirs())
        .unwrap_err()
        .message;
    assert!(msg.contains("nope.toml"), "{msg}");
}

#[test]
fn missing_default_file_gives_defaults_and_present_one_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_path_buf();
    let d = Dirs::from_vars(|name| (name == "HOME").then(|| home.clone().into()));
    let c = load_in(None, &Overrides::default(), &d).unwrap();
    assert_eq!(c.defaults, Settings::default());

    let file = d.config_file();
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, "durtion = 1\n").unwrap();
    let msg = load_in(None, &Overrides::default(), &d)
        .unwrap_err()
        .message;
    assert!(
        msg.starts_with(&format!("{}:1: unknown key `durtion`", file.display())),
        "{msg}"
    );

    std::fs::write(&file, "duration = 1\n").unwrap();
    let c = load_in(None, &Overrides::default(), &d).unwrap();
    assert_eq!(c.defaults.duration, secs(1));
}

#[test]
fn first_matching_rule_wins_else_top_level() {
    let c = parse(
        r#"
        duration = "1m"
        [[rule]]
        match = "w/{city}.json"
        duration = "1h"
        [[rule]]
        match = "w/*.json"
        duration = "2h"
        [[rule]]
        match = "**/*.json"
        duration = "3h"
        "#,
    )
    .unwrap();
    let m = c.settings_for(OsStr::new("w/paris.json"));
    assert_eq!((m.rule, m.settings.duration), (Some(0), secs(3600)));
    assert_eq!(m.captures, vec![("city".to_string(), b"paris".to_vec())]);
    let m = c.settings_for(OsStr::new("x/y.json"));
    assert_eq!((m.rule, m.settings.duration), (Some(2), secs(3 * 3600)));
    assert!(m.captures.is_empty());
    let m = c.settings_for(OsStr::new("x.txt"));
    assert_eq!((m.rule, m.settings.duration), (None, secs(60)));
    assert!(m.captures.is_empty());
}

#[test]
fn fill_dirs_are_the_literal_prefixes_of_fill_on_miss_rules() {
    let c = parse(
        r#"
        [[rule]]
        match = "weather/{city}.json"
        fill_on_miss = true
        [[rule]]
        match = "a/b/*.json"
        fill_on_miss = true
        [[rule]]
        match = "a/c/*/d/*.json"
        fill_on_miss = true
        [[rule]]
        match = "no/fill/*.json"
        [[rule]]
        match = "top.json"
        fill_on_miss = true
        "#,
    )
    .unwrap();
    let want: Vec<PathBuf> = ["weather", "a", "a/b", "a/c"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(c.fill_dirs(), want);
}

#[test]
fn durations_over_a_hundred_years_are_errors() {
    assert_eq!(parse_duration("100y"), Ok(MAX_DURATION));
    for text in ["101y", "100000y", "18446744073709551615"] {
        let err = parse_duration(text).unwrap_err();
        assert!(err.contains("100-year maximum"), "{text}: {err}");
    }
    let err = parse("refresh_timeout = 9999999999999")
        .unwrap_err()
        .to_string();
    assert!(err.contains("100-year maximum"), "{err}");
}
