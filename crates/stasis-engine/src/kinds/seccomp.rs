//! Seccomp filters: `seccomp.img` and each thread's `seccomp_mode` /
//! `seccomp_filter` in its core, in CRIU's layout and with CRIU's meaning.
//!
//! Filters belong to threads: each thread has a chain of them, inherited
//! at clone. The kernel shows a chain to a tracer of the stopped thread
//! with `PTRACE_SECCOMP_GET_FILTER` (index 0 is the *oldest* filter, as
//! `get_nth_filter` counts; `ENOENT` past the newest) and the flags each
//! filter was installed with with `PTRACE_SECCOMP_GET_METADATA`. Both need
//! CAP_SYS_ADMIN and a dumper outside seccomp.
//!
//! Image, as CRIU writes and reads it since 3.10 (`criu/seccomp.c`): the
//! fields are 0-based indices into `seccomp_filters`; a thread's
//! `seccomp_filter` is its oldest filter, the first to install, and each
//! filter's `prev` (despite the name) the next one to install, absent on
//! the thread's newest. We store each distinct chain once, compared by
//! content (same instructions and flags, same filters after it): the
//! threads of a container process, which all share the runtime's profile,
//! cost one copy of it.
//!
//! Restore: a thread's chain is installed oldest first by injected
//! `seccomp(SECCOMP_SET_MODE_FILTER, flags, &sock_fprog)` calls, as the
//! last step of the thread before its credentials: installing needs
//! CAP_SYS_ADMIN or no_new_privs, and the restored credentials may drop
//! the former. When every thread of a process has the same chain, the main
//! thread installs it for all with `SECCOMP_FILTER_FLAG_TSYNC` (as CRIU
//! does), so they share the filters again and a later `TSYNC` install by
//! the program still works. Every task is traced with `PTRACE_O_SUSPEND_SECCOMP` (dump
//! and restore), so the filters do not judge the calls we still inject
//! (credentials, the final `munmap`); the suspension ends when we detach.
//! Strict mode (1) is refused by name.

use crate::error::{restore_io, DumpError, RestoreError};
use crate::proc;
use crate::restore::stub::{Task, DATA_OFF, SCRATCH_LEN};
use stasis_image::pb;
use stasis_sys::ptrace::{self, SOCK_FILTER_LEN};
use stasis_sys::Pid;
use std::collections::HashMap;
use std::io;

/// `SECCOMP_MODE_*` (as `/proc/PID/status` shows them).
const MODE_DISABLED: u32 = 0;
const MODE_STRICT: u32 = 1;
const MODE_FILTER: u32 = 2;
/// `seccomp(2)` operation.
const SECCOMP_SET_MODE_FILTER: u64 = 1;
/// `SECCOMP_FILTER_FLAG_*` we install with: `TSYNC`, `LOG`, `SPEC_ALLOW`.
/// Not `NEW_LISTENER` and later ones: they make the call return an fd or
/// change how it fails, and no dump of ours records them.
const FLAG_TSYNC: u32 = 1;
const FLAGS_RESTORED: u32 = FLAG_TSYNC | 2 | 4;
/// `BPF_MAXINSNS`: the kernel refuses longer filters.
const MAX_INSNS: usize = 4096;
/// `struct sock_fprog` (u16 len, padding, pointer), written before the
/// instructions in the scratch data area.
const FPROG_LEN: u64 = 16;

/// A filter and the rest of its chain: instructions, flags, index of the
/// filter installed after it.
type FilterKey = (Vec<u8>, u32, Option<u32>);

/// Dump side: the tree's filters, each distinct chain once, and the first
/// filter of every thread that has any.
#[derive(Default)]
pub struct FilterTable {
    index: HashMap<FilterKey, u32>,
    first: HashMap<Pid, u32>,
}

impl FilterTable {
    /// Reads the filter chain of thread `tid` of process `pid` (stopped
    /// under ptrace). A thread in strict mode is refused.
    pub fn dump_thread(&mut self, pid: Pid, tid: Pid) -> Result<(), DumpError> {
        match thread_mode(pid, tid)? {
            MODE_DISABLED => return Ok(()),
            MODE_FILTER => {}
            MODE_STRICT => {
                return Err(DumpError::Unsupported { pid, what: format!("seccomp strict mode (thread {tid})") })
            }
            m => return Err(DumpError::Unsupported { pid, what: format!("seccomp mode {m} (thread {tid})") }),
        }
        // Oldest first, as the kernel numbers them.
        let mut chain = Vec::new();
        for i in 0.. {
            let Some(insns) = ptrace::seccomp_filter(tid, i).map_err(read_error(pid, tid, i, "instructions"))? else {
                break;
            };
            let flags = ptrace::seccomp_filter_flags(tid, i).map_err(read_error(pid, tid, i, "flags"))?;
            let flags = u32::try_from(flags).map_err(|_| DumpError::Task {
                pid,
                what: format!("thread {tid}: seccomp filter {i} has flags {flags:#x}"),
                source: io::Error::from(io::ErrorKind::InvalidData),
            })?;
            chain.push((insns, flags));
        }
        if !self.add_chain(tid, chain) {
            return Err(DumpError::Task {
                pid,
                what: format!("thread {tid} is in seccomp filter mode"),
                source: io::Error::other("the kernel lists no filter"),
            });
        }
        Ok(())
    }

    /// Adds a thread's chain (oldest first), reusing every filter already
    /// stored with the same filters after it. `false` if the chain is empty.
    fn add_chain(&mut self, tid: Pid, chain: Vec<(Vec<u8>, u32)>) -> bool {
        let mut after = None;
        for (insns, flags) in chain.into_iter().rev() {
            let next = self.index.len() as u32;
            after = Some(*self.index.entry((insns, flags, after)).or_insert(next));
        }
        if let Some(first) = after {
            self.first.insert(tid, first);
        }
        after.is_some()
    }

    /// Records a thread's mode and first filter in its core (nothing for a
    /// thread without filters, as CRIU does).
    pub fn fill_core(&self, tid: Pid, core: &mut pb::CoreEntry) {
        if let (Some(&first), Some(tc)) = (self.first.get(&tid), core.thread_core.as_mut()) {
            tc.seccomp_mode = Some(pb::SeccompMode::Filter as i32);
            tc.seccomp_filter = Some(first);
        }
    }

    /// The `seccomp.img` entry; `None` when no thread had a filter.
    pub fn into_entry(self) -> Option<pb::SeccompEntry> {
        if self.index.is_empty() {
            return None;
        }
        let mut filters: Vec<(u32, pb::SeccompFilter)> = self
            .index
            .into_iter()
            .map(|((filter, flags, after), i)| (i, pb::SeccompFilter { filter, prev: after, flags: Some(flags) }))
            .collect();
        filters.sort_unstable_by_key(|(i, _)| *i);
        Some(pb::SeccompEntry { seccomp_filters: filters.into_iter().map(|(_, f)| f).collect() })
    }
}

/// A thread's `SECCOMP_MODE_*` from its `/proc` status.
fn thread_mode(pid: Pid, tid: Pid) -> Result<u32, DumpError> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .map_err(crate::error::dump_io(tid, "read thread status"))?;
    let st = proc::status::parse_status(&text).map_err(|source| DumpError::Proc { pid: tid, source })?;
    Ok(st.seccomp)
}

fn read_error(pid: Pid, tid: Pid, index: u64, what: &'static str) -> impl FnOnce(io::Error) -> DumpError {
    move |source| {
        let hint = if source.raw_os_error() == Some(libc::EACCES) {
            " (the dumper needs CAP_SYS_ADMIN and must not be under seccomp itself)"
        } else {
            ""
        };
        DumpError::Task { pid, what: format!("thread {tid}: read the {what} of seccomp filter {index}{hint}"), source }
    }
}

/// Whether a filter of `len` bytes fits in a stub's scratch data area
/// together with its `struct sock_fprog`.
fn fits(len: usize) -> bool {
    FPROG_LEN + len as u64 <= SCRATCH_LEN - DATA_OFF
}

/// The filters of thread `tid` in the order to install them, oldest first
/// (empty without seccomp), each checked: a whole number of instructions,
/// at most `BPF_MAXINSNS`, no loop in the chain. The error says what is
/// wrong, for `RestoreError::Invalid`.
pub fn thread_chain<'a>(
    entry: Option<&'a pb::SeccompEntry>,
    tid: Pid,
    core: &pb::ThreadCoreEntry,
) -> Result<Vec<&'a pb::SeccompFilter>, String> {
    match core.seccomp_mode.map(|m| m as u32).unwrap_or(MODE_DISABLED) {
        MODE_DISABLED => return Ok(Vec::new()),
        MODE_FILTER => {}
        MODE_STRICT => return Err(format!("thread {tid} is in seccomp strict mode, which is not restored")),
        m => return Err(format!("thread {tid} has the unknown seccomp mode {m}")),
    }
    let entry = entry.ok_or_else(|| format!("thread {tid} has seccomp filters, but there is no seccomp.img"))?;
    let filters = &entry.seccomp_filters;
    let mut next =
        core.seccomp_filter.ok_or_else(|| format!("thread {tid} is in seccomp filter mode without a filter"))?;
    let mut chain = Vec::new();
    loop {
        let f = filters.get(next as usize).ok_or_else(|| {
            format!("thread {tid} refers to seccomp filter {next}; seccomp.img has {}", filters.len())
        })?;
        if chain.len() == filters.len() {
            return Err(format!("the seccomp filters of thread {tid} form a loop in seccomp.img"));
        }
        if let Some(bad) = f.flags.map(|fl| fl & !FLAGS_RESTORED).filter(|b| *b != 0) {
            return Err(format!("seccomp filter {next} (of thread {tid}) has flags {bad:#x}, which are not restored"));
        }
        let len = f.filter.len();
        if len == 0 || len % SOCK_FILTER_LEN != 0 || len / SOCK_FILTER_LEN > MAX_INSNS || !fits(len) {
            return Err(format!(
                "seccomp filter {next} (of thread {tid}) is {len} bytes: not 1 to {MAX_INSNS} instructions of {SOCK_FILTER_LEN} bytes"
            ));
        }
        chain.push(f);
        match f.prev {
            Some(p) => next = p,
            None => break,
        }
    }
    Ok(chain)
}

/// How one thread gets its filters at restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Install {
    /// Its own chain, in itself.
    Own,
    /// Nothing here: the main thread installs the chain for every thread.
    ByMain,
    /// The chain every thread of the process has, for all of them at once
    /// (`SECCOMP_FILTER_FLAG_TSYNC`).
    ForAll,
}

/// How the main thread and the other threads of a process (`cores`, main
/// thread first) get their filters: [`Install::ForAll`] and
/// [`Install::ByMain`] when there are several threads and all have the
/// same chain (the same first filter: equal chains are stored once), as
/// when it was installed before the threads were created.
pub fn process_plan(cores: &[(Pid, pb::CoreEntry)]) -> (Install, Install) {
    let chain = |c: &pb::CoreEntry| c.thread_core.as_ref().map(|t| (t.seccomp_mode, t.seccomp_filter));
    let main = cores.first().and_then(|(_, c)| chain(c));
    let filtered = main.is_some_and(|(mode, _)| mode == Some(MODE_FILTER as i32));
    if cores.len() > 1 && filtered && cores.iter().all(|(_, c)| chain(c) == main) {
        (Install::ForAll, Install::ByMain)
    } else {
        (Install::Own, Install::Own)
    }
}

/// Installs a thread's filters, oldest first. Call it after everything
/// else of the thread but its credentials, and for a process planned
/// [`Install::ForAll`] on the main thread after the other threads.
pub fn restore_thread(
    task: &mut Task,
    core: &pb::ThreadCoreEntry,
    entry: Option<&pb::SeccompEntry>,
    how: Install,
) -> Result<(), RestoreError> {
    let (pid, tid) = (task.pid, task.tid);
    if how == Install::ByMain {
        return Ok(());
    }
    let chain = thread_chain(entry, tid, core).map_err(|what| RestoreError::Task {
        pid,
        what,
        source: io::Error::from(io::ErrorKind::InvalidData),
    })?;
    let n = chain.len();
    for (i, f) in chain.into_iter().enumerate() {
        let what = || format!("thread {tid}: install seccomp filter {} of {n}", i + 1);
        if !fits(f.filter.len()) {
            let room = SCRATCH_LEN - DATA_OFF - FPROG_LEN;
            let e = io::Error::other(format!(
                "{} bytes do not fit in the {room} bytes of the scratch area",
                f.filter.len()
            ));
            return Err(RestoreError::Task { pid, what: what(), source: e });
        }
        let insns = task.put(FPROG_LEN, &f.filter).map_err(restore_io(pid, what()))?;
        let mut fprog = [0u8; FPROG_LEN as usize];
        fprog[..2].copy_from_slice(&((f.filter.len() / SOCK_FILTER_LEN) as u16).to_ne_bytes());
        fprog[8..].copy_from_slice(&insns.to_ne_bytes());
        let fprog = task.put(0, &fprog).map_err(restore_io(pid, what()))?;
        let mut flags = f.flags.unwrap_or(0);
        if how == Install::ForAll {
            flags |= FLAG_TSYNC;
        }
        let r = task
            .call(libc::SYS_seccomp, [SECCOMP_SET_MODE_FILTER, u64::from(flags), fprog, 0, 0, 0])
            .map_err(restore_io(pid, what()))?;
        if r != 0 {
            // TSYNC names the thread it could not synchronize.
            let e = io::Error::other(format!("thread {r} has other filters and cannot share them"));
            return Err(RestoreError::Task { pid, what: what(), source: e });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(insns: usize, prev: Option<u32>) -> pb::SeccompFilter {
        pb::SeccompFilter { filter: vec![0; insns * SOCK_FILTER_LEN], prev, flags: Some(0) }
    }

    fn core(mode: Option<pb::SeccompMode>, newest: Option<u32>) -> pb::ThreadCoreEntry {
        pb::ThreadCoreEntry { seccomp_mode: mode.map(|m| m as i32), seccomp_filter: newest, ..Default::default() }
    }

    #[test]
    fn dedup_keeps_chains_apart_and_shares_equal_ones() {
        let mut t = FilterTable::default();
        // Threads 1 and 2 installed A then B; thread 3 A, B, C; thread 4 C
        // then B (same instructions as B, but the last of its chain).
        let (a, b, c) = (vec![1u8; 8], vec![2u8; 8], vec![3u8; 16]);
        let chains = [(1, vec![&a, &b]), (2, vec![&a, &b]), (3, vec![&a, &b, &c]), (4, vec![&c, &b])];
        for (tid, chain) in &chains {
            assert!(t.add_chain(*tid, chain.iter().map(|i| (i.to_vec(), 0)).collect()));
        }
        assert!(!t.add_chain(5, Vec::new()));
        assert_eq!(t.first[&1], t.first[&2]);
        let cores: Vec<_> = chains
            .iter()
            .map(|(tid, _)| {
                let mut core = pb::CoreEntry { thread_core: Some(Default::default()), ..Default::default() };
                t.fill_core(*tid, &mut core);
                core.thread_core.unwrap()
            })
            .collect();
        assert_eq!(cores[0].seccomp_mode, Some(pb::SeccompMode::Filter as i32));
        let e = t.into_entry().unwrap();
        // A <- B shared by 1 and 2, A <- B <- C for 3, C <- B for 4 (B
        // shared with 1 and 2: the same, and last, filter).
        assert_eq!(e.seccomp_filters.len(), 6);
        for ((_, want), tc) in chains.iter().zip(&cores) {
            let got = thread_chain(Some(&e), 1, tc).unwrap();
            assert_eq!(got.iter().map(|f| &f.filter).collect::<Vec<_>>(), *want);
        }
    }

    /// What CRIU 4.2 wrote for tests/progs/seccomp.c (main thread: A then
    /// B; one thread A, B, C; one thread A, B): per thread, newest first,
    /// each older filter's `prev` naming the newer one before it.
    #[test]
    fn reads_criu_layout() {
        let f = |tag: u8, prev: Option<u32>| pb::SeccompFilter { filter: vec![tag; 8], prev, flags: Some(0) };
        let (a, b, c) = (b'a', b'b', b'c');
        let e = pb::SeccompEntry {
            seccomp_filters: vec![
                f(b, None),
                f(a, Some(0)),
                f(c, None),
                f(b, Some(2)),
                f(a, Some(3)),
                f(b, None),
                f(a, Some(5)),
            ],
        };
        let filt = Some(pb::SeccompMode::Filter);
        for (first, want) in [(1, vec![a, b]), (4, vec![a, b, c]), (6, vec![a, b])] {
            let chain = thread_chain(Some(&e), 1, &core(filt, Some(first))).unwrap();
            assert_eq!(chain.iter().map(|f| f.filter[0]).collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn one_chain_for_all_threads_is_installed_by_the_main_thread() {
        let filt = Some(pb::SeccompMode::Filter);
        let cores = |chains: &[(Option<pb::SeccompMode>, Option<u32>)]| -> Vec<(Pid, pb::CoreEntry)> {
            chains
                .iter()
                .enumerate()
                .map(|(i, (m, f))| (i as Pid, pb::CoreEntry { thread_core: Some(core(*m, *f)), ..Default::default() }))
                .collect()
        };
        let shared = (Install::ForAll, Install::ByMain);
        let own = (Install::Own, Install::Own);
        assert_eq!(process_plan(&cores(&[(filt, Some(1)), (filt, Some(1)), (filt, Some(1))])), shared);
        assert_eq!(process_plan(&cores(&[(filt, Some(1))])), own);
        assert_eq!(process_plan(&cores(&[(filt, Some(1)), (filt, Some(4))])), own);
        assert_eq!(process_plan(&cores(&[(filt, Some(1)), (None, None)])), own);
        assert_eq!(process_plan(&cores(&[(None, None), (None, None)])), own);
    }

    #[test]
    fn chain_is_checked() {
        let e = pb::SeccompEntry { seccomp_filters: vec![filter(1, None), filter(2, Some(0)), filter(1, Some(3))] };
        let filt = Some(pb::SeccompMode::Filter);
        assert!(thread_chain(None, 1, &core(None, None)).unwrap().is_empty());
        assert_eq!(thread_chain(Some(&e), 1, &core(filt, Some(1))).unwrap().len(), 2);
        assert!(thread_chain(None, 1, &core(filt, Some(0))).unwrap_err().contains("no seccomp.img"));
        assert!(thread_chain(Some(&e), 1, &core(filt, Some(7))).unwrap_err().contains("seccomp.img has 3"));
        assert!(thread_chain(Some(&e), 1, &core(filt, Some(2))).unwrap_err().contains("seccomp.img has 3"));
        assert!(thread_chain(Some(&e), 1, &core(Some(pb::SeccompMode::Strict), None)).unwrap_err().contains("strict"));
        let looped = pb::SeccompEntry { seccomp_filters: vec![filter(1, Some(1)), filter(1, Some(0))] };
        assert!(thread_chain(Some(&looped), 1, &core(filt, Some(0))).unwrap_err().contains("loop"));
        let odd = pb::SeccompEntry {
            seccomp_filters: vec![pb::SeccompFilter { filter: vec![0; 12], prev: None, flags: None }],
        };
        assert!(thread_chain(Some(&odd), 1, &core(filt, Some(0))).unwrap_err().contains("12 bytes"));
        let listener = pb::SeccompEntry {
            seccomp_filters: vec![pb::SeccompFilter { filter: vec![0; 8], prev: None, flags: Some(8) }],
        };
        assert!(thread_chain(Some(&listener), 1, &core(filt, Some(0))).unwrap_err().contains("flags 0x8"));
        let big = pb::SeccompEntry { seccomp_filters: vec![filter(MAX_INSNS + 1, None)] };
        assert!(thread_chain(Some(&big), 1, &core(filt, Some(0))).is_err());
        assert!(fits(MAX_INSNS * SOCK_FILTER_LEN));
    }
}
