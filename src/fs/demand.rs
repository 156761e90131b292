//! Refresh on demand (SPEC §12): `setfattr -n user.cachetta.refresh -v KEY` on the mount root
//! starts KEY's refresh now, and reading that attribute tells how the recent ones went, which
//! is how `cachetta refresh --wait` waits without holding a request open.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::*;
use crate::refresh::{Outcome, Reason};

/// How many demanded refreshes the root attribute reports (its value must stay well under the
/// kernel's 64 KiB limit for one attribute).
const DEMANDS_KEPT: usize = 128;

/// The recent demands, oldest first.
#[derive(Debug, Default)]
pub(super) struct Demands {
    next: u64,
    recent: VecDeque<Demand>,
}

/// One demanded refresh, as the root attribute reports it.
#[derive(Debug, Clone, Serialize)]
struct Demand {
    /// Increases with every demand: a waiter looks for one newer than it saw before asking.
    id: u64,
    #[serde(serialize_with = "crate::inspect::lossy_path")]
    key: PathBuf,
    /// `running` until it ends; then `ok`, `failed`, `declined`, `cancelled` (by `rm` or
    /// unmount) or `timeout` (still running after the key's `refresh_timeout`).
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl CacheFs {
    /// Start `key`'s refresh on demand (ignoring its backoff, joining one that runs) and note
    /// how it ends.
    pub(super) fn demand(self: &Arc<Self>, key: &Path) {
        let id = {
            let mut demands = self.demands.lock();
            demands.next += 1;
            let id = demands.next;
            if demands.recent.len() >= DEMANDS_KEPT {
                demands.recent.pop_front();
            }
            demands.recent.push_back(Demand {
                id,
                key: key.to_path_buf(),
                outcome: "running",
                error: None,
            });
            id
        };
        let fs = Arc::downgrade(self);
        let then = move |outcome: Outcome| {
            let Some(fs) = fs.upgrade() else { return };
            let (name, error) = match outcome {
                // Superseded: the entry was replaced since the demand, so it is newer.
                Outcome::Published | Outcome::Superseded => ("ok", None),
                Outcome::Declined => ("declined", None),
                Outcome::Failed(error) => ("failed", Some(error)),
                Outcome::StillRunning => ("timeout", None),
                Outcome::Cancelled | Outcome::ShutDown => ("cancelled", None),
                Outcome::BackingOff | Outcome::NoCommand => {
                    ("failed", Some(format!("{outcome:?}")))
                }
            };
            let mut demands = fs.demands.lock();
            if let Some(demand) = demands.recent.iter_mut().find(|d| d.id == id) {
                demand.outcome = name;
                demand.error = error;
            }
        };
        self.refresher.run_then(key, Reason::Demand, Box::new(then));
    }

    /// The value of `user.cachetta.refresh` on the root: the recent demands as a JSON array.
    pub(super) fn demanded_json(&self) -> String {
        let demands = self.demands.lock();
        serde_json::to_string(&demands.recent).unwrap_or_else(|_| "[]".into())
    }
}
