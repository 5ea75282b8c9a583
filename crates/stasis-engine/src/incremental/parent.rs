//! The parent of an incremental dump, as the dumper needs it: which pages
//! each process stored there, and the holder of its write tracking.

use super::holder::Holder;
use super::ranges::Ranges;
use crate::error::DumpError;
use crate::kinds::mm::PAGE;
use crate::restore::page_chain::{self, ProcessPages};
use stasis_image::flags::pe;
use stasis_image::pages::{entry_flags, entry_nr_pages};
use stasis_image::ImageDir;
use stasis_sys::Pid;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

pub struct ParentImages {
    pub dir: PathBuf,
    /// The parent and its own parents, for reading their pages.
    chain: Vec<ImageDir>,
    stored: HashMap<Pid, Ranges>,
    holder: Option<Holder>,
}

impl ParentImages {
    /// Reads the image set in `dir` (a pre-dump or a full dump).
    pub fn open(dir: &Path) -> Result<ParentImages, DumpError> {
        let bad = |source| DumpError::Parent { dir: dir.to_path_buf(), source };
        let img = ImageDir::open(dir).map_err(bad)?;
        img.read_inventory().map_err(bad)?;
        let mut stored = HashMap::new();
        for e in img.read_pstree().map_err(bad)? {
            let pid = e.pid;
            if !img.exists(&stasis_image::magic::file_name::pagemap(pid)) {
                continue;
            }
            let (_, entries) = img.read_pagemap(pid).map_err(bad)?;
            let ranges = entries
                .iter()
                .filter(|p| entry_flags(p) & (pe::PRESENT | pe::PARENT) != 0)
                .map(|p| (p.vaddr, p.vaddr + entry_nr_pages(p) * PAGE))
                .collect();
            stored.insert(pid as Pid, Ranges::from_unsorted(ranges));
        }
        let holder = Holder::find(dir);
        if holder.is_none() {
            log::warn!("{}: its write tracking is gone; pages are compared with it instead", dir.display());
        }
        let chain = page_chain::chain(&img).map_err(|e| DumpError::Unsupported {
            pid: 0,
            what: format!("the parent images {}: {e}", dir.display()),
        })?;
        Ok(ParentImages { dir: dir.to_path_buf(), chain, stored, holder })
    }

    /// Addresses whose pages process `vpid` stored in the parent chain.
    pub fn stored(&self, vpid: Pid) -> Option<&Ranges> {
        self.stored.get(&vpid)
    }

    /// Where the parent chain keeps each page of process `vpid`.
    pub fn pages(&self, vpid: Pid) -> Option<ProcessPages> {
        match page_chain::resolve(&self.chain, vpid as u32) {
            Ok(p) => Some(p),
            Err(e) => {
                log::debug!("process {vpid}: parent pages unreadable: {e}");
                None
            }
        }
    }

    /// A copy of the uffd tracking process `vpid` since the parent dump.
    pub fn uffd(&self, vpid: Pid) -> Option<OwnedFd> {
        self.holder.as_ref()?.uffd(vpid)
    }

    /// The processes tracked since the parent: (pid in the images, host pid).
    pub fn tracked(&self) -> Vec<(Pid, Pid)> {
        self.holder.as_ref().map(|h| h.tracked().collect()).unwrap_or_default()
    }

    /// Ends the parent's tracking (its holder exits).
    pub fn stop_tracking(&mut self) {
        if let Some(h) = self.holder.take() {
            h.stop();
        }
    }
}
