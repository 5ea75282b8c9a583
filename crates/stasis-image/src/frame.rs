//! Reading and writing one framed image file.
//!
//! Layout (all integers little-endian u32):
//!
//! ```text
//! +--------------+-------------+-------------------------------------------+
//! | [lead magic] | kind magic  | entries...                                |
//! | COMMON or    | e.g. CORE   | len | protobuf (len bytes) | [payload]    |
//! | SERVICE, or  |             | len | protobuf             | [payload]    |
//! | absent for   |             | ...  until end of file                    |
//! | inventory    |             |                                           |
//! +--------------+-------------+-------------------------------------------+
//! ```
//!
//! There is no entry count and no checksum: the end of file ends the list.
//! Some kinds put raw bytes after an entry (the "payload"), whose length is
//! a field of that entry (`pipe_data_entry.bytes`...); see
//! [`Framing`](crate::magic::Framing). The reader is strict so that a damaged
//! image is refused before restore starts: it checks both magics, caps entry
//! lengths at [`MAX_ENTRY_LEN`], and reports truncation and undecodable
//! entries with the file path and the entry index.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use crate::error::ImageError;
use crate::magic::{magic_name, Framing, ImageKind, Prefix, IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC};

/// Largest protobuf entry accepted or written (64 MiB). Real entries are at
/// most a few MiB (an `mm_entry` with tens of thousands of VMAs).
pub const MAX_ENTRY_LEN: u32 = 64 << 20;

/// Largest raw payload after one entry (1 GiB): pipe contents, socket
/// queues. The reader grows its buffer as data arrives, so a lying length
/// does not allocate it up front.
pub const MAX_PAYLOAD_LEN: u64 = 1 << 30;

/// Short Rust name of a message type, for error messages.
fn message_name<M>() -> &'static str {
    let full = std::any::type_name::<M>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Reads as many bytes as possible into `buf`; returns how many (less than
/// `buf.len()` only at end of file).
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads and checks the header of a file, returning the kind it declares.
/// With `expected`, anything but that kind (with its leading magic) is
/// refused.
fn read_header<R: Read>(inp: &mut R, path: &Path, expected: Option<ImageKind>) -> Result<ImageKind, ImageError> {
    let io_err = |e| ImageError::io("read", path, e);
    let mut word = [0u8; 4];
    let got = read_full(inp, &mut word).map_err(io_err)?;
    let want = expected.map_or(4, ImageKind::header_len);
    if got < 4 {
        return Err(ImageError::TruncatedHeader { path: path.to_owned(), got, want });
    }
    let first = u32::from_le_bytes(word);
    let (lead, magic) = if first == IMG_COMMON_MAGIC || first == IMG_SERVICE_MAGIC {
        let got = read_full(inp, &mut word).map_err(io_err)?;
        if got < 4 {
            return Err(ImageError::TruncatedHeader { path: path.to_owned(), got: 4 + got, want: 8 });
        }
        (Some(first), u32::from_le_bytes(word))
    } else {
        (None, first)
    };
    let Some(kind) = ImageKind::from_magic(magic) else {
        return Err(ImageError::UnknownMagic { path: path.to_owned(), magic });
    };
    if let Some(expected) = expected {
        if kind != expected {
            return Err(ImageError::WrongMagic {
                path: path.to_owned(),
                expected,
                found: magic,
                found_name: magic_name(magic),
            });
        }
    }
    if lead != kind.prefix_magic() {
        let found = lead.unwrap_or(magic);
        return Err(ImageError::WrongMagic {
            path: path.to_owned(),
            expected: kind,
            found,
            found_name: if lead.is_none() { "no leading magic" } else { magic_name(found) },
        });
    }
    Ok(kind)
}

/// Reader of one framed image file.
#[derive(Debug)]
pub struct ImageReader<R> {
    inp: R,
    path: PathBuf,
    kind: ImageKind,
    /// Index of the next entry to read.
    next: usize,
}

impl ImageReader<BufReader<File>> {
    /// Opens `path` and checks that it is an image of `kind`.
    pub fn open(path: impl AsRef<Path>, kind: ImageKind) -> Result<Self, ImageError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| ImageError::io("open", path, e))?;
        ImageReader::new(BufReader::with_capacity(256 << 10, file), path, kind)
    }

    /// Opens `path` whatever its kind; see [`ImageReader::kind`].
    pub fn open_any(path: impl AsRef<Path>) -> Result<Self, ImageError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| ImageError::io("open", path, e))?;
        let mut inp = BufReader::new(file);
        let kind = read_header(&mut inp, path, None)?;
        Ok(ImageReader { inp, path: path.to_owned(), kind, next: 0 })
    }
}

impl<R: Read> ImageReader<R> {
    /// Reads and checks the header from `inp`; `path` names it in errors.
    pub fn new(mut inp: R, path: impl Into<PathBuf>, kind: ImageKind) -> Result<Self, ImageError> {
        let path = path.into();
        if kind.framing() == Framing::Raw {
            return Err(ImageError::Invalid {
                path,
                index: 0,
                reason: format!("{} images are raw and have no entries", kind.name()),
            });
        }
        read_header(&mut inp, &path, Some(kind))?;
        Ok(ImageReader { inp, path, kind, next: 0 })
    }

    /// The kind from the header.
    pub fn kind(&self) -> ImageKind {
        self.kind
    }

    /// The file, as named in errors.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of entries read so far.
    pub fn entries_read(&self) -> usize {
        self.next
    }

    /// The raw bytes of the next entry, `None` at a clean end of file.
    pub fn next_raw(&mut self) -> Result<Option<Vec<u8>>, ImageError> {
        let index = self.next;
        let mut word = [0u8; 4];
        let got = read_full(&mut self.inp, &mut word).map_err(|e| ImageError::io("read", &self.path, e))?;
        if got == 0 {
            return Ok(None);
        }
        if got < 4 {
            return Err(ImageError::TruncatedEntry {
                path: self.path.clone(),
                index,
                what: "length prefix",
                got: got as u64,
                want: 4,
            });
        }
        let len = u32::from_le_bytes(word);
        if len > MAX_ENTRY_LEN {
            return Err(ImageError::EntryTooLarge {
                path: self.path.clone(),
                index,
                len: u64::from(len),
                max: u64::from(MAX_ENTRY_LEN),
            });
        }
        let buf = self.read_exact_vec(u64::from(len), index, "message")?;
        self.next += 1;
        Ok(Some(buf))
    }

    /// Decodes the next entry as `M`; `None` at a clean end of file.
    pub fn next_entry<M: Message + Default>(&mut self) -> Result<Option<M>, ImageError> {
        let index = self.next;
        let Some(buf) = self.next_raw()? else {
            return Ok(None);
        };
        M::decode(buf.as_slice()).map(Some).map_err(|source| ImageError::Decode {
            path: self.path.clone(),
            index,
            message: message_name::<M>(),
            source,
        })
    }

    /// Like [`ImageReader::next_entry`], but end of file is an error: the format
    /// requires this entry.
    pub fn expect<M: Message + Default>(&mut self) -> Result<M, ImageError> {
        let found = self.next;
        self.next_entry()?.ok_or_else(|| ImageError::EntryCount {
            path: self.path.clone(),
            expected: "at least one more",
            found,
        })
    }

    /// Decodes every remaining entry as `M`.
    pub fn read_all<M: Message + Default>(&mut self) -> Result<Vec<M>, ImageError> {
        let mut out = Vec::new();
        while let Some(m) = self.next_entry()? {
            out.push(m);
        }
        Ok(out)
    }

    /// Reads the single entry of a one-entry file and checks nothing follows.
    pub fn read_one<M: Message + Default>(&mut self) -> Result<M, ImageError> {
        let all: Vec<M> = self.read_all()?;
        let found = all.len();
        let mut it = all.into_iter();
        match (it.next(), found) {
            (Some(m), 1) => Ok(m),
            _ => Err(ImageError::EntryCount { path: self.path.clone(), expected: "exactly 1", found }),
        }
    }

    /// Reads the `len` raw bytes that follow the entry just read.
    pub fn read_payload(&mut self, len: u64) -> Result<Vec<u8>, ImageError> {
        let index = self.next.saturating_sub(1);
        if len > MAX_PAYLOAD_LEN {
            return Err(ImageError::EntryTooLarge { path: self.path.clone(), index, len, max: MAX_PAYLOAD_LEN });
        }
        self.read_exact_vec(len, index, "payload")
    }

    fn read_exact_vec(&mut self, len: u64, index: usize, what: &'static str) -> Result<Vec<u8>, ImageError> {
        let mut buf = Vec::new();
        (&mut self.inp).take(len).read_to_end(&mut buf).map_err(|e| ImageError::io("read", &self.path, e))?;
        if (buf.len() as u64) < len {
            return Err(ImageError::TruncatedEntry {
                path: self.path.clone(),
                index,
                what,
                got: buf.len() as u64,
                want: len,
            });
        }
        Ok(buf)
    }
}

/// Writer of one framed image file. Call [`ImageWriter::finish`] to flush
/// and see write errors.
#[derive(Debug)]
pub struct ImageWriter<W: Write> {
    out: W,
    path: PathBuf,
    kind: ImageKind,
    next: usize,
    buf: Vec<u8>,
}

impl ImageWriter<BufWriter<File>> {
    /// Creates `path` (which must not exist) and writes the header of `kind`.
    pub fn create(path: impl AsRef<Path>, kind: ImageKind) -> Result<Self, ImageError> {
        let path = path.as_ref();
        let file =
            File::options().write(true).create_new(true).open(path).map_err(|e| ImageError::io("create", path, e))?;
        ImageWriter::new(BufWriter::with_capacity(256 << 10, file), path, kind)
    }
}

impl<W: Write> ImageWriter<W> {
    /// Writes the header of `kind` to `out`; `path` names it in errors.
    pub fn new(mut out: W, path: impl Into<PathBuf>, kind: ImageKind) -> Result<Self, ImageError> {
        let path = path.into();
        if kind.framing() == Framing::Raw {
            return Err(ImageError::Unwritable {
                path,
                reason: format!("{} images are raw; use PageWriter", kind.name()),
            });
        }
        let mut header = Vec::with_capacity(8);
        match kind.prefix() {
            Prefix::None => {}
            Prefix::Common => header.extend_from_slice(&IMG_COMMON_MAGIC.to_le_bytes()),
            Prefix::Service => header.extend_from_slice(&IMG_SERVICE_MAGIC.to_le_bytes()),
        }
        header.extend_from_slice(&kind.magic().to_le_bytes());
        out.write_all(&header).map_err(|e| ImageError::io("write", &path, e))?;
        Ok(ImageWriter { out, path, kind, next: 0, buf: Vec::new() })
    }

    /// The kind being written.
    pub fn kind(&self) -> ImageKind {
        self.kind
    }

    /// The file, as named in errors.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of entries written so far.
    pub fn entries_written(&self) -> usize {
        self.next
    }

    /// Appends one entry.
    pub fn write<M: Message>(&mut self, msg: &M) -> Result<(), ImageError> {
        let len = msg.encoded_len();
        let len = u32::try_from(len).ok().filter(|l| *l <= MAX_ENTRY_LEN).ok_or_else(|| ImageError::Unwritable {
            path: self.path.clone(),
            reason: format!(
                "entry {} ({}) is {len} bytes, over the {MAX_ENTRY_LEN}-byte limit",
                self.next,
                message_name::<M>()
            ),
        })?;
        self.buf.clear();
        self.buf.extend_from_slice(&len.to_le_bytes());
        msg.encode(&mut self.buf).map_err(|e| ImageError::Unwritable {
            path: self.path.clone(),
            reason: format!("entry {} does not encode: {e}", self.next),
        })?;
        self.out.write_all(&self.buf).map_err(|e| ImageError::io("write", &self.path, e))?;
        self.next += 1;
        Ok(())
    }

    /// Appends raw bytes after the entry just written (pipe data...).
    pub fn write_payload(&mut self, data: &[u8]) -> Result<(), ImageError> {
        if data.len() as u64 > MAX_PAYLOAD_LEN {
            return Err(ImageError::Unwritable {
                path: self.path.clone(),
                reason: format!("payload of {} bytes is over the {MAX_PAYLOAD_LEN}-byte limit", data.len()),
            });
        }
        self.out.write_all(data).map_err(|e| ImageError::io("write", &self.path, e))
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> Result<W, ImageError> {
        self.out.flush().map_err(|e| ImageError::io("write", &self.path, e))?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests;
