//! The files of a tmpfs mount as a gzipped tar (CRIU keeps them the same
//! way, in `tmpfs-dev-MNT.tar.gz.img`): directories, regular files,
//! symbolic links, device nodes and fifos, with owner and mode. Mounts
//! below the tmpfs are not descended into; their mountpoints come back
//! with the mounts.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Writes the files under `dir` (one file system) to `out`.
pub fn dump(dir: &Path, out: &Path) -> io::Result<()> {
    let dev = fs::symlink_metadata(dir)?.dev();
    let file = fs::File::create(out)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(dir.join(&rel))?.collect::<Result<Vec<_>, _>>()?;
        names.sort_by_key(|e| e.file_name());
        for entry in names {
            let rel = rel.join(entry.file_name());
            let path = dir.join(&rel);
            let md = fs::symlink_metadata(&path)?;
            let mut h = tar::Header::new_gnu();
            h.set_mode(md.mode() & 0o7777);
            h.set_uid(md.uid() as u64);
            h.set_gid(md.gid() as u64);
            h.set_mtime(md.mtime().max(0) as u64);
            h.set_size(0);
            let ft = md.file_type();
            if md.dev() != dev {
                // A mountpoint of another mount: only the mountpoint, a
                // directory or (for a file bind-mounted here, such as a
                // console's pty slave) an empty file.
                let dir = ft.is_dir();
                h.set_entry_type(if dir { tar::EntryType::Directory } else { tar::EntryType::Regular });
                h.set_mode(if dir { 0o755 } else { 0o644 });
                tar.append_data(&mut h, &rel, io::empty())?;
            } else if ft.is_dir() {
                h.set_entry_type(tar::EntryType::Directory);
                tar.append_data(&mut h, &rel, io::empty())?;
                stack.push(rel);
            } else if ft.is_file() {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(md.len());
                tar.append_data(&mut h, &rel, fs::File::open(&path)?)?;
            } else if ft.is_symlink() {
                h.set_entry_type(tar::EntryType::Symlink);
                tar.append_link(&mut h, &rel, fs::read_link(&path)?)?;
            } else if ft.is_char_device() || ft.is_block_device() {
                h.set_entry_type(if ft.is_char_device() { tar::EntryType::Char } else { tar::EntryType::Block });
                let rdev = md.rdev();
                h.set_device_major(libc::major(rdev))?;
                h.set_device_minor(libc::minor(rdev))?;
                tar.append_data(&mut h, &rel, io::empty())?;
            } else if ft.is_fifo() {
                h.set_entry_type(tar::EntryType::Fifo);
                tar.append_data(&mut h, &rel, io::empty())?;
            } else {
                log::debug!("tmpfs {}: skipping socket {}", dir.display(), rel.display());
            }
        }
    }
    tar.into_inner()?.finish()?.sync_all()
}

/// A path of the archive made safe to join to the target: relative, no
/// `..`.
fn safe_rel(p: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("path {} in archive leaves the target", p.display()),
                ))
            }
        }
    }
    Ok(out)
}

/// Recreates the files of `archive` under `dir`.
pub fn restore(archive: &Path, dir: &Path) -> io::Result<()> {
    let gz = flate2::read::GzDecoder::new(fs::File::open(archive)?);
    let mut tar = tar::Archive::new(gz);
    for entry in tar.entries()? {
        let mut entry = entry?;
        let rel = safe_rel(&entry.path()?)?;
        let path = dir.join(&rel);
        let h = entry.header().clone();
        let mode = h.mode()?;
        let (uid, gid) = (h.uid()? as u32, h.gid()? as u32);
        match h.entry_type() {
            tar::EntryType::Directory => {
                if !path.is_dir() {
                    fs::create_dir(&path)?;
                }
            }
            tar::EntryType::Regular => {
                let mut f = fs::File::create(&path)?;
                io::copy(&mut (&mut entry).take(h.size()?), &mut f)?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name()?.ok_or_else(|| io::Error::other("symlink without target"))?;
                std::os::unix::fs::symlink(target, &path)?;
            }
            t @ (tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo) => {
                let kind = match t {
                    tar::EntryType::Char => stasis_sys::ns::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let (major, minor) = (h.device_major()?.unwrap_or(0), h.device_minor()?.unwrap_or(0));
                stasis_sys::ns::mknod(&path, kind | (mode & 0o7777), major, minor)?;
            }
            _ => continue,
        }
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        if h.entry_type() != tar::EntryType::Symlink {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_files_links_and_modes() {
        let base = std::env::temp_dir().join(format!("stasis-tmpfs-{}", std::process::id()));
        let (src, dst) = (base.join("src"), base.join("dst"));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::create_dir_all(&dst).unwrap();
        fs::write(src.join("sub/file"), b"contents").unwrap();
        fs::set_permissions(src.join("sub/file"), fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("sub/file", src.join("link")).unwrap();
        let img = base.join("t.tar.gz");
        dump(&src, &img).unwrap();
        restore(&img, &dst).unwrap();
        assert_eq!(fs::read(dst.join("sub/file")).unwrap(), b"contents");
        assert_eq!(fs::metadata(dst.join("sub/file")).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(fs::read_link(dst.join("link")).unwrap(), Path::new("sub/file"));
        assert!(safe_rel(Path::new("../x")).is_err());
        fs::remove_dir_all(&base).unwrap();
    }
}
