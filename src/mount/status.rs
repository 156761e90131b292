//! `STATUS=` for `systemctl status` (SPEC §14): the hit ratio, the entries in memory and the
//! refreshes under way, sent to systemd every few seconds by a thread of its own while the
//! mount runs. It reads the filesystem's counters (atomics and two short locks), so no FUSE
//! request ever waits for it, and a full systemd queue drops a line rather than holding it.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::debug;

use crate::daemon::notify::Systemd;
use crate::fs::CacheFs;
use crate::stats;

/// How often the status line is sent (when it changed).
pub const INTERVAL: Duration = Duration::from_secs(5);

/// The running status thread; [`StatusThread::stop`] ends it.
pub struct StatusThread {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl StatusThread {
    /// Send the status now and then every [`INTERVAL`] until stopped.
    pub fn spawn(fs: Arc<CacheFs>, systemd: Systemd) -> std::io::Result<StatusThread> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("status".into())
            .spawn(move || {
                let mut last = String::new();
                loop {
                    let status = line(
                        fs.stats().hits.load(Ordering::Relaxed),
                        fs.stats().misses.load(Ordering::Relaxed),
                        fs.lru_usage().0,
                        fs.refreshing(),
                    );
                    if status != last {
                        if let Err(e) = systemd.try_notify(&format!("STATUS={status}")) {
                            debug!("cannot send STATUS= to systemd: {e}");
                        }
                        last = status;
                    }
                    match stopped.recv_timeout(INTERVAL) {
                        Err(RecvTimeoutError::Timeout) => continue,
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(StatusThread { stop, thread })
    }

    /// End the thread and wait for it, so that no `STATUS=` follows `STOPPING=1`.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// `hit ratio 93.1%, 1,204 entries in memory, 3 refreshing`.
fn line(hits: u64, misses: u64, entries: usize, refreshing: usize) -> String {
    let entries = match entries {
        1 => "1 entry".to_string(),
        n => format!("{} entries", grouped(n)),
    };
    format!(
        "hit ratio {}, {entries} in memory, {} refreshing",
        stats::hit_ratio(hits, misses),
        grouped(refreshing)
    )
}

/// `1204` as `1,204`.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_gives_the_hit_ratio_entries_and_refreshes() {
        assert_eq!(
            line(931, 69, 1204, 3),
            "hit ratio 93.1%, 1,204 entries in memory, 3 refreshing"
        );
        assert_eq!(
            line(0, 0, 0, 0),
            "hit ratio n/a, 0 entries in memory, 0 refreshing"
        );
        assert_eq!(
            line(1, 0, 1, 0),
            "hit ratio 100.0%, 1 entry in memory, 0 refreshing"
        );
    }

    #[test]
    fn grouped_puts_a_comma_every_three_digits() {
        let cases = [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (12345, "12,345"),
            (123456, "123,456"),
            (1234567, "1,234,567"),
        ];
        for (n, text) in cases {
            assert_eq!(grouped(n), text);
        }
    }
}
