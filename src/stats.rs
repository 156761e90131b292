//! Counters since mount, and latency histograms ([`histogram`]), kept in atomics so counting
//! never takes a lock on the read path.

mod histogram;

use std::sync::atomic::{AtomicU64, Ordering};

pub use histogram::{Histogram, Snapshot, REFRESH_BOUNDS, REQUEST_BOUNDS};

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// The counters of `user.cachetta.stats` (see SPEC §5), and how long refreshes took
        /// (the metrics endpoint's histogram, SPEC §14).
        #[derive(Debug)]
        pub struct Stats {
            $(pub $name: AtomicU64,)*
            /// Every refresh counted in `refreshes_ok`, `_failed` or `_declined`.
            pub refresh_duration: Histogram,
        }

        impl Default for Stats {
            fn default() -> Self {
                Stats {
                    $($name: AtomicU64::new(0),)*
                    refresh_duration: Histogram::new(REFRESH_BOUNDS),
                }
            }
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

/// `hits / (hits + misses)` as a percentage with one decimal (`93.1%`), `n/a` before any
/// lookup: the hit ratio of `cachetta stats` and of the daemon's `STATUS=` to systemd.
pub fn hit_ratio(hits: u64, misses: u64) -> String {
    if hits + misses == 0 {
        return "n/a".into();
    }
    format!("{:.1}%", 100.0 * hits as f64 / (hits + misses) as f64)
}

/// Add one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One kind of request: how many reached the daemon, and how long the daemon spent on each
/// (until its handler returned: a read-through lookup is answered later, by the refresh).
#[derive(Debug)]
pub struct OpStats {
    pub name: &'static str,
    pub count: AtomicU64,
    pub latency: Histogram,
}

impl OpStats {
    fn new(name: &'static str) -> OpStats {
        OpStats {
            name,
            count: AtomicU64::new(0),
            latency: Histogram::new(REQUEST_BOUNDS),
        }
    }
}

macro_rules! requests {
    ($($name:ident),* $(,)?) => {
        /// The requests of each kind that reached the daemon (SPEC §5 `requests`): the measure
        /// of how much the kernel's caches spare us.
        #[derive(Debug)]
        pub struct Requests {
            $(pub $name: OpStats,)*
        }

        impl Default for Requests {
            fn default() -> Self {
                Requests {
                    $($name: OpStats::new(stringify!($name)),)*
                }
            }
        }

        impl Requests {
            pub fn counters(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.count.load(Ordering::Relaxed)),)*]
            }

            /// Every kind, in the same order as [`Requests::counters`].
            pub fn ops(&self) -> [&OpStats; [$(stringify!($name)),*].len()] {
                [$(&self.$name),*]
            }
        }
    };
}

requests!(
    lookup,
    forget,
    getattr,
    setattr,
    mknod,
    mkdir,
    unlink,
    rmdir,
    symlink,
    rename,
    link,
    open,
    read,
    write,
    flush,
    release,
    fsync,
    fsyncdir,
    readlink,
    opendir,
    readdir,
    readdirplus,
    releasedir,
    statfs,
    setxattr,
    getxattr,
    listxattr,
    removexattr,
    access,
    create,
    ioctl,
);
