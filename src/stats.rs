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

macro_rules! requests {
    ($($name:ident),* $(,)?) => {
        /// How many requests of each kind reached the daemon (SPEC §5 `requests`): the measure
        /// of how much the kernel's caches spare us.
        #[derive(Debug, Default)]
        pub struct Requests {
            $(pub $name: AtomicU64,)*
        }

        impl Requests {
            pub fn counters(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
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
