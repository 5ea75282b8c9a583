//! A cgroup per container, in every mounted hierarchy: each cgroup v1
//! hierarchy (cpu, memory, pids, freezer, ... — this host's hybrid layout)
//! and the cgroup2 one, or just cgroup2 on a pure v2 host. The container
//! gets `HIERARCHY/stasis/ID`; the checkpoint code freezes through it
//! (v1 `freezer.state`, v2 `cgroup.freeze`).
//!
//! Hierarchies are found in `/proc/self/mountinfo`. When none is mounted —
//! `ip netns exec` remounts `/sys`, hiding `/sys/fs/cgroup` — we mount them
//! ourselves under `RUNROOT/cgroup/`: one v1 mount per hierarchy id listed
//! in `/proc/cgroups` (same controller set, so the kernel hands us the
//! existing hierarchy) plus cgroup2.

use crate::error::{Ctx, Result};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One mounted hierarchy.
#[derive(Clone, Debug)]
pub struct Hierarchy {
    pub mount: PathBuf,
    pub v2: bool,
    /// v1 controllers from the mount options (empty for v2).
    pub controllers: Vec<String>,
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// Cgroup hierarchies mounted in our mount namespace, one per superblock.
pub fn mounted() -> Vec<Hierarchy> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut seen = BTreeMap::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else { continue };
        let f: Vec<&str> = pre.split(' ').collect();
        let p: Vec<&str> = post.split(' ').collect();
        if f.len() < 5 || p.len() < 3 || f[3] != "/" {
            continue;
        }
        let (dev, mount) = (f[2].to_string(), PathBuf::from(unescape(f[4])));
        let h = match p[0] {
            "cgroup2" => Hierarchy { mount, v2: true, controllers: Vec::new() },
            "cgroup" => {
                let known = ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids"];
                let ctl = p[2].split(',').filter(|o| known.contains(o) || o.starts_with("name=")).map(String::from);
                Hierarchy { mount, v2: false, controllers: ctl.collect() }
            }
            _ => continue,
        };
        seen.entry(dev).or_insert(h);
    }
    seen.into_values().collect()
}

/// The hierarchies to use, mounting them under `runroot/cgroup` if none
/// is visible.
pub fn hierarchies(runroot: &Path) -> Result<Vec<Hierarchy>> {
    let found = mounted();
    if !found.is_empty() {
        // A pure v2 host: /sys/fs/cgroup itself is cgroup2.
        if let Some(h) = found.iter().find(|h| h.v2 && h.mount == Path::new("/sys/fs/cgroup")) {
            return Ok(vec![h.clone()]);
        }
        return Ok(found);
    }
    let base = runroot.join("cgroup");
    let table = fs::read_to_string("/proc/cgroups").ctx(|| "reading /proc/cgroups")?;
    let mut by_id: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for l in table.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 4 && f[3] == "1" {
            if let Ok(id) = f[1].parse::<u32>() {
                if id != 0 {
                    by_id.entry(id).or_default().push(f[0].to_string());
                }
            }
        }
    }
    let mut mounts: Vec<(String, Option<String>)> =
        by_id.into_values().map(|c| (c.join(","), Some(c.join(",")))).collect();
    mounts.push(("unified".into(), None));
    for (name, opts) in mounts {
        let dir = base.join(&name);
        fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let fstype = if opts.is_some() { "cgroup" } else { "cgroup2" };
        stasis_sys::ns::mount(Some(fstype), &dir, Some(fstype), 0, opts.as_deref())
            .ctx(|| format!("mounting {fstype} ({name}) on {}", dir.display()))?;
    }
    Ok(mounted())
}

fn copy_if_empty(dir: &Path, file: &str) {
    let mine = dir.join(file);
    if fs::read_to_string(&mine).map(|s| s.trim().is_empty()).unwrap_or(false) {
        if let Some(parent) = dir.parent() {
            if let Ok(v) = fs::read_to_string(parent.join(file)) {
                let _ = fs::write(&mine, v.trim());
            }
        }
    }
}

/// Creates `stasis/ID` in every hierarchy; returns the created dirs. On
/// failure, what was created is removed again.
pub fn create(runroot: &Path, id: &str) -> Result<Vec<PathBuf>> {
    let mut made = Vec::new();
    for h in hierarchies(runroot)? {
        let parent = h.mount.join("stasis");
        let dir = parent.join(id);
        let res = fs::create_dir_all(&dir).ctx(|| format!("creating cgroup {}", dir.display()));
        if let Err(e) = res {
            remove(&made);
            return Err(e);
        }
        if h.controllers.iter().any(|c| c == "cpuset") {
            for d in [&parent, &dir] {
                copy_if_empty(d, "cpuset.cpus");
                copy_if_empty(d, "cpuset.mems");
            }
        }
        made.push(dir);
    }
    Ok(made)
}

/// Moves `pid` into every cgroup of `dirs`.
pub fn add_pid(dirs: &[PathBuf], pid: i32) -> Result<()> {
    for d in dirs {
        let f = d.join("cgroup.procs");
        fs::write(&f, pid.to_string()).ctx(|| format!("adding pid {pid} to {}", f.display()))?;
    }
    Ok(())
}

/// The container's cgroup to freeze it with: its v1 freezer directory, else
/// its v2 cgroup (`None` when neither is reachable from here).
pub fn freezer(dirs: &[PathBuf]) -> Option<PathBuf> {
    let find = |file: &str| dirs.iter().find(|d| d.join(file).exists()).cloned();
    find("freezer.state").or_else(|| find("cgroup.freeze"))
}

/// Pids still in a container's cgroups.
pub fn pids(dirs: &[PathBuf]) -> Vec<i32> {
    let mut v: Vec<i32> = dirs
        .iter()
        .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect::<Vec<i32>>())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Removes container `id`'s cgroup in every hierarchy visible (or
/// mountable) from here, plus the recorded `dirs`: a later command may run
/// in another mount namespace than the one that created them.
pub fn remove_container(runroot: &Path, id: &str, dirs: &[PathBuf]) {
    let mut all: Vec<PathBuf> = dirs.to_vec();
    if let Ok(hs) = hierarchies(runroot) {
        all.extend(hs.iter().map(|h| h.mount.join("stasis").join(id)));
    }
    all.sort();
    all.dedup();
    remove(&all);
}

/// Removes the cgroup dirs, retrying while exiting tasks still leave them
/// busy (up to two seconds). Missing dirs are fine.
pub fn remove(dirs: &[PathBuf]) {
    let end = Instant::now() + Duration::from_secs(2);
    for d in dirs {
        loop {
            match fs::remove_dir(d) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => {
                    if Instant::now() >= end {
                        log::warn!("cannot remove cgroup {}: {e}", d.display());
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}
