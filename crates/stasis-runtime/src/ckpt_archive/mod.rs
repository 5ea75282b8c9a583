//! Podman's checkpoint archive (`container checkpoint --export FILE`,
//! `container restore --import FILE`) and the container's rootfs diff.
//!
//! ```text
//! FILE (tar; zstd, gzip or none)       dir of a checkpoint
//! ├── config.dump, spec.dump           JSON
//! ├── network.status, stats-dump       JSON
//! ├── checkpoint/inventory.img, ...    CRIU images
//! ├── rootfs-diff.tar                  optional: the overlay upper dir
//! ├── deleted.files                    optional: JSON ["etc/motd", ...]
//! ├── opaque.dirs                      optional (ours): JSON ["var/cache", ...]
//! └── ctr.log
//! ```
//!
//! [`pack`] and [`unpack`] move such a directory to and from one file: the
//! archive is written beside its final name, fsynced and renamed (never a
//! partial FILE); unpacking goes into a new directory that is removed again
//! on any error. Entries are checked with the rules of [`crate::archive`]
//! (no `..`, no link leaving the tree, nothing written through a symlink),
//! and a tar stream that ends without its end-of-archive blocks counts as
//! truncated (the `tar` crate alone would take it as complete).
//!
//! The rootfs diff is the overlayfs upper dir: [`write_rootfs_diff`] tars it
//! without its whiteouts (char device 0/0), which go to `deleted.files`, and
//! lists opaque dirs (`trusted.overlay.opaque=y`) in `opaque.dirs`, since a
//! tar of ours does not carry xattrs. [`apply_rootfs_diff`] undoes this in a
//! fresh container's upper dir: everything is built in a staging dir beside
//! it and only then moved in, so a refused or broken diff leaves the upper
//! dir as it was.

use crate::archive;
use crate::error::{Ctx, Result, RuntimeError};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod rootfs_diff;
mod tree_writer;

pub use rootfs_diff::{apply_rootfs_diff, write_rootfs_diff};
use tree_writer::TreeWriter;

/// The rootfs diff inside a checkpoint dir (podman's names).
pub const ROOTFS_DIFF: &str = "rootfs-diff.tar";
pub const DELETED_FILES: &str = "deleted.files";
/// Ours: opaque dirs of the upper dir, which a tar without xattrs loses.
pub const OPAQUE_DIRS: &str = "opaque.dirs";

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Write buffer of the archive: file data is read straight into it.
const BUF_SIZE: usize = 1 << 20;

/// How [`pack`] compresses the archive ([`unpack`] detects it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    Gzip,
    None,
}

impl Compression {
    /// `zstd` (`zst`), `gzip` (`gz`) or `none` (`uncompressed`).
    pub fn parse(s: &str) -> Result<Compression> {
        match s.to_ascii_lowercase().as_str() {
            "zstd" | "zst" => Ok(Compression::Zstd),
            "gzip" | "gz" => Ok(Compression::Gzip),
            "none" | "uncompressed" => Ok(Compression::None),
            _ => Err(RuntimeError::Invalid(format!("unknown compression '{s}' (accepted: zstd, gzip, none)"))),
        }
    }
}

// ------------------------------------------------------------- pack / unpack

/// Packs `dir` (names relative to it: `config.dump`, `checkpoint/...`) into
/// `out`: written to a temporary file beside it (mode 0600), fsynced, then
/// renamed over `out`. On error nothing is left at `out` or beside it.
pub fn pack(dir: &Path, out: &Path, c: Compression) -> Result<()> {
    let meta = fs::metadata(dir).ctx(|| format!("reading checkpoint dir {}", dir.display()))?;
    if !meta.is_dir() {
        return Err(RuntimeError::Invalid(format!("{} is not a directory", dir.display())));
    }
    let name = out
        .file_name()
        .ok_or_else(|| RuntimeError::Invalid(format!("{}: not a file name", out.display())))?
        .to_string_lossy();
    let tmp = out.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut file = NewFile::create(&tmp)?;
    let writing = || format!("writing {}", tmp.display());

    let sink = Sink::new(file.file.try_clone().ctx(writing)?, c).ctx(writing)?;
    let mut w = TreeWriter::new(BufWriter::with_capacity(BUF_SIZE, sink), &tmp, Some(&file.file));
    w.walk(dir, Path::new(""))?;
    let (buf, _) = w.finish()?;
    let sink = buf.into_inner().map_err(|e| e.into_error()).ctx(writing)?;
    sink.finish().ctx(writing)?;
    file.file.sync_all().ctx(writing)?;

    fs::rename(&tmp, out).ctx(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
    file.path = out.to_path_buf();
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(parent).and_then(|d| d.sync_all()).ctx(|| format!("syncing {}", parent.display()))?;
    file.keep();
    Ok(())
}

/// Unpacks an archive of [`pack`] (or podman's) into `dest`, which must not
/// exist; it is created (0700) and removed again on any error.
pub fn unpack(archive: &Path, dest: &Path) -> Result<()> {
    unpack_images(archive, dest, "checkpoint")
}

/// [`unpack`] for an archive whose images are in `images/` (podman's
/// pre-checkpoint archives use `pre-checkpoint/`).
pub fn unpack_images(archive: &Path, dest: &Path, images: &str) -> Result<()> {
    let what = archive.display().to_string();
    let src = archive::open_decompressed(archive)?;
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dest) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(RuntimeError::Conflict(format!("{} already exists", dest.display())))
        }
        r => r.ctx(|| format!("creating {}", dest.display()))?,
    }
    let result = unpack_into(src, dest, &what).and_then(|()| {
        let is_file = |rel: &str| fs::symlink_metadata(dest.join(rel)).is_ok_and(|m| m.is_file());
        if is_file("config.dump") && is_file(&format!("{images}/inventory.img")) {
            Ok(())
        } else {
            Err(RuntimeError::Archive(format!(
                "{what} is not a {} archive (no config.dump / {images}/inventory.img)",
                if images == "checkpoint" { "checkpoint" } else { "pre-checkpoint" }
            )))
        }
    });
    if result.is_err() {
        if let Err(e) = fs::remove_dir_all(dest) {
            log::warn!("removing {}: {e}", dest.display());
        }
    }
    result
}

/// Why unpacking stopped, told apart once the reader can be looked at.
enum Stop {
    /// The stream could not be read as a tar archive.
    Read(io::Error),
    /// An entry could not be written (or the reader failed meanwhile).
    Write(PathBuf, io::Error),
    /// An entry was refused.
    Refused(RuntimeError),
}

fn unpack_into(src: Box<dyn Read>, dest: &Path, what: &str) -> Result<()> {
    let mut src = Tracked::new(src);
    let stop = unpack_entries(&mut src, dest, what).err();
    let corrupt = |detail: &dyn std::fmt::Display| {
        RuntimeError::Archive(format!("{what}: truncated or corrupt checkpoint archive: {detail}"))
    };
    let reader_failed = |src: &Tracked<_>| match (&src.error, src.eof) {
        (Some(e), _) => Some(corrupt(e)),
        (None, true) => Some(corrupt(&"unexpected end of data")),
        (None, false) => None,
    };
    match stop {
        Some(Stop::Refused(e)) => Err(e),
        Some(Stop::Read(e)) => {
            Err(reader_failed(&src).unwrap_or_else(|| corrupt(&format!("bad tar header: {}", tidy(&e.to_string())))))
        }
        Some(Stop::Write(entry, e)) => match reader_failed(&src) {
            Some(err) => Err(err),
            None => Err(e).ctx(|| format!("{what}: unpacking {} into {}", entry.display(), dest.display())),
        },
        None => {
            if let Some(err) = reader_failed(&src) {
                return Err(err);
            }
            // The rest (end blocks, padding) lets the decompressor check its
            // frame end and checksum.
            io::copy(&mut src, &mut io::sink()).map_err(|e| corrupt(&e))?;
            Ok(())
        }
    }
}

fn unpack_entries(src: &mut Tracked<Box<dyn Read>>, dest: &Path, what: &str) -> std::result::Result<(), Stop> {
    let mut ar = tar::Archive::new(src);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_overwrite(true);
    let mut count = 0usize;
    let mut parent_link = false;
    let buf = &mut vec![0u8; BUF_SIZE];
    for entry in ar.entries().map_err(Stop::Read)? {
        let mut entry = entry.map_err(Stop::Read)?;
        count += 1;
        if is_parent_link(&entry) {
            parent_link = true;
            continue;
        }
        let (raw, rel) = archive::checked_entry_path(&entry, what).map_err(Stop::Refused)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        if let Some(link) = symlink_on_path(dest, &rel) {
            return Err(Stop::Refused(RuntimeError::Archive(format!(
                "{what}: entry {} would be written through symlink {}",
                raw.display(),
                link.display()
            ))));
        }
        if entry.header().entry_type().is_file() {
            write_file(&mut entry, &dest.join(&rel), buf).map_err(|e| Stop::Write(raw, e))?;
            continue;
        }
        match entry.unpack_in(dest) {
            Ok(true) => {}
            Ok(false) => {
                return Err(Stop::Refused(RuntimeError::Archive(format!(
                    "{what}: entry {} escapes the destination",
                    raw.display()
                ))))
            }
            Err(e) => return Err(Stop::Write(raw, e)),
        }
    }
    if count == 0 {
        return Err(Stop::Read(io::Error::new(io::ErrorKind::InvalidData, "no tar entries")));
    }
    if parent_link {
        // Made last, so no entry can be written through it.
        let link = dest.join(PARENT_LINK);
        std::os::unix::fs::symlink(PARENT_LINK_TARGET, &link).map_err(|e| Stop::Write(link, e))?;
    }
    Ok(())
}

/// The images' link to their pre-checkpoint (`--with-previous`). It leaves
/// the bundle on purpose, so the general link check would refuse it; only
/// this exact entry is let through, and the link is made by us.
const PARENT_LINK: &str = "checkpoint/parent";
const PARENT_LINK_TARGET: &str = crate::precheckpoint::PARENT_LINK_TARGET;

fn is_parent_link<R: Read>(entry: &tar::Entry<'_, R>) -> bool {
    let path = entry.path().ok().map(|p| p.to_string_lossy().trim_start_matches("./").to_string());
    let target = entry.link_name().ok().flatten().map(|t| t.to_string_lossy().into_owned());
    entry.header().entry_type().is_symlink()
        && path.as_deref() == Some(PARENT_LINK)
        && target.as_deref() == Some(PARENT_LINK_TARGET)
}

/// A `tar` error fit for one line: its messages may quote the bytes of a
/// damaged header ("numeric field did not have utf-8 text: \u{fffd}...").
fn tidy(msg: &str) -> String {
    let msg = msg.split(" when getting ").next().unwrap_or(msg);
    match msg.find(|c: char| !(c.is_ascii_graphic() || c == ' ')) {
        None => msg.to_string(),
        Some(bad) => msg[..bad].rsplit_once(": ").map_or("unreadable", |(head, _)| head).to_string(),
    }
}

/// A regular file of the archive at `path` (whose parents hold no symlink),
/// copied in large chunks (`unpack_in` writes 8 KiB at a time), then given
/// the header's owner, mode and mtime as `unpack_in` would.
fn write_file<R: Read>(entry: &mut tar::Entry<'_, R>, path: &Path, buf: &mut [u8]) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => fs::remove_file(path)?,
        _ => {}
    }
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    let size = entry.header().size()?;
    let mut n = 0u64;
    loop {
        match entry.read(buf) {
            Ok(0) => break,
            Ok(k) => {
                f.write_all(&buf[..k])?;
                n += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if n != size {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{n} of {size} bytes")));
    }
    let h = entry.header();
    let (uid, gid) = (u32::try_from(h.uid()?).ok(), u32::try_from(h.gid()?).ok());
    std::os::unix::fs::fchown(&f, uid, gid)?;
    f.set_permissions(fs::Permissions::from_mode(h.mode()? & 0o7777))?;
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(h.mtime()?))
}

/// The first parent of `rel` under `root` that is a symlink: a checkpoint
/// archive has no reason to write through one.
fn symlink_on_path(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut p = root.to_path_buf();
    let parent = rel.parent()?;
    for c in parent.components() {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => return Some(p.strip_prefix(root).unwrap_or(&p).to_path_buf()),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

// ------------------------------------------------------------------- helpers

/// A reader that remembers whether its source ended or failed, which tells
/// a truncated or corrupt archive from a failure to write.
struct Tracked<R> {
    inner: R,
    eof: bool,
    error: Option<String>,
}

impl<R: Read> Tracked<R> {
    fn new(inner: R) -> Self {
        Tracked { inner, eof: false, error: None }
    }
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) if !buf.is_empty() => {
                self.eof = true;
                Ok(0)
            }
            Err(e) if e.kind() != io::ErrorKind::Interrupted => {
                self.error.get_or_insert_with(|| e.to_string());
                Err(e)
            }
            r => r,
        }
    }
}

/// A file being written (mode 0600), removed on drop unless kept.
struct NewFile {
    path: PathBuf,
    file: File,
    keep: bool,
}

impl NewFile {
    fn create(path: &Path) -> Result<NewFile> {
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .ctx(|| format!("creating {}", path.display()))?;
        Ok(NewFile { path: path.to_path_buf(), file, keep: false })
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The compressor under the tar stream.
enum Sink {
    Zstd(zstd::stream::write::Encoder<'static, File>),
    Gzip(flate2::write::GzEncoder<File>),
    Plain(File),
}

impl Sink {
    fn new(file: File, c: Compression) -> io::Result<Sink> {
        Ok(match c {
            Compression::Zstd => {
                // Level 3: nginx's checkpoint is 159 KB (level 1: 288 KB) and
                // packs as fast here, the smaller output making up for it.
                let mut z = zstd::stream::write::Encoder::new(file, 3)?;
                z.include_checksum(true)?;
                Sink::Zstd(z)
            }
            Compression::Gzip => Sink::Gzip(flate2::write::GzEncoder::new(file, flate2::Compression::fast())),
            Compression::None => Sink::Plain(file),
        })
    }

    /// Ends the compressed stream.
    fn finish(self) -> io::Result<()> {
        match self {
            Sink::Zstd(z) => z.finish().map(drop),
            Sink::Gzip(g) => g.finish().map(drop),
            Sink::Plain(mut f) => f.flush(),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Zstd(z) => z.write(buf),
            Sink::Gzip(g) => g.write(buf),
            Sink::Plain(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Zstd(z) => z.flush(),
            Sink::Gzip(g) => g.flush(),
            Sink::Plain(f) => f.flush(),
        }
    }
}

#[cfg(test)]
mod tests;
