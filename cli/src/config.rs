//! `snapfs config check`: the daemon parses the configuration (it alone knows every key) and
//! reports each target, or the problem at its file and line; its answer and status pass through.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use crate::exit::Exit;
use crate::mount::{daemon_binary, not_found_hint};

pub fn check(config: Option<&Path>, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let daemon = daemon_binary();
    let mut cmd = Command::new(&daemon);
    cmd.arg("--check");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let result = cmd.output().map_err(|e| not_found_hint(e, &daemon))?;
    out.write_all(&result.stdout)?;
    std::io::stderr().write_all(&result.stderr)?;
    Ok(match result.status.code() {
        Some(0) => Exit::Success,
        Some(2) => Exit::Usage,
        _ => Exit::Failed,
    })
}
