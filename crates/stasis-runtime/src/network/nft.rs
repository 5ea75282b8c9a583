//! Published ports in the nftables table `ip stasis`: the base chains
//! (created once, see the module doc of `network`), and per container a
//! chain `ctr-<id>` of DNAT rules reached by one `jump` in `ports`, both
//! commented `stasis:<id>`. Changes are applied as one `nft -f -`
//! transaction, so they happen whole or not at all.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::Value;

use super::cmd::run;
use super::{ports, NetError, PortMapping, Proto, BRIDGE, PREFIX_LEN, SUBNET, TABLE};

/// `id` restricted to characters safe in chain names and comments.
fn clean(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' }).collect()
}

/// The chain holding container `id`'s DNAT rules.
pub(super) fn chain_name(id: &str) -> String {
    format!("ctr-{}", clean(id))
}

fn comment(id: &str) -> String {
    format!("stasis:{}", clean(id))
}

/// A rule in `ports` that jumps to a container chain.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Jump {
    pub handle: u64,
    pub target: String,
}

/// A DNAT rule in a container chain: what host port it takes.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Dnat {
    pub chain: String,
    pub comment: Option<String>,
    pub mapping: PortMapping,
}

/// What of our table exists now.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Table {
    pub exists: bool,
    pub chains: HashSet<String>,
    pub jumps: Vec<Jump>,
    pub dnats: Vec<Dnat>,
}

impl Table {
    /// Reads the live table (`nft -j list table ip stasis`).
    pub fn load(id: &str) -> Result<Table, NetError> {
        match run("nft", &["-j", "list", "table", "ip", TABLE], None) {
            Ok(json) => Table::parse(&json).map_err(|e| NetError::Command {
                id: id.into(),
                what: format!("reading nftables table ip {TABLE}"),
                cmd: format!("nft -j list table ip {TABLE}"),
                stderr: format!("unexpected output: {e}"),
            }),
            Err(f) if f.stderr.contains("No such file or directory") => Ok(Table::default()),
            Err(f) => Err(f.into_err(id, &format!("reading nftables table ip {TABLE}"))),
        }
    }

    /// Parses `nft -j` output.
    pub fn parse(json: &str) -> Result<Table, serde_json::Error> {
        let v: Value = serde_json::from_str(json)?;
        let mut t = Table { exists: true, ..Table::default() };
        let items = v.get("nftables").and_then(Value::as_array).cloned().unwrap_or_default();
        for item in &items {
            if let Some(name) = item.pointer("/chain/name").and_then(Value::as_str) {
                t.chains.insert(name.to_string());
            }
            let Some(rule) = item.get("rule") else { continue };
            let chain = rule.get("chain").and_then(Value::as_str).unwrap_or_default();
            let handle = rule.get("handle").and_then(Value::as_u64).unwrap_or_default();
            let exprs = rule.get("expr").and_then(Value::as_array).cloned().unwrap_or_default();
            if chain == "ports" {
                if let Some(target) = exprs.iter().find_map(|e| e.pointer("/jump/target").and_then(Value::as_str)) {
                    t.jumps.push(Jump { handle, target: target.to_string() });
                }
            } else if chain.starts_with("ctr-") {
                if let Some(mapping) = dnat_mapping(&exprs) {
                    let comment = rule.get("comment").and_then(Value::as_str).map(String::from);
                    t.dnats.push(Dnat { chain: chain.to_string(), comment, mapping });
                }
            }
        }
        Ok(t)
    }

    /// Another container (by its comment, else its chain) whose rules take
    /// the host port of `p`.
    pub fn port_owner(&self, id: &str, p: &PortMapping) -> Option<String> {
        let mine = chain_name(id);
        self.dnats.iter().find(|d| d.chain != mine && ports::overlap(&d.mapping, p)).map(|d| {
            match d.comment.as_deref().and_then(|c| c.strip_prefix("stasis:")) {
                Some(owner) => owner.to_string(),
                None => d.chain.trim_start_matches("ctr-").to_string(),
            }
        })
    }
}

/// The host side of a DNAT rule: `[ip daddr A] tcp|udp dport P dnat to ...`.
fn dnat_mapping(exprs: &[Value]) -> Option<PortMapping> {
    let mut host_ip = None;
    let mut dport = None;
    let mut to = None;
    for e in exprs {
        if let Some(m) = e.get("match") {
            let proto = m.pointer("/left/payload/protocol").and_then(Value::as_str);
            let field = m.pointer("/left/payload/field").and_then(Value::as_str);
            match (proto, field) {
                (Some("ip"), Some("daddr")) => host_ip = m.get("right").and_then(Value::as_str)?.parse().ok(),
                (Some("tcp"), Some("dport")) => dport = Some((Proto::Tcp, m.get("right")?.as_u64()?)),
                (Some("udp"), Some("dport")) => dport = Some((Proto::Udp, m.get("right")?.as_u64()?)),
                _ => {}
            }
        }
        if let Some(d) = e.get("dnat") {
            to = d.get("port").and_then(Value::as_u64);
        }
    }
    let (proto, port) = dport?;
    Some(PortMapping {
        host_ip,
        host_port: u16::try_from(port).ok()?,
        container_port: to.and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
        proto,
    })
}

fn apply(id: &str, what: &str, script: &str) -> Result<(), NetError> {
    run("nft", &["-f", "-"], Some(script)).map(drop).map_err(|f| f.into_err(id, what))
}

/// Creates the table and whichever base chains (with their rules) are missing.
pub(super) fn ensure_base(id: &str, table: &Table) -> Result<(), NetError> {
    let t = TABLE;
    let net = format!("{SUBNET}/{PREFIX_LEN}");
    let base: [(&str, String, Vec<String>); 6] = [
        ("ports", String::new(), vec![]),
        (
            "prerouting",
            "{ type nat hook prerouting priority dstnat; policy accept; }".into(),
            vec!["fib daddr type local jump ports".into()],
        ),
        (
            "output",
            "{ type nat hook output priority -100; policy accept; }".into(),
            vec!["fib daddr type local jump ports".into()],
        ),
        (
            "postrouting",
            "{ type nat hook postrouting priority srcnat; policy accept; }".into(),
            vec![
                // A TCP flow whose first packet here is not a SYN is a
                // connection that began elsewhere (a container migrated
                // here with --tcp-established): it keeps its addresses.
                format!("ip saddr {net} ip daddr != {net} tcp flags & (fin | syn | rst | ack) != syn accept"),
                // The containers' way out.
                format!("ip saddr {net} ip daddr != {net} masquerade"),
                // Hairpin: a container reaching a published port of the bridge.
                format!("ct status dnat ip saddr {net} ip daddr {net} masquerade"),
                // `curl 127.0.0.1:PORT` on the host, DNATed into the bridge.
                format!("ip saddr 127.0.0.0/8 oifname \"{BRIDGE}\" masquerade"),
            ],
        ),
        // A packet from a container that conntrack finds INVALID (out of
        // its window view, as the first packets of a just-restored TCP
        // connection can be) skips NAT: delivered un-translated, it would
        // make the host answer with a RST and kill the connection. Dropped,
        // it is retransmitted (as kube-proxy does for the same reason).
        (
            "input",
            "{ type filter hook input priority filter; policy accept; }".into(),
            vec![format!("iifname \"{BRIDGE}\" ct state invalid drop")],
        ),
        (
            "forward",
            "{ type filter hook forward priority filter; policy accept; }".into(),
            vec![format!("iifname \"{BRIDGE}\" ct state invalid drop")],
        ),
    ];
    let mut script = String::new();
    for (name, def, rules) in &base {
        if table.chains.contains(*name) {
            continue;
        }
        script.push_str(&format!("add chain ip {t} {name} {def}\n"));
        for r in rules {
            script.push_str(&format!("add rule ip {t} {name} {r}\n"));
        }
    }
    if script.is_empty() {
        return Ok(());
    }
    log::info!("network: creating nftables table ip {t}");
    apply(id, &format!("creating nftables table ip {t}"), &format!("add table ip {t}\n{script}"))
}

/// The nft script that makes `ports` container `id`'s rules (DNAT to `ip`).
pub(super) fn publish_script(id: &str, ip: Ipv4Addr, ports: &[PortMapping], table: &Table) -> String {
    let (t, chain, comment) = (TABLE, chain_name(id), comment(id));
    let mut s = format!("add chain ip {t} {chain}\nflush chain ip {t} {chain}\n");
    for p in ports {
        let daddr = p.host_ip.map(|a| format!("ip daddr {a} ")).unwrap_or_default();
        s.push_str(&format!(
            "add rule ip {t} {chain} {daddr}{} dport {} dnat to {ip}:{} comment \"{comment}\"\n",
            p.proto, p.host_port, p.container_port
        ));
    }
    if !table.jumps.iter().any(|j| j.target == chain) {
        s.push_str(&format!("add rule ip {t} ports jump {chain} comment \"{comment}\"\n"));
    }
    s
}

/// The nft script that removes container `id`'s jump and chain.
pub(super) fn unpublish_script(id: &str, table: &Table) -> String {
    let (t, chain) = (TABLE, chain_name(id));
    let mut s = String::new();
    for j in table.jumps.iter().filter(|j| j.target == chain) {
        s.push_str(&format!("delete rule ip {t} ports handle {}\n", j.handle));
    }
    if table.chains.contains(&chain) {
        s.push_str(&format!("flush chain ip {t} {chain}\ndelete chain ip {t} {chain}\n"));
    }
    s
}

/// Makes `ports` (DNAT to `ip`) exactly container `id`'s published ports.
pub(super) fn publish(id: &str, ip: Ipv4Addr, ports: &[PortMapping], table: &Table) -> Result<(), NetError> {
    if ports.is_empty() {
        let script = unpublish_script(id, table);
        return if script.is_empty() { Ok(()) } else { unpublish(id) };
    }
    let what = format!("publishing ports of {ip} in nftables table ip {TABLE}");
    apply(id, &what, &publish_script(id, ip, ports, table))
}

/// Removes container `id`'s rules. Idempotent.
pub(super) fn unpublish(id: &str) -> Result<(), NetError> {
    let table = Table::load(id)?;
    let script = unpublish_script(id, &table);
    if script.is_empty() {
        return Ok(());
    }
    apply(id, &format!("removing the rules of container {id} from nftables table ip {TABLE}"), &script)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
 {"table": {"family": "ip", "name": "stasis", "handle": 1}},
 {"chain": {"family": "ip", "table": "stasis", "name": "ports", "handle": 1}},
 {"rule": {"family": "ip", "table": "stasis", "chain": "ports", "handle": 12, "comment": "stasis:abc",
   "expr": [{"jump": {"target": "ctr-abc"}}]}},
 {"chain": {"family": "ip", "table": "stasis", "name": "ctr-abc", "handle": 10}},
 {"rule": {"family": "ip", "table": "stasis", "chain": "ctr-abc", "handle": 2, "comment": "stasis:abc",
   "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "127.0.0.1"}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 8080}},
            {"dnat": {"addr": "10.89.0.2", "port": 80}}]}},
 {"rule": {"family": "ip", "table": "stasis", "chain": "ctr-abc", "handle": 3,
   "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 53}},
            {"dnat": {"addr": "10.89.0.2", "port": 5353}}]}}]}"#;

    fn pm(spec: &str) -> PortMapping {
        crate::network::parse_publish(spec).unwrap()
    }

    #[test]
    fn parses_table() {
        let t = Table::parse(JSON).unwrap();
        assert!(t.exists && t.chains.contains("ports") && t.chains.contains("ctr-abc"));
        assert_eq!(t.jumps, vec![Jump { handle: 12, target: "ctr-abc".into() }]);
        assert_eq!(t.dnats.len(), 2);
        assert_eq!(t.dnats[0].mapping, pm("127.0.0.1:8080:80/tcp"));
        assert_eq!(t.dnats[1].mapping, pm("53:5353/udp"));
        assert_eq!(t.port_owner("xyz", &pm("8080:1")).as_deref(), Some("abc"));
        assert_eq!(t.port_owner("xyz", &pm("53:1/udp")).as_deref(), Some("abc"), "no comment: chain name");
        assert_eq!(t.port_owner("abc", &pm("8080:1")), None);
        assert_eq!(t.port_owner("xyz", &pm("127.0.0.2:8080:1")), None);
    }

    #[test]
    fn scripts() {
        let t = Table::parse(JSON).unwrap();
        let ip = Ipv4Addr::new(10, 89, 0, 3);
        let s = publish_script("x y", ip, &[pm("127.0.0.1:8080:80"), pm("53:53/udp")], &t);
        assert_eq!(
            s,
            "add chain ip stasis ctr-x_y\nflush chain ip stasis ctr-x_y\n\
             add rule ip stasis ctr-x_y ip daddr 127.0.0.1 tcp dport 8080 dnat to 10.89.0.3:80 comment \"stasis:x_y\"\n\
             add rule ip stasis ctr-x_y udp dport 53 dnat to 10.89.0.3:53 comment \"stasis:x_y\"\n\
             add rule ip stasis ports jump ctr-x_y comment \"stasis:x_y\"\n"
        );
        // Re-publishing keeps the existing jump.
        assert!(!publish_script("abc", ip, &[pm("1:1")], &t).contains("jump"));
        assert_eq!(
            unpublish_script("abc", &t),
            "delete rule ip stasis ports handle 12\nflush chain ip stasis ctr-abc\ndelete chain ip stasis ctr-abc\n"
        );
        assert_eq!(unpublish_script("other", &t), "");
        assert_eq!(unpublish_script("abc", &Table::default()), "");
    }
}
