//! The `cachetta` binary without a mount: arguments, configuration errors, the inspection
//! commands over a prepared backing dir, the install script, man pages and completions. Every
//! run goes through `common::Isolated`, so the developer's own config and cache never leak in.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod cli_cache_commands;
mod cli_inspect;
mod daemon_install;
mod manual;
