//! The cgroup freezer, for trees that have a cgroup of their own (a
//! container's): freezing it stops every task at once, so nothing forks,
//! clones or exits while we list and seize the tree. Version 1
//! (`freezer.state`: FROZEN / THAWED, read back FREEZING until done) and
//! version 2 (`cgroup.freeze`: 1 / 0, `frozen 1` in `cgroup.events`).

use crate::error::{dump_io, DumpError};
use stasis_sys::Pid;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A frozen cgroup; thawed on drop.
pub struct CgroupFreezer {
    dir: PathBuf,
    v1: bool,
    thawed: bool,
}

/// How long a freeze may take before we give up (and thaw).
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

impl CgroupFreezer {
    /// Freezes the cgroup `dir` (a v1 freezer directory or a v2 cgroup) and
    /// waits until every task in it is frozen. `root` names the tree in
    /// errors.
    pub fn freeze(dir: &Path, root: Pid) -> Result<CgroupFreezer, DumpError> {
        let v1 = dir.join("freezer.state").exists();
        let (file, value) = if v1 { ("freezer.state", "FROZEN") } else { ("cgroup.freeze", "1") };
        let path = dir.join(file);
        std::fs::write(&path, value).map_err(dump_io(root, format!("freeze cgroup {}", dir.display())))?;
        let f = CgroupFreezer { dir: dir.to_path_buf(), v1, thawed: false };
        let end = Instant::now() + FREEZE_TIMEOUT;
        let mut pause = Duration::from_micros(50);
        while !f.is_frozen() {
            if Instant::now() > end {
                return Err(dump_io(root, format!("freeze cgroup {}", dir.display()))(std::io::Error::other(format!(
                    "not frozen after {FREEZE_TIMEOUT:?}"
                ))));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
        Ok(f)
    }

    fn is_frozen(&self) -> bool {
        if self.v1 {
            std::fs::read_to_string(self.dir.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
        } else {
            std::fs::read_to_string(self.dir.join("cgroup.events"))
                .is_ok_and(|s| s.lines().any(|l| l.trim() == "frozen 1"))
        }
    }

    /// Thaws the cgroup (also done on drop).
    pub fn thaw(mut self) {
        self.do_thaw();
    }

    fn do_thaw(&mut self) {
        if self.thawed {
            return;
        }
        self.thawed = true;
        let (file, value) = if self.v1 { ("freezer.state", "THAWED") } else { ("cgroup.freeze", "0") };
        if let Err(e) = std::fs::write(self.dir.join(file), value) {
            log::warn!("thawing cgroup {}: {e}", self.dir.display());
        }
    }
}

impl Drop for CgroupFreezer {
    fn drop(&mut self) {
        self.do_thaw();
    }
}
