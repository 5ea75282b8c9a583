//! Reading and checking a whole image directory before anything is created:
//! a restore refuses bad images up front, with the file named, and never
//! leaves half a tree behind because of a file it could have read first.

use super::page_chain::{self, ProcessPages};
use crate::error::RestoreError;
use stasis_image::flags::task_state;
use stasis_image::{pb, ImageDir};
use stasis_sys::Pid;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One process of the image.
pub struct ProcessImage {
    pub pstree: pb::PstreeEntry,
    /// Core of every thread, main thread first.
    pub cores: Vec<(Pid, pb::CoreEntry)>,
    pub mm: Option<pb::MmEntry>,
    /// Where each stored page is (this image set or a parent).
    pub pages: ProcessPages,
    pub fdinfo: Vec<pb::FdinfoEntry>,
    pub fs: Option<pb::FsEntry>,
}

impl ProcessImage {
    pub fn pid(&self) -> Pid {
        self.pstree.pid as Pid
    }

    /// The main thread's task core (process-wide state).
    pub fn tc(&self) -> Option<&pb::TaskCoreEntry> {
        self.cores.first().and_then(|(_, c)| c.tc.as_ref())
    }

    pub fn is_zombie(&self) -> bool {
        self.tc().is_some_and(|tc| tc.task_state == task_state::ZOMBIE)
    }
}

/// Everything a restore needs, read and cross-checked.
pub struct TreeImage {
    pub dir: PathBuf,
    pub processes: Vec<ProcessImage>,
    pub files: Vec<pb::FileEntry>,
    pub pipe_data: HashMap<u32, Vec<u8>>,
    /// `seccomp.img`: every thread's filters (checked against the cores).
    pub seccomp: Option<pb::SeccompEntry>,
}

fn invalid(dir: &Path, what: impl Into<String>) -> RestoreError {
    RestoreError::Invalid { dir: dir.to_path_buf(), what: what.into() }
}

/// Reads and validates the image directory.
pub fn load(dir: &Path) -> Result<TreeImage, RestoreError> {
    let img = ImageDir::open(dir)?;
    img.read_inventory()?;
    let pstree = img.read_pstree()?;
    let chain = page_chain::chain(&img)?;
    if pstree.is_empty() {
        return Err(invalid(dir, "pstree.img lists no process"));
    }
    let files = img.read_files()?;
    let file_ids: std::collections::HashSet<u32> = files.iter().map(|f| f.id).collect();
    let seccomp = img.read_seccomp()?;
    let mut processes = Vec::with_capacity(pstree.len());
    for e in pstree {
        let pid = e.pid;
        let mut cores = Vec::with_capacity(e.threads.len());
        let main = img.read_core(pid)?;
        let zombie = main.tc.as_ref().is_some_and(|tc| tc.task_state == task_state::ZOMBIE);
        cores.push((pid as Pid, main));
        if zombie {
            processes.push(ProcessImage {
                pstree: e,
                cores,
                mm: None,
                pages: ProcessPages::default(),
                fdinfo: Vec::new(),
                fs: None,
            });
            continue;
        }
        for &tid in e.threads.iter().filter(|&&t| t != pid) {
            cores.push((tid as Pid, img.read_core(tid)?));
        }
        for (tid, c) in &cores {
            if c.thread_info.is_none() {
                return Err(invalid(dir, format!("core-{tid}.img has no x86-64 registers")));
            }
            if let Some(tc) = &c.thread_core {
                crate::kinds::seccomp::thread_chain(seccomp.as_ref(), *tid, tc).map_err(|what| invalid(dir, what))?;
            }
        }
        let mm = img.read_mm(pid)?;
        let pages = page_chain::resolve(&chain, pid)?;
        let ids = img.read_ids(pid)?;
        let fdinfo = img.read_fdinfo(ids.files_id)?;
        for f in &fdinfo {
            if !file_ids.contains(&f.id) {
                return Err(invalid(
                    dir,
                    format!("fd {} of process {pid} refers to file {}, missing from files.img", f.fd, f.id),
                ));
            }
        }
        for v in &mm.vmas {
            let file = v.status & (stasis_image::flags::vma::FILE_PRIVATE | stasis_image::flags::vma::FILE_SHARED) != 0;
            if file && !file_ids.contains(&(v.shmid as u32)) {
                return Err(invalid(
                    dir,
                    format!("a mapping of process {pid} refers to file {}, missing from files.img", v.shmid),
                ));
            }
        }
        let fs = Some(img.read_fs(pid)?);
        processes.push(ProcessImage { pstree: e, cores, mm: Some(mm), pages, fdinfo, fs });
    }
    let pipe_data = img.read_pipes_data()?.into_iter().map(|p| (p.entry.pipe_id, p.data)).collect();
    // Parents must come before children, and every parent must be in the tree.
    let mut seen = std::collections::HashSet::new();
    for (i, p) in processes.iter().enumerate() {
        if i > 0 && !seen.contains(&p.pstree.ppid) {
            return Err(invalid(dir, format!("process {} appears before its parent {}", p.pstree.pid, p.pstree.ppid)));
        }
        seen.insert(p.pstree.pid);
    }
    Ok(TreeImage { dir: dir.to_path_buf(), processes, files, pipe_data, seccomp })
}
