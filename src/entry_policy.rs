//! Per-entry policy (SPEC §12): `user.cachetta.duration`, `user.cachetta.stale_duration` and
//! `user.cachetta.stale_if_error`, stored as those same extended attributes of the backing file
//! (decimal seconds) and overriding the entry's rule. Because they live on the file, they
//! survive remounts, and every rewrite that copies the file's `user.*` attributes (the mount's
//! writes and refreshes, the library's) keeps them.
//!
//! Reading them from an open file or a path, applying them to a rule's timing, and parsing what
//! a user sets. Knows nothing of FUSE.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use tracing::debug;

use crate::config::{parse_duration, MAX_DURATION};
use crate::policy::Timing;

/// The attribute names, each with the short name `info`'s `overrides` uses.
pub const ATTRIBUTES: [(&str, &str); 3] = [
    ("user.cachetta.duration", "duration"),
    ("user.cachetta.stale_duration", "stale_duration"),
    ("user.cachetta.stale_if_error", "stale_if_error"),
];

/// The overrides one entry carries; `None` where its rule applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryPolicy {
    pub duration: Option<Duration>,
    pub stale: Option<Duration>,
    pub stale_if_error: Option<Duration>,
}

impl EntryPolicy {
    /// The overrides stored on an open file; none when it has no user attributes (or the
    /// filesystem has none at all).
    pub fn of_file(file: &impl AsFd) -> EntryPolicy {
        let listed = read_all(|buf| rustix::fs::flistxattr(file, buf));
        EntryPolicy::from_attributes(listed.as_deref(), |name| {
            read_all(|buf| rustix::fs::fgetxattr(file, name, buf))
        })
    }

    /// The overrides stored on the file at `path`; a symlink's own (none) are read, never its
    /// target's.
    pub fn of_path(path: &Path) -> EntryPolicy {
        let listed = read_all(|buf| rustix::fs::llistxattr(path, buf));
        EntryPolicy::from_attributes(listed.as_deref(), |name| {
            read_all(|buf| rustix::fs::lgetxattr(path, name, buf))
        })
    }

    fn from_attributes(
        listed: Option<&[u8]>,
        get: impl Fn(&str) -> Option<Vec<u8>>,
    ) -> EntryPolicy {
        let mut policy = EntryPolicy::default();
        let Some(listed) = listed else {
            return policy;
        };
        for name in listed.split(|&b| b == 0) {
            let Some(slot) = ATTRIBUTES
                .iter()
                .position(|(full, _)| full.as_bytes() == name)
            else {
                continue;
            };
            let Some(seconds) = get(ATTRIBUTES[slot].0).and_then(|v| stored_seconds(&v)) else {
                debug!(
                    name = ATTRIBUTES[slot].0,
                    "ignoring a per-entry policy attribute that is not decimal seconds"
                );
                continue;
            };
            *policy.slot(slot) = Some(seconds);
        }
        policy
    }

    fn slot(&mut self, index: usize) -> &mut Option<Duration> {
        match index {
            0 => &mut self.duration,
            1 => &mut self.stale,
            _ => &mut self.stale_if_error,
        }
    }

    /// The rule's `timing` with this entry's overrides. A stale-if-error override counts only
    /// for keys with a refresh command (`has_refresh`), as the rule's own does.
    pub fn apply(&self, timing: Timing, has_refresh: bool) -> Timing {
        Timing {
            duration: self.duration.unwrap_or(timing.duration),
            stale: self.stale.unwrap_or(timing.stale),
            stale_if_error: match self.stale_if_error {
                Some(window) if has_refresh => window,
                _ => timing.stale_if_error,
            },
        }
    }

    /// The timing of an entry with these overrides under `settings` (its rule's): the one
    /// place the mount, `cachetta info` and gc compute an entry's effective timing.
    pub fn timing_under(&self, settings: &crate::config::Settings) -> Timing {
        self.apply(settings.timing(), settings.refresh.is_some())
    }

    /// The overrides in attribute order: what a publisher hands the store's observer
    /// ([`crate::store::Judged`]).
    pub fn overrides(&self) -> [Option<Duration>; 3] {
        [self.duration, self.stale, self.stale_if_error]
    }

    /// The policy of [`EntryPolicy::overrides`].
    pub fn from_overrides([duration, stale, stale_if_error]: [Option<Duration>; 3]) -> Self {
        EntryPolicy {
            duration,
            stale,
            stale_if_error,
        }
    }

    /// The short names of what is overridden, in attribute order (`info`'s `overrides`).
    pub fn overridden(&self) -> Vec<&'static str> {
        let set = [self.duration, self.stale, self.stale_if_error];
        ATTRIBUTES
            .iter()
            .zip(set)
            .filter(|(_, value)| value.is_some())
            .map(|((_, short), _)| *short)
            .collect()
    }
}

/// Carry an entry's policy attributes over to the file about to replace it (a scratch file
/// renamed onto it, which brings its own other attributes): each one `to` does not have yet.
/// Best effort, like every attribute copy.
pub fn carry(from: &impl AsFd, to: &impl AsFd) {
    let on_from = read_all(|buf| rustix::fs::flistxattr(from, buf)).unwrap_or_default();
    if !ATTRIBUTES.iter().any(|(name, _)| lists(&on_from, name)) {
        return; // The usual case: no policy to carry, and one call.
    }
    let on_to = read_all(|buf| rustix::fs::flistxattr(to, buf)).unwrap_or_default();
    for (name, _) in ATTRIBUTES {
        if !lists(&on_from, name) || lists(&on_to, name) {
            continue;
        }
        if let Some(value) = read_all(|buf| rustix::fs::fgetxattr(from, name, buf)) {
            let _ = rustix::fs::fsetxattr(to, name, &value, rustix::fs::XattrFlags::empty());
        }
    }
}

/// Whether a NUL-separated attribute listing has `name`.
fn lists(listing: &[u8], name: &str) -> bool {
    listing.split(|&b| b == 0).any(|n| n == name.as_bytes())
}

/// Give `staging`, about to replace the entry open as `entry`, the entry's policy attributes
/// as they are at this moment: a policy set (or removed) while the new content was being
/// written or refreshed is not undone by its publish. Best effort.
pub fn follow(entry: &impl AsFd, staging: &impl AsFd) {
    // One listing each, so an entry without a policy (the usual case) costs two calls.
    let on_entry = read_all(|buf| rustix::fs::flistxattr(entry, buf)).unwrap_or_default();
    let on_staging = read_all(|buf| rustix::fs::flistxattr(staging, buf)).unwrap_or_default();
    for (name, _) in ATTRIBUTES {
        if lists(&on_entry, name) {
            if let Some(value) = read_all(|buf| rustix::fs::fgetxattr(entry, name, buf)) {
                let flags = rustix::fs::XattrFlags::empty();
                let _ = rustix::fs::fsetxattr(staging, name, &value, flags);
            }
        } else if lists(&on_staging, name) {
            let _ = rustix::fs::fremovexattr(staging, name);
        }
    }
}

/// Whether `name` is one of the per-entry policy attributes.
pub fn is_policy_attribute(name: &OsStr) -> bool {
    ATTRIBUTES.iter().any(|(full, _)| full.as_bytes() == name.as_bytes())
}

/// A value a user sets (`setfattr -v 1h`): the config's duration syntax, at most 100 years.
/// Returns the text stored on the file: decimal seconds.
pub fn stored_value(value: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(value)
        .map_err(|_| "a duration is text, such as 90s, 15m, 1h or 7d".to_owned())?;
    let duration = parse_duration(text.trim_end_matches(['\n', '\0']))?;
    if duration > MAX_DURATION {
        return Err("a duration may not exceed 100 years".into());
    }
    Ok(duration.as_secs().to_string())
}

fn stored_seconds(value: &[u8]) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?;
    let seconds: u64 = text.trim().parse().ok()?;
    Some(Duration::from_secs(seconds).min(MAX_DURATION))
}

/// The whole of an attribute read; `None` on any error (no attribute, no user xattrs).
fn read_all(read: impl Fn(&mut [u8]) -> rustix::io::Result<usize>) -> Option<Vec<u8>> {
    crate::store::read_xattr(read).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn overrides_are_read_from_the_file_and_applied_over_the_rule() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        std::fs::write(&path, "1").unwrap();
        let rule = Timing {
            duration: secs(7 * 86400),
            stale: secs(60),
            stale_if_error: secs(0),
        };
        assert_eq!(EntryPolicy::of_path(&path), EntryPolicy::default());
        rustix::fs::setxattr(&path, "user.cachetta.duration", b"3600", rustix::fs::XattrFlags::empty()).unwrap();
        rustix::fs::setxattr(&path, "user.cachetta.stale_if_error", b"60", rustix::fs::XattrFlags::empty()).unwrap();
        rustix::fs::setxattr(&path, "user.other", b"x", rustix::fs::XattrFlags::empty()).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let policy = EntryPolicy::of_file(&file);
        assert_eq!(policy, EntryPolicy::of_path(&path));
        assert_eq!(policy.overridden(), ["duration", "stale_if_error"]);
        let with_refresh = policy.apply(rule, true);
        assert_eq!((with_refresh.duration, with_refresh.stale, with_refresh.stale_if_error), (secs(3600), secs(60), secs(60)));
        assert_eq!(policy.apply(rule, false).stale_if_error, secs(0), "needs a refresh command");
    }

    #[test]
    fn values_take_the_config_syntax_and_are_stored_as_seconds() {
        assert_eq!(stored_value(b"1h").unwrap(), "3600");
        assert_eq!(stored_value(b"90").unwrap(), "90");
        assert_eq!(stored_value(b"0s").unwrap(), "0");
        assert_eq!(stored_value(b"1h 30m\n").unwrap(), "5400");
        assert!(stored_value(b"soon").is_err());
        assert!(stored_value(b"-5s").is_err());
        assert!(stored_value(b"1000y").is_err());
        assert!(stored_value(b"\xff").is_err());
        assert_eq!(stored_seconds(b"12"), Some(secs(12)));
        assert_eq!(stored_seconds(b"1h"), None, "only seconds are stored");
    }
}
