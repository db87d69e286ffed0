//! `snapfs rm SNAPSHOT`: delete a snapshot, after asking.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::Path;

use snapfs_control::paths::Paths;
use snapfs_control::wire::{Request, Response};

use crate::exit::{Exit, usage};
use crate::{daemon, target};

pub fn run(paths: &Paths, snapshot: &Path, yes: bool, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let r = target::resolve(paths, snapshot)?;
    let name = r.snapshot()?;
    let shown = format!("{}/snapshots/{name}", r.target);
    if !yes {
        // Nobody can answer without a terminal; a script must say --yes.
        if !io::stdin().is_terminal() {
            return Err(usage(format!(
                "not removing {shown} without confirmation: pass --yes"
            )));
        }
        eprint!("remove {shown}? [y/N] ");
        let mut answer = String::new();
        io::stdin().lock().read_line(&mut answer)?;
        if !confirmed(&answer) {
            eprintln!("snapfs: {shown} kept");
            return Ok(Exit::Failed);
        }
    }
    let req = Request::Remove {
        target: r.target.clone(),
        name,
    };
    match daemon::call(&r.mount.socket, &req)? {
        Response::Done => {}
        other => return Err(daemon::unexpected(&other)),
    }
    writeln!(out, "removed {shown}")?;
    Ok(Exit::Success)
}

fn confirmed(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yes_confirms() {
        assert!(confirmed("y\n"));
        assert!(confirmed(" YES \n"));
        assert!(!confirmed("\n"));
        assert!(!confirmed("n\n"));
        assert!(!confirmed("yep\n"));
    }
}
