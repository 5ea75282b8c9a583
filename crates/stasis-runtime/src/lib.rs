//! Stasis's container runtime: image store, rootfs, namespaces, cgroups,
//! network, the per-container monitor, and (later) checkpoint
//! orchestration over the engine. The CLI calls it; it calls the engine.

pub mod network;
