//! `/proc/PID/stat`: one line of numbers about a task.
//!
//! The dump takes from it the task's place in the tree (ppid, pgrp, session),
//! its state, the kernel-thread flag, scheduling values, and the `mm` layout
//! fields (code, data, brk, stack, args, env) that `PR_SET_MM_MAP` needs on
//! restore. `comm` sits in parentheses and may itself contain spaces and `)`,
//! so the fields are counted from the *last* `)`.

use super::{parse_err, read_text, ProcError};

/// `PF_KTHREAD` in the `flags` field: the task is a kernel thread.
pub const PF_KTHREAD: u32 = 0x0020_0000;

/// A task's scheduler state, as the one-letter code of `stat` and `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// `R`
    Running,
    /// `S`: interruptible sleep.
    Sleeping,
    /// `D`: uninterruptible sleep.
    DiskSleep,
    /// `T`: stopped by a signal.
    Stopped,
    /// `t`: stopped under ptrace.
    TracingStop,
    /// `Z`
    Zombie,
    /// `X`
    Dead,
    /// `P`
    Parked,
    /// `I`: idle kernel thread.
    Idle,
    /// Any other letter.
    Other(char),
}

impl TaskState {
    pub fn from_char(c: char) -> Self {
        match c {
            'R' => TaskState::Running,
            'S' => TaskState::Sleeping,
            'D' => TaskState::DiskSleep,
            'T' => TaskState::Stopped,
            't' => TaskState::TracingStop,
            'Z' => TaskState::Zombie,
            'X' | 'x' => TaskState::Dead,
            'P' => TaskState::Parked,
            'I' => TaskState::Idle,
            c => TaskState::Other(c),
        }
    }

    pub fn as_char(self) -> char {
        match self {
            TaskState::Running => 'R',
            TaskState::Sleeping => 'S',
            TaskState::DiskSleep => 'D',
            TaskState::Stopped => 'T',
            TaskState::TracingStop => 't',
            TaskState::Zombie => 'Z',
            TaskState::Dead => 'X',
            TaskState::Parked => 'P',
            TaskState::Idle => 'I',
            TaskState::Other(c) => c,
        }
    }
}

/// The fields of `/proc/PID/stat` the engine uses (man 5 proc numbering in
/// the comments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// (1)
    pub pid: i32,
    /// (2) without the parentheses; up to 15 bytes, may contain anything.
    pub comm: String,
    /// (3)
    pub state: TaskState,
    /// (4)
    pub ppid: i32,
    /// (5)
    pub pgrp: i32,
    /// (6)
    pub session: i32,
    /// (7)
    pub tty_nr: i32,
    /// (8) foreground process group of the terminal, -1 without one.
    pub tpgid: i32,
    /// (9) `PF_*` flags; see [`PF_KTHREAD`].
    pub flags: u32,
    /// (14), (15) in clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// (18)
    pub priority: i64,
    /// (19)
    pub nice: i64,
    /// (20)
    pub num_threads: u32,
    /// (22) in clock ticks after boot.
    pub start_time: u64,
    /// (23) in bytes.
    pub vsize: u64,
    /// (24) in pages.
    pub rss: u64,
    /// (26)..(28)
    pub startcode: u64,
    pub endcode: u64,
    pub startstack: u64,
    /// (38) signal sent to the parent on death.
    pub exit_signal: i32,
    /// (39) CPU last run on.
    pub processor: u32,
    /// (40), (41)
    pub rt_priority: u32,
    pub policy: u32,
    /// (45)..(51)
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    /// (52) as `waitpid` would report it.
    pub exit_code: i32,
}

impl Stat {
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }

    pub fn is_zombie(&self) -> bool {
        self.state == TaskState::Zombie
    }
}

/// Reads and parses `/proc/PID/stat` (also works on `task/TID/stat` ids).
pub fn read_stat(pid: i32) -> Result<Stat, ProcError> {
    let (path, text) = read_text(pid, "stat")?;
    parse_stat(&text).map_err(|e| e.at(&path))
}

/// Parses the text of a `stat` file.
pub fn parse_stat(text: &str) -> Result<Stat, ProcError> {
    let err = |r: String| parse_err("stat", 1, r);
    let text = text.trim_end_matches('\n');
    let (head, tail) = text.split_once(" (").ok_or_else(|| err("no '(' before comm".into()))?;
    let close = tail.rfind(')').ok_or_else(|| err("no ')' after comm".into()))?;
    let comm = &tail[..close];
    let rest: Vec<&str> = tail[close + 1..].split_ascii_whitespace().collect();
    // rest[0] is field (3).
    if rest.len() < 50 {
        return Err(err(format!("{} fields, expected 52", rest.len() + 2)));
    }
    let f = |n: usize| rest[n - 3];
    fn num<T: std::str::FromStr>(s: &str, n: usize) -> Result<T, ProcError> {
        s.parse().map_err(|_| parse_err("stat", 1, format!("bad field {n}: {s:?}")))
    }
    let mut state = f(3).chars();
    let state = match (state.next(), state.next()) {
        (Some(c), None) => TaskState::from_char(c),
        _ => return Err(err(format!("bad state {:?}", f(3)))),
    };
    Ok(Stat {
        pid: num(head, 1)?,
        comm: comm.to_owned(),
        state,
        ppid: num(f(4), 4)?,
        pgrp: num(f(5), 5)?,
        session: num(f(6), 6)?,
        tty_nr: num(f(7), 7)?,
        tpgid: num(f(8), 8)?,
        flags: num(f(9), 9)?,
        utime: num(f(14), 14)?,
        stime: num(f(15), 15)?,
        priority: num(f(18), 18)?,
        nice: num(f(19), 19)?,
        num_threads: num(f(20), 20)?,
        start_time: num(f(22), 22)?,
        vsize: num(f(23), 23)?,
        rss: num(f(24), 24)?,
        startcode: num(f(26), 26)?,
        endcode: num(f(27), 27)?,
        startstack: num(f(28), 28)?,
        exit_signal: num(f(38), 38)?,
        processor: num(f(39), 39)?,
        rt_priority: num(f(40), 40)?,
        policy: num(f(41), 41)?,
        start_data: num(f(45), 45)?,
        end_data: num(f(46), 46)?,
        start_brk: num(f(47), 47)?,
        arg_start: num(f(48), 48)?,
        arg_end: num(f(49), 49)?,
        env_start: num(f(50), 50)?,
        env_end: num(f(51), 51)?,
        exit_code: num(f(52), 52)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_sample() {
        let s = parse_stat(include_str!("fixtures/python_stat.txt")).unwrap();
        assert_eq!((s.pid, s.comm.as_str(), s.state), (4957, "python3", TaskState::Sleeping));
        assert_eq!((s.ppid, s.pgrp, s.session, s.tty_nr, s.tpgid), (4956, 4957, 4957, 0, -1));
        assert_eq!(s.flags, 4194304);
        assert!(!s.is_kernel_thread());
        assert_eq!(s.num_threads, 3);
        assert_eq!(s.start_time, 27369);
        assert_eq!((s.startcode, s.endcode), (94610167578624, 94610167578965));
        assert_eq!(s.startstack, 140725048574032);
        assert_eq!((s.start_data, s.end_data), (94610167590320, 94610167590936));
        assert_eq!(s.start_brk, 94610834681856);
        assert_eq!((s.arg_start, s.arg_end), (140725048576231, 140725048576305));
        assert_eq!((s.env_start, s.env_end), (140725048576305, 140725048577999));
        assert_eq!((s.exit_signal, s.nice, s.priority), (17, 0, 20));
        assert_eq!(s.exit_code, 0);
    }

    #[test]
    fn comm_with_spaces_and_parens() {
        let s = parse_stat(include_str!("fixtures/weird_comm_stat.txt")).unwrap();
        assert_eq!(s.comm, "a) b (c");
        assert_eq!((s.pid, s.state, s.ppid), (5195, TaskState::Sleeping, 5162));
    }

    #[test]
    fn zombie_and_kernel_thread() {
        let z = parse_stat(include_str!("fixtures/zombie_stat.txt")).unwrap();
        assert!(z.is_zombie());
        assert_eq!((z.exit_code, z.startcode, z.ppid), (3 << 8, 0, 4957));
        let k = parse_stat(include_str!("fixtures/kthread_stat.txt")).unwrap();
        assert!(k.is_kernel_thread());
        assert_eq!((k.pid, k.comm.as_str(), k.ppid), (2, "kthreadd", 0));
        let b = parse_stat(include_str!("fixtures/bash_stat.txt")).unwrap();
        assert_eq!(b.comm, "bash");
    }

    #[test]
    fn truncated_or_garbled() {
        assert!(parse_stat("12 (x) S 1 2 3").is_err());
        assert!(parse_stat("12 x S 1").is_err());
        let good = include_str!("fixtures/python_stat.txt");
        assert!(parse_stat(&good.replacen(" S ", " SS ", 1)).is_err());
        assert!(parse_stat(&good.replacen(" 4956 ", " x ", 1)).is_err());
    }

    #[test]
    fn read_own_stat() {
        let me = i32::try_from(std::process::id()).unwrap();
        let s = read_stat(me).unwrap();
        assert_eq!(s.pid, me);
        assert!(s.num_threads >= 1);
        assert_eq!(TaskState::from_char(s.state.as_char()), s.state);
    }
}
