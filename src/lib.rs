//! cachetta: file-based JSON caching, served as a FUSE filesystem and usable as a library.
//!
//! Layers, from the bottom: [`clock`] and [`policy`] (pure state arithmetic), [`config`]
//! (flags + TOML + defaults, rule matching), [`store`] (the backing dir, never following a
//! symlink), [`fs`] (the filesystem as a plain struct), [`fuse`] (the thin fuser adapter) and
//! [`cli`] (commands). Data flows one way, from the kernel down.

pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod mount;
pub mod policy;
pub mod refresh;
pub mod stats;
pub mod store;
