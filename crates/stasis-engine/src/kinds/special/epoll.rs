//! epoll: the instance and its registered fds, events and data.
//!
//! Dump: one fdinfo `tfd:` line per registration (`tfd: N events: HEX data:
//! HEX pos: ino: sdev:`), kept inline in `eventpoll_file_entry.tfd` (CRIU's
//! older layout; `crit` reads it). Restore: `epoll_create1` in the restorer,
//! handed to the task; the registrations are keyed by the task's fd numbers,
//! so once the process has all its fds ([`register`]) an injected
//! `epoll_ctl(EPOLL_CTL_ADD)` per `tfd` re-adds them, in the process that
//! opened the epoll first.
//! Limits: an item whose fd was closed after registration (the kernel keeps
//! it while the file lives elsewhere) cannot be re-added and fails the
//! restore, naming it; a disarmed `EPOLLONESHOT` item comes back armed.

use super::{bad_fdinfo, fd_err, fields, fown, RestoreState};
use crate::error::{restore_io, DumpError, RestoreError};
use crate::kinds::fdkind::{FdDumpCtx, Install};
use crate::kinds::files::FdSeen;
use crate::restore::stub::Task;
use stasis_image::pb;
use stasis_sys::{special as sys, Pid};

/// One `tfd:` line.
fn parse_tfd(id: u32, line: &str) -> Option<pb::EventpollTfdEntry> {
    let (first, m) = fields(line);
    Some(pb::EventpollTfdEntry {
        id,
        tfd: first?.parse().ok()?,
        events: u32::from_str_radix(m.get("events")?, 16).ok()?,
        data: u64::from_str_radix(m.get("data")?, 16).ok()?,
        dev: m.get("sdev").and_then(|v| u32::from_str_radix(v, 16).ok()),
        inode: m.get("ino").and_then(|v| u64::from_str_radix(v, 16).ok()),
        pos: m.get("pos").and_then(|v| v.parse().ok()),
    })
}

pub fn dump(ctx: &mut FdDumpCtx<'_>, f: &FdSeen) -> Result<(pb::FdTypes, u32), DumpError> {
    let id = ctx.table.new_id();
    let mut tfd = Vec::new();
    for line in f.info.get_all("tfd") {
        tfd.push(parse_tfd(id, line).ok_or_else(|| bad_fdinfo(ctx.pid, f, "tfd"))?);
    }
    ctx.table.push(pb::FileEntry {
        r#type: pb::FdTypes::Eventpoll as i32,
        id,
        epfd: Some(pb::EventpollFileEntry { id, flags: f.flags, fown: fown(), tfd }),
        ..Default::default()
    });
    Ok((pb::FdTypes::Eventpoll, id))
}

pub fn open(st: &mut RestoreState, pid: Pid, fd: u32, e: &pb::EventpollFileEntry) -> Result<Install, RestoreError> {
    let ep = sys::epoll_create(libc::EPOLL_CLOEXEC).map_err(fd_err(pid, fd, "epoll_create1"))?;
    if !e.tfd.is_empty() {
        st.epolls.push((pid, fd, e.tfd.clone()));
    }
    Ok(Install::Local(ep))
}

/// Re-adds the registrations of the epolls this process opened.
pub fn register(st: &mut RestoreState, task: &mut Task) -> Result<(), RestoreError> {
    let pid = task.pid;
    let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut st.epolls).into_iter().partition(|(p, _, _)| *p == pid);
    st.epolls = rest;
    for (_, epfd, tfds) in mine {
        for t in tfds {
            // struct epoll_event is packed on x86_64: u32 events, u64 data.
            let mut ev = Vec::with_capacity(12);
            ev.extend_from_slice(&t.events.to_ne_bytes());
            ev.extend_from_slice(&t.data.to_ne_bytes());
            let a = task.put(0, &ev).map_err(restore_io(pid, "write epoll_event"))?;
            task.call(libc::SYS_epoll_ctl, [epfd as u64, libc::EPOLL_CTL_ADD as u64, t.tfd as u64, a, 0, 0]).map_err(
                restore_io(pid, format!("fd {epfd}: register fd {} (events {:#x}) in the epoll", t.tfd, t.events)),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tfd_line() {
        let t = super::parse_tfd(3, "8 events:       19 data:                8  pos:0 ino:227e sdev:f").unwrap();
        assert_eq!((t.id, t.tfd, t.events, t.data, t.inode, t.dev), (3, 8, 0x19, 8, Some(0x227e), Some(0xf)));
        let t = super::parse_tfd(3, "9 events: 80000001 data: ffffffffffffffff  pos:0 ino:1 sdev:f").unwrap();
        assert_eq!((t.events, t.data), (0x8000_0001, u64::MAX));
        assert!(super::parse_tfd(3, "x events: 1").is_none());
    }
}
