//! Container pre-checkpoints (root): `checkpoint -P` stores the memory of a
//! running container and tracks its writes, `checkpoint --with-previous`
//! stores only the pages written since, `restore -i --import-previous`
//! brings both to a second host.
//!
//! The workload is `dirtier` (tests/fixtures/dirtier.c): it rewrites 1% of
//! its memory per second and checks every byte of it on SIGUSR1.

mod common;
mod ctr_common;

use ctr_common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

fn ctr_dir(host: &Host, name: &str) -> PathBuf {
    let id = host.inspect(name)["Id"].as_str().expect("id").to_string();
    host.root.join("containers").join(id)
}

fn criu_stats(out: &str) -> Value {
    let v: Value = serde_json::from_str(out).expect("stats json");
    v["container_statistics"][0]["criu_statistics"].clone()
}

/// The holder of a pre-checkpoint's write tracking, from its tracker file.
fn holder_pid(pre: &Path) -> i32 {
    let text = std::fs::read_to_string(pre.join("stasis-tracker")).expect("stasis-tracker");
    let line = text.lines().find(|l| l.starts_with("holder ")).expect("holder line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

fn wait_gone(pid: i32, what: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < end, "{what} (pid {pid}) is still running");
        sleep(Duration::from_millis(50));
    }
}

fn wait_log(host: &Host, name: &str, want: &str, count: usize) -> String {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let log = host.logs(name);
        if log.matches(want).count() >= count {
            return log;
        }
        assert!(!log.contains("VERIFY BAD"), "{log}");
        assert!(Instant::now() < end, "no {want:?} (x{count}) in the log of {name}:\n{log}");
        sleep(Duration::from_millis(100));
    }
}

/// Asks dirtier to check its memory; expects the `nth` VERIFY OK.
fn verify(host: &Host, name: &str, pages: u64, nth: usize) {
    host.run(&["kill", "-s", "USR1", name]);
    wait_log(host, name, &format!("VERIFY OK {pages} pages"), nth);
}

/// The acceptance: 1 GiB, 1% rewritten per second.
#[test]
fn precheckpoint_then_with_previous_in_place() {
    let Some(host) = Host::new("preckpt-inplace") else { return };
    host.import("dirtier");
    host.run(&["run", "-d", "--name", "d", "dirtier", "dirtier", "1024", "10"]);
    wait_log(&host, "d", "READY", 1);
    let dir = ctr_dir(&host, "d");
    let pre = dir.join("pre-checkpoint");

    // A first -P, replaced by a second: one pre-checkpoint per container.
    host.run(&["container", "checkpoint", "-P", "d"]);
    let first_holder = holder_pid(&pre);
    assert!(alive(first_holder), "the holder keeps the tracking");
    let full = criu_stats(&host.run(&["container", "checkpoint", "-P", "--print-stats", "d"]));
    wait_gone(first_holder, "the replaced pre-checkpoint's holder");
    let holder = holder_pid(&pre);
    assert!(alive(holder));
    assert_eq!(host.ps_one("d")["State"], "running", "-P leaves the container running");
    let pre_pages = full["pages_written"].as_u64().unwrap();
    assert!(pre_pages >= 262144, "the pre-checkpoint holds the 1 GiB: {full}");
    // crit reads a pre-dump's pagemap (its `x ps` wants cores, which a
    // pre-dump, CRIU's too, does not have).
    let out = Command::new("crit").arg("show").arg(pre.join("pagemap-1.img")).output().expect("crit");
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("PE_PRESENT"));

    sleep(Duration::from_millis(1500));
    let fin = criu_stats(&host.run(&["container", "checkpoint", "--with-previous", "--print-stats", "d"]));
    let written = fin["pages_written"].as_u64().unwrap();
    let skipped = fin["pages_skipped_parent"].as_u64().unwrap();
    // 1% per second for ~1.5 s, plus what -P's own work let through.
    assert!(written < pre_pages / 10, "the final dump stored {written} pages of {pre_pages}: {fin}");
    assert!(skipped > pre_pages * 8 / 10, "{skipped} pages left to the pre-checkpoint: {fin}");
    wait_gone(holder, "the holder after the final checkpoint");
    let images = dir.join("checkpoint-bundle/checkpoint");
    assert_eq!(std::fs::read_link(images.join("parent")).unwrap(), Path::new("../../pre-checkpoint"));
    common::check_images(&images);
    let pagemap = Command::new("crit").arg("show").arg(images.join("pagemap-1.img")).output().expect("crit");
    let pagemap = String::from_utf8_lossy(&pagemap.stdout);
    assert!(pagemap.contains("PE_PARENT") && pagemap.contains("PE_PRESENT"), "{pagemap}");

    host.run(&["container", "restore", "d"]);
    verify(&host, "d", 262144, 1);
    assert!(!pre.exists(), "the pre-checkpoint went with the checkpoint it served");

    // Tracking ends with the container.
    host.run(&["container", "checkpoint", "-P", "d"]);
    let holder = holder_pid(&pre);
    host.run(&["stop", "-t", "1", "d"]);
    wait_gone(holder, "the holder after the container stopped");
    let x = held(&host.inspect("d"));
    host.run(&["rm", "-f", "d"]);
    assert_released(&x, None);
}

/// The seed's commands: pre-checkpoint and checkpoint exported, both
/// imported on a second host, where the service answers.
#[test]
fn precheckpoint_export_import_second_host() {
    let Some(host) = Host::new("preckpt-migrate") else { return };
    if Command::new("curl").arg("--version").output().is_err() {
        common::skip("curl missing");
        return;
    }
    host.import("nginx");
    host.run(&["run", "-d", "--name", "web", "-p", "18191:80", "nginx"]);
    wait_200("http://127.0.0.1:18191/", None);
    let h = host.h.as_ref().unwrap();
    let (pre, cp) = (h.path("pre-checkpoint.tar.gz"), h.path("checkpoint.tar.gz"));
    let (pre_s, cp_s) = (pre.display().to_string(), cp.display().to_string());
    host.run(&["container", "checkpoint", "-P", "-e", &pre_s, "-l"]);
    assert_eq!(status("http://127.0.0.1:18191/", None), "200", "-P leaves the service up");
    host.run(&["container", "checkpoint", "--with-previous", "-e", &cp_s, "-l"]);
    assert_eq!(status("http://127.0.0.1:18191/", None), "000");

    let ns = Netns(format!("stasis-pck-{}", std::process::id()));
    assert!(Command::new("ip").args(["netns", "add", &ns.0]).status().unwrap().success());
    let _ = Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]).status();
    let b = host.other("preckpt-b", &ns.0);
    b.import("nginx");
    // Without its pre-checkpoint the checkpoint cannot be restored.
    b.fails(&["container", "restore", "-i", &cp_s]);
    assert!(b.ps().is_empty(), "a refused import leaves no container");
    b.run(&["container", "restore", "-i", &cp_s, "--import-previous", &pre_s]);
    wait_200("http://127.0.0.1:18191/", Some(&ns.0));
    assert!(curl("http://127.0.0.1:18191/", Some(&ns.0)).contains("hello from stasis nginx"));
    let x = held(&b.inspect("web"));
    b.run(&["rm", "-f", "web"]);
    assert_released(&x, Some(&ns.0));
    drop(b);
}

#[test]
fn precheckpoint_bad_input() {
    let Some(host) = Host::new("preckpt-bad") else { return };
    host.import("dirtier");
    host.run(&["run", "-d", "--name", "a", "dirtier", "dirtier", "16", "10"]);
    host.run(&["run", "-d", "--name", "other", "dirtier", "dirtier", "16", "10"]);
    wait_log(&host, "a", "READY", 1);
    wait_log(&host, "other", "READY", 1);
    host.fails(&["container", "checkpoint", "--with-previous", "a"]); // no pre-checkpoint
    host.fails(&["container", "checkpoint", "-P", "--with-previous", "a"]);
    assert_eq!(host.ps_one("a")["State"], "running", "refused checkpoints leave it running");

    // A pre-checkpoint of another container is refused on import.
    let h = host.h.as_ref().unwrap();
    let (pre_other, cp) = (h.path("other-pre.tar.zst"), h.path("a.tar.zst"));
    let (pre_other_s, cp_s) = (pre_other.display().to_string(), cp.display().to_string());
    host.run(&["container", "checkpoint", "-P", "-e", &pre_other_s, "other"]);
    host.run(&["container", "checkpoint", "-P", "a"]);
    host.run(&["container", "checkpoint", "--with-previous", "-e", &cp_s, "a"]);
    host.run(&["rm", "-f", "a"]);
    host.fails(&["container", "restore", "-i", &cp_s, "--import-previous", &pre_other_s]);
    assert!(!host.ps().iter().any(|c| c["Names"][0] == "a"), "nothing is created: {:?}", host.ps());
    // A checkpoint archive given as the previous one is no pre-checkpoint.
    host.fails(&["container", "restore", "-i", &cp_s, "--import-previous", &cp_s]);
    // --import-previous needs --import.
    host.fails(&["container", "restore", "--import-previous", &pre_other_s, "other"]);
    assert_eq!(host.ps_one("other")["State"], "running");
    host.run(&["rm", "-f", "other"]);
}
