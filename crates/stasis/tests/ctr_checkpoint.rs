//! Container checkpoint/restore end to end (root), the issue's four seed
//! scenarios and its bad input:
//! 1. nginx with a published port: curl, `container checkpoint`, curl
//!    fails, `container restore`, curl answers the same;
//! 2. migration: `checkpoint -e` on host A, `restore -i -n` on host B (its
//!    own store in its own network namespace), a file written in the
//!    container travels with it (and not with `--ignore-rootfs`);
//! 3. docker's counter: `checkpoint create`, logs stop, `start
//!    --checkpoint`, logs go on from where they stopped;
//! 4. `--leave-running`: the service answers throughout.
//!
//! Every image set is read by CRIU's `crit`.

mod common;
mod ctr_common;

use ctr_common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

fn has_curl() -> bool {
    if Command::new("curl").arg("--version").output().is_err() {
        common::skip("curl missing");
        return false;
    }
    true
}

fn bundle(host: &Host, name: &str) -> std::path::PathBuf {
    let id = host.inspect(name)["Id"].as_str().expect("id").to_string();
    host.root.join("containers").join(id).join("checkpoint-bundle")
}

fn running(host: &Host, name: &str) -> bool {
    host.ps_one(name)["State"] == "running"
}

#[test]
fn nginx_checkpoint_restore_in_place() {
    let Some(host) = Host::new("ckpt-nginx") else { return };
    if !has_curl() {
        return;
    }
    host.import("nginx");
    host.run(&["run", "-d", "--name", "web", "-p", "18180:80", "nginx"]);
    let url = "http://127.0.0.1:18180/";
    let before = curl(url, None);
    assert!(before.contains("hello from stasis nginx"), "{before}");
    let stats: Value =
        serde_json::from_str(&host.run(&["container", "checkpoint", "--print-stats", "web"])).expect("stats json");
    let c = &stats["container_statistics"][0]["criu_statistics"];
    assert!(c["frozen_time"].as_u64().unwrap() > 0 && c["pages_written"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(status(url, None), "000", "nothing answers while checkpointed");
    let c = host.ps_one("web");
    assert_eq!(c["State"], "exited", "{c}");
    assert!(c["Status"].as_str().unwrap().contains("checkpointed"), "{c}");
    assert_eq!(host.inspect("web")["State"]["Checkpointed"], true);
    let images = bundle(&host, "web").join("checkpoint");
    common::check_images(&images);
    host.fails(&["container", "checkpoint", "web"]); // not running

    let stats: Value =
        serde_json::from_str(&host.run(&["container", "restore", "--print-stats", "web"])).expect("stats json");
    assert!(stats["stasis_restore_duration"].as_u64().is_some(), "{stats}");
    wait_200(url, None);
    assert_eq!(curl(url, None), before, "the same page after restore");
    assert!(!bundle(&host, "web").exists(), "the in-place checkpoint is gone after a restore without --keep");
    assert!(running(&host, "web"));
    host.fails(&["container", "restore", "web"]); // running
                                                  // The log goes on: the access log lines before and after are both there.
    let log = host.logs("web");
    assert!(log.matches("GET / HTTP").count() >= 2, "{log}");
    // Again, keeping the checkpoint this time.
    host.run(&["container", "checkpoint", "--latest"]);
    host.run(&["container", "restore", "--keep", "web"]);
    wait_200(url, None);
    assert!(bundle(&host, "web").join("checkpoint/inventory.img").exists(), "--keep kept the checkpoint");
    let x = held(&host.inspect("web"));
    host.run(&["rm", "-f", "web"]);
    assert_released(&x, None);
}

#[test]
fn migration_export_import_second_host() {
    let Some(host) = Host::new("ckpt-migrate") else { return };
    if !has_curl() {
        return;
    }
    host.import("nginx");
    host.run(&["run", "-d", "--name", "web", "-p", "18181:80", "nginx"]);
    wait_200("http://127.0.0.1:18181/", None);
    host.run(&["exec", "web", "sh", "-c", "echo travelled > /usr/share/nginx/html/marker.txt"]);
    assert!(curl("http://127.0.0.1:18181/marker.txt", None).contains("travelled"));
    let archive = host.h.as_ref().unwrap().path("web.tar.zst");
    let a = archive.display().to_string();
    host.run(&["container", "checkpoint", "web", "-e", &a]);
    assert!(!running(&host, "web"), "A no longer runs it");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&archive).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "archive mode");
    let listing = Command::new("tar").args(["--zstd", "-tf", &a]).output().expect("tar");
    let listing = String::from_utf8_lossy(&listing.stdout);
    for want in [
        "config.dump",
        "spec.dump",
        "network.status",
        "stats-dump",
        "checkpoint/inventory.img",
        "rootfs-diff.tar",
        "deleted.files",
        "ctr.log",
    ] {
        assert!(listing.lines().any(|l| l.trim_start_matches("./") == want), "{want} missing from:\n{listing}");
    }
    // crit reads the archive's images.
    let x = host.h.as_ref().unwrap().path("unpacked");
    std::fs::create_dir_all(&x).unwrap();
    assert!(Command::new("tar").args(["--zstd", "-xf", &a, "-C"]).arg(&x).status().unwrap().success());
    common::check_images(&x.join("checkpoint"));

    let ns = Netns(format!("stasis-ck-{}", std::process::id()));
    assert!(Command::new("ip").args(["netns", "add", &ns.0]).status().unwrap().success());
    let _ = Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]).status();
    let b = host.other("ckpt-b", &ns.0);
    // The image must be there first.
    b.fails(&["container", "restore", "-i", &a, "-n", "web2"]);
    assert!(b.ps().is_empty(), "a refused import leaves no container");
    b.import("nginx");
    b.run(&["container", "restore", "-i", &a, "-n", "web2"]);
    wait_200("http://127.0.0.1:18181/", Some(&ns.0));
    assert!(curl("http://127.0.0.1:18181/", Some(&ns.0)).contains("hello from stasis nginx"));
    assert!(curl("http://127.0.0.1:18181/marker.txt", Some(&ns.0)).contains("travelled"), "the file came along");
    assert!(b.logs("web2").contains("GET /marker.txt"), "the log came along");
    b.fails(&["container", "restore", "-i", &a, "-n", "web2"]); // name taken
                                                                // Without the rootfs changes: the file stays behind.
    let b2 = host.other("ckpt-b2", &ns.0);
    b2.import("nginx");
    let a2 = host.h.as_ref().unwrap().path("web2.tar.gz").display().to_string();
    b.run(&["container", "checkpoint", "web2", "-e", &a2, "--ignore-rootfs", "-c", "gzip"]);
    b2.run(&["container", "restore", "-i", &a2, "-n", "web3"]);
    wait_200("http://127.0.0.1:18181/", Some(&ns.0));
    assert_eq!(status("http://127.0.0.1:18181/marker.txt", Some(&ns.0)), "404", "--ignore-rootfs left the file out");
    let xb = held(&b2.inspect("web3"));
    b2.run(&["rm", "-f", "web3"]);
    assert_released(&xb, Some(&ns.0));
    drop((b2, b));
}

#[test]
fn docker_counter_checkpoint_and_start() {
    let Some(host) = Host::new("ckpt-docker") else { return };
    host.import("busybox");
    let script = "i=0; while true; do echo $i; i=$(expr $i + 1); sleep 1; done";
    host.run(&["run", "-d", "--name", "cr", "busybox", "sh", "-c", script]);
    let numbers = |h: &Host| -> Vec<u64> { h.logs("cr").lines().filter_map(|l| l.trim().parse().ok()).collect() };
    let end = Instant::now() + Duration::from_secs(20);
    while numbers(&host).len() < 3 {
        assert!(Instant::now() < end, "the counter does not count");
        sleep(Duration::from_millis(100));
    }
    host.run(&["checkpoint", "create", "cr", "checkpoint1"]);
    let stopped = numbers(&host);
    sleep(Duration::from_millis(2500));
    assert_eq!(numbers(&host), stopped, "logs stop growing after checkpoint create");
    assert!(host.run(&["checkpoint", "ls", "cr"]).lines().any(|l| l == "checkpoint1"));
    host.run(&["start", "--checkpoint", "checkpoint1", "cr"]);
    let end = Instant::now() + Duration::from_secs(20);
    while numbers(&host).len() < stopped.len() + 2 {
        assert!(Instant::now() < end, "the restored counter does not count");
        sleep(Duration::from_millis(100));
    }
    let all = numbers(&host);
    let want: Vec<u64> = (0..all.len() as u64).collect();
    assert_eq!(all, want, "the counter went on from {} without repeating or restarting", stopped.len());
    // docker keeps named checkpoints; a custom --checkpoint-dir works for all verbs.
    let dir = host.h.as_ref().unwrap().path("ckdir").display().to_string();
    host.run(&["checkpoint", "create", "--checkpoint-dir", &dir, "cr", "two"]);
    common::check_images(&Path::new(&dir).join("two/checkpoint"));
    assert_eq!(host.run(&["checkpoint", "ls", "--checkpoint-dir", &dir, "cr"]).lines().last(), Some("two"));
    host.run(&["start", "--checkpoint", "two", "--checkpoint-dir", &dir, "cr"]);
    assert!(running(&host, "cr"));
    host.run(&["checkpoint", "rm", "--checkpoint-dir", &dir, "cr", "two"]);
    host.run(&["checkpoint", "rm", "cr", "checkpoint1"]);
    assert_eq!(host.run(&["checkpoint", "ls", "cr"]).lines().count(), 1, "only the header is left");
    host.fails(&["checkpoint", "rm", "cr", "checkpoint1"]);
    host.fails(&["start", "--checkpoint", "two", "cr"]); // running
    host.run(&["stop", "-t", "0", "cr"]);
    host.fails(&["start", "--checkpoint", "nope", "cr"]);
    host.fails(&["checkpoint", "create", "cr", "late"]); // not running
}

#[test]
fn leave_running_answers_throughout() {
    let Some(host) = Host::new("ckpt-leave") else { return };
    if !has_curl() {
        return;
    }
    host.import("nginx");
    host.run(&["run", "-d", "--name", "web", "-p", "18182:80", "nginx"]);
    let url = "http://127.0.0.1:18182/";
    wait_200(url, None);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let prober = std::thread::spawn(move || {
        let (mut ok, mut bad) = (0, 0);
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            if status(url, None) == "200" {
                ok += 1;
            } else {
                bad += 1;
            }
        }
        (ok, bad)
    });
    for _ in 0..3 {
        // The prober's connections are dumped too (and live on).
        host.run(&["container", "checkpoint", "--leave-running", "--tcp-established", "web"]);
        sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, bad) = prober.join().unwrap();
    assert!(ok > 0 && bad == 0, "{ok} answers, {bad} failures during checkpoints with --leave-running");
    assert!(running(&host, "web"));
    common::check_images(&bundle(&host, "web").join("checkpoint"));
}

#[test]
fn checkpoint_bad_input_and_failures() {
    let Some(host) = Host::new("ckpt-bad") else { return };
    if !has_curl() {
        return;
    }
    host.import("nginx");
    host.fails(&["container", "checkpoint", "nosuch"]);
    host.fails(&["container", "restore", "nosuch"]);
    host.run(&["create", "--name", "idle", "nginx"]);
    host.fails(&["container", "checkpoint", "idle"]); // never started
    host.fails(&["container", "restore", "idle"]); // no checkpoint
    host.fails(&["container", "checkpoint", "-c", "lz4", "idle"]);

    host.run(&["run", "-d", "--name", "web", "-p", "18183:80", "nginx"]);
    let url = "http://127.0.0.1:18183/";
    wait_200(url, None);
    // A failed checkpoint leaves it running and no checkpoint behind.
    for point in ["dump-after-freeze", "dump-before-commit"] {
        let out = host.try_run_env(&[("STASIS_FAULT", point)], &["container", "checkpoint", "web"]);
        out.assert_one_line_error(point);
        assert!(running(&host, "web"), "running after a fault at {point}");
        assert_eq!(status(url, None), "200");
        let parent = bundle(&host, "web").parent().unwrap().to_path_buf();
        let left: Vec<_> = std::fs::read_dir(&parent)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains("checkpoint") || n.contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "left after a failed checkpoint: {left:?}");
    }
    // A failed restore leaves nothing running or attached, and the
    // checkpoint restores on the next try.
    host.run(&["container", "checkpoint", "web"]);
    let x = held(&host.inspect("web"));
    let out = host.try_run_env(&[("STASIS_FAULT", "restore-before-release")], &["container", "restore", "web"]);
    out.assert_one_line_error("restore with a fault");
    assert!(!running(&host, "web"));
    assert_released(&x, None);
    assert_eq!(status(url, None), "000");
    host.run(&["container", "restore", "web"]);
    wait_200(url, None);

    // Archives: corrupt, truncated, escaping rootfs diff; name collisions.
    let h = host.h.as_ref().unwrap();
    let good = h.path("good.tar.zst");
    host.run(&["container", "checkpoint", "web", "-e", &good.display().to_string(), "--leave-running"]);
    let bytes = std::fs::read(&good).unwrap();
    let truncated = h.path("truncated.tar.zst");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = h.path("garbage.tar.zst");
    std::fs::write(&garbage, b"this is not an archive at all").unwrap();
    let before = host.ps().len();
    for bad in [&truncated, &garbage, &h.path("missing.tar.zst")] {
        host.fails(&["container", "restore", "-i", &bad.display().to_string(), "-n", "bad"]);
    }
    host.fails(&["container", "restore", "-i", &good.display().to_string()]); // "web" exists
    host.fails(&["container", "restore", "-i", &good.display().to_string(), "-n", "web"]);
    // A rootfs diff that climbs out of the rootfs.
    let evil_dir = h.path("evil");
    std::fs::create_dir_all(evil_dir.join("a")).unwrap();
    assert!(Command::new("tar")
        .args(["--zstd", "-xf"])
        .arg(&good)
        .arg("-C")
        .arg(&evil_dir)
        .status()
        .unwrap()
        .success());
    std::fs::write(h.path("escaped"), "x").unwrap();
    let diff = evil_dir.join("rootfs-diff.tar");
    let ok = Command::new("tar")
        .current_dir(evil_dir.join("a"))
        .args(["-P", "-cf"])
        .arg(&diff)
        .arg("../../escaped")
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::remove_dir_all(evil_dir.join("a")).unwrap();
    let evil = h.path("evil.tar");
    let ok = Command::new("tar").arg("-C").arg(&evil_dir).args(["-cf"]).arg(&evil).arg(".").status().unwrap();
    assert!(ok.success());
    host.fails(&["container", "restore", "-i", &evil.display().to_string(), "-n", "evil"]);
    assert_eq!(host.ps().len(), before, "refused imports leave no container");
    assert!(running(&host, "web"));
    let x = held(&host.inspect("web"));
    host.run(&["rm", "-f", "web", "idle"]);
    assert_released(&x, None);
}

#[test]
fn all_and_latest() {
    let Some(host) = Host::new("ckpt-all") else { return };
    host.import("busybox");
    host.run(&["run", "-d", "--name", "one", "busybox", "sleep", "1000"]);
    host.run(&["run", "-d", "--name", "two", "busybox", "sleep", "1000"]);
    host.run(&["create", "--name", "idle", "busybox", "true"]);
    let state = |n: &str| host.ps_one(n)["State"].as_str().unwrap_or_default().to_string();
    assert_eq!(host.run(&["container", "checkpoint", "-a"]).lines().count(), 2, "only the running ones");
    assert_eq!((state("one"), state("two"), state("idle")), ("exited".into(), "exited".into(), "created".into()));
    assert_eq!(host.run(&["container", "restore", "-a"]).lines().count(), 2, "only the checkpointed ones");
    assert_eq!((state("one"), state("two")), ("running".into(), "running".into()));
    // --latest: the newest container, which is not running.
    host.fails(&["container", "checkpoint", "--latest"]);
    host.run(&["rm", "idle"]);
    assert_eq!(host.run(&["container", "checkpoint", "-l"]).trim(), "two");
    assert_eq!((state("one"), state("two")), ("running".into(), "exited".into()));
    assert_eq!(host.run(&["container", "restore", "-l"]).trim(), "two");
    assert_eq!(state("two"), "running");
}

/// A named unix socket is bound again inside the container, not on the
/// host at the same path.
#[test]
fn unix_socket_in_container() {
    let Some(host) = Host::new("ckpt-unix") else { return };
    let f = fixtures();
    host.run(&["import", &f.join("redis.tar").display().to_string(), "redis"]);
    let sock = format!("/tmp/stasis-it-{}.sock", std::process::id());
    let (save, aof) = (["--save", ""], ["--appendonly", "no"]);
    let mut run = vec!["run", "-d", "--name", "ru", "redis", "redis-server", "--protected-mode", "no"];
    run.extend(save);
    run.extend(aof);
    run.extend(["--port", "0", "--unixsocket", &sock, "--unixsocketperm", "777"]);
    host.run(&run);
    let cli = |args: &[&str]| -> String {
        let pid = host.inspect("ru")["State"]["Pid"].as_i64().unwrap();
        let path = format!("/proc/{pid}/root{sock}");
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("redis-cli").args(["-s", &path]).args(args).output().expect("redis-cli");
            let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !s.is_empty() && !s.contains("Could not connect") {
                return s;
            }
            assert!(Instant::now() < end, "redis on {path} does not answer: {s}");
            sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(cli(&["set", "k", "v"]), "OK");
    host.run(&["container", "checkpoint", "ru"]);
    host.run(&["container", "restore", "ru"]);
    assert_eq!(cli(&["get", "k"]), "v", "the restored redis answers on its socket inside the container");
    assert!(!Path::new(&sock).exists(), "{sock} was bound on the host");
}
