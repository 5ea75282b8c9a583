//! The root of a tree that was dumped with its own namespaces
//! (`DumpOpts::namespaces`): forked into new ones, its mounts rebuilt
//! under the root directory the caller names, the UTS names set, loopback
//! up in a fresh network namespace or an external one joined; then it
//! becomes the restore's root stub ([`super::RootStub`]).

use super::{RestorePlan, RootStub};
use crate::error::{restore_io, RestoreError};
use stasis_image::magic::file_name;
use stasis_image::{pb, ImageDir, ImageKind};
use stasis_sys::ns::{self, Forked};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// What the restorer supplies for the tree's namespaces.
#[derive(Clone, Debug, Default)]
pub struct NsEnv {
    /// The directory that becomes the tree's `/` (its root mount).
    pub root: PathBuf,
    /// Host paths of external mounts, by key.
    pub ext_mounts: HashMap<String, PathBuf>,
    /// Open files for external namespaces by key (ours, open during the
    /// restore): the network namespace.
    pub inherit: Vec<(String, RawFd)>,
}

/// The namespace images of a dump.
#[derive(Clone, Debug, Default)]
pub struct NsImages {
    /// CLONE_NEW* bits of the namespaces to create.
    pub flags: u32,
    pub ext_netns: Option<String>,
    pub uts: Option<pb::UtsnsEntry>,
    pub mounts: Vec<pb::MntEntry>,
}

/// Reads them; `flags` is 0 when the dump has none.
pub fn read_ns_images(dir: &Path) -> Result<NsImages, RestoreError> {
    let img = ImageDir::open(dir)?;
    let inv = img.read_inventory()?;
    let flags = inv.stasis_ns_flags.unwrap_or(0);
    let mut out = NsImages { flags, ext_netns: inv.stasis_ext_netns, ..Default::default() };
    if flags & libc::CLONE_NEWUTS as u32 != 0 {
        out.uts = img.read_entries(&file_name::utsns(1), ImageKind::Utsns)?.into_iter().next();
    }
    if flags & libc::CLONE_NEWNS as u32 != 0 {
        out.mounts = img.read_entries(&file_name::mountpoints(1), ImageKind::Mnts)?;
    }
    Ok(out)
}

/// The root, forked into its namespaces, a stub now.
#[derive(Debug)]
pub struct SpawnedRoot {
    pub stub: RootStub,
    /// A new terminal where the tree had one from outside (a runtime's
    /// console, bound onto `/dev/console`, the root's fds 0-2 now): its
    /// master, for the caller to hand on.
    pub console: Option<OwnedFd>,
}

/// Everything the child does before it becomes the stub; returns the
/// console's master and its slave's path in the tree, if it made one.
fn enter(
    ns_img: &NsImages,
    env: &NsEnv,
    net: Option<BorrowedFd<'_>>,
    dir: &Path,
) -> Result<Option<(OwnedFd, PathBuf)>, String> {
    let mut console = None;
    let step = |r: std::io::Result<()>, what: &str| r.map_err(|e| format!("{what}: {e}"));
    if let Some(fd) = net {
        step(ns::setns(fd, libc::CLONE_NEWNET), "joining the external network namespace")?;
    } else if ns_img.flags & libc::CLONE_NEWNET as u32 != 0 {
        step(stasis_sys::net::loopback_up(), "bringing loopback up")?;
    }
    if ns_img.flags & libc::CLONE_NEWNS as u32 != 0 {
        console = crate::kinds::mounts::build(&env.root, &ns_img.mounts, &env.ext_mounts, dir)?.console;
        step(std::env::set_current_dir(&env.root), "entering the root")?;
        step(ns::pivot_root(Path::new("."), Path::new(".")), "pivot_root")?;
        step(ns::umount2(Path::new("."), ns::MNT_DETACH), "detaching the old root")?;
        step(std::env::set_current_dir("/"), "chdir /")?;
    }
    if let Some(u) = &ns_img.uts {
        step(ns::sethostname(&u.nodename), "sethostname")?;
        step(ns::setdomainname(&u.domainname), "setdomainname")?;
    }
    Ok(console)
}

/// The child's side after [`enter`]: the report line for the restorer
/// (`ok`, or `console MASTER` with our fd number, which it copies with
/// `pidfd_getfd`), and the fds it must keep open until then.
fn report_line(console: Option<(OwnedFd, PathBuf)>) -> Result<(String, Vec<OwnedFd>), String> {
    let Some((master, slave_path)) = console else { return Ok(("ok\n".into(), Vec::new())) };
    use std::os::unix::fs::OpenOptionsExt;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&slave_path)
        .map_err(|e| format!("opening the console {}: {e}", slave_path.display()))?;
    let slave = OwnedFd::from(slave);
    // The tree's fds 0-2 on a terminal are the root's own (inherited): make
    // them the new console.
    for fd in 0..3 {
        stasis_sys::fd::dup_to(slave.as_fd(), fd).map_err(|e| format!("giving the tree its console: {e}"))?;
    }
    Ok((format!("console {}\n", master.as_raw_fd()), vec![master, slave]))
}

/// Reads one line (without the newline) from the child's report pipe;
/// None at EOF before a newline.
fn read_line(f: &mut std::fs::File) -> Option<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match f.read(&mut b) {
            Ok(1) if b[0] == b'\n' => return Some(String::from_utf8_lossy(&line).into_owned()),
            Ok(1) => line.push(b[0]),
            _ => return (!line.is_empty()).then(|| String::from_utf8_lossy(&line).into_owned()),
        }
    }
}

/// Forks the tree's root into its namespaces and makes it the restore's
/// root stub. Must be called by a single-threaded restorer.
pub fn spawn_root(plan: &RestorePlan, ns_img: &NsImages, env: &NsEnv) -> Result<SpawnedRoot, RestoreError> {
    let dir = plan.dir().to_path_buf();
    let invalid = |what: String| RestoreError::Invalid { dir: dir.clone(), what };
    if ns_img.flags & libc::CLONE_NEWPID as u32 == 0 {
        return Err(invalid("the tree has no pid namespace of its own; restore it without namespaces".into()));
    }
    let net = match &ns_img.ext_netns {
        Some(key) => {
            let fd = env.inherit.iter().find(|(k, _)| k == key).map(|(_, fd)| *fd).ok_or_else(|| {
                invalid(format!("its network namespace is external (key {key}): pass one (inherit fd with that key)"))
            })?;
            // Our own handle on it: the caller's fd stays theirs.
            let own = std::fs::File::open(format!("/proc/self/fd/{fd}"));
            Some(OwnedFd::from(own.map_err(restore_io(1, format!("open fd {fd}, given for {key}")))?))
        }
        None => None,
    };
    let mut flags = ns_img.flags as i32;
    if net.is_some() {
        flags &= !libc::CLONE_NEWNET;
    }
    let me =
        stasis_sys::fd::pidfd_open(std::process::id() as i32).map_err(restore_io(1, "open a pidfd of the restorer"))?;
    let pipe = || stasis_sys::fd::pipe(libc::O_CLOEXEC).map_err(restore_io(1, "create a pipe"));
    let ((report_r, report_w), (ack_r, ack_w)) = (pipe()?, pipe()?);
    match ns::fork_into_namespaces(flags).map_err(restore_io(1, "create the tree's namespaces"))? {
        Forked::Child => {
            drop((report_r, ack_w));
            let mut report = std::fs::File::from(report_w);
            let res = enter(ns_img, env, net.as_ref().map(|f| f.as_fd()), &dir).and_then(report_line);
            let _keep = match res {
                Ok((line, keep)) => {
                    let _ = report.write_all(line.as_bytes());
                    keep
                }
                Err(msg) => {
                    let _ = report.write_all(format!("error: {}\n", msg.replace('\n', " ")).as_bytes());
                    std::process::exit(127);
                }
            };
            // Until the restorer has copied what it needs.
            let _ = std::fs::File::from(ack_r).read(&mut [0u8; 1]);
            let keep = stasis_sys::proc_ctl::StubFd { pidfd: me.as_raw_fd(), at: plan.stub_fd };
            stasis_sys::proc_ctl::become_stub(
                plan.scratch,
                super::stub::SCRATCH_LEN as usize,
                &super::stub::CODE,
                Some(keep),
            )
        }
        Forked::Parent(pid) => {
            drop((report_w, ack_r, net));
            let fail = |what: String| {
                let _ = stasis_sys::proc_ctl::kill(pid, libc::SIGKILL);
                let _ = stasis_sys::proc_ctl::wait_exit(pid);
                RestoreError::Task {
                    pid: 1,
                    what: "setting up its namespaces".into(),
                    source: std::io::Error::other(what),
                }
            };
            let line = read_line(&mut std::fs::File::from(report_r));
            let console = match line.as_deref() {
                Some("ok") => None,
                Some(l) if l.starts_with("console ") => {
                    let Some(master) = l.strip_prefix("console ").and_then(|n| n.parse().ok()) else {
                        return Err(fail(format!("bad report {l:?}")));
                    };
                    let copied = stasis_sys::fd::pidfd_open(pid)
                        .and_then(|child| stasis_sys::fd::pidfd_getfd(child.as_fd(), master));
                    Some(copied.map_err(|e| fail(format!("copying the console: {e}")))?)
                }
                Some(l) => return Err(fail(l.strip_prefix("error: ").unwrap_or(l).to_string())),
                None => return Err(fail("it exited before reporting".into())),
            };
            if std::fs::File::from(ack_w).write_all(b"g").is_err() {
                return Err(fail("it exited before becoming the root".into()));
            }
            Ok(SpawnedRoot { stub: RootStub { pid }, console })
        }
    }
}
