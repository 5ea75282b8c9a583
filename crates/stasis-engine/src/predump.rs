//! Pre-dump: store a tree's memory while it keeps running, and start
//! tracking its writes so the next dump stores only what changed.
//!
//! The tree is frozen only while each process's memory map is read and its
//! write tracking armed; its pages are copied after it runs again. Nothing
//! else is dumped (CRIU's pre-dump writes the same: pstree, pagemaps,
//! pages, stats). Given `prev_images`, a pre-dump is
//! itself incremental and takes the tracking over from its parent. After
//! the commit the tree is thawed and a [`holder`] keeps the tracking.

use crate::dump::{pstree_entry, DumpOpts, DumpStats};
use crate::error::{dump_io, DumpError};
use crate::freeze::Frozen;
use crate::incremental::holder::{self, Tracked};
use crate::incremental::{self, parent::ParentImages, track};
use crate::kinds::{files::FileTable, mm, pages};
use crate::proc;
use crate::remote::{RemoteSession, SCRATCH_LEN};
use stasis_image::{pb, ImageDirWriter};
use stasis_sys::{proc_ctl, Pid};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Instant;

/// Pre-dumps the tree rooted at `root` into `images`; `exe` is the stasis
/// binary, run as the tracking holder.
pub fn pre_dump(root: Pid, images: &Path, opts: &DumpOpts, exe: &Path) -> Result<DumpStats, DumpError> {
    let t0 = Instant::now();
    crate::dump::check_root(root)?;
    let mut parent = opts.prev_images.as_deref().map(ParentImages::open).transpose()?;
    let staging = ImageDirWriter::create(images)?;
    if let Some(p) = &parent {
        staging.link_parent(&incremental::parent_link(staging.final_path(), &p.dir)?)?;
    }
    let mut frozen = Frozen::freeze_tree(root, opts.cgroup.as_deref())?;
    frozen.pin_to_one_cpu();
    let vpids = crate::vpids::Vpids::read(&frozen.processes, root)?;
    let frozen_at = Instant::now();
    let mut stats = DumpStats { freezing_time: frozen.freezing_time, ..Default::default() };
    crate::fault::check("dump-after-freeze").map_err(dump_io(root, "fault injection"))?;

    // Frozen: the memory map, what to store, and write tracking armed.
    let mut todo = Vec::new();
    let mut pstree = Vec::new();
    for p in &frozen.processes {
        if proc_ctl::interrupted() {
            return Err(DumpError::Interrupted);
        }
        let pid = p.pid;
        let st = proc::read_stat(pid).map_err(|source| DumpError::Proc { pid, source })?;
        pstree.push(vpids.pstree(&pstree_entry(pid, root, &st, &p.threads)));
        if p.threads.is_empty() {
            continue; // a zombie has no memory
        }
        let vpid = vpids.of(pid);
        track::refuse_own_uffd(pid)?;
        let session = RemoteSession::open(pid).map_err(dump_io(pid, "prepare injected syscalls"))?;
        let scratch = session.scratch;
        let scan = mm::dump_vmas(pid, (scratch, scratch + SCRATCH_LEN), &mut FileTable::default(), parent.is_some())?;
        let (plan, uffd) = match &parent {
            Some(par) => incremental::plan_against_parent(pid, vpid, &scan, par, true)?,
            None => (incremental::full(&scan.runs), None),
        };
        let uffd = match uffd {
            Some(fd) => Some(fd),
            None => start_tracking(pid, &session, &scan.vmas)?,
        };
        session.close().map_err(dump_io(pid, "remove scratch memory"))?;
        stats.pages_scanned += scan.scanned;
        stats.pages_skipped_parent += plan.from_parent;
        stats.threads += p.threads.len();
        todo.push((pid, vpid, plan, uffd));
    }
    crate::fault::check("dump-before-write").map_err(dump_io(root, "fault injection"))?;
    // Running again: the pages are copied from the live tree. A page it
    // writes meanwhile is marked written and stored again by the next dump,
    // so a torn copy here is never used; one it unmaps reads as zeros.
    frozen.release();
    stats.frozen_time = frozen_at.elapsed();
    let mem_t = Instant::now();
    let mut tracked = Vec::new();
    for (pid, vpid, plan, uffd) in todo {
        if proc_ctl::interrupted() {
            return Err(DumpError::Interrupted);
        }
        let written = pages::store_pages(&staging, vpid, pid, &plan.present, true)?;
        staging.write_pagemap(vpid as u32, &pb::PagemapHead { pages_id: vpid as u32 }, &plan.pagemap)?;
        stats.pages_written += written / mm::PAGE;
        if let Some(uffd) = uffd {
            tracked.push(Tracked { vpid, pid, uffd });
        }
    }
    stats.memdump_time = mem_t.elapsed();
    staging.write_pstree(&pstree)?;
    stats.processes = pstree.len();
    crate::dump::write_inventory_and_stats(&staging, &stats, None)?;
    crate::fault::check("dump-before-commit").map_err(dump_io(root, "fault injection"))?;
    if proc_ctl::interrupted() {
        return Err(DumpError::Interrupted);
    }
    let dir = staging.commit()?;
    // The parent's holder goes only once ours runs: until then our copies
    // of the uffds keep the tracking alive.
    let started = holder::start(exe, &tracked, &dir);
    if let Some(p) = parent.as_mut() {
        p.stop_tracking();
    }
    if let Err(e) = started {
        // Without tracking the images are still valid, but a dump against
        // them would store everything again: say so rather than pretend.
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    stats.total_time = t0.elapsed();
    Ok(stats)
}

/// Arms write tracking in a stopped process; `None` where the kernel cannot
/// (its next dump stores every page).
fn start_tracking(
    pid: Pid,
    session: &RemoteSession,
    vmas: &[pb::VmaEntry],
) -> Result<Option<std::os::fd::OwnedFd>, DumpError> {
    let mut call = session.thread(pid).map_err(dump_io(pid, "inject"))?;
    let made = track::new_uffd(pid, &mut call);
    call.done().map_err(dump_io(pid, "restore registers"))?;
    let Some(fd) = made.map_err(dump_io(pid, "create a userfaultfd for write tracking"))? else {
        log::warn!(
            "process {pid}: the kernel has no async userfaultfd write-protection; the next dump stores every page"
        );
        return Ok(None);
    };
    let armed = track::arm(fd.as_fd(), vmas).map_err(dump_io(pid, "write-protect memory for tracking"))?;
    log::debug!("process {pid}: tracking {} MiB", armed.len_bytes() >> 20);
    Ok(Some(fd))
}
