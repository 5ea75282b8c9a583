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

/// The lock: a table whose hooks drop every packet unless set `open` holds
/// its family. Unlocking only *adds* elements: nf_tables commits that free
/// something (deleting a table, a rule, a set element) wait for an RCU
/// grace period, 15-30 ms here, which would hold the restored connections
/// back; the open table is removed afterwards, off the clock.
fn lock_script() -> String {
    format!(
        "create table inet {TABLE}\n\
         add set inet {TABLE} open {{ type nf_proto; }}\n\
         add chain inet {TABLE} input {{ type filter hook input priority -300; policy accept; }}\n\
         add chain inet {TABLE} output {{ type filter hook output priority -300; policy accept; }}\n\
         add rule inet {TABLE} input meta nfproto != @open drop\n\
         add rule inet {TABLE} output meta nfproto != @open drop\n"
    )
}

/// Puts this network namespace's conntrack into liberal TCP window tracking
/// (`net.netfilter.nf_conntrack_tcp_be_liberal=1`, what kube-proxy can set
/// too). The first packets of a restored connection can fall outside the
/// window conntrack remembers; marked INVALID they skip NAT, reach the host
/// untranslated, and the host's RST kills the connection (about one
/// 100-connection restore in ten here without it).
pub fn relax_conntrack(id: &str) -> Result<(), NetError> {
    super::link::write_sysctl(id, "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal", "1")
}

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
        let what = "locking the network";
        if nft_in(id, pid, what, &lock_script()).is_err() {
            // A lock table left open by an earlier restore: replace it.
            nft_in(id, pid, what, &format!("delete table inet {TABLE}\n{}", lock_script()))?;
        }
        log::debug!("network: locked container {id} (pid {pid})");
        Ok(NetLock { pid, id: id.to_string(), active: true })
    }

    /// Lets packets through again (the table stays, open: see
    /// [`remove`](NetLock::remove)).
    pub fn unlock(mut self) -> Result<(), NetError> {
        self.active = false;
        self.open()?;
        log::debug!("network: unlocked container {}", self.id);
        Ok(())
    }

    fn open(&self) -> Result<(), NetError> {
        let script = format!("add element inet {TABLE} open {{ ipv4, ipv6 }}\n");
        nft_in(&self.id, self.pid, "unlocking the network", &script)
    }

    /// Removes the (open) lock table of container `id`, whose init is
    /// `pid`; slow (an RCU grace period), so called once nothing waits.
    pub fn remove(id: &str, pid: i32) {
        if let Err(e) = nft_in(id, pid, "removing the network lock", &format!("delete table inet {TABLE}\n")) {
            log::debug!("network: {e}");
        }
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
            let _ = self.open();
        }
    }
}
