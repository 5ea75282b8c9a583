//! Open file descriptions shared between fds (after `dup`) and between
//! processes (after `fork`): one offset, one set of status flags.
//!
//! Dump: fds that lead to the same file are compared with
//! `kcmp(KCMP_FILE)`; every fd of a group refers to one `files.img` entry
//! (CRIU's model: fdinfo entries point at file ids).
//! Restore: the first fd of a group opens the file; a later fd in the same
//! process gets it with `dup3`, one in another process with an injected
//! `pidfd_open` + `pidfd_getfd` on the first holder, which yields the very
//! same open file description.

use crate::error::{restore_io, RestoreError};
use crate::kinds::files::FdSeen;
use crate::proc::fdinfo::FdTarget;
use crate::restore::stub::Task;
use stasis_sys::{fd as sysfd, Pid};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

/// For every fd, the first fd (in dump order) sharing its open file.
#[derive(Default)]
pub struct Sharing {
    rep: HashMap<(Pid, i32), (Pid, i32)>,
}

impl Sharing {
    /// Groups the fds of the whole tree by open file description.
    pub fn find(all: &[(Pid, Vec<FdSeen>)]) -> Sharing {
        let mut by_file: HashMap<String, Vec<(Pid, i32)>> = HashMap::new();
        for (pid, fds) in all {
            for f in fds {
                let key = match &f.target {
                    FdTarget::Path { path, .. } => format!("{path}\0{}", f.ino.unwrap_or(0)),
                    FdTarget::Pipe(ino) => format!("pipe:{ino}"),
                    // eventfd, epoll, timerfd, ...: all share one inode; kcmp tells them apart.
                    FdTarget::AnonInode(name) => format!("anon:{name}"),
                    FdTarget::Socket(ino) => format!("socket:{ino}"),
                    _ => continue,
                };
                by_file.entry(key).or_default().push((*pid, f.fd));
            }
        }
        let mut rep = HashMap::new();
        for members in by_file.values().filter(|m| m.len() > 1) {
            let mut leaders: Vec<(Pid, i32)> = Vec::new();
            for &(pid, fd) in members {
                let same = leaders.iter().find(|&&(lp, lfd)| sysfd::kcmp_file(lp, pid, lfd, fd).ok() == Some(0));
                match same {
                    Some(&l) => {
                        rep.insert((pid, fd), l);
                    }
                    None => leaders.push((pid, fd)),
                }
            }
        }
        Sharing { rep }
    }

    /// The first holder of the open file behind `(pid, fd)`, if another.
    pub fn shared_with(&self, pid: Pid, fd: i32) -> Option<(Pid, i32)> {
        self.rep.get(&(pid, fd)).copied()
    }
}

/// Restore side: where each file id was first opened.
#[derive(Default)]
pub struct Opened {
    first: HashMap<u32, (Pid, u32)>,
}

impl Opened {
    /// Who already holds file `id`.
    pub fn holder(&self, id: u32) -> Option<(Pid, u32)> {
        self.first.get(&id).copied()
    }

    /// Records that `(pid, fd)` opened file `id`.
    pub fn record(&mut self, id: u32, pid: Pid, fd: u32) {
        self.first.entry(id).or_insert((pid, fd));
    }
}

/// Installs the open file `holder` has as fd `fd` of `task`: a dup within
/// the process, else the restorer takes a copy from the holder and the task
/// takes it from the restorer.
pub fn install_shared(task: &mut Task, holder: (Pid, u32), fd: u32, cloexec: bool) -> Result<(), RestoreError> {
    let pid = task.pid;
    let flags = if cloexec { libc::O_CLOEXEC as u64 } else { 0 };
    let what = || format!("fd {fd}: share fd {} of process {}", holder.1, holder.0);
    if holder.0 == pid {
        if holder.1 != fd {
            task.call(libc::SYS_dup3, [holder.1 as u64, fd as u64, flags, 0, 0, 0]).map_err(restore_io(pid, what()))?;
        }
        return Ok(());
    }
    let local = stasis_sys::fd::copy_fd(holder.0, holder.1 as i32).map_err(restore_io(pid, what()))?;
    install_local(task, local.as_fd(), fd, cloexec, &what())
}

/// Gives the task, as fd `fd`, the open file `local` of the restorer (taken
/// with `pidfd_getfd` on the restorer pidfd every stub holds).
pub fn install_local(
    task: &mut Task,
    local: BorrowedFd<'_>,
    fd: u32,
    cloexec: bool,
    what: &str,
) -> Result<(), RestoreError> {
    install_local_raw(task, local.as_raw_fd(), fd, cloexec, what)
}

/// [`install_local`] for an fd number the restorer's caller keeps open.
pub fn install_local_raw(
    task: &mut Task,
    local: RawFd,
    fd: u32,
    cloexec: bool,
    what: &str,
) -> Result<(), RestoreError> {
    let tmp = take_local(task, local, what)?;
    if tmp == fd as u64 && !cloexec {
        // pidfd_getfd sets close-on-exec; this fd had it clear.
        task.call(libc::SYS_fcntl, [tmp, libc::F_SETFD as u64, 0, 0, 0, 0])
            .map_err(restore_io(task.pid, format!("{what}: clear FD_CLOEXEC")))?;
    }
    move_fd(task, tmp, fd, cloexec, what)
}

/// The task takes a copy of the restorer's fd `local`; returns its number
/// in the task (close-on-exec).
/// `local` is a plain number: the restorer keeps that fd open meanwhile.
pub fn take_local(task: &mut Task, local: RawFd, what: &str) -> Result<u64, RestoreError> {
    task.call(libc::SYS_pidfd_getfd, [task.rfd, local as u64, 0, 0, 0, 0])
        .map_err(restore_io(task.pid, format!("{what}: take the restorer's fd {local}")))
}

/// Moves fd `tmp` of the task, just opened or taken, to the number `fd`
/// with the close-on-exec flag the process had.
pub fn move_fd(task: &mut Task, tmp: u64, fd: u32, cloexec: bool, what: &str) -> Result<(), RestoreError> {
    let pid = task.pid;
    if tmp != fd as u64 {
        let flags = if cloexec { libc::O_CLOEXEC as u64 } else { 0 };
        task.call(libc::SYS_dup3, [tmp, fd as u64, flags, 0, 0, 0])
            .map_err(restore_io(pid, format!("{what}: dup3")))?;
        task.call(libc::SYS_close, [tmp, 0, 0, 0, 0, 0]).map_err(restore_io(pid, "close"))?;
    } else if cloexec {
        task.call(libc::SYS_fcntl, [tmp, libc::F_SETFD as u64, libc::FD_CLOEXEC as u64, 0, 0, 0])
            .map_err(restore_io(pid, "set FD_CLOEXEC"))?;
    }
    Ok(())
}
