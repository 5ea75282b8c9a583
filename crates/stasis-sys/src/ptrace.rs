//! ptrace(2): attaching to tasks, stopping them, reading and writing their
//! registers and signal state.
//!
//! We use `PTRACE_SEIZE` + `PTRACE_INTERRUPT` (no SIGSTOP is ever sent, so a
//! group stop of the target is not disturbed) for dumping, and
//! `PTRACE_TRACEME` in restore stubs. Registers go through
//! `PTRACE_GETREGSET`/`SETREGSET` with `NT_PRSTATUS` (includes fs_base and
//! gs_base) and `NT_X86_XSTATE` (the whole XSAVE area, sized by CPUID).
//! Seccomp filters are read with `PTRACE_SECCOMP_GET_FILTER`/`_METADATA`;
//! `PTRACE_O_SUSPEND_SECCOMP` keeps a tracee's filters from judging the
//! syscalls we inject (it needs CAP_SYS_ADMIN and a tracer outside seccomp).

use crate::{check, Pid};
use std::io;

/// `PTRACE_O_*` options we use.
pub const O_TRACESYSGOOD: u64 = 1;
pub const O_TRACEFORK: u64 = 1 << 1;
pub const O_TRACECLONE: u64 = 1 << 3;
pub const O_EXITKILL: u64 = 1 << 20;
/// The tracee's seccomp filters do not run while it is traced with this
/// option (ends with the detach).
pub const O_SUSPEND_SECCOMP: u64 = 1 << 21;

/// `PTRACE_EVENT_*` codes as seen in `status >> 16`.
pub const EVENT_FORK: i32 = 1;
pub const EVENT_CLONE: i32 = 3;
pub const EVENT_STOP: i32 = 128;

const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
const PTRACE_GET_SYSCALL_INFO: libc::c_uint = 0x420e;
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
const PTRACE_SECCOMP_GET_METADATA: libc::c_uint = 0x420d;
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
const NT_PRSTATUS: usize = 1;
const NT_X86_XSTATE: usize = 0x202;

/// x86_64 `struct user_regs_struct`, as `NT_PRSTATUS` returns it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub eflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

/// `struct ptrace_rseq_configuration`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RseqConfig {
    pub rseq_abi_pointer: u64,
    pub rseq_abi_size: u32,
    pub signature: u32,
    pub flags: u32,
    pub pad: u32,
}

/// One raw `siginfo_t` (128 bytes), as `PTRACE_PEEKSIGINFO` returns it and
/// `rt_sigqueueinfo` takes it.
pub type RawSiginfo = [u8; 128];

fn ptrace_raw(req: libc::c_uint, tid: Pid, addr: u64, data: u64) -> io::Result<libc::c_long> {
    // SAFETY: the request and arguments are passed to the kernel, which
    // validates them; any pointer in addr/data was built by our callers from
    // a live local object of the size the request expects.
    check(unsafe { libc::ptrace(req, tid, addr as *mut libc::c_void, data as *mut libc::c_void) })
}

/// Attaches to `tid` without stopping it.
pub fn seize(tid: Pid, options: u64) -> io::Result<()> {
    ptrace_raw(libc::PTRACE_SEIZE, tid, 0, options).map(drop)
}

/// Stops a seized task; it reports a `PTRACE_EVENT_STOP` stop.
pub fn interrupt(tid: Pid) -> io::Result<()> {
    ptrace_raw(libc::PTRACE_INTERRUPT, tid, 0, 0).map(drop)
}

/// Detaches from a stopped tracee, delivering `sig` (0 for none).
pub fn detach(tid: Pid, sig: i32) -> io::Result<()> {
    ptrace_raw(libc::PTRACE_DETACH, tid, 0, sig as u64).map(drop)
}

/// Resumes a stopped tracee, delivering `sig` (0 for none).
pub fn cont(tid: Pid, sig: i32) -> io::Result<()> {
    ptrace_raw(libc::PTRACE_CONT, tid, 0, sig as u64).map(drop)
}

/// Resumes a tracee until the next syscall entry or exit.
pub fn cont_syscall(tid: Pid, sig: i32) -> io::Result<()> {
    ptrace_raw(libc::PTRACE_SYSCALL, tid, 0, sig as u64).map(drop)
}

/// Sets `PTRACE_O_*` options on a tracee.
pub fn set_options(tid: Pid, options: u64) -> io::Result<()> {
    ptrace_raw(libc::PTRACE_SETOPTIONS, tid, 0, options).map(drop)
}

/// Makes the calling process a tracee of its parent.
pub fn traceme() -> io::Result<()> {
    ptrace_raw(libc::PTRACE_TRACEME, 0, 0, 0).map(drop)
}

/// The message of the last ptrace event (e.g. the new pid at a clone stop).
pub fn event_msg(tid: Pid) -> io::Result<u64> {
    let mut msg: libc::c_ulong = 0;
    ptrace_raw(libc::PTRACE_GETEVENTMSG, tid, 0, &mut msg as *mut _ as u64)?;
    Ok(msg)
}

/// Reads the general registers (with fs_base/gs_base).
pub fn get_regs(tid: Pid) -> io::Result<UserRegs> {
    let mut regs = UserRegs::default();
    let mut iov = libc::iovec {
        iov_base: &mut regs as *mut UserRegs as *mut libc::c_void,
        iov_len: std::mem::size_of::<UserRegs>(),
    };
    ptrace_raw(libc::PTRACE_GETREGSET, tid, NT_PRSTATUS as u64, &mut iov as *mut _ as u64)?;
    Ok(regs)
}

/// Writes the general registers.
pub fn set_regs(tid: Pid, regs: &UserRegs) -> io::Result<()> {
    let mut copy = *regs;
    let mut iov = libc::iovec {
        iov_base: &mut copy as *mut UserRegs as *mut libc::c_void,
        iov_len: std::mem::size_of::<UserRegs>(),
    };
    ptrace_raw(libc::PTRACE_SETREGSET, tid, NT_PRSTATUS as u64, &mut iov as *mut _ as u64).map(drop)
}

/// Size of the XSAVE area the kernel uses for `NT_X86_XSTATE` (CPUID 0xD.0
/// EBX: the size needed for the features enabled in XCR0).
pub fn xstate_size() -> usize {
    // CPUID leaf 0xD is the XSAVE leaf (XSAVE is required for AVX, and the
    // kernel uses it for every task).
    let r = std::arch::x86_64::__cpuid_count(0xd, 0);
    (r.ebx as usize).max(512 + 64)
}

/// Reads the whole XSAVE area (x87, SSE, AVX, ...) in the kernel's
/// non-compacted user format.
pub fn get_xstate(tid: Pid) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; xstate_size()];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    ptrace_raw(libc::PTRACE_GETREGSET, tid, NT_X86_XSTATE as u64, &mut iov as *mut _ as u64)?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

/// Writes an XSAVE area read by [`get_xstate`].
pub fn set_xstate(tid: Pid, xstate: &[u8]) -> io::Result<()> {
    let mut buf = xstate.to_vec();
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    ptrace_raw(libc::PTRACE_SETREGSET, tid, NT_X86_XSTATE as u64, &mut iov as *mut _ as u64).map(drop)
}

/// Reads the blocked-signals mask of a thread.
pub fn get_sigmask(tid: Pid) -> io::Result<u64> {
    let mut mask: u64 = 0;
    ptrace_raw(PTRACE_GETSIGMASK, tid, 8, &mut mask as *mut u64 as u64)?;
    Ok(mask)
}

/// Sets the blocked-signals mask of a thread.
pub fn set_sigmask(tid: Pid, mask: u64) -> io::Result<()> {
    let mut m = mask;
    ptrace_raw(PTRACE_SETSIGMASK, tid, 8, &mut m as *mut u64 as u64).map(drop)
}

#[repr(C)]
struct PeekSiginfoArgs {
    off: u64,
    flags: u32,
    nr: i32,
}

/// Reads the queued signals of a thread (`shared == false`) or of its whole
/// thread group (`shared == true`) without dequeuing them.
pub fn peek_siginfo(tid: Pid, shared: bool) -> io::Result<Vec<RawSiginfo>> {
    let mut out = Vec::new();
    let mut buf = vec![[0u8; 128]; 32];
    loop {
        let mut args = PeekSiginfoArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: buf.len() as i32,
        };
        let n = ptrace_raw(PTRACE_PEEKSIGINFO, tid, &mut args as *mut _ as u64, buf.as_mut_ptr() as u64)?;
        if n <= 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
}

/// Reads the rseq registration of a thread (zeroes when none).
pub fn get_rseq_config(tid: Pid) -> io::Result<RseqConfig> {
    let mut conf = RseqConfig::default();
    ptrace_raw(
        PTRACE_GET_RSEQ_CONFIGURATION,
        tid,
        std::mem::size_of::<RseqConfig>() as u64,
        &mut conf as *mut _ as u64,
    )?;
    Ok(conf)
}

/// Size of one classic BPF instruction (`struct sock_filter`).
pub const SOCK_FILTER_LEN: usize = 8;

/// Reads seccomp filter `index` of a stopped tracee (0 is the *oldest*: the
/// kernel's `get_nth_filter` counts from the bottom of the chain) as raw
/// `struct sock_filter` bytes; `Ok(None)` past the newest filter. Needs
/// CAP_SYS_ADMIN and a caller not in seccomp itself (`EACCES` otherwise);
/// `EINVAL` when the tracee is not in filter mode.
pub fn seccomp_filter(tid: Pid, index: u64) -> io::Result<Option<Vec<u8>>> {
    // With a NULL buffer the call only counts the instructions.
    let count = match ptrace_raw(PTRACE_SECCOMP_GET_FILTER, tid, index, 0) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let count = usize::try_from(count).map_err(io::Error::other)?;
    let mut buf = vec![0u8; count * SOCK_FILTER_LEN];
    // Counted from the oldest, filter `index` stays the same object (new
    // filters go on top), so the kernel writes exactly `count` instructions.
    let got = ptrace_raw(PTRACE_SECCOMP_GET_FILTER, tid, index, buf.as_mut_ptr() as u64)?;
    if usize::try_from(got).ok() != Some(count) {
        return Err(io::Error::other(format!("seccomp filter {index} of {tid} changed size while read")));
    }
    Ok(Some(buf))
}

/// `struct seccomp_metadata`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct SeccompMetadata {
    filter_off: u64,
    flags: u64,
}

/// The `SECCOMP_FILTER_FLAG_*` flags seccomp filter `index` of a stopped
/// tracee was installed with (as far as the kernel remembers them: `LOG`).
pub fn seccomp_filter_flags(tid: Pid, index: u64) -> io::Result<u64> {
    let mut md = SeccompMetadata { filter_off: index, flags: 0 };
    ptrace_raw(
        PTRACE_SECCOMP_GET_METADATA,
        tid,
        std::mem::size_of::<SeccompMetadata>() as u64,
        &mut md as *mut _ as u64,
    )?;
    Ok(md.flags)
}

/// `PTRACE_GET_SYSCALL_INFO` op field: 0 none, 1 entry, 2 exit, 3 seccomp.
pub fn syscall_info_op(tid: Pid) -> io::Result<u8> {
    let mut buf = [0u8; 88];
    ptrace_raw(PTRACE_GET_SYSCALL_INFO, tid, buf.len() as u64, buf.as_mut_ptr() as u64)?;
    Ok(buf[0])
}

/// What `waitpid` reported for one tracee.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The task exited with this status.
    Exited(i32),
    /// The task was killed by this signal.
    Signaled(i32),
    /// Stopped at a syscall entry or exit (`SIGTRAP | 0x80`).
    Syscall,
    /// Stopped at a ptrace event (`PTRACE_EVENT_*`), with the stop signal.
    Event(i32, i32),
    /// Signal-delivery stop (or group stop without SEIZE) with this signal.
    Signal(i32),
}

/// Waits for a state change of `tid` (any child or tracee kind: `__WALL`).
pub fn wait(tid: Pid) -> io::Result<Stop> {
    let (_, status) = crate::waitpid_retry(tid, libc::__WALL)?;
    Ok(decode_status(status))
}

/// Like [`wait`] without blocking: `None` when nothing changed yet.
pub fn try_wait(tid: Pid) -> io::Result<Option<Stop>> {
    let mut status: libc::c_int = 0;
    // SAFETY: status points to a live local c_int.
    let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
    match r {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        _ => Ok(Some(decode_status(status))),
    }
}

fn decode_status(status: libc::c_int) -> Stop {
    if libc::WIFEXITED(status) {
        Stop::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Stop::Signaled(libc::WTERMSIG(status))
    } else {
        let sig = libc::WSTOPSIG(status);
        let event = status >> 16;
        if sig == (libc::SIGTRAP | 0x80) {
            Stop::Syscall
        } else if event != 0 {
            Stop::Event(event, sig)
        } else {
            Stop::Signal(sig)
        }
    }
}
