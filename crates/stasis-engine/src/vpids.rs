//! Pids as the dumped tree sees them.
//!
//! We trace and read a tree with the pids of our own pid namespace, but a
//! container's tree lives in a pid namespace of its own, where its init is
//! 1: the images must record those inner pids, because the restored tree
//! gets them back in a new namespace. `/proc/PID/status` lists a task's pid
//! (`NSpid`), process group (`NSpgid`) and session (`NSsid`) at every
//! namespace level from ours inwards; the last is the tree's own view. For
//! a tree in our own namespace the two are the same numbers.

use crate::error::DumpError;
use crate::freeze::FrozenProcess;
use crate::proc;
use stasis_image::pb;
use stasis_sys::Pid;
use std::collections::HashMap;

/// Our pid of every task of the tree -> the tree's own.
pub struct Vpids {
    map: HashMap<Pid, Pid>,
    /// Process -> (process group, session) as the tree sees them.
    groups: HashMap<Pid, (Option<Pid>, Option<Pid>)>,
}

fn innermost(v: &[i32], ours: i32) -> i32 {
    v.last().copied().unwrap_or(ours)
}

impl Vpids {
    /// Reads the namespace view of every task of the frozen tree. Refuses a
    /// tree that spans pid namespaces, or whose root, in a namespace below
    /// ours, is not that namespace's init.
    pub fn read(processes: &[FrozenProcess], root: Pid) -> Result<Vpids, DumpError> {
        let mut map = HashMap::new();
        let mut groups = HashMap::new();
        let mut depth = None;
        for p in processes {
            let pid = p.pid;
            let st = proc::read_status(pid).map_err(|source| DumpError::Proc { pid, source })?;
            let d = st.ns_pid.len().max(1);
            if *depth.get_or_insert(d) != d {
                return Err(DumpError::Unsupported { pid, what: "a tree that spans pid namespaces".into() });
            }
            map.insert(pid, innermost(&st.ns_pid, pid));
            groups.insert(pid, (st.ns_pgid.last().copied(), st.ns_sid.last().copied()));
            for &tid in p.threads.iter().filter(|&&t| t != pid) {
                let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
                    .map_err(crate::error::dump_io(tid, "read thread status"))?;
                let ts = proc::status::parse_status(&text).map_err(|source| DumpError::Proc { pid: tid, source })?;
                map.insert(tid, innermost(&ts.ns_pid, tid));
            }
        }
        // A tree in a pid namespace below ours must be led by its init.
        let nested = depth.unwrap_or(1) > 1;
        if nested && map.get(&root) != Some(&1) {
            return Err(DumpError::Unsupported {
                pid: root,
                what: format!(
                    "process {root} lives in a pid namespace it is not the init of (its pid there: {}); dump that \
                     namespace's init",
                    map.get(&root).copied().unwrap_or(0)
                ),
            });
        }
        Ok(Vpids { map, groups })
    }

    /// The tree's pid of a task of ours (unchanged for pids outside it).
    pub fn of(&self, pid: Pid) -> Pid {
        self.map.get(&pid).copied().unwrap_or(pid)
    }

    /// A pstree entry built with our pids, in the tree's.
    pub fn pstree(&self, e: &pb::PstreeEntry) -> pb::PstreeEntry {
        let pid = e.pid as Pid;
        let (pgid, sid) = self.groups.get(&pid).copied().unwrap_or_default();
        let (pgid, sid) = (pgid.unwrap_or(e.pgid as Pid), sid.unwrap_or(e.sid as Pid));
        pb::PstreeEntry {
            pid: self.of(pid) as u32,
            ppid: if e.ppid == 0 { 0 } else { self.of(e.ppid as Pid) as u32 },
            pgid: pgid as u32,
            sid: sid as u32,
            threads: e.threads.iter().map(|&t| self.of(t as Pid) as u32).collect(),
        }
    }
}
