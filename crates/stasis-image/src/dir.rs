//! A whole image directory: typed readers, and a staging writer that makes
//! a checkpoint appear atomically.
//!
//! [`ImageDirWriter`] writes every file into a hidden sibling directory
//! (`.NAME.tmp-PID`), and [`ImageDirWriter::commit`] fsyncs each file and
//! the directory, then `rename(2)`s it to its final name and fsyncs the
//! parent. A dump that fails or crashes midway therefore never leaves a
//! valid-looking image set; an uncommitted writer removes its staging
//! directory when dropped. `rename(2)` replaces an empty directory and
//! refuses a non-empty one, which is exactly the rule we want.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::error::ImageError;
use crate::flags::{IMG_VERSION, STASIS_FORMAT};
use crate::frame::{ImageReader, ImageWriter};
use crate::magic::{file_name, ImageKind};
use crate::pages::{PageWriter, PagesIndex};
use crate::pb::{
    CoreEntry, FdinfoEntry, FileEntry, FsEntry, InventoryEntry, MmEntry, PagemapEntry, PagemapHead, PipeDataEntry,
    PstreeEntry, SeccompEntry, StatsEntry, TaskKobjIdsEntry, TcpStreamEntry,
};

/// One pipe's queued data from `pipes-data.img`.
#[derive(Debug, Clone, PartialEq)]
pub struct PipeData {
    /// The entry; `entry.bytes == data.len()`.
    pub entry: PipeDataEntry,
    /// The bytes that were in the pipe.
    pub data: Vec<u8>,
}

/// A TCP connection's repair state and queues from `tcp-stream-ID.img`.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpStream {
    /// The entry.
    pub entry: TcpStreamEntry,
    /// Receive queue (`inq_len` bytes).
    pub inq: Vec<u8>,
    /// Send queue (`outq_len` bytes).
    pub outq: Vec<u8>,
}

/// The symlink to the parent image set of an incremental dump (CRIU's name).
pub const PARENT_LINK: &str = "parent";

/// An existing image directory, read file by file.
#[derive(Debug, Clone)]
pub struct ImageDir {
    path: PathBuf,
}

impl ImageDir {
    /// Opens `path`, which must be a directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ImageError> {
        let path = path.as_ref();
        let meta = fs::metadata(path).map_err(|e| ImageError::io("open image directory", path, e))?;
        if !meta.is_dir() {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "not a directory");
            return Err(ImageError::io("open image directory", path, e));
        }
        Ok(ImageDir { path: path.to_owned() })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Path of file `name` in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Whether file `name` exists.
    pub fn exists(&self, name: &str) -> bool {
        self.file(name).exists()
    }

    /// The image set this one is incremental to: the directory its
    /// `parent` link names (relative to this one, as CRIU writes it), or
    /// `None` for a full image set.
    pub fn parent(&self) -> Result<Option<ImageDir>, ImageError> {
        let link = self.file(PARENT_LINK);
        match fs::symlink_metadata(&link) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::io("inspect", &link, e)),
            Ok(_) => ImageDir::open(&link).map(Some),
        }
    }

    /// Opens file `name` as an image of `kind`.
    pub fn reader(&self, name: &str, kind: ImageKind) -> Result<ImageReader<io::BufReader<File>>, ImageError> {
        ImageReader::open(self.file(name), kind)
    }

    /// All entries of file `name`.
    pub fn read_entries<M: Message + Default>(&self, name: &str, kind: ImageKind) -> Result<Vec<M>, ImageError> {
        self.reader(name, kind)?.read_all()
    }

    /// The single entry of file `name`.
    pub fn read_one<M: Message + Default>(&self, name: &str, kind: ImageKind) -> Result<M, ImageError> {
        self.reader(name, kind)?.read_one()
    }

    /// `inventory.img`, refused if written by an unknown format version
    /// (`img_version` other than CRIU's 2, or `stasis_format` newer than
    /// ours). A missing `stasis_format` means CRIU wrote it.
    pub fn read_inventory(&self) -> Result<InventoryEntry, ImageError> {
        let inv: InventoryEntry = self.read_one(file_name::INVENTORY, ImageKind::Inventory)?;
        let unknown = |field, found, supported| ImageError::UnknownVersion {
            path: self.file(file_name::INVENTORY),
            field,
            found,
            supported,
        };
        if inv.img_version != IMG_VERSION {
            return Err(unknown("img_version", inv.img_version, IMG_VERSION));
        }
        match inv.stasis_format {
            Some(v) if v > STASIS_FORMAT => Err(unknown("stasis_format", v, STASIS_FORMAT)),
            _ => Ok(inv),
        }
    }

    /// `pstree.img`: every process, parents first.
    pub fn read_pstree(&self) -> Result<Vec<PstreeEntry>, ImageError> {
        self.read_entries(file_name::PSTREE, ImageKind::Pstree)
    }

    /// `core-PID.img` of thread `tid` (for a leader, `tid` = pid).
    pub fn read_core(&self, tid: u32) -> Result<CoreEntry, ImageError> {
        self.read_one(&file_name::core(tid), ImageKind::Core)
    }

    /// `mm-PID.img`.
    pub fn read_mm(&self, pid: u32) -> Result<MmEntry, ImageError> {
        self.read_one(&file_name::mm(pid), ImageKind::Mm)
    }

    /// `ids-PID.img`.
    pub fn read_ids(&self, pid: u32) -> Result<TaskKobjIdsEntry, ImageError> {
        self.read_one(&file_name::ids(pid), ImageKind::Ids)
    }

    /// `fs-PID.img`.
    pub fn read_fs(&self, pid: u32) -> Result<FsEntry, ImageError> {
        self.read_one(&file_name::fs(pid), ImageKind::Fs)
    }

    /// `pagemap-PID.img`: its head and entries.
    pub fn read_pagemap(&self, pid: u32) -> Result<(PagemapHead, Vec<PagemapEntry>), ImageError> {
        let mut r = self.reader(&file_name::pagemap(pid), ImageKind::Pagemap)?;
        let head: PagemapHead = r.expect()?;
        Ok((head, r.read_all()?))
    }

    /// `pagemap-PID.img` checked and indexed by address.
    pub fn read_pages_index(&self, pid: u32) -> Result<PagesIndex, ImageError> {
        let (head, entries) = self.read_pagemap(pid)?;
        PagesIndex::new(&self.file(&file_name::pagemap(pid)), &head, &entries)
    }

    /// Path of `pages-N.img`.
    pub fn pages_path(&self, pages_id: u32) -> PathBuf {
        self.file(&file_name::pages(pages_id))
    }

    /// `files.img`: every open file of the tree.
    pub fn read_files(&self) -> Result<Vec<FileEntry>, ImageError> {
        self.read_entries(file_name::FILES, ImageKind::Files)
    }

    /// `fdinfo-N.img`: the fd table with `files_id` N.
    pub fn read_fdinfo(&self, files_id: u32) -> Result<Vec<FdinfoEntry>, ImageError> {
        self.read_entries(&file_name::fdinfo(files_id), ImageKind::Fdinfo)
    }

    /// `pipes-data.img`; empty if the file is absent (no pipe had data).
    pub fn read_pipes_data(&self) -> Result<Vec<PipeData>, ImageError> {
        if !self.exists(file_name::PIPES_DATA) {
            return Ok(Vec::new());
        }
        let mut r = self.reader(file_name::PIPES_DATA, ImageKind::PipesData)?;
        let mut out = Vec::new();
        while let Some(entry) = r.next_entry::<PipeDataEntry>()? {
            let data = r.read_payload(u64::from(entry.bytes))?;
            out.push(PipeData { entry, data });
        }
        Ok(out)
    }

    /// Every connection of `tcp-streams.img`, by socket inode; empty if
    /// there is no such file.
    ///
    /// CRIU writes one `tcp-stream-ID.img` per connection; we put them all
    /// in one image of the same kind (crit decodes it: each entry is framed
    /// as in CRIU's files, and names its socket in `stasis_ino`). A file per
    /// connection cost an inode each: with 100 connections, creating them
    /// took longer than the rest of the dump on ext4.
    pub fn read_tcp_streams(&self) -> Result<std::collections::HashMap<u32, TcpStream>, ImageError> {
        let mut out = std::collections::HashMap::new();
        if !self.exists(file_name::TCP_STREAMS) {
            return Ok(out);
        }
        let mut r = self.reader(file_name::TCP_STREAMS, ImageKind::TcpStream)?;
        while let Some(entry) = r.next_entry::<TcpStreamEntry>()? {
            let index = r.entries_read() - 1;
            let inq = r.read_payload(u64::from(entry.inq_len))?;
            let outq = r.read_payload(u64::from(entry.outq_len))?;
            let Some(ino) = entry.stasis_ino else {
                let reason = "entry has no socket inode (stasis_ino)".to_string();
                return Err(ImageError::Invalid { path: r.path().to_owned(), index, reason });
            };
            out.insert(ino, TcpStream { entry, inq, outq });
        }
        Ok(out)
    }

    /// `tcp-stream-ID.img`, CRIU's file for one connection (ID is the
    /// socket inode, in hex in the name).
    pub fn read_tcp_stream(&self, id: u32) -> Result<TcpStream, ImageError> {
        let mut r = self.reader(&file_name::tcp_stream(id), ImageKind::TcpStream)?;
        let entry: TcpStreamEntry = r.expect()?;
        let inq = r.read_payload(u64::from(entry.inq_len))?;
        let outq = r.read_payload(u64::from(entry.outq_len))?;
        Ok(TcpStream { entry, inq, outq })
    }

    /// `seccomp.img`; `None` if absent (no task used seccomp).
    pub fn read_seccomp(&self) -> Result<Option<SeccompEntry>, ImageError> {
        if !self.exists(file_name::SECCOMP) {
            return Ok(None);
        }
        self.read_one(file_name::SECCOMP, ImageKind::Seccomp).map(Some)
    }

    /// `stats-dump.img`.
    pub fn read_dump_stats(&self) -> Result<StatsEntry, ImageError> {
        self.read_one(file_name::STATS_DUMP, ImageKind::Stats)
    }
}

/// Writes an image set into a staging directory, then commits it into place.
#[derive(Debug)]
pub struct ImageDirWriter {
    staging: PathBuf,
    final_dir: PathBuf,
    committed: bool,
    /// `tcp-streams.img`, open from the first connection written.
    tcp_streams: std::sync::Mutex<Option<ImageWriter<io::BufWriter<File>>>>,
    /// Commit syncs the whole file system once instead of every file.
    fs_sync: Option<FsSync>,
}

/// Makes everything written to the file system holding a path durable
/// (`syncfs(2)`, which this crate cannot call: the engine passes it).
pub type FsSync = fn(&Path) -> io::Result<()>;

impl ImageDirWriter {
    /// Starts an image set that [`commit`](Self::commit) will move to
    /// `final_dir`. Refuses at once if `final_dir` exists and is not empty;
    /// removes a stale staging directory of the same name.
    pub fn create(final_dir: impl AsRef<Path>) -> Result<Self, ImageError> {
        let final_dir = final_dir.as_ref().to_owned();
        let name = final_dir
            .file_name()
            .ok_or_else(|| {
                let e = io::Error::new(io::ErrorKind::InvalidInput, "path has no final component");
                ImageError::io("use as image directory", &final_dir, e)
            })?
            .to_string_lossy()
            .into_owned();
        if !dir_is_absent_or_empty(&final_dir)? {
            return Err(ImageError::DirNotEmpty { path: final_dir });
        }
        let staging = final_dir.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(|e| ImageError::io("remove stale", &staging, e))?;
        }
        fs::create_dir(&staging).map_err(|e| ImageError::io("create", &staging, e))?;
        Ok(ImageDirWriter { staging, final_dir, committed: false, tcp_streams: Default::default(), fs_sync: None })
    }

    /// Makes the commit sync the whole file system once (`sync`, the
    /// engine's `syncfs`) instead of fsyncing every file: one device flush
    /// instead of one per file, worth it for dozens of small files when
    /// little else is waiting to be written. Call before writing.
    pub fn sync_whole_filesystem(&mut self, sync: FsSync) {
        self.fs_sync = Some(sync);
    }

    /// The staging directory, where files are written until commit.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Where the image set goes on commit.
    pub fn final_path(&self) -> &Path {
        &self.final_dir
    }

    /// Path of file `name` in the staging directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.staging.join(name)
    }

    /// Records `target` (a path relative to the final directory, or
    /// absolute) as the parent image set: pagemap entries flagged PARENT
    /// are found there.
    pub fn link_parent(&self, target: &Path) -> Result<(), ImageError> {
        let link = self.file(PARENT_LINK);
        std::os::unix::fs::symlink(target, &link).map_err(|e| ImageError::io("create", &link, e))
    }

    /// Creates file `name` as an image of `kind`, for streaming entries.
    pub fn writer(&self, name: &str, kind: ImageKind) -> Result<ImageWriter<io::BufWriter<File>>, ImageError> {
        ImageWriter::create(self.file(name), kind)
    }

    /// Writes file `name` with `entries`.
    pub fn write_entries<M: Message>(&self, name: &str, kind: ImageKind, entries: &[M]) -> Result<(), ImageError> {
        let mut w = self.writer(name, kind)?;
        for e in entries {
            w.write(e)?;
        }
        w.finish().map(drop)
    }

    /// Writes file `name` with one entry.
    pub fn write_one<M: Message>(&self, name: &str, kind: ImageKind, entry: &M) -> Result<(), ImageError> {
        self.write_entries(name, kind, std::slice::from_ref(entry))
    }

    /// Writes `inventory.img`, setting `img_version` and `stasis_format` to
    /// this crate's values whatever `inv` holds.
    pub fn write_inventory(&self, inv: &InventoryEntry) -> Result<(), ImageError> {
        let inv = InventoryEntry { img_version: IMG_VERSION, stasis_format: Some(STASIS_FORMAT), ..inv.clone() };
        self.write_one(file_name::INVENTORY, ImageKind::Inventory, &inv)
    }

    /// Writes `pstree.img`.
    pub fn write_pstree(&self, entries: &[PstreeEntry]) -> Result<(), ImageError> {
        self.write_entries(file_name::PSTREE, ImageKind::Pstree, entries)
    }

    /// Writes `core-TID.img`.
    pub fn write_core(&self, tid: u32, core: &CoreEntry) -> Result<(), ImageError> {
        self.write_one(&file_name::core(tid), ImageKind::Core, core)
    }

    /// Writes `mm-PID.img`.
    pub fn write_mm(&self, pid: u32, mm: &MmEntry) -> Result<(), ImageError> {
        self.write_one(&file_name::mm(pid), ImageKind::Mm, mm)
    }

    /// Writes `ids-PID.img`.
    pub fn write_ids(&self, pid: u32, ids: &TaskKobjIdsEntry) -> Result<(), ImageError> {
        self.write_one(&file_name::ids(pid), ImageKind::Ids, ids)
    }

    /// Writes `fs-PID.img`.
    pub fn write_fs(&self, pid: u32, fs: &FsEntry) -> Result<(), ImageError> {
        self.write_one(&file_name::fs(pid), ImageKind::Fs, fs)
    }

    /// Creates `pages-N.img` for a [`PageWriter`].
    pub fn page_writer(&self, pages_id: u32) -> Result<PageWriter, ImageError> {
        PageWriter::create(self.file(&file_name::pages(pages_id)), pages_id)
    }

    /// Writes `pagemap-PID.img`.
    pub fn write_pagemap(&self, pid: u32, head: &PagemapHead, entries: &[PagemapEntry]) -> Result<(), ImageError> {
        let mut w = self.writer(&file_name::pagemap(pid), ImageKind::Pagemap)?;
        w.write(head)?;
        for e in entries {
            w.write(e)?;
        }
        w.finish().map(drop)
    }

    /// Writes `files.img`.
    pub fn write_files(&self, entries: &[FileEntry]) -> Result<(), ImageError> {
        self.write_entries(file_name::FILES, ImageKind::Files, entries)
    }

    /// Writes `fdinfo-N.img`.
    pub fn write_fdinfo(&self, files_id: u32, entries: &[FdinfoEntry]) -> Result<(), ImageError> {
        self.write_entries(&file_name::fdinfo(files_id), ImageKind::Fdinfo, entries)
    }

    /// Writes `pipes-data.img`. `entry.bytes` is set from `data.len()`.
    pub fn write_pipes_data(&self, pipes: &[PipeData]) -> Result<(), ImageError> {
        let mut w = self.writer(file_name::PIPES_DATA, ImageKind::PipesData)?;
        for p in pipes {
            let bytes = u32::try_from(p.data.len()).map_err(|_| ImageError::Unwritable {
                path: w.path().to_owned(),
                reason: format!("pipe {} holds {} bytes, over 4 GiB", p.entry.pipe_id, p.data.len()),
            })?;
            w.write(&PipeDataEntry { bytes, ..p.entry })?;
            w.write_payload(&p.data)?;
        }
        w.finish().map(drop)
    }

    /// Writes `tcp-stream-ID.img`; the queue lengths are set from the data.
    /// Appends connection `id` (its socket inode) to `tcp-streams.img`:
    /// one file for all connections, not CRIU's `tcp-stream-ID.img` each
    /// (see [`ImageDir::read_tcp_streams`]).
    pub fn write_tcp_stream(&self, id: u32, s: &TcpStream) -> Result<(), ImageError> {
        let mut guard = self.tcp_streams.lock().unwrap_or_else(|e| e.into_inner());
        let w = match &mut *guard {
            Some(w) => w,
            None => guard.insert(self.writer(file_name::TCP_STREAMS, ImageKind::TcpStream)?),
        };
        let len = |q: &[u8]| {
            u32::try_from(q.len()).map_err(|_| ImageError::Unwritable {
                path: w.path().to_owned(),
                reason: format!("socket queue of {} bytes is over 4 GiB", q.len()),
            })
        };
        let entry = TcpStreamEntry { inq_len: len(&s.inq)?, outq_len: len(&s.outq)?, stasis_ino: Some(id), ..s.entry };
        w.write(&entry)?;
        w.write_payload(&s.inq)?;
        w.write_payload(&s.outq)
    }

    /// Writes `seccomp.img`.
    pub fn write_seccomp(&self, entry: &SeccompEntry) -> Result<(), ImageError> {
        self.write_one(file_name::SECCOMP, ImageKind::Seccomp, entry)
    }

    /// Writes `stats-dump.img`.
    pub fn write_dump_stats(&self, stats: &StatsEntry) -> Result<(), ImageError> {
        self.write_one(file_name::STATS_DUMP, ImageKind::Stats, stats)
    }

    /// Makes the image set durable and moves it to its final name: fsync
    /// every file and the staging directory, rename, fsync the parent.
    /// Refuses if the final directory has appeared and is not empty.
    pub fn commit(self) -> Result<PathBuf, ImageError> {
        if let Some(w) = self.tcp_streams.lock().unwrap_or_else(|e| e.into_inner()).take() {
            w.finish()?;
        }
        if let Some(sync) = self.fs_sync {
            sync(&self.staging).map_err(|e| ImageError::io("syncfs", &self.staging, e))?;
            return self.rename_into_place();
        }
        let entries = fs::read_dir(&self.staging).map_err(|e| ImageError::io("list", &self.staging, e))?;
        let mut files = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| ImageError::io("list", &self.staging, e))?.path();
            if path.is_file() {
                files.push(path);
            }
        }
        // fsync the files concurrently: the file system can then cover them
        // with one journal commit instead of one commit per file (ext4:
        // ~25 sequential fsyncs took 11 ms for a small dump here).
        std::thread::scope(|s| {
            let handles: Vec<_> =
                files.chunks(4).map(|chunk| s.spawn(move || chunk.iter().try_for_each(|p| fsync(p)))).collect();
            handles.into_iter().try_for_each(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(ImageError::io("fsync", &self.staging, std::io::Error::other("fsync thread panicked")))
                })
            })
        })?;
        fsync(&self.staging)?;
        self.rename_into_place()
    }

    /// The rename that commits a synced staging directory, made durable.
    fn rename_into_place(mut self) -> Result<PathBuf, ImageError> {
        if let Err(e) = fs::rename(&self.staging, &self.final_dir) {
            // ENOTEMPTY, or EEXIST on some filesystems.
            if matches!(e.raw_os_error(), Some(39) | Some(17)) {
                return Err(ImageError::DirNotEmpty { path: self.final_dir.clone() });
            }
            return Err(ImageError::io("rename staging directory to", &self.final_dir, e));
        }
        self.committed = true;
        let parent = match self.final_dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        fsync(&parent)?;
        Ok(self.final_dir.clone())
    }

    /// Removes the staging directory now, reporting failure (drop does the
    /// same silently).
    pub fn abandon(mut self) -> Result<(), ImageError> {
        self.committed = true;
        fs::remove_dir_all(&self.staging).map_err(|e| ImageError::io("remove", &self.staging, e))
    }
}

impl Drop for ImageDirWriter {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: an error here has no caller to go to, and a
            // leftover hidden `.tmp-PID` directory is never taken for images.
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

fn dir_is_absent_or_empty(path: &Path) -> Result<bool, ImageError> {
    match fs::read_dir(path) {
        Ok(mut it) => Ok(it.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(ImageError::io("inspect", path, e)),
    }
}

fn fsync(path: &Path) -> Result<(), ImageError> {
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| ImageError::io("fsync", path, e))
}
