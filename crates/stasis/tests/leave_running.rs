//! `--leave-running`: the dumped tree keeps running (not stopped) and passes
//! its own check; then the same images are restored three times: the first
//! passes, the second is killed before its check, the third passes.

mod common;

use std::fs;
use std::time::Duration;

use rustix::process::Signal;

const T: Duration = Duration::from_secs(60);

fn leave_running(name: &str, own_group: bool) {
    let Some(h) = common::start(&format!("leave_running_{name}")) else {
        return;
    };
    let log = h.path("out.log");
    let images = h.path("images");
    let mut child = h.spawn(&[common::prog(name)], &log, own_group);
    let pid = common::pid_of(&child);
    common::wait_ready(&log, T);
    let members = common::tree_members(&[pid]);

    common::dump(pid, &images, true);
    for m in &members {
        assert!(common::alive(*m), "{m} is gone after dump --leave-running");
        assert!(!common::stopped(*m), "{m} is left stopped after dump --leave-running");
    }
    let at_dump = fs::read(&log).expect("read log");
    common::send(pid, Signal::USR1);
    common::expect_pass(&log, T);
    let st = common::wait_exit(&mut child, T).expect("original did not exit");
    assert!(st.success(), "original exited with {st}");
    for m in &members {
        assert!(common::wait_gone(*m, T), "{m} still runs");
    }

    for round in 0..3 {
        // The restored stdout continues at the dump-time offset: put the
        // log back as it was then, so a new PASS is visible.
        fs::write(&log, &at_dump).expect("reset log");
        let rpid = h.restore_detached(&images);
        assert_eq!(rpid, pid, "restore {round} must keep the pid");
        let restored = common::tree_members(&[rpid]);
        assert_eq!(restored.len(), members.len(), "restore {round}: tree size");
        if round == 1 {
            common::kill_trees(&[rpid]);
        } else {
            common::send(rpid, Signal::USR1);
            common::expect_pass(&log, T);
        }
        for m in &restored {
            assert!(common::wait_gone(*m, T), "restore {round}: {m} still runs");
        }
        eprintln!("  restore {round} ok");
    }
}

#[test]
fn leave_running_tree_session() {
    leave_running("tree_session", false);
}

#[test]
fn leave_running_threads_avx() {
    if !common::has_avx() {
        common::skip("no AVX");
        return;
    }
    leave_running("threads_avx", true);
}
