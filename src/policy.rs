//! Entry state from mtime, now and a rule's timing: Python cachetta's arithmetic, nothing else.
//!
//! Pure functions; the caller passes the clock reading. No I/O lives here.

use std::time::{Duration, SystemTime};

/// How long an entry is fresh, how long after that it may still be served stale, and how much
/// longer stale-if-error (SPEC §12) keeps it while its refresh fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub duration: Duration,
    pub stale: Duration,
    /// Zero for keys without a refresh command: stale-if-error needs one to fail.
    pub stale_if_error: Duration,
}

/// The time-derived state of an entry that exists and is valid JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    Fresh,
    Stale,
    /// Past its stale window, inside its stale-if-error window: shown (as `stale`) only while
    /// its refresh fails; the mount decides, with what it knows of the key's refreshes.
    Grace,
    Expired,
}

impl EntryState {
    /// What users see: a grace entry is served as `stale`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryState::Fresh => "fresh",
            EntryState::Stale | EntryState::Grace => "stale",
            EntryState::Expired => "expired",
        }
    }

    /// Fresh and stale entries are shown; expired ones are not, and grace ones only while
    /// their refresh fails (not decided here).
    pub fn is_visible(self) -> bool {
        matches!(self, EntryState::Fresh | EntryState::Stale)
    }
}

/// What [`evaluate`] concludes about one entry at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub state: EntryState,
    /// now − mtime; zero when mtime is in the future (clock skew).
    pub age: Duration,
    /// Time until the state next changes (fresh → stale → grace → expired, skipping empty
    /// windows); `None` once expired, which is final.
    pub until_change: Option<Duration>,
    /// Seconds until the entry turns stale: duration − age, negative while stale or expired.
    pub ttl_secs: f64,
}

/// The state of an entry with modification time `mtime` at `now`.
///
/// fresh: age < d (or mtime in the future); stale: d ≤ age < d + s; grace: d + s ≤ age <
/// d + s + e (e: stale-if-error); expired: age ≥ d + s + e.
pub fn evaluate(mtime: SystemTime, now: SystemTime, timing: Timing) -> Verdict {
    // A future mtime counts as age 0, but the entry stays fresh until d after that mtime.
    let (age, ahead) = match now.duration_since(mtime) {
        Ok(age) => (age, Duration::ZERO),
        Err(skew) => (Duration::ZERO, skew.duration()),
    };
    let stale_at = timing.duration;
    let grace_at = stale_at.saturating_add(timing.stale);
    let expired_at = grace_at.saturating_add(timing.stale_if_error);
    let (state, ends_at) = if ahead > Duration::ZERO || age < stale_at {
        (EntryState::Fresh, Some(stale_at))
    } else if age < grace_at {
        (EntryState::Stale, Some(grace_at))
    } else if age < expired_at {
        (EntryState::Grace, Some(expired_at))
    } else {
        (EntryState::Expired, None)
    };
    let until_change = ends_at.map(|at| ahead.saturating_add(at.saturating_sub(age)));
    let ttl_secs = timing.duration.as_secs_f64() - age.as_secs_f64();
    Verdict {
        state,
        age,
        until_change,
        ttl_secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn at(age_secs: u64, d: u64, s: u64) -> Verdict {
        let mtime = T0 + Duration::from_secs(1_000_000);
        let now = mtime + Duration::from_secs(age_secs);
        evaluate(
            mtime,
            now,
            Timing {
                duration: Duration::from_secs(d),
                stale: Duration::from_secs(s),
                stale_if_error: Duration::ZERO,
            },
        )
    }

    #[test]
    fn age_just_below_duration_is_fresh() {
        let v = at(59, 60, 30);
        assert_eq!(v.state, EntryState::Fresh);
        assert_eq!(v.until_change, Some(Duration::from_secs(1)));
        assert_eq!(v.ttl_secs, 1.0);
    }

    #[test]
    fn age_exactly_duration_is_stale() {
        let v = at(60, 60, 30);
        assert_eq!(v.state, EntryState::Stale);
        assert_eq!(v.until_change, Some(Duration::from_secs(30)));
        assert_eq!(v.ttl_secs, 0.0);
    }

    #[test]
    fn age_exactly_duration_plus_stale_is_expired() {
        let v = at(90, 60, 30);
        assert_eq!(v.state, EntryState::Expired);
        assert_eq!(v.until_change, None);
        assert_eq!(v.ttl_secs, -30.0);
    }

    #[test]
    fn without_stale_window_duration_expires_directly() {
        assert_eq!(at(59, 60, 0).state, EntryState::Fresh);
        assert_eq!(at(59, 60, 0).until_change, Some(Duration::from_secs(1)));
        assert_eq!(at(60, 60, 0).state, EntryState::Expired);
    }

    #[test]
    fn zero_duration_without_stale_is_always_expired() {
        assert_eq!(at(0, 0, 0).state, EntryState::Expired);
        assert_eq!(at(0, 0, 10).state, EntryState::Stale);
    }

    #[test]
    fn future_mtime_is_fresh_with_age_zero() {
        let mtime = T0 + Duration::from_secs(1_000_100);
        let now = T0 + Duration::from_secs(1_000_000);
        let timing = Timing {
            duration: Duration::from_secs(60),
            stale: Duration::from_secs(30),
            stale_if_error: Duration::ZERO,
        };
        let v = evaluate(mtime, now, timing);
        assert_eq!(v.state, EntryState::Fresh);
        assert_eq!(v.age, Duration::ZERO);
        assert_eq!(v.until_change, Some(Duration::from_secs(160)));
        assert_eq!(v.ttl_secs, 60.0);
    }

    #[test]
    fn sub_second_ages_are_exact() {
        let mtime = T0 + Duration::from_secs(1_000_000);
        let timing = Timing {
            duration: Duration::from_secs(1),
            stale: Duration::ZERO,
            stale_if_error: Duration::ZERO,
        };
        let v = evaluate(mtime, mtime + Duration::from_millis(999), timing);
        assert_eq!(v.state, EntryState::Fresh);
        assert_eq!(v.until_change, Some(Duration::from_millis(1)));
    }

    #[test]
    fn stale_if_error_adds_a_grace_window_after_the_stale_one() {
        let mtime = T0 + Duration::from_secs(1_000_000);
        let timing = Timing {
            duration: Duration::from_secs(60),
            stale: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(100),
        };
        let after = |secs| evaluate(mtime, mtime + Duration::from_secs(secs), timing);
        assert_eq!(after(89).state, EntryState::Stale);
        assert_eq!(after(89).until_change, Some(Duration::from_secs(1)));
        assert_eq!(after(90).state, EntryState::Grace);
        assert_eq!(after(90).state.as_str(), "stale");
        assert!(!after(90).state.is_visible(), "the mount decides");
        assert_eq!(after(90).until_change, Some(Duration::from_secs(100)));
        assert_eq!(after(190).state, EntryState::Expired);
        let no_stale = Timing {
            stale: Duration::ZERO,
            ..timing
        };
        let v = evaluate(mtime, mtime + Duration::from_secs(60), no_stale);
        assert_eq!(v.state, EntryState::Grace, "an empty stale window is skipped");
    }
}
