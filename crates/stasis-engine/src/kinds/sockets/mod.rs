//! Sockets: unix (stream, dgram, seqpacket; named, abstract, socketpairs,
//! queued messages), inet (TCP listening, UDP), and established TCP through
//! TCP_REPAIR (only with `--tcp-established`).
//!
//! Every socket is inspected through a copy of the task's fd taken with
//! `pidfd_getfd` (the same socket, not a new one), so getsockopt, peeking at
//! queues and TCP repair act on the task's socket while it is stopped; what
//! the fd cannot tell (unix peers, pending connections, backlog) comes from
//! sock_diag netlink ([`diag`]). Sockets are created again by the restorer,
//! which shares the network namespace of bare process trees, fully set up,
//! and the task takes each one with `pidfd_getfd` ([`Install::Local`]).
//!
//! - [`unix`]: unix sockets, their peers and queues (`sk-queues.img`).
//! - [`inet`]: IPv4/IPv6 TCP and UDP sockets.
//! - [`tcp`]: established connections through TCP_REPAIR.
//! - [`opts`]: socket options shared by all of them.
//! - [`diag`]: UNIX_DIAG and INET_DIAG requests.
//! - [`prefetch`]: inet sockets read on a second thread while the dump goes on.

pub mod diag;
pub mod inet;
pub mod opts;
pub mod prefetch;
pub mod tcp;
pub mod unix;

use crate::error::{dump_io, restore_io, DumpError, RestoreError};
use crate::kinds::fdkind::{FdDumpCtx, FdRestoreCtx, Install};
use crate::kinds::files::FdSeen;
use crate::proc::fdinfo::FdTarget;
use crate::restore::stub::Task;
use stasis_image::pb;
use stasis_sys::{fd as sysfd, net as n, Pid};
use std::os::fd::{AsFd, BorrowedFd};

pub use tcp::RepairGuard;

/// Restore-side state of this module, kept in [`FdRestoreCtx`].
#[derive(Default)]
pub struct SocketRestore {
    /// Every unix socket of the images, created on first use.
    unix: Option<unix::Prepared>,
    /// Restored TCP connections still in repair mode, with what to say if
    /// leaving it fails and whether SO_REUSEADDR was set.
    tcp: Vec<(stasis_sys::Pid, String, tcp::Restored, pb::SkOptsEntry)>,
    /// The dumped connections, read once.
    streams: tcp::StreamImages,
}

/// Sets a socket's file status flags (O_NONBLOCK) as dumped.
pub(crate) fn set_file_flags(fd: BorrowedFd<'_>, flags: u32) -> std::io::Result<()> {
    if flags & libc::O_NONBLOCK as u32 != 0 {
        let cur = sysfd::status_flags(fd)?;
        sysfd::set_status_flags(fd, cur | libc::O_NONBLOCK)?;
    }
    Ok(())
}

/// Dumps a socket fd; `None` when this kind of socket is not supported
/// (the dispatcher then refuses it, naming the fd).
pub fn dump_fd(ctx: &mut FdDumpCtx<'_>, f: &FdSeen) -> Result<Option<(pb::FdTypes, u32)>, DumpError> {
    let FdTarget::Socket(ino) = f.target else { return Ok(None) };
    let pid = ctx.pid;
    if let Some(read) = ctx.prefetch.and_then(|p| p.take(pid, f.fd)) {
        return read?.map(|c| inet::record(ctx, c)).transpose();
    }
    let what = format!("fd {}: copy the socket", f.fd);
    let sk = ctx.copy_fd(f.fd).map_err(dump_io(pid, what))?;
    let Some(kind) = SockKind::of(sk.as_fd()) else { return Ok(None) };
    match kind.family {
        libc::AF_UNIX => unix::dump(ctx, f, &sk, ino as u32).map(Some),
        libc::AF_INET | libc::AF_INET6 => {
            let tcp_established = ctx.opts.tcp_established;
            inet::collect(pid, f, &sk, ino as u32, kind, tcp_established)?.map(|c| inet::record(ctx, c)).transpose()
        }
        _ => Ok(None),
    }
}

/// A socket's family, type and protocol.
#[derive(Clone, Copy)]
pub struct SockKind {
    pub family: i32,
    pub ty: i32,
    pub proto: i32,
}

impl SockKind {
    /// Reads them (`SO_DOMAIN`, `SO_TYPE`, `SO_PROTOCOL`); `None` if any
    /// cannot be read.
    pub fn of(sk: BorrowedFd<'_>) -> Option<SockKind> {
        let get = |opt| n::getsockopt_int(sk, libc::SOL_SOCKET, opt).ok();
        Some(SockKind { family: get(n::SO_DOMAIN)?, ty: get(libc::SO_TYPE)?, proto: get(n::SO_PROTOCOL)? })
    }

    pub fn is_inet(&self) -> bool {
        self.family == libc::AF_INET || self.family == libc::AF_INET6
    }
}

/// Re-creates a socket entry; `None` when the entry is not a socket.
pub fn open_fd(
    ctx: &mut FdRestoreCtx<'_>,
    task: &mut Task,
    e: &pb::FileEntry,
    fi: &pb::FdinfoEntry,
) -> Result<Option<Install>, RestoreError> {
    if let Some(isk) = &e.isk {
        return inet::restore(ctx.dir, ctx.opts, task.pid, fi.fd, isk, &mut ctx.sockets)
            .map(|s| Some(Install::Local(s)));
    }
    let Some(usk) = &e.usk else { return Ok(None) };
    if ctx.sockets.unix.is_none() {
        ctx.sockets.unix = Some(create_unix(ctx.dir, task.pid, ctx.root)?);
    }
    let sk = ctx.sockets.unix.as_mut().and_then(|p| p.take(e.id)).ok_or_else(|| RestoreError::Task {
        pid: task.pid,
        what: format!("fd {}: unix socket {} was not created", fi.fd, usk.ino),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    Ok(Some(Install::Local(sk)))
}

/// Runs once every process of the tree has its fds: restored TCP
/// connections leave repair mode now that their peers, if in the tree,
/// exist.
pub fn after_all_fds(ctx: &mut FdRestoreCtx<'_>) -> Result<(), RestoreError> {
    for (pid, what, r, o) in ctx.sockets.tcp.drain(..) {
        r.finish(&o).map_err(|source| RestoreError::Task { pid, what, source })?;
    }
    Ok(())
}

/// Creates the tree's unix sockets. Their names are paths as the tree sees
/// its file system: for a tree in a mount namespace of its own (a
/// container), a thread of ours joins that namespace to bind them there
/// (it inherits our thread's network namespace, the tree's by now).
fn create_unix(dir: &std::path::Path, pid: Pid, root: Pid) -> Result<unix::Prepared, RestoreError> {
    let images = unix::UnixImages::load(dir)?;
    if !stasis_sys::ns::other_mount_ns(root).map_err(restore_io(root, "read mount namespaces"))? {
        return unix::Prepared::create(images, pid);
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            stasis_sys::ns::enter_mount_ns_of(root).map_err(restore_io(root, "enter the mount namespace"))?;
            unix::Prepared::create(images, pid)
        })
        .join()
        .unwrap_or_else(|_| Err(restore_io(pid, "create unix sockets")(std::io::Error::other("thread panicked"))))
    })
}

/// Runs once a process has all its fds.
pub fn after_fds(
    _ctx: &mut FdRestoreCtx<'_>,
    _task: &mut Task,
    _fdinfo: &[pb::FdinfoEntry],
) -> Result<(), RestoreError> {
    Ok(())
}
