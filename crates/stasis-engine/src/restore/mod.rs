//! Restore orchestration.
//!
//! 1. Read and check every image ([`load`]) and that every PID and TID is
//!    free; refuse before touching anything.
//! 2. Create the tree as stopped stubs with the exact PIDs, parents first,
//!    sessions and process groups in dependency order ([`stub`]).
//! 3. Per process: rebuild the address space, fds, cwd/root/umask, signal
//!    actions, limits, mm fields; create the threads; timers, pending
//!    signals, per-thread state, seccomp filters, credentials.
//! 4. Give every thread its registers; the main thread's last injected call
//!    unmaps the scratch area and stops at syscall exit, where its final
//!    registers are set. Then release every task at once.
//!
//! A [`Transaction`] kills and reaps everything created so far if any step
//! fails or the restorer is interrupted; `PTRACE_O_EXITKILL` covers the
//! restorer itself dying.

pub mod load;
pub mod namespaces;
pub mod page_chain;
pub mod stub;

use crate::error::{restore_io, RestoreError};
use crate::fault;
use crate::kinds::{files, mm, signal, task, thread};
use load::{ProcessImage, TreeImage};
use stasis_sys::{proc_ctl, ptrace, Pid};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use stub::{Task, SCRATCH_LEN};

/// How to restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreOpts {
    /// Restore established TCP connections (TCP_REPAIR).
    pub tcp_established: bool,
    /// Restore established TCP connections as closed sockets instead.
    pub tcp_close: bool,
    /// Files for the image's external files with these keys (see
    /// `DumpOpts::external`): fd numbers of ours, open during the restore.
    pub inherit: Vec<(String, std::os::fd::RawFd)>,
}

/// The running, restored tree.
#[derive(Debug)]
pub struct Restored {
    /// The root's pid as the image names it (as the tree sees it).
    pub root_pid: Pid,
    pub processes: usize,
    pub restore_time: Duration,
}

/// Kills every task created so far unless committed.
struct Transaction {
    pids: Vec<Pid>,
    committed: bool,
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for &pid in self.pids.iter().rev() {
            let _ = proc_ctl::kill(pid, libc::SIGKILL);
        }
        proc_ctl::reap_all();
    }
}

fn interrupted() -> Result<(), RestoreError> {
    if proc_ctl::interrupted() {
        Err(RestoreError::Interrupted)
    } else {
        Ok(())
    }
}

/// An address range free in every process of the image and in ours, for the
/// scratch area each stub carries.
fn pick_scratch(tree: &TreeImage) -> Result<u64, RestoreError> {
    let mut used: Vec<(u64, u64)> = Vec::new();
    for p in &tree.processes {
        if let Some(mm) = &p.mm {
            used.extend(mm.vmas.iter().map(|v| (v.start, v.end)));
        }
    }
    if let Ok(mine) = crate::proc::read_maps(std::process::id() as i32) {
        used.extend(mine.iter().map(|m| (m.start, m.end)));
    }
    used.sort_unstable();
    let mut cand: u64 = 0x1_0000_0000;
    for (s, e) in used {
        // Keep a guard page either side (stack guard gaps, growsdown).
        if s >= cand + SCRATCH_LEN + 0x10_0000 {
            break;
        }
        if e + 0x10_0000 > cand {
            cand = (e + 0x10_0000 + 0xffff) & !0xffff;
        }
    }
    if cand + SCRATCH_LEN >= 0x7f00_0000_0000 {
        return Err(RestoreError::Invalid { dir: tree.dir.clone(), what: "no free address range for restore".into() });
    }
    Ok(cand)
}

fn check_ids_free(tree: &TreeImage) -> Result<(), RestoreError> {
    for p in &tree.processes {
        for &id in p.pstree.threads.iter().chain(std::iter::once(&p.pstree.pid)) {
            let id = id as Pid;
            if !Path::new(&format!("/proc/{id}")).exists() {
                continue;
            }
            // A zombie reparented to init goes away once init reaps it; on
            // some machines init takes a second or more. Wait a little.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                match crate::proc::read_stat(id) {
                    Err(_) if !Path::new(&format!("/proc/{id}")).exists() => break,
                    Ok(st) if st.is_zombie() && st.ppid == 1 && std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok(st) if st.is_zombie() => {
                        return Err(RestoreError::PidHeldByZombie { pid: id, parent: st.ppid });
                    }
                    _ => return Err(RestoreError::PidInUse { pid: id }),
                }
            }
        }
    }
    Ok(())
}

/// A loaded image set and what its restore stubs need, computed before any
/// stub exists: the runtime forks a container's init (which becomes the
/// root stub, see [`RootStub`]) after this.
pub struct RestorePlan {
    tree: TreeImage,
    /// Where every stub's scratch area goes (`stub::SCRATCH_LEN` bytes).
    pub scratch: u64,
    /// The fd number every stub holds the restorer's pidfd at: above every
    /// fd of the image.
    pub stub_fd: i32,
}

impl RestorePlan {
    /// The image directory.
    pub fn dir(&self) -> &Path {
        &self.tree.dir
    }
}

/// Reads and checks the images; nothing is created yet.
pub fn plan(images: &Path) -> Result<RestorePlan, RestoreError> {
    let tree = load::load(images)?;
    let scratch = pick_scratch(&tree)?;
    let max_fd = tree.processes.iter().flat_map(|p| p.fdinfo.iter().map(|f| f.fd)).max().unwrap_or(2);
    let stub_fd = (max_fd + 1).max(3) as i32;
    proc_ctl::raise_nofile(stub_fd as u64 + 1).map_err(restore_io(0, "raise the limit on open files"))?;
    Ok(RestorePlan { tree, scratch, stub_fd })
}

/// A root process someone else prepared: a child of ours that made itself
/// a stub with `proc_ctl::become_stub(plan.scratch, stub::SCRATCH_LEN,
/// &stub::CODE, Some(StubFd { pidfd: <a pidfd of ours>, at: plan.stub_fd }))`
/// after entering its namespaces (a new pid namespace, whose pid 1 it is)
/// and its root file system. The tree is restored inside those namespaces.
#[derive(Clone, Copy, Debug)]
pub struct RootStub {
    /// Its pid as we see it.
    pub pid: Pid,
}

/// Restores the tree in `images`; returns once it runs.
pub fn restore(images: &Path, opts: &RestoreOpts) -> Result<Restored, RestoreError> {
    let t0 = Instant::now();
    let plan = plan(images)?;
    restore_planned(plan, opts, None, t0)
}

/// Restores a planned tree, into `root` when given (else the root process
/// is created here, with its old pid).
pub fn restore_planned(
    plan: RestorePlan,
    opts: &RestoreOpts,
    root: Option<RootStub>,
    t0: Instant,
) -> Result<Restored, RestoreError> {
    let RestorePlan { tree, scratch, stub_fd } = plan;
    if root.is_none() {
        check_ids_free(&tree)?;
    }
    let _ = proc_ctl::set_child_subreaper(true);
    // Every injected call hands the CPU between us and a stopped task; on
    // one CPU that hand-off is a plain context switch, across CPUs it is a
    // cross-CPU wake-up costing several times more. Stubs inherit the
    // pinning; each task gets the original mask back before it runs.
    let cpus = Affinity::pin();
    let mut tx = Transaction { pids: Vec::new(), committed: false };
    let root_img = &tree.processes[0];
    let root_pid = root_img.pid();

    // 2. The tree, as stubs.
    let mut tasks: HashMap<Pid, Task> = HashMap::new();
    let mut root = match root {
        None => {
            let me = stasis_sys::fd::pidfd_open(std::process::id() as Pid)
                .map_err(restore_io(root_pid, "open a pidfd of the restorer"))?;
            let keep = proc_ctl::StubFd { pidfd: me.as_raw_fd(), at: stub_fd };
            Task::spawn_root(root_pid, scratch, keep).map_err(creation_error(root_pid, "create the root process"))?
        }
        Some(r) => {
            tx.pids.push(r.pid);
            if root_pid != 1 {
                return Err(RestoreError::Invalid {
                    dir: tree.dir.clone(),
                    what: format!("the root process has pid {root_pid}; only a pid namespace's init (1) can be restored into a new one"),
                });
            }
            Task::adopt(r.pid, root_pid, scratch, stub_fd as u64)
                .map_err(restore_io(root_pid, "take over the root process"))?
        }
    };
    if tx.pids.is_empty() {
        tx.pids.push(root.pid);
    }
    let root_host = root.pid;
    // Sockets are created here, by the restorer: in the tree's network
    // namespace. Files the restorer creates for the tree (ghost files) go
    // where the tree sees its `/`.
    let _netns =
        stasis_sys::ns::ThreadNetns::enter(root_host).map_err(restore_io(root_pid, "enter the network namespace"))?;
    let fs_root = PathBuf::from(format!("/proc/{root_host}/root"));
    if root_img.pstree.sid == root_pid as u32 {
        root.call(libc::SYS_setsid, [0; 6]).map_err(restore_io(root_pid, "setsid"))?;
    }
    tasks.insert(root_pid, root);
    for p in tree.processes.iter().skip(1) {
        interrupted()?;
        let pid = p.pid();
        let parent = tasks.get_mut(&(p.pstree.ppid as Pid)).ok_or_else(|| RestoreError::Invalid {
            dir: tree.dir.clone(),
            what: format!("the parent {} of process {pid} is not restored first", p.pstree.ppid),
        })?;
        let mut child = parent.fork_child(pid).map_err(creation_error(pid, "create process"))?;
        tx.pids.push(child.pid);
        if p.pstree.sid == pid as u32 {
            child.call(libc::SYS_setsid, [0; 6]).map_err(restore_io(pid, "setsid"))?;
        }
        tasks.insert(pid, child);
    }
    set_process_groups(&tree, &mut tasks)?;
    fault::check("restore-after-tree").map_err(restore_io(root_pid, "fault injection"))?;

    // 3. Each process's contents.
    let sources = files::FileSources::prepare(&tree.dir, &tree.files, &tree.pipe_data, &fs_root)?;
    let mut cx = ProcessCtx {
        files: tree.files.iter().map(|f| (f.id, f)).collect(),
        map_paths: sources.mapping_paths(&tree.files),
        sources,
        opened: crate::kinds::share::Opened::default(),
        fd: crate::kinds::fdkind::FdRestoreCtx {
            dir: &tree.dir,
            root: root_host,
            opts,
            special: Default::default(),
            sockets: Default::default(),
        },
        shared_anon: mm::SharedAnonRegistry::new(),
        inherited_signals: proc_ctl::nondefault_signals(),
        seccomp: tree.seccomp.as_ref(),
        own_limits: crate::proc::read_limits(std::process::id() as i32).ok(),
    };
    crate::kinds::special::prepare(&mut cx.fd, &tree.files, &mut cx.map_paths)?;
    let mut threads: HashMap<Pid, Vec<Task>> = HashMap::new();
    for p in tree.processes.iter().filter(|p| !p.is_zombie()) {
        interrupted()?;
        let pid = p.pid();
        let t = tasks.get_mut(&pid).ok_or(RestoreError::Interrupted)?;
        let ts = restore_process(t, p, &mut cx)?;
        tx.pids.extend(ts.iter().map(|t| t.tid));
        threads.insert(pid, ts);
    }
    crate::kinds::sockets::after_all_fds(&mut cx.fd)?;
    log::debug!("restore: sockets out of repair mode at {:?}", t0.elapsed());
    // Zombies: created by their parent, then made to exit with their code.
    let mut zombies = Vec::new();
    for p in tree.processes.iter().filter(|p| p.is_zombie()) {
        let t = tasks.get_mut(&p.pid()).ok_or(RestoreError::Interrupted)?;
        let code = p.tc().map(|tc| tc.exit_code).unwrap_or(0) as u64;
        let _ = t.inj.syscall(libc::SYS_exit_group, [code, 0, 0, 0, 0, 0]);
        zombies.push(t.pid);
    }
    fault::check("restore-before-release").map_err(restore_io(root_pid, "fault injection"))?;
    interrupted()?;

    // 4. Registers, then release.
    let mut ready: Vec<Pid> = Vec::new();
    // A process job control had stopped is detached with SIGSTOP, so it is
    // stopped again, as it was, before it runs a single instruction.
    let mut stopped = std::collections::HashSet::new();
    for p in tree.processes.iter().filter(|p| !p.is_zombie()) {
        let pid = p.pid();
        for (t, (_, core)) in threads.remove(&pid).unwrap_or_default().into_iter().zip(p.cores.iter().skip(1)) {
            let tid = t.tid;
            finish_thread(t, core, None)?;
            ready.push(tid);
        }
        let mut t = tasks.remove(&pid).ok_or(RestoreError::Interrupted)?;
        if pid == root_pid {
            t.call(libc::SYS_prctl, [libc::PR_SET_PDEATHSIG as u64, 0, 0, 0, 0, 0])
                .map_err(restore_io(pid, "clear parent-death signal"))?;
        }
        let rfd = t.rfd;
        t.call(libc::SYS_close, [rfd, 0, 0, 0, 0, 0]).map_err(restore_io(pid, "close the restorer's pidfd"))?;
        if p.tc().is_some_and(|tc| tc.task_state == stasis_image::flags::task_state::STOPPED) {
            stopped.insert(t.pid);
        }
        let (host, scratch) = (t.pid, t.scratch);
        finish_thread(t, &p.cores[0].1, Some(scratch))?;
        ready.push(host);
    }
    cx.sources.cleanup();
    if let Some(orig) = proc_ctl::original_affinity() {
        for tid in &ready {
            let _ = proc_ctl::set_affinity(*tid, &orig);
        }
    }
    drop(cpus);
    log::debug!("restore: registers set at {:?}", t0.elapsed());
    for tid in &ready {
        let sig = if stopped.contains(tid) { libc::SIGSTOP } else { 0 };
        let _ = ptrace::detach(*tid, sig);
    }
    log::debug!("restore: released at {:?}", t0.elapsed());
    // Zombies' tracer notifications.
    for z in zombies {
        let _ = ptrace::wait(z);
    }
    tx.committed = true;
    Ok(Restored { root_pid, processes: tree.processes.len(), restore_time: t0.elapsed() })
}

/// Pins the restorer to its current CPU (`proc_ctl::pin_self`, which keeps
/// the original mask); puts the mask back on drop.
struct Affinity;

impl Affinity {
    fn pin() -> Affinity {
        let _ = proc_ctl::pin_self();
        Affinity
    }
}

impl Drop for Affinity {
    fn drop(&mut self) {
        proc_ctl::unpin_self();
    }
}

/// Errors of `clone3(set_tid)`: EEXIST means the PID is taken.
fn creation_error(pid: Pid, what: &'static str) -> impl FnOnce(std::io::Error) -> RestoreError {
    move |e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => RestoreError::PidInUse { pid },
        _ => restore_io(pid, what)(e),
    }
}

/// What every process's restore shares.
struct ProcessCtx<'a> {
    files: HashMap<u32, &'a stasis_image::pb::FileEntry>,
    map_paths: HashMap<u32, String>,
    sources: files::FileSources,
    opened: crate::kinds::share::Opened,
    fd: crate::kinds::fdkind::FdRestoreCtx<'a>,
    shared_anon: mm::SharedAnonRegistry,
    inherited_signals: u64,
    /// The restorer's limits, which every stub inherits.
    own_limits: Option<crate::proc::Limits>,
    /// `seccomp.img`.
    seccomp: Option<&'a stasis_image::pb::SeccompEntry>,
}

/// Group leaders first, then members (`setpgid` needs the group to exist).
fn set_process_groups(tree: &TreeImage, tasks: &mut HashMap<Pid, Task>) -> Result<(), RestoreError> {
    let in_tree: std::collections::HashSet<u32> = tree.processes.iter().map(|p| p.pstree.pid).collect();
    for leaders_first in [true, false] {
        for p in &tree.processes {
            let (pid, pgid) = (p.pstree.pid, p.pstree.pgid);
            if (pgid == pid) != leaders_first || pgid == p.pstree.sid && pgid == pid {
                continue;
            }
            if !in_tree.contains(&pgid) {
                continue;
            }
            let t = tasks.get_mut(&(pid as Pid)).ok_or(RestoreError::Interrupted)?;
            let target = if pgid == pid { 0 } else { pgid as u64 };
            t.call(libc::SYS_setpgid, [0, target, 0, 0, 0, 0])
                .map_err(restore_io(pid as Pid, format!("join process group {pgid}")))?;
        }
    }
    Ok(())
}

fn restore_process(t: &mut Task, p: &ProcessImage, cx: &mut ProcessCtx<'_>) -> Result<Vec<Task>, RestoreError> {
    let pid = p.pid();
    let mme = p.mm.as_ref().ok_or(RestoreError::Interrupted)?;
    let tc = p.tc().ok_or_else(|| RestoreError::Invalid {
        dir: Default::default(),
        what: format!("core-{pid}.img has no task core"),
    })?;

    mm::clear_address_space(t, &mme.vmas)?;
    let pt = Instant::now();
    mm::map_vmas(t, &mme.vmas, &cx.map_paths, &mut cx.shared_anon)?;
    log::debug!("process {pid}: {} areas mapped after {:?}", mme.vmas.len(), pt.elapsed());
    crate::kinds::pages::fill_pages(t, &p.pages, &mme.vmas)?;
    mm::finish_vmas(t, &mme.vmas)?;
    log::debug!("process {pid}: memory filled after {:?}", pt.elapsed());

    files::restore_fds(t, &p.fdinfo, &cx.files, &cx.sources, &mut cx.opened, &mut cx.fd)?;
    log::debug!("process {pid}: fds after {:?}", pt.elapsed());
    crate::kinds::sockets::after_fds(&mut cx.fd, t, &p.fdinfo)?;
    crate::kinds::special::after_fds(&mut cx.fd, t, &p.fdinfo)?;
    let file_by_id = &cx.files;
    if let Some(fs) = &p.fs {
        let path = |id: u32| file_by_id.get(&id).and_then(|f| f.reg.as_ref()).map(|r| r.name.clone());
        let cwd = path(fs.cwd_id).unwrap_or_else(|| "/".into());
        let root = path(fs.root_id).unwrap_or_else(|| "/".into());
        task::restore_fs(t, &cwd, &root, fs.umask)?;
    }
    signal::restore_sigactions(t, &tc.sigactions, cx.inherited_signals)?;
    if let Some(r) = &tc.rlimits {
        task::restore_rlimits(t, r, cx.own_limits.as_ref())?;
    }
    task::restore_personality(t, tc.personality)?;
    let exe = file_by_id.get(&mme.exe_file_id).and_then(|f| f.reg.as_ref()).map(|r| r.name.as_str());
    mm::restore_mm_fields(t, mme, exe)?;
    log::debug!("process {pid}: fs, signals, limits, mm fields after {:?}", pt.elapsed());

    // Threads share the address space now restored.
    let mut threads = Vec::new();
    for (tid, _) in p.cores.iter().skip(1) {
        threads.push(t.clone_thread(*tid).map_err(creation_error(*tid, "create thread"))?);
    }
    if let Some(timers) = &tc.timers {
        task::restore_timers(t, timers)?;
    }
    if let Some(q) = &tc.signals_s {
        for s in &q.signals {
            thread::queue_signal(t, &s.siginfo, true)?;
        }
    }
    // The main thread last: it may install the filters for every thread.
    let (main_filters, thread_filters) = crate::kinds::seccomp::process_plan(&p.cores);
    for (th, (_, core)) in threads.iter_mut().zip(p.cores.iter().skip(1)) {
        restore_thread(th, core, cx.seccomp, thread_filters)?;
    }
    restore_thread(t, &p.cores[0].1, cx.seccomp, main_filters)?;
    log::debug!("process {pid}: threads and timers after {:?}", pt.elapsed());
    Ok(threads)
}

/// Per-thread state, then seccomp filters (they need CAP_SYS_ADMIN or
/// no_new_privs), then credentials (which may drop CAP_SYS_ADMIN).
fn restore_thread(
    t: &mut Task,
    core: &stasis_image::pb::CoreEntry,
    filters: Option<&stasis_image::pb::SeccompEntry>,
    install: crate::kinds::seccomp::Install,
) -> Result<(), RestoreError> {
    let (Some(info), Some(tcore)) = (&core.thread_info, &core.thread_core) else {
        return Ok(());
    };
    thread::restore_thread_state(t, tcore, info)?;
    crate::kinds::seccomp::restore_thread(t, tcore, filters, install)?;
    if let Some(c) = &tcore.creds {
        thread::restore_creds(t, c)?;
    }
    Ok(())
}

/// Sets the blocked mask, FPU state and registers; with `scratch`, the last
/// injected call unmaps the scratch area first.
fn finish_thread(mut t: Task, core: &stasis_image::pb::CoreEntry, scratch: Option<u64>) -> Result<(), RestoreError> {
    let tid = t.tid;
    let info = core.thread_info.as_ref().ok_or(RestoreError::Interrupted)?;
    let regs = thread::final_regs(info).ok_or(RestoreError::Interrupted)?;
    let blk = core.thread_core.as_ref().and_then(|c| c.blk_sigset).or(core.tc.as_ref().map(|tc| tc.blk_sigset));
    if let Some(x) = &info.xsave_raw {
        ptrace::set_xstate(tid, x).map_err(restore_io(tid, "set FPU/AVX state"))?;
    }
    match scratch {
        Some(addr) => {
            t.inj
                .syscall_then_set(libc::SYS_munmap, [addr, SCRATCH_LEN, 0, 0, 0, 0], regs)
                .map_err(restore_io(tid, "unmap the scratch area"))?;
        }
        None => {
            t.inj.set_saved_regs(regs);
            t.inj.finish().map_err(restore_io(tid, "set registers"))?;
        }
    }
    if let Some(m) = blk {
        ptrace::set_sigmask(tid, m).map_err(restore_io(tid, "set blocked signals"))?;
    }
    Ok(())
}
