//! Container lifecycle verbs over the store: create, start (by spawning a
//! monitor), stop, kill, rm, listing and inspection, exec.
//!
//! The runtime state is re-checked against the kernel on every read
//! ([`refresh`]): a "running" container whose init is gone (pid dead or
//! reused, told apart by its start time) and whose monitor is gone too is
//! recorded as exited, and what it held (network, cgroups) is released.

use crate::error::{Ctx, Result, RuntimeError};
use crate::image;
use crate::monitor::{self, alive, start_time, RestoreReq};
use crate::network::parse_publish;
use crate::store::{self, now_ns, ContainerConfig, ContainerState, Status, Store};
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// What `create`/`run` were asked for.
#[derive(Debug, Default, Clone)]
pub struct CreateOpts {
    pub image: String,
    pub name: Option<String>,
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub hostname: Option<String>,
    pub publish: Vec<String>,
}

fn valid_name(n: &str) -> bool {
    let mut b = n.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.bytes().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

/// Records a new container (config, upper/work dirs); nothing runs yet.
pub fn create(store: &Store, o: &CreateOpts) -> Result<ContainerConfig> {
    let img = image::find(store, &o.image)?;
    for p in &o.publish {
        parse_publish(p).ctx(|| "invalid -p")?;
    }
    for e in &o.env {
        if !e.contains('=') || e.starts_with('=') {
            return Err(RuntimeError::Invalid(format!("invalid -e {e:?}: expected KEY=VALUE")));
        }
    }
    let d = image::defaults(store, &img);
    let mut command = d.entrypoint.clone();
    command.extend(if o.command.is_empty() { d.cmd.clone() } else { o.command.clone() });
    if command.is_empty() {
        return Err(RuntimeError::Invalid(format!("no command given and image {} has none", o.image)));
    }
    let mut env = d.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    for e in &o.env {
        let key = e.split('=').next().unwrap_or("");
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    let id = store::new_id();
    let name = o.name.clone().unwrap_or_else(|| format!("stasis_{}", &id[..8]));
    if !valid_name(&name) {
        return Err(RuntimeError::Invalid(format!("invalid container name {name:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*")));
    }
    let hostname = o.hostname.clone().unwrap_or_else(|| id[..12].to_string());
    if hostname.is_empty() || hostname.len() > 64 {
        return Err(RuntimeError::Invalid(format!("invalid hostname {hostname:?}")));
    }
    let cfg = ContainerConfig {
        id: id.clone(),
        name: name.clone(),
        image_id: img.id.clone(),
        image_name: img.names.first().cloned().unwrap_or_else(|| img.id[..12].to_string()),
        command,
        env: env.clone(),
        workdir: o.workdir.clone().or(Some(d.workdir)).filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into()),
        hostname,
        publish: o.publish.clone(),
        ip: None,
        mac: None,
        created: now_ns(),
    };
    let _lock = store.lock_store()?;
    if let Some(c) = store.containers().iter().find(|c| c.name == name) {
        return Err(RuntimeError::Conflict(format!(
            "the container name {name:?} is already in use by {}",
            &c.id[..12]
        )));
    }
    let dir = store.ctr_dir(&id);
    let res = (|| {
        fs::create_dir_all(dir.join("upper")).ctx(|| format!("creating {}", dir.display()))?;
        fs::create_dir_all(dir.join("work")).ctx(|| format!("creating {}", dir.display()))?;
        store::write_json_atomic(&dir.join("config.json"), &cfg)
    })();
    if let Err(e) = res {
        let _ = fs::remove_dir_all(&dir);
        return Err(e);
    }
    Ok(cfg)
}

/// The state, corrected if the container died without its monitor
/// recording it. Waits up to a second for a live monitor to record.
pub fn refresh(store: &Store, cfg: &ContainerConfig) -> ContainerState {
    let st = store.read_state(&cfg.id);
    if st.status != Status::Running || alive(st.pid, st.pid_start) {
        return st;
    }
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end && start_time(st.monitor_pid).is_some() {
        let now = store.read_state(&cfg.id);
        if now.status != Status::Running {
            return now;
        }
        sleep(Duration::from_millis(10));
    }
    let now = store.read_state(&cfg.id);
    if now.status != Status::Running {
        return now;
    }
    finalize(store, &cfg.id, now, None)
}

/// Records a dead container as exited and releases what it held.
fn finalize(store: &Store, id: &str, mut st: ContainerState, code: Option<i32>) -> ContainerState {
    monitor::cleanup(store, id, &st);
    st.status = Status::Exited;
    st.exit_code = code.or(st.exit_code).or(Some(137));
    st.finished_at = Some(now_ns());
    st.net = None;
    let _ = store.write_state(id, &st);
    st
}

pub fn is_running(store: &Store, cfg: &ContainerConfig) -> bool {
    refresh(store, cfg).status == Status::Running
}

/// Starts the monitor (`exe --root R --runroot RR container-monitor ID`)
/// and waits for its report. Returns the init's pid.
pub fn start(store: &Store, cfg: &ContainerConfig, exe: &Path) -> Result<i32> {
    let _lock = store.lock_container(&cfg.id)?;
    if is_running(store, cfg) {
        return Err(RuntimeError::Conflict(format!("container {} is already running", cfg.name)));
    }
    start_locked(store, cfg, exe, None)
}

/// [`start`] for a caller holding the container's lock, optionally
/// restoring a checkpoint instead of running the command.
pub fn start_locked(store: &Store, cfg: &ContainerConfig, exe: &Path, restore: Option<&RestoreReq>) -> Result<i32> {
    let rdir = store.ctr_run_dir(&cfg.id);
    fs::create_dir_all(&rdir).ctx(|| format!("creating {}", rdir.display()))?;
    let mlog = fs::File::create(rdir.join("monitor.log")).ctx(|| "creating monitor.log")?;
    let mut child = Command::new(exe)
        .arg("--log-level")
        .arg(log::max_level().to_string().to_ascii_lowercase())
        .arg("--root")
        .arg(&store.root)
        .arg("--runroot")
        .arg(&store.runroot)
        .arg("container-monitor")
        .args(
            restore
                .map(|r| {
                    let mut a = vec!["--restore".into(), r.dir.clone().into_os_string()];
                    if r.tcp_established {
                        a.push("--tcp-established".into());
                    }
                    if r.tcp_close {
                        a.push("--tcp-close".into());
                    }
                    if r.remove_after {
                        a.push("--remove-after".into());
                    }
                    a
                })
                .unwrap_or_default(),
        )
        .arg(&cfg.id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(mlog)
        .spawn()
        .ctx(|| format!("starting the monitor {}", exe.display()))?;
    let mut report = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut report);
    }
    let report = report.trim();
    if let Some(pid) = report.strip_prefix("ok ") {
        return pid.parse().map_err(|_| RuntimeError::Invalid(format!("monitor reported {report:?}")));
    }
    let _ = child.wait();
    let msg = report.strip_prefix("error: ").unwrap_or(report);
    if msg.is_empty() {
        let log = fs::read_to_string(rdir.join("monitor.log")).unwrap_or_default();
        let last = log.lines().last().unwrap_or("no report").to_string();
        return Err(RuntimeError::Invalid(format!("the monitor of {} failed: {last}", cfg.name)));
    }
    Err(RuntimeError::Invalid(msg.to_string()))
}

/// Waits until the container is no longer running (its monitor recorded
/// the exit, or both are gone); false on timeout.
pub fn wait_stopped(store: &Store, cfg: &ContainerConfig, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    loop {
        let st = store.read_state(&cfg.id);
        let init_alive = st.status == Status::Running && alive(st.pid, st.pid_start);
        if !init_alive {
            refresh(store, cfg);
            let st = store.read_state(&cfg.id);
            if st.status != Status::Running && start_time(st.monitor_pid).is_none() {
                return true;
            }
            if st.status != Status::Running && Instant::now() >= end {
                return true;
            }
        }
        if Instant::now() >= end {
            return false;
        }
        sleep(Duration::from_millis(10));
    }
}

/// Sends `sig` to the container's init.
pub fn kill(store: &Store, cfg: &ContainerConfig, sig: i32) -> Result<()> {
    let st = refresh(store, cfg);
    if st.status != Status::Running {
        return Err(RuntimeError::Invalid(format!("container {} is not running", cfg.name)));
    }
    stasis_sys::proc_ctl::kill(st.pid, sig).ctx(|| format!("signalling {} (pid {})", cfg.name, st.pid))
}

/// SIGTERM, then SIGKILL after `timeout`; returns once the container is
/// recorded as exited and its network and cgroups are gone.
pub fn stop(store: &Store, cfg: &ContainerConfig, timeout: Duration) -> Result<()> {
    let _lock = store.lock_container(&cfg.id)?;
    let st = refresh(store, cfg);
    if st.status != Status::Running {
        return Ok(());
    }
    let mut sig = libc::SIGKILL;
    if !timeout.is_zero() {
        sig = libc::SIGTERM;
        let _ = stasis_sys::proc_ctl::kill(st.pid, libc::SIGTERM);
        if !wait_dead(st.pid, st.pid_start, timeout) {
            sig = libc::SIGKILL;
        }
    }
    if sig == libc::SIGKILL {
        let _ = stasis_sys::proc_ctl::kill(st.pid, libc::SIGKILL);
        if !wait_dead(st.pid, st.pid_start, Duration::from_secs(10)) {
            return Err(RuntimeError::Invalid(format!("container {} (pid {}) does not die", cfg.name, st.pid)));
        }
    }
    if !wait_stopped(store, cfg, Duration::from_secs(10)) {
        return Err(RuntimeError::Invalid(format!("the monitor of {} did not record the exit", cfg.name)));
    }
    let now = store.read_state(&cfg.id);
    if now.status == Status::Running {
        finalize(store, &cfg.id, now, Some(128 + sig));
    }
    Ok(())
}

fn wait_dead(pid: i32, start: u64, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while alive(pid, start) {
        if Instant::now() >= end {
            return false;
        }
        sleep(Duration::from_millis(5));
    }
    true
}

/// Removes a container (refused while it runs unless `force`).
pub fn remove(store: &Store, cfg: &ContainerConfig, force: bool) -> Result<()> {
    if is_running(store, cfg) {
        if !force {
            return Err(RuntimeError::Conflict(format!(
                "container {} is running: stop it first or use rm -f",
                cfg.name
            )));
        }
        stop(store, cfg, Duration::ZERO)?;
    }
    let _lock = store.lock_container(&cfg.id)?;
    let st = store.read_state(&cfg.id);
    monitor::cleanup(store, &cfg.id, &st);
    let _ = fs::remove_dir_all(store.ctr_run_dir(&cfg.id));
    let dir = store.ctr_dir(&cfg.id);
    let trash = store.tmp_dir().join(format!("rm-{}", cfg.id));
    fs::rename(&dir, &trash).ctx(|| format!("removing {}", dir.display()))?;
    fs::remove_dir_all(&trash).ctx(|| format!("removing {}", trash.display()))
}

/// Runs `argv` inside a running container (its namespaces and cgroups)
/// with the container's env and workdir; returns its exit code. Must be
/// called while the process is single-threaded (setns of a mount ns).
pub fn exec(store: &Store, cfg: &ContainerConfig, argv: &[String]) -> Result<i32> {
    let st = refresh(store, cfg);
    if st.status != Status::Running {
        return Err(RuntimeError::Invalid(format!("container {} is not running", cfg.name)));
    }
    let mut fds = Vec::new();
    for n in ["ipc", "uts", "net", "pid", "mnt"] {
        let p = format!("/proc/{}/ns/{n}", st.pid);
        fds.push(fs::File::open(&p).ctx(|| format!("opening {p}"))?);
    }
    // Under `ip netns exec` our mount namespace has no cgroup mounts: the
    // monitor's paths (under the runroot) need them mounted here too.
    crate::cgroup::hierarchies(&store.runroot)?;
    crate::cgroup::add_pid(&st.cgroups, std::process::id() as i32)?;
    for f in &fds {
        use std::os::fd::AsFd;
        stasis_sys::ns::setns(f.as_fd(), 0).ctx(|| "entering the container's namespaces")?;
    }
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).env_clear().current_dir(&cfg.workdir);
    for kv in &cfg.env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let status = cmd.status().ctx(|| format!("executing {:?} in {}", argv[0], cfg.name))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Human status like podman's: "Up 5 seconds", "Exited (0) 2 seconds ago".
pub fn status_text(st: &ContainerState) -> String {
    let now = now_ns();
    match st.status {
        Status::Created => "Created".into(),
        Status::Running => format!("Up {}", store::human_duration(now.saturating_sub(st.started_at.unwrap_or(now)))),
        Status::Exited if st.checkpointed => format!(
            "Exited (checkpointed) {} ago",
            store::human_duration(now.saturating_sub(st.finished_at.unwrap_or(now)))
        ),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            st.exit_code.unwrap_or(-1),
            store::human_duration(now.saturating_sub(st.finished_at.unwrap_or(now)))
        ),
    }
}

/// Prints the log's content lines (k8s-file format) from byte `from`;
/// returns the new offset. Incomplete trailing lines wait for the next call.
pub fn print_log(path: &Path, from: u64, out: &mut dyn std::io::Write, err: &mut dyn std::io::Write) -> u64 {
    let Ok(data) = fs::read(path) else { return from };
    let Some(tail) = data.get(from as usize..) else { return from };
    let Some(last_nl) = tail.iter().rposition(|&b| b == b'\n') else { return from };
    for line in tail[..=last_nl].split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let mut parts = line.splitn(4, |&b| b == b' ');
        let (_ts, stream, tag, content) = (parts.next(), parts.next(), parts.next(), parts.next().unwrap_or(b""));
        let w: &mut dyn std::io::Write = if stream == Some(b"stderr") { err } else { out };
        let _ = w.write_all(content);
        if tag != Some(b"P") {
            let _ = w.write_all(b"\n");
        }
    }
    let _ = out.flush();
    let _ = err.flush();
    from + last_nl as u64 + 1
}
