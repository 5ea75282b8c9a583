//! Threads: registers (general, FPU/SSE/AVX xstate, fs_base/gs_base), the
//! blocked mask, per-thread pending signals, the alternate signal stack,
//! the clear-child-tid and robust-futex addresses glibc relies on for
//! `pthread_join` and robust mutexes, rseq, and credentials (per thread in
//! Linux).
//!
//! Registers come from `PTRACE_GETREGSET` (`NT_PRSTATUS`, `NT_X86_XSTATE`).
//! A thread stopped inside an interrupted syscall is stored ready to
//! restart it (see `stasis_sys::inject::restart_syscall_regs`). The whole
//! XSAVE buffer is kept in `xsave_raw` (a Stasis field) so any CPU's state
//! round-trips exactly; CRIU's fxsave fields are filled too for `crit`.

use crate::error::{dump_io, restore_io, DumpError, RestoreError};
use crate::proc;
use crate::remote::{u64_at, ThreadCall};
use crate::restore::stub::Task;
use stasis_image::pb;
use stasis_sys::ptrace::{self, UserRegs};
use stasis_sys::Pid;

const PR_GET_TID_ADDRESS: u64 = 40;

fn words32(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4).map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn u16_at(b: &[u8], o: usize) -> u32 {
    u16::from_ne_bytes([b[o], b[o + 1]]) as u32
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// CRIU's view of an XSAVE buffer (legacy fxsave area + AVX upper halves).
fn fpregs_entry(x: &[u8]) -> pb::UserX86FpregsEntry {
    let xsave = (x.len() >= 576 + 256).then(|| pb::UserX86XsaveEntry {
        xstate_bv: u64_at(x, 512),
        ymmh_space: words32(&x[576..576 + 256]),
        ..Default::default()
    });
    pb::UserX86FpregsEntry {
        cwd: u16_at(x, 0),
        swd: u16_at(x, 2),
        twd: u16_at(x, 4),
        fop: u16_at(x, 6),
        rip: u64_at(x, 8),
        rdp: u64_at(x, 16),
        mxcsr: u32_at(x, 24),
        mxcsr_mask: u32_at(x, 28),
        st_space: words32(&x[32..160]),
        xmm_space: words32(&x[160..416]),
        padding: words32(&x[416..512]),
        xsave,
    }
}

fn regs_entry(r: &UserRegs) -> pb::UserX86RegsEntry {
    pb::UserX86RegsEntry {
        r15: r.r15,
        r14: r.r14,
        r13: r.r13,
        r12: r.r12,
        bp: r.rbp,
        bx: r.rbx,
        r11: r.r11,
        r10: r.r10,
        r9: r.r9,
        r8: r.r8,
        ax: r.rax,
        cx: r.rcx,
        dx: r.rdx,
        si: r.rsi,
        di: r.rdi,
        orig_ax: r.orig_rax,
        ip: r.rip,
        cs: r.cs,
        flags: r.eflags,
        sp: r.rsp,
        ss: r.ss,
        fs_base: r.fs_base,
        gs_base: r.gs_base,
        ds: r.ds,
        es: r.es,
        fs: r.fs,
        gs: r.gs,
        mode: Some(pb::UserX86RegsMode::Native as i32),
    }
}

/// Registers back from the image.
pub fn user_regs(e: &pb::UserX86RegsEntry) -> UserRegs {
    UserRegs {
        r15: e.r15,
        r14: e.r14,
        r13: e.r13,
        r12: e.r12,
        rbp: e.bp,
        rbx: e.bx,
        r11: e.r11,
        r10: e.r10,
        r9: e.r9,
        r8: e.r8,
        rax: e.ax,
        rcx: e.cx,
        rdx: e.dx,
        rsi: e.si,
        rdi: e.di,
        orig_rax: e.orig_ax,
        rip: e.ip,
        cs: e.cs,
        eflags: e.flags,
        rsp: e.sp,
        ss: e.ss,
        fs_base: e.fs_base,
        gs_base: e.gs_base,
        ds: e.ds,
        es: e.es,
        fs: e.fs,
        gs: e.gs,
    }
}

fn caps(v: u64) -> Vec<u32> {
    vec![v as u32, (v >> 32) as u32]
}

/// Credentials of one thread from `/proc/PID/task/TID/status`.
pub fn dump_creds(pid: Pid, tid: Pid) -> Result<pb::CredsEntry, DumpError> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .map_err(dump_io(tid, "read thread status"))?;
    let st = proc::status::parse_status(&text).map_err(|source| DumpError::Proc { pid: tid, source })?;
    let securebits = 0; // not visible in /proc; default for root tasks
    Ok(pb::CredsEntry {
        uid: st.uid.real,
        gid: st.gid.real,
        euid: st.uid.effective,
        egid: st.gid.effective,
        suid: st.uid.saved,
        sgid: st.gid.saved,
        fsuid: st.uid.fs,
        fsgid: st.gid.fs,
        cap_inh: caps(st.cap_inh),
        cap_prm: caps(st.cap_prm),
        cap_eff: caps(st.cap_eff),
        cap_bnd: caps(st.cap_bnd),
        secbits: securebits,
        groups: st.groups.clone(),
        lsm_profile: None,
        lsm_sockcreate: None,
        apparmor_data: None,
        no_new_privs: Some(st.no_new_privs as u32),
        cap_amb: caps(st.cap_amb),
    })
}

/// Everything of one stopped thread; `call` runs injected syscalls in it
/// (with a scratch area at `scratch`).
pub fn dump_thread(
    pid: Pid,
    tid: Pid,
    call: &mut ThreadCall,
    scratch: u64,
    scratch_read: &dyn Fn(u64, usize) -> std::io::Result<Vec<u8>>,
) -> Result<(pb::ThreadInfoX86, pb::ThreadCoreEntry), DumpError> {
    // Not ptrace::get_regs: injected calls are under way; the injector
    // holds the thread's own registers (already set up to restart an
    // interrupted syscall).
    let regs = call.saved_regs().ok_or_else(|| DumpError::Task {
        pid: tid,
        what: "read registers".into(),
        source: std::io::Error::other("injection already finished"),
    })?;
    let xstate = ptrace::get_xstate(tid).map_err(dump_io(tid, "read FPU/AVX state"))?;
    let blk = call.saved_mask();
    let pending = ptrace::peek_siginfo(tid, false).map_err(dump_io(tid, "read pending signals"))?;

    // sigaltstack(NULL, &old) and prctl(PR_GET_TID_ADDRESS, &addr) and
    // get_robust_list(0, &head, &len) write into scratch memory.
    call.call(libc::SYS_sigaltstack, [0, scratch, 0, 0, 0, 0]).map_err(dump_io(tid, "sigaltstack"))?;
    call.call(libc::SYS_prctl, [PR_GET_TID_ADDRESS, scratch + 32, 0, 0, 0, 0])
        .map_err(dump_io(tid, "PR_GET_TID_ADDRESS"))?;
    call.call(libc::SYS_get_robust_list, [0, scratch + 48, scratch + 56, 0, 0, 0])
        .map_err(dump_io(tid, "get_robust_list"))?;
    let b = scratch_read(scratch, 64).map_err(dump_io(tid, "read scratch"))?;
    let sas = pb::ThreadSasEntry { ss_sp: u64_at(&b, 0), ss_flags: u32_at(&b, 8), ss_size: u64_at(&b, 16) };
    let clear_tid = u64_at(&b, 32);
    let robust = (u64_at(&b, 48), u64_at(&b, 56));

    let rseq = ptrace::get_rseq_config(tid).map_err(dump_io(tid, "read rseq"))?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
    let info = pb::ThreadInfoX86 {
        clear_tid_addr: clear_tid,
        gpregs: regs_entry(&regs),
        fpregs: fpregs_entry(&xstate),
        tls: Vec::new(),
        xsave_raw: Some(xstate),
    };
    let core = pb::ThreadCoreEntry {
        futex_rla: robust.0,
        futex_rla_len: robust.1 as u32,
        blk_sigset: Some(blk),
        sas: Some(sas),
        signals_p: Some(pb::SignalQueueEntry {
            signals: pending.iter().map(|s| pb::SiginfoEntry { siginfo: s.to_vec() }).collect(),
        }),
        creds: Some(dump_creds(pid, tid)?),
        comm: Some(comm.trim_end_matches('\n').to_string()),
        rseq_entry: (rseq.rseq_abi_pointer != 0).then_some(pb::RseqEntry {
            rseq_abi_pointer: rseq.rseq_abi_pointer,
            rseq_abi_size: rseq.rseq_abi_size,
            signature: rseq.signature,
            rseq_cs_pointer: None,
        }),
        ..Default::default()
    };
    Ok((info, core))
}

/// Per-thread state that needs injected syscalls: sigaltstack, tid
/// address, robust list, rseq, comm, pending signals, credentials.
pub fn restore_thread_state(
    task: &mut Task,
    core: &pb::ThreadCoreEntry,
    info: &pb::ThreadInfoX86,
) -> Result<(), RestoreError> {
    let tid = task.tid;
    if let Some(sas) = &core.sas {
        if sas.ss_sp != 0 || sas.ss_size != 0 {
            let mut b = Vec::with_capacity(24);
            b.extend_from_slice(&sas.ss_sp.to_ne_bytes());
            b.extend_from_slice(&(sas.ss_flags as u64).to_ne_bytes());
            b.extend_from_slice(&sas.ss_size.to_ne_bytes());
            let a = task.put(0, &b).map_err(restore_io(tid, "write sigaltstack"))?;
            task.call(libc::SYS_sigaltstack, [a, 0, 0, 0, 0, 0]).map_err(restore_io(tid, "sigaltstack"))?;
        }
    }
    task.call(libc::SYS_set_tid_address, [info.clear_tid_addr, 0, 0, 0, 0, 0])
        .map_err(restore_io(tid, "set_tid_address"))?;
    if core.futex_rla != 0 {
        task.call(libc::SYS_set_robust_list, [core.futex_rla, core.futex_rla_len as u64, 0, 0, 0, 0])
            .map_err(restore_io(tid, "set_robust_list"))?;
    }
    if let Some(r) = &core.rseq_entry {
        task.call(libc::SYS_rseq, [r.rseq_abi_pointer, r.rseq_abi_size as u64, 0, r.signature as u64, 0, 0])
            .map_err(restore_io(tid, "rseq"))?;
    }
    if let Some(comm) = &core.comm {
        let a = task.put_str(0, comm).map_err(restore_io(tid, "write comm"))?;
        let _ = task.call(libc::SYS_prctl, [libc::PR_SET_NAME as u64, a, 0, 0, 0, 0]);
    }
    if let Some(q) = &core.signals_p {
        for s in &q.signals {
            queue_signal(task, &s.siginfo, false)?;
        }
    }
    Ok(())
}

/// Queues a dumped siginfo to the task itself (allowed for any si_code
/// because the sender is the receiver).
pub fn queue_signal(task: &mut Task, siginfo: &[u8], shared: bool) -> Result<(), RestoreError> {
    let tid = task.tid;
    if siginfo.len() < 128 {
        return Err(RestoreError::Task {
            pid: tid,
            what: "a pending signal record is truncated".into(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidData),
        });
    }
    let signo = u32_at(siginfo, 0) as u64;
    let a = task.put(512, &siginfo[..128]).map_err(restore_io(tid, "write siginfo"))?;
    let r = if shared {
        task.call(libc::SYS_rt_sigqueueinfo, [task.vpid as u64, signo, a, 0, 0, 0])
    } else {
        task.call(libc::SYS_rt_tgsigqueueinfo, [task.vpid as u64, task.vtid as u64, signo, a, 0, 0])
    };
    r.map(drop).map_err(restore_io(tid, format!("queue signal {signo}")))
}

/// Credentials (no_new_privs, groups, bounding set, ids, capabilities),
/// last: after them the task may lack the privileges the restore needs.
pub fn restore_creds(task: &mut Task, c: &pb::CredsEntry) -> Result<(), RestoreError> {
    let tid = task.tid;
    if c.no_new_privs.is_some_and(|v| v != 0) {
        task.call(libc::SYS_prctl, [libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0, 0])
            .map_err(restore_io(tid, "set no_new_privs"))?;
    }
    let all_root = [c.uid, c.gid, c.euid, c.egid, c.suid, c.sgid, c.fsuid, c.fsgid].iter().all(|&v| v == 0);
    if !c.groups.is_empty() || !all_root {
        let g: Vec<u8> = c.groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
        let a = task.put(0, &g).map_err(restore_io(tid, "write groups"))?;
        task.call(libc::SYS_setgroups, [c.groups.len() as u64, a, 0, 0, 0, 0]).map_err(restore_io(tid, "setgroups"))?;
    }
    // The bounding set: drop what the process had dropped.
    let bnd = c.cap_bnd.first().copied().unwrap_or(u32::MAX) as u64
        | (c.cap_bnd.get(1).copied().unwrap_or(u32::MAX) as u64) << 32;
    let last_cap: u64 =
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40);
    for cap in 0..=last_cap {
        if bnd & (1 << cap) == 0 {
            const PR_CAPBSET_DROP: u64 = 24;
            task.call(libc::SYS_prctl, [PR_CAPBSET_DROP, cap, 0, 0, 0, 0])
                .map_err(restore_io(tid, format!("drop capability {cap} from the bounding set")))?;
        }
    }
    if all_root {
        return Ok(());
    }
    const PR_SET_KEEPCAPS: u64 = 8;
    task.call(libc::SYS_prctl, [PR_SET_KEEPCAPS, 1, 0, 0, 0, 0]).map_err(restore_io(tid, "keep caps"))?;
    task.call(libc::SYS_setresgid, [c.gid as u64, c.egid as u64, c.sgid as u64, 0, 0, 0])
        .map_err(restore_io(tid, "setresgid"))?;
    task.call(libc::SYS_setfsgid, [c.fsgid as u64, 0, 0, 0, 0, 0]).map_err(restore_io(tid, "setfsgid"))?;
    task.call(libc::SYS_setresuid, [c.uid as u64, c.euid as u64, c.suid as u64, 0, 0, 0])
        .map_err(restore_io(tid, "setresuid"))?;
    task.call(libc::SYS_setfsuid, [c.fsuid as u64, 0, 0, 0, 0, 0]).map_err(restore_io(tid, "setfsuid"))?;
    task.call(libc::SYS_prctl, [PR_SET_KEEPCAPS, 0, 0, 0, 0, 0]).map_err(restore_io(tid, "keep caps"))?;
    // capset(v3): header {version, pid} then two data structs {eff, prm, inh}.
    let w = |v: &[u32], i: usize| v.get(i).copied().unwrap_or(0);
    let mut b = Vec::new();
    for word in [0x2008_0522u32, 0] {
        b.extend_from_slice(&word.to_ne_bytes());
    }
    for i in 0..2 {
        for word in [w(&c.cap_eff, i), w(&c.cap_prm, i), w(&c.cap_inh, i)] {
            b.extend_from_slice(&word.to_ne_bytes());
        }
    }
    let a = task.put(0, &b).map_err(restore_io(tid, "write caps"))?;
    task.call(libc::SYS_capset, [a, a + 8, 0, 0, 0, 0]).map_err(restore_io(tid, "capset"))?;
    Ok(())
}

/// The registers a thread resumes with.
pub fn final_regs(info: &pb::ThreadInfoX86) -> Option<UserRegs> {
    let mut r = user_regs(&info.gpregs);
    r.orig_rax = u64::MAX;
    Some(r)
}
