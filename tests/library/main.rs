//! The library API (`Cachetta`), its async side and its hash against the Python package. Builds
//! and passes without the `mount` feature:
//! `cargo test --no-default-features --features tokio --test library`.

#[path = "../common/mod.rs"]
mod common;

mod library;
mod library_async;
mod python_hash;
