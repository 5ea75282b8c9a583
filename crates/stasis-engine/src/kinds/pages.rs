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
use stasis_sys::mmap::FileMap;
use stasis_sys::vm::{self, RemoteRange};
use stasis_sys::{proc_ctl, Pid};
use std::fs::File;
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

/// Copies the pages of `runs` from `pid` into `file` (created empty).
/// Returns the bytes written.
///
/// Each worker reads a chunk into its own buffer and writes it at the
/// chunk's offset with `pwrite`, so one worker's copy out of the target
/// overlaps another's write into the page cache. (Letting
/// `process_vm_readv` fill a shared mapping of the file was slower here:
/// a page fault per 4 KiB page of page cache.)
pub fn dump_pages(pid: Pid, runs: &[Run], file: &File) -> Result<u64, DumpError> {
    let total: u64 = runs.iter().map(|r| r.nr_pages * PAGE).sum();
    if total == 0 {
        return Ok(0);
    }
    let n = workers();
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
                    let mut buf = vec![0u8; CHUNK];
                    for (ranges, len, off) in mine {
                        if proc_ctl::interrupted() {
                            return Err(DumpError::Interrupted);
                        }
                        vm::read_ranges(pid, &ranges, &mut buf[..len]).map_err(dump_io(pid, "read memory"))?;
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

/// Writes the stored pages back into `pid` (`pages` is the pages file).
pub fn fill_pages(pid: Pid, runs: &[Run], pages: &File) -> Result<(), RestoreError> {
    let total: u64 = runs.iter().map(|r| r.nr_pages * PAGE).sum();
    if total == 0 {
        return Ok(());
    }
    let have = pages.metadata().map(|m| m.len()).unwrap_or(0);
    if have < total {
        return Err(RestoreError::Task {
            pid,
            what: format!("pagemap lists {total} bytes but the pages file has {have}"),
            source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
        });
    }
    let map = FileMap::read_only(pages, total as usize).map_err(restore_io(pid, "map the pages file"))?;
    map.advise_sequential();
    let n = workers();
    let mut per: Vec<Vec<(Vec<RemoteRange>, &[u8])>> = (0..n).map(|_| Vec::new()).collect();
    let mut off = 0usize;
    for (i, (ranges, len)) in chunks(runs).into_iter().enumerate() {
        per[i % n].push((ranges, &map.as_slice()[off..off + len]));
        off += len;
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = per
            .into_iter()
            .map(|mine| {
                s.spawn(move || -> Result<(), RestoreError> {
                    for (ranges, buf) in mine {
                        if proc_ctl::interrupted() {
                            return Err(RestoreError::Interrupted);
                        }
                        vm::write_ranges(pid, &ranges, buf).map_err(restore_io(pid, "write memory"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().unwrap_or(Err(RestoreError::Interrupted)))
    })
}
