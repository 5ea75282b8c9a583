//! userfaultfd ioctls: restore fills fresh anonymous memory with
//! `UFFDIO_COPY`, which allocates and copies a page in one step (no zeroing
//! first, unlike a write fault), into the mm the uffd belongs to — which is
//! the restored task's, since the task itself created the uffd.
//!
//! Pre-dumps track writes with write-protection in async mode
//! ([`FEATURE_WP_ASYNC`]): the kernel resolves a write to a protected page
//! itself (clearing the page's uffd-wp bit, ~1 µs) instead of waking a
//! handler, and `PAGEMAP_SCAN` (see [`crate::pagemap`]) later lists the
//! pages whose bit is gone. The 6.1 headers lack these constants; they are
//! checked against include/uapi/linux/userfaultfd.h of Linux 6.18.

use crate::check_int;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const UFFD_API: u64 = 0xAA;
const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
const UFFDIO_UNREGISTER: libc::c_ulong = 0x8010_AA01;
const UFFDIO_COPY: libc::c_ulong = 0xC028_AA03;
const UFFDIO_WRITEPROTECT: libc::c_ulong = 0xC018_AA06;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1;
/// Register for missing-page faults.
pub const REGISTER_MODE_MISSING: u64 = 1;
/// Register for write-protect faults.
pub const REGISTER_MODE_WP: u64 = 2;
/// Writes to protected pages are resolved by the kernel, no handler needed.
pub const FEATURE_WP_ASYNC: u64 = 1 << 15;
/// `userfaultfd()` flag: handle user-mode faults only. Needed when the
/// creating task lacks CAP_SYS_PTRACE and `vm.unprivileged_userfaultfd` is
/// 0; async write-protection never reaches a handler, so it loses nothing.
pub const USER_MODE_ONLY: u64 = 1;

#[repr(C)]
struct ApiArg {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct Range {
    start: u64,
    len: u64,
}

#[repr(C)]
struct RegisterArg {
    range: Range,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct CopyArg {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

/// The API handshake every uffd needs before use.
pub fn handshake(fd: BorrowedFd<'_>, features: u64) -> io::Result<u64> {
    let mut a = ApiArg { api: UFFD_API, features, ioctls: 0 };
    // SAFETY: a is a live, correctly laid out uffdio_api.
    check_int(unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API, &mut a) })?;
    Ok(a.features)
}

/// Registers `[start, start+len)` of the uffd's mm.
pub fn register(fd: BorrowedFd<'_>, start: u64, len: u64, mode: u64) -> io::Result<()> {
    let mut r = RegisterArg { range: Range { start, len }, mode, ioctls: 0 };
    // SAFETY: r is a live, correctly laid out uffdio_register.
    check_int(unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_REGISTER, &mut r) }).map(drop)
}

/// Unregisters a range.
pub fn unregister(fd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<()> {
    let mut r = Range { start, len };
    // SAFETY: r is a live uffdio_range.
    check_int(unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_UNREGISTER, &mut r) }).map(drop)
}

#[repr(C)]
struct WriteProtectArg {
    range: Range,
    mode: u64,
}

/// Write-protects `[start, start+len)` (registered in WP mode), or lifts
/// the protection when `protect` is false.
pub fn writeprotect(fd: BorrowedFd<'_>, start: u64, len: u64, protect: bool) -> io::Result<()> {
    let mut w =
        WriteProtectArg { range: Range { start, len }, mode: if protect { UFFDIO_WRITEPROTECT_MODE_WP } else { 0 } };
    // SAFETY: w is a live, correctly laid out uffdio_writeprotect.
    check_int(unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_WRITEPROTECT, &mut w) }).map(drop)
}

/// Copies `src` (our memory) to `dst` in the uffd's mm, allocating the
/// pages. Retries partial copies; `EEXIST` means a page was already there.
pub fn copy(fd: BorrowedFd<'_>, dst: u64, src: &[u8]) -> io::Result<()> {
    let mut done = 0usize;
    while done < src.len() {
        let mut c = CopyArg {
            dst: dst + done as u64,
            src: src[done..].as_ptr() as u64,
            len: (src.len() - done) as u64,
            mode: 0,
            copy: 0,
        };
        // SAFETY: c is a live uffdio_copy; src points into a slice we
        // borrow for at least len bytes.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_COPY, &mut c) };
        if c.copy > 0 {
            done += c.copy as usize;
            continue;
        }
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EAGAIN) {
                continue;
            }
            return Err(e);
        }
        if c.copy < 0 {
            return Err(io::Error::from_raw_os_error(-c.copy as i32));
        }
    }
    Ok(())
}
