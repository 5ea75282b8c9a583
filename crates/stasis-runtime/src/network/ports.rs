//! Published ports: parsing `-p` specs, deciding when two mappings collide,
//! and finding host processes that already listen on a port
//! (`/proc/net/{tcp,tcp6,udp,udp6}` of the caller's network namespace).

use std::net::Ipv4Addr;

use super::{NetError, PortMapping, Proto};

/// Parses `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp]`, e.g. `8080:80`,
/// `8080:80/udp`, `127.0.0.1:8080:80/tcp`. An empty HOST_IP (`:8080:80`)
/// means every address of the host, like no HOST_IP.
pub fn parse_publish(spec: &str) -> Result<PortMapping, NetError> {
    let bad = |reason: &str| NetError::BadPublish { spec: spec.into(), reason: reason.into() };
    let s = spec.trim();
    if s.is_empty() {
        return Err(bad("it is empty"));
    }
    let (body, proto) = match s.rsplit_once('/') {
        Some((body, p)) => match p.to_ascii_lowercase().as_str() {
            "tcp" => (body, Proto::Tcp),
            "udp" => (body, Proto::Udp),
            "sctp" => return Err(bad("protocol sctp is not supported (tcp or udp)")),
            other => return Err(bad(&format!("unknown protocol {other:?} (tcp or udp)"))),
        },
        None => (s, Proto::Tcp),
    };
    if body.starts_with('[') || body.matches(':').count() > 2 {
        return Err(bad("IPv6 host addresses are not supported"));
    }
    let parts: Vec<&str> = body.split(':').collect();
    let (ip, host, ctr) = match parts.as_slice() {
        [_] => return Err(bad("a host port is required, as in 8080:80")),
        [h, c] => (None, *h, *c),
        [ip, h, c] => (Some(*ip), *h, *c),
        _ => unreachable!("at most two colons"),
    };
    let host_ip = match ip {
        None | Some("") => None,
        Some(ip) => {
            Some(ip.parse::<Ipv4Addr>().map_err(|_| bad(&format!("host address {ip:?} is not an IPv4 address")))?)
        }
    };
    // 0.0.0.0 is "all addresses", as if none were given.
    let host_ip = host_ip.filter(|ip| !ip.is_unspecified());
    let p = parse_ports(host, ctr, proto).map_err(|r| bad(&r))?;
    Ok(PortMapping { host_ip, ..p })
}

fn parse_ports(host: &str, ctr: &str, proto: Proto) -> Result<PortMapping, String> {
    let port = |s: &str, what: &str| -> Result<u16, String> {
        if s.is_empty() {
            return Err(format!("the {what} port is missing"));
        }
        if s.contains('-') {
            return Err(format!("port ranges ({s}) are not supported"));
        }
        match s.parse::<u16>() {
            Ok(0) => Err(format!("the {what} port must be 1-65535, not 0")),
            Ok(p) => Ok(p),
            Err(_) => Err(format!("the {what} port {s:?} is not a number in 1-65535")),
        }
    };
    Ok(PortMapping { host_ip: None, host_port: port(host, "host")?, container_port: port(ctr, "container")?, proto })
}

/// Whether two mappings claim the same host port: same protocol and port,
/// and host addresses that overlap (either is "all addresses", or equal).
pub(super) fn overlap(a: &PortMapping, b: &PortMapping) -> bool {
    a.proto == b.proto
        && a.host_port == b.host_port
        && match (a.host_ip, b.host_ip) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        }
}

/// A socket in `/proc/net/*` bound to a local port.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Bound {
    /// Local address as text (`0.0.0.0`, `127.0.0.1`, `::`, `::1`, ...).
    pub addr: String,
    /// IPv4 address if the socket is IPv4 (or v4-mapped); `None` for other v6.
    pub v4: Option<Ipv4Addr>,
    /// Wildcard bind (0.0.0.0 or ::).
    pub any: bool,
    pub port: u16,
    /// TCP state code (0x0A = LISTEN; 0x07 = UDP unconnected).
    pub state: u8,
}

/// Parses the text of `/proc/net/{tcp,udp}` (v6 = false) or `{tcp6,udp6}`.
pub(super) fn parse_proc_net(text: &str, v6: bool) -> Vec<Bound> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let mut f = line.split_whitespace();
        let (Some(_sl), Some(local), Some(_rem), Some(st)) = (f.next(), f.next(), f.next(), f.next()) else {
            continue;
        };
        let Some((addr_hex, port_hex)) = local.split_once(':') else { continue };
        let (Ok(port), Ok(state)) = (u16::from_str_radix(port_hex, 16), u8::from_str_radix(st, 16)) else {
            continue;
        };
        // The kernel prints each 32-bit word of the address in host order.
        let mut bytes = Vec::with_capacity(16);
        for i in (0..addr_hex.len()).step_by(8) {
            let Some(Ok(word)) = addr_hex.get(i..i + 8).map(|w| u32::from_str_radix(w, 16)) else { break };
            bytes.extend_from_slice(&word.to_ne_bytes());
        }
        let (v4, any, addr) = if !v6 && bytes.len() == 4 {
            let ip = Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]);
            (Some(ip), ip.is_unspecified(), ip.to_string())
        } else if v6 && bytes.len() == 16 {
            let mut a = [0u8; 16];
            a.copy_from_slice(&bytes);
            let ip = std::net::Ipv6Addr::from(a);
            (ip.to_ipv4_mapped(), ip.is_unspecified(), ip.to_string())
        } else {
            continue;
        };
        out.push(Bound { addr, v4, any, port, state });
    }
    out
}

/// Whether a socket bound as `b` takes the host port `p` would publish.
pub(super) fn blocks(b: &Bound, p: &PortMapping) -> bool {
    let active = match p.proto {
        Proto::Tcp => b.state == 0x0A,
        Proto::Udp => true,
    };
    active
        && b.port == p.host_port
        && match p.host_ip {
            None => true,
            Some(ip) => b.any || b.v4 == Some(ip),
        }
}

/// A host socket (in the caller's netns) that holds the host port of `p`,
/// described as `ADDR:PORT (proto)`.
pub(super) fn host_listener(p: &PortMapping) -> Option<String> {
    for v6 in [false, true] {
        let file = format!("/proc/net/{}{}", p.proto.as_str(), if v6 { "6" } else { "" });
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        if let Some(b) = parse_proc_net(&text, v6).into_iter().find(|b| blocks(b, p)) {
            let addr = if v6 { format!("[{}]", b.addr) } else { b.addr };
            let what = if p.proto == Proto::Tcp { "listening" } else { "bound" };
            return Some(format!("{addr}:{} {what}, see {file}", b.port));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(spec: &str) -> PortMapping {
        parse_publish(spec).unwrap_or_else(|e| panic!("{spec}: {e}"))
    }

    #[test]
    fn good_specs() {
        let m = ok("8080:80");
        assert_eq!(m, PortMapping { host_ip: None, host_port: 8080, container_port: 80, proto: Proto::Tcp });
        assert_eq!(ok("8080:80/udp").proto, Proto::Udp);
        assert_eq!(ok("8080:80/TCP").proto, Proto::Tcp);
        let m = ok("127.0.0.1:8080:80/tcp");
        assert_eq!(m.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!((m.host_port, m.container_port), (8080, 80));
        assert_eq!(ok(":53:53/udp").host_ip, None);
        assert_eq!(ok("0.0.0.0:1:65535").host_ip, None);
        assert_eq!(ok("127.0.0.1:8080:80/tcp").to_string(), "127.0.0.1:8080:80/tcp");
        assert_eq!(parse_publish(&ok("9:10/udp").to_string()).unwrap(), ok("9:10/udp"));
    }

    #[test]
    fn bad_specs() {
        for (spec, want) in [
            ("", "empty"),
            ("80", "host port is required"),
            ("8080:", "container port is missing"),
            (":80", "host port is missing"),
            ("0:80", "not 0"),
            ("8080:0", "not 0"),
            ("70000:80", "not a number"),
            ("http:80", "not a number"),
            ("8080-8081:80-81", "ranges"),
            ("8080:80/icmp", "unknown protocol"),
            ("8080:80/sctp", "sctp"),
            ("1.2.3:8080:80", "not an IPv4 address"),
            ("[::1]:8080:80", "IPv6"),
            ("::1:8080:80", "IPv6"),
            ("8080:80/", "unknown protocol"),
        ] {
            let e = parse_publish(spec).expect_err(spec).to_string();
            assert!(e.contains(want), "{spec:?}: {e}");
            assert!(e.contains(&format!("{spec:?}")), "{spec:?}: {e}");
        }
    }

    #[test]
    fn overlaps() {
        let a = ok("8080:80");
        assert!(overlap(&a, &ok("127.0.0.1:8080:81")));
        assert!(!overlap(&a, &ok("8080:80/udp")));
        assert!(!overlap(&a, &ok("8081:80")));
        assert!(!overlap(&ok("127.0.0.1:8080:80"), &ok("127.0.0.2:8080:80")));
        assert!(overlap(&ok("127.0.0.1:8080:80"), &ok("127.0.0.1:8080:90")));
    }

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn proc_net() {
        let v4 = parse_proc_net(TCP, false);
        assert_eq!(v4.len(), 3);
        assert_eq!((v4[0].addr.as_str(), v4[0].port, v4[0].state), ("127.0.0.1", 8080, 0x0A));
        assert!(v4[1].any && v4[1].port == 22);
        let v6 = parse_proc_net(TCP6, true);
        assert_eq!((v6[0].addr.as_str(), v6[0].port, v6[0].any), ("::", 8081, true));
        assert_eq!((v6[1].addr.as_str(), v6[1].port, v6[1].any), ("::1", 8082, false));

        assert!(blocks(&v4[0], &ok("8080:80")));
        assert!(blocks(&v4[0], &ok("127.0.0.1:8080:80")));
        assert!(!blocks(&v4[0], &ok("10.0.0.1:8080:80")));
        // The file read (tcp or udp) picks the protocol; in udp files every socket counts.
        assert!(blocks(&Bound { state: 0x07, ..v4[0].clone() }, &ok("8080:80/udp")));
        assert!(!blocks(&Bound { state: 0x07, ..v4[0].clone() }, &ok("8080:80/tcp")));
        assert!(blocks(&v4[1], &ok("10.0.0.1:22:22")));
        // An established connection's local port is no listener.
        assert!(!blocks(&v4[2], &ok("50000:80")));
        assert!(blocks(&v6[0], &ok("127.0.0.1:8081:80")));
        assert!(blocks(&v6[1], &ok("8082:80")));
        assert!(!blocks(&v6[1], &ok("127.0.0.1:8082:80")));
    }
}
