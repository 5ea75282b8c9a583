//! The per-container monitor (podman's conmon): the `stasis` binary in a
//! hidden mode, one process per running container, no daemon.
//!
//! It forks the container's init into new namespaces, puts it into the
//! container's cgroups, connects its network namespace while the init
//! waits on a pipe, then lets it exec. It reports "ok" (or one error line)
//! on its stdout to the CLI that started it and closes that pipe. Then it
//! appends the init's stdout/stderr to `ctr.log` (k8s-file format: `TIME
//! STREAM F LINE`), reaps the init, tears down network and cgroups, and
//! records the exit code and time in the runroot state.

use crate::cgroup;
use crate::error::{Ctx, Result, RuntimeError};
use crate::image;
use crate::network::lock::{NetLock, OpenLock};
use crate::network::{parse_publish, Network, PortMapping};
use crate::rootfs::{self, InitSpec};
use crate::store::{self, now_ns, ContainerConfig, ContainerState, Status, Store};
use stasis_sys::ns::{self, Forked};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Namespaces every container gets.
const NS_FLAGS: i32 = ns::CLONE_NEWPID | ns::CLONE_NEWNS | ns::CLONE_NEWUTS | ns::CLONE_NEWIPC | ns::CLONE_NEWNET;

/// Start time (field 22 of /proc/PID/stat) of a live, non-zombie process.
pub fn start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    if matches!(f.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    f.get(19)?.parse().ok()
}

/// Whether `pid` still is the process that started at `start`.
pub fn alive(pid: i32, start: u64) -> bool {
    start_time(pid).is_some_and(|t| start == 0 || t == start)
}

/// Container log line in k8s-file format.
fn log_line(stream: &str, line: &[u8]) -> Vec<u8> {
    let mut v = format!("{} {stream} F ", store::rfc3339(now_ns())).into_bytes();
    v.extend_from_slice(line);
    v.push(b'\n');
    v
}

/// Copies one pipe into the log, line by line.
fn pump(mut pipe: File, log: Arc<Mutex<File>>, stream: &'static str) {
    let mut buf = vec![0u8; 65536];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut out = Vec::new();
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            out.extend(log_line(stream, &pending[..i]));
            pending.drain(..=i);
        }
        if !out.is_empty() {
            let _ = log.lock().unwrap_or_else(|e| e.into_inner()).write_all(&out);
        }
    }
    if !pending.is_empty() {
        let _ = log.lock().unwrap_or_else(|e| e.into_inner()).write_all(&log_line(stream, &pending));
    }
}

/// Tears down what a started container holds on the host: its network
/// (veth, port rules, address) and cgroups. Idempotent.
pub fn cleanup(store: &Store, id: &str, st: &ContainerState) {
    if let Ok(net) = Network::open(&store.root) {
        if let Some(ns) = &st.net {
            if let Err(e) = net.detach(id, ns) {
                log::warn!("detaching the network of {id}: {e}");
            }
        }
        if let Err(e) = net.release(id) {
            log::warn!("releasing the address of {id}: {e}");
        }
    }
    cgroup::remove_container(&store.runroot, id, &st.cgroups);
    let _ = fs::remove_dir(store.ctr_run_dir(id).join("merged"));
}

/// Run-dir marker of a checkpoint that dumped TCP connections under a
/// network lock: the monitor then keeps the container's network namespace
/// until its veth is gone. A namespace whose last process exits is torn
/// down asynchronously, its nftables tables before its devices: for a
/// moment packets still reach it through the veth with neither a socket
/// nor the lock, and every dumped connection was reset (found with 100
/// connections, ~1 cycle in 10).
pub const HOLD_NETNS: &str = "hold-netns";

/// Everything the parent side set up; torn down on failure.
struct Started {
    pid: i32,
    cgroups: Vec<PathBuf>,
    net: Option<crate::network::NetState>,
}

fn ports_of(cfg: &ContainerConfig) -> Result<Vec<PortMapping>> {
    cfg.publish.iter().map(|p| parse_publish(p).ctx(|| "parsing -p")).collect()
}

/// Parent side after fork: cgroups, network, go, exec check.
fn bring_up(store: &Store, cfg: &mut ContainerConfig, s: &mut Started, go: &mut File, err: &mut File) -> Result<()> {
    let t = std::time::Instant::now();
    // Moving a task into a cgroup waits for an RCU grace period per v1
    // hierarchy (~10 ms for the nine here): done beside the network setup,
    // which spends its time waiting for `ip` and `nft`.
    let (cgroups, pid) = (s.cgroups.clone(), s.pid);
    let joined = std::thread::spawn(move || cgroup::add_pid(&cgroups, pid));
    let attached = (|| {
        let net = Network::open(&store.root).ctx(|| "opening the network state")?;
        let want: Option<Ipv4Addr> = cfg.ip.as_deref().and_then(|s| s.parse().ok());
        let ip = net.allocate(&cfg.id, want).ctx(|| format!("allocating an address for {}", cfg.name))?;
        let ports = ports_of(cfg)?;
        let state =
            net.attach(&cfg.id, pid, ip, cfg.mac.as_deref(), &ports).ctx(|| format!("connecting {}", cfg.name))?;
        Ok((ip, state))
    })();
    let joined = joined.join().unwrap_or_else(|_| Err(RuntimeError::Invalid("joining the cgroups panicked".into())));
    log::debug!("monitor: init {pid} in its cgroups after {:?}", t.elapsed());
    let (ip, state) = match (attached, joined) {
        (Ok(v), Ok(())) => v,
        (Ok((_, state)), Err(e)) => {
            s.net = Some(state);
            return Err(e);
        }
        (Err(e), _) => return Err(e),
    };
    if cfg.ip.is_none() || cfg.mac.is_none() {
        cfg.ip = Some(ip.to_string());
        cfg.mac = Some(state.mac.clone());
        s.net = Some(state);
        store::write_json_atomic(&store.ctr_dir(&cfg.id).join("config.json"), cfg)?;
    } else {
        s.net = Some(state);
    }
    log::debug!("monitor: cgroups and network of {} ready in {:?}", cfg.name, t.elapsed());
    go.write_all(b"g").ctx(|| "releasing the container's init")?;
    let mut msg = String::new();
    let _ = err.read_to_string(&mut msg);
    if !msg.is_empty() {
        return Err(RuntimeError::Invalid(format!("starting container {}: {msg}", cfg.name)));
    }
    Ok(())
}

/// A restore the monitor runs instead of executing the command: the
/// container's init is the root of the checkpointed tree.
#[derive(Clone, Debug)]
pub struct RestoreReq {
    /// The checkpoint directory (with `checkpoint/`, the images).
    pub dir: PathBuf,
    pub tcp_established: bool,
    /// Restore established TCP connections closed instead.
    pub tcp_close: bool,
    /// Remove `dir` once the tree runs (podman's in-place checkpoint is
    /// consumed by its restore); done after the report, off the CLI's clock.
    pub remove_after: bool,
}

/// The monitor's main: `ready` gets "ok PID" or "error: MSG" once. Returns
/// the monitor's exit status.
pub fn run(store: &Store, id: &str, mut ready: File, restore: Option<RestoreReq>) -> i32 {
    let _ = ns::setsid();
    let mut cfg: ContainerConfig = match store::read_json(&store.ctr_dir(id).join("config.json")) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(ready, "error: {e}");
            return 1;
        }
    };
    // A failed restore leaves the container as it was (checkpointed).
    let before = store.read_state(id);
    let mut started = Started { pid: 0, cgroups: Vec::new(), net: None };
    let res = start(store, &mut cfg, &mut started, restore.as_ref());
    let (pid, out, errp, open_lock) = match res {
        Ok(v) => v,
        Err(e) => {
            let st =
                ContainerState { cgroups: started.cgroups.clone(), net: started.net.clone(), ..Default::default() };
            if started.pid > 0 {
                let _ = stasis_sys::proc_ctl::kill(started.pid, libc::SIGKILL);
                let _ = stasis_sys::proc_ctl::wait_exit(started.pid);
            }
            cleanup(store, id, &st);
            let after = match restore {
                Some(_) => ContainerState { net: None, pid: 0, monitor_pid: 0, ..before },
                None => ContainerState::default(),
            };
            let _ = store.write_state(id, &after);
            let _ = writeln!(ready, "error: {}", crate::error::one_line(&e));
            return 1;
        }
    };
    let _ = store.mark_checkpointed(id, false);
    let mut st = ContainerState {
        status: Status::Running,
        pid,
        pid_start: start_time(pid).unwrap_or(0),
        monitor_pid: std::process::id() as i32,
        started_at: Some(now_ns()),
        net: started.net.clone(),
        cgroups: started.cgroups.clone(),
        restored: restore.is_some(),
        ..Default::default()
    };
    // The restored checkpoint (and its pre-checkpoint, which served this
    // restore only) leave their places before the CLI hears of it: a
    // checkpoint taken right after gets fresh ones. Removing their files
    // and the open lock's table takes a while (tens of ms on a slow disk;
    // an RCU grace period): done once the CLI has returned.
    let trash = match &restore {
        Some(r) if r.remove_after => vec![retire(store, &r.dir), crate::precheckpoint::retire_pre(store, id)],
        _ => Vec::new(),
    };
    if let Err(e) = store.write_state(id, &st) {
        let _ = writeln!(ready, "error: {}", crate::error::one_line(&e));
    } else {
        let _ = writeln!(ready, "ok {pid}");
    }
    drop(ready);
    // Nothing of ours may keep the CLI's pipe open: stdout becomes /dev/null.
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = stasis_sys::fd::dup_to(null.as_fd(), 1);
    }
    if let Some(l) = open_lock {
        l.remove();
    }
    for dir in trash.into_iter().flatten() {
        remove_retired(&dir);
    }
    let log_path = store.ctr_dir(id).join("ctr.log");
    let log = OpenOptions::new().create(true).append(true).open(&log_path);
    let log =
        Arc::new(Mutex::new(log.unwrap_or_else(|_| File::options().write(true).open("/dev/null").expect("/dev/null"))));
    let (l1, l2) = (log.clone(), log);
    let t1 = std::thread::spawn(move || pump(out, l1, "stdout"));
    let t2 = std::thread::spawn(move || pump(errp, l2, "stderr"));
    let mut netns = File::open(format!("/proc/{pid}/ns/net")).ok();
    let code = stasis_sys::proc_ctl::wait_exit(pid).unwrap_or(-1);
    let hold = store.ctr_run_dir(id).join(HOLD_NETNS);
    if fs::remove_file(&hold).is_err() {
        // Nothing to protect: the kernel tears the namespace and its veth
        // down (faster than our deleting the veth: the next restore waits
        // for this cleanup).
        netns = None;
    }
    let _ = t1.join();
    let _ = t2.join();
    cleanup(store, id, &st);
    drop(netns);
    st.status = Status::Exited;
    st.exit_code = Some(code);
    st.finished_at = Some(now_ns());
    st.net = None;
    if store.ctr_dir(id).exists() {
        let _ = store.write_state(id, &st);
    }
    0
}

/// Forks the init and brings the container up (restoring the checkpoint
/// of `restore` into it, if given); returns the init's pid, the read ends
/// of its stdout and stderr, and the lifted network lock of a TCP restore
/// (to remove once the CLI has its answer).
fn start(
    store: &Store,
    cfg: &mut ContainerConfig,
    s: &mut Started,
    restore: Option<&RestoreReq>,
) -> Result<(i32, File, File, Option<OpenLock>)> {
    let img = image::find(store, &cfg.image_id)?;
    // Before the fork: the plan says where the init's scratch area goes and
    // where it keeps our pidfd.
    let plan = match restore {
        Some(r) => Some(crate::checkpoint::plan_restore(r)?),
        None => None,
    };
    let me = match &plan {
        Some(_) => {
            Some(stasis_sys::fd::pidfd_open(std::process::id() as i32).ctx(|| "opening a pidfd of the monitor")?)
        }
        None => None,
    };
    let then = match (&plan, &me) {
        (Some(p), Some(me)) => rootfs::Then::Restore {
            scratch: p.scratch,
            keep: stasis_sys::proc_ctl::StubFd { pidfd: std::os::fd::AsRawFd::as_raw_fd(me), at: p.stub_fd },
        },
        _ => rootfs::Then::Exec,
    };
    let cdir = store.ctr_dir(&cfg.id);
    let merged = store.ctr_run_dir(&cfg.id).join("merged");
    for d in [cdir.join("upper"), cdir.join("work"), merged.clone()] {
        fs::create_dir_all(&d).ctx(|| format!("creating {}", d.display()))?;
    }
    let spec = InitSpec {
        lowers: image::lower_dirs(store, &img),
        upper: cdir.join("upper"),
        work: cdir.join("work"),
        merged,
        hostname: cfg.hostname.clone(),
        argv: cfg.command.clone(),
        env: cfg.env.clone(),
        workdir: cfg.workdir.clone(),
    };
    let t = std::time::Instant::now();
    s.cgroups = cgroup::create(&store.runroot, &cfg.id)?;
    log::debug!("monitor: cgroups of {} created in {:?}", cfg.name, t.elapsed());
    let pipe = || stasis_sys::fd::pipe(libc::O_CLOEXEC).ctx(|| "creating a pipe");
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let (x_r, x_w) = pipe()?;
    match ns::fork_into_namespaces(NS_FLAGS).ctx(|| "creating the container's namespaces")? {
        Forked::Child => {
            let _ = stasis_sys::fd::dup_to(out_w.as_fd(), 1);
            let _ = stasis_sys::fd::dup_to(err_w.as_fd(), 2);
            let extra = vec![out_r, err_r, go_w, x_r, out_w, err_w];
            rootfs::init_main(&spec, File::from(go_r), File::from(x_w), extra, then)
        }
        Forked::Parent(pid) => {
            s.pid = pid;
            drop((go_r, x_w));
            let (mut go, mut x) = (File::from(go_w), File::from(x_r));
            // Restored TCP connections get no packet (and so send no RST)
            // until their sockets are back: lock before the veth exists.
            let lock = match restore.filter(|r| r.tcp_established) {
                Some(_) => Some(NetLock::lock(&cfg.id, pid).ctx(|| format!("locking the network of {}", cfg.name))?),
                None => None,
            };
            bring_up(store, cfg, s, &mut go, &mut x)?;
            if let (Some(plan), Some(r)) = (plan, restore) {
                // The restored tree's stdout/stderr are our pipes' write ends.
                let stdio = (out_w.as_raw_fd(), err_w.as_raw_fd());
                crate::checkpoint::restore_into(store, cfg, r, plan, pid, stdio)?;
            }
            drop((me, out_w, err_w));
            let open = match lock {
                Some(l) => Some(l.unlock().ctx(|| format!("unlocking the network of {}", cfg.name))?),
                None => None,
            };
            log::debug!("monitor: {} (pid {pid}) runs after {:?}", cfg.name, t.elapsed());
            Ok((pid, File::from(out_r), File::from(err_r), open))
        }
    }
}

/// Removes a directory [`retire`] moved aside (or could not move).
pub(crate) fn remove_retired(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir) {
        log::warn!("removing {}: {e}", dir.display());
    }
}

/// Moves directory `dir` into the store's scratch space, to be removed;
/// `None` if it is not there. Where it cannot move, it is removed now.
pub(crate) fn retire(store: &Store, dir: &Path) -> Option<PathBuf> {
    if !dir.exists() {
        return None;
    }
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let trash = store.tmp_dir().join(format!("retired-{}-{n}", std::process::id()));
    if fs::create_dir_all(store.tmp_dir()).and_then(|_| fs::rename(dir, &trash)).is_ok() {
        return Some(trash);
    }
    remove_retired(dir);
    None
}
