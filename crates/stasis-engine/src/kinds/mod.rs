//! One module per resource kind, each with its dump and restore side by
//! side (as CRIU keeps one file per kind and Firecracker a `persist.rs`
//! beside each device).

pub mod fdkind;
pub mod files;
pub mod mm;
pub mod mounts;
pub mod namespaces;
pub mod pages;
pub mod seccomp;
pub mod share;
pub mod signal;
pub mod sockets;
pub mod special;
pub mod task;
pub mod thread;
