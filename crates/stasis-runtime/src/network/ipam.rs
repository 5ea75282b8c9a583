//! IPAM: which container holds which address of the subnet and which host
//! ports it publishes. One JSON file per network namespace (the bridge's),
//! `/run/stasis-net/INO/ipam.json`, shared by every store, read and written
//! under an exclusive flock of `ipam.lock` beside it and replaced atomically
//! (write a temporary file, rename). Each lease records its store's root;
//! leases of containers their store no longer has are dropped on read.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ports, NetError, PortMapping, GATEWAY, PREFIX_LEN, SUBNET};

const STATE_FILE: &str = "ipam.json";
const LOCK_FILE: &str = "ipam.lock";

/// One container's lease.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(super) struct Record {
    pub ip: Ipv4Addr,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// The store (`--root`) of the container.
    #[serde(default)]
    pub root: Option<PathBuf>,
}

/// The whole IPAM state of one root.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(super) struct State {
    pub version: u32,
    pub subnet: String,
    pub containers: BTreeMap<String, Record>,
}

impl Default for State {
    fn default() -> State {
        State { version: 1, subnet: format!("{SUBNET}/{PREFIX_LEN}"), containers: BTreeMap::new() }
    }
}

fn subnet_bounds() -> (u32, u32) {
    let net = u32::from(SUBNET);
    let size = 1u32 << (32 - u32::from(PREFIX_LEN));
    (net, net + size - 1)
}

/// Why `ip` cannot be given to a container, if it cannot.
pub(super) fn unusable(ip: Ipv4Addr) -> Option<&'static str> {
    let (net, bcast) = subnet_bounds();
    let v = u32::from(ip);
    if v < net || v > bcast {
        Some("it is outside the container subnet 10.89.0.0/16")
    } else if v == net {
        Some("it is the subnet's network address")
    } else if v == bcast {
        Some("it is the subnet's broadcast address")
    } else if ip == GATEWAY {
        Some("it is the bridge's (gateway's) address")
    } else {
        None
    }
}

impl State {
    /// The container holding `ip`, if any.
    pub fn owner_of(&self, ip: Ipv4Addr) -> Option<&str> {
        self.containers.iter().find(|(_, r)| r.ip == ip).map(|(id, _)| id.as_str())
    }

    /// Whether container `id` holds its lease only until its monitor's
    /// teardown releases it: it was checkpointed (and stopped) a moment ago.
    pub fn releasing(&self, id: &str) -> bool {
        self.containers
            .get(id)
            .and_then(|r| r.root.as_ref())
            .is_some_and(|root| root.join("containers").join(id).join(crate::store::CHECKPOINTED).exists())
    }

    /// See [`Network::allocate`](super::Network::allocate).
    pub fn allocate(&mut self, id: &str, want: Option<Ipv4Addr>) -> Result<Ipv4Addr, NetError> {
        match want {
            Some(ip) => {
                self.claim(id, ip)?;
                Ok(ip)
            }
            None => {
                if let Some(r) = self.containers.get(id) {
                    return Ok(r.ip);
                }
                let taken: std::collections::HashSet<u32> = self.containers.values().map(|r| u32::from(r.ip)).collect();
                let (net, bcast) = subnet_bounds();
                let ip = (net + 1..bcast)
                    .map(Ipv4Addr::from)
                    .find(|ip| unusable(*ip).is_none() && !taken.contains(&u32::from(*ip)))
                    .ok_or_else(|| NetError::SubnetFull { id: id.into() })?;
                self.containers.insert(id.into(), Record { ip, ports: Vec::new(), root: None });
                Ok(ip)
            }
        }
    }

    /// Makes `ip` container `id`'s address: fine if it already is or is free
    /// (then it replaces the container's previous one), an error if another
    /// container holds it or it is not a container address.
    pub fn claim(&mut self, id: &str, ip: Ipv4Addr) -> Result<(), NetError> {
        if let Some(reason) = unusable(ip) {
            return Err(NetError::BadIp { id: id.into(), ip, reason: reason.into() });
        }
        if let Some(owner) = self.owner_of(ip) {
            if owner != id {
                return Err(NetError::IpTaken { id: id.into(), ip, owner: owner.into() });
            }
            return Ok(());
        }
        self.containers.entry(id.into()).or_insert(Record { ip, ports: Vec::new(), root: None }).ip = ip;
        Ok(())
    }

    /// Another container that publishes a host port overlapping `p`.
    pub fn port_owner(&self, id: &str, p: &PortMapping) -> Option<&str> {
        self.containers
            .iter()
            .filter(|(other, _)| other.as_str() != id)
            .find(|(_, r)| r.ports.iter().any(|q| ports::overlap(p, q)))
            .map(|(other, _)| other.as_str())
    }
}

/// The state, read under the lock; the lock is held until this is dropped.
pub(super) struct Locked {
    _lock: File,
    dir: PathBuf,
    root: PathBuf,
    pub state: State,
}

impl Locked {
    /// Takes the lock of `dir` (blocking) and reads the state, dropping
    /// stale leases; new leases are made for the store at `root`.
    pub fn open(dir: &Path, root: &Path) -> Result<Locked, NetError> {
        let lock_path = dir.join(LOCK_FILE);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| NetError::Io { path, source }
        };
        let lock =
            OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io(&lock_path))?;
        // File::lock is flock(LOCK_EX) (std since 1.89).
        lock.lock().map_err(io(&lock_path))?;
        let path = dir.join(STATE_FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| NetError::State { path: path.clone(), reason: e.to_string() })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(NetError::Io { path, source: e }),
        };
        let mut state: State = state;
        // A lease is stale once its store exists but no longer has the
        // container (removed, or its store wiped while it held the lease).
        state.containers.retain(|id, r| {
            r.root.as_ref().is_none_or(|root| {
                let all = root.join("containers");
                !all.is_dir() || all.join(id).exists()
            })
        });
        Ok(Locked { _lock: lock, dir: dir.to_path_buf(), root: root.to_path_buf(), state })
    }

    /// Writes the state atomically.
    pub fn save(&mut self) -> Result<(), NetError> {
        for r in self.state.containers.values_mut() {
            r.root.get_or_insert_with(|| self.root.clone());
        }
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| NetError::Io { path: p, source }
        };
        let mut bytes = serde_json::to_vec_pretty(&self.state)
            .map_err(|e| NetError::State { path: path.clone(), reason: e.to_string() })?;
        bytes.push(b'\n');
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        drop(f);
        // Atomic (rename) but not fsynced: the addresses matter while
        // containers run, and none runs after a power loss; a container's
        // own address is kept durably in its config. Two fsyncs here cost
        // ~10 ms per start or restore on this disk.
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Proto;

    fn pm(host_port: u16) -> PortMapping {
        PortMapping { host_ip: None, host_port, container_port: 80, proto: Proto::Tcp }
    }

    #[test]
    fn allocates_lowest_free_and_is_idempotent() {
        let mut s = State::default();
        assert_eq!(s.allocate("a", None).unwrap(), Ipv4Addr::new(10, 89, 0, 2));
        assert_eq!(s.allocate("b", None).unwrap(), Ipv4Addr::new(10, 89, 0, 3));
        assert_eq!(s.allocate("a", None).unwrap(), Ipv4Addr::new(10, 89, 0, 2));
        s.containers.remove("a");
        assert_eq!(s.allocate("c", None).unwrap(), Ipv4Addr::new(10, 89, 0, 2));
        assert_eq!(s.allocate("d", None).unwrap(), Ipv4Addr::new(10, 89, 0, 4));
    }

    #[test]
    fn wanted_address() {
        let mut s = State::default();
        let want = Ipv4Addr::new(10, 89, 7, 7);
        assert_eq!(s.allocate("a", Some(want)).unwrap(), want);
        assert_eq!(s.allocate("a", Some(want)).unwrap(), want);
        let e = s.allocate("b", Some(want)).unwrap_err().to_string();
        assert!(e.contains("10.89.7.7") && e.contains("taken by container a") && e.contains("b"), "{e}");
        // Moving a to another free address frees the old one.
        s.allocate("a", Some(Ipv4Addr::new(10, 89, 7, 8))).unwrap();
        assert_eq!(s.allocate("b", Some(want)).unwrap(), want);
        for bad in [GATEWAY, SUBNET, Ipv4Addr::new(10, 89, 255, 255), Ipv4Addr::new(10, 88, 0, 5)] {
            let e = s.allocate("c", Some(bad)).unwrap_err();
            assert!(matches!(e, NetError::BadIp { .. }), "{bad}: {e}");
        }
        assert!(!s.containers.contains_key("c"));
    }

    #[test]
    fn full_subnet() {
        let mut s = State::default();
        let (net, bcast) = subnet_bounds();
        for (i, v) in (net + 2..bcast).enumerate() {
            s.containers.insert(format!("c{i}"), Record { ip: Ipv4Addr::from(v), ports: vec![], root: None });
        }
        assert!(matches!(s.allocate("x", None), Err(NetError::SubnetFull { .. })));
        s.containers.remove("c100");
        assert_eq!(s.allocate("x", None).unwrap(), Ipv4Addr::from(net + 102));
    }

    #[test]
    fn port_owners() {
        let mut s = State::default();
        s.allocate("a", None).unwrap();
        s.containers.get_mut("a").unwrap().ports = vec![pm(8080)];
        assert_eq!(s.port_owner("b", &pm(8080)), Some("a"));
        assert_eq!(s.port_owner("a", &pm(8080)), None);
        assert_eq!(s.port_owner("b", &pm(8081)), None);
        let udp = PortMapping { proto: Proto::Udp, ..pm(8080) };
        assert_eq!(s.port_owner("b", &udp), None);
    }

    #[test]
    fn locked_round_trip() {
        let dir = std::env::temp_dir().join(format!("stasis-ipam-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        {
            let mut db = Locked::open(&dir, &dir).unwrap();
            db.state.allocate("a", None).unwrap();
            db.save().unwrap();
        }
        let db = Locked::open(&dir, &dir).unwrap();
        assert_eq!(db.state.containers["a"].ip, Ipv4Addr::new(10, 89, 0, 2));
        drop(db);
        std::fs::write(dir.join(STATE_FILE), b"{not json").unwrap();
        let e = Locked::open(&dir, &dir).err().unwrap().to_string();
        assert!(e.contains("ipam.json") && e.contains("corrupt"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_allocations_are_unique() {
        let dir = std::env::temp_dir().join(format!("stasis-ipam-race-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    for i in 0..20 {
                        let mut db = Locked::open(&dir, &dir).unwrap();
                        db.state.allocate(&format!("t{t}-{i}"), None).unwrap();
                        db.save().unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let db = Locked::open(&dir, &dir).unwrap();
        let ips: std::collections::HashSet<_> = db.state.containers.values().map(|r| r.ip).collect();
        assert_eq!((db.state.containers.len(), ips.len()), (160, 160));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
