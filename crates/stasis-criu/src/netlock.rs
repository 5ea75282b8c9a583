//! The network lock of a TCP dump or restore (CRIU's `network-lock`):
//! while established connections are dumped, or their sockets not yet
//! restored, the tree's network namespace drops every packet that is not
//! on loopback, so that no peer is answered with a reset by a socket that
//! is gone or not back yet. The peers retransmit; the restored sockets
//! answer. One nftables table inside that namespace, entered by nsenter.

use crate::CriuError;
use std::io::Write;
use std::process::{Command, Stdio};

const TABLE: &str = "stasis_criu_lock";

/// A locked network namespace (named by a path such as
/// `/proc/PID/ns/net`); unlocked on [`NetLock::unlock`] only: a dumped
/// tree's namespace stays locked until its runtime removes it.
pub struct NetLock {
    ns: String,
}

fn nft_in(ns: &str, script: &str) -> Result<(), CriuError> {
    let what = || format!("nft in the network namespace {ns}");
    let mut child = Command::new("nsenter")
        .arg(format!("--net={ns}"))
        .args(["nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(CriuError::io(what()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(CriuError::io(what()))?;
    }
    let out = child.wait_with_output().map_err(CriuError::io(what()))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().replace('\n', " ");
        return Err(CriuError::Io { what: what(), source: std::io::Error::other(msg) });
    }
    Ok(())
}

impl NetLock {
    /// Drops all but loopback traffic in the namespace at `ns`.
    pub fn lock(ns: String) -> Result<NetLock, CriuError> {
        let script = format!(
            "table inet {TABLE} {{\n\
             chain input {{ type filter hook input priority -300; policy drop; iif lo accept; }}\n\
             chain output {{ type filter hook output priority -300; policy drop; oif lo accept; }}\n\
             }}\n"
        );
        nft_in(&ns, &script)?;
        log::debug!("network of {ns} locked");
        Ok(NetLock { ns })
    }

    /// Lets traffic through again.
    pub fn unlock(self) -> Result<(), CriuError> {
        nft_in(&self.ns, &format!("delete table inet {TABLE}\n"))?;
        log::debug!("network of {} unlocked", self.ns);
        Ok(())
    }
}
