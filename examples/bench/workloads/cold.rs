//! Cold `stat` (issue #16): `stat` of every entry of the big directory right after
//! `echo 2 > /proc/sys/vm/drop_caches`, which makes the kernel forget its dentries and inodes
//! (on both sides; the disk blocks stay cached). Through the mount, each `stat` is a `lookup`.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{alternate, Bench, Variant};
use crate::daemon::Requests;
use crate::ops::stat_all;
use crate::report::{Row, Unit};

fn forget_dentries() -> Result<()> {
    fs::write("/proc/sys/vm/drop_caches", "2").context("writing /proc/sys/vm/drop_caches (root?)")
}

impl<'a> Bench<'a> {
    pub fn cold_stat(&mut self, variant: Variant) -> Result<()> {
        let entries = self.layout.entries;
        let name = format!("cold stat, {entries} entries (all){}", variant.suffix());
        let d = self.mount(variant)?;
        let native = self.layout.entry_paths(self.native());
        let mounted = self.layout.entry_paths(&d.mnt);
        let stat_all = |paths: &[PathBuf]| -> Result<f64> {
            forget_dentries()?;
            stat_all(paths)
        };
        stat_all(&native)?;
        stat_all(&mounted)?;
        let mut requests = Requests::default();
        let (n, m) = alternate(
            self.plan.rounds,
            |_| stat_all(&native),
            |_| d.counted(&mut requests, || stat_all(&mounted)),
        )?;
        self.rows
            .push(Row::compare(&name, n, m, Unit::Seconds, Some(0.045)));
        let ops = (entries * self.plan.rounds) as u64;
        let extra = (m - n) / entries as f64;
        self.record(&name, &d, ops, "stats", requests, extra)
    }
}
