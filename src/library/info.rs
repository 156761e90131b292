//! What `info()` reports about one entry: the same JSON object the filesystem serves as the
//! `user.cachetta.info` attribute (SPEC §5), so code and `getfattr` tell the same story.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::{EntryState, Verdict};

/// The state of an entry file, as `info()` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InfoState {
    Fresh,
    Stale,
    Expired,
    /// Not valid JSON: a miss, like a missing file.
    Corrupt,
}

impl From<EntryState> for InfoState {
    fn from(state: EntryState) -> Self {
        match state {
            EntryState::Fresh => InfoState::Fresh,
            EntryState::Stale => InfoState::Stale,
            EntryState::Expired => InfoState::Expired,
        }
    }
}

/// Everything about one entry, as [`crate::Cachetta::info`] returns it.
///
/// Serializes to the filesystem's `user.cachetta.info` object, field for field. The fields that
/// only exist for a file (`state`, `age`, `ttl`, `size`) are `null` when there is none, where
/// the seed's `info()` also says `"age": None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Info {
    /// A regular file is at [`Info::path`], whatever its state.
    pub exists: bool,
    pub state: Option<InfoState>,
    /// Seconds since the file's mtime; 0 when the mtime is in the future.
    pub age: Option<f64>,
    /// `duration − floor(age)`: seconds until the entry turns stale; negative once it has.
    pub ttl: Option<i64>,
    /// The seed's meaning: age ≥ duration (so a stale entry is `expired` and `stale`).
    pub expired: bool,
    pub stale: bool,
    /// Whole seconds.
    pub duration: u64,
    /// Whole seconds; 0 when there is no stale window.
    pub stale_duration: u64,
    /// Absolute path of the entry file.
    pub path: String,
    /// Bytes.
    pub size: Option<u64>,
    /// A computation of this entry (a `cached` call or its background refresh) is running in
    /// this process.
    pub refreshing: bool,
    /// How the last computation of this entry in this process failed, on one line; absent when
    /// it succeeded or none ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_error: Option<String>,
}

/// What the caller knows about the file, for [`Info::new`].
pub(crate) struct Seen {
    pub verdict: Verdict,
    pub valid: bool,
    pub size: u64,
}

impl Info {
    pub(crate) fn new(
        path: &Path,
        seen: Option<Seen>,
        duration: Duration,
        stale: Duration,
        refreshing: bool,
        refresh_error: Option<String>,
    ) -> Info {
        let mut info = Info {
            exists: false,
            state: None,
            age: None,
            ttl: None,
            expired: false,
            stale: false,
            duration: duration.as_secs(),
            stale_duration: stale.as_secs(),
            path: path.to_string_lossy().into_owned(),
            size: None,
            refreshing,
            refresh_error,
        };
        if let Some(seen) = seen {
            let v = seen.verdict;
            let state = if seen.valid {
                InfoState::from(v.state)
            } else {
                InfoState::Corrupt
            };
            info.exists = true;
            info.state = Some(state);
            info.age = Some(v.age.as_secs_f64());
            info.ttl = Some(duration.as_secs() as i64 - v.age.as_secs() as i64);
            info.expired = v.state != EntryState::Fresh;
            info.stale = state == InfoState::Stale;
            info.size = Some(seen.size);
        }
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{evaluate, Timing};
    use std::time::SystemTime;

    fn seen(age: Duration, valid: bool) -> Seen {
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let timing = Timing {
            duration: Duration::from_secs(60),
            stale: Duration::from_secs(30),
        };
        Seen {
            verdict: evaluate(mtime, mtime + age, timing),
            valid,
            size: 7,
        }
    }

    fn info(seen: Option<Seen>) -> Info {
        Info::new(
            Path::new("/c/x.json"),
            seen,
            Duration::from_secs(60),
            Duration::from_secs(30),
            false,
            None,
        )
    }

    #[test]
    fn stale_entry_is_expired_and_stale_with_negative_ttl() {
        let i = info(Some(seen(Duration::from_millis(70_500), true)));
        assert_eq!(i.state, Some(InfoState::Stale));
        assert!(i.expired && i.stale);
        assert_eq!(i.ttl, Some(-10));
        assert_eq!(i.age, Some(70.5));
    }

    #[test]
    fn ttl_is_duration_minus_whole_seconds_of_age() {
        let i = info(Some(seen(Duration::from_millis(59_500), true)));
        assert_eq!(i.state, Some(InfoState::Fresh));
        assert_eq!(i.ttl, Some(1));
        assert!(!i.expired && !i.stale);
    }

    #[test]
    fn expired_entry_is_expired_not_stale() {
        let i = info(Some(seen(Duration::from_secs(90), true)));
        assert_eq!(i.state, Some(InfoState::Expired));
        assert!(i.expired && !i.stale);
    }

    #[test]
    fn corrupt_entry_is_never_stale() {
        let i = info(Some(seen(Duration::from_secs(70), false)));
        assert_eq!(i.state, Some(InfoState::Corrupt));
        assert!(i.expired && !i.stale);
    }

    #[test]
    fn serializes_to_the_filesystems_field_order() {
        let json = serde_json::to_string(&info(Some(seen(Duration::from_secs(1), true)))).unwrap();
        assert_eq!(
            json,
            r#"{"exists":true,"state":"fresh","age":1.0,"ttl":59,"expired":false,"stale":false,"duration":60,"stale_duration":30,"path":"/c/x.json","size":7,"refreshing":false}"#
        );
        let missing = serde_json::to_value(info(None)).unwrap();
        assert_eq!(missing["exists"], false);
        assert!(missing["age"].is_null());
        assert!(missing.get("refresh_error").is_none());
    }
}
