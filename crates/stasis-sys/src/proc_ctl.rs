//! Process control: restore stubs created with `clone3(set_tid)`, signals,
//! waiting for ordinary children, and the interrupt flag.
//!
//! A restore stub is a fresh child of the restorer that will become one
//! process of the restored tree. Right after `clone3` it maps a scratch area
//! at an address the restorer chose (free in our layout and in every
//! restored process's layout), copies a few bytes of code there (a `syscall`
//! instruction the tracer uses for injection), closes every fd above 2, asks
//! to be traced and stops itself. From then on no code of ours runs in it:
//! the tracer rebuilds it entirely with remote syscalls.

use crate::{check, check_int, Pid};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// `struct clone_args` (version 2, 88 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

impl CloneArgs {
    /// The struct as bytes, to copy into another task's memory.
    pub fn to_bytes(&self) -> [u8; 88] {
        let words = [
            self.flags,
            self.pidfd,
            self.child_tid,
            self.parent_tid,
            self.exit_signal,
            self.stack,
            self.stack_size,
            self.tls,
            self.set_tid,
            self.set_tid_size,
            self.cgroup,
        ];
        let mut out = [0u8; 88];
        for (i, w) in words.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&w.to_ne_bytes());
        }
        out
    }
}

/// Exit codes of a stub that failed before stopping (seen by the restorer).
pub const STUB_EXIT_MMAP: i32 = 120;
pub const STUB_EXIT_TRACEME: i32 = 121;
pub const STUB_EXIT_RESUMED: i32 = 122;
pub const STUB_EXIT_FD: i32 = 123;

/// A pidfd of the restorer that every restore stub holds at a fixed fd
/// number: the stub's tasks take the restorer's files with `pidfd_getfd`
/// on it, which works whatever pid namespace they are in.
#[derive(Clone, Copy, Debug)]
pub struct StubFd {
    /// Our pidfd (an fd of the restorer, open while stubs are created).
    pub pidfd: i32,
    /// The number it gets in the stub.
    pub at: i32,
}

/// The child side of a stub: maps the scratch area, copies `code` into it,
/// moves `keep.pidfd` to `keep.at` and closes every other fd above 2, asks
/// to be traced and stops itself. Only raw syscalls: safe to run right
/// after a fork of a multithreaded process.
///
/// # Safety
/// Must run in a freshly forked child that owns nothing else of value (it
/// never returns: it stops, and `_exit`s with a `STUB_EXIT_*` code if it is
/// ever resumed or something fails).
unsafe fn stub_child(scratch_addr: u64, scratch_len: usize, code: &[u8], keep: Option<StubFd>) -> ! {
    // SAFETY: the mapping is new (NOREPLACE) and exactly scratch_len long,
    // so the copy stays inside it; the rest are plain syscalls.
    unsafe {
        let p = libc::mmap(
            scratch_addr as *mut libc::c_void,
            scratch_len,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        );
        if p as u64 != scratch_addr {
            libc::_exit(STUB_EXIT_MMAP);
        }
        std::ptr::copy_nonoverlapping(code.as_ptr(), p as *mut u8, code.len());
        match keep {
            Some(k) if k.at > 2 => {
                if k.pidfd != k.at && libc::dup3(k.pidfd, k.at, 0) != k.at {
                    libc::_exit(STUB_EXIT_FD);
                }
                if k.at > 3 {
                    libc::syscall(libc::SYS_close_range, 3u32, (k.at - 1) as u32, 0u32);
                }
                libc::syscall(libc::SYS_close_range, (k.at + 1) as u32, u32::MAX, 0u32);
            }
            _ => {
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            }
        }
        if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
            libc::_exit(STUB_EXIT_TRACEME);
        }
        libc::kill(libc::getpid(), libc::SIGSTOP);
        libc::_exit(STUB_EXIT_RESUMED);
    }
}

/// Creates a restore stub with pid `set_tid` (or any pid), a scratch area at
/// `scratch_addr` of `scratch_len` bytes (read-write-execute) whose start
/// holds `code`, traced by us and stopped with SIGSTOP (the caller must
/// `ptrace::wait` for that stop). Fails with `EEXIST` if the pid is taken.
pub fn spawn_stub(
    set_tid: Option<Pid>,
    scratch_addr: u64,
    scratch_len: usize,
    code: &[u8],
    keep: Option<StubFd>,
) -> io::Result<Pid> {
    assert!(code.len() <= scratch_len);
    let tid_arr: [libc::pid_t; 1] = [set_tid.unwrap_or(0)];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: if set_tid.is_some() { tid_arr.as_ptr() as u64 } else { 0 },
        set_tid_size: if set_tid.is_some() { 1 } else { 0 },
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM behaves like fork: the child gets a
    // copy of our memory. In the child we only make raw syscalls and copy
    // bytes (async-signal-safe), then stop or _exit; it never returns into
    // Rust code that could touch locks or allocators.
    let ret = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
    if ret == 0 {
        // SAFETY: we are the fresh child; see `stub_child`.
        unsafe { stub_child(scratch_addr, scratch_len, code, keep) }
    }
    check(ret).map(|pid| pid as Pid)
}

/// Turns the calling process, a single-threaded child its parent (the
/// restorer) forked and prepared (e.g. a container's init after it built
/// its namespaces and root file system), into a restore stub like those of
/// [`spawn_stub`]: the parent then waits for its SIGSTOP and adopts it.
/// Never returns.
pub fn become_stub(scratch_addr: u64, scratch_len: usize, code: &[u8], keep: Option<StubFd>) -> ! {
    assert!(code.len() <= scratch_len);
    // SAFETY: the caller is a forked child that will never run its own code
    // again; `stub_child` only makes raw syscalls.
    unsafe { stub_child(scratch_addr, scratch_len, code, keep) }
}

/// Sends `sig` to process `pid` (0 only checks it exists).
pub fn kill(pid: Pid, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments.
    check_int(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// Sends `sig` to thread `tid` of process `tgid`.
pub fn tgkill(tgid: Pid, tid: Pid, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments.
    check(unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, sig) }).map(drop)
}

/// Waits for an ordinary child to end: `Ok(status)` as an exit code, with
/// death by signal N reported as 128 + N (like a shell).
pub fn wait_exit(pid: Pid) -> io::Result<i32> {
    let (_, status) = crate::waitpid_retry(pid, 0)?;
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else {
        Ok(128 + libc::WTERMSIG(status))
    }
}

/// The calling thread's id.
pub fn gettid() -> Pid {
    // SAFETY: gettid cannot fail.
    unsafe { libc::gettid() }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs SIGINT/SIGTERM/SIGHUP handlers that only set a flag, so the
/// engine can stop at its next step and unwind cleanly (thaw, detach,
/// remove staging files) instead of dying with tasks frozen.
pub fn install_interrupt_flag() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: sa is fully initialised; the handler only stores to an
        // atomic, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_interrupt as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            check_int(libc::sigaction(sig, &sa, std::ptr::null_mut()))?;
        }
    }
    Ok(())
}

/// Whether SIGINT/SIGTERM/SIGHUP arrived since [`install_interrupt_flag`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Makes this process a child subreaper (orphans of the restored tree
/// reparent to us while we restore).
pub fn set_child_subreaper(on: bool) -> io::Result<()> {
    // SAFETY: plain prctl with integer arguments.
    check_int(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, on as libc::c_ulong, 0, 0, 0) }).map(drop)
}

/// Signals (bit `n-1` for signal `n`) whose disposition in this process is
/// not the default: a restore stub inherits them and must reset them.
pub fn nondefault_signals() -> u64 {
    let mut mask = 0u64;
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: querying (act = NULL) into a zeroed local struct.
        let handler = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            old.sa_sigaction
        };
        if handler != libc::SIG_DFL {
            mask |= 1 << (sig - 1);
        }
    }
    mask
}

/// Reaps every child and tracee of ours until none is left (used after
/// killing a half-restored tree).
pub fn reap_all() {
    while crate::waitpid_retry(-1, libc::__WALL).is_ok() {}
}

/// A CPU affinity mask (`cpu_set_t`).
#[derive(Clone)]
pub struct CpuSet(libc::cpu_set_t);

impl CpuSet {
    /// The CPUs of this set that are not in `other`; `None` if none is left.
    pub fn without(&self, other: &CpuSet) -> Option<CpuSet> {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; every CPU index
        // passed to the CPU_* helpers is below CPU_SETSIZE.
        let rest = unsafe {
            let mut s: libc::cpu_set_t = std::mem::zeroed();
            for cpu in 0..libc::CPU_SETSIZE as usize {
                if libc::CPU_ISSET(cpu, &self.0) && !libc::CPU_ISSET(cpu, &other.0) {
                    libc::CPU_SET(cpu, &mut s);
                }
            }
            s
        };
        // SAFETY: rest is a valid cpu_set_t.
        (unsafe { libc::CPU_COUNT(&rest) } > 0).then_some(CpuSet(rest))
    }
}

/// The CPU affinity of `pid` (0: the calling thread).
pub fn get_affinity(pid: Pid) -> io::Result<CpuSet> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a live cpu_set_t of the size we pass.
    check_int(unsafe { libc::sched_getaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) })?;
    Ok(CpuSet(set))
}

/// Sets the CPU affinity of `pid` (0: the calling thread).
pub fn set_affinity(pid: Pid, set: &CpuSet) -> io::Result<()> {
    // SAFETY: set.0 is a live cpu_set_t of the size we pass.
    check_int(unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set.0) }).map(drop)
}

/// The CPU the calling thread runs on, as a one-CPU set.
pub fn current_cpu_set() -> io::Result<CpuSet> {
    // SAFETY: sched_getcpu has no arguments.
    let cpu = check_int(unsafe { libc::sched_getcpu() })?;
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes one
    // bit inside it (cpu < CPU_SETSIZE as the kernel reported it).
    let set = unsafe {
        let mut s: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut s);
        s
    };
    Ok(CpuSet(set))
}

static ORIGINAL_AFFINITY: std::sync::Mutex<Option<CpuSet>> = std::sync::Mutex::new(None);

/// Pins the calling thread to the CPU it runs on, remembering its mask for
/// [`unpin_self`] and for worker threads ([`use_original_affinity`]).
pub fn pin_self() -> io::Result<()> {
    let orig = get_affinity(0)?;
    set_affinity(0, &current_cpu_set()?)?;
    if let Ok(mut g) = ORIGINAL_AFFINITY.lock() {
        g.get_or_insert(orig);
    }
    Ok(())
}

/// The CPUs the pinned thread may not use (all but its own, of the mask
/// it had before [`pin_self`]), for a helper that must not take its CPU;
/// `None` when we are not pinned or had one CPU only.
pub fn away_from_pinned() -> Option<CpuSet> {
    let orig = ORIGINAL_AFFINITY.lock().ok()?.clone()?;
    orig.without(&get_affinity(0).ok()?)
}

/// Puts back the mask saved by [`pin_self`].
pub fn unpin_self() {
    if let Some(orig) = ORIGINAL_AFFINITY.lock().ok().and_then(|mut g| g.take()) {
        let _ = set_affinity(0, &orig);
    }
}

/// The mask saved by [`pin_self`], while pinned.
pub fn original_affinity() -> Option<CpuSet> {
    ORIGINAL_AFFINITY.lock().ok().and_then(|g| g.clone())
}

/// For a worker thread spawned while pinned: run on every CPU we may use.
pub fn use_original_affinity() {
    if let Some(orig) = original_affinity() {
        let _ = set_affinity(0, &orig);
    }
}

/// Raises our soft limit on open files to at least `want` (at most the hard
/// limit); children inherit it.
pub fn raise_nofile(want: u64) -> io::Result<()> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: r is a valid rlimit struct for the kernel to fill.
    check_int(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) })?;
    if r.rlim_cur >= want {
        return Ok(());
    }
    if r.rlim_max < want {
        return Err(io::Error::other(format!("fd {want} is above the hard limit on open files ({})", r.rlim_max)));
    }
    r.rlim_cur = want;
    // SAFETY: r is a valid, initialised rlimit struct.
    check_int(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) }).map(drop)
}
