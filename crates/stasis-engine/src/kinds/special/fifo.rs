//! Named FIFOs and the bytes buffered in them.
//!
//! Dump: an fd whose file is a FIFO becomes a `fifo_entry` (its inode as
//! `pipe_id`) plus a regular-file entry with its path and flags
//! (`regf_id`); the buffered bytes are read once per FIFO without consuming
//! them (a fresh read end through `/proc/PID/fd/N`, `tee` into a pipe of
//! ours) and go to `fifo-data.img` (CRIU's layout: `pipe_data_entry` + bytes).
//! Restore: [`prepare`] opens each FIFO `O_RDWR` in the restorer (which
//! never blocks and keeps a reader and a writer alive), and refills it; each
//! fd is then opened by path in the restorer with its own flags (not
//! blocking, since the restorer holds both ends) and handed to the task.
//! Limits: the FIFO must still exist at its path on restore.

use super::{fd_err, open_local, RestoreState};
use crate::error::{dump_io, DumpError, RestoreError};
use crate::kinds::fdkind::{FdDumpCtx, Install};
use crate::kinds::files::FdSeen;
use stasis_image::magic::file_name;
use stasis_image::{pb, ImageDirWriter, ImageKind, PipeData};
use stasis_sys::{fd as sysfd, Pid};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

fn peek(pid: Pid, fd: i32) -> std::io::Result<Vec<u8>> {
    let theirs: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/{pid}/fd/{fd}"))?
        .into();
    let queued = sysfd::bytes_readable(theirs.as_fd())?;
    if queued == 0 {
        return Ok(Vec::new());
    }
    let (r, w) = sysfd::pipe(libc::O_CLOEXEC | libc::O_NONBLOCK)?;
    let _ = sysfd::set_pipe_size(w.as_fd(), queued);
    let n = sysfd::tee(theirs.as_fd(), w.as_fd(), queued, true)?;
    drop(w);
    let mut buf = Vec::with_capacity(n);
    std::fs::File::from(r).read_to_end(&mut buf)?;
    Ok(buf)
}

pub fn dump(
    ctx: &mut FdDumpCtx<'_>,
    f: &FdSeen,
    path: &str,
    md: &std::fs::Metadata,
) -> Result<(pb::FdTypes, u32), DumpError> {
    let pid = ctx.pid;
    let pipe_id = md.ino() as u32;
    if let std::collections::btree_map::Entry::Vacant(slot) = ctx.table.special.fifo_data.entry(pipe_id) {
        slot.insert(peek(pid, f.fd).map_err(dump_io(pid, format!("read FIFO {path} of fd {}", f.fd)))?);
    }
    let regf_id = ctx.table.push_reg(path, f.flags, 0, None);
    let id = ctx.table.new_id();
    ctx.table.push(pb::FileEntry {
        r#type: pb::FdTypes::Fifo as i32,
        id,
        fifo: Some(pb::FifoEntry { id, pipe_id, regf_id: Some(regf_id) }),
        ..Default::default()
    });
    Ok((pb::FdTypes::Fifo, id))
}

pub fn write_data(data: &BTreeMap<u32, Vec<u8>>, staging: &ImageDirWriter) -> Result<(), DumpError> {
    if data.values().all(|d| d.is_empty()) {
        return Ok(());
    }
    let mut w = staging.writer(file_name::FIFO_DATA, ImageKind::FifoData)?;
    for (&pipe_id, d) in data.iter().filter(|(_, d)| !d.is_empty()) {
        w.write(&pb::PipeDataEntry { pipe_id, bytes: d.len() as u32, size: None })?;
        w.write_payload(d)?;
    }
    w.finish()?;
    Ok(())
}

fn read_data(dir: &Path) -> Result<BTreeMap<u32, Vec<u8>>, RestoreError> {
    let mut out = BTreeMap::new();
    if !dir.join(file_name::FIFO_DATA).exists() {
        return Ok(out);
    }
    let img = stasis_image::ImageDir::open(dir)?;
    let mut r = img.reader(file_name::FIFO_DATA, ImageKind::FifoData)?;
    while let Some(entry) = r.next_entry::<pb::PipeDataEntry>()? {
        let data = r.read_payload(u64::from(entry.bytes))?;
        let p = PipeData { entry, data };
        out.insert(p.entry.pipe_id, p.data);
    }
    Ok(out)
}

fn path_of<'a>(st: &'a RestoreState, e: &pb::FifoEntry) -> Option<&'a pb::RegFileEntry> {
    st.regs.get(&e.regf_id?)
}

/// Opens every FIFO read-write in the restorer and refills it.
pub fn prepare(st: &mut RestoreState, dir: &Path, files: &[pb::FileEntry]) -> Result<(), RestoreError> {
    let mut data = None;
    for e in files {
        let Some(fe) = &e.fifo else { continue };
        if st.fifos.contains_key(&fe.pipe_id) {
            continue;
        }
        let data = match &mut data {
            Some(d) => d,
            None => data.insert(read_data(dir)?),
        };
        let path = path_of(st, fe).map(|r| r.name.clone()).ok_or_else(|| RestoreError::Invalid {
            dir: dir.to_path_buf(),
            what: format!("FIFO file {} has no path entry", e.id),
        })?;
        let err = |w: &str| {
            let what = format!("FIFO {path}: {w}");
            move |source| RestoreError::Task { pid: 0, what, source }
        };
        let holder = open_local(&st.seen(&path), (libc::O_RDWR | libc::O_NONBLOCK) as u32).map_err(err("open"))?;
        if let Some(bytes) = data.get(&fe.pipe_id).filter(|b| !b.is_empty()) {
            if bytes.len() > 65536 {
                sysfd::set_pipe_size(holder.as_fd(), bytes.len()).map_err(err("grow the buffer"))?;
            }
            let mut f = std::fs::File::from(holder.try_clone().map_err(err("dup"))?);
            f.write_all(bytes).map_err(err("refill"))?;
        }
        st.fifos.insert(fe.pipe_id, holder);
    }
    Ok(())
}

pub fn open(st: &mut RestoreState, pid: Pid, fd: u32, e: &pb::FifoEntry) -> Result<Install, RestoreError> {
    let r = path_of(st, e).ok_or_else(|| RestoreError::Task {
        pid,
        what: format!("fd {fd}: FIFO without a path"),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    // Never blocks: the restorer holds the FIFO open for both directions.
    let file = open_local(&st.seen(&r.name), r.flags | libc::O_NONBLOCK as u32).map_err(fd_err(
        pid,
        fd,
        format!("open FIFO {}", r.name),
    ))?;
    if r.flags & libc::O_NONBLOCK as u32 == 0 {
        let fl = sysfd::status_flags(file.as_fd()).map_err(fd_err(pid, fd, "F_GETFL"))?;
        sysfd::set_status_flags(file.as_fd(), fl & !libc::O_NONBLOCK).map_err(fd_err(pid, fd, "F_SETFL"))?;
    }
    Ok(Install::Local(file))
}
