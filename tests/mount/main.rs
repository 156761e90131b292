//! Every test that mounts: one binary (one link, one process) with a module per area, as
//! mountpoint-s3's `fuse_tests` are. Each mount lives in a temp dir under `/tmp` behind a guard
//! that unmounts on drop (`common::Mount`, `daemon_scene::Scene`). Tests of different modules
//! run side by side in this process: everything process-wide they touch goes through
//! `common` (the `forking()` lock around every spawn, `kernel_caches_kept()` around counts the
//! kernel's caches decide).

#[path = "../common/mod.rs"]
mod common;

mod cache_commands;
mod cache_control;
mod concurrency;
mod confinement;
mod copy_in;
mod daemon;
mod daemon_hangup;
mod daemon_scene;
mod daemon_systemd;
mod exact_time;
mod external_changes;
mod faults;
mod fstab;
mod gluster;
mod inspection;
mod invalidation;
mod kernel_cache;
mod library_mount;
mod metrics;
mod mount_lifecycle;
mod page_cache;
mod refresh;
mod refresh_read_through;
mod shared;
mod shared_coherence;
mod statfs;
mod storm;
mod uring;
mod visibility;
mod write_errors;
mod writes;
mod xattr;
