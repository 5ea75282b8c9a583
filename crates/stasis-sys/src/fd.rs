//! File-descriptor helpers: pidfd (`pidfd_open`, `pidfd_getfd` to copy a
//! stopped task's fd into the dumper), pipes, `tee` (peek at a pipe's buffer
//! without consuming it), `FIONREAD`, pipe sizes, `fcntl` flags, `kcmp`.

use crate::{check, check_int, Pid};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Opens a pidfd for `pid`.
pub fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the kernel returned a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Copies fd number `target_fd` of the process behind `pidfd` into ours.
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, target_fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target_fd, 0) })?;
    // SAFETY: the kernel returned a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Creates a pipe: (read end, write end).
pub fn pipe(flags: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a live array of two ints.
    check_int(unsafe { libc::pipe2(fds.as_mut_ptr(), flags) })?;
    // SAFETY: pipe2 returned two new fds that nobody else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Duplicates up to `len` bytes from pipe `from` into pipe `to` without
/// consuming them (`tee(2)`). Returns the number of bytes copied.
pub fn tee(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize, nonblock: bool) -> io::Result<usize> {
    let flags = if nonblock { libc::SPLICE_F_NONBLOCK } else { 0 };
    // SAFETY: plain syscall on fds we borrow.
    let n = check(unsafe { libc::tee(from.as_raw_fd(), to.as_raw_fd(), len, flags) } as libc::c_long)?;
    Ok(n as usize)
}

/// Bytes readable right now (`FIONREAD`), e.g. a pipe's buffered data.
pub fn bytes_readable(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: n is a live c_int, FIONREAD writes one int.
    check_int(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) })?;
    Ok(n as usize)
}

/// A pipe's capacity (`F_GETPIPE_SZ`).
pub fn pipe_size(fd: BorrowedFd<'_>) -> io::Result<usize> {
    // SAFETY: plain fcntl with integer arguments.
    Ok(check_int(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) })? as usize)
}

/// Sets a pipe's capacity (`F_SETPIPE_SZ`); returns the new size.
pub fn set_pipe_size(fd: BorrowedFd<'_>, size: usize) -> io::Result<usize> {
    // SAFETY: plain fcntl with integer arguments.
    Ok(check_int(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) })? as usize)
}

/// File status flags (`F_GETFL`).
pub fn status_flags(fd: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: plain fcntl with integer arguments.
    check_int(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })
}

/// Sets file status flags (`F_SETFL`).
pub fn set_status_flags(fd: BorrowedFd<'_>, flags: i32) -> io::Result<()> {
    // SAFETY: plain fcntl with integer arguments.
    check_int(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) }).map(drop)
}

/// `kcmp(KCMP_FILE)`: whether fd `a` of `pid1` and fd `b` of `pid2` are the
/// same open file description. Returns the ordering (0 = same).
pub fn kcmp_file(pid1: Pid, pid2: Pid, a: i32, b: i32) -> io::Result<i32> {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: plain syscall with integer arguments.
    Ok(check(unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, KCMP_FILE, a as libc::c_long, b as libc::c_long) })?
        as i32)
}

/// Duplicates `fd` onto the number `target` in this process (`dup3`).
pub fn dup_to(fd: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    // SAFETY: dup3 only manipulates our fd table; `target` becomes owned by
    // whoever asked for it (the caller tracks it).
    check_int(unsafe { libc::dup3(fd.as_raw_fd(), target, 0) }).map(drop)
}

/// A copy of fd number `fd` of process `pid` (the same open file), via
/// `pidfd_open` + `pidfd_getfd`.
pub fn copy_fd(pid: Pid, fd: i32) -> io::Result<OwnedFd> {
    let pidfd = pidfd_open(pid)?;
    pidfd_getfd(pidfd.as_fd(), fd)
}

/// Marks every fd from `first` up close-on-exec (`close_range` with
/// `CLOSE_RANGE_CLOEXEC`): nothing the caller inherited leaks into what it
/// executes next.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: only changes fd flags in our own table.
    check(unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) }).map(drop)
}

/// Clears close-on-exec on `fd`, so a program we spawn inherits it at the
/// same number.
pub fn set_inheritable(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain fcntl with integer arguments on an fd we borrow.
    check_int(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) }).map(drop)
}

/// Takes ownership of fd number `raw`, which our parent handed down (its
/// number came on the command line). Fails if no such fd is open.
pub fn inherited(raw: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the fd's flags; it fails on a closed fd.
    check_int(unsafe { libc::fcntl(raw, libc::F_GETFD) })?;
    // SAFETY: the fd is open, was given to us to own, and nothing else in
    // this process refers to it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Waits until at least one of `fds` is readable (a pidfd: its process has
/// exited); returns which are. Retries on EINTR.
pub fn wait_readable(fds: &[BorrowedFd<'_>]) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> =
        fds.iter().map(|f| libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    loop {
        // SAFETY: p is a live array of p.len() pollfd structs.
        let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, -1) };
        if r >= 0 {
            return Ok(p.iter().map(|x| x.revents != 0).collect());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Sends `sig` to the process behind `pidfd` (no pid-reuse race).
pub fn pidfd_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall; a null siginfo means "as kill(2) would".
    check(unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), sig, std::ptr::null::<libc::siginfo_t>(), 0)
    })
    .map(drop)
}

/// `syncfs(2)` on the file system holding `path`: everything written to
/// it reaches the disk, with one device flush.
pub fn syncfs(path: &std::path::Path) -> io::Result<()> {
    let dir = std::fs::File::open(path)?;
    // SAFETY: plain syscall on an fd we own for the duration.
    check_int(unsafe { libc::syncfs(dir.as_raw_fd()) }).map(drop)
}
