//! Container networking, for real (root): bridge, veth, IPAM, published ports
//! through nftables, a second host in another netns, clean detach.
//!
//! Each test re-runs itself in a fresh network namespace (`unshare --net`),
//! so it owns its `stasis0`, its `ip stasis` table and its sysctls, touches
//! nothing of the machine's network, and runs in parallel with the others.
//! "Containers" are sleeping processes in their own netns; their servers are
//! small Python programs started there with `nsenter --net`. Only loopback,
//! 10.89.0.0/16 and 198.18.0.0/24 (between our own namespaces) are used.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stasis_runtime::network::{parse_publish, NetError, NetState, Network, PortMapping};

const INNER: &str = "STASIS_NET_TEST_INNER";
const HELPER: &str = "STASIS_NET_HELPER";

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

fn skip(why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("SKIP not allowed in CI: {why}");
    }
    println!("SKIP: {why}");
}

/// True in the copy of test `name` that runs in a fresh netns; the outer
/// call runs that copy, checks it passed, and returns false.
/// Where the IPAM state of our network namespace lives.
fn ipam_dir() -> std::path::PathBuf {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
    std::path::PathBuf::from(format!("/run/stasis-net/{ino}"))
}

fn isolated(name: &str) -> bool {
    if std::env::var_os(INNER).is_some() {
        sh(&["ip", "link", "set", "lo", "up"]);
        return true;
    }
    if !is_root() {
        skip("needs root");
        return false;
    }
    for tool in ["ip", "nft", "nsenter", "unshare", "python3", "curl"] {
        if Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map_or(true, |o| !o.status.success())
        {
            skip(&format!("needs {tool}"));
            return false;
        }
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--net", "--"])
        .arg(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(INNER, "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{stdout}\n{stderr}");
    assert!(out.status.success() && stdout.contains("1 passed"), "isolated run of {name} failed");
    false
}

fn run(cmd: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn sh(cmd: &[&str]) -> String {
    run(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// Our table as text, or "" if there is none.
fn table() -> String {
    run(&["nft", "list", "table", "ip", "stasis"]).unwrap_or_default()
}

fn link_exists(name: &str) -> bool {
    run(&["ip", "link", "show", "dev", name]).is_ok()
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Runs `cmd` in this process's network namespace.
    fn nsenter(&self, cmd: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/proc/{}/ns/net", self.pid())).args(cmd);
        c
    }
}

/// A "container": a sleeping process in a network namespace of its own.
fn container() -> Proc {
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    let p = Proc(Command::new("unshare").args(["--net", "sleep", "1000"]).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_link(format!("/proc/{}/ns/net", p.pid())).is_ok_and(|ns| ns == own) {
        assert!(Instant::now() < deadline, "unshare --net did not happen");
        std::thread::sleep(Duration::from_millis(5));
    }
    p
}

const SERVER: &str = r#"
import socket, sys, threading
port, name, kind = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if kind == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        d, a = s.recvfrom(2048)
        s.sendto((name + " " + a[0] + "\n").encode(), a)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(64)
def handle(c, a):
    f = c.makefile("rb")
    if kind == "echo":
        for line in f:
            c.sendall(name.encode() + b" " + line)
    else:
        while f.readline() not in (b"\r\n", b"\n", b""):
            pass
        body = (name + " " + a[0] + "\n").encode()
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    c.close()
while True:
    c, a = s.accept()
    threading.Thread(target=handle, args=(c, a), daemon=True).start()
"#;

/// Starts a server in `ctr`'s netns: `http` answers `NAME PEER_IP`, `echo`
/// prefixes each line with NAME, `udp` answers each datagram.
fn serve(ctr: &Proc, port: u16, name: &str, kind: &str) -> Proc {
    let child = ctr.nsenter(&["python3", "-c", SERVER, &port.to_string(), name, kind]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    Proc(child)
}

/// HTTP GET over a plain socket; the body.
fn get(addr: &str) -> Result<String, String> {
    let sa: SocketAddr = addr.parse().unwrap();
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(2)).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: t\r\n\r\n").map_err(|e| format!("{addr}: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| format!("{addr}: {e}"))?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_string());
    body.ok_or_else(|| format!("{addr}: no HTTP answer: {out:?}"))
}

/// `get`, retried for a few seconds while the server starts.
fn wait_get(addr: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match get(addr) {
            Ok(body) => return body,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn temp_root(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stasis-net-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ports(specs: &[&str]) -> Vec<PortMapping> {
    specs.iter().map(|s| parse_publish(s).unwrap()).collect()
}

const ID_A: &str = "aaaaaaaaaa11111111111111111111111111111111111111111111111111111111";
const ID_B: &str = "bbbbbbbbbb22222222222222222222222222222222222222222222222222222222";
const ID_C: &str = "cccccccccc33333333333333333333333333333333333333333333333333333333";

#[test]
fn publish_reach_and_clean_up() {
    if !isolated("publish_reach_and_clean_up") {
        return;
    }
    let root = temp_root("main");
    let net = Network::open(&root).unwrap();
    // The host's own address, besides loopback and the bridge's.
    sh(&["ip", "link", "add", "hostif", "type", "veth", "peer", "name", "hostif-peer"]);
    sh(&["ip", "addr", "add", "198.18.0.1/24", "dev", "hostif"]);
    sh(&["ip", "link", "set", "hostif", "up"]);
    sh(&["ip", "link", "set", "hostif-peer", "up"]);

    let a = container();
    let ip_a = net.allocate(ID_A, None).unwrap();
    assert_eq!(ip_a, Ipv4Addr::new(10, 89, 0, 2));
    let t0 = Instant::now();
    let st_a = net.attach(ID_A, a.pid(), ip_a, None, &ports(&["8080:80", "5353:53/udp"])).unwrap();
    println!("first attach (creates bridge and table): {:?}", t0.elapsed());
    assert_eq!(st_a.mac, "0a:58:0a:59:00:02");
    assert_eq!(
        (st_a.gateway, st_a.prefix_len, st_a.host_veth.as_str()),
        (Ipv4Addr::new(10, 89, 0, 1), 16, "vsaaaaaaaaaa")
    );
    assert!(sh(&["ip", "link", "show", "dev", "vsaaaaaaaaaa"]).contains("master stasis0"));
    let inside = String::from_utf8(a.nsenter(&["ip", "addr", "show", "dev", "eth0"]).output().unwrap().stdout).unwrap();
    assert!(inside.contains("inet 10.89.0.2/16") && inside.contains("0a:58:0a:59:00:02"), "{inside}");
    let route = String::from_utf8(a.nsenter(&["ip", "route"]).output().unwrap().stdout).unwrap();
    assert!(route.contains("default via 10.89.0.1 dev eth0"), "{route}");
    assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap().trim(), "1");
    println!("table after attach:\n{}", table());

    let _http_a = serve(&a, 80, "ctr-a", "http");
    let _udp_a = serve(&a, 53, "ctr-a", "udp");
    assert_eq!(wait_get("10.89.0.2:80"), "ctr-a 10.89.0.1");
    // Through the published port: loopback and the host's own addresses.
    assert!(wait_get("127.0.0.1:8080").starts_with("ctr-a "));
    assert!(wait_get("198.18.0.1:8080").starts_with("ctr-a "));
    assert!(wait_get("10.89.0.1:8080").starts_with("ctr-a "));
    let curl = sh(&["curl", "-sS", "--max-time", "3", "http://localhost:8080/"]);
    assert!(curl.starts_with("ctr-a "), "{curl}");
    // UDP through the published port.
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 100];
    let answer = (0..10).find_map(|_| {
        u.send_to(b"ping", "127.0.0.1:5353").unwrap();
        u.recv(&mut buf).ok().map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    });
    let answer = answer.expect("udp answer through 127.0.0.1:5353");
    assert!(answer.starts_with("ctr-a "), "{answer}");

    // A second container: same bridge, reaches the first directly and
    // through the published port (hairpin).
    let b = container();
    let ip_b = net.allocate(ID_B, None).unwrap();
    assert_eq!(ip_b, Ipv4Addr::new(10, 89, 0, 3));
    let t0 = Instant::now();
    let st_b = net.attach(ID_B, b.pid(), ip_b, None, &[]).unwrap();
    println!("second attach (no ports): {:?}", t0.elapsed());
    let curl_b = |url: &str| {
        let out = b.nsenter(&["curl", "-sS", "--max-time", "3", url]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    assert_eq!(curl_b("http://10.89.0.2:80/"), "ctr-a 10.89.0.3");
    assert!(curl_b("http://198.18.0.1:8080/").starts_with("ctr-a "), "hairpin");
    assert!(curl_b("http://10.89.0.1:8080/").starts_with("ctr-a "), "hairpin via gateway");

    // Conflicts fail clearly and leave nothing behind.
    let c = container();
    let ip_c = net.allocate(ID_C, None).unwrap();
    let e = net.attach(ID_C, c.pid(), ip_c, None, &ports(&["8080:81"])).unwrap_err();
    let msg = e.to_string();
    println!("expected error: {msg}");
    assert!(matches!(e, NetError::PortPublished { .. }), "{msg}");
    assert!(msg.contains("8080") && msg.contains(ID_A) && msg.contains(ID_C), "{msg}");
    let listener = TcpListener::bind("127.0.0.1:9090").unwrap();
    let e = net.attach(ID_C, c.pid(), ip_c, None, &ports(&["9090:80"])).unwrap_err();
    println!("expected error: {e}");
    assert!(matches!(e, NetError::PortInUse { .. }) && e.to_string().contains("127.0.0.1:9090"), "{e}");
    let e = net.attach(ID_C, c.pid(), ip_c, None, &ports(&["127.0.0.1:9090:80/tcp"])).unwrap_err();
    assert!(matches!(e, NetError::PortInUse { .. }), "{e}");
    let udp_user = UdpSocket::bind("0.0.0.0:9191").unwrap();
    let e = net.attach(ID_C, c.pid(), ip_c, None, &ports(&["9191:80/udp"])).unwrap_err();
    assert!(matches!(e, NetError::PortInUse { .. }), "{e}");
    let e = net.attach(ID_C, c.pid(), ip_c, None, &ports(&["9292:80", "9292:81"])).unwrap_err();
    assert!(matches!(e, NetError::PortPublished { .. }), "{e}");
    drop((listener, udp_user));
    let e = net.allocate(ID_C, Some(ip_a)).unwrap_err();
    println!("expected error: {e}");
    assert!(matches!(e, NetError::IpTaken { .. }) && e.to_string().contains("10.89.0.2"), "{e}");
    let e = net.attach(ID_C, 999_999, ip_c, None, &[]).unwrap_err();
    println!("expected error: {e}");
    assert!(matches!(e, NetError::NoProcess { .. }), "{e}");
    let e = net.attach(ID_C, std::process::id() as i32, ip_c, None, &[]).unwrap_err();
    println!("expected error: {e}");
    assert!(matches!(e, NetError::NoProcess { .. }) && e.to_string().contains("host's network namespace"), "{e}");
    let e = net.attach(ID_C, c.pid(), ip_c, Some("01:02:03:04:05:06"), &[]).unwrap_err();
    println!("expected error: {e}");
    assert!(matches!(e, NetError::BadMac { .. }), "{e}");
    assert!(!link_exists("vscccccccccc"));
    assert!(!table().contains(ID_C), "{}", table());
    // A port once refused is fine now that nobody holds it.
    let st_c = net.attach(ID_C, c.pid(), ip_c, None, &ports(&["9090:80"])).unwrap();

    // Detach + release A: no veth, none of its rules, its port and IP reusable.
    net.detach(ID_A, &st_a).unwrap();
    net.detach(ID_A, &st_a).unwrap();
    net.release(ID_A).unwrap();
    net.release(ID_A).unwrap();
    assert!(!link_exists("vsaaaaaaaaaa"));
    let t = table();
    assert!(!t.contains(ID_A) && t.contains(ID_C), "{t}");
    assert!(get("127.0.0.1:8080").is_err(), "port still forwarded after detach");
    let d = container();
    let ip_d = net.allocate("dddd", None).unwrap();
    assert_eq!(ip_d, ip_a, "freed address is reused");
    let st_d = net.attach("dddd", d.pid(), ip_d, Some("02:00:00:00:00:dd"), &ports(&["8080:80"])).unwrap();
    assert_eq!(st_d.mac, "02:00:00:00:00:dd");
    let _http_d = serve(&d, 80, "ctr-d", "http");
    assert!(wait_get("127.0.0.1:8080").starts_with("ctr-d "));

    for (id, st) in [(ID_B, &st_b), (ID_C, &st_c), ("dddd", &st_d)] {
        let t0 = Instant::now();
        net.detach(id, st).unwrap();
        println!("detach {}: {:?}", st.host_veth, t0.elapsed());
        net.release(id).unwrap();
        assert!(!link_exists(&st.host_veth));
    }
    let t = table();
    assert!(!t.contains("ctr-") && !t.contains("stasis:"), "rules left:\n{t}");
    let ipam = std::fs::read_to_string(ipam_dir().join("ipam.json")).unwrap();
    assert!(ipam.contains("\"containers\": {}"), "{ipam}");
    std::fs::remove_dir_all(&root).unwrap();
    let _ = std::fs::remove_dir_all(ipam_dir());
}

/// Issue 7's premise: rules and veth can be removed and re-created for the
/// same ip/port while a connection through the published port stays open.
#[test]
fn reattach_keeps_connection() {
    if !isolated("reattach_keeps_connection") {
        return;
    }
    let root = temp_root("reattach");
    let net = Network::open(&root).unwrap();
    let a = container();
    let ip = net.allocate(ID_A, None).unwrap();
    let p = ports(&["7070:7"]);
    let st = net.attach(ID_A, a.pid(), ip, None, &p).unwrap();
    let _echo = serve(&a, 7, "echo-a", "echo");
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect("10.89.0.2:7").is_err() {
        assert!(Instant::now() < deadline, "echo server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut conn = TcpStream::connect("127.0.0.1:7070").unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let line = |conn: &mut TcpStream, msg: &str| {
        conn.write_all(format!("{msg}\n").as_bytes()).unwrap();
        let mut buf = [0u8; 100];
        let n = conn.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(line(&mut conn, "one"), "echo-a one\n");

    net.unpublish(ID_A).unwrap();
    net.detach(ID_A, &st).unwrap();
    assert!(!table().contains(ID_A));
    let st2 = net.attach(ID_A, a.pid(), st.ip, Some(&st.mac), &st.ports).unwrap();
    assert_eq!(st2, st);
    assert_eq!(line(&mut conn, "two"), "echo-a two\n", "connection through the published port survived");

    net.unpublish(ID_A).unwrap();
    net.publish(ID_A, ip, &p).unwrap();
    assert_eq!(line(&mut conn, "three"), "echo-a three\n");
    net.detach(ID_A, &st2).unwrap();
    net.release(ID_A).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
}

/// Deletes a named netns when dropped.
struct NetNs(String);

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.0]);
    }
}

/// Runs the `helper` test in netns `ns` to attach or detach there.
fn helper_in(ns: &str, env: &[(&str, String)]) -> String {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(exe).args(["helper", "--exact", "--nocapture", "--test-threads=1"]);
    cmd.env_remove(INNER).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "helper in {ns}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Not a test by itself: the second host's side of `second_host`.
#[test]
fn helper() {
    let Ok(action) = std::env::var(HELPER) else { return };
    let var = |k: &str| std::env::var(k).unwrap();
    let net = Network::open(std::path::Path::new(&var("STASIS_NET_ROOT"))).unwrap();
    let id = var("STASIS_NET_ID");
    match action.as_str() {
        "attach" => {
            let ip = net.allocate(&id, None).unwrap();
            let pid: i32 = var("STASIS_NET_PID").parse().unwrap();
            let st = net.attach(&id, pid, ip, None, &ports(&[&var("STASIS_NET_PORT")])).unwrap();
            println!("STATE {}", serde_json::to_string(&st).unwrap());
        }
        "detach" => {
            let st: NetState = serde_json::from_str(&var("STASIS_NET_STATE")).unwrap();
            net.detach(&id, &st).unwrap();
            net.release(&id).unwrap();
        }
        other => panic!("unknown helper action {other}"),
    }
}

#[test]
fn second_host() {
    if !isolated("second_host") {
        return;
    }
    // Host B: another netns, linked to ours (host A) by a veth pair.
    let ns = format!("stasis-nettest-b-{}", std::process::id());
    sh(&["ip", "netns", "add", &ns]);
    let _ns = NetNs(ns.clone());
    sh(&["ip", "link", "add", "to-b", "type", "veth", "peer", "name", "to-a", "netns", &ns]);
    sh(&["ip", "addr", "add", "198.18.0.1/24", "dev", "to-b"]);
    sh(&["ip", "link", "set", "to-b", "up"]);
    for c in [
        vec!["addr", "add", "198.18.0.2/24", "dev", "to-a"],
        vec!["link", "set", "to-a", "up"],
        vec!["link", "set", "lo", "up"],
    ] {
        let mut args = vec!["-n", ns.as_str()];
        args.extend(c);
        sh(&[&["ip"], args.as_slice()].concat());
    }

    let (root_a, root_b) = (temp_root("host-a"), temp_root("host-b"));
    let net = Network::open(&root_a).unwrap();
    let a = container();
    let ip_a = net.allocate(ID_A, None).unwrap();
    let st_a = net.attach(ID_A, a.pid(), ip_a, None, &ports(&["8080:80"])).unwrap();
    let _http_a = serve(&a, 80, "on-a", "http");

    let b = container();
    let env = |action: &str| {
        vec![
            (HELPER, action.to_string()),
            ("STASIS_NET_ROOT", root_b.display().to_string()),
            ("STASIS_NET_ID", ID_B.to_string()),
            ("STASIS_NET_PID", b.pid().to_string()),
            ("STASIS_NET_PORT", "8080:80".to_string()),
        ]
    };
    let out = helper_in(&ns, &env("attach"));
    let state = out
        .lines()
        .find_map(|l| l.split_once("STATE ").map(|(_, s)| s))
        .unwrap_or_else(|| panic!("helper printed no state: {out}"))
        .to_string();
    let st_b: NetState = serde_json::from_str(&state).unwrap();
    assert_eq!(st_b.ip, Ipv4Addr::new(10, 89, 0, 2), "independent IPAM: the same first address");
    let _http_b = serve(&b, 80, "on-b", "http");

    assert!(wait_get("127.0.0.1:8080").starts_with("on-a "));
    assert!(wait_get("198.18.0.2:8080").starts_with("on-b "), "A reaches B's published port");
    let curl_from_b =
        |url: &str| sh(&["ip", "netns", "exec", &ns, "curl", "-sS", "--max-time", "3", url]).trim().to_string();
    assert!(curl_from_b("http://127.0.0.1:8080/").starts_with("on-b "));
    assert_eq!(curl_from_b("http://198.18.0.1:8080/"), "on-a 198.18.0.2", "B reaches A's published port");
    assert!(sh(&["ip", "netns", "exec", &ns, "nft", "list", "table", "ip", "stasis"]).contains(ID_B));
    assert!(!table().contains(ID_B));

    let mut env_detach = env("detach");
    env_detach.push(("STASIS_NET_STATE", state));
    helper_in(&ns, &env_detach);
    let t_b = sh(&["ip", "netns", "exec", &ns, "nft", "list", "table", "ip", "stasis"]);
    assert!(!t_b.contains(ID_B) && !t_b.contains("ctr-"), "{t_b}");
    assert!(run(&["ip", "-n", &ns, "link", "show", "dev", &st_b.host_veth]).is_err());
    assert!(wait_get("127.0.0.1:8080").starts_with("on-a "), "A unaffected by B's detach");
    net.detach(ID_A, &st_a).unwrap();
    net.release(ID_A).unwrap();
    for r in [root_a, root_b] {
        std::fs::remove_dir_all(r).unwrap();
    }
}
