//! Round trips through the public API: every message kind through its
//! image file, the staging writer's commit rules, version checks, page
//! lookup, and the `show` summary.

mod common;

use common::*;
use prost::Message;
use stasis_image::flags::{pe, IMG_VERSION, STASIS_FORMAT};
use stasis_image::magic::file_name;
use stasis_image::pb::{self, FdTypes};
use stasis_image::{ImageDir, ImageDirWriter, ImageError, ImageKind, ImageReader, ImageWriter, PageReader, PAGE_SIZE};

/// Writes `msg` as an image of `kind`, reads it back, compares.
fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(kind: ImageKind, msg: M) {
    let mut w = ImageWriter::new(Vec::new(), "rt.img", kind).unwrap();
    w.write(&msg).unwrap();
    w.write(&M::default()).unwrap();
    let bytes = w.finish().unwrap();
    let mut r = ImageReader::new(bytes.as_slice(), "rt.img", kind).unwrap();
    assert_eq!(r.read_all::<M>().unwrap(), [msg, M::default()], "{kind:?}");
}

#[test]
fn every_message_kind_round_trips() {
    round_trip(
        ImageKind::Inventory,
        pb::InventoryEntry { img_version: 2, stasis_format: Some(1), ..Default::default() },
    );
    round_trip(ImageKind::Pstree, pb::PstreeEntry { pid: 1, ppid: 0, pgid: 1, sid: 1, threads: vec![1, 2] });
    round_trip(ImageKind::Core, core(PARENT, PARENT, "server"));
    round_trip(ImageKind::Core, core(PARENT, THREAD, "server"));
    round_trip(ImageKind::Mm, mm(PARENT));
    round_trip(ImageKind::Pagemap, pb::PagemapHead { pages_id: 3 });
    round_trip(
        ImageKind::Pagemap,
        pb::PagemapEntry {
            vaddr: 0x1000,
            compat_nr_pages: 2,
            in_parent: None,
            flags: Some(pe::PRESENT),
            nr_pages: Some(2),
        },
    );
    round_trip(ImageKind::Ids, ids(PARENT));
    round_trip(ImageKind::Fs, pb::FsEntry { cwd_id: 1, root_id: 2, umask: Some(0o22) });
    round_trip(ImageKind::Files, reg(1, "/etc/passwd", 0));
    round_trip(ImageKind::Files, pipe(2, 1));
    round_trip(ImageKind::Fdinfo, fd(3, 2, FdTypes::Pipe));
    round_trip(ImageKind::PipesData, pb::PipeDataEntry { pipe_id: 1, bytes: 0, size: Some(4096) });
    round_trip(ImageKind::Creds, thread_core(1).creds.unwrap());
    round_trip(ImageKind::Sigacts, core(1, 1, "x").tc.unwrap().sigactions[0]);
    round_trip(
        ImageKind::Stats,
        pb::StatsEntry {
            dump: None,
            restore: Some(pb::RestoreStatsEntry {
                pages_compared: 1,
                pages_skipped_cow: 2,
                forking_time: 3,
                restore_time: 4,
                pages_restored: Some(5),
            }),
        },
    );
    round_trip(
        ImageKind::Seccomp,
        pb::SeccompEntry {
            seccomp_filters: vec![pb::SeccompFilter { filter: vec![1, 2, 3], prev: Some(1), flags: None }],
        },
    );
    round_trip(ImageKind::Rlimit, pb::RlimitEntry { cur: 1, max: 2 });
    round_trip(ImageKind::Itimers, pb::ItimerEntry { isec: 1, iusec: 2, vsec: 3, vusec: 4 });
    round_trip(ImageKind::PosixTimers, core(1, 1, "x").tc.unwrap().timers.unwrap().posix[0]);
    round_trip(ImageKind::Pipes, pipe(2, 1).pipe.unwrap());
    round_trip(ImageKind::RegFiles, reg(1, "/x", 0).reg.unwrap());
    round_trip(ImageKind::EventfdFile, pb::EventfdFileEntry { id: 1, flags: 0, fown: fown(), counter: 9 });
}

#[test]
fn image_set_reads_back() {
    let tmp = TempDir::new("rt");
    let dir = write_image_set(&tmp.path().join("ck"));
    let img = ImageDir::open(&dir).unwrap();

    let inv = img.read_inventory().unwrap();
    assert_eq!((inv.img_version, inv.stasis_format), (IMG_VERSION, Some(STASIS_FORMAT)));
    assert_eq!(inv.root_ids, Some(ids(PARENT)));
    let tree = img.read_pstree().unwrap();
    assert_eq!(tree.iter().map(|p| (p.pid, p.ppid)).collect::<Vec<_>>(), [(PARENT, 0), (CHILD, PARENT)]);
    assert_eq!(img.read_core(THREAD).unwrap(), core(PARENT, THREAD, "server"));
    let c = img.read_core(PARENT).unwrap();
    assert_eq!(c.thread_info.as_ref().unwrap().xsave_raw.as_deref(), Some(&[0xa5; 2696][..]));
    assert_eq!(c.thread_info.unwrap().gpregs.fs_base, 0x7f00_0000_0740);
    assert_eq!(img.read_mm(CHILD).unwrap(), mm(CHILD));
    assert_eq!(img.read_ids(CHILD).unwrap(), ids(CHILD));
    assert_eq!(img.read_fs(PARENT).unwrap().cwd_id, CWD_ID);
    assert_eq!(img.read_files().unwrap().len(), 7);
    assert_eq!(img.read_fdinfo(PARENT).unwrap()[3], fd(3, PIPE_W_ID, FdTypes::Pipe));
    let pipes = img.read_pipes_data().unwrap();
    assert_eq!(pipes[0].entry.bytes as usize, pipes[0].data.len());
    assert_eq!(pipes[0].data, b"hello through the pipe\n");
    let tcp = img.read_tcp_streams().unwrap();
    assert_eq!(tcp.len(), 2);
    let first = &tcp[&TCP_INO];
    assert_eq!((first.inq.as_slice(), first.outq.as_slice(), first.entry.outq_len), (&b"in"[..], &b"out"[..], 3));
    assert_eq!(first.entry.stasis_ino, Some(TCP_INO));
    assert_eq!(tcp[&(TCP_INO + 1)].outq, b"second");
    assert!(!img.exists(&stasis_image::magic::file_name::tcp_stream(TCP_INO)), "no per-connection file");
    assert_eq!(img.read_seccomp().unwrap().unwrap().seccomp_filters.len(), 1);
    assert_eq!(img.read_dump_stats().unwrap().dump.unwrap().pages_written, 10);

    // Pagemap: two pushes at 0x1000000.. merged; parent run has no bytes.
    let (head, entries) = img.read_pagemap(PARENT).unwrap();
    assert_eq!(head.pages_id, 1);
    let runs: Vec<_> = entries.iter().map(|e| (e.vaddr, e.compat_nr_pages, e.flags.unwrap())).collect();
    assert_eq!(
        runs,
        [
            (0x100_0000, 3, pe::PRESENT),
            (0x100_3000, 1, pe::PARENT),
            (0x7f00_0000_0000, 1, pe::PRESENT | pe::LAZY),
            (0x7ffc_0000_1000, 1, pe::PRESENT)
        ]
    );
    let index = img.read_pages_index(PARENT).unwrap();
    let pages = PageReader::open(img.pages_path(index.pages_id()), &index).unwrap();
    let expect = [(0x100_0000, 1u8), (0x100_1000, 2), (0x100_2000, 3), (0x7f00_0000_0000, 4), (0x7ffc_0000_1000, 5)];
    for (addr, byte) in expect {
        let off = index.find(addr + 10).unwrap().offset_of(addr + 10).unwrap();
        let mut b = [0u8; 1];
        pages.read_at(off, &mut b).unwrap();
        assert_eq!(b[0], byte, "page at {addr:#x}");
    }
    assert!(index.find(0x100_3000).unwrap().offset.is_none());
    assert_eq!(pages.read_run(&index.runs()[0]).unwrap().len() as u64, 3 * PAGE_SIZE);
    assert!(pages.read_run(&index.runs()[1]).is_err());
}

#[test]
fn truncated_pages_file_is_refused() {
    let tmp = TempDir::new("pg");
    let dir = write_image_set(&tmp.path().join("ck"));
    let img = ImageDir::open(&dir).unwrap();
    let index = img.read_pages_index(CHILD).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(img.pages_path(2)).unwrap();
    f.set_len(PAGE_SIZE).unwrap();
    let err = PageReader::open(img.pages_path(2), &index).unwrap_err();
    assert!(err.to_string().contains("pages-2.img is truncated"), "{err}");
}

#[test]
fn unknown_versions_are_refused() {
    for (img_version, stasis_format, field) in [(1, None, "img_version"), (2, Some(STASIS_FORMAT + 1), "stasis_format")]
    {
        let tmp = TempDir::new("ver");
        let mut w = ImageWriter::create(tmp.path().join(file_name::INVENTORY), ImageKind::Inventory).unwrap();
        w.write(&pb::InventoryEntry { img_version, stasis_format, ..Default::default() }).unwrap();
        w.finish().unwrap();
        let err = ImageDir::open(tmp.path()).unwrap().read_inventory().unwrap_err();
        assert!(matches!(err, ImageError::UnknownVersion { field: f, .. } if f == field), "{err}");
        assert!(err.to_string().contains("is from an unknown version"), "{err}");
    }
    // CRIU's own inventory (no stasis_format) is accepted.
    let tmp = TempDir::new("ver");
    let mut w = ImageWriter::create(tmp.path().join(file_name::INVENTORY), ImageKind::Inventory).unwrap();
    w.write(&pb::InventoryEntry { img_version: 2, ..Default::default() }).unwrap();
    w.finish().unwrap();
    assert!(ImageDir::open(tmp.path()).unwrap().read_inventory().is_ok());
}

#[test]
fn staging_writer_commit_rules() {
    let tmp = TempDir::new("stage");
    let final_dir = tmp.path().join("ck");
    let hidden = |tmp: &TempDir| {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'))
            .count()
    };

    // Dropped without commit: nothing left behind, final dir never appears.
    {
        let w = ImageDirWriter::create(&final_dir).unwrap();
        w.write_pstree(&[]).unwrap();
        assert!(w.path().join(file_name::PSTREE).exists());
        assert!(w.path().file_name().unwrap().to_string_lossy().starts_with(".ck.tmp-"));
    }
    assert!(!final_dir.exists());
    assert_eq!(hidden(&tmp), 0);

    // An existing empty directory is replaced.
    std::fs::create_dir(&final_dir).unwrap();
    let w = ImageDirWriter::create(&final_dir).unwrap();
    w.write_pstree(&[]).unwrap();
    assert_eq!(w.commit().unwrap(), final_dir);
    assert!(final_dir.join(file_name::PSTREE).exists());
    assert_eq!(hidden(&tmp), 0);

    // A non-empty one is refused up front...
    let err = ImageDirWriter::create(&final_dir).unwrap_err();
    assert!(matches!(err, ImageError::DirNotEmpty { .. }), "{err}");
    assert!(err.to_string().ends_with("already exists and is not empty"), "{err}");

    // ...and at commit, if it filled up meanwhile; staging is then removed.
    let other = tmp.path().join("ck2");
    let w = ImageDirWriter::create(&other).unwrap();
    w.write_pstree(&[]).unwrap();
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("x"), b"x").unwrap();
    assert!(matches!(w.commit(), Err(ImageError::DirNotEmpty { .. })));
    assert_eq!(hidden(&tmp), 0);

    // Writing the same file twice is a bug the writer reports.
    let w = ImageDirWriter::create(tmp.path().join("ck3")).unwrap();
    w.write_core(1, &core(1, 1, "a")).unwrap();
    let err = w.write_core(1, &core(1, 1, "a")).unwrap_err();
    assert!(err.to_string().contains("cannot create"), "{err}");
    w.abandon().unwrap();
    assert_eq!(hidden(&tmp), 0);
}

#[test]
fn errors_name_the_file() {
    let tmp = TempDir::new("err");
    let dir = write_image_set(&tmp.path().join("ck"));
    let img = ImageDir::open(&dir).unwrap();
    // core-N.img where the pstree's core is expected to be.
    std::fs::copy(dir.join("mm-101.img"), dir.join("core-555.img")).unwrap();
    let err = img.read_core(555).unwrap_err();
    assert!(err.to_string().contains("core-555.img has magic 0x57492820 (MM), expected CORE"), "{err}");
    let err = img.read_core(556).unwrap_err();
    assert!(err.to_string().starts_with("cannot open ") && err.to_string().contains("core-556.img"), "{err}");
}

#[test]
fn show_summarises_the_set() {
    let tmp = TempDir::new("show");
    let dir = write_image_set(&tmp.path().join("ck"));
    let text = stasis_image::show::show(&dir).unwrap();
    for needle in [
        "stasis format 1",
        "server",
        "  worker",
        "/usr/bin/server",
        "[stack]",
        "[heap]",
        "shmem[1100]",
        "pipe:[4242]",
        "/var/log/server.log",
        "anon_inode:[eventfd]",
        "cwd: /srv",
        "5 in image (20 KiB), 1 in parent, 1 lazy",
        "Total: 2 processes, 10 pages in image (40960 bytes)",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

/// A zombie has a core and nothing else: show lists it instead of failing
/// on its missing ids/mm (a dump catches one whenever a child exits just
/// before the freeze).
#[test]
fn show_lists_a_zombie() {
    let tmp = TempDir::new("show-zombie");
    let dir = write_image_set(&tmp.path().join("ck"));
    let img = ImageDir::open(&dir).unwrap();
    let mut tree = img.read_pstree().unwrap();
    let first = tree[0].clone();
    tree.push(pb::PstreeEntry { pid: 4000, ppid: first.pid, pgid: first.pgid, sid: first.sid, threads: vec![4000] });
    std::fs::remove_file(dir.join(file_name::PSTREE)).unwrap();
    let mut w = ImageWriter::create(dir.join(file_name::PSTREE), ImageKind::Pstree).unwrap();
    for e in &tree {
        w.write(e).unwrap();
    }
    w.finish().unwrap();
    let core = pb::CoreEntry {
        mtype: pb::core_entry::March::X8664 as i32,
        tc: Some(pb::TaskCoreEntry {
            task_state: stasis_image::flags::task_state::ZOMBIE,
            comm: "gone".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut w = ImageWriter::create(dir.join(file_name::core(4000)), ImageKind::Core).unwrap();
    w.write(&core).unwrap();
    w.finish().unwrap();
    let text = stasis_image::show::show(&dir).unwrap();
    assert!(text.contains("Process 4000 (gone): zombie"), "{text}");
    assert!(text.contains("Total: 3 processes"), "{text}");
}

static FS_SYNCED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn count_fs_sync(p: &std::path::Path) -> std::io::Result<()> {
    assert!(p.join(file_name::INVENTORY).exists(), "synced before every file was written");
    FS_SYNCED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}

fn failing_fs_sync(_: &std::path::Path) -> std::io::Result<()> {
    Err(std::io::Error::other("disk gone"))
}

#[test]
fn whole_filesystem_sync_commits_once_and_its_failure_commits_nothing() {
    let tmp = TempDir::new("fssync");
    let mut w = ImageDirWriter::create(tmp.path().join("ck")).unwrap();
    w.sync_whole_filesystem(count_fs_sync);
    w.write_inventory(&pb::InventoryEntry::default()).unwrap();
    let dir = w.commit().unwrap();
    assert_eq!(FS_SYNCED.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(ImageDir::open(&dir).unwrap().read_inventory().is_ok());

    let mut w = ImageDirWriter::create(tmp.path().join("ck2")).unwrap();
    w.sync_whole_filesystem(failing_fs_sync);
    w.write_inventory(&pb::InventoryEntry::default()).unwrap();
    let e = w.commit().expect_err("a failed sync must not commit");
    assert!(e.to_string().contains("syncfs"), "{e}");
    assert!(!tmp.path().join("ck2").exists(), "the final directory exists after a failed sync");
}

/// A connection in CRIU's layout (`tcp-stream-ID.img`, one per file) reads
/// back too; an entry of `tcp-streams.img` without its socket is refused.
#[test]
fn criu_per_connection_tcp_stream() {
    let tmp = TempDir::new("tcp-criu");
    let entry = pb::TcpStreamEntry { inq_len: 2, outq_len: 1, mss_clamp: 1460, ..Default::default() };
    let mut w = ImageWriter::create(tmp.path().join(file_name::tcp_stream(0xff)), ImageKind::TcpStream).unwrap();
    w.write(&entry).unwrap();
    w.write_payload(b"in").unwrap();
    w.write_payload(b"o").unwrap();
    w.finish().unwrap();
    let img = ImageDir::open(tmp.path()).unwrap();
    let s = img.read_tcp_stream(0xff).unwrap();
    assert_eq!((s.inq.as_slice(), s.outq.as_slice(), s.entry.mss_clamp), (&b"in"[..], &b"o"[..], 1460));
    assert!(img.read_tcp_streams().unwrap().is_empty());

    let mut w = ImageWriter::create(tmp.path().join(file_name::TCP_STREAMS), ImageKind::TcpStream).unwrap();
    w.write(&pb::TcpStreamEntry::default()).unwrap();
    w.finish().unwrap();
    let err = img.read_tcp_streams().unwrap_err().to_string();
    assert!(err.contains("tcp-streams.img") && err.contains("stasis_ino"), "{err}");
}
