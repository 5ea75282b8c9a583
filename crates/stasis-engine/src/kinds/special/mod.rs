//! Special files: eventfd, epoll, timerfd, signalfd, inotify, memfd,
//! deleted-but-open files, FIFOs, /dev/zero and /dev/urandom, pty pairs.

use crate::error::{DumpError, RestoreError};
use crate::kinds::fdkind::{FdDumpCtx, FdRestoreCtx, Install};
use crate::kinds::files::FdSeen;
use crate::restore::stub::Task;
use stasis_image::pb;

/// Dumps an fd of a special kind; `None` when it is not one of ours (a
/// regular file or pipe, which the dispatcher handles, or an unsupported
/// kind, which it refuses).
pub fn dump_fd(_ctx: &mut FdDumpCtx<'_>, _f: &FdSeen) -> Result<Option<(pb::FdTypes, u32)>, DumpError> {
    Ok(None)
}

/// Re-creates a special file entry; `None` when the entry is not ours.
pub fn open_fd(
    _ctx: &mut FdRestoreCtx<'_>,
    _task: &mut Task,
    _e: &pb::FileEntry,
    _fi: &pb::FdinfoEntry,
) -> Result<Option<Install>, RestoreError> {
    Ok(None)
}

/// Runs once a process has all its fds (e.g. epoll registrations).
pub fn after_fds(
    _ctx: &mut FdRestoreCtx<'_>,
    _task: &mut Task,
    _fdinfo: &[pb::FdinfoEntry],
) -> Result<(), RestoreError> {
    Ok(())
}
