//! The interface between the fd dispatcher (`files.rs`) and the modules of
//! each fd kind (`sockets`, `special`): what a kind gets to dump an fd, and
//! how it hands an fd back at restore.
//!
//! A kind creates its files in the restorer where it can (sockets, eventfd,
//! timerfd, ...), fully set up, and returns [`Install::Local`]: the task
//! then takes that very open file with an injected `pidfd_getfd` on the
//! restorer. Kinds whose setup needs the task's own fd numbers (epoll) do
//! it in the task and return [`Install::Done`], or finish in `after_fds`.

use crate::dump::DumpOpts;
use crate::error::RestoreError;
use crate::kinds::files::FileTable;
use crate::restore::stub::Task;
use crate::restore::RestoreOpts;
use stasis_image::ImageDirWriter;
use stasis_sys::Pid;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// What a kind module gets while dumping one fd.
pub struct FdDumpCtx<'a> {
    pub pid: Pid,
    pub table: &'a mut FileTable,
    /// For kinds with image files of their own (e.g. `tcp-streams.img`).
    pub staging: &'a ImageDirWriter,
    pub opts: &'a DumpOpts,
    /// A pidfd of the process, opened on first use.
    pub pidfd: Option<OwnedFd>,
    /// Inet sockets read ahead by a helper thread, if any.
    pub prefetch: Option<&'a crate::kinds::sockets::prefetch::Prefetch>,
}

impl FdDumpCtx<'_> {
    /// Our copy of the process's fd `fd` (the same open file), through one
    /// pidfd for all its fds.
    pub fn copy_fd(&mut self, fd: i32) -> std::io::Result<OwnedFd> {
        if self.pidfd.is_none() {
            self.pidfd = Some(stasis_sys::fd::pidfd_open(self.pid)?);
        }
        let pidfd = self.pidfd.as_ref().ok_or_else(|| std::io::Error::other("no pidfd"))?;
        stasis_sys::fd::pidfd_getfd(pidfd.as_fd(), fd)
    }
}

/// How a restored fd reaches its task.
pub enum Install {
    /// The restorer holds it; the task takes it with `pidfd_getfd`.
    Local(OwnedFd),
    /// The kind installed it in the task itself.
    Done,
}

/// What a kind module gets while restoring fds.
pub struct FdRestoreCtx<'a> {
    /// The image directory (for kinds with image files of their own).
    pub dir: &'a Path,
    /// The root process of the tree being restored (our pid of it): files
    /// bound by path are made in its mount namespace.
    pub root: Pid,
    pub opts: &'a RestoreOpts,
    /// Files of the special kinds (memfds, FIFOs, ptys) and work left for
    /// `after_fds` (epoll registrations, locks).
    pub special: crate::kinds::special::RestoreState,
    /// State of the sockets module (unix sockets created ahead for peers).
    pub sockets: crate::kinds::sockets::SocketRestore,
}

impl FdRestoreCtx<'_> {
    /// Gives the task's fd `fd` the open file `local` of the restorer.
    pub fn install_local(
        &mut self,
        task: &mut Task,
        local: &OwnedFd,
        fd: u32,
        cloexec: bool,
    ) -> Result<(), RestoreError> {
        crate::kinds::share::install_local(task, local.as_fd(), fd, cloexec, &format!("fd {fd}"))
    }
}
