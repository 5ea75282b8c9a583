//! Stasis's container runtime: image store, rootfs, namespaces, cgroups,
//! network, the per-container monitor, and (later) checkpoint
//! orchestration over the engine. The CLI calls it; it calls the engine.
//!
//! - [`store`]: paths, ids, atomic JSON files, per-container locks.
//! - [`archive`], [`image`]: safe tar extraction; import, load, rmi.
//! - [`container`]: create, start, stop, kill, rm, exec, state refresh.
//! - [`monitor`]: the per-container monitor process (like conmon).
//! - [`rootfs`]: the init's mounts and pivot_root before exec.
//! - [`cgroup`]: v1 (hybrid) and v2 cgroups per container.
//! - [`network`]: bridge, veth, IPAM, published ports.

pub mod archive;
pub mod cgroup;
pub mod checkpoint;
pub mod ckpt_archive;
pub mod container;
pub mod error;
pub mod image;
pub mod monitor;
pub mod network;
pub mod precheckpoint;
pub mod rootfs;
pub mod store;

pub use error::{Result, RuntimeError};
