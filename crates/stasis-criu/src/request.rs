//! One dump, pre-dump or restore as either front end asks for it.
//!
//! Options that only tune CRIU itself, or that describe what our engine
//! does anyway, are accepted; options whose effect we would silently not
//! give are refused, naming the option as the caller spelled it.

use crate::rpc::pb::CriuOpts;
use crate::CriuError;
use std::os::fd::RawFd;
use std::path::PathBuf;

/// What to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Dump,
    PreDump,
    Restore,
}

/// A request, whichever front end it came from.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub images: PathBuf,
    /// Where the log file goes (`log_file` is relative to it).
    pub work_dir: Option<PathBuf>,
    pub log_file: Option<String>,
    pub log_level: i32,
    /// Dump: the tree's root.
    pub pid: Option<i32>,
    /// Restore: the directory that becomes the tree's `/`.
    pub root: Option<PathBuf>,
    pub leave_running: bool,
    pub tcp_established: bool,
    pub tcp_close: bool,
    /// Dump: bind mounts from the host, (mountpoint, key); restore: (key,
    /// host path).
    pub ext_mnt: Vec<(String, String)>,
    /// Dump: `net[INODE]:KEY`, the network namespace left out.
    pub ext_netns: Option<(u64, String)>,
    /// The network namespace is the runtime's business (runc always says
    /// so): not dumped; a restore makes a fresh one with loopback up.
    pub empty_netns: bool,
    /// Restore: files we hold for the tree, by key.
    pub inherit_fd: Vec<(String, RawFd)>,
    pub freeze_cgroup: Option<PathBuf>,
    /// An earlier pre-dump, relative to `images` or absolute.
    pub parent_img: Option<String>,
    /// Send NOTIFY messages (RPC only).
    pub notify_scripts: bool,
    /// Restore: return once the tree runs (the CLI's `-d`).
    pub detach: bool,
    pub pidfile: Option<PathBuf>,
}

/// Parses one `--external` value into `req`.
pub fn add_external(req: &mut Request, action: Action, ext: &str) -> Result<(), CriuError> {
    let bad = || CriuError::Unsupported(format!("external {ext:?} (only net[INODE]:KEY and mnt[PATH]:KEY are)"));
    let (what, key) = ext.split_once("]:").ok_or_else(bad)?;
    if let Some(ino) = what.strip_prefix("net[") {
        let ino = ino.parse().map_err(|_| bad())?;
        if action != Action::Restore {
            req.ext_netns = Some((ino, key.to_string()));
        }
        return Ok(());
    }
    if let Some(path) = what.strip_prefix("mnt[") {
        req.ext_mnt.push((path.to_string(), key.to_string()));
        return Ok(());
    }
    Err(bad())
}

fn refuse_if(on: bool, name: &str) -> Result<(), CriuError> {
    if on {
        Err(CriuError::Unsupported(name.to_string()))
    } else {
        Ok(())
    }
}

/// The directory behind fd `fd` of the caller, process `peer` (CRIU's
/// RPC names directories by the caller's fd numbers).
fn dir_of_fd(peer: i32, fd: i32, what: &str) -> Result<PathBuf, CriuError> {
    std::fs::read_link(format!("/proc/{peer}/fd/{fd}"))
        .map_err(CriuError::io(format!("{what} (fd {fd} of the caller, process {peer})")))
}

/// CRIU's rule for `log_file`: relative to the work directory; none when
/// empty or `-`.
fn log_file_in(dir: &std::path::Path, file: Option<&str>) -> Option<PathBuf> {
    let f = file.filter(|f| !f.is_empty() && *f != "-")?;
    Some(dir.join(f))
}

impl Request {
    /// From the RPC options of the caller `peer`.
    pub fn from_rpc(peer: i32, action: Action, o: &CriuOpts) -> Result<Request, CriuError> {
        refuse_if(o.ps.is_some(), "ps (page server)")?;
        refuse_if(o.lazy_pages(), "lazy_pages")?;
        refuse_if(!o.exec_cmd.is_empty(), "exec_cmd")?;
        refuse_if(!o.veths.is_empty(), "veths")?;
        refuse_if(!o.unix_sk_ino.is_empty(), "unix_sk_ino")?;
        refuse_if(!o.join_ns.is_empty(), "join_ns")?;
        refuse_if(!o.skip_mnt.is_empty(), "skip_mnt")?;
        refuse_if(o.auto_ext_mnt(), "auto_ext_mnt")?;
        refuse_if(o.tls(), "tls")?;
        refuse_if(o.status_fd.is_some(), "status_fd")?;
        refuse_if(o.pidfd_store_sk.is_some(), "pidfd_store_sk")?;
        // runc names /etc/criu/runc.conf whether or not it exists; CRIU
        // reads it only if it does, and so would we have to.
        if let Some(f) = o.config_file.as_deref().filter(|f| std::path::Path::new(f).exists()) {
            return Err(CriuError::Unsupported(format!("config_file {f} (a CRIU configuration file)")));
        }
        refuse_if(o.lsm_profile.is_some() || o.lsm_mount_context.is_some(), "lsm_profile")?;
        refuse_if(o.empty_ns() & !(libc::CLONE_NEWNET as u32) != 0, "empty_ns for namespaces other than net")?;
        let mut r = Request {
            images: dir_of_fd(peer, o.images_dir_fd, "the images directory")?,
            work_dir: o.work_dir_fd.map(|fd| dir_of_fd(peer, fd, "the work directory")).transpose()?,
            log_file: o.log_file.clone(),
            log_level: o.log_level(),
            pid: o.pid,
            root: o.root.as_ref().map(PathBuf::from),
            leave_running: o.leave_running(),
            tcp_established: o.tcp_established(),
            tcp_close: o.tcp_close(),
            ext_mnt: o.ext_mnt.iter().map(|m| (m.key.clone(), m.val.clone())).collect(),
            inherit_fd: o.inherit_fd.iter().map(|f| (f.key.clone(), f.fd)).collect(),
            freeze_cgroup: o.freeze_cgroup.as_ref().map(PathBuf::from),
            parent_img: o.parent_img.clone(),
            notify_scripts: o.notify_scripts(),
            detach: true,
            pidfile: None,
            ext_netns: None,
            empty_netns: o.empty_ns() & libc::CLONE_NEWNET as u32 != 0,
        };
        for e in &o.external {
            add_external(&mut r, action, e)?;
        }
        Ok(r)
    }

    /// Where the log of RPC options `o` goes, known before they are
    /// checked (so that a refusal is logged where the caller looks).
    pub fn log_of_rpc(peer: i32, o: &CriuOpts) -> Option<PathBuf> {
        let dir = dir_of_fd(peer, o.work_dir_fd.unwrap_or(o.images_dir_fd), "").ok()?;
        log_file_in(&dir, o.log_file.as_deref())
    }

    /// Where log lines go: `work_dir/log_file` (or `images/log_file`).
    pub fn log_path(&self) -> Option<PathBuf> {
        log_file_in(self.work_dir.as_ref().unwrap_or(&self.images), self.log_file.as_deref())
    }
}
