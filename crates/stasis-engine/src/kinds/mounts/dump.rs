//! Dump side: mountinfo of the tree's root → `mnt_entry`s, plus the files
//! of every tmpfs.

use super::{fstype_code, mount_flags, tmpfs, FRESH, FSTYPE_AUTO};
use crate::error::DumpError;
use crate::proc::{read_mountinfo, MountInfo};
use stasis_image::magic::file_name;
use stasis_image::{pb, ImageDirWriter, ImageKind};
use stasis_sys::Pid;

/// The id of the mount namespace in image file names.
pub const MNT_NS_ID: u32 = 1;

/// Whether `inner` is `outer` or below it, as paths inside a file system.
pub(super) fn is_within(outer: &str, inner: &str) -> bool {
    outer == "/" || inner == outer || inner.strip_prefix(outer).is_some_and(|r| r.starts_with('/'))
}

fn unsupported(pid: Pid, m: &MountInfo, why: &str) -> DumpError {
    DumpError::Mount { pid, mountpoint: m.mountpoint.clone(), why: format!("{} from {} is {why}", m.fstype, m.source) }
}

/// Superblock options without `rw`/`ro` (those are flags).
fn sb_options(m: &MountInfo) -> (String, u32) {
    let mut ro = 0;
    let mut kept = Vec::new();
    for o in m.super_opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => ro = libc::MS_RDONLY as u32,
            "rw" => {}
            o => kept.push(o),
        }
    }
    (kept.join(","), ro)
}

/// Builds the entries for the mounts of `pid`'s namespace and writes them
/// (and tmpfs contents) into `staging`. `external` maps mountpoints (as
/// the tree sees them) to the keys a restore will be given host paths by.
pub fn dump_mounts(pid: Pid, external: &[(String, String)], staging: &ImageDirWriter) -> Result<usize, DumpError> {
    let infos = read_mountinfo(pid).map_err(|source| DumpError::Proc { pid, source })?;
    let root_pos = infos
        .iter()
        .position(|m| m.mountpoint == "/")
        .ok_or_else(|| DumpError::Unsupported { pid, what: "its mount namespace has no mount at its root".into() })?;
    let mut entries: Vec<pb::MntEntry> = Vec::new();
    let mut tmpfs_files = 0;
    for (i, m) in infos.iter().enumerate() {
        // Mounts under the root only (a root made by pivot_root hides the
        // rest; a chroot-ed tree may see more).
        if i < root_pos && m.mountpoint == "/" {
            continue;
        }
        let (options, sb_flags) = sb_options(m);
        let mut e = pb::MntEntry {
            fstype: fstype_code(&m.fstype),
            mnt_id: m.mnt_id,
            root_dev: m.dev(),
            parent_mnt_id: m.parent_id,
            flags: mount_flags(&m.mount_opts),
            root: m.root.clone(),
            mountpoint: m.mountpoint.clone(),
            source: m.source.clone(),
            options,
            sb_flags: Some(sb_flags),
            ..Default::default()
        };
        if e.fstype == FSTYPE_AUTO {
            e.fsname = Some(m.fstype.clone());
        }
        if i == root_pos {
            entries.push(e);
            continue;
        }
        if let Some((_, key)) = external.iter().find(|(mp, _)| *mp == m.mountpoint) {
            e.ext_mount = Some(true);
            e.ext_key = Some(key.clone());
            entries.push(e);
            continue;
        }
        let bind_of = entries.iter().any(|b| b.root_dev == e.root_dev && is_within(&b.root, &e.root));
        if !bind_of {
            if !FRESH.contains(&m.fstype.as_str()) {
                return Err(unsupported(pid, m, "a file system a restore cannot mount afresh"));
            }
            if m.root != "/" {
                return Err(unsupported(pid, m, "only part of its file system"));
            }
            if m.fstype == "tmpfs" {
                let dir = format!("/proc/{pid}/root{}", m.mountpoint);
                let out = staging.file(&file_name::tmpfs_dev(m.mnt_id));
                tmpfs::dump(std::path::Path::new(&dir), &out)
                    .map_err(|source| DumpError::Write { path: out.clone(), source })?;
                tmpfs_files += 1;
            }
        }
        entries.push(e);
    }
    log::debug!("dump {pid}: {} mounts, {tmpfs_files} tmpfs saved", entries.len());
    staging.write_entries(&file_name::mountpoints(MNT_NS_ID), ImageKind::Mnts, &entries)?;
    Ok(entries.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within() {
        assert!(is_within("/", "/null"));
        assert!(is_within("/a", "/a/b"));
        assert!(is_within("/a", "/a"));
        assert!(!is_within("/a", "/ab"));
    }
}
