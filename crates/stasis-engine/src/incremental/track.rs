//! Write tracking for one process, without soft-dirty bits: userfaultfd
//! write-protection in async mode, read back with `PAGEMAP_SCAN`.
//!
//! Arming (at a pre-dump, the process stopped): an injected `userfaultfd()`
//! is copied out with `pidfd_getfd` and closed in the process, so the
//! program never sees it; every VMA whose pages we store is registered in
//! WP mode and write-protected. From then on the kernel clears a page's
//! uffd-wp bit on its first write, on its own (async mode, ~1 µs, no
//! handler).
//!
//! Reading (at the next dump, the process stopped again): registering each
//! VMA once more with *our* uffd succeeds only where the range is ours or
//! unregistered; a range that the program registered with a uffd of its
//! own fails (EBUSY) and is not trusted. A VMA created since has no uffd-wp
//! bits, so all its pages read as written. `PAGEMAP_SCAN` then lists the
//! written pages; with `rearm` it protects them again in the same walk (a
//! pre-dump that follows a pre-dump).

use super::ranges::Ranges;
use crate::remote::ThreadCall;
use stasis_image::flags::vma as vst;
use stasis_image::pb;
use stasis_sys::pagemap::{self, Region};
use stasis_sys::{fd as sysfd, uffd, Pid};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// VMAs whose pages a dump stores, and so the ones worth tracking.
fn stores_pages(v: &pb::VmaEntry) -> bool {
    v.status & vst::AREA_REGULAR != 0 && v.status & (vst::ANON_PRIVATE | vst::ANON_SHARED | vst::FILE_PRIVATE) != 0
}

/// Creates a write-tracking uffd for the stopped process behind `call`,
/// or `None` if the kernel lacks async write-protection.
pub fn new_uffd(pid: Pid, call: &mut ThreadCall) -> io::Result<Option<OwnedFd>> {
    // User-mode-only: allowed without CAP_SYS_PTRACE (the program may run
    // as any user), and async write faults never reach a handler anyway.
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64 | uffd::USER_MODE_ONLY;
    let rfd = call.call(libc::SYS_userfaultfd, [flags, 0, 0, 0, 0, 0])?;
    let got = sysfd::copy_fd(pid, rfd as i32);
    let _ = call.call(libc::SYS_close, [rfd, 0, 0, 0, 0, 0]);
    let fd = got?;
    match uffd::handshake(fd.as_fd(), uffd::FEATURE_WP_ASYNC) {
        Ok(_) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Refuses a process that holds a userfaultfd: its ranges may be ours to
/// track or its own, and a dump refuses the fd anyway.
pub fn refuse_own_uffd(pid: Pid) -> Result<(), crate::error::DumpError> {
    use crate::error::DumpError;
    let fds = crate::proc::fdinfo::list_fds(pid).map_err(|source| DumpError::Proc { pid, source })?;
    match fds.into_iter().find(|f| f.link == "anon_inode:[userfaultfd]") {
        Some(f) => Err(DumpError::UnsupportedFd {
            pid,
            fd: f.fd,
            kind: "a userfaultfd (pre-dumps track writes with userfaultfd themselves)".into(),
        }),
        None => Ok(()),
    }
}

/// Registers `vmas` with `fd` in WP mode: the ranges that are ours now.
fn register(fd: BorrowedFd<'_>, vmas: &[pb::VmaEntry]) -> Ranges {
    let mut ok = Vec::new();
    for v in vmas.iter().filter(|v| stores_pages(v)) {
        match uffd::register(fd, v.start, v.end - v.start, uffd::REGISTER_MODE_WP) {
            Ok(()) => ok.push((v.start, v.end)),
            Err(e) => log::debug!("not tracking {:#x}-{:#x}: {e}", v.start, v.end),
        }
    }
    Ranges::from_unsorted(ok)
}

/// Starts tracking: registers and write-protects every VMA that stores
/// pages. Returns the ranges tracked.
pub fn arm(fd: BorrowedFd<'_>, vmas: &[pb::VmaEntry]) -> io::Result<Ranges> {
    let tracked = register(fd, vmas);
    for &(s, e) in tracked.as_slice() {
        uffd::writeprotect(fd, s, e - s, true)?;
    }
    Ok(tracked)
}

/// What tracking says about a process since it was armed (nothing, by
/// default: no tracking).
#[derive(Default)]
pub struct Changes {
    /// Ranges registered with our uffd now (ours since the parent where
    /// they were registered before this dump).
    pub tracked: Ranges,
    /// Pages written inside `tracked`.
    pub written: Ranges,
    /// The written pages that hold data to store: without guard regions,
    /// nor page-cache pages of private file mappings (read, not copied on
    /// write; the file has them).
    pub data: Ranges,
}

/// Reads which pages of `pid` were written since tracking was armed with
/// `fd`; with `rearm`, protects them again.
pub fn changes(pid: Pid, fd: BorrowedFd<'_>, vmas: &[pb::VmaEntry], rearm: bool) -> io::Result<Changes> {
    let tracked = register(fd, vmas);
    let pm = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
    let flags = if rearm { pagemap::SCAN_WP_MATCHING } else { 0 };
    let (mut written, mut data) = (Vec::new(), Vec::new());
    let mut guard_known = true;
    for v in vmas.iter().filter(|v| stores_pages(v)) {
        if tracked.split(v.start, v.end).iter().any(|&(_, _, inside)| !inside) {
            continue;
        }
        let mut regions: Vec<Region> = Vec::new();
        let private_file = v.status & vst::FILE_PRIVATE != 0;
        // Asking for PAGE_IS_FILE costs a folio lookup per page: only where
        // it matters.
        let file = if private_file { pagemap::PAGE_IS_FILE } else { 0 };
        let written_only = pagemap::PAGE_IS_WRITTEN;
        let reported = file | if guard_known { pagemap::PAGE_IS_GUARD } else { 0 };
        match pagemap::scan(pm.as_fd(), (v.start, v.end), written_only, reported, flags, &mut regions) {
            Err(e) if guard_known && e.raw_os_error() == Some(libc::EINVAL) => {
                // A kernel before guard regions: it cannot have any.
                guard_known = false;
                regions.clear();
                pagemap::scan(pm.as_fd(), (v.start, v.end), written_only, file, flags, &mut regions)?;
            }
            r => r?,
        }
        for r in regions {
            written.push((r.start, r.end));
            let file_page = private_file && r.categories & pagemap::PAGE_IS_FILE != 0;
            if r.categories & pagemap::PAGE_IS_GUARD == 0 && !file_page {
                data.push((r.start, r.end));
            }
        }
    }
    Ok(Changes { tracked, written: Ranges::from_unsorted(written), data: Ranges::from_unsorted(data) })
}
