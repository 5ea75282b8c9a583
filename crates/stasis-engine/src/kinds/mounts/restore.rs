//! Restore side: rebuilds the dumped mounts under a new root, in a fresh
//! mount namespace (the restored init's, before it pivots into the root).
//! Runs in that single-threaded child; failures are messages for the
//! restorer, which reports them.

use super::{fstype_name, tmpfs};
use stasis_image::magic::file_name;
use stasis_image::pb::MntEntry;
use stasis_sys::ns;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

type Step = Result<(), String>;

/// A mount already rebuilt: its file system, the part of it mounted, and
/// where it is now.
struct Placed {
    dev: u32,
    fstype: u32,
    root: String,
    at: PathBuf,
}

/// CRIU's code for devpts.
const DEVPTS: u32 = 6;

/// A new pty pair in the devpts instance mounted at `pts`: its master and
/// the slave's path. Runtimes bind a terminal's slave onto `/dev/console`;
/// that terminal's master lived outside the container (the runtime's), so
/// a restore makes a new pair for the bind and hands its master back.
fn new_pty(pts: &Path) -> Result<(std::os::fd::OwnedFd, PathBuf), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let ptmx = pts.join("ptmx");
    let err = |e: std::io::Error| format!("opening a terminal at {}: {e}", ptmx.display());
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&ptmx)
        .map_err(err)?;
    let fd = std::os::fd::OwnedFd::from(f);
    stasis_sys::special::ptmx_set_lock(std::os::fd::AsFd::as_fd(&fd), false).map_err(err)?;
    let n = stasis_sys::special::ptmx_index(std::os::fd::AsFd::as_fd(&fd)).map_err(err)?;
    Ok((fd, pts.join(n.to_string())))
}

fn mount(src: Option<&str>, target: &Path, fstype: Option<&str>, flags: u64, data: Option<&str>) -> Step {
    ns::mount(src, target, fstype, flags as libc::c_ulong, data)
        .map_err(|e| format!("mounting {} on {}: {e}", fstype.or(src).unwrap_or("?"), target.display()))
}

/// Makes sure `target` exists to mount something like `like` on it.
fn mountpoint_for(target: &Path, file_like: bool) -> Step {
    if target.symlink_metadata().is_ok() {
        return Ok(());
    }
    let r = if file_like {
        if let Some(p) = target.parent() {
            let _ = std::fs::create_dir_all(p);
        }
        std::fs::File::create(target).map(drop)
    } else {
        std::fs::create_dir_all(target)
    };
    r.map_err(|e| format!("creating mountpoint {}: {e}", target.display()))
}

/// What [`build`] made besides mounts.
#[derive(Debug, Default)]
pub struct Built {
    /// The master of the terminal bound where a pty slave was (the
    /// container's console), and the slave's path under the new root.
    pub console: Option<(std::os::fd::OwnedFd, PathBuf)>,
}

/// Rebuilds `mounts` (from `mountpoints-1.img`, in order) with their root
/// at `root`, an existing directory; tmpfs files come from `images`,
/// external mounts from the host paths in `external` (by key). The caller
/// pivots into `root` afterwards.
pub fn build(
    root: &Path,
    mounts: &[MntEntry],
    external: &HashMap<String, PathBuf>,
    images: &Path,
) -> Result<Built, String> {
    let mut built = Built::default();
    mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    let root_s = root.to_str().ok_or_else(|| format!("root {} is not UTF-8", root.display()))?;
    // A bind of itself: pivot_root needs a mount point.
    mount(Some(root_s), root, None, libc::MS_BIND | libc::MS_REC, None)?;
    let mut placed: Vec<Placed> = Vec::new();
    // Read-only and other per-mount flags go on last: a read-only mount
    // may hold mountpoints still to create.
    let mut remounts: Vec<(PathBuf, u64)> = Vec::new();
    for m in mounts {
        if m.mountpoint == "/" {
            placed.push(Placed { dev: m.root_dev, fstype: m.fstype, root: m.root.clone(), at: root.to_path_buf() });
            if m.flags as u64 & libc::MS_RDONLY != 0 {
                remounts.push((root.to_path_buf(), m.flags as u64));
            }
            continue;
        }
        let at = root.join(m.mountpoint.trim_start_matches('/'));
        let ext_key = m.ext_key.as_deref().filter(|_| m.ext_mount == Some(true));
        let base = placed.iter().rev().find(|p| p.dev == m.root_dev && super::dump::is_within(&p.root, &m.root));
        if let Some(key) = ext_key {
            let src = external.get(key).ok_or_else(|| {
                format!(
                    "no host path given for the external mount {} (key {key}); pass ext_mnt {key}:PATH",
                    m.mountpoint
                )
            })?;
            mountpoint_for(&at, !src.is_dir())?;
            let s = src.to_str().ok_or_else(|| format!("path {} is not UTF-8", src.display()))?;
            mount(Some(s), &at, None, libc::MS_BIND | libc::MS_REC, None)?;
            remounts.push((at.clone(), m.flags as u64));
        } else if let Some(b) = base {
            let rel = m.root.strip_prefix(&b.root).unwrap_or("").trim_start_matches('/');
            let mut src = if rel.is_empty() { b.at.clone() } else { b.at.join(rel) };
            if b.fstype == DEVPTS && !rel.is_empty() && rel != "ptmx" && !src.exists() {
                if built.console.is_some() {
                    return Err(format!("a second terminal bind ({}) is not supported", m.mountpoint));
                }
                let (master, slave) = new_pty(&b.at)?;
                let in_tree = Path::new("/").join(slave.strip_prefix(root).unwrap_or(&slave));
                built.console = Some((master, in_tree));
                src = slave;
            }
            mountpoint_for(&at, !src.is_dir())?;
            let s = src.to_str().ok_or_else(|| format!("path {} is not UTF-8", src.display()))?;
            mount(Some(s), &at, None, libc::MS_BIND, None)?;
            remounts.push((at.clone(), m.flags as u64));
        } else {
            let fstype = fstype_name(m);
            mountpoint_for(&at, false)?;
            let flags = m.flags as u64 & !libc::MS_RDONLY;
            let data = (!m.options.is_empty()).then_some(m.options.as_str());
            mount(Some(&m.source), &at, Some(&fstype), flags, data)?;
            if fstype == "tmpfs" {
                let img = images.join(file_name::tmpfs_dev(m.mnt_id));
                if img.exists() {
                    tmpfs::restore(&img, &at).map_err(|e| format!("filling tmpfs {}: {e}", m.mountpoint))?;
                }
            }
            // A read-only superblock (sysfs, masking tmpfs) once filled.
            if m.sb_flags.unwrap_or(0) as u64 & libc::MS_RDONLY != 0 {
                mount(None, &at, None, libc::MS_REMOUNT | libc::MS_RDONLY | flags, data)?;
            }
            if m.flags as u64 & libc::MS_RDONLY != 0 {
                remounts.push((at.clone(), m.flags as u64));
            }
        }
        placed.push(Placed { dev: m.root_dev, fstype: m.fstype, root: m.root.clone(), at });
    }
    for (at, flags) in remounts {
        let keep = libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC
            | libc::MS_NOATIME
            | libc::MS_NODIRATIME
            | libc::MS_RELATIME
            | libc::MS_STRICTATIME;
        mount(None, &at, None, libc::MS_REMOUNT | libc::MS_BIND | (flags & keep), None)?;
    }
    Ok(built)
}
