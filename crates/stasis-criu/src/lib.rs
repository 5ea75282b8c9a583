//! `criu`, as container runtimes call it, answered by Stasis's engine.
//!
//! runc and crun checkpoint through the `criu` binary: `criu swrk FD` and
//! CRIU's RPC protocol (one protobuf `criu_req`/`criu_resp` per message on
//! a socket pair, with NOTIFY round trips for the runtime's hooks), and
//! people script `criu dump`/`criu restore` directly. This crate speaks
//! both, so that with Stasis installed as `criu` podman, runc and the
//! tools above them checkpoint on kernels where CRIU itself fails.
//!
//! - [`rpc`]: the protocol's messages and their framing on the socket;
//! - [`request`]: one [`request::Request`] from either front end, with every
//!   option we do not honour refused by name;
//! - [`cli`]: `criu`'s command line;
//! - [`swrk`]: the RPC server;
//! - [`run`]: dump, pre-dump and restore on the engine, with the
//!   notifications a runtime expects;
//! - [`netlock`]: the network lock of TCP dumps and restores.

pub mod cli;
pub mod error;
pub mod netlock;
pub mod request;
pub mod rpc;
pub mod run;
pub mod swrk;

pub use error::CriuError;

/// The CRIU version we answer to `VERSION` and `--version`: new enough for
/// runc (>= 3.0), podman (>= 3.11) and pre-dumps with memory tracking.
pub const CRIU_VERSION: (i32, i32, i32) = (4, 2, 0);
