//! Test plumbing for the io_uring transport while it is being built (issue #24): the hidden
//! environment switch [`EXPERIMENT_ENV`], the rings set up before the mount, and their start on
//! the session's connection before it serves. There is no config key or flag yet: the rings (one per
//! queue, each with its thread pinned to the queue's CPU, registering passthrough backings in the
//! adapter's registry) have not run the whole mount suite (docs/uring.md).

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use tracing::{info, warn};

use super::Event;
use crate::fs::CacheFs;
use crate::fuse::{Backings, FuseAdapter};
use crate::uring::{self, ring, serve};

/// `CACHETTA_URING_EXPERIMENT=statfs-getattr` puts the mount on an io_uring ring that serves
/// `statfs` and `getattr` and refuses every other request; `=all` on one that serves every op
/// the adapter serves (with passthrough when the mount may use it). For tests only.
#[doc(hidden)]
pub const EXPERIMENT_ENV: &str = "CACHETTA_URING_EXPERIMENT";

/// The experiments there are, and what the ring serves in each.
const EXPERIMENTS: &[(&str, serve::Scope)] = &[
    ("statfs-getattr", serve::Scope::StatfsGetattr),
    ("all", serve::Scope::Every),
];

/// Rings ready before the mount, and what INIT will say of them.
pub struct Wanted {
    rings: Vec<ring::Rings>,
    scope: serve::Scope,
    granted: Arc<AtomicBool>,
    backings: Arc<Backings>,
}

/// The rings, when the switch asks for them and this kernel offers the transport, and the
/// adapter told to ask for them at INIT. Any failure here means the classic transport, with a
/// warning: nothing is mounted yet.
pub fn prepare(adapter: FuseAdapter) -> (FuseAdapter, Option<Wanted>) {
    match rings() {
        Some((rings, scope)) => {
            let granted = Arc::new(AtomicBool::new(false));
            let adapter = adapter.offer_ring(granted.clone());
            let backings = adapter.backings();
            (
                adapter,
                Some(Wanted {
                    rings,
                    scope,
                    granted,
                    backings,
                }),
            )
        }
        None => (adapter, None),
    }
}

fn rings() -> Option<(Vec<ring::Rings>, serve::Scope)> {
    let asked = std::env::var_os(EXPERIMENT_ENV)?;
    let Some(&(_, scope)) = EXPERIMENTS.iter().find(|(name, _)| asked == *name) else {
        let known: Vec<&str> = EXPERIMENTS.iter().map(|(name, _)| *name).collect();
        warn!("{EXPERIMENT_ENV}={asked:?} is no experiment of this build (only {known:?}); classic transport");
        return None;
    };
    if let Err(why) = uring::offered() {
        warn!("{why}; classic transport");
        return None;
    }
    // One ring per queue, each served by a thread pinned to the queue's CPU (the kernel puts
    // a request on the queue of the CPU its caller runs on).
    let rings = ring::possible_cpus().and_then(|queues| {
        (0..queues)
            .map(|qid| {
                ring::Rings::new(
                    &[qid],
                    ring::ENTRIES_PER_QUEUE,
                    ring::default_payload_size(),
                )
            })
            .collect::<std::io::Result<Vec<_>>>()
    });
    rings
        .inspect_err(|e| warn!("cannot set up io_uring rings ({e}); classic transport"))
        .ok()
        .map(|rings| (rings, scope))
}

/// After INIT, before the session serves: register the rings on a duplicate of the session's
/// fd, if the kernel granted the transport. `Err` when the kernel agreed to wait for rings it
/// will not get: the mount must then be given up, or every request on it hangs.
/// Should the ring stop serving while the connection lives, `events` hears of it: the mount
/// must then end, as requests wait for the ring.
pub(super) fn start(
    wanted: Option<Wanted>,
    session: &fuser::Session<FuseAdapter>,
    fs: Arc<CacheFs>,
    events: Sender<Event>,
) -> Result<Option<serve::Running>, String> {
    let Some(Wanted {
        rings,
        scope,
        granted,
        backings,
    }) = wanted
    else {
        return Ok(None);
    };
    if !granted.load(Ordering::SeqCst) {
        warn!("the kernel did not take FUSE-over-io_uring at INIT; classic transport");
        return Ok(None);
    }
    let fd = session
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("cannot duplicate the FUSE connection for the io_uring ring: {e}"))?;
    let queues = rings.len();
    let stopped = move |why| drop(events.send(Event::Failed(why)));
    match serve::start(rings, fd, fs, backings, scope, stopped) {
        Ok(running) => {
            info!(
                queues,
                entries_per_queue = ring::ENTRIES_PER_QUEUE,
                ?scope,
                payload = ring::default_payload_size(),
                "io_uring ring registered (a ring and a thread per queue, pinned to its CPU); serving on it"
            );
            Ok(Some(running))
        }
        Err(e @ ring::RegisterError::Refused { .. }) => {
            warn!("{e}; the kernel went back to /dev/fuse: classic transport");
            Ok(None)
        }
        Err(e @ ring::RegisterError::NotSubmitted(_)) => Err(e.to_string()),
    }
}
