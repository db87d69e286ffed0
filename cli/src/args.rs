//! The command line, defined once: help, the man page (`man/snapfs.1`) and the shell
//! completions are all generated from these types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;
use snapfs_control::units::{parse_mode, parse_size};

const LONG_ABOUT: &str = "\
Snapshots as ordinary paths. `snapfs mount` starts snapfsd, which mounts a file system where
every configured bucket, Kubernetes namespace and HiveMQ cluster is a directory:
MOUNT/<target>/snapshots/NAME are read-only snapshots, and copying a file or folder to
MOUNT/<target>/uploads/NAME creates one. This command mounts, makes snapshots of local
folders without copying them, waits, lists, restores, verifies and removes them, cleans up
expired ones, and shows the progress of uploads.";

const NOTES: &str = "\
Exit status:
  0    success
  1    the operation failed
  2    usage or validation error
  130  interrupted (Ctrl-C)

TARGET and SNAPSHOT are paths inside a mount (absolute or relative to the current directory).
When exactly one mount is active, paths relative to its root work too: cloud/local,
cloud/local/snapshots/NAME.

SIZE is a number and an optional unit, read as Kubernetes reads a quantity and as the
configuration file reads sizes (snapfs.toml(5)): k, M, G, T, P, E are powers of 1000 and Ki,
Mi, Gi, Ti, Pi, Ei powers of 1024. Units are case-sensitive and a B may follow them (GiB is
Gi, GB is G). A fraction is exact (1.5Gi is 1610612736 bytes) and rounded up to whole bytes.";

const GC_ABOUT: &str = "\
Show which snapshots are expired (their ttl has passed) or older than their target's
retention.max_days, and which packs no snapshot lists (left by interrupted uploads or
deletions), and why each would go; and which packs are mostly unused (at most half of their
bytes used by snapshots), whose used chunks would be moved into new packs so that the rest can
be deleted by a later cleanup, after lifecycle.orphan_grace. Nothing is changed unless --yes is
given; moving those chunks shows its progress on a terminal. The newest
retention.min_count snapshots and those younger than retention.min_days are always kept, even
when expired. snapfsd also does this on its own every lifecycle.interval (see snapfs.toml(5)).";

#[derive(Debug, Parser)]
#[command(
    name = "snapfs",
    version,
    about = "Snapshots as ordinary paths: mount, snapshot, list, wait, restore",
    long_about = LONG_ABOUT,
    after_long_help = NOTES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount snapfs (starts snapfsd in the background and returns once the mount is ready)
    Mount(MountArgs),
    /// Unmount a snapfs mount and stop its daemon
    ///
    /// Succeeds only when no snapfs mount is left at MOUNTPOINT afterwards: a dead mount left
    /// there ("Transport endpoint is not connected") is cleared, and a snapfs mount still there
    /// (the path was mounted more than once) fails it with status 1. Refuses, touching nothing,
    /// when another file system is mounted over the snapfs mount.
    #[command(visible_alias = "umount")]
    Unmount {
        /// The mount point
        mountpoint: PathBuf,
    },
    /// Show the upload jobs of every active mount, with progress
    Status(StatusArgs),
    /// Wait until an upload has become a snapshot (exit 0) or failed (exit 1), showing its
    /// progress on a terminal
    Wait {
        /// MOUNT/<target>/uploads/NAME, uploads/NAME.status or snapshots/NAME
        path: PathBuf,
        /// Print a JSON object with target, snapshot, state, bytes, and error and note when
        /// there are
        #[arg(long)]
        json: bool,
    },
    /// Make a snapshot of a local file or folder, read in place (or, of a HiveMQ cluster, a
    /// backup), showing progress
    Snapshot(SnapshotArgs),
    /// List the snapshots of a target, newest first
    #[command(visible_alias = "ls")]
    List {
        /// A target in a mount, e.g. ~/snapfs/cloud/local
        target: PathBuf,
        /// Print a JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Copy a snapshot (or part of one) to a local path, atomically; or restore a HiveMQ backup
    /// into its cluster; showing progress on a terminal
    Restore(RestoreArgs),
    /// Delete a snapshot
    Rm {
        /// MOUNT/<target>/snapshots/NAME
        snapshot: PathBuf,
        /// Do not ask for confirmation
        #[arg(short, long)]
        yes: bool,
    },
    /// Show which snapshots are expired or past their retention and which packs are orphans;
    /// with --yes, delete them
    #[command(long_about = GC_ABOUT)]
    Gc(GcArgs),
    /// Read every block of a snapshot and check its checksums, showing progress on a terminal
    Verify {
        /// MOUNT/<target>/snapshots/NAME
        snapshot: PathBuf,
        /// Print a JSON object: files, bytes, errors [{path, error}]
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script to standard output
    Completions {
        /// The shell to complete for
        shell: Shell,
    },
    /// Check the configuration file
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Parse the configuration and print each target with its resolved settings and where its
    /// credentials would come from (never a secret); on a problem, name the file and line and
    /// exit 2
    Check {
        /// Configuration file [default: ~/.config/snapfs/config.toml]
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// Where to mount [default: ~/snapfs, created if missing]
    pub mountpoint: Option<PathBuf>,
    /// Run the daemon in the foreground, logging to standard error
    #[arg(short, long)]
    pub foreground: bool,
    /// Configuration file [default: ~/.config/snapfs/config.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Mount read-only: snapshots can be read but not created
    #[arg(long)]
    pub read_only: bool,
    /// Let other users see the mount (needs user_allow_other in /etc/fuse.conf)
    #[arg(long)]
    pub allow_other: bool,
    /// Let root see the mount besides you (needs user_allow_other in /etc/fuse.conf)
    #[arg(long)]
    pub allow_root: bool,
    /// Have the mount removed when snapfsd dies, however it dies, instead of leaving "Transport
    /// endpoint is not connected" behind; lets root in, as --allow-root (fusermount3 does the
    /// unmounting)
    #[arg(long)]
    pub auto_unmount: bool,
    /// Owner of the files and directories shown [default: you]; staged uploads keep their own
    #[arg(long, value_name = "UID")]
    pub uid: Option<u32>,
    /// Group of the files and directories shown [default: your group]
    #[arg(long, value_name = "GID")]
    pub gid: Option<u32>,
    /// Permission bits, in octal, of every file in snapshots/ and objects/ [default: as stored
    /// in the snapshot; 444 for objects]
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub file_mode: Option<u16>,
    /// Permission bits, in octal, of every directory in and of snapshots/ and objects/
    /// [default: as stored in the snapshot; 555 for snapshots/ and objects/]
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub dir_mode: Option<u16>,
    /// Cache directory, in place of the configuration's cache.dir
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Most bytes of cached blocks on disk, e.g. 50Gi, in place of the configuration's
    /// cache.max_size
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub cache_size: Option<u64>,
    /// Threads answering file system requests [default: 16]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// Mount options, comma-separated, as in fstab or mount -o: config=FILE, ro, rw,
    /// allow_other, allow_root, auto_unmount, uid=N, gid=N, file_mode=MODE, dir_mode=MODE,
    /// cache_dir=DIR, cache_size=SIZE, threads=N, each as its flag above; mount(8)'s own
    /// (noauto, user, _netdev, nofail, x-*, nodev, noatime, ...) are ignored
    #[arg(short = 'o', value_name = "KEY[=VALUE],...")]
    pub options: Vec<String>,
    /// With -o, warn about unknown options instead of refusing them (mount's -s)
    #[arg(short, long)]
    pub sloppy: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print a JSON array of {mountpoint, status}
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,
    /// Print the metrics in the Prometheus text format
    #[arg(long)]
    pub prometheus: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// A target in a mount, e.g. ~/snapfs/cloud/local
    pub target: PathBuf,
    /// The local file or folder to snapshot; none for a HiveMQ cluster, whose broker makes a
    /// backup that is followed until it completes
    pub source: Option<PathBuf>,
    /// Snapshot name [default: <basename of SOURCE>-<UTC yyyy-mm-ddTHH-MM-SS>; a HiveMQ backup
    /// is named by the broker]
    #[arg(short, long)]
    pub name: Option<String>,
    /// Print a JSON object with target, snapshot, state and bytes
    #[arg(long)]
    pub json: bool,
    /// Size of the volume made for the upload (Kubernetes), e.g. 20Gi or 1.5T [default: the
    /// source's size + k8s.size_margin, at least k8s.min_size]
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// A target in a mount, e.g. ~/snapfs/cloud/local [default: every target of the only mount]
    pub target: Option<PathBuf>,
    /// Only show what would be deleted (the default)
    #[arg(long, conflicts_with = "yes")]
    pub dry_run: bool,
    /// Delete what is shown
    #[arg(short, long)]
    pub yes: bool,
    /// Print a JSON object: dry_run, deleted [{target, name, created, reason}], orphan_packs,
    /// orphan_bytes, leftovers, repacked_packs, repacked_bytes (their unused bytes), errors
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// MOUNT/<target>/snapshots/NAME, or a path below it
    pub snapshot: PathBuf,
    /// Where the copy goes; its parent must exist. Without DEST, a HiveMQ backup is restored
    /// into its cluster and followed until the restore ends
    pub dest: Option<PathBuf>,
    /// Replace an existing DEST instead of moving it aside to DEST.snapfs-backup-<time>
    #[arg(long)]
    pub no_backup: bool,
    /// Restore even a snapshot past its expiry (user.snapfs.expires)
    #[arg(long)]
    pub force: bool,
    /// Kubernetes: create PersistentVolumeClaim PVC from the VolumeSnapshot instead of copying
    /// it to a local DEST
    #[arg(long, value_name = "PVC", conflicts_with_all = ["dest", "no_backup"])]
    pub pvc: Option<String>,
    /// With --pvc: the claim's size, e.g. 20Gi [default: the snapshot's restore size]
    #[arg(long, value_parser = parse_size, requires = "pvc")]
    pub size: Option<u64>,
    /// Print a JSON object: to a DEST, {snapshot, dest, files, dirs, symlinks, bytes,
    /// checksummed, replaced, backup}; with --pvc, {created}; into a cluster, {target,
    /// snapshot, state, bytes, error}
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    type Render = fn(&clap_mangen::Man, &mut dyn std::io::Write) -> std::io::Result<()>;

    /// One section as roff text, without the preamble every render call repeats.
    fn section(man: &clap_mangen::Man, render: Render) -> String {
        let mut buf = Vec::new();
        render(man, &mut buf).expect("render to memory");
        String::from_utf8_lossy(&buf)
            .lines()
            .skip_while(|l| l.starts_with(".ie ") || l.starts_with(".el "))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// Renders the whole manual: the top-level page with a section per subcommand (its
    /// description, synopsis and options as subsections), then the exit statuses.
    fn render_man() -> String {
        use clap_mangen::Man;
        let mut cmd = Cli::command();
        cmd.build();
        let top = Man::new(cmd.clone()).date("");
        let mut out = String::new();
        let mut preamble = Vec::new();
        top.render_title(&mut preamble).expect("render to memory");
        out.push_str(&String::from_utf8_lossy(&preamble));
        for render in [
            Man::render_name_section as Render,
            Man::render_synopsis_section,
            Man::render_description_section,
        ] {
            out.push_str(&section(&top, render));
        }
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            // After build(), a subcommand's bin name is the whole `snapfs mount`.
            let name = sub.get_bin_name().unwrap_or(sub.get_name()).to_owned();
            let page = Man::new(sub.clone());
            out.push_str(&format!(".SH \"{}\"\n", name.to_uppercase()));
            for render in [
                Man::render_description_section as Render,
                Man::render_synopsis_section,
                Man::render_options_section,
            ] {
                for line in section(&page, render).lines() {
                    let line = match line.strip_prefix(".SH ") {
                        Some(heading) => format!(".SS {heading}"),
                        None => line.to_owned(),
                    };
                    out.push_str(&line);
                    out.push('\n');
                }
            }
        }
        out.push_str(&section(&top, Man::render_extra_section).replacen(
            ".SH EXTRA",
            ".SH NOTES",
            1,
        ));
        out.push_str(&section(&top, Man::render_version_section));
        out
    }

    #[test]
    fn man_page_is_up_to_date() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../man/snapfs.1");
        let want = render_man();
        if std::env::var_os("SNAPFS_UPDATE_MAN").is_some() {
            std::fs::write(&path, &want).expect("write man/snapfs.1");
            return;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "man/snapfs.1 is out of date with the command-line definition; refresh it with\n  \
             SNAPFS_UPDATE_MAN=1 cargo test -p snapfs man_page_is_up_to_date"
        );
    }
}
