use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use snapfs_control::units::{parse_mode, parse_size};
use snapfs_fs::fuse::MountConfig;
use snapfsd::logging::{self, LogOptions};

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
    /// Let root in besides this user.
    #[arg(long)]
    allow_root: bool,
    /// Have the mount removed when the daemon dies, however it dies (lets root in).
    #[arg(long)]
    auto_unmount: bool,
    /// Owner shown for snapshots and generated entries [default: this user].
    #[arg(long)]
    uid: Option<u32>,
    /// Group shown for snapshots and generated entries [default: this user's group].
    #[arg(long)]
    gid: Option<u32>,
    /// Permission bits (octal) of every file of snapshots and objects [default: as stored].
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    file_mode: Option<u16>,
    /// Permission bits (octal) of every directory of snapshots and objects [default: as stored].
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    dir_mode: Option<u16>,
    /// Cache directory, in place of [cache] dir.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Most bytes of cached blocks on disk, in place of [cache] max_size.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    cache_size: Option<u64>,
    /// Serve every read from the daemon: no FUSE passthrough of files kept whole in the disk
    /// cache.
    #[arg(long, env = "SNAPFS_NO_PASSTHROUGH", value_parser = clap::builder::FalseyValueParser::new())]
    no_passthrough: bool,
    /// Threads that answer FUSE requests.
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: u16,
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
    let mut config = match snapfsd::config::Config::load(args.config.as_deref(), &paths) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("snapfsd: {e:#}");
            return ExitCode::from(2);
        }
    };
    // Flags win over the file.
    if let Some(dir) = args.cache_dir {
        config.cache_dir = dir;
    }
    if let Some(size) = args.cache_size {
        config.cache_max = size;
    }
    let opts = snapfsd::service::Options {
        mountpoint,
        mount: MountConfig {
            read_only: args.read_only,
            allow_other: args.allow_other,
            allow_root: args.allow_root,
            auto_unmount: args.auto_unmount,
            threads: usize::from(args.threads),
            passthrough: !args.no_passthrough,
        },
        owner: (args.uid, args.gid),
        file_mode: args.file_mode,
        dir_mode: args.dir_mode,
    };
    match snapfsd::service::run(opts, config, paths) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("snapfsd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
