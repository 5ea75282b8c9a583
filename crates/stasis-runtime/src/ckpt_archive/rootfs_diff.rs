//! The container's rootfs diff: [`write_rootfs_diff`] and [`apply_rootfs_diff`].

use super::tree_writer::{header_of, Overlay, TreeWriter};
use super::{NewFile, Tracked, BUF_SIZE, DELETED_FILES, OPAQUE_DIRS, OPAQUE_XATTR, ROOTFS_DIFF};
use crate::archive;
use crate::error::{Ctx, Result, RuntimeError};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

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

pub(super) fn write_diff(upper: &Path, dir: &Path, is_opaque: &dyn Fn(&Path) -> io::Result<bool>) -> Result<()> {
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
            let rel = archive::relative_in_root(Path::new(name)).ok_or_else(|| {
                RuntimeError::Archive(format!("{}: path {name:?} leaves the rootfs ('..' component)", path.display()))
            })?;
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
