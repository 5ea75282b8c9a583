//! Stasis's checkpoint/restore engine for Linux process trees.
//!
//! [`dump`] freezes a tree with ptrace, reads its state through /proc,
//! ptrace and injected syscalls, and writes CRIU-format images;
//! [`restore`] recreates the tree with the same PIDs from those images. The
//! engine knows nothing of containers: the runtime above calls it.
//!
//! Layout: `freeze` (stopping the tree), `remote` (injected syscalls during
//! dump), `kinds/*` (one resource kind each, dump and restore side by side),
//! `dump` and `restore` (the orchestration), `proc` (typed /proc parsers).

pub mod cgfreeze;
pub mod dump;
pub mod error;
pub mod fault;
pub mod freeze;
pub mod incremental;
pub mod kinds;
pub mod predump;
pub mod proc;
pub mod remote;
pub mod restore;
pub mod vpids;

pub use dump::{dump, DumpOpts, DumpStats};
pub use error::{DumpError, RestoreError};
pub use predump::pre_dump;
pub use restore::{restore, RestoreOpts, Restored};
