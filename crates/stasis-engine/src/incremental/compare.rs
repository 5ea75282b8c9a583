//! The fallback where write tracking cannot say: pages the parent holds
//! are compared byte for byte with the process's current ones, and those
//! equal are left to the parent.
//!
//! It applies where no uffd of ours covered a page since the parent: areas
//! a program registered with its own userfaultfd, areas the kernel would
//! not track, and every area when the tracking is gone (its holder killed,
//! or a kernel without async write-protection). It saves image space, not
//! frozen time: the pages are read while the tree is stopped, as a full
//! dump reads them.

use super::ranges::Ranges;
use crate::kinds::mm::PAGE;
use crate::restore::page_chain::ProcessPages;
use stasis_sys::{vm, Pid};
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Largest piece read at once from each side.
const PIECE: u64 = 1 << 20;

/// The pages of `candidates` whose bytes in process `pid` equal those the
/// parent chain `parent` stores for them. Pages that cannot be read on
/// either side count as different.
pub fn same_as_parent(pid: Pid, candidates: &Ranges, parent: &ProcessPages) -> Ranges {
    let mut files: Vec<Option<File>> = parent.files.iter().map(|_| None).collect();
    let mut same = Vec::new();
    let (mut ours, mut theirs) = (vec![0u8; PIECE as usize], vec![0u8; PIECE as usize]);
    for seg in &parent.segs {
        let seg_end = seg.vaddr + seg.nr_pages * PAGE;
        for (start, end, inside) in candidates.split(seg.vaddr, seg_end) {
            if !inside {
                continue;
            }
            let mut addr = start;
            while addr < end {
                let len = (end - addr).min(PIECE) as usize;
                let off = seg.off + (addr - seg.vaddr);
                let file = match &mut files[seg.layer] {
                    Some(f) => f,
                    slot => match File::open(&parent.files[seg.layer]) {
                        Ok(f) => slot.insert(f),
                        Err(_) => break,
                    },
                };
                let read = file.read_exact_at(&mut theirs[..len], off).is_ok()
                    && vm::read(pid, addr, &mut ours[..len]).is_ok();
                if read {
                    for (i, (a, b)) in
                        ours[..len].chunks(PAGE as usize).zip(theirs[..len].chunks(PAGE as usize)).enumerate()
                    {
                        if a == b {
                            let p = addr + i as u64 * PAGE;
                            same.push((p, p + PAGE));
                        }
                    }
                }
                addr += len as u64;
            }
        }
    }
    Ranges::from_unsorted(same)
}
