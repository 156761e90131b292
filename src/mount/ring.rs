//! The kernel transport of a mount (SPEC §15, the `transport` key): the io_uring rings set up
//! before the mount when the transport asks for them, and their start on the session's
//! connection after INIT, before it serves. `auto` falls back to `/dev/fuse` at each step that
//! fails, with one log line saying why; `uring` makes each of them an error (the start-up check
//! that the kernel offers it is [`required`], made before anything is mounted); `classic` never
//! asks for io_uring.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use tracing::{info, warn};

use super::Event;
use crate::config::Transport;
use crate::fs::CacheFs;
use crate::fuse::{Backings, FuseAdapter};
use crate::uring::{self, ring, serve};

/// Rings ready before the mount, and what INIT will say of them.
pub struct Wanted {
    rings: Vec<ring::Rings>,
    granted: Arc<AtomicBool>,
    backings: Arc<Backings>,
    /// `transport = "uring"`: no ring is an error, never classic.
    required: bool,
}

/// The start-up check of `transport = "uring"`: the kernel must offer it, or the mount is
/// refused before anything is mounted, with how to turn it on.
pub fn required(transport: Transport) -> Result<(), String> {
    match transport {
        Transport::Uring => uring::offered().map_err(|why| format!("transport \"uring\": {why}")),
        Transport::Auto | Transport::Classic => Ok(()),
    }
}

/// The rings, when `transport` asks for them and this kernel offers them, and the adapter told
/// to ask for them at INIT. Under `auto` any failure here means classic, with a log line; under
/// `uring` it is the mount's failure (`Err`, the reason). Nothing is mounted yet.
pub fn prepare(
    adapter: FuseAdapter,
    transport: Transport,
) -> Result<(FuseAdapter, Option<Wanted>), String> {
    let required = match transport {
        Transport::Classic => return Ok((adapter, None)),
        Transport::Auto => false,
        Transport::Uring => true,
    };
    if let Err(why) = uring::offered() {
        if required {
            return Err(format!("transport \"uring\": {why}"));
        }
        info!("{why}; classic transport");
        return Ok((adapter, None));
    }
    let rings = match rings() {
        Ok(rings) => rings,
        Err(e) if required => {
            return Err(format!(
                "transport \"uring\": cannot set up the io_uring rings: {e}"
            ))
        }
        Err(e) => {
            warn!("cannot set up io_uring rings ({e}); classic transport");
            return Ok((adapter, None));
        }
    };
    let granted = Arc::new(AtomicBool::new(false));
    let adapter = adapter.offer_ring(granted.clone());
    let backings = adapter.backings();
    Ok((
        adapter,
        Some(Wanted {
            rings,
            granted,
            backings,
            required,
        }),
    ))
}

/// One ring per queue, each served by a thread pinned to the queue's CPU (the kernel puts a
/// request on the queue of the CPU its caller runs on).
fn rings() -> std::io::Result<Vec<ring::Rings>> {
    let queues = ring::possible_cpus()?;
    (0..queues)
        .map(|qid| {
            ring::Rings::new(
                &[qid],
                ring::ENTRIES_PER_QUEUE,
                ring::default_payload_size(),
            )
        })
        .collect()
}

/// After INIT, before the session serves: register the rings on a duplicate of the session's
/// fd, if the kernel granted the transport. `Err` when the mount must be given up: the kernel
/// agreed to wait for rings it will not get (every request would hang), or `uring` was
/// required and the mount would otherwise be classic.
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
        granted,
        backings,
        required,
    }) = wanted
    else {
        return Ok(None);
    };
    if !granted.load(Ordering::SeqCst) {
        let why = "the kernel did not take FUSE-over-io_uring at INIT";
        if required {
            return Err(format!("transport \"uring\": {why}"));
        }
        warn!("{why}; classic transport");
        return Ok(None);
    }
    let fd = session
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("cannot duplicate the FUSE connection for the io_uring ring: {e}"))?;
    let queues = rings.len();
    let stopped = move |why| drop(events.send(Event::Failed(why)));
    match serve::start(rings, fd, fs, backings, stopped) {
        Ok(running) => {
            info!(
                queues,
                entries_per_queue = ring::ENTRIES_PER_QUEUE,
                payload = ring::default_payload_size(),
                "io_uring ring registered (a ring and a thread per queue, pinned to its CPU); serving on it"
            );
            Ok(Some(running))
        }
        Err(e @ ring::RegisterError::Refused { .. }) if required => {
            Err(format!("transport \"uring\": {e}"))
        }
        Err(e @ ring::RegisterError::Refused { .. }) => {
            warn!("{e}; the kernel went back to /dev/fuse: classic transport");
            Ok(None)
        }
        Err(e @ ring::RegisterError::NotSubmitted(_)) => Err(e.to_string()),
    }
}
