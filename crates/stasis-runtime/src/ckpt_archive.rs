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
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
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
fn read_opaque(dir: &Path) -> io::Result<bool> {
    Ok(stasis_sys::ns::lgetxattr(dir, "trusted.overlay.opaque")?.is_some_and(|v| v == b"y"))
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
        for sp in special_entries(&tar_path)? {
            sp.make(&staging.new)?;
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

/// A fifo or device node of the diff. `tar` (so `archive::extract`) unpacks
/// them as empty regular files; they are made again from their headers.
struct Special {
    rel: PathBuf,
    mode: u32,
    uid: u64,
    gid: u64,
    major: u32,
    minor: u32,
}

/// The fifos and devices of the tar at `path`, from a pass over its headers
/// (seeking over the data; a compressed tar is read through instead).
fn special_entries(path: &Path) -> Result<Vec<Special>> {
    let what = || format!("reading {}", path.display());
    let plain = File::open(path).ctx(what)?;
    let mut ar = tar::Archive::new(io::BufReader::new(plain));
    match ar.entries_with_seek().and_then(collect_special) {
        Ok(v) => Ok(v),
        Err(_) => {
            let mut ar = tar::Archive::new(archive::open_decompressed(path)?);
            ar.entries().and_then(collect_special).ctx(what)
        }
    }
}

fn collect_special<R: Read>(entries: tar::Entries<'_, R>) -> io::Result<Vec<Special>> {
    let mut out = Vec::new();
    for e in entries {
        let e = e?;
        let h = e.header();
        let kind = h.entry_type();
        let ty = match kind {
            tar::EntryType::Fifo => libc::S_IFIFO,
            tar::EntryType::Char => libc::S_IFCHR,
            tar::EntryType::Block => libc::S_IFBLK,
            _ => continue,
        };
        let path = e.path()?;
        let rel: PathBuf = path.components().filter(|c| matches!(c, Component::Normal(_))).collect();
        // `extract` refused `..`; a `.wh.` name became a whiteout there.
        let name = rel.file_name().map(|n| n.as_encoded_bytes().starts_with(b".wh.")).unwrap_or(true);
        if name || path.components().any(|c| c == Component::ParentDir) {
            continue;
        }
        let dev = |n: Option<u32>| n.unwrap_or(0);
        out.push(Special {
            rel,
            mode: ty | (h.mode()? & 0o7777),
            uid: h.uid()?,
            gid: h.gid()?,
            major: dev(h.device_major()?),
            minor: dev(h.device_minor()?),
        });
    }
    Ok(out)
}

impl Special {
    fn make(&self, root: &Path) -> Result<()> {
        let parent = make_dirs(root, self.rel.parent().unwrap_or(Path::new("")))?;
        let p = parent.join(self.rel.file_name().unwrap_or_default());
        remove_any(&p).ctx(|| format!("removing {}", p.display()))?;
        let made = || format!("creating {}", p.display());
        stasis_sys::ns::mknod(&p, self.mode, self.major, self.minor).ctx(made)?;
        let (uid, gid) = (u32::try_from(self.uid).ok(), u32::try_from(self.gid).ok());
        std::os::unix::fs::lchown(&p, uid, gid).ctx(made)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(self.mode & 0o7777)).ctx(made)
    }
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
        names.sort();
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
    let buf = &mut vec![0u8; BUF_SIZE];
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
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{chown, lchown, symlink};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, SystemTime};

    /// A fresh dir under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("stasis-ckpt-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }

        fn join(&self, rel: &str) -> PathBuf {
            self.0.join(rel)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A mount, detached on drop (before its TempDir goes).
    struct Mounted(PathBuf);

    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = stasis_sys::ns::umount2(&self.0, stasis_sys::ns::MNT_DETACH);
        }
    }

    fn root() -> bool {
        let root = fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
        if !root {
            println!("SKIP: needs root (mknod, chown, trusted xattrs, overlay mounts)");
        }
        root
    }

    fn write(p: &Path, data: &[u8], mode: u32) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn whiteout(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        stasis_sys::ns::mknod(p, stasis_sys::ns::S_IFCHR, 0, 0).unwrap();
    }

    fn is_whiteout(p: &Path) -> bool {
        fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    /// Deterministic bytes that do not compress.
    fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    fn json_list(p: &Path) -> Vec<String> {
        serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
    }

    /// Name, kind, link name, data.
    type RawEntry<'a> = (&'a str, tar::EntryType, &'a str, &'a [u8]);

    /// A tar entry with its name and link name set as raw bytes, so `..`
    /// and absolute names get through (`tar`'s setters refuse them).
    fn raw_entry(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_size(data.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn raw_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, link, data) in entries {
            raw_entry(&mut b, name, *kind, link, data);
        }
        b.into_inner().unwrap()
    }

    /// A checkpoint dir as the checkpoint code leaves it.
    fn checkpoint_dir(dir: &Path) {
        write(&dir.join("config.dump"), br#"{"id":"abc"}"#, 0o600);
        write(&dir.join("spec.dump"), br#"{"ociVersion":"1.0.2"}"#, 0o600);
        write(&dir.join("network.status"), b"[]", 0o644);
        write(&dir.join("stats-dump"), br#"{"checkpointDuration":1}"#, 0o644);
        write(&dir.join("ctr.log"), b"started\n", 0o644);
        write(&dir.join("checkpoint/inventory.img"), &noise(300, 1), 0o600);
        write(&dir.join("checkpoint/core-1.img"), &noise(4096, 2), 0o600);
        let mut pages = noise(1 << 20, 3);
        pages.extend(std::iter::repeat_n(0u8, 1 << 20));
        write(&dir.join("checkpoint/pages-1.img"), &pages, 0o600);
        write(&dir.join("rootfs-diff.tar"), &raw_tar(&[("a", tar::EntryType::Regular, "", b"x")]), 0o600);
        write(&dir.join("deleted.files"), br#"["etc/motd"]"#, 0o600);
    }

    /// Every file under `a` equals the one under `b` (bytes, mode), and
    /// both hold the same names.
    fn assert_same_tree(a: &Path, b: &Path) {
        assert_eq!(names(a), names(b), "{} vs {}", a.display(), b.display());
        for n in names(a) {
            let (x, y) = (a.join(&n), b.join(&n));
            assert_eq!(mode(&x), mode(&y), "mode of {}", y.display());
            if x.is_dir() {
                assert_same_tree(&x, &y);
            } else {
                assert!(fs::read(&x).unwrap() == fs::read(&y).unwrap(), "content of {}", y.display());
            }
        }
    }

    #[test]
    fn tar_errors_tidied() {
        assert_eq!(
            tidy("numeric field did not have utf-8 text: \u{fffd}\u{1}A when getting cksum for x"),
            "numeric field did not have utf-8 text"
        );
        assert_eq!(tidy("archive header checksum mismatch"), "archive header checksum mismatch");
        assert_eq!(tidy("\u{fffd}"), "unreadable");
    }

    #[test]
    fn compression_names() {
        for (s, c) in [
            ("zstd", Compression::Zstd),
            ("zst", Compression::Zstd),
            ("ZSTD", Compression::Zstd),
            ("gzip", Compression::Gzip),
            ("gz", Compression::Gzip),
            ("none", Compression::None),
            ("uncompressed", Compression::None),
        ] {
            assert_eq!(Compression::parse(s).unwrap(), c, "{s}");
        }
        let e = Compression::parse("lz4").unwrap_err();
        assert!(matches!(e, RuntimeError::Invalid(_)));
        assert_eq!(e.to_string(), "unknown compression 'lz4' (accepted: zstd, gzip, none)");
    }

    #[test]
    fn rootfs_diff_round_trip() {
        if !root() {
            return;
        }
        let t = TempDir::new("diff");
        let up = t.join("upper");
        write(&up.join("file.txt"), b"hello", 0o640);
        chown(up.join("file.txt"), Some(1234), Some(5678)).unwrap();
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        File::options().write(true).open(up.join("file.txt")).unwrap().set_modified(mtime).unwrap();
        fs::hard_link(up.join("file.txt"), up.join("hard")).unwrap();
        write(&up.join("dir/sub/nested.txt"), b"nested", 0o600);
        fs::set_permissions(up.join("dir"), fs::Permissions::from_mode(0o750)).unwrap();
        symlink("file.txt", up.join("link")).unwrap();
        symlink("/etc/hostname", up.join("abs_link")).unwrap();
        lchown(up.join("link"), Some(42), Some(43)).unwrap();
        stasis_sys::ns::mknod(&up.join("fifo"), libc::S_IFIFO | 0o644, 0, 0).unwrap();
        stasis_sys::ns::mknod(&up.join("dir/null"), libc::S_IFCHR | 0o666, 1, 3).unwrap();
        fs::set_permissions(up.join("dir/null"), fs::Permissions::from_mode(0o666)).unwrap();
        whiteout(&up.join("gone"));
        whiteout(&up.join("dir/gone2"));
        write(&up.join("opq/new"), b"new", 0o644);
        stasis_sys::ns::lsetxattr(&up.join("opq"), OPAQUE_XATTR, b"y").unwrap();

        // The detector stands in for lgetxattr, which stasis-sys lacks.
        let ck = t.join("ck");
        fs::create_dir(&ck).unwrap();
        write_diff(&up, &ck, &|p: &Path| Ok(p.file_name() == Some("opq".as_ref()))).unwrap();
        assert_eq!(json_list(&ck.join(DELETED_FILES)), ["dir/gone2", "gone"]);
        assert_eq!(json_list(&ck.join(OPAQUE_DIRS)), ["opq"]);
        let mut ar = tar::Archive::new(File::open(ck.join(ROOTFS_DIFF)).unwrap());
        let mut listed = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            if p == "hard" {
                assert_eq!(e.header().entry_type(), tar::EntryType::Link);
                assert_eq!(e.link_name().unwrap().unwrap(), Path::new("file.txt"));
            }
            listed.push(p);
        }
        assert!(!listed.iter().any(|p| p.contains("gone")), "whiteouts archived: {listed:?}");
        assert!(listed.contains(&"dir/sub/nested.txt".to_string()), "{listed:?}");

        // The public entry point writes the same diff (opaque dirs aside).
        let ck2 = t.join("ck2");
        fs::create_dir(&ck2).unwrap();
        write_rootfs_diff(&up, &ck2).unwrap();
        assert_eq!(json_list(&ck2.join(DELETED_FILES)), ["dir/gone2", "gone"]);

        let ctr = t.join("ctr");
        let fresh = ctr.join("upper");
        fs::create_dir_all(&fresh).unwrap();
        apply_rootfs_diff(&ck, &fresh).unwrap();
        assert_eq!(names(&ctr), ["upper"], "staging dir left behind");

        let f = fresh.join("file.txt");
        let m = fs::symlink_metadata(&f).unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"hello");
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 1234, 5678));
        assert_eq!(m.modified().unwrap(), mtime);
        assert_eq!(fs::symlink_metadata(fresh.join("hard")).unwrap().ino(), m.ino(), "hard link lost");
        assert_eq!(mode(&fresh.join("dir")), 0o750);
        assert_eq!(fs::read(fresh.join("dir/sub/nested.txt")).unwrap(), b"nested");
        assert_eq!(mode(&fresh.join("dir/sub/nested.txt")), 0o600);
        assert_eq!(fs::read_link(fresh.join("link")).unwrap(), Path::new("file.txt"));
        assert_eq!(fs::symlink_metadata(fresh.join("link")).unwrap().uid(), 42);
        assert_eq!(fs::read_link(fresh.join("abs_link")).unwrap(), Path::new("/etc/hostname"));
        let m = fs::symlink_metadata(fresh.join("fifo")).unwrap();
        assert!(m.file_type().is_fifo() && m.mode() & 0o7777 == 0o644);
        let m = fs::symlink_metadata(fresh.join("dir/null")).unwrap();
        assert!(m.file_type().is_char_device() && m.rdev() == libc::makedev(1, 3) && m.mode() & 0o7777 == 0o666);
        assert!(is_whiteout(&fresh.join("gone")));
        assert!(is_whiteout(&fresh.join("dir/gone2")));
        assert_eq!(fs::read(fresh.join("opq/new")).unwrap(), b"new");

        // What overlayfs makes of it: whiteouts and the opaque dir hide the
        // lower layer's entries.
        let lower = t.join("lower");
        for p in ["gone", "dir/gone2", "dir/lower_only", "opq/old"] {
            write(&lower.join(p), b"lower", 0o644);
        }
        let (work, merged) = (t.join("work"), t.join("merged"));
        fs::create_dir(&work).unwrap();
        fs::create_dir(&merged).unwrap();
        let opts = format!("lowerdir={},upperdir={},workdir={}", lower.display(), fresh.display(), work.display());
        stasis_sys::ns::mount(Some("overlay"), &merged, Some("overlay"), 0, Some(&opts)).unwrap();
        let _mounted = Mounted(merged.clone());
        assert!(!merged.join("gone").exists());
        assert!(!merged.join("dir/gone2").exists());
        assert!(merged.join("dir/lower_only").exists());
        assert!(!merged.join("opq/old").exists(), "opaque dir shows the lower layer");
        assert_eq!(fs::read(merged.join("opq/new")).unwrap(), b"new");
        assert_eq!(fs::read(merged.join("link")).unwrap(), b"hello");
    }

    #[test]
    fn rootfs_diff_of_unchanged_container() {
        if !root() {
            return;
        }
        let t = TempDir::new("nodiff");
        let (up, ck, fresh) = (t.join("upper"), t.join("ck"), t.join("fresh"));
        for d in [&up, &ck, &fresh] {
            fs::create_dir(d).unwrap();
        }
        write(&ck.join(OPAQUE_DIRS), b"[\"stale\"]", 0o600);
        write_rootfs_diff(&up, &ck).unwrap();
        assert_eq!(json_list(&ck.join(DELETED_FILES)), Vec::<String>::new());
        assert!(!ck.join(OPAQUE_DIRS).exists(), "stale opaque.dirs kept");
        apply_rootfs_diff(&ck, &fresh).unwrap();
        assert!(names(&fresh).is_empty());
        // Nothing at all to apply.
        apply_rootfs_diff(&t.join("none"), &fresh).unwrap();
    }

    #[test]
    fn deleted_files_paths() {
        if !root() {
            return;
        }
        let t = TempDir::new("deleted");
        let (ck, up) = (t.join("ck"), t.join("upper"));
        write(&up.join("keep"), b"k", 0o644);
        write(&ck.join(DELETED_FILES), br#"["a", "../x"]"#, 0o600);
        let e = apply_rootfs_diff(&ck, &up).unwrap_err().to_string();
        assert!(e.contains("\"../x\"") && e.contains("leaves the rootfs"), "{e}");
        assert_eq!(names(&up), ["keep"]);
        assert_eq!(names(&t.0), ["ck", "upper"]);

        // podman writes rootfs paths with a leading '/'.
        write(&ck.join(DELETED_FILES), br#"["/etc/motd", "a"]"#, 0o600);
        apply_rootfs_diff(&ck, &up).unwrap();
        assert!(is_whiteout(&up.join("etc/motd")));
        assert!(is_whiteout(&up.join("a")));
        assert_eq!(names(&t.0), ["ck", "upper"]);
    }

    #[test]
    fn unsafe_rootfs_diff_refused() {
        if !root() {
            return;
        }
        let t = TempDir::new("baddiff");
        let (ck, up, outside) = (t.join("ck"), t.join("ctr/upper"), t.join("outside"));
        write(&up.join("keep"), b"k", 0o644);
        fs::create_dir(&outside).unwrap();
        let out = outside.to_str().unwrap();
        let cases: [&[RawEntry<'_>]; 4] = [
            &[("ok.txt", tar::EntryType::Regular, "", b"ok"), ("../evil", tar::EntryType::Regular, "", b"x")],
            &[("esc", tar::EntryType::Symlink, out, b""), ("esc/pwned", tar::EntryType::Regular, "", b"x")],
            &[("up", tar::EntryType::Symlink, "../../..", b"")],
            &[("hl", tar::EntryType::Link, "../../etc/passwd", b"")],
        ];
        for entries in cases {
            write(&ck.join(ROOTFS_DIFF), &raw_tar(entries), 0o600);
            let e = apply_rootfs_diff(&ck, &up).unwrap_err().to_string();
            assert!(e.contains(ROOTFS_DIFF), "{e}");
            assert_eq!(names(&up), ["keep"], "{e}");
            assert_eq!(names(&t.join("ctr")), ["upper"], "{e}");
            assert!(names(&outside).is_empty(), "{e}");
            assert!(!t.join("evil").exists() && !t.join("ctr/evil").exists());
        }

        // A truncated diff (no end-of-archive blocks) is refused too.
        let mut tar = raw_tar(&[("ok.txt", tar::EntryType::Regular, "", b"ok")]);
        tar.truncate(1024);
        write(&ck.join(ROOTFS_DIFF), &tar, 0o600);
        let e = apply_rootfs_diff(&ck, &up).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        assert_eq!(names(&up), ["keep"]);
    }

    #[test]
    fn rootfs_diff_merges_and_rolls_back() {
        if !root() {
            return;
        }
        let t = TempDir::new("merge");
        let (ck, up) = (t.join("ck"), t.join("ctr/upper"));
        write(&up.join("etc/hosts"), b"old", 0o644);
        write(&up.join("etc/keep"), b"keep", 0o644);
        fs::create_dir_all(up.join("m")).unwrap();
        let tar = raw_tar(&[
            ("a", tar::EntryType::Regular, "", b"a"),
            ("etc/", tar::EntryType::Directory, "", b""),
            ("etc/hosts", tar::EntryType::Regular, "", b"new"),
        ]);
        write(&ck.join(ROOTFS_DIFF), &tar, 0o600);
        apply_rootfs_diff(&ck, &up).unwrap();
        assert_eq!(fs::read(up.join("etc/hosts")).unwrap(), b"new");
        assert_eq!(fs::read(up.join("etc/keep")).unwrap(), b"keep");
        assert_eq!(names(&up), ["a", "etc", "m"]);
        assert_eq!(names(&t.join("ctr")), ["upper"]);

        // "m" is a mount point: moving it aside fails (EBUSY) after "a" and
        // "etc/hosts" went in; both moves are undone.
        fs::remove_file(up.join("a")).unwrap();
        write(&up.join("etc/hosts"), b"old", 0o644);
        stasis_sys::ns::mount(Some("tmpfs"), &up.join("m"), Some("tmpfs"), 0, None).unwrap();
        let _mounted = Mounted(up.join("m"));
        let tar = raw_tar(&[
            ("a", tar::EntryType::Regular, "", b"a"),
            ("etc/hosts", tar::EntryType::Regular, "", b"new"),
            ("m", tar::EntryType::Regular, "", b"file over a mount"),
        ]);
        write(&ck.join(ROOTFS_DIFF), &tar, 0o600);
        let e = apply_rootfs_diff(&ck, &up).unwrap_err().to_string();
        assert!(e.contains("moving") && e.contains("/m"), "{e}");
        assert_eq!(names(&up), ["etc", "m"]);
        assert_eq!(fs::read(up.join("etc/hosts")).unwrap(), b"old");
        assert_eq!(names(&up.join("etc")), ["hosts", "keep"]);
        assert_eq!(names(&t.join("ctr")), ["upper"]);
    }

    #[test]
    fn pack_unpack_round_trip() {
        let t = TempDir::new("pack");
        let ck = t.join("ck");
        checkpoint_dir(&ck);
        for (c, magic) in [
            (Compression::Zstd, &[0x28, 0xb5, 0x2f, 0xfd][..]),
            (Compression::Gzip, &[0x1f, 0x8b][..]),
            (Compression::None, &b"checkpoint/"[..]),
        ] {
            let out = t.join("out/ckpt.tar");
            fs::create_dir_all(t.join("out")).unwrap();
            write(&out, b"an older export", 0o644);
            pack(&ck, &out, c).unwrap();
            assert_eq!(names(&t.join("out")), ["ckpt.tar"], "{c:?}: temp file left");
            assert_eq!(mode(&out), 0o600, "{c:?}");
            let head = fs::read(&out).unwrap();
            assert!(head.starts_with(magic), "{c:?}: starts with {:x?}", &head[..4]);

            let dest = t.join("dest");
            unpack(&out, &dest).unwrap();
            assert_same_tree(&ck, &dest);
            assert_eq!(mode(&dest), 0o700);
            fs::remove_dir_all(&dest).unwrap();
            fs::remove_dir_all(t.join("out")).unwrap();
        }
    }

    #[test]
    fn pack_failure_leaves_nothing() {
        let t = TempDir::new("packfail");
        let out = t.join("ckpt.tar.zst");
        let e = pack(&t.join("missing"), &out, Compression::Zstd).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
        assert!(names(&t.0).is_empty());
        let e = pack(&t.0, &t.join("no/such/dir/x.tar"), Compression::None).unwrap_err().to_string();
        assert!(e.contains("no/such/dir"), "{e}");
        assert!(names(&t.0).is_empty());
    }

    #[test]
    fn truncated_or_garbage_archive_refused() {
        let t = TempDir::new("trunc");
        let ck = t.join("ck");
        checkpoint_dir(&ck);
        let mut bad: Vec<(String, Vec<u8>)> = Vec::new();
        for c in [Compression::Zstd, Compression::Gzip, Compression::None] {
            let out = t.join("whole");
            pack(&ck, &out, c).unwrap();
            let bytes = fs::read(&out).unwrap();
            bad.push((format!("{c:?} half"), bytes[..bytes.len() / 2].to_vec()));
            if c == Compression::None {
                // Cut at an entry boundary: the end-of-archive blocks are gone
                // (`tar` alone takes that for a complete archive).
                bad.push(("None end blocks cut".into(), bytes[..bytes.len() - 1024].to_vec()));
            } else {
                // The frame's end and checksum are gone.
                bad.push((format!("{c:?} last byte cut"), bytes[..bytes.len() - 1].to_vec()));
            }
            fs::remove_file(&out).unwrap();
        }
        bad.push(("garbage".into(), noise(10_000, 7)));
        let mut zgarbage = vec![0x28, 0xb5, 0x2f, 0xfd];
        zgarbage.extend(noise(10_000, 8));
        bad.push(("zstd garbage".into(), zgarbage));
        bad.push(("empty".into(), Vec::new()));

        for (what, bytes) in bad {
            let archive = t.join("bad.tar");
            fs::write(&archive, &bytes).unwrap();
            let dest = t.join("dest");
            let e = unpack(&archive, &dest).map(|()| what.clone()).unwrap_err().to_string();
            let want = format!("{}: truncated or corrupt checkpoint archive: ", archive.display());
            assert!(e.starts_with(&want), "{what}: {e}");
            assert!(e.chars().all(|c| c.is_ascii_graphic() || c == ' '), "{what}: {e}");
            assert!(!dest.exists(), "{what}: dest left behind");
        }
    }

    #[test]
    fn not_a_checkpoint_archive() {
        let t = TempDir::new("notckpt");
        let src = t.join("src");
        write(&src.join("config.dump"), b"{}", 0o600);
        write(&src.join("checkpoint/pages-1.img"), b"p", 0o600);
        let archive = t.join("x.tar.gz");
        pack(&src, &archive, Compression::Gzip).unwrap();
        let dest = t.join("dest");
        let e = unpack(&archive, &dest).unwrap_err().to_string();
        let want =
            format!("{} is not a checkpoint archive (no config.dump / checkpoint/inventory.img)", archive.display());
        assert_eq!(e, want);
        assert!(!dest.exists());
    }

    #[test]
    fn unsafe_archive_refused() {
        let t = TempDir::new("unsafe");
        let outside = t.join("outside");
        fs::create_dir(&outside).unwrap();
        let out = outside.to_str().unwrap();
        let ok: RawEntry<'_> = ("config.dump", tar::EntryType::Regular, "", b"{}");
        let cases: [(&str, &[RawEntry<'_>]); 4] = [
            ("../evil", &[ok, ("../evil", tar::EntryType::Regular, "", b"x")]),
            (
                "through symlink",
                &[ok, ("esc", tar::EntryType::Symlink, out, b""), ("esc/pwned", tar::EntryType::Regular, "", b"x")],
            ),
            ("escapes", &[ok, ("up", tar::EntryType::Symlink, "../../..", b"")]),
            ("escapes", &[ok, ("hl", tar::EntryType::Link, "../../etc/passwd", b"")]),
        ];
        for (want, entries) in cases {
            let archive = t.join("bad.tar");
            fs::write(&archive, raw_tar(entries)).unwrap();
            let dest = t.join("dest");
            let e = unpack(&archive, &dest).unwrap_err().to_string();
            assert!(e.starts_with(&archive.display().to_string()) && e.contains(want), "{e}");
            assert!(!dest.exists(), "{e}");
            assert!(names(&outside).is_empty(), "{e}");
            assert!(!t.join("evil").exists(), "{e}");
        }
    }

    #[test]
    fn unpack_into_existing_dest_refused() {
        let t = TempDir::new("exists");
        let ck = t.join("ck");
        checkpoint_dir(&ck);
        let archive = t.join("a.tar.zst");
        pack(&ck, &archive, Compression::Zstd).unwrap();
        let dest = t.join("dest");
        write(&dest.join("mine"), b"m", 0o644);
        let e = unpack(&archive, &dest).unwrap_err();
        assert!(matches!(e, RuntimeError::Conflict(_)), "{e}");
        assert_eq!(names(&dest), ["mine"]);
    }
}
