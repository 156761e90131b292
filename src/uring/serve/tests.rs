//! Ring entries answered by a real `CacheFs` over a temp backing dir, with no kernel: each
//! family of ops as the kernel would send it, the reply read back as the kernel reads it.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use zerocopy::FromBytes;

use super::*;
use crate::clock::SystemClock;
use crate::config::{Config, Overrides};
use crate::store::Store;
use crate::uring::abi::*;
use crate::uring::message::tests::{entry, getattr_in, out_header};
use crate::uring::ring::Mailbox;

pub(super) const PAYLOAD: usize = 8192;

pub(super) fn filesystem() -> (tempfile::TempDir, Arc<CacheFs>) {
    filesystem_with("")
}

pub(super) fn filesystem_with(toml: &str) -> (tempfile::TempDir, Arc<CacheFs>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.json"), "{}").unwrap();
    let config = Config::from_toml(toml, Path::new("test.toml"), &Overrides::default()).unwrap();
    let store = Store::open(dir.path(), false).unwrap();
    let fs = CacheFs::new(Arc::new(config), store, Arc::new(SystemClock), false);
    (dir, fs)
}

/// One request through `handle` with a ring's `Defer`, as the ring gives it; the header and
/// payload after, and whether the handler left it to be answered later.
fn handle_one(
    fs: &Arc<CacheFs>,
    served: &Served,
    header: &mut FuseUringReqHeader,
    payload: &mut [u8],
) -> Arc<Mailbox> {
    let mailbox = Mailbox::detached();
    let commit_id = header.ring_ent_in_out.commit_id;
    let defer = mailbox.defer(0, commit_id);
    handle(fs, None, served, header, payload, &defer);
    assert!(!defer.was_deferred(), "answered at once");
    mailbox
}

/// A request for node `nodeid` with `arg` in `op_in` and `sent` in the payload, served with
/// every op on; its `fuse_out_header` and reply body.
pub(super) fn ask(
    fs: &Arc<CacheFs>,
    served: &Served,
    opcode: u32,
    nodeid: u64,
    arg: &[u8],
    sent: &[u8],
) -> (FuseOutHeader, Vec<u8>) {
    static UNIQUE: AtomicU64 = AtomicU64::new(1000);
    let unique = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let len = (40 + arg.len() + sent.len()) as u32;
    let mut header = entry(opcode, len, unique, arg);
    header.in_out[16..24].copy_from_slice(&nodeid.to_ne_bytes());
    header.ring_ent_in_out.payload_sz = sent.len() as u32;
    let mut payload = vec![0; PAYLOAD];
    payload[..sent.len()].copy_from_slice(sent);
    handle_one(fs, served, &mut header, &mut payload);
    let oh = out_header(&header);
    assert_eq!(oh.unique, unique);
    assert_eq!(
        oh.len as usize,
        16 + header.ring_ent_in_out.payload_sz as usize
    );
    let body = payload[..header.ring_ent_in_out.payload_sz as usize].to_vec();
    (oh, body)
}

pub(super) fn ok(answer: (FuseOutHeader, Vec<u8>)) -> Vec<u8> {
    assert_eq!(answer.0.error, 0, "{:?}", answer.0);
    answer.1
}

pub(super) fn read_as<T: FromBytes>(body: &[u8]) -> T {
    T::read_from_prefix(body).unwrap().0
}

pub(super) fn name(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

pub(super) fn lookup(
    fs: &Arc<CacheFs>,
    served: &Served,
    parent: u64,
    n: &str,
) -> (FuseOutHeader, Vec<u8>) {
    ask(fs, served, FUSE_LOOKUP, parent, &[], &name(n))
}

#[test]
fn statfs_on_the_ring_answers_the_backing_filesystem_and_is_counted() {
    let (dir, fs) = filesystem();
    let served = Served::default();
    let mut header = entry(FUSE_STATFS, 40, 21, &[]);
    let mut payload = vec![0; PAYLOAD];
    handle_one(&fs, &served, &mut header, &mut payload);

    let oh = out_header(&header);
    assert_eq!((oh.error, oh.unique, oh.len), (0, 21, 16 + 80));
    let (st, _) = FuseKstatfs::read_from_prefix(&payload[..]).unwrap();
    let backing = rustix::fs::statvfs(dir.path()).unwrap();
    assert_eq!(st.blocks, backing.f_blocks);
    assert_eq!(st.bsize as u64, backing.f_bsize);
    assert_eq!(served.count(FUSE_STATFS), 1);
    // The same per-op stats the fuser adapter counts in.
    assert_eq!(fs.requests().statfs.count.load(Ordering::Relaxed), 1);
}

#[test]
fn getattr_of_the_root_on_the_ring_is_a_directory() {
    let (_dir, fs) = filesystem();
    let served = Served::default();
    let mut header = entry(FUSE_GETATTR, 56, 22, &getattr_in(0, 0));
    let mut payload = vec![0; PAYLOAD];
    handle_one(&fs, &served, &mut header, &mut payload);

    let oh = out_header(&header);
    assert_eq!((oh.error, oh.unique, oh.len), (0, 22, 16 + 104));
    let (out, _) = FuseAttrOut::read_from_prefix(&payload[..]).unwrap();
    assert_eq!(out.attr.ino, 1);
    assert_eq!(out.attr.mode & libc::S_IFMT, libc::S_IFDIR);
    assert_eq!(served.count(FUSE_GETATTR), 1);
    assert_eq!(fs.requests().getattr.count.load(Ordering::Relaxed), 1);
}

#[test]
fn getattr_of_an_unknown_inode_is_the_filesystems_error() {
    let (_dir, fs) = filesystem();
    let served = Served::default();
    // Node ids are the kernel's, from lookups; nothing looked up 999.
    let (oh, body) = ask(&fs, &served, FUSE_GETATTR, 999, &getattr_in(0, 0), &[]);
    assert!(oh.error < 0, "{oh:?}");
    assert!(body.is_empty());
}

#[test]
fn with_every_op_on_an_opcode_the_adapter_lacks_is_enosys_as_fuser_answers_it() {
    let (_dir, fs) = filesystem();
    let served = Served::default();
    // STATX: the kernel then falls back to GETATTR, as on classic.
    let (oh, _) = ask(&fs, &served, 52, 1, &[0; 24], &[]);
    assert_eq!(oh.error, -libc::ENOSYS);
    assert_eq!(served.refused.load(Ordering::Relaxed), 1);
}

#[test]
fn a_malformed_entry_is_answered_eio_to_its_commit_id() {
    let (_dir, fs) = filesystem();
    let served = Served::default();
    let mut header = entry(FUSE_STATFS, 12, 40, &[]);
    let mut payload = vec![0; PAYLOAD];
    handle_one(&fs, &served, &mut header, &mut payload);
    let oh = out_header(&header);
    assert_eq!((oh.error, oh.unique), (-libc::EIO, 40));
    assert_eq!(served.malformed.load(Ordering::Relaxed), 1);
    assert_eq!(
        served.to_string(),
        "statfs 0, getattr 0, refused 0 (opcodes []), malformed 1; by queue []; on CPU []"
    );
}

#[test]
fn a_name_without_its_nul_is_eio_and_counted_malformed() {
    let (_dir, fs) = filesystem();
    let served = Served::default();
    let (oh, _) = ask(&fs, &served, FUSE_LOOKUP, 1, &[], b"x.json");
    assert_eq!(oh.error, -libc::EIO);
    assert_eq!(served.malformed.load(Ordering::Relaxed), 1);
    assert_eq!(fs.requests().lookup.count.load(Ordering::Relaxed), 0);
}

#[test]
fn a_read_through_lookup_is_answered_later_through_the_mailbox() {
    let (dir, fs) = filesystem_with(
        "[[rule]]\nmatch = \"filled/*.json\"\nrefresh = \"echo '{\\\"n\\\":1}'\"\nfill_on_miss = true\n",
    );
    std::fs::create_dir(dir.path().join("filled")).unwrap();
    let served = Served::default();
    let parent: FuseEntryOut = read_as(&ok(lookup(&fs, &served, 1, "filled")));

    let mut header = entry(FUSE_LOOKUP, 40 + 7, 77, &[]);
    header.in_out[16..24].copy_from_slice(&parent.nodeid.to_ne_bytes());
    header.ring_ent_in_out.payload_sz = 7;
    let mut payload = vec![0; PAYLOAD];
    payload[..7].copy_from_slice(b"a.json\0");
    let mailbox = Mailbox::detached();
    let defer = mailbox.defer(3, 77);
    handle(&fs, None, &served, &mut header, &mut payload, &defer);
    assert!(defer.was_deferred(), "the lookup waits for its command");

    let (slot, commit_id, write) = mailbox
        .wait(Duration::from_secs(20))
        .expect("a later reply");
    assert_eq!((slot, commit_id), (3, 77));
    let write = write.expect("a reply, not a dropped one");
    let mut header = FuseUringReqHeader::default();
    write(&mut header, &mut payload);
    let oh = out_header(&header);
    assert_eq!((oh.error, oh.unique), (0, 77));
    let out: FuseEntryOut = read_as(&payload);
    assert_eq!(out.attr.size, 8, "the command's output, filled");
    assert_eq!(served.count(FUSE_LOOKUP), 2);
}

#[test]
fn a_later_reply_dropped_unsent_answers_eio() {
    let mailbox = Mailbox::detached();
    drop(mailbox.defer(5, 9).later());
    let (slot, commit_id, write) = mailbox.wait(Duration::from_secs(1)).unwrap();
    assert_eq!((slot, commit_id), (5, 9));
    assert!(write.is_none(), "the ring answers EIO for it");
}

#[test]
fn destroy_is_acknowledged_and_counted_but_not_in_the_adapters_stats() {
    let (_dir, fs) = filesystem();
    let served = Served::default();
    assert!(ok(ask(&fs, &served, FUSE_DESTROY, 1, &[], &[])).is_empty());
    assert_eq!(served.count(FUSE_DESTROY), 1);
    assert_eq!(served.refused.load(Ordering::Relaxed), 0);
    assert!(served.to_string().contains(", destroy 1,"), "{served}");
}
