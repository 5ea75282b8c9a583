//! `/proc/PID/mountinfo`: the mounts of a task's mount namespace, paths as
//! the task sees them (relative to its root), in mount order.

use super::{read_text, ProcError};
use stasis_sys::Pid;

/// One line of mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    pub mnt_id: u32,
    pub parent_id: u32,
    pub major: u32,
    pub minor: u32,
    /// The path inside the file system that is mounted here.
    pub root: String,
    /// Where, as the task sees it.
    pub mountpoint: String,
    /// Per-mount options (`rw,nosuid,relatime`).
    pub mount_opts: String,
    /// Propagation tags (`shared:N`, `master:N`, `unbindable`).
    pub tags: Vec<String>,
    pub fstype: String,
    pub source: String,
    /// Superblock options (`rw,size=65536k,mode=755`).
    pub super_opts: String,
}

impl MountInfo {
    /// The file system's device in the kernel's internal encoding
    /// (`MKDEV`: major << 20 | minor), which is what CRIU stores as
    /// `root_dev` and `crit` prints as "major:minor".
    pub fn dev(&self) -> u32 {
        (self.major << 20) | self.minor
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`,
/// `\134`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text.
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountInfo>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let bad = || format!("malformed mountinfo line {line:?}");
        let (head, tail) = line.split_once(" - ").ok_or_else(bad)?;
        let mut h = head.split(' ');
        let mut next = || h.next().ok_or_else(bad);
        let mnt_id = next()?.parse().map_err(|_| bad())?;
        let parent_id = next()?.parse().map_err(|_| bad())?;
        let (maj, min) = next()?.split_once(':').ok_or_else(bad)?;
        let root = unescape(next()?);
        let mountpoint = unescape(next()?);
        let mount_opts = next()?.to_string();
        let tags = h.map(str::to_string).collect();
        let mut t = tail.splitn(3, ' ');
        let fstype = t.next().ok_or_else(bad)?.to_string();
        let source = unescape(t.next().ok_or_else(bad)?);
        let super_opts = t.next().unwrap_or("").to_string();
        out.push(MountInfo {
            mnt_id,
            parent_id,
            major: maj.parse().map_err(|_| bad())?,
            minor: min.parse().map_err(|_| bad())?,
            root,
            mountpoint,
            mount_opts,
            tags,
            fstype,
            source,
            super_opts,
        });
    }
    Ok(out)
}

/// Reads `/proc/PID/mountinfo`.
pub fn read_mountinfo(pid: Pid) -> Result<Vec<MountInfo>, ProcError> {
    let (path, text) = read_text(pid, "mountinfo")?;
    parse_mountinfo(&text).map_err(|reason| ProcError::Parse { path, line: 0, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_container() {
        let text = "\
812 700 0:97 / / rw,relatime - overlay overlay rw,lowerdir=/a:/b,upperdir=/u,workdir=/w
813 812 0:100 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
814 812 0:101 / /dev rw,nosuid shared:5 master:3 - tmpfs tmpfs rw,size=65536k,mode=755,inode64
820 813 0:101 /null /proc/kcore rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755,inode64
821 812 8:1 /var/lib/x/hosts /etc/hosts rw,relatime - ext4 /dev/sda1 rw
822 812 8:1 /a\\040b /mnt/with\\040space ro - ext4 /dev/sda1 rw
";
        let m = parse_mountinfo(text).unwrap();
        assert_eq!(m.len(), 6);
        assert_eq!(m[0].mountpoint, "/");
        assert_eq!(m[2].tags, vec!["shared:5", "master:3"]);
        assert_eq!(m[2].super_opts, "rw,size=65536k,mode=755,inode64");
        assert_eq!(m[3].root, "/null");
        assert_eq!(m[3].dev(), m[2].dev());
        assert_eq!(m[4].dev(), (8 << 20) | 1);
        assert_eq!(m[5].mountpoint, "/mnt/with space");
        assert_eq!(m[5].root, "/a b");
        assert!(parse_mountinfo("1 2 3").is_err());
    }
}
