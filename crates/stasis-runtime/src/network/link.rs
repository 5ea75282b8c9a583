//! Links: the `stasis0` bridge (with its sysctls) and one veth pair per
//! container, configured with iproute2 (`ip -batch`, and `nsenter --net`
//! for the container's side).

use std::net::Ipv4Addr;

use super::cmd::run;
use super::{NetError, BRIDGE, GATEWAY, PREFIX_LEN};

/// The host-side veth name of container `id`: `vs` + 10 hex characters (the
/// id's first ten if it is hex, else a hash of it), 12 characters in all.
pub fn veth_name(id: &str) -> String {
    let lower = id.to_ascii_lowercase();
    if lower.len() >= 10 && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        return format!("vs{}", &lower[..10]);
    }
    // FNV-1a: stable across runs and versions, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("vs{:010x}", h & 0xff_ffff_ffff)
}

/// The MAC of an interface with address `ip` when none is given:
/// `0a:58:` + the four address bytes, as the CNI bridge plugin (podman's
/// former network stack) derives it. Locally administered, unicast, and the
/// same on every host, so a restored or migrated container keeps it.
pub fn default_mac(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("0a:58:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// `s` as a lowercase, colon-separated unicast MAC, or `None` if it is not one.
pub(super) fn normalize_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
        return None;
    }
    let bytes: Vec<u8> = parts.iter().map(|p| u8::from_str_radix(p, 16)).collect::<Result<_, _>>().ok()?;
    if bytes[0] & 1 != 0 || bytes.iter().all(|b| *b == 0) {
        return None;
    }
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
}

pub(super) fn write_sysctl(id: &str, path: &str, value: &str) -> Result<(), NetError> {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(path, value).map_err(|source| {
        log::warn!("network: container {id}: cannot set {path} = {value}");
        NetError::Io { path: path.into(), source }
    })
}

/// Whether `ip addr show dev BRIDGE` output shows it up with our address.
fn bridge_ready(show: &str) -> bool {
    let up = show
        .lines()
        .next()
        .and_then(|l| l.split_once('<'))
        .and_then(|(_, rest)| rest.split_once('>'))
        .is_some_and(|(flags, _)| flags.split(',').any(|f| f == "UP"));
    up && show.contains(&format!("inet {GATEWAY}/{PREFIX_LEN} "))
}

/// Creates the bridge if needed (fixed MAC, so the gateway's MAC is the
/// same everywhere and never changes as ports come and go), gives it the
/// gateway address, brings it up, and enables forwarding and
/// `route_localnet` (needed to DNAT 127.0.0.1 to a container).
pub(super) fn ensure_bridge(id: &str) -> Result<(), NetError> {
    // Fast path, no `ip` run: the bridge exists, is up and has its address
    // (ipv4's `conf` entry appears with the first address).
    let sys = format!("/sys/class/net/{BRIDGE}/flags");
    let up = std::fs::read_to_string(&sys)
        .ok()
        .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
        .is_some_and(|f| f & 1 != 0);
    let configured = up && std::path::Path::new(&format!("/proc/sys/net/ipv4/conf/{BRIDGE}")).exists();
    if !configured && !run("ip", &["addr", "show", "dev", BRIDGE], None).is_ok_and(|out| bridge_ready(&out)) {
        let mac = default_mac(GATEWAY);
        let batch = format!(
            "link add {BRIDGE} address {mac} type bridge\naddr add {GATEWAY}/{PREFIX_LEN} dev {BRIDGE}\nlink set {BRIDGE} up\n"
        );
        // -force: go on past "exists" errors; the check below is the verdict.
        let created = run("ip", &["-force", "-batch", "-"], Some(&batch));
        let show = run("ip", &["addr", "show", "dev", BRIDGE], None);
        if !show.as_ref().is_ok_and(|out| bridge_ready(out)) {
            let stderr = match (created, show) {
                (Err(f), _) => f.stderr,
                (Ok(_), Err(f)) => f.stderr,
                (Ok(_), Ok(out)) => format!("bridge is not up with {GATEWAY}/{PREFIX_LEN}: {}", out.trim()),
            };
            return Err(NetError::Command {
                id: id.into(),
                what: format!("creating bridge {BRIDGE}"),
                cmd: format!("ip -force -batch - <<< {}", batch.trim_end().replace('\n', "; ")),
                stderr,
            });
        }
        log::info!("network: bridge {BRIDGE} up with {GATEWAY}/{PREFIX_LEN}");
    }
    write_sysctl(id, "/proc/sys/net/ipv4/ip_forward", "1")?;
    write_sysctl(id, &format!("/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet"), "1")?;
    Ok(())
}

fn link_exists(name: &str) -> bool {
    run("ip", &["link", "show", "dev", name], None).is_ok()
}

/// Creates the veth pair `host_veth` (in the bridge, up) / `eth0` (in the
/// netns of `pid`, with `mac`, `ip`/16, default route via the gateway, and
/// `lo` up). On error, nothing is left.
pub(super) fn create_veth(id: &str, pid: i32, host_veth: &str, ip: Ipv4Addr, mac: &str) -> Result<(), NetError> {
    // The neighbour flush forgets a previous holder of this address (its MAC
    // may differ), which would otherwise blackhole traffic for seconds.
    let batch = format!(
        "link add {host_veth} type veth peer name eth0 address {mac} netns {pid}\n\
         link set {host_veth} master {BRIDGE} up\n\
         neigh flush to {ip} dev {BRIDGE}\n"
    );
    if let Err(f) = run("ip", &["-batch", "-"], Some(&batch)) {
        // A stale host side of this same container (a crash before detach)
        // is ours to replace; anything else is a real error.
        let stale = f.stderr.contains("File exists") && link_exists(host_veth) && !link_exists_in(pid, "eth0");
        if !stale {
            let _ = delete_veth(id, host_veth);
            return Err(f.into_err(id, &format!("creating veth {host_veth} for process {pid}")));
        }
        log::warn!("network: container {id}: replacing stale veth {host_veth}");
        delete_veth(id, host_veth)?;
        if let Err(f) = run("ip", &["-batch", "-"], Some(&batch)) {
            let _ = delete_veth(id, host_veth);
            return Err(f.into_err(id, &format!("creating veth {host_veth} for process {pid}")));
        }
    }
    let inside = format!(
        "link set lo up\naddr add {ip}/{PREFIX_LEN} dev eth0\nlink set eth0 up\nroute add default via {GATEWAY} dev eth0\n"
    );
    // Our thread joins the container's netns and `ip` inherits it.
    let in_ns = stasis_sys::ns::ThreadNetns::enter(pid)
        .map_err(|e| super::cmd::Failure { cmd: format!("setns to the netns of {pid}"), stderr: e.to_string() })
        .and_then(|_ns| run("ip", &["-batch", "-"], Some(&inside)));
    if let Err(f) = in_ns {
        let _ = delete_veth(id, host_veth);
        return Err(f.into_err(id, &format!("configuring eth0 ({ip}) in the netns of process {pid}")));
    }
    Ok(())
}

fn link_exists_in(pid: i32, name: &str) -> bool {
    let netns = format!("--net=/proc/{pid}/ns/net");
    run("nsenter", &[&netns, "ip", "link", "show", "dev", name], None).is_ok()
}

/// Deletes veth `name` (its peer goes with it). Fine if it is already gone.
pub(super) fn delete_veth(id: &str, name: &str) -> Result<(), NetError> {
    match run("ip", &["link", "del", "dev", name], None) {
        Ok(_) => Ok(()),
        Err(f) if f.stderr.contains("Cannot find device") || f.stderr.contains("does not exist") => Ok(()),
        Err(f) => Err(f.into_err(id, &format!("deleting veth {name}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(veth_name(id), "vs0123456789");
        for id in ["web", "my-container", "ABCDEFG", ""] {
            let n = veth_name(id);
            assert_eq!(n.len(), 12, "{n}");
            assert!(n.len() <= 15 && n.starts_with("vs"));
            assert_eq!(n, veth_name(id), "stable");
        }
        assert_ne!(veth_name("a"), veth_name("b"));
    }

    #[test]
    fn macs() {
        assert_eq!(default_mac(Ipv4Addr::new(10, 89, 0, 2)), "0a:58:0a:59:00:02");
        assert_eq!(normalize_mac("0A-58-0a:59:00:FF").as_deref(), Some("0a:58:0a:59:00:ff"));
        for bad in
            ["", "0a:58:0a:59:00", "01:00:5e:00:00:01", "00:00:00:00:00:00", "0g:58:0a:59:00:02", "0a5:8:0a:59:00:02"]
        {
            assert_eq!(normalize_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn bridge_show() {
        let up = "5: stasis0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP\n    link/ether 0a:58:0a:59:00:01 brd ff:ff:ff:ff:ff:ff\n    inet 10.89.0.1/16 scope global stasis0\n";
        assert!(bridge_ready(up));
        assert!(!bridge_ready(&up.replace(",UP,", ",")));
        assert!(!bridge_ready(&up.replace("10.89.0.1/16", "10.89.0.1/24")));
    }
}
