//! The namespaces a tree has of its own, for a tree dumped from outside any
//! runtime (a container under runc, through the criu drop-in): which ones
//! the restore must create (recorded as CLONE_NEW* bits in the inventory),
//! the UTS names (`utsns-1.img`) and the mounts (`kinds::mounts`).
//!
//! A network namespace is either external (the restorer supplies one by
//! key: a runtime's pre-made namespace) or must hold nothing but loopback,
//! which a restore brings up in a fresh one. A user or time namespace of
//! its own, or SysV IPC objects, are refused.

use crate::error::DumpError;
use stasis_image::magic::file_name;
use stasis_image::{pb, ImageDirWriter, ImageKind};
use stasis_sys::ns;
use stasis_sys::Pid;
use std::os::unix::fs::MetadataExt;

/// What to dump of the tree's own namespaces.
#[derive(Clone, Debug, Default)]
pub struct NsDumpOpts {
    /// Mounts bind-mounted from the host: (mountpoint in the tree, key).
    pub ext_mounts: Vec<(String, String)>,
    /// The tree's network namespace is supplied at restore under this key
    /// if its inode is this one (runc's `net[INODE]:KEY`).
    pub ext_netns: Option<(u64, String)>,
    /// The network namespace's contents are someone else's business: not
    /// checked, and a restore creates a fresh one with loopback up.
    pub empty_netns: bool,
}

/// What was dumped.
#[derive(Clone, Debug, Default)]
pub struct NsDump {
    /// Namespaces a restore creates (CLONE_NEW* bits).
    pub flags: u32,
    /// Key of the external network namespace, if any.
    pub ext_netns: Option<String>,
}

/// The namespace kinds, as /proc/PID/ns names them.
pub const KINDS: &[(&str, i32)] = &[
    ("pid", libc::CLONE_NEWPID),
    ("mnt", libc::CLONE_NEWNS),
    ("uts", libc::CLONE_NEWUTS),
    ("ipc", libc::CLONE_NEWIPC),
    ("net", libc::CLONE_NEWNET),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("user", libc::CLONE_NEWUSER),
    ("time", 0x80),
];

/// The inode of `/proc/PID/ns/NAME` (`self` for ours).
pub fn ns_inode(pid: &str, name: &str) -> std::io::Result<u64> {
    Ok(std::fs::metadata(format!("/proc/{pid}/ns/{name}"))?.ino())
}

fn unsupported(pid: Pid, what: String) -> DumpError {
    DumpError::Unsupported { pid, what }
}

/// Interfaces other than loopback in the network namespace of `pid`.
fn interfaces(pid: Pid) -> Result<Vec<String>, DumpError> {
    let path = format!("/proc/{pid}/net/dev");
    let text = std::fs::read_to_string(&path).map_err(crate::error::dump_io(pid, "read /proc/PID/net/dev"))?;
    Ok(text
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .filter(|n| n != "lo")
        .collect())
}

/// Host and domain name of `pid`'s UTS namespace, and whether its IPC
/// namespace holds SysV objects (both read from a thread that joins them).
fn uts_and_ipc(pid: Pid, ipc: bool) -> std::io::Result<(String, String, Vec<String>)> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let uts = std::fs::File::open(format!("/proc/{pid}/ns/uts"))?;
            ns::setns(std::os::fd::AsFd::as_fd(&uts), libc::CLONE_NEWUTS)?;
            let read = |n: &str| -> std::io::Result<String> {
                Ok(std::fs::read_to_string(format!("/proc/sys/kernel/{n}"))?.trim_end_matches('\n').to_string())
            };
            let (host, domain) = (read("hostname")?, read("domainname")?);
            let mut objects = Vec::new();
            if ipc {
                let f = std::fs::File::open(format!("/proc/{pid}/ns/ipc"))?;
                ns::setns(std::os::fd::AsFd::as_fd(&f), libc::CLONE_NEWIPC)?;
                for kind in ["shm", "sem", "msg"] {
                    let t = std::fs::read_to_string(format!("/proc/sysvipc/{kind}"))?;
                    if t.lines().skip(1).any(|l| !l.trim().is_empty()) {
                        objects.push(kind.to_string());
                    }
                }
            }
            Ok((host, domain, objects))
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("namespace reader panicked")))
    })
}

/// The inodes of the dumper's own namespaces, read before the dump moves
/// a thread into the tree's network namespace.
#[derive(Clone, Debug, Default)]
pub struct OurNamespaces(Vec<(&'static str, u64)>);

impl OurNamespaces {
    pub fn read() -> OurNamespaces {
        OurNamespaces(KINDS.iter().filter_map(|(n, _)| Some((*n, ns_inode("thread-self", n).ok()?))).collect())
    }

    fn get(&self, name: &str) -> Option<u64> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, i)| *i)
    }
}

/// Dumps the namespaces `root` (the tree's root, frozen) has of its own
/// (compared with `ours`) into `staging`.
pub fn dump_namespaces(
    root: Pid,
    ours: &OurNamespaces,
    opts: &NsDumpOpts,
    staging: &ImageDirWriter,
) -> Result<NsDump, DumpError> {
    let mut out = NsDump::default();
    for &(name, flag) in KINDS {
        let theirs = ns_inode(&root.to_string(), name);
        let (Ok(theirs), Some(mine)) = (theirs, ours.get(name)) else { continue };
        if theirs == mine {
            continue;
        }
        match name {
            "user" | "time" => return Err(unsupported(root, format!("a {name} namespace of its own"))),
            "net" => {
                if let Some((ino, key)) = &opts.ext_netns {
                    if *ino == theirs {
                        out.ext_netns = Some(key.clone());
                        continue;
                    }
                }
                let ifs = if opts.empty_netns { Vec::new() } else { interfaces(root)? };
                if !ifs.is_empty() {
                    return Err(unsupported(
                        root,
                        format!(
                            "its network namespace has interface(s) {}: only loopback is recreated; name the namespace as external (--external net[{theirs}]:KEY)",
                            ifs.join(", ")
                        ),
                    ));
                }
            }
            _ => {}
        }
        out.flags |= flag as u32;
    }
    let ipc = out.flags & libc::CLONE_NEWIPC as u32 != 0;
    if out.flags & (libc::CLONE_NEWUTS as u32) != 0 || ipc {
        let (host, domain, objects) =
            uts_and_ipc(root, ipc).map_err(crate::error::dump_io(root, "read its UTS and IPC namespaces"))?;
        if !objects.is_empty() {
            return Err(unsupported(root, format!("SysV IPC objects ({}) in its IPC namespace", objects.join(", "))));
        }
        if out.flags & (libc::CLONE_NEWUTS as u32) != 0 {
            let e = pb::UtsnsEntry { nodename: host, domainname: domain };
            staging.write_entries(&file_name::utsns(1), ImageKind::Utsns, &[e])?;
        }
    }
    if out.flags & (libc::CLONE_NEWNS as u32) != 0 {
        crate::kinds::mounts::dump_mounts(root, &opts.ext_mounts, staging)?;
    }
    log::debug!("dump {root}: own namespaces {:#x}, external net {:?}", out.flags, out.ext_netns);
    Ok(out)
}
