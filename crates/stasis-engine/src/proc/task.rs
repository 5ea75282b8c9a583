//! Per-process odds and ends of `/proc/PID`: threads, children, personality,
//! auxiliary vector, exe/cwd/root links, comm, POSIX timers, timer slack.
//!
//! Children come from `/proc/PID/task/TID/children` of *every* thread, since
//! a child belongs to the thread that forked it. The kernel documents that
//! list as reliable only while the tree is stopped, which it is during a dump.
//! `timers` (CONFIG_CHECKPOINT_RESTORE) shows each POSIX timer's id, signal,
//! `sigev_value`, notification and clock, but not its time: that is read by
//! injecting `timer_gettime` into the task.

use super::{hex_u64, list_numeric_dir, parse_err, read_bytes, read_link, read_text, ProcError};

/// Thread ids of process `pid` (`/proc/PID/task`), ascending.
pub fn list_threads(pid: i32) -> Result<Vec<i32>, ProcError> {
    list_numeric_dir(pid, "task")
}

/// Children of process `pid`: the union of `task/TID/children` over all its
/// threads, ascending, without duplicates. A thread that exits while being
/// listed is skipped.
pub fn list_children(pid: i32) -> Result<Vec<i32>, ProcError> {
    let mut out = Vec::new();
    for tid in list_threads(pid)? {
        match read_text(pid, &format!("task/{tid}/children")) {
            Ok((path, text)) => out.extend(parse_pid_list(&text).map_err(|e| e.at(&path))?),
            // A thread that went away is not an error; a process that did is.
            Err(ProcError::Io { source, .. })
                if source.raw_os_error() == Some(libc::ENOENT) || source.raw_os_error() == Some(libc::ESRCH) =>
            {
                log::debug!("thread {tid} of {pid} exited while listing children");
            }
            Err(e) => return Err(e),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Parses a space-separated list of pids (the `children` file).
pub fn parse_pid_list(text: &str) -> Result<Vec<i32>, ProcError> {
    text.split_ascii_whitespace()
        .map(|p| p.parse().map_err(|_| parse_err("children", 1, format!("bad pid {p:?}"))))
        .collect()
}

/// `/proc/PID/personality`: the `personality(2)` value (hex in the file).
/// Needs ptrace access to the process.
pub fn read_personality(pid: i32) -> Result<u32, ProcError> {
    let (path, text) = read_text(pid, "personality")?;
    u32::from_str_radix(text.trim(), 16)
        .map_err(|_| parse_err("personality", 1, format!("bad value {:?}", text.trim())).at(&path))
}

/// Reads `/proc/PID/auxv`.
pub fn read_auxv(pid: i32) -> Result<Vec<(u64, u64)>, ProcError> {
    let (path, bytes) = read_bytes(pid, "auxv")?;
    parse_auxv(&bytes).map_err(|e| e.at(&path))
}

/// Parses the auxiliary vector: native-endian `(AT_*, value)` pairs of u64,
/// up to but without the terminating `AT_NULL` pair. For `PR_SET_MM_MAP`,
/// flatten with [`auxv_words`], which puts the terminator back.
pub fn parse_auxv(bytes: &[u8]) -> Result<Vec<(u64, u64)>, ProcError> {
    if !bytes.chunks_exact(16).remainder().is_empty() {
        return Err(parse_err("auxv", 0, format!("{} bytes, not a whole number of pairs", bytes.len())));
    }
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        u64::from_ne_bytes(w)
    };
    let mut out = Vec::new();
    for pair in bytes.chunks_exact(16) {
        let (k, v) = (word(&pair[..8]), word(&pair[8..]));
        if k == libc::AT_NULL {
            return Ok(out);
        }
        out.push((k, v));
    }
    Err(parse_err("auxv", 0, "no AT_NULL terminator"))
}

/// The auxiliary vector as a flat word array ending in `AT_NULL, 0`.
pub fn auxv_words(auxv: &[(u64, u64)]) -> Vec<u64> {
    let mut w: Vec<u64> = auxv.iter().flat_map(|&(k, v)| [k, v]).collect();
    w.extend([libc::AT_NULL, 0]);
    w
}

/// `readlink /proc/PID/exe`; may end in `" (deleted)"` (see [`super::split_deleted`]).
pub fn read_exe(pid: i32) -> Result<String, ProcError> {
    read_link(pid, "exe")
}

/// `readlink /proc/PID/cwd`.
pub fn read_cwd(pid: i32) -> Result<String, ProcError> {
    read_link(pid, "cwd")
}

/// `readlink /proc/PID/root`.
pub fn read_root(pid: i32) -> Result<String, ProcError> {
    read_link(pid, "root")
}

/// `/proc/PID/comm` without the newline (not escaped, unlike `status`).
pub fn read_comm(pid: i32) -> Result<String, ProcError> {
    let (_, text) = read_text(pid, "comm")?;
    Ok(text.strip_suffix('\n').unwrap_or(&text).to_owned())
}

/// `/proc/PID/timerslack_ns`. Reading another process's needs
/// `CAP_SYS_NICE` (root has it).
pub fn read_timerslack_ns(pid: i32) -> Result<u64, ProcError> {
    let (path, text) = read_text(pid, "timerslack_ns")?;
    text.trim().parse().map_err(|_| parse_err("timerslack_ns", 1, format!("bad value {:?}", text.trim())).at(&path))
}

/// How a POSIX timer notifies (the `notify:` line: `signal/pid.N`,
/// `signal/tid.N`, `none/pid.N`, `thread/pid.N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerNotify {
    /// `SIGEV_SIGNAL` to the process.
    Signal,
    /// `SIGEV_NONE`.
    None,
    /// `SIGEV_THREAD` (the kernel sees glibc's helper thread as a signal).
    Thread,
}

/// One POSIX timer of `/proc/PID/timers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PosixTimer {
    /// The `timer_t` id in the process.
    pub id: i32,
    pub signal: i32,
    /// `sigev_value` (an int or a pointer).
    pub sigev_value: u64,
    pub notify: TimerNotify,
    /// `SIGEV_THREAD_ID`: the signal goes to thread `target`.
    pub thread_id: bool,
    /// The pid (or tid with `thread_id`) the signal is sent to.
    pub target: i32,
    pub clock_id: i32,
}

impl PosixTimer {
    /// `sigev_notify` for `timer_create`.
    pub fn sigev_notify(&self) -> i32 {
        let base = match self.notify {
            TimerNotify::Signal => libc::SIGEV_SIGNAL,
            TimerNotify::None => libc::SIGEV_NONE,
            TimerNotify::Thread => libc::SIGEV_THREAD,
        };
        if self.thread_id {
            base | libc::SIGEV_THREAD_ID
        } else {
            base
        }
    }
}

/// Reads and parses `/proc/PID/timers`.
pub fn read_timers(pid: i32) -> Result<Vec<PosixTimer>, ProcError> {
    let (path, text) = read_text(pid, "timers")?;
    parse_timers(&text).map_err(|e| e.at(&path))
}

/// Parses the text of a `timers` file: blocks of `ID:`, `signal:`,
/// `notify:`, `ClockID:` lines.
pub fn parse_timers(text: &str) -> Result<Vec<PosixTimer>, ProcError> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.is_empty());
    while let Some((i, first)) = lines.next() {
        let field = |want: &str, (n, l): (usize, &str)| -> Result<String, ProcError> {
            l.strip_prefix(want)
                .and_then(|r| r.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
                .ok_or_else(|| parse_err("timers", n + 1, format!("expected {want}:, got {l:?}")))
        };
        let id = field("ID", (i, first))?;
        let mut next = |want: &str| -> Result<(usize, String), ProcError> {
            let (n, l) =
                lines.next().ok_or_else(|| parse_err("timers", 0, format!("timer {id} has no {want} line")))?;
            Ok((n + 1, field(want, (n, l))?))
        };
        let (ns, signal) = next("signal")?;
        let (nn, notify) = next("notify")?;
        let (nc, clock) = next("ClockID")?;
        let bad = |n: usize, v: &str| parse_err("timers", n, format!("bad value {v:?}"));

        let (signo, value) = signal.split_once('/').ok_or_else(|| bad(ns, &signal))?;
        let (kind, who) = notify.split_once('/').ok_or_else(|| bad(nn, &notify))?;
        let notify_kind = match kind {
            "signal" => TimerNotify::Signal,
            "none" => TimerNotify::None,
            "thread" => TimerNotify::Thread,
            _ => return Err(bad(nn, &notify)),
        };
        let (tp, target) = who.split_once('.').ok_or_else(|| bad(nn, &notify))?;
        let thread_id = match tp {
            "tid" => true,
            "pid" => false,
            _ => return Err(bad(nn, &notify)),
        };
        out.push(PosixTimer {
            id: id.parse().map_err(|_| bad(i + 1, &id))?,
            signal: signo.parse().map_err(|_| bad(ns, &signal))?,
            sigev_value: hex_u64(value).ok_or_else(|| bad(ns, &signal))?,
            notify: notify_kind,
            thread_id,
            target: target.parse().map_err(|_| bad(nn, &notify))?,
            clock_id: clock.parse().map_err(|_| bad(nc, &clock))?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> i32 {
        i32::try_from(std::process::id()).unwrap()
    }

    #[test]
    fn timers_sample() {
        let t = parse_timers(include_str!("fixtures/python_timers.txt")).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            t[0],
            PosixTimer {
                id: 2,
                signal: 34,
                sigev_value: 0x63,
                notify: TimerNotify::Signal,
                thread_id: true,
                target: 4957,
                clock_id: 1,
            }
        );
        assert_eq!(t[0].sigev_notify(), libc::SIGEV_THREAD_ID);
        assert_eq!((t[1].id, t[1].notify, t[1].clock_id), (1, TimerNotify::None, 0));
        assert_eq!(t[1].sigev_notify(), libc::SIGEV_NONE);
        assert_eq!((t[2].signal, t[2].sigev_value, t[2].thread_id), (12, 42, false));
        assert_eq!(t[2].sigev_notify(), libc::SIGEV_SIGNAL);
        assert!(parse_timers("").unwrap().is_empty());
    }

    #[test]
    fn timers_garbled() {
        let s = include_str!("fixtures/python_timers.txt");
        assert!(parse_timers(&s.replacen("notify: signal/tid", "notify: bogus/tid", 1)).is_err());
        assert!(parse_timers(&s.replacen("ClockID: 1\n", "", 1)).is_err());
        let e = parse_timers("ID: 0\nsignal: 12/00000000000000zz\nnotify: none/pid.1\nClockID: 0\n").unwrap_err();
        assert!(matches!(e, ProcError::Parse { line: 2, .. }), "{e:?}");
        assert!(parse_timers("ID: 0\n").is_err());
    }

    #[test]
    fn auxv_roundtrip() {
        let mut b = Vec::new();
        for w in [libc::AT_PAGESZ, 4096, libc::AT_SYSINFO_EHDR, 0x7f7c94c83000, 0, 0, 9, 9] {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        let a = parse_auxv(&b).unwrap();
        assert_eq!(a, [(libc::AT_PAGESZ, 4096), (libc::AT_SYSINFO_EHDR, 0x7f7c94c83000)]);
        assert_eq!(auxv_words(&a), [libc::AT_PAGESZ, 4096, libc::AT_SYSINFO_EHDR, 0x7f7c94c83000, 0, 0]);
        assert!(parse_auxv(&b[..20]).is_err());
        assert!(parse_auxv(&b[..32]).is_err());
    }

    #[test]
    fn read_own() {
        let me = me();
        let auxv = read_auxv(me).unwrap();
        assert!(auxv.contains(&(libc::AT_PAGESZ, 4096)));
        assert_eq!(read_personality(me).unwrap() & 0xff, 0);
        assert!(read_exe(me).unwrap().starts_with('/'));
        assert_eq!(read_cwd(me).unwrap(), std::env::current_dir().unwrap().to_str().unwrap());
        assert_eq!(read_root(me).unwrap(), "/");
        assert!(!read_comm(me).unwrap().ends_with('\n'));
        assert!(read_timerslack_ns(me).unwrap() > 0);
        assert!(read_timers(me).unwrap().is_empty());
        let threads = list_threads(me).unwrap();
        assert!(threads.contains(&me));
    }

    #[test]
    fn children_of_every_thread() {
        let me = me();
        // Fork from a second thread: the child is listed under that thread only.
        let mut child =
            std::thread::spawn(|| std::process::Command::new("sleep").arg("30").spawn().unwrap()).join().unwrap();
        let cpid = i32::try_from(child.id()).unwrap();
        let kids = list_children(me).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(kids.contains(&cpid), "{kids:?} lacks {cpid}");
        assert_eq!(parse_pid_list("5001 5002 \n").unwrap(), [5001, 5002]);
        assert!(parse_pid_list("5001 x").is_err());
    }
}
