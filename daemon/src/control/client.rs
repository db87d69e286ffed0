//! The client side of the control socket (blocking; the CLI has no runtime).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::wire::{MountRecord, Request, Response};
use crate::paths::Paths;

pub struct Client {
    stream: BufReader<UnixStream>,
}

impl Client {
    pub fn connect(socket: &Path) -> anyhow::Result<Client> {
        let stream = UnixStream::connect(socket)
            .with_context(|| format!("connecting to {}", socket.display()))?;
        Ok(Client {
            stream: BufReader::new(stream),
        })
    }

    pub fn call(&mut self, req: &Request) -> anyhow::Result<Response> {
        let mut line = serde_json::to_vec(req)?;
        line.push(b'\n');
        self.stream
            .get_mut()
            .write_all(&line)
            .context("sending to snapfsd")?;
        let mut answer = String::new();
        let n = self
            .stream
            .read_line(&mut answer)
            .context("reading from snapfsd")?;
        if n == 0 {
            anyhow::bail!("snapfsd closed the connection");
        }
        serde_json::from_str(&answer).context("snapfsd sent something unreadable")
    }
}

/// The records of daemons that answer, from the runtime directory.
pub fn active_mounts(paths: &Paths) -> Vec<MountRecord> {
    let Ok(dir) = std::fs::read_dir(paths.runtime_dir()) else {
        return Vec::new();
    };
    let mut out: Vec<MountRecord> = dir
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<MountRecord>(&b).ok())
        .filter(|r| UnixStream::connect(&r.socket).is_ok())
        .collect();
    out.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
    out
}

/// The socket and record file names for a mount point.
pub fn record_paths(paths: &Paths, mountpoint: &Path) -> (PathBuf, PathBuf) {
    // FNV-1a: stable across builds, enough to keep mount points apart.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in mountpoint.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let dir = paths.runtime_dir();
    (
        dir.join(format!("{h:016x}.sock")),
        dir.join(format!("{h:016x}.json")),
    )
}
