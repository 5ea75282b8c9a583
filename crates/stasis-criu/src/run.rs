//! Dump, pre-dump and restore on the engine, in CRIU's manner: images go
//! into a directory that may already hold the caller's files (runc writes
//! `descriptors.json` there first), and the caller hears of each stage
//! through notifications when it asked for them.

use crate::netlock::NetLock;
use crate::request::Request;
use crate::CriuError;
use stasis_engine::kinds::namespaces::NsDumpOpts;
use stasis_engine::restore::namespaces::{self, NsEnv};
use stasis_engine::{DumpOpts, DumpStats};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Receives CRIU's notifications (runc's hooks); the CLI has none.
pub trait Notify {
    fn notify(&mut self, script: &str, pid: i32) -> Result<(), CriuError>;
    /// A notification carrying an fd (orphan-pts-master: a restored
    /// console's master, for the runtime to pass to its console socket).
    fn notify_fd(&mut self, script: &str, pid: i32, _fd: std::os::fd::BorrowedFd<'_>) -> Result<(), CriuError> {
        self.notify(script, pid)
    }
}

/// No notifications.
pub struct Silent;

impl Notify for Silent {
    fn notify(&mut self, _: &str, _: i32) -> Result<(), CriuError> {
        Ok(())
    }
}

/// The parent image set of a request, as a path.
fn parent_path(req: &Request) -> Option<PathBuf> {
    req.parent_img.as_ref().map(|p| if p.starts_with('/') { PathBuf::from(p) } else { req.images.join(p) })
}

/// Moves a committed image set from `sub` into `images`, the inventory
/// last: until it arrives the directory holds no valid checkpoint. The
/// `parent` link is written as the caller named it.
fn move_up(sub: &Path, images: &Path, parent: Option<&str>) -> Result<(), CriuError> {
    let mut names: Vec<_> = std::fs::read_dir(sub)
        .map_err(CriuError::io(format!("listing {}", sub.display())))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort_by_key(|n| n == "inventory.img");
    // An older image set in the same directory stops looking valid first,
    // and its chain link must not outlive it.
    let _ = std::fs::remove_file(images.join("inventory.img"));
    if !names.iter().any(|n| n == stasis_image::PARENT_LINK) {
        let _ = std::fs::remove_file(images.join(stasis_image::PARENT_LINK));
    }
    for n in names {
        let (from, to) = (sub.join(&n), images.join(&n));
        if n == stasis_image::PARENT_LINK {
            let _ = std::fs::remove_file(&to);
            let target = parent.map(PathBuf::from).unwrap_or(std::fs::read_link(&from).unwrap_or_default());
            std::os::unix::fs::symlink(&target, &to).map_err(CriuError::io(format!("linking {}", to.display())))?;
            continue;
        }
        std::fs::rename(&from, &to).map_err(CriuError::io(format!("moving {} into place", n.to_string_lossy())))?;
    }
    let _ = std::fs::remove_dir_all(sub);
    if let Ok(d) = std::fs::File::open(images) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The pipes on the root's fds 0-2 (`pipe:[INO]`, as runc lists them in
/// `descriptors.json` and passes them back with `inherit_fd`): external,
/// so that every fd on them, a second open of `/dev/stdout` included,
/// gets the restorer's pipe.
fn stdio_pipes(pid: i32) -> Vec<String> {
    (0..3).filter_map(|fd| stasis_engine::proc::pipe_key(pid, fd)).collect()
}

/// Dumps (or pre-dumps) the tree `req.pid` into `req.images`.
pub fn dump(req: &Request, pre: bool, n: &mut dyn Notify) -> Result<DumpStats, CriuError> {
    let pid = req.pid.ok_or_else(|| CriuError::Usage("no tree to dump: give its root's pid (-t PID)".into()))?;
    if !req.images.is_dir() {
        return Err(CriuError::Usage(format!("the images directory {} does not exist", req.images.display())));
    }
    let prev = parent_path(req);
    let opts = DumpOpts {
        leave_running: req.leave_running,
        tcp_established: req.tcp_established,
        external: stdio_pipes(pid),
        cgroup: req
            .freeze_cgroup
            .clone()
            .filter(|p| p.join("freezer.state").exists() || p.join("cgroup.freeze").exists()),
        prev_images: prev,
        namespaces: (!pre).then(|| NsDumpOpts {
            ext_mounts: req.ext_mnt.clone(),
            ext_netns: req.ext_netns.clone(),
            empty_netns: req.empty_netns,
        }),
    };
    // The engine commits a whole directory by rename: into a hidden one
    // inside the images directory, whose files then move up.
    let sub = req.images.join(format!(".stasis-{}", if pre { "pre-dump" } else { "dump" }));
    let _ = std::fs::remove_dir_all(&sub);
    n.notify("pre-dump", pid)?;
    let mut lock = None;
    let stats = if pre {
        let exe = std::env::current_exe().map_err(CriuError::io("finding our own executable"))?;
        stasis_engine::pre_dump(pid, &sub, &opts, &exe).map_err(CriuError::from)
    } else {
        n.notify("network-lock", pid)?;
        lock = lock_for_tcp(req, pid)?;
        stasis_engine::dump(pid, &sub, &opts).map_err(CriuError::from)
    };
    let stats = match stats {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&sub);
            if !pre {
                if let Some(l) = lock {
                    let _ = l.unlock();
                }
                let _ = n.notify("network-unlock", pid);
            }
            return Err(e);
        }
    };
    // A dead tree's namespace stays locked until its runtime removes it: a
    // peer's retransmission must not meet a reset meanwhile.
    if req.leave_running {
        if let Some(l) = lock.take() {
            l.unlock()?;
        }
    }
    move_up(&sub, &req.images, req.parent_img.as_deref())?;
    // CRIU writes its statistics into its working directory as
    // `stats-dump`; podman reads them there (--print-stats, exports).
    if let Some(w) = &req.work_dir {
        let from = req.images.join(stasis_image::magic::file_name::STATS_DUMP);
        let _ = std::fs::copy(&from, w.join("stats-dump"));
    }
    n.notify("post-dump", pid)?;
    if !pre && req.leave_running {
        n.notify("network-unlock", pid)?;
    }
    Ok(stats)
}

/// CRIU's `stats-restore` (what podman's --print-stats reports).
fn write_restore_stats(path: &Path, done: &stasis_engine::Restored) {
    use stasis_image::pb;
    let entry = pb::StatsEntry {
        dump: None,
        restore: Some(pb::RestoreStatsEntry {
            pages_compared: 0,
            pages_skipped_cow: 0,
            forking_time: 0,
            restore_time: done.restore_time.as_micros() as u32,
            pages_restored: None,
        }),
    };
    let written = stasis_image::ImageWriter::create(path, stasis_image::ImageKind::Stats)
        .and_then(|mut w| w.write(&entry).and_then(|()| w.finish().map(drop)));
    if let Err(e) = written {
        log::warn!("writing {}: {e}", path.display());
    }
}

/// Locks the network namespace of process `pid` for a TCP dump or
/// restore when it is not ours (a tree in our own namespace is not
/// locked).
fn lock_for_tcp(req: &Request, pid: i32) -> Result<Option<NetLock>, CriuError> {
    use stasis_engine::kinds::namespaces::ns_inode;
    if !req.tcp_established || ns_inode(&pid.to_string(), "net").ok() == ns_inode("self", "net").ok() {
        return Ok(None);
    }
    NetLock::lock(format!("/proc/{pid}/ns/net")).map(Some)
}

/// Restores `req.images`; returns the root's pid as we see it.
pub fn restore(req: &Request, n: &mut dyn Notify) -> Result<i32, CriuError> {
    let t0 = Instant::now();
    n.notify("pre-restore", 0)?;
    let plan = stasis_engine::restore::plan(&req.images)?;
    let ns = namespaces::read_ns_images(&req.images)?;
    let opts = stasis_engine::RestoreOpts {
        tcp_established: req.tcp_established,
        tcp_close: req.tcp_close,
        inherit: req.inherit_fd.clone(),
    };
    let mut console = None;
    let (root, host_pid) = if ns.flags == 0 {
        (None, None)
    } else {
        let root = req.root.clone().ok_or_else(|| CriuError::Images {
            dir: req.images.clone(),
            what: "the tree has its own mount namespace: give the directory that becomes its root (--root)".into(),
        })?;
        let env = NsEnv {
            root,
            ext_mounts: req.ext_mnt.iter().map(|(k, v)| (k.clone(), PathBuf::from(v))).collect(),
            inherit: req.inherit_fd.clone(),
        };
        let spawned = namespaces::spawn_root(&plan, &ns, &env)?;
        console = spawned.console;
        (Some(spawned.stub), Some(spawned.stub.pid))
    };
    if let Some(pid) = host_pid {
        if let Err(e) = n.notify("setup-namespaces", pid) {
            let _ = stasis_sys::proc_ctl::kill(pid, libc::SIGKILL);
            return Err(e);
        }
    }
    // Restored connections get no packet until their sockets are back.
    let lock = match host_pid {
        Some(pid) if ns.ext_netns.is_some() => lock_for_tcp(req, pid)?,
        _ => None,
    };
    let done = stasis_engine::restore::restore_planned(plan, &opts, root, t0);
    let unlocked = lock.map(NetLock::unlock).transpose();
    let done = done?;
    unlocked?;
    let pid = host_pid.unwrap_or(done.root_pid);
    log::info!("restored {} processes in {:?}; root is pid {pid}", done.processes, done.restore_time);
    if let Some(w) = &req.work_dir {
        write_restore_stats(&w.join("stats-restore"), &done);
    }
    n.notify("network-unlock", pid)?;
    if let Some(m) = &console {
        n.notify_fd("orphan-pts-master", pid, m.as_fd())?;
    }
    n.notify("post-restore", pid)?;
    if let Some(f) = &req.pidfile {
        std::fs::write(f, pid.to_string()).map_err(CriuError::io(format!("writing {}", f.display())))?;
    }
    n.notify("post-resume", pid)?;
    Ok(pid)
}
