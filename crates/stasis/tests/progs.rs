//! ZDTM-style programs from tests/progs: each builds state, prints READY,
//! is dumped (and killed), restored with --detach under the same pid, gets
//! SIGUSR1 and must print PASS after verifying its state.

mod common;

use std::time::Duration;

const READY: Duration = Duration::from_secs(60);
const CHECK: Duration = Duration::from_secs(60);

fn run(name: &str, args: &[&str], own_group: bool) {
    let Some(h) = common::start(name) else { return };
    let mut argv = vec![common::prog(name).into_os_string()];
    argv.extend(args.iter().map(Into::into));
    common::zdtm_cycle(&h, &argv, own_group, READY, CHECK);
}

#[test]
fn threads_avx() {
    if !common::has_avx() {
        common::skip("threads_avx: the CPU has no AVX");
        return;
    }
    run("threads_avx", &[], true);
}

#[test]
fn tree_session() {
    // It calls setsid() itself, so it must not be a group leader.
    run("tree_session", &[], false);
}

#[test]
fn mem_64m() {
    run("mem", &["64"], true);
}

/// 1 GiB of touched memory, every byte verified after restore.
#[test]
fn mem_1g() {
    let Some(h) = common::start("mem_1g") else {
        return;
    };
    let argv = [common::prog("mem").into_os_string(), "1024".into()];
    common::zdtm_cycle(&h, &argv, true, Duration::from_secs(120), Duration::from_secs(120));
}

#[test]
fn signals() {
    run("signals", &[], true);
}

#[test]
fn files() {
    run("files", &[], true);
}

/// Dumped while one thread blocks in read() and the main thread sleeps in
/// nanosleep(5 s) (the dump follows READY at once).
#[test]
fn syscall_restart() {
    run("syscall_restart", &[], true);
}

#[test]
fn python_bigdict() {
    let Some(h) = common::start("python_bigdict") else {
        return;
    };
    let script = common::repo_root().join("tests/progs/bigdict.py");
    let argv = [common::python3().into(), script.into_os_string()];
    common::zdtm_cycle(&h, &argv, true, Duration::from_secs(120), Duration::from_secs(120));
}
