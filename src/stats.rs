//! Counters since mount, kept in atomics so counting never takes a lock on the read path.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// The counters of `user.cachetta.stats` (see SPEC §5).
        #[derive(Debug, Default)]
        pub struct Stats {
            $(pub $name: AtomicU64,)*
        }

        impl Stats {
            /// Every counter by name, in a stable order.
            pub fn counters(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters!(
    hits,
    misses,
    stale_served,
    lru_hits,
    refreshes_started,
    refreshes_ok,
    refreshes_failed,
    refreshes_declined,
    writes_ok,
    writes_rejected,
);

/// Add one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
