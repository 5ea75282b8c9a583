//! A shell loop printing a counter once a second into a log file: after the
//! dump the log stops growing; after restore it continues with the next
//! number, none repeated, none missing.

mod common;

use std::fs;
use std::thread::sleep;
use std::time::Duration;

fn numbers(text: &str) -> Vec<u64> {
    text.lines().map(|l| l.trim().parse().unwrap_or_else(|_| panic!("not a number: {l:?} in:\n{text}"))).collect()
}

#[test]
fn counter() {
    let Some(h) = common::start("counter") else {
        return;
    };
    let log = h.path("counter.log");
    let images = h.path("images");
    let script = "i=0; while true; do echo $i; i=$(expr $i + 1); sleep 1; done";
    let mut child = h.spawn(&["sh", "-c", script], &log, true);
    let pid = common::pid_of(&child);
    common::wait_log(&log, Duration::from_secs(20), "3 lines", |t| t.lines().count() >= 3);

    common::dump(pid, &images, false);
    assert!(common::wait_exit(&mut child, Duration::from_secs(30)).is_some(), "sh {pid} still runs after dump");
    let frozen = fs::read_to_string(&log).unwrap_or_default();
    sleep(Duration::from_secs(2));
    let later = fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(frozen, later, "the log grew after the dump");

    let rpid = h.restore_detached(&images);
    assert_eq!(rpid, pid, "restore must keep the pid");
    let n0 = frozen.lines().count();
    let text = common::wait_log(&log, Duration::from_secs(20), "3 more lines", |t| t.lines().count() >= n0 + 3);
    let nums = numbers(&text);
    for (i, n) in nums.iter().enumerate() {
        assert_eq!(*n, i as u64, "counter lines are not consecutive from 0:\n{text}");
    }
    eprintln!("  counter ran {} .. {} across the checkpoint", nums[0], nums[nums.len() - 1]);
}
