//! Incremental dumps: a pre-dump stores memory while the tree keeps running
//! and starts tracking its writes; the next dump (`prev_images`) stores only
//! the pages written since and marks the rest PARENT in its pagemap, with a
//! `parent` link to the pre-dump, in CRIU's format. Restore follows the
//! chain (see `restore::load`).
//!
//! Without soft-dirty bits (absent on this kernel and many cloud kernels)
//! writes are tracked with userfaultfd write-protection in async mode and
//! `PAGEMAP_SCAN` ([`track`]); a detached [`holder`] keeps the tracking
//! alive between the two dumps. A page comes from the parent only when all
//! of these hold, else it is stored again:
//! - the parent stored it (PRESENT, or PARENT further up the chain);
//! - its VMA was tracked from the parent's dump to now, with our uffd;
//! - the kernel says it was not written since.
//!
//! Where tracking cannot say (an area the program registered with its own
//! uffd, an area mapped since, tracking lost), pages the parent holds are
//! compared byte for byte and left to it when equal ([`compare`]). A
//! process that holds a userfaultfd itself is refused by pre-dumps.

pub mod compare;
pub mod holder;
pub mod parent;
pub mod prewarm;
pub mod ranges;
pub mod track;

use crate::error::{dump_io, DumpError};
use crate::kinds::mm::{self, Run, VmaScan, PAGE};
use ranges::Ranges;
use stasis_image::flags::pe;
use stasis_image::pages::PagemapBuilder;
use stasis_image::pb;
use stasis_sys::Pid;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// How one process's stored pages split between this dump and its parent.
pub struct PagePlan {
    /// Runs whose bytes this dump writes, in address order.
    pub present: Vec<Run>,
    /// The pagemap: PRESENT and PARENT entries in address order.
    pub pagemap: Vec<pb::PagemapEntry>,
    /// Pages left to the parent.
    pub from_parent: u64,
}

fn ranges_of(runs: &[Run]) -> Ranges {
    Ranges::from_unsorted(runs.iter().map(|r| (r.vaddr, r.vaddr + r.nr_pages * PAGE)).collect())
}

/// Every run stored here: a full dump.
pub fn full(runs: &[Run]) -> PagePlan {
    assemble(&ranges_of(runs), &Ranges::default())
}

/// The plan storing `present` here and leaving `parent` to the parent
/// (disjoint sets).
pub fn assemble(present: &Ranges, parent: &Ranges) -> PagePlan {
    let mut all: Vec<(u64, u64, bool)> = present.as_slice().iter().map(|&(s, e)| (s, e, false)).collect();
    all.extend(parent.as_slice().iter().map(|&(s, e)| (s, e, true)));
    all.sort_unstable();
    let mut plan = PagePlan { present: Vec::new(), pagemap: Vec::new(), from_parent: 0 };
    let mut map = PagemapBuilder::new(0);
    for (s, e, in_parent) in all {
        let n = (e - s) / PAGE;
        if in_parent {
            plan.from_parent += n;
        } else {
            plan.present.push(Run { vaddr: s, nr_pages: n });
        }
        // Sorted and disjoint by construction: push cannot fail.
        let _ = map.push(s, n, if in_parent { pe::PARENT } else { pe::PRESENT });
    }
    plan.pagemap = map.finish().1;
    plan
}

/// The page plan of process `pid` (`vpid` in the images) against `parent`,
/// and the uffd tracking it, to hand on when this dump is a pre-dump too
/// (then `rearm` protects the written pages again). `scan` left the VMAs
/// registered for write-protection unscanned: where they are ours, the
/// pages to store are the ones written (`PAGEMAP_SCAN`, no 8 bytes read
/// per page) and the parent has the rest.
pub fn plan_against_parent(
    pid: Pid,
    vpid: Pid,
    scan: &VmaScan,
    parent: &parent::ParentImages,
    rearm: bool,
) -> Result<(PagePlan, Option<OwnedFd>), DumpError> {
    let uffd_wp = Ranges::from_unsorted(scan.uffd_wp.iter().map(|&(s, e, _)| (s, e)).collect());
    let Some(stored) = parent.stored(vpid) else {
        log::debug!("process {pid}: not in the parent images; storing every page");
        let mut runs = scan.runs.clone();
        runs.extend(mm::stored_runs(pid, &scan.uffd_wp)?);
        return Ok((full(&runs), None));
    };
    let uffd = parent.uffd(vpid);
    let ch = match &uffd {
        Some(fd) => track::changes(pid, fd.as_fd(), &scan.vmas, rearm).map_err(dump_io(pid, "read tracked writes"))?,
        None => track::Changes::default(),
    };
    let ours = uffd_wp.intersect(&ch.tracked);
    // Areas registered with our uffd only now (their tracking was lost since
    // the parent: mremap unregisters whatever VMA it merged the moved one
    // into) may keep uffd-wp bits on PTEs that writes made writable again,
    // which later writes never clear. A pre-dump that tracks them from here
    // on protects them whole, as `track::arm` does.
    if let (true, Some(fd)) = (rearm, &uffd) {
        for &(s, e) in ch.tracked.subtract(&uffd_wp).as_slice() {
            stasis_sys::uffd::writeprotect(fd.as_fd(), s, e - s, true)
                .map_err(dump_io(pid, "write-protect memory for tracking"))?;
        }
    }
    // Registered for write-protection by someone else (the program's own
    // uffd), or tracking lost: scanned the slow way.
    let foreign: Vec<(u64, u64, u32)> =
        scan.uffd_wp.iter().copied().filter(|&(s, e, _)| ours.split(s, e).iter().any(|p| !p.2)).collect();
    let mut slow = scan.runs.clone();
    slow.extend(mm::stored_runs(pid, &foreign)?);
    let mut present = Ranges::from_unsorted(
        ranges_of(&slow).as_slice().iter().chain(ch.data.intersect(&ours).as_slice()).copied().collect(),
    );
    let mut reuse = ours.intersect(stored).subtract(&ch.written);
    // Where tracking cannot say, the bytes can.
    let unknown = present.subtract(&ours).intersect(stored);
    if !unknown.is_empty() {
        if let Some(pages) = parent.pages(vpid) {
            let same = compare::same_as_parent(pid, &unknown, &pages);
            log::debug!(
                "process {pid}: {} of {} untracked KiB equal to the parent's",
                same.len_bytes() / 1024,
                unknown.len_bytes() / 1024
            );
            present = present.subtract(&same);
            reuse = Ranges::from_unsorted(reuse.as_slice().iter().chain(same.as_slice()).copied().collect());
        }
    }
    let plan = assemble(&present, &reuse);
    log::debug!(
        "process {pid}: {} KiB written since the parent, {} pages left to it",
        ch.written.len_bytes() / 1024,
        plan.from_parent
    );
    Ok((plan, uffd))
}

/// The `parent` link of image set `images` (not created yet) to `parent`:
/// relative when both are under one root, so a checkpoint directory and
/// its pre-checkpoint move together.
pub fn parent_link(images: &Path, parent: &Path) -> Result<PathBuf, DumpError> {
    let canon =
        |p: &Path| std::fs::canonicalize(p).map_err(|source| DumpError::Write { path: p.to_path_buf(), source });
    let parent = canon(parent)?;
    let (dir, name) = match (images.parent(), images.file_name()) {
        (Some(d), Some(n)) => (if d.as_os_str().is_empty() { Path::new(".") } else { d }, n),
        _ => return Ok(parent),
    };
    let images = canon(dir)?.join(name);
    let common = images.components().zip(parent.components()).take_while(|(a, b)| a == b).count();
    if common <= 1 {
        return Ok(parent);
    }
    let mut rel = PathBuf::new();
    for _ in images.components().skip(common) {
        rel.push("..");
    }
    for c in parent.components().skip(common) {
        rel.push(c);
    }
    Ok(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assemble_interleaves_parent_and_present_entries() {
        let present = Ranges::from_unsorted(vec![(0x10000, 0x11000), (0x13000, 0x18000)]);
        let reuse = Ranges::from_unsorted(vec![(0x11000, 0x13000), (0x20000, 0x22000)]);
        let p = assemble(&present, &reuse);
        assert_eq!(p.present, vec![Run { vaddr: 0x10000, nr_pages: 1 }, Run { vaddr: 0x13000, nr_pages: 5 }]);
        assert_eq!(p.from_parent, 4);
        let flags: Vec<(u64, u32)> = p.pagemap.iter().map(|e| (e.vaddr, e.flags.unwrap_or(0))).collect();
        assert_eq!(
            flags,
            vec![(0x10000, pe::PRESENT), (0x11000, pe::PARENT), (0x13000, pe::PRESENT), (0x20000, pe::PARENT)]
        );
    }

    #[test]
    fn parent_link_is_relative_between_siblings() {
        let d = std::env::temp_dir().join(format!("stasis-link-{}", std::process::id()));
        std::fs::create_dir_all(d.join("ctr/pre-checkpoint")).unwrap();
        let link = parent_link(&d.join("ctr/checkpoint"), &d.join("ctr/pre-checkpoint")).unwrap();
        assert_eq!(link, PathBuf::from("../pre-checkpoint"));
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        let link = parent_link(&d.join("a/b/c"), &d.join("ctr/pre-checkpoint")).unwrap();
        assert_eq!(link, PathBuf::from("../../../ctr/pre-checkpoint"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
