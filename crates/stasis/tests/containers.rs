//! Containers end to end (root): images from the fixtures of
//! `tests/fixtures/build-images.sh`, run/ps/logs/stop/rm, a container whose
//! init exits by itself, a killed monitor, bad input, published ports (on
//! the host and in a second "host" network namespace). Each test has its
//! own `--root`/`--runroot` under its scratch dir and checks that nothing
//! is left behind: mounts, cgroup dirs, veths, nft rules.

mod common;
mod ctr_common;

use ctr_common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

fn log_lines(s: &str) -> usize {
    s.lines().count()
}

#[test]
fn counter_logs_ps_stop_rm() {
    let Some(host) = Host::new("ctr-counter") else { return };
    host.import("busybox");
    let t = Instant::now();
    let id = host.run(&[
        "run",
        "-d",
        "--name",
        "c1",
        "busybox",
        "sh",
        "-c",
        "i=0; while true; do echo $i; i=$(expr $i + 1); sleep 1; done",
    ]);
    eprintln!("  run -d took {:?}", t.elapsed());
    assert_eq!(id.trim().len(), 64, "run -d prints the id: {id:?}");
    let c = host.ps_one("c1");
    assert_eq!(c["State"], "running", "{c}");
    assert!(host.run(&["ps"]).contains("c1"));
    let x = held(&host.inspect("c1"));
    assert!(!x.cgroups.is_empty() && x.cgroups.iter().all(|p| Path::new(p).is_dir()), "cgroups {:?}", x.cgroups);
    assert!(x.cgroups.iter().any(|p| p.contains("freezer")) || x.cgroups.len() == 1, "{:?}", x.cgroups);
    assert!(x.veth.as_deref().is_some_and(|v| link_exists(v, None)), "veth {:?}", x.veth);
    sleep(Duration::from_millis(2500));
    let n1 = log_lines(&host.logs("c1"));
    sleep(Duration::from_millis(2200));
    let logs = host.logs(&id.trim()[..12]);
    assert!(log_lines(&logs) > n1 && n1 >= 2, "logs do not grow: {n1} then {}:\n{logs}", log_lines(&logs));
    assert!(logs.starts_with("0\n1\n"), "{logs}");
    assert_eq!(host.run(&["exec", "c1", "hostname"]).trim(), &id.trim()[..12]);
    host.run(&["stop", "-t", "1", "c1"]);
    let c = host.ps_one("c1");
    assert_eq!(c["State"], "exited", "{c}");
    assert!(c["Status"].as_str().unwrap().starts_with("Exited"), "{c}");
    assert!(!host.run(&["ps"]).contains("c1"), "ps without -a lists only running containers");
    assert_released(&x, None);
    host.run(&["rm", "c1"]);
    assert!(host.ps().is_empty());
    assert!(!host.root.join("containers").join(id.trim()).exists());
    assert_released(&x, None);
}

#[test]
fn init_exits_by_itself() {
    let Some(host) = Host::new("ctr-exit") else { return };
    host.import("busybox");
    host.run(&["run", "-d", "--name", "short", "busybox", "sh", "-c", "echo bye; exit 7"]);
    let c = host.wait_state("short", "exited", |c| c["State"] == "exited");
    assert_eq!(c["ExitCode"], 7, "{c}");
    assert_eq!(host.logs("short"), "bye\n");
    let x = held(&host.inspect("short"));
    assert_released(&x, None);
    // Foreground run: output streamed, exit code passed on.
    let out = host.try_run(&[
        "run",
        "--name",
        "fg",
        "-e",
        "X=42",
        "-w",
        "/tmp",
        "busybox",
        "sh",
        "-c",
        "echo $X; pwd; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    assert_eq!(out.stdout, "42\n/tmp\n");
    // start again an exited container
    host.run(&["start", "short"]);
    host.wait_state("short", "exited again", |c| c["State"] == "exited");
    assert_eq!(host.logs("short"), "bye\nbye\n");
    host.run(&["rm", "short", "fg"]);
}

#[test]
fn killed_monitor() {
    let Some(host) = Host::new("ctr-monitor") else { return };
    host.import("busybox");
    host.run(&["run", "-d", "--name", "m", "busybox", "sleep", "1000"]);
    let c = host.inspect("m");
    let (monitor, pid) = (c["State"]["ConmonPid"].as_i64().unwrap() as i32, c["State"]["Pid"].as_i64().unwrap() as i32);
    let x = held(&c);
    common::send(monitor, rustix::process::Signal::KILL);
    assert!(common::wait_gone(monitor, Duration::from_secs(5)));
    assert_eq!(host.ps_one("m")["State"], "running", "the container outlives its monitor");
    common::send(pid, rustix::process::Signal::KILL);
    assert!(common::wait_gone(pid, Duration::from_secs(5)));
    let c = host.wait_state("m", "exited", |c| c["State"] == "exited");
    eprintln!("  after the container died without its monitor: {}", c["Status"]);
    assert_released(&x, None);
    // And a monitor killed while `stop` cleans up after it.
    host.run(&["run", "-d", "--name", "m2", "busybox", "sleep", "1000"]);
    let c = host.inspect("m2");
    let x = held(&c);
    common::send(c["State"]["ConmonPid"].as_i64().unwrap() as i32, rustix::process::Signal::KILL);
    host.run(&["stop", "-t", "0", "m2"]);
    assert_eq!(host.ps_one("m2")["State"], "exited");
    assert_released(&x, None);
    host.run(&["rm", "-f", "m", "m2"]);
}

#[test]
fn bad_inputs() {
    let Some(host) = Host::new("ctr-bad") else { return };
    let f = fixtures();
    host.import("busybox");
    let imgs = host.run(&["images"]);
    for bad in ["bad-dotdot.tar", "bad-symlink.tar", "corrupt.tar.gz"] {
        host.fails(&["import", &f.join(bad).display().to_string(), "bad"]);
        host.fails(&["load", "-i", &f.join(bad).display().to_string()]);
    }
    host.fails(&["import", "/nonexistent.tar", "bad"]);
    assert_eq!(host.run(&["images"]), imgs, "a refused import leaves no image");
    assert_eq!(std::fs::read_dir(host.root.join("tmp")).unwrap().count(), 0, "no staging dir left");
    assert!(!Path::new("/escaped.txt").exists() && !Path::new("/etc/evil").exists());
    host.fails(&["run", "-d", "nosuchimage"]);
    host.fails(&["run", "-d", "-p", "99999:80", "busybox", "true"]);
    host.fails(&["run", "-d", "-p", "80", "busybox", "true"]);
    host.fails(&["run", "-d", "-p", "8080:80/sctp", "busybox", "true"]);
    host.fails(&["run", "-d", "busybox", "/no/such/command"]);
    host.run(&["run", "-d", "--name", "taken", "-p", "18089:80", "busybox", "sleep", "100"]);
    host.fails(&["run", "-d", "--name", "taken", "busybox", "true"]);
    host.fails(&["run", "-d", "--name", "other", "-p", "18089:80", "busybox", "sleep", "100"]);
    host.fails(&["logs", "nosuch"]);
    host.fails(&["stop", "nosuch"]);
    host.fails(&["rm", "taken"]);
    host.fails(&["rmi", "busybox"]);
    let names: Vec<Value> = host.ps().iter().map(|c| c["Names"][0].clone()).collect();
    assert_eq!(names, vec![Value::from("taken")], "failed runs leave no container");
    host.run(&["rm", "-f", "taken"]);
    host.run(&["rmi", "busybox"]);
    assert!(host.run(&["images", "-q"]).trim().is_empty());
}

#[test]
fn load_docker_archive() {
    let Some(host) = Host::new("ctr-load") else { return };
    let out = host.run(&["load", "-i", &fixtures().join("busybox-docker.tar").display().to_string()]);
    assert!(out.contains("busybox-archive"), "{out}");
    let out = host.try_run(&["run", "--name", "a", "busybox-archive"]);
    assert!(out.ok(), "{}", out.stderr);
    assert_eq!(out.stdout, "hello from layer 2\n");
    let out = host.run(&["run", "--name", "b", "busybox-archive", "sh", "-c", "echo $FROM_IMAGE; ls /bin/busybox"]);
    assert_eq!(out, "1\n/bin/busybox\n");
    // create + start
    host.run(&["create", "--name", "c", "busybox-archive"]);
    assert_eq!(host.ps_one("c")["State"], "created");
    host.run(&["start", "c"]);
    host.wait_state("c", "exited", |c| c["State"] == "exited");
    assert_eq!(host.logs("c"), "hello from layer 2\n");
    // OCI archive with a gzip layer and a whiteout in the second layer.
    let out = host.run(&["load", "-i", &fixtures().join("busybox-oci.tar").display().to_string()]);
    assert!(out.contains("localhost/busybox-oci:1.0"), "{out}");
    let out = host.run(&["run", "--name", "d", "busybox-oci:1.0"]);
    assert!(out.contains("passwd") && !out.contains("group"), "whiteout not applied: {out}");
    assert!(out.ends_with("from the oci layer\n"), "{out}");
    host.run(&["rm", "a", "b", "c", "d"]);
}

#[test]
fn nginx_published_port_and_second_host() {
    if !common::repo_root().join("crates/stasis-runtime/src/network/mod.rs").exists() {
        common::skip("the network module is not there yet");
        return;
    }
    let Some(host) = Host::new("ctr-nginx") else { return };
    if Command::new("curl").arg("--version").output().is_err() {
        common::skip("curl missing");
        return;
    }
    host.import("nginx");
    host.import("busybox");
    host.run(&["run", "-d", "--name", "web", "-p", "8080:80", "nginx"]);
    let page = curl("http://localhost:8080/", None);
    assert!(page.contains("hello from stasis nginx"), "{page}");
    assert!(host.logs("web").contains("GET / HTTP"), "access log in the container log");
    // Two containers reach each other over the bridge.
    let ip = host.inspect("web")["NetworkSettings"]["IPAddress"].as_str().unwrap().to_string();
    let out = host.run(&["run", "--name", "client", "busybox", "wget", "-q", "-O", "-", &format!("http://{ip}/")]);
    assert!(out.contains("hello from stasis nginx"), "{out}");
    // The same port published by a second host in its own network namespace.
    let ns = Netns(format!("stasis-it-{}", std::process::id()));
    assert!(Command::new("ip").args(["netns", "add", &ns.0]).status().unwrap().success());
    let _ = Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]).status();
    let b = host.other("ctr-nginx-b", &ns.0);
    b.import("nginx");
    b.run(&["run", "-d", "--name", "web", "-p", "8080:80", "nginx"]);
    let page = curl("http://localhost:8080/", Some(&ns.0));
    assert!(page.contains("hello from stasis nginx"), "{page}");
    let xb = held(&b.inspect("web"));
    b.run(&["rm", "-f", "web"]);
    assert_released(&xb, Some(&ns.0));
    assert!(curl("http://localhost:8080/", None).contains("hello"), "host A unaffected by host B's rm");
    let x = held(&host.inspect("web"));
    host.run(&["rm", "-f", "web", "client"]);
    assert_released(&x, None);
    drop(b);
}
