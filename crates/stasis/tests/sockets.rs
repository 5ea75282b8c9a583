//! Sockets across dump and restore: ZDTM-style programs (unix sockets of
//! every type with queued data, inet listeners and UDP, an established TCP
//! connection with `--tcp-established`), the refusals (an fd in flight in a
//! unix socket, an established connection without the flag), and real
//! services as bare process trees: nginx serving the same page after
//! restore, a keep-alive client of nginx going on on the same connection,
//! and redis-server with 10,000 keys.

mod common;

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use rustix::process::Signal;

const T: Duration = Duration::from_secs(60);

/// `crit decode` of every image file (pages excepted).
fn crit_decode_all(images: &Path) {
    if !Path::new("/usr/bin/crit").exists() {
        common::skip("crit missing");
        return;
    }
    for e in fs::read_dir(images).expect("read images") {
        let p = e.expect("dir entry").path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if !name.ends_with(".img") || name.starts_with("pages-") {
            continue;
        }
        let out = Command::new("/usr/bin/crit").arg("decode").arg("-i").arg(&p).output().expect("run crit");
        assert!(out.status.success(), "crit decode {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

fn prog_cycle(name: &str, args: &[&str], extra_dump: &[&str]) {
    let Some(h) = common::start(name) else { return };
    let log = h.path("out.log");
    let images = h.path("images");
    let mut argv = vec![common::prog(name).into_os_string()];
    argv.extend(args.iter().map(OsString::from));
    let mut child = h.spawn(&argv, &log, true);
    let pid = common::pid_of(&child);
    common::wait_ready(&log, T);
    let mut args = common::dump_args(pid, &images, false);
    args.extend(extra_dump.iter().map(OsString::from));
    common::run_stasis(&args, T).assert_ok("process dump");
    common::check_images(&images);
    crit_decode_all(&images);
    assert!(common::wait_exit(&mut child, T).is_some(), "{pid} still runs after dump");
    // The flags that made the dump (--tcp-established) are needed again.
    let rpid = h.restore_detached_with(&images, extra_dump);
    assert_eq!(rpid, pid);
    common::send(rpid, Signal::USR1);
    common::expect_pass(&log, T);
}

/// The dump is refused with one line containing `want`, and the program
/// runs on and passes its own check.
fn refused(name: &str, want: &[&str]) {
    let Some(h) = common::start(name) else { return };
    let log = h.path("out.log");
    let images = h.path("images");
    let mut child = h.spawn(&[common::prog(name)], &log, true);
    let pid = common::pid_of(&child);
    common::wait_ready(&log, T);
    let out = common::try_dump(pid, &images, false);
    out.assert_one_line_error("dump");
    for w in want {
        assert!(out.stderr.contains(w), "error lacks {w:?}: {}", out.stderr);
    }
    assert!(!images.exists(), "a refused dump left {}", images.display());
    assert!(common::alive(pid) && !common::stopped(pid), "{pid} is not running after a refused dump");
    common::send(pid, Signal::USR1);
    common::expect_pass(&log, T);
    let st = common::wait_exit(&mut child, T).expect("did not exit");
    assert!(st.success());
}

#[test]
fn sk_unix() {
    prog_cycle("sk_unix", &[], &[]);
}

#[test]
fn sk_inet() {
    prog_cycle("sk_inet", &[], &[]);
}

#[test]
fn sk_tcp_established() {
    prog_cycle("sk_tcp", &[], &["--tcp-established"]);
}

#[test]
fn sk_tcp6_established() {
    prog_cycle("sk_tcp", &["6"], &["--tcp-established"]);
}

/// `--leave-running`: the connection leaves repair mode before the tree
/// runs on, and the original passes its own check.
#[test]
fn sk_tcp_leave_running() {
    let Some(h) = common::start("sk_tcp_leave_running") else { return };
    let log = h.path("out.log");
    let images = h.path("images");
    let mut child = h.spawn(&[common::prog("sk_tcp")], &log, true);
    let pid = common::pid_of(&child);
    common::wait_ready(&log, T);
    let mut args = common::dump_args(pid, &images, true);
    args.push("--tcp-established".into());
    common::run_stasis(&args, T).assert_ok("process dump --leave-running");
    assert!(common::alive(pid) && !common::stopped(pid), "{pid} is not running after the dump");
    common::send(pid, Signal::USR1);
    common::expect_pass(&log, T);
    assert!(common::wait_exit(&mut child, T).expect("did not exit").success());
}

#[test]
fn sk_tcp_refused_without_flag() {
    refused("sk_tcp", &["established TCP connection", "127.0.0.1:", "--tcp-established", "fd "]);
}

#[test]
fn sk_scm_rights_refused() {
    refused("sk_scm", &["SCM_RIGHTS", "fd "]);
}

// ---------------------------------------------------------------- services

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn has(bin: &str) -> bool {
    if Path::new(bin).exists() {
        return true;
    }
    common::skip(&format!("{bin} missing (scripts/lib.sh STASIS_PACKAGES)"));
    false
}

fn wait_port(port: u16) {
    let end = Instant::now() + T;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "nothing listens on {port}");
        sleep(Duration::from_millis(50));
    }
}

/// One HTTP/1.1 request on `s`; returns (status line, body).
fn http_get(s: &mut TcpStream, close: bool) -> (String, String) {
    let conn = if close { "close" } else { "keep-alive" };
    write!(s, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: {conn}\r\n\r\n").expect("send request");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut status = String::new();
    r.read_line(&mut status).expect("status line");
    let mut len = 0usize;
    loop {
        let mut l = String::new();
        r.read_line(&mut l).expect("header");
        if l == "\r\n" || l.is_empty() {
            break;
        }
        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().expect("content-length");
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).expect("body");
    (status.trim().to_string(), String::from_utf8_lossy(&body).into_owned())
}

fn fetch(port: u16) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
    http_get(&mut s, true)
}

struct Nginx {
    port: u16,
    body: String,
}

fn start_nginx(h: &common::Harness) -> Option<(Nginx, std::process::Child)> {
    if !has("/usr/sbin/nginx") {
        return None;
    }
    let port = free_port();
    let d = h.dir.display().to_string();
    fs::create_dir_all(h.path("html")).expect("mkdir");
    let body = format!("stasis nginx test {}\n", std::process::id());
    fs::write(h.path("html/index.html"), &body).expect("index");
    let conf = format!(
        "daemon off; master_process on; worker_processes 1; user root; pid {d}/nginx.pid;\n\
         error_log {d}/error.log info; events {{ worker_connections 64; }}\n\
         http {{ access_log off; keepalive_timeout 300s;\n\
         client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy; fastcgi_temp_path {d}/tmp/fcgi;\n\
         uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;\n\
         server {{ listen 127.0.0.1:{port} reuseport; root {d}/html; }} }}\n"
    );
    fs::write(h.path("nginx.conf"), conf).expect("conf");
    let conf = h.path("nginx.conf");
    let argv: Vec<OsString> =
        vec!["/usr/sbin/nginx".into(), "-c".into(), conf.into(), "-p".into(), h.dir.clone().into()];
    let child = h.spawn(&argv, &h.path("nginx.log"), true);
    wait_port(port);
    Some((Nginx { port, body }, child))
}

fn dump_service(pid: i32, images: &Path, extra: &[&str]) {
    // --log-level info prints the timings.
    let mut all: Vec<OsString> = vec!["--log-level".into(), "info".into()];
    all.extend(common::dump_args(pid, images, false));
    all.extend(extra.iter().map(OsString::from));
    let out = common::run_stasis(&all, T);
    out.assert_ok("process dump");
    eprintln!("  {}", out.stderr.lines().last().unwrap_or_default());
    common::check_images(images);
    crit_decode_all(images);
}

#[test]
fn nginx_serves_after_restore() {
    let Some(h) = common::start("nginx") else { return };
    let Some((ngx, mut child)) = start_nginx(&h) else { return };
    let pid = common::pid_of(&child);
    let (st, body) = fetch(ngx.port);
    assert!(st.contains(" 200 "), "{st}");
    assert_eq!(body, ngx.body);
    dump_service(pid, &h.path("images"), &[]);
    assert!(common::wait_exit(&mut child, T).is_some(), "nginx still runs after dump");
    assert!(TcpStream::connect(("127.0.0.1", ngx.port)).is_err(), "port still open after dump");
    let t = Instant::now();
    let rpid = h.restore_detached(&h.path("images"));
    eprintln!("  restored in {:?}", t.elapsed());
    assert_eq!(rpid, pid);
    for _ in 0..3 {
        let (st, body) = fetch(ngx.port);
        assert!(st.contains(" 200 "), "{st}");
        assert_eq!(body, ngx.body);
    }
}

#[test]
fn nginx_keepalive_tcp_established() {
    let Some(h) = common::start("nginx_keepalive") else { return };
    let Some((ngx, mut child)) = start_nginx(&h) else { return };
    let pid = common::pid_of(&child);
    let mut s = TcpStream::connect(("127.0.0.1", ngx.port)).expect("connect");
    let (st, body) = http_get(&mut s, false);
    assert!(st.contains(" 200 "), "{st}");
    assert_eq!(body, ngx.body);
    dump_service(pid, &h.path("images"), &["--tcp-established"]);
    assert!(common::wait_exit(&mut child, T).is_some(), "nginx still runs after dump");
    // Without the flag the restore refuses, naming the connection; nothing
    // is left of that try.
    common::reap_orphans();
    let out = common::run_stasis(&common::restore_args(&h.path("images")), T);
    out.assert_one_line_error("restore of a TCP dump without --tcp-established");
    assert!(out.stderr.contains("--tcp-established") && out.stderr.contains("--tcp-close"), "{}", out.stderr);
    let rpid = h.restore_detached_with(&h.path("images"), &["--tcp-established"]);
    assert_eq!(rpid, pid);
    let (st, body) = http_get(&mut s, false);
    assert!(st.contains(" 200 "), "same connection after restore: {st}");
    assert_eq!(body, ngx.body);
}

fn redis_cli(port: u16, input: &str) -> String {
    let mut c = Command::new("/usr/bin/redis-cli")
        .args(["-p", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("redis-cli");
    let mut stdin = c.stdin.take().expect("stdin");
    let input = input.to_string();
    let w = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = c.wait_with_output().expect("redis-cli output");
    w.join().expect("writer").expect("write to redis-cli");
    assert!(out.status.success(), "redis-cli failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn redis_10k_keys() {
    let Some(h) = common::start("redis") else { return };
    if !has("/usr/bin/redis-server") || !has("/usr/bin/redis-cli") {
        return;
    }
    let port = free_port();
    let argv: Vec<OsString> = [
        "/usr/bin/redis-server",
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        &h.dir.display().to_string(),
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let mut child = h.spawn(&argv, &h.path("redis.log"), true);
    let pid = common::pid_of(&child);
    wait_port(port);
    let sets: String = (0..10_000).map(|i| format!("SET key:{i} value-{i}\n")).collect();
    redis_cli(port, &sets);
    assert_eq!(redis_cli(port, "DBSIZE\n").trim(), "10000");
    dump_service(pid, &h.path("images"), &[]);
    assert!(common::wait_exit(&mut child, T).is_some(), "redis still runs after dump");
    let rpid = h.restore_detached(&h.path("images"));
    assert_eq!(rpid, pid);
    let gets: String = (0..10_000).map(|i| format!("GET key:{i}\n")).collect();
    let out = redis_cli(port, &gets);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 10_000, "replies");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(*l, format!("value-{i}"), "key:{i}");
    }
    assert_eq!(redis_cli(port, "SET after restore\nGET after\n").trim(), "OK\nrestore");
    assert_eq!(redis_cli(port, "DBSIZE\n").trim(), "10001");
}
