//! `snapfs completions SHELL`: the completion script, generated from the one definition.

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::args::Cli;
use crate::exit::Exit;

pub fn run(shell: Shell, out: &mut dyn Write) -> anyhow::Result<Exit> {
    // Rendered to memory first: the generator gives up on a closed pipe with a panic.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "snapfs", &mut script);
    out.write_all(&script)?;
    Ok(Exit::Success)
}
