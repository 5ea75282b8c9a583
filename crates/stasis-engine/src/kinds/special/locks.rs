//! flock, POSIX (fcntl) and OFD locks held on files.
//!
//! Dump: the `lock:` lines of each regular file's fdinfo (same format as
//! /proc/locks: kind, type, owner pid, `MAJ:MIN:INODE`, range); a lock owned
//! by the process being dumped is recorded with that fd in
//! `file-locks.img` (CRIU's `file_lock_entry`). Restore: once the
//! process has its fds, an injected `flock(fd, LOCK_SH|LOCK_EX|LOCK_NB)`,
//! `fcntl(fd, F_SETLK)` or `fcntl(fd, F_OFD_SETLK)` in that process takes
//! the lock again (POSIX locks belong to the calling process, so it must be
//! the task itself).
//! Limits: a flock inherited by a child and held after the locker exited,
//! OFD locks (shown with pid -1), leases and blocked waiters are not
//! recorded; a lock that conflicts with one taken meanwhile fails the
//! restore, naming the fd.

use super::RestoreState;
use crate::error::{restore_io, DumpError, RestoreError};
use crate::kinds::fdkind::FdDumpCtx;
use crate::kinds::files::FdSeen;
use crate::restore::stub::Task;
use stasis_image::magic::file_name;
use stasis_image::{pb, ImageDirWriter, ImageKind};
use std::path::Path;

const FL_POSIX: u32 = 1;
const FL_FLOCK: u32 = 2;
const FL_OFDLCK: u32 = 8;
const F_OFD_SETLK: u64 = 37;

/// One line of /proc/locks.
#[derive(Clone, Debug, PartialEq)]
struct Lock {
    flag: u32,
    write: bool,
    pid: i32,
    dev: (u32, u32),
    ino: u64,
    start: i64,
    /// 0: to EOF.
    len: i64,
}

/// Locks seen while dumping.
#[derive(Default)]
pub struct DumpLocks {
    entries: Vec<pb::FileLockEntry>,
}

fn parse(text: &str) -> Vec<Lock> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[1] == "->" {
            continue;
        }
        let flag = match f[1] {
            "POSIX" => FL_POSIX,
            "FLOCK" => FL_FLOCK,
            "OFDLCK" => FL_OFDLCK,
            _ => continue,
        };
        let mut di = f[5].split(':');
        let (Some(maj), Some(min), Some(ino)) = (di.next(), di.next(), di.next()) else { continue };
        let (Ok(maj), Ok(min), Ok(ino)) = (u32::from_str_radix(maj, 16), u32::from_str_radix(min, 16), ino.parse())
        else {
            continue;
        };
        let (Ok(pid), Ok(start)) = (f[4].parse(), f[6].parse::<i64>()) else { continue };
        let len = match f[7] {
            "EOF" => 0,
            end => match end.parse::<i64>() {
                Ok(e) => e - start + 1,
                Err(_) => continue,
            },
        };
        out.push(Lock { flag, write: f[3] == "WRITE", pid, dev: (maj, min), ino, start, len });
    }
    out
}

/// glibc's encoding of a userspace dev_t.
#[cfg(test)]
fn split_dev(dev: u64) -> (u32, u32) {
    let maj = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let min = (dev & 0xff) | ((dev >> 12) & !0xff);
    (maj as u32, min as u32)
}

/// Records the locks `ctx.pid` holds on the file of `f`, from the `lock:`
/// lines of the fd's fdinfo. (Not /proc/locks: reading it takes a
/// system-wide percpu rwsem for writing, which costs an RCU grace period —
/// about 19 ms here, more than the rest of an nginx dump.)
pub fn note(ctx: &mut FdDumpCtx<'_>, f: &FdSeen, _md: &std::fs::Metadata) -> Result<(), DumpError> {
    let pid = ctx.pid;
    let lines: Vec<&str> = f.info.extra.iter().filter(|(k, _)| k == "lock").map(|(_, v)| v.as_str()).collect();
    if lines.is_empty() {
        return Ok(());
    }
    let st = &mut ctx.table.special.locks;
    for l in parse(&lines.join("\n")) {
        if l.pid != pid {
            continue;
        }
        st.entries.push(pb::FileLockEntry {
            flag: l.flag,
            r#type: if l.write { libc::F_WRLCK } else { libc::F_RDLCK } as u32,
            pid,
            fd: f.fd,
            start: l.start,
            len: l.len,
        });
    }
    Ok(())
}

pub fn write_image(st: &DumpLocks, staging: &ImageDirWriter) -> Result<(), DumpError> {
    if !st.entries.is_empty() {
        staging.write_entries(file_name::FILE_LOCKS, ImageKind::FileLocks, &st.entries)?;
    }
    Ok(())
}

pub fn load(dir: &Path) -> Result<Vec<pb::FileLockEntry>, RestoreError> {
    super::read_optional!(dir, file_name::FILE_LOCKS, ImageKind::FileLocks)
}

/// Takes the locks of this process again.
pub fn take(st: &RestoreState, task: &mut Task) -> Result<(), RestoreError> {
    let pid = task.pid;
    for l in st.locks.iter().filter(|l| l.pid == pid) {
        let fd = l.fd as u64;
        let write = l.r#type == libc::F_WRLCK as u32;
        let what = format!(
            "fd {}: take its {} {} lock",
            l.fd,
            if write { "write" } else { "read" },
            match l.flag {
                FL_FLOCK => "flock",
                FL_OFDLCK => "OFD",
                _ => "POSIX",
            }
        );
        if l.flag == FL_FLOCK {
            let op = if write { libc::LOCK_EX } else { libc::LOCK_SH } | libc::LOCK_NB;
            task.call(libc::SYS_flock, [fd, op as u64, 0, 0, 0, 0]).map_err(restore_io(pid, what))?;
            continue;
        }
        // struct flock { short l_type, l_whence; off_t l_start, l_len; pid_t l_pid; }
        let mut b = vec![0u8; 32];
        b[0..2].copy_from_slice(&(l.r#type as i16).to_ne_bytes());
        b[2..4].copy_from_slice(&(libc::SEEK_SET as i16).to_ne_bytes());
        b[8..16].copy_from_slice(&l.start.to_ne_bytes());
        b[16..24].copy_from_slice(&l.len.to_ne_bytes());
        let a = task.put(0, &b).map_err(restore_io(pid, "write struct flock"))?;
        let cmd = if l.flag == FL_OFDLCK { F_OFD_SETLK } else { libc::F_SETLK as u64 };
        task.call(libc::SYS_fcntl, [fd, cmd, a, 0, 0, 0]).map_err(restore_io(pid, what))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks() {
        let t = "1: POSIX  ADVISORY  WRITE 1234 08:01:123456 10 19\n\
                 1: -> POSIX  ADVISORY  WRITE 99 08:01:123456 10 19\n\
                 2: FLOCK  ADVISORY  READ 77 00:1f:99 0 EOF\n\
                 3: OFDLCK ADVISORY  READ -1 fe:00:5 0 EOF\n";
        let l = parse(t);
        assert_eq!(l.len(), 3);
        assert_eq!(l[0], Lock { flag: FL_POSIX, write: true, pid: 1234, dev: (8, 1), ino: 123456, start: 10, len: 10 });
        assert_eq!((l[1].flag, l[1].write, l[1].pid, l[1].dev, l[1].len), (FL_FLOCK, false, 77, (0, 0x1f), 0));
        assert_eq!((l[2].pid, l[2].dev), (-1, (0xfe, 0)));
        assert_eq!(split_dev(0xfe01), (0xfe, 1));
    }
}
