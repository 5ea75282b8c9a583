//! Where each stored page of a process comes from when the images are
//! incremental: a pagemap entry flagged PARENT has its bytes in the image
//! set the `parent` link names, which may itself point further up. Restore
//! resolves every entry to (layer, offset in that layer's pages file) up
//! front, so a broken chain fails before anything is created.

use crate::error::RestoreError;
use crate::kinds::mm::PAGE;
use stasis_image::flags::pe;
use stasis_image::pages::{entry_flags, entry_nr_pages};
use stasis_image::ImageDir;
use std::path::{Path, PathBuf};

/// Longest chain followed (CRIU's iterative migrations use a handful).
const MAX_DEPTH: usize = 64;

/// `nr_pages` pages at `vaddr`, stored at byte `off` of layer `layer`'s
/// pages file (layer 0 is the image set being restored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageSeg {
    pub vaddr: u64,
    pub nr_pages: u64,
    pub layer: usize,
    pub off: u64,
}

/// The pages of one process: segments in address order, and the pages file
/// of each layer they use.
#[derive(Debug, Default)]
pub struct ProcessPages {
    pub segs: Vec<PageSeg>,
    pub files: Vec<PathBuf>,
}

impl ProcessPages {
    pub fn total_bytes(&self) -> u64 {
        self.segs.iter().map(|s| s.nr_pages * PAGE).sum()
    }
}

/// One pagemap entry with its offset in its layer's pages file.
struct Entry {
    vaddr: u64,
    end: u64,
    parent: bool,
    off: u64,
}

struct Layer {
    entries: Vec<Entry>,
    pages: PathBuf,
}

fn invalid(dir: &Path, what: String) -> RestoreError {
    RestoreError::Invalid { dir: dir.to_path_buf(), what }
}

/// The image sets of the chain starting at `img` (itself first).
pub fn chain(img: &ImageDir) -> Result<Vec<ImageDir>, RestoreError> {
    let mut out = vec![img.clone()];
    let parent_of = |d: &ImageDir| {
        d.parent().map_err(|e| {
            let target = std::fs::read_link(d.file(stasis_image::PARENT_LINK)).unwrap_or_default();
            let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
            invalid(
                d.path(),
                format!("its parent images (link parent -> {}) cannot be read: {e}{cause}", target.display()),
            )
        })
    };
    while let Some(p) = out.last().map(parent_of).transpose()?.flatten() {
        if out.len() == MAX_DEPTH {
            return Err(invalid(img.path(), format!("the chain of parent images is deeper than {MAX_DEPTH}")));
        }
        out.push(p);
    }
    Ok(out)
}

fn read_layer(dir: &ImageDir, pid: u32) -> Result<Option<Layer>, RestoreError> {
    if !dir.exists(&stasis_image::magic::file_name::pagemap(pid)) {
        return Ok(None);
    }
    let (head, raw) = dir.read_pagemap(pid)?;
    let pages = dir.pages_path(head.pages_id);
    let mut off = 0u64;
    let mut entries = Vec::with_capacity(raw.len());
    for e in &raw {
        let flags = entry_flags(e);
        let len = entry_nr_pages(e) * PAGE;
        let parent = flags & pe::PRESENT == 0;
        entries.push(Entry { vaddr: e.vaddr, end: e.vaddr + len, parent, off });
        if !parent {
            off += len;
        }
    }
    let have = std::fs::metadata(&pages).map(|m| m.len()).unwrap_or(0);
    if have < off {
        return Err(invalid(
            dir.path(),
            format!("{} holds {have} bytes but pagemap-{pid}.img needs {off}", pages.display()),
        ));
    }
    Ok(Some(Layer { entries, pages }))
}

/// Resolves the pages of process `pid` through `chain`.
pub fn resolve(chain: &[ImageDir], pid: u32) -> Result<ProcessPages, RestoreError> {
    let mut layers: Vec<Option<Layer>> = Vec::new();
    let mut segs = Vec::new();
    let top =
        read_layer(&chain[0], pid)?.ok_or_else(|| invalid(chain[0].path(), format!("pagemap-{pid}.img is missing")))?;
    let ranges: Vec<(u64, u64)> = top.entries.iter().map(|e| (e.vaddr, e.end)).collect();
    layers.push(Some(top));
    for (s, e) in ranges {
        resolve_range(chain, &mut layers, pid, 0, s, e, &mut segs)?;
    }
    let mut files = Vec::new();
    let mut used = vec![false; layers.len()];
    for s in &segs {
        used[s.layer] = true;
    }
    for (i, l) in layers.into_iter().enumerate() {
        files.push(match l {
            Some(l) if used[i] => l.pages,
            _ => PathBuf::new(),
        });
    }
    Ok(ProcessPages { segs, files })
}

/// Appends the segments holding `[start, end)` as layer `at` describes it.
fn resolve_range(
    chain: &[ImageDir],
    layers: &mut Vec<Option<Layer>>,
    pid: u32,
    at: usize,
    start: u64,
    end: u64,
    out: &mut Vec<PageSeg>,
) -> Result<(), RestoreError> {
    while layers.len() <= at {
        let i = layers.len();
        let Some(dir) = chain.get(i) else {
            return Err(invalid(
                chain[0].path(),
                format!("process {pid}: pages at {start:#x} are marked PARENT but the images have no parent"),
            ));
        };
        layers.push(read_layer(dir, pid)?);
    }
    let Some(layer) = &layers[at] else {
        return Err(invalid(
            chain[at].path(),
            format!("process {pid}: pages at {start:#x} are marked PARENT but the parent has no pagemap-{pid}.img"),
        ));
    };
    let first = layer.entries.partition_point(|e| e.end <= start);
    let mut cur = start;
    // Collected first: resolving a PARENT piece borrows `layers` mutably.
    let mut pieces: Vec<(u64, u64, bool, u64)> = Vec::new();
    for e in &layer.entries[first..] {
        if e.vaddr >= end || e.vaddr > cur {
            break;
        }
        let s = cur;
        let t = e.end.min(end);
        pieces.push((s, t, e.parent, e.off + (s - e.vaddr)));
        cur = t;
        if cur >= end {
            break;
        }
    }
    if cur < end {
        return Err(invalid(
            chain[at].path(),
            format!("process {pid}: pages at {cur:#x} are marked PARENT but the parent does not hold them"),
        ));
    }
    for (s, t, parent, off) in pieces {
        if parent {
            resolve_range(chain, layers, pid, at + 1, s, t, out)?;
        } else {
            match out.last_mut() {
                Some(l) if l.layer == at && l.vaddr + l.nr_pages * PAGE == s && l.off + l.nr_pages * PAGE == off => {
                    l.nr_pages += (t - s) / PAGE
                }
                _ => out.push(PageSeg { vaddr: s, nr_pages: (t - s) / PAGE, layer: at, off }),
            }
        }
    }
    Ok(())
}
