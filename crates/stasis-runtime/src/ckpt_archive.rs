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
//!
//! Opaque dirs are not detected yet: reading an xattr needs `lgetxattr(2)`,
//! which `stasis-sys` does not wrap (see [`read_opaque`]). Until it does,
//! `opaque.dirs` is never written; applying one works.

use crate::archive;
use crate::error::{Ctx, Result, RuntimeError};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

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

// ---------------------------------------------------------------- rootfs diff

/// Writes `dir/rootfs-diff.tar` (every entry of `upper` but its whiteouts,
/// uncompressed) and `dir/deleted.files` (the whiteouts' paths relative to
/// the rootfs, as a JSON array), plus `dir/opaque.dirs` when opaque dirs
/// exist (an older one is removed otherwise).
pub fn write_rootfs_diff(upper: &Path, dir: &Path) -> Result<()> {
    write_diff(upper, dir, &read_opaque)
}

/// Whether `dir` of an upper dir is opaque (`trusted.overlay.opaque=y`).
///
/// TODO: needs `stasis_sys::ns::lgetxattr` (the twin of `lsetxattr`, absent
/// so far); until then no dir is reported opaque, so a dir the container
/// deleted and made again shows the image's old entries after a restore.
fn read_opaque(_dir: &Path) -> io::Result<bool> {
    Ok(false)
}

fn write_diff(upper: &Path, dir: &Path, is_opaque: &dyn Fn(&Path) -> io::Result<bool>) -> Result<()> {
    let meta = fs::metadata(upper).ctx(|| format!("reading upper dir {}", upper.display()))?;
    if !meta.is_dir() {
        return Err(RuntimeError::Invalid(format!("{} is not a directory", upper.display())));
    }
    let tar_path = dir.join(ROOTFS_DIFF);
    let out = NewFile::create(&tar_path)?;
    let mut w = TreeWriter::new(BufWriter::with_capacity(BUF_SIZE, &out.file), &tar_path, Some(&out.file));
    w.overlay = Some(Overlay { is_opaque, whiteouts: Vec::new(), opaque: Vec::new() });
    // A root entry first: `archive::extract` refuses a tar without entries,
    // and a container may have changed nothing.
    let mut h = header_of(&meta);
    w.tar.append_data(&mut h, "./", io::empty()).ctx(|| format!("writing {}", tar_path.display()))?;
    w.walk(upper, Path::new(""))?;
    let (buf, overlay) = w.finish()?;
    buf.into_inner().map_err(|e| e.into_error()).ctx(|| format!("writing {}", tar_path.display()))?;
    let overlay = overlay.unwrap_or_else(|| unreachable!("set above"));

    write_path_list(&dir.join(DELETED_FILES), &overlay.whiteouts)?;
    let opaque_path = dir.join(OPAQUE_DIRS);
    if overlay.opaque.is_empty() {
        match fs::remove_file(&opaque_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(e).ctx(|| format!("removing {}", opaque_path.display()))
            }
            _ => {}
        }
    } else {
        write_path_list(&opaque_path, &overlay.opaque)?;
    }
    out.keep();
    Ok(())
}

fn write_path_list(path: &Path, list: &[PathBuf]) -> Result<()> {
    let names = list
        .iter()
        .map(|p| {
            p.to_str().ok_or_else(|| {
                RuntimeError::Invalid(format!("{}: file name is not UTF-8, cannot be listed in JSON", p.display()))
            })
        })
        .collect::<Result<Vec<&str>>>()?;
    let json = serde_json::to_vec(&names).map_err(|e| RuntimeError::Invalid(format!("encoding {path:?}: {e}")))?;
    fs::write(path, json).ctx(|| format!("writing {}", path.display()))
}

/// Applies `dir/rootfs-diff.tar`, `dir/deleted.files` and `dir/opaque.dirs`
/// (each optional) to `upper`, the overlay upper dir of a fresh container.
/// All is built in a staging dir beside `upper`, then moved in entry by entry
/// (an entry already in `upper` is replaced, a dir in both is merged); on
/// any error the moves are undone and `upper` is as it was.
pub fn apply_rootfs_diff(dir: &Path, upper: &Path) -> Result<()> {
    let tar_path = dir.join(ROOTFS_DIFF);
    let has_tar = exists(&tar_path)?;
    let deleted = read_path_list(&dir.join(DELETED_FILES))?;
    let opaque = read_path_list(&dir.join(OPAQUE_DIRS))?;
    if !has_tar && deleted.is_empty() && opaque.is_empty() {
        return Ok(());
    }
    let meta = fs::symlink_metadata(upper).ctx(|| format!("reading upper dir {}", upper.display()))?;
    if !meta.is_dir() {
        return Err(RuntimeError::Invalid(format!("{} is not a directory", upper.display())));
    }

    let staging = Staging::new(upper)?;
    if has_tar {
        let what = tar_path.display().to_string();
        let mut src = Tracked::new(archive::open_decompressed(&tar_path)?);
        archive::extract(&mut src, &staging.new, &what)?;
        if src.eof {
            return Err(RuntimeError::Archive(format!("{what}: truncated (no end-of-archive marker)")));
        }
    }
    for rel in &deleted {
        make_whiteout(&staging.new, rel)?;
    }
    for rel in &opaque {
        let d = make_dirs(&staging.new, rel)?;
        stasis_sys::ns::lsetxattr(&d, OPAQUE_XATTR, b"y").ctx(|| format!("marking {} opaque", d.display()))?;
    }

    let opaque: HashSet<PathBuf> = opaque.into_iter().collect();
    let mut merge = Merge { old: &staging.old, opaque: &opaque, undo: Vec::new(), saved: 0 };
    if let Err(e) = merge.dir(&staging.new, upper, Path::new("")) {
        merge.rollback();
        return Err(e);
    }
    Ok(())
}

/// Paths of a JSON array file (absent: none), made relative. A leading `/`
/// means the rootfs (podman writes "/etc/motd"); `..` is refused.
fn read_path_list(path: &Path) -> Result<Vec<PathBuf>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).ctx(|| format!("reading {}", path.display())),
    };
    let names: Vec<String> = serde_json::from_slice(&bytes)
        .map_err(|e| RuntimeError::Archive(format!("{}: not a JSON array of paths: {e}", path.display())))?;
    names
        .iter()
        .map(|name| {
            let mut rel = PathBuf::new();
            for c in Path::new(name).components() {
                match c {
                    Component::Normal(n) => rel.push(n),
                    Component::RootDir | Component::CurDir => {}
                    Component::ParentDir | Component::Prefix(_) => {
                        return Err(RuntimeError::Archive(format!(
                            "{}: path {name:?} leaves the rootfs ('..' component)",
                            path.display()
                        )))
                    }
                }
            }
            if rel.as_os_str().is_empty() {
                return Err(RuntimeError::Archive(format!(
                    "{}: path {name:?} names the rootfs itself",
                    path.display()
                )));
            }
            Ok(rel)
        })
        .collect()
}

/// Creates `root/rel` and its missing parents as dirs, refusing to pass
/// through anything but a real dir (a symlink from the diff could lead out).
fn make_dirs(root: &Path, rel: &Path) -> Result<PathBuf> {
    let mut p = root.to_path_buf();
    for c in rel.components() {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(RuntimeError::Archive(format!(
                    "rootfs diff: {} is in the way of {} (not a directory)",
                    p.strip_prefix(root).unwrap_or(&p).display(),
                    rel.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&p).ctx(|| format!("creating {}", p.display()))?
            }
            Err(e) => return Err(e).ctx(|| format!("reading {}", p.display())),
        }
    }
    Ok(p)
}

/// An overlay whiteout (char device 0/0) at `root/rel`, replacing what the
/// diff put there.
fn make_whiteout(root: &Path, rel: &Path) -> Result<()> {
    let parent = make_dirs(root, rel.parent().unwrap_or(Path::new("")))?;
    let p = parent.join(rel.file_name().unwrap_or_default());
    remove_any(&p).ctx(|| format!("removing {}", p.display()))?;
    stasis_sys::ns::mknod(&p, stasis_sys::ns::S_IFCHR, 0, 0).ctx(|| format!("creating whiteout {}", p.display()))
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn exists(p: &Path) -> Result<bool> {
    match fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).ctx(|| format!("reading {}", p.display())),
    }
}

/// `.NAME.diff-PID/{new,old}` beside the upper dir NAME (same filesystem, so
/// entries move with `rename`): `new` receives the diff, `old` what it
/// replaces in the upper dir until the end. Removed on drop.
struct Staging {
    root: PathBuf,
    new: PathBuf,
    old: PathBuf,
}

impl Staging {
    fn new(upper: &Path) -> Result<Staging> {
        let name = upper.file_name().unwrap_or_default().to_string_lossy();
        let root = upper.with_file_name(format!(".{name}.diff-{}", std::process::id()));
        remove_any(&root).ctx(|| format!("removing stale {}", root.display()))?;
        fs::DirBuilder::new().mode(0o700).create(&root).ctx(|| format!("creating {}", root.display()))?;
        let s = Staging { new: root.join("new"), old: root.join("old"), root };
        for d in [&s.new, &s.old] {
            fs::DirBuilder::new().mode(0o700).create(d).ctx(|| format!("creating {}", d.display()))?;
        }
        Ok(s)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.root) {
            log::warn!("removing {}: {e}", self.root.display());
        }
    }
}

/// Moves a staged tree into the upper dir, remembering how to undo it.
struct Merge<'a> {
    old: &'a Path,
    opaque: &'a HashSet<PathBuf>,
    undo: Vec<Undo>,
    saved: usize,
}

enum Undo {
    /// `from` (staged) was renamed to `to`.
    Moved { from: PathBuf, to: PathBuf },
    /// What was at `path` in the upper dir went to `saved`.
    Saved { path: PathBuf, saved: PathBuf },
}

impl Merge<'_> {
    fn dir(&mut self, src: &Path, dst: &Path, rel: &Path) -> Result<()> {
        let mut names = Vec::new();
        for e in fs::read_dir(src).ctx(|| format!("reading {}", src.display()))? {
            names.push(e.ctx(|| format!("reading {}", src.display()))?.file_name());
        }
        for name in names {
            let (s, d, r) = (src.join(&name), dst.join(&name), rel.join(&name));
            let staged_dir = fs::symlink_metadata(&s).ctx(|| format!("reading {}", s.display()))?.is_dir();
            match fs::symlink_metadata(&d) {
                Ok(m) if m.is_dir() && staged_dir => {
                    self.dir(&s, &d, &r)?;
                    if self.opaque.contains(&r) {
                        // An xattr set here is not undone by rollback (no
                        // lremovexattr in stasis-sys); it is the last step.
                        stasis_sys::ns::lsetxattr(&d, OPAQUE_XATTR, b"y")
                            .ctx(|| format!("marking {} opaque", d.display()))?;
                    }
                }
                Ok(_) => {
                    let saved = self.old.join(self.saved.to_string());
                    self.saved += 1;
                    fs::rename(&d, &saved).ctx(|| format!("moving {} aside", d.display()))?;
                    self.undo.push(Undo::Saved { path: d.clone(), saved });
                    self.rename(s, d)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.rename(s, d)?,
                Err(e) => return Err(e).ctx(|| format!("reading {}", d.display())),
            }
        }
        Ok(())
    }

    fn rename(&mut self, from: PathBuf, to: PathBuf) -> Result<()> {
        fs::rename(&from, &to).ctx(|| format!("moving {} to {}", from.display(), to.display()))?;
        self.undo.push(Undo::Moved { from, to });
        Ok(())
    }

    fn rollback(&mut self) {
        for u in self.undo.drain(..).rev() {
            let (from, to) = match &u {
                Undo::Moved { from, to } => (to, from),
                Undo::Saved { path, saved } => (saved, path),
            };
            if let Err(e) = fs::rename(from, to) {
                log::warn!("undoing rootfs diff: moving {} back to {}: {e}", from.display(), to.display());
            }
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
        if is_file("config.dump") && is_file("checkpoint/inventory.img") {
            Ok(())
        } else {
            Err(RuntimeError::Archive(format!(
                "{what} is not a checkpoint archive (no config.dump / checkpoint/inventory.img)"
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
        Some(Stop::Read(e)) => Err(reader_failed(&src).unwrap_or_else(|| corrupt(&e))),
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
    for entry in ar.entries().map_err(Stop::Read)? {
        let mut entry = entry.map_err(Stop::Read)?;
        count += 1;
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
    Ok(())
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
                let mut z = zstd::stream::write::Encoder::new(file, 1)?;
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

/// What the walk does with an overlay upper dir's special entries.
struct Overlay<'a> {
    is_opaque: &'a dyn Fn(&Path) -> io::Result<bool>,
    whiteouts: Vec<PathBuf>,
    opaque: Vec<PathBuf>,
}

/// Writes a directory tree as tar entries: names relative to its root in
/// sorted order (the same tree gives the same archive), mode, owner and
/// mtime as `tar` records them, every further name of a multiply linked
/// file as a hard link. Sockets cannot be archived and are left out.
struct TreeWriter<'a, W: Write> {
    tar: tar::Builder<BufWriter<W>>,
    /// The archive (for messages).
    out: &'a Path,
    /// (dev, ino) of the archive itself, left out should it be in the tree.
    skip: Option<(u64, u64)>,
    /// (dev, ino) -> first name, of files with more than one link.
    links: HashMap<(u64, u64), PathBuf>,
    overlay: Option<Overlay<'a>>,
}

fn header_of(meta: &fs::Metadata) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    h.set_mode(meta.mode() & 0o7777);
    h
}

impl<'a, W: Write> TreeWriter<'a, W> {
    fn new(w: BufWriter<W>, out: &'a Path, archive_file: Option<&File>) -> Self {
        let skip = archive_file.and_then(|f| f.metadata().ok()).map(|m| (m.dev(), m.ino()));
        TreeWriter { tar: tar::Builder::new(w), out, skip, links: HashMap::new(), overlay: None }
    }

    fn walk(&mut self, abs: &Path, rel: &Path) -> Result<()> {
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
    fn finish(self) -> Result<(BufWriter<W>, Option<Overlay<'a>>)> {
        let out = self.out;
        let w = self.tar.into_inner().ctx(|| format!("writing {}", out.display()))?;
        Ok((w, self.overlay))
    }
}
