//! Metrics over HTTP (SPEC §14): `--metrics-addr` serves `GET /metrics` (the counters of
//! `stats --prometheus`, `cachetta_info`, the request and refresh histograms) and 404 for
//! anything else, in the foreground and from a `--daemon`; a port in use or a bad address
//! refuses the mount with exit 2. The page is checked with `promtool check metrics` where
//! Debian's `prometheus` package is installed (always in CI).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use crate::daemon_scene::{assert_refused, Scene};

/// The address the daemon logged as `metrics at http://ADDR/metrics` (it listens on port 0).
fn logged_addr(log: impl Fn() -> String) -> SocketAddr {
    let mut found = None;
    eventually(Duration::from_secs(5), || {
        found = log().lines().find_map(|line| {
            let rest = line.split("metrics at http://").nth(1)?;
            rest.split("/metrics").next()?.parse().ok()
        });
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no `metrics at http://...` line in:\n{}", log()))
}

/// `GET path` over a plain connection: the status line and the body.
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read the response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, body.to_string())
}

/// The value of the one sample named exactly `series` (name and labels).
fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{page}"))
        .parse()
        .unwrap()
}

/// `promtool check metrics` on `page`; without promtool the check is skipped, except in CI
/// (`CACHETTA_REQUIRE_FUSE=1`), where `.ci/run` installs it.
fn promtool_accepts(page: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if std::env::var_os("CACHETTA_REQUIRE_FUSE").is_some_and(|v| v == "1") => {
            panic!(
                "CACHETTA_REQUIRE_FUSE=1 but promtool cannot run ({e}); apt-get install prometheus"
            )
        }
        Err(e) => {
            eprintln!("skipping promtool check metrics: {e}");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\npage:\n{page}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_endpoint_serves_counters_info_and_histograms() {
    if !require_fuse() {
        return;
    }
    let m = Mount::new()
        .config(
            "[[rule]]\nmatch = \"filled.json\"\nfill_on_miss = true\nrefresh = \"echo '{\\\"n\\\":1}'\"\n",
        )
        .backing_file("a.json", "{\"a\":1}")
        .args(&["--metrics-addr", "127.0.0.1:0"])
        .start();
    let addr = logged_addr(|| m.stderr());
    assert_eq!(fs::read(m.path("a.json")).unwrap(), b"{\"a\":1}");
    let filled = fs::read_to_string(m.path("filled.json")).unwrap();
    assert!(filled.contains("\"n\""), "{filled}");

    let (status, page) = get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{page}");
    let info = format!(
        "cachetta_info{{mountpoint=\"{}\",backing=\"{}\",version=\"{}\"}}",
        m.mnt.display(),
        m.backing.display(),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&page, &info), 1.0);
    // The counters and gauges of `stats --prometheus`, by the same names.
    assert!(sample(&page, "cachetta_hits_total") >= 1.0);
    assert!(sample(&page, "cachetta_requests_total{op=\"lookup\"}") >= 1.0);
    assert!(sample(&page, "cachetta_uptime_seconds") >= 0.0);
    assert!(
        page.contains("# TYPE cachetta_lru_entries gauge\n"),
        "{page}"
    );
    // The request histogram counts what reached the daemon, per operation.
    assert!(page.contains("# TYPE cachetta_request_duration_seconds histogram\n"));
    let lookups = sample(
        &page,
        "cachetta_request_duration_seconds_count{op=\"lookup\"}",
    );
    assert!(lookups > 0.0, "{page}");
    assert_eq!(
        sample(
            &page,
            "cachetta_request_duration_seconds_bucket{op=\"lookup\",le=\"+Inf\"}"
        ),
        lookups
    );
    assert!(
        sample(
            &page,
            "cachetta_request_duration_seconds_sum{op=\"lookup\"}"
        ) > 0.0
    );
    // The fill ran one refresh.
    assert!(page.contains("# TYPE cachetta_refresh_duration_seconds histogram\n"));
    assert_eq!(
        sample(&page, "cachetta_refresh_duration_seconds_count"),
        1.0
    );
    assert_eq!(sample(&page, "cachetta_refreshes_ok_total"), 1.0);

    let (status, body) = get(addr, "/other");
    assert!(status.starts_with("HTTP/1.1 404 "), "{status}: {body}");
    promtool_accepts(&page);
}

#[test]
fn a_metrics_port_in_use_refuses_the_mount_with_exit_2() {
    if !require_fuse() {
        return;
    }
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, stderr) = Mount::new()
        .args(&["--metrics-addr", &addr])
        .run_expecting_exit();
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("cannot serve metrics on \"{addr}\"")),
        "{stderr}"
    );
    assert!(stderr.contains("in use"), "{stderr}");
}

#[test]
fn a_bad_metrics_address_refuses_the_mount_with_exit_2() {
    if !require_fuse() {
        return;
    }
    for bad in ["9464", "127.0.0.1:http", "127.0.0.1:99999"] {
        let (status, stderr) = Mount::new()
            .config(&format!("metrics_addr = \"{bad}\"\n"))
            .run_expecting_exit();
        assert_eq!(status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains("cannot serve metrics on"),
            "{bad}: {stderr}"
        );
    }
}

#[test]
fn the_detached_daemon_serves_metrics_and_a_port_in_use_stops_the_parent() {
    if !require_fuse() {
        return;
    }
    let s = Scene::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = s.run(&s.mount_args(&["--daemon", "--metrics-addr", &addr]));
    assert_refused(&out, &["cannot serve metrics on", "in use"]);
    assert!(s.daemon_pids().is_empty(), "a daemon was left running");
    assert!(!is_mounted(&s.mnt()));

    s.mount_daemon(&["--metrics-addr", "127.0.0.1:0"]);
    let addr = logged_addr(|| s.log());
    let (status, page) = get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{page}");
    assert!(page.contains("cachetta_info{"), "{page}");
    s.unmount();
}
