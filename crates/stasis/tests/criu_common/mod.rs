//! Helpers of `criu_compat.rs`: Stasis installed as `criu` (a symlink in
//! the scratch dir, first in PATH of the runtime's commands only), a runc
//! container with its own state dir and bundle, a podman store of its own,
//! pipes read by threads, and leftovers checks (processes, mounts).
#![allow(dead_code)]

mod podman;
pub use podman::{Podman, ULIMITS};

use crate::common::{self, Harness, Out};
use serde_json::Value;
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long any one step may take on a loaded two-core VM.
pub const T: Duration = Duration::from_secs(60);

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or run) uses: `prefix-PID-N`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// True if every tool is on PATH; otherwise skips (fails under CI=true).
pub fn have(tools: &[&str]) -> bool {
    for t in tools {
        let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
            || Path::new(t).is_file();
        if !found {
            common::skip(&format!("{t} missing (Debian packages runc, podman, criu, util-linux, iproute2, curl)"));
            return false;
        }
    }
    true
}

// ---------------------------------------------------------------- commands

/// Runs `cmd` (stdin /dev/null, output captured), killing it after
/// `timeout`.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Out {
    try_run_timeout(cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run_timeout`] that reports instead of panicking (for drop guards).
pub fn try_run_timeout(cmd: &mut Command, timeout: Duration) -> Result<Out, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {what}: {e}"))?;
    let out = Stream::spawn(child.stdout.take().expect("stdout"));
    let err = Stream::spawn(child.stderr.take().expect("stderr"));
    let Some(status) = common::wait_exit(&mut child, timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "{what} did not finish within {timeout:?}:\nstdout:\n{}\nstderr:\n{}",
            out.text(),
            err.text()
        ));
    };
    // The output pipes may be held by a process the command left running
    // (a detached container): take what arrived.
    out.wait_eof(Duration::from_secs(2));
    err.wait_eof(Duration::from_secs(2));
    Ok(Out { status, stdout: out.text(), stderr: err.text() })
}

/// Panics unless `out` succeeded, with its output and the tails of `logs`.
pub fn expect_ok(out: &Out, what: &str, logs: &[&Path]) {
    if out.ok() {
        return;
    }
    let mut msg = format!("{what} failed ({}):\nstdout:\n{}\nstderr:\n{}", out.status, out.stdout, out.stderr);
    for l in logs {
        msg.push_str(&format!("\n--- {} (tail):\n{}", l.display(), tail(l, 40)));
    }
    panic!("{msg}");
}

/// The last `n` lines of a file (or why there are none).
pub fn tail(path: &Path, n: usize) -> String {
    match fs::read_to_string(path) {
        Ok(t) => {
            let lines: Vec<String> = t
                .lines()
                .map(|l| if l.len() > 300 { format!("{}...", &l[..l.floor_char_boundary(300)]) } else { l.to_string() })
                .collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({e})"),
    }
}

/// Waits until `f` returns `Some`, panicking with `what` after `timeout`.
pub fn poll<R>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<R>) -> R {
    let end = Instant::now() + timeout;
    loop {
        if let Some(r) = f() {
            return r;
        }
        assert!(Instant::now() < end, "timed out after {timeout:?} waiting for {what}");
        sleep(Duration::from_millis(50));
    }
}

/// `crit ARGS` (Debian's criu package); its stdout.
pub fn crit(args: &[&std::ffi::OsStr]) -> String {
    let out = run_timeout(Command::new("/usr/bin/crit").args(args), T);
    assert!(out.ok(), "crit {args:?} failed ({}):\n{}", out.status, out.stderr);
    out.stdout
}

// ---------------------------------------------------------------- pipes

/// What a pipe delivers, read to its end by a thread.
pub struct Stream {
    buf: Arc<Mutex<String>>,
    eof: Arc<AtomicBool>,
}

impl Stream {
    pub fn spawn(mut r: impl Read + Send + 'static) -> Stream {
        let buf = Arc::new(Mutex::new(String::new()));
        let eof = Arc::new(AtomicBool::new(false));
        let (b, e) = (buf.clone(), eof.clone());
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match r.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        b.lock().unwrap_or_else(|e| e.into_inner()).push_str(&String::from_utf8_lossy(&chunk[..n]))
                    }
                }
            }
            e.store(true, Ordering::SeqCst);
        });
        Stream { buf, eof }
    }

    pub fn text(&self) -> String {
        self.buf.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn numbers(&self) -> Vec<u64> {
        numbers(&self.text())
    }

    /// True once every writer has closed the pipe.
    pub fn eof(&self) -> bool {
        self.eof.load(Ordering::SeqCst)
    }

    pub fn wait_eof(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while !self.eof() && Instant::now() < end {
            sleep(Duration::from_millis(20));
        }
        self.eof()
    }

    /// Waits until at least `n` numbers arrived.
    pub fn wait_numbers(&self, n: usize, what: &str) -> Vec<u64> {
        poll(T, &format!("{n} numbers from {what} (got {:?})", self.text()), || {
            let v = self.numbers();
            (v.len() >= n).then_some(v)
        })
    }
}

/// The lines of `text` that are numbers (a counter's output).
pub fn numbers(text: &str) -> Vec<u64> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Asserts that `v` counts up by one from `first`.
pub fn assert_counts_from(v: &[u64], first: u64, what: &str) {
    let want: Vec<u64> = (first..first + v.len() as u64).collect();
    assert_eq!(v, want.as_slice(), "{what}: the counter should go on from {first} by one");
}

// ---------------------------------------------------------------- /proc

/// Live processes whose command line contains `marker`.
pub fn procs_with(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(rd) = fs::read_dir("/proc") else { return Vec::new() };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| *p != me)
        .filter(|p| {
            fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(marker))
        })
        .filter(|p| common::alive(*p))
        .collect()
}

/// SIGKILLs every process whose command line contains `marker`.
pub fn kill_marked(marker: &str) {
    for _ in 0..5 {
        let left = procs_with(marker);
        if left.is_empty() {
            return;
        }
        for p in &left {
            if let Some(pid) = rustix::process::Pid::from_raw(*p) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        for p in left {
            common::wait_gone(p, Duration::from_secs(2));
        }
    }
}

/// What `pid` sees mounted, in mountinfo's order: "MOUNTPOINT OPTIONS"
/// per mount (fields 5 and 6). Not the file system type: runc names its
/// masked paths (/proc/keys, a bind of the container's /dev/null) as
/// external mounts to be bound from the host's /dev/null at restore, as
/// CRIU does, so their type changes from tmpfs to devtmpfs.
pub fn mountpoints(pid: i32) -> Vec<String> {
    let text =
        fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_else(|e| panic!("mountinfo of {pid}: {e}"));
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some(format!("{} {}", f.get(4)?, f.get(5)?))
        })
        .collect()
}

/// Mount points of the host under `dir`.
pub fn host_mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| m == &d || m.starts_with(&format!("{d}/")))
        .collect()
}

/// Inode of a namespace file (`/proc/PID/ns/net`, a bind-mounted netns).
pub fn ns_ino(path: &str) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&fs::metadata(path).unwrap_or_else(|e| panic!("stat {path}: {e}")))
}

/// Real uid of a process.
pub fn uid_of(pid: i32) -> Option<u32> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().next()?.parse().ok())
}

/// Direct children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    let Ok(rd) = fs::read_dir("/proc") else { return Vec::new() };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| common::proc_stat(*p).is_some_and(|s| s.1 == pid))
        .collect()
}

/// A TCP port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0").expect("bind").local_addr().expect("addr").port()
}

/// HTTP status and body of a GET ("000" when nothing answers).
pub fn http_get(url: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "3", "-w", "\n%{http_code}", url])
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}

/// Waits until `url` answers 200; returns the body.
pub fn wait_200(url: &str) -> String {
    poll(T, &format!("{url} to answer 200"), || {
        let (code, body) = http_get(url);
        (code == "200").then_some(body)
    })
}

// ---------------------------------------------------------------- criu

/// A directory holding `criu`, a symlink to the `stasis` under test.
pub struct CriuBin {
    pub dir: PathBuf,
}

impl CriuBin {
    pub fn new(h: &Harness) -> CriuBin {
        let dir = h.path("criu-bin");
        fs::create_dir_all(&dir).expect("create criu-bin");
        std::os::unix::fs::symlink(common::stasis_bin(), dir.join("criu")).expect("symlink criu");
        CriuBin { dir }
    }

    pub fn criu(&self) -> PathBuf {
        self.dir.join("criu")
    }

    /// PATH with our `criu` first.
    pub fn path_env(&self) -> OsString {
        let mut dirs = vec![self.dir.clone()];
        if let Some(p) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&p));
        }
        std::env::join_paths(dirs).expect("PATH")
    }
}

/// A counter in POSIX sh that echoes 1, 2, ... every 0.2 s, optionally
/// also into /tmp/count; `marker` makes its processes findable.
pub fn counter_script(marker: &str, to_file: bool) -> String {
    let file = if to_file { " echo $i > /tmp/count;" } else { "" };
    format!(": {marker}; i=0; while true; do i=$((i+1)); echo $i;{file} sleep 0.2; done")
}

// ---------------------------------------------------------------- runc

/// One runc container: its own state dir (`runc --root`), a bundle with a
/// busybox rootfs running [`counter_script`]. Killed and deleted on drop.
pub struct Runc {
    pub root: PathBuf,
    pub bundle: PathBuf,
    pub id: String,
    pub marker: String,
    path_env: OsString,
    scratch: PathBuf,
}

impl Runc {
    pub fn new(h: &Harness, criu: &CriuBin, name: &str, hostname: &str) -> Runc {
        let id = unique(name);
        let bundle = h.path(&format!("bundle-{name}"));
        let rootfs = bundle.join("rootfs");
        fs::create_dir_all(&rootfs).expect("create rootfs");
        let tar = crate::ctr_common::fixtures().join("busybox.tar");
        let out = run_timeout(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&rootfs), T);
        assert!(out.ok(), "unpacking {}: {}", tar.display(), out.stderr);
        let r = Runc {
            root: h.path(&format!("runc-state-{name}")),
            bundle,
            marker: format!("stasis-criu-marker-{id}"),
            id,
            path_env: criu.path_env(),
            scratch: h.dir.clone(),
        };
        let out = r.run(&["spec".as_ref(), "--bundle".as_ref(), r.bundle.as_os_str()]);
        expect_ok(&out, "runc spec", &[]);
        let cfg_path = r.bundle.join("config.json");
        let mut cfg: Value = serde_json::from_str(&fs::read_to_string(&cfg_path).expect("config.json")).expect("json");
        cfg["process"]["terminal"] = Value::Bool(false);
        cfg["process"]["args"] = serde_json::json!(["sh", "-c", counter_script(&r.marker, true)]);
        cfg["root"]["readonly"] = Value::Bool(false);
        cfg["hostname"] = Value::String(hostname.to_string());
        fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).unwrap()).expect("write config.json");
        r
    }

    /// `runc --root STATE ARGS` with our `criu` first in PATH, run from
    /// the scratch dir (not the bundle).
    pub fn cmd<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new("runc");
        c.arg("--root").arg(&self.root).args(args).env("PATH", &self.path_env).current_dir(&self.scratch);
        c
    }

    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Out {
        run_timeout(&mut self.cmd(args), T)
    }

    /// Runs a detached `runc` command whose stdio the container keeps:
    /// returns the container's stdout and stderr pipes.
    fn detached(&self, mut cmd: Command, what: &str, logs: &[&Path]) -> (Stream, Stream) {
        let mut child: Child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn runc: {e}"));
        let out = Stream::spawn(child.stdout.take().expect("stdout"));
        let err = Stream::spawn(child.stderr.take().expect("stderr"));
        let status = common::wait_exit(&mut child, T).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {T:?}: {}", err.text());
        });
        if !status.success() {
            err.wait_eof(Duration::from_secs(2));
            let o = Out { status, stdout: out.text(), stderr: err.text() };
            expect_ok(&o, what, logs);
        }
        (out, err)
    }

    /// `runc run -d ID`: the container's stdout and stderr.
    pub fn start(&self) -> (Stream, Stream) {
        let mut c = self.cmd(&["run", "-d", "--bundle"]);
        c.arg(&self.bundle).arg(&self.id);
        self.detached(c, "runc run -d", &[])
    }

    /// `runc checkpoint [EXTRA] --image-path IMG --work-path WORK ID`.
    pub fn checkpoint(&self, extra: &[&str], images: &Path, work: &Path) -> Out {
        let mut c = self.cmd(&["checkpoint"]);
        c.args(extra).arg("--image-path").arg(images).arg("--work-path").arg(work).arg(&self.id);
        run_timeout(&mut c, T)
    }

    /// `runc restore -d --image-path IMG --work-path WORK --bundle B ID`
    /// with new stdio pipes: the restored container's stdout and stderr.
    pub fn restore(&self, images: &Path, work: &Path) -> (Stream, Stream) {
        let mut c = self.cmd(&["restore", "-d", "--image-path"]);
        c.arg(images).arg("--work-path").arg(work).arg("--bundle").arg(&self.bundle).arg(&self.id);
        self.detached(c, "runc restore -d", &[&work.join("restore.log")])
    }

    /// `runc state ID`, or `None` when runc does not know the container.
    pub fn state(&self) -> Option<Value> {
        let out = self.run(&["state", &self.id]);
        out.ok().then(|| serde_json::from_str(&out.stdout).expect("runc state json"))
    }

    /// The host pid of the container's init.
    pub fn pid(&self) -> i32 {
        let st = self.state().unwrap_or_else(|| panic!("runc does not know {}", self.id));
        assert_eq!(st["status"], "running", "{st}");
        st["pid"].as_i64().expect("pid") as i32
    }
}

impl Drop for Runc {
    fn drop(&mut self) {
        let _ = try_run_timeout(&mut self.cmd(&["kill", &self.id, "KILL"]), T);
        let _ = try_run_timeout(&mut self.cmd(&["delete", "-f", &self.id]), T);
        kill_marked(&self.marker);
        common::reap_orphans();
    }
}
