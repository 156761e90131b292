//! The test oracle for an entry's timing: SPEC §1's fresh/stale/expired and §12's
//! stale-if-error window, written from the SPEC's words, for `policy`'s proptest and the
//! filesystem's model test (`fs/model_tests.rs`).
//!
//! It shares nothing with `policy` but the words: no import from it, its own types, and its own
//! arithmetic in signed nanoseconds (`i128`: three `Duration::MAX` and any two `SystemTime`s
//! add up without overflow), so a slip in `policy` cannot hide behind the same slip here.

use std::time::{Duration, SystemTime};

/// An entry's timing: its rule's values, or its own overrides (SPEC §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub duration: Duration,
    pub stale: Duration,
    /// Zero for keys without a refresh command (SPEC §12: "Keys without a refresh command are
    /// not affected"); the caller decides that.
    pub stale_if_error: Duration,
}

/// Where an entry stands by its age alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// age < duration, or mtime in the future (SPEC §1).
    Fresh,
    /// duration ≤ age < duration + stale (SPEC §1).
    Stale,
    /// duration + stale ≤ age < duration + stale + stale_if_error: "its stale window has ended
    /// but its age is below duration + stale + stale_if_error" (SPEC §12).
    Grace,
    /// Every other age: hidden (SPEC §1, §12).
    Expired,
}

impl Phase {
    /// What the mount shows: `user.cachetta.state`, or `None` for hidden. An entry in its
    /// grace window is shown, as `stale`, only while its refresh fails (SPEC §12).
    pub fn shown(self, refresh_failing: bool) -> Option<&'static str> {
        match self {
            Phase::Fresh => Some("fresh"),
            Phase::Stale => Some("stale"),
            Phase::Grace if refresh_failing => Some("stale"),
            Phase::Grace | Phase::Expired => None,
        }
    }
}

/// The oracle's answer for one entry at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    pub phase: Phase,
    /// now − mtime, or zero when mtime is in the future (SPEC §1, §5 `age`).
    pub age: Duration,
    /// How long until the phase changes: until the age reaches the end of the window it is in.
    /// `None` once expired (no later phase). Where that is beyond `Duration::MAX` (huge
    /// overrides, or an mtime far in the future) it is `Duration::MAX`: the SPEC says nothing
    /// there, and "as late as can be said" is the only answer that is never early.
    pub next_change: Option<Duration>,
    /// duration − age, in seconds (SPEC §5 `ttl`), with the age as reported (zero for a
    /// future mtime).
    pub ttl_secs: f64,
}

/// Judge an entry last modified at `mtime`, at `now`.
///
/// Boundaries, all from the SPEC's inequalities: an entry exactly `duration` old is stale
/// (d ≤ age), exactly `duration + stale` old is past its stale window (grace, or expired with
/// no stale-if-error), exactly `duration + stale + stale_if_error` old is expired. The future
/// clause is tested on the signed age before any window, so a zero duration still leaves a
/// future entry fresh; it turns at mtime + duration, the instant its age reaches the duration.
pub fn judge(mtime: SystemTime, now: SystemTime, windows: Windows) -> Judgement {
    let age = nanos_since_epoch(now) - nanos_since_epoch(mtime);
    let fresh_ends = nanos(windows.duration);
    let stale_ends = fresh_ends + nanos(windows.stale);
    let grace_ends = stale_ends + nanos(windows.stale_if_error);
    let (phase, ends) = if age < 0 || age < fresh_ends {
        (Phase::Fresh, Some(fresh_ends))
    } else if age < stale_ends {
        (Phase::Stale, Some(stale_ends))
    } else if age < grace_ends {
        (Phase::Grace, Some(grace_ends))
    } else {
        (Phase::Expired, None)
    };
    let reported_age = age.max(0);
    Judgement {
        phase,
        age: duration_of(reported_age),
        next_change: ends.map(|end| duration_of(end - age)),
        ttl_secs: (fresh_ends - reported_age) as f64 / 1e9,
    }
}

fn nanos(d: Duration) -> i128 {
    d.as_nanos() as i128
}

/// Signed nanoseconds since the Unix epoch.
pub fn nanos_since_epoch(t: SystemTime) -> i128 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => nanos(after),
        Err(before) => -nanos(before.duration()),
    }
}

/// A non-negative nanosecond count as a `Duration`, saturating at `Duration::MAX`.
fn duration_of(n: i128) -> Duration {
    debug_assert!(n >= 0);
    let secs = n / 1_000_000_000;
    match u64::try_from(secs) {
        Ok(secs) => Duration::new(secs, (n % 1_000_000_000) as u32),
        Err(_) => Duration::MAX,
    }
}

#[cfg(test)]
mod tests {
    //! The oracle against the SPEC's own examples, so that it is checked by something other
    //! than the code it checks.
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn at(age: i64, d: u64, s: u64, e: u64) -> Judgement {
        let mtime = SystemTime::UNIX_EPOCH + S(1_700_000_000);
        let now = if age >= 0 {
            mtime + S(age as u64)
        } else {
            mtime - S(age.unsigned_abs())
        };
        let windows = Windows {
            duration: S(d),
            stale: S(s),
            stale_if_error: S(e),
        };
        judge(mtime, now, windows)
    }

    #[test]
    fn the_spec_inequalities_at_their_edges() {
        assert_eq!(at(59, 60, 30, 0).phase, Phase::Fresh);
        assert_eq!(at(60, 60, 30, 0).phase, Phase::Stale);
        assert_eq!(at(89, 60, 30, 0).phase, Phase::Stale);
        assert_eq!(at(90, 60, 30, 0).phase, Phase::Expired);
        assert_eq!(at(90, 60, 30, 10).phase, Phase::Grace);
        assert_eq!(at(99, 60, 30, 10).phase, Phase::Grace);
        assert_eq!(at(100, 60, 30, 10).phase, Phase::Expired);
        assert_eq!(at(60, 60, 0, 10).phase, Phase::Grace);
        assert_eq!(at(0, 0, 0, 0).phase, Phase::Expired);
    }

    #[test]
    fn a_future_mtime_is_fresh_with_age_zero_until_its_duration_from_mtime() {
        let j = at(-100, 60, 30, 0);
        assert_eq!(j.phase, Phase::Fresh);
        assert_eq!(j.age, Duration::ZERO);
        assert_eq!(j.next_change, Some(S(160)));
        assert_eq!(j.ttl_secs, 60.0);
        assert_eq!(at(-1, 0, 0, 0).phase, Phase::Fresh);
    }

    #[test]
    fn next_change_is_the_end_of_the_current_window() {
        assert_eq!(at(10, 60, 30, 5).next_change, Some(S(50)));
        assert_eq!(at(70, 60, 30, 5).next_change, Some(S(20)));
        assert_eq!(at(92, 60, 30, 5).next_change, Some(S(3)));
        assert_eq!(at(95, 60, 30, 5).next_change, None);
        assert_eq!(at(70, 60, 30, 5).ttl_secs, -10.0);
    }

    #[test]
    fn huge_windows_saturate_instead_of_overflowing() {
        let huge = Windows {
            duration: Duration::MAX,
            stale: Duration::MAX,
            stale_if_error: Duration::MAX,
        };
        let mtime = SystemTime::UNIX_EPOCH;
        let j = judge(mtime, mtime + S(1), huge);
        assert_eq!(j.phase, Phase::Fresh);
        assert_eq!(j.next_change, Some(Duration::MAX - S(1)));
        // The widest ages a SystemTime allows, both ways.
        let (early, late) = (mtime - S(i64::MAX as u64), mtime + S(i64::MAX as u64));
        let j = judge(late, early, huge);
        assert_eq!((j.phase, j.age), (Phase::Fresh, Duration::ZERO));
        assert_eq!(j.next_change, Some(Duration::MAX));
        let j = judge(early, late, Windows { stale: S(0), ..huge });
        assert_eq!(j.phase, Phase::Fresh);
        assert_eq!(j.age, S(2 * i64::MAX as u64));
    }

    #[test]
    fn grace_is_shown_only_while_the_refresh_fails() {
        assert_eq!(Phase::Grace.shown(true), Some("stale"));
        assert_eq!(Phase::Grace.shown(false), None);
        assert_eq!(Phase::Stale.shown(false), Some("stale"));
        assert_eq!(Phase::Expired.shown(true), None);
    }
}
