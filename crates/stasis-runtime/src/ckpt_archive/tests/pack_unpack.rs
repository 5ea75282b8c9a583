use super::*;

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
    let want = format!("{} is not a checkpoint archive (no config.dump / checkpoint/inventory.img)", archive.display());
    assert_eq!(e, want);
    assert!(!dest.exists());
}

#[test]
fn escaping_archive_refused() {
    let t = TempDir::new("escaping");
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
