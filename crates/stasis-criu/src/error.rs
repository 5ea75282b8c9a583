//! Errors of the criu front end.

use std::io;
use std::path::PathBuf;

/// Why a criu request failed. The message is what CRIU's users read in
/// the log file (runc and podman point at it) and in the RPC answer.
#[derive(Debug, thiserror::Error)]
pub enum CriuError {
    /// An option or request we do not honour; named as the caller spelled it.
    #[error("{0} is not supported by Stasis's criu")]
    Unsupported(String),
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("images in {}: {what}", dir.display())]
    Images { dir: PathBuf, what: String },
    #[error("{0}")]
    Dump(#[from] stasis_engine::DumpError),
    #[error("{0}")]
    Restore(#[from] stasis_engine::RestoreError),
    #[error("the caller refused the {0} notification")]
    NotifyRefused(String),
    #[error("RPC: {0}")]
    Rpc(String),
}

impl CriuError {
    /// An I/O error with what we were doing.
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> CriuError {
        let what = what.into();
        move |source| CriuError::Io { what, source }
    }

    /// The errno CRIU would report, where one applies.
    pub fn errno(&self) -> i32 {
        match self {
            CriuError::Io { source, .. } => source.raw_os_error().unwrap_or(0),
            CriuError::Unsupported(_) | CriuError::Usage(_) => libc::EINVAL,
            _ => 0,
        }
    }
}

pub use stasis_engine::error::one_line;
