//! Typed, tested parsers of `/proc` for one task or process.
//!
//! The dumper learns most of a task's state from procfs before it touches
//! ptrace: its memory layout (`maps`, `smaps`), identity and credentials
//! (`stat`, `status`), resource limits (`limits`), open files (`fd`,
//! `fdinfo`), threads, children, timers and auxiliary vector (`task`), and
//! finally the whole process tree (`tree`).
//!
//! Every file has a pure parser over its text (`parse_xxx(&str)`), unit tested
//! on samples captured from a real kernel (6.18, x86_64) under `fixtures/`, and
//! a thin reader (`read_xxx(pid)`) that reads the file and names the pid and
//! the path in its error. Paths are kept as `String`: a path that is not UTF-8
//! is refused with a [`ProcError::Parse`] rather than altered, because a
//! silently changed path would restore the wrong file.
//!
//! Values are read as the kernel prints them in *our* PID namespace; the
//! namespace-local ids are in [`status::Status::ns_pid`] and friends.

pub mod fdinfo;
pub mod limits;
pub mod maps;
pub mod mountinfo;
pub mod smaps;
pub mod stat;
pub mod status;
pub mod task;
pub mod tree;

use std::io;
use std::path::{Path, PathBuf};

pub use fdinfo::{fd_exists, fd_link_path, list_fds, parse_fdinfo, pipe_key, read_fdinfo, FdEntry, FdInfo, FdTarget};
pub use limits::{parse_limits, read_limits, Limits, Rlimit, RLIM_INFINITY};
pub use maps::{parse_maps, read_maps, MapsEntry, Prot, VmaKind};
pub use mountinfo::{parse_mountinfo, read_mountinfo, MountInfo};
pub use smaps::{parse_smaps, parse_vm_flags, read_smaps, read_vm_flags, SmapsEntry, VmFlags};
pub use stat::{parse_stat, read_stat, Stat, TaskState, PF_KTHREAD};
pub use status::{parse_status, read_status, Ids, Status};
pub use task::{
    auxv_words, list_children, list_threads, parse_auxv, parse_pid_list, parse_timers, read_auxv, read_comm, read_cwd,
    read_exe, read_personality, read_root, read_timers, read_timerslack_ns, PosixTimer, TimerNotify,
};
pub use tree::{collect_tree, ProcTree, ProcessInfo};

/// Why reading or understanding a `/proc` file failed.
///
/// Messages name the pid and the file; the underlying I/O error is the
/// [`std::error::Error::source`], so a CLI that prints the chain prints e.g.
/// `cannot read /proc/1234/maps: Permission denied`.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The process (or thread) does not exist (`ESRCH`, or `ENOENT` on a
    /// `/proc/PID` directory that is gone).
    #[error("no process with PID {pid} (reading {})", path.display())]
    NoSuchProcess {
        pid: i32,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Any other I/O error on a `/proc` file.
    #[error("cannot read {}", path.display())]
    Io {
        pid: i32,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file was read but its contents are not what this kernel version
    /// is expected to print. `line` is 1-based (0: the file as a whole).
    #[error("cannot parse {} line {line}: {reason}", path.display())]
    Parse { path: PathBuf, line: usize, reason: String },
    /// The root of a tree to dump is a kernel thread.
    #[error("PID {pid} is a kernel thread, which cannot be checkpointed")]
    KernelThread { pid: i32 },
    /// The root of a tree to dump is a zombie: it has no memory or files left.
    #[error("PID {pid} is a zombie (state Z), there is nothing left to checkpoint")]
    Zombie { pid: i32 },
    /// The root of a tree to dump is the dumper itself or one of its
    /// ancestors, so the dump would include (and freeze) the dumper.
    #[error("PID {pid} is this process or one of its ancestors, refusing to checkpoint ourselves")]
    SelfOrAncestor { pid: i32 },
    /// The id given as the root of a tree is a thread, not a process.
    #[error("PID {pid} is a thread of process {tgid}, not a process")]
    NotThreadGroupLeader { pid: i32, tgid: i32 },
}

impl ProcError {
    /// True when the process does not exist (any more).
    pub fn is_no_such_process(&self) -> bool {
        matches!(self, ProcError::NoSuchProcess { .. })
    }

    /// The pid this error is about, when known.
    pub fn pid(&self) -> Option<i32> {
        match self {
            ProcError::NoSuchProcess { pid, .. }
            | ProcError::Io { pid, .. }
            | ProcError::KernelThread { pid }
            | ProcError::Zombie { pid }
            | ProcError::SelfOrAncestor { pid }
            | ProcError::NotThreadGroupLeader { pid, .. } => Some(*pid),
            ProcError::Parse { path, .. } => pid_of_path(path),
        }
    }

    /// Re-targets a parse error produced by a pure parser (whose `path` is
    /// only the file's name) at the real file it came from.
    pub(crate) fn at(self, real: &Path) -> Self {
        match self {
            ProcError::Parse { line, reason, .. } => ProcError::Parse { path: real.to_path_buf(), line, reason },
            other => other,
        }
    }
}

/// A parse error in `file` (a bare name such as `"maps"`, replaced by the
/// real path with [`ProcError::at`] when a reader is involved).
pub(crate) fn parse_err(file: &str, line: usize, reason: impl Into<String>) -> ProcError {
    ProcError::Parse { path: PathBuf::from(file), line, reason: reason.into() }
}

fn pid_of_path(path: &Path) -> Option<i32> {
    let mut it = path.components().skip_while(|c| c.as_os_str() != "proc");
    it.next()?;
    it.next()?.as_os_str().to_str()?.parse().ok()
}

/// `/proc/PID/FILE`.
pub(crate) fn proc_path(pid: i32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{file}"))
}

/// Turns an I/O error on a file of `pid` into a [`ProcError`], telling a
/// vanished process apart from other failures.
pub(crate) fn io_err(pid: i32, path: &Path, source: io::Error) -> ProcError {
    let gone = match source.raw_os_error() {
        Some(libc::ESRCH) => true,
        // ENOENT on /proc/PID/x: the whole process may be gone, or only this
        // file (an fd closed, a kernel without the file). Ask the directory.
        Some(libc::ENOENT) => !Path::new(&format!("/proc/{pid}")).exists(),
        _ => false,
    };
    if gone {
        ProcError::NoSuchProcess { pid, path: path.to_path_buf(), source }
    } else {
        ProcError::Io { pid, path: path.to_path_buf(), source }
    }
}

/// Reads `/proc/PID/FILE` as bytes.
pub(crate) fn read_bytes(pid: i32, file: &str) -> Result<(PathBuf, Vec<u8>), ProcError> {
    let path = proc_path(pid, file);
    match std::fs::read(&path) {
        Ok(b) => Ok((path, b)),
        Err(e) => Err(io_err(pid, &path, e)),
    }
}

/// Reads `/proc/PID/FILE` as text; non-UTF-8 contents are a parse error.
pub(crate) fn read_text(pid: i32, file: &str) -> Result<(PathBuf, String), ProcError> {
    let (path, bytes) = read_bytes(pid, file)?;
    match String::from_utf8(bytes) {
        Ok(s) => Ok((path, s)),
        Err(e) => Err(ProcError::Parse { path, line: 0, reason: format!("not UTF-8 text ({e})") }),
    }
}

/// Reads the symbolic link `/proc/PID/FILE`; a non-UTF-8 target is a parse error.
pub(crate) fn read_link(pid: i32, file: &str) -> Result<String, ProcError> {
    let path = proc_path(pid, file);
    let target = std::fs::read_link(&path).map_err(|e| io_err(pid, &path, e))?;
    target.into_os_string().into_string().map_err(|t| ProcError::Parse {
        path,
        line: 0,
        reason: format!("link target {t:?} is not UTF-8"),
    })
}

/// Lists the numeric entries of the directory `/proc/PID/DIR` (tasks, fds), sorted.
pub(crate) fn list_numeric_dir(pid: i32, dir: &str) -> Result<Vec<i32>, ProcError> {
    let path = proc_path(pid, dir);
    let rd = std::fs::read_dir(&path).map_err(|e| io_err(pid, &path, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| io_err(pid, &path, e))?;
        if let Some(n) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Splits the kernel's `" (deleted)"` suffix off a path (d_path of an
/// unlinked dentry). Returns the path without it and whether it was there.
///
/// A file whose real name ends in `" (deleted)"` is indistinguishable here;
/// callers that care confirm with the inode (`stat` of `map_files` or the fd).
pub fn split_deleted(path: &str) -> (&str, bool) {
    match path.strip_suffix(" (deleted)") {
        Some(p) => (p, true),
        None => (path, false),
    }
}

/// Parses a hexadecimal number without `0x`, as /proc prints masks.
pub(crate) fn hex_u64(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_process_is_told_apart() {
        // pid_max is at most 2^22, so this pid never exists.
        let err = read_text(0x7fff_fff0, "maps").unwrap_err();
        assert!(err.is_no_such_process(), "{err:?}");
        assert_eq!(err.pid(), Some(0x7fff_fff0));
        assert_eq!(err.to_string(), "no process with PID 2147483632 (reading /proc/2147483632/maps)");
    }

    #[test]
    fn missing_file_of_live_process_is_io() {
        let me = i32::try_from(std::process::id()).unwrap();
        let err = read_text(me, "no-such-file").unwrap_err();
        assert!(matches!(err, ProcError::Io { .. }), "{err:?}");
        assert_eq!(err.to_string(), format!("cannot read /proc/{me}/no-such-file"));
    }

    #[test]
    fn parse_error_is_retargeted_and_knows_its_pid() {
        let e = parse_err("maps", 3, "bad").at(Path::new("/proc/42/maps"));
        assert_eq!(e.to_string(), "cannot parse /proc/42/maps line 3: bad");
        assert_eq!(e.pid(), Some(42));
    }

    #[test]
    fn deleted_suffix() {
        assert_eq!(split_deleted("/tmp/a b (deleted)"), ("/tmp/a b", true));
        assert_eq!(split_deleted("/tmp/a"), ("/tmp/a", false));
    }
}
