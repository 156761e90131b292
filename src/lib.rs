//! cachetta: file-based JSON caching, served as a FUSE filesystem and usable as a library.
//!
//! Layers, from the bottom: [`clock`] and [`policy`] (pure state arithmetic), [`config`]
//! (flags + TOML + defaults, rule matching), [`store`] (the backing dir, never following a
//! symlink), [`fs`] (the filesystem as a plain struct), [`fuse`] (the thin fuser adapter) and
//! [`cli`] (commands). Data flows one way, from the kernel down. [`library`] is the same engine
//! called from code: [`Cachetta`], the Python library's API in Rust form.

pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod gc;
pub mod hash;
pub mod hot;
pub mod inspect;
pub mod invalidate;
pub mod library;
pub mod mount;
pub mod policy;
pub mod refresh;
pub mod stats;
pub mod store;
pub mod umount;
pub mod watch;

pub use hash::hash;
pub use library::{Cachetta, Info, InfoState};

/// The README's examples compile and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
