//! Looking into a running container through exec: the busybox commands that list a directory,
//! stat one entry and read a byte range, and the parsers of what they print.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::AttachParams;
use snapfs_fs::backend::{BackendError, LiveEntry};
use snapfs_fs::tree::{FileKind, is_file_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::errors::retry;
use super::metered::Counters;

/// An exec that has not finished by then is given up (a stalled stream, a hung command).
const EXEC_LIMIT: Duration = Duration::from_secs(30);

/// Buffer of an exec session's stdin and stdout: one WebSocket message at most this big (1 MiB
/// measured no faster than 64 KiB on a 1 GiB upload).
const STREAM_BUF: usize = 64 << 10;

/// The stat format: everything fixed first, the name last so that a '|' in it cannot confuse the
/// split. Names holding a newline cannot be told apart from the next line and are left out.
const FORMAT: &str = "%F|%s|%a|%Y|%n";

/// The pods of one namespace, and the counters its exec sessions' bytes go to.
pub struct Pods {
    pub api: Api<Pod>,
    pub counters: Arc<Counters>,
}

/// One command's outcome.
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// None when the command exited 0.
    pub failure: Option<String>,
}

/// Runs `command` in a container and collects its output.
pub async fn run(
    pods: &Pods,
    pod: &str,
    container: &str,
    command: Vec<String>,
) -> Result<Output, BackendError> {
    run_with_input(pods, pod, container, command, None, EXEC_LIMIT).await
}

/// Runs `command` with `input` written to its stdin, piece by piece, while its output is
/// collected. An empty piece ends the input; the channel closing before one fails the session
/// (whoever sent the input failed). Stdin is never closed: the command must know from the data
/// when it has all of it (on the v4 protocol closing stdin ends the whole session). `limit`
/// bounds the whole run.
pub async fn run_with_input(
    pods: &Pods,
    pod: &str,
    container: &str,
    command: Vec<String>,
    input: Option<tokio::sync::mpsc::Receiver<Bytes>>,
    limit: Duration,
) -> Result<Output, BackendError> {
    let what = format!("exec in pod {pod} container {container}");
    // kube's own buffers are 1 KiB, which cuts a stream into as many WebSocket messages.
    // Stdin is asked for even without input, and held open until the command ends: kube
    // ends a session whose stdin is closed by closing the WebSocket where the server speaks
    // only v4 (API servers before 1.30), and the server then drops the output.
    let params = AttachParams::default()
        .container(container)
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .max_stdin_buf_size(STREAM_BUF)
        .max_stdout_buf_size(STREAM_BUF);
    let work = async {
        // Only starting the session is retried: once it runs, the command may have had effects.
        let mut attached = retry(|| pods.api.exec(pod, command.clone(), &params), &what).await?;
        let (Some(mut out), Some(mut err), Some(status)) =
            (attached.stdout(), attached.stderr(), attached.take_status())
        else {
            return Err(BackendError::Other(format!("{what}: no output streams")));
        };
        let stdin = attached.stdin();
        // kube does not end stdout when the connection breaks, but join() fails then: watch
        // it beside the reads, or a cut session would wait for the time limit.
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut sent = 0;
        let ended = {
            let feed = async {
                let Some(mut stdin) = stdin else {
                    return Err(std::io::Error::other("the session has no stdin"));
                };
                // Without input nothing is sent, but stdin stays open (see above) while the
                // output decides the end.
                let Some(mut rx) = input else {
                    return std::future::pending().await;
                };
                loop {
                    match rx.recv().await {
                        Some(piece) if piece.is_empty() => break,
                        Some(piece) => {
                            stdin.write_all(&piece).await?;
                            sent += piece.len() as u64;
                        }
                        None => {
                            return Err(std::io::Error::other(format!(
                                "the input stopped after {sent} bytes, before its end"
                            )));
                        }
                    }
                }
                stdin.flush().await?;
                // Held open until the command ends; see above.
                std::future::pending::<std::io::Result<()>>().await
            };
            let reads = async {
                let (a, b) =
                    tokio::join!(out.read_to_end(&mut stdout), err.read_to_end(&mut stderr));
                a.and(b).map(|_| ())
            };
            let reads = async {
                tokio::select! {
                    r = reads => r,
                    f = feed => f,
                }
            };
            tokio::pin!(reads);
            let joined = attached.join();
            tokio::pin!(joined);
            let unavailable =
                |e: &dyn std::fmt::Display| BackendError::Unavailable(format!("{what}: {e}"));
            let read = tokio::select! {
                r = &mut reads => Some(r),
                j = &mut joined => {
                    j.map_err(|e| unavailable(&e))?;
                    None
                }
            };
            match read {
                // Failed input or output ends the session at once: the command would wait
                // for the rest of its input.
                Some(Err(e)) => Err(unavailable(&e)),
                Some(Ok(())) => joined.await.map_err(|e| unavailable(&e)),
                None => reads.await.map_err(|e| unavailable(&e)),
            }
        };
        let received = stdout.len() + stderr.len();
        pods.counters.exec_bytes(sent, received as u64);
        ended?;
        let status = status.await.ok_or_else(|| {
            BackendError::Unavailable(format!("{what}: the connection ended without a status"))
        })?;
        let failure = match status.status.as_deref() {
            Some("Success") => None,
            _ => Some(status.message.unwrap_or_else(|| "failed".into())),
        };
        Ok(Output {
            stdout,
            stderr,
            failure,
        })
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| BackendError::Unavailable(format!("{what}: no answer in {limit:?}")))?
}

/// What a failed command means: a missing path, a refused one, or something else.
pub fn failed(path: &str, out: &Output, failure: &str) -> BackendError {
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No such file") || stderr.contains("Not a directory") {
        BackendError::NotFound(path.to_string())
    } else if stderr.contains("Permission denied") {
        BackendError::PermissionDenied(format!("{path}: {}", stderr.trim()))
    } else {
        BackendError::Other(format!("{path}: {failure}: {}", stderr.trim()))
    }
}

/// Entries of directory `dir` ("/" or an absolute path) in the container.
pub async fn list(
    pods: &Pods,
    pod: &str,
    container: &str,
    dir: &str,
) -> Result<Vec<LiveEntry>, BackendError> {
    let script =
        format!("cd -- \"$1\" && find . -mindepth 1 -maxdepth 1 -exec stat -c '{FORMAT}' {{}} +");
    let out = run(pods, pod, container, sh(&script, &[dir])).await?;
    if let Some(f) = &out.failure {
        return Err(failed(dir, &out, f));
    }
    Ok(listed(&out.stdout))
}

/// The entries of `find . -mindepth 1 -maxdepth 1 -exec stat …` output, named without their
/// `./`. A line naming anything but one entry of the folder (find never prints one, but a
/// container's tools are its own) is left out: one such name would make the kernel refuse the
/// whole listing.
pub fn listed(out: &[u8]) -> Vec<LiveEntry> {
    parse_stat_lines(out)
        .into_iter()
        .filter_map(|mut e| {
            let name = e.name.strip_prefix("./").filter(|n| is_file_name(n))?;
            e.name = name.to_string();
            Some(e)
        })
        .collect()
}

/// One entry of the container; a symlink comes with its target.
pub async fn stat(
    pods: &Pods,
    pod: &str,
    container: &str,
    path: &str,
) -> Result<LiveEntry, BackendError> {
    let script =
        format!("stat -c '{FORMAT}' -- \"$1\" && if [ -L \"$1\" ]; then readlink -- \"$1\"; fi");
    let out = run(pods, pod, container, sh(&script, &[path])).await?;
    if let Some(f) = &out.failure {
        return Err(failed(path, &out, f));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let mut e = lines
        .next()
        .and_then(parse_stat)
        .ok_or_else(|| BackendError::Other(format!("{path}: unexpected stat output {text:?}")))?;
    e.name = path.rsplit('/').next().unwrap_or(path).to_string();
    if e.kind == FileKind::Symlink {
        e.symlink = lines.next().map(str::to_string);
    }
    Ok(e)
}

/// Up to `len` bytes of a file from `offset`.
pub async fn read(
    pods: &Pods,
    pod: &str,
    container: &str,
    path: &str,
    offset: u64,
    len: u64,
) -> Result<Bytes, BackendError> {
    let script = "tail -c +\"$2\" -- \"$1\" | head -c \"$3\"";
    let from = (offset + 1).to_string();
    let args = [path, from.as_str(), &len.to_string()];
    let out = run(pods, pod, container, sh(script, &args)).await?;
    if let Some(f) = &out.failure {
        return Err(failed(path, &out, f));
    }
    // A failing tail does not fail the pipeline; its complaint does.
    if !out.stderr.is_empty() {
        return Err(failed(path, &out, "read failed"));
    }
    Ok(Bytes::from(out.stdout))
}

/// `sh -c SCRIPT sh ARGS…`: arguments are passed apart from the script, never spliced into it.
pub fn sh(script: &str, args: &[&str]) -> Vec<String> {
    let mut v = vec!["sh".to_string(), "-c".into(), script.into(), "sh".into()];
    v.extend(args.iter().map(|a| a.to_string()));
    v
}

/// The main command of a pod that is there only to be exec'd into: it waits `seconds`, and
/// ends at once when the pod is deleted (SIGTERM). A container's first process is the init of
/// its PID namespace, and the kernel gives init no signal it has no handler for: a bare `sleep`
/// would make every deletion of the pod wait out its grace period (30 s unless set), and every
/// upload with it.
pub fn idle(seconds: u64) -> Vec<String> {
    sh(
        "trap 'exit 0' TERM; sleep \"$1\" & wait",
        &[&seconds.to_string()],
    )
}

/// Lines of `stat -c FORMAT`; lines that do not parse (a name with a newline) are left out.
pub fn parse_stat_lines(out: &[u8]) -> Vec<LiveEntry> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(parse_stat)
        .collect()
}

/// One line of `stat -c '%F|%s|%a|%Y|%n'`.
pub fn parse_stat(line: &str) -> Option<LiveEntry> {
    let mut parts = line.splitn(5, '|');
    let kind = match parts.next()? {
        "regular file" | "regular empty file" => FileKind::File,
        "directory" => FileKind::Dir,
        "symbolic link" => FileKind::Symlink,
        // Devices, sockets and pipes cannot be read as files; they are not shown.
        _ => return None,
    };
    let size: u64 = parts.next()?.parse().ok()?;
    let perm = u16::from_str_radix(parts.next()?, 8).ok()?;
    let secs: u64 = parts.next()?.parse().ok()?;
    let name = parts.next()?;
    if name.is_empty() {
        return None;
    }
    Some(LiveEntry {
        name: name.to_string(),
        kind,
        size,
        // Read-only whatever the container says: nothing can be written through this view.
        perm: perm & 0o555,
        // A time no SystemTime can hold (only a tool that lies prints one) shows as the epoch.
        mtime: SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .unwrap_or(SystemTime::UNIX_EPOCH),
        symlink: None,
        xattrs: Vec::new(),
        uploads: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pods' main command run as it runs in a container: busybox's shell as the init of a
    /// new PID namespace (`unshare`, as root), which gets no signal it has no handler for.
    #[test]
    fn the_idle_command_ends_on_sigterm_as_init_of_its_pid_namespace() {
        let mut child = std::process::Command::new("unshare")
            .args(["--pid", "--fork", "busybox"])
            .args(idle(1 << 30))
            .spawn()
            .expect("unshare --pid --fork busybox sh (needs root and busybox)");
        let children = |pid: u32| -> Vec<i32> {
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        };
        // The shell is the forked init; its `sleep` is there once the trap is set.
        let init = loop {
            if let Some(&init) = children(child.id()).first()
                && !children(init as u32).is_empty()
            {
                break init;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // SAFETY: kill(2) on a process this test started; no memory is involved.
        assert_eq!(unsafe { libc::kill(init, libc::SIGTERM) }, 0);
        // A hang guard, not a measure: the shell ends within milliseconds, or never (until its
        // sleep of 34 years).
        for _ in 0..6000 {
            if let Some(status) = child.try_wait().expect("wait for unshare") {
                assert!(status.success(), "the idle command ended with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: as above.
        unsafe { libc::kill(init, libc::SIGKILL) };
        let _ = child.wait();
        panic!("the idle command, as init of its PID namespace, ignored SIGTERM");
    }

    #[test]
    fn listings_show_only_names_of_one_entry() {
        let out = b"regular file|1|644|1|./ok\n\
regular file|1|644|1|./a/b\n\
directory|1|755|1|./..\n\
directory|1|755|1|./.\n\
directory|1|755|1|./\n\
regular file|1|644|1|no-prefix\n";
        let names: Vec<_> = listed(out).into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["ok"]);
    }

    #[test]
    fn a_time_beyond_what_the_clock_holds_shows_as_the_epoch() {
        let e = parse_stat("regular file|1|644|18446744073709551615|./far").unwrap();
        assert_eq!(e.mtime, SystemTime::UNIX_EPOCH);
    }

    #[test]
    fn stat_lines_parse_kinds_sizes_modes_and_odd_names() {
        let out = b"regular file|12|644|1700000000|./data.db\n\
directory|4096|755|1700000001|./sub dir\n\
symbolic link|7|777|1700000002|./link|with|bars\n\
regular empty file|0|600|1700000003|./empty\n\
character special file|0|666|1|./null\n\
garbage line\n\
regular file|x|644|1|./bad-size\n";
        let got = parse_stat_lines(out);
        let names: Vec<_> = got.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["./data.db", "./sub dir", "./link|with|bars", "./empty"]
        );
        assert_eq!(
            (got[0].kind, got[0].size, got[0].perm),
            (FileKind::File, 12, 0o444)
        );
        assert_eq!(got[1].kind, FileKind::Dir);
        assert_eq!(got[1].perm, 0o555);
        assert_eq!(got[2].kind, FileKind::Symlink);
        assert_eq!(got[3].size, 0);
        assert_eq!(
            got[0].mtime,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
    }

    #[test]
    fn scripts_take_paths_as_arguments() {
        let v = sh("cat -- \"$1\"", &["/a b/$(x)"]);
        assert_eq!(v, ["sh", "-c", "cat -- \"$1\"", "sh", "/a b/$(x)"]);
    }
}
