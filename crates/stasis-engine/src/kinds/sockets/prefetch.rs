//! Inet sockets read ahead on a second thread.
//!
//! A tree with many connections spends most of its per-connection dump time
//! in syscalls on each socket: its copy (`pidfd_getfd`), addresses, ~20
//! options, repair mode and queues ([`inet::collect`]). None of that needs
//! the tasks stopped under ptrace, only frozen, so a helper thread reads
//! every inet socket of the tree as soon as the fds are listed, while the
//! dumping thread does threads and memory; when the dumping thread reaches
//! a socket fd, it takes what the helper read ([`Prefetch::take`]) or waits
//! for it. Sockets the helper does not handle (unix, a copy that failed)
//! are dumped by the dumping thread as before.
//!
//! The helper runs in the tree's network namespace (sock_diag sees only
//! its own namespace) and is joined before the dump ends either way: the
//! connections it put into repair mode are in `tcp::hold`'s list by
//! then, which the dump's `RepairGuard` empties.

use super::inet::{self, Collected};
use super::SockKind;
use crate::error::DumpError;
use crate::kinds::files::FdSeen;
use crate::proc::FdTarget;
use stasis_sys::Pid;
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Below this many socket fds in the tree, a thread costs more than it saves.
const MIN_SOCKETS: usize = 16;

/// What the helper made of one socket fd: `None` if it leaves it to the
/// dumping thread.
type Item = Option<Result<Option<Collected>, DumpError>>;

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    items: HashMap<(Pid, i32), Item>,
    finished: bool,
}

/// The helper thread and what it has read so far.
pub struct Prefetch {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

impl Prefetch {
    /// Starts reading the inet sockets among `fds` (every process's, in the
    /// order they will be dumped), if there are enough sockets to be worth
    /// it. Call once the dump's `RepairGuard` exists.
    pub fn start(root: Pid, fds: &[(Pid, Vec<FdSeen>)], tcp_established: bool) -> Option<Prefetch> {
        let sockets = |f: &&FdSeen| matches!(f.target, FdTarget::Socket(_));
        let count: usize = fds.iter().map(|(_, f)| f.iter().filter(sockets).count()).sum();
        // The dumping thread is pinned to one CPU (and so would be a thread
        // it starts): the helper takes the others, or there is no point.
        let away = stasis_sys::proc_ctl::away_from_pinned();
        if count < MIN_SOCKETS || away.is_none() {
            return None;
        }
        let todo: Vec<(Pid, Vec<FdSeen>)> =
            fds.iter().map(|(pid, f)| (*pid, f.iter().filter(sockets).cloned().collect())).collect();
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        let worker = std::thread::Builder::new()
            .name("stasis-sockets".into())
            .spawn(move || {
                if let Some(cpus) = away {
                    let _ = stasis_sys::proc_ctl::set_affinity(0, &cpus);
                }
                read_all(root, &todo, tcp_established, &theirs);
                theirs.state.lock().unwrap_or_else(|e| e.into_inner()).finished = true;
                theirs.changed.notify_all();
            })
            .ok()?;
        Some(Prefetch { shared, worker: Some(worker) })
    }

    /// What the helper read of fd `fd` of `pid`, waiting for it if need be;
    /// `None` if the dumping thread must read it itself.
    pub fn take(&self, pid: Pid, fd: i32) -> Item {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(item) = st.items.remove(&(pid, fd)) {
                return item;
            }
            if st.finished {
                return None;
            }
            st = self.shared.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// The helper's work: each socket fd, in order, published as it is read.
fn read_all(root: Pid, todo: &[(Pid, Vec<FdSeen>)], tcp_established: bool, shared: &Shared) {
    let Ok(_netns) = stasis_sys::ns::ThreadNetns::enter(root) else { return };
    for (pid, fds) in todo {
        let Ok(pidfd) = stasis_sys::fd::pidfd_open(*pid) else { continue };
        for f in fds {
            let item = read_one(*pid, pidfd.as_fd(), f, tcp_established);
            shared.state.lock().unwrap_or_else(|e| e.into_inner()).items.insert((*pid, f.fd), item);
            shared.changed.notify_all();
        }
    }
}

fn read_one(pid: Pid, pidfd: std::os::fd::BorrowedFd<'_>, f: &FdSeen, tcp_established: bool) -> Item {
    let FdTarget::Socket(ino) = f.target else { return None };
    let sk = stasis_sys::fd::pidfd_getfd(pidfd, f.fd).ok()?;
    let kind = SockKind::of(sk.as_fd()).filter(SockKind::is_inet)?;
    Some(inet::collect(pid, f, &sk, ino as u32, kind, tcp_established))
}
