//! Seccomp filters survive a checkpoint (tests/progs/seccomp.c): two
//! stacked filters in the main thread, inherited by two threads of which
//! one stacked a third, installed under no_new_privs or by CAP_SYS_ADMIN;
//! or, with no thread of its own filter, still shared (a `TSYNC` install
//! after restore works). The filters block calls the dump and the restore
//! inject (rt_sigaction, sigaltstack, prctl, get_robust_list), so both
//! must suspend filtering. CRIU's `crit` must read `seccomp.img`, whose
//! identical chains are stored once. Strict mode is refused and the
//! program runs on.

mod common;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const READY: Duration = Duration::from_secs(60);
const CHECK: Duration = Duration::from_secs(60);
const CRIT: &str = "/usr/bin/crit";

/// `crit decode -i FILE`, parsed.
fn crit_decode(file: &Path) -> Value {
    let out = Command::new(CRIT).args(["decode", "-i"]).arg(file).output().expect("run crit");
    assert!(out.status.success(), "crit decode {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("crit decode {}: {e}", file.display()))
}

/// The thread ids of the image's one process, main thread first.
fn threads(images: &Path) -> Vec<u64> {
    let pstree = crit_decode(&images.join("pstree.img"));
    let t = &pstree["entries"][0]["threads"];
    t.as_array().expect("pstree threads").iter().map(|v| v.as_u64().expect("tid")).collect()
}

/// What crit shows: every thread in filter mode with two or three filters;
/// `filters` in all (the chain of two is stored once); `sharing` threads
/// (the main one included) start at the main thread's first filter.
fn check_seccomp_img(images: &Path, filters: usize, sharing: usize) {
    if !Path::new(CRIT).exists() {
        common::skip("crit checks: /usr/bin/crit missing (Debian package criu)");
        return;
    }
    let img = crit_decode(&images.join("seccomp.img"));
    assert_eq!(img["magic"], "SECCOMP");
    let stored = img["entries"][0]["seccomp_filters"].as_array().expect("seccomp_filters").clone();
    assert_eq!(stored.len(), filters, "seccomp.img: {img}");
    let mut firsts = Vec::new();
    for tid in threads(images) {
        let core = crit_decode(&images.join(format!("core-{tid}.img")));
        let tc = &core["entries"][0]["thread_core"];
        assert_eq!(tc["seccomp_mode"], "filter", "core-{tid}.img: {tc}");
        let mut at = tc["seccomp_filter"].as_u64().expect("seccomp_filter") as usize;
        firsts.push(at);
        let mut len = 1;
        while let Some(next) = stored[at].get("prev") {
            at = next.as_u64().expect("prev") as usize;
            len += 1;
            assert!(len <= stored.len(), "loop in seccomp.img: {img}");
        }
        assert!(len == 2 || len == 3, "thread {tid} has {len} filters");
    }
    assert_eq!(firsts.len(), 3);
    let sharing_main = firsts.iter().filter(|&&f| f == firsts[0]).count();
    assert_eq!(sharing_main, sharing, "threads sharing the main thread's chain: {firsts:?}");
}

fn run(mode: &str, filters: usize, sharing: usize) {
    let Some(h) = common::start(&format!("seccomp_{mode}")) else { return };
    let argv = [common::prog("seccomp").into_os_string(), mode.into()];
    common::zdtm_cycle(&h, &argv, true, READY, CHECK);
    check_seccomp_img(&h.path("images"), filters, sharing);
}

#[test]
fn filters_under_no_new_privs() {
    run("nnp", 5, 2);
}

#[test]
fn filters_installed_with_cap_sys_admin() {
    run("admin", 5, 2);
}

/// Every thread has the same chain: restored once for all (TSYNC), so the
/// program's own TSYNC install after restore finds them shared.
#[test]
fn filters_shared_by_all_threads() {
    run("tsync", 2, 3);
}

#[test]
fn strict_mode_is_refused() {
    let Some(h) = common::start("seccomp_strict") else { return };
    let log = h.path("out.log");
    let mut child = h.spawn(&[common::prog("seccomp").into_os_string(), "strict".into()], &log, true);
    let pid = common::pid_of(&child);
    common::wait_ready(&log, READY);
    // READY comes just before the switch to strict mode.
    let status = format!("/proc/{pid}/status");
    for _ in 0..100 {
        if std::fs::read_to_string(&status).is_ok_and(|s| s.lines().any(|l| l == "Seccomp:\t1")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = common::try_dump(pid, &h.path("images"), false);
    out.assert_one_line_error("dump of a process in seccomp strict mode");
    assert!(out.stderr.contains("strict"), "{}", out.stderr);
    assert!(!h.path("images").exists(), "a refused dump left images");
    std::thread::sleep(Duration::from_millis(200));
    assert!(common::alive(pid) && !common::stopped(pid), "the refused process must run on");
    let _ = child.kill();
    let _ = child.wait();
}
