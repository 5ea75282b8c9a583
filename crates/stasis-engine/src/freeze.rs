//! Freezing a process tree: `PTRACE_SEIZE` + `PTRACE_INTERRUPT` every
//! thread of every process, re-listing children and threads until a full
//! pass finds nothing new (a task may fork or clone until the moment it is
//! stopped). A tree with a cgroup of its own (a container) is first frozen
//! with the cgroup freezer, so one pass sees it whole: every thread is
//! seized and interrupted while frozen, the cgroup is thawed, and each
//! thread stops in our trap before running its own code again.
//!
//! [`Frozen`] holds the stopped tasks and detaches them on drop, so every
//! error path of a dump leaves the tree running as it was. Kill-after-dump
//! goes through [`Frozen::kill_all`].

use crate::cgfreeze::CgroupFreezer;
use crate::error::DumpError;
use stasis_sys::ptrace::{self, Stop};
use stasis_sys::{proc_ctl, Pid};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// One frozen process: its pid and its threads (main thread first).
#[derive(Clone, Debug)]
pub struct FrozenProcess {
    pub pid: Pid,
    pub threads: Vec<Pid>,
}

/// The stopped tree; detaches every task on drop.
pub struct Frozen {
    /// Processes in parent-before-child order.
    pub processes: Vec<FrozenProcess>,
    seized: Vec<Pid>,
    /// Tasks that reported a signal-delivery stop while we froze them: the
    /// signal is handed back to them on detach so nothing is lost.
    pending_signal: BTreeMap<Pid, i32>,
    /// How long the freeze took.
    pub freezing_time: Duration,
    /// Original CPU masks of the tasks and of our thread while everything is
    /// pinned to one CPU (see [`Frozen::pin_to_one_cpu`]).
    pinned: Vec<(Pid, proc_ctl::CpuSet)>,
    /// Processes that were stopped by job control (SIGSTOP, state T) before
    /// we seized them: they stay stopped after restore.
    job_stopped: BTreeSet<Pid>,
    released: bool,
}

fn list_threads(pid: Pid) -> Vec<Pid> {
    let mut tids: Vec<Pid> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    tids.sort_unstable();
    // Main thread first.
    if let Some(i) = tids.iter().position(|&t| t == pid) {
        tids.remove(i);
        tids.insert(0, pid);
    }
    tids
}

fn list_children(pid: Pid, threads: &[Pid]) -> Vec<Pid> {
    let mut out = BTreeSet::new();
    for tid in threads {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/children")) {
            out.extend(s.split_whitespace().filter_map(|w| w.parse::<Pid>().ok()));
        }
    }
    out.into_iter().collect()
}

/// The state letter of /proc/PID/stat (`None`: gone).
fn state_of(pid: Pid) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 1..].trim_start().chars().next()
}

/// A zombie, or gone.
fn is_zombie(state: Option<char>) -> bool {
    state.is_none_or(|c| c == 'Z')
}

impl Frozen {
    /// Seizes and stops every thread of the tree rooted at `root`, which
    /// lives in the cgroup `cgroup` (freezer) if given.
    pub fn freeze_tree(root: Pid, cgroup: Option<&Path>) -> Result<Frozen, DumpError> {
        let start = Instant::now();
        let mut frozen = Frozen {
            processes: Vec::new(),
            seized: Vec::new(),
            pending_signal: BTreeMap::new(),
            freezing_time: Duration::ZERO,
            released: false,
            pinned: Vec::new(),
            job_stopped: BTreeSet::new(),
        };
        if let Some(cg) = cgroup {
            let freezer = CgroupFreezer::freeze(cg, root)?;
            let started = frozen.seize_all_frozen(root);
            freezer.thaw();
            for tid in started? {
                if !frozen.wait_stop(tid)? {
                    frozen.seized.retain(|&t| t != tid);
                }
            }
            log::debug!("freeze {root}: {} threads seized under the cgroup freezer", frozen.seized.len());
        }
        let mut seized: BTreeSet<Pid> = frozen.seized.iter().copied().collect();
        for _pass in 0..100 {
            let mut changed = false;
            let mut order: Vec<FrozenProcess> = Vec::new();
            let mut queue = vec![root];
            while let Some(pid) = queue.pop() {
                let state = state_of(pid);
                if pid != root && is_zombie(state) {
                    // A zombie child has no threads to stop; the dump
                    // records it from /proc.
                    order.push(FrozenProcess { pid, threads: Vec::new() });
                    continue;
                }
                let threads = list_threads(pid);
                // `T`: stopped by a signal (a tracer's stop shows as `t`).
                if !seized.contains(&pid) && state == Some('T') {
                    frozen.job_stopped.insert(pid);
                }
                for &tid in &threads {
                    if seized.contains(&tid) {
                        continue;
                    }
                    changed = true;
                    match frozen.seize_one(tid) {
                        Ok(true) => {
                            seized.insert(tid);
                        }
                        Ok(false) => {} // exited meanwhile
                        Err(e) => return Err(e),
                    }
                }
                let threads: Vec<Pid> = threads.into_iter().filter(|t| seized.contains(t)).collect();
                let children = list_children(pid, &threads);
                order.push(FrozenProcess { pid, threads });
                // Reverse so the first child is visited first (stable order).
                queue.extend(children.into_iter().rev());
            }
            if !changed {
                // Everything listed was already stopped: the tree is stable.
                order.retain(|p| p.pid == root || !p.threads.is_empty() || is_zombie(state_of(p.pid)));
                frozen.processes = order;
                // A job-stopped process would fall back into its group stop
                // at every injected call: end the group stop (the tasks stay
                // in our ptrace stop, and SIGCONT with no handler is not
                // queued); release() stops them again.
                for &pid in &frozen.job_stopped {
                    let _ = proc_ctl::kill(pid, libc::SIGCONT);
                }
                frozen.freezing_time = start.elapsed();
                return Ok(frozen);
            }
            if proc_ctl::interrupted() {
                return Err(DumpError::Interrupted);
            }
        }
        Err(DumpError::Unstable { pid: root })
    }

    /// Seizes and interrupts every thread of the (cgroup-frozen, so still)
    /// tree without waiting: frozen tasks reach the stop once thawed.
    /// Returns the threads to wait for.
    fn seize_all_frozen(&mut self, root: Pid) -> Result<Vec<Pid>, DumpError> {
        let mut started = Vec::new();
        let mut queue = vec![root];
        while let Some(pid) = queue.pop() {
            let state = state_of(pid);
            if pid != root && is_zombie(state) {
                continue;
            }
            if state == Some('T') {
                // Job-stopped: left to the ptrace-only pass, which knows.
                continue;
            }
            let threads = list_threads(pid);
            for &tid in &threads {
                if self.seize_start(tid)? {
                    started.push(tid);
                }
            }
            queue.extend(list_children(pid, &threads).into_iter().rev());
        }
        Ok(started)
    }

    /// Seizes and interrupts one thread. `Ok(false)` if it vanished.
    fn seize_start(&mut self, tid: Pid) -> Result<bool, DumpError> {
        let opts = ptrace::O_TRACESYSGOOD | ptrace::O_SUSPEND_SECCOMP;
        match ptrace::seize(tid, opts) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(false),
            Err(e) => return Err(DumpError::Ptrace { pid: tid, what: "seize", source: e }),
        }
        self.seized.push(tid);
        ptrace::interrupt(tid).map_err(|e| DumpError::Ptrace { pid: tid, what: "interrupt", source: e })?;
        Ok(true)
    }

    /// Seizes and interrupts one thread; waits for its stop. `Ok(false)` if
    /// it vanished.
    fn seize_one(&mut self, tid: Pid) -> Result<bool, DumpError> {
        if !self.seize_start(tid)? {
            return Ok(false);
        }
        self.wait_stop(tid)
    }

    /// Waits for the interrupt stop of a seized thread (`Ok(false)`: it
    /// exited).
    fn wait_stop(&mut self, tid: Pid) -> Result<bool, DumpError> {
        loop {
            match ptrace::wait(tid) {
                Ok(Stop::Event(ptrace::EVENT_STOP, _)) => return Ok(true),
                Ok(Stop::Signal(sig)) => {
                    // A signal was being delivered: keep it for later and
                    // let the pending interrupt stop the task.
                    self.pending_signal.insert(tid, sig);
                    ptrace::cont(tid, 0).map_err(|e| DumpError::Ptrace {
                        pid: tid,
                        what: "resume to stop",
                        source: e,
                    })?;
                }
                Ok(Stop::Exited(_)) | Ok(Stop::Signaled(_)) => {
                    self.seized.retain(|&t| t != tid);
                    return Ok(false);
                }
                Ok(other) => {
                    return Err(DumpError::Ptrace {
                        pid: tid,
                        what: "stop",
                        source: std::io::Error::other(format!("unexpected stop {other:?}")),
                    })
                }
                Err(e) => return Err(DumpError::Ptrace { pid: tid, what: "wait", source: e }),
            }
        }
    }

    /// Whether job control had stopped `pid` before the dump.
    pub fn was_job_stopped(&self, pid: Pid) -> bool {
        self.job_stopped.contains(&pid)
    }

    /// Every stopped thread.
    pub fn tasks(&self) -> &[Pid] {
        &self.seized
    }

    /// Signals caught in delivery while freezing (re-delivered on detach).
    pub fn pending_signal(&self, tid: Pid) -> Option<i32> {
        self.pending_signal.get(&tid).copied()
    }

    /// Detaches everything, letting the tree run on.
    pub fn release(mut self) {
        self.detach_all();
    }

    /// Kills the whole tree (after a successful dump without
    /// `--leave-running`). SIGKILL is queued while the tasks are still
    /// stopped, so none runs another instruction.
    pub fn kill_all(mut self) {
        self.unpin();
        for p in &self.processes {
            let _ = proc_ctl::kill(p.pid, libc::SIGKILL);
        }
        // Collect the exit of every task we trace, so none is left running
        // (or stopped) once the dump command returns; the zombies go to
        // their parents as usual. In any order, as each becomes ready: a
        // group leader's exit is reported only after its other threads
        // were reaped, and the last thread of a pid namespace's init waits
        // (zap_pid_ns_processes) until every other task of the namespace,
        // its own zombie threads included, is reaped by us.
        let mut left = self.seized.clone();
        let end = Instant::now() + Duration::from_secs(10);
        let mut pause = Duration::from_micros(20);
        while !left.is_empty() && Instant::now() < end {
            let before = left.len();
            left.retain(|&tid| match ptrace::try_wait(tid) {
                Ok(Some(Stop::Exited(_) | Stop::Signaled(_))) | Err(_) => false,
                Ok(_) => true,
            });
            if left.len() == before {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(2));
            }
        }
        if !left.is_empty() {
            log::warn!("killed tasks {left:?} did not exit within 10 s");
        }
        self.seized.clear();
        self.released = true;
    }

    /// Pins us and every stopped task to the CPU we run on: each injected
    /// call hands the CPU back and forth, a plain context switch on one CPU
    /// but a cross-CPU wake-up otherwise. Masks go back before any task
    /// runs again.
    pub fn pin_to_one_cpu(&mut self) {
        let Ok(one) = proc_ctl::current_cpu_set() else { return };
        if proc_ctl::pin_self().is_err() {
            return;
        }
        for &tid in &self.seized {
            if let Ok(orig) = proc_ctl::get_affinity(tid) {
                if proc_ctl::set_affinity(tid, &one).is_ok() {
                    self.pinned.push((tid, orig));
                }
            }
        }
    }

    fn unpin(&mut self) {
        for (tid, orig) in self.pinned.drain(..) {
            let _ = proc_ctl::set_affinity(tid, &orig);
        }
        proc_ctl::unpin_self();
    }

    fn detach_all(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        self.unpin();
        for &tid in &self.seized {
            let sig = if self.job_stopped.contains(&tid) {
                libc::SIGSTOP
            } else {
                self.pending_signal.get(&tid).copied().unwrap_or(0)
            };
            let _ = ptrace::detach(tid, sig);
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.detach_all();
    }
}
