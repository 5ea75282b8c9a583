//! `PAGEMAP_SCAN` (Linux 6.7+): an ioctl on `/proc/PID/pagemap` that walks
//! a range of another process's page tables and returns the regions whose
//! pages match a category mask, in one call instead of 8 bytes read per
//! page. Pre-dumps use it to list the pages written since write-protection
//! was armed (see [`crate::uffd::FEATURE_WP_ASYNC`]).
//!
//! The 6.1 headers lack it; the layout and numbers are those of
//! include/uapi/linux/fs.h in Linux 6.18 (`struct pm_scan_arg`, 96 bytes;
//! `struct page_region`, 24 bytes).

use crate::check_int;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;

/// The page is not write-protected by userfaultfd: written since the last
/// protection (or never protected).
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
/// The page is a page-cache page (of a file or shmem), not anonymous.
pub const PAGE_IS_FILE: u64 = 1 << 2;
/// A guard region (`MADV_GUARD_INSTALL`, Linux 6.15+; older kernels reject
/// the bit with EINVAL).
pub const PAGE_IS_GUARD: u64 = 1 << 8;

/// Write-protect the pages found, in the same walk.
pub const SCAN_WP_MATCHING: u64 = 1 << 0;

#[repr(C)]
#[derive(Default)]
struct ScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// A region `[start, end)` whose pages all have `categories` (masked by the
/// scan's return mask).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// Lists the regions of `[start, end)` whose pages have every category of
/// `required`, appending them to `out` (adjacent pages with the same
/// categories merge into one region); each region also tells which of
/// `reported` its pages have. `flags` may add [`SCAN_WP_MATCHING`] to
/// re-protect them. `pagemap` is `/proc/PID/pagemap` of the process.
pub fn scan(
    pagemap: BorrowedFd<'_>,
    (start, end): (u64, u64),
    required: u64,
    reported: u64,
    flags: u64,
    out: &mut Vec<Region>,
) -> io::Result<()> {
    let mut buf = vec![PageRegion::default(); 4096];
    let mut from = start;
    while from < end {
        let mut a = ScanArg {
            size: std::mem::size_of::<ScanArg>() as u64,
            flags,
            start: from,
            end,
            vec: buf.as_mut_ptr() as u64,
            vec_len: buf.len() as u64,
            category_mask: required,
            return_mask: required | reported,
            ..Default::default()
        };
        // SAFETY: a is a live pm_scan_arg whose vec points to buf, which
        // holds vec_len page_region slots the kernel may fill.
        let n = check_int(unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, &mut a) })? as usize;
        for r in &buf[..n.min(buf.len())] {
            match out.last_mut() {
                Some(l) if l.end == r.start && l.categories == r.categories => l.end = r.end,
                _ => out.push(Region { start: r.start, end: r.end, categories: r.categories }),
            }
        }
        if a.walk_end <= from {
            break;
        }
        from = a.walk_end;
    }
    Ok(())
}
