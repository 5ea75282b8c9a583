//! Fault injection (`STASIS_FAULT=<point>`): a dump that fails at any step
//! leaves the tree running, thawed, and no image dir (nor staging dir)
//! behind; a restore that fails late leaves no process of the tree behind,
//! and the same images restore fine on the next try.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use common::Out;

const T: Duration = Duration::from_secs(60);

fn stasis_with_fault(fault: &str, args: &[std::ffi::OsString]) -> Out {
    let child = Command::new(common::stasis_bin())
        .args(args)
        .env("STASIS_FAULT", fault)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stasis");
    common::finish_stasis(child, T)
}

fn dir_is_empty_of_images(parent: &Path) {
    let left: Vec<_> = fs::read_dir(parent).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(
        !left.iter().any(|n| n.to_string_lossy().contains("images")),
        "image or staging dir left in {}: {left:?}",
        parent.display()
    );
}

/// A fast counter (5 lines a second) in its own process group.
fn start_counter(h: &common::Harness) -> (std::process::Child, i32, std::path::PathBuf) {
    let log = h.path("counter.log");
    let script = "i=0; while true; do echo $i; i=$(expr $i + 1); sleep 0.2; done";
    let child = h.spawn(&["sh", "-c", script], &log, true);
    let pid = common::pid_of(&child);
    common::wait_log(&log, T, "first lines", |s| s.lines().count() >= 2);
    (child, pid, log)
}

#[test]
fn faulted_dumps_leave_the_tree_running() {
    let Some(h) = common::start("faulted_dumps") else {
        return;
    };
    let (mut child, pid, log) = start_counter(&h);
    let dir = h.path("faults");
    fs::create_dir_all(&dir).expect("mkdir");
    for point in ["dump-after-freeze", "dump-before-write", "dump-before-commit"] {
        let out = stasis_with_fault(point, &common::dump_args(pid, &dir.join("images"), false));
        out.assert_one_line_error(point);
        assert!(out.stderr.contains("injected fault"), "{point}: {}", out.stderr);
        dir_is_empty_of_images(&dir);
        assert!(common::alive(pid), "{point}: the tree died");
        assert!(!common::stopped(pid), "{point}: the tree was left stopped");
        let before = fs::read_to_string(&log).unwrap_or_default().lines().count();
        common::wait_log(&log, T, "counting on", |s| s.lines().count() > before + 1);
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn faulted_restore_leaves_nothing_and_can_be_retried() {
    let Some(h) = common::start("faulted_restore") else {
        return;
    };
    let (mut child, pid, log) = start_counter(&h);
    let images = h.path("images");
    common::dump(pid, &images, false);
    let _ = common::wait_exit(&mut child, T);
    common::reap_orphans();
    let n = fs::read_to_string(&log).unwrap_or_default().lines().count();
    for point in ["restore-after-tree", "restore-before-release"] {
        let out = stasis_with_fault(point, &common::restore_args(&images));
        out.assert_one_line_error(point);
        sleep(Duration::from_millis(300));
        common::reap_orphans();
        assert!(!common::alive(pid), "{point}: restored root {pid} left behind");
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{point}: pid {pid} still taken");
        assert_eq!(fs::read_to_string(&log).unwrap_or_default().lines().count(), n, "{point}: the tree ran");
    }
    let root = h.restore_detached(&images);
    assert_eq!(root, pid);
    common::wait_log(&log, T, "counting after restore", |s| s.lines().count() > n + 1);
}
