//! Namespaces and mounts for containers: a fork into new namespaces
//! (`clone(2)` with `CLONE_NEW*` flags), `setns`, `mount`/`umount2`,
//! `pivot_root`, `sethostname`, `mknod`, `setxattr`, `setsid`.
//!
//! The runtime builds a container's init with these: the monitor forks it
//! into new pid/mount/uts/ipc/net namespaces with [`fork_into_namespaces`],
//! and the child (still running our code) mounts its rootfs, `/proc`,
//! `/dev`, `/sys`, pivots into it and execs the user's command.

use crate::{check, check_int, Pid};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub use libc::{
    CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUTS, MNT_DETACH, MS_BIND,
    MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_RELATIME, MS_REMOUNT, MS_SLAVE, MS_STRICTATIME,
    S_IFCHR,
};

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in string"))
}

/// Number of threads of this process (from /proc/self/status).
fn thread_count() -> io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no Threads: line in /proc/self/status"))
}

/// Which side of [`fork_into_namespaces`] we are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// In the parent: the child's pid (as seen from the parent's namespace).
    Parent(Pid),
    /// In the child (pid 1 of its namespace when `CLONE_NEWPID` was given).
    Child,
}

/// Forks this process into new namespaces (`clone(2)` without a new stack,
/// i.e. like `fork`, plus `ns_flags` such as `CLONE_NEWPID | CLONE_NEWNS`).
/// The child gets `SIGCHLD` as exit signal.
///
/// Refused (`EBUSY`-like error) unless this process has exactly one thread:
/// a fork of a multithreaded process may leave locks (allocator, stdio)
/// held by threads that do not exist in the child.
pub fn fork_into_namespaces(ns_flags: i32) -> io::Result<Forked> {
    if thread_count()? != 1 {
        return Err(io::Error::other("fork_into_namespaces needs a single-threaded process"));
    }
    let flags = (ns_flags as libc::c_ulong) | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: a raw clone without CLONE_VM and with a null stack behaves
    // like fork(2): the child gets a copy-on-write copy of our memory and
    // continues here with return value 0. We checked above that we are
    // single-threaded, so no lock can be held by a thread that the child
    // lacks; the child may therefore keep running ordinary Rust code.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    match check(ret)? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as Pid)),
    }
}

/// `mount(2)`. `source`, `fstype` and `data` may be absent.
pub fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let src = source.map(cstr).transpose()?;
    let tgt = cpath(target)?;
    let fst = fstype.map(cstr).transpose()?;
    let dat = data.map(cstr).transpose()?;
    // SAFETY: every pointer is either null or a live NUL-terminated string
    // owned by this frame for the duration of the call.
    let ret = unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            tgt.as_ptr(),
            fst.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            dat.as_ref().map_or(std::ptr::null(), |s| s.as_ptr() as *const libc::c_void),
        )
    };
    check_int(ret).map(drop)
}

/// `umount2(2)` with `flags` (e.g. [`MNT_DETACH`]).
pub fn umount2(target: &Path, flags: i32) -> io::Result<()> {
    let tgt = cpath(target)?;
    // SAFETY: tgt is a live NUL-terminated string.
    check_int(unsafe { libc::umount2(tgt.as_ptr(), flags) }).map(drop)
}

/// `pivot_root(2)`: `new_root` becomes `/`, the old root is moved to `put_old`.
pub fn pivot_root(new_root: &Path, put_old: &Path) -> io::Result<()> {
    let n = cpath(new_root)?;
    let o = cpath(put_old)?;
    // SAFETY: both are live NUL-terminated strings.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) }).map(drop)
}

/// `sethostname(2)` (in the caller's uts namespace).
pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe the live bytes of `name`.
    check_int(unsafe { libc::sethostname(name.as_ptr() as *const libc::c_char, name.len()) }).map(drop)
}

/// `mknod(2)`: `mode` includes the file type (e.g. `S_IFCHR | 0o666`).
pub fn mknod(path: &Path, mode: libc::mode_t, major: u32, minor: u32) -> io::Result<()> {
    let p = cpath(path)?;
    // SAFETY: p is a live NUL-terminated string; the rest are integers.
    check_int(unsafe { libc::mknod(p.as_ptr(), mode, libc::makedev(major, minor)) }).map(drop)
}

/// `lsetxattr(2)`: sets extended attribute `name` of `path` (not following
/// a final symlink).
pub fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = cpath(path)?;
    let n = cstr(name)?;
    // SAFETY: p and n are live NUL-terminated strings; value's pointer and
    // length describe live bytes.
    let ret = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr() as *const libc::c_void, value.len(), 0) };
    check_int(ret).map(drop)
}

/// `lgetxattr(2)`: the value of extended attribute `name` of `path` (not
/// following a final symlink); `None` when it has no such attribute.
pub fn lgetxattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let p = cpath(path)?;
    let n = cstr(name)?;
    let mut buf = vec![0u8; 256];
    // SAFETY: p and n are live NUL-terminated strings; buf's pointer and
    // length describe writable bytes we own.
    let ret = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
    match check(ret as libc::c_long) {
        Ok(len) => {
            buf.truncate(len as usize);
            Ok(Some(buf))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `setdomainname(2)` for the calling process's UTS namespace.
pub fn setdomainname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes, alive for
    // the call.
    check_int(unsafe { libc::setdomainname(name.as_ptr() as *const libc::c_char, name.len()) }).map(drop)
}

/// `setns(2)`: joins the namespace behind `fd` (`nstype` 0 = any kind).
pub fn setns(fd: BorrowedFd<'_>, nstype: i32) -> io::Result<()> {
    // SAFETY: plain syscall on an fd we borrow.
    check_int(unsafe { libc::setns(fd.as_raw_fd(), nstype) }).map(drop)
}

/// `setsid(2)`: a new session and process group led by the caller.
pub fn setsid() -> io::Result<Pid> {
    // SAFETY: no arguments.
    check_int(unsafe { libc::setsid() })
}

/// `umask(2)`; returns the previous mask.
pub fn umask(mask: libc::mode_t) -> libc::mode_t {
    // SAFETY: integer argument, cannot fail.
    unsafe { libc::umask(mask) }
}

/// Moves the calling thread into the mount namespace of `pid` (its root and
/// working directory become that namespace's root): it first stops sharing
/// its file-system attributes with the rest of the process
/// (`unshare(CLONE_FS)`, which `setns` requires), so only this thread moves.
/// For a dedicated thread that ends afterwards; there is no way back.
pub fn enter_mount_ns_of(pid: Pid) -> io::Result<()> {
    use std::os::fd::AsFd;
    let theirs = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))?;
    // SAFETY: unshare(CLONE_FS) only gives this thread its own copy of the
    // root, cwd and umask; no memory is involved.
    check_int(unsafe { libc::unshare(libc::CLONE_FS) })?;
    setns(theirs.as_fd(), CLONE_NEWNS)
}

/// Whether process `pid` is in a mount namespace other than ours.
pub fn other_mount_ns(pid: Pid) -> io::Result<bool> {
    let mine = std::fs::read_link("/proc/thread-self/ns/mnt")?;
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/mnt"))?;
    Ok(mine != theirs)
}

/// The calling thread in the network namespace of another process until
/// dropped (network namespaces are per thread: the rest of this process
/// stays where it was). Sockets this thread creates meanwhile belong to
/// that namespace, and netlink sockets (sock_diag) see its sockets.
pub struct ThreadNetns {
    /// Our thread's own namespace, to go back to; None when we were in the
    /// target's already.
    back: Option<std::fs::File>,
}

impl ThreadNetns {
    /// Joins the network namespace of `pid` (a no-op when it is ours).
    pub fn enter(pid: Pid) -> io::Result<ThreadNetns> {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let mine = std::fs::File::open("/proc/thread-self/ns/net")?;
        let theirs = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        if mine.metadata()?.ino() == theirs.metadata()?.ino() {
            return Ok(ThreadNetns { back: None });
        }
        setns(theirs.as_fd(), CLONE_NEWNET)?;
        Ok(ThreadNetns { back: Some(mine) })
    }
}

impl Drop for ThreadNetns {
    fn drop(&mut self) {
        use std::os::fd::AsFd;
        if let Some(f) = &self.back {
            let _ = setns(f.as_fd(), CLONE_NEWNET);
        }
    }
}
