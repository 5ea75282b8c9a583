//! Errors of the engine, one enum per operation. Every variant names the
//! process, thread, fd or file it is about, so the CLI can print one line
//! that tells the user what went wrong and where.

use stasis_image::ImageError;
use stasis_sys::Pid;
use std::io;
use std::path::PathBuf;

use crate::proc::ProcError;

/// Why a dump failed. The tree is left running (thawed, detached) and no
/// image directory that looks complete is left behind.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("no process with PID {pid}")]
    NoSuchProcess { pid: Pid },
    #[error("process {pid} is a zombie: there is nothing left to checkpoint")]
    Zombie { pid: Pid },
    #[error("process {pid} is a kernel thread and cannot be checkpointed")]
    KernelThread { pid: Pid },
    #[error("process {pid} is stasis itself or one of its ancestors; refusing to checkpoint it")]
    SelfDump { pid: Pid },
    #[error("the tree of {pid} kept changing while freezing it")]
    Unstable { pid: Pid },
    #[error("cannot {what} task {pid}: {source}")]
    Ptrace { pid: Pid, what: &'static str, source: io::Error },
    #[error("reading /proc of process {pid}: {source}")]
    Proc { pid: Pid, source: ProcError },
    #[error("process {pid}: {what}: {source}")]
    Task { pid: Pid, what: String, source: io::Error },
    #[error("process {pid}, fd {fd}: {kind} is not supported yet")]
    UnsupportedFd { pid: Pid, fd: i32, kind: String },
    #[error("process {pid}: {what} is not supported yet")]
    Unsupported { pid: Pid, what: String },
    #[error("process {pid}: mount {mountpoint}: {why}; name it as external (ext_mnt, or --external mnt[{mountpoint}]:KEY) to have it bind-mounted from the host at restore")]
    Mount { pid: Pid, mountpoint: String, why: String },
    #[error("writing images: {0}")]
    Image(#[from] ImageError),
    #[error("the previous images {dir}: {source}")]
    Parent { dir: PathBuf, source: ImageError },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("interrupted: the tree was left running and no images were kept")]
    Interrupted,
}

/// Why a restore failed. Every process created so far is killed and the
/// images are left intact for another try.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0}")]
    Image(#[from] ImageError),
    #[error("images in {dir}: {what}")]
    Invalid { dir: PathBuf, what: String },
    #[error("PID {pid} is already in use; cannot restore the process that had it")]
    PidInUse { pid: Pid },
    #[error(
        "PID {pid} is held by a zombie that its parent {parent} has not reaped; cannot restore the process that had it"
    )]
    PidHeldByZombie { pid: Pid, parent: Pid },
    #[error("restoring process {pid}: {what}: {source}")]
    Task { pid: Pid, what: String, source: io::Error },
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("interrupted: everything restored so far was removed")]
    Interrupted,
}

/// Shorthand for building `DumpError::Task`.
pub(crate) fn dump_io(pid: Pid, what: impl Into<String>) -> impl FnOnce(io::Error) -> DumpError {
    let what = what.into();
    move |source| DumpError::Task { pid, what, source }
}

/// Shorthand for building `RestoreError::Task`.
pub(crate) fn restore_io(pid: Pid, what: impl Into<String>) -> impl FnOnce(io::Error) -> RestoreError {
    let what = what.into();
    move |source| RestoreError::Task { pid, what, source }
}

/// An error and its causes on one line, joined by ": " (a cause already
/// quoted by its parent is not repeated): what the CLIs print.
pub fn one_line(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !line.contains(&s) {
            line.push_str(": ");
            line.push_str(&s);
        }
        cause = c.source();
    }
    line.replace('\n', " ")
}
