//! Container and image verbs of the CLI (podman's surface): import, load,
//! images, rmi, create, run, start, ps, logs, stop, kill, rm, inspect,
//! exec, plus the hidden `container-monitor` mode the CLI re-executes
//! itself in (one monitor per container, like conmon).

use clap::{Args, Subcommand};
use serde_json::json;
use stasis_runtime::container::{self, CreateOpts};
use stasis_runtime::image;
use stasis_runtime::store::{self, ContainerConfig, Status, Store};
use stasis_runtime::RuntimeError;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Global store options.
#[derive(Args)]
pub struct StoreArgs {
    /// Storage root [env STASIS_ROOT; default /var/lib/stasis].
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Runtime state dir [env STASIS_RUNROOT; default /run/stasis].
    #[arg(long, global = true, value_name = "DIR")]
    runroot: Option<PathBuf>,
}

#[derive(Args)]
pub struct CreateArgs {
    /// Container name.
    #[arg(long)]
    name: Option<String>,
    /// Publish a port: [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp].
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    publish: Vec<String>,
    /// Set an environment variable KEY=VALUE.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// The container's hostname.
    #[arg(long)]
    hostname: Option<String>,
    image: String,
    /// Command and arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Names or ids, or `--latest`.
#[derive(Args)]
pub struct Targets {
    /// Act on the most recently created container.
    #[arg(short = 'l', long)]
    latest: bool,
    names: Vec<String>,
}

#[derive(Args)]
pub struct StartArgs {
    /// Restore this checkpoint (see `checkpoint create`) instead of starting afresh.
    #[arg(long, value_name = "CHECKPOINT")]
    checkpoint: Option<String>,
    /// Where the container's checkpoints are.
    #[arg(long, value_name = "DIR", requires = "checkpoint")]
    checkpoint_dir: Option<PathBuf>,
    #[command(flatten)]
    targets: Targets,
}

#[derive(Subcommand)]
pub enum ContainerCmd {
    /// Create an image from a rootfs tarball (.tar, .tar.gz, .tar.zst).
    Import {
        tarball: PathBuf,
        name: String,
        /// Dockerfile instruction to apply: CMD, ENTRYPOINT, ENV, WORKDIR.
        #[arg(short = 'c', long = "change")]
        change: Vec<String>,
    },
    /// Load an image from a docker-archive or OCI-archive tarball.
    Load {
        #[arg(short = 'i', long = "input")]
        input: PathBuf,
    },
    /// List images.
    Images {
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Remove images.
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Create a container without starting it.
    Create(CreateArgs),
    /// Create and start a container.
    Run {
        /// Run in the background and print the container id.
        #[arg(short = 'd', long)]
        detach: bool,
        #[command(flatten)]
        create: CreateArgs,
    },
    /// Start created or exited containers.
    Start(StartArgs),
    /// List containers.
    Ps {
        /// All containers, not only running ones.
        #[arg(short = 'a', long)]
        all: bool,
        /// Only ids.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Output format: json or table.
        #[arg(long)]
        format: Option<String>,
        #[arg(short = 'l', long)]
        latest: bool,
    },
    /// Print a container's output.
    Logs {
        /// Keep printing new output until the container stops.
        #[arg(short = 'f', long)]
        follow: bool,
        #[command(flatten)]
        targets: Targets,
    },
    /// Stop containers: SIGTERM, then SIGKILL after the timeout.
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(short = 't', long = "time", default_value_t = 10)]
        time: u64,
        #[command(flatten)]
        targets: Targets,
    },
    /// Send a signal to containers' init.
    Kill {
        #[arg(short = 's', long = "signal", default_value = "KILL")]
        signal: String,
        #[command(flatten)]
        targets: Targets,
    },
    /// Remove containers.
    Rm {
        /// Stop running containers first.
        #[arg(short = 'f', long)]
        force: bool,
        #[command(flatten)]
        targets: Targets,
    },
    /// Print containers' configuration and state as JSON.
    Inspect(Targets),
    /// Run a command in a running container.
    Exec {
        #[arg(short = 'l', long)]
        latest: bool,
        /// Accepted for podman compatibility (stdin is always passed).
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Accepted for podman compatibility (no terminal is allocated).
        #[arg(short = 't', long)]
        tty: bool,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Internal: the per-container monitor.
    #[command(hide = true)]
    ContainerMonitor {
        /// Restore the checkpoint bundle DIR instead of running the command.
        #[arg(long, value_name = "DIR")]
        restore: Option<PathBuf>,
        #[arg(long)]
        tcp_established: bool,
        #[arg(long)]
        tcp_close: bool,
        #[arg(long)]
        remove_after: bool,
        id: String,
    },
}

pub fn open_store(a: &StoreArgs) -> Result<Store, RuntimeError> {
    let pick = |v: &Option<PathBuf>, env: &str, def: &str| {
        v.clone().or_else(|| std::env::var_os(env).map(PathBuf::from)).unwrap_or_else(|| PathBuf::from(def))
    };
    let root = std::path::absolute(pick(&a.root, "STASIS_ROOT", "/var/lib/stasis")).unwrap_or_default();
    let runroot = std::path::absolute(pick(&a.runroot, "STASIS_RUNROOT", "/run/stasis")).unwrap_or_default();
    Store::open(&root, &runroot)
}

pub fn targets(store: &Store, t: &Targets) -> Result<Vec<(String, ContainerConfig)>, RuntimeError> {
    if t.latest {
        let c = store.latest_container()?;
        return Ok(vec![(c.name.clone(), c)]);
    }
    if t.names.is_empty() {
        return Err(RuntimeError::Invalid("no container given (a name, an id or --latest)".into()));
    }
    t.names.iter().map(|n| Ok((n.clone(), store.find_container(n)?))).collect()
}

fn parse_signal(s: &str) -> Result<i32, RuntimeError> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let table = [
        ("HUP", libc::SIGHUP),
        ("INT", libc::SIGINT),
        ("QUIT", libc::SIGQUIT),
        ("KILL", libc::SIGKILL),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("TERM", libc::SIGTERM),
        ("CONT", libc::SIGCONT),
        ("STOP", libc::SIGSTOP),
        ("WINCH", libc::SIGWINCH),
    ];
    table
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| RuntimeError::Invalid(format!("unknown signal {s:?}")))
}

fn create_opts(a: CreateArgs) -> CreateOpts {
    CreateOpts {
        image: a.image,
        name: a.name,
        command: a.command,
        env: a.env,
        workdir: a.workdir,
        hostname: a.hostname,
        publish: a.publish,
    }
}

pub fn exe() -> Result<PathBuf, RuntimeError> {
    std::env::current_exe().map_err(|source| RuntimeError::Io { what: "finding the stasis binary".into(), source })
}

/// Prints the log while the container runs; returns its exit code.
fn attach_output(store: &Store, cfg: &ContainerConfig) -> i32 {
    let log = store.ctr_dir(&cfg.id).join("ctr.log");
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let mut off = 0;
    let mut signalled = false;
    loop {
        off = container::print_log(&log, off, &mut out, &mut err);
        let st = store.read_state(&cfg.id);
        if st.status != Status::Running || container::wait_stopped(store, cfg, Duration::ZERO) {
            container::print_log(&log, off, &mut out, &mut err);
            return store.read_state(&cfg.id).exit_code.unwrap_or(0);
        }
        if stasis_sys::proc_ctl::interrupted() && !signalled {
            signalled = true;
            let _ = stasis_sys::proc_ctl::kill(st.pid, libc::SIGTERM);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ps(store: &Store, all: bool, quiet: bool, format: Option<&str>, latest: bool) -> Result<(), RuntimeError> {
    let mut list = store.containers();
    if latest {
        list = list.into_iter().last().into_iter().collect();
    }
    let rows: Vec<_> = list
        .into_iter()
        .map(|c| {
            let st = container::refresh(store, &c);
            (c, st)
        })
        .filter(|(_, st)| all || st.status == Status::Running)
        .collect();
    if format == Some("json") {
        let v: Vec<_> = rows
            .iter()
            .map(|(c, st)| {
                json!({
                    "Id": c.id, "Names": [c.name], "Image": c.image_name, "ImageID": c.image_id,
                    "Command": c.command, "Created": (c.created / 1_000_000_000) as u64,
                    "State": match st.status { Status::Created => "created", Status::Running => "running", Status::Exited => "exited" },
                    "Status": container::status_text(st), "ExitCode": st.exit_code.unwrap_or(0),
                    "Exited": st.status == Status::Exited, "Pid": if st.status == Status::Running { st.pid } else { 0 },
                    "Ports": c.publish,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    if let Some(f) = format.filter(|f| *f != "table") {
        return Err(RuntimeError::Invalid(format!("unsupported --format {f:?} (json or table)")));
    }
    if !quiet {
        println!(
            "{:<14}{:<30}{:<24}{:<24}{:<44}{:<22}NAMES",
            "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS"
        );
    }
    for (c, st) in rows {
        if quiet {
            println!("{}", &c.id[..12]);
            continue;
        }
        let mut cmd = c.command.join(" ");
        if cmd.len() > 22 {
            cmd.truncate(19);
            cmd.push_str("...");
        }
        let created = format!("{} ago", store::human_duration(store::now_ns().saturating_sub(c.created)));
        let ports = c.publish.join(",");
        println!(
            "{:<14}{:<30}{:<24}{:<24}{:<44}{:<22}{}",
            &c.id[..12],
            c.image_name,
            cmd,
            created,
            container::status_text(&st),
            ports,
            c.name
        );
    }
    Ok(())
}

fn inspect(store: &Store, cfg: &ContainerConfig) -> serde_json::Value {
    let st = container::refresh(store, cfg);
    let t = |ns: Option<u128>| ns.map(store::rfc3339).unwrap_or_default();
    json!({
        "Id": cfg.id, "Name": cfg.name, "Created": store::rfc3339(cfg.created),
        "Image": cfg.image_id, "ImageName": cfg.image_name,
        "Path": cfg.command.first(), "Args": cfg.command.get(1..),
        "Config": {"Hostname": cfg.hostname, "Env": cfg.env, "WorkingDir": cfg.workdir, "Cmd": cfg.command},
        "State": {
            "Status": match st.status { Status::Created => "created", Status::Running => "running", Status::Exited => "exited" },
            "Running": st.status == Status::Running, "Pid": st.pid, "ConmonPid": st.monitor_pid,
            "ExitCode": st.exit_code.unwrap_or(0), "StartedAt": t(st.started_at), "FinishedAt": t(st.finished_at),
            "Checkpointed": st.checkpointed, "Restored": st.restored,
        },
        "NetworkSettings": {"IPAddress": cfg.ip, "Ports": cfg.publish, "State": st.net},
        "Cgroups": st.cgroups,
        "LogPath": store.ctr_dir(&cfg.id).join("ctr.log"),
        "Rootfs": {"Upper": store.ctr_dir(&cfg.id).join("upper"), "Merged": store.ctr_run_dir(&cfg.id).join("merged")},
    })
}

fn images(store: &Store, quiet: bool) {
    if !quiet {
        println!("{:<40}{:<12}{:<15}{:<24}SIZE", "REPOSITORY", "TAG", "IMAGE ID", "CREATED");
    }
    for r in image::list(store) {
        if quiet {
            println!("{}", &r.id[..12]);
            continue;
        }
        let created = format!("{} ago", store::human_duration(store::now_ns().saturating_sub(r.created)));
        let size = format!("{:.1} MB", r.size as f64 / 1e6);
        let names = if r.names.is_empty() { vec!["<none>:<none>".to_string()] } else { r.names.clone() };
        for n in names {
            let (repo, tag) = n.rsplit_once(':').unwrap_or((&n, "<none>"));
            println!("{repo:<40}{tag:<12}{:<15}{created:<24}{size}", &r.id[..12]);
        }
    }
}

/// Runs one container verb; errors are printed as one line.
pub fn main(sa: &StoreArgs, cmd: ContainerCmd) -> ExitCode {
    match run(sa, cmd) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => crate::fail(&e),
    }
}

fn run(sa: &StoreArgs, cmd: ContainerCmd) -> Result<i32, RuntimeError> {
    let store = open_store(sa)?;
    match cmd {
        ContainerCmd::ContainerMonitor { id, restore, tcp_established, tcp_close, remove_after } => {
            let ready = std::io::stdout().as_fd().try_clone_to_owned();
            let ready =
                ready.map(File::from).map_err(|source| RuntimeError::Io { what: "monitor stdout".into(), source })?;
            let restore = restore.map(|dir| stasis_runtime::monitor::RestoreReq {
                dir,
                tcp_established,
                tcp_close,
                remove_after,
            });
            Ok(stasis_runtime::monitor::run(&store, &id, ready, restore))
        }
        ContainerCmd::Import { tarball, name, change } => {
            println!("{}", image::import(&store, &tarball, &name, &change)?);
            Ok(0)
        }
        ContainerCmd::Load { input } => {
            for n in image::load(&store, &input)? {
                println!("Loaded image: {n}");
            }
            Ok(0)
        }
        ContainerCmd::Images { quiet } => {
            images(&store, quiet);
            Ok(0)
        }
        ContainerCmd::Rmi { images } => {
            for i in images {
                let id = image::remove(&store, &i)?;
                println!("Deleted: {id}");
            }
            Ok(0)
        }
        ContainerCmd::Create(a) => {
            println!("{}", container::create(&store, &create_opts(a))?.id);
            Ok(0)
        }
        ContainerCmd::Run { detach, create } => {
            let cfg = container::create(&store, &create_opts(create))?;
            if let Err(e) = container::start(&store, &cfg, &exe()?) {
                let _ = container::remove(&store, &cfg, true);
                return Err(e);
            }
            if detach {
                println!("{}", cfg.id);
                return Ok(0);
            }
            Ok(attach_output(&store, &cfg))
        }
        ContainerCmd::Start(a) => {
            for (n, c) in targets(&store, &a.targets)? {
                match &a.checkpoint {
                    Some(ck) => crate::checkpoints::start_from(&store, &c, ck, a.checkpoint_dir.clone())?,
                    None => drop(container::start(&store, &c, &exe()?)?),
                }
                println!("{n}");
            }
            Ok(0)
        }
        ContainerCmd::Ps { all, quiet, format, latest } => ps(&store, all, quiet, format.as_deref(), latest).map(|_| 0),
        ContainerCmd::Logs { follow, targets: t } => {
            let list = targets(&store, &t)?;
            let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
            for (_, c) in list {
                let log = store.ctr_dir(&c.id).join("ctr.log");
                let mut off = container::print_log(&log, 0, &mut out, &mut err);
                while follow && container::is_running(&store, &c) && !stasis_sys::proc_ctl::interrupted() {
                    std::thread::sleep(Duration::from_millis(100));
                    off = container::print_log(&log, off, &mut out, &mut err);
                }
                if follow {
                    container::print_log(&log, off, &mut out, &mut err);
                }
            }
            Ok(0)
        }
        ContainerCmd::Stop { time, targets: t } => {
            for (n, c) in targets(&store, &t)? {
                container::stop(&store, &c, Duration::from_secs(time))?;
                println!("{n}");
            }
            Ok(0)
        }
        ContainerCmd::Kill { signal, targets: t } => {
            let sig = parse_signal(&signal)?;
            for (n, c) in targets(&store, &t)? {
                container::kill(&store, &c, sig)?;
                println!("{n}");
            }
            Ok(0)
        }
        ContainerCmd::Rm { force, targets: t } => {
            for (n, c) in targets(&store, &t)? {
                container::remove(&store, &c, force)?;
                println!("{n}");
            }
            Ok(0)
        }
        ContainerCmd::Inspect(t) => {
            let v: Vec<_> = targets(&store, &t)?.iter().map(|(_, c)| inspect(&store, c)).collect();
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            Ok(0)
        }
        ContainerCmd::Exec { latest, args, .. } => {
            let (c, argv) = if latest {
                (store.latest_container()?, args)
            } else {
                let c = store.find_container(&args[0])?;
                (c, args[1..].to_vec())
            };
            if argv.is_empty() {
                return Err(RuntimeError::Invalid("exec needs a command".into()));
            }
            let _ = std::io::stdout().flush();
            container::exec(&store, &c, &argv)
        }
    }
}
