//! `snapfs`: the command-line client. This file only parses, turns the arguments into each
//! command's plain config, dispatches, and maps errors to exit statuses.

mod args;
mod completions;
mod config;
mod daemon;
mod exit;
mod fuse_mount;
mod gc;
mod human;
mod list;
mod mount;
mod mount_options;
mod progress;
mod restore;
mod rm;
mod snapshot;
mod status;
mod target;
mod unmount;
mod verify;
mod wait;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use snapfs_control::paths::Paths;

use crate::args::{Cli, Command, ConfigCommand};
use crate::exit::Exit;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version also come here; clap knows which status each deserves.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(Exit::Usage.code()));
        }
    };
    let paths = Paths::from_env();
    let mut stdout = io::stdout().lock();
    let result = run(cli.command, &paths, &mut stdout).and_then(|exit| {
        stdout.flush()?;
        Ok(exit)
    });
    match result {
        Ok(exit) => exit.into(),
        Err(err) => match exit::classify(&err) {
            None => Exit::Success.into(),
            Some(code) => {
                let _ = writeln!(io::stderr(), "{}", exit::message(&err));
                code.into()
            }
        },
    }
}

fn run(command: Command, paths: &Paths, out: &mut dyn Write) -> anyhow::Result<Exit> {
    match command {
        Command::Mount(a) => {
            let mut cfg = mount::Config {
                mountpoint: a.mountpoint,
                foreground: a.foreground,
                config: a.config,
                read_only: a.read_only,
                allow_other: a.allow_other,
                allow_root: a.allow_root,
                auto_unmount: a.auto_unmount,
                uid: a.uid,
                gid: a.gid,
                file_mode: a.file_mode,
                dir_mode: a.dir_mode,
                cache_dir: a.cache_dir,
                cache_size: a.cache_size,
                threads: a.threads,
            };
            mount_options::apply(&mut cfg, &a.options, a.sloppy, |p| paths.expand(p))?;
            mount::run(paths, &cfg, out)
        }
        Command::Unmount { mountpoint } => unmount::run(paths, &mountpoint, out),
        Command::Status(a) => {
            let format = if a.json {
                status::Format::Json
            } else if a.prometheus {
                status::Format::Prometheus
            } else {
                status::Format::Human
            };
            status::run(paths, format, out)
        }
        Command::Wait { path, json } => wait::run(paths, &path, json, out),
        Command::Snapshot(a) => snapshot::run(
            paths,
            &snapshot::Config {
                target: a.target,
                source: a.source,
                name: a.name,
                json: a.json,
                size: a.size,
            },
            out,
        ),
        Command::List { target, json } => list::run(paths, &target, json, out),
        Command::Restore(a) => restore::run(
            paths,
            &restore::Config {
                snapshot: a.snapshot,
                dest: a.dest,
                backup: !a.no_backup,
                force: a.force,
                pvc: a.pvc,
                size: a.size,
                json: a.json,
            },
            out,
        ),
        Command::Rm { snapshot, yes } => rm::run(paths, &snapshot, yes, out),
        Command::Gc(a) => gc::run(
            paths,
            &gc::Config {
                target: a.target,
                dry_run: a.dry_run || !a.yes,
                json: a.json,
            },
            out,
        ),
        Command::Verify { snapshot, json } => verify::run(paths, &snapshot, json, out),
        Command::Completions { shell } => completions::run(shell, out),
        Command::Config(ConfigCommand::Check { config }) => config::check(config.as_deref(), out),
    }
}
