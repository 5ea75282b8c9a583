//! Creating and inspecting the special files a checkpoint holds: eventfd,
//! epoll, timerfd (with `TFD_IOC_SET_TICKS`), signalfd, inotify, memfd and
//! its seals, file handles (`open_by_handle_at`), and pseudo-terminals
//! (`TIOCGPTN`, `TIOCSPTLCK`, termios and window size).
//!
//! The engine creates these in the restorer, fully set up, and hands them to
//! the restored task with `pidfd_getfd`; at dump it inspects copies of the
//! task's fds. Every wrapper checks the kernel's return value.

use crate::{check, check_int};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: callers pass a fd the kernel just returned to us; nobody else
    // owns it.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("NUL in {s:?}")))
}

/// `eventfd2(initval, flags)` (`EFD_SEMAPHORE`, `EFD_NONBLOCK`, `EFD_CLOEXEC`).
pub fn eventfd(initval: u32, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    Ok(owned(check(unsafe { libc::syscall(libc::SYS_eventfd2, initval, flags) })?))
}

/// `epoll_create1(flags)`.
pub fn epoll_create(flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    Ok(owned(check_int(unsafe { libc::epoll_create1(flags) })? as libc::c_long))
}

/// `timerfd_create(clockid, flags)`.
pub fn timerfd_create(clockid: i32, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    Ok(owned(check_int(unsafe { libc::timerfd_create(clockid, flags) })? as libc::c_long))
}

/// Arms a timerfd: first expiration after `value` (relative unless `flags`
/// has `TFD_TIMER_ABSTIME`), then every `interval`; (sec, nsec) pairs.
pub fn timerfd_settime(fd: BorrowedFd<'_>, flags: i32, value: (i64, i64), interval: (i64, i64)) -> io::Result<()> {
    let spec = libc::itimerspec {
        it_interval: libc::timespec { tv_sec: interval.0, tv_nsec: interval.1 },
        it_value: libc::timespec { tv_sec: value.0, tv_nsec: value.1 },
    };
    // SAFETY: spec is a live itimerspec; the old value pointer may be null.
    check_int(unsafe { libc::timerfd_settime(fd.as_raw_fd(), flags, &spec, std::ptr::null_mut()) }).map(drop)
}

/// `TFD_IOC_SET_TICKS`: sets the expiration count a read will return
/// (CONFIG_CHECKPOINT_RESTORE).
pub fn timerfd_set_ticks(fd: BorrowedFd<'_>, ticks: u64) -> io::Result<()> {
    // _IOW('T', 0, u64)
    const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;
    // SAFETY: the ioctl reads one u64 from a live local.
    check_int(unsafe { libc::ioctl(fd.as_raw_fd(), TFD_IOC_SET_TICKS, &ticks as *const u64) }).map(drop)
}

/// `signalfd4(-1, mask, flags)`; `mask` has bit n-1 set for signal n.
pub fn signalfd(mask: u64, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: the kernel reads 8 bytes (the size we pass) from a live local.
    Ok(owned(check(unsafe { libc::syscall(libc::SYS_signalfd4, -1, &mask as *const u64, 8usize, flags) })?))
}

/// `inotify_init1(flags)`.
pub fn inotify_init(flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    Ok(owned(check_int(unsafe { libc::inotify_init1(flags) })? as libc::c_long))
}

/// `inotify_add_watch(fd, path, mask)`; returns the watch descriptor.
pub fn inotify_add_watch(fd: BorrowedFd<'_>, path: &str, mask: u32) -> io::Result<i32> {
    let p = cstr(path)?;
    // SAFETY: p is a live NUL-terminated string.
    check_int(unsafe { libc::inotify_add_watch(fd.as_raw_fd(), p.as_ptr(), mask) })
}

/// `inotify_rm_watch(fd, wd)`.
pub fn inotify_rm_watch(fd: BorrowedFd<'_>, wd: i32) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments.
    check_int(unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) }).map(drop)
}

/// `memfd_create(name, flags)`.
pub fn memfd_create(name: &str, flags: u32) -> io::Result<OwnedFd> {
    let n = cstr(name)?;
    // SAFETY: n is a live NUL-terminated string.
    Ok(owned(check_int(unsafe { libc::memfd_create(n.as_ptr(), flags) })? as libc::c_long))
}

/// `F_GET_SEALS`.
pub fn get_seals(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: plain fcntl with integer arguments.
    Ok(check_int(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) })? as u32)
}

/// `F_ADD_SEALS`.
pub fn add_seals(fd: BorrowedFd<'_>, seals: u32) -> io::Result<()> {
    // SAFETY: plain fcntl with integer arguments.
    check_int(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals as libc::c_int) }).map(drop)
}

/// `open_by_handle_at(mount_fd, handle, flags)`: `handle` is the
/// `f_handle` bytes of type `handle_type` (needs CAP_DAC_READ_SEARCH).
pub fn open_by_handle(mount_fd: BorrowedFd<'_>, handle_type: i32, handle: &[u8], flags: i32) -> io::Result<OwnedFd> {
    // struct file_handle { u32 handle_bytes; int handle_type; u8 f_handle[]; }
    let mut buf = Vec::with_capacity(8 + handle.len());
    buf.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
    buf.extend_from_slice(&handle_type.to_ne_bytes());
    buf.extend_from_slice(handle);
    // SAFETY: buf holds a complete struct file_handle of the size it declares.
    let fd = check(unsafe {
        libc::syscall(libc::SYS_open_by_handle_at, mount_fd.as_raw_fd(), buf.as_mut_ptr(), flags as libc::c_long)
    })?;
    Ok(owned(fd))
}

/// The pty number of a `/dev/ptmx` master (`TIOCGPTN`).
pub fn ptmx_index(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut n: libc::c_uint = 0;
    // SAFETY: the ioctl writes one unsigned int into a live local.
    check_int(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGPTN, &mut n) })?;
    Ok(n)
}

/// Locks or unlocks a pty's slave (`TIOCSPTLCK`).
pub fn ptmx_set_lock(fd: BorrowedFd<'_>, locked: bool) -> io::Result<()> {
    let v: libc::c_int = locked.into();
    // SAFETY: the ioctl reads one int from a live local.
    check_int(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSPTLCK, &v) }).map(drop)
}

/// Whether a pty's slave is locked (`TIOCGPTLCK`).
pub fn ptmx_locked(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut v: libc::c_int = 0;
    // SAFETY: the ioctl writes one int into a live local.
    check_int(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGPTLCK, &mut v) })?;
    Ok(v != 0)
}

/// A terminal's settings (`TCGETS`).
pub fn tcgets(fd: BorrowedFd<'_>) -> io::Result<libc::termios> {
    // SAFETY: termios is plain data; all-zero is a valid value.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl writes one struct termios into a live local.
    check_int(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCGETS, &mut t) })?;
    Ok(t)
}

/// Sets a terminal's settings (`TCSETS`).
pub fn tcsets(fd: BorrowedFd<'_>, t: &libc::termios) -> io::Result<()> {
    // SAFETY: the ioctl reads one struct termios from a live reference.
    check_int(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCSETS, t as *const libc::termios) }).map(drop)
}

/// A terminal's window size (`TIOCGWINSZ`).
pub fn get_winsize(fd: BorrowedFd<'_>) -> io::Result<libc::winsize> {
    let mut w = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: the ioctl writes one struct winsize into a live local.
    check_int(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut w) })?;
    Ok(w)
}

/// Sets a terminal's window size (`TIOCSWINSZ`).
pub fn set_winsize(fd: BorrowedFd<'_>, w: &libc::winsize) -> io::Result<()> {
    // SAFETY: the ioctl reads one struct winsize from a live reference.
    check_int(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, w as *const libc::winsize) }).map(drop)
}
