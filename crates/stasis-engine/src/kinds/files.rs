//! Open files: regular files and devices by path (offset, flags), pipes
//! inside the tree (with their buffered bytes), and fds 0-2 that lead
//! outside the tree (a terminal, or a pipe to the shell that started the
//! program), which are handed the restorer's own fds 0-2 on restore — as
//! CRIU does for a "shell job".
//!
//! Dump: `/proc/PID/fd` + `/proc/PID/fdinfo` say what each fd is; a pipe's
//! buffered bytes are read without consuming them by copying the fd into the
//! dumper (`pidfd_getfd`) and `tee`ing it into a pipe of ours.
//! Restore: files are opened inside the task by injected `openat` and moved
//! to their number with `dup3`; pipes are created by the restorer, filled,
//! and opened by each task through `/proc/<restorer>/fd/N`, which yields the
//! same pipe (a pipe behaves like a FIFO when opened by path).
//!
//! Files of mapped-but-deleted files are kept as "ghosts": their bytes go to
//! `ghost-ID.data` in the image dir (a Stasis addition; CRIU keeps them in
//! `ghost-file-ID.img`), and restore re-creates a temporary file, opens it
//! wherever needed, then unlinks it.

use crate::error::{dump_io, restore_io, DumpError, RestoreError};
use crate::kinds::fdkind::{FdDumpCtx, FdRestoreCtx, Install};
use crate::kinds::share::{install_shared, Opened, Sharing};
use crate::proc::{self, fdinfo::FdTarget};
use crate::restore::stub::Task;
use stasis_image::pb;
use stasis_sys::{fd as sysfd, Pid};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// fd_types values (CRIU's enum) we write.
pub use pb::FdTypes;

/// Collects `files.img` entries while dumping.
#[derive(Default)]
pub struct FileTable {
    next_id: u32,
    pub entries: Vec<pb::FileEntry>,
    by_path: HashMap<(String, u32), u32>,
    /// Ghost contents to write: file id -> bytes.
    pub ghosts: BTreeMap<u32, Vec<u8>>,
    /// Pipe inode -> buffered bytes (dumped once per pipe).
    pub pipe_data: BTreeMap<u64, Vec<u8>>,
    /// (pid, fd) -> the entry it was given, for fds sharing it.
    by_fd: HashMap<(Pid, i32), (FdTypes, u32)>,
    /// What the special kinds collect (memfds, FIFO data, locks, ttys).
    pub special: crate::kinds::special::DumpState,
}

/// The owner record of a file we do not set an owner for (F_SETOWN).
pub(crate) fn fown() -> pb::FownEntry {
    pb::FownEntry { uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 }
}

impl FileTable {
    /// A fresh file id, for kinds that build their own `FileEntry`.
    pub fn new_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    /// Adds an entry built by a kind module (its `id` from [`Self::new_id`]).
    pub fn push(&mut self, entry: pb::FileEntry) -> u32 {
        let id = entry.id;
        self.entries.push(entry);
        id
    }

    /// Adds a regular-file entry (path, flags, offset; size for ghosts).
    pub fn push_reg(&mut self, name: &str, flags: u32, pos: u64, size: Option<u64>) -> u32 {
        self.push_reg_mode(name, flags, pos, size, None)
    }

    /// A deleted file: a regular-file entry with its old name and size, its
    /// bytes kept for `ghost-ID.data` (restore re-creates it from them).
    pub fn push_ghost(&mut self, name: &str, flags: u32, pos: u64, bytes: Vec<u8>, mode: Option<u32>) -> u32 {
        let id = self.push_reg_mode(name, flags, pos, Some(bytes.len() as u64), mode);
        self.ghosts.insert(id, bytes);
        id
    }

    fn push_reg_mode(&mut self, name: &str, flags: u32, pos: u64, size: Option<u64>, mode: Option<u32>) -> u32 {
        let id = self.new_id();
        self.entries.push(pb::FileEntry {
            r#type: FdTypes::Reg as i32,
            id,
            reg: Some(pb::RegFileEntry {
                id,
                flags,
                pos,
                fown: fown(),
                name: name.to_string(),
                mnt_id: None,
                size,
                ext: None,
                mode,
                build_id: Vec::new(),
                checksum: None,
                checksum_config: None,
                checksum_parameter: None,
            }),
            ..Default::default()
        });
        id
    }

    /// A path used by reference (cwd, root, exe, a mapping): one entry per
    /// distinct path and flags.
    pub fn path_ref(&mut self, path: &str, flags: u32) -> u32 {
        if let Some(&id) = self.by_path.get(&(path.to_string(), flags)) {
            return id;
        }
        let id = self.push_reg(path, flags, 0, None);
        self.by_path.insert((path.to_string(), flags), id);
        id
    }

    /// The file behind a mapping; a deleted file's bytes are kept as a ghost
    /// (read through `/proc/PID/map_files`, which still reaches it).
    pub fn mapped_file(
        &mut self,
        pid: Pid,
        start: u64,
        end: u64,
        path: &str,
        deleted: bool,
        flags: u32,
    ) -> std::io::Result<u32> {
        if !deleted {
            return Ok(self.path_ref(path, flags));
        }
        if path.starts_with("/memfd:") {
            return crate::kinds::special::memfd::mapped(self, pid, start, end, path, flags);
        }
        let key = (format!("{path} (deleted)"), flags);
        if let Some(&id) = self.by_path.get(&key) {
            return Ok(id);
        }
        let mut bytes = Vec::new();
        std::fs::File::open(format!("/proc/{pid}/map_files/{start:x}-{end:x}"))?.read_to_end(&mut bytes)?;
        let id = self.push_ghost(path, flags, 0, bytes, None);
        self.by_path.insert(key, id);
        Ok(id)
    }

    /// Paths of every regular-file entry, by id (restore side).
    pub fn paths(entries: &[pb::FileEntry]) -> HashMap<u32, String> {
        entries.iter().filter_map(|e| e.reg.as_ref().map(|r| (e.id, r.name.clone()))).collect()
    }
}

/// One fd of a process as seen at dump time, before pipe ends are matched.
#[derive(Clone)]
pub struct FdSeen {
    pub fd: i32,
    /// Inode number from fdinfo (groups candidates for sharing).
    pub ino: Option<u64>,
    pub cloexec: bool,
    pub flags: u32,
    pub pos: u64,
    pub target: FdTarget,
    /// The `/proc/PID/fd/N` link text, for messages.
    pub link: String,
    /// Everything fdinfo said (kind-specific lines in `extra`).
    pub info: proc::fdinfo::FdInfo,
}

fn is_tty(path: &str) -> bool {
    path.starts_with("/dev/pts/") || path.starts_with("/dev/tty") || path == "/dev/console" || path == "/dev/ptmx"
}

/// Lists the fds of `pid` with their fdinfo. Kinds we cannot restore are
/// refused later, by [`dump_fds`], with the fd named.
pub fn scan_fds(pid: Pid) -> Result<Vec<FdSeen>, DumpError> {
    let fds = proc::fdinfo::list_fds(pid).map_err(|source| DumpError::Proc { pid, source })?;
    let mut out = Vec::with_capacity(fds.len());
    for f in fds {
        let info = proc::fdinfo::read_fdinfo(pid, f.fd).map_err(|source| DumpError::Proc { pid, source })?;
        out.push(FdSeen {
            fd: f.fd,
            ino: info.ino,
            cloexec: info.cloexec(),
            flags: info.file_flags(),
            pos: info.pos,
            target: f.target,
            link: f.link,
            info,
        });
    }
    Ok(out)
}

/// Which pipes have both ends inside the tree (the rest, on fds 0-2, are the
/// caller's and get inherited on restore).
pub fn internal_pipes(all: &[(Pid, Vec<FdSeen>)]) -> std::collections::HashSet<u64> {
    let mut ends: HashMap<u64, (bool, bool)> = HashMap::new();
    for (_, fds) in all {
        for f in fds {
            if let FdTarget::Pipe(ino) = f.target {
                let e = ends.entry(ino).or_default();
                if f.flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32 {
                    e.1 = true;
                } else {
                    e.0 = true;
                }
            }
        }
    }
    ends.into_iter().filter(|(_, (r, w))| *r && *w).map(|(ino, _)| ino).collect()
}

/// Reads a pipe's buffered bytes without consuming them.
fn peek_pipe(pid: Pid, fd: i32) -> Result<Vec<u8>, DumpError> {
    // A fresh read end of the same pipe (opening a pipe through /proc acts
    // like opening a FIFO): the task may hold only the write end.
    let theirs: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/{pid}/fd/{fd}"))
        .map_err(dump_io(pid, format!("open pipe of fd {fd}")))?
        .into();
    let queued = sysfd::bytes_readable(theirs.as_fd()).map_err(dump_io(pid, format!("FIONREAD on fd {fd}")))?;
    if queued == 0 {
        return Ok(Vec::new());
    }
    let (r, w) = sysfd::pipe(libc::O_CLOEXEC | libc::O_NONBLOCK).map_err(dump_io(pid, "pipe"))?;
    let cap = sysfd::pipe_size(theirs.as_fd()).unwrap_or(queued);
    let _ = sysfd::set_pipe_size(w.as_fd(), cap.max(queued));
    let n = sysfd::tee(theirs.as_fd(), w.as_fd(), queued, true).map_err(dump_io(pid, format!("tee fd {fd}")))?;
    drop(w);
    let mut buf = Vec::with_capacity(n);
    std::fs::File::from(r).read_to_end(&mut buf).map_err(dump_io(pid, "read pipe copy"))?;
    Ok(buf)
}

/// Turns one process's fds into `fdinfo` entries, adding files to the
/// table. Sockets go to [`crate::kinds::sockets`], anonymous-inode and
/// other special files to [`crate::kinds::special`]; what nobody claims is
/// refused with the pid, fd and kind named.
pub fn dump_fds(
    ctx: &mut FdDumpCtx<'_>,
    fds: &[FdSeen],
    internal: &std::collections::HashSet<u64>,
    sharing: &Sharing,
) -> Result<Vec<pb::FdinfoEntry>, DumpError> {
    let pid = ctx.pid;
    let mut out = Vec::with_capacity(fds.len());
    for f in fds {
        let shared = sharing.shared_with(pid, f.fd).and_then(|rep| ctx.table.by_fd.get(&rep).copied());
        let claimed = match (&f.target, shared) {
            (_, Some(s)) => Some(s),
            (FdTarget::Socket(_), None) => crate::kinds::sockets::dump_fd(ctx, f)?,
            (_, None) => crate::kinds::special::dump_fd(ctx, f)?,
        };
        let (ty, id) = match (&f.target, claimed) {
            (_, Some(c)) => c,
            (FdTarget::Path { path, .. }, None) if f.fd <= 2 && is_tty(path) => (FdTypes::Ext, ctx.table.ext(None)),
            (FdTarget::Path { path, deleted: false }, None) if !is_tty(path) => {
                (FdTypes::Reg, ctx.table.push_reg(path, f.flags, f.pos, None))
            }
            (FdTarget::Pipe(ino), None) if ctx.opts.external.contains(&format!("pipe:[{ino}]")) => {
                (FdTypes::Ext, ctx.table.ext(Some(format!("pipe:[{ino}]"))))
            }
            (FdTarget::Pipe(ino), None) if internal.contains(ino) || f.fd > 2 => {
                if !internal.contains(ino) {
                    log::info!(
                        "process {pid}, fd {}: pipe:[{ino}] leads outside the tree; it is restored with its \
                         buffered data but without its other end",
                        f.fd
                    );
                }
                if !ctx.table.pipe_data.contains_key(ino) {
                    let data = peek_pipe(pid, f.fd)?;
                    ctx.table.pipe_data.insert(*ino, data);
                }
                (FdTypes::Pipe, ctx.table.pipe(*ino, f.flags))
            }
            (FdTarget::Pipe(_), None) => (FdTypes::Ext, ctx.table.ext(None)),
            (_, None) => return Err(DumpError::UnsupportedFd { pid, fd: f.fd, kind: describe(f) }),
        };
        ctx.table.by_fd.entry((pid, f.fd)).or_insert((ty, id));
        out.push(pb::FdinfoEntry {
            id,
            flags: if f.cloexec { libc::FD_CLOEXEC as u32 } else { 0 },
            r#type: ty as i32,
            fd: f.fd as u32,
            xattr_security_selinux: None,
        });
    }
    Ok(out)
}

/// A readable name of an fd's kind for "not supported" errors.
pub fn describe(f: &FdSeen) -> String {
    match &f.target {
        FdTarget::Path { path, deleted: true } => format!("deleted file {path}"),
        FdTarget::Path { path, .. } if is_tty(path) => format!("terminal {path}"),
        FdTarget::AnonInode(name) => format!("anon inode [{name}]"),
        FdTarget::Socket(_) => format!("socket ({})", f.link),
        _ => f.link.clone(),
    }
}

impl FileTable {
    /// A file outside the tree; with a key when the restorer is to be given
    /// it by that key, else it is inherited from the restorer by fd number.
    fn ext(&mut self, key: Option<String>) -> u32 {
        let id = self.new_id();
        let ext = pb::ExtFileEntry { id, fown: fown(), stasis_key: key };
        self.entries.push(pb::FileEntry { r#type: FdTypes::Ext as i32, id, ext: Some(ext), ..Default::default() });
        id
    }

    fn pipe(&mut self, ino: u64, flags: u32) -> u32 {
        let id = self.new_id();
        self.entries.push(pb::FileEntry {
            r#type: FdTypes::Pipe as i32,
            id,
            pipe: Some(pb::PipeEntry { id, pipe_id: ino as u32, flags, fown: fown() }),
            ..Default::default()
        });
        id
    }
}

// ---------------------------------------------------------------- restore

/// Restorer-side resources the tasks' fds are opened from.
pub struct FileSources {
    /// Pipe id -> (read end, write end), held until every task has opened
    /// its ends.
    pipes: HashMap<u32, (OwnedFd, OwnedFd)>,
    /// Ghost file id -> (path the tasks open it by, the same file as the
    /// restorer reaches it) of the temporary file re-created for it.
    ghost_paths: HashMap<u32, (String, PathBuf)>,
}

/// Where a task gets a file from.
enum Source {
    /// A path the task opens itself (as it sees the file system).
    Path(String),
    /// A file the restorer opened; the task takes it with `pidfd_getfd`.
    Local(OwnedFd),
}

impl FileSources {
    /// Creates pipes (filled with their dumped bytes) and ghost files;
    /// `fs_root` is where the restorer reaches the tasks' `/` (e.g.
    /// `/proc/PID/root` of the root task).
    pub fn prepare(
        dir: &Path,
        entries: &[pb::FileEntry],
        pipe_data: &HashMap<u32, Vec<u8>>,
        fs_root: &Path,
    ) -> Result<FileSources, RestoreError> {
        let me = std::process::id();
        let mut pipes = HashMap::new();
        for e in entries {
            let Some(p) = &e.pipe else { continue };
            if pipes.contains_key(&p.pipe_id) {
                continue;
            }
            let (r, w) = sysfd::pipe(libc::O_CLOEXEC).map_err(restore_io(0, "create pipe"))?;
            if let Some(data) = pipe_data.get(&p.pipe_id) {
                if data.len() > 65536 {
                    sysfd::set_pipe_size(w.as_fd(), data.len()).map_err(restore_io(
                        0,
                        format!("grow pipe {} to {} bytes (limit here: 1 MiB)", p.pipe_id, data.len()),
                    ))?;
                }
                let mut f = std::fs::File::from(w.try_clone().map_err(restore_io(0, "dup pipe"))?);
                std::io::Write::write_all(&mut f, data).map_err(restore_io(0, "fill pipe"))?;
            }
            pipes.insert(p.pipe_id, (r, w));
        }
        let mut ghost_paths = HashMap::new();
        for e in entries {
            let Some(r) = &e.reg else { continue };
            let data_path = dir.join(format!("ghost-{}.data", e.id));
            if !data_path.exists() {
                continue;
            }
            let mut parent = Path::new(&r.name).parent().unwrap_or(Path::new("/tmp"));
            if !fs_root.join(parent.strip_prefix("/").unwrap_or(parent)).is_dir() {
                parent = Path::new("/tmp");
            }
            let theirs = parent.join(format!(".stasis-ghost-{}-{}", e.id, me));
            let ours = fs_root.join(theirs.strip_prefix("/").unwrap_or(&theirs));
            std::fs::copy(&data_path, &ours)
                .map_err(|source| RestoreError::Read { path: data_path.clone(), source })?;
            ghost_paths.insert(e.id, (theirs.to_string_lossy().into_owned(), ours));
        }
        Ok(FileSources { pipes, ghost_paths })
    }

    /// Where a task gets a file entry from.
    fn source(&self, e: &pb::FileEntry, flags: u32) -> Option<std::io::Result<Source>> {
        if let Some((g, _)) = self.ghost_paths.get(&e.id) {
            return Some(Ok(Source::Path(g.clone())));
        }
        if let Some(r) = &e.reg {
            return Some(Ok(Source::Path(r.name.clone())));
        }
        let p = e.pipe.as_ref()?;
        let (r, w) = self.pipes.get(&p.pipe_id)?;
        let end = if flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32 { w } else { r };
        // A new open file of the pipe with the task's own flags, as opening
        // its /proc link gives.
        let open = crate::kinds::special::open_local(&format!("/proc/self/fd/{}", end.as_raw_fd()), flags);
        Some(open.map(Source::Local))
    }

    /// Path to open for a mapping's file id (ghost-aware).
    pub fn mapping_paths(&self, entries: &[pb::FileEntry]) -> HashMap<u32, String> {
        let mut m = FileTable::paths(entries);
        for (id, (p, _)) in &self.ghost_paths {
            m.insert(*id, p.clone());
        }
        m
    }

    /// Removes the temporary ghost files.
    pub fn cleanup(&mut self) {
        for (_, p) in self.ghost_paths.values() {
            let _ = std::fs::remove_file(p);
        }
        self.ghost_paths.clear();
        self.pipes.clear();
    }
}

impl Drop for FileSources {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn cloexec_of(fi: &pb::FdinfoEntry) -> bool {
    fi.flags & libc::FD_CLOEXEC as u32 != 0
}

/// Opens every fd of one process inside its (stopped) main thread.
pub fn restore_fds(
    task: &mut Task,
    fdinfo: &[pb::FdinfoEntry],
    files: &HashMap<u32, &pb::FileEntry>,
    src: &FileSources,
    opened: &mut Opened,
    ctx: &mut FdRestoreCtx<'_>,
) -> Result<(), RestoreError> {
    let pid = task.pid;
    let keep: Vec<u32> = fdinfo.iter().map(|f| f.fd).collect();
    // The stub holds the restorer's fds 0-2; drop those the process had not.
    for fd in 0..3u32 {
        if !keep.contains(&fd) {
            let _ = task.call(libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0]);
        }
    }
    for fi in fdinfo {
        let e = files.get(&fi.id).ok_or_else(|| RestoreError::Task {
            pid,
            what: format!("fd {} refers to file id {}, which files.img lacks", fi.fd, fi.id),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        if fi.r#type == FdTypes::Ext as i32 {
            let key = e.ext.as_ref().and_then(|x| x.stasis_key.as_deref());
            // Without a key it is inherited from the restorer by number.
            if let Some((k, local)) = key.and_then(|k| ctx.opts.inherit.iter().find(|(ik, _)| ik == k)) {
                let what = format!("fd {}: {k} given to the restore", fi.fd);
                crate::kinds::share::install_local_raw(task, *local, fi.fd, cloexec_of(fi), &what)?;
            } else if fi.fd > 2 {
                // fds 0-2 keep the restorer's; others have nothing to keep.
                log::warn!("process {pid}, fd {}: external file {key:?} was not given; it stays closed", fi.fd);
            }
            continue;
        }
        if let Some(holder) = opened.holder(fi.id) {
            install_shared(task, holder, fi.fd, fi.flags & libc::FD_CLOEXEC as u32 != 0)?;
            continue;
        }
        opened.record(fi.id, pid, fi.fd);
        let cloexec = fi.flags & libc::FD_CLOEXEC as u32 != 0;
        let (flags, pos) = match (FdTypes::try_from(e.r#type), &e.reg, &e.pipe) {
            (Ok(FdTypes::Reg), Some(r), _) => (r.flags, r.pos),
            (Ok(FdTypes::Pipe), _, Some(p)) => (p.flags, 0),
            _ => {
                let how = match crate::kinds::sockets::open_fd(ctx, task, e, fi)? {
                    Some(i) => Some(i),
                    None => crate::kinds::special::open_fd(ctx, task, e, fi)?,
                };
                match how {
                    Some(Install::Local(local)) => ctx.install_local(task, &local, fi.fd, cloexec)?,
                    Some(Install::Done) => {}
                    None => {
                        return Err(RestoreError::Task {
                            pid,
                            what: format!("fd {}: file kind {} is not supported", fi.fd, e.r#type),
                            source: std::io::Error::from(std::io::ErrorKind::Unsupported),
                        })
                    }
                }
                continue;
            }
        };
        let what = format!("fd {}", fi.fd);
        match src.source(e, flags) {
            Some(Ok(Source::Local(local))) => {
                crate::kinds::share::install_local(task, local.as_fd(), fi.fd, cloexec, &what)?
            }
            Some(Ok(Source::Path(path))) => {
                // Never create or truncate; never acquire a controlling terminal.
                let open_flags =
                    flags & !((libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC) as u32) | libc::O_NOCTTY as u32;
                let p = task.put_str(0, &path).map_err(restore_io(pid, "write path"))?;
                let tmp = task
                    .call(libc::SYS_openat, [libc::AT_FDCWD as u64, p, open_flags as u64, 0, 0, 0])
                    .map_err(restore_io(pid, format!("fd {}: open {path}", fi.fd)))?;
                crate::kinds::share::move_fd(task, tmp, fi.fd, cloexec, &what)?;
            }
            Some(Err(e)) => return Err(restore_io(pid, format!("{what}: reopen pipe"))(e)),
            None => {
                return Err(RestoreError::Task {
                    pid,
                    what: format!("fd {}: nothing to open", fi.fd),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                })
            }
        }
        if e.reg.is_some() && pos != 0 {
            task.call(libc::SYS_lseek, [fi.fd as u64, pos, libc::SEEK_SET as u64, 0, 0, 0])
                .map_err(restore_io(pid, format!("fd {}: seek to {pos}", fi.fd)))?;
        }
    }
    Ok(())
}
