//! timerfd: clock, remaining time, interval and expirations not yet read.
//!
//! Dump: fdinfo's `clockid:`, `ticks:`, `settime flags:` (octal),
//! `it_value: (sec, nsec)` (time left, also for an absolute timer) and
//! `it_interval:`. Restore: `timerfd_create` in the restorer, armed with the
//! remaining time as a relative timeout (so time spent between dump and
//! restore does not count), then `TFD_IOC_SET_TICKS` for the unread
//! expirations (settime would reset them, so it comes last).
//! Limits: `TFD_TIMER_CANCEL_ON_SET` is recorded but not re-applied (it
//! needs an absolute realtime timer); a periodic timer that expired several
//! times without being read counts one expiration (fdinfo shows no more).

use super::{bad_fdinfo, fd_err, fown};
use crate::error::{DumpError, RestoreError};
use crate::kinds::fdkind::{FdDumpCtx, Install};
use crate::kinds::files::FdSeen;
use stasis_image::pb;
use stasis_sys::{special as sys, Pid};
use std::os::fd::AsFd;

/// `(96, 955000524)` -> (96, 955000524).
fn pair(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v.trim().strip_prefix('(')?.strip_suffix(')')?.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

pub fn dump(ctx: &mut FdDumpCtx<'_>, f: &FdSeen) -> Result<(pb::FdTypes, u32), DumpError> {
    let pid = ctx.pid;
    let i = &f.info;
    let clockid = i.get_u64("clockid").ok_or_else(|| bad_fdinfo(pid, f, "clockid"))? as u32;
    let ticks = i.get_u64("ticks").ok_or_else(|| bad_fdinfo(pid, f, "ticks"))?;
    let settime_flags = i
        .get("settime flags")
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .ok_or_else(|| bad_fdinfo(pid, f, "settime flags"))?;
    let (vsec, vnsec) = i.get("it_value").and_then(pair).ok_or_else(|| bad_fdinfo(pid, f, "it_value"))?;
    let (isec, insec) = i.get("it_interval").and_then(pair).ok_or_else(|| bad_fdinfo(pid, f, "it_interval"))?;
    let id = ctx.table.new_id();
    ctx.table.push(pb::FileEntry {
        r#type: pb::FdTypes::Timerfd as i32,
        id,
        tfd: Some(pb::TimerfdEntry {
            id,
            flags: f.flags,
            fown: fown(),
            clockid,
            ticks,
            settime_flags,
            vsec,
            vnsec,
            isec,
            insec,
        }),
        ..Default::default()
    });
    Ok((pb::FdTypes::Timerfd, id))
}

pub fn open(pid: Pid, fd: u32, e: &pb::TimerfdEntry) -> Result<Install, RestoreError> {
    let flags = (e.flags & libc::O_NONBLOCK as u32) as i32 | libc::TFD_CLOEXEC;
    let tfd = sys::timerfd_create(e.clockid as i32, flags).map_err(fd_err(
        pid,
        fd,
        format!("timerfd clock {}", e.clockid),
    ))?;
    // A periodic timer that expired and was not read yet shows no time
    // left (the kernel re-arms it only on read): it fires again within one
    // interval.
    let value = match (e.vsec, e.vnsec) {
        (0, 0) => (e.isec, e.insec),
        v => v,
    };
    if value != (0, 0) {
        sys::timerfd_settime(tfd.as_fd(), 0, (value.0 as i64, value.1 as i64), (e.isec as i64, e.insec as i64))
            .map_err(fd_err(pid, fd, "arm timerfd"))?;
    }
    if e.ticks != 0 {
        sys::timerfd_set_ticks(tfd.as_fd(), e.ticks).map_err(fd_err(
            pid,
            fd,
            format!("set {} pending timerfd expirations", e.ticks),
        ))?;
    }
    Ok(Install::Local(tfd))
}

#[cfg(test)]
mod tests {
    #[test]
    fn pairs() {
        assert_eq!(super::pair("(96, 955000524)"), Some((96, 955000524)));
        assert_eq!(super::pair("(0, 0)"), Some((0, 0)));
        assert_eq!(super::pair("96"), None);
    }
}
