//! `/proc/PID/limits`: the task's 16 resource limits.
//!
//! Read from procfs rather than with `prlimit(2)`, which needs
//! `CAP_SYS_RESOURCE` towards a process of another uid (withheld on some of
//! our hosts). Rows are `%-25s %-20s %-20s %-10s`: name, soft, hard, units;
//! `unlimited` is `RLIM_INFINITY`.

use super::{parse_err, read_text, ProcError};

/// `RLIM_INFINITY` on Linux.
pub const RLIM_INFINITY: u64 = u64::MAX;

/// Row names in `RLIMIT_*` order (`RLIMIT_CPU` = 0 … `RLIMIT_RTTIME` = 15).
const NAMES: [&str; 16] = [
    "Max cpu time",
    "Max file size",
    "Max data size",
    "Max stack size",
    "Max core file size",
    "Max resident set",
    "Max processes",
    "Max open files",
    "Max locked memory",
    "Max address space",
    "Max file locks",
    "Max pending signals",
    "Max msgqueue size",
    "Max nice priority",
    "Max realtime priority",
    "Max realtime timeout",
];

/// One resource limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// `RLIMIT_*` number.
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// All 16 limits, indexed by `RLIMIT_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits(pub [Rlimit; 16]);

impl Limits {
    /// The limit of resource `RLIMIT_*` `resource`, if it is one of the 16.
    pub fn get(&self, resource: u32) -> Option<&Rlimit> {
        self.0.get(usize::try_from(resource).ok()?)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rlimit> {
        self.0.iter()
    }
}

/// Reads and parses `/proc/PID/limits`.
pub fn read_limits(pid: i32) -> Result<Limits, ProcError> {
    let (path, text) = read_text(pid, "limits")?;
    parse_limits(&text).map_err(|e| e.at(&path))
}

/// Parses the text of a `limits` file.
pub fn parse_limits(text: &str) -> Result<Limits, ProcError> {
    let mut found: [Option<(u64, u64)>; 16] = [None; 16];
    for (i, line) in text.lines().enumerate() {
        if i == 0 && line.starts_with("Limit") {
            continue;
        }
        let n = i + 1;
        let Some(idx) = NAMES.iter().position(|name| line.strip_prefix(name).is_some_and(|r| r.starts_with("  ")))
        else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(parse_err("limits", n, format!("unknown limit {line:?}")));
        };
        let mut vals = line[NAMES[idx].len()..].split_ascii_whitespace();
        let mut value = || -> Result<u64, ProcError> {
            match vals.next() {
                Some("unlimited") => Ok(RLIM_INFINITY),
                Some(v) => v.parse().map_err(|_| parse_err("limits", n, format!("bad value {v:?}"))),
                None => Err(parse_err("limits", n, "missing value")),
            }
        };
        let soft = value()?;
        let hard = value()?;
        found[idx] = Some((soft, hard));
    }
    let mut out = [Rlimit { resource: 0, soft: 0, hard: 0 }; 16];
    for (i, f) in found.iter().enumerate() {
        let (soft, hard) = f.ok_or_else(|| parse_err("limits", 0, format!("no {:?} row", NAMES[i])))?;
        out[i] = Rlimit { resource: u32::try_from(i).unwrap_or(u32::MAX), soft, hard };
    }
    Ok(Limits(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("fixtures/python_limits.txt");

    #[test]
    fn resource_numbers_match_libc() {
        let ours = [
            libc::RLIMIT_CPU,
            libc::RLIMIT_FSIZE,
            libc::RLIMIT_DATA,
            libc::RLIMIT_STACK,
            libc::RLIMIT_CORE,
            libc::RLIMIT_RSS,
            libc::RLIMIT_NPROC,
            libc::RLIMIT_NOFILE,
            libc::RLIMIT_MEMLOCK,
            libc::RLIMIT_AS,
            libc::RLIMIT_LOCKS,
            libc::RLIMIT_SIGPENDING,
            libc::RLIMIT_MSGQUEUE,
            libc::RLIMIT_NICE,
            libc::RLIMIT_RTPRIO,
            libc::RLIMIT_RTTIME,
        ];
        for (i, r) in ours.iter().enumerate() {
            assert_eq!(u64::from(*r), i as u64);
        }
        assert_eq!(libc::RLIM_INFINITY, RLIM_INFINITY);
    }

    #[test]
    fn python_sample() {
        let l = parse_limits(SAMPLE).unwrap();
        let stack = l.get(3).unwrap();
        assert_eq!((stack.soft, stack.hard), (8388608, RLIM_INFINITY));
        let core = l.get(4).unwrap();
        assert_eq!((core.soft, core.hard), (0, RLIM_INFINITY));
        let nofile = l.get(7).unwrap();
        assert_eq!((nofile.resource, nofile.soft, nofile.hard), (7, 20000, 20000));
        let nice = l.get(13).unwrap();
        assert_eq!((nice.soft, nice.hard), (0, 0));
        let rttime = l.get(15).unwrap();
        assert_eq!(rttime.soft, RLIM_INFINITY);
        assert!(l.get(16).is_none());
        assert_eq!(l.iter().count(), 16);
    }

    #[test]
    fn missing_row_or_bad_value() {
        let without: String =
            SAMPLE.lines().filter(|l| !l.starts_with("Max file locks")).map(|l| format!("{l}\n")).collect();
        let e = parse_limits(&without).unwrap_err();
        assert!(e.to_string().contains("Max file locks"), "{e}");
        assert!(parse_limits(&SAMPLE.replace("8388608  ", "83x8608  ")).is_err());
        // "Max file size" must not be taken for "Max file locks" or vice versa.
        assert!(parse_limits(&SAMPLE.replace("Max file locks ", "Max file lockz ")).is_err());
    }

    #[test]
    fn read_own_limits() {
        let me = i32::try_from(std::process::id()).unwrap();
        let l = read_limits(me).unwrap();
        assert!(l.iter().all(|x| x.soft <= x.hard));
        assert!(l.get(7).unwrap().soft > 0);
    }
}
