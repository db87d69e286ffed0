//! `snapfs mount`: start `snapfsd` for a mount point and return once the mount is ready.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use snapfs_control::client::{active_mounts, record_paths};
use snapfs_control::paths::{Paths, make_private_dir};
use snapfs_control::units::format_duration;
use snapfs_control::wire::MountRecord;

use crate::exit::{self, Exit, usage};
use crate::{daemon, fuse_mount, target};

/// How long a daemon may take to bring the mount up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of the daemon's log shown when it fails to start.
const LOG_TAIL_LINES: usize = 20;

/// What to mount and how; the flags and `-o` options of `snapfs mount` (snapfs(1)).
#[derive(Debug, Default)]
pub struct Config {
    /// None: `~/snapfs`.
    pub mountpoint: Option<PathBuf>,
    pub foreground: bool,
    pub config: Option<PathBuf>,
    pub read_only: bool,
    pub allow_other: bool,
    pub allow_root: bool,
    pub auto_unmount: bool,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub file_mode: Option<u16>,
    pub dir_mode: Option<u16>,
    pub cache_dir: Option<PathBuf>,
    pub cache_size: Option<u64>,
    pub threads: Option<u16>,
}

impl Config {
    /// The daemon's arguments for these options, paths made absolute against `cwd`.
    fn daemon_args(&self, cwd: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut pair = |flag: &str, value: OsString| {
            args.push(flag.into());
            args.push(value);
        };
        if let Some(config) = &self.config {
            pair("--config", target::absolute(config, cwd).into());
        }
        if let Some(dir) = &self.cache_dir {
            pair("--cache-dir", target::absolute(dir, cwd).into());
        }
        let numbers = [
            ("--uid", self.uid.map(u64::from)),
            ("--gid", self.gid.map(u64::from)),
            ("--cache-size", self.cache_size),
            ("--threads", self.threads.map(u64::from)),
        ];
        for (flag, value) in numbers {
            if let Some(v) = value {
                pair(flag, v.to_string().into());
            }
        }
        for (flag, mode) in [
            ("--file-mode", self.file_mode),
            ("--dir-mode", self.dir_mode),
        ] {
            if let Some(m) = mode {
                pair(flag, format!("{m:o}").into());
            }
        }
        let switches = [
            ("--read-only", self.read_only),
            ("--allow-other", self.allow_other),
            ("--allow-root", self.allow_root),
            ("--auto-unmount", self.auto_unmount),
        ];
        for (flag, on) in switches {
            if on {
                args.push(flag.into());
            }
        }
        args
    }
}

pub fn run(paths: &Paths, cfg: &Config, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let cwd = std::env::current_dir()?;
    let requested = match &cfg.mountpoint {
        Some(p) => p.clone(),
        None => paths.expand("~/snapfs"),
    };
    let abs = target::absolute(&requested, &cwd);
    refuse_inside_a_mount(&abs, &active_mounts(paths)?)?;
    let mountpoint = prepare(&abs)?;
    // Checked here too, so a planted directory is one clear line rather than a daemon's log.
    make_private_dir(&paths.runtime_dir())?;
    let (socket, record) = record_paths(paths, &mountpoint);
    if serves(&socket, &mountpoint) {
        writeln!(out, "already mounted {}", mountpoint.display())?;
        return Ok(Exit::Success);
    }
    fuse_mount::check_device()?;

    let daemon = daemon_binary();
    let mut cmd = Command::new(&daemon);
    cmd.arg("--mountpoint").arg(&mountpoint);
    cmd.args(cfg.daemon_args(&cwd));
    if cfg.foreground {
        let err = cmd.exec();
        return Err(not_found_hint(err, &daemon));
    }

    let stem = record
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let state = paths.state_dir();
    fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    let log_path = state.join(format!("snapfsd-{stem}.log"));
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let log_start = log.metadata()?.len();

    // The daemon rotates the log itself; what it prints before its log is set up, or as it
    // dies, lands in the same file through its standard error.
    cmd.arg("--log-file").arg(&log_path);
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Not the caller's directory, which the daemon would otherwise keep busy.
        .current_dir("/")
        // The log is a file: no terminal colour codes in it.
        .env("NO_COLOR", "1");
    // SAFETY: setsid is async-signal-safe. A session of its own keeps the daemon alive when
    // the terminal that started it goes away.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| not_found_hint(e, &daemon))?;
    exit::exit_on_interrupt();

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if serves(&socket, &mountpoint) {
            writeln!(out, "mounted {}", mountpoint.display())?;
            return Ok(Exit::Success);
        }
        if let Some(status) = child.try_wait()? {
            show_tail(&log_path, log_start);
            let msg = format!(
                "mounting {}: snapfsd exited ({status}) before the mount was ready; log: {}",
                mountpoint.display(),
                log_path.display()
            );
            // The daemon exits 2 for a configuration it cannot use, as we do for usage errors.
            if status.code() == Some(Exit::Usage.code().into()) {
                return Err(usage(msg));
            }
            bail!(msg);
        }
        if Instant::now() >= deadline {
            // A daemon we report as failed should not linger half-started.
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: signalling our own child, which has not been reaped.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            show_tail(&log_path, log_start);
            bail!(
                "mounting {}: not ready after {}, stopped snapfsd; log: {}",
                mountpoint.display(),
                format_duration(READY_TIMEOUT),
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Refuses a mount point inside another snapfs mount: the directory would be made in (and
/// the mount would shadow) a place that belongs to that mount's daemon.
fn refuse_inside_a_mount(abs: &Path, mounts: &[MountRecord]) -> anyhow::Result<()> {
    let lexical = mounts
        .iter()
        .find(|m| abs.starts_with(&m.mountpoint))
        .map(|m| {
            (
                m.clone(),
                abs.strip_prefix(&m.mountpoint).unwrap_or(abs).to_path_buf(),
            )
        });
    match lexical.or_else(|| target::via_canonical_prefix(abs, mounts)) {
        Some((m, rel)) if !rel.as_os_str().is_empty() => Err(usage(format!(
            "{}: inside the snapfs mount at {}; mount somewhere else",
            abs.display(),
            m.mountpoint.display()
        ))),
        _ => Ok(()),
    }
}

/// Clears a dead mount, creates a missing directory, and returns the canonical mount point.
fn prepare(abs: &Path) -> anyhow::Result<PathBuf> {
    if fuse_mount::is_dead(abs) {
        eprintln!(
            "snapfs: {}: clearing a mount whose daemon is gone",
            abs.display()
        );
        fuse_mount::detach(abs)?;
    }
    match fs::metadata(abs) {
        Ok(m) if !m.is_dir() => return Err(usage(format!("{}: not a directory", abs.display()))),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(abs).with_context(|| format!("creating {}", abs.display()))?;
        }
        Err(e) => return Err(e).with_context(|| abs.display().to_string()),
    }
    fs::canonicalize(abs).with_context(|| abs.display().to_string())
}

/// Whether a daemon answers on `socket` for this very mount point.
fn serves(socket: &Path, mountpoint: &Path) -> bool {
    daemon::info(socket).is_ok_and(|info| info.mountpoint == mountpoint)
}

/// `snapfsd` beside this executable (an install or a build directory), else from PATH.
pub(crate) fn daemon_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("snapfsd")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("snapfsd"))
}

pub(crate) fn not_found_hint(err: io::Error, daemon: &Path) -> anyhow::Error {
    if err.kind() == io::ErrorKind::NotFound {
        anyhow::anyhow!("snapfsd was found neither beside snapfs nor on PATH")
    } else {
        anyhow::Error::new(err).context(format!("starting {}", daemon.display()))
    }
}

/// Prints the end of what the daemon logged since `start` to stderr.
fn show_tail(log: &Path, start: u64) {
    let mut text = String::new();
    let read = File::open(log).and_then(|mut f| {
        // Shorter than it was: the daemon rotated it, and all of it is new.
        let start = if f.metadata()?.len() < start {
            0
        } else {
            start
        };
        f.seek(SeekFrom::Start(start))?;
        f.read_to_string(&mut text)
    });
    if read.is_err() {
        return;
    }
    for line in tail(&text, LOG_TAIL_LINES) {
        eprintln!("  {line}");
    }
}

fn tail(text: &str, n: usize) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), vec!["b", "c"]);
        assert_eq!(tail("a", 5), vec!["a"]);
        assert!(tail("", 3).is_empty());
    }

    #[test]
    fn options_become_the_daemons_flags() {
        let cfg = Config {
            config: Some("c.toml".into()),
            read_only: true,
            auto_unmount: true,
            uid: Some(1000),
            file_mode: Some(0o640),
            cache_size: Some(1 << 30),
            threads: Some(4),
            ..Config::default()
        };
        let args: Vec<String> = cfg
            .daemon_args(Path::new("/w"))
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--config",
                "/w/c.toml",
                "--uid",
                "1000",
                "--cache-size",
                "1073741824",
                "--threads",
                "4",
                "--file-mode",
                "640",
                "--read-only",
                "--auto-unmount"
            ]
        );
        assert!(Config::default().daemon_args(Path::new("/")).is_empty());
    }

    #[test]
    fn prepare_creates_and_canonicalizes() {
        let dir = tempfile::tempdir().unwrap();
        let want = dir.path().join("a/b");
        let got = prepare(&want).unwrap();
        let inside = [MountRecord {
            mountpoint: dir.path().join("a"),
            socket: dir.path().join("s"),
            pid: 1,
        }];
        let err = refuse_inside_a_mount(&want, &inside).unwrap_err();
        assert!(err.to_string().contains("inside the snapfs mount"), "{err}");
        refuse_inside_a_mount(&dir.path().join("a"), &inside).unwrap();
        refuse_inside_a_mount(&dir.path().join("ab"), &inside).unwrap();
        assert_eq!(got, fs::canonicalize(&want).unwrap());
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        assert!(prepare(&file).is_err());
    }
}
