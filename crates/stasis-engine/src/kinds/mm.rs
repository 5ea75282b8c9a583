//! Memory: the VMA list (`mm-PID.img`) and which pages hold data
//! (`pagemap-PID.img` + `pages-N.img`), dumped from `/proc/PID/smaps` and
//! `/proc/PID/pagemap` and read with `process_vm_readv`; restored by
//! rebuilding the address space with injected `mmap` calls and filling it
//! with `process_vm_writev`.
//!
//! Which pages are stored (pagemap bits: 63 present, 62 swapped, 61
//! file-page or shared-anon, 58 guard marker; a "swapped" entry of swap
//! type 31 is a PTE marker, not data):
//! - private anonymous VMAs (heap, stacks, malloc arenas): present or swapped;
//! - private file VMAs: only pages that were copied on write (present and not
//!   a file page) — the rest comes back from the file;
//! - shared anonymous VMAs: every present page;
//! - shared file VMAs, the vDSO and vvar: nothing (the file or the kernel
//!   has them).
//!
//! Never-touched pages are never stored: they read as zeros after restore.

use crate::error::{dump_io, restore_io, DumpError, RestoreError};
use crate::kinds::files::FileTable;
use crate::proc::{self, SmapsEntry, VmaKind};
use crate::restore::stub::Task;
use stasis_image::flags::vma as vst;
use stasis_image::pb;
use stasis_sys::Pid;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

pub const PAGE: u64 = 4096;
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAP: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;
const PM_GUARD: u64 = 1 << 58;
/// Swap type of a PTE marker (the last of the 5-bit swap types), shown in
/// the low bits of a PM_SWAP entry. Write tracking leaves uffd-wp markers
/// on pages never touched; they hold no data.
const SWP_PTE_MARKER: u64 = 31;

/// `madvise` advice numbers stored as bits of `vma_entry.madv`.
const MADV_DONTFORK: u64 = 10;
const MADV_HUGEPAGE: u64 = 14;
const MADV_NOHUGEPAGE: u64 = 15;
const MADV_DONTDUMP: u64 = 16;
const MADV_WIPEONFORK: u64 = 18;

/// A run of stored pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub vaddr: u64,
    pub nr_pages: u64,
}

fn status_of(v: &SmapsEntry) -> u32 {
    let e = &v.vma;
    match e.kind {
        VmaKind::Vdso => vst::AREA_REGULAR | vst::AREA_VDSO,
        VmaKind::Vvar | VmaKind::VvarVclock => vst::AREA_REGULAR | vst::AREA_VVAR,
        VmaKind::Vsyscall => vst::AREA_VSYSCALL,
        VmaKind::Heap => vst::AREA_REGULAR | vst::ANON_PRIVATE | vst::AREA_HEAP,
        VmaKind::Stack => vst::AREA_REGULAR | vst::ANON_PRIVATE | vst::AREA_STACK,
        VmaKind::Anon => vst::AREA_REGULAR | vst::ANON_PRIVATE,
        VmaKind::SharedAnon => vst::AREA_REGULAR | vst::ANON_SHARED,
        VmaKind::File | VmaKind::DeletedFile | VmaKind::Memfd => {
            vst::AREA_REGULAR | if e.shared { vst::FILE_SHARED } else { vst::FILE_PRIVATE }
        }
        VmaKind::Other(_) => vst::UNSUPP,
    }
}

fn madv_of(v: &SmapsEntry) -> u64 {
    let f = &v.flags;
    let mut m = 0;
    if f.dont_copy {
        m |= 1 << MADV_DONTFORK;
    }
    if f.wipe_on_fork {
        m |= 1 << MADV_WIPEONFORK;
    }
    if f.dont_dump {
        m |= 1 << MADV_DONTDUMP;
    }
    if f.huge_page {
        m |= 1 << MADV_HUGEPAGE;
    }
    if f.no_huge_page {
        m |= 1 << MADV_NOHUGEPAGE;
    }
    m
}

/// Whether a page with pagemap entry `pme` is stored for a VMA of `status`.
fn page_wanted(status: u32, pme: u64) -> bool {
    if pme & PM_GUARD != 0 || (pme & PM_SWAP != 0 && pme & PM_PRESENT == 0 && pme & 0x1f == SWP_PTE_MARKER) {
        return false;
    }
    if status & vst::ANON_SHARED != 0 {
        pme & (PM_PRESENT | PM_SWAP) != 0
    } else if status & vst::FILE_PRIVATE != 0 {
        (pme & PM_PRESENT != 0 && pme & PM_FILE == 0) || pme & PM_SWAP != 0
    } else if status & vst::ANON_PRIVATE != 0 {
        pme & (PM_PRESENT | PM_SWAP) != 0
    } else {
        false
    }
}

/// What [`dump_vmas`] found.
pub struct VmaScan {
    pub vmas: Vec<pb::VmaEntry>,
    /// Stored pages, in address order (not covering `uffd_wp`).
    pub runs: Vec<Run>,
    /// Pages looked at.
    pub scanned: u64,
    /// VMAs registered for userfaultfd write-protection, left unscanned when
    /// asked: `(start, end, status)`. An incremental dump reads them with
    /// `PAGEMAP_SCAN` instead (or [`stored_runs`] when they are not ours).
    pub uffd_wp: Vec<(u64, u64, u32)>,
}

/// Collects the VMAs of `pid` (minus `hide`, our scratch area) and the runs
/// of pages worth storing; with `skip_uffd_wp`, VMAs registered for uffd
/// write-protection are listed in [`VmaScan::uffd_wp`] instead of scanned.
pub fn dump_vmas(pid: Pid, hide: (u64, u64), files: &mut FileTable, skip_uffd_wp: bool) -> Result<VmaScan, DumpError> {
    let smaps = proc::read_smaps(pid).map_err(|source| DumpError::Proc { pid, source })?;
    let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap")).map_err(dump_io(pid, "open pagemap"))?;
    let mut vmas = Vec::with_capacity(smaps.len());
    let mut runs: Vec<Run> = Vec::new();
    let mut scanned = 0u64;
    let mut uffd_wp = Vec::new();
    let mut pm_buf: Vec<u8> = Vec::new();
    // Our scratch area may have been merged by the kernel into a
    // neighbouring anonymous VMA: cut it out, keep the rest.
    let mut pieces: Vec<(&SmapsEntry, u64, u64)> = Vec::with_capacity(smaps.len());
    for v in &smaps {
        let e = &v.vma;
        if e.start < hide.1 && e.end > hide.0 {
            if e.start < hide.0 {
                pieces.push((v, e.start, hide.0));
            }
            if e.end > hide.1 {
                pieces.push((v, hide.1, e.end));
            }
        } else {
            pieces.push((v, e.start, e.end));
        }
    }
    for (v, start, end) in pieces {
        let e = &v.vma;
        let status = status_of(v);
        if status & vst::UNSUPP != 0 {
            return Err(DumpError::Unsupported { pid, what: format!("mapping {:?} at {:#x}", e.kind, e.start) });
        }
        let mut flags = if e.shared { libc::MAP_SHARED } else { libc::MAP_PRIVATE } as u32;
        if status & (vst::ANON_PRIVATE | vst::ANON_SHARED) != 0 {
            flags |= libc::MAP_ANONYMOUS as u32;
        }
        if v.flags.grows_down {
            flags |= libc::MAP_GROWSDOWN as u32;
        }
        if v.flags.no_reserve {
            flags |= libc::MAP_NORESERVE as u32;
        }
        let mut shmid = 0u64;
        let mut fdflags = None;
        if status & (vst::FILE_PRIVATE | vst::FILE_SHARED) != 0 {
            let write_shared = e.shared && e.prot.write;
            let open_flags = if write_shared { libc::O_RDWR } else { libc::O_RDONLY } as u32;
            let id = files
                .mapped_file(pid, e.start, e.end, e.path.as_deref().unwrap_or(""), e.deleted, open_flags)
                .map_err(dump_io(pid, format!("mapped file at {:#x}", e.start)))?;
            shmid = id as u64;
            fdflags = Some(open_flags);
        } else if status & vst::ANON_SHARED != 0 {
            shmid = e.inode;
        }
        vmas.push(pb::VmaEntry {
            start,
            end,
            pgoff: e.pgoff + (start - e.start),
            shmid,
            prot: e.prot.bits() as u32,
            flags,
            status,
            fd: -1,
            madv: Some(madv_of(v)).filter(|&m| m != 0),
            fdflags,
        });
        if status & (vst::ANON_PRIVATE | vst::ANON_SHARED | vst::FILE_PRIVATE) == 0 {
            continue;
        }
        scanned += (end - start) / PAGE;
        if skip_uffd_wp && v.flags.uffd_wp {
            uffd_wp.push((start, end, status));
            continue;
        }
        scan_pagemap(pid, &pagemap, (start, end, status), &mut pm_buf, &mut runs)?;
    }
    Ok(VmaScan { vmas, runs, scanned, uffd_wp })
}

/// Appends the stored pages of one VMA `(start, end, status)` to `runs`,
/// from `/proc/PID/pagemap`.
fn scan_pagemap(
    pid: Pid,
    pagemap: &std::fs::File,
    (start, end, status): (u64, u64, u32),
    pm_buf: &mut Vec<u8>,
    runs: &mut Vec<Run>,
) -> Result<(), DumpError> {
    pm_buf.resize(((end - start) / PAGE * 8) as usize, 0);
    pagemap.read_exact_at(pm_buf, start / PAGE * 8).map_err(dump_io(pid, format!("read pagemap at {start:#x}")))?;
    for (i, chunk) in pm_buf.chunks_exact(8).enumerate() {
        let pme = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]));
        if !page_wanted(status, pme) {
            continue;
        }
        let addr = start + i as u64 * PAGE;
        match runs.last_mut() {
            Some(r) if r.vaddr + r.nr_pages * PAGE == addr => r.nr_pages += 1,
            _ => runs.push(Run { vaddr: addr, nr_pages: 1 }),
        }
    }
    Ok(())
}

/// The stored pages of VMAs `(start, end, status)` that [`dump_vmas`] left
/// unscanned, from `/proc/PID/pagemap`.
pub fn stored_runs(pid: Pid, areas: &[(u64, u64, u32)]) -> Result<Vec<Run>, DumpError> {
    let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap")).map_err(dump_io(pid, "open pagemap"))?;
    let mut runs = Vec::new();
    let mut buf = Vec::new();
    for &a in areas {
        scan_pagemap(pid, &pagemap, a, &mut buf, &mut runs)?;
    }
    Ok(runs)
}

/// The mm fields of `/proc/PID/stat` plus brk and auxv.
pub fn mm_entry(
    pid: Pid,
    stat: &proc::Stat,
    brk: u64,
    exe_file_id: u32,
    vmas: Vec<pb::VmaEntry>,
) -> Result<pb::MmEntry, DumpError> {
    let auxv = proc::read_auxv(pid).map_err(|source| DumpError::Proc { pid, source })?;
    Ok(pb::MmEntry {
        mm_start_code: stat.startcode,
        mm_end_code: stat.endcode,
        mm_start_data: stat.start_data,
        mm_end_data: stat.end_data,
        mm_start_stack: stat.startstack,
        mm_start_brk: stat.start_brk,
        mm_brk: brk,
        mm_arg_start: stat.arg_start,
        mm_arg_end: stat.arg_end,
        mm_env_start: stat.env_start,
        mm_env_end: stat.env_end,
        exe_file_id,
        mm_saved_auxv: proc::task::auxv_words(&auxv),
        vmas,
        dumpable: None,
        aios: Vec::new(),
        thp_disabled: None,
    })
}

// ---------------------------------------------------------------- restore

/// Highest user address (4-level paging): everything below is ours to unmap.
const TASK_SIZE: u64 = 0x7fff_ffff_f000;
const ARCH_MAP_VDSO_64: u64 = 0x2003;

/// Where shared anonymous memory was first created during this restore, so
/// later processes map the same object through `/proc/PID/map_files`.
pub type SharedAnonRegistry = HashMap<u64, (Pid, u64, u64, u64)>;

/// Empties the stub's address space except the scratch area, then moves
/// the vDSO/vvar block to where the dumped process had it.
pub fn clear_address_space(task: &mut Task, vmas: &[pb::VmaEntry]) -> Result<(), RestoreError> {
    let pid = task.pid;
    let scratch_end = task.scratch + crate::restore::stub::SCRATCH_LEN;
    // The stub inherited glibc's rseq registration from the restorer; the
    // kernel writes to that area on every return to user space, so it must
    // go before the memory holding it does.
    let rseq = stasis_sys::ptrace::get_rseq_config(task.tid).map_err(restore_io(pid, "read rseq"))?;
    if rseq.rseq_abi_pointer != 0 {
        const RSEQ_FLAG_UNREGISTER: u64 = 1;
        task.call(
            libc::SYS_rseq,
            [rseq.rseq_abi_pointer, rseq.rseq_abi_size as u64, RSEQ_FLAG_UNREGISTER, rseq.signature as u64, 0, 0],
        )
        .map_err(restore_io(pid, "unregister the restorer's rseq"))?;
    }
    task.call(libc::SYS_munmap, [0, task.scratch, 0, 0, 0, 0]).map_err(restore_io(pid, "unmap old memory"))?;
    task.call(libc::SYS_munmap, [scratch_end, TASK_SIZE - scratch_end, 0, 0, 0, 0])
        .map_err(restore_io(pid, "unmap old memory"))?;
    let vvar_start = vmas.iter().filter(|v| v.status & (vst::AREA_VVAR | vst::AREA_VDSO) != 0).map(|v| v.start).min();
    if let Some(base) = vvar_start {
        task.call(libc::SYS_arch_prctl, [ARCH_MAP_VDSO_64, base, 0, 0, 0, 0])
            .map_err(restore_io(pid, format!("map the vDSO at {base:#x}")))?;
    }
    Ok(())
}

/// How `map_paths` names a file the restorer holds open as fd N (a memfd):
/// the task takes it with `pidfd_getfd` instead of opening a path.
const LOCAL_FD: &str = "restorer-fd:";

/// The `map_paths` value for the restorer's fd `fd`.
pub fn local_fd_path(fd: std::os::fd::RawFd) -> String {
    format!("{LOCAL_FD}{fd}")
}

fn local_fd(path: &str) -> Option<std::os::fd::RawFd> {
    path.strip_prefix(LOCAL_FD)?.parse().ok()
}

/// Maps every VMA at its address (writable for now where contents follow).
pub fn map_vmas(
    task: &mut Task,
    vmas: &[pb::VmaEntry],
    paths: &HashMap<u32, String>,
    shared: &mut SharedAnonRegistry,
) -> Result<(), RestoreError> {
    let pid = task.pid;
    let mut open: Option<(u32, u64)> = None; // (file id, remote fd)
    for v in vmas {
        if v.status & vst::AREA_REGULAR == 0 || v.status & (vst::AREA_VDSO | vst::AREA_VVAR) != 0 {
            continue;
        }
        let len = v.end - v.start;
        let mut prot = v.prot as u64;
        let mut flags = (v.flags as u64 & !(libc::MAP_SHARED | libc::MAP_PRIVATE) as u64) | libc::MAP_FIXED as u64;
        let what = format!("map {:#x}-{:#x}", v.start, v.end);
        if v.status & (vst::ANON_PRIVATE) != 0 {
            prot |= (libc::PROT_READ | libc::PROT_WRITE) as u64;
            flags |= (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
            task.call(libc::SYS_mmap, [v.start, len, prot, flags, u64::MAX, 0]).map_err(restore_io(pid, what))?;
        } else if v.status & vst::ANON_SHARED != 0 {
            prot |= (libc::PROT_READ | libc::PROT_WRITE) as u64;
            if let Some(&(owner, ostart, oend, opgoff)) = shared.get(&v.shmid) {
                // The restorer opens the area's file through the owner's
                // map_files (our /proc sees the owner whatever its pid
                // namespace); the task takes that file.
                let path = format!("/proc/{owner}/map_files/{ostart:x}-{oend:x}");
                let local = crate::kinds::special::open_local(&path, libc::O_RDWR as u32)
                    .map_err(restore_io(pid, format!("open {path}")))?;
                let fd = crate::kinds::share::take_local(task, local.as_raw_fd(), &what)?;
                let off = v.pgoff.saturating_sub(opgoff);
                let r = task.call(libc::SYS_mmap, [v.start, len, prot, flags | libc::MAP_SHARED as u64, fd, off]);
                let _ = task.call(libc::SYS_close, [fd, 0, 0, 0, 0, 0]);
                r.map_err(restore_io(pid, what))?;
            } else {
                flags |= (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u64;
                task.call(libc::SYS_mmap, [v.start, len, prot, flags, u64::MAX, 0]).map_err(restore_io(pid, what))?;
                shared.insert(v.shmid, (pid, v.start, v.end, v.pgoff));
            }
        } else if v.status & (vst::FILE_PRIVATE | vst::FILE_SHARED) != 0 {
            let id = v.shmid as u32;
            let fd = match open {
                Some((oid, fd)) if oid == id => fd,
                _ => {
                    if let Some((_, old)) = open.take() {
                        let _ = task.call(libc::SYS_close, [old, 0, 0, 0, 0, 0]);
                    }
                    let path = paths.get(&id).ok_or_else(|| RestoreError::Task {
                        pid,
                        what: format!("mapping at {:#x} names file id {id}, which files.img lacks", v.start),
                        source: std::io::Error::from(std::io::ErrorKind::NotFound),
                    })?;
                    let oflags = v.fdflags.unwrap_or(libc::O_RDONLY as u32) as u64 | libc::O_CLOEXEC as u64;
                    let fd = match local_fd(path) {
                        Some(n) => crate::kinds::share::take_local(task, n, &what)?,
                        None => {
                            let p = task.put_str(0, path).map_err(restore_io(pid, "write path"))?;
                            task.call(libc::SYS_openat, [libc::AT_FDCWD as u64, p, oflags, 0, 0, 0])
                                .map_err(restore_io(pid, format!("open {path} for mapping")))?
                        }
                    };
                    open = Some((id, fd));
                    fd
                }
            };
            if v.status & vst::FILE_PRIVATE != 0 {
                prot |= (libc::PROT_READ | libc::PROT_WRITE) as u64;
                flags |= libc::MAP_PRIVATE as u64;
            } else {
                flags |= libc::MAP_SHARED as u64;
            }
            task.call(libc::SYS_mmap, [v.start, len, prot, flags, fd, v.pgoff]).map_err(restore_io(pid, what))?;
        }
    }
    if let Some((_, fd)) = open {
        let _ = task.call(libc::SYS_close, [fd, 0, 0, 0, 0, 0]);
    }
    Ok(())
}

/// Puts back the final protections and madvise hints.
pub fn finish_vmas(task: &mut Task, vmas: &[pb::VmaEntry]) -> Result<(), RestoreError> {
    let pid = task.pid;
    for v in vmas {
        if v.status & vst::AREA_REGULAR == 0 || v.status & (vst::AREA_VDSO | vst::AREA_VVAR) != 0 {
            continue;
        }
        let len = v.end - v.start;
        let needs_write_cleared = v.status & (vst::ANON_PRIVATE | vst::ANON_SHARED | vst::FILE_PRIVATE) != 0;
        if needs_write_cleared && v.prot != (libc::PROT_READ | libc::PROT_WRITE) as u32 {
            task.call(libc::SYS_mprotect, [v.start, len, v.prot as u64, 0, 0, 0])
                .map_err(restore_io(pid, format!("mprotect {:#x}", v.start)))?;
        }
        let madv = v.madv.unwrap_or(0);
        for advice in [MADV_DONTFORK, MADV_WIPEONFORK, MADV_DONTDUMP, MADV_HUGEPAGE, MADV_NOHUGEPAGE] {
            if madv & (1 << advice) != 0 {
                task.call(libc::SYS_madvise, [v.start, len, advice, 0, 0, 0])
                    .map_err(restore_io(pid, format!("madvise {:#x}", v.start)))?;
            }
        }
    }
    Ok(())
}

/// `struct prctl_mm_map` bytes for `PR_SET_MM_MAP`.
pub fn mm_map_bytes(mm: &pb::MmEntry, brk: u64, auxv_addr: u64, auxv_len: u32, exe_fd: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(104);
    for w in [
        mm.mm_start_code,
        mm.mm_end_code,
        mm.mm_start_data,
        mm.mm_end_data,
        mm.mm_start_brk,
        brk,
        mm.mm_start_stack,
        mm.mm_arg_start,
        mm.mm_arg_end,
        mm.mm_env_start,
        mm.mm_env_end,
        auxv_addr,
    ] {
        b.extend_from_slice(&w.to_ne_bytes());
    }
    b.extend_from_slice(&auxv_len.to_ne_bytes());
    b.extend_from_slice(&exe_fd.to_ne_bytes());
    b
}

/// Sets the mm fields (code/data/brk/stack/args/env bounds, auxv, exe link)
/// in one `PR_SET_MM_MAP` call.
pub fn restore_mm_fields(task: &mut Task, mm: &pb::MmEntry, exe_path: Option<&str>) -> Result<(), RestoreError> {
    let pid = task.pid;
    let exe_fd = match exe_path {
        Some(p) => {
            let a = task.put_str(2048, p).map_err(restore_io(pid, "write path"))?;
            task.call(libc::SYS_openat, [libc::AT_FDCWD as u64, a, (libc::O_RDONLY | libc::O_CLOEXEC) as u64, 0, 0, 0])
                .map_err(restore_io(pid, format!("open exe {p}")))?
        }
        None => u32::MAX as u64,
    };
    let auxv: Vec<u8> = mm.mm_saved_auxv.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let auxv_addr = task.put(1024, &auxv).map_err(restore_io(pid, "write auxv"))?;
    let map = mm_map_bytes(mm, mm.mm_brk, auxv_addr, auxv.len() as u32, exe_fd as u32);
    let map_addr = task.put(0, &map).map_err(restore_io(pid, "write mm map"))?;
    const PR_SET_MM: u64 = 35;
    const PR_SET_MM_MAP: u64 = 14;
    let r = task.call(libc::SYS_prctl, [PR_SET_MM, PR_SET_MM_MAP, map_addr, map.len() as u64, 0, 0]);
    if exe_fd != u32::MAX as u64 {
        let _ = task.call(libc::SYS_close, [exe_fd, 0, 0, 0, 0, 0]);
    }
    r.map(drop).map_err(restore_io(pid, "set mm fields (PR_SET_MM_MAP)"))
}
