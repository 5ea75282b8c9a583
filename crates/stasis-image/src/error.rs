//! The error type of this crate: every failure names the image file and,
//! for entry-level problems, the 0-based index of the entry, so the CLI can
//! print one line that says exactly which part of which file is wrong.

use std::io;
use std::path::PathBuf;

use crate::magic::ImageKind;

/// Reading, writing or committing images failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// An I/O call on an image file or directory failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done, e.g. "read", "create", "fsync".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The file ended before its header (magics) was complete.
    #[error("image {path} is truncated: its header is {got} bytes, expected {want}")]
    TruncatedHeader {
        /// The image file.
        path: PathBuf,
        /// Header bytes present.
        got: usize,
        /// Header bytes needed.
        want: usize,
    },

    /// The header carries a magic that is no known image kind.
    #[error("image {path} is not a CRIU image: unknown magic {magic:#010x}")]
    UnknownMagic {
        /// The image file.
        path: PathBuf,
        /// The magic found.
        magic: u32,
    },

    /// The header is valid but for another kind of image (or the wrong
    /// leading magic for this kind).
    #[error("image {path} has magic {found:#010x} ({found_name}), expected {expected} ({expected_magic:#010x})", expected = expected.name(), expected_magic = expected.magic())]
    WrongMagic {
        /// The image file.
        path: PathBuf,
        /// The kind the caller asked for.
        expected: ImageKind,
        /// The magic found.
        found: u32,
        /// CRIU's name of the magic found, or "unknown".
        found_name: &'static str,
    },

    /// The file ended inside an entry's length prefix or body.
    #[error("image {path} is truncated in entry {index}: {what} has {got} of {want} bytes")]
    TruncatedEntry {
        /// The image file.
        path: PathBuf,
        /// 0-based entry index.
        index: usize,
        /// "length prefix", "message" or "payload".
        what: &'static str,
        /// Bytes present.
        got: u64,
        /// Bytes needed.
        want: u64,
    },

    /// An entry claims a length over the sanity cap.
    #[error("image {path} entry {index} claims {len} bytes, over the {max}-byte limit")]
    EntryTooLarge {
        /// The image file.
        path: PathBuf,
        /// 0-based entry index.
        index: usize,
        /// The claimed length.
        len: u64,
        /// The cap.
        max: u64,
    },

    /// An entry's bytes are not a valid message of the expected type.
    #[error("image {path} entry {index} is not a valid {message}")]
    Decode {
        /// The image file.
        path: PathBuf,
        /// 0-based entry index.
        index: usize,
        /// Rust name of the expected message type.
        message: &'static str,
        /// prost's reason.
        #[source]
        source: prost::DecodeError,
    },

    /// A file that must hold a given number of entries holds another.
    #[error("image {path} has {found} entries, expected {expected}")]
    EntryCount {
        /// The image file.
        path: PathBuf,
        /// What the format requires, e.g. "exactly 1".
        expected: &'static str,
        /// Entries found.
        found: usize,
    },

    /// Decoded content is inconsistent (bad version, misaligned pages...).
    #[error("image {path} entry {index} is invalid: {reason}")]
    Invalid {
        /// The image file.
        path: PathBuf,
        /// 0-based entry index.
        index: usize,
        /// What is wrong, as a sentence fragment.
        reason: String,
    },

    /// The image set was written by a format version we do not know.
    #[error("image set {path} is from an unknown version: {field} is {found}, this Stasis reads up to {supported}")]
    UnknownVersion {
        /// `inventory.img`.
        path: PathBuf,
        /// "img_version" or "stasis_format".
        field: &'static str,
        /// The value in the image.
        found: u32,
        /// The largest value we read.
        supported: u32,
    },

    /// A caller handed the writer something the format cannot hold.
    #[error("cannot write image {path}: {reason}")]
    Unwritable {
        /// The image file.
        path: PathBuf,
        /// Why, as a sentence fragment.
        reason: String,
    },

    /// The final image directory already holds files.
    #[error("image directory {path} already exists and is not empty")]
    DirNotEmpty {
        /// The final directory.
        path: PathBuf,
    },
}

impl ImageError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ImageError::Io { action, path: path.into(), source }
    }
}
