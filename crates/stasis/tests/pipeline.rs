//! A shell pipeline whose pipe holds ~48 KiB at dump time: the writer has
//! written everything (and stays alive), the reader is still asleep. After
//! restore the reader must see every byte: its checksum equals a direct run.

mod common;

use std::fs;
use std::process::Command;
use std::time::Duration;

#[test]
fn pipeline() {
    let Some(h) = common::start("pipeline") else {
        return;
    };
    let log = h.path("pipeline.log");
    let out = h.path("pipeline.out");
    let images = h.path("images");
    let expected = Command::new("sh").args(["-c", "seq 1 10000 | cksum"]).output().expect("sh");
    let expected = String::from_utf8_lossy(&expected.stdout).into_owned();
    let script = format!(
        "{{ seq 1 10000; sleep 6; }} | {{ sleep 5; cksum; }} > '{}' & sleep 1; echo READY; wait; echo DONE",
        out.display()
    );
    let mut child = h.spawn(&["sh", "-c", &script], &log, true);
    let pid = common::pid_of(&child);
    common::wait_ready(&log, Duration::from_secs(20));

    common::dump(pid, &images, false);
    assert!(common::wait_exit(&mut child, Duration::from_secs(30)).is_some(), "sh {pid} still runs after dump");
    assert_eq!(fs::read_to_string(&out).unwrap_or_default(), "", "the reader ran before the restore");

    let rpid = h.restore_detached(&images);
    assert_eq!(rpid, pid);
    common::wait_log(&log, Duration::from_secs(60), "DONE", |t| t.lines().any(|l| l == "DONE"));
    assert_eq!(fs::read_to_string(&out).unwrap_or_default(), expected, "pipe data lost or changed");
}
