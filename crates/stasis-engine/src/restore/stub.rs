//! Restore stubs: the empty processes and threads that become the restored
//! tree.
//!
//! The root stub is a `clone3(set_tid)` child of ours (see
//! `stasis_sys::proc_ctl::spawn_stub`) holding a scratch area with a
//! `syscall` instruction at an address that is free in every restored
//! process's layout. Every other process is created by an injected
//! `clone3(set_tid)` in its restored parent, so ppid, session and group
//! inheritance are the kernel's own; threads by an injected
//! `clone3(CLONE_THREAD, set_tid)` in their process. New tasks are
//! auto-attached (`PTRACE_O_TRACEFORK/TRACECLONE`) and stop before running a
//! single instruction; we then drive them with injected syscalls only.

use stasis_sys::inject::{remote_result, Injector};
use stasis_sys::proc_ctl::{self, CloneArgs};
use stasis_sys::ptrace::{self, Stop};
use stasis_sys::{vm, Pid};
use std::io;

/// Size of the scratch area: code at offset 0, data from [`DATA_OFF`].
pub const SCRATCH_LEN: u64 = 64 * 1024;
/// Where syscall arguments (paths, structs) are written.
pub const DATA_OFF: u64 = 4096;
/// `syscall; int3; int3`: what a stub's scratch area starts with.
pub const CODE: [u8; 4] = [0x0f, 0x05, 0xcc, 0xcc];

/// Set on the root stub; every task cloned from it inherits them.
/// `O_SUSPEND_SECCOMP`: the filters installed in a task (last, before its
/// credentials) must not judge the calls we still inject; filtering starts
/// when we detach.
const TRACE_OPTS: u64 = ptrace::O_TRACESYSGOOD
    | ptrace::O_TRACEFORK
    | ptrace::O_TRACECLONE
    | ptrace::O_EXITKILL
    | ptrace::O_SUSPEND_SECCOMP;

/// One stopped task of the tree being restored.
///
/// `pid`/`tid` are the ids we (the restorer) see: for ptrace, /proc and
/// process_vm_*. `vpid`/`vtid` are the ids the image records and the task
/// itself sees: for injected calls that name a process (the same numbers
/// unless the tree lives in its own pid namespace).
pub struct Task {
    /// Thread group id.
    pub pid: Pid,
    /// This task's id.
    pub tid: Pid,
    pub vpid: Pid,
    pub vtid: Pid,
    pub inj: Injector,
    pub scratch: u64,
    /// The fd number where the task holds a pidfd of the restorer (see
    /// `proc_ctl::StubFd`), to take the restorer's files with `pidfd_getfd`.
    pub rfd: u64,
}

/// Waits for a new task's first stop and blocks every signal in it: signals
/// queued during restore (the dumped pending ones) must stay pending until
/// the dumped mask is put back at the very end.
fn wait_initial_stop(tid: Pid) -> io::Result<()> {
    match ptrace::wait(tid)? {
        Stop::Signal(libc::SIGSTOP) | Stop::Event(ptrace::EVENT_STOP, _) => ptrace::set_sigmask(tid, !0),
        Stop::Exited(code) => Err(io::Error::other(format!(
            "restore stub {tid} exited with {code} before stopping{}",
            match code {
                proc_ctl::STUB_EXIT_MMAP => " (scratch mapping failed)",
                proc_ctl::STUB_EXIT_TRACEME => " (PTRACE_TRACEME failed)",
                _ => "",
            }
        ))),
        other => Err(io::Error::other(format!("restore stub {tid}: unexpected first stop {other:?}"))),
    }
}

impl Task {
    /// Creates the root process with pid `pid`, holding `keep` (a pidfd of
    /// ours) at `keep.at`.
    pub fn spawn_root(pid: Pid, scratch: u64, keep: proc_ctl::StubFd) -> io::Result<Task> {
        let tid = proc_ctl::spawn_stub(Some(pid), scratch, SCRATCH_LEN as usize, &CODE, Some(keep))?;
        Task::adopt(tid, pid, scratch, keep.at as u64)
    }

    /// Takes over a child of ours that made itself a stub with
    /// `proc_ctl::become_stub(scratch, SCRATCH_LEN, stub::CODE, keep)` and
    /// whose own view of its pid is `vpid` (1 for the init of a new pid
    /// namespace).
    pub fn adopt(tid: Pid, vpid: Pid, scratch: u64, rfd: u64) -> io::Result<Task> {
        wait_initial_stop(tid)?;
        ptrace::set_options(tid, TRACE_OPTS)?;
        let mut inj = Injector::new(tid, scratch)?;
        inj.set_trap_after(true);
        Ok(Task { pid: tid, tid, vpid, vtid: vpid, inj, scratch, rfd })
    }

    /// Address of the data area.
    pub fn data(&self) -> u64 {
        self.scratch + DATA_OFF
    }

    /// Writes bytes into the data area at `off` and returns their address.
    pub fn put(&self, off: u64, bytes: &[u8]) -> io::Result<u64> {
        let addr = self.data() + off;
        vm::write(self.pid, addr, bytes)?;
        Ok(addr)
    }

    /// Writes a NUL-terminated path at `off`; returns its address.
    pub fn put_str(&self, off: u64, s: &str) -> io::Result<u64> {
        let mut b = Vec::with_capacity(s.len() + 1);
        b.extend_from_slice(s.as_bytes());
        b.push(0);
        if off + b.len() as u64 > SCRATCH_LEN - DATA_OFF {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("path too long: {s}")));
        }
        self.put(off, &b)
    }

    /// Reads `len` bytes of the data area at `off`.
    pub fn get(&self, off: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        vm::read(self.pid, self.data() + off, &mut buf)?;
        Ok(buf)
    }

    /// Runs a syscall in this task; negative results become errors.
    pub fn call(&mut self, nr: i64, args: [u64; 6]) -> io::Result<u64> {
        remote_result(self.inj.syscall(nr, args)?)
    }

    fn clone3(&mut self, args: CloneArgs, want: Pid) -> io::Result<Task> {
        // set_tid array right after the struct.
        let tid_bytes = (want as u32 as u64).to_ne_bytes();
        let set_tid_addr = self.put(1024, &tid_bytes[..4])?;
        let args = CloneArgs { set_tid: set_tid_addr, set_tid_size: 1, ..args };
        let args_addr = self.put(0, &args.to_bytes())?;
        let out = self.inj.syscall_with_events(libc::SYS_clone3, [args_addr, 88, 0, 0, 0, 0])?;
        let ret = remote_result(out.ret).map_err(|e| {
            if e.raw_os_error() == Some(libc::EEXIST) {
                io::Error::new(io::ErrorKind::AlreadyExists, format!("PID {want} is already in use"))
            } else {
                e
            }
        })? as Pid;
        // clone3 returns the id the parent sees; the fork event gives ours.
        if ret != want {
            return Err(io::Error::other(format!("clone3 gave pid {ret}, wanted {want}")));
        }
        let child = *out.new_tasks.first().ok_or_else(|| io::Error::other("clone3: no fork event"))?;
        wait_initial_stop(child)?;
        let mut inj = Injector::new(child, self.scratch)?;
        inj.set_trap_after(true);
        let thread = args.flags & libc::CLONE_THREAD as u64 != 0;
        let (pid, vpid) = if thread { (self.pid, self.vpid) } else { (child, want) };
        Ok(Task { pid, tid: child, vpid, vtid: want, inj, scratch: self.scratch, rfd: self.rfd })
    }

    /// Forks a child process with pid `pid` (its parent is this task).
    pub fn fork_child(&mut self, pid: Pid) -> io::Result<Task> {
        self.clone3(CloneArgs { exit_signal: libc::SIGCHLD as u64, ..Default::default() }, pid)
    }

    /// Creates a thread with id `tid` in this task's process.
    pub fn clone_thread(&mut self, tid: Pid) -> io::Result<Task> {
        let flags = libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM;
        self.clone3(CloneArgs { flags: flags as u64, ..Default::default() }, tid)
    }
}
