//! FUSE-over-io_uring, the kernel transport of SPEC §15: (in [`abi`]) the structs the kernel and
//! the daemon exchange on it. The rings themselves and the choice of transport come later
//! (issue #24); docs/uring.md says how they will fit on fuser.

pub mod abi;
