//! The network lock of a container whose TCP connections are checkpointed:
//! while a connection has no socket (between the dump's kill and the
//! restore's repair), a packet from the peer would be answered with a RST
//! and the peer's connection would be gone. The lock is a table of our own
//! in the container's network namespace whose input and output hooks drop
//! everything; the peer retransmits once it is lifted.

use super::cmd::run;
use super::NetError;
use stasis_sys::ns::ThreadNetns;

const TABLE: &str = "stasis_lock";

/// A locked container network; unlocked on drop.
pub struct NetLock {
    /// The container's init (its network namespace).
    pid: i32,
    id: String,
    active: bool,
}

/// Runs `nft` in the network namespace of `pid` (our thread joins it, and
/// the child inherits it: no nsenter).
fn nft_in(id: &str, pid: i32, what: &str, script: &str) -> Result<(), NetError> {
    let _ns = ThreadNetns::enter(pid).map_err(|e| NetError::NoProcess { id: id.into(), pid, reason: e.to_string() })?;
    run("nft", &["-f", "-"], Some(script)).map(drop).map_err(|f| f.into_err(id, what))
}

impl NetLock {
    /// Drops every packet in and out of the network namespace of `pid`
    /// (container `id`).
    pub fn lock(id: &str, pid: i32) -> Result<NetLock, NetError> {
        let script = format!(
            "table inet {TABLE} {{\n\
             chain input {{ type filter hook input priority -300; policy drop; }}\n\
             chain output {{ type filter hook output priority -300; policy drop; }}\n}}\n"
        );
        nft_in(id, pid, "locking the network", &script)?;
        log::debug!("network: locked container {id} (pid {pid})");
        Ok(NetLock { pid, id: id.to_string(), active: true })
    }

    /// Lets packets through again.
    pub fn unlock(mut self) -> Result<(), NetError> {
        self.active = false;
        nft_in(&self.id, self.pid, "unlocking the network", &format!("delete table inet {TABLE}\n"))?;
        log::debug!("network: unlocked container {}", self.id);
        Ok(())
    }

    /// Forgets the lock without lifting it: the namespace went away with
    /// the container's last process, and the lock with it.
    pub fn gone(mut self) {
        self.active = false;
    }
}

impl Drop for NetLock {
    fn drop(&mut self) {
        if self.active {
            let _ = nft_in(&self.id, self.pid, "unlocking the network", &format!("delete table inet {TABLE}\n"));
        }
    }
}
