//! The `stasis` command line.
//!
//! Every failure is printed once, as one line naming what failed and why
//! (the error and its causes joined by ": "), and the exit status is
//! non-zero. `--log-level debug` adds progress and timing lines.

mod checkpoints;
mod containers;
mod criu;
mod logger;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "stasis", version, about = "Checkpoint and restore Linux process trees and containers")]
struct Cli {
    /// error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "warn", value_name = "LEVEL", value_parser = parse_level)]
    log_level: log::LevelFilter,
    #[command(flatten)]
    store: containers::StoreArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Checkpoint and restore bare process trees.
    #[command(subcommand)]
    Process(ProcessCmd),
    /// Inspect checkpoint images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Checkpoint and restore containers (podman's verbs).
    #[command(subcommand)]
    Container(checkpoints::PodmanCmd),
    /// Named container checkpoints (docker's verbs).
    #[command(subcommand)]
    Checkpoint(checkpoints::DockerCmd),
    #[command(flatten)]
    Containers(containers::ContainerCmd),
    /// Holds a pre-dump's write tracking (UFFD:PIDFD pairs, inherited)
    /// until the tracked processes exit; started by pre-dumps.
    #[command(hide = true)]
    TrackHolder { pairs: Vec<String> },
}

#[derive(Subcommand)]
enum ProcessCmd {
    /// Freeze the tree rooted at PID, write its images, then kill it.
    Dump(DumpArgs),
    /// Recreate a dumped tree with the same PIDs and let it continue.
    Restore(RestoreArgs),
}

#[derive(Args)]
struct DumpArgs {
    /// Root of the process tree.
    pid: i32,
    /// Directory to write the images to (must not exist or be empty).
    #[arg(long, short = 'D', value_name = "DIR")]
    images: PathBuf,
    /// Let the tree run on after the dump.
    #[arg(long, short = 'R')]
    leave_running: bool,
    /// Dump established TCP connections (they are refused otherwise).
    #[arg(long)]
    tcp_established: bool,
    /// Store memory only, leave the tree running and track its writes, so
    /// a later dump with --prev-images stores only what changed.
    #[arg(long)]
    pre_dump: bool,
    /// An earlier (pre-)dump of this tree: pages it holds that were not
    /// written since are not stored again.
    #[arg(long, value_name = "DIR")]
    prev_images: Option<PathBuf>,
}

#[derive(Args)]
struct RestoreArgs {
    /// Directory holding the images.
    #[arg(long, short = 'D', value_name = "DIR")]
    images: PathBuf,
    /// Return once the tree runs instead of waiting for its root to exit.
    #[arg(long, short = 'd')]
    detach: bool,
    /// Write the restored root's PID to FILE.
    #[arg(long, value_name = "FILE")]
    pidfile: Option<PathBuf>,
    /// Restore established TCP connections found in the images.
    #[arg(long)]
    tcp_established: bool,
    /// Restore established TCP connections closed instead.
    #[arg(long)]
    tcp_close: bool,
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Print a readable summary: tree, threads, memory, pages, fds.
    Show {
        /// Directory holding the images.
        dir: PathBuf,
    },
}

fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    s.parse().map_err(|_| format!("unknown log level {s:?} (error, warn, info, debug, trace)"))
}

fn fail(err: &dyn std::error::Error) -> ExitCode {
    eprintln!("stasis: {}", stasis_runtime::error::one_line(err));
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    // `criu ARGS` (installed as criu) or `stasis criu ARGS`: CRIU's own
    // command line, which clap's conventions do not fit.
    let args: Vec<String> = std::env::args().collect();
    let name = args.first().map(|a| a.rsplit('/').next().unwrap_or(a).to_string()).unwrap_or_default();
    if name == "criu" {
        return criu::main(&args[1..]);
    }
    if args.get(1).map(String::as_str) == Some("criu") {
        return criu::main(&args[2..]);
    }
    let cli = Cli::parse();
    logger::init(cli.log_level);
    if let Err(e) = stasis_sys::proc_ctl::install_interrupt_flag() {
        return fail(&e);
    }
    match cli.command {
        Command::Containers(c) => containers::main(&cli.store, c),
        Command::Container(c) => checkpoints::main_podman(&cli.store, c),
        Command::Checkpoint(c) => checkpoints::main_docker(&cli.store, c),
        Command::Process(ProcessCmd::Dump(a)) => {
            let opts = stasis_engine::DumpOpts {
                leave_running: a.leave_running,
                tcp_established: a.tcp_established,
                prev_images: a.prev_images,
                ..Default::default()
            };
            let done = if a.pre_dump {
                if a.leave_running || a.tcp_established {
                    eprintln!("stasis: --pre-dump always leaves the tree running and stores memory only; drop --leave-running/--tcp-established");
                    return ExitCode::FAILURE;
                }
                match std::env::current_exe() {
                    Ok(exe) => stasis_engine::pre_dump(a.pid, &a.images, &opts, &exe),
                    Err(e) => return fail(&e),
                }
            } else {
                stasis_engine::dump(a.pid, &a.images, &opts)
            };
            match done {
                Ok(s) => {
                    log::info!(
                        "dumped {} processes ({} threads) in {:?}: freezing {:?}, frozen {:?}, memory {:?}, {} pages written of {} scanned, {} left to the parent",
                        s.processes, s.threads, s.total_time, s.freezing_time, s.frozen_time, s.memdump_time,
                        s.pages_written, s.pages_scanned, s.pages_skipped_parent
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Process(ProcessCmd::Restore(a)) => {
            let restored = match stasis_engine::restore(
                &a.images,
                &stasis_engine::RestoreOpts {
                    tcp_established: a.tcp_established,
                    tcp_close: a.tcp_close,
                    ..Default::default()
                },
            ) {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            log::info!("restored {} processes in {:?}", restored.processes, restored.restore_time);
            if let Some(p) = &a.pidfile {
                if let Err(e) = std::fs::write(p, format!("{}\n", restored.root_pid)) {
                    eprintln!("stasis: writing pid file {}: {e}", p.display());
                    return ExitCode::FAILURE;
                }
            }
            if a.detach {
                return ExitCode::SUCCESS;
            }
            match stasis_sys::proc_ctl::wait_exit(restored.root_pid) {
                Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
                Err(e) => fail(&e),
            }
        }
        Command::TrackHolder { pairs } => {
            let parsed: Option<Vec<(i32, i32)>> = pairs
                .iter()
                .map(|p| p.split_once(':').and_then(|(u, f)| Some((u.parse().ok()?, f.parse().ok()?))))
                .collect();
            let Some(parsed) = parsed else {
                eprintln!("stasis: track-holder takes UFFD:PIDFD pairs");
                return ExitCode::FAILURE;
            };
            match stasis_engine::incremental::holder::hold(&parsed) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Command::Image(ImageCmd::Show { dir }) => match stasis_image::show::show(&dir) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
    }
}
