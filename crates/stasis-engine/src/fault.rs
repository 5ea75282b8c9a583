//! Fault injection for tests: `STASIS_FAULT=<point>` makes the named step
//! fail, so tests can prove that every error path cleans up (the tree keeps
//! running, no complete-looking image dir, nothing half-restored).

use std::io;

/// Fails with an error if `STASIS_FAULT` names `point`.
pub fn check(point: &str) -> io::Result<()> {
    match std::env::var("STASIS_FAULT") {
        Ok(p) if p == point => Err(io::Error::other(format!("injected fault at {point}"))),
        _ => Ok(()),
    }
}
