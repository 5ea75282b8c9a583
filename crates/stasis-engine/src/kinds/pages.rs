//! Moving page contents between a process and its `pages-N.img`, the bulk
//! of every dump and restore.
//!
//! Dump reads chunks with `process_vm_readv` and writes them with
//! `pwrite`; restore maps the pages file and feeds `process_vm_writev` from
//! it. Both spread the chunks over one thread per core, so reading,
//! page-cache allocation and the target's page faults overlap (a single
//! thread reached 1.3 GB/s here; the kernel's copy alone runs at ~8 GB/s).

use crate::error::{dump_io, restore_io, DumpError, RestoreError};
use crate::kinds::mm::{Run, PAGE};
use crate::restore::page_chain::{PageSeg, ProcessPages};
use crate::restore::stub::Task;
use stasis_image::flags::vma as vst;
use stasis_image::pb;
use stasis_image::ImageDirWriter;
use stasis_sys::fd as sysfd;
use stasis_sys::mmap::FileMap;
use stasis_sys::uffd;
use stasis_sys::vm::{self, RemoteRange};
use stasis_sys::{proc_ctl, Pid};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;

const CHUNK: usize = 8 << 20;

/// Cuts runs into chunks of at most `CHUNK` bytes: the remote ranges of
/// each and its length (chunks are back to back in the file).
fn chunks(runs: &[Run]) -> Vec<(Vec<RemoteRange>, usize)> {
    let mut out = Vec::new();
    let mut cur: Vec<RemoteRange> = Vec::new();
    let mut filled = 0usize;
    for r in runs {
        let mut addr = r.vaddr;
        let mut left = (r.nr_pages * PAGE) as usize;
        while left > 0 {
            let take = left.min(CHUNK - filled);
            cur.push(RemoteRange { addr, len: take });
            filled += take;
            addr += take as u64;
            left -= take;
            if filled == CHUNK {
                out.push((std::mem::take(&mut cur), filled));
                filled = 0;
            }
        }
    }
    if filled > 0 {
        out.push((cur, filled));
    }
    out
}

fn workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 4)
}

/// Writes the pages of `runs` of process `pid` into `pages-VPID.img` of
/// `staging`; returns the bytes written. The file may exist already,
/// prepared with zeros before the freeze (`incremental::prewarm`): it is
/// overwritten, then trimmed to what was written. With `running`, the
/// process runs meanwhile (a pre-dump after arming write tracking): pages
/// it unmapped are stored as zeros instead of failing the dump; its
/// tracking makes the next dump store them again.
pub fn store_pages(
    staging: &ImageDirWriter,
    vpid: Pid,
    pid: Pid,
    runs: &[Run],
    running: bool,
) -> Result<u64, DumpError> {
    let path = staging.file(&stasis_image::magic::file_name::pages(vpid as u32));
    let write_err = |source| DumpError::Write { path: path.clone(), source };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(write_err)?;
    let written = copy_pages(pid, runs, &file, running)?;
    file.set_len(written).map_err(write_err)?;
    Ok(written)
}

/// Reads `ranges` page by page after a batch failed: what cannot be read
/// any more is left as zeros.
fn read_what_is_left(pid: Pid, ranges: &[RemoteRange], buf: &mut [u8]) {
    buf.fill(0);
    let mut off = 0usize;
    for r in ranges {
        for page in (0..r.len).step_by(PAGE as usize) {
            let n = (PAGE as usize).min(r.len - page);
            let _ = vm::read(pid, r.addr + page as u64, &mut buf[off + page..off + page + n]);
        }
        off += r.len;
    }
}

/// Copies the pages of `runs` from `pid` into `file`; returns the bytes
/// written.
///
/// Each worker reads a chunk into its own buffer and writes it at the
/// chunk's offset with `pwrite`, so one worker's copy out of the target
/// overlaps another's write into the page cache. (Letting
/// `process_vm_readv` fill a shared mapping of the file was slower here:
/// a page fault per 4 KiB page of page cache.)
fn copy_pages(pid: Pid, runs: &[Run], file: &File, running: bool) -> Result<u64, DumpError> {
    let total: u64 = runs.iter().map(|r| r.nr_pages * PAGE).sum();
    if total == 0 {
        return Ok(0);
    }
    // Small dumps: one worker and a buffer no larger than needed (zeroing
    // two 8 MiB buffers cost more than a shell's whole memory).
    let n = if total < 2 * CHUNK as u64 { 1 } else { workers() };
    let buf_len = CHUNK.min(total as usize);
    let mut per: Vec<Vec<(Vec<RemoteRange>, usize, u64)>> = (0..n).map(|_| Vec::new()).collect();
    let mut off = 0u64;
    for (i, (ranges, len)) in chunks(runs).into_iter().enumerate() {
        per[i % n].push((ranges, len, off));
        off += len as u64;
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = per
            .into_iter()
            .map(|mine| {
                s.spawn(move || -> Result<(), DumpError> {
                    proc_ctl::use_original_affinity();
                    let mut buf = vec![0u8; buf_len];
                    for (ranges, len, off) in mine {
                        if proc_ctl::interrupted() {
                            return Err(DumpError::Interrupted);
                        }
                        match vm::read_ranges(pid, &ranges, &mut buf[..len]) {
                            Err(_) if running => read_what_is_left(pid, &ranges, &mut buf[..len]),
                            r => r.map_err(dump_io(pid, "read memory"))?,
                        }
                        file.write_all_at(&buf[..len], off).map_err(dump_io(pid, "write pages"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().unwrap_or(Err(DumpError::Interrupted)))
    })?;
    Ok(total)
}

/// One piece of restore work: a `UFFDIO_COPY` into registered anonymous
/// memory, or a `process_vm_writev` elsewhere; `file` is the layer whose
/// pages file holds the bytes, at `off`.
enum Fill {
    Copy { dst: u64, file: usize, off: usize, len: usize },
    Write { ranges: Vec<RemoteRange>, file: usize, off: usize, len: usize },
}

/// Creates a userfaultfd inside the task (so it belongs to the task's mm),
/// takes a copy of it, and closes the task's own.
fn task_uffd(task: &mut Task) -> std::io::Result<OwnedFd> {
    let rfd = task.call(libc::SYS_userfaultfd, [(libc::O_CLOEXEC | libc::O_NONBLOCK) as u64, 0, 0, 0, 0, 0])?;
    let got = sysfd::copy_fd(task.pid, rfd as i32);
    let _ = task.call(libc::SYS_close, [rfd, 0, 0, 0, 0, 0]);
    let fd = got?;
    uffd::handshake(fd.as_fd(), 0)?;
    Ok(fd)
}

fn task_uffd_if(task: &mut Task, wanted: bool) -> std::io::Result<Option<OwnedFd>> {
    if wanted {
        task_uffd(task).map(Some)
    } else {
        Ok(None)
    }
}

/// Splits segments into work: parts inside `fast` ranges (sorted,
/// disjoint) become uffd copies, the rest `process_vm_writev` batches of
/// bytes contiguous in one file.
fn plan(segs: &[PageSeg], fast: &[(u64, u64)]) -> Vec<Fill> {
    let mut out = Vec::new();
    // The open batch: its ranges, file, first offset and length.
    let mut slow: Vec<RemoteRange> = Vec::new();
    let (mut slow_file, mut slow_off, mut slow_len) = (0usize, 0usize, 0usize);
    let flush = |out: &mut Vec<Fill>, slow: &mut Vec<RemoteRange>, file: usize, off: usize, len: &mut usize| {
        if *len > 0 {
            out.push(Fill::Write { ranges: std::mem::take(slow), file, off, len: *len });
            *len = 0;
        }
    };
    for sg in segs {
        let mut addr = sg.vaddr;
        let end = sg.vaddr + sg.nr_pages * PAGE;
        let mut off = sg.off as usize;
        while addr < end {
            let inside = fast.iter().find(|(s, e)| *s <= addr && addr < *e);
            let next_fast = fast.iter().filter(|(s, _)| *s > addr).map(|(s, _)| *s).min().unwrap_or(u64::MAX);
            if let Some(&(_, fe)) = inside {
                flush(&mut out, &mut slow, slow_file, slow_off, &mut slow_len);
                let stop = end.min(fe);
                while addr < stop {
                    let len = ((stop - addr) as usize).min(CHUNK);
                    out.push(Fill::Copy { dst: addr, file: sg.layer, off, len });
                    off += len;
                    addr += len as u64;
                }
            } else {
                let stop = end.min(next_fast);
                let len = (stop - addr) as usize;
                if slow_len > 0 && (slow_file != sg.layer || slow_off + slow_len != off) {
                    flush(&mut out, &mut slow, slow_file, slow_off, &mut slow_len);
                }
                if slow_len == 0 {
                    (slow_file, slow_off) = (sg.layer, off);
                }
                slow.push(RemoteRange { addr, len });
                slow_len += len;
                off += len;
                addr = stop;
                if slow_len >= CHUNK {
                    flush(&mut out, &mut slow, slow_file, slow_off, &mut slow_len);
                }
            }
        }
    }
    flush(&mut out, &mut slow, slow_file, slow_off, &mut slow_len);
    out
}

/// Writes the stored pages back into the task, from this image set's pages
/// file or its parents'.
///
/// Fresh anonymous VMAs are filled with `UFFDIO_COPY`, which allocates each
/// page and copies into it without zeroing it first; everything else (COW
/// pages of private file mappings) with `process_vm_writev`. If the kernel
/// offers no userfaultfd, everything goes through `process_vm_writev`.
pub fn fill_pages(task: &mut Task, pages: &ProcessPages, vmas: &[pb::VmaEntry]) -> Result<(), RestoreError> {
    let pid = task.pid;
    let total = pages.total_bytes();
    if total == 0 {
        return Ok(());
    }
    // Map each layer's file as far as its segments reach.
    let mut reach = vec![0u64; pages.files.len()];
    for sg in &pages.segs {
        reach[sg.layer] = reach[sg.layer].max(sg.off + sg.nr_pages * PAGE);
    }
    let mut maps: Vec<Option<FileMap>> = Vec::with_capacity(reach.len());
    for (path, &len) in pages.files.iter().zip(&reach) {
        if len == 0 {
            maps.push(None);
            continue;
        }
        let f = File::open(path).map_err(|source| RestoreError::Read { path: path.clone(), source })?;
        let map = FileMap::read_only(&f, len as usize).map_err(restore_io(pid, format!("map {}", path.display())))?;
        map.advise_sequential();
        maps.push(Some(map));
    }
    let srcs: Vec<&[u8]> = maps.iter().map(|m| m.as_ref().map_or(&[][..], |m| m.as_slice())).collect();

    let mut fast: Vec<(u64, u64)> = Vec::new();
    // Below a few MiB the setup (an injected userfaultfd, a register and
    // unregister per area) costs more than the zeroing it saves.
    let uffd = match task_uffd_if(task, total >= 2 * CHUNK as u64) {
        Ok(fd) => fd,
        Err(e) => {
            log::debug!("process {pid}: no userfaultfd ({e}); filling memory with process_vm_writev");
            None
        }
    };
    if let Some(fd) = &uffd {
        for v in vmas {
            let anon = v.status & (vst::ANON_PRIVATE | vst::ANON_SHARED) != 0 && v.status & vst::AREA_REGULAR != 0;
            if anon && uffd::register(fd.as_fd(), v.start, v.end - v.start, uffd::REGISTER_MODE_MISSING).is_ok() {
                fast.push((v.start, v.end));
            }
        }
        fast.sort_unstable();
    }
    let work = plan(&pages.segs, &fast);
    let n = if total < 2 * CHUNK as u64 { 1 } else { workers() };
    let mut per: Vec<Vec<&Fill>> = (0..n).map(|_| Vec::new()).collect();
    for (i, w) in work.iter().enumerate() {
        per[i % n].push(w);
    }
    let srcs = &srcs;
    let ufd = uffd.as_ref().map(|f| f.as_fd());
    let result = std::thread::scope(|s| {
        let handles: Vec<_> = per
            .into_iter()
            .map(|mine| {
                s.spawn(move || -> Result<(), RestoreError> {
                    proc_ctl::use_original_affinity();
                    for w in mine {
                        if proc_ctl::interrupted() {
                            return Err(RestoreError::Interrupted);
                        }
                        match (w, ufd) {
                            (Fill::Copy { dst, file, off, len }, Some(fd)) => {
                                uffd::copy(fd, *dst, &srcs[*file][*off..*off + *len])
                                    .map_err(restore_io(pid, format!("fill memory at {dst:#x}")))?
                            }
                            (Fill::Write { ranges, file, off, len }, _) => {
                                vm::write_ranges(pid, ranges, &srcs[*file][*off..*off + *len])
                                    .map_err(restore_io(pid, "write memory"))?
                            }
                            (Fill::Copy { dst, .. }, None) => {
                                return Err(restore_io(pid, format!("fill memory at {dst:#x}"))(std::io::Error::from(
                                    std::io::ErrorKind::Unsupported,
                                )))
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().unwrap_or(Err(RestoreError::Interrupted)))
    });
    if let Some(fd) = &uffd {
        for (s, e) in &fast {
            let _ = uffd::unregister(fd.as_fd(), *s, e - s);
        }
    }
    result
}
