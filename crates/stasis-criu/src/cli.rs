//! `criu`'s command line: `criu dump|pre-dump|restore|check|swrk …` and
//! `criu --version`, with the options tools and people use. Options are
//! spelled as CRIU spells them (`-t PID`, `--tree=PID`, `-v4`); an option
//! we do not honour fails, naming it.

use crate::request::{add_external, Action, Request};
use crate::run::{self, Silent};
use crate::swrk;
use crate::{CriuError, CRIU_VERSION};
use std::path::PathBuf;

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Version,
    Help,
    /// `check` (optionally of one `--feature`).
    Check(Option<String>),
    /// `swrk FD`.
    Swrk(i32),
    Run(Action, Box<Request>),
}

/// Options that take a value, long and short names.
const WITH_VALUE: &[(&str, Option<char>)] = &[
    ("tree", Some('t')),
    ("images-dir", Some('D')),
    ("work-dir", Some('W')),
    ("log-file", Some('o')),
    ("root", Some('r')),
    ("pidfile", None),
    ("external", None),
    ("ext-mount-map", Some('M')),
    ("inherit-fd", None),
    ("freeze-cgroup", None),
    ("prev-images-dir", None),
    ("feature", None),
    ("manage-cgroups", None),
    ("manage-cgroups-mode", None),
    ("cgroup-root", None),
    ("network-lock", None),
    ("ghost-limit", None),
    ("cpu-cap", None),
    ("verbosity", Some('v')),
    ("timeout", None),
];

/// Options accepted and ignored: they tune CRIU's own work, or ask for
/// what the engine does anyway (cgroups stay those of the restorer, which
/// the runtime prepares; ghost files are kept whole).
const IGNORED: &[&str] = &[
    "manage-cgroups",
    "manage-cgroups-mode",
    "cgroup-root",
    "evasive-devices",
    "link-remap",
    "ghost-limit",
    "cpu-cap",
    "network-lock",
    "tcp-skip-in-flight",
    "weak-sysctls",
    "restore-sibling",
    "shell-job",
    "ext-unix-sk",
    "file-locks",
    "track-mem",
    "timeout",
    "display-stats",
];

fn short_to_long(c: char) -> Option<&'static str> {
    match c {
        'R' => Some("leave-running"),
        'd' => Some("restore-detached"),
        'j' => Some("shell-job"),
        'x' => Some("ext-unix-sk"),
        'l' => Some("file-locks"),
        'S' => Some("restore-sibling"),
        'V' => Some("version"),
        'h' => Some("help"),
        _ => WITH_VALUE.iter().find(|(_, s)| *s == Some(c)).map(|(l, _)| *l),
    }
}

fn takes_value(long: &str) -> bool {
    WITH_VALUE.iter().any(|(l, _)| *l == long)
}

/// `fd[N]:KEY` (CRIU's `--inherit-fd`).
fn inherit_fd(v: &str) -> Result<(String, i32), CriuError> {
    let bad = || CriuError::Usage(format!("--inherit-fd {v:?}: expected fd[N]:KEY"));
    let (fd, key) = v.strip_prefix("fd[").and_then(|r| r.split_once("]:")).ok_or_else(bad)?;
    Ok((key.to_string(), fd.parse().map_err(|_| bad())?))
}

/// Parses `args` (without the program name).
pub fn parse(args: &[String]) -> Result<Command, CriuError> {
    let mut opts: Vec<(String, Option<String>)> = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let (name, inline) = if let Some(l) = a.strip_prefix("--") {
            match l.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (l.to_string(), None),
            }
        } else if let Some(s) = a.strip_prefix('-').filter(|s| !s.is_empty()) {
            let c = s.chars().next().unwrap_or('?');
            let long = short_to_long(c).ok_or_else(|| CriuError::Unsupported(format!("option -{c}")))?;
            let rest = &s[c.len_utf8()..];
            (long.to_string(), (!rest.is_empty()).then(|| rest.to_string()))
        } else {
            words.push(a.clone());
            continue;
        };
        let value = if name == "verbosity" {
            // `-v`, `-v4`, `-vvv`: a level, never the next word.
            Some(inline.map_or("2".into(), |v| if v.chars().all(|c| c == 'v') { (v.len() + 2).to_string() } else { v }))
        } else if takes_value(&name) {
            match inline {
                Some(v) => Some(v),
                None => Some(it.next().cloned().ok_or_else(|| CriuError::Usage(format!("--{name} needs a value")))?),
            }
        } else if inline.is_some() && name != "manage-cgroups" {
            return Err(CriuError::Usage(format!("--{name} takes no value")));
        } else {
            None
        };
        opts.push((name, value));
    }
    if opts.iter().any(|(n, _)| n == "version") {
        return Ok(Command::Version);
    }
    if opts.iter().any(|(n, _)| n == "help") || words.is_empty() {
        return Ok(Command::Help);
    }
    let action = match words[0].as_str() {
        "dump" => Action::Dump,
        "pre-dump" => Action::PreDump,
        "restore" => Action::Restore,
        "check" => {
            let f = opts.iter().find(|(n, _)| n == "feature").and_then(|(_, v)| v.clone());
            return Ok(Command::Check(f));
        }
        "swrk" => {
            let fd = words
                .get(1)
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| CriuError::Usage("swrk needs the socket's fd".into()))?;
            return Ok(Command::Swrk(fd));
        }
        other => return Err(CriuError::Unsupported(format!("command {other:?}"))),
    };
    if let Some(extra) = words.get(1) {
        return Err(CriuError::Usage(format!("unexpected argument {extra:?}")));
    }
    let mut r = Request { images: PathBuf::from("."), log_level: 2, ..Default::default() };
    for (name, v) in opts {
        let val = || v.clone().unwrap_or_default();
        match name.as_str() {
            "tree" => {
                r.pid = Some(val().parse().map_err(|_| CriuError::Usage(format!("--tree {:?}: not a pid", val())))?)
            }
            "images-dir" => r.images = PathBuf::from(val()),
            "work-dir" => r.work_dir = Some(PathBuf::from(val())),
            "log-file" => r.log_file = Some(val()),
            "verbosity" => r.log_level = val().parse().unwrap_or(2),
            "root" => r.root = Some(PathBuf::from(val())),
            "pidfile" => r.pidfile = Some(PathBuf::from(val())),
            "leave-running" => r.leave_running = true,
            "tcp-established" => r.tcp_established = true,
            "tcp-close" => r.tcp_close = true,
            "restore-detached" => r.detach = true,
            "external" => add_external(&mut r, action, &val())?,
            "ext-mount-map" => {
                let v = val();
                let (k, m) = v
                    .split_once(':')
                    .ok_or_else(|| CriuError::Usage(format!("--ext-mount-map {v:?}: expected KEY:VAL")))?;
                r.ext_mnt.push((k.to_string(), m.to_string()));
            }
            "inherit-fd" => r.inherit_fd.push(inherit_fd(&val())?),
            "freeze-cgroup" => r.freeze_cgroup = Some(PathBuf::from(val())),
            "prev-images-dir" => r.parent_img = Some(val()),
            n if IGNORED.contains(&n) => log::debug!("--{n}: accepted, nothing to do"),
            n => return Err(CriuError::Unsupported(format!("option --{n}"))),
        }
    }
    if r.work_dir.is_none() {
        r.work_dir = Some(r.images.clone());
    }
    Ok(Command::Run(action, Box::new(r)))
}

/// `criu check --feature NAME` answers yes for these: what the engine
/// really does (write tracking for pre-dumps without soft-dirty bits, an
/// external network namespace, clone3 with set_tid, mount ids in fdinfo).
const SUPPORTED_FEATURES: &[&str] =
    &["mem_dirty_track", "external_net_ns", "clone3_set_tid", "mnt_id", "seccomp_filters", "seccomp_suspend"];

const USAGE: &str = "\
Usage (Stasis's criu):
  criu dump -t PID -D DIR [-R] [--tcp-established] [--prev-images-dir DIR]
            [--external net[INODE]:KEY] [-M MOUNTPOINT:KEY] [-o LOG] [-v4]
  criu pre-dump -t PID -D DIR [--prev-images-dir DIR]
  criu restore -D DIR [-d] [--pidfile FILE] [--root DIR] [--tcp-established|--tcp-close]
            [--inherit-fd fd[N]:KEY] [-M KEY:HOSTPATH]
  criu check [--feature mem_dirty_track]
  criu swrk FD
  criu --version
";

/// The `--version` text, in CRIU's form (tools parse the first line).
pub fn version_text() -> String {
    let (ma, mi, sub) = CRIU_VERSION;
    let v = if sub == 0 { format!("{ma}.{mi}") } else { format!("{ma}.{mi}.{sub}") };
    format!("Version: {v}\nGitID: stasis-{}\n", env!("CARGO_PKG_VERSION"))
}

/// Runs the command; `open_log` is given the request's log file (if any)
/// before work starts. Returns the exit status.
pub fn run(cmd: Command, open_log: &mut dyn FnMut(Option<PathBuf>, i32)) -> Result<i32, CriuError> {
    match cmd {
        Command::Version => {
            print!("{}", version_text());
            Ok(0)
        }
        Command::Help => {
            print!("{USAGE}");
            Ok(0)
        }
        Command::Check(None) => {
            println!("Looks good.");
            Ok(0)
        }
        Command::Check(Some(f)) => {
            let name = f.replace('-', "_");
            if SUPPORTED_FEATURES.contains(&name.as_str()) {
                println!("{f} is supported");
                Ok(0)
            } else {
                println!("{f} is not supported");
                Ok(1)
            }
        }
        Command::Swrk(fd) => swrk::serve(fd, open_log).map(|()| 0),
        Command::Run(action, req) => {
            open_log(req.log_path(), req.log_level);
            match action {
                Action::Dump | Action::PreDump => {
                    let s = run::dump(&req, action == Action::PreDump, &mut Silent)?;
                    log::info!("dumped {} processes in {:?}", s.processes, s.total_time);
                    Ok(0)
                }
                Action::Restore => {
                    let pid = run::restore(&req, &mut Silent)?;
                    if req.detach {
                        return Ok(0);
                    }
                    stasis_sys::proc_ctl::wait_exit(pid).map_err(CriuError::io(format!("waiting for {pid}")))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn run_req(s: &str) -> (Action, Request) {
        match parse(&args(s)).unwrap() {
            Command::Run(a, r) => (a, *r),
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn dump_options_in_criu_spellings() {
        let (a, r) = run_req(
            "dump -t 42 -D /img -o d.log -v4 -R --tcp-established --external net[4026532177]:extRootNetNS -M /etc/hosts:/etc/hosts --manage-cgroups=soft --shell-job",
        );
        assert_eq!(a, Action::Dump);
        assert_eq!(r.pid, Some(42));
        assert_eq!(r.images, PathBuf::from("/img"));
        assert_eq!(r.log_path(), Some(PathBuf::from("/img/d.log")));
        assert_eq!(r.log_level, 4);
        assert!(r.leave_running && r.tcp_established);
        assert_eq!(r.ext_netns, Some((4026532177, "extRootNetNS".into())));
        assert_eq!(r.ext_mnt, vec![("/etc/hosts".to_string(), "/etc/hosts".to_string())]);
        let (_, r) = run_req("dump --tree=7 --images-dir=/x");
        assert_eq!((r.pid, r.images), (Some(7), PathBuf::from("/x")));
    }

    #[test]
    fn restore_options() {
        let (a, r) = run_req("restore -D /img -d --pidfile /p --root /r --inherit-fd fd[1]:pipe:[77] --tcp-close");
        assert_eq!(a, Action::Restore);
        assert!(r.detach && r.tcp_close);
        assert_eq!(r.root, Some(PathBuf::from("/r")));
        assert_eq!(r.inherit_fd, vec![("pipe:[77]".to_string(), 1)]);
        assert!(matches!(parse(&args("restore --inherit-fd 3:x")), Err(CriuError::Usage(_))));
    }

    #[test]
    fn refusals_name_the_option() {
        for (cmd, name) in [
            ("dump --lazy-pages -t 1", "--lazy-pages"),
            ("dump --page-server -t 1", "--page-server"),
            ("dump -t 1 --external tty[88:1]:x", "tty[88:1]"),
            ("frobnicate", "frobnicate"),
            ("dump -Q", "-Q"),
        ] {
            let e = parse(&args(cmd)).expect_err(cmd).to_string();
            assert!(e.contains(name), "{cmd}: {e}");
        }
        assert!(matches!(parse(&args("dump -t")), Err(CriuError::Usage(_))));
    }

    #[test]
    fn version_check_and_swrk() {
        assert!(matches!(parse(&args("--version")), Ok(Command::Version)));
        assert!(matches!(parse(&args("-V")), Ok(Command::Version)));
        assert!(matches!(parse(&args("check --feature mem_dirty_track")), Ok(Command::Check(Some(_)))));
        assert!(matches!(parse(&args("swrk 3")), Ok(Command::Swrk(3))));
        assert!(version_text().starts_with("Version: 4.2\n"));
    }
}
