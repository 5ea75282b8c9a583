//! Unit tests of the framing: one per kind of corruption, plus layouts.

use super::*;
use crate::pb::{CoreEntry, InventoryEntry, PipeDataEntry, PstreeEntry, StatsEntry};

fn pstree(pid: u32) -> PstreeEntry {
    PstreeEntry { pid, ppid: 0, pgid: pid, sid: pid, threads: vec![pid, pid + 1] }
}

fn image(kind: ImageKind, entries: &[PstreeEntry]) -> Vec<u8> {
    let mut w = ImageWriter::new(Vec::new(), "t.img", kind).unwrap();
    for e in entries {
        w.write(e).unwrap();
    }
    w.finish().unwrap()
}

fn read(bytes: &[u8], kind: ImageKind) -> Result<Vec<PstreeEntry>, ImageError> {
    ImageReader::new(bytes, "t.img", kind)?.read_all()
}

#[test]
fn header_layouts() {
    let b = image(ImageKind::Pstree, &[]);
    assert_eq!(b, [0x19, 0x43, 0x56, 0x54, 0x30, 0x30, 0x27, 0x50]);
    let w = ImageWriter::new(Vec::new(), "i", ImageKind::Inventory).unwrap();
    assert_eq!(w.finish().unwrap(), 0x5831_3116u32.to_le_bytes());
    let w = ImageWriter::new(Vec::new(), "s", ImageKind::Stats).unwrap();
    assert_eq!(w.finish().unwrap()[..4], IMG_SERVICE_MAGIC.to_le_bytes());
    assert!(ImageWriter::new(Vec::new(), "p", ImageKind::Pages).is_err());
}

#[test]
fn round_trip_with_index_and_payload() {
    let entries = [pstree(1), pstree(20), PstreeEntry::default()];
    let b = image(ImageKind::Pstree, &entries);
    assert_eq!(read(&b, ImageKind::Pstree).unwrap(), entries);

    let mut w = ImageWriter::new(Vec::new(), "pd", ImageKind::PipesData).unwrap();
    w.write(&PipeDataEntry { pipe_id: 9, bytes: 3, size: None }).unwrap();
    w.write_payload(b"abc").unwrap();
    let b = w.finish().unwrap();
    let mut r = ImageReader::new(b.as_slice(), "pd", ImageKind::PipesData).unwrap();
    let e: PipeDataEntry = r.expect().unwrap();
    assert_eq!(r.read_payload(u64::from(e.bytes)).unwrap(), b"abc");
    assert_eq!(r.next_entry::<PipeDataEntry>().unwrap(), None);
}

#[test]
fn required_zero_fields_are_encoded() {
    // proto2 readers (crit) refuse messages without required fields,
    // even when their value is 0.
    let b = image(ImageKind::Pstree, &[PstreeEntry::default()]);
    // header 8 + length 4 + four fields of 2 bytes each.
    assert_eq!(b.len(), 8 + 4 + 8);
}

#[test]
fn empty_file_is_truncated_header() {
    let err = read(&[], ImageKind::Core).unwrap_err();
    assert!(matches!(err, ImageError::TruncatedHeader { got: 0, want: 8, .. }), "{err}");
    let err = read(&IMG_COMMON_MAGIC.to_le_bytes()[..], ImageKind::Core).unwrap_err();
    assert!(matches!(err, ImageError::TruncatedHeader { got: 4, want: 8, .. }), "{err}");
    let err = read(&[0x19, 0x43], ImageKind::Core).unwrap_err();
    assert!(err.to_string().contains("t.img is truncated"), "{err}");
}

#[test]
fn bad_magic_is_refused() {
    let mut b = image(ImageKind::Pstree, &[pstree(1)]);
    b[4..8].copy_from_slice(&0xdead_beefu32.to_le_bytes());
    let err = read(&b, ImageKind::Pstree).unwrap_err();
    assert_eq!(err.to_string(), "image t.img is not a CRIU image: unknown magic 0xdeadbeef");
    // Raw data (e.g. a pages file) where an image was expected.
    let err = read(&[0u8; 64], ImageKind::Pstree).unwrap_err();
    assert!(matches!(err, ImageError::UnknownMagic { magic: 0, .. }), "{err}");
}

#[test]
fn wrong_kind_is_refused() {
    let b = image(ImageKind::Mm, &[]);
    let err = read(&b, ImageKind::Core).unwrap_err();
    assert_eq!(err.to_string(), "image t.img has magic 0x57492820 (MM), expected CORE (0x55053847)");
}

#[test]
fn wrong_leading_magic_is_refused() {
    let mut b = image(ImageKind::Stats, &[]);
    b[..4].copy_from_slice(&IMG_COMMON_MAGIC.to_le_bytes());
    let err = read(&b, ImageKind::Stats).unwrap_err();
    assert!(err.to_string().contains("0x54564319 (IMG_COMMON), expected STATS"), "{err}");
    // Inventory must have no leading magic; core must have one.
    let err = read(&ImageKind::Core.magic().to_le_bytes(), ImageKind::Core).unwrap_err();
    assert!(err.to_string().contains("no leading magic"), "{err}");
}

#[test]
fn truncated_entry_is_refused() {
    let b = image(ImageKind::Pstree, &[pstree(1), pstree(2)]);
    // Cut inside the second entry's message.
    let err = read(&b[..b.len() - 2], ImageKind::Pstree).unwrap_err();
    assert!(matches!(err, ImageError::TruncatedEntry { index: 1, what: "message", .. }), "{err}");
    assert!(err.to_string().starts_with("image t.img is truncated in entry 1: message has"), "{err}");
    // Cut inside a length prefix.
    let one = image(ImageKind::Pstree, &[pstree(1)]).len();
    let err = read(&b[..one + 2], ImageKind::Pstree).unwrap_err();
    assert!(matches!(err, ImageError::TruncatedEntry { index: 1, what: "length prefix", got: 2, .. }));
    // Cut inside a payload.
    let mut w = ImageWriter::new(Vec::new(), "pd", ImageKind::PipesData).unwrap();
    w.write(&PipeDataEntry { pipe_id: 1, bytes: 10, size: None }).unwrap();
    w.write_payload(b"12345").unwrap();
    let b = w.finish().unwrap();
    let mut r = ImageReader::new(b.as_slice(), "pd", ImageKind::PipesData).unwrap();
    let e: PipeDataEntry = r.expect().unwrap();
    let err = r.read_payload(u64::from(e.bytes)).unwrap_err();
    assert!(matches!(err, ImageError::TruncatedEntry { index: 0, what: "payload", got: 5, want: 10, .. }));
}

#[test]
fn oversized_length_is_refused() {
    let mut b = image(ImageKind::Core, &[]);
    b.extend_from_slice(&(MAX_ENTRY_LEN + 1).to_le_bytes());
    b.extend_from_slice(&[0; 16]);
    let err = ImageReader::new(b.as_slice(), "t.img", ImageKind::Core).unwrap().read_all::<CoreEntry>().unwrap_err();
    assert!(matches!(err, ImageError::EntryTooLarge { index: 0, .. }), "{err}");
    assert!(err.to_string().contains("over the 67108864-byte limit"), "{err}");
    let mut b = image(ImageKind::Core, &[]);
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(read(&b, ImageKind::Core).is_err());
}

#[test]
fn garbage_protobuf_is_refused() {
    let mut b = image(ImageKind::Pstree, &[pstree(1)]);
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&[0xff, 0xff, 0xff]); // invalid tag/varint
    let err = read(&b, ImageKind::Pstree).unwrap_err();
    assert!(matches!(err, ImageError::Decode { index: 1, message: "PstreeEntry", .. }), "{err}");
    assert_eq!(err.to_string(), "image t.img entry 1 is not a valid PstreeEntry");
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn entry_count_is_checked() {
    let b = image(ImageKind::Inventory, &[]);
    let err =
        ImageReader::new(b.as_slice(), "inv", ImageKind::Inventory).unwrap().read_one::<InventoryEntry>().unwrap_err();
    assert_eq!(err.to_string(), "image inv has 0 entries, expected exactly 1");
    let mut w = ImageWriter::new(Vec::new(), "st", ImageKind::Stats).unwrap();
    w.write(&StatsEntry::default()).unwrap();
    w.write(&StatsEntry::default()).unwrap();
    let b = w.finish().unwrap();
    let mut r = ImageReader::new(b.as_slice(), "st", ImageKind::Stats).unwrap();
    assert!(matches!(r.read_one::<StatsEntry>(), Err(ImageError::EntryCount { found: 2, .. })));
}
