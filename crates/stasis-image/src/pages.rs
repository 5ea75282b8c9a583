//! Page contents (`pages-N.img`) and the pagemap that indexes them.
//!
//! `pages-N.img` is raw: no header, just the bytes of every present page,
//! in the order of the pagemap entries that have [`pe::PRESENT`]. A pagemap
//! entry covers `nr_pages` contiguous pages starting at `vaddr`; its bytes
//! start where the previous present entry's bytes end. Entries with only
//! [`pe::PARENT`] have no bytes here (they are in the parent image set).
//!
//! The writer gets large contiguous buffers from the engine (MiBs read with
//! `process_vm_readv`); it appends them through a 1 MiB `BufWriter`, which
//! passes buffers larger than itself straight to `write(2)`, so there is no
//! per-page syscall. Adjacent runs with equal flags merge into one entry, as
//! CRIU does, which keeps pagemaps small.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::ImageError;
use crate::flags::pe;
use crate::pb::{PagemapEntry, PagemapHead};

/// Page size of the images (x86-64).
pub const PAGE_SIZE: u64 = 4096;

/// Page count of an entry: the 64-bit field when present, else the 32-bit
/// one (images from CRIU before 4.0 and from crit 3.x).
pub fn entry_nr_pages(e: &PagemapEntry) -> u64 {
    e.nr_pages.unwrap_or(u64::from(e.compat_nr_pages))
}

/// Flags of an entry; images without `flags` use `in_parent` (CRIU's rule).
pub fn entry_flags(e: &PagemapEntry) -> u32 {
    match e.flags {
        Some(f) => f,
        None if e.in_parent == Some(true) => pe::PARENT,
        None => pe::PRESENT,
    }
}

/// Builds a pagemap from runs given in increasing address order, merging
/// each run into the previous entry when contiguous with equal flags.
#[derive(Debug, Clone)]
pub struct PagemapBuilder {
    pages_id: u32,
    entries: Vec<PagemapEntry>,
    /// End address of the last run; runs must start at or after it.
    end: u64,
}

impl PagemapBuilder {
    /// An empty pagemap for `pages-<pages_id>.img`.
    pub fn new(pages_id: u32) -> Self {
        PagemapBuilder { pages_id, entries: Vec::new(), end: 0 }
    }

    /// Adds `nr_pages` pages at `vaddr` with `flags`; refuses (with the
    /// reason) unaligned, empty, overlapping or out-of-order runs.
    pub fn push(&mut self, vaddr: u64, nr_pages: u64, flags: u32) -> Result<(), String> {
        if !vaddr.is_multiple_of(PAGE_SIZE) {
            return Err(format!("address {vaddr:#x} is not page aligned"));
        }
        if nr_pages == 0 {
            return Err(format!("run at {vaddr:#x} has no pages"));
        }
        if flags & (pe::PRESENT | pe::PARENT) == 0 || flags & !(pe::PRESENT | pe::PARENT | pe::LAZY) != 0 {
            return Err(format!("run at {vaddr:#x} has invalid flags {flags:#x}"));
        }
        let end = nr_pages
            .checked_mul(PAGE_SIZE)
            .and_then(|len| vaddr.checked_add(len))
            .ok_or_else(|| format!("run at {vaddr:#x} of {nr_pages} pages overflows the address space"))?;
        if vaddr < self.end {
            return Err(format!(
                "run at {vaddr:#x} is out of order or overlaps the previous run ending at {:#x}",
                self.end
            ));
        }
        self.end = end;
        if let Some(last) = self.entries.last_mut() {
            let last_nr = entry_nr_pages(last);
            let contiguous = last.vaddr + last_nr * PAGE_SIZE == vaddr;
            if contiguous && entry_flags(last) == flags {
                if let Ok(total) = u32::try_from(last_nr + nr_pages) {
                    last.compat_nr_pages = total;
                    last.nr_pages = Some(u64::from(total));
                    return Ok(());
                }
            }
        }
        // A single run over u32::MAX pages (16 TiB) is split so that the
        // 32-bit field old readers use stays exact.
        let mut vaddr = vaddr;
        let mut left = nr_pages;
        while left > 0 {
            let n = u32::try_from(left).unwrap_or(u32::MAX);
            self.entries.push(PagemapEntry {
                vaddr,
                compat_nr_pages: n,
                in_parent: None,
                flags: Some(flags),
                nr_pages: Some(u64::from(n)),
            });
            left -= u64::from(n);
            vaddr += u64::from(n) * PAGE_SIZE;
        }
        Ok(())
    }

    /// The entries built so far.
    pub fn entries(&self) -> &[PagemapEntry] {
        &self.entries
    }

    /// The head and entries to write to `pagemap-PID.img`.
    pub fn finish(self) -> (PagemapHead, Vec<PagemapEntry>) {
        (PagemapHead { pages_id: self.pages_id }, self.entries)
    }
}

/// Appends page contents to `pages-N.img` and builds its pagemap.
#[derive(Debug)]
pub struct PageWriter {
    out: BufWriter<File>,
    path: PathBuf,
    map: PagemapBuilder,
    written: u64,
}

impl PageWriter {
    /// Creates `path` (which must not exist) as `pages-<pages_id>.img`.
    pub fn create(path: impl AsRef<Path>, pages_id: u32) -> Result<Self, ImageError> {
        let path = path.as_ref();
        let file =
            File::options().write(true).create_new(true).open(path).map_err(|e| ImageError::io("create", path, e))?;
        Ok(PageWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            path: path.to_owned(),
            map: PagemapBuilder::new(pages_id),
            written: 0,
        })
    }

    /// Appends the pages `data` (a whole number of pages) that live at
    /// `vaddr`, marked [`pe::PRESENT`].
    pub fn add(&mut self, vaddr: u64, data: &[u8]) -> Result<(), ImageError> {
        self.add_with_flags(vaddr, data, pe::PRESENT)
    }

    /// Like [`PageWriter::add`] with explicit flags, e.g.
    /// `pe::PRESENT | pe::LAZY`; [`pe::PRESENT`] must be among them.
    pub fn add_with_flags(&mut self, vaddr: u64, data: &[u8], flags: u32) -> Result<(), ImageError> {
        let len = data.len() as u64;
        if !len.is_multiple_of(PAGE_SIZE) || flags & pe::PRESENT == 0 {
            return Err(
                self.unwritable(format!("{len} bytes at {vaddr:#x} with flags {flags:#x} are not whole present pages"))
            );
        }
        self.map.push(vaddr, len / PAGE_SIZE, flags).map_err(|reason| self.unwritable(reason))?;
        self.out.write_all(data).map_err(|e| ImageError::io("write", &self.path, e))?;
        self.written += len;
        Ok(())
    }

    /// Records `nr_pages` pages at `vaddr` that are unchanged since the
    /// parent image set ([`pe::PARENT`]); no bytes are written.
    pub fn add_parent(&mut self, vaddr: u64, nr_pages: u64) -> Result<(), ImageError> {
        self.map.push(vaddr, nr_pages, pe::PARENT).map_err(|reason| self.unwritable(reason))
    }

    /// Bytes of page contents written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes the pages and returns the pagemap to write (the caller
    /// fsyncs, e.g. [`ImageDirWriter::commit`](crate::ImageDirWriter::commit)).
    pub fn finish(mut self) -> Result<(PagemapHead, Vec<PagemapEntry>), ImageError> {
        self.out.flush().map_err(|e| ImageError::io("write", &self.path, e))?;
        Ok(self.map.finish())
    }

    fn unwritable(&self, reason: String) -> ImageError {
        ImageError::Unwritable { path: self.path.clone(), reason }
    }
}

/// One pagemap entry with the position of its bytes in `pages-N.img`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRun {
    /// First address.
    pub vaddr: u64,
    /// Number of pages.
    pub nr_pages: u64,
    /// `pe::*` bits.
    pub flags: u32,
    /// Offset of the first page in `pages-N.img`; `None` if not present.
    pub offset: Option<u64>,
}

impl PageRun {
    /// End address (exclusive).
    pub fn end(&self) -> u64 {
        self.vaddr + self.len()
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.nr_pages * PAGE_SIZE
    }

    /// Never true for a valid run; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.nr_pages == 0
    }

    /// Whether `addr` falls in this run.
    pub fn contains(&self, addr: u64) -> bool {
        (self.vaddr..self.end()).contains(&addr)
    }

    /// File offset of the byte at `addr`, if in this run and present.
    pub fn offset_of(&self, addr: u64) -> Option<u64> {
        if !self.contains(addr) {
            return None;
        }
        self.offset.map(|o| o + (addr - self.vaddr))
    }
}

/// A pagemap turned into runs with file offsets, for lookups by address.
#[derive(Debug, Clone)]
pub struct PagesIndex {
    pages_id: u32,
    runs: Vec<PageRun>,
    present_bytes: u64,
}

impl PagesIndex {
    /// Checks the entries (sorted, non-overlapping, non-empty) and computes
    /// offsets. `path` is the pagemap file, for errors; entry indexes in
    /// errors count the head as entry 0, as in the file.
    pub fn new(path: &Path, head: &PagemapHead, entries: &[PagemapEntry]) -> Result<Self, ImageError> {
        let mut runs = Vec::with_capacity(entries.len());
        let mut offset = 0u64;
        let mut end = 0u64;
        for (i, e) in entries.iter().enumerate() {
            let invalid = |reason: String| ImageError::Invalid { path: path.to_owned(), index: i + 1, reason };
            let nr_pages = entry_nr_pages(e);
            let flags = entry_flags(e);
            if e.vaddr % PAGE_SIZE != 0 || nr_pages == 0 {
                return Err(invalid(format!("run {:#x} x {nr_pages} pages is unaligned or empty", e.vaddr)));
            }
            let run_end = nr_pages
                .checked_mul(PAGE_SIZE)
                .and_then(|l| e.vaddr.checked_add(l))
                .ok_or_else(|| invalid(format!("run at {:#x} overflows the address space", e.vaddr)))?;
            if e.vaddr < end {
                return Err(invalid(format!("run at {:#x} overlaps or precedes the previous run", e.vaddr)));
            }
            end = run_end;
            let present = flags & pe::PRESENT != 0;
            runs.push(PageRun { vaddr: e.vaddr, nr_pages, flags, offset: present.then_some(offset) });
            if present {
                offset += nr_pages * PAGE_SIZE;
            }
        }
        Ok(PagesIndex { pages_id: head.pages_id, runs, present_bytes: offset })
    }

    /// N of `pages-N.img`.
    pub fn pages_id(&self) -> u32 {
        self.pages_id
    }

    /// All runs, by address.
    pub fn runs(&self) -> &[PageRun] {
        &self.runs
    }

    /// Bytes the pages file must hold.
    pub fn present_bytes(&self) -> u64 {
        self.present_bytes
    }

    /// The run containing `addr`.
    pub fn find(&self, addr: u64) -> Option<&PageRun> {
        let i = self.runs.partition_point(|r| r.end() <= addr);
        self.runs.get(i).filter(|r| r.contains(addr))
    }

    /// Number of pages in runs that intersect `[start, end)`, for summaries.
    pub fn pages_in(&self, start: u64, end: u64) -> u64 {
        let first = self.runs.partition_point(|r| r.end() <= start);
        self.runs[first..]
            .iter()
            .take_while(|r| r.vaddr < end)
            .map(|r| (r.end().min(end) - r.vaddr.max(start)) / PAGE_SIZE)
            .sum()
    }
}

/// Positional reader of `pages-N.img` (pread; no shared file offset, so
/// several threads may read one file).
#[derive(Debug)]
pub struct PageReader {
    file: File,
    path: PathBuf,
}

impl PageReader {
    /// Opens `path` and checks it holds at least `index.present_bytes()`.
    pub fn open(path: impl AsRef<Path>, index: &PagesIndex) -> Result<Self, ImageError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| ImageError::io("open", path, e))?;
        let len = file.metadata().map_err(|e| ImageError::io("stat", path, e))?.len();
        if len < index.present_bytes() {
            return Err(ImageError::TruncatedEntry {
                path: path.to_owned(),
                index: 0,
                what: "page data",
                got: len,
                want: index.present_bytes(),
            });
        }
        Ok(PageReader { file, path: path.to_owned() })
    }

    /// Fills `buf` from file offset `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        self.file.read_exact_at(buf, offset).map_err(|e| ImageError::io("read", &self.path, e))
    }

    /// Reads the whole contents of a present run; a run without
    /// [`pe::PRESENT`] reads as an error naming it.
    pub fn read_run(&self, run: &PageRun) -> Result<Vec<u8>, ImageError> {
        let offset = run.offset.ok_or_else(|| ImageError::Invalid {
            path: self.path.clone(),
            index: 0,
            reason: format!("pages at {:#x} are not in this image (flags {:#x})", run.vaddr, run.flags),
        })?;
        let len = usize::try_from(run.len()).map_err(|_| ImageError::Invalid {
            path: self.path.clone(),
            index: 0,
            reason: format!("run at {:#x} is too large for memory", run.vaddr),
        })?;
        let mut buf = vec![0u8; len];
        self.read_at(offset, &mut buf)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = PAGE_SIZE;

    #[test]
    fn adjacent_runs_merge() {
        let mut b = PagemapBuilder::new(7);
        b.push(0x1000, 1, pe::PRESENT).unwrap();
        b.push(0x2000, 3, pe::PRESENT).unwrap();
        b.push(0x5000, 2, pe::PRESENT).unwrap();
        let (head, e) = b.finish();
        assert_eq!(head.pages_id, 7);
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].vaddr, e[0].compat_nr_pages, e[0].nr_pages), (0x1000, 6, Some(6)));
    }

    #[test]
    fn gaps_and_flag_changes_split() {
        let mut b = PagemapBuilder::new(1);
        b.push(0x1000, 1, pe::PRESENT).unwrap();
        b.push(0x3000, 1, pe::PRESENT).unwrap(); // gap
        b.push(0x4000, 1, pe::PARENT).unwrap(); // other flags
        b.push(0x5000, 1, pe::PRESENT | pe::LAZY).unwrap();
        b.push(0x6000, 1, pe::PRESENT | pe::LAZY).unwrap();
        let (_, e) = b.finish();
        let got: Vec<_> = e.iter().map(|e| (e.vaddr, entry_nr_pages(e), entry_flags(e))).collect();
        assert_eq!(
            got,
            [
                (0x1000, 1, pe::PRESENT),
                (0x3000, 1, pe::PRESENT),
                (0x4000, 1, pe::PARENT),
                (0x5000, 2, pe::PRESENT | pe::LAZY)
            ]
        );
    }

    #[test]
    fn bad_runs_are_refused() {
        let mut b = PagemapBuilder::new(1);
        assert!(b.push(0x1001, 1, pe::PRESENT).unwrap_err().contains("aligned"));
        assert!(b.push(0x1000, 0, pe::PRESENT).unwrap_err().contains("no pages"));
        assert!(b.push(0x1000, 1, 0).unwrap_err().contains("flags"));
        assert!(b.push(u64::MAX - P + 1, 2, pe::PRESENT).unwrap_err().contains("overflow"));
        b.push(0x5000, 2, pe::PRESENT).unwrap();
        assert!(b.push(0x6000, 1, pe::PRESENT).unwrap_err().contains("overlaps"));
        assert!(b.push(0x1000, 1, pe::PRESENT).unwrap_err().contains("out of order"));
    }

    #[test]
    fn huge_run_splits_at_u32_max() {
        let mut b = PagemapBuilder::new(1);
        let n = u64::from(u32::MAX) + 5;
        b.push(0, n, pe::PARENT).unwrap();
        let (_, e) = b.finish();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].compat_nr_pages, u32::MAX);
        assert_eq!(e[1].vaddr, u64::from(u32::MAX) * P);
        assert_eq!(entry_nr_pages(&e[1]), 5);
    }

    #[test]
    fn old_entries_without_flags_or_nr_pages() {
        let e = PagemapEntry { vaddr: 0, compat_nr_pages: 3, in_parent: Some(true), flags: None, nr_pages: None };
        assert_eq!((entry_nr_pages(&e), entry_flags(&e)), (3, pe::PARENT));
        let e = PagemapEntry { in_parent: None, ..e };
        assert_eq!(entry_flags(&e), pe::PRESENT);
    }

    #[test]
    fn index_offsets_skip_parent_runs() {
        let mut b = PagemapBuilder::new(3);
        b.push(0x10000, 2, pe::PRESENT).unwrap();
        b.push(0x20000, 4, pe::PARENT).unwrap();
        b.push(0x30000, 1, pe::PRESENT | pe::LAZY).unwrap();
        let (head, e) = b.finish();
        let idx = PagesIndex::new(Path::new("pagemap-1.img"), &head, &e).unwrap();
        assert_eq!(idx.present_bytes(), 3 * P);
        assert_eq!(idx.find(0x10000 + P + 5).unwrap().offset_of(0x10000 + P + 5), Some(P + 5));
        assert_eq!(idx.find(0x21000).unwrap().offset, None);
        assert_eq!(idx.find(0x30010).unwrap().offset_of(0x30010), Some(2 * P + 0x10));
        assert!(idx.find(0x12000).is_none());
        assert!(idx.find(0).is_none());
        assert_eq!(idx.pages_in(0x11000, 0x22000), 1 + 2);
    }

    #[test]
    fn index_refuses_overlap() {
        let head = PagemapHead { pages_id: 1 };
        let mk = |vaddr, n| PagemapEntry {
            vaddr,
            compat_nr_pages: n,
            in_parent: None,
            flags: Some(pe::PRESENT),
            nr_pages: None,
        };
        let err = PagesIndex::new(Path::new("pm.img"), &head, &[mk(0x2000, 2), mk(0x3000, 1)]).unwrap_err();
        assert!(err.to_string().contains("pm.img entry 2"), "{err}");
    }
}
