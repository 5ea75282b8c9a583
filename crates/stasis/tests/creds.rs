//! Credentials survive: a process running as nobody with no groups and no
//! capabilities (and the machine's reduced bounding set) comes back with
//! exactly the same ids, groups and capability sets.

mod common;

use std::fs;
use std::time::Duration;

fn creds(pid: i32) -> Vec<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .filter(|l| ["Uid:", "Gid:", "Groups:", "Cap", "NoNewPrivs:"].iter().any(|k| l.starts_with(k)))
        .map(str::to_string)
        .collect()
}

#[test]
fn unprivileged_process_keeps_its_credentials() {
    let Some(h) = common::start("creds") else {
        return;
    };
    let log = h.path("sleep.log");
    let mut child = h.spawn(
        &["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "sleep", "1000"],
        &log,
        true,
    );
    let pid = common::pid_of(&child);
    // setpriv execs sleep: wait until the exec happened.
    for _ in 0..100 {
        if fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = creds(pid);
    assert!(before.iter().any(|l| l.starts_with("Uid:") && l.contains("65534")), "{before:?}");
    let images = h.path("images");
    common::dump(pid, &images, false);
    let _ = common::wait_exit(&mut child, Duration::from_secs(30));
    let root = h.restore_detached(&images);
    assert_eq!(creds(root), before);
}
