//! A process stopped by job control (SIGSTOP) is restored stopped, and runs
//! on when continued.

mod common;

use std::time::Duration;

use rustix::process::Signal;

fn state(pid: i32) -> Option<char> {
    common::proc_stat(pid).map(|(s, ..)| s)
}

#[test]
fn stopped_process_stays_stopped() {
    let Some(h) = common::start("stopped") else {
        return;
    };
    let log = h.path("counter.log");
    let script = "i=0; while true; do echo $i; i=$(expr $i + 1); sleep 0.1; done";
    let mut child = h.spawn(&["sh", "-c", script], &log, true);
    let pid = common::pid_of(&child);
    common::wait_log(&log, Duration::from_secs(30), "first lines", |s| s.lines().count() >= 2);
    common::send(pid, Signal::STOP);
    for _ in 0..100 {
        if state(pid) == Some('T') {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(state(pid), Some('T'), "SIGSTOP did not stop {pid}");
    let images = h.path("images");
    common::dump(pid, &images, false);
    let _ = common::wait_exit(&mut child, Duration::from_secs(30));
    let root = h.restore_detached(&images);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(state(root), Some('T'), "restored process is not stopped");
    let n = std::fs::read_to_string(&log).unwrap_or_default().lines().count();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(std::fs::read_to_string(&log).unwrap_or_default().lines().count(), n, "it ran while stopped");
    common::send(root, Signal::CONT);
    common::wait_log(&log, Duration::from_secs(30), "counting after SIGCONT", |s| s.lines().count() > n + 1);
}
