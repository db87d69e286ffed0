use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// snapfsd: serves the snapfs file system at a mount point until it is unmounted.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where to mount.
    #[arg(long, required_unless_present = "check")]
    mountpoint: Option<PathBuf>,
    /// Check the configuration, print each target with its settings, and exit (2 on a problem).
    #[arg(long)]
    check: bool,
    /// Configuration file (default: ~/.config/snapfs/config.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Mount read-only: no uploads.
    #[arg(long)]
    read_only: bool,
    /// Let other users in (non-root needs user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    allow_other: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SNAPFS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // A configuration that cannot be used is a usage error, status 2 as snapfs(1) says, checked
    // before anything is mounted; `snapfs mount` passes that status on.
    let paths = snapfs_control::paths::Paths::from_env();
    if args.check {
        return match snapfsd::check::check(args.config.as_deref(), &paths) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(problem) => {
                eprintln!("snapfsd: {problem}");
                ExitCode::from(2)
            }
        };
    }
    let Some(mountpoint) = args.mountpoint else {
        eprintln!("snapfsd: --mountpoint is required");
        return ExitCode::from(2);
    };
    let config = match snapfsd::config::Config::load(args.config.as_deref(), &paths) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("snapfsd: {e:#}");
            return ExitCode::from(2);
        }
    };
    let opts = snapfsd::service::Options {
        mountpoint,
        read_only: args.read_only,
        allow_other: args.allow_other,
    };
    match snapfsd::service::run(opts, config, paths) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("snapfsd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
