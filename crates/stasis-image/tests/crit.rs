//! Outside check of the format: every file of a realistic synthetic image
//! set must decode with CRIU's own `crit` (Debian's `criu` package), and
//! `crit x DIR ps|mems|fds` must walk the set. Python protobuf refuses
//! messages that lack `required` fields, so this also proves we fill them.

mod common;

use std::process::Command;

fn crit_available() -> bool {
    match Command::new("crit").arg("--help").output() {
        Ok(o) => o.status.success(),
        Err(_) => false,
    }
}

fn run_crit(args: &[&str]) -> String {
    let out = Command::new("crit").args(args).output().expect("run crit");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "crit {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn crit_decodes_every_image() {
    if !crit_available() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "crit not installed, and CI=true forbids skipping");
        println!("SKIP: crit not installed");
        return;
    }
    let tmp = common::TempDir::new("crit");
    let dir = common::write_image_set(&tmp.path().join("images"));

    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert!(names.len() >= 20, "{names:?}");
    for name in &names {
        if name.starts_with("pages-") {
            continue; // raw page data; crit has no decoder for it
        }
        let path = dir.join(name);
        let json = run_crit(&["decode", "--pretty", "-i", path.to_str().unwrap()]);
        assert!(json.contains("\"magic\""), "{name}: {json}");
    }

    let decoded = run_crit(&["decode", "-i", dir.join("pipes-data.img").to_str().unwrap()]);
    assert!(decoded.contains("aGVsbG8gdGhyb3VnaCB0aGUgcGlwZQo="), "pipe payload not seen: {decoded}");
    // Both connections of tcp-streams.img, each with its queues.
    let decoded = run_crit(&["decode", "-i", dir.join("tcp-streams.img").to_str().unwrap()]);
    assert_eq!(decoded.matches("\"inq_seq\"").count(), 2, "{decoded}");
    assert!(decoded.contains("b3V0") && decoded.contains("c2Vjb25k"), "send queues not seen: {decoded}");
    let decoded = run_crit(&["decode", "-i", dir.join("pagemap-100.img").to_str().unwrap()]);
    assert!(decoded.contains("\"pages_id\": 1"), "{decoded}");

    let d = dir.to_str().unwrap();
    let ps = run_crit(&["x", d, "ps"]);
    assert!(ps.contains("server") && ps.contains("worker"), "{ps}");
    let mems = run_crit(&["x", d, "mems"]);
    assert!(mems.contains("/usr/bin/server") && mems.contains("[stack]"), "{mems}");
    let fds = run_crit(&["x", d, "fds"]);
    assert!(fds.contains("/var/log/server.log") && fds.contains("pipe[4242]") && fds.contains("/srv"), "{fds}");
}

#[test]
fn proto_layout_matches_crit() {
    if !crit_available() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "crit not installed, and CI=true forbids skipping");
        println!("SKIP: crit not installed");
        return;
    }
    // crit's interpreter is the one that has pycriu and protobuf.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/compare_layout.py");
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run /usr/bin/python3");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(stasis_image::DESCRIPTOR_SET).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "layout differs from crit's:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("checked"), "{stdout}");
}
