//! The runtime's error type: every variant reads as a sentence and carries
//! what it is about (image, container, path), so the CLI prints one line.

use std::io;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RuntimeError {
    /// A system call or file operation failed on a named object.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// No image or container by that name or id.
    #[error("{0}")]
    NotFound(String),
    /// A name, port or object is already taken, or an id prefix is ambiguous.
    #[error("{0}")]
    Conflict(String),
    /// Bad user input (flags, values, container state).
    #[error("{0}")]
    Invalid(String),
    /// A tarball or image archive that cannot be used.
    #[error("{0}")]
    Archive(String),
    /// The engine could not checkpoint a container.
    #[error("{what}")]
    Checkpoint {
        what: String,
        #[source]
        source: stasis_engine::DumpError,
    },
    /// The engine could not restore a container.
    #[error("{what}")]
    Restore {
        what: String,
        #[source]
        source: stasis_engine::RestoreError,
    },
    /// The network layer failed.
    #[error("{what}")]
    Network {
        what: String,
        #[source]
        source: crate::network::NetError,
    },
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

/// Adds "what" context to io results: `fs::read(p).ctx(|| format!("reading {p}"))`.
pub trait Ctx<T> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T> Ctx<T> for io::Result<T> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|source| RuntimeError::Io { what: what().into(), source })
    }
}

impl<T> Ctx<T> for std::result::Result<T, crate::network::NetError> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|source| RuntimeError::Network { what: what().into(), source })
    }
}

pub use stasis_engine::error::one_line;
