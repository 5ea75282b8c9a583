//! `/proc/PID/fd` and `/proc/PID/fdinfo/N`: a task's open file descriptors.
//!
//! The `fd/N` link names what the descriptor refers to (a path, `pipe:[ino]`,
//! `socket:[ino]`, `anon_inode:[eventfd]`, …) and [`FdTarget`] classifies it
//! so the dump can pick the module for the kind. `fdinfo/N` gives the file
//! position, the open flags (in octal, *including* `O_CLOEXEC`, which is a
//! descriptor flag the kernel folds in), the mount id and inode, then lines
//! specific to the kind (`eventfd-count:`, `tfd:`, `sigmask:`, `inotify wd:`,
//! timerfd's `it_value:` …), kept as key/value pairs for those modules.

use super::{hex_u64, io_err, list_numeric_dir, parse_err, proc_path, read_link, read_text};
use super::{split_deleted, ProcError};

/// What an fd refers to, from its `/proc/PID/fd/N` link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdTarget {
    /// A file (or device, memfd `/memfd:NAME`, …) with a path; `deleted`
    /// when the kernel appended `" (deleted)"`, stripped from `path`.
    Path { path: String, deleted: bool },
    /// `pipe:[ino]`
    Pipe(u64),
    /// `socket:[ino]`
    Socket(u64),
    /// `anon_inode:[eventfd]` or `anon_inode:inotify`: the name without brackets
    /// (`eventfd`, `eventpoll`, `timerfd`, `signalfd`, `inotify`, `pidfd`, …).
    AnonInode(String),
    /// Anything else (`net:[4026531840]` of an nsfs file, …), verbatim.
    Other(String),
}

impl FdTarget {
    /// Classifies a link target.
    pub fn parse(link: &str) -> Self {
        let bracketed = |prefix: &str| -> Option<u64> {
            link.strip_prefix(prefix)?.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
        };
        if link.starts_with('/') {
            let (path, deleted) = split_deleted(link);
            FdTarget::Path { path: path.to_owned(), deleted }
        } else if let Some(ino) = bracketed("pipe:") {
            FdTarget::Pipe(ino)
        } else if let Some(ino) = bracketed("socket:") {
            FdTarget::Socket(ino)
        } else if let Some(name) = link.strip_prefix("anon_inode:") {
            let name = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
            FdTarget::AnonInode(name.to_owned())
        } else {
            FdTarget::Other(link.to_owned())
        }
    }

    /// The memfd name of `/memfd:NAME (deleted)`.
    pub fn memfd_name(&self) -> Option<&str> {
        match self {
            FdTarget::Path { path, deleted: true } => path.strip_prefix("/memfd:"),
            _ => None,
        }
    }
}

/// One open descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdEntry {
    pub fd: i32,
    /// The raw link text.
    pub link: String,
    pub target: FdTarget,
}

/// Lists `/proc/PID/fd`, ascending by fd, with each link read and classified.
/// An fd closed while listing is skipped (the task is normally frozen).
pub fn list_fds(pid: i32) -> Result<Vec<FdEntry>, ProcError> {
    let mut out = Vec::new();
    for fd in list_numeric_dir(pid, "fd")? {
        match read_link(pid, &format!("fd/{fd}")) {
            Ok(link) => out.push(FdEntry { fd, target: FdTarget::parse(&link), link }),
            Err(ProcError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
                log::debug!("fd {fd} of {pid} closed while listing");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The parsed `/proc/PID/fdinfo/N`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FdInfo {
    pub pos: u64,
    /// Open flags *with* `O_CLOEXEC` if the descriptor has `FD_CLOEXEC`.
    pub flags: u32,
    pub mnt_id: i32,
    /// Inode number (`ino:`, 5.14+).
    pub ino: Option<u64>,
    /// Every other line, in order, split at its first `:` (`"eventfd-count"`,
    /// `"tfd"`, `"inotify wd"`, `"it_value"`, `"sigmask"`, …), value trimmed.
    pub extra: Vec<(String, String)>,
}

impl FdInfo {
    /// The descriptor has `FD_CLOEXEC`.
    pub fn cloexec(&self) -> bool {
        self.flags & o_cloexec() != 0
    }

    /// The file status flags for `open`/`fcntl(F_SETFL)`, without `O_CLOEXEC`.
    pub fn file_flags(&self) -> u32 {
        self.flags & !o_cloexec()
    }

    /// `O_RDONLY`, `O_WRONLY` or `O_RDWR`.
    pub fn access_mode(&self) -> u32 {
        self.flags & o_accmode()
    }

    /// The first value of `key` among the extra lines.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.extra.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// All values of `key` (e.g. every `tfd` of an epoll).
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.extra.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value of `key` as a decimal number.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }

    /// The value of `key` as a hexadecimal number (`sigmask`).
    pub fn get_hex(&self, key: &str) -> Option<u64> {
        hex_u64(self.get(key)?)
    }
}

fn o_cloexec() -> u32 {
    u32::try_from(libc::O_CLOEXEC).unwrap_or(0)
}

fn o_accmode() -> u32 {
    u32::try_from(libc::O_ACCMODE).unwrap_or(0)
}

/// Reads and parses `/proc/PID/fdinfo/FD`.
pub fn read_fdinfo(pid: i32, fd: i32) -> Result<FdInfo, ProcError> {
    let file = format!("fdinfo/{fd}");
    let (path, text) = read_text(pid, &file)?;
    parse_fdinfo(&text).map_err(|e| e.at(&path))
}

/// Parses the text of an `fdinfo` file.
pub fn parse_fdinfo(text: &str) -> Result<FdInfo, ProcError> {
    let mut info = FdInfo::default();
    let (mut pos, mut flags, mut mnt) = (false, false, false);
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let Some((key, value)) = line.split_once(':') else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(parse_err("fdinfo", n, format!("no ':' in {line:?}")));
        };
        let value = value.trim();
        let bad = || parse_err("fdinfo", n, format!("bad {key} value {value:?}"));
        match key {
            "pos" if !pos => {
                info.pos = value.parse().map_err(|_| bad())?;
                pos = true;
            }
            "flags" if !flags => {
                info.flags = u32::from_str_radix(value, 8).map_err(|_| bad())?;
                flags = true;
            }
            "mnt_id" if !mnt => {
                info.mnt_id = value.parse().map_err(|_| bad())?;
                mnt = true;
            }
            "ino" if info.ino.is_none() => info.ino = Some(value.parse().map_err(|_| bad())?),
            _ => info.extra.push((key.to_owned(), value.to_owned())),
        }
    }
    if !(pos && flags) {
        return Err(parse_err("fdinfo", 0, "no pos or flags line"));
    }
    Ok(info)
}

/// `/proc/PID/fd/FD` as a path, for callers that open it (e.g. to reopen a
/// deleted file or read a memfd through the link).
pub fn fd_link_path(pid: i32, fd: i32) -> std::path::PathBuf {
    proc_path(pid, &format!("fd/{fd}"))
}

/// The key of the pipe on `/proc/PID/fd/FD` as its link reads
/// (`pipe:[INO]`): how a runtime names a tree's stdio pipes to a dump
/// (`DumpOpts::external`) and gives new ones back to the restore. None
/// when the fd is not a pipe or is gone.
pub fn pipe_key(pid: i32, fd: i32) -> Option<String> {
    match FdTarget::parse(&read_link(pid, &format!("fd/{fd}")).ok()?) {
        FdTarget::Pipe(ino) => Some(format!("pipe:[{ino}]")),
        _ => None,
    }
}

/// Checks that `/proc/PID/fd/FD` still exists, telling a gone process apart.
pub fn fd_exists(pid: i32, fd: i32) -> Result<bool, ProcError> {
    let path = fd_link_path(pid, fd);
    match std::fs::symlink_metadata(&path) {
        Ok(_) => Ok(true),
        Err(e) => match io_err(pid, &path, e) {
            ProcError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            other => Err(other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn targets() {
        let p = |s: &str| FdTarget::parse(s);
        assert_eq!(p("/dev/null"), FdTarget::Path { path: "/dev/null".into(), deleted: false });
        assert_eq!(
            p("/tmp/fx/my deleted file (deleted)"),
            FdTarget::Path { path: "/tmp/fx/my deleted file".into(), deleted: true }
        );
        assert_eq!(p("/memfd:stasis test (deleted)").memfd_name(), Some("stasis test"));
        assert_eq!(p("/dev/null").memfd_name(), None);
        assert_eq!(p("pipe:[8830]"), FdTarget::Pipe(8830));
        assert_eq!(p("socket:[8831]"), FdTarget::Socket(8831));
        assert_eq!(p("anon_inode:[eventfd]"), FdTarget::AnonInode("eventfd".into()));
        assert_eq!(p("anon_inode:[eventpoll]"), FdTarget::AnonInode("eventpoll".into()));
        assert_eq!(p("anon_inode:inotify"), FdTarget::AnonInode("inotify".into()));
        assert_eq!(p("net:[4026531840]"), FdTarget::Other("net:[4026531840]".into()));
        assert_eq!(p("pipe:[x]"), FdTarget::Other("pipe:[x]".into()));
    }

    // Samples from a python3 process on 6.18.
    const DELETED: &str = "pos:\t100\nflags:\t02100002\nmnt_id:\t27\nino:\t10018926\n";
    const EVENTFD: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\neventfd-count:                7\neventfd-id: 1\neventfd-semaphore: 0\n";
    const EPOLL: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\ntfd:        8 events:       19 data:                8  pos:0 ino:227e sdev:f\ntfd:        9 events:       19 data:                9  pos:0 ino:227e sdev:f\n";
    const TIMERFD: &str = "pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1038\nclockid: 1\nticks: 0\nsettime flags: 00\nit_value: (96, 955000524)\nit_interval: (5, 0)\n";
    const INOTIFY: &str = "pos:\t0\nflags:\t00\nmnt_id:\t17\nino:\t1038\ninotify wd:1 ino:3c4a7 sdev:fe00000 mask:100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a7c4030000000000\n";
    const SIGNALFD: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\nsigmask:\t0000000000000200\n";
    const PIPE_W: &str = "pos:\t0\nflags:\t01\nmnt_id:\t16\nino:\t9228\n";

    #[test]
    fn samples() {
        let d = parse_fdinfo(DELETED).unwrap();
        assert_eq!((d.pos, d.mnt_id, d.ino), (100, 27, Some(10018926)));
        assert!(d.cloexec());
        // O_LARGEFILE is 0o100000 in the kernel (libc defines it as 0 on 64-bit).
        assert_eq!(d.file_flags(), 0o100000 | u32::try_from(libc::O_RDWR).unwrap());
        assert_eq!(d.access_mode(), u32::try_from(libc::O_RDWR).unwrap());
        assert!(d.extra.is_empty());

        let e = parse_fdinfo(EVENTFD).unwrap();
        assert_eq!(e.get_u64("eventfd-count"), Some(7));
        assert_eq!(e.get("eventfd-semaphore"), Some("0"));

        let ep = parse_fdinfo(EPOLL).unwrap();
        let tfds: Vec<_> = ep.get_all("tfd").collect();
        assert_eq!(tfds.len(), 2);
        assert!(tfds[1].starts_with("9 events:"));

        let t = parse_fdinfo(TIMERFD).unwrap();
        assert!(!t.cloexec());
        assert_eq!(t.get("settime flags"), Some("00"));
        assert_eq!(t.get("it_value"), Some("(96, 955000524)"));

        let i = parse_fdinfo(INOTIFY).unwrap();
        assert_eq!(i.access_mode(), u32::try_from(libc::O_RDONLY).unwrap());
        assert!(i.get("inotify wd").unwrap().starts_with("1 ino:3c4a7"));

        let s = parse_fdinfo(SIGNALFD).unwrap();
        assert_eq!(s.get_hex("sigmask"), Some(1 << 9));

        let p = parse_fdinfo(PIPE_W).unwrap();
        assert_eq!(p.access_mode(), u32::try_from(libc::O_WRONLY).unwrap());
    }

    #[test]
    fn garbled() {
        assert!(parse_fdinfo("pos:\t0\n").is_err());
        assert!(parse_fdinfo("pos:\t0\nflags:\t9\nmnt_id:\t1\n").is_err());
        let e = parse_fdinfo("pos:\tx\nflags:\t0\n").unwrap_err();
        assert!(matches!(e, ProcError::Parse { line: 1, .. }), "{e:?}");
        assert!(parse_fdinfo("pos:\t0\nflags:\t0\njunk\n").is_err());
    }

    #[test]
    fn own_fds() {
        let me = i32::try_from(std::process::id()).unwrap();
        let (s1, s2) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut cat = std::process::Command::new("cat")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let w = cat.stdin.take().unwrap();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let fds = list_fds(me).unwrap();
        let find = |fd: i32| fds.iter().find(|e| e.fd == fd).unwrap();
        let rfd = w.as_raw_fd();
        let FdTarget::Pipe(ino) = find(rfd).target else {
            panic!("{:?}", find(rfd));
        };
        assert!(matches!(find(s1.as_raw_fd()).target, FdTarget::Socket(_)));
        assert_ne!(find(s1.as_raw_fd()).target, find(s2.as_raw_fd()).target);
        assert!(matches!(&find(file.as_raw_fd()).target,
            FdTarget::Path { path, deleted: false } if path.ends_with("/status")));

        let info = read_fdinfo(me, rfd).unwrap();
        assert_eq!(info.ino, Some(ino));
        assert!(info.cloexec(), "std opens with O_CLOEXEC");
        assert!(fd_exists(me, rfd).unwrap());
        drop((s1, s2, w, file));
        cat.wait().unwrap();
        // Other tests run in parallel and may reuse a closed fd: use one never opened.
        assert!(!fd_exists(me, 999_999).unwrap());
        let e = read_fdinfo(me, 999_999).unwrap_err();
        assert!(matches!(e, ProcError::Io { .. }), "{e:?}");
        assert_eq!(e.to_string(), format!("cannot read /proc/{me}/fdinfo/999999"));
        assert!(fd_exists(0x7fff_fff0, 0).unwrap_err().is_no_such_process());
    }
}
