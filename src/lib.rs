//! cachetta: file-based JSON caching, served as a FUSE filesystem and usable as a library.
//!
//! Layers, from the bottom: [`clock`] and [`policy`] (pure state arithmetic), [`config`]
//! (flags + TOML + defaults, rule matching), [`store`] (the backing dir, never following a
//! symlink), [`fs`] (the filesystem as a plain struct), [`fuse`] (the thin fuser adapter) and
//! [`cli`] (commands). Data flows one way, from the kernel down. [`library`] is the same engine
//! called from code: [`Cachetta`], the Python library's API in Rust form.
//!
//! The filesystem, the daemon and the command line are behind the default `mount` feature; a
//! program that wants only the library depends on `cachetta` with `default-features = false`.

#[cfg(feature = "mount")]
pub mod cli;
pub mod clock;
#[cfg(feature = "mount")]
pub mod commands;
pub mod config;
#[cfg(feature = "mount")]
pub mod daemon;
pub mod error;
#[cfg(feature = "mount")]
pub mod exit_codes;
#[cfg(feature = "mount")]
pub mod fs;
#[cfg(feature = "mount")]
pub mod fuse;
pub mod gc;
pub mod hash;
pub mod hot;
pub mod inspect;
#[cfg(feature = "mount")]
pub mod invalidate;
pub mod library;
#[cfg(feature = "mount")]
pub mod mount;
pub mod policy;
pub mod refresh;
pub mod stats;
pub mod store;
#[cfg(feature = "mount")]
pub mod umount;
#[cfg(feature = "mount")]
pub mod watch;

pub use hash::hash;
pub use library::{Cachetta, Info, InfoState};

/// The README's examples compile and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
