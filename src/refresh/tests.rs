//! The refresh runner driven directly: real `sh` commands, temp dirs, a manual clock.

use super::run::with_stderr;
use super::*;
use crate::clock::ManualClock;
use crate::config::{Overrides, Rule, Settings};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Barrier;
use std::time::UNIX_EPOCH;

const LONG: Duration = Duration::from_secs(30);

struct Fixture {
    backing: tempfile::TempDir,
    /// Where commands leave their traces: outside the backing dir.
    out: tempfile::TempDir,
    clock: Arc<ManualClock>,
    stats: Arc<Stats>,
    published: Arc<Mutex<Vec<PathBuf>>>,
    refresher: Refresher,
}

impl Fixture {
    /// A refresher whose every key gets `refresh` (the text may name `{out}`, the traces dir).
    fn new(refresh: &str) -> Fixture {
        Fixture::with(refresh, |_| {})
    }

    fn with(refresh: &str, tweak: impl FnOnce(&mut Config)) -> Fixture {
        let backing = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut config = Config::defaults(&Overrides {
            backing: Some(backing.path().to_path_buf()),
            ..Overrides::default()
        });
        config.defaults.refresh = Some(refresh.replace("{out}", &out.path().to_string_lossy()));
        config.defaults.refresh_timeout = LONG;
        tweak(&mut config);
        let store = Arc::new(Store::open(backing.path(), false).unwrap());
        let clock = Arc::new(ManualClock::new(
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        let stats = Arc::new(Stats::default());
        let published = Arc::new(Mutex::new(Vec::new()));
        let seen = published.clone();
        let refresher = Refresher::new(
            store,
            Arc::new(config),
            clock.clone(),
            stats.clone(),
            Box::new(move |key: &Path, _| seen.lock().push(key.to_path_buf())),
        );
        Fixture {
            backing,
            out,
            clock,
            stats,
            published,
            refresher,
        }
    }

    fn entry(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.backing.path().join(key)).ok()
    }

    fn trace(&self, name: &str) -> String {
        std::fs::read_to_string(self.out.path().join(name)).unwrap_or_default()
    }

    fn runs(&self) -> usize {
        self.trace("runs").lines().count()
    }

    fn count(&self, counter: &std::sync::atomic::AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn wait_for_trace(&self, name: &str) -> String {
        let deadline = Instant::now() + LONG;
        loop {
            let text = self.trace(name);
            if text.ends_with('\n') {
                return text;
            }
            assert!(Instant::now() < deadline, "{name} never written");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn key(s: &str) -> &Path {
    Path::new(s)
}

/// Dead: gone, or a zombie waiting for an init that may not reap in a container.
fn is_dead(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

fn wait_dead(pid: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if is_dead(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn success_publishes_the_output_fresh_and_reports_it() {
    let fx = Fixture::new(r#"echo '{"fresh": true}'"#);
    let outcome = fx.refresher.run_and_wait(key("x.json"), Reason::Miss);
    assert_eq!(outcome, Outcome::Published);
    assert_eq!(fx.entry("x.json").unwrap(), b"{\"fresh\": true}\n");
    let mtime = std::fs::metadata(fx.backing.path().join("x.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(mtime, fx.clock.now());
    assert_eq!(*fx.published.lock(), vec![PathBuf::from("x.json")]);
    assert_eq!(fx.count(&fx.stats.refreshes_started), 1);
    assert_eq!(fx.count(&fx.stats.refreshes_ok), 1);
    assert_eq!(fx.refresher.last_error(key("x.json")), None);
    assert!(!fx.refresher.is_running(key("x.json")));
}

#[test]
fn publish_creates_missing_directories_and_keeps_an_existing_mode() {
    let fx = Fixture::new("echo 1");
    assert_eq!(
        fx.refresher.run_and_wait(key("a/b/c.json"), Reason::Miss),
        Outcome::Published
    );
    assert_eq!(fx.entry("a/b/c.json").unwrap(), b"1\n");

    let path = fx.backing.path().join("m.json");
    std::fs::write(&path, "0").unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert_eq!(
        fx.refresher.run_and_wait(key("m.json"), Reason::Stale),
        Outcome::Published
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn environment_is_exact_and_keys_reach_the_command_only_as_bytes() {
    let fx = Fixture::with(
        "env -0 > '{out}/env'; pwd -P > '{out}/cwd'; readlink /proc/$$/fd/0 > '{out}/stdin'; echo '{}'",
        |config| {
            let settings = config.defaults.clone();
            config.rules = vec![Rule::new("w/{city}.json", settings).unwrap()];
        },
    );
    let mut raw = b"w/$(touch pwned);rm -rf ~;`touch pwned2`\xff\n".to_vec();
    raw.extend_from_slice(b".json");
    let hostile = PathBuf::from(OsString::from_vec(raw.clone()));
    assert_eq!(
        fx.refresher.run_and_wait(&hostile, Reason::Stale),
        Outcome::Published
    );

    let env = std::fs::read(fx.out.path().join("env")).unwrap();
    let mut ours: Vec<(Vec<u8>, Vec<u8>)> = env
        .split(|&b| b == 0)
        .filter(|var| var.starts_with(b"CACHETTA_"))
        .map(|var| {
            let eq = var.iter().position(|&b| b == b'=').unwrap();
            (var[..eq].to_vec(), var[eq + 1..].to_vec())
        })
        // Inherited ones (CI sets CACHETTA_REQUIRE_FUSE) pass through untouched; not ours.
        .filter(|(name, _)| std::env::var_os(std::ffi::OsStr::from_bytes(name)).is_none())
        .collect();
    ours.sort();
    let city = raw[2..raw.len() - 5].to_vec();
    let mut entry = fx
        .backing
        .path()
        .canonicalize()
        .unwrap()
        .into_os_string()
        .into_vec();
    entry.push(b'/');
    entry.extend_from_slice(&raw);
    let mut expected = vec![
        (b"CACHETTA_CITY".to_vec(), city.clone()),
        (b"CACHETTA_ENTRY".to_vec(), entry),
        (b"CACHETTA_KEY".to_vec(), raw.clone()),
        (b"CACHETTA_NAME".to_vec(), city),
        (b"CACHETTA_REASON".to_vec(), b"stale".to_vec()),
    ];
    expected.sort();
    assert_eq!(ours, expected);

    assert_eq!(
        fx.trace("cwd").trim_end(),
        fx.backing.path().canonicalize().unwrap().to_string_lossy()
    );
    assert_eq!(fx.trace("stdin").trim_end(), "/dev/null");
    for dir in [fx.backing.path(), fx.out.path()] {
        assert!(!dir.join("pwned").exists() && !dir.join("pwned2").exists());
    }
    assert!(std::fs::read(fx.backing.path().join(&hostile)).is_ok());
}

#[test]
fn non_zero_exit_fails_with_status_and_first_stderr_line() {
    let fx = Fixture::new("echo '{}'; echo 'no route to host' >&2; echo more >&2; exit 3");
    let outcome = fx.refresher.run_and_wait(key("x.json"), Reason::Miss);
    let error = "exit status 3: no route to host".to_owned();
    assert_eq!(outcome, Outcome::Failed(error.clone()));
    assert_eq!(fx.refresher.last_error(key("x.json")), Some(error));
    assert_eq!(fx.entry("x.json"), None);
    assert_eq!(fx.count(&fx.stats.refreshes_failed), 1);
    assert!(fx.published.lock().is_empty());
}

#[test]
fn garbage_output_fails_and_leaves_the_old_entry() {
    let fx = Fixture::new("echo 'not json'");
    std::fs::write(fx.backing.path().join("x.json"), "{\"old\":1}").unwrap();
    let outcome = fx.refresher.run_and_wait(key("x.json"), Reason::Stale);
    assert_eq!(outcome, Outcome::Failed("output is not valid JSON".into()));
    assert_eq!(fx.entry("x.json").unwrap(), b"{\"old\":1}");
}

#[test]
fn oversize_output_is_cut_off_and_the_command_killed() {
    let fx = Fixture::with("echo $$ > '{out}/pid'; yes '\"x\"'", |config| {
        config.max_entry_bytes = 1000;
    });
    let started = Instant::now();
    let outcome = fx.refresher.run_and_wait(key("x.json"), Reason::Miss);
    assert_eq!(
        outcome,
        Outcome::Failed("output larger than max_entry_bytes (1000 bytes)".into())
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(wait_dead(&fx.trace("pid")));
    assert_eq!(fx.entry("x.json"), None);
}

#[test]
fn output_of_exactly_max_entry_bytes_is_accepted() {
    let fx = Fixture::with("printf '\"%s\"' 12345678", |config| {
        config.max_entry_bytes = 10;
    });
    assert_eq!(
        fx.refresher.run_and_wait(key("x.json"), Reason::Miss),
        Outcome::Published
    );
}

#[test]
fn flooding_stderr_never_blocks_the_command() {
    let fx = Fixture::new("yes 'noise' | head -c 20000000 >&2; echo '{\"ok\":1}'");
    let outcome = fx.refresher.run_and_wait(key("x.json"), Reason::Miss);
    assert_eq!(outcome, Outcome::Published);
    assert_eq!(fx.entry("x.json").unwrap(), b"{\"ok\":1}\n");
}

#[test]
fn hanging_command_is_killed_at_its_timeout_with_its_children() {
    let fx = Fixture::with(
        "sleep 100 & echo $! > '{out}/child'; echo $$ > '{out}/shell'; wait",
        |config| config.defaults.refresh_timeout = Duration::from_secs(1),
    );
    let started = Instant::now();
    let outcome = fx.refresher.run_and_wait(key("x.json"), Reason::Miss);
    // The waiter gives up after the same timeout, at most a moment before the kill.
    if outcome == Outcome::StillRunning {
        assert!(fx.refresher.wait_idle(LONG));
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        fx.refresher.last_error(key("x.json")),
        Some("timed out after 1s".into())
    );
    assert!(
        wait_dead(&fx.trace("child")),
        "the background child survived"
    );
    assert!(wait_dead(&fx.trace("shell")));
}

#[test]
fn leftovers_of_a_finished_command_are_killed_and_do_not_hold_the_output() {
    let fx = Fixture::new("sleep 100 & echo $! > '{out}/child'; echo '[]'");
    let started = Instant::now();
    assert_eq!(
        fx.refresher.run_and_wait(key("x.json"), Reason::Miss),
        Outcome::Published
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(wait_dead(&fx.trace("child")));
}

#[test]
fn condition_reads_the_output_and_a_no_declines_without_error() {
    let fx = Fixture::with("echo \"{\\\"v\\\": \\\"$CACHETTA_NAME\\\"}\"", |config| {
        config.defaults.condition = Some("grep -q '\"good\"'".into());
    });
    assert_eq!(
        fx.refresher.run_and_wait(key("good.json"), Reason::Miss),
        Outcome::Published
    );
    assert_eq!(fx.entry("good.json").unwrap(), b"{\"v\": \"good\"}\n");

    assert_eq!(
        fx.refresher.run_and_wait(key("bad.json"), Reason::Miss),
        Outcome::Declined
    );
    assert_eq!(fx.entry("bad.json"), None);
    assert_eq!(fx.refresher.last_error(key("bad.json")), None);
    assert_eq!(fx.count(&fx.stats.refreshes_declined), 1);
    assert_eq!(fx.count(&fx.stats.refreshes_failed), 0);
    // Declined keys wait out the backoff too.
    assert!(!fx.refresher.start(key("bad.json"), Reason::Stale));
}

#[test]
fn condition_that_never_reads_its_input_still_decides() {
    let fx = Fixture::with(
        "head -c 300000 /dev/zero | tr '\\0' ' '; echo 1",
        |config| {
            config.defaults.condition = Some("true".into());
        },
    );
    assert_eq!(
        fx.refresher.run_and_wait(key("x.json"), Reason::Miss),
        Outcome::Published
    );
}

#[test]
fn declined_refresh_clears_a_previous_error() {
    let fx = Fixture::with("test -e '{out}/ok' || exit 1; echo '{}'", |config| {
        config.defaults.condition = Some("false".into())
    });
    assert!(matches!(
        fx.refresher.run_and_wait(key("x.json"), Reason::Miss),
        Outcome::Failed(_)
    ));
    assert!(fx.refresher.last_error(key("x.json")).is_some());
    std::fs::write(fx.out.path().join("ok"), "").unwrap();
    fx.clock.advance(Duration::from_secs(11));
    assert_eq!(
        fx.refresher.run_and_wait(key("x.json"), Reason::Miss),
        Outcome::Declined
    );
    assert_eq!(fx.refresher.last_error(key("x.json")), None);
}

#[test]
fn failed_key_backs_off_until_the_clock_passes_the_window() {
    let fx = Fixture::with("echo run >> '{out}/runs'; exit 1", |config| {
        config.defaults.refresh_backoff = Duration::from_secs(10);
    });
    let k = key("x.json");
    assert!(fx.refresher.start(k, Reason::Stale));
    assert!(fx.refresher.wait_idle(LONG));
    assert_eq!(fx.runs(), 1);
    assert_eq!(fx.refresher.last_error(k), Some("exit status 1".into()));

    fx.clock.advance(Duration::from_secs(9));
    assert!(!fx.refresher.start(k, Reason::Stale));
    assert_eq!(
        fx.refresher.run_and_wait(k, Reason::Miss),
        Outcome::BackingOff
    );
    assert!(fx.refresher.wait_idle(LONG));
    assert_eq!(fx.runs(), 1);

    fx.clock.advance(Duration::from_secs(2));
    assert!(fx.refresher.start(k, Reason::Stale));
    assert!(fx.refresher.wait_idle(LONG));
    assert_eq!(fx.runs(), 2);
    // Another key was never held back.
    assert!(fx.refresher.start(key("y.json"), Reason::Stale));
}

#[test]
fn concurrent_callers_of_one_key_share_one_run() {
    let fx = Arc::new(Fixture::new(
        "sleep 1; echo run >> '{out}/runs'; echo '{\"n\":1}'",
    ));
    let barrier = Arc::new(Barrier::new(10));
    let threads: Vec<_> = (0..10)
        .map(|_| {
            let (fx, barrier) = (fx.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                fx.refresher.run_and_wait(key("x.json"), Reason::Miss)
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), Outcome::Published);
    }
    assert_eq!(fx.runs(), 1);
    assert_eq!(fx.count(&fx.stats.refreshes_started), 1);
}

#[test]
fn start_while_running_joins_instead_of_starting_another() {
    let fx = Fixture::new("echo run >> '{out}/runs'; sleep 2; echo 1");
    assert!(fx.refresher.start(key("x.json"), Reason::Stale));
    assert!(!fx.refresher.start(key("x.json"), Reason::Stale));
    assert!(fx.refresher.is_running(key("x.json")));
    assert_eq!(
        fx.refresher.run_and_wait(key("x.json"), Reason::Miss),
        Outcome::Published
    );
    assert_eq!(fx.runs(), 1);
    assert!(!fx.refresher.is_running(key("x.json")));
}

#[test]
fn at_most_max_refreshes_run_at_once_and_the_rest_queue() {
    let fx = Fixture::with(
        "touch '{out}/run.'\"$CACHETTA_NAME\"; ls '{out}' | grep -c '^run\\.' >> '{out}/counts'; \
         sleep 1; rm '{out}/run.'\"$CACHETTA_NAME\"; echo '{}'",
        |config| config.max_refreshes = 2,
    );
    let keys = ["a.json", "b.json", "c.json", "d.json"];
    let started = Instant::now();
    for k in keys {
        assert!(fx.refresher.start(key(k), Reason::Stale));
    }
    assert!(keys.iter().all(|k| fx.refresher.is_running(key(k))));
    assert!(fx.refresher.wait_idle(LONG));
    assert!(keys.iter().all(|k| fx.entry(k).is_some()));
    assert!(started.elapsed() >= Duration::from_secs(2));
    let counts: Vec<u32> = fx
        .trace("counts")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 4);
    assert!(counts.iter().all(|&n| (1..=2).contains(&n)), "{counts:?}");
    assert_eq!(fx.count(&fx.stats.refreshes_ok), 4);
}

#[test]
fn cancel_during_a_run_discards_its_result() {
    let fx = Fixture::new("echo $$ > '{out}/shell'; sleep 2; echo '{\"late\":1}'");
    std::fs::write(fx.backing.path().join("x.json"), "{\"old\":1}").unwrap();
    let k = key("x.json");
    let waiter = std::thread::scope(|scope| {
        let waiter = scope.spawn(|| fx.refresher.run_and_wait(k, Reason::Stale));
        let shell = fx.wait_for_trace("shell");
        assert!(fx.refresher.cancel(k));
        assert!(!fx.refresher.is_running(k));
        assert!(wait_dead(&shell));
        waiter.join().unwrap()
    });
    assert_eq!(waiter, Outcome::Cancelled);
    assert!(fx.refresher.wait_idle(LONG));
    assert_eq!(fx.entry("x.json").unwrap(), b"{\"old\":1}");
    assert!(fx.published.lock().is_empty());
    assert_eq!(fx.count(&fx.stats.refreshes_failed), 0);
    assert_eq!(fx.refresher.last_error(k), None);
    assert!(!fx.refresher.cancel(k));
}

#[test]
fn cancel_clears_backoff_so_the_next_read_refreshes_at_once() {
    let fx = Fixture::new("echo run >> '{out}/runs'; exit 1");
    let k = key("x.json");
    assert!(matches!(
        fx.refresher.run_and_wait(k, Reason::Miss),
        Outcome::Failed(_)
    ));
    assert!(!fx.refresher.start(k, Reason::Stale));
    fx.refresher.cancel(k);
    assert_eq!(fx.refresher.last_error(k), None);
    assert!(matches!(
        fx.refresher.run_and_wait(k, Reason::Miss),
        Outcome::Failed(_)
    ));
    assert_eq!(fx.runs(), 2);
}

#[test]
fn cancel_of_a_queued_refresh_drops_it() {
    let fx = Fixture::with(
        "echo \"$CACHETTA_NAME\" >> '{out}/runs'; sleep 1; echo 1",
        |config| {
            config.max_refreshes = 1;
        },
    );
    assert!(fx.refresher.start(key("a.json"), Reason::Stale));
    assert!(fx.refresher.start(key("b.json"), Reason::Stale));
    assert!(fx.refresher.cancel(key("b.json")));
    assert!(fx.refresher.wait_idle(LONG));
    assert!(fx.entry("a.json").is_some());
    assert_eq!(fx.trace("runs"), "a\n");
    assert_eq!(fx.entry("b.json"), None);
}

#[test]
fn shutdown_kills_running_commands_drops_queued_ones_and_refuses_more() {
    let fx = Fixture::with(
        "sleep 100 & echo $! > '{out}/child'; echo $$ > '{out}/shell'; wait",
        |config| config.max_refreshes = 1,
    );
    assert!(fx.refresher.start(key("a.json"), Reason::Stale));
    assert!(fx.refresher.start(key("b.json"), Reason::Stale));
    let shell = fx.wait_for_trace("shell");
    let child = fx.wait_for_trace("child");
    let started = Instant::now();
    fx.refresher.shutdown();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(wait_dead(&shell) && wait_dead(&child));
    assert!(!fx.refresher.is_running(key("b.json")));
    assert!(!fx.refresher.start(key("c.json"), Reason::Stale));
    assert_eq!(
        fx.refresher.run_and_wait(key("c.json"), Reason::Miss),
        Outcome::ShutDown
    );
    assert_eq!(fx.entry("a.json"), None);
    assert_eq!(fx.count(&fx.stats.refreshes_started), 1);
}

#[test]
fn keys_without_a_command_or_outside_the_entry_space_are_refused() {
    let fx = Fixture::with("echo 1", |config| {
        let no_refresh = Settings::default();
        config.rules = vec![Rule::new("plain/*.json", no_refresh).unwrap()];
    });
    for k in ["plain/x.json", "../x.json", "/abs.json", "x.txt", ""] {
        assert_eq!(
            fx.refresher.run_and_wait(key(k), Reason::Miss),
            Outcome::NoCommand,
            "{k}"
        );
        assert!(!fx.refresher.start(key(k), Reason::Stale));
    }
}

#[test]
fn error_lines_are_single_line_and_name_the_signal() {
    assert_eq!(with_stderr("exit status 1".into(), b""), "exit status 1");
    assert_eq!(
        with_stderr("exit status 1".into(), b"\n  first\r\nsecond\n"),
        "exit status 1: first"
    );
    assert_eq!(with_stderr("x".into(), b"a\x1b[31mred\tb"), "x: a[31mredb");
    let fx = Fixture::new("kill -9 $$");
    assert_eq!(
        fx.refresher.run_and_wait(key("x.json"), Reason::Miss),
        Outcome::Failed("killed by signal 9".into())
    );
}

#[test]
fn condition_that_hangs_is_a_failure_not_a_decline() {
    let fx = Fixture::with("echo 1", |config| {
        config.defaults.refresh_timeout = Duration::from_secs(1);
        config.defaults.condition = Some("sleep 100".into());
    });
    assert!(fx.refresher.start(key("x.json"), Reason::Stale));
    assert!(fx.refresher.wait_idle(LONG));
    assert_eq!(
        fx.refresher.last_error(key("x.json")),
        Some("condition timed out after 1s".into())
    );
    assert_eq!(fx.count(&fx.stats.refreshes_failed), 1);
    assert_eq!(fx.entry("x.json"), None);
}

#[test]
fn sixteen_request_threads_share_one_refresher_and_each_key_runs_once() {
    // Each run records its key; the command takes long enough for all callers to join it.
    let fx = Fixture::new(
        r#"echo "$CACHETTA_KEY" >> '{out}/runs'; sleep 0.3; echo "{\"k\": \"$CACHETTA_KEY\"}""#,
    );
    let fx = Arc::new(fx);
    let barrier = Arc::new(Barrier::new(16));
    let callers: Vec<_> = (0..16)
        .map(|i| {
            let (fx, barrier) = (fx.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let key = format!("k{}.json", i % 4);
                let outcome = fx.refresher.run_and_wait(Path::new(&key), Reason::Miss);
                (key, outcome)
            })
        })
        .collect();
    for caller in callers {
        let (key, outcome) = caller.join().unwrap();
        assert_eq!(outcome, Outcome::Published, "{key}");
        let want = format!("{{\"k\": \"{key}\"}}\n");
        assert_eq!(fx.entry(&key).unwrap(), want.as_bytes(), "{key}");
    }
    let mut runs: Vec<String> = fx.trace("runs").lines().map(String::from).collect();
    runs.sort();
    assert_eq!(
        runs,
        ["k0.json", "k1.json", "k2.json", "k3.json"],
        "one run per key"
    );
    assert_eq!(fx.count(&fx.stats.refreshes_started), 4);
}
