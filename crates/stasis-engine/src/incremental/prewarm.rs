//! Page-cache pages for an incremental dump's pages files, allocated before
//! the tree is frozen.
//!
//! The pages an incremental dump stores are few, but writing them into new
//! files while the tree is frozen means allocating page-cache pages then,
//! which is slow where memory was just freed (on this VM, freed memory goes
//! back to the host and every page costs a host fault on reuse: 16 MiB took
//! 45 ms instead of 5). So before freezing, the pages written so far are
//! counted (`PAGEMAP_SCAN`, the tree still running) and each process's
//! pages file is filled with as many zeros; the frozen dump then overwrites
//! pages that already exist, and trims the file to what it wrote.

use crate::proc::VmaKind;
use stasis_image::ImageDirWriter;
use stasis_sys::pagemap::{self, Region};
use stasis_sys::Pid;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

/// At most this much is prepared per process (an estimate, not a promise).
const MAX_BYTES: u64 = 256 << 20;

/// Anonymous pages of `pid` written since tracking started (or never
/// tracked): about what its incremental dump will store.
fn written_bytes(pid: Pid) -> Option<u64> {
    let pm = std::fs::File::open(format!("/proc/{pid}/pagemap")).ok()?;
    let mut total = 0u64;
    // Writable private areas only: what dumps store is mostly there.
    for m in crate::proc::read_maps(pid).ok()? {
        if !m.prot.write || m.shared || m.kind == VmaKind::Vsyscall {
            continue;
        }
        let mut out: Vec<Region> = Vec::new();
        if pagemap::scan(pm.as_fd(), (m.start, m.end), pagemap::PAGE_IS_WRITTEN, 0, 0, &mut out).is_ok() {
            total += out.iter().map(|r| r.end - r.start).sum::<u64>();
        }
    }
    Some(total)
}

/// Prepares `pages-VPID.img` in `staging` for each tracked process
/// `(vpid, pid)`. Best effort: a process it cannot read gets nothing.
pub fn prepare(staging: &ImageDirWriter, tracked: &[(Pid, Pid)]) {
    let zeros = vec![0u8; 1 << 20];
    for &(vpid, pid) in tracked {
        let Some(bytes) = written_bytes(pid) else { continue };
        let bytes = bytes.min(MAX_BYTES);
        let path = staging.file(&stasis_image::magic::file_name::pages(vpid as u32));
        let Ok(f) = std::fs::OpenOptions::new().write(true).create_new(true).open(&path) else { continue };
        let mut off = 0u64;
        while off < bytes {
            let n = (bytes - off).min(zeros.len() as u64) as usize;
            if f.write_all_at(&zeros[..n], off).is_err() {
                break;
            }
            off += n as u64;
        }
        log::debug!("process {pid}: {} KiB of page cache prepared for its pages", off / 1024);
    }
}
