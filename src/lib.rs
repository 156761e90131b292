//! cachetta: file-based JSON caching, served as a FUSE filesystem and usable as a library.
//!
//! Layers, from the bottom: `clock` and `policy` (pure state arithmetic), `config` (flags +
//! TOML + defaults, rule matching), `store` (the backing dir, never following a symlink),
//! `publish` (the one way content becomes an entry), the shared engine parts `hot`, `flight`,
//! `pool` and `gc`, then `fs` (the filesystem as a plain
//! struct), `fuse` (the thin fuser adapter) and `cli` (commands). Data flows one way, from the
//! kernel down. [`library`] is the same engine called from code: [`Cachetta`], the Python
//! library's API in Rust form. `uring` is the io_uring kernel transport (SPEC §15): its ABI,
//! whether the kernel offers it, and a ring per CPU serving every op the adapter serves
//! (passthrough included), taken as the `transport` key says.
//!
//! The filesystem, the daemon and the command line are behind the default `mount` feature; a
//! program that wants only the library depends on `cachetta` with `default-features = false`.

/// The engine's parts: public with the `mount` feature (the binary, the tests and the
/// benchmark use them), crate-private in a library-only build, whose public API is
/// [`Cachetta`], [`hash()`], [`Info`], [`clock`] and [`library::Error`].
macro_rules! engine_modules {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "mount")]
        pub mod $name;
        #[cfg(not(feature = "mount"))]
        #[allow(dead_code, unused_imports)]
        pub(crate) mod $name;
    )*};
}

engine_modules!(
    config,
    entry_policy,
    flight,
    gc,
    hot,
    inspect,
    policy,
    pool,
    publish,
    stats,
    store
);

pub mod clock;
pub mod hash;
pub mod library;

#[cfg(feature = "mount")]
pub mod cli;
#[cfg(feature = "mount")]
pub mod commands;
#[cfg(feature = "mount")]
pub mod daemon;
#[cfg(feature = "mount")]
pub mod error;
#[cfg(feature = "mount")]
pub mod exit_codes;
#[cfg(feature = "mount")]
pub mod fs;
#[cfg(feature = "mount")]
pub mod fuse;
#[cfg(feature = "mount")]
pub mod invalidate;
#[cfg(feature = "mount")]
pub mod journal;
#[cfg(feature = "mount")]
pub mod manual;
#[cfg(feature = "mount")]
pub mod mount;
#[cfg(feature = "mount")]
pub mod refresh;
#[cfg(feature = "mount")]
pub mod umount;
#[cfg(feature = "mount")]
pub mod uring;
#[cfg(feature = "mount")]
pub mod watch;

pub use hash::hash;
pub use library::{Cachetta, Info, InfoState};

/// The README's examples compile and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
