//! The on-disk store of one "host": images and container configs under
//! `--root`, runtime state (pids, exit codes, network state) under
//! `--runroot`. Every JSON file is written atomically (temp file, fsync,
//! rename); each container has a lock file taken with `flock` by whoever
//! changes it.
//!
//! Layout:
//! ```text
//! ROOT/images/ID/{image.json,config.json,layers/N/}   ROOT/tmp/ (staging)
//! ROOT/containers/ID/{config.json,lock,ctr.log,upper/,work/}
//! RUNROOT/containers/ID/{state.json,merged/,monitor.log}
//! ```

use crate::error::{Ctx, Result, RuntimeError};
use crate::network::NetState;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Paths of one store (one "host").
#[derive(Clone, Debug)]
pub struct Store {
    pub root: PathBuf,
    pub runroot: PathBuf,
}

/// A container's durable configuration (`ROOT/containers/ID/config.json`).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ContainerConfig {
    pub id: String,
    pub name: String,
    pub image_id: String,
    pub image_name: String,
    /// The full argv (entrypoint + cmd, resolved at create time).
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub hostname: String,
    /// `-p` values as given (parsed again by the network layer).
    pub publish: Vec<String>,
    /// The container's IP once it has one, kept across restarts.
    pub ip: Option<String>,
    /// Its MAC address once it has one (kept across restarts and restores).
    #[serde(default)]
    pub mac: Option<String>,
    /// Creation time, nanoseconds since the epoch.
    pub created: u128,
}

/// The marker of a checkpointed container (see [`Store::mark_checkpointed`]).
pub(crate) const CHECKPOINTED: &str = "checkpointed";

/// Lifecycle status as recorded in the state file.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Exited,
}

/// A container's runtime state (`RUNROOT/containers/ID/state.json`).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct ContainerState {
    pub status: Status,
    /// The init's pid in our pid namespace, and its start time (clock
    /// ticks since boot, field 22 of /proc/PID/stat) to tell pid reuse.
    pub pid: i32,
    pub pid_start: u64,
    pub monitor_pid: i32,
    pub started_at: Option<u128>,
    pub finished_at: Option<u128>,
    pub exit_code: Option<i32>,
    pub net: Option<NetState>,
    pub cgroups: Vec<PathBuf>,
    /// It exited because it was checkpointed (and can be restored).
    #[serde(default)]
    pub checkpointed: bool,
    /// It runs from a restored checkpoint.
    #[serde(default)]
    pub restored: bool,
}

/// Nanoseconds since the epoch.
pub fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// A fresh 64-hex-digit id.
pub fn new_id() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("getrandom");
    hex::encode(b)
}

/// Writes `value` as JSON to `path` atomically: temp file, fsync, rename.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_json(path, value, true)
}

/// Writes JSON atomically (temp file + rename); `durable` adds an fsync
/// before the rename. Runtime state (runroot, a tmpfs that does not
/// survive a reboot anyway) skips it: it costs ~5 ms per write here.
fn write_json<T: Serialize>(path: &Path, value: &T, durable: bool) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let data = serde_json::to_vec_pretty(value).map_err(|e| RuntimeError::Invalid(format!("encoding json: {e}")))?;
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&data)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.ctx(|| format!("writing {}", path.display()))
}

/// Reads and decodes a JSON file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let data = fs::read(path).ctx(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&data).map_err(|e| RuntimeError::Invalid(format!("{}: {e}", path.display())))
}

/// An exclusive `flock` held until dropped.
pub struct Lock(#[allow(dead_code)] File);

/// Takes an exclusive lock on `path` (created if missing), waiting for it.
pub fn lock(path: &Path) -> Result<Lock> {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ctx(|| format!("opening lock {}", path.display()))?;
    f.lock().ctx(|| format!("locking {}", path.display()))?;
    Ok(Lock(f))
}

impl Store {
    /// Opens (creating its directories) the store at `root` / `runroot`.
    pub fn open(root: &Path, runroot: &Path) -> Result<Store> {
        let s = Store { root: root.to_path_buf(), runroot: runroot.to_path_buf() };
        for d in [s.images_dir(), s.containers_dir(), s.tmp_dir(), s.runroot.join("containers")] {
            fs::create_dir_all(&d).ctx(|| format!("creating {}", d.display()))?;
        }
        Ok(s)
    }

    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn ctr_dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }

    pub fn ctr_run_dir(&self, id: &str) -> PathBuf {
        self.runroot.join("containers").join(id)
    }

    /// The store-wide lock taken while names are checked and claimed.
    pub fn lock_store(&self) -> Result<Lock> {
        lock(&self.root.join("store.lock"))
    }

    pub fn lock_container(&self, id: &str) -> Result<Lock> {
        lock(&self.ctr_dir(id).join("lock"))
    }

    /// Every container's config, oldest first (unreadable ones skipped).
    pub fn containers(&self) -> Vec<ContainerConfig> {
        let mut v: Vec<ContainerConfig> = ids_in(&self.containers_dir())
            .iter()
            .filter_map(|id| read_json(&self.ctr_dir(id).join("config.json")).ok())
            .collect();
        v.sort_by_key(|c| c.created);
        v
    }

    /// The container named `query`, or whose id is or starts with it.
    pub fn find_container(&self, query: &str) -> Result<ContainerConfig> {
        let all = self.containers();
        if let Some(c) = all.iter().find(|c| c.name == query || c.id == query) {
            return Ok(c.clone());
        }
        let hits: Vec<&ContainerConfig> = all.iter().filter(|c| is_hex(query) && c.id.starts_with(query)).collect();
        match hits.len() {
            1 => Ok(hits[0].clone()),
            0 => Err(RuntimeError::NotFound(format!("no such container: {query}"))),
            n => Err(RuntimeError::Conflict(format!("{query} matches {n} containers: use a longer id"))),
        }
    }

    /// The most recently created container (`--latest`).
    pub fn latest_container(&self) -> Result<ContainerConfig> {
        self.containers().pop().ok_or_else(|| RuntimeError::NotFound("no containers".into()))
    }

    pub fn read_state(&self, id: &str) -> ContainerState {
        let mut st: ContainerState = read_json(&self.ctr_run_dir(id).join("state.json")).unwrap_or_default();
        st.checkpointed |= st.status != Status::Running && self.ctr_dir(id).join(CHECKPOINTED).exists();
        st
    }

    /// Records (or clears) that the container stopped because it was
    /// checkpointed: a marker beside its config, apart from the state its
    /// monitor writes, and kept across reboots like the checkpoint.
    pub fn mark_checkpointed(&self, id: &str, yes: bool) -> Result<()> {
        let p = self.ctr_dir(id).join(CHECKPOINTED);
        match yes {
            true => fs::write(&p, b"").ctx(|| format!("writing {}", p.display())),
            false => match fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).ctx(|| format!("removing {}", p.display()))
                }
                _ => Ok(()),
            },
        }
    }

    pub fn write_state(&self, id: &str, st: &ContainerState) -> Result<()> {
        let dir = self.ctr_run_dir(id);
        fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        write_json(&dir.join("state.json"), st, false)
    }
}

/// Names of the subdirectories of `dir` that look like ids.
pub fn ids_in(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.len() == 64 && is_hex(n)).collect()
}

pub fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` for nanoseconds since the epoch.
pub fn rfc3339(ns: u128) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let nanos = (ns % 1_000_000_000) as u32;
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z", sod / 3600, sod % 3600 / 60, sod % 60)
}

/// "5 seconds", "3 minutes", ... for a duration in nanoseconds.
pub fn human_duration(ns: u128) -> String {
    let s = ns / 1_000_000_000;
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=3599 => format!("{} minutes", s / 60),
        3600..=86399 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_700_000_000_123_000_000), "2023-11-14T22:13:20.123000000Z");
    }
}
