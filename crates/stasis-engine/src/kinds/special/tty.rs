//! Pseudo-terminal pairs opened inside the tree: `/dev/ptmx` masters and
//! `/dev/pts/N` slaves, with the terminal's settings.
//!
//! Dump: a master's fdinfo has `tty-index:`; a slave's index is in its
//! path. One `tty_info_entry` per terminal (`tty-info.img`) keeps termios,
//! window size and the slave lock, read with `TCGETS`/`TIOCGWINSZ` on a copy
//! of the fd (on a master they act on the slave's settings); each fd is a
//! `tty_file_entry` with its flags and a regular-file entry for its path.
//! Restore: [`prepare`] opens `/dev/ptmx` in the restorer, again and again
//! (holding the extra ones) until the kernel hands out the dumped index, so
//! the slave path stays `/dev/pts/N`; if that index is taken, the pair gets
//! another one (the process still has a working pair, but `ptsname` and the
//! slave path differ, with a warning). Settings are put back through the
//! master; slaves are opened by path in the restorer with `O_NOCTTY`.
//! Limits: bytes buffered in the terminal, the controlling terminal, its
//! session and foreground group, packet mode and exclusive mode are not
//! restored; a slave whose master is outside the tree is reopened by path;
//! fds 0-2 on a terminal are the caller's (inherited, not dumped here).

use super::{fd_err, fown, open_local, read_optional, RestoreState};
use crate::error::{dump_io, DumpError, RestoreError};
use crate::kinds::fdkind::{FdDumpCtx, Install};
use crate::kinds::files::FdSeen;
use stasis_image::magic::file_name;
use stasis_image::{pb, ImageDirWriter, ImageKind};
use stasis_sys::{special as sys, Pid};
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Terminals seen while dumping, by pty index.
#[derive(Default)]
pub struct DumpTtys {
    infos: BTreeMap<u32, pb::TtyInfoEntry>,
}

/// Pty pairs re-created for restore.
#[derive(Default)]
pub struct RestoreTtys {
    /// tty_info id -> (master, slave path).
    pairs: HashMap<u32, (OwnedFd, String)>,
}

fn termios_entry(t: &libc::termios) -> pb::TermiosEntry {
    pb::TermiosEntry {
        c_iflag: t.c_iflag,
        c_oflag: t.c_oflag,
        c_cflag: t.c_cflag,
        c_lflag: t.c_lflag,
        c_line: t.c_line as u32,
        c_ispeed: t.c_ispeed,
        c_ospeed: t.c_ospeed,
        // The kernel's struct termios has 19 control characters.
        c_cc: t.c_cc[..19].iter().map(|&c| c as u32).collect(),
    }
}

fn termios_of(e: &pb::TermiosEntry, mut t: libc::termios) -> libc::termios {
    t.c_iflag = e.c_iflag;
    t.c_oflag = e.c_oflag;
    t.c_cflag = e.c_cflag;
    t.c_lflag = e.c_lflag;
    t.c_line = e.c_line as u8;
    for (d, s) in t.c_cc.iter_mut().zip(&e.c_cc) {
        *d = *s as u8;
    }
    t
}

pub fn dump(ctx: &mut FdDumpCtx<'_>, f: &FdSeen, path: &str) -> Result<(pb::FdTypes, u32), DumpError> {
    let pid = ctx.pid;
    let master = path == "/dev/ptmx";
    let index = if master {
        f.info.get_u64("tty-index").map(|i| i as u32)
    } else {
        path.strip_prefix("/dev/pts/").and_then(|n| n.parse().ok())
    };
    let Some(index) = index else {
        return Err(DumpError::UnsupportedFd { pid, fd: f.fd, kind: format!("terminal {path} without a pty index") });
    };
    if !ctx.table.special.ttys.infos.contains_key(&index) {
        let copy = ctx.copy_fd(f.fd).map_err(dump_io(pid, format!("copy terminal fd {}", f.fd)))?;
        let t = sys::tcgets(copy.as_fd()).map_err(dump_io(pid, format!("TCGETS on fd {}", f.fd)))?;
        let w = sys::get_winsize(copy.as_fd()).map_err(dump_io(pid, format!("TIOCGWINSZ on fd {}", f.fd)))?;
        let locked = master && sys::ptmx_locked(copy.as_fd()).unwrap_or(false);
        let md = std::fs::metadata(crate::proc::fdinfo::fd_link_path(pid, f.fd))
            .map_err(dump_io(pid, format!("stat fd {}", f.fd)))?;
        let id = ctx.table.new_id();
        ctx.table.special.ttys.infos.insert(
            index,
            pb::TtyInfoEntry {
                id,
                r#type: pb::TtyType::Pty as i32,
                locked,
                exclusive: false,
                packet_mode: false,
                sid: 0,
                pgrp: 0,
                rdev: md.rdev() as u32,
                termios: Some(termios_entry(&t)),
                termios_locked: None,
                winsize: Some(pb::WinsizeEntry {
                    ws_row: w.ws_row.into(),
                    ws_col: w.ws_col.into(),
                    ws_xpixel: w.ws_xpixel.into(),
                    ws_ypixel: w.ws_ypixel.into(),
                }),
                pty: Some(pb::TtyPtyEntry { index }),
                dev: None,
                uid: Some(md.uid()),
                gid: Some(md.gid()),
            },
        );
    }
    let tty_info_id = ctx.table.special.ttys.infos[&index].id;
    let regf_id = ctx.table.path_ref(path, f.flags);
    let id = ctx.table.new_id();
    ctx.table.push(pb::FileEntry {
        r#type: pb::FdTypes::Tty as i32,
        id,
        tty: Some(pb::TtyFileEntry { id, tty_info_id, flags: f.flags, fown: fown(), regf_id: Some(regf_id) }),
        ..Default::default()
    });
    Ok((pb::FdTypes::Tty, id))
}

pub fn write_image(st: &DumpTtys, staging: &ImageDirWriter) -> Result<(), DumpError> {
    if !st.infos.is_empty() {
        let v: Vec<pb::TtyInfoEntry> = st.infos.values().cloned().collect();
        staging.write_entries(file_name::TTY_INFO, ImageKind::TtyInfo, &v)?;
    }
    Ok(())
}

/// Opens /dev/ptmx until the kernel gives pty `want` (or a later one).
fn open_ptmx(want: u32) -> std::io::Result<(OwnedFd, u32)> {
    let mut held = Vec::new();
    loop {
        let m = open_local("/dev/ptmx", libc::O_RDWR as u32)?;
        let idx = sys::ptmx_index(m.as_fd())?;
        if idx >= want || held.len() > 4096 {
            return Ok((m, idx));
        }
        held.push(m);
    }
}

fn is_master(st: &RestoreState, e: &pb::TtyFileEntry) -> bool {
    e.regf_id.and_then(|r| st.regs.get(&r)).is_some_and(|r| r.name.ends_with("ptmx"))
}

/// Re-creates every pty pair whose master was dumped.
pub fn prepare(st: &mut RestoreState, dir: &Path, files: &[pb::FileEntry]) -> Result<(), RestoreError> {
    let infos: Vec<pb::TtyInfoEntry> = read_optional!(dir, file_name::TTY_INFO, ImageKind::TtyInfo)?;
    for info in infos {
        let Some(pty) = &info.pty else { continue };
        let has_master =
            files.iter().filter_map(|e| e.tty.as_ref()).any(|t| t.tty_info_id == info.id && is_master(st, t));
        if !has_master {
            continue;
        }
        let err = |w: String| move |source| RestoreError::Task { pid: 0, what: w, source };
        let (m, idx) = open_ptmx(pty.index).map_err(err(format!("open /dev/ptmx for pty {}", pty.index)))?;
        if idx != pty.index {
            log::warn!("pty {} is taken; restored as /dev/pts/{idx}", pty.index);
        }
        if let Some(t) = &info.termios {
            let cur = sys::tcgets(m.as_fd()).map_err(err(format!("pty {idx}: TCGETS")))?;
            sys::tcsets(m.as_fd(), &termios_of(t, cur)).map_err(err(format!("pty {idx}: TCSETS")))?;
        }
        if let Some(w) = &info.winsize {
            let ws = libc::winsize {
                ws_row: w.ws_row as u16,
                ws_col: w.ws_col as u16,
                ws_xpixel: w.ws_xpixel as u16,
                ws_ypixel: w.ws_ypixel as u16,
            };
            sys::set_winsize(m.as_fd(), &ws).map_err(err(format!("pty {idx}: TIOCSWINSZ")))?;
        }
        sys::ptmx_set_lock(m.as_fd(), false).map_err(err(format!("pty {idx}: unlock")))?;
        st.ttys.pairs.insert(info.id, (m, format!("/dev/pts/{idx}")));
    }
    Ok(())
}

pub fn open(st: &mut RestoreState, pid: Pid, fd: u32, e: &pb::TtyFileEntry) -> Result<Install, RestoreError> {
    let master = is_master(st, e);
    let dumped_path = e.regf_id.and_then(|r| st.regs.get(&r)).map(|r| r.name.clone()).unwrap_or_default();
    let Some((m, slave)) = st.ttys.pairs.get(&e.tty_info_id) else {
        // Master outside the tree: reopen the slave by its path.
        let f = open_local(&dumped_path, e.flags).map_err(fd_err(pid, fd, format!("open {dumped_path}")))?;
        return Ok(Install::Local(f));
    };
    if master {
        let m = m.try_clone().map_err(fd_err(pid, fd, "dup pty master"))?;
        let fl = (e.flags & (libc::O_NONBLOCK | libc::O_APPEND | libc::O_ASYNC) as u32) as i32;
        stasis_sys::fd::set_status_flags(m.as_fd(), libc::O_RDWR | fl).map_err(fd_err(pid, fd, "F_SETFL"))?;
        return Ok(Install::Local(m));
    }
    let f = open_local(slave, e.flags).map_err(fd_err(pid, fd, format!("open {slave}")))?;
    Ok(Install::Local(f))
}
