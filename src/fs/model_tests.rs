//! A model test (proptest), in the spirit of mountpoint-s3's reftests: random sequences of
//! operations on [`CacheFs`] with a manual clock, through the mount's ways in (O_TRUNC writes,
//! also through a name the kernel kept and read back through it at once,
//! two writers of one key, temp file + rename, appends, `rm`, `touch -d`, `setfattr` of the
//! per-entry policy, readers held open across changes) and behind its back (writes, replaces,
//! deletes, corruption in the backing dir, what a refresh command prints), with clock jumps
//! both ways. Two directories: the root, and `feed/`, whose rule has a refresh command and a
//! stale-if-error window.
//!
//! After every step the filesystem (driven as the kernel drives it: `model_tests/world.rs`)
//! must agree with the model (`model_tests/model.rs`), which judges entries with
//! `policy::reference`, never with `policy`: both listings, each lookup (answer, size, mtime,
//! how long the kernel may cache it), `getattr` likewise, the bytes read,
//! `user.cachetta.state` and the three effective policy values, and every held reader's bytes.
//!
//! `PROPTEST_CASES` raises the number of cases (default 1,000); failures shrink and are kept in
//! `proptest-regressions/` as regression cases.

mod model;
mod world;

use proptest::prelude::*;

use model::{has_refresh, Body, Knob, KEYS};
use world::World;

/// One step of a case.
#[derive(Debug, Clone)]
enum Op {
    /// `open(O_WRONLY|O_TRUNC)` (or `O_CREAT`), write, close.
    Truncating(usize, Body),
    /// Two processes open the key with `O_TRUNC`, both write, and close in turn (the second
    /// writer closes first if the flag says so); a reader looks in between.
    TwoWriters(usize, Body, Body, bool),
    /// A temp file written, its mtime set to that many seconds ago if asked (`cp -a`), closed,
    /// then renamed onto the key.
    Renaming(usize, Body, Option<u8>),
    /// `open(O_WRONLY|O_TRUNC)` through the name the kernel kept (a lookup only if it expired),
    /// write, close, then `cat` through the name the kernel keeps now: the write, at once.
    CachedWrite(usize, Body),
    /// `cat` through the name the kernel kept, without a lookup.
    CachedCat(usize),
    Remove(usize),
    /// `touch -d '<secs> seconds ago'` (negative: in the future), through an open file as GNU
    /// touch does, or by path.
    Touch(usize, i16, bool),
    /// The clock jumps by this many seconds (either way).
    Jump(i16),
    /// `open(O_WRONLY|O_APPEND)` of a visible entry, a space appended, close.
    Append(usize),
    /// Behind the mount's back: a write in place with mtime now.
    External(usize, Body),
    /// Behind the mount's back: a new file renamed over the key, mtime now.
    ExternalReplace(usize, Body),
    ExternalDelete(usize),
    /// `setfattr -n user.cachetta.<knob> -v <secs>s` on a visible entry.
    SetPolicy(usize, Knob, u8),
    /// `setfattr -x user.cachetta.<knob>` on a visible entry.
    RemovePolicy(usize, Knob),
    /// What the refresh command of a feed key prints from now on (`None`: it fails).
    Upstream(usize, Option<Body>),
    /// Open a visible entry for reading and keep it open.
    Hold(usize),
    /// Close one of the held readers.
    Release(usize),
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![4 => any::<u16>().prop_map(Body::Valid), 1 => Just(Body::Invalid)]
}

fn knob() -> impl Strategy<Value = Knob> {
    prop::sample::select(Knob::ALL.to_vec())
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    let feed = KEYS.iter().filter(|k| has_refresh(k)).count();
    prop_oneof![
        3 => (key.clone(), body()).prop_map(|(k, b)| Op::Truncating(k, b)),
        1 => (key.clone(), body(), body(), any::<bool>())
            .prop_map(|(k, a, b, flip)| Op::TwoWriters(k, a, b, flip)),
        3 => (key.clone(), body(), prop::option::weighted(0.3, any::<u8>()))
            .prop_map(|(k, b, t)| Op::Renaming(k, b, t)),
        2 => (key.clone(), body()).prop_map(|(k, b)| Op::CachedWrite(k, b)),
        2 => key.clone().prop_map(Op::CachedCat),
        1 => key.clone().prop_map(Op::Remove),
        2 => (key.clone(), -60..200i16, any::<bool>()).prop_map(|(k, s, fd)| Op::Touch(k, s, fd)),
        3 => (-100..100i16).prop_map(Op::Jump),
        1 => key.clone().prop_map(Op::Append),
        2 => (key.clone(), body()).prop_map(|(k, b)| Op::External(k, b)),
        1 => (key.clone(), body()).prop_map(|(k, b)| Op::ExternalReplace(k, b)),
        1 => key.clone().prop_map(Op::ExternalDelete),
        3 => (key.clone(), knob(), 0..150u8).prop_map(|(k, n, s)| Op::SetPolicy(k, n, s)),
        1 => (key.clone(), knob()).prop_map(|(k, n)| Op::RemovePolicy(k, n)),
        3 => (0..feed, prop::option::weighted(0.75, body())).prop_map(|(k, b)| Op::Upstream(k, b)),
        1 => key.prop_map(Op::Hold),
        1 => any::<usize>().prop_map(Op::Release),
    ]
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Run `ops`, checking the filesystem against the model before and after each.
fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    run_with(ops, false)
}

/// Run `ops` on a filesystem that may (`passthrough`) hand the kernel backing files: entries'
/// readers then pin their version for passthrough, which a writer's open of the same inode
/// must never meet (the kernel refuses it).
fn run_with(ops: &[Op], passthrough: bool) -> Result<(), TestCaseError> {
    let mut world = World::new(passthrough);
    world.check()?;
    for op in ops {
        world.apply(op)?;
        world.check()?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn the_filesystem_agrees_with_its_model(
        ops in proptest::collection::vec(op(), 1..30),
        passthrough in proptest::bool::ANY,
    ) {
        run_with(&ops, passthrough)?;
    }
}

/// Cases the model test shrank to, kept as operations (a seed in `proptest-regressions/`
/// stops meaning the same case once the strategy changes, and replays whichever failure its
/// case meets first).
fn replay(ops: &[Op]) {
    if let Err(e) = run(ops) {
        panic!("{ops:?}: {e}");
    }
}

#[test]
fn a_key_renamed_over_then_rewritten_with_o_trunc() {
    replay(&[
        Op::Renaming(2, Body::Valid(0), None),
        Op::Truncating(2, Body::Valid(0)),
    ]);
}

/// `touch -c -d '90 seconds ago' a.json` (or Python's `os.utime(path, ...)`): a utimensat by
/// path that ages the entry past duration + stale changes its mtime, and must say so.
#[test]
fn a_touch_by_path_that_hides_the_entry_succeeds() {
    replay(&[Op::Truncating(0, Body::Valid(0)), Op::Touch(0, 90, false)]);
}

/// GNU `touch -d` (open, futimens, close), as `tests/mount` does it.
#[test]
fn a_touch_through_an_open_file_that_hides_the_entry_succeeds() {
    replay(&[Op::Truncating(0, Body::Valid(0)), Op::Touch(0, 90, true)]);
}

/// The same while another process has the entry open for reading.
#[test]
fn a_touch_through_an_open_file_that_hides_a_read_entry_succeeds() {
    replay(&[
        Op::Truncating(0, Body::Valid(0)),
        Op::Hold(0),
        Op::Touch(0, 90, true),
    ]);
}

/// `a.json`'s first version is read through a reader held across its replace; once that
/// reader closes, a file renamed over `feed/a.json` behind the mount's back gets the freed
/// backing inode, the same size and the same mtime (and, within one tick of the backing
/// filesystem's clock, the same ctime). `feed/a.json` must read as what it holds. Seen on
/// ext4, which hands a freed inode number to the next file at once (tmpfs does not); tried
/// twenty times, since a file another test creates meanwhile may take the inode instead.
#[test]
fn a_file_on_the_reused_inode_of_a_read_one_is_read_anew() {
    for _ in 0..20 {
        replay(&[
            Op::Truncating(0, Body::Valid(10000)),
            Op::Hold(0),
            Op::Renaming(0, Body::Valid(0), None),
            Op::Release(0),
            Op::ExternalReplace(3, Body::Valid(10001)),
        ]);
    }
}

/// `feed/a.json` is read stale at +40 s and its refresh fails (backoff until +130 s); it is
/// rewritten behind the mount's back at +41 s; at +101 s it is in its stale-if-error window
/// with no failure since it was written, and the backoff holds the refresh back, so a lookup
/// shows it. An append must append to it.
#[test]
fn an_append_to_an_entry_that_stale_if_error_shows_keeps_its_content() {
    replay(&[
        Op::Truncating(3, Body::Valid(0)),
        Op::Jump(40),
        Op::Jump(1),
        Op::External(3, Body::Valid(0)),
        Op::Jump(60),
        Op::Append(3),
    ]);
}
