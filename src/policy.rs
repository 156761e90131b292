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

/// The test oracle this module's tests and the filesystem's model test check against.
#[cfg(test)]
pub(crate) mod reference;

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

    /// `evaluate` against the reference's own arithmetic of SPEC §1 and §12 (`reference.rs`):
    /// state, age, time to the next change and ttl must all agree.
    mod against_the_reference {
        use std::time::{Duration, SystemTime, UNIX_EPOCH};

        use proptest::prelude::*;

        use super::super::reference::{self, Phase, Windows};
        use super::super::{evaluate, EntryState, Timing};

        const NS: i128 = 1_000_000_000;

        /// The instant `n` nanoseconds from the epoch, if a `SystemTime` can hold it.
        fn instant(n: i128) -> Option<SystemTime> {
            let secs = i64::try_from(n.div_euclid(NS)).ok()?;
            let whole = if secs >= 0 {
                UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
            } else {
                UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
            }?;
            whole.checked_add(Duration::from_nanos(n.rem_euclid(NS) as u64))
        }

        fn phase(state: EntryState) -> Phase {
            match state {
                EntryState::Fresh => Phase::Fresh,
                EntryState::Stale => Phase::Stale,
                EntryState::Grace => Phase::Grace,
                EntryState::Expired => Phase::Expired,
            }
        }

        fn agree(mtime: SystemTime, now: SystemTime, timing: Timing) -> Result<(), TestCaseError> {
            let windows = Windows {
                duration: timing.duration,
                stale: timing.stale,
                stale_if_error: timing.stale_if_error,
            };
            let want = reference::judge(mtime, now, windows);
            let got = evaluate(mtime, now, timing);
            prop_assert_eq!(got.age, want.age, "age");
            let last_end = timing.duration.checked_add(timing.stale);
            if last_end.and_then(|end| end.checked_add(timing.stale_if_error)).is_none() {
                // Windows ending beyond `Duration::MAX` (584 billion years; no config or
                // override reaches them, both are capped at 100 years): the SPEC says nothing
                // of how such a far end saturates, so only the end of freshness, which is
                // exact, is compared.
                let fresh = got.state == EntryState::Fresh;
                prop_assert_eq!(fresh, want.phase == Phase::Fresh, "fresh");
                return Ok(());
            }
            prop_assert_eq!(phase(got.state), want.phase, "state");
            prop_assert_eq!(got.until_change, want.next_change, "time to the next change");
            // An f64 of seconds: equal to within the rounding of its operands' magnitude.
            let scale = [timing.duration, want.age]
                .iter()
                .map(Duration::as_secs_f64)
                .fold(1.0, f64::max);
            prop_assert!(
                (got.ttl_secs - want.ttl_secs).abs() <= scale * 1e-12,
                "ttl_secs {} != {}",
                got.ttl_secs,
                want.ttl_secs
            );
            Ok(())
        }

        /// A duration, stale window or stale-if-error window: mostly small, sometimes with
        /// nanoseconds, sometimes as large as a `Duration` goes.
        fn window() -> impl Strategy<Value = Duration> {
            prop_oneof![
                3 => Just(Duration::ZERO),
                4 => (1..200u64).prop_map(Duration::from_secs),
                2 => (0..200u64, 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n)),
                // The config's cap, 100 years.
                1 => Just(Duration::from_secs(100 * 365 * 86_400)),
                1 => (any::<u64>(), 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n)),
                1 => (0..3u64).prop_map(|k| Duration::MAX - Duration::from_secs(k)),
            ]
        }

        /// An mtime: around today, or anywhere a `SystemTime` reaches.
        fn mtime() -> impl Strategy<Value = i128> {
            prop_oneof![
                4 => (1_600_000_000..1_900_000_000i64, 0..NS).prop_map(|(s, n)| i128::from(s) * NS + n),
                1 => (any::<i64>(), 0..NS).prop_map(|(s, n)| i128::from(s) * NS + n),
                1 => Just(i128::from(i64::MIN) * NS),
                1 => Just(i128::from(i64::MAX) * NS + NS - 1),
            ]
        }

        /// How far `now` is from the boundary it is drawn near: on it, a nanosecond or a second
        /// either side, a few minutes either side, or anywhere.
        fn offset() -> impl Strategy<Value = i128> {
            prop_oneof![
                2 => Just(0),
                1 => Just(-1),
                1 => Just(1),
                1 => Just(-NS),
                1 => Just(NS),
                2 => -300 * NS..300 * NS,
                1 => any::<i64>().prop_map(|s| i128::from(s) * NS),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(
                std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
            ))]

            /// `now` is drawn near one of the boundaries 0, d, d + s and d + s + e past mtime
            /// (or near mtime itself, or anywhere), so every edge is met to the nanosecond.
            #[test]
            fn evaluate_agrees_with_the_reference(
                duration in window(),
                stale in window(),
                stale_if_error in window(),
                mtime in mtime(),
                boundary in 0..4usize,
                offset in offset(),
            ) {
                let timing = Timing { duration, stale, stale_if_error };
                let windows = [duration, stale, stale_if_error];
                let anchor: i128 = windows[..boundary].iter().map(|w| w.as_nanos() as i128).sum();
                // Where the boundary is beyond what a SystemTime holds, the offset alone.
                let now = instant(mtime + anchor + offset)
                    .or_else(|| instant(mtime + offset))
                    .or_else(|| instant(mtime));
                let (Some(mtime), Some(now)) = (instant(mtime), now) else {
                    return Err(TestCaseError::reject("not a SystemTime"));
                };
                agree(mtime, now, timing)?;
            }
        }

        /// Every combination of small windows (0 to 3 s) at every age from 2 s in the future
        /// to 10 s, each a nanosecond either side too.
        #[test]
        fn evaluate_agrees_with_the_reference_on_a_small_grid() {
            let mtime = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let secs = |n: u64| Duration::from_secs(n);
            for (d, s, e) in (0..4).flat_map(|d| (0..4).flat_map(move |s| (0..4).map(move |e| (d, s, e)))) {
                let timing = Timing { duration: secs(d), stale: secs(s), stale_if_error: secs(e) };
                let ages = (-2..=10).flat_map(|s| [-1, 0, 1].map(|ns| i128::from(s) * NS + ns));
                for age in ages {
                    let now = instant(i128::from(1_700_000_000i64) * NS + age).unwrap();
                    if let Err(e) = agree(mtime, now, timing) {
                        panic!("d={d} s={s} e={e} age={age}ns: {e}");
                    }
                }
            }
        }
    }
}
