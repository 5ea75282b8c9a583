//! Shared helpers for the CLI integration tests: root and tool checks,
//! spawning test programs with stdout to a log file, running `stasis` with a
//! time limit, and a guard that kills every process a test started.
//!
//! The test process makes itself a child subreaper (`PR_SET_CHILD_SUBREAPER`)
//! so that trees restored with `--detach` are reparented to it and can be
//! reaped: on hosts whose pid 1 does not reap, a zombie would otherwise keep
//! the PID that the next restore of the same images needs.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::thread::sleep;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitOptions};

/// The `stasis` binary under test; `STASIS_TEST_BIN` may name another one
/// with the same CLI (to check the tests themselves against a reference).
pub fn stasis_bin() -> String {
    std::env::var("STASIS_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_stasis").to_string())
}

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skip with a reason, or fail when running in CI.
pub fn skip(reason: &str) {
    if ci() {
        panic!("CI=true and the test cannot run: {reason}");
    }
    eprintln!("SKIP: {reason}");
}

static HEAVY: Mutex<()> = Mutex::new(());
static SUBREAPER: Once = Once::new();
static SEQ: AtomicU32 = AtomicU32::new(0);

/// A running test: holds the lock that keeps checkpoint tests from running
/// concurrently (two cores), a scratch directory (removed on drop) and the
/// roots of every tree it started (killed on drop).
pub struct Harness {
    pub name: String,
    pub dir: PathBuf,
    roots: Mutex<Vec<i32>>,
    _lock: MutexGuard<'static, ()>,
}

/// Start a root test; `None` (after printing `SKIP`) when not root.
pub fn start(name: &str) -> Option<Harness> {
    if !rustix::process::getuid().is_root() {
        skip("needs root");
        return None;
    }
    let lock = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    SUBREAPER.call_once(|| {
        rustix::process::set_child_subreaper(Some(rustix::process::getpid())).expect("PR_SET_CHILD_SUBREAPER");
    });
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("stasis-it");
    let dir = base.join(format!("{name}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("tmp")).expect("create scratch dir");
    eprintln!("test {name}: scratch dir {}", dir.display());
    Some(Harness { name: name.to_string(), dir, roots: Mutex::new(Vec::new()), _lock: lock })
}

impl Harness {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Remember `pid` as the root of a tree to kill at the end.
    pub fn track(&self, pid: i32) {
        self.roots.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
    }

    /// Spawn `argv` with stdin from /dev/null, stdout to `log`, stderr to
    /// `log.err`, TMPDIR set to the scratch dir. `own_group` puts it in a
    /// new process group (not for programs that call setsid themselves).
    pub fn spawn<S: AsRef<OsStr>>(&self, argv: &[S], log: &Path, own_group: bool) -> Child {
        let out = fs::File::create(log).expect("create log");
        let err = fs::File::create(log.with_extension("err")).expect("create err log");
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).stdin(Stdio::null()).stdout(out).stderr(err).env("TMPDIR", self.dir.join("tmp"));
        if own_group {
            cmd.process_group(0);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {:?}: {e}", argv[0].as_ref()));
        self.track(pid_of(&child));
        child
    }

    /// `stasis process restore --images DIR --detach --pidfile F`; returns
    /// the restored root's pid.
    pub fn restore_detached(&self, images: &Path) -> i32 {
        self.restore_detached_with(images, &[])
    }

    /// [`restore_detached`](Harness::restore_detached) with extra flags
    /// (e.g. `--tcp-established`).
    pub fn restore_detached_with(&self, images: &Path, extra: &[&str]) -> i32 {
        reap_orphans();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let pidfile = self.dir.join(format!("restore-{n}.pid"));
        let mut args: Vec<&OsStr> = vec![
            "process".as_ref(),
            "restore".as_ref(),
            "--images".as_ref(),
            images.as_os_str(),
            "--detach".as_ref(),
            "--pidfile".as_ref(),
            pidfile.as_os_str(),
        ];
        args.extend(extra.iter().map(|s| OsStr::new(*s)));
        let out = run_stasis(&args, Duration::from_secs(300));
        out.assert_ok("restore --detach");
        let text = fs::read_to_string(&pidfile)
            .unwrap_or_else(|e| panic!("restore wrote no pidfile {}: {e}", pidfile.display()));
        let pid: i32 = text.trim().parse().unwrap_or_else(|e| panic!("pidfile holds {text:?}: {e}"));
        self.track(pid);
        pid
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let roots = std::mem::take(&mut *self.roots.lock().unwrap_or_else(|e| e.into_inner()));
        kill_trees(&roots);
        if std::env::var_os("STASIS_KEEP_TEST_DIR").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn pid_of(child: &Child) -> i32 {
    i32::try_from(child.id()).expect("pid fits i32")
}

// ---------------------------------------------------------------- /proc

/// (state, ppid, pgrp, session) from /proc/PID/stat.
pub fn proc_stat(pid: i32) -> Option<(char, i32, i32, i32)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    let sid = f.next()?.parse().ok()?;
    Some((state, ppid, pgrp, sid))
}

/// Reap `pid` if it is our zombie child.
pub fn reap(pid: i32) {
    if let Some(p) = Pid::from_raw(pid) {
        let _ = rustix::process::waitpid(Some(p), WaitOptions::NOHANG);
    }
}

/// Reaps every exited child of ours, including orphans of dumped trees
/// that were reparented to us (we are a subreaper): their zombies would
/// keep the PIDs a restore needs.
pub fn reap_orphans() {
    while let Ok(Some(_)) = rustix::process::wait(WaitOptions::NOHANG) {}
}

/// Alive: exists and is not a zombie (zombies of ours are reaped here).
pub fn alive(pid: i32) -> bool {
    match proc_stat(pid) {
        None => false,
        Some(('Z' | 'X', ..)) => {
            reap(pid);
            false
        }
        Some(_) => true,
    }
}

/// True if the task is stopped or traced (`T` or `t`).
pub fn stopped(pid: i32) -> bool {
    matches!(proc_stat(pid), Some(('T' | 't', ..)))
}

pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if !alive(pid) {
            return true;
        }
        sleep(Duration::from_millis(50));
    }
    !alive(pid)
}

fn all_pids() -> Vec<i32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Our own pid and its ancestors: never to be killed.
fn protected() -> BTreeSet<i32> {
    let mut set = BTreeSet::from([0, 1, 2]);
    let mut pid = i32::try_from(std::process::id()).unwrap_or(0);
    while pid > 1 && set.insert(pid) {
        pid = proc_stat(pid).map_or(0, |s| s.1);
    }
    set
}

/// Every live process of the trees rooted at `roots`: descendants, and
/// members of a process group or session led by a root.
pub fn tree_members(roots: &[i32]) -> BTreeSet<i32> {
    let keep = protected();
    let stats: Vec<(i32, (char, i32, i32, i32))> =
        all_pids().into_iter().filter_map(|p| Some((p, proc_stat(p)?))).collect();
    let mut set: BTreeSet<i32> = roots.iter().copied().filter(|p| !keep.contains(p)).collect();
    let root_set: BTreeSet<i32> = set.clone();
    loop {
        let before = set.len();
        for (pid, (_, ppid, pgrp, sid)) in &stats {
            if keep.contains(pid) || *ppid == 2 {
                continue;
            }
            if set.contains(ppid) || root_set.contains(pgrp) || root_set.contains(sid) {
                set.insert(*pid);
            }
        }
        if set.len() == before {
            break;
        }
    }
    set.into_iter().filter(|p| alive(*p)).collect()
}

/// SIGKILL every process of the trees and reap what is ours.
pub fn kill_trees(roots: &[i32]) {
    for _ in 0..5 {
        let members = tree_members(roots);
        if members.is_empty() {
            return;
        }
        for pid in &members {
            if let Some(p) = Pid::from_raw(*pid) {
                let _ = rustix::process::kill_process(p, Signal::KILL);
            }
        }
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end && members.iter().any(|p| alive(*p)) {
            sleep(Duration::from_millis(20));
        }
    }
}

pub fn send(pid: i32, sig: Signal) {
    let p = Pid::from_raw(pid).expect("pid > 0");
    rustix::process::kill_process(p, sig).unwrap_or_else(|e| panic!("kill({pid}, {sig:?}): {e}"));
}

// ---------------------------------------------------------------- logs

/// Wait until `pred(log content)` holds; panics with the log on timeout.
pub fn wait_log(log: &Path, timeout: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + timeout;
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if pred(&text) {
            return text;
        }
        if Instant::now() >= end {
            let err = fs::read_to_string(log.with_extension("err")).unwrap_or_default();
            panic!("timed out after {timeout:?} waiting for {what} in {}:\n{text}\nstderr:\n{err}", log.display());
        }
        sleep(Duration::from_millis(50));
    }
}

pub fn wait_ready(log: &Path, timeout: Duration) {
    wait_log(log, timeout, "READY", |t| t.lines().any(|l| l == "READY"));
}

/// Wait for PASS or FAIL after READY; panics on FAIL or timeout.
pub fn expect_pass(log: &Path, timeout: Duration) {
    let text = wait_log(log, timeout, "PASS or FAIL", |t| t.lines().any(|l| l == "PASS" || l.starts_with("FAIL")));
    assert!(
        text.lines().any(|l| l == "PASS"),
        "program failed its check:\n{text}\nstderr:\n{}",
        fs::read_to_string(log.with_extension("err")).unwrap_or_default()
    );
}

/// Wait for a spawned child to exit (it is reaped).
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() >= end {
            return None;
        }
        sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------- stasis

pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    pub fn assert_ok(&self, what: &str) {
        assert!(
            self.ok(),
            "stasis {what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
    }

    /// A refused command: non-zero exit, exactly one non-empty stderr line.
    pub fn assert_one_line_error(&self, what: &str) {
        assert!(
            !self.ok() && self.status.signal().is_none(),
            "{what}: expected a non-zero exit, got {} (stderr: {})",
            self.status,
            self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert!(
            lines.len() == 1 && !lines[0].trim().is_empty(),
            "{what}: expected exactly one line on stderr, got {}:\n{}",
            lines.len(),
            self.stderr
        );
        eprintln!("  {what}: {}", lines[0]);
    }
}

/// Start `stasis ARGS` with piped output (not waited for).
pub fn spawn_stasis<S: AsRef<OsStr>>(args: &[S]) -> Child {
    Command::new(stasis_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stasis")
}

/// Wait for a `spawn_stasis` child, killing it after `timeout`.
pub fn finish_stasis(mut child: Child, timeout: Duration) -> Out {
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let t1 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t2 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let status = match wait_exit(&mut child, timeout) {
        Some(st) => st,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("stasis did not finish within {timeout:?}");
        }
    };
    Out { status, stdout: t1.join().unwrap_or_default(), stderr: t2.join().unwrap_or_default() }
}

pub fn run_stasis<S: AsRef<OsStr>>(args: &[S], timeout: Duration) -> Out {
    finish_stasis(spawn_stasis(args), timeout)
}

pub fn dump_args(pid: i32, images: &Path, leave_running: bool) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> =
        vec!["process".into(), "dump".into(), pid.to_string().into(), "--images".into(), images.into()];
    if leave_running {
        v.push("--leave-running".into());
    }
    v
}

pub fn try_dump(pid: i32, images: &Path, leave_running: bool) -> Out {
    run_stasis(&dump_args(pid, images, leave_running), Duration::from_secs(300))
}

/// Dump and check the images with crit and `stasis image show`.
pub fn dump(pid: i32, images: &Path, leave_running: bool) {
    let t = Instant::now();
    try_dump(pid, images, leave_running).assert_ok("process dump");
    eprintln!("  dumped {pid} in {:?}", t.elapsed());
    check_images(images);
}

pub fn restore_args(images: &Path) -> Vec<std::ffi::OsString> {
    vec!["process".into(), "restore".into(), "--images".into(), images.into()]
}

const CRIT: &str = "/usr/bin/crit";

/// Outside checks of an image dir: CRIU's `crit` must read it, and so must
/// `stasis image show`.
pub fn check_images(images: &Path) {
    run_stasis(&["image".as_ref(), "show".as_ref(), images.as_os_str()], Duration::from_secs(120))
        .assert_ok("image show");
    if !Path::new(CRIT).exists() {
        skip("crit checks: /usr/bin/crit missing (Debian package criu)");
        return;
    }
    let pstree = images.join("pstree.img");
    let runs: [Vec<&OsStr>; 3] = [
        vec!["decode".as_ref(), "-i".as_ref(), pstree.as_os_str()],
        vec!["x".as_ref(), images.as_os_str(), "ps".as_ref()],
        vec!["x".as_ref(), images.as_os_str(), "mems".as_ref()],
    ];
    for args in runs {
        let out = Command::new(CRIT).args(&args).output().expect("run crit");
        assert!(
            out.status.success(),
            "crit {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------- programs

/// Path of a compiled test program, building them all once.
pub fn prog(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let script = repo_root().join("scripts/build-progs.sh");
        let st = Command::new("bash").arg(&script).status().expect("run build-progs.sh");
        assert!(st.success(), "{} failed", script.display());
    });
    repo_root().join("tests/progs/bin").join(name)
}

pub fn has_avx() -> bool {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "avx"))
}

pub fn python3() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// The ZDTM cycle for a program: start, READY, dump (killing it), check the
/// original is gone, restore --detach with the same pid, SIGUSR1, PASS.
pub fn zdtm_cycle<S: AsRef<OsStr>>(h: &Harness, argv: &[S], own_group: bool, ready: Duration, check: Duration) {
    let log = h.path("out.log");
    let images = h.path("images");
    let mut child = h.spawn(argv, &log, own_group);
    let pid = pid_of(&child);
    wait_ready(&log, ready);
    let members = tree_members(&[pid]);
    dump(pid, &images, false);
    let st = wait_exit(&mut child, Duration::from_secs(30));
    assert!(st.is_some(), "process {pid} still runs after dump");
    for m in &members {
        assert!(wait_gone(*m, Duration::from_secs(10)), "tree member {m} still runs after dump");
    }
    let after_dump = fs::read_to_string(&log).unwrap_or_default();
    assert!(!after_dump.contains("PASS") && !after_dump.contains("FAIL"), "log after dump:\n{after_dump}");
    let t = Instant::now();
    let rpid = h.restore_detached(&images);
    eprintln!("  restored {rpid} in {:?}", t.elapsed());
    assert_eq!(rpid, pid, "restore must keep the pid");
    assert!(alive(rpid), "restored process {rpid} is not running");
    send(rpid, Signal::USR1);
    expect_pass(&log, check);
    assert!(wait_gone(rpid, Duration::from_secs(30)), "restored {rpid} did not exit after PASS");
}
