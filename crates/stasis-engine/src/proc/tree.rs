//! The process tree under a root pid, from `/proc/PID/task/TID/children`.
//!
//! The dump needs every process of the tree with its place in it (ppid,
//! process group, session) and its threads, parents before children, so
//! restore can recreate sessions and groups in order. The walk refuses roots
//! that cannot or must not be dumped: a kernel thread, a zombie, a thread id,
//! and the dumper itself or any of its ancestors (dumping ourselves would
//! freeze the dumper). Zombies *below* the root are kept with state `Z`: the
//! caller decides (CRIU restores them as zombies).
//!
//! The children lists are only stable while the tree is frozen; run the walk
//! again after freezing. A descendant that exits during the walk is skipped.

use std::collections::{HashMap, HashSet};

use super::stat::{read_stat, Stat, TaskState};
use super::status::read_status;
use super::task::{list_children, list_threads};
use super::ProcError;

/// One process of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// Thread ids, ascending; the first is not necessarily `pid`.
    pub threads: Vec<i32>,
    pub comm: String,
    pub state: TaskState,
}

impl ProcessInfo {
    pub fn is_zombie(&self) -> bool {
        self.state == TaskState::Zombie
    }
}

/// A process tree, parents before children.
#[derive(Debug, Clone)]
pub struct ProcTree {
    procs: Vec<ProcessInfo>,
    /// Child pids of each process, ascending, index-aligned with `procs`.
    kids: Vec<Vec<i32>>,
    index: HashMap<i32, usize>,
}

impl ProcTree {
    /// The root process.
    pub fn root(&self) -> &ProcessInfo {
        &self.procs[0]
    }

    /// All processes, each after its parent (depth first, children by pid).
    pub fn processes(&self) -> &[ProcessInfo] {
        &self.procs
    }

    pub fn get(&self, pid: i32) -> Option<&ProcessInfo> {
        self.index.get(&pid).map(|&i| &self.procs[i])
    }

    /// The children of `pid` in the tree (none if `pid` is not in it).
    pub fn children(&self, pid: i32) -> impl Iterator<Item = &ProcessInfo> + '_ {
        let kids = self.index.get(&pid).map_or(&[][..], |&i| &self.kids[i][..]);
        kids.iter().filter_map(|k| self.get(*k))
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// Never true: a tree has at least its root.
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }
}

/// Walks the tree under `root` (children of every thread, recursively).
pub fn collect_tree(root: i32) -> Result<ProcTree, ProcError> {
    let st = read_stat(root)?;
    let status = read_status(root)?;
    if st.is_kernel_thread() || status.kthread == Some(true) {
        return Err(ProcError::KernelThread { pid: root });
    }
    if status.tgid != root {
        return Err(ProcError::NotThreadGroupLeader { pid: root, tgid: status.tgid });
    }
    if self_and_ancestors()?.contains(&root) {
        return Err(ProcError::SelfOrAncestor { pid: root });
    }
    if st.is_zombie() {
        return Err(ProcError::Zombie { pid: root });
    }

    let mut tree = ProcTree { procs: Vec::new(), kids: Vec::new(), index: HashMap::new() };
    // Depth first; a stack of pids still to visit, popped in ascending order.
    let mut todo = vec![(root, st)];
    while let Some((pid, st)) = todo.pop() {
        if tree.index.contains_key(&pid) {
            log::warn!("process {pid} reached twice while walking the tree of {root}");
            continue;
        }
        let is_root = pid == root;
        let visited = visit(pid, st);
        let (info, kids) = match visited {
            Ok(v) => v,
            Err(e) if !is_root && e.is_no_such_process() => {
                log::debug!("process {pid} exited while walking the tree of {root}");
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut live_kids = Vec::with_capacity(kids.len());
        for &k in kids.iter().rev() {
            match read_stat(k) {
                Ok(kst) => {
                    live_kids.push(k);
                    todo.push((k, kst));
                }
                Err(e) if e.is_no_such_process() => {
                    log::debug!("process {k} exited while walking the tree of {root}");
                }
                Err(e) => return Err(e),
            }
        }
        live_kids.reverse();
        tree.index.insert(pid, tree.procs.len());
        tree.procs.push(info);
        tree.kids.push(live_kids);
    }
    // A child that exited after being pushed leaves a dangling id: drop it.
    let known: HashSet<i32> = tree.index.keys().copied().collect();
    for k in &mut tree.kids {
        k.retain(|c| known.contains(c));
    }
    Ok(tree)
}

fn visit(pid: i32, st: Stat) -> Result<(ProcessInfo, Vec<i32>), ProcError> {
    let threads = list_threads(pid)?;
    // A zombie's children were reparented when it exited.
    let kids = if st.is_zombie() { Vec::new() } else { list_children(pid)? };
    let info =
        ProcessInfo { pid, ppid: st.ppid, pgid: st.pgrp, sid: st.session, threads, comm: st.comm, state: st.state };
    Ok((info, kids))
}

/// Our pid and the pids of all our ancestors, up to (and with) pid 1 or the
/// first process outside our PID namespace (ppid 0).
fn self_and_ancestors() -> Result<HashSet<i32>, ProcError> {
    let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let mut out = HashSet::from([me]);
    let mut pid = me;
    while pid > 0 {
        let ppid = read_stat(pid)?.ppid;
        if !out.insert(ppid) {
            break;
        }
        pid = ppid;
    }
    out.remove(&0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    /// A spawned process group, killed and reaped on drop.
    struct Group(Child);

    impl Group {
        fn spawn(cmd: &mut Command) -> Option<Self> {
            cmd.process_group(0).spawn().ok().map(Group)
        }
        fn pid(&self) -> i32 {
            i32::try_from(self.0.id()).unwrap()
        }
    }

    impl Drop for Group {
        fn drop(&mut self) {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.pid())]).status();
            let _ = self.0.wait();
        }
    }

    /// Retries `f` until it returns Some, for up to 5 s.
    fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
        let t0 = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "timed out");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn me() -> i32 {
        i32::try_from(std::process::id()).unwrap()
    }

    #[test]
    fn shell_tree_in_parent_order() {
        let g =
            Group::spawn(Command::new("sh").args(["-c", "sleep 30 & (sleep 30 & sleep 30 & wait) & wait"])).unwrap();
        let root = g.pid();
        let tree = wait_for(|| {
            let t = collect_tree(root).ok()?;
            let sleeps = t.processes().iter().filter(|p| p.comm == "sleep").count();
            (t.len() == 5 && sleeps == 3).then_some(t)
        });
        assert_eq!(tree.root().pid, root);
        let mut seen = HashSet::new();
        for p in tree.processes() {
            assert!(p.pid == root || seen.contains(&p.ppid), "{p:?} before its parent");
            seen.insert(p.pid);
            assert_eq!((p.pgid, p.threads.clone()), (root, vec![p.pid]));
            assert_eq!(p.sid, tree.root().sid);
        }
        let direct: Vec<_> = tree.children(root).map(|p| p.comm.as_str()).collect();
        assert_eq!(direct.len(), 2);
        assert!(direct.contains(&"sh") && direct.contains(&"sleep"));
        let sub = tree.children(root).find(|p| p.comm == "sh").unwrap();
        assert_eq!(tree.children(sub.pid).count(), 2);
        assert!(tree.get(me()).is_none());
        assert_eq!(tree.children(me()).count(), 0);
    }

    #[test]
    fn threads_and_thread_ids() {
        let Some(g) = Group::spawn(Command::new("python3").args([
            "-c",
            "import threading,time\n\
             for _ in range(2): threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n\
             time.sleep(30)",
        ])) else {
            eprintln!("SKIP: python3 not found");
            return;
        };
        let pid = g.pid();
        let tree = wait_for(|| collect_tree(pid).ok().filter(|t| t.root().threads.len() == 3));
        let other = *tree.root().threads.iter().find(|&&t| t != pid).unwrap();
        let e = collect_tree(other).unwrap_err();
        assert!(matches!(e, ProcError::NotThreadGroupLeader { pid: p, tgid } if p == other && tgid == pid), "{e:?}");
    }

    #[test]
    fn zombie_child_is_kept() {
        // `exec sleep` does not reap the background `true`.
        let g = Group::spawn(Command::new("sh").args(["-c", "true & exec sleep 30"])).unwrap();
        let root = g.pid();
        let tree = wait_for(|| {
            let t = collect_tree(root).ok()?;
            (t.root().comm == "sleep" && t.processes().iter().any(|p| p.is_zombie())).then_some(t)
        });
        let z = tree.children(root).next().unwrap();
        assert_eq!((z.state, z.ppid), (TaskState::Zombie, root));
    }

    #[test]
    fn refused_roots() {
        let me = me();
        assert!(matches!(collect_tree(me), Err(ProcError::SelfOrAncestor { pid }) if pid == me));
        let parent = read_stat(me).unwrap().ppid;
        assert!(matches!(collect_tree(parent), Err(ProcError::SelfOrAncestor { .. })));
        assert!(matches!(collect_tree(1), Err(ProcError::SelfOrAncestor { pid: 1 })));
        match read_stat(2) {
            Ok(s) if s.is_kernel_thread() => {
                let e = collect_tree(2).unwrap_err();
                assert!(matches!(e, ProcError::KernelThread { pid: 2 }), "{e:?}");
                assert_eq!(e.to_string(), "PID 2 is a kernel thread, which cannot be checkpointed");
            }
            _ => eprintln!("SKIP: pid 2 is not a kernel thread in this PID namespace"),
        }
        let e = collect_tree(0x7fff_fff0).unwrap_err();
        assert!(e.is_no_such_process(), "{e:?}");

        let mut child = Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        wait_for(|| read_stat(pid).ok().filter(|s| s.is_zombie()));
        let e = collect_tree(pid).unwrap_err();
        child.wait().unwrap();
        assert!(matches!(e, ProcError::Zombie { pid: p } if p == pid), "{e:?}");
    }
}
