//! Process-wide attributes: resource limits, interval timers, POSIX timers,
//! personality, umask, working and root directories.
//!
//! Limits come from `/proc/PID/limits` (this machine withholds
//! CAP_SYS_RESOURCE, so `prlimit` on another process fails). Interval and
//! POSIX timer values need injected `getitimer`/`timer_gettime`; POSIX timers
//! are re-created with their old ids through `PR_TIMER_CREATE_RESTORE_IDS`
//! (Linux 6.15+), which makes `timer_create` take the id we ask for.

use crate::error::{dump_io, restore_io, DumpError, RestoreError};
use crate::proc;
use crate::remote::{u64_at, ThreadCall};
use crate::restore::stub::Task;
use stasis_image::pb;
use stasis_sys::Pid;

const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;

/// Resource limits from /proc.
pub fn dump_rlimits(pid: Pid) -> Result<pb::TaskRlimitsEntry, DumpError> {
    let l = proc::read_limits(pid).map_err(|source| DumpError::Proc { pid, source })?;
    Ok(pb::TaskRlimitsEntry { rlimits: l.iter().map(|r| pb::RlimitEntry { cur: r.soft, max: r.hard }).collect() })
}

/// Sets the limits that differ from `mine`, the restorer's own (which the
/// stub inherited). Raising a hard limit needs CAP_SYS_RESOURCE; failing
/// that is an error naming the limit.
pub fn restore_rlimits(
    task: &mut Task,
    r: &pb::TaskRlimitsEntry,
    mine: Option<&proc::Limits>,
) -> Result<(), RestoreError> {
    let pid = task.pid;
    for (res, e) in r.rlimits.iter().enumerate() {
        if let Some(m) = mine.and_then(|m| m.get(res as u32)) {
            if m.soft == e.cur && m.hard == e.max {
                continue;
            }
        }
        let mut b = Vec::with_capacity(16);
        b.extend_from_slice(&e.cur.to_ne_bytes());
        b.extend_from_slice(&e.max.to_ne_bytes());
        let a = task.put(0, &b).map_err(restore_io(pid, "write rlimit"))?;
        task.call(libc::SYS_prlimit64, [0, res as u64, a, 0, 0, 0])
            .map_err(restore_io(pid, format!("set resource limit {res} to {}/{}", e.cur, e.max)))?;
    }
    Ok(())
}

fn itimer(b: &[u8]) -> pb::ItimerEntry {
    // struct itimerval { interval {sec, usec}, value {sec, usec} }
    pb::ItimerEntry { isec: u64_at(b, 0), iusec: u64_at(b, 8), vsec: u64_at(b, 16), vusec: u64_at(b, 24) }
}

/// itimers and POSIX timers of the process, through its main thread.
pub fn dump_timers(
    pid: Pid,
    call: &mut ThreadCall,
    scratch: u64,
    read: &dyn Fn(u64, usize) -> std::io::Result<Vec<u8>>,
) -> Result<pb::TaskTimersEntry, DumpError> {
    let mut its = Vec::new();
    for which in 0..3u64 {
        call.call(libc::SYS_getitimer, [which, scratch, 0, 0, 0, 0]).map_err(dump_io(pid, "getitimer"))?;
        its.push(itimer(&read(scratch, 32).map_err(dump_io(pid, "read scratch"))?));
    }
    let mut posix = Vec::new();
    for t in proc::read_timers(pid).map_err(|source| DumpError::Proc { pid, source })? {
        call.call(libc::SYS_timer_gettime, [t.id as u64, scratch, 0, 0, 0, 0])
            .map_err(dump_io(pid, format!("timer_gettime({})", t.id)))?;
        let b = read(scratch, 32).map_err(dump_io(pid, "read scratch"))?;
        let overrun = call.call(libc::SYS_timer_getoverrun, [t.id as u64, 0, 0, 0, 0, 0]).unwrap_or(0);
        posix.push(pb::PosixTimerEntry {
            it_id: t.id as u32,
            clock_id: t.clock_id as u32,
            si_signo: t.signal as u32,
            it_sigev_notify: t.sigev_notify() as u32,
            sival_ptr: t.sigev_value,
            overrun: overrun as u32,
            isec: u64_at(&b, 0),
            insec: u64_at(&b, 8),
            vsec: u64_at(&b, 16),
            vnsec: u64_at(&b, 24),
            notify_thread_id: t.thread_id.then_some(t.target),
        });
    }
    let mut it = its.into_iter();
    let mut next = || it.next().unwrap_or(pb::ItimerEntry { isec: 0, iusec: 0, vsec: 0, vusec: 0 });
    Ok(pb::TaskTimersEntry { real: next(), virt: next(), prof: next(), posix })
}

/// Re-arms interval timers and re-creates POSIX timers with their ids.
pub fn restore_timers(task: &mut Task, t: &pb::TaskTimersEntry) -> Result<(), RestoreError> {
    let pid = task.pid;
    for (which, e) in [&t.real, &t.virt, &t.prof].into_iter().enumerate() {
        if e.vsec == 0 && e.vusec == 0 {
            continue;
        }
        let b: Vec<u8> = [e.isec, e.iusec, e.vsec, e.vusec].iter().flat_map(|w| w.to_ne_bytes()).collect();
        let a = task.put(0, &b).map_err(restore_io(pid, "write itimer"))?;
        task.call(libc::SYS_setitimer, [which as u64, a, 0, 0, 0, 0]).map_err(restore_io(pid, "setitimer"))?;
    }
    if t.posix.is_empty() {
        return Ok(());
    }
    task.call(libc::SYS_prctl, [PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0, 0])
        .map_err(restore_io(pid, "enable timer id restore (needs Linux 6.15+)"))?;
    for p in &t.posix {
        // struct sigevent: value, signo, notify, tid (SIGEV_THREAD_ID), pad to 64.
        let mut ev = vec![0u8; 64];
        ev[0..8].copy_from_slice(&p.sival_ptr.to_ne_bytes());
        ev[8..12].copy_from_slice(&(p.si_signo as i32).to_ne_bytes());
        ev[12..16].copy_from_slice(&(p.it_sigev_notify as i32).to_ne_bytes());
        ev[16..20].copy_from_slice(&p.notify_thread_id.unwrap_or(0).to_ne_bytes());
        let ev_a = task.put(0, &ev).map_err(restore_io(pid, "write sigevent"))?;
        let id_a = task.put(128, &(p.it_id as i32).to_ne_bytes()).map_err(restore_io(pid, "write timer id"))?;
        task.call(libc::SYS_timer_create, [p.clock_id as u64, ev_a, id_a, 0, 0, 0])
            .map_err(restore_io(pid, format!("re-create POSIX timer {}", p.it_id)))?;
        let got = task.get(128, 4).map_err(restore_io(pid, "read timer id"))?;
        let got = i32::from_ne_bytes([got[0], got[1], got[2], got[3]]);
        if got != p.it_id as i32 {
            return Err(RestoreError::Task {
                pid,
                what: format!("POSIX timer {} came back as {got}", p.it_id),
                source: std::io::Error::from(std::io::ErrorKind::Other),
            });
        }
        if p.vsec != 0 || p.vnsec != 0 {
            let spec: Vec<u8> = [p.isec, p.insec, p.vsec, p.vnsec].iter().flat_map(|w| w.to_ne_bytes()).collect();
            let a = task.put(256, &spec).map_err(restore_io(pid, "write itimerspec"))?;
            task.call(libc::SYS_timer_settime, [p.it_id as u64, 0, a, 0, 0, 0])
                .map_err(restore_io(pid, format!("arm POSIX timer {}", p.it_id)))?;
        }
    }
    task.call(libc::SYS_prctl, [PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0, 0])
        .map_err(restore_io(pid, "disable timer id restore"))?;
    Ok(())
}

/// cwd, root and umask (`fs-PID.img`); cwd and root are file ids whose
/// paths are in `files.img`.
pub fn restore_fs(task: &mut Task, cwd: &str, root: &str, umask: Option<u32>) -> Result<(), RestoreError> {
    let pid = task.pid;
    if root != "/" {
        let a = task.put_str(0, root).map_err(restore_io(pid, "write path"))?;
        task.call(libc::SYS_chroot, [a, 0, 0, 0, 0, 0]).map_err(restore_io(pid, format!("chroot {root}")))?;
    }
    let a = task.put_str(0, cwd).map_err(restore_io(pid, "write path"))?;
    task.call(libc::SYS_chdir, [a, 0, 0, 0, 0, 0]).map_err(restore_io(pid, format!("chdir {cwd}")))?;
    if let Some(m) = umask {
        task.call(libc::SYS_umask, [m as u64, 0, 0, 0, 0, 0]).map_err(restore_io(pid, "umask"))?;
    }
    Ok(())
}

/// The personality flags.
pub fn restore_personality(task: &mut Task, personality: u32) -> Result<(), RestoreError> {
    if personality == 0 {
        return Ok(());
    }
    task.call(libc::SYS_personality, [personality as u64, 0, 0, 0, 0, 0])
        .map(drop)
        .map_err(restore_io(task.pid, "personality"))
}
