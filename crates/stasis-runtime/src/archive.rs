//! Safe extraction of tarballs into a rootfs or layer directory.
//!
//! Plain, gzip and zstd tarballs are told apart by their magic bytes. Every
//! entry is checked before it is written: a `..` component, or a relative
//! symlink or hard link that climbs above the root, refuses the whole
//! archive (the caller extracts into a staging dir and removes it, so
//! nothing half-made remains). `tar`'s `unpack_in` additionally refuses to
//! write through a symlink that points outside. Docker/OCI whiteouts
//! (`.wh.NAME`, `.wh..wh..opq`) become overlayfs whiteouts (a 0/0 char
//! device, `trusted.overlay.opaque=y`).

use crate::error::{Ctx, Result, RuntimeError};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// A reader that hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new() }
    }

    /// Reads the rest of the stream and returns `sha256:HEX` of everything.
    pub fn finish(mut self) -> io::Result<String> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(format!("sha256:{}", hex::encode(self.hasher.finalize())))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Opens `path` and undoes gzip or zstd compression if its magic says so.
pub fn open_decompressed(path: &Path) -> Result<Box<dyn Read>> {
    let mut f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 4];
    let n = read_full(&mut f, &mut magic).ctx(|| format!("reading {}", path.display()))?;
    let head = io::Cursor::new(magic[..n].to_vec());
    let r = BufReader::new(head.chain(f));
    decompress(&magic[..n], r, path)
}

fn decompress<R: Read + 'static>(magic: &[u8], r: R, path: &Path) -> Result<Box<dyn Read>> {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(r)))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let d = zstd::stream::read::Decoder::new(r).ctx(|| format!("opening zstd stream {}", path.display()))?;
        Ok(Box::new(d))
    } else {
        Ok(Box::new(r))
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// `p` made relative to the rootfs (a leading `/` and `.` dropped); `None`
/// when it has a `..` component, which could leave the rootfs.
pub(crate) fn relative_in_root(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// The entry path made relative, refusing `..`.
fn clean_path(p: &Path, what: &str) -> Result<PathBuf> {
    relative_in_root(p).ok_or_else(|| {
        RuntimeError::Archive(format!("{what}: entry {} escapes the rootfs ('..' component)", p.display()))
    })
}

/// Whether a relative link `target`, placed at `entry`, stays inside.
fn link_stays_inside(entry: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return true; // resolved against the container's root at run time
    }
    let mut depth = entry.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    true
}

/// Checks one entry against the rules above (no `..`, links that stay
/// inside) and returns its path as written (for messages) and made relative
/// (empty for the root entry, which callers skip). Shared with
/// `ckpt_archive`, which unpacks checkpoint archives under the same rules.
pub(crate) fn checked_entry_path<R: Read>(entry: &tar::Entry<'_, R>, what: &str) -> Result<(PathBuf, PathBuf)> {
    let corrupt = |e: io::Error| RuntimeError::Archive(format!("{what}: not a valid tar archive: {e}"));
    let raw = entry.path().map_err(corrupt)?.into_owned();
    let rel = clean_path(&raw, what)?;
    let kind = entry.header().entry_type();
    if !rel.as_os_str().is_empty() && (kind.is_symlink() || kind.is_hard_link()) {
        let target = entry.link_name().map_err(corrupt)?.unwrap_or_default().into_owned();
        let inside =
            if kind.is_hard_link() { clean_path(&target, what).is_ok() } else { link_stays_inside(&rel, &target) };
        if !inside {
            return Err(RuntimeError::Archive(format!(
                "{what}: link {} -> {} escapes the rootfs",
                raw.display(),
                target.display()
            )));
        }
    }
    Ok((raw, rel))
}

/// Extracts the tar stream `r` into `dest` (which must exist), checking
/// every entry. `what` names the archive in errors.
pub fn extract(r: impl Read, dest: &Path, what: &str) -> Result<()> {
    let corrupt = |e: io::Error| RuntimeError::Archive(format!("{what}: not a valid tar archive: {e}"));
    let mut ar = tar::Archive::new(r);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_overwrite(true);
    let mut count = 0usize;
    for entry in ar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        count += 1;
        let (raw, rel) = checked_entry_path(&entry, what)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let parent = dest.join(rel.parent().unwrap_or(Path::new("")));
            fs::create_dir_all(&parent).ctx(|| format!("creating {}", parent.display()))?;
            if hidden == ".wh..opq" {
                stasis_sys::ns::lsetxattr(&parent, "trusted.overlay.opaque", b"y")
                    .ctx(|| format!("marking {} opaque", parent.display()))?;
            } else {
                let p = parent.join(hidden);
                let _ = fs::remove_file(&p);
                let _ = fs::remove_dir_all(&p);
                stasis_sys::ns::mknod(&p, stasis_sys::ns::S_IFCHR, 0, 0)
                    .ctx(|| format!("creating whiteout {}", p.display()))?;
            }
            continue;
        }
        let ok = entry.unpack_in(dest).map_err(|e| {
            // tar nests "failed to unpack" errors: the deepest cause says why.
            let mut cause: &dyn std::error::Error = &e;
            while let Some(c) = cause.source() {
                cause = c;
            }
            RuntimeError::Archive(format!("{what}: corrupt archive at entry {}: {cause}", raw.display()))
        })?;
        if !ok {
            return Err(RuntimeError::Archive(format!("{what}: entry {} escapes the rootfs", raw.display())));
        }
    }
    if count == 0 {
        return Err(RuntimeError::Archive(format!("{what}: empty or not a tar archive")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links() {
        assert!(link_stays_inside(Path::new("bin/sh"), Path::new("busybox")));
        assert!(link_stays_inside(Path::new("usr/bin/x"), Path::new("../../bin/busybox")));
        assert!(!link_stays_inside(Path::new("usr/bin/x"), Path::new("../../../etc/passwd")));
        assert!(!link_stays_inside(Path::new("x"), Path::new("..")));
        assert!(link_stays_inside(Path::new("x"), Path::new("/etc")));
    }

    #[test]
    fn dotdot_refused() {
        assert!(clean_path(Path::new("./a/../b"), "t").is_err());
        assert_eq!(clean_path(Path::new("/a/./b"), "t").unwrap(), PathBuf::from("a/b"));
    }
}
