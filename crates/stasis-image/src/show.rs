//! A readable summary of an image directory, for `stasis image show DIR`.
//!
//! One view of what `crit x DIR ps`, `mems` and `fds` show separately: the
//! process tree, then per process its memory areas with how many pages the
//! image holds for each, and its file descriptors. Reads only; any damaged
//! file makes the whole summary fail with that file's error.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::dir::ImageDir;
use crate::error::ImageError;
use crate::flags::{pe, vma};
use crate::pages::{PagesIndex, PAGE_SIZE};
use crate::pb::{FdTypes, FileEntry, PstreeEntry, VmaEntry};

/// Summarises the image set in `dir`.
pub fn show(dir: &Path) -> Result<String, ImageError> {
    let img = ImageDir::open(dir)?;
    let inv = img.read_inventory()?;
    let tree = img.read_pstree()?;
    let files: HashMap<u32, FileEntry> = match img.read_files() {
        Ok(f) => f.into_iter().map(|f| (f.id, f)).collect(),
        Err(ImageError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
        Err(e) => return Err(e),
    };

    let mut out = String::new();
    let fmt = match inv.stasis_format {
        Some(v) => format!("stasis format {v}"),
        None => "written by CRIU".to_owned(),
    };
    // Writing to a String cannot fail; the results are ignored below.
    let _ = writeln!(out, "Image {} (image version {}, {fmt})", dir.display(), inv.img_version);
    let _ = writeln!(out, "\nProcesses:");
    let _ = writeln!(out, "{:>8} {:>8} {:>8} {:>8}  {:<8} COMM", "PID", "PPID", "PGID", "SID", "THREADS");
    let (mut comms, mut zombies) = (HashMap::new(), std::collections::HashSet::new());
    // A pre-dump holds memory only: no cores, no mm, no fds.
    let pre_dump = tree.iter().all(|p| !img.exists(&crate::magic::file_name::core(p.pid)));
    for p in tree.iter().filter(|_| !pre_dump) {
        let core = img.read_core(p.pid)?;
        if core.tc.as_ref().is_some_and(|tc| tc.task_state == crate::flags::task_state::ZOMBIE) {
            zombies.insert(p.pid);
        }
        let comm = core.tc.map(|tc| tc.comm).unwrap_or_default();
        comms.insert(p.pid, comm);
    }
    for (p, depth) in tree_order(&tree) {
        let _ = writeln!(
            out,
            "{:>8} {:>8} {:>8} {:>8}  {:<8} {}{}",
            p.pid,
            p.ppid,
            p.pgid,
            p.sid,
            p.threads.len().max(1),
            "  ".repeat(depth),
            comms.get(&p.pid).map_or("?", String::as_str)
        );
    }

    let (mut all_pages, mut seen_mm) = (0u64, std::collections::HashSet::new());
    if pre_dump {
        let _ = writeln!(out, "\nPre-dump (memory only):");
        for p in tree.iter().filter(|p| img.exists(&crate::magic::file_name::pagemap(p.pid))) {
            let (present, parent, _) = count_pages(&img.read_pages_index(p.pid)?);
            let _ = writeln!(out, "  process {}: {present} pages in image, {parent} in parent", p.pid);
            all_pages += present;
        }
        let _ = writeln!(out, "\nTotal: {all_pages} pages ({} KiB)", all_pages * PAGE_SIZE / 1024);
        return Ok(out);
    }
    for p in &tree {
        if zombies.contains(&p.pid) {
            // A zombie has a core only: no memory, no fds.
            let _ = writeln!(out, "\nProcess {} ({}): zombie", p.pid, comms.get(&p.pid).map_or("?", String::as_str));
            continue;
        }
        let ids = img.read_ids(p.pid)?;
        let _ = writeln!(out, "\nProcess {} ({}):", p.pid, comms.get(&p.pid).map_or("?", String::as_str));
        let mm = img.read_mm(p.pid)?;
        let index = img.read_pages_index(p.pid)?;
        let _ = writeln!(out, "  exe: {}", file_desc(&files, FdTypes::Reg as i32, mm.exe_file_id));
        let _ = writeln!(out, "  memory ({} areas, pages-{}.img):", mm.vmas.len(), index.pages_id());
        for v in &mm.vmas {
            let pages = index.pages_in(v.start, v.end);
            let _ = writeln!(
                out,
                "    {:012x}-{:012x} {} {:<7} {:>8} pages  {}",
                v.start,
                v.end,
                prot_str(v.prot),
                if v.flags & 0x01 != 0 { "shared" } else { "private" },
                pages,
                vma_kind(v, &files)
            );
        }
        let (present, parent, lazy) = count_pages(&index);
        let _ = writeln!(
            out,
            "  pages: {present} in image ({} KiB), {parent} in parent, {lazy} lazy",
            present * PAGE_SIZE / 1024
        );
        if seen_mm.insert(ids.vm_id) {
            all_pages += present;
        }

        let fds = img.read_fdinfo(ids.files_id)?;
        let _ = writeln!(out, "  fds (table {}):", ids.files_id);
        for fd in &fds {
            let cloexec = if fd.flags & 1 != 0 { " (cloexec)" } else { "" };
            let _ = writeln!(out, "    {:>5}: {}{cloexec}", fd.fd, file_desc(&files, fd.r#type, fd.id));
        }
        if let Ok(fs) = img.read_fs(p.pid) {
            let _ = writeln!(out, "    {:>5}: {}", "cwd", file_desc(&files, FdTypes::Reg as i32, fs.cwd_id));
            let _ = writeln!(out, "    {:>5}: {}", "root", file_desc(&files, FdTypes::Reg as i32, fs.root_id));
        }
    }
    let _ = writeln!(
        out,
        "\nTotal: {} processes, {all_pages} pages in image ({} bytes)",
        tree.len(),
        all_pages * PAGE_SIZE
    );
    Ok(out)
}

/// Processes in depth-first order with their depth; orphans (parent not in
/// the image) are shown as roots.
fn tree_order(tree: &[PstreeEntry]) -> Vec<(&PstreeEntry, usize)> {
    let pids: std::collections::HashSet<u32> = tree.iter().map(|p| p.pid).collect();
    let mut out = Vec::with_capacity(tree.len());
    let mut stack: Vec<(&PstreeEntry, usize)> =
        tree.iter().filter(|p| !pids.contains(&p.ppid)).rev().map(|p| (p, 0)).collect();
    while let Some((p, depth)) = stack.pop() {
        out.push((p, depth));
        if out.len() > tree.len() {
            break; // a cycle; the tree is damaged, show what we have
        }
        stack.extend(tree.iter().filter(|c| c.ppid == p.pid && c.pid != p.pid).rev().map(|c| (c, depth + 1)));
    }
    out
}

fn count_pages(index: &PagesIndex) -> (u64, u64, u64) {
    let mut counts = (0, 0, 0);
    for r in index.runs() {
        if r.flags & pe::PRESENT != 0 {
            counts.0 += r.nr_pages;
        }
        if r.flags & pe::PARENT != 0 {
            counts.1 += r.nr_pages;
        }
        if r.flags & pe::LAZY != 0 {
            counts.2 += r.nr_pages;
        }
    }
    counts
}

fn prot_str(prot: u32) -> String {
    [(1, 'r'), (2, 'w'), (4, 'x')].iter().map(|&(bit, c)| if prot & bit != 0 { c } else { '-' }).collect()
}

fn vma_kind(v: &VmaEntry, files: &HashMap<u32, FileEntry>) -> String {
    let s = v.status;
    let mut kind = if s & (vma::FILE_PRIVATE | vma::FILE_SHARED) != 0 {
        let id = u32::try_from(v.shmid).unwrap_or(u32::MAX);
        let mut k = file_desc(files, FdTypes::Reg as i32, id);
        if v.pgoff != 0 {
            let _ = write!(k, " + {:#x}", v.pgoff);
        }
        k
    } else if s & vma::AREA_SYSVIPC != 0 {
        format!("sysv-shm[{}]", v.shmid)
    } else if s & vma::ANON_SHARED != 0 {
        format!("shmem[{}]", v.shmid)
    } else if s & vma::AREA_STACK != 0 {
        "[stack]".to_owned()
    } else if s & vma::AREA_HEAP != 0 {
        "[heap]".to_owned()
    } else if s & vma::AREA_VDSO != 0 {
        "[vdso]".to_owned()
    } else if s & vma::AREA_VVAR != 0 {
        "[vvar]".to_owned()
    } else if s & vma::AREA_VSYSCALL != 0 {
        "[vsyscall]".to_owned()
    } else {
        "anon".to_owned()
    };
    if s & vma::AREA_REGULAR == 0 {
        kind.push_str(" (not restored)");
    }
    kind
}

fn file_desc(files: &HashMap<u32, FileEntry>, fd_type: i32, id: u32) -> String {
    let ty = FdTypes::try_from(fd_type).map_or_else(|_| format!("type {fd_type}"), |t| t.as_str_name().to_owned());
    let Some(f) = files.get(&id) else {
        return format!("{ty} id {id} (not in files.img)");
    };
    if let Some(r) = &f.reg {
        return r.name.clone();
    }
    if let Some(p) = &f.pipe {
        return format!("pipe:[{}]", p.pipe_id);
    }
    if f.efd.is_some() {
        return "anon_inode:[eventfd]".to_owned();
    }
    format!("{ty} id {id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, ppid: u32) -> PstreeEntry {
        PstreeEntry { pid, ppid, pgid: pid, sid: pid, threads: vec![pid] }
    }

    #[test]
    fn tree_order_is_depth_first() {
        let tree = [p(1, 0), p(5, 1), p(2, 1), p(6, 5), p(9, 77)];
        let got: Vec<_> = tree_order(&tree).into_iter().map(|(p, d)| (p.pid, d)).collect();
        assert_eq!(got, [(1, 0), (5, 1), (6, 2), (2, 1), (9, 0)]);
    }

    #[test]
    fn prot() {
        assert_eq!(prot_str(5), "r-x");
        assert_eq!(prot_str(0), "---");
    }
}
