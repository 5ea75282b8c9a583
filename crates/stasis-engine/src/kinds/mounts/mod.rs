//! A tree's mount namespace: dumped from `/proc/PID/mountinfo` into
//! `mountpoints-1.img` (CRIU's `mnt_entry`, mount order, parents first),
//! the files of each tmpfs into `tmpfs-dev-MNT.tar.gz.img`; rebuilt at
//! restore under a root directory the caller supplies (a container's
//! rootfs), before the restorer pivots into it.
//!
//! How each mount comes back:
//! - the root mount (`/`) is the root directory given at restore;
//! - an *external* mount (a bind mount from the host, named at dump by its
//!   mountpoint and given a key) is bind-mounted from the host path the
//!   restorer maps that key to;
//! - a mount of a file system already restored (same device, its root
//!   inside the earlier mount's root) is a bind mount of that place: how
//!   runtimes mask paths (`/dev/null` over `/proc/kcore`) and make
//!   `/proc/sys` read-only;
//! - proc, sysfs, tmpfs, devpts, mqueue, cgroup and cgroup2 are mounted
//!   afresh with their superblock options; a tmpfs gets its files back.
//!
//! Anything else (a disk file system that is not external, overlay below
//! the root) is refused at dump, naming the mount.

pub mod dump;
pub mod restore;
pub mod tmpfs;

pub use dump::dump_mounts;
pub use restore::build;

/// CRIU's `fstype` codes for the file systems we mount afresh; others are
/// `AUTO` with the name in `fsname`.
const FSTYPES: &[(&str, u32)] = &[
    ("proc", 1),
    ("sysfs", 2),
    ("devtmpfs", 3),
    ("tmpfs", 5),
    ("devpts", 6),
    ("cgroup", 12),
    ("mqueue", 14),
    ("overlay", 17),
    ("cgroup2", 23),
];

/// `AUTO`: the file system's name is in `fsname`.
const FSTYPE_AUTO: u32 = 16;

/// File systems a restore can mount afresh (with `root` "/").
const FRESH: &[&str] = &["proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"];

/// The code for `name`.
fn fstype_code(name: &str) -> u32 {
    FSTYPES.iter().find(|(n, _)| *n == name).map_or(FSTYPE_AUTO, |(_, c)| *c)
}

/// The name of an entry's file system.
fn fstype_name(e: &stasis_image::pb::MntEntry) -> String {
    match FSTYPES.iter().find(|(_, c)| *c == e.fstype) {
        Some((n, _)) => n.to_string(),
        None => e.fsname.clone().unwrap_or_default(),
    }
}

/// Per-mount flags named in mountinfo's mount options.
const MOUNT_FLAGS: &[(&str, u64)] = &[
    ("ro", libc::MS_RDONLY),
    ("nosuid", libc::MS_NOSUID),
    ("nodev", libc::MS_NODEV),
    ("noexec", libc::MS_NOEXEC),
    ("noatime", libc::MS_NOATIME),
    ("nodiratime", libc::MS_NODIRATIME),
    ("relatime", libc::MS_RELATIME),
    ("strictatime", libc::MS_STRICTATIME),
];

/// The MS_* bits of a comma-separated option list. mountinfo names no
/// atime mode for strictatime: without noatime or relatime that is what
/// the mount has (a fresh mount would otherwise get relatime).
fn mount_flags(opts: &str) -> u32 {
    let f = opts.split(',').filter_map(|o| MOUNT_FLAGS.iter().find(|(n, _)| *n == o)).fold(0, |a, (_, f)| a | *f);
    let atime = libc::MS_NOATIME | libc::MS_RELATIME | libc::MS_STRICTATIME;
    (if f & atime == 0 { f | libc::MS_STRICTATIME } else { f }) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_types() {
        assert_eq!(
            mount_flags("rw,nosuid,nodev,noexec,relatime"),
            (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RELATIME) as u32
        );
        assert_eq!(mount_flags("ro,nosuid"), (libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_STRICTATIME) as u32);
        assert_eq!(fstype_code("tmpfs"), 5);
        assert_eq!(fstype_code("ext4"), FSTYPE_AUTO);
        let e = stasis_image::pb::MntEntry { fstype: FSTYPE_AUTO, fsname: Some("ext4".into()), ..Default::default() };
        assert_eq!(fstype_name(&e), "ext4");
    }
}
