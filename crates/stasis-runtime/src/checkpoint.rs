//! Container checkpoint and restore over the engine: podman's verbs
//! (`container checkpoint/restore`, export and import archives) and
//! docker's (named checkpoints: `checkpoint create/ls/rm`, `start
//! --checkpoint`).
//!
//! A checkpoint is a *bundle*, a directory in podman's archive layout:
//! `config.dump` (our container config), `spec.dump` (an OCI-style spec of
//! what the container runs), `network.status` (address, MAC, ports),
//! `stats-dump`, `checkpoint/` (the engine's images) and, in exports,
//! `rootfs-diff.tar` + `deleted.files` and `ctr.log`. podman's in-place
//! checkpoint lives in `ROOT/containers/ID/checkpoint-bundle`; docker's
//! named ones in `ROOT/containers/ID/checkpoints/NAME` or
//! `--checkpoint-dir DIR/NAME`. Bundles are built in a staging directory and
//! renamed into place: a failed checkpoint leaves none, and the engine
//! leaves the container running as it was.
//!
//! Restore starts a new monitor in restore mode: it builds the container's
//! namespaces, rootfs, cgroups and network as for a start, but its init
//! becomes the engine's root stub (see `monitor::RestoreReq`), and the
//! tree's stdout/stderr (inherited fds 0-2) are the new monitor's pipes,
//! so the log goes on where it stopped.

use crate::ckpt_archive::{self, Compression};
use crate::container;
use crate::error::{Ctx, Result, RuntimeError};
use crate::image;
use crate::monitor::RestoreReq;
use crate::network::lock::NetLock;
use crate::precheckpoint;
use crate::store::{self, ContainerConfig, ContainerState, Status, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fs;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The engine's images inside a bundle.
const IMAGES: &str = "checkpoint";
/// Which external files of the images are the container's stdout/stderr.
const STDIO: &str = "stdio.json";

/// The keys (`pipe:[INO]`) of the container's stdout and stderr pipes.
#[derive(Serialize, Deserialize, Default, Debug)]
struct Stdio {
    stdout: Option<String>,
    stderr: Option<String>,
}

impl Stdio {
    fn of(pid: i32) -> Stdio {
        let key = |fd| stasis_engine::proc::pipe_key(pid, fd);
        Stdio { stdout: key(1), stderr: key(2) }
    }
}
/// podman's in-place bundle of a container.
const BUNDLE: &str = "checkpoint-bundle";

/// What `container checkpoint` / `checkpoint create` were asked for.
#[derive(Clone, Debug, Default)]
pub struct CheckpointOpts {
    pub leave_running: bool,
    pub tcp_established: bool,
    /// Write an archive of the bundle here (`--export`).
    pub export: Option<PathBuf>,
    pub ignore_rootfs: bool,
    pub compression: Option<Compression>,
    /// docker's named checkpoint: the bundle goes to `dir/NAME`.
    pub named: Option<Named>,
    /// Store only the pages written since the pre-checkpoint (`-P`).
    pub with_previous: bool,
}

/// A docker-style named checkpoint.
#[derive(Clone, Debug)]
pub struct Named {
    /// `--checkpoint-dir`, else the container's own `checkpoints/`.
    pub dir: Option<PathBuf>,
    pub name: String,
}

/// What `container restore` / `start --checkpoint` were asked for.
#[derive(Clone, Debug, Default)]
pub struct RestoreOpts {
    pub tcp_established: bool,
    /// Restore established TCP connections closed (`--tcp-close`).
    pub tcp_close: bool,
    /// Keep the in-place bundle after a successful restore.
    pub keep: bool,
    pub ignore_rootfs: bool,
    pub ignore_static_ip: bool,
    pub ignore_static_mac: bool,
    /// New `-p` mappings (replacing the checkpointed ones) when not empty.
    pub publish: Vec<String>,
    /// Name of the container `--import` creates.
    pub name: Option<String>,
    pub named: Option<Named>,
    /// The pre-checkpoint archive of an `--import`ed `--with-previous`
    /// checkpoint.
    pub import_previous: Option<PathBuf>,
}

fn named_dir(store: &Store, cfg: &ContainerConfig, n: &Named) -> Result<PathBuf> {
    if n.name.is_empty() || n.name.contains('/') || n.name.starts_with('.') {
        return Err(RuntimeError::Invalid(format!("invalid checkpoint name {:?}", n.name)));
    }
    let base = n.dir.clone().unwrap_or_else(|| store.ctr_dir(&cfg.id).join("checkpoints"));
    Ok(base.join(&n.name))
}

fn bundle_dir(store: &Store, cfg: &ContainerConfig, named: Option<&Named>) -> Result<PathBuf> {
    match named {
        Some(n) => named_dir(store, cfg, n),
        None => Ok(store.ctr_dir(&cfg.id).join(BUNDLE)),
    }
}

/// Where the monitor leaves the statistics of its restore for the CLI.
fn restore_stats(store: &Store, id: &str) -> PathBuf {
    store.ctr_run_dir(id).join("stats-restore.json")
}

fn is_bundle(dir: &Path) -> bool {
    dir.join(IMAGES).join("inventory.img").is_file() && dir.join("config.dump").is_file()
}

/// An OCI-style description of what the container runs (podman's
/// `spec.dump` is the runtime's config.json).
fn spec_of(cfg: &ContainerConfig) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": { "args": cfg.command, "env": cfg.env, "cwd": cfg.workdir },
        "root": { "path": "rootfs" },
        "hostname": cfg.hostname,
        "linux": { "namespaces": [
            { "type": "pid" }, { "type": "mount" }, { "type": "uts" }, { "type": "ipc" }, { "type": "network" },
        ] },
        "annotations": { "io.stasis.image": cfg.image_name, "io.stasis.image-id": cfg.image_id },
    })
}

fn write_value(path: &Path, v: &Value) -> Result<()> {
    let data = serde_json::to_vec_pretty(v).map_err(|e| RuntimeError::Invalid(format!("encoding json: {e}")))?;
    fs::write(path, data).ctx(|| format!("writing {}", path.display()))
}

/// Replaces `target` by the directory `staging` (rename; an old target is
/// moved aside first and removed after).
fn commit_dir(staging: &Path, target: &Path) -> Result<()> {
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
    }
    let old = target.with_file_name(format!(".{}.old-{}", file_name(target), std::process::id()));
    let had = target.exists();
    if had {
        fs::rename(target, &old).ctx(|| format!("moving {} aside", target.display()))?;
    }
    if let Err(e) = fs::rename(staging, target) {
        if had {
            let _ = fs::rename(&old, target);
        }
        return Err(e).ctx(|| format!("renaming {} to {}", staging.display(), target.display()));
    }
    if had {
        let _ = fs::remove_dir_all(&old);
    }
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// Removes a staging directory unless disarmed.
struct Staging(Option<PathBuf>);

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

/// The freezer cgroup the engine freezes the container with.
pub(crate) fn freezer_of(store: &Store, st: &ContainerState) -> Option<PathBuf> {
    crate::cgroup::hierarchies(&store.runroot).ok().and_then(|_| crate::cgroup::freezer(&st.cgroups))
}

/// Checkpoints a running container; returns podman-style statistics.
pub fn checkpoint(store: &Store, cfg: &ContainerConfig, o: &CheckpointOpts) -> Result<Value> {
    let t0 = Instant::now();
    let _lock = store.lock_container(&cfg.id)?;
    let st = container::refresh(store, cfg);
    if st.status != Status::Running {
        return Err(RuntimeError::Invalid(format!("container {} is not running", cfg.name)));
    }
    let prev = match o.with_previous {
        false => None,
        true if o.named.is_some() => {
            return Err(RuntimeError::Invalid("--with-previous does not apply to named checkpoints".into()))
        }
        true if !precheckpoint::has_pre(store, &cfg.id) => {
            return Err(RuntimeError::NotFound(format!(
                "container {} has no pre-checkpoint: make one with `checkpoint -P` first",
                cfg.name
            )))
        }
        true => Some(precheckpoint::pre_dir(store, &cfg.id)),
    };
    let target = bundle_dir(store, cfg, o.named.as_ref())?;
    let parent = target.parent().unwrap_or(Path::new("/")).to_path_buf();
    fs::create_dir_all(&parent).ctx(|| format!("creating {}", parent.display()))?;
    let staging = parent.join(format!(".{}.tmp-{}", file_name(&target), std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir(&staging).ctx(|| format!("creating {}", staging.display()))?;
    let mut guard = Staging(Some(staging.clone()));

    store::write_json_atomic(&staging.join("config.dump"), cfg)?;
    write_value(&staging.join("spec.dump"), &spec_of(cfg))?;
    write_value(&staging.join("network.status"), &json!(st.net))?;
    // The tree's stdout/stderr are pipes to the monitor: recorded as
    // external files by key, and given the new monitor's pipes on restore.
    let stdio = Stdio::of(st.pid);
    write_value(&staging.join(STDIO), &json!(stdio))?;
    let dopts = stasis_engine::DumpOpts {
        leave_running: o.leave_running,
        tcp_established: o.tcp_established,
        external: [&stdio.stdout, &stdio.stderr].into_iter().flatten().cloned().collect(),
        cgroup: freezer_of(store, &st),
        prev_images: prev,
        namespaces: None,
    };
    // Connections being dumped get no packet (and send no RST) until they
    // are restored; a failed or leave-running checkpoint lifts the lock.
    let lock = match o.tcp_established {
        true => Some(NetLock::lock(&cfg.id, st.pid).ctx(|| format!("locking the network of {}", cfg.name))?),
        false => None,
    };
    // Its monitor keeps the namespace, and so the lock, until the veth is
    // gone (see `monitor::HOLD_NETNS`).
    let hold = store.ctr_run_dir(&cfg.id).join(crate::monitor::HOLD_NETNS);
    if lock.is_some() {
        fs::write(&hold, b"").ctx(|| format!("writing {}", hold.display()))?;
    }
    let dumped = stasis_engine::dump(st.pid, &staging.join(IMAGES), &dopts);
    if dumped.is_err() || o.leave_running {
        let _ = fs::remove_file(&hold);
    }
    let stats = dumped
        .map_err(|source| RuntimeError::Checkpoint { what: format!("checkpointing container {}", cfg.name), source })?;
    log::debug!("checkpoint {}: dumped at {:?}", cfg.name, t0.elapsed());
    match lock {
        // The container runs on: its open lock table goes at once.
        Some(l) if o.leave_running => l.unlock().ctx(|| format!("unlocking the network of {}", cfg.name))?.remove(),
        Some(l) => l.gone(),
        None => {}
    }
    if !o.leave_running {
        // The tree is gone and these images are its only copy: whatever
        // fails from here on, the staging directory is not removed.
        guard.0 = None;
    }
    let runtime_us = micros(t0.elapsed());
    let criu = criu_statistics(&stats);
    write_value(&staging.join("stats-dump"), &criu)?;
    if !o.leave_running {
        // The engine killed the tree; its monitor records the exit and
        // releases the network and cgroups meanwhile (whoever needs the
        // container next waits for that: `refresh`).
        store.mark_checkpointed(&cfg.id, true)?;
    }
    commit_dir(&staging, &target)?;
    guard.0 = None;
    if let Some(out) = &o.export {
        // The archive's extras go into the committed bundle, then it is
        // packed: a failure here leaves the checkpoint restorable in place.
        let log = store.ctr_dir(&cfg.id).join("ctr.log");
        if log.exists() {
            fs::copy(&log, target.join("ctr.log")).ctx(|| format!("copying {}", log.display()))?;
        }
        if !o.ignore_rootfs {
            ckpt_archive::write_rootfs_diff(&store.ctr_dir(&cfg.id).join("upper"), &target)?;
        }
        ckpt_archive::pack(&target, out, o.compression.unwrap_or(Compression::Zstd))?;
    }
    Ok(checkpoint_report(cfg, t0, runtime_us, criu))
}

/// The engine's dump statistics under podman's names.
pub(crate) fn criu_statistics(stats: &stasis_engine::DumpStats) -> Value {
    json!({
        "freezing_time": micros(stats.freezing_time),
        "frozen_time": micros(stats.frozen_time),
        "memdump_time": micros(stats.memdump_time),
        "memwrite_time": micros(stats.memdump_time),
        "pages_scanned": stats.pages_scanned,
        "pages_written": stats.pages_written,
        "pages_skipped_parent": stats.pages_skipped_parent,
    })
}

/// What `checkpoint --print-stats` prints, as podman does.
pub(crate) fn checkpoint_report(cfg: &ContainerConfig, t0: Instant, runtime_us: u64, criu: Value) -> Value {
    json!({
        "stasis_checkpoint_duration": micros(t0.elapsed()),
        "container_statistics": [{
            "Id": cfg.id, "Name": cfg.name,
            "runtime_checkpoint_duration": runtime_us,
            "criu_statistics": criu,
        }],
    })
}

/// The engine's plan for restoring the bundle of `r` (run by the monitor
/// before it forks the init).
pub fn plan_restore(r: &RestoreReq) -> Result<stasis_engine::restore::RestorePlan> {
    stasis_engine::restore::plan(&r.dir.join(IMAGES))
        .map_err(|source| RuntimeError::Restore { what: "reading the checkpoint".into(), source })
}

/// Restores the planned tree into the init `pid` the monitor forked (a
/// stub by now, in the container's namespaces and rootfs); records the
/// statistics in the run dir ([`restore_stats`]).
pub fn restore_into(
    store: &Store,
    cfg: &ContainerConfig,
    r: &RestoreReq,
    plan: stasis_engine::restore::RestorePlan,
    pid: i32,
    (out, err): (RawFd, RawFd),
) -> Result<()> {
    let t0 = Instant::now();
    let stdio: Stdio = store::read_json(&r.dir.join(STDIO)).unwrap_or_default();
    let mut inherit = Vec::new();
    for (key, fd) in [(stdio.stdout, out), (stdio.stderr, err)] {
        if let Some(k) = key {
            inherit.push((k, fd));
        }
    }
    let opts = stasis_engine::RestoreOpts { tcp_established: r.tcp_established, tcp_close: r.tcp_close, inherit };
    let root = stasis_engine::restore::RootStub { pid };
    let done = stasis_engine::restore::restore_planned(plan, &opts, Some(root), t0)
        .map_err(|source| RuntimeError::Restore { what: format!("restoring container {}", cfg.name), source })?;
    let stats = json!({ "restore_time": micros(done.restore_time), "processes": done.processes });
    let _ = write_value(&restore_stats(store, &cfg.id), &stats);
    Ok(())
}

/// Restores a stopped container from its checkpoint (podman's in-place
/// bundle, or docker's named one); returns statistics.
pub fn restore(store: &Store, cfg: &ContainerConfig, exe: &Path, o: &RestoreOpts) -> Result<Value> {
    let t0 = Instant::now();
    let _lock = store.lock_container(&cfg.id)?;
    restore_locked(store, cfg.clone(), exe, o, t0)
}

fn restore_locked(store: &Store, mut cfg: ContainerConfig, exe: &Path, o: &RestoreOpts, t0: Instant) -> Result<Value> {
    if container::is_running(store, &cfg) {
        return Err(RuntimeError::Conflict(format!("container {} is running: it cannot be restored", cfg.name)));
    }
    let bundle = bundle_dir(store, &cfg, o.named.as_ref())?;
    if !is_bundle(&bundle) {
        return Err(RuntimeError::NotFound(match &o.named {
            Some(n) => format!("container {} has no checkpoint {:?} in {}", cfg.name, n.name, bundle.display()),
            None => format!("container {} has no checkpoint to restore", cfg.name),
        }));
    }
    if precheckpoint::needs_previous(&bundle.join(IMAGES)) && !precheckpoint::has_pre(store, &cfg.id) {
        return Err(RuntimeError::NotFound(format!(
            "the checkpoint of {} was made --with-previous and its pre-checkpoint is gone",
            cfg.name
        )));
    }
    let changed = !o.publish.is_empty() || o.ignore_static_ip || o.ignore_static_mac;
    if !o.publish.is_empty() {
        cfg.publish = o.publish.clone();
    }
    if o.ignore_static_ip {
        cfg.ip = None;
    }
    if o.ignore_static_ip || o.ignore_static_mac {
        cfg.mac = None;
    }
    if changed {
        for p in &cfg.publish {
            crate::network::parse_publish(p).ctx(|| "invalid -p")?;
        }
        store::write_json_atomic(&store.ctr_dir(&cfg.id).join("config.json"), &cfg)?;
    }
    if o.tcp_established {
        if let Err(e) = crate::network::lock::relax_conntrack(&cfg.id) {
            log::warn!("{}; a restored connection may be reset", crate::error::one_line(&e));
        }
    }
    let req = RestoreReq {
        dir: bundle.clone(),
        tcp_established: o.tcp_established,
        tcp_close: o.tcp_close,
        remove_after: o.named.is_none() && !o.keep,
    };
    let _ = fs::remove_file(restore_stats(store, &cfg.id));
    container::start_locked(store, &cfg, exe, Some(&req))?;
    log::debug!("restore {}: running at {:?}", cfg.name, t0.elapsed());
    let stats: Value = store::read_json(&restore_stats(store, &cfg.id)).unwrap_or(Value::Null);
    log::debug!("restore {}: done at {:?}", cfg.name, t0.elapsed());
    Ok(json!({
        "stasis_restore_duration": micros(t0.elapsed()),
        "container_statistics": [{
            "Id": cfg.id, "Name": cfg.name,
            "runtime_restore_duration": stats.get("restore_time").cloned().unwrap_or(Value::Null),
            "criu_statistics": stats,
        }],
    }))
}

/// Recreates a container from an exported archive (`restore --import`) and
/// restores it; on failure nothing of it is left.
pub fn import(store: &Store, archive: &Path, exe: &Path, o: &RestoreOpts) -> Result<(ContainerConfig, Value)> {
    let t0 = Instant::now();
    let unpacked = store.tmp_dir().join(format!("import-{}", std::process::id()));
    let _ = fs::remove_dir_all(&unpacked);
    let _cleanup = Staging(Some(unpacked.clone()));
    ckpt_archive::unpack(archive, &unpacked)?;
    let mut cfg: ContainerConfig = store::read_json(&unpacked.join("config.dump"))?;
    let checkpointed_id = cfg.id.clone();
    match (precheckpoint::needs_previous(&unpacked.join(IMAGES)), &o.import_previous) {
        (true, None) => {
            return Err(RuntimeError::Invalid(format!(
                "{} was checkpointed --with-previous: give its pre-checkpoint archive with --import-previous",
                archive.display()
            )))
        }
        (false, Some(_)) => {
            return Err(RuntimeError::Invalid(format!(
                "{} was not checkpointed --with-previous: --import-previous does not apply",
                archive.display()
            )))
        }
        _ => {}
    }
    let img = image::find(store, &cfg.image_id).or_else(|_| image::find(store, &cfg.image_name)).map_err(|_| {
        RuntimeError::NotFound(format!(
            "{}: the container's image {} ({}) is not on this host: load or import it first",
            archive.display(),
            cfg.image_name,
            &cfg.image_id[..12.min(cfg.image_id.len())]
        ))
    })?;
    cfg.image_id = img.id.clone();
    if let Some(n) = &o.name {
        cfg.name = n.clone();
        cfg.id = store::new_id();
    }
    let dir = store.ctr_dir(&cfg.id);
    {
        let _lock = store.lock_store()?;
        if let Some(c) = store.containers().iter().find(|c| c.name == cfg.name || c.id == cfg.id) {
            return Err(RuntimeError::Conflict(format!(
                "the container name {:?} is already in use by {}: restore with --name NEW",
                cfg.name,
                &c.id[..12]
            )));
        }
        fs::create_dir_all(dir.join("work")).ctx(|| format!("creating {}", dir.display()))?;
        fs::create_dir_all(dir.join("upper")).ctx(|| format!("creating {}", dir.display()))?;
        if let Err(e) = store::write_json_atomic(&dir.join("config.json"), &cfg) {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
    }
    let res = (|| {
        if !o.ignore_rootfs {
            ckpt_archive::apply_rootfs_diff(&unpacked, &dir.join("upper"))?;
        }
        if let Some(pre) = &o.import_previous {
            precheckpoint::import_previous(store, pre, &checkpointed_id, &dir, &unpacked)?;
        }
        let log = unpacked.join("ctr.log");
        if log.exists() {
            fs::rename(&log, dir.join("ctr.log")).ctx(|| "moving ctr.log")?;
        }
        let bundle = dir.join(BUNDLE);
        fs::rename(&unpacked, &bundle).ctx(|| format!("moving the checkpoint to {}", bundle.display()))?;
        let _lock = store.lock_container(&cfg.id)?;
        restore_locked(store, cfg.clone(), exe, &RestoreOpts { named: None, ..o.clone() }, t0)
    })();
    match res {
        Ok(stats) => Ok((cfg, stats)),
        Err(e) => {
            let st: ContainerState = store.read_state(&cfg.id);
            crate::monitor::cleanup(store, &cfg.id, &st);
            let _ = fs::remove_dir_all(store.ctr_run_dir(&cfg.id));
            let _ = fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

/// docker's `checkpoint ls`: the names of the container's checkpoints.
pub fn list_named(store: &Store, cfg: &ContainerConfig, dir: Option<&Path>) -> Vec<String> {
    let base = dir.map(Path::to_path_buf).unwrap_or_else(|| store.ctr_dir(&cfg.id).join("checkpoints"));
    let mut names: Vec<String> = fs::read_dir(&base)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| is_bundle(&e.path()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// docker's `checkpoint rm`.
pub fn remove_named(store: &Store, cfg: &ContainerConfig, n: &Named) -> Result<()> {
    let dir = named_dir(store, cfg, n)?;
    if !is_bundle(&dir) {
        return Err(RuntimeError::NotFound(format!("container {} has no checkpoint {:?}", cfg.name, n.name)));
    }
    fs::remove_dir_all(&dir).ctx(|| format!("removing {}", dir.display()))
}
