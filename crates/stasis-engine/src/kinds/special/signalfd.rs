//! signalfd: the mask of signals it reads.
//!
//! Dump: fdinfo's `sigmask:` (hex, bit n-1 for signal n). Restore:
//! `signalfd4(-1, mask)` in the restorer; a signalfd reads the signals of
//! whichever task reads it, so one made by the restorer serves the task.
//! Signals pending in the task are restored by the signal code, not here.

use super::{bad_fdinfo, fd_err, fown};
use crate::error::{DumpError, RestoreError};
use crate::kinds::fdkind::{FdDumpCtx, Install};
use crate::kinds::files::FdSeen;
use stasis_image::pb;
use stasis_sys::{special as sys, Pid};

pub fn dump(ctx: &mut FdDumpCtx<'_>, f: &FdSeen) -> Result<(pb::FdTypes, u32), DumpError> {
    let sigmask = f.info.get_hex("sigmask").ok_or_else(|| bad_fdinfo(ctx.pid, f, "sigmask"))?;
    let id = ctx.table.new_id();
    ctx.table.push(pb::FileEntry {
        r#type: pb::FdTypes::Signalfd as i32,
        id,
        sgfd: Some(pb::SignalfdEntry { id, flags: f.flags, fown: fown(), sigmask }),
        ..Default::default()
    });
    Ok((pb::FdTypes::Signalfd, id))
}

pub fn open(pid: Pid, fd: u32, e: &pb::SignalfdEntry) -> Result<Install, RestoreError> {
    let flags = (e.flags & libc::O_NONBLOCK as u32) as i32 | libc::SFD_CLOEXEC;
    let sfd = sys::signalfd(e.sigmask, flags).map_err(fd_err(pid, fd, format!("signalfd mask {:#x}", e.sigmask)))?;
    Ok(Install::Local(sfd))
}
