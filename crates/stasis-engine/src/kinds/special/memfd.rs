//! memfd: name, contents, seals; shared between fds and mappings.
//!
//! Dump: a memfd fd links to `/memfd:NAME (deleted)`; its inode (stat of
//! `/proc/PID/fd/N`, or of `/proc/PID/map_files/A-B` for a mapping) keys one
//! `memfd_inode_entry` in `memfd.img` (name, size, `F_GET_SEALS`), and the
//! bytes go to `memfd-ID.data` (a Stasis addition; CRIU stores shmem pages).
//! Every open file of it is a `memfd_file_entry` (flags, offset); a mapping
//! refers to one too (its `shmid` is that file id), so `crit` shows the VMA
//! as a file without a path.
//! Restore: [`prepare`] creates each memfd in the restorer
//! (`memfd_create(MFD_ALLOW_SEALING)`, contents, then seals) before any
//! memory is mapped; tasks map it through `/proc/<restorer>/fd/N`, which
//! reaches the same inode, and fds are reopened from it with their own flags
//! and offset. So a shared mapping and an fd see the same memory, as before.
//! Limits: hugetlb memfds are restored as ordinary ones; the memfd's link
//! name after restore is the same (`/memfd:NAME`).

use super::{fd_err, fown, open_local, read_optional, RestoreState};
use crate::error::{dump_io, DumpError, RestoreError};
use crate::kinds::fdkind::{FdDumpCtx, Install};
use crate::kinds::files::{FdSeen, FileTable};
use stasis_image::magic::file_name;
use stasis_image::{pb, ImageDirWriter, ImageKind};
use stasis_sys::{special as sys, Pid};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Memfds seen while dumping.
#[derive(Default)]
pub struct DumpMemfds {
    /// inode number -> (inode id, entry, contents).
    inodes: BTreeMap<u64, (u32, pb::MemfdInodeEntry, Vec<u8>)>,
    /// (inode id, open flags) -> file id, for mappings.
    mapped: HashMap<(u32, u32), u32>,
}

fn data_name(inode_id: u64) -> String {
    format!("memfd-{inode_id}.data")
}

/// Records the memfd behind `link` (an fd or map_files path) once.
fn inode(table: &mut FileTable, link: &str, name: &str) -> std::io::Result<u32> {
    let mut file = std::fs::File::open(link)?;
    let md = file.metadata()?;
    let memfds = &mut table.special.memfd;
    if let Some((id, _, _)) = memfds.inodes.get(&md.ino()) {
        return Ok(*id);
    }
    let seals = sys::get_seals(file.as_fd()).unwrap_or(0);
    let mut data = Vec::with_capacity(md.len() as usize);
    file.read_to_end(&mut data)?;
    let id = memfds.inodes.len() as u32 + 1;
    let entry = pb::MemfdInodeEntry {
        name: name.to_string(),
        uid: md.uid(),
        gid: md.gid(),
        size: md.len(),
        shmid: id,
        seals,
        inode_id: id as u64,
        hugetlb_flag: None,
    };
    memfds.inodes.insert(md.ino(), (id, entry, data));
    Ok(id)
}

fn push_file(table: &mut FileTable, inode_id: u32, flags: u32, pos: u64) -> u32 {
    let id = table.new_id();
    table.push(pb::FileEntry {
        r#type: pb::FdTypes::Memfd as i32,
        id,
        memfd: Some(pb::MemfdFileEntry { id, flags, pos, fown: fown(), inode_id }),
        ..Default::default()
    });
    id
}

pub fn dump_fd(ctx: &mut FdDumpCtx<'_>, f: &FdSeen, path: &str) -> Result<(pb::FdTypes, u32), DumpError> {
    let pid = ctx.pid;
    let name = path.strip_prefix("/memfd:").unwrap_or(path);
    let link = format!("/proc/{pid}/fd/{}", f.fd);
    let inode_id = inode(ctx.table, &link, name).map_err(dump_io(pid, format!("read memfd of fd {}", f.fd)))?;
    Ok((pb::FdTypes::Memfd, push_file(ctx.table, inode_id, f.flags, f.pos)))
}

/// The file id a mapping of the memfd `path` at `start-end` refers to.
pub fn mapped(table: &mut FileTable, pid: Pid, start: u64, end: u64, path: &str, flags: u32) -> std::io::Result<u32> {
    let name = path.strip_prefix("/memfd:").unwrap_or(path);
    let inode_id = inode(table, &format!("/proc/{pid}/map_files/{start:x}-{end:x}"), name)?;
    if let Some(&id) = table.special.memfd.mapped.get(&(inode_id, flags)) {
        return Ok(id);
    }
    let id = push_file(table, inode_id, flags, 0);
    table.special.memfd.mapped.insert((inode_id, flags), id);
    Ok(id)
}

pub fn write_images(m: &DumpMemfds, staging: &ImageDirWriter) -> Result<(), DumpError> {
    if m.inodes.is_empty() {
        return Ok(());
    }
    let entries: Vec<pb::MemfdInodeEntry> = m.inodes.values().map(|(_, e, _)| e.clone()).collect();
    staging.write_entries(file_name::MEMFD_INODE, ImageKind::MemfdInode, &entries)?;
    for (_, e, data) in m.inodes.values() {
        let path = staging.file(&data_name(e.inode_id));
        std::fs::write(&path, data).map_err(|source| DumpError::Write { path, source })?;
    }
    Ok(())
}

/// Creates every memfd and tells the mapping code where to open them.
pub fn prepare(
    st: &mut RestoreState,
    dir: &Path,
    files: &[pb::FileEntry],
    map_paths: &mut HashMap<u32, String>,
) -> Result<(), RestoreError> {
    let inodes: Vec<pb::MemfdInodeEntry> = read_optional!(dir, file_name::MEMFD_INODE, ImageKind::MemfdInode)?;
    for e in inodes {
        let what = |w: &str| format!("memfd {:?}: {w}", e.name);
        let err = |w: String| move |source| RestoreError::Task { pid: 0, what: w, source };
        let fd = sys::memfd_create(&e.name, libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
            .map_err(err(what("memfd_create")))?;
        let data_path = dir.join(data_name(e.inode_id));
        let data = std::fs::read(&data_path).map_err(|source| RestoreError::Read { path: data_path, source })?;
        let mut f = std::fs::File::from(fd.try_clone().map_err(err(what("dup")))?);
        f.write_all(&data).map_err(err(what("write contents")))?;
        f.set_len(e.size).map_err(err(what("set size")))?;
        if e.seals != 0 {
            sys::add_seals(fd.as_fd(), e.seals).map_err(err(what(&format!("add seals {:#x}", e.seals))))?;
        }
        st.memfds.insert(e.inode_id, fd);
    }
    for e in files {
        let Some(m) = &e.memfd else { continue };
        let fd = st.memfds.get(&(m.inode_id as u64)).ok_or_else(|| RestoreError::Invalid {
            dir: dir.to_path_buf(),
            what: format!("memfd file {} refers to memfd {}, which memfd.img lacks", e.id, m.inode_id),
        })?;
        map_paths.insert(e.id, crate::kinds::mm::local_fd_path(fd.as_raw_fd()));
    }
    Ok(())
}

/// A new open file of the memfd, with the dumped flags and offset.
pub fn open(st: &mut RestoreState, pid: Pid, fd: u32, e: &pb::MemfdFileEntry) -> Result<Install, RestoreError> {
    let mfd = st.memfds.get(&(e.inode_id as u64)).ok_or_else(|| RestoreError::Task {
        pid,
        what: format!("fd {fd}: memfd {} was not created", e.inode_id),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    let path = format!("/proc/self/fd/{}", mfd.as_raw_fd());
    let file = open_local(&path, e.flags).map_err(fd_err(pid, fd, "reopen memfd"))?;
    if e.pos != 0 {
        let mut f = std::fs::File::from(file);
        f.seek(std::io::SeekFrom::Start(e.pos)).map_err(fd_err(pid, fd, format!("seek memfd to {}", e.pos)))?;
        return Ok(Install::Local(f.into()));
    }
    Ok(Install::Local(file))
}
