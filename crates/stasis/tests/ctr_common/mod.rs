//! The container test harness shared by `containers.rs` and
//! `ctr_checkpoint.rs`: fixture images, a store per test ("host", also in a
//! second network namespace), and checks that a container left nothing on
//! the host.
#![allow(dead_code)]

use crate::common::{self, run_stasis, Harness, Out};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const T: Duration = Duration::from_secs(120);

/// The fixture images, built once per test run.
pub fn fixtures() -> PathBuf {
    static BUILD: Once = Once::new();
    let dir = common::repo_root().join("target/fixtures");
    BUILD.call_once(|| {
        let script = common::repo_root().join("tests/fixtures/build-images.sh");
        let out = Command::new("bash").arg(&script).output().expect("run build-images.sh");
        assert!(out.status.success(), "{} failed:\n{}", script.display(), String::from_utf8_lossy(&out.stderr));
    });
    dir
}

/// One test's store (`--root`, `--runroot`) inside the harness dir.
pub struct Host {
    /// The harness (scratch dir, test lock); the second host shares the
    /// first one's.
    pub h: Option<Harness>,
    pub root: PathBuf,
    pub runroot: PathBuf,
    /// `ip netns exec NS` prefix for a second host.
    pub netns: Option<String>,
}

impl Host {
    pub fn new(name: &str) -> Option<Host> {
        let h = common::start(name)?;
        let (root, runroot) = (h.path("root"), h.path("run"));
        Some(Host { h: Some(h), root, runroot, netns: None })
    }

    pub fn other(&self, name: &str, netns: &str) -> Host {
        let h = self.h.as_ref().expect("first host");
        Host {
            h: None,
            root: h.path(&format!("{name}-root")),
            runroot: h.path(&format!("{name}-run")),
            netns: Some(netns.to_string()),
        }
    }

    pub fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        if let Some(ns) = &self.netns {
            v.extend(["ip", "netns", "exec", ns].map(String::from));
            v.push(common::stasis_bin());
        }
        v.extend(["--root".into(), self.root.display().to_string()]);
        v.extend(["--runroot".into(), self.runroot.display().to_string()]);
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    pub fn try_run(&self, args: &[&str]) -> Out {
        let argv = self.argv(args);
        if self.netns.is_some() {
            let out = Command::new(&argv[0]).args(&argv[1..]).output().expect("ip netns exec");
            return Out {
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into(),
                stderr: String::from_utf8_lossy(&out.stderr).into(),
            };
        }
        run_stasis(&argv, T)
    }

    /// [`try_run`](Host::try_run) with extra environment (e.g. `STASIS_FAULT`).
    pub fn try_run_env(&self, env: &[(&str, &str)], args: &[&str]) -> Out {
        let mut argv = self.argv(args);
        if self.netns.is_none() {
            argv.insert(0, common::stasis_bin());
        }
        let out = Command::new(&argv[0]).args(&argv[1..]).envs(env.iter().copied()).output().expect("run stasis");
        Out {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = self.try_run(args);
        out.assert_ok(&args.join(" "));
        out.stdout
    }

    pub fn fails(&self, args: &[&str]) {
        self.try_run(args).assert_one_line_error(&args.join(" "));
    }

    pub fn import(&self, what: &str) {
        let f = fixtures();
        match what {
            "busybox" => self.run(&["import", &f.join("busybox.tar").display().to_string(), "busybox"]),
            "dirtier" => self.run(&["import", &f.join("dirtier.tar").display().to_string(), "dirtier"]),
            _ => self.run(&[
                "import",
                &f.join("nginx.tar").display().to_string(),
                "nginx",
                "--change",
                r#"CMD ["/usr/sbin/nginx"]"#,
            ]),
        };
    }

    pub fn ps(&self) -> Vec<Value> {
        let out = self.run(&["ps", "-a", "--format", "json"]);
        serde_json::from_str::<Value>(&out).expect("ps json").as_array().cloned().unwrap_or_default()
    }

    pub fn ps_one(&self, name: &str) -> Value {
        self.ps().into_iter().find(|c| c["Names"][0] == name).unwrap_or_else(|| panic!("{name} not in ps -a"))
    }

    pub fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.run(&["inspect", name])).expect("inspect json");
        v[0].clone()
    }

    pub fn logs(&self, name: &str) -> String {
        self.run(&["logs", name])
    }

    /// Waits until `pred` holds on ps's entry for `name`.
    pub fn wait_state(&self, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let c = self.ps_one(name);
            if pred(&c) {
                return c;
            }
            assert!(Instant::now() < end, "{name} never became {what}: {c}");
            sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let out = self.try_run(&["ps", "-a", "-q"]);
        for id in out.stdout.split_whitespace() {
            let _ = self.try_run(&["rm", "-f", id]);
        }
    }
}

/// What a running container holds on the host.
pub struct Held {
    pub id: String,
    pub cgroups: Vec<String>,
    pub veth: Option<String>,
}

pub fn held(c: &Value) -> Held {
    Held {
        id: c["Id"].as_str().expect("id").to_string(),
        cgroups: c["Cgroups"].as_array().expect("cgroups").iter().map(|p| p.as_str().unwrap().to_string()).collect(),
        veth: c["NetworkSettings"]["State"]["host_veth"].as_str().map(String::from),
    }
}

pub fn link_exists(name: &str, netns: Option<&str>) -> bool {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    cmd.args(["link", "show", name]).output().is_ok_and(|o| o.status.success())
}

pub fn nft_ruleset(netns: Option<&str>) -> String {
    let out = match netns {
        Some(ns) => Command::new("ip").args(["netns", "exec", ns, "nft", "list", "ruleset"]).output(),
        None => Command::new("nft").args(["list", "ruleset"]).output(),
    };
    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
}

/// Asserts that nothing of the container is left on the host.
pub fn assert_released(x: &Held, netns: Option<&str>) {
    let end = Instant::now() + Duration::from_secs(5);
    let mountinfo = || std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    loop {
        let cg_left: Vec<&String> =
            x.cgroups.iter().filter(|p| netns.is_none() && Path::new(p.as_str()).exists()).collect();
        let veth_left = x.veth.as_deref().is_some_and(|v| link_exists(v, netns));
        let rules_left = nft_ruleset(netns).contains(&x.id[..12]);
        let mount_left = mountinfo().contains(&x.id);
        if cg_left.is_empty() && !veth_left && !rules_left && !mount_left {
            return;
        }
        assert!(
            Instant::now() < end,
            "container {} left: cgroups {cg_left:?}, veth {veth_left} ({:?}), nft rules {rules_left}, mounts {mount_left}",
            x.id,
            x.veth
        );
        sleep(Duration::from_millis(100));
    }
}

pub fn curl(url: &str, netns: Option<&str>) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let out = match netns {
            Some(ns) => Command::new("ip").args(["netns", "exec", ns, "curl", "-sS", "-m", "3", url]).output(),
            None => Command::new("curl").args(["-sS", "-m", "3", url]).output(),
        }
        .expect("run curl");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(Instant::now() < end, "curl {url} failed: {}", String::from_utf8_lossy(&out.stderr));
        sleep(Duration::from_millis(200));
    }
}

/// HTTP status of a GET (000 when nothing answers).
pub fn status(url: &str, netns: Option<&str>) -> String {
    let mut argv: Vec<&str> = Vec::new();
    if let Some(ns) = netns {
        argv.extend(["ip", "netns", "exec", ns]);
    }
    argv.extend(["curl", "-s", "-m", "2", "-o", "/dev/null", "-w", "%{http_code}", url]);
    let out = Command::new(argv[0]).args(&argv[1..]).output().expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until the URL answers 200 (the restored service is reachable).
pub fn wait_200(url: &str, netns: Option<&str>) {
    let end = Instant::now() + Duration::from_secs(10);
    while status(url, netns) != "200" {
        assert!(Instant::now() < end, "{url} never answered 200");
        sleep(Duration::from_millis(50));
    }
}

/// Removes a network namespace on drop.
pub struct Netns(pub String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
