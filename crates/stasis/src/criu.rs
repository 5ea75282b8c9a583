//! `stasis criu …`, and the binary run under the name `criu`: CRIU's
//! command line and RPC server (`stasis-criu`), with the log going where
//! CRIU's would.

use std::process::ExitCode;

/// CRIU's verbosity (0-4) as a log level.
fn level(v: i32) -> log::LevelFilter {
    match v {
        i32::MIN..=0 => log::LevelFilter::Off,
        1 => log::LevelFilter::Error,
        2 => log::LevelFilter::Warn,
        3 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    }
}

/// Runs `criu ARGS…` (`args` without the program name).
pub fn main(args: &[String]) -> ExitCode {
    super::logger::init(log::LevelFilter::Warn);
    let cmd = match stasis_criu::cli::parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("criu: {}", stasis_criu::error::one_line(&e));
            return ExitCode::from(1);
        }
    };
    // Under swrk, fds 0-2 are the tree's (a restore hands them over):
    // nothing of ours may reach them.
    let swrk = matches!(cmd, stasis_criu::cli::Command::Swrk(_));
    if swrk {
        super::logger::to_file(None, log::LevelFilter::Warn, true);
    }
    let mut to_file = false;
    let mut open_log = |path: Option<std::path::PathBuf>, verbosity: i32| {
        to_file = super::logger::to_file(path.as_deref(), level(verbosity), swrk);
    };
    let done = stasis_criu::cli::run(cmd, &mut open_log);
    match done {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            // Once where the caller looks: the log file (runc and podman
            // point at it), and stderr unless that is the tree's.
            let msg = stasis_criu::error::one_line(&e);
            if to_file {
                log::error!("{msg}");
            }
            if !swrk {
                eprintln!("criu: {msg}");
            }
            ExitCode::from(1)
        }
    }
}
