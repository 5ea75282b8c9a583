//! eventfd: the counter and the `EFD_SEMAPHORE` / `O_NONBLOCK` flags.
//!
//! Dump: fdinfo's `eventfd-count:` (hex) and `eventfd-semaphore:`. Restore:
//! `eventfd2(0, flags)` in the restorer, then one `write` of the counter
//! (the counter is 64-bit, `initval` only 32), handed to the task.
//! `efd.flags` holds the file status flags with `EFD_SEMAPHORE` (bit 0, free
//! in an eventfd's flags, which are always `O_RDWR`) when set.

use super::{bad_fdinfo, fd_err, fown};
use crate::error::{DumpError, RestoreError};
use crate::kinds::fdkind::{FdDumpCtx, Install};
use crate::kinds::files::FdSeen;
use stasis_image::pb;
use stasis_sys::{special as sys, Pid};
use std::io::Write;

pub fn dump(ctx: &mut FdDumpCtx<'_>, f: &FdSeen) -> Result<(pb::FdTypes, u32), DumpError> {
    let pid = ctx.pid;
    let counter = f
        .info
        .get("eventfd-count")
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| bad_fdinfo(pid, f, "eventfd-count"))?;
    let sem = f.info.get("eventfd-semaphore").is_some_and(|v| v.trim() == "1");
    let id = ctx.table.new_id();
    let flags = f.flags | if sem { libc::EFD_SEMAPHORE as u32 } else { 0 };
    ctx.table.push(pb::FileEntry {
        r#type: pb::FdTypes::Eventfd as i32,
        id,
        efd: Some(pb::EventfdFileEntry { id, flags, fown: fown(), counter }),
        ..Default::default()
    });
    Ok((pb::FdTypes::Eventfd, id))
}

pub fn open(pid: Pid, fd: u32, e: &pb::EventfdFileEntry) -> Result<Install, RestoreError> {
    let flags = (e.flags & (libc::EFD_SEMAPHORE | libc::EFD_NONBLOCK) as u32) as i32 | libc::EFD_CLOEXEC;
    let efd = sys::eventfd(0, flags).map_err(fd_err(pid, fd, "eventfd"))?;
    if e.counter != 0 {
        let mut w = std::fs::File::from(efd.try_clone().map_err(fd_err(pid, fd, "dup eventfd"))?);
        w.write_all(&e.counter.to_ne_bytes()).map_err(fd_err(pid, fd, format!("set eventfd counter {}", e.counter)))?;
    }
    Ok(Install::Local(efd))
}
