//! Running syscalls inside a ptrace-stopped task ("remote syscalls").
//!
//! The task must be stopped under ptrace (event, signal-delivery or syscall
//! stop) with `PTRACE_O_TRACESYSGOOD` set. For each syscall we point `rip` at
//! a `syscall` instruction that exists in the task (its vDSO when dumping, a
//! scratch page of ours when restoring), load the number and arguments, and
//! step with `PTRACE_SYSCALL` to the syscall's entry and then its exit stop,
//! where `rax` holds the result. `orig_rax` is set to -1 so the kernel never
//! applies its syscall-restart logic to our register set.
//!
//! Clone and fork events raised by an injected `clone3` are collected (the new
//! tasks are auto-attached when `PTRACE_O_TRACECLONE`/`TRACEFORK` are set).
//!
//! The caller owns the lifecycle: [`Injector::finish`] puts the task's own
//! registers back. If an `Injector` is dropped without `finish`, the saved
//! registers are restored on a best-effort basis, so an error path never
//! leaves a task resuming inside our scratch code.

use crate::ptrace::{self, Stop, UserRegs};
use crate::Pid;
use std::io;

/// The result of an injected syscall plus the tasks it created.
#[derive(Debug, Default)]
pub struct SyscallOutcome {
    /// The raw return value (negative errno on failure).
    pub ret: i64,
    /// Tasks created by the syscall (clone/fork events), stopped and traced.
    pub new_tasks: Vec<Pid>,
}

const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;

/// Registers of a task stopped inside an interrupted syscall, rewritten so
/// that resuming them restarts that syscall (as the kernel does when it
/// handles the interruption): `rip` back onto the `syscall` instruction and
/// `rax` the syscall number again. A syscall that needs its restart block
/// (nanosleep, clock_nanosleep, poll with timeout) cannot be resumed in a
/// new task and returns `EINTR` instead; callers retry with the remaining
/// time the kernel stored for them, as CRIU's tasks also do. `orig_rax` is
/// cleared either way so nothing restarts twice.
pub fn restart_syscall_regs(mut regs: UserRegs) -> UserRegs {
    if (regs.orig_rax as i64) < 0 {
        return regs;
    }
    match -(regs.rax as i64) {
        ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
            regs.rax = regs.orig_rax;
            regs.rip -= 2;
        }
        ERESTART_RESTARTBLOCK => regs.rax = (-libc::EINTR) as i64 as u64,
        _ => {}
    }
    regs.orig_rax = u64::MAX;
    regs
}

/// Executes syscalls inside one stopped task.
pub struct Injector {
    tid: Pid,
    syscall_ip: u64,
    saved: UserRegs,
    finished: bool,
    /// `syscall_ip` is followed by `int3`: one stop per call instead of two.
    trap_after: bool,
}

/// Converts a raw remote return value into `io::Result`.
pub fn remote_result(ret: i64) -> io::Result<u64> {
    if (-4095..0).contains(&ret) {
        Err(io::Error::from_raw_os_error(-ret as i32))
    } else {
        Ok(ret as u64)
    }
}

impl Injector {
    /// Prepares injection into `tid`, which must be ptrace-stopped. Its
    /// current registers are saved and put back by [`Injector::finish`].
    ///
    /// If the task was stopped inside an interrupted syscall, the saved
    /// registers are first rewritten the way the kernel would restart it
    /// (see [`restart_syscall_regs`]): after injection the task resumes from
    /// a syscall-exit stop of ours, where the kernel's own restart logic no
    /// longer runs.
    pub fn new(tid: Pid, syscall_ip: u64) -> io::Result<Self> {
        let saved = restart_syscall_regs(ptrace::get_regs(tid)?);
        Ok(Injector { tid, syscall_ip, saved, finished: false, trap_after: false })
    }

    /// The task this injector drives.
    pub fn tid(&self) -> Pid {
        self.tid
    }

    /// The registers that [`Injector::finish`] will restore.
    pub fn saved_regs(&self) -> &UserRegs {
        &self.saved
    }

    /// Replaces the registers restored at the end (used by restore to give
    /// the task its dumped registers).
    pub fn set_saved_regs(&mut self, regs: UserRegs) {
        self.saved = regs;
    }

    /// Moves the syscall instruction used from now on.
    pub fn set_syscall_ip(&mut self, ip: u64) {
        self.syscall_ip = ip;
    }

    /// Declares that an `int3` follows the `syscall` instruction at
    /// `syscall_ip`: calls then run with `PTRACE_CONT` and stop once, on the
    /// trap, instead of at syscall entry and exit (about half the cost).
    pub fn set_trap_after(&mut self, on: bool) {
        self.trap_after = on;
    }

    /// Runs one syscall and returns its raw result.
    pub fn syscall(&mut self, nr: i64, args: [u64; 6]) -> io::Result<i64> {
        Ok(self.syscall_with_events(nr, args)?.ret)
    }

    /// Runs one syscall and maps a negative result to an error.
    pub fn syscall_ok(&mut self, nr: i64, args: [u64; 6]) -> io::Result<u64> {
        remote_result(self.syscall(nr, args)?)
    }

    /// Runs one syscall, collecting the tasks it creates.
    pub fn syscall_with_events(&mut self, nr: i64, args: [u64; 6]) -> io::Result<SyscallOutcome> {
        if self.trap_after {
            return self.syscall_to_trap(nr, args);
        }
        self.syscall_stops(nr, args)
    }

    fn load(&self, nr: i64, args: [u64; 6]) -> io::Result<()> {
        let mut regs = self.saved;
        regs.rax = nr as u64;
        regs.orig_rax = u64::MAX;
        regs.rdi = args[0];
        regs.rsi = args[1];
        regs.rdx = args[2];
        regs.r10 = args[3];
        regs.r8 = args[4];
        regs.r9 = args[5];
        regs.rip = self.syscall_ip;
        ptrace::set_regs(self.tid, &regs)
    }

    /// `syscall; int3`: resume, and collect the trap.
    fn syscall_to_trap(&mut self, nr: i64, args: [u64; 6]) -> io::Result<SyscallOutcome> {
        self.load(nr, args)?;
        ptrace::cont(self.tid, 0)?;
        let mut new_tasks = Vec::new();
        loop {
            match ptrace::wait(self.tid)? {
                Stop::Signal(libc::SIGTRAP) => break,
                Stop::Event(ptrace::EVENT_STOP, libc::SIGTRAP) => ptrace::cont(self.tid, 0)?,
                Stop::Event(ev, _) if ev == ptrace::EVENT_CLONE || ev == ptrace::EVENT_FORK => {
                    new_tasks.push(ptrace::event_msg(self.tid)? as Pid);
                    ptrace::cont(self.tid, 0)?;
                }
                other => {
                    return Err(io::Error::other(format!(
                        "task {} stopped with {other:?} instead of the trap after an injected syscall",
                        self.tid
                    )))
                }
            }
        }
        let after = ptrace::get_regs(self.tid)?;
        Ok(SyscallOutcome { ret: after.rax as i64, new_tasks })
    }

    /// Stops at syscall entry and exit (works with a bare `syscall`).
    fn syscall_stops(&mut self, nr: i64, args: [u64; 6]) -> io::Result<SyscallOutcome> {
        self.load(nr, args)?;
        ptrace::cont_syscall(self.tid, 0)?;
        self.expect_syscall_stop("entry", &mut Vec::new())?;
        ptrace::cont_syscall(self.tid, 0)?;
        let mut new_tasks = Vec::new();
        self.expect_syscall_stop("exit", &mut new_tasks)?;
        let after = ptrace::get_regs(self.tid)?;
        Ok(SyscallOutcome { ret: after.rax as i64, new_tasks })
    }

    /// Runs a last syscall (typically the `munmap` of the scratch page the
    /// `syscall` instruction lives in) and, at its exit stop, installs
    /// `final_regs` so the task never returns into the unmapped page.
    pub fn syscall_then_set(&mut self, nr: i64, args: [u64; 6], final_regs: UserRegs) -> io::Result<i64> {
        // Never the trap path: the int3 after it is about to be unmapped.
        let ret = self.syscall_stops(nr, args)?.ret;
        self.saved = final_regs;
        ptrace::set_regs(self.tid, &self.saved)?;
        self.finished = true;
        Ok(ret)
    }

    fn expect_syscall_stop(&self, what: &str, new_tasks: &mut Vec<Pid>) -> io::Result<()> {
        loop {
            match ptrace::wait(self.tid)? {
                Stop::Syscall => return Ok(()),
                // A job-control notification trap (the task's group stop
                // ended): it is not our syscall yet, step on.
                Stop::Event(ptrace::EVENT_STOP, libc::SIGTRAP) => ptrace::cont_syscall(self.tid, 0)?,
                Stop::Event(ev, _) if ev == ptrace::EVENT_CLONE || ev == ptrace::EVENT_FORK => {
                    new_tasks.push(ptrace::event_msg(self.tid)? as Pid);
                    ptrace::cont_syscall(self.tid, 0)?;
                }
                other => {
                    return Err(io::Error::other(format!(
                        "task {} left the injected syscall's {what} with {other:?}",
                        self.tid
                    )))
                }
            }
        }
    }

    /// Puts the saved registers back; the task stays stopped.
    pub fn finish(mut self) -> io::Result<()> {
        self.finished = true;
        ptrace::set_regs(self.tid, &self.saved)
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        if !self.finished {
            // Best effort: on an error path the task must not resume inside
            // our injected state.
            let _ = ptrace::set_regs(self.tid, &self.saved);
        }
    }
}
