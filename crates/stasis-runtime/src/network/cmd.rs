//! Running `ip`, `nft` and `nsenter`: capture stdout, turn a failure into a
//! [`NetError::Command`] that carries the command line and its stderr.

use std::io::Write;
use std::process::{Command, Stdio};

use super::NetError;

/// A command that failed: its line and its stderr (or why it did not run).
#[derive(Debug)]
pub(super) struct Failure {
    pub cmd: String,
    pub stderr: String,
}

impl Failure {
    /// Turns this into the error of container `id` doing `what`.
    pub fn into_err(self, id: &str, what: &str) -> NetError {
        NetError::Command { id: id.into(), what: what.into(), cmd: self.cmd, stderr: self.stderr }
    }
}

/// Runs `prog args`, feeding `stdin` if given; returns stdout on success.
pub(super) fn run(prog: &str, args: &[&str], stdin: Option<&str>) -> Result<String, Failure> {
    let mut line = prog.to_string();
    for a in args {
        line.push(' ');
        line.push_str(a);
    }
    if let Some(s) = stdin {
        // Batches are short: show them, so the error says which line failed.
        line.push_str(" <<< ");
        line.push_str(&s.trim_end().replace('\n', "; "));
    }
    let fail = |stderr: String| Failure { cmd: line.clone(), stderr };
    let mut cmd = Command::new(prog);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (are iproute2, nftables, util-linux installed?)"
        } else {
            ""
        };
        fail(format!("cannot run {prog}: {e}{hint}"))
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error shows up as the command's own failure below.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| fail(format!("waiting for {prog}: {e}")))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if stderr.is_empty() {
        stderr = format!("exited with {}", out.status);
    }
    Err(fail(stderr))
}
