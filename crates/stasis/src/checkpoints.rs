//! Container checkpoint verbs: podman's `container checkpoint/restore` and
//! docker's `checkpoint create/ls/rm` (`start --checkpoint` lives with
//! `start` in `containers.rs`).

use crate::containers::{exe, open_store, targets, StoreArgs, Targets};
use clap::{Args, Subcommand};
use serde_json::Value;
use stasis_runtime::checkpoint::{self, CheckpointOpts, Named, RestoreOpts};
use stasis_runtime::ckpt_archive::Compression;
use stasis_runtime::container;
use stasis_runtime::precheckpoint;
use stasis_runtime::store::{ContainerConfig, Status, Store};
use stasis_runtime::RuntimeError;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct CheckpointArgs {
    /// Checkpoint every running container.
    #[arg(short = 'a', long)]
    all: bool,
    /// Keep the container running after the checkpoint.
    #[arg(short = 'R', long)]
    leave_running: bool,
    /// Accepted for podman compatibility (logs and statistics are kept).
    #[arg(short = 'k', long)]
    keep: bool,
    /// Checkpoint established TCP connections (refused otherwise).
    #[arg(long)]
    tcp_established: bool,
    /// Also write the checkpoint as an archive to FILE (podman's layout).
    #[arg(short = 'e', long = "export", visible_alias = "file", value_name = "FILE")]
    export: Option<PathBuf>,
    /// Leave the container's file system changes out of the archive.
    #[arg(long)]
    ignore_rootfs: bool,
    /// Archive compression: zstd (default), gzip or none.
    #[arg(short = 'c', long, value_name = "ALGO")]
    compress: Option<String>,
    /// Store the memory only and leave the container running, tracking its
    /// writes (replaces an earlier pre-checkpoint).
    #[arg(short = 'P', long)]
    pre_checkpoint: bool,
    /// Store only what changed since the pre-checkpoint (-P).
    #[arg(long)]
    with_previous: bool,
    /// Print statistics as JSON.
    #[arg(long)]
    print_stats: bool,
    #[command(flatten)]
    targets: Targets,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// Restore every checkpointed container.
    #[arg(short = 'a', long)]
    all: bool,
    /// Keep the checkpoint after restoring.
    #[arg(short = 'k', long)]
    keep: bool,
    /// Restore established TCP connections.
    #[arg(long)]
    tcp_established: bool,
    /// Restore established TCP connections closed (the process sees them fail).
    #[arg(long)]
    tcp_close: bool,
    /// Create the container from an archive written by `checkpoint --export`.
    #[arg(short = 'i', long = "import", visible_alias = "file", value_name = "FILE")]
    import: Option<PathBuf>,
    /// Name of the container created by --import.
    #[arg(short = 'n', long)]
    name: Option<String>,
    /// The pre-checkpoint archive (-P -e) of an --import'ed checkpoint made
    /// --with-previous.
    #[arg(long, value_name = "FILE")]
    import_previous: Option<PathBuf>,
    /// Do not apply the archive's file system changes.
    #[arg(long)]
    ignore_rootfs: bool,
    /// Give the container a new IP address.
    #[arg(long)]
    ignore_static_ip: bool,
    /// Give the container a new MAC address.
    #[arg(long)]
    ignore_static_mac: bool,
    /// Publish ports instead of the checkpointed ones: [HOST_IP:]HOST:CTR[/tcp|udp].
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    publish: Vec<String>,
    /// Print statistics as JSON.
    #[arg(long)]
    print_stats: bool,
    #[command(flatten)]
    targets: Targets,
}

/// podman's `container` verbs.
#[derive(Subcommand)]
pub enum PodmanCmd {
    /// Checkpoint running containers (they stop unless --leave-running).
    Checkpoint(CheckpointArgs),
    /// Restore checkpointed containers, or create one from an archive.
    Restore(RestoreArgs),
}

#[derive(Args)]
pub struct CheckpointDir {
    /// Where the container's checkpoints are (default: its own storage).
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
}

/// docker's `checkpoint` verbs.
#[derive(Subcommand)]
pub enum DockerCmd {
    /// Checkpoint a running container as CHECKPOINT.
    Create {
        /// Keep the container running after the checkpoint.
        #[arg(long)]
        leave_running: bool,
        #[command(flatten)]
        dir: CheckpointDir,
        container: String,
        checkpoint: String,
    },
    /// List a container's checkpoints.
    #[command(visible_alias = "list")]
    Ls {
        #[command(flatten)]
        dir: CheckpointDir,
        container: String,
    },
    /// Remove a checkpoint.
    #[command(visible_alias = "remove")]
    Rm {
        #[command(flatten)]
        dir: CheckpointDir,
        container: String,
        checkpoint: String,
    },
}

/// What a checkpoint or restore prints: the container, or its statistics.
fn report(name: &str, stats: &Value, print_stats: bool) {
    match print_stats {
        true => println!("{}", serde_json::to_string_pretty(stats).unwrap_or_default()),
        false => println!("{name}"),
    }
}

/// Restores docker's named checkpoint `name` into the stopped container.
pub fn start_from(store: &Store, cfg: &ContainerConfig, name: &str, dir: Option<PathBuf>) -> Result<(), RuntimeError> {
    let o = RestoreOpts { named: Some(Named { dir, name: name.to_string() }), ..Default::default() };
    checkpoint::restore(store, cfg, &exe()?, &o).map(drop)
}

fn pick(store: &Store, all: bool, t: &Targets, want: Status) -> Result<Vec<(String, ContainerConfig)>, RuntimeError> {
    if !all {
        return targets(store, t);
    }
    Ok(store
        .containers()
        .into_iter()
        .filter(|c| {
            let st = container::refresh(store, c);
            st.status == want && (want == Status::Running || st.checkpointed)
        })
        .map(|c| (c.name.clone(), c))
        .collect())
}

fn podman(store: &Store, cmd: PodmanCmd) -> Result<i32, RuntimeError> {
    match cmd {
        PodmanCmd::Checkpoint(a) => {
            let compression = a.compress.as_deref().map(Compression::parse).transpose()?;
            let list = pick(store, a.all, &a.targets, Status::Running)?;
            if a.export.is_some() && list.len() != 1 {
                return Err(RuntimeError::Invalid("--export needs exactly one container".into()));
            }
            if a.pre_checkpoint && a.with_previous {
                return Err(RuntimeError::Invalid("--pre-checkpoint and --with-previous exclude each other".into()));
            }
            let o = CheckpointOpts {
                leave_running: a.leave_running,
                tcp_established: a.tcp_established,
                export: a.export,
                ignore_rootfs: a.ignore_rootfs,
                compression,
                named: None,
                with_previous: a.with_previous,
            };
            let _ = a.keep;
            for (n, c) in list {
                let stats = match a.pre_checkpoint {
                    true => precheckpoint::pre_checkpoint(store, &c, &exe()?, &o)?,
                    false => checkpoint::checkpoint(store, &c, &o)?,
                };
                report(&n, &stats, a.print_stats);
            }
            Ok(0)
        }
        PodmanCmd::Restore(a) => {
            if a.tcp_established && a.tcp_close {
                return Err(RuntimeError::Invalid("--tcp-established and --tcp-close exclude each other".into()));
            }
            let o = RestoreOpts {
                tcp_established: a.tcp_established,
                tcp_close: a.tcp_close,
                keep: a.keep,
                ignore_rootfs: a.ignore_rootfs,
                ignore_static_ip: a.ignore_static_ip,
                ignore_static_mac: a.ignore_static_mac,
                publish: a.publish,
                name: a.name,
                named: None,
                import_previous: a.import_previous,
            };
            if o.import_previous.is_some() && a.import.is_none() {
                return Err(RuntimeError::Invalid("--import-previous only applies with --import".into()));
            }
            if let Some(file) = &a.import {
                let (cfg, stats) = checkpoint::import(store, file, &exe()?, &o)?;
                report(&cfg.id, &stats, a.print_stats);
                return Ok(0);
            }
            if o.name.is_some() {
                return Err(RuntimeError::Invalid("--name only applies with --import".into()));
            }
            for (n, c) in pick(store, a.all, &a.targets, Status::Exited)? {
                report(&n, &checkpoint::restore(store, &c, &exe()?, &o)?, a.print_stats);
            }
            Ok(0)
        }
    }
}

fn docker(store: &Store, cmd: DockerCmd) -> Result<i32, RuntimeError> {
    match cmd {
        DockerCmd::Create { leave_running, dir, container, checkpoint: name } => {
            let c = store.find_container(&container)?;
            let o = CheckpointOpts {
                leave_running,
                named: Some(Named { dir: dir.checkpoint_dir, name: name.clone() }),
                ..Default::default()
            };
            checkpoint::checkpoint(store, &c, &o)?;
            println!("{name}");
            Ok(0)
        }
        DockerCmd::Ls { dir, container } => {
            let c = store.find_container(&container)?;
            println!("CHECKPOINT NAME");
            for n in checkpoint::list_named(store, &c, dir.checkpoint_dir.as_deref()) {
                println!("{n}");
            }
            Ok(0)
        }
        DockerCmd::Rm { dir, container, checkpoint: name } => {
            let c = store.find_container(&container)?;
            checkpoint::remove_named(store, &c, &Named { dir: dir.checkpoint_dir, name })?;
            Ok(0)
        }
    }
}

pub fn main_podman(sa: &StoreArgs, cmd: PodmanCmd) -> ExitCode {
    finish(open_store(sa).and_then(|s| podman(&s, cmd)))
}

pub fn main_docker(sa: &StoreArgs, cmd: DockerCmd) -> ExitCode {
    finish(open_store(sa).and_then(|s| docker(&s, cmd)))
}

fn finish(r: Result<i32, RuntimeError>) -> ExitCode {
    match r {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => crate::fail(&e),
    }
}
