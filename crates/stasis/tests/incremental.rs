//! Pre-dumps and incremental dumps on a program that keeps writing
//! (`tests/progs/dirty.c`): a pre-dump stores its memory and leaves it
//! running with its writes tracked (a detached holder keeps the tracking);
//! the dump that follows with `--prev-images` stores only the pages written
//! since and marks the rest PARENT; restore follows the `parent` links and
//! the program finds every byte as it left it. Also: chains of pre-dumps,
//! the holder's lifetime, and refusals.
//!
//! After the first pre-dump the program is asked (SIGUSR2) for a "bounce":
//! an mremap that makes the kernel drop the write tracking of a neighbouring
//! region whose pages keep stale uffd-wp bits (see dirty.c), which a dump
//! must not trust.

mod common;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{Harness, Out};
use rustix::process::Signal;

const T: Duration = Duration::from_secs(60);
const CRIT: &str = "/usr/bin/crit";

/// `stasis --log-level info process dump PID -D IMAGES [--pre-dump]
/// [--prev-images PREV]`.
fn run_dump(pid: i32, images: &Path, pre_dump: bool, prev: Option<&Path>) -> Out {
    let mut args: Vec<OsString> = vec!["--log-level".into(), "info".into()];
    args.extend(common::dump_args(pid, images, false));
    if pre_dump {
        args.push("--pre-dump".into());
    }
    if let Some(p) = prev {
        args.push("--prev-images".into());
        args.push(p.into());
    }
    let t = Instant::now();
    let out = common::run_stasis(&args, Duration::from_secs(300));
    eprintln!(
        "  {} of {pid} into {} took {:?}",
        if pre_dump { "pre-dump" } else { "dump" },
        images.display(),
        t.elapsed()
    );
    out
}

/// What a dump said on stderr.
struct Dumped {
    /// Pages stored and pages left to the parent, from the info line
    /// "... N pages written of M scanned, K left to the parent".
    written: u64,
    left_to_parent: u64,
    stderr: String,
}

/// A dump that must succeed.
fn dump_ok(pid: i32, images: &Path, pre_dump: bool, prev: Option<&Path>) -> Dumped {
    let out = run_dump(pid, images, pre_dump, prev);
    out.assert_ok(if pre_dump { "pre-dump" } else { "dump" });
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains(" left to the parent"))
        .unwrap_or_else(|| panic!("no summary line on stderr:\n{}", out.stderr));
    eprintln!("  {}", line.trim());
    // The number just before `what` in the line.
    let count = |what: &str| -> u64 {
        let head = &line[..line.find(what).unwrap_or_else(|| panic!("no {what:?} in {line:?}"))];
        head.rsplit([' ', ',']).next().and_then(|w| w.parse().ok()).unwrap_or_else(|| panic!("no count in {line:?}"))
    };
    Dumped {
        written: count(" pages written"),
        left_to_parent: count(" left to the parent"),
        stderr: out.stderr.clone(),
    }
}

/// Bytes of the pages-*.img files of an image dir.
fn pages_bytes(images: &Path) -> u64 {
    let rd = fs::read_dir(images).unwrap_or_else(|e| panic!("read {}: {e}", images.display()));
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pages-"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// The holder named in a pre-dump's `stasis-tracker`: (pid, start time).
fn holder_of(images: &Path) -> (i32, u64) {
    let path = images.join("stasis-tracker");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                ["holder", pid, start] => Some((pid.parse().ok()?, start.parse().ok()?)),
                _ => None,
            }
        })
        .unwrap_or_else(|| panic!("no holder line in {}:\n{text}", path.display()))
}

/// Start time (field 22 of /proc/PID/stat).
fn start_time(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..].split_whitespace().nth(19)?.parse().ok()
}

/// The holder (pid, start time) still runs: same process, not a zombie.
fn holder_running(holder: (i32, u64)) -> bool {
    common::alive(holder.0) && start_time(holder.0) == Some(holder.1)
}

/// The holder of a fresh pre-dump: running, and killed with the test.
fn live_holder(h: &Harness, images: &Path) -> (i32, u64) {
    let holder = holder_of(images);
    assert!(holder_running(holder), "holder {} named in {} does not run", holder.0, images.display());
    h.track(holder.0);
    holder
}

/// `crit show FILE`, or `None` (after SKIP) without crit.
fn crit_show(file: &Path) -> Option<String> {
    if !Path::new(CRIT).exists() {
        common::skip("crit checks: /usr/bin/crit missing (Debian package criu)");
        return None;
    }
    let out = Command::new(CRIT).arg("show").arg(file).output().expect("run crit");
    assert!(out.status.success(), "crit show {} failed: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pagemap(images: &Path, pid: i32) -> PathBuf {
    images.join(format!("pagemap-{pid}.img"))
}

/// `images/parent` is a symlink that leads to `parent`.
fn assert_parent_link(images: &Path, parent: &Path) {
    let link = images.join("parent");
    let meta = fs::symlink_metadata(&link).unwrap_or_else(|e| panic!("{}: {e}", link.display()));
    assert!(meta.file_type().is_symlink(), "{} is not a symlink", link.display());
    assert_eq!(
        fs::canonicalize(&link).expect("follow parent link"),
        fs::canonicalize(parent).expect("canonicalize parent"),
        "{} leads elsewhere ({:?})",
        link.display(),
        fs::read_link(&link)
    );
}

/// Starts `dirty SIZE_MB` and waits for READY.
fn start_dirty(h: &Harness, size_mb: u32) -> (std::process::Child, i32, PathBuf) {
    let log = h.path("out.log");
    let child = h.spawn(&[common::prog("dirty").into_os_string(), size_mb.to_string().into()], &log, true);
    let pid = common::pid_of(&child);
    common::wait_ready(&log, T);
    (child, pid, log)
}

/// Asks `dirty` for its bounce (SIGUSR2) and waits until it is done.
fn bounce(pid: i32, log: &Path) {
    let before = fs::read_to_string(log).unwrap_or_default().lines().filter(|l| *l == "BOUNCED").count();
    common::send(pid, Signal::USR2);
    common::wait_log(log, T, "BOUNCED", |t| t.lines().filter(|l| *l == "BOUNCED").count() > before);
}

/// After the final dump: the original is gone; restore it detached, with
/// the same pid, and let it check its memory.
fn restore_and_pass(h: &Harness, child: &mut std::process::Child, pid: i32, log: &Path, images: &Path) {
    assert!(common::wait_exit(child, T).is_some(), "{pid} still runs after the final dump");
    let t = Instant::now();
    let rpid = h.restore_detached(images);
    eprintln!("  restored {rpid} in {:?}", t.elapsed());
    assert_eq!(rpid, pid, "restore must keep the pid");
    common::send(rpid, Signal::USR1);
    common::expect_pass(log, T);
    assert!(common::wait_gone(rpid, T), "restored {rpid} did not exit after PASS");
}

#[test]
fn predump_then_dump_restores_every_byte() {
    let Some(h) = common::start("predump_then_dump") else {
        return;
    };
    let (mut child, pid, log) = start_dirty(&h, 256);
    let (pre, fin) = (h.path("pre"), h.path("final"));

    assert_eq!(dump_ok(pid, &pre, true, None).left_to_parent, 0, "a first pre-dump has no parent");
    assert!(common::alive(pid) && !common::stopped(pid), "{pid} does not run on after the pre-dump");
    let holder = live_holder(&h, &pre);
    let pre_bytes = pages_bytes(&pre);
    assert!(pre_bytes >= 256 << 20, "the pre-dump stored {pre_bytes} bytes of pages, less than the 256 MiB written");

    bounce(pid, &log);
    sleep(Duration::from_secs(1));
    let from_parent = dump_ok(pid, &fin, false, Some(&pre)).left_to_parent;
    let fin_bytes = pages_bytes(&fin);
    eprintln!("  pages: pre-dump {} KiB, final {} KiB", pre_bytes >> 10, fin_bytes >> 10);
    assert!(fin_bytes * 4 < pre_bytes, "the final dump stored {fin_bytes} bytes of pages, pre-dump {pre_bytes}");
    assert!(from_parent * 4096 * 2 > pre_bytes, "only {from_parent} pages left to the parent");
    assert!(!holder_running(holder), "holder {} of the pre-dump still runs after the final dump", holder.0);
    assert_parent_link(&fin, &pre);
    if let Some(map) = crit_show(&pagemap(&fin, pid)) {
        assert!(map.contains("PE_PARENT"), "no PE_PARENT entry in pagemap-{pid}.img:\n{map}");
        assert!(map.contains("PE_PRESENT"), "no PE_PRESENT entry in pagemap-{pid}.img:\n{map}");
    }
    common::check_images(&fin);

    restore_and_pass(&h, &mut child, pid, &log, &fin);
}

#[test]
fn chained_predumps() {
    let Some(h) = common::start("chained_predumps") else {
        return;
    };
    let (mut child, pid, log) = start_dirty(&h, 128);
    let (pre1, pre2, fin) = (h.path("pre1"), h.path("pre2"), h.path("final"));

    dump_ok(pid, &pre1, true, None);
    let holder1 = live_holder(&h, &pre1);
    bounce(pid, &log);
    sleep(Duration::from_millis(500));
    let from_pre1 = dump_ok(pid, &pre2, true, Some(&pre1)).left_to_parent;
    let holder2 = live_holder(&h, &pre2);
    assert!(common::alive(pid) && !common::stopped(pid), "{pid} does not run on after the second pre-dump");
    assert!(!holder_running(holder1), "holder {} of pre1 still runs after pre2 took the tracking over", holder1.0);
    let (b1, b2) = (pages_bytes(&pre1), pages_bytes(&pre2));
    eprintln!("  pages: pre1 {} KiB, pre2 {} KiB", b1 >> 10, b2 >> 10);
    assert!(b2 * 4 < b1, "pre2 stored {b2} bytes of pages, pre1 {b1}");
    assert!(from_pre1 > 0, "pre2 left nothing to pre1");
    assert_parent_link(&pre2, &pre1);

    sleep(Duration::from_millis(500));
    let from_pre2 = dump_ok(pid, &fin, false, Some(&pre2)).left_to_parent;
    assert!(from_pre2 > 0, "the final dump left nothing to pre2");
    let bf = pages_bytes(&fin);
    assert!(bf * 4 < b1, "the final dump stored {bf} bytes of pages, pre1 {b1}");
    assert!(!holder_running(holder2), "holder {} of pre2 still runs after the final dump", holder2.0);
    assert_parent_link(&fin, &pre2);
    if let Some(map) = crit_show(&pagemap(&fin, pid)) {
        assert!(map.contains("PE_PARENT"), "no PE_PARENT entry in pagemap-{pid}.img:\n{map}");
    }

    restore_and_pass(&h, &mut child, pid, &log, &fin);
}

#[test]
fn holder_gone_falls_back_to_comparing() {
    let Some(h) = common::start("holder_gone_compares") else {
        return;
    };
    let (mut child, pid, log) = start_dirty(&h, 64);
    let (pre, fin) = (h.path("pre"), h.path("final"));

    dump_ok(pid, &pre, true, None);
    let holder = live_holder(&h, &pre);
    common::send(holder.0, Signal::KILL);
    assert!(common::wait_gone(holder.0, T), "holder {} survived SIGKILL", holder.0);
    sleep(Duration::from_millis(300));

    // Nothing is taken on trust from tracking: the dump says it is gone,
    // and compares pages with the parent's instead (the engine's
    // fallback): most are equal and left to it. The pages written since
    // the pre-dump (at least a few hundred: ~1 per ms, 32 per 100 ms, a
    // 1 MiB region remapped) must be stored, and the restored program
    // finds every byte.
    let d = dump_ok(pid, &fin, false, Some(&pre));
    let pre_s = pre.display().to_string();
    assert!(
        d.stderr.lines().any(|l| l.contains("tracking") && l.contains(&pre_s)),
        "no word that the tracking of {pre_s} is gone:\n{}",
        d.stderr
    );
    assert!(d.written >= 200, "only {} pages stored although the program kept writing", d.written);
    let stored_before = pages_bytes(&pre) / 4096;
    assert!(
        d.left_to_parent <= stored_before,
        "{} pages left to a parent that holds {stored_before}",
        d.left_to_parent
    );
    assert!(
        d.left_to_parent > stored_before / 2,
        "only {} of {stored_before} pages compared equal to the parent's",
        d.left_to_parent
    );

    restore_and_pass(&h, &mut child, pid, &log, &fin);
}

#[test]
fn holder_exits_with_the_tree() {
    let Some(h) = common::start("holder_exits_with_tree") else {
        return;
    };
    let (mut child, pid, _log) = start_dirty(&h, 16);
    let pre = h.path("pre");
    dump_ok(pid, &pre, true, None);
    let holder = live_holder(&h, &pre);
    sleep(Duration::from_millis(300));
    assert!(holder_running(holder), "holder {} exited while the tree runs", holder.0);

    common::send(pid, Signal::KILL);
    assert!(common::wait_exit(&mut child, T).is_some(), "{pid} survived SIGKILL");
    let t = Instant::now();
    let end = t + Duration::from_secs(5);
    while holder_running(holder) && Instant::now() < end {
        sleep(Duration::from_millis(20));
    }
    assert!(!holder_running(holder), "holder {} still runs 5 s after the tree exited", holder.0);
    eprintln!("  holder exited {:?} after the tree", t.elapsed());
}

#[test]
fn bad_input() {
    let Some(h) = common::start("incremental_bad_input") else {
        return;
    };
    // A parent that does not exist: refused, the program runs on untouched.
    let (mut child, pid, log) = start_dirty(&h, 16);
    let fin = h.path("final");
    let out = run_dump(pid, &fin, false, Some(Path::new("/nonexistent")));
    out.assert_one_line_error("dump --prev-images /nonexistent");
    assert!(out.stderr.contains("/nonexistent"), "the error does not name the path: {}", out.stderr);
    assert!(!fin.join("pstree.img").exists(), "images written to {}", fin.display());
    sleep(Duration::from_millis(300));
    assert!(common::alive(pid) && !common::stopped(pid), "{pid} does not run on after the refused dump");
    let out = run_dump(pid, &h.path("pre-bad"), true, Some(Path::new("/nonexistent")));
    out.assert_one_line_error("pre-dump --prev-images /nonexistent");
    assert!(out.stderr.contains("/nonexistent"), "the error does not name the path: {}", out.stderr);
    assert!(common::alive(pid) && !common::stopped(pid), "{pid} does not run on after the refused pre-dump");
    common::send(pid, Signal::USR1);
    common::expect_pass(&log, T);
    let st = common::wait_exit(&mut child, T).expect("the program did not exit after PASS");
    assert!(st.success(), "the program exited with {st}");

    // A final dump whose parent is missing: restore refuses it and leaves
    // nothing behind with the dumped pid.
    fs::rename(&log, h.path("first.log")).expect("rename log");
    let (mut child, pid, _log) = start_dirty(&h, 16);
    let (pre, fin) = (h.path("pre"), h.path("final2"));
    dump_ok(pid, &pre, true, None);
    live_holder(&h, &pre);
    sleep(Duration::from_millis(300));
    assert!(dump_ok(pid, &fin, false, Some(&pre)).left_to_parent > 0, "nothing left to the parent");
    assert!(common::wait_exit(&mut child, T).is_some(), "{pid} still runs after the final dump");
    let restore = |what: &str| {
        common::reap_orphans();
        let out = common::run_stasis(
            &["process".as_ref(), "restore".as_ref(), "-D".as_ref(), fin.as_os_str(), "--detach".as_ref()],
            Duration::from_secs(120),
        );
        out.assert_one_line_error(what);
        assert!(
            out.stderr.to_lowercase().contains("parent"),
            "{what}: the error does not mention the parent: {}",
            out.stderr
        );
        assert!(!common::alive(pid), "{what}: a process with the dumped pid {pid} runs after the refused restore");
        sleep(Duration::from_millis(300));
        assert!(!common::alive(pid), "{what}: a process with the dumped pid {pid} runs after the refused restore");
    };
    // The link dangles: its target moved away.
    let moved = h.path("pre-moved");
    fs::rename(&pre, &moved).expect("move the pre-dump away");
    restore("restore with a dangling parent link");
    fs::rename(&moved, &pre).expect("move the pre-dump back");
    // The link is gone.
    fs::remove_file(fin.join("parent")).expect("remove the parent link");
    restore("restore without its parent link");
}
