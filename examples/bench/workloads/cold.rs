//! Cold `stat` (issue #16): `stat` of every entry of the big directory right after
//! `echo 2 > /proc/sys/vm/drop_caches`, which makes the kernel forget its dentries and inodes
//! (on both sides; the disk blocks stay cached). Through the mount, each `stat` is a `lookup`.

use std::path::PathBuf;

use anyhow::Result;

use super::{Bench, Variant};
use crate::ops::{forget_dentries, stat_all};

impl<'a> Bench<'a> {
    pub fn cold_stat(&mut self, variant: Variant) -> Result<()> {
        let entries = self.layout.entries;
        let name = format!("cold stat, {entries} entries (all){}", variant.suffix());
        self.stat_workload(&name, variant, 0.045, |paths: &[PathBuf]| {
            forget_dentries()?;
            stat_all(paths)
        })
    }
}
