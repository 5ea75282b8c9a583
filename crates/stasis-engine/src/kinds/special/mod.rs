//! Special files: eventfd, epoll, timerfd, signalfd, inotify, memfd,
//! deleted-but-open files (ghosts), named FIFOs, pty pairs, and the flock /
//! POSIX locks held on files. /dev/zero, /dev/urandom and other devices are
//! plain paths, handled as regular files by `files.rs`.
//!
//! Dump: the dispatcher (`files.rs`) offers every fd that is not a socket;
//! each kind reads `/proc/PID/fdinfo/N` (its `extra` lines), and where the
//! kernel shows nothing there (memfd and ghost contents, FIFO data, terminal
//! settings) a copy of the fd (`pidfd_getfd` or a reopen through
//! `/proc/PID/fd/N`). Kinds nobody claims (io_uring, perf events, bpf,
//! fanotify, pidfd, unknown anon inodes) are refused by the dispatcher with
//! the pid, fd and kind named, before anything is written, so the tree runs
//! on untouched.
//! Restore: files that can be created fully set up are created here, in the
//! restorer, and handed to the task ([`Install::Local`]); epoll
//! registrations and locks need the task's own fd table and are injected in
//! [`after_fds`]. Memfds are created before any memory is mapped
//! ([`prepare`]) so that shared mappings and fds reach the same memfd.

mod epoll;
mod eventfd;
mod fifo;
mod ghost;
mod inotify;
mod locks;
pub mod memfd;
mod signalfd;
mod timerfd;
mod tty;

use crate::error::{dump_io, DumpError, RestoreError};
use crate::kinds::fdkind::{FdDumpCtx, FdRestoreCtx, Install};
use crate::kinds::files::{FdSeen, FileTable};
use crate::proc::fdinfo::FdTarget;
use crate::restore::stub::Task;
use stasis_image::{pb, ImageDirWriter};
use stasis_sys::Pid;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

/// What the special kinds collect while dumping, written by [`write_images`].
#[derive(Default)]
pub struct DumpState {
    memfd: memfd::DumpMemfds,
    fifo_data: std::collections::BTreeMap<u32, Vec<u8>>,
    locks: locks::DumpLocks,
    ttys: tty::DumpTtys,
}

/// Restorer-side files the special kinds hand out, kept until every task
/// has taken its fds.
#[derive(Default)]
pub struct RestoreState {
    memfds: HashMap<u64, OwnedFd>,
    fifos: HashMap<u32, OwnedFd>,
    /// Regular-file entries by id (paths of FIFOs and terminals).
    regs: HashMap<u32, pb::RegFileEntry>,
    epolls: Vec<(Pid, u32, Vec<pb::EventpollTfdEntry>)>,
    locks: Vec<pb::FileLockEntry>,
    ttys: tty::RestoreTtys,
    /// Where the restorer reaches the tree's `/` (`/proc/ROOT/root`): paths
    /// it opens for the tree (FIFOs, inotify watches) are the tree's, which
    /// for a container are not ours.
    fs_root: String,
}

impl RestoreState {
    /// The tree's path `path` as the restorer reaches it.
    fn seen(&self, path: &str) -> String {
        format!("{}{path}", self.fs_root)
    }
}

pub(crate) use crate::kinds::files::fown;

/// Opens `path` in the restorer with open flags `flags` (no create/trunc).
pub(crate) fn open_local(path: &str, flags: u32) -> std::io::Result<OwnedFd> {
    let acc = flags & libc::O_ACCMODE as u32;
    let rest = flags & !((libc::O_ACCMODE | libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC) as u32);
    let f = std::fs::OpenOptions::new()
        .read(acc != libc::O_WRONLY as u32)
        .write(acc != libc::O_RDONLY as u32)
        .custom_flags((rest | libc::O_CLOEXEC as u32 | libc::O_NOCTTY as u32) as i32)
        .open(path)?;
    Ok(f.into())
}

/// Parses `key:value` tokens of an fdinfo line (`tfd:`, `inotify wd:`),
/// where the kernel may pad after the colon: `events:       19`.
pub(crate) fn fields(line: &str) -> (Option<&str>, HashMap<&str, &str>) {
    let mut toks = line.split_whitespace().peekable();
    let first = toks.next_if(|t| !t.contains(':'));
    let mut m = HashMap::new();
    while let Some(t) = toks.next() {
        if let Some(k) = t.strip_suffix(':') {
            if let Some(v) = toks.next() {
                m.insert(k, v);
            }
        } else if let Some((k, v)) = t.split_once(':') {
            m.insert(k, v);
        }
    }
    (first, m)
}

pub(crate) fn bad_fdinfo(pid: Pid, f: &FdSeen, what: &str) -> DumpError {
    DumpError::UnsupportedFd { pid, fd: f.fd, kind: format!("{} with unreadable fdinfo ({what})", f.link) }
}

/// Dumps an fd of a special kind; `None` when it is not one of ours (a
/// regular file or pipe, which the dispatcher handles, or an unsupported
/// kind, which it refuses).
pub fn dump_fd(ctx: &mut FdDumpCtx<'_>, f: &FdSeen) -> Result<Option<(pb::FdTypes, u32)>, DumpError> {
    match &f.target {
        FdTarget::AnonInode(name) => match name.as_str() {
            "eventfd" => eventfd::dump(ctx, f).map(Some),
            "eventpoll" => epoll::dump(ctx, f).map(Some),
            "timerfd" => timerfd::dump(ctx, f).map(Some),
            "signalfd" => signalfd::dump(ctx, f).map(Some),
            "inotify" => inotify::dump(ctx, f).map(Some),
            _ => Ok(None),
        },
        FdTarget::Path { path, deleted: true } if f.target.memfd_name().is_some() => {
            memfd::dump_fd(ctx, f, path).map(Some)
        }
        FdTarget::Path { path, deleted: true } => ghost::dump(ctx, f, path),
        FdTarget::Path { path, deleted: false } => {
            if path == "/dev/ptmx" || path.starts_with("/dev/pts/") {
                // fds 0-2 on a terminal are the caller's (EXT, inherited).
                return if f.fd <= 2 { Ok(None) } else { tty::dump(ctx, f, path).map(Some) };
            }
            let pid = ctx.pid;
            let md = std::fs::metadata(crate::proc::fdinfo::fd_link_path(pid, f.fd))
                .map_err(dump_io(pid, format!("stat fd {}", f.fd)))?;
            if md.file_type().is_fifo() {
                return fifo::dump(ctx, f, path, &md).map(Some);
            }
            if md.is_file() {
                locks::note(ctx, f, &md)?;
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// Writes the image files of the special kinds (after `files.img`).
pub fn write_images(table: &FileTable, staging: &ImageDirWriter) -> Result<(), DumpError> {
    let st = &table.special;
    memfd::write_images(&st.memfd, staging)?;
    fifo::write_data(&st.fifo_data, staging)?;
    locks::write_image(&st.locks, staging)?;
    tty::write_image(&st.ttys, staging)?;
    Ok(())
}

/// Before any process is restored: creates memfds (and records where tasks
/// map them from: `map_paths`), FIFOs with their data, pty pairs, and reads
/// the locks to take.
pub fn prepare(
    ctx: &mut FdRestoreCtx<'_>,
    files: &[pb::FileEntry],
    map_paths: &mut HashMap<u32, String>,
) -> Result<(), RestoreError> {
    let dir = ctx.dir.to_path_buf();
    let st = &mut ctx.special;
    st.fs_root = format!("/proc/{}/root", ctx.root);
    st.regs = files.iter().filter_map(|e| e.reg.clone().map(|r| (e.id, r))).collect();
    memfd::prepare(st, &dir, files, map_paths)?;
    fifo::prepare(st, &dir, files)?;
    tty::prepare(st, &dir, files)?;
    st.locks = locks::load(&dir)?;
    Ok(())
}

/// Re-creates a special file entry; `None` when the entry is not ours.
pub fn open_fd(
    ctx: &mut FdRestoreCtx<'_>,
    task: &mut Task,
    e: &pb::FileEntry,
    fi: &pb::FdinfoEntry,
) -> Result<Option<Install>, RestoreError> {
    use pb::FdTypes as T;
    let pid = task.pid;
    let st = &mut ctx.special;
    let how = match T::try_from(e.r#type) {
        Ok(T::Eventfd) => e.efd.as_ref().map(|x| eventfd::open(pid, fi.fd, x)),
        Ok(T::Eventpoll) => e.epfd.as_ref().map(|x| epoll::open(st, pid, fi.fd, x)),
        Ok(T::Timerfd) => e.tfd.as_ref().map(|x| timerfd::open(pid, fi.fd, x)),
        Ok(T::Signalfd) => e.sgfd.as_ref().map(|x| signalfd::open(pid, fi.fd, x)),
        Ok(T::Inotify) => e.ify.as_ref().map(|x| inotify::open(st, pid, fi.fd, x)),
        Ok(T::Memfd) => e.memfd.as_ref().map(|x| memfd::open(st, pid, fi.fd, x)),
        Ok(T::Fifo) => e.fifo.as_ref().map(|x| fifo::open(st, pid, fi.fd, x)),
        Ok(T::Tty) => e.tty.as_ref().map(|x| tty::open(st, pid, fi.fd, x)),
        _ => None,
    };
    how.transpose()
}

/// Runs once a process has all its fds: epoll registrations, then locks.
pub fn after_fds(ctx: &mut FdRestoreCtx<'_>, task: &mut Task, _fdinfo: &[pb::FdinfoEntry]) -> Result<(), RestoreError> {
    epoll::register(&mut ctx.special, task)?;
    locks::take(&ctx.special, task)?;
    Ok(())
}

/// `restore_io`-like error for restorer-side work on one fd.
pub(crate) fn fd_err(pid: Pid, fd: u32, what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> RestoreError {
    let what = format!("fd {fd}: {what}");
    move |source| RestoreError::Task { pid, what, source }
}

/// Reads an optional image file of entries (absent: none), as
/// `Result<Vec<M>, RestoreError>`.
macro_rules! read_optional {
    ($dir:expr, $name:expr, $kind:expr) => {{
        let dir: &std::path::Path = $dir;
        if dir.join($name).exists() {
            stasis_image::ImageDir::open(dir)
                .and_then(|d| d.read_entries($name, $kind))
                .map_err(crate::error::RestoreError::from)
        } else {
            Ok(Vec::new())
        }
    }};
}
pub(crate) use read_optional;

#[cfg(test)]
mod tests {
    use super::fields;

    #[test]
    fn fdinfo_fields() {
        let (first, m) = fields("8 events:       19 data:                8  pos:0 ino:227e sdev:f");
        assert_eq!(first, Some("8"));
        assert_eq!((m["events"], m["data"], m["ino"], m["sdev"]), ("19", "8", "227e", "f"));
        let (first, m) = fields(
            "1 ino:3c4a7 sdev:fe00000 mask:100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a7c4030000000000",
        );
        assert_eq!(first, Some("1"));
        assert_eq!((m["mask"], m["fhandle-type"], m["f_handle"]), ("100", "1", "a7c4030000000000"));
    }
}
