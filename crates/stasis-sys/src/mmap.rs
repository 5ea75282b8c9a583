//! Local memory mappings of files: the engine maps `pages-N.img` to feed
//! `process_vm_writev` without an extra copy, and maps a pre-sized output
//! file to let `process_vm_readv` write page contents straight into the page
//! cache.

use crate::check;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// A mapping of a whole file (read-only or shared read-write).
pub struct FileMap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; access goes
// through & / &mut borrows of it.
unsafe impl Send for FileMap {}

impl FileMap {
    /// Maps `len` bytes of `file` read-only (`len` may be 0).
    pub fn read_only(file: &File, len: usize) -> io::Result<FileMap> {
        Self::map(file, len, libc::PROT_READ, libc::MAP_PRIVATE | libc::MAP_POPULATE)
    }

    /// Maps `len` bytes of `file` shared, read-write; writes go to the file.
    pub fn read_write(file: &File, len: usize) -> io::Result<FileMap> {
        Self::map(file, len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED)
    }

    fn map(file: &File, len: usize, prot: i32, flags: i32) -> io::Result<FileMap> {
        if len == 0 {
            return Ok(FileMap { ptr: std::ptr::NonNull::dangling().as_ptr(), len: 0 });
        }
        // SAFETY: a fresh mapping chosen by the kernel; the file stays open
        // long enough (mappings outlive their fd).
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, file.as_raw_fd(), 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(FileMap { ptr: p.cast(), len })
    }

    /// The mapped bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr/len describe a live mapping owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The mapped bytes, writable (only meaningful for `read_write`).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr/len describe a live mapping owned by self, borrowed
        // mutably through &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Tells the kernel we read it sequentially.
    pub fn advise_sequential(&self) {
        if self.len > 0 {
            // SAFETY: advice on our own live mapping.
            let _ = check(unsafe { libc::madvise(self.ptr.cast(), self.len, libc::MADV_SEQUENTIAL) } as libc::c_long);
        }
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping the mapping we own; no borrow outlives self.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}
