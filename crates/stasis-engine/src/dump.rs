//! Dump orchestration: validate the root, freeze the tree, collect every
//! process's state into a staging image directory, commit it with a rename,
//! then kill the tree (or, with `leave_running`, let it go on).
//!
//! Any error or interruption before the commit drops the staging directory
//! and the [`Frozen`] guard, which puts every task's registers back and
//! detaches it: the tree runs on as if nothing happened.

use crate::error::{dump_io, DumpError};
use crate::fault;
use crate::freeze::{Frozen, FrozenProcess};
use crate::incremental::{self, parent::ParentImages};
use crate::kinds::{files, mm, seccomp, signal, task, thread};
use crate::proc::{self, ProcError};
use crate::remote::{RemoteSession, SCRATCH_LEN};
use stasis_image::flags::task_state;
use stasis_image::{pb, ImageDirWriter, PipeData};
use stasis_sys::{proc_ctl, Pid};
use std::path::Path;
use std::time::{Duration, Instant};

/// How to dump.
#[derive(Clone, Debug, Default)]
pub struct DumpOpts {
    /// Let the tree run on after the dump instead of killing it.
    pub leave_running: bool,
    /// Dump established TCP connections (TCP_REPAIR) instead of refusing.
    pub tcp_established: bool,
    /// Files outside the tree the restorer will supply (`"pipe:[INO]"`, as
    /// /proc/PID/fd shows them): recorded as external with that key, at any
    /// fd number. A container's stdout/stderr pipes to its monitor.
    pub external: Vec<String>,
    /// The tree's own cgroup (a v1 freezer directory or a v2 cgroup), frozen
    /// first so the tree is seized whole.
    pub cgroup: Option<std::path::PathBuf>,
    /// An earlier dump of the same tree (normally a pre-dump): pages it
    /// holds that were not written since are marked PARENT instead of
    /// stored again, and the images link to it.
    pub prev_images: Option<std::path::PathBuf>,
    /// Dump the tree's own namespaces (which ones, UTS names, mounts) so a
    /// restore recreates them: for trees no runtime of ours describes.
    pub namespaces: Option<crate::kinds::namespaces::NsDumpOpts>,
}

/// What a dump did and how long it took.
#[derive(Clone, Debug, Default)]
pub struct DumpStats {
    pub processes: usize,
    pub threads: usize,
    pub freezing_time: Duration,
    pub frozen_time: Duration,
    pub memdump_time: Duration,
    pub pages_scanned: u64,
    pub pages_written: u64,
    /// Pages left to the parent image set (not written since it).
    pub pages_skipped_parent: u64,
    pub total_time: Duration,
}

pub(crate) fn check_root(root: Pid) -> Result<(), DumpError> {
    match proc::tree::collect_tree(root) {
        Ok(_) => Ok(()),
        Err(ProcError::KernelThread { .. }) => Err(DumpError::KernelThread { pid: root }),
        Err(ProcError::Zombie { .. }) => Err(DumpError::Zombie { pid: root }),
        Err(ProcError::SelfOrAncestor { .. }) => Err(DumpError::SelfDump { pid: root }),
        Err(e) if e.is_no_such_process() => Err(DumpError::NoSuchProcess { pid: root }),
        Err(ProcError::NotThreadGroupLeader { pid, tgid }) => {
            Err(DumpError::Unsupported { pid, what: format!("{pid} is a thread of process {tgid}; dump the process") })
        }
        Err(source) => Err(DumpError::Proc { pid: root, source }),
    }
}

struct ProcessDump {
    pstree: pb::PstreeEntry,
    cores: Vec<(Pid, pb::CoreEntry)>,
    mm: Option<pb::MmEntry>,
    pagemap: Vec<pb::PagemapEntry>,
    fdinfo: Vec<pb::FdinfoEntry>,
    fs: Option<pb::FsEntry>,
}

/// Checkpoints the tree rooted at `root` into `images`.
pub fn dump(root: Pid, images: &Path, opts: &DumpOpts) -> Result<DumpStats, DumpError> {
    let t0 = Instant::now();
    check_root(root)?;
    let mut parent = opts.prev_images.as_deref().map(ParentImages::open).transpose()?;
    let mut staging = ImageDirWriter::create(images)?;
    if little_dirty_data() {
        staging.sync_whole_filesystem(stasis_sys::fd::syncfs);
    }
    if let Some(p) = &parent {
        staging.link_parent(&incremental::parent_link(staging.final_path(), &p.dir)?)?;
        incremental::prewarm::prepare(&staging, &p.tracked());
    }
    log::debug!("dump {root}: checked and staged in {:?}", t0.elapsed());
    let ours = crate::kinds::namespaces::OurNamespaces::read();
    let mut frozen = Frozen::freeze_tree(root, opts.cgroup.as_deref())?;
    frozen.pin_to_one_cpu();
    let vpids = crate::vpids::Vpids::read(&frozen.processes, root)?;
    // Socket diagnostics (netlink) see the sockets of the namespace they
    // are made in: ours must be the tree's while we dump.
    let _netns = stasis_sys::ns::ThreadNetns::enter(root).map_err(dump_io(root, "enter the network namespace"))?;
    log::debug!("dump {root}: {} tasks frozen at {:?}", frozen.tasks().len(), t0.elapsed());
    // Dropped before `frozen`: dumped TCP connections leave repair mode
    // before the tree runs again.
    let tcp_repair = crate::kinds::sockets::RepairGuard::begin();
    let frozen_at = Instant::now();
    let mut stats = DumpStats { freezing_time: frozen.freezing_time, ..Default::default() };
    fault::check("dump-after-freeze").map_err(dump_io(root, "fault injection"))?;

    // Seccomp filters first: a thread in strict mode is refused before the
    // real work.
    let mut filters = seccomp::FilterTable::default();
    for p in frozen.processes.iter().filter(|p| !p.threads.is_empty()) {
        for &tid in &p.threads {
            filters.dump_thread(p.pid, tid)?;
        }
    }

    // Fds first, for all processes: whether a pipe is internal depends on
    // who holds its other end.
    let mut seen_fds = Vec::new();
    for p in frozen.processes.iter().filter(|p| !p.threads.is_empty()) {
        seen_fds.push((p.pid, files::scan_fds(p.pid)?));
    }
    // Declared after `tcp_repair`, so dropped (the helper joined) before
    // it on every path: the connections the helper put into repair mode
    // are all in the guard's list when the guard releases them.
    let prefetch = crate::kinds::sockets::prefetch::Prefetch::start(root, &seen_fds, opts.tcp_established);
    let internal = files::internal_pipes(&seen_fds);
    let sharing = crate::kinds::share::Sharing::find(&seen_fds);
    let mut table = files::FileTable::default();
    let mut dumps = Vec::new();
    let mut fd_iter = seen_fds.iter();
    for p in &frozen.processes {
        if proc_ctl::interrupted() {
            return Err(DumpError::Interrupted);
        }
        if p.threads.is_empty() {
            dumps.push(dump_zombie(p, root)?);
            continue;
        }
        let fds = &fd_iter.next().map(|(_, f)| f).ok_or(DumpError::Unstable { pid: root })?[..];
        let ctx = ProcessCtx {
            root,
            vpids: &vpids,
            staging: &staging,
            opts,
            parent: parent.as_ref(),
            sockets: prefetch.as_ref(),
        };
        let d = dump_process(&ctx, p, fds, &internal, &sharing, &mut table, &mut stats).map(|mut d| {
            if frozen.was_job_stopped(p.pid) {
                mark_stopped(&mut d);
            }
            d
        })?;
        dumps.push(d);
    }
    drop(prefetch);
    for (tid, core) in dumps.iter_mut().flat_map(|d| d.cores.iter_mut()) {
        filters.fill_core(*tid, core);
    }
    log::debug!("dump {root}: state collected at {:?}", t0.elapsed());
    fault::check("dump-before-write").map_err(dump_io(root, "fault injection"))?;

    for d in &dumps {
        let pid = vpids.of(d.pstree.pid as Pid) as u32;
        for (tid, core) in &d.cores {
            staging.write_core(vpids.of(*tid) as u32, core)?;
        }
        if let Some(mm) = &d.mm {
            staging.write_mm(pid, mm)?;
            staging.write_pagemap(pid, &pb::PagemapHead { pages_id: pid }, &d.pagemap)?;
            staging.write_ids(
                pid,
                &pb::TaskKobjIdsEntry { vm_id: pid, files_id: pid, fs_id: pid, sighand_id: pid, ..Default::default() },
            )?;
            staging.write_fdinfo(pid, &d.fdinfo)?;
        }
        if let Some(fs) = &d.fs {
            staging.write_fs(pid, fs)?;
        }
    }
    staging.write_files(&table.entries)?;
    if let Some(e) = filters.into_entry() {
        staging.write_seccomp(&e)?;
    }
    crate::kinds::special::write_images(&table, &staging)?;
    let pipes: Vec<PipeData> = table
        .pipe_data
        .iter()
        .filter(|(_, d)| !d.is_empty())
        .map(|(ino, d)| PipeData {
            entry: pb::PipeDataEntry { pipe_id: *ino as u32, bytes: d.len() as u32, size: None },
            data: d.clone(),
        })
        .collect();
    staging.write_pipes_data(&pipes)?;
    for (id, bytes) in &table.ghosts {
        let path = staging.file(&format!("ghost-{id}.data"));
        std::fs::write(&path, bytes).map_err(|source| DumpError::Write { path, source })?;
    }
    staging.write_pstree(&dumps.iter().map(|d| vpids.pstree(&d.pstree)).collect::<Vec<_>>())?;
    let ns = match &opts.namespaces {
        Some(o) => Some(crate::kinds::namespaces::dump_namespaces(root, &ours, o, &staging)?),
        None => None,
    };
    stats.frozen_time = frozen_at.elapsed();
    stats.processes = dumps.len();
    write_inventory_and_stats(&staging, &stats, ns.as_ref())?;
    fault::check("dump-before-commit").map_err(dump_io(root, "fault injection"))?;
    if proc_ctl::interrupted() {
        return Err(DumpError::Interrupted);
    }
    log::debug!("dump {root}: images written at {:?}", t0.elapsed());
    staging.commit()?;
    log::debug!("dump {root}: committed (fsync + rename) at {:?}", t0.elapsed());
    if opts.leave_running {
        drop(tcp_repair);
        frozen.release();
    } else {
        frozen.kill_all();
        log::debug!("dump {root}: tree killed at {:?}", t0.elapsed());
        tcp_repair.tree_killed();
    }
    if let Some(p) = parent.as_mut() {
        p.stop_tracking();
    }
    log::debug!("dump {root}: done at {:?}", t0.elapsed());
    stats.total_time = t0.elapsed();
    Ok(stats)
}

/// Whether little enough data waits to be written on this machine
/// (/proc/meminfo Dirty + Writeback under 32 MiB) that one `syncfs` at
/// commit costs less than an fsync per image file: each fsync flushes the
/// device, and even a small dump writes a few dozen files. With much
/// foreign data pending, a syncfs would wait for it too.
fn little_dirty_data() -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/meminfo") else { return false };
    let kib = |key: &str| -> Option<u64> {
        info.lines().find_map(|l| l.strip_prefix(key)?.trim().trim_end_matches(" kB").parse().ok())
    };
    matches!((kib("Dirty:"), kib("Writeback:")), (Some(d), Some(w)) if d + w < 32 * 1024)
}

/// Writes `inventory.img` and `stats-dump.img`, the last images of a
/// dump or pre-dump.
pub(crate) fn write_inventory_and_stats(
    staging: &ImageDirWriter,
    stats: &DumpStats,
    ns: Option<&crate::kinds::namespaces::NsDump>,
) -> Result<(), DumpError> {
    staging.write_inventory(&pb::InventoryEntry {
        img_version: stasis_image::flags::IMG_VERSION,
        fdinfo_per_id: Some(true),
        ns_per_id: Some(true),
        stasis_format: Some(stasis_image::flags::STASIS_FORMAT),
        stasis_ns_flags: ns.map(|n| n.flags).filter(|f| *f != 0),
        stasis_ext_netns: ns.and_then(|n| n.ext_netns.clone()),
        ..Default::default()
    })?;
    staging.write_dump_stats(&pb::StatsEntry {
        dump: Some(pb::DumpStatsEntry {
            freezing_time: stats.freezing_time.as_micros() as u32,
            frozen_time: stats.frozen_time.as_micros() as u32,
            memdump_time: stats.memdump_time.as_micros() as u32,
            memwrite_time: stats.memdump_time.as_micros() as u32,
            pages_scanned: stats.pages_scanned,
            pages_skipped_parent: stats.pages_skipped_parent,
            pages_written: stats.pages_written,
            ..Default::default()
        }),
        restore: None,
    })?;
    Ok(())
}

/// Records that job control had stopped the process (restore stops it again).
fn mark_stopped(d: &mut ProcessDump) {
    if let Some((_, core)) = d.cores.first_mut() {
        if let Some(tc) = core.tc.as_mut() {
            tc.task_state = task_state::STOPPED;
            tc.stop_signo = Some(libc::SIGSTOP as u32);
        }
    }
}

/// The tree entry of one process (the root's parent is outside: 0).
pub(crate) fn pstree_entry(pid: Pid, root: Pid, st: &proc::Stat, threads: &[Pid]) -> pb::PstreeEntry {
    pb::PstreeEntry {
        pid: pid as u32,
        ppid: if pid == root { 0 } else { st.ppid as u32 },
        pgid: st.pgrp as u32,
        sid: st.session as u32,
        threads: threads.iter().map(|&t| t as u32).collect(),
    }
}

fn dump_zombie(p: &FrozenProcess, root: Pid) -> Result<ProcessDump, DumpError> {
    let pid = p.pid;
    let st = proc::read_stat(pid).map_err(|source| DumpError::Proc { pid, source })?;
    let core = pb::CoreEntry {
        mtype: pb::core_entry::March::X8664 as i32,
        tc: Some(pb::TaskCoreEntry {
            task_state: task_state::ZOMBIE,
            exit_code: st.exit_code as u32,
            comm: st.comm.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(ProcessDump {
        pstree: pstree_entry(pid, root, &st, &[pid]),
        cores: vec![(pid, core)],
        mm: None,
        pagemap: Vec::new(),
        fdinfo: Vec::new(),
        fs: None,
    })
}

/// What every process's dump shares.
struct ProcessCtx<'a> {
    root: Pid,
    vpids: &'a crate::vpids::Vpids,
    staging: &'a ImageDirWriter,
    opts: &'a DumpOpts,
    parent: Option<&'a ParentImages>,
    /// Inet sockets read ahead on a helper thread.
    sockets: Option<&'a crate::kinds::sockets::prefetch::Prefetch>,
}

fn dump_process(
    ctx: &ProcessCtx<'_>,
    p: &FrozenProcess,
    fds: &[files::FdSeen],
    internal: &std::collections::HashSet<u64>,
    sharing: &crate::kinds::share::Sharing,
    table: &mut files::FileTable,
    stats: &mut DumpStats,
) -> Result<ProcessDump, DumpError> {
    let ProcessCtx { root, vpids, staging, opts, parent, sockets } = *ctx;
    let pid = p.pid;
    let st = proc::read_stat(pid).map_err(|source| DumpError::Proc { pid, source })?;
    let status = proc::read_status(pid).map_err(|source| DumpError::Proc { pid, source })?;
    let pt = Instant::now();
    let session = RemoteSession::open(pid).map_err(dump_io(pid, "prepare injected syscalls"))?;
    let scratch = session.scratch;
    let read = |off: u64, len: usize| session.read(off - scratch, len);

    // Process-wide state through the main thread.
    let mut main = session.thread(pid).map_err(dump_io(pid, "inject"))?;
    log::debug!("process {pid}: injection ready after {:?}", pt.elapsed());
    let sigactions = signal::dump_sigactions(pid, &mut main, scratch, &read, status.sig_cgt | status.sig_ign)?;
    let mut timers = task::dump_timers(pid, &mut main, scratch, &read)?;
    for t in &mut timers.posix {
        t.notify_thread_id = t.notify_thread_id.map(|tid| vpids.of(tid));
    }
    let brk = main.call(libc::SYS_brk, [0; 6]).map_err(dump_io(pid, "brk"))?;
    let main_blk = main.saved_mask();
    log::debug!("process {pid}: sigactions and timers after {:?}", pt.elapsed());
    let (main_info, main_core) = thread::dump_thread(pid, pid, &mut main, scratch, &read)?;
    main.done().map_err(dump_io(pid, "restore registers"))?;
    let shared_pending = stasis_sys::ptrace::peek_siginfo(pid, true).map_err(dump_io(pid, "read pending signals"))?;

    let mut cores = Vec::new();
    for &tid in p.threads.iter().filter(|&&t| t != pid) {
        let mut call = session.thread(tid).map_err(dump_io(tid, "inject"))?;
        let (info, core) = thread::dump_thread(pid, tid, &mut call, scratch, &read)?;
        call.done().map_err(dump_io(tid, "restore registers"))?;
        cores.push((
            tid,
            pb::CoreEntry {
                mtype: pb::core_entry::March::X8664 as i32,
                thread_info: Some(info),
                thread_core: Some(core),
                ..Default::default()
            },
        ));
    }

    // Memory.
    log::debug!("process {pid}: threads after {:?}", pt.elapsed());
    let mem_t = Instant::now();
    let scan = mm::dump_vmas(pid, (scratch, scratch + SCRATCH_LEN), table, parent.is_some())?;
    log::debug!("process {pid}: memory areas read after {:?}", pt.elapsed());
    let plan = match parent {
        Some(par) => incremental::plan_against_parent(pid, vpids.of(pid), &scan, par, false)?.0,
        None => incremental::full(&scan.runs),
    };
    let (vmas, scanned) = (scan.vmas, scan.scanned);
    let exe = proc::task::read_exe(pid).map_err(|source| DumpError::Proc { pid, source })?;
    let exe_id = table.path_ref(exe.trim_end_matches(" (deleted)"), libc::O_RDONLY as u32);
    let mm_entry = mm::mm_entry(pid, &st, brk, exe_id, vmas)?;
    log::debug!("process {pid}: memory map and pagemap after {:?}", pt.elapsed());
    let written = crate::kinds::pages::store_pages(staging, vpids.of(pid), pid, &plan.present, false)?;
    stats.memdump_time += mem_t.elapsed();
    stats.pages_skipped_parent += plan.from_parent;
    stats.pages_scanned += scanned;
    stats.pages_written += written / mm::PAGE;
    log::debug!("process {pid}: pages written after {:?}", pt.elapsed());
    session.close().map_err(dump_io(pid, "remove scratch memory"))?;

    let pagemap = plan.pagemap;

    log::debug!("process {pid}: scratch removed after {:?}", pt.elapsed());
    let mut ctx = crate::kinds::fdkind::FdDumpCtx { pid, table, staging, opts, pidfd: None, prefetch: sockets };
    let fdinfo = files::dump_fds(&mut ctx, fds, internal, sharing)?;
    log::debug!("process {pid}: {} fds after {:?}", fdinfo.len(), pt.elapsed());
    let cwd = proc::task::read_cwd(pid).map_err(|source| DumpError::Proc { pid, source })?;
    let rootdir = proc::task::read_root(pid).map_err(|source| DumpError::Proc { pid, source })?;
    let dir_flags = (libc::O_RDONLY | libc::O_DIRECTORY) as u32;
    let fs = pb::FsEntry {
        cwd_id: table.path_ref(&cwd, dir_flags),
        root_id: table.path_ref(&rootdir, dir_flags),
        umask: status.umask,
    };
    let personality = proc::task::read_personality(pid).map_err(|source| DumpError::Proc { pid, source })?;

    let tc = pb::TaskCoreEntry {
        task_state: task_state::ALIVE,
        exit_code: 0,
        personality,
        flags: st.flags,
        blk_sigset: main_blk,
        comm: st.comm.clone(),
        timers: Some(timers),
        rlimits: Some(task::dump_rlimits(pid)?),
        signals_s: Some(pb::SignalQueueEntry {
            signals: shared_pending.iter().map(|s| pb::SiginfoEntry { siginfo: s.to_vec() }).collect(),
        }),
        sigactions,
        ..Default::default()
    };
    cores.insert(
        0,
        (
            pid,
            pb::CoreEntry {
                mtype: pb::core_entry::March::X8664 as i32,
                thread_info: Some(main_info),
                tc: Some(tc),
                thread_core: Some(main_core),
                ..Default::default()
            },
        ),
    );
    stats.threads += p.threads.len();
    Ok(ProcessDump {
        pstree: pstree_entry(pid, root, &st, &p.threads),
        cores,
        mm: Some(mm_entry),
        pagemap,
        fdinfo,
        fs: Some(fs),
    })
}
