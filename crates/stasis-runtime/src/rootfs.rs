//! The container's side of start-up, run by the init process right after
//! the monitor forked it into new pid/mount/uts/ipc/net namespaces:
//! overlay rootfs, `/proc`, `/dev` (tmpfs with the usual nodes, `/dev/pts`
//! with its own ptmx, `/dev/shm`, `/dev/mqueue`), read-only `/sys`,
//! `pivot_root`, hostname; then it waits for the monitor's go (cgroup and
//! network ready) and execs the user's command.
//!
//! All mounts live only in the container's mount namespace (the host's `/`
//! is made private first), so they vanish with its last process: nothing
//! to unmount on the host.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use stasis_sys::ns::{self, MNT_DETACH, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC};

/// Everything the init needs to build the container.
#[derive(Debug, Clone)]
pub struct InitSpec {
    /// Overlay lower dirs, top first.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    pub hostname: String,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
}

type Step = Result<(), String>;

fn step<T>(r: std::io::Result<T>, what: impl FnOnce() -> String) -> Result<T, String> {
    r.map_err(|e| format!("{}: {e}", what()))
}

fn mnt(src: &str, target: &Path, fstype: &str, flags: libc::c_ulong, data: Option<&str>) -> Step {
    let _ = fs::create_dir_all(target);
    step(ns::mount(Some(src), target, Some(fstype), flags, data), || {
        format!("mounting {fstype} on {}", target.display())
    })
}

fn setup_dev(root: &Path) -> Step {
    let dev = root.join("dev");
    mnt("tmpfs", &dev, "tmpfs", MS_NOSUID | ns::MS_STRICTATIME, Some("mode=755,size=65536k"))?;
    for (name, major, minor) in
        [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
    {
        let p = dev.join(name);
        step(ns::mknod(&p, ns::S_IFCHR | 0o666, major, minor), || format!("creating {}", p.display()))?;
        let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o666));
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        let _ = symlink(target, dev.join(link));
    }
    mnt(
        "devpts",
        &dev.join("pts"),
        "devpts",
        MS_NOSUID | MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    mnt("shm", &dev.join("shm"), "tmpfs", MS_NOSUID | MS_NOEXEC | MS_NODEV, Some("mode=1777,size=65536k"))?;
    mnt("mqueue", &dev.join("mqueue"), "mqueue", MS_NOSUID | MS_NOEXEC | MS_NODEV, None)
}

fn write_etc(root: &Path, hostname: &str) {
    let etc = root.join("etc");
    if !etc.is_dir() {
        return;
    }
    let _ = fs::write(etc.join("hostname"), format!("{hostname}\n"));
    let _ = fs::write(
        etc.join("hosts"),
        format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"),
    );
    if let Ok(r) = fs::read_to_string("/etc/resolv.conf") {
        let r: String = r.lines().filter(|l| !l.contains("127.0.0.")).map(|l| format!("{l}\n")).collect();
        let _ = fs::remove_file(etc.join("resolv.conf"));
        let _ = fs::write(etc.join("resolv.conf"), r);
    }
}

/// Builds the container's filesystem view and pivots into it.
fn setup(spec: &InitSpec) -> Step {
    step(ns::mount(None, Path::new("/"), None, MS_REC | MS_PRIVATE, None), || "making / private".into())?;
    let lower: Vec<String> = spec.lowers.iter().map(|p| p.display().to_string()).collect();
    let opts =
        format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), spec.upper.display(), spec.work.display());
    let root = &spec.merged;
    mnt("overlay", root, "overlay", 0, Some(&opts))?;
    mnt("proc", &root.join("proc"), "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV, None)?;
    setup_dev(root)?;
    mnt("sysfs", &root.join("sys"), "sysfs", MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RDONLY, None)?;
    write_etc(root, &spec.hostname);
    step(std::env::set_current_dir(root), || format!("chdir {}", root.display()))?;
    step(ns::pivot_root(Path::new("."), Path::new(".")), || "pivot_root".into())?;
    step(ns::umount2(Path::new("."), MNT_DETACH), || "detaching the old root".into())?;
    step(std::env::set_current_dir("/"), || "chdir /".into())?;
    step(ns::sethostname(&spec.hostname), || "sethostname".into())?;
    Ok(())
}

/// What the forked init becomes once its container is built.
pub enum Then {
    /// Executes the container's command.
    Exec,
    /// Becomes a restore stub (see `stasis_engine::restore::RootStub`) with
    /// its scratch area at `scratch` and the restorer's pidfd `keep`.
    Restore { scratch: u64, keep: stasis_sys::proc_ctl::StubFd },
}

/// Runs in the forked init: sets up, waits for `go`, then execs or becomes
/// a restore stub. Any failure is written to `err` (close-on-exec: the
/// monitor sees EOF when exec works; a stub closes it) and the process
/// exits with 127.
pub fn init_main(spec: &InitSpec, mut go: fs::File, mut err: fs::File, extra: Vec<OwnedFd>, then: Then) -> ! {
    drop(extra);
    let res = (|| -> Step {
        if matches!(then, Then::Exec) {
            // Its own session: not the monitor's, like a container under
            // runc. (A restored init gets its session from the images.)
            let _ = ns::setsid();
        }
        setup(spec)?;
        // stdin: the container's own /dev/null, as its processes name it.
        let null = step(fs::File::open("/dev/null"), || "opening /dev/null".into())?;
        step(stasis_sys::fd::dup_to(std::os::fd::AsFd::as_fd(&null), 0), || "stdin".into())?;
        drop(null);
        let mut b = [0u8; 1];
        if go.read(&mut b).unwrap_or(0) != 1 {
            return Err("the monitor gave up before start".into());
        }
        if let Then::Restore { scratch, keep } = then {
            stasis_sys::proc_ctl::become_stub(
                scratch,
                stasis_engine::restore::stub::SCRATCH_LEN as usize,
                &stasis_engine::restore::stub::CODE,
                Some(keep),
            );
        }
        let wd = if spec.workdir.is_empty() { "/" } else { spec.workdir.as_str() };
        let _ = fs::create_dir_all(wd);
        step(std::env::set_current_dir(wd), || format!("workdir {wd}"))?;
        ns::umask(0o022);
        // Nothing the monitor's caller leaked may reach the container.
        step(stasis_sys::fd::cloexec_from(3), || "closing inherited fds".into())?;
        let mut cmd = Command::new(&spec.argv[0]);
        cmd.args(&spec.argv[1..]).env_clear();
        for kv in &spec.env {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
        let e = cmd.exec();
        Err(if e.kind() == std::io::ErrorKind::NotFound {
            format!("executable {:?} not found in the container's $PATH", spec.argv[0])
        } else {
            format!("executing {:?}: {e}", spec.argv[0])
        })
    })();
    if let Err(msg) = res {
        let _ = err.write_all(msg.as_bytes());
    }
    std::process::exit(127)
}
