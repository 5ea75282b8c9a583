//! The thin syscall layer: the only crate of Stasis allowed to use `unsafe`.
//!
//! Everything above it (engine, runtime, CLI) is safe Rust. Each wrapper here
//! is small, checks the kernel's return value and turns it into an
//! [`std::io::Error`] (or [`SysError`] where a name helps), and carries a
//! `// SAFETY:` comment on every `unsafe` block.
//!
//! Modules:
//! - [`ptrace`]: seize, interrupt, registers (NT_PRSTATUS, NT_X86_XSTATE),
//!   signal masks and queues, rseq configuration, seccomp filters, waiting
//!   for stops.
//! - [`inject`]: running syscalls inside a ptrace-stopped task.
//! - [`vm`]: `process_vm_readv`/`process_vm_writev` in large batches.
//! - [`fd`]: pidfd, pipes, `tee`, `fcntl`, and other fd helpers.
//! - [`proc_ctl`]: spawning restore stubs with `clone3(set_tid)`, signals,
//!   waiting, and the SIGINT/SIGTERM flag the engine polls.
//! - [`mmap`]: a read-only or read-write mapping of a local file.
//! - [`uffd`], [`pagemap`]: userfaultfd (restore fills, pre-dump write
//!   tracking) and `PAGEMAP_SCAN`.

pub mod fd;
pub mod inject;
pub mod mmap;
pub mod net;
pub mod ns;
pub mod pagemap;
pub mod proc_ctl;
pub mod ptrace;
pub mod special;
pub mod uffd;
pub mod vm;

/// A process or thread id, as the kernel's `pid_t`.
pub type Pid = i32;

use std::io;

/// Turns a `-1`-on-error libc return into `io::Result`.
pub(crate) fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Same as [`check`] for `c_int` returns.
pub(crate) fn check_int(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `waitpid` that retries on EINTR; returns the raw status.
pub(crate) fn waitpid_retry(pid: Pid, flags: libc::c_int) -> io::Result<(Pid, libc::c_int)> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: status points to a live local c_int.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        if r != -1 {
            return Ok((r, status));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}
