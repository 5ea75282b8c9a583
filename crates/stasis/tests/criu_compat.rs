//! Stasis as a drop-in `criu` (root, real processes): with a `criu`
//! symlink to `stasis` first in PATH, Debian's runc and podman (`--runtime
//! runc`) checkpoint and restore containers through it.
//!
//! 1. runc: checkpoint, crit reads the images, restore on new stdio pipes,
//!    the counter goes on, hostname and mounts are back;
//! 2. runc: pre-dump (the container keeps running), dump on top of it
//!    (`--parent-path`), restore;
//! 3. podman: checkpoint and restore in place, the log goes on, `exec`
//!    works, the restored init is in podman's network namespace;
//! 4. podman: export to an archive, remove, import; `--print-stats`;
//! 5. podman: nginx with a published port and a non-root worker answers
//!    before and after;
//! 6. `criu` bad input on the command line and over RPC.
//!
//! Each test has its own runc state dir or podman store in its scratch
//! dir and leaves no process, container or mount behind. podman runs its
//! containers with its default seccomp profile, as users do (so the
//! engine must dump and restore seccomp filters), and with `--ulimit`s
//! at or below the hard limits: a host that withholds CAP_SYS_RESOURCE
//! (this VM) cannot restore rlimits above them.

mod common;
mod criu_common;
mod ctr_common;

use criu_common::*;
use serde_json::Value;
use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Checkpoints a running runc container; returns the last counter value
/// its (old) stdout saw, after checking that the container is gone.
fn runc_dump(rc: &Runc, out: &Stream, extra: &[&str], images: &Path, work: &Path) -> u64 {
    let pid = rc.pid();
    let t = Instant::now();
    let res = rc.checkpoint(extra, images, work);
    expect_ok(&res, "runc checkpoint", &[&work.join("dump.log")]);
    eprintln!("  runc checkpoint {} in {:?}", extra.join(" "), t.elapsed());
    assert!(common::wait_gone(pid, T), "the container's init {pid} still runs after the checkpoint");
    assert!(rc.state().is_none(), "runc still knows {} after the checkpoint", rc.id);
    assert!(out.wait_eof(T), "the old stdout pipe still has a writer after the checkpoint");
    let nums = out.numbers();
    assert_counts_from(&nums, 1, "before the checkpoint");
    *nums.last().expect("numbers before the checkpoint")
}

/// Restores and checks that the counter goes on from `last` on the new
/// stdout pipe; returns the restored init's pid.
fn runc_restore_counts_on(h: &common::Harness, rc: &Runc, images: &Path, work: &Path, last: u64) -> i32 {
    let t = Instant::now();
    let (out, _err) = rc.restore(images, work);
    let pid = rc.pid();
    h.track(pid);
    eprintln!("  runc restore in {:?}: init {pid}", t.elapsed());
    let nums = out.wait_numbers(3, "the restored container's new stdout");
    assert_counts_from(&nums, last + 1, "after the restore, on the new stdout pipe");
    pid
}

#[test]
fn runc_checkpoint_restore() {
    let Some(h) = common::start("criu-runc") else { return };
    if !have(&["runc", "/usr/bin/crit"]) {
        return;
    }
    let criu = CriuBin::new(&h);
    let hostname = "stasis-criu-host";
    let rc = Runc::new(&h, &criu, "cr1", hostname);
    let (out, _err) = rc.start();
    out.wait_numbers(5, "the container's stdout");
    let mounts_before = mountpoints(rc.pid());
    assert!(mounts_before.iter().any(|m| m.starts_with("/proc ")), "{mounts_before:?}");

    let (images, work) = (h.path("ck/img"), h.path("ck/work"));
    let last = runc_dump(&rc, &out, &[], &images, &work);
    let count_file = rc.bundle.join("rootfs/tmp/count");
    let count = |what: &str| -> u64 {
        fs::read_to_string(&count_file).unwrap_or_else(|e| panic!("{what}: {e}")).trim().parse().unwrap_or(0)
    };
    let c = count("/tmp/count after the checkpoint");
    assert!(c == last || c + 1 == last, "/tmp/count holds {c}, the last line was {last}");

    // CRIU's crit reads the images.
    let ps = crit(&["x".as_ref(), images.as_os_str(), "ps".as_ref()]);
    assert!(ps.lines().skip(1).any(|l| l.split_whitespace().last() == Some("sh")), "crit x ps:\n{ps}");
    let mnt = crit(&["decode".as_ref(), "-i".as_ref(), images.join("mountpoints-1.img").as_os_str()]);
    assert!(mnt.contains("\"/proc\""), "crit decode mountpoints-1.img:\n{mnt}");
    let uts = crit(&["decode".as_ref(), "-i".as_ref(), images.join("utsns-1.img").as_os_str()]);
    assert!(uts.contains(hostname), "crit decode utsns-1.img:\n{uts}");
    common::check_images(&images);

    let pid = runc_restore_counts_on(&h, &rc, &images, &h.path("ck/work-restore"), last);
    poll(T, "/tmp/count to go on after the restore", || (count("/tmp/count") > last).then_some(()));
    let ex = rc.run(&["exec", &rc.id, "hostname"]);
    expect_ok(&ex, "runc exec hostname", &[]);
    assert_eq!(ex.stdout.trim(), hostname, "the restored UTS namespace");
    assert_eq!(mountpoints(pid), mounts_before, "the restored init's mounts (points and options, in order)");
}

#[test]
fn runc_pre_dump_then_dump() {
    let Some(h) = common::start("criu-runc-pre") else { return };
    if !have(&["runc", "/usr/bin/crit"]) {
        return;
    }
    let criu = CriuBin::new(&h);
    let rc = Runc::new(&h, &criu, "cr2", "stasis-pre");
    let (out, _err) = rc.start();
    out.wait_numbers(5, "the container's stdout");
    let pid = rc.pid();

    let (pre, images) = (h.path("ck/pre"), h.path("ck/img"));
    let res = rc.checkpoint(&["--pre-dump"], &pre, &h.path("ck/w-pre"));
    expect_ok(&res, "runc checkpoint --pre-dump", &[&h.path("ck/w-pre/dump.log")]);
    assert!(pre.join("inventory.img").exists() && pre.join("pagemap-1.img").exists(), "pre-dump images");
    // The container keeps running and counting.
    assert_eq!(rc.pid(), pid, "the same init after the pre-dump");
    let n = out.numbers().len();
    out.wait_numbers(n + 3, "the container after the pre-dump");

    let last = runc_dump(&rc, &out, &["--parent-path", "../pre"], &images, &h.path("ck/w-dump"));
    let link = fs::read_link(images.join("parent")).expect("the images have a parent link");
    assert_eq!(link, Path::new("../pre"), "the parent link as runc named it");
    assert!(images.join("parent/inventory.img").exists(), "the parent link resolves");
    // Some pages are in the parent (CRIU's PE_PARENT flag): the pre-dump
    // was used.
    let pm: Value =
        serde_json::from_str(&crit(&["decode".as_ref(), "-i".as_ref(), images.join("pagemap-1.img").as_os_str()]))
            .expect("pagemap json");
    let in_parent = pm["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["flags"].as_u64().is_some_and(|f| f & 1 != 0))
        .count();
    assert!(in_parent > 0, "no pagemap entry of the dump is in the parent:\n{pm}");
    runc_restore_counts_on(&h, &rc, &images, &h.path("ck/w-restore"), last);
}

/// The busybox fixture as a podman image.
const BUSYBOX: &str = "localhost/stasis-criu-busybox:latest";

/// A podman store with the busybox fixture imported.
fn podman_with_busybox(h: &common::Harness, criu: &CriuBin) -> Podman {
    let pm = Podman::new(h, criu);
    pm.import(&ctr_common::fixtures().join("busybox.tar"), BUSYBOX, None);
    pm
}

/// `podman run -d --runtime runc` of the counter; its name.
fn podman_counter(pm: &Podman, name: &str) -> String {
    let script = counter_script(&unique("podman-counter"), false);
    let mut args = vec!["run", "-d", "--runtime", "runc"];
    args.extend(ULIMITS);
    args.extend(["--name", name, BUSYBOX, "sh", "-c", &script]);
    pm.run(&args);
    pm.wait_log_numbers(name, 5);
    name.to_string()
}

#[test]
fn podman_checkpoint_restore_in_place() {
    let Some(h) = common::start("criu-podman") else { return };
    if !have(&["runc", "podman", "nsenter", "ip"]) {
        return;
    }
    let criu = CriuBin::new(&h);
    let mut pm = podman_with_busybox(&h, &criu);
    let name = podman_counter(&pm, &unique("pb"));
    let pid0 = pm.pid(&name);
    let mounts_before = mountpoints(pid0);

    let t = Instant::now();
    pm.run(&["container", "checkpoint", &name]);
    eprintln!("  podman checkpoint in {:?}", t.elapsed());
    let st = pm.inspect(&name)["State"].clone();
    assert_eq!(st["Status"], "exited", "{st}");
    assert_eq!(st["Checkpointed"], true, "{st}");
    assert!(common::wait_gone(pid0, T), "the container's init {pid0} still runs after the checkpoint");
    let stopped = pm.log_numbers(&name);
    assert_counts_from(&stopped, 1, "the log before the checkpoint");
    sleep(Duration::from_millis(600));
    assert_eq!(pm.log_numbers(&name), stopped, "the log stops growing while checkpointed");

    let t = Instant::now();
    pm.run(&["container", "restore", &name]);
    eprintln!("  podman restore in {:?}", t.elapsed());
    let c = pm.inspect(&name);
    assert_eq!(c["State"]["Status"], "running", "{}", c["State"]);
    let pid = pm.pid(&name);
    h.track(pid);
    let all = pm.wait_log_numbers(&name, stopped.len() + 3);
    assert_counts_from(&all, 1, "the log across checkpoint and restore (no restart, no gap)");

    let hostname = c["Config"]["Hostname"].as_str().expect("hostname");
    assert_eq!(pm.run(&["exec", &name, "hostname"]).trim(), hostname, "podman exec hostname");
    // podman's bind mounts (/etc/hostname, /etc/hosts, ...) are back.
    assert_eq!(mountpoints(pid), mounts_before, "the restored init's mounts (points and options, in order)");
    assert_eq!(pm.run(&["exec", &name, "cat", "/etc/hostname"]).trim(), hostname, "/etc/hostname");

    // The restored init is in the network namespace podman made for it.
    let net = format!("/proc/{pid}/ns/net");
    assert_ne!(ns_ino(&net), ns_ino("/proc/self/ns/net"), "the restored init is in the host's netns");
    let sandbox = c["NetworkSettings"]["SandboxKey"].as_str().expect("SandboxKey");
    assert_eq!(ns_ino(&net), ns_ino(sandbox), "the restored init is not in podman's netns {sandbox}");
    let ip = c["NetworkSettings"]["IPAddress"].as_str().expect("IPAddress");
    assert!(!ip.is_empty(), "{}", c["NetworkSettings"]);
    let pid_s = pid.to_string();
    let addr = run_timeout(
        Command::new("nsenter").args(["-t", &pid_s, "-n", "ip", "-4", "-o", "addr", "show", "dev", "eth0"]),
        T,
    );
    assert!(addr.ok(), "nsenter ip addr: {}", addr.stderr);
    assert!(
        addr.stdout.contains(&format!("inet {ip}/")),
        "eth0 of the restored container lacks {ip}:\n{}",
        addr.stdout
    );
    pm.teardown();
}

/// `criu_statistics.KEY` of podman's `--print-stats` output.
fn criu_stat(stats: &Value, key: &str) -> u64 {
    stats["container_statistics"][0]["criu_statistics"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no criu_statistics.{key} in {stats}"))
}

#[test]
fn podman_export_import() {
    let Some(h) = common::start("criu-podman-export") else { return };
    if !have(&["runc", "podman", "tar"]) {
        return;
    }
    let criu = CriuBin::new(&h);
    let mut pm = podman_with_busybox(&h, &criu);
    let name = podman_counter(&pm, &unique("pe"));
    let pid0 = pm.pid(&name);
    let archive = h.path("export.tar.zst");
    let a = archive.display().to_string();

    let out = pm.run(&["container", "checkpoint", "--print-stats", "-e", &a, &name]);
    let stats: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("--print-stats: {e}:\n{out}"));
    for k in ["freezing_time", "frozen_time"] {
        assert!(criu_stat(&stats, k) > 0, "checkpoint {k}: {stats}");
    }
    assert!(common::wait_gone(pid0, T), "the container's init {pid0} still runs after the checkpoint");
    let listing = run_timeout(Command::new("tar").arg("-tf").arg(&archive), T);
    assert!(
        listing.stdout.lines().any(|l| l.trim_start_matches("./") == "checkpoint/inventory.img"),
        "the archive lacks the images:\n{}",
        listing.stdout
    );
    let stopped = pm.log_numbers(&name);
    assert_counts_from(&stopped, 1, "the log before the export");
    pm.run(&["rm", "-f", "-t", "0", &name]);
    assert!(!pm.try_run(&["container", "exists", &name]).ok(), "{name} still exists after rm -f");

    let out = pm.run(&["container", "restore", "--print-stats", "-i", &a]);
    let stats: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("--print-stats: {e}:\n{out}"));
    assert!(criu_stat(&stats, "restore_time") > 0, "restore_time: {stats}");
    let pid = pm.pid(&name);
    h.track(pid);
    let all = pm.wait_log_numbers(&name, stopped.len() + 3);
    assert_counts_from(&all, 1, "the log across export and import (no restart, no gap)");
    pm.teardown();
}

/// nginx with a published port, its worker as www-data (the fixture's
/// config says `user root;`: the container's command edits it first):
/// 200, checkpoint, nothing answers, restore, 200 and the same page.
/// With `access_log`, also that the access log goes on after the restore.
fn nginx_cycle(test: &str, access_log: bool) {
    let Some(h) = common::start(test) else { return };
    if !have(&["runc", "podman", "curl"]) {
        return;
    }
    let criu = CriuBin::new(&h);
    let mut pm = Podman::new(&h, &criu);
    let image = "localhost/stasis-criu-nginx:latest";
    pm.import(&ctr_common::fixtures().join("nginx.tar"), image, Some(r#"CMD ["/usr/sbin/nginx"]"#));
    let name = unique("ng");
    let port = free_port();
    let publish = format!("{port}:80");
    let cmd = "busybox sed -i 's/^user root;/user www-data;/' /etc/nginx/nginx.conf && exec /usr/sbin/nginx";
    let mut args = vec!["run", "-d", "--runtime", "runc"];
    args.extend(ULIMITS);
    args.extend(["-p", &publish, "--name", &name, image, "/bin/sh", "-c", cmd]);
    pm.run(&args);
    let url = format!("http://127.0.0.1:{port}/");
    let page = wait_200(&url);
    assert!(page.contains("hello from stasis nginx"), "{page}");
    let www_data_worker = |pid: i32| children(pid).into_iter().any(|c| uid_of(c) == Some(33));
    let pid0 = pm.pid(&name);
    poll(T, "an nginx worker running as www-data", || www_data_worker(pid0).then_some(()));
    let gets = |pm: &Podman| pm.logs(&name).matches("\"GET / HTTP").count();
    let before = if access_log { poll(T, "the access log line", || Some(gets(&pm)).filter(|n| *n > 0)) } else { 0 };

    pm.run(&["container", "checkpoint", &name]);
    assert!(common::wait_gone(pid0, T), "nginx {pid0} still runs after the checkpoint");
    assert_eq!(http_get(&url).0, "000", "nothing answers while checkpointed");

    pm.run(&["container", "restore", &name]);
    let pid = pm.pid(&name);
    h.track(pid);
    assert_eq!(wait_200(&url), page, "the same page after the restore");
    assert!(www_data_worker(pid), "no www-data worker after the restore");
    if access_log {
        let end = Instant::now() + T;
        while gets(&pm) <= before {
            assert!(Instant::now() < end, "no access log line after the restore; the log:\n{}", pm.logs(&name));
            sleep(Duration::from_millis(100));
        }
    }
    pm.teardown();
}

#[test]
fn podman_nginx_published_port() {
    nginx_cycle("criu-podman-nginx", false);
}

/// nginx opens its access log as /dev/stdout, a second open file of the
/// stdout pipe that runc hands over (inherit_fd): it must go to the new
/// pipe after a restore, not to a fresh pipe nobody reads.
#[test]
fn podman_nginx_access_log_after_restore() {
    nginx_cycle("criu-podman-nginx-log", true);
}

/// Runs `stasis criu ARGS`.
fn criu_cli(args: &[&OsStr]) -> common::Out {
    run_timeout(Command::new(common::stasis_bin()).arg("criu").args(args), T)
}

/// The RPC client: VERSION, then a DUMP with lazy_pages of a sleeping
/// child (it must be refused before anything is done to the child).
const RPC_CLIENT: &str = r#"
import json, os, socket, subprocess, sys
sys.path.insert(0, '/usr/lib/python3/dist-packages')
from pycriu import rpc_pb2 as rpc

criu, images = sys.argv[1], sys.argv[2]

def call(req):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    p = subprocess.Popen([criu, 'swrk', str(b.fileno())], pass_fds=(b.fileno(),))
    b.close()
    a.settimeout(60)
    a.send(req.SerializeToString())
    resp = rpc.criu_resp()
    resp.ParseFromString(a.recv(1 << 20))
    a.close()
    return resp, p.wait(timeout=60)

out = {}
req = rpc.criu_req()
req.type = rpc.VERSION
r, rc = call(req)
out['version'] = {'success': r.success, 'type_ok': r.type == rpc.VERSION,
                  'major': r.version.major_number, 'minor': r.version.minor_number, 'exit': rc}

victim = subprocess.Popen(['sleep', '60'])
fd = os.open(images, os.O_DIRECTORY)
req = rpc.criu_req()
req.type = rpc.DUMP
req.opts.images_dir_fd = fd
req.opts.pid = victim.pid
req.opts.leave_running = True
req.opts.lazy_pages = True
r, rc = call(req)
out['dump'] = {'success': r.success, 'type_ok': r.type == rpc.DUMP, 'errmsg': r.cr_errmsg, 'exit': rc,
               'victim_alive': victim.poll() is None, 'files': os.listdir(images)}
victim.kill()
victim.wait()
print(json.dumps(out))
"#;

#[test]
fn criu_cli_bad_input() {
    let Some(h) = common::start("criu-cli") else { return };
    let criu = CriuBin::new(&h);
    let d = h.path("d");

    // An option we do not honour: refused in one line that names it, and
    // nothing is done to the tree.
    let mut victim = Command::new("sleep").arg("60").spawn().expect("spawn sleep");
    let vpid = common::pid_of(&victim);
    h.track(vpid);
    let vp = vpid.to_string();
    let out =
        criu_cli(&["dump".as_ref(), "--lazy-pages".as_ref(), "-t".as_ref(), vp.as_ref(), "-D".as_ref(), d.as_os_str()]);
    out.assert_one_line_error("criu dump --lazy-pages");
    assert!(out.stderr.contains("--lazy-pages"), "the error names the option: {}", out.stderr);
    assert!(common::alive(vpid), "the refused dump touched process {vpid}");
    assert!(!d.join("inventory.img").exists());
    let _ = victim.kill();
    let _ = victim.wait();

    let out = criu_cli(&["frobnicate".as_ref()]);
    out.assert_one_line_error("criu frobnicate");
    assert!(out.stderr.contains("frobnicate"), "{}", out.stderr);

    // --version, through the `criu` name as runc and podman call it.
    for out in [criu_cli(&["--version".as_ref()]), run_timeout(Command::new(criu.criu()).arg("--version"), T)] {
        assert!(out.ok(), "criu --version: {}", out.stderr);
        let first = out.stdout.lines().next().unwrap_or_default();
        let v = first.strip_prefix("Version: ").unwrap_or_else(|| panic!("first line {first:?}"));
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or_else(|_| panic!("version {v:?}")));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        assert!((major, minor) >= (3, 11), "podman needs CRIU >= 3.11, we say {v}");
    }
    let out = criu_cli(&["check".as_ref()]);
    assert!(out.ok(), "criu check: {} {}", out.stdout, out.stderr);

    // Like CRIU, the images directory must exist; none is made.
    let missing = h.path("no-such-dir");
    let out = criu_cli(&["dump".as_ref(), "-t".as_ref(), "999999".as_ref(), "-D".as_ref(), missing.as_os_str()]);
    out.assert_one_line_error("criu dump -D missing");
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    assert!(!missing.exists(), "a refused dump created its images directory");

    // A tree that does not exist (pid_max is at most 4194304).
    fs::create_dir_all(&d).expect("mkdir d");
    let out = criu_cli(&["dump".as_ref(), "-t".as_ref(), "999999".as_ref(), "-D".as_ref(), d.as_os_str()]);
    out.assert_one_line_error("criu dump -t 999999");
    assert!(!out.ok(), "dump of a missing pid succeeded");
    assert!(out.stderr.contains("999999"), "the error names the pid: {}", out.stderr);
    assert!(!d.join("inventory.img").exists(), "a failed dump left an inventory");

    // RPC (as runc speaks it): VERSION, and lazy_pages refused by name.
    let script = h.path("rpc_client.py");
    fs::write(&script, RPC_CLIENT).expect("write rpc client");
    let rpc_dir = h.path("rpc-images");
    fs::create_dir_all(&rpc_dir).expect("mkdir");
    let out = run_timeout(Command::new(common::python3()).arg(&script).arg(criu.criu()).arg(&rpc_dir), T);
    assert!(out.ok(), "rpc client failed: {}\n{}", out.stdout, out.stderr);
    let r: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    let v = &r["version"];
    assert!(v["success"] == true && v["type_ok"] == true && v["major"] == 4, "VERSION: {v}");
    let dump = &r["dump"];
    assert_eq!(dump["success"], false, "DUMP with lazy_pages: {dump}");
    assert_eq!(dump["type_ok"], true, "{dump}");
    assert!(dump["errmsg"].as_str().unwrap_or_default().contains("lazy_pages"), "{dump}");
    assert_eq!(dump["victim_alive"], true, "the refused RPC dump touched the process: {dump}");
    assert!(!rpc_dir.join("inventory.img").exists(), "{dump}");

    // Restoring a container's images (own mount namespace) needs --root.
    if !have(&["runc"]) {
        return;
    }
    let rc = Runc::new(&h, &criu, "cr6", "stasis-cli");
    let (out, _err) = rc.start();
    out.wait_numbers(2, "the container's stdout");
    let images = h.path("ck/img");
    runc_dump(&rc, &out, &[], &images, &h.path("ck/work"));
    let res = criu_cli(&["restore".as_ref(), "-d".as_ref(), "-D".as_ref(), images.as_os_str()]);
    assert!(!res.ok(), "restore without --root succeeded: {}", res.stderr);
    assert!(res.stderr.contains("--root"), "the error should mention --root: {}", res.stderr);
    let left = procs_with(&rc.marker);
    assert!(left.is_empty(), "a refused restore left processes {left:?}");
}

/// `runc restore` in the foreground waits for the restored init as for its
/// own: runc is a child subreaper, so the init (a child of `criu swrk`)
/// becomes runc's when `criu swrk` exits, and runc returns once it dies.
#[test]
fn runc_foreground_restore_waits_for_the_init() {
    let Some(h) = common::start("criu-runc-fg") else { return };
    if !have(&["runc"]) {
        return;
    }
    let criu = CriuBin::new(&h);
    let rc = Runc::new(&h, &criu, "cr3", "stasis-fg");
    let (out, _err) = rc.start();
    out.wait_numbers(3, "the container's stdout");
    let (images, work) = (h.path("fg/img"), h.path("fg/work"));
    let last = runc_dump(&rc, &out, &[], &images, &work);

    let mut c = rc.cmd(&["restore", "--image-path"]);
    c.arg(&images).arg("--work-path").arg(h.path("fg/work-restore")).arg("--bundle").arg(&rc.bundle).arg(&rc.id);
    let mut runc = c
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn runc restore");
    let new_out = Stream::spawn(runc.stdout.take().expect("stdout"));
    let nums = new_out.wait_numbers(3, "the foreground-restored container's stdout");
    assert_counts_from(&nums, last + 1, "after a foreground restore");
    let pid = rc.pid();
    h.track(pid);
    let ppid = common::proc_stat(pid).map(|s| s.1).unwrap_or(0);
    assert_eq!(ppid, runc.id() as i32, "the restored init {pid} is runc's child once criu swrk is gone");
    assert!(
        common::wait_exit(&mut runc, Duration::from_millis(500)).is_none(),
        "runc restore returned while the container runs"
    );

    expect_ok(&rc.run(&["kill", &rc.id, "KILL"]), "runc kill", &[]);
    let status = common::wait_exit(&mut runc, T).unwrap_or_else(|| {
        let _ = runc.kill();
        panic!("runc restore did not return after its container died")
    });
    assert!(!status.success(), "runc restore reports the killed init's status: {status:?}");
    assert!(common::wait_gone(pid, T), "the init {pid} is gone");
}

/// A terminal container (`podman run -t`): runc binds the pty slave onto
/// `/dev/console` and conmon holds the master. The restore makes a new
/// pty for that bind, gives its slave to the init's fds 0-2 and its master
/// to conmon (orphan-pts-master): the log goes on through it.
#[test]
fn podman_terminal_container() {
    let Some(h) = common::start("criu-podman-tty") else { return };
    if !have(&["runc", "podman"]) {
        return;
    }
    let criu = CriuBin::new(&h);
    let mut pm = podman_with_busybox(&h, &criu);
    let name = unique("pt");
    let script = counter_script(&unique("podman-tty"), false);
    let mut args = vec!["run", "-dt", "--runtime", "runc"];
    args.extend(ULIMITS);
    args.extend(["--name", &name, BUSYBOX, "sh", "-c", &script]);
    pm.run(&args);
    pm.wait_log_numbers(&name, 5);
    let pid0 = pm.pid(&name);
    let tty =
        |pid: i32| fs::read_link(format!("/proc/{pid}/fd/1")).map(|p| p.display().to_string()).unwrap_or_default();
    assert!(tty(pid0).starts_with("/dev/pts/"), "fd 1 of a -t container: {}", tty(pid0));

    pm.run(&["container", "checkpoint", &name]);
    assert!(common::wait_gone(pid0, T), "the container's init {pid0} still runs after the checkpoint");
    let stopped = pm.log_numbers(&name);
    pm.run(&["container", "restore", &name]);
    let pid = pm.pid(&name);
    h.track(pid);
    let all = pm.wait_log_numbers(&name, stopped.len() + 3);
    assert_counts_from(&all, 1, "the log of a terminal container across checkpoint and restore");
    assert!(tty(pid).starts_with("/dev/pts/"), "fd 1 after the restore: {}", tty(pid));
    assert!(
        mountpoints(pid).iter().any(|m| m.starts_with("/dev/console ")),
        "/dev/console is not mounted in the restored container"
    );
    assert_eq!(pm.run(&["exec", &name, "echo", "hi"]).trim(), "hi", "podman exec");
    pm.teardown();
}
