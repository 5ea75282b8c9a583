//! The holder: a small detached process that keeps a pre-dump's write
//! tracking alive until the dump that follows it.
//!
//! Tracking lives in one userfaultfd per process, and closing it ends the
//! tracking (the kernel unregisters every range, so every page looks
//! written). The dumper exits after a pre-dump, and the tracked program
//! must not see an extra fd, so a third process holds them: `stasis
//! track-holder UFFD:PIDFD...`, started with the fds inherited. It exits
//! when every tracked process has exited, or when a later dump stops it.
//!
//! The pre-dump's image directory names it in [`TRACKER_FILE`] (its pid and
//! start time, so a recycled pid is never mistaken for it, and per tracked
//! process the fd number holding its uffd and its host pid); the next dump copies the uffds out
//! with `pidfd_getfd`.

use crate::error::{dump_io, DumpError};
use stasis_sys::fd as sysfd;
use stasis_sys::Pid;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Command, Stdio};

/// Names the holder inside a pre-dump's image directory.
pub const TRACKER_FILE: &str = "stasis-tracker";

/// One process whose writes are tracked.
pub struct Tracked {
    /// The pid the images use (in the tree's pid namespace).
    pub vpid: Pid,
    /// The pid on this host.
    pub pid: Pid,
    pub uffd: OwnedFd,
}

/// Starts the holder for `tracked` and records it in `images`.
pub fn start(exe: &Path, tracked: &[Tracked], images: &Path) -> Result<(), DumpError> {
    let mut pidfds = Vec::with_capacity(tracked.len());
    let mut args = Vec::with_capacity(tracked.len() + 1);
    args.push("track-holder".to_string());
    let mut held = Vec::with_capacity(tracked.len());
    for t in tracked {
        let pidfd = match sysfd::pidfd_open(t.pid) {
            // It exited since its pages were copied: nothing to track.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue,
            r => r.map_err(dump_io(t.pid, "open a pidfd for the tracker"))?,
        };
        sysfd::set_inheritable(pidfd.as_fd()).map_err(dump_io(t.pid, "pass the pidfd to the tracker"))?;
        sysfd::set_inheritable(t.uffd.as_fd()).map_err(dump_io(t.pid, "pass the userfaultfd to the tracker"))?;
        args.push(format!("{}:{}", t.uffd.as_raw_fd(), pidfd.as_raw_fd()));
        pidfds.push(pidfd);
        held.push(t);
    }
    let child = {
        use std::os::unix::process::CommandExt;
        Command::new(exe)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|source| DumpError::Write { path: exe.to_path_buf(), source })?
    };
    // Our copies go now; the holder has its own. (Inheritable fds of ours
    // would otherwise leak into whatever we spawn next.)
    drop(pidfds);
    let pid = child.id() as Pid;
    let start_time = crate::proc::read_stat(pid).map_err(|source| DumpError::Proc { pid, source })?.start_time;
    let mut text = format!("# the process holding this pre-dump's write tracking\nholder {pid} {start_time}\n");
    for t in held {
        text.push_str(&format!("track {} {} {}\n", t.vpid, t.uffd.as_raw_fd(), t.pid));
    }
    let path = images.join(TRACKER_FILE);
    let tmp = images.join(format!(".{TRACKER_FILE}.tmp"));
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|source| DumpError::Write { path: path.clone(), source })
}

/// Runs the holder: keeps `pairs` (uffd, pidfd of its process) open until
/// every process has exited.
pub fn hold(pairs: &[(RawFd, RawFd)]) -> io::Result<()> {
    let mut held: Vec<(OwnedFd, OwnedFd)> = Vec::with_capacity(pairs.len());
    for &(u, p) in pairs {
        held.push((sysfd::inherited(u)?, sysfd::inherited(p)?));
    }
    while !held.is_empty() {
        let ready = {
            let fds: Vec<_> = held.iter().map(|(_, p)| p.as_fd()).collect();
            sysfd::wait_readable(&fds)?
        };
        let mut i = 0;
        held.retain(|_| {
            let gone = ready[i];
            i += 1;
            !gone
        });
    }
    Ok(())
}

/// A running holder found through an image directory.
pub struct Holder {
    pidfd: OwnedFd,
    pid: Pid,
    fds: HashMap<Pid, RawFd>,
    /// The host pid of each tracked process (by its pid in the images).
    pids: HashMap<Pid, Pid>,
}

impl Holder {
    /// The holder named in `images`, if it still runs.
    pub fn find(images: &Path) -> Option<Holder> {
        let text = std::fs::read_to_string(images.join(TRACKER_FILE)).ok()?;
        let mut holder: Option<(Pid, u64)> = None;
        let (mut fds, mut pids) = (HashMap::new(), HashMap::new());
        for line in text.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                ["holder", pid, start] => holder = Some((pid.parse().ok()?, start.parse().ok()?)),
                ["track", vpid, fd, pid] => {
                    let vpid: Pid = vpid.parse().ok()?;
                    fds.insert(vpid, fd.parse().ok()?);
                    pids.insert(vpid, pid.parse().ok()?);
                }
                _ => {}
            }
        }
        let (pid, start_time) = holder?;
        let pidfd = sysfd::pidfd_open(pid).ok()?;
        // Checked after the pidfd is open: a pid recycled before that has
        // another start time, and after it the pidfd pins the process.
        let st = crate::proc::read_stat(pid).ok()?;
        if st.start_time != start_time || st.is_zombie() {
            return None;
        }
        Some(Holder { pidfd, pid, fds, pids })
    }

    /// The tracked processes: (pid in the images, pid on this host).
    pub fn tracked(&self) -> impl Iterator<Item = (Pid, Pid)> + '_ {
        self.pids.iter().map(|(&v, &p)| (v, p))
    }

    /// A copy of the uffd tracking process `vpid` of the images.
    pub fn uffd(&self, vpid: Pid) -> Option<OwnedFd> {
        let fd = *self.fds.get(&vpid)?;
        match sysfd::pidfd_getfd(self.pidfd.as_fd(), fd) {
            Ok(f) => Some(f),
            Err(e) => {
                log::debug!("tracker {}: no fd {fd} for process {vpid}: {e}", self.pid);
                None
            }
        }
    }

    /// Stops the holder and waits until it has exited, which releases the
    /// tracking of every process it held (unless someone else holds a copy).
    pub fn stop(self) {
        if sysfd::pidfd_signal(self.pidfd.as_fd(), libc::SIGKILL).is_ok() {
            let _ = sysfd::wait_readable(&[self.pidfd.as_fd()]);
        }
    }
}

/// Stops the holder of `images`, if any (a pre-dump replaced or dropped).
pub fn stop(images: &Path) {
    if let Some(h) = Holder::find(images) {
        h.stop();
    }
}
