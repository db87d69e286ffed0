use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use snapfs_control::units::parse_size;
use snapfsd::logging::{self, LogOptions};

/// snapfsd: serves the snapfs file system at a mount point until it is unmounted.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where to mount.
    #[arg(long)]
    mountpoint: PathBuf,
    /// Configuration file (default: ~/.config/snapfs/config.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Mount read-only: no uploads.
    #[arg(long)]
    read_only: bool,
    /// Let other users in (non-root needs user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    allow_other: bool,
    /// Log filter, e.g. debug or info,snapfs_fs=debug [default: SNAPFS_LOG, else RUST_LOG,
    /// else info].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Log to FILE instead of standard error, rotated by size (FILE.1 to FILE.3 are kept).
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Rotate the log file when it would grow past SIZE.
    #[arg(long, value_name = "SIZE", default_value = "10MiB", value_parser = parse_size)]
    log_max_size: u64,
    /// Log one JSON object per line.
    #[arg(long)]
    log_json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let log = LogOptions {
        level: args.log_level,
        file: args.log_file,
        max_size: args.log_max_size,
        json: args.log_json,
    };
    if let Err(e) = logging::init(&log) {
        eprintln!("snapfsd: {e:#}");
        return ExitCode::from(2);
    }
    // A configuration that cannot be used is a usage error, status 2 as snapfs(1) says, checked
    // before anything is mounted; `snapfs mount` passes that status on.
    let paths = snapfs_control::paths::Paths::from_env();
    let config = match snapfsd::config::Config::load(args.config.as_deref(), &paths) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("snapfsd: {e:#}");
            return ExitCode::from(2);
        }
    };
    let opts = snapfsd::service::Options {
        mountpoint: args.mountpoint,
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
