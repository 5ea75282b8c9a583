//! Container networking: one bridge (`stasis0`) on a private /16, a veth
//! pair per container, an IP address recorded by IPAM, published ports by
//! nftables DNAT in one table of ours (`stasis`), masquerade for the way out.
//! Everything a container added is removed with it.
//!
//! "The host" is the network namespace the calling process runs in: a second
//! host is simply stasis run in another netns (`ip netns exec hostB stasis
//! --root ...`), with its own bridge, table and `--root` (IPAM state).
//!
//! Layout of the nftables table `ip stasis`:
//! - `prerouting` (nat, dstnat) and `output` (nat, -100): `fib daddr type
//!   local jump ports`, so only traffic addressed to one of the host's own
//!   addresses (including 127.0.0.1, thanks to `route_localnet` on the
//!   bridge) is translated;
//! - `ports`: one `jump ctr-<id>` per container, commented `stasis:<id>`;
//! - `ctr-<id>`: that container's DNAT rules;
//! - `postrouting` (nat, srcnat): masquerade of the subnet going elsewhere,
//!   of hairpin (container → published port → container) traffic, and of
//!   127.0.0.0/8 sources leaving through the bridge.
//!
//! Checkpoint/restore (issue 7): [`Network::unpublish`] and
//! [`Network::publish`] remove and re-add exactly one container's rules for
//! the same ip/ports, and nothing here ever flushes conntrack, so entries of
//! established connections through a published port survive a detach/attach
//! of the same IP.

mod cmd;
mod ipam;
mod link;
pub mod lock;
mod nft;
mod ports;

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use link::{default_mac, veth_name};
pub use ports::parse_publish;

/// Name of the bridge every container's veth is enslaved to.
pub const BRIDGE: &str = "stasis0";
/// The bridge's address, containers' default gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
/// The containers' subnet (podman uses 10.88.0.0/16; we avoid it).
pub const SUBNET: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 0);
/// Prefix length of [`SUBNET`].
pub const PREFIX_LEN: u8 = 16;
/// Our nftables table (family `ip`).
pub const TABLE: &str = "stasis";

/// Errors of container networking. Each names what it is about.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("bad port mapping {spec:?}: {reason} (expected [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp])")]
    BadPublish { spec: String, reason: String },
    #[error(
        "bad MAC address {mac:?} for container {id}: expected a unicast MAC, six hex bytes like 0a:58:0a:59:00:02"
    )]
    BadMac { id: String, mac: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("network state {path} is corrupt: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("no free address left in {SUBNET}/{PREFIX_LEN} for container {id}")]
    SubnetFull { id: String },
    #[error("address {ip} for container {id} is not usable: {reason}")]
    BadIp { id: String, ip: Ipv4Addr, reason: String },
    #[error("address {ip} requested by container {id} is already taken by container {owner}")]
    IpTaken { id: String, ip: Ipv4Addr, owner: String },
    #[error("cannot publish {port} for container {id}: host port {host_port}/{proto} is already published by container {owner}")]
    PortPublished { id: String, port: PortMapping, host_port: u16, proto: Proto, owner: String },
    #[error("cannot publish {port} for container {id}: host port {host_port}/{proto} is in use by a host process ({socket})")]
    PortInUse { id: String, port: PortMapping, host_port: u16, proto: Proto, socket: String },
    #[error("container {id}: process {pid} has no network namespace of its own (/proc/{pid}/ns/net): {reason}")]
    NoProcess { id: String, pid: i32, reason: String },
    #[error("container {id}: {what}: `{cmd}` failed: {stderr}")]
    Command { id: String, what: String, cmd: String, stderr: String },
}

/// Transport protocol of a published port.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The protocol's name as nft and /proc spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `-p [HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PortMapping {
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        write!(f, "{}:{}/{}", self.host_port, self.container_port, self.proto)
    }
}

/// What [`Network::attach`] set up; keep it with the container (and in a
/// checkpoint's `network.status`) to detach or re-create the same network.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct NetState {
    pub ip: Ipv4Addr,
    pub mac: String,
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
    pub host_veth: String,
    pub ports: Vec<PortMapping>,
}

/// The host's container network, with its IPAM state under `ROOT/network/`.
#[derive(Debug, Clone)]
pub struct Network {
    /// The IPAM state of this network namespace's bridge.
    dir: PathBuf,
    /// The store whose containers this handle connects.
    root: PathBuf,
}

impl Network {
    /// Opens (creating if needed) the IPAM state of the bridge of our
    /// network namespace, for the containers of the store at `root`.
    /// Every store on this host shares the bridge, so they share one IPAM
    /// (in `/run/stasis-net/NETNS-INODE/`); each lease names its store and
    /// is dropped once that store no longer has the container. Touches
    /// neither links nor rules: the bridge and table are created on the
    /// first [`attach`](Network::attach).
    pub fn open(root: &Path) -> Result<Network, NetError> {
        use std::os::unix::fs::MetadataExt;
        let ns = Path::new("/proc/thread-self/ns/net");
        let ino = std::fs::metadata(ns).map_err(|source| NetError::Io { path: ns.into(), source })?.ino();
        let dir = PathBuf::from(format!("/run/stasis-net/{ino}"));
        std::fs::create_dir_all(&dir).map_err(|source| NetError::Io { path: dir.clone(), source })?;
        Ok(Network { dir, root: root.to_path_buf() })
    }

    /// Reserves an address for container `id`: exactly `want`, or the lowest
    /// free one in the subnet. Idempotent: a container that already holds an
    /// address keeps it (unless `want` names another free one, which then
    /// replaces it).
    pub fn allocate(&self, id: &str, want: Option<Ipv4Addr>) -> Result<Ipv4Addr, NetError> {
        // An address held by a container checkpointed a moment ago (say on
        // another store sharing this network: a migration's target) is
        // released by its monitor's teardown, ~50 ms later: wait for that,
        // not for a running owner.
        let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let mut db = ipam::Locked::open(&self.dir, &self.root)?;
            match db.state.allocate(id, want) {
                Err(NetError::IpTaken { owner, .. })
                    if db.state.releasing(&owner) && std::time::Instant::now() < end =>
                {
                    drop(db);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => {
                    let ip = r?;
                    db.save()?;
                    log::debug!("network: container {id} holds {ip}");
                    return Ok(ip);
                }
            }
        }
    }

    /// The address container `id` holds, if any.
    pub fn allocated(&self, id: &str) -> Result<Option<Ipv4Addr>, NetError> {
        let db = ipam::Locked::open(&self.dir, &self.root)?;
        Ok(db.state.containers.get(id).map(|r| r.ip))
    }

    /// Connects the network namespace of `pid` (the container's init) to the
    /// bridge: veth pair, `eth0` with `ip`/16 and `mac` (default: derived from
    /// the IP, see [`default_mac`]), default route, `lo` up, and publishes
    /// `ports`. On error nothing of this call is left behind.
    pub fn attach(
        &self,
        id: &str,
        pid: i32,
        ip: Ipv4Addr,
        mac: Option<&str>,
        ports: &[PortMapping],
    ) -> Result<NetState, NetError> {
        let mac = match mac {
            Some(m) => link::normalize_mac(m).ok_or_else(|| NetError::BadMac { id: id.into(), mac: m.into() })?,
            None => default_mac(ip),
        };
        let no_netns = |reason: String| NetError::NoProcess { id: id.into(), pid, reason };
        match (std::fs::read_link(format!("/proc/{pid}/ns/net")), std::fs::read_link("/proc/self/ns/net")) {
            (Err(e), _) => return Err(no_netns(e.to_string())),
            (Ok(theirs), Ok(ours)) if theirs == ours => {
                return Err(no_netns("it is in the host's network namespace (ours)".into()));
            }
            _ => {}
        }
        let mut db = ipam::Locked::open(&self.dir, &self.root)?;
        db.state.claim(id, ip)?;
        let table = nft::Table::load(id)?;
        self.check_ports(&db.state, &table, id, ports)?;

        link::ensure_bridge(id)?;
        nft::ensure_base(id, &table)?;
        let host_veth = veth_name(id);
        link::create_veth(id, pid, &host_veth, ip, &mac)?;
        if let Err(e) = nft::publish(id, ip, ports, &table) {
            let _ = link::delete_veth(id, &host_veth);
            return Err(e);
        }
        if let Some(rec) = db.state.containers.get_mut(id) {
            rec.ports = ports.to_vec();
        }
        if let Err(e) = db.save() {
            let _ = nft::unpublish(id);
            let _ = link::delete_veth(id, &host_veth);
            return Err(e);
        }
        log::debug!("network: attached container {id} ({ip}, {mac}, {host_veth}) ports {ports:?}");
        Ok(NetState { ip, mac, gateway: GATEWAY, prefix_len: PREFIX_LEN, host_veth, ports: ports.to_vec() })
    }

    /// Removes the container's veth pair and its published-port rules.
    /// Idempotent; keeps the address (see [`release`](Network::release)) and
    /// never touches conntrack entries.
    pub fn detach(&self, id: &str, state: &NetState) -> Result<(), NetError> {
        let mut db = ipam::Locked::open(&self.dir, &self.root)?;
        nft::unpublish(id)?;
        link::delete_veth(id, &state.host_veth)?;
        if let Some(rec) = db.state.containers.get_mut(id) {
            if !rec.ports.is_empty() {
                rec.ports.clear();
                db.save()?;
            }
        }
        log::debug!("network: detached container {id} ({})", state.host_veth);
        Ok(())
    }

    /// Frees container `id`'s address. Idempotent.
    pub fn release(&self, id: &str) -> Result<(), NetError> {
        let mut db = ipam::Locked::open(&self.dir, &self.root)?;
        if db.state.containers.remove(id).is_some() {
            db.save()?;
            log::debug!("network: released the address of container {id}");
        }
        Ok(())
    }

    /// (Re-)publishes `ports` of container `id` at `ip` without touching its
    /// veth: for restore, where the rules were removed by
    /// [`unpublish`](Network::unpublish) and conntrack entries were kept.
    /// Replaces whatever rules the container had.
    pub fn publish(&self, id: &str, ip: Ipv4Addr, ports: &[PortMapping]) -> Result<(), NetError> {
        let mut db = ipam::Locked::open(&self.dir, &self.root)?;
        db.state.claim(id, ip)?;
        let table = nft::Table::load(id)?;
        self.check_ports(&db.state, &table, id, ports)?;
        nft::ensure_base(id, &table)?;
        nft::publish(id, ip, ports, &table)?;
        if let Some(rec) = db.state.containers.get_mut(id) {
            rec.ports = ports.to_vec();
        }
        db.save()
    }

    /// Removes container `id`'s published-port rules only. Idempotent. The
    /// ports stay recorded as the container's, so no other container can take
    /// them meanwhile.
    pub fn unpublish(&self, id: &str) -> Result<(), NetError> {
        let _db = ipam::Locked::open(&self.dir, &self.root)?;
        nft::unpublish(id)
    }

    /// Refuses ports that repeat within `ports`, that another container
    /// published (in our IPAM or in the live table, which other roots in this
    /// netns share), or that a host process listens on.
    fn check_ports(
        &self,
        db: &ipam::State,
        table: &nft::Table,
        id: &str,
        ports: &[PortMapping],
    ) -> Result<(), NetError> {
        for (i, p) in ports.iter().enumerate() {
            let published = |owner: String| NetError::PortPublished {
                id: id.into(),
                port: p.clone(),
                host_port: p.host_port,
                proto: p.proto,
                owner,
            };
            if ports[..i].iter().any(|q| ports::overlap(p, q)) {
                return Err(published(format!("{id} (twice in its own list)")));
            }
            if let Some(owner) = db.port_owner(id, p) {
                return Err(published(owner.to_string()));
            }
            if let Some(owner) = table.port_owner(id, p) {
                return Err(published(owner));
            }
            if let Some(socket) = ports::host_listener(p) {
                return Err(NetError::PortInUse {
                    id: id.into(),
                    port: p.clone(),
                    host_port: p.host_port,
                    proto: p.proto,
                    socket,
                });
            }
        }
        Ok(())
    }
}
