//! [`TreeWriter`]: a directory tree as tar entries, for the archive and the rootfs diff.

use crate::error::{Ctx, Result, RuntimeError};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What the walk does with an overlay upper dir's special entries.
pub(super) struct Overlay<'a> {
    pub(super) is_opaque: &'a dyn Fn(&Path) -> io::Result<bool>,
    pub(super) whiteouts: Vec<PathBuf>,
    pub(super) opaque: Vec<PathBuf>,
}

/// Writes a directory tree as tar entries: names relative to its root in
/// sorted order (the same tree gives the same archive), mode, owner and
/// mtime as `tar` records them, every further name of a multiply linked
/// file as a hard link. Sockets cannot be archived and are left out.
pub(super) struct TreeWriter<'a, W: Write> {
    pub(super) tar: tar::Builder<BufWriter<W>>,
    /// The archive (for messages).
    out: &'a Path,
    /// (dev, ino) of the archive itself, left out should it be in the tree.
    skip: Option<(u64, u64)>,
    /// (dev, ino) -> first name, of files with more than one link.
    links: HashMap<(u64, u64), PathBuf>,
    pub(super) overlay: Option<Overlay<'a>>,
}

pub(super) fn header_of(meta: &fs::Metadata) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    h.set_mode(meta.mode() & 0o7777);
    h
}

impl<'a, W: Write> TreeWriter<'a, W> {
    pub(super) fn new(w: BufWriter<W>, out: &'a Path, archive_file: Option<&File>) -> Self {
        let skip = archive_file.and_then(|f| f.metadata().ok()).map(|m| (m.dev(), m.ino()));
        TreeWriter { tar: tar::Builder::new(w), out, skip, links: HashMap::new(), overlay: None }
    }

    pub(super) fn walk(&mut self, abs: &Path, rel: &Path) -> Result<()> {
        let mut names = Vec::new();
        for e in fs::read_dir(abs).ctx(|| format!("reading {}", abs.display()))? {
            names.push(e.ctx(|| format!("reading {}", abs.display()))?.file_name());
        }
        names.sort();
        for name in names {
            let (a, r) = (abs.join(&name), rel.join(&name));
            let meta = fs::symlink_metadata(&a).ctx(|| format!("reading {}", a.display()))?;
            self.entry(&a, &r, &meta)?;
        }
        Ok(())
    }

    fn entry(&mut self, abs: &Path, rel: &Path, meta: &fs::Metadata) -> Result<()> {
        let out = self.out;
        let writing = || format!("writing {}", out.display());
        let id = (meta.dev(), meta.ino());
        let ft = meta.file_type();
        if self.skip == Some(id) || ft.is_socket() {
            return Ok(());
        }
        if let Some(ov) = &mut self.overlay {
            if ft.is_char_device() && meta.rdev() == 0 {
                ov.whiteouts.push(rel.to_path_buf());
                return Ok(());
            }
            if ft.is_dir() && (ov.is_opaque)(abs).ctx(|| format!("reading xattrs of {}", abs.display()))? {
                ov.opaque.push(rel.to_path_buf());
            }
        }
        let mut h = header_of(meta);
        if !ft.is_dir() && meta.nlink() > 1 {
            if let Some(first) = self.links.get(&id) {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                return self.tar.append_link(&mut h, rel, first).ctx(writing);
            }
            self.links.insert(id, rel.to_path_buf());
        }
        if ft.is_dir() {
            let mut name = rel.as_os_str().to_owned();
            name.push("/");
            self.tar.append_data(&mut h, Path::new(&name), io::empty()).ctx(writing)?;
            self.walk(abs, rel)
        } else if ft.is_symlink() {
            let target = fs::read_link(abs).ctx(|| format!("reading link {}", abs.display()))?;
            self.tar.append_link(&mut h, rel, target).ctx(writing)
        } else if ft.is_file() {
            self.file(abs, rel, &mut h, meta.len())
        } else {
            if ft.is_char_device() || ft.is_block_device() {
                let dev = meta.rdev();
                h.set_device_major(libc::major(dev)).ctx(writing)?;
                h.set_device_minor(libc::minor(dev)).ctx(writing)?;
            }
            self.tar.append_data(&mut h, rel, io::empty()).ctx(writing)
        }
    }

    /// A regular file: header through `tar` (long names), then the data
    /// copied straight into the write buffer (large reads, no extra copy),
    /// exactly `size` bytes as the header says.
    fn file(&mut self, abs: &Path, rel: &Path, h: &mut tar::Header, size: u64) -> Result<()> {
        let out = self.out;
        let writing = || format!("writing {}", out.display());
        let f = File::open(abs).ctx(|| format!("opening {}", abs.display()))?;
        self.tar.append_data(h, rel, io::empty()).ctx(writing)?;
        let w = self.tar.get_mut();
        let n = io::copy(&mut f.take(size), w).ctx(|| format!("archiving {}", abs.display()))?;
        if n != size {
            return Err(RuntimeError::Archive(format!(
                "{}: changed while being archived ({n} bytes instead of {size})",
                abs.display()
            )));
        }
        let pad = (512 - size % 512) % 512;
        w.write_all(&[0u8; 512][..pad as usize]).ctx(writing)
    }

    /// Writes the end-of-archive blocks and returns the writer.
    pub(super) fn finish(self) -> Result<(BufWriter<W>, Option<Overlay<'a>>)> {
        let out = self.out;
        let w = self.tar.into_inner().ctx(|| format!("writing {}", out.display()))?;
        Ok((w, self.overlay))
    }
}
