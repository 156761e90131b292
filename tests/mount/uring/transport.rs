//! The `transport` key and `--transport` flag (SPEC §15): `uring` where the kernel does not
//! offer it is a start-up error saying how to turn it on; `auto` (the default) takes the ring
//! where `enable_uring` is on and `/dev/fuse` where it is off, with one line saying why;
//! `classic` never asks for the ring; the stats say which transport serves; a bad value is a
//! configuration error.

use super::{wait_ready, UringParam};
use crate::common::*;

const HOW_TO_ENABLE: &str = "echo 1 | sudo tee /sys/module/fuse/parameters/enable_uring";

/// Start `builder`'s mount (an entry in it) and wait until it answers; its stats must say it
/// is served on `transport`.
#[track_caller]
fn served_on(builder: MountBuilder, transport: &str) -> Mount {
    let m = builder.backing_file("x.json", "{}").start();
    wait_ready(&m, 1);
    assert_eq!(stats(&m)["transport"], transport, "{}", m.stderr());
    m
}

/// Stop `m` cleanly and return what its daemon logged.
#[track_caller]
fn stop(mut m: Mount) -> String {
    let status = m.stop();
    assert!(status.success(), "daemon exited with {status}");
    m.stderr()
}

#[test]
fn transport_uring_without_enable_uring_is_a_start_up_error_naming_the_fix() {
    let Some(_param) = UringParam::set(false) else {
        return;
    };
    let by_flag = Mount::new().args(&["--transport", "uring"]);
    let by_key = Mount::new()
        .without_test_transport()
        .config("transport = \"uring\"\n");
    for (how, builder) in [
        ("--transport uring", by_flag),
        ("transport = \"uring\"", by_key),
    ] {
        let (status, stderr) = builder.run_expecting_exit();
        assert_eq!(status.code(), Some(2), "{how}: {status}\n{stderr}");
        assert!(
            stderr.contains("transport \"uring\"") && stderr.contains(HOW_TO_ENABLE),
            "{how}: the refusal names the fix:\n{stderr}"
        );
    }
}

#[test]
fn the_default_auto_takes_the_ring_where_enable_uring_is_on() {
    let Some(_param) = UringParam::set(true) else {
        return;
    };
    let m = served_on(Mount::new().without_test_transport(), "uring");
    let out = m.cachetta(&["stats".as_ref(), m.mnt.as_os_str()]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().eq(["transport", "uring"])),
        "cachetta stats:\n{table}"
    );
    let stderr = stop(m);
    assert!(stderr.contains("io_uring ring registered"), "{stderr}");
}

#[test]
fn auto_without_enable_uring_is_classic_with_one_line_saying_why() {
    let Some(_param) = UringParam::set(false) else {
        return;
    };
    let auto = Mount::new()
        .without_test_transport()
        .config("transport = \"auto\"\n");
    let m = served_on(auto, "classic");
    let stderr = stop(m);
    let why: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("classic transport"))
        .collect();
    assert_eq!(why.len(), 1, "{stderr}");
    assert!(why[0].contains(HOW_TO_ENABLE), "{stderr}");
    assert!(
        !stderr.contains("WARN") && !stderr.contains("ERROR"),
        "not offered is no problem under auto:\n{stderr}"
    );
}

#[test]
fn classic_never_asks_for_the_ring_even_with_enable_uring_on() {
    let Some(_param) = UringParam::set(true) else {
        return;
    };
    let m = served_on(Mount::new().args(&["--transport", "classic"]), "classic");
    let stderr = stop(m);
    assert!(
        stderr.contains("io_uring=false") && !stderr.contains("io_uring ring"),
        "{stderr}"
    );
}

#[test]
fn a_bad_transport_is_a_configuration_error() {
    let (status, stderr) = Mount::new()
        .args(&["--transport", "io_uring"])
        .run_expecting_exit();
    assert_eq!(status.code(), Some(2), "{status}\n{stderr}");
    assert!(
        stderr.contains("--transport") && stderr.contains("auto, uring or classic"),
        "{stderr}"
    );
    let (status, stderr) = Mount::new()
        .without_test_transport()
        .config("\ntransport = \"fast\"\n")
        .run_expecting_exit();
    assert_eq!(status.code(), Some(2), "{status}\n{stderr}");
    assert!(
        stderr.contains("config.toml:2: key `transport`: invalid transport \"fast\""),
        "{stderr}"
    );
}
