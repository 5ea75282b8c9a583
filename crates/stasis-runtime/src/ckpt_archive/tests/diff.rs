use super::*;
use crate::ckpt_archive::rootfs_diff::write_diff;
use std::os::unix::fs::{chown, lchown, symlink};
use std::time::{Duration, SystemTime};

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

fn whiteout(p: &Path) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    stasis_sys::ns::mknod(p, stasis_sys::ns::S_IFCHR, 0, 0).unwrap();
}

fn is_whiteout(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

fn json_list(p: &Path) -> Vec<String> {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
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
fn escaping_rootfs_diff_refused() {
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
