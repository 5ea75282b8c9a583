//! Signal dispositions (`sigacts`, stored in `core-PID.img` as CRIU does)
//! and the process-wide pending queue.
//!
//! /proc tells which signals are caught (`SigCgt`) or ignored (`SigIgn`);
//! only for those do we inject `rt_sigaction(sig, NULL, &old)` to read the
//! handler, flags, restorer and mask. Every other signal has the default
//! action. On restore a stub starts with the restorer's dispositions (it is
//! a fork of ours), so each signal that differs from the image is set.

use crate::error::{dump_io, restore_io, DumpError, RestoreError};
use crate::remote::{u64_at, ThreadCall};
use crate::restore::stub::Task;
use stasis_image::pb;
use stasis_sys::Pid;

/// Signals 1..=64 in CRIU's order (SIGKILL and SIGSTOP have no entry).
pub fn signals() -> impl Iterator<Item = u64> {
    (1..=64u64).filter(|&s| s != libc::SIGKILL as u64 && s != libc::SIGSTOP as u64)
}

/// Reads the dispositions of the signals in `interesting` (bit n-1 for n).
pub fn dump_sigactions(
    pid: Pid,
    call: &mut ThreadCall,
    scratch: u64,
    read: &dyn Fn(u64, usize) -> std::io::Result<Vec<u8>>,
    interesting: u64,
) -> Result<Vec<pb::SaEntry>, DumpError> {
    let mut out = Vec::new();
    for sig in signals() {
        let mut e =
            pb::SaEntry { sigaction: 0, flags: 0, restorer: 0, mask: 0, compat_sigaction: None, mask_extended: None };
        if interesting & (1 << (sig - 1)) != 0 {
            call.call(libc::SYS_rt_sigaction, [sig, 0, scratch, 8, 0, 0])
                .map_err(dump_io(pid, format!("read the action of signal {sig}")))?;
            let b = read(scratch, 32).map_err(dump_io(pid, "read scratch"))?;
            e.sigaction = u64_at(&b, 0);
            e.flags = u64_at(&b, 8);
            e.restorer = u64_at(&b, 16);
            e.mask = u64_at(&b, 24);
        }
        out.push(e);
    }
    Ok(out)
}

/// Sets every disposition that differs from what the stub inherited
/// (`inherited`: signals whose action in the restorer is not the default).
pub fn restore_sigactions(task: &mut Task, sas: &[pb::SaEntry], inherited: u64) -> Result<(), RestoreError> {
    let pid = task.pid;
    for (sig, e) in signals().zip(sas.iter().map(Some).chain(std::iter::repeat(None))) {
        let default = e.is_none_or(|e| e.sigaction == 0 && e.flags == 0 && e.mask == 0);
        if default && inherited & (1 << (sig - 1)) == 0 {
            continue;
        }
        let mut b = Vec::with_capacity(32);
        if let Some(e) = e {
            for w in [e.sigaction, e.flags, e.restorer, e.mask] {
                b.extend_from_slice(&w.to_ne_bytes());
            }
        } else {
            b.resize(32, 0);
        }
        let a = task.put(0, &b).map_err(restore_io(pid, "write sigaction"))?;
        task.call(libc::SYS_rt_sigaction, [sig, a, 0, 8, 0, 0])
            .map_err(restore_io(pid, format!("set the action of signal {sig}")))?;
    }
    Ok(())
}
