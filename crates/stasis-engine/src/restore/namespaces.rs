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
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
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

/// Everything the child does before it becomes the stub.
fn enter(ns_img: &NsImages, env: &NsEnv, net: Option<BorrowedFd<'_>>, dir: &Path) -> Result<(), String> {
    let step = |r: std::io::Result<()>, what: &str| r.map_err(|e| format!("{what}: {e}"));
    if let Some(fd) = net {
        step(ns::setns(fd, libc::CLONE_NEWNET), "joining the external network namespace")?;
    } else if ns_img.flags & libc::CLONE_NEWNET as u32 != 0 {
        step(stasis_sys::net::loopback_up(), "bringing loopback up")?;
    }
    if ns_img.flags & libc::CLONE_NEWNS as u32 != 0 {
        crate::kinds::mounts::build(&env.root, &ns_img.mounts, &env.ext_mounts, dir)?;
        step(std::env::set_current_dir(&env.root), "entering the root")?;
        step(ns::pivot_root(Path::new("."), Path::new(".")), "pivot_root")?;
        step(ns::umount2(Path::new("."), ns::MNT_DETACH), "detaching the old root")?;
        step(std::env::set_current_dir("/"), "chdir /")?;
    }
    if let Some(u) = &ns_img.uts {
        step(ns::sethostname(&u.nodename), "sethostname")?;
        step(ns::setdomainname(&u.domainname), "setdomainname")?;
    }
    Ok(())
}

/// Forks the tree's root into its namespaces and makes it the restore's
/// root stub. Must be called by a single-threaded restorer.
pub fn spawn_root(plan: &RestorePlan, ns_img: &NsImages, env: &NsEnv) -> Result<RootStub, RestoreError> {
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
            Some(stasis_sys::fd::inherited(fd).map_err(restore_io(1, format!("use fd {fd} for {key}")))?)
        }
        None => None,
    };
    let mut flags = ns_img.flags as i32;
    if net.is_some() {
        flags &= !libc::CLONE_NEWNET;
    }
    let me =
        stasis_sys::fd::pidfd_open(std::process::id() as i32).map_err(restore_io(1, "open a pidfd of the restorer"))?;
    let (err_r, err_w) = stasis_sys::fd::pipe(libc::O_CLOEXEC).map_err(restore_io(1, "create a pipe"))?;
    match ns::fork_into_namespaces(flags).map_err(restore_io(1, "create the tree's namespaces"))? {
        Forked::Child => {
            let res = enter(ns_img, env, net.as_ref().map(|f| f.as_fd()), &dir);
            if let Err(msg) = res {
                let _ = std::fs::File::from(err_w).write_all(msg.as_bytes());
                std::process::exit(127);
            }
            let keep = stasis_sys::proc_ctl::StubFd { pidfd: me.as_raw_fd(), at: plan.stub_fd };
            stasis_sys::proc_ctl::become_stub(
                plan.scratch,
                super::stub::SCRATCH_LEN as usize,
                &super::stub::CODE,
                Some(keep),
            )
        }
        Forked::Parent(pid) => {
            drop(err_w);
            // Kept: a network namespace fd the caller passed stays theirs.
            if let Some(f) = net {
                std::mem::forget(f);
            }
            let mut msg = String::new();
            let _ = std::fs::File::from(err_r).read_to_string(&mut msg);
            if !msg.is_empty() {
                let _ = stasis_sys::proc_ctl::kill(pid, libc::SIGKILL);
                let _ = stasis_sys::proc_ctl::wait_exit(pid);
                return Err(RestoreError::Task {
                    pid: 1,
                    what: "setting up its namespaces".into(),
                    source: std::io::Error::other(msg),
                });
            }
            Ok(RootStub { pid })
        }
    }
}
