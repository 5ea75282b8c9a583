//! `/proc/PID/maps`: the task's virtual memory areas (VMAs).
//!
//! One line per VMA: `start-end perms pgoff major:minor inode   path`, where
//! the path column is padded and may be empty (private anonymous memory), a
//! bracketed kernel name (`[heap]`, `[stack]`, `[vdso]`, `[vvar]`,
//! `[vvar_vclock]`, `[vsyscall]`, `[anon:NAME]`, `[uprobes]`), or a file path
//! that may contain spaces and may end in `" (deleted)"`. Shared anonymous
//! memory shows as `/dev/zero (deleted)`, SysV shm as `/SYSV%08x (deleted)`,
//! memfds as `/memfd:NAME (deleted)`. The kernel escapes only `\n` in paths
//! (as `\012`); we keep the path as printed.
//!
//! The dump restores each VMA by its [`VmaKind`]: anonymous memory is mapped
//! fresh and filled, files are reopened, shared memory is dumped once, and the
//! vDSO/vvar are moved rather than recreated.

use super::{parse_err, read_text, split_deleted, ProcError};

/// Access bits of a VMA (the `rwx` of the perms column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prot {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Prot {
    /// As `PROT_*` bits for `mmap`/`mprotect`.
    pub fn bits(self) -> i32 {
        let mut p = libc::PROT_NONE;
        if self.read {
            p |= libc::PROT_READ;
        }
        if self.write {
            p |= libc::PROT_WRITE;
        }
        if self.exec {
            p |= libc::PROT_EXEC;
        }
        p
    }
}

/// What a VMA is, from its path column (and sharing bit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmaKind {
    /// Private anonymous memory, unnamed or named with `PR_SET_VMA_ANON_NAME`
    /// (`[anon:NAME]`, kept in `path`).
    Anon,
    /// A mapping of a file that still has a name.
    File,
    /// `[heap]`: the brk area.
    Heap,
    /// `[stack]` (or `[stack:TID]` on old kernels): the main thread's stack.
    Stack,
    Vdso,
    Vvar,
    VvarVclock,
    /// `[vsyscall]`: a fixed legacy page, not a real VMA; never restored.
    Vsyscall,
    /// Shared anonymous memory: `MAP_SHARED|MAP_ANONYMOUS` (`/dev/zero
    /// (deleted)`), SysV shm (`/SYSVkey (deleted)`), `[anon_shmem:NAME]`.
    SharedAnon,
    /// A mapping of a file that was unlinked (`deleted` is set).
    DeletedFile,
    /// A memfd mapping; `path` is `/memfd:NAME`.
    Memfd,
    /// Another bracketed kernel name, such as `[uprobes]`.
    Other(String),
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsEntry {
    pub start: u64,
    pub end: u64,
    pub prot: Prot,
    /// `s` rather than `p`: the VMA may be shared (`VM_MAYSHARE`).
    pub shared: bool,
    /// Offset in the file, in bytes.
    pub pgoff: u64,
    /// Device of the mapped file: (major, minor).
    pub dev: (u32, u32),
    pub inode: u64,
    /// The path column, `None` when empty; without the `" (deleted)"` suffix.
    pub path: Option<String>,
    /// The path ended in `" (deleted)"`.
    pub deleted: bool,
    pub kind: VmaKind,
}

impl MapsEntry {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Never true for a VMA the kernel reports; present for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    pub fn contains(&self, addr: u64) -> bool {
        (self.start..self.end).contains(&addr)
    }

    /// `[vdso]`, `[vvar]`, `[vvar_vclock]` or `[vsyscall]`: provided by the
    /// kernel, moved (or skipped) on restore rather than mapped.
    pub fn is_special(&self) -> bool {
        matches!(self.kind, VmaKind::Vdso | VmaKind::Vvar | VmaKind::VvarVclock | VmaKind::Vsyscall)
    }

    /// The device as a `dev_t`, as `stat(2)` reports it for the mapped file.
    pub fn dev_t(&self) -> u64 {
        let (ma, mi) = (u64::from(self.dev.0), u64::from(self.dev.1));
        ((ma & 0xffff_f000) << 32) | ((ma & 0xfff) << 8) | ((mi & 0xffff_ff00) << 12) | (mi & 0xff)
    }

    /// The name of a memfd (`NAME` of `/memfd:NAME`).
    pub fn memfd_name(&self) -> Option<&str> {
        match self.kind {
            VmaKind::Memfd => self.path.as_deref()?.strip_prefix("/memfd:"),
            _ => None,
        }
    }

    /// The name of a named anonymous VMA (`NAME` of `[anon:NAME]` or `[anon_shmem:NAME]`).
    pub fn anon_name(&self) -> Option<&str> {
        let p = self.path.as_deref()?.strip_suffix(']')?;
        p.strip_prefix("[anon:").or_else(|| p.strip_prefix("[anon_shmem:"))
    }
}

/// Reads and parses `/proc/PID/maps`.
pub fn read_maps(pid: i32) -> Result<Vec<MapsEntry>, ProcError> {
    let (path, text) = read_text(pid, "maps")?;
    parse_maps(&text).map_err(|e| e.at(&path))
}

/// Parses the text of a `maps` file.
pub fn parse_maps(text: &str) -> Result<Vec<MapsEntry>, ProcError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| parse_maps_line(l).map_err(|r| parse_err("maps", i + 1, r)))
        .collect()
}

/// Splits off the next space-separated field.
fn field(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start_matches(' ');
    if s.is_empty() {
        return None;
    }
    Some(s.split_once(' ').unwrap_or((s, "")))
}

/// Parses one maps line (also the header line of an smaps block).
pub(crate) fn parse_maps_line(line: &str) -> Result<MapsEntry, String> {
    let missing = |what: &str| format!("missing {what} in {line:?}");
    let (range, rest) = field(line).ok_or_else(|| missing("range"))?;
    let (perms, rest) = field(rest).ok_or_else(|| missing("perms"))?;
    let (off, rest) = field(rest).ok_or_else(|| missing("offset"))?;
    let (dev, rest) = field(rest).ok_or_else(|| missing("device"))?;
    let (ino, rest) = field(rest).ok_or_else(|| missing("inode"))?;

    let (start, end) = range
        .split_once('-')
        .and_then(|(a, b)| Some((super::hex_u64(a)?, super::hex_u64(b)?)))
        .filter(|(a, b)| a < b)
        .ok_or_else(|| format!("bad address range {range:?}"))?;
    let p = perms.as_bytes();
    if p.len() != 4 {
        return Err(format!("bad permissions {perms:?}"));
    }
    let bit = |i: usize, c: u8| match p[i] {
        x if x == c => Ok(true),
        b'-' => Ok(false),
        _ => Err(format!("bad permissions {perms:?}")),
    };
    let prot = Prot { read: bit(0, b'r')?, write: bit(1, b'w')?, exec: bit(2, b'x')? };
    let shared = match p[3] {
        b's' => true,
        b'p' => false,
        _ => return Err(format!("bad permissions {perms:?}")),
    };
    let pgoff = super::hex_u64(off).ok_or_else(|| format!("bad offset {off:?}"))?;
    let dev = dev
        .split_once(':')
        .and_then(|(a, b)| Some((u32::from_str_radix(a, 16).ok()?, u32::from_str_radix(b, 16).ok()?)))
        .ok_or_else(|| format!("bad device {dev:?}"))?;
    let inode = ino.parse().map_err(|_| format!("bad inode {ino:?}"))?;

    let raw = rest.trim_start_matches(' ');
    let (path, deleted, kind) = classify(raw, shared);
    Ok(MapsEntry { start, end, prot, shared, pgoff, dev, inode, path, deleted, kind })
}

fn classify(raw: &str, shared: bool) -> (Option<String>, bool, VmaKind) {
    if raw.is_empty() {
        return (None, false, VmaKind::Anon);
    }
    if raw.starts_with('[') && raw.ends_with(']') {
        let kind = match raw {
            "[heap]" => VmaKind::Heap,
            "[stack]" => VmaKind::Stack,
            "[vdso]" => VmaKind::Vdso,
            "[vvar]" => VmaKind::Vvar,
            "[vvar_vclock]" => VmaKind::VvarVclock,
            "[vsyscall]" => VmaKind::Vsyscall,
            _ if raw.starts_with("[stack:") => VmaKind::Stack,
            _ if raw.starts_with("[anon:") => VmaKind::Anon,
            _ if raw.starts_with("[anon_shmem:") => VmaKind::SharedAnon,
            _ => VmaKind::Other(raw.to_owned()),
        };
        return (Some(raw.to_owned()), false, kind);
    }
    let (path, deleted) = split_deleted(raw);
    let kind = if path.starts_with("/memfd:") && deleted {
        VmaKind::Memfd
    } else if shared && deleted && (path == "/dev/zero" || path.starts_with("/SYSV")) {
        VmaKind::SharedAnon
    } else if deleted {
        VmaKind::DeletedFile
    } else {
        VmaKind::File
    };
    (Some(path.to_owned()), deleted, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYTHON: &str = include_str!("fixtures/python_maps.txt");
    const BASH: &str = include_str!("fixtures/bash_maps.txt");

    fn find(v: &[MapsEntry], start: u64) -> &MapsEntry {
        v.iter().find(|e| e.start == start).expect("vma")
    }

    #[test]
    fn python_sample() {
        let v = parse_maps(PYTHON).unwrap();
        assert_eq!(v.len(), PYTHON.lines().count());
        assert!(v.windows(2).all(|w| w[0].end <= w[1].start));

        let exe = &v[0];
        assert_eq!((exe.start, exe.end), (0x560c256e3000, 0x560c256e4000));
        assert_eq!(exe.kind, VmaKind::File);
        assert_eq!(exe.dev, (0xfe, 0));
        assert_eq!(exe.inode, 18504);
        assert_eq!(exe.path.as_deref(), Some("/root/.pyenv/versions/3.11.7/bin/python3.11"));
        assert_eq!(exe.prot, Prot { read: true, write: false, exec: false });
        assert!(!exe.shared && !exe.deleted);
        assert_eq!(v[1].pgoff, 0x1000);
        assert_eq!(v[1].prot.bits(), libc::PROT_READ | libc::PROT_EXEC);

        let heap = find(&v, 0x560c4d317000);
        assert_eq!(heap.kind, VmaKind::Heap);

        // A thread stack's guard page: private anon, PROT_NONE.
        let guard = find(&v, 0x7f7c92cc4000);
        assert_eq!((guard.kind.clone(), guard.path.clone()), (VmaKind::Anon, None));
        assert_eq!(guard.prot.bits(), libc::PROT_NONE);

        let sysv = find(&v, 0x7f7c93dd9000);
        assert_eq!(sysv.kind, VmaKind::SharedAnon);
        assert_eq!(sysv.path.as_deref(), Some("/SYSV00000000"));
        assert!(sysv.shared && sysv.deleted);

        let shm = find(&v, 0x7f7c93f63000);
        assert_eq!(shm.kind, VmaKind::SharedAnon);
        assert_eq!((shm.path.as_deref(), shm.dev, shm.inode), (Some("/dev/zero"), (0, 1), 1025));

        let memfd = find(&v, 0x7f7c93ff5000);
        assert_eq!(memfd.kind, VmaKind::Memfd);
        assert_eq!(memfd.memfd_name(), Some("stasis test"));
        assert!(memfd.deleted);

        let del = find(&v, 0x7f7c94c72000);
        assert_eq!(del.kind, VmaKind::DeletedFile);
        assert_eq!(del.path.as_deref(), Some("/tmp/fx/my deleted file"));
        assert!(del.deleted && del.shared);
        assert_eq!(del.dev_t(), 0xfe00);

        let kinds: Vec<_> = v.iter().filter(|e| e.is_special()).map(|e| e.kind.clone()).collect();
        assert_eq!(kinds, [VmaKind::Vvar, VmaKind::VvarVclock, VmaKind::Vdso, VmaKind::Vsyscall]);
        let vvar = find(&v, 0x7f7c94c7d000);
        assert_eq!(vvar.len(), 16 << 10);
        let stack = v.iter().find(|e| e.kind == VmaKind::Stack).unwrap();
        assert!(stack.contains(0x7ffd1a870000));
        let vsys = v.last().unwrap();
        assert_eq!((vsys.start, vsys.end), (0xffffffffff600000, 0xffffffffff601000));
        assert_eq!(vsys.prot, Prot { read: false, write: false, exec: true });
    }

    #[test]
    fn bash_sample() {
        let v = parse_maps(BASH).unwrap();
        assert_eq!(v.len(), BASH.lines().count());
        assert_eq!(v.iter().filter(|e| e.kind == VmaKind::Heap).count(), 1);
        assert_eq!(v.iter().filter(|e| e.kind == VmaKind::Stack).count(), 1);
    }

    #[test]
    fn other_names() {
        let l = "7f0000000000-7f0000001000 r-xp 00000000 00:00 0                          [uprobes]";
        assert_eq!(parse_maps_line(l).unwrap().kind, VmaKind::Other("[uprobes]".into()));
        let l = "7f0000000000-7f0000001000 rw-p 00000000 00:00 0    [anon:glibc: malloc]";
        let e = parse_maps_line(l).unwrap();
        assert_eq!((e.kind.clone(), e.anon_name()), (VmaKind::Anon, Some("glibc: malloc")));
        let l = "7f0000000000-7f0000001000 rw-s 00000000 00:01 7    [anon_shmem:ring]";
        assert_eq!(parse_maps_line(l).unwrap().kind, VmaKind::SharedAnon);
        // A private mapping of /dev/zero that happens to be deleted is not shared memory.
        let l = "7f0000000000-7f0000001000 rw-p 00000000 00:01 7    /dev/zero (deleted)";
        assert_eq!(parse_maps_line(l).unwrap().kind, VmaKind::DeletedFile);
        let l = "7f0000000000-7f0000001000 r--p 00000000 fe:00 7    /dev/zero";
        assert_eq!(parse_maps_line(l).unwrap().kind, VmaKind::File);
        let l = "7f0000000000-7f0000001000 rw-p 00000000 00:00 0    [stack:1234]";
        assert_eq!(parse_maps_line(l).unwrap().kind, VmaKind::Stack);
    }

    #[test]
    fn errors_name_the_line() {
        let text = "7f0000000000-7f0000001000 r--p 00000000 fe:00 7  /a\nzz-1 r--p 0 0:0 0\n";
        let e = parse_maps(text).unwrap_err();
        assert!(matches!(e, ProcError::Parse { line: 2, .. }), "{e:?}");
        assert!(parse_maps_line("7f0000001000-7f0000000000 r--p 0 00:00 0").is_err());
        assert!(parse_maps_line("7f0000000000-7f0000001000 rwq 0 00:00 0").is_err());
        assert!(parse_maps_line("7f0000000000-7f0000001000 rw-p 0 00:00").is_err());
        assert!(parse_maps_line("7f0000000000-7f0000001000 rw-x 0 00:00 0").is_err());
    }

    #[test]
    fn read_own_maps() {
        let v = read_maps(i32::try_from(std::process::id()).unwrap()).unwrap();
        assert!(v.iter().any(|e| e.kind == VmaKind::Stack));
        assert!(v.iter().any(|e| e.kind == VmaKind::Vdso));
    }
}
