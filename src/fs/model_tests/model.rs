//! The model test's reference: what the backing dir holds, each entry's policy overrides, what
//! each key's refresh command would print and how its refreshes went, and from those what the
//! mount must show. Entry timing is `policy::reference` (SPEC §1, §12 in its own arithmetic);
//! nothing here asks the filesystem or `policy` what the answer is.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::policy::reference::{self, Judgement, Phase, Windows};

/// The keys: three at the root (no refresh command) and three under `feed/`, whose rule has a
/// refresh command and a stale-if-error window.
pub const KEYS: [&str; 6] = [
    "a.json",
    "b.json",
    "c.json",
    "feed/a.json",
    "feed/b.json",
    "feed/c.json",
];
pub const FEED: &str = "feed";

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The top level of the config. Its `stale_if_error` does nothing: no refresh command.
pub const ROOT_RULE: Windows = Windows {
    duration: secs(60),
    stale: secs(30),
    stale_if_error: secs(45),
};
/// The `feed/*.json` rule.
pub const FEED_RULE: Windows = Windows {
    duration: secs(40),
    stale: secs(20),
    stale_if_error: secs(50),
};
/// Longer than the feed's stale window plus a little: a key can then reach its stale-if-error
/// window, with content written after its last failed refresh, while the backoff still holds
/// the next refresh back (the case a lookup shows and `stat` does not).
pub const FEED_BACKOFF: Duration = secs(90);

/// The config both rules come from; `upstream` is where the feed's refresh command reads
/// what it prints (`<upstream>/<name>.json`; no file there: it fails).
pub fn config_toml(upstream: &str) -> String {
    let s = |d: Duration| d.as_secs();
    format!(
        "duration = \"{}s\"\nstale = \"{}s\"\nstale_if_error = \"{}s\"\n\n\
         [[rule]]\nmatch = \"{FEED}/*.json\"\nduration = \"{}s\"\nstale = \"{}s\"\n\
         stale_if_error = \"{}s\"\nrefresh_backoff = \"{}s\"\n\
         refresh = \"cat {upstream}/\\\"$CACHETTA_NAME\\\".json\"\n",
        s(ROOT_RULE.duration),
        s(ROOT_RULE.stale),
        s(ROOT_RULE.stale_if_error),
        s(FEED_RULE.duration),
        s(FEED_RULE.stale),
        s(FEED_RULE.stale_if_error),
        s(FEED_BACKOFF),
    )
}

#[derive(Debug, Clone)]
pub enum Body {
    Valid(u16),
    Invalid,
}

impl Body {
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Valid(n) => format!("{{\"n\":{n}}}").into_bytes(),
            Body::Invalid => b"{\"n\":".to_vec(),
        }
    }
}

/// The per-entry policy attributes of SPEC §12.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Knob {
    Duration,
    Stale,
    StaleIfError,
}

impl Knob {
    pub const ALL: [Knob; 3] = [Knob::Duration, Knob::Stale, Knob::StaleIfError];

    pub fn xattr(self) -> &'static str {
        match self {
            Knob::Duration => "user.cachetta.duration",
            Knob::Stale => "user.cachetta.stale_duration",
            Knob::StaleIfError => "user.cachetta.stale_if_error",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backing {
    pub bytes: Vec<u8>,
    pub mtime: SystemTime,
}

/// A finished refresh, as the mount remembers it.
#[derive(Debug, Clone, Copy)]
struct Refreshed {
    at: SystemTime,
    ok: bool,
}

#[derive(Debug, Default)]
pub struct Model {
    pub files: BTreeMap<&'static str, Backing>,
    /// Kept by writes through the mount (in place, a scratch file renamed over, a refresh) and
    /// by writes in place behind its back; gone with the file (`rm`, a delete or a replace
    /// behind its back).
    pub overrides: BTreeMap<(&'static str, Knob), Duration>,
    /// What each feed key's refresh command prints; none: it fails.
    pub upstream: BTreeMap<&'static str, Body>,
    /// Each key's last finished refresh (kept across `rm`: it is the key's history).
    last_refresh: BTreeMap<&'static str, Refreshed>,
    /// When each key's last refresh failed, until a success or an `rm` clears it: no
    /// automatic refresh of it starts before that + [`FEED_BACKOFF`] on the mount's clock.
    failed_at: BTreeMap<&'static str, SystemTime>,
}

pub fn has_refresh(key: &str) -> bool {
    key.starts_with("feed/")
}

impl Model {
    /// The key's effective timing: its rule's, overridden per entry; no stale-if-error
    /// without a refresh command (SPEC §12).
    pub fn windows(&self, key: &'static str) -> Windows {
        let rule = if has_refresh(key) {
            FEED_RULE
        } else {
            ROOT_RULE
        };
        let get = |knob, rule| self.overrides.get(&(key, knob)).copied().unwrap_or(rule);
        Windows {
            duration: get(Knob::Duration, rule.duration),
            stale: get(Knob::Stale, rule.stale),
            stale_if_error: if has_refresh(key) {
                get(Knob::StaleIfError, rule.stale_if_error)
            } else {
                Duration::ZERO
            },
        }
    }

    pub fn effective(&self, key: &'static str, knob: Knob) -> Duration {
        let w = self.windows(key);
        match knob {
            Knob::Duration => w.duration,
            Knob::Stale => w.stale,
            Knob::StaleIfError => w.stale_if_error,
        }
    }

    /// An entry's judgement, if its file exists and is valid JSON.
    pub fn judge(&self, key: &'static str, now: SystemTime) -> Option<Judgement> {
        let file = self.files.get(key)?;
        serde_json::from_slice::<serde_json::Value>(&file.bytes).ok()?;
        Some(reference::judge(file.mtime, now, self.windows(key)))
    }

    /// "Its refresh is failing" (docs/cache-control.md): a refresh of the key that finished
    /// after the entry's mtime failed. The model reads "after" as "not before": on the mount's
    /// clock a refresh run by a lookup of this very content may end at the instant the
    /// content was written (a clock that did not move, or a coarse one), and it failed for
    /// this content.
    fn refresh_failing(&self, key: &'static str) -> bool {
        let Some(file) = self.files.get(key) else {
            return false;
        };
        self.last_refresh
            .get(key)
            .is_some_and(|last| !last.ok && last.at >= file.mtime)
    }

    /// What a listing, `stat` and `getfattr` show: the state, or `None` for hidden.
    pub fn listed(&self, key: &'static str, now: SystemTime) -> Option<&'static str> {
        let phase = self.judge(key, now)?.phase;
        phase.shown(self.refresh_failing(key))
    }

    /// A lookup by name (SPEC §12): an entry in its grace window whose refresh is not known
    /// to fail runs the refresh and waits. If it publishes, the new entry is what the name
    /// holds; otherwise the old one is served, as `stale`.
    pub fn lookup(&mut self, key: &'static str, now: SystemTime) -> Option<&'static str> {
        let phase = self.judge(key, now)?.phase;
        if phase != Phase::Grace || self.refresh_failing(key) {
            return self.listed(key, now);
        }
        if self.refresh(key, now) {
            self.listed(key, now)
        } else {
            Some("stale")
        }
    }

    /// An open for reading: a stale entry, or one stale-if-error keeps, starts its refresh in
    /// the background (SPEC §6, §12); the test waits for it to end.
    pub fn on_read(&mut self, key: &'static str, now: SystemTime) {
        let phase = self.judge(key, now).map(|j| j.phase);
        if has_refresh(key) && matches!(phase, Some(Phase::Stale | Phase::Grace)) {
            self.refresh(key, now);
        }
    }

    /// Run the key's refresh at `now`, unless its backoff holds it back (SPEC §6). Whether it
    /// published.
    fn refresh(&mut self, key: &'static str, now: SystemTime) -> bool {
        if self
            .failed_at
            .get(key)
            .is_some_and(|&at| now < at + FEED_BACKOFF)
        {
            return false;
        }
        let printed = match self.upstream.get(key) {
            Some(body @ Body::Valid(_)) => Some(body.bytes()),
            _ => None,
        };
        let ok = printed.is_some();
        self.last_refresh.insert(key, Refreshed { at: now, ok });
        match printed {
            Some(bytes) => {
                // Replaced, fresh, its policy attributes carried over (SPEC §6, §12).
                self.files.insert(key, Backing { bytes, mtime: now });
                self.failed_at.remove(key);
            }
            None => {
                self.failed_at.insert(key, now);
            }
        }
        ok
    }

    /// New content through the mount or in place behind its back: the overrides stay.
    pub fn write(&mut self, key: &'static str, bytes: Vec<u8>, mtime: SystemTime) {
        self.files.insert(key, Backing { bytes, mtime });
    }

    /// `rm` through the mount: the file and its overrides go, and so does the key's backoff
    /// (a refresh running is cancelled, and the next read may refresh at once: `Refresher::
    /// cancel` documents it); its history stays.
    pub fn removed(&mut self, key: &'static str) {
        self.deleted_behind(key);
        self.failed_at.remove(key);
    }

    pub fn deleted_behind(&mut self, key: &'static str) {
        self.files.remove(key);
        for knob in Knob::ALL {
            self.overrides.remove(&(key, knob));
        }
    }

    /// A new file renamed over the key behind the mount's back: it has no overrides.
    pub fn replaced_behind(&mut self, key: &'static str, bytes: Vec<u8>, mtime: SystemTime) {
        self.deleted_behind(key);
        self.write(key, bytes, mtime);
    }
}
