//! `/proc/PID/status`: a task's identity, credentials and signal state.
//!
//! `Key:\tvalue` lines. The dump takes from it the ids in every PID namespace
//! (`NSpid` and friends, which `stat` does not show), the credentials (uids,
//! gids, groups, capability sets, no_new_privs, seccomp mode) and the signal
//! masks. `Name` is escaped by the kernel (`\n` → `\\n`, `\` → `\\\\`).

use super::stat::TaskState;
use super::{hex_u64, parse_err, read_text, ProcError};

/// The four ids of a `Uid:` or `Gid:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ids {
    pub real: u32,
    pub effective: u32,
    pub saved: u32,
    pub fs: u32,
}

/// The fields of `/proc/PID/status` the engine uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The task's comm, unescaped.
    pub name: String,
    /// Absent on kernels before 4.7.
    pub umask: Option<u32>,
    pub state: TaskState,
    pub tgid: i32,
    pub pid: i32,
    pub ppid: i32,
    pub tracer_pid: i32,
    pub uid: Ids,
    pub gid: Ids,
    pub groups: Vec<u32>,
    /// Ids from our PID namespace down to the task's own (outermost first).
    /// Empty on kernels without the lines.
    pub ns_tgid: Vec<i32>,
    pub ns_pid: Vec<i32>,
    pub ns_pgid: Vec<i32>,
    pub ns_sid: Vec<i32>,
    /// `Kthread:` (6.x); `None` when absent, then use `stat`'s `PF_KTHREAD`.
    pub kthread: Option<bool>,
    pub threads: u32,
    /// `SigQ:` queued signals / limit.
    pub sig_q: (u64, u64),
    pub sig_pnd: u64,
    pub shd_pnd: u64,
    pub sig_blk: u64,
    pub sig_ign: u64,
    pub sig_cgt: u64,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
    /// `SECCOMP_MODE_*`: 0 disabled, 1 strict, 2 filter.
    pub seccomp: u32,
    /// Number of attached filters, when the kernel says (5.9+).
    pub seccomp_filters: Option<u32>,
}

/// Reads and parses `/proc/PID/status`.
pub fn read_status(pid: i32) -> Result<Status, ProcError> {
    let (path, text) = read_text(pid, "status")?;
    parse_status(&text).map_err(|e| e.at(&path))
}

/// Parses the text of a `status` file.
pub fn parse_status(text: &str) -> Result<Status, ProcError> {
    let mut name = None;
    let mut umask = None;
    let mut state = None;
    let (mut tgid, mut pid, mut ppid, mut tracer_pid) = (None, None, None, None);
    let (mut uid, mut gid, mut groups) = (None, None, Vec::new());
    let (mut ns_tgid, mut ns_pid, mut ns_pgid, mut ns_sid) = (vec![], vec![], vec![], vec![]);
    let mut kthread = None;
    let mut threads = None;
    let mut sig_q = None;
    let mut masks = [None; 5];
    let mut caps = [None; 5];
    let mut no_new_privs = false;
    let mut seccomp = 0;
    let mut seccomp_filters = None;

    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let Some((key, value)) = line.split_once(':') else {
            return Err(parse_err("status", n, format!("no ':' in {line:?}")));
        };
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        let bad = || parse_err("status", n, format!("bad {key} value {value:?}"));
        let int = |v: &str| v.parse::<i64>().map_err(|_| bad());
        let list = |v: &str| -> Result<Vec<i32>, ProcError> {
            v.split_ascii_whitespace().map(|x| x.parse().map_err(|_| bad())).collect()
        };
        let hex = |v: &str| hex_u64(v).ok_or_else(bad);
        match key {
            "Name" => name = Some(unescape(value)),
            "Umask" => umask = Some(u32::from_str_radix(value, 8).map_err(|_| bad())?),
            "State" => {
                let c = value.chars().next().ok_or_else(bad)?;
                state = Some(TaskState::from_char(c));
            }
            "Tgid" => tgid = Some(list(value)?.first().copied().ok_or_else(bad)?),
            "Pid" => pid = Some(list(value)?.first().copied().ok_or_else(bad)?),
            "PPid" => ppid = Some(list(value)?.first().copied().ok_or_else(bad)?),
            "TracerPid" => tracer_pid = Some(list(value)?.first().copied().ok_or_else(bad)?),
            "Uid" | "Gid" => {
                let v: Vec<u32> =
                    value.split_ascii_whitespace().map(|x| x.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
                let [real, effective, saved, fs] = v[..] else {
                    return Err(bad());
                };
                let ids = Some(Ids { real, effective, saved, fs });
                if key == "Uid" {
                    uid = ids;
                } else {
                    gid = ids;
                }
            }
            "Groups" => {
                groups =
                    value.split_ascii_whitespace().map(|x| x.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
            }
            "NStgid" => ns_tgid = list(value)?,
            "NSpid" => ns_pid = list(value)?,
            "NSpgid" => ns_pgid = list(value)?,
            "NSsid" => ns_sid = list(value)?,
            "Kthread" => kthread = Some(int(value)? != 0),
            "Threads" => threads = Some(u32::try_from(int(value)?).map_err(|_| bad())?),
            "SigQ" => {
                let (a, b) = value.split_once('/').ok_or_else(bad)?;
                sig_q = Some((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?));
            }
            "SigPnd" => masks[0] = Some(hex(value)?),
            "ShdPnd" => masks[1] = Some(hex(value)?),
            "SigBlk" => masks[2] = Some(hex(value)?),
            "SigIgn" => masks[3] = Some(hex(value)?),
            "SigCgt" => masks[4] = Some(hex(value)?),
            "CapInh" => caps[0] = Some(hex(value)?),
            "CapPrm" => caps[1] = Some(hex(value)?),
            "CapEff" => caps[2] = Some(hex(value)?),
            "CapBnd" => caps[3] = Some(hex(value)?),
            "CapAmb" => caps[4] = Some(hex(value)?),
            "NoNewPrivs" => no_new_privs = int(value)? != 0,
            "Seccomp" => seccomp = u32::try_from(int(value)?).map_err(|_| bad())?,
            "Seccomp_filters" => seccomp_filters = Some(u32::try_from(int(value)?).map_err(|_| bad())?),
            _ => {}
        }
    }

    fn need<T>(v: Option<T>, key: &str) -> Result<T, ProcError> {
        v.ok_or_else(|| parse_err("status", 0, format!("no {key} line")))
    }
    const MASKS: [&str; 5] = ["SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt"];
    const CAPS: [&str; 5] = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"];
    let mut m = [0u64; 5];
    let mut c = [0u64; 5];
    for i in 0..5 {
        m[i] = need(masks[i], MASKS[i])?;
        // CapAmb appeared in 4.3: treat its absence as an empty set.
        c[i] = if i == 4 { caps[i].unwrap_or(0) } else { need(caps[i], CAPS[i])? };
    }
    Ok(Status {
        name: need(name, "Name")?,
        umask,
        state: need(state, "State")?,
        tgid: need(tgid, "Tgid")?,
        pid: need(pid, "Pid")?,
        ppid: need(ppid, "PPid")?,
        tracer_pid: tracer_pid.unwrap_or(0),
        uid: need(uid, "Uid")?,
        gid: need(gid, "Gid")?,
        groups,
        ns_tgid,
        ns_pid,
        ns_pgid,
        ns_sid,
        kthread,
        threads: need(threads, "Threads")?,
        sig_q: need(sig_q, "SigQ")?,
        sig_pnd: m[0],
        shd_pnd: m[1],
        sig_blk: m[2],
        sig_ign: m[3],
        sig_cgt: m[4],
        cap_inh: c[0],
        cap_prm: c[1],
        cap_eff: c[2],
        cap_bnd: c[3],
        cap_amb: c[4],
        no_new_privs,
        seccomp,
        seccomp_filters,
    })
}

/// Undoes the kernel's escaping of `Name:` (`seq_escape_str`).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('v') => out.push('\x0b'),
            Some('a') => out.push('\x07'),
            Some('e') => out.push('\x1b'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_sample() {
        let s = parse_status(include_str!("fixtures/python_status.txt")).unwrap();
        assert_eq!(s.name, "python3");
        assert_eq!(s.umask, Some(0o027));
        assert_eq!(s.state, TaskState::Sleeping);
        assert_eq!((s.tgid, s.pid, s.ppid, s.tracer_pid), (4957, 4957, 4956, 0));
        assert_eq!(s.uid, Ids::default());
        assert!(s.groups.is_empty());
        assert_eq!((s.ns_pid.clone(), s.ns_pgid.clone()), (vec![4957], vec![4957]));
        assert_eq!(s.ns_sid, vec![4957]);
        assert_eq!(s.kthread, Some(false));
        assert_eq!(s.threads, 3);
        // Three POSIX timers each hold a preallocated sigqueue entry.
        assert_eq!(s.sig_q, (3, 96365));
        // SIGUSR1 (10) blocked; SIGINT caught by Python.
        assert_eq!(s.sig_blk, 1 << 9);
        assert_ne!(s.sig_cgt & (1 << 1), 0);
        assert_eq!((s.cap_prm, s.cap_eff, s.cap_amb), (0x1fffeffffff, 0x1fffeffffff, 0));
        assert!(!s.no_new_privs);
        assert_eq!((s.seccomp, s.seccomp_filters), (0, Some(0)));
    }

    #[test]
    fn kernel_thread_sample() {
        let s = parse_status(include_str!("fixtures/kthread_status.txt")).unwrap();
        assert_eq!((s.name.as_str(), s.pid, s.ppid, s.kthread), ("kthreadd", 2, 0, Some(true)));
    }

    #[test]
    fn groups_ns_ids_and_escapes() {
        let base = include_str!("fixtures/python_status.txt");
        let t = base
            .replace("Name:\tpython3", "Name:\ta\\\\b\\nc")
            .replace("Groups:\t", "Groups:\t4 24 1000 ")
            .replace("NSpid:\t4957", "NSpid:\t4957\t1")
            .replace("Uid:\t0\t0\t0\t0", "Uid:\t1000\t1001\t1002\t1003")
            .replace("NoNewPrivs:\t0", "NoNewPrivs:\t1")
            .replace("Seccomp:\t0", "Seccomp:\t2");
        let s = parse_status(&t).unwrap();
        assert_eq!(s.name, "a\\b\nc");
        assert_eq!(s.groups, vec![4, 24, 1000]);
        assert_eq!(s.ns_pid, vec![4957, 1]);
        assert_eq!(s.uid, Ids { real: 1000, effective: 1001, saved: 1002, fs: 1003 });
        assert!(s.no_new_privs);
        assert_eq!(s.seccomp, 2);
    }

    #[test]
    fn missing_or_bad_fields() {
        let base = include_str!("fixtures/python_status.txt");
        let e = parse_status(&base.replace("SigBlk", "XSigBlk")).unwrap_err();
        assert!(e.to_string().contains("no SigBlk line"), "{e}");
        let e = parse_status(&base.replace("Uid:\t0\t0\t0\t0", "Uid:\t0\t0")).unwrap_err();
        assert!(matches!(e, ProcError::Parse { line: 9, .. }), "{e:?}");
        assert!(parse_status(&base.replace("CapEff:\t000001", "CapEff:\tzz0001")).is_err());
    }

    #[test]
    fn read_own_status() {
        let me = i32::try_from(std::process::id()).unwrap();
        let s = read_status(me).unwrap();
        assert_eq!((s.pid, s.tgid), (me, me));
        assert_eq!(s.ns_pid.first(), Some(&me));
    }
}
