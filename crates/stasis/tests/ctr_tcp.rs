//! Established TCP connections across container checkpoint and restore
//! (root): keep-alive HTTP clients of nginx through the published port and
//! straight to the container's address, 100 at once, with requests sent
//! while the container is checkpointed; a redis session whose pipelined
//! commands arrive while it is frozen; `--tcp-close`; the errors for a
//! missing flag. The clients are `tests/progs/tcp_client.py`.

mod common;
mod ctr_common;

use ctr_common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// A running `tcp_client.py` and its control directory.
struct Client {
    child: Child,
    dir: PathBuf,
}

impl Client {
    fn start(h: &common::Harness, name: &str, kind: &str, addr: &str, port: u16, n: usize) -> Client {
        Client::start_in(None, h, name, kind, addr, port, n)
    }

    /// [`Client::start`] in network namespace `netns`.
    fn start_in(
        netns: Option<&str>,
        h: &common::Harness,
        name: &str,
        kind: &str,
        addr: &str,
        port: u16,
        n: usize,
    ) -> Client {
        let dir = h.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        let script = common::repo_root().join("tests/progs/tcp_client.py");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, common::python3()]);
                c
            }
            None => Command::new(common::python3()),
        };
        let child = cmd
            .arg(script)
            .args([kind, addr, &port.to_string(), &n.to_string()])
            .arg(&dir)
            .stdout(std::fs::File::create(dir.join("log")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tcp_client.py");
        let c = Client { child, dir };
        c.wait_for("READY");
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn wait_for(&self, what: &str) -> String {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if log.contains(what) || log.contains("ERROR") {
                return log;
            }
            assert!(Instant::now() < end, "client never printed {what}: {log}");
            sleep(Duration::from_millis(20));
        }
    }

    /// One round trip on every connection, while the container runs;
    /// returns the client's report.
    fn ping(&self) -> String {
        std::fs::write(self.dir.join("ping"), "").unwrap();
        let log = self.wait_for("PING ");
        log.lines().find(|l| l.starts_with("PING ") || l.starts_with("ERROR")).unwrap_or_default().to_string()
    }

    /// Sends its requests (maybe while the container is checkpointed).
    fn send(&self) {
        std::fs::write(self.dir.join("send"), "").unwrap();
    }

    /// Reads the answers; returns the client's last line.
    fn finish(mut self) -> String {
        std::fs::write(self.dir.join("go"), "").unwrap();
        let log = self.wait_for("OK ");
        let _ = self.child.wait();
        log.lines().last().unwrap_or_default().to_string()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ip_of(host: &Host, name: &str) -> String {
    host.inspect(name)["NetworkSettings"]["IPAddress"].as_str().expect("ip").to_string()
}

#[test]
fn nginx_100_connections_survive() {
    let Some(host) = Host::new("tcp-nginx") else { return };
    host.import("nginx");
    host.run(&["run", "-d", "--name", "web", "-p", "18190:80", "nginx"]);
    let ip = ip_of(&host, "web");
    let h = host.h.as_ref().unwrap();
    curl("http://127.0.0.1:18190/", None); // retries until nginx answers
    let published = Client::start(h, "published", "http", "127.0.0.1", 18190, 100);
    let direct = Client::start(h, "direct", "http", &ip, 80, 10);
    assert!(published.log().contains("FIRST 100/100"), "{}", published.log());

    // Without the flag: refused, naming a connection; it keeps running.
    let out = host.try_run(&["container", "checkpoint", "web"]);
    out.assert_one_line_error("checkpoint without --tcp-established");
    assert!(out.stderr.contains("established TCP connection") && out.stderr.contains("--tcp-established"));
    assert_eq!(host.ps_one("web")["State"], "running");

    host.run(&["container", "checkpoint", "--tcp-established", "web"]);
    // Requests sent while nothing runs: the kernel retransmits them.
    published.send();
    direct.send();
    sleep(Duration::from_millis(300));
    // Restoring connections needs a choice.
    let out = host.try_run(&["container", "restore", "web"]);
    out.assert_one_line_error("restore without --tcp-established");
    assert!(out.stderr.contains("--tcp-established") && out.stderr.contains("--tcp-close"), "{}", out.stderr);
    assert_eq!(host.ps_one("web")["State"], "exited", "a refused restore leaves it checkpointed");
    host.run(&["container", "restore", "--tcp-established", "web"]);
    assert_eq!(published.finish(), "OK 100/100 same-sockets=True");
    assert_eq!(direct.finish(), "OK 10/10 same-sockets=True");
    assert!(curl("http://127.0.0.1:18190/", None).contains("hello from stasis nginx"), "new connections work");
}

/// A pre-checkpoint (`-P`) while connections are open, then
/// `--with-previous --tcp-established`: the connections survive, and the
/// final dump leaves most pages to the pre-checkpoint.
#[test]
fn precheckpoint_keeps_connections() {
    let Some(host) = Host::new("tcp-precheckpoint") else { return };
    host.import("nginx");
    host.run(&["run", "-d", "--name", "web", "-p", "18192:80", "nginx"]);
    curl("http://127.0.0.1:18192/", None);
    let c = Client::start(host.h.as_ref().unwrap(), "pre", "http", "127.0.0.1", 18192, 10);
    host.run(&["container", "checkpoint", "-P", "web"]);
    assert_eq!(host.ps_one("web")["State"], "running");
    let out = host.run(&["container", "checkpoint", "--with-previous", "--tcp-established", "--print-stats", "web"]);
    let stats: serde_json::Value = serde_json::from_str(&out).expect("stats json");
    let c_stats = &stats["container_statistics"][0]["criu_statistics"];
    let (written, skipped) =
        (c_stats["pages_written"].as_u64().unwrap(), c_stats["pages_skipped_parent"].as_u64().unwrap());
    assert!(skipped > written, "the final dump stored {written} pages and left {skipped} to the pre-checkpoint");
    c.send();
    host.run(&["container", "restore", "--tcp-established", "web"]);
    assert_eq!(c.finish(), "OK 10/10 same-sockets=True");
}

#[test]
fn redis_pipeline_sent_while_frozen() {
    let Some(host) = Host::new("tcp-redis") else { return };
    let f = fixtures();
    host.run(&["import", &f.join("redis.tar").display().to_string(), "redis"]);
    let args = ["redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no"];
    let mut run = vec!["run", "-d", "--name", "rd", "-p", "16390:6379", "redis"];
    run.extend(args);
    host.run(&run);
    let h = host.h.as_ref().unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let client = loop {
        // The first connection may race the server's start.
        let c = Command::new("redis-cli").args(["-p", "16390", "ping"]).output();
        if c.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG")) {
            break Client::start(h, "redis", "redis", "127.0.0.1", 16390, 10_000);
        }
        assert!(Instant::now() < end, "redis does not answer");
        sleep(Duration::from_millis(50));
    };
    host.run(&["container", "checkpoint", "--tcp-established", "rd"]);
    client.send();
    sleep(Duration::from_millis(300));
    host.run(&["container", "restore", "--tcp-established", "rd"]);
    assert_eq!(client.finish(), "OK 1/1 replies=10000");
    let v = Command::new("redis-cli").args(["-p", "16390", "get", "k9999"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&v.stdout).trim(), "v9999");
    // The images of a TCP checkpoint read fine with crit.
    host.run(&["checkpoint", "create", "--leave-running", "rd", "ck"]);
    let id = host.inspect("rd")["Id"].as_str().unwrap().to_string();
    common::check_images(&host.root.join("containers").join(id).join("checkpoints/ck/checkpoint"));
}

/// The lock tables (`stasis_lock_*`) in the network namespace of `pid`.
fn lock_tables(pid: i64) -> usize {
    let out = Command::new("nsenter").args(["-t", &pid.to_string(), "-n", "nft", "list", "tables"]).output();
    let out = out.expect("run nsenter nft");
    assert!(out.status.success(), "nft list tables: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("stasis_lock")).count()
}

/// A checkpoint that fails once the network is locked leaves the container
/// running, its connections working and no lock table behind; a restore
/// that fails leaves nothing behind and the next one brings the
/// connections back, whose lock table then goes too. The connections the
/// failed checkpoints put into repair mode work again each time.
#[test]
fn failures_leave_no_lock() {
    let Some(host) = Host::new("tcp-faults") else { return };
    host.import("nginx");
    host.run(&["run", "-d", "--name", "web", "-p", "18193:80", "nginx"]);
    curl("http://127.0.0.1:18193/", None);
    // Enough connections that a helper thread reads them (kinds/sockets/prefetch.rs).
    let c = Client::start(host.h.as_ref().unwrap(), "faults", "http", "127.0.0.1", 18193, 30);
    let pid = || host.inspect("web")["State"]["Pid"].as_i64().expect("pid");
    for point in ["dump-after-freeze", "dump-before-commit"] {
        let args = ["container", "checkpoint", "--tcp-established", "web"];
        let out = host.try_run_env(&[("STASIS_FAULT", point)], &args);
        out.assert_one_line_error(point);
        assert_eq!(host.ps_one("web")["State"], "running", "after a fault at {point}");
        assert_eq!(lock_tables(pid()), 0, "lock tables left after a fault at {point}");
    }
    // Out of repair mode and unlocked: the connections work at once.
    assert_eq!(c.ping(), "PING 30/30");
    host.run(&["container", "checkpoint", "--tcp-established", "web"]);
    let x = held(&host.inspect("web"));
    c.send();
    let args = ["container", "restore", "--tcp-established", "web"];
    let out = host.try_run_env(&[("STASIS_FAULT", "restore-before-release")], &args);
    out.assert_one_line_error("restore with a fault");
    assert_eq!(host.ps_one("web")["State"], "exited");
    assert_released(&x, None);
    host.run(&args);
    assert_eq!(c.finish(), "OK 30/30 same-sockets=True");
    // The restore's lock, open, is removed once the CLI has returned.
    let end = Instant::now() + Duration::from_secs(5);
    while lock_tables(pid()) > 0 {
        assert!(Instant::now() < end, "the restore's lock table stays");
        sleep(Duration::from_millis(50));
    }
}

#[test]
fn tcp_close_drops_the_connections() {
    let Some(host) = Host::new("tcp-close") else { return };
    host.import("nginx");
    host.run(&["run", "-d", "--name", "web", "-p", "18191:80", "nginx"]);
    let h = host.h.as_ref().unwrap();
    curl("http://127.0.0.1:18191/", None); // retries until nginx answers
    let client = Client::start(h, "closed", "http", "127.0.0.1", 18191, 5);
    host.run(&["container", "checkpoint", "--tcp-established", "web"]);
    host.fails(&["container", "restore", "--tcp-established", "--tcp-close", "web"]);
    host.run(&["container", "restore", "--tcp-close", "web"]);
    client.send();
    let last = client.finish();
    assert!(last.starts_with("ERROR"), "the old connections are gone: {last}");
    assert!(curl("http://127.0.0.1:18191/", None).contains("hello from stasis nginx"), "it serves new ones");
}

#[test]
fn restore_where_the_address_is_taken() {
    let Some(host) = Host::new("tcp-ip-taken") else { return };
    host.import("nginx");
    host.run(&["run", "-d", "--name", "web", "nginx"]);
    let ip = ip_of(&host, "web");
    let archive = host.h.as_ref().unwrap().path("web.tar.zst");
    let a = archive.display().to_string();
    host.run(&["container", "checkpoint", "-e", &a, "web"]);
    // Another container takes the address meanwhile.
    host.run(&["run", "-d", "--name", "squatter", "nginx"]);
    assert_eq!(ip_of(&host, "squatter"), ip, "the freed address is handed out again");
    host.fails(&["container", "restore", "web"]);
    assert_eq!(host.ps_one("web")["State"], "exited");
    host.fails(&["container", "restore", "-i", &a, "-n", "web2"]);
    assert!(host.ps().iter().all(|c| c["Names"][0] != "web2"), "nothing of web2 is left");
    // With a new address it comes up.
    host.run(&["container", "restore", "--ignore-static-ip", "web"]);
    assert_ne!(ip_of(&host, "web"), ip);
    assert!(Path::new("/proc").exists());
}

/// Runs `ip ARGS`, asserting it worked.
fn ip(args: &[&str]) {
    let ok = Command::new("ip").args(args).status().is_ok_and(|s| s.success());
    assert!(ok, "ip {}", args.join(" "));
}

#[test]
fn migration_keeps_connections() {
    let Some(host) = Host::new("tcp-migrate") else { return };
    // Two hosts and a client, each a network namespace. The client has one
    // address (198.19.0.10) that both hosts route to; it reaches the
    // containers' subnet through A, and through B after the migration.
    let tag = std::process::id();
    let (na, nb, nc) = (Netns(format!("st-a-{tag}")), Netns(format!("st-b-{tag}")), Netns(format!("st-c-{tag}")));
    for ns in [&na, &nb, &nc] {
        ip(&["netns", "add", &ns.0]);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
    }
    for (host_ns, side, net) in [(&na.0, "a", "198.19.1"), (&nb.0, "b", "198.19.2")] {
        let (h_if, c_if) = (format!("to-c{side}"), format!("to-{side}"));
        ip(&["-n", host_ns, "link", "add", &h_if, "type", "veth", "peer", "name", &c_if, "netns", &nc.0]);
        ip(&["-n", host_ns, "addr", "add", &format!("{net}.1/24"), "dev", &h_if]);
        ip(&["-n", host_ns, "link", "set", &h_if, "up"]);
        ip(&["-n", &nc.0, "addr", "add", &format!("{net}.2/24"), "dev", &c_if]);
        ip(&["-n", &nc.0, "link", "set", &c_if, "up"]);
        ip(&["-n", host_ns, "route", "add", "198.19.0.10/32", "via", &format!("{net}.2")]);
    }
    ip(&["-n", &nc.0, "addr", "add", "198.19.0.10/32", "dev", "lo"]);
    ip(&["-n", &nc.0, "route", "add", "10.89.0.0/16", "via", "198.19.1.1", "src", "198.19.0.10"]);

    let a = host.other("a", &na.0);
    let b = host.other("b", &nb.0);
    a.import("nginx");
    b.import("nginx");
    a.run(&["run", "-d", "--name", "web", "nginx"]);
    let addr = ip_of(&a, "web");
    let h = host.h.as_ref().unwrap();
    curl(&format!("http://{addr}/"), Some(&nc.0)); // retries until nginx answers
    let client = Client::start_in(Some(&nc.0), h, "migrating", "http", &addr, 80, 10);
    let archive = h.path("web.tar.zst").display().to_string();
    a.run(&["container", "checkpoint", "--tcp-established", "-e", &archive, "web"]);
    client.send();
    ip(&["-n", &nc.0, "route", "replace", "10.89.0.0/16", "via", "198.19.2.1", "src", "198.19.0.10"]);
    b.run(&["container", "restore", "--tcp-established", "-i", &archive, "-n", "web2"]);
    assert_eq!(ip_of(&b, "web2"), addr, "the container keeps its address on B");
    assert_eq!(client.finish(), "OK 10/10 same-sockets=True", "the old connections go on from B");
    assert!(curl(&format!("http://{addr}/"), Some(&nc.0)).contains("hello from stasis nginx"), "new ones work too");
    assert_ne!(a.ps_one("web")["State"], "running", "A no longer runs it");
    drop((a, b));
}
