//! The network lock of a container whose TCP connections are checkpointed:
//! while a connection has no socket (between the dump's kill and the
//! restore's repair), a packet from the peer would be answered with a RST
//! and the peer's connection would be gone. The lock is a table of our own
//! in the container's network namespace whose input and output hooks drop
//! everything; the peer retransmits once it is lifted.
//!
//! Every lock has a table of its own (`stasis_lock_<pid>_<n>`): an open
//! table is removed later, off the clock, and that removal must never hit
//! the lock of a checkpoint that started meanwhile (it did: a restore's
//! monitor removed the lock of the next checkpoint while its connections
//! had no socket, and the peer got RSTs).

use super::cmd::run;
use super::NetError;
use stasis_sys::ns::ThreadNetns;

/// Prefix of the lock tables' names.
const TABLE: &str = "stasis_lock";

/// A name no other lock of this host has now: our pid and a counter.
fn new_table_name() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{TABLE}_{}_{n}", std::process::id())
}

/// The lock: a table whose hooks drop every packet unless set `open` holds
/// its family. Unlocking only *adds* elements: nf_tables commits that free
/// something (deleting a table, a rule, a set element) wait for an RCU
/// grace period, 15-30 ms here, which would hold the restored connections
/// back; the open table is removed afterwards, off the clock.
fn lock_script(t: &str) -> String {
    format!(
        "create table inet {t}\n\
         add set inet {t} open {{ type nf_proto; }}\n\
         add chain inet {t} input {{ type filter hook input priority -300; policy accept; }}\n\
         add chain inet {t} output {{ type filter hook output priority -300; policy accept; }}\n\
         add rule inet {t} input meta nfproto != @open drop\n\
         add rule inet {t} output meta nfproto != @open drop\n"
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
    /// This lock's table.
    table: String,
    active: bool,
}

/// A lock lifted but not removed yet: its table, open, stays until
/// [`remove`](OpenLock::remove).
pub struct OpenLock {
    pid: i32,
    id: String,
    table: String,
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
        let table = new_table_name();
        nft_in(id, pid, "locking the network", &lock_script(&table))?;
        log::debug!("network: locked container {id} (pid {pid}, table {table})");
        Ok(NetLock { pid, id: id.to_string(), table, active: true })
    }

    /// Lets packets through again; the table stays, open, until
    /// [`OpenLock::remove`].
    pub fn unlock(mut self) -> Result<OpenLock, NetError> {
        self.active = false;
        self.open()?;
        log::debug!("network: unlocked container {}", self.id);
        Ok(OpenLock { pid: self.pid, id: self.id.clone(), table: std::mem::take(&mut self.table) })
    }

    fn open(&self) -> Result<(), NetError> {
        let script = format!("add element inet {} open {{ ipv4, ipv6 }}\n", self.table);
        nft_in(&self.id, self.pid, "unlocking the network", &script)
    }

    /// Forgets the lock without lifting it: the namespace went away with
    /// the container's last process, and the lock with it.
    pub fn gone(mut self) {
        self.active = false;
    }
}

/// Deletes lock table `table` of container `id` (in the namespace of `pid`).
fn delete_table(id: &str, pid: i32, table: &str) -> Result<(), NetError> {
    nft_in(id, pid, "removing the network lock", &format!("delete table inet {table}\n"))
}

impl OpenLock {
    /// Removes the table; slow (an RCU grace period), so called once
    /// nothing waits. Only this lock's table: a newer lock stays.
    pub fn remove(self) {
        if let Err(e) = delete_table(&self.id, self.pid, &self.table) {
            log::debug!("network: {e}");
        }
    }
}

/// A lock still held when dropped (the operation failed): removed, table
/// and all; should that fail, at least opened.
impl Drop for NetLock {
    fn drop(&mut self) {
        if self.active && delete_table(&self.id, self.pid, &self.table).is_err() {
            let _ = self.open();
        }
    }
}
