//! Ring entries answered by a real `CacheFs` over a temp backing dir, with no kernel.

use std::path::Path;
use std::sync::atomic::Ordering;

use zerocopy::FromBytes;

use super::*;
use crate::clock::SystemClock;
use crate::config::{Config, Overrides};
use crate::store::Store;
use crate::uring::abi::{FuseAttrOut, FuseKstatfs, FUSE_GETATTR, FUSE_STATFS};
use crate::uring::message::tests::{entry, getattr_in, out_header};

const PAYLOAD: usize = 8192;

fn filesystem() -> (tempfile::TempDir, Arc<CacheFs>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.json"), "{}").unwrap();
    let config = Config::from_toml("", Path::new("test.toml"), &Overrides::default()).unwrap();
    let store = Store::open(dir.path(), false).unwrap();
    let fs = CacheFs::new(Arc::new(config), store, Arc::new(SystemClock), false);
    (dir, fs)
}

#[test]
fn statfs_on_the_ring_answers_the_backing_filesystem_and_is_counted() {
    let (dir, fs) = filesystem();
    let served = Served::default();
    let mut header = entry(FUSE_STATFS, 40, 21, &[]);
    let mut payload = vec![0; PAYLOAD];
    handle(&fs, &served, &mut header, &mut payload);

    let oh = out_header(&header);
    assert_eq!((oh.error, oh.unique, oh.len), (0, 21, 16 + 80));
    let (st, _) = FuseKstatfs::read_from_prefix(&payload[..]).unwrap();
    let backing = rustix::fs::statvfs(dir.path()).unwrap();
    assert_eq!(st.blocks, backing.f_blocks);
    assert_eq!(st.bsize as u64, backing.f_bsize);
    assert_eq!(served.statfs.load(Ordering::Relaxed), 1);
    // The same per-op stats the fuser adapter counts in.
    assert_eq!(fs.requests().statfs.count.load(Ordering::Relaxed), 1);
}

#[test]
fn getattr_of_the_root_on_the_ring_is_a_directory() {
    let (_dir, fs) = filesystem();
    let served = Served::default();
    let mut header = entry(FUSE_GETATTR, 56, 22, &getattr_in(0, 0));
    let mut payload = vec![0; PAYLOAD];
    handle(&fs, &served, &mut header, &mut payload);

    let oh = out_header(&header);
    assert_eq!((oh.error, oh.unique, oh.len), (0, 22, 16 + 104));
    let (out, _) = FuseAttrOut::read_from_prefix(&payload[..]).unwrap();
    assert_eq!(out.attr.ino, 1);
    assert_eq!(out.attr.mode & libc::S_IFMT, libc::S_IFDIR);
    assert_eq!(served.getattr.load(Ordering::Relaxed), 1);
    assert_eq!(fs.requests().getattr.count.load(Ordering::Relaxed), 1);
}

#[test]
fn getattr_of_an_unknown_inode_is_the_filesystems_error() {
    let (_dir, fs) = filesystem();
    let served = Served::default();
    let mut header = entry(FUSE_GETATTR, 56, 23, &getattr_in(0, 0));
    // Node ids are the kernel's, from lookups; nothing looked up 999.
    header.in_out[16..24].copy_from_slice(&999u64.to_ne_bytes());
    let mut payload = vec![0; PAYLOAD];
    handle(&fs, &served, &mut header, &mut payload);
    let oh = out_header(&header);
    assert!(oh.error < 0, "{oh:?}");
    assert_eq!((oh.len, header.ring_ent_in_out.payload_sz), (16, 0));
}

#[test]
fn other_opcodes_are_refused_and_counted_apart() {
    let (_dir, fs) = filesystem();
    let served = Served::default();
    for (opcode, errno) in [(22, libc::EIO), (1, libc::EIO), (52, libc::ENOSYS)] {
        let mut header = entry(opcode, 60, 30 + u64::from(opcode), &[]);
        let mut payload = vec![0; PAYLOAD];
        handle(&fs, &served, &mut header, &mut payload);
        assert_eq!(out_header(&header).error, -errno, "opcode {opcode}");
    }
    assert_eq!(served.refused.load(Ordering::Relaxed), 3);
    assert_eq!(served.statfs.load(Ordering::Relaxed), 0);
    assert_eq!(served.getattr.load(Ordering::Relaxed), 0);
}

#[test]
fn a_malformed_entry_is_answered_eio_to_its_commit_id() {
    let (_dir, fs) = filesystem();
    let served = Served::default();
    let mut header = entry(FUSE_STATFS, 12, 40, &[]);
    let mut payload = vec![0; PAYLOAD];
    handle(&fs, &served, &mut header, &mut payload);
    let oh = out_header(&header);
    assert_eq!((oh.error, oh.unique), (-libc::EIO, 40));
    assert_eq!(served.malformed.load(Ordering::Relaxed), 1);
    assert_eq!(
        served.to_string(),
        "statfs 0, getattr 0, refused 0, malformed 1; by queue []"
    );
}
