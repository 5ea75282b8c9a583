//! A working session inside a stopped process during dump: the compel-like
//! "infect, call, cure" cycle, without any code of ours in the target.
//!
//! We find a `syscall` instruction in the target's vDSO, inject an anonymous
//! `mmap` to get a scratch area for syscall arguments and results, run the
//! calls /proc cannot answer (sigactions, itimers, sigaltstack, brk, POSIX
//! timer values), then unmap the scratch area and put the registers back.
//! While we work all signals are blocked (via `PTRACE_SETSIGMASK`) so none is
//! delivered in the middle of an injected call; the mask is put back after.

use stasis_sys::inject::{remote_result, Injector};
use stasis_sys::{ptrace, vm, Pid};
use std::io;

/// Size of the scratch area mapped in the target.
pub const SCRATCH_LEN: u64 = 64 * 1024;

/// Finds the address of a `syscall` instruction (0f 05) in `pid`'s vDSO.
pub fn find_vdso_syscall(pid: Pid) -> io::Result<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let line = maps
        .lines()
        .find(|l| l.ends_with("[vdso]"))
        .ok_or_else(|| io::Error::other(format!("pid {pid} has no [vdso] mapping")))?;
    let range = line.split_whitespace().next().unwrap_or("");
    let (s, e) = range.split_once('-').unwrap_or(("0", "0"));
    let start = u64::from_str_radix(s, 16).map_err(io::Error::other)?;
    let end = u64::from_str_radix(e, 16).map_err(io::Error::other)?;
    let mut buf = vec![0u8; (end - start) as usize];
    vm::read(pid, start, &mut buf)?;
    buf.windows(2)
        .position(|w| w == [0x0f, 0x05])
        .map(|i| start + i as u64)
        .ok_or_else(|| io::Error::other(format!("no syscall instruction in the vDSO of pid {pid}")))
}

/// Scratch memory mapped inside one process for the duration of a dump.
pub struct RemoteSession {
    pid: Pid,
    syscall_ip: u64,
    pub scratch: u64,
    unmapped: bool,
}

/// One thread being driven; restores its mask and registers on `done`.
pub struct ThreadCall {
    inj: Option<Injector>,
    tid: Pid,
    saved_mask: u64,
    mask_restored: bool,
}

impl ThreadCall {
    /// Starts injecting into `tid` (stopped) using `syscall_ip`.
    pub fn start(tid: Pid, syscall_ip: u64) -> io::Result<ThreadCall> {
        let saved_mask = ptrace::get_sigmask(tid)?;
        ptrace::set_sigmask(tid, !0u64)?;
        let inj = Injector::new(tid, syscall_ip)?;
        Ok(ThreadCall { inj: Some(inj), tid, saved_mask, mask_restored: false })
    }

    /// The thread's own registers (as they were before injection, with an
    /// interrupted syscall set up to restart).
    pub fn saved_regs(&self) -> Option<stasis_sys::ptrace::UserRegs> {
        self.inj.as_ref().map(|i| *i.saved_regs())
    }

    /// The thread's own blocked mask (we block everything while injecting).
    pub fn saved_mask(&self) -> u64 {
        self.saved_mask
    }

    /// Runs a syscall, mapping negative results to errors.
    pub fn call(&mut self, nr: i64, args: [u64; 6]) -> io::Result<u64> {
        let inj = self.inj.as_mut().ok_or_else(|| io::Error::other("injection already finished"))?;
        remote_result(inj.syscall(nr, args)?)
    }

    /// Puts registers and signal mask back.
    pub fn done(mut self) -> io::Result<()> {
        self.mask_restored = true;
        ptrace::set_sigmask(self.tid, self.saved_mask)?;
        match self.inj.take() {
            Some(inj) => inj.finish(),
            None => Ok(()),
        }
    }
}

impl Drop for ThreadCall {
    fn drop(&mut self) {
        if !self.mask_restored {
            let _ = ptrace::set_sigmask(self.tid, self.saved_mask);
        }
    }
}

impl RemoteSession {
    /// Maps a scratch area in `pid` by injecting `mmap` through its main
    /// thread (which must be stopped).
    pub fn open(pid: Pid) -> io::Result<RemoteSession> {
        let syscall_ip = find_vdso_syscall(pid)?;
        let mut t = ThreadCall::start(pid, syscall_ip)?;
        let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let scratch = t.call(libc::SYS_mmap, [0, SCRATCH_LEN, prot, flags, u64::MAX, 0])?;
        t.done()?;
        Ok(RemoteSession { pid, syscall_ip, scratch, unmapped: false })
    }

    /// The process.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Begins calls on one thread of the process.
    pub fn thread(&self, tid: Pid) -> io::Result<ThreadCall> {
        ThreadCall::start(tid, self.syscall_ip)
    }

    /// Writes bytes at `offset` into the scratch area.
    pub fn write(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        vm::write(self.pid, self.scratch + offset, bytes)
    }

    /// Reads `len` bytes at `offset` of the scratch area.
    pub fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        vm::read(self.pid, self.scratch + offset, &mut buf)?;
        Ok(buf)
    }

    /// Whether an address range overlaps the scratch area (to hide it from
    /// the dumped memory map).
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        start < self.scratch + SCRATCH_LEN && end > self.scratch
    }

    /// Unmaps the scratch area.
    pub fn close(mut self) -> io::Result<()> {
        self.unmap()
    }

    fn unmap(&mut self) -> io::Result<()> {
        if self.unmapped {
            return Ok(());
        }
        self.unmapped = true;
        let mut t = ThreadCall::start(self.pid, self.syscall_ip)?;
        t.call(libc::SYS_munmap, [self.scratch, SCRATCH_LEN, 0, 0, 0, 0])?;
        t.done()
    }
}

impl Drop for RemoteSession {
    fn drop(&mut self) {
        let _ = self.unmap();
    }
}

/// Little helpers to decode results written into scratch memory.
pub fn u64_at(buf: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&buf[off..off + 8]);
    u64::from_ne_bytes(w)
}
