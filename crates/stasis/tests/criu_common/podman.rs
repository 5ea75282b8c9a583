//! podman (`--runtime runc`) on a store of its own, for `criu_compat.rs`.

use super::*;

/// podman (with `--runtime runc`) on a store of its own: `--root`,
/// `--runroot`, `--tmpdir` in the scratch dir. On drop (or
/// [`Podman::teardown`]) every container and image is removed and
/// nothing of the store stays mounted.
pub struct Podman {
    pub root: PathBuf,
    pub runroot: PathBuf,
    pub tmpdir: PathBuf,
    /// The short dir holding runroot and tmpdir (outside the scratch dir).
    short: Option<PathBuf>,
    path_env: OsString,
    torn_down: bool,
}

/// The flags this VM needs (no CAP_SYS_RESOURCE: rlimits above the hard
/// limit could not be restored).
pub const ULIMITS: [&str; 4] = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"];

impl Podman {
    pub fn new(h: &Harness, criu: &CriuBin) -> Podman {
        // podman refuses a runroot longer than 50 characters (conmon's
        // socket paths): it and the tmpdir go into a short dir of their own.
        let short = PathBuf::from(format!("/tmp/{}", unique("stasis-pm")));
        Podman {
            root: h.path("podman-root"),
            runroot: short.join("run"),
            tmpdir: short.join("tmp"),
            short: Some(short),
            path_env: criu.path_env(),
            torn_down: false,
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .arg("--tmpdir")
            .arg(&self.tmpdir)
            .args(["--cgroup-manager", "cgroupfs"])
            .args(args)
            .env("PATH", &self.path_env);
        c
    }

    pub fn try_run(&self, args: &[&str]) -> Out {
        run_timeout(&mut self.cmd(args), T)
    }

    /// Runs and asserts success; stdout. On failure, the logs of the
    /// containers' last dump and restore are in the message.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.try_run(args);
        if !out.ok() {
            let logs = self.criu_logs();
            let refs: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
            expect_ok(&out, &format!("podman {}", args.join(" ")), &refs);
        }
        out.stdout
    }

    /// dump.log and restore.log of every container of the store.
    fn criu_logs(&self) -> Vec<PathBuf> {
        let dir = self.root.join("overlay-containers");
        let Ok(rd) = fs::read_dir(&dir) else { return Vec::new() };
        let mut v = Vec::new();
        for e in rd.filter_map(|e| e.ok()) {
            for f in ["dump.log", "restore.log"] {
                let p = e.path().join("userdata").join(f);
                if p.exists() {
                    v.push(p);
                }
            }
        }
        v
    }

    /// `podman import TAR IMAGE` (with `--change CHANGE`).
    pub fn import(&self, tar: &Path, image: &str, change: Option<&str>) {
        let t = tar.display().to_string();
        let mut args = vec!["import"];
        if let Some(c) = change {
            args.extend(["--change", c]);
        }
        args.extend([t.as_str(), image]);
        self.run(&args);
    }

    pub fn inspect(&self, name: &str) -> Value {
        let v: Value =
            serde_json::from_str(&self.run(&["inspect", "--type", "container", name])).expect("inspect json");
        v[0].clone()
    }

    pub fn logs(&self, name: &str) -> String {
        self.run(&["logs", name])
    }

    pub fn log_numbers(&self, name: &str) -> Vec<u64> {
        numbers(&self.logs(name))
    }

    /// Waits until the container's log holds at least `n` numbers.
    pub fn wait_log_numbers(&self, name: &str, n: usize) -> Vec<u64> {
        poll(T, &format!("{n} numbers in the log of {name}"), || {
            let v = self.log_numbers(name);
            (v.len() >= n).then_some(v)
        })
    }

    /// The host pid of a running container's init.
    pub fn pid(&self, name: &str) -> i32 {
        let c = self.inspect(name);
        assert_eq!(c["State"]["Status"], "running", "{name}: {}", c["State"]);
        c["State"]["Pid"].as_i64().expect("pid") as i32
    }

    /// Processes whose command line names this store (conmon, podman's
    /// exit command, ...).
    fn store_procs(&self) -> Vec<i32> {
        procs_with(&self.root.display().to_string())
    }

    /// Removes every container and image; fails if a process, a mount or
    /// a container of the store is left.
    pub fn teardown(&mut self) {
        let problems = self.cleanup();
        assert!(problems.is_empty(), "the podman store left: {}", problems.join("; "));
    }

    /// Removes every container and image, unmounts and deletes the store;
    /// what was left behind, if anything.
    fn cleanup(&mut self) -> Vec<String> {
        self.torn_down = true;
        let mut problems = Vec::new();
        for args in [&["rm", "-fa", "-t", "0"][..], &["rmi", "-af"]] {
            match try_run_timeout(&mut self.cmd(args), T) {
                Ok(o) if o.ok() => {}
                Ok(o) => problems.push(format!("podman {} failed: {}", args.join(" "), o.stderr.trim())),
                Err(e) => problems.push(e),
            }
        }
        // conmon and its exit command (`podman container cleanup`) end on
        // their own once the containers are gone.
        let end = Instant::now() + T;
        while !self.store_procs().is_empty() && Instant::now() < end {
            common::reap_orphans();
            sleep(Duration::from_millis(100));
        }
        let procs = self.store_procs();
        if !procs.is_empty() {
            problems.push(format!("processes {procs:?}"));
            kill_marked(&self.root.display().to_string());
        }
        let mut mounts = Vec::new();
        for d in [&self.root, &self.runroot, &self.tmpdir] {
            mounts.extend(host_mounts_under(d));
        }
        if !mounts.is_empty() {
            problems.push(format!("mounts {mounts:?}"));
            // Deepest first.
            mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in &mounts {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
        for d in [&self.root, &self.runroot, &self.tmpdir].into_iter().chain(self.short.as_ref()) {
            let _ = fs::remove_dir_all(d);
        }
        common::reap_orphans();
        problems
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if !self.torn_down {
            let problems = self.cleanup();
            if !problems.is_empty() {
                eprintln!("podman store cleanup: {}", problems.join("; "));
            }
        }
    }
}
