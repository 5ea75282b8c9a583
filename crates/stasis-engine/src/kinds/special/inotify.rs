//! inotify: the instance and its watches (wd, mask, watched inode).
//!
//! Dump: one fdinfo `inotify wd:` line per watch gives the wd, inode,
//! device, mask and the file handle (`fhandle-bytes`, `fhandle-type`,
//! `f_handle`). The watched file has no path in /proc: the handle is opened
//! with `open_by_handle_at` on a mount of that device (from our mountinfo)
//! and the path read back from the opened fd; both are kept (`fh_entry`).
//! Restore: `inotify_init1` in the restorer, then `inotify_add_watch` on the
//! path for each watch in wd order. The kernel hands out wds cyclically, so
//! a wd below the dumped one is removed and the add repeated until they
//! match (as CRIU does); the `IN_IGNORED` events this queues are drained.
//! Limits: the watched file must still be reachable by that path (resolved
//! in the dumper's mount namespace); events queued but unread at dump are
//! lost; a watch on a deleted file is refused at dump.

use super::{fd_err, fields, fown};
use crate::error::{DumpError, RestoreError};
use crate::kinds::fdkind::{FdDumpCtx, Install};
use crate::kinds::files::FdSeen;
use stasis_image::pb;
use stasis_sys::{fd as sysfd, special as sys, Pid};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;

/// Bits of a watch mask that `inotify_add_watch` takes back.
const USER_MASK: u32 = libc::IN_ALL_EVENTS | libc::IN_ONESHOT | libc::IN_EXCL_UNLINK;

struct Watch {
    wd: u32,
    ino: u64,
    sdev: u32,
    mask: u32,
    ignored: u32,
    htype: i32,
    handle: Vec<u8>,
}

fn parse(line: &str) -> Option<Watch> {
    let (first, m) = fields(line);
    let hex = |k: &str| u64::from_str_radix(m.get(k)?, 16).ok();
    let hs = m.get("f_handle")?;
    let handle =
        (0..hs.len() / 2).map(|i| u8::from_str_radix(&hs[2 * i..2 * i + 2], 16)).collect::<Result<_, _>>().ok()?;
    Some(Watch {
        wd: first?.parse().ok()?,
        ino: hex("ino")?,
        sdev: hex("sdev")? as u32,
        mask: hex("mask")? as u32,
        ignored: hex("ignored_mask").unwrap_or(0) as u32,
        htype: hex("fhandle-type")? as i32,
        handle,
    })
}

/// The path of the inode behind a file handle, through a mount of `sdev`.
fn resolve(w: &Watch) -> std::io::Result<String> {
    // The kernel's dev_t: major in the high 12 bits of 32, minor below.
    let (maj, min) = (w.sdev >> 20, w.sdev & 0xfffff);
    let want = format!("{maj}:{min}");
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut mounts: Vec<(bool, String)> = info
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 4 && f[2] == want).then(|| (f[3] == "/", f[4].replace("\\040", " ")))
        })
        .collect();
    mounts.sort_by_key(|(root, _)| !root);
    let mut last = std::io::Error::from(std::io::ErrorKind::NotFound);
    for (_, mnt) in mounts {
        // Not O_PATH: open_by_handle_at wants a real fd on the mount.
        let m =
            match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC).open(&mnt) {
                Ok(m) => m,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
        match sys::open_by_handle(m.as_fd(), w.htype, &w.handle, libc::O_PATH | libc::O_CLOEXEC) {
            Ok(fd) => {
                let p = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
                return Ok(p.to_string_lossy().into_owned());
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

pub fn dump(ctx: &mut FdDumpCtx<'_>, f: &FdSeen) -> Result<(pb::FdTypes, u32), DumpError> {
    let pid = ctx.pid;
    let id = ctx.table.new_id();
    let mut wds = Vec::new();
    for line in f.info.get_all("inotify wd") {
        let w = parse(line).ok_or_else(|| super::bad_fdinfo(pid, f, "inotify wd"))?;
        let path = resolve(&w).map_err(|e| DumpError::UnsupportedFd {
            pid,
            fd: f.fd,
            kind: format!(
                "inotify watch {} on inode {} (device {:#x}): cannot find its path ({e})",
                w.wd, w.ino, w.sdev
            ),
        })?;
        if path.ends_with(" (deleted)") {
            return Err(DumpError::UnsupportedFd {
                pid,
                fd: f.fd,
                kind: format!("inotify watch {} on the deleted file {path}", w.wd),
            });
        }
        let mut words = w.handle.clone();
        words.resize(w.handle.len().div_ceil(8) * 8, 0);
        wds.push(pb::InotifyWdEntry {
            id,
            i_ino: w.ino,
            mask: w.mask,
            ignored_mask: w.ignored,
            s_dev: w.sdev,
            wd: w.wd,
            f_handle: pb::FhEntry {
                bytes: w.handle.len() as u32,
                r#type: w.htype as u32,
                handle: words.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect(),
                path: Some(path),
                mnt_id: None,
            },
        });
    }
    ctx.table.push(pb::FileEntry {
        r#type: pb::FdTypes::Inotify as i32,
        id,
        ify: Some(pb::InotifyFileEntry { id, flags: f.flags, fown: fown(), wd: wds }),
        ..Default::default()
    });
    Ok((pb::FdTypes::Inotify, id))
}

pub fn open(st: &super::RestoreState, pid: Pid, fd: u32, e: &pb::InotifyFileEntry) -> Result<Install, RestoreError> {
    let ify = sys::inotify_init(libc::IN_CLOEXEC | libc::IN_NONBLOCK).map_err(fd_err(pid, fd, "inotify_init1"))?;
    let mut wds: Vec<&pb::InotifyWdEntry> = e.wd.iter().collect();
    wds.sort_by_key(|w| w.wd);
    let mut removed = false;
    for w in wds {
        let path = w.f_handle.path.as_deref().unwrap_or("");
        let what = format!("inotify watch {} on {path}", w.wd);
        let mut tries = 0u32;
        loop {
            let got = sys::inotify_add_watch(ify.as_fd(), &st.seen(path), w.mask & USER_MASK)
                .map_err(fd_err(pid, fd, &what))?;
            if got as u32 == w.wd {
                break;
            }
            tries += 1;
            if got as u32 > w.wd || tries > 1_000_000 {
                return Err(RestoreError::Task {
                    pid,
                    what: format!("fd {fd}: {what}: got watch descriptor {got}"),
                    source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
                });
            }
            sys::inotify_rm_watch(ify.as_fd(), got).map_err(fd_err(pid, fd, &what))?;
            removed = true;
        }
    }
    if removed {
        // Drop the IN_IGNORED events of the watches removed above.
        let mut f = std::fs::File::from(ify.try_clone().map_err(fd_err(pid, fd, "dup"))?);
        let mut buf = [0u8; 4096];
        while matches!(f.read(&mut buf), Ok(n) if n > 0) {}
    }
    if e.flags & libc::O_NONBLOCK as u32 == 0 {
        let fl = sysfd::status_flags(ify.as_fd()).map_err(fd_err(pid, fd, "F_GETFL"))?;
        sysfd::set_status_flags(ify.as_fd(), fl & !libc::O_NONBLOCK).map_err(fd_err(pid, fd, "F_SETFL"))?;
    }
    Ok(Install::Local(ify))
}

#[cfg(test)]
mod tests {
    #[test]
    fn wd_line() {
        let w = super::parse(
            "1 ino:3c4a7 sdev:fe00000 mask:100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a7c4030000000000",
        )
        .unwrap();
        assert_eq!((w.wd, w.ino, w.sdev, w.mask, w.htype), (1, 0x3c4a7, 0xfe00000, 0x100, 1));
        assert_eq!(w.handle, [0xa7, 0xc4, 0x03, 0, 0, 0, 0, 0]);
    }
}
