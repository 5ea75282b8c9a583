//! Special fd kinds (tests/progs/fd_*.c): each program builds its state,
//! prints READY, is dumped (and killed), restored with --detach under the
//! same pid, gets SIGUSR1 and must print PASS after checking its fds. The
//! images must decode with `crit` (`crit x DIR fds` too). Kinds Stasis does
//! not support (io_uring, perf events) must be refused at dump with one
//! line naming the pid, fd and kind, leaving the process running.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

const READY: Duration = Duration::from_secs(60);
const CHECK: Duration = Duration::from_secs(60);

/// `crit x DIR fds` must read every fd kind we write.
fn crit_fds(images: &Path) {
    let crit = Path::new("/usr/bin/crit");
    if !crit.exists() {
        return;
    }
    let out = Command::new(crit).arg("x").arg(images).arg("fds").output().expect("run crit");
    assert!(out.status.success(), "crit x fds: {}", String::from_utf8_lossy(&out.stderr));
    for entry in std::fs::read_dir(images).expect("images dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".img") || name.starts_with("pages-") {
            continue;
        }
        let out = Command::new(crit).arg("decode").arg("-i").arg(entry.path()).output().expect("run crit");
        assert!(out.status.success(), "crit decode {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

fn run(name: &str, args: &[&str]) {
    let Some(h) = common::start(name) else { return };
    let mut argv = vec![common::prog(name).into_os_string()];
    argv.extend(args.iter().map(Into::into));
    let images = h.path("images");
    // zdtm_cycle removes nothing: decode the images it leaves behind.
    common::zdtm_cycle(&h, &argv, true, READY, CHECK);
    crit_fds(&images);
}

#[test]
fn fd_eventfd() {
    run("fd_eventfd", &[]);
}

#[test]
fn fd_epoll() {
    run("fd_epoll", &[]);
}

#[test]
fn fd_timerfd() {
    run("fd_timerfd", &[]);
}

#[test]
fn fd_signalfd() {
    run("fd_signalfd", &[]);
}

#[test]
fn fd_memfd() {
    run("fd_memfd", &[]);
}

#[test]
fn fd_ghost() {
    run("fd_ghost", &[]);
}

/// Dumping a process holding an fd of kind `mode` is refused with one line
/// naming the pid, the fd and the kind; the process runs on, not stopped.
fn refused(mode: &str, kind: &str, pre_dump_too: bool) {
    let Some(h) = common::start(&format!("fd_unsupported_{mode}")) else { return };
    let log = h.path("out.log");
    let argv = [common::prog("fd_unsupported").into_os_string(), mode.into()];
    let mut child = h.spawn(&argv, &log, true);
    let pid = common::pid_of(&child);
    let text = common::wait_log(&log, READY, "READY or SKIP", |s| s.contains("READY") || s.contains("SKIP"));
    if text.contains("SKIP") {
        let _ = common::wait_exit(&mut child, Duration::from_secs(10));
        common::skip(text.trim());
        return;
    }
    let images = h.path("images");
    let mut tries = vec![common::try_dump(pid, &images, false)];
    if pre_dump_too {
        let mut argv = common::dump_args(pid, &images, false);
        argv.push("--pre-dump".into());
        tries.push(common::run_stasis(&argv, Duration::from_secs(60)));
    }
    for out in tries {
        out.assert_one_line_error(&format!("dump with an {mode} fd"));
        let line = out.stderr.trim();
        assert!(line.contains(&pid.to_string()) && line.contains(kind) && line.contains("fd "), "{line}");
        assert!(!images.exists(), "a refused dump left {}", images.display());
    }
    assert!(common::alive(pid) && !common::stopped(pid), "process {pid} is gone or stopped after a refused dump");
    common::send(pid, rustix::process::Signal::USR1);
    common::expect_pass(&log, CHECK);
    assert!(common::wait_exit(&mut child, Duration::from_secs(30)).is_some());
}

#[test]
fn refuses_io_uring() {
    refused("io_uring", "io_uring", false);
}

#[test]
fn refuses_perf_event() {
    refused("perf", "perf_event", false);
}

/// A program using userfaultfd itself: dumps refuse its fd, and pre-dumps
/// refuse it (its areas and ours would clash).
#[test]
fn refuses_userfaultfd() {
    refused("userfaultfd", "userfaultfd", true);
}

#[test]
fn fd_inotify() {
    run("fd_inotify", &[]);
}

#[test]
fn fd_fifo() {
    run("fd_fifo", &[]);
}

#[test]
fn fd_locks() {
    run("fd_locks", &[]);
}

#[test]
fn fd_pty() {
    run("fd_pty", &[]);
}

#[test]
fn fd_devices() {
    run("fd_devices", &[]);
}

/// eventfd, epoll and timerfd shared by dup() and by fork().
#[test]
fn fd_shared() {
    run("fd_shared", &[]);
}
