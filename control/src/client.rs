//! The client side of the control socket (blocking; the CLI has no runtime).

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::paths::Paths;
use crate::wire::{MountRecord, Request, Response};

/// Why a call to the daemon failed before it could answer.
#[derive(Debug)]
pub enum ClientError {
    Connect {
        socket: PathBuf,
        source: io::Error,
    },
    Send(io::Error),
    Receive(io::Error),
    /// The daemon hung up without answering.
    Closed,
    Encode(serde_json::Error),
    /// The answer is not a response this client knows.
    Decode(serde_json::Error),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect { socket, .. } => write!(f, "connecting to {}", socket.display()),
            ClientError::Send(_) => f.write_str("sending to snapfsd"),
            ClientError::Receive(_) => f.write_str("reading from snapfsd"),
            ClientError::Closed => f.write_str("snapfsd closed the connection"),
            ClientError::Encode(_) => f.write_str("encoding the request"),
            ClientError::Decode(_) => f.write_str("snapfsd sent something unreadable"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Connect { source: e, .. }
            | ClientError::Send(e)
            | ClientError::Receive(e) => Some(e),
            ClientError::Encode(e) | ClientError::Decode(e) => Some(e),
            ClientError::Closed => None,
        }
    }
}

pub struct Client {
    stream: BufReader<UnixStream>,
}

impl Client {
    pub fn connect(socket: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
            socket: socket.to_path_buf(),
            source,
        })?;
        Ok(Client {
            stream: BufReader::new(stream),
        })
    }

    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        self.call_watching(req, |_, _| {})
    }

    /// Like [`Client::call`], for a request that asked for progress: each `Checking` line
    /// before the answer is passed to `progress` as (done, total) bytes.
    pub fn call_watching(
        &mut self,
        req: &Request,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Response, ClientError> {
        let mut line = serde_json::to_vec(req).map_err(ClientError::Encode)?;
        line.push(b'\n');
        self.stream
            .get_mut()
            .write_all(&line)
            .map_err(ClientError::Send)?;
        loop {
            match self.receive()? {
                Response::Checking { done, total } => progress(done, total),
                answer => return Ok(answer),
            }
        }
    }

    fn receive(&mut self) -> Result<Response, ClientError> {
        let mut answer = String::new();
        let n = self
            .stream
            .read_line(&mut answer)
            .map_err(ClientError::Receive)?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        serde_json::from_str(&answer).map_err(ClientError::Decode)
    }
}

/// Every mount record in the runtime directory, answering or not, sorted by mount point. A
/// missing directory holds none; one that another user could have planted is an error.
pub fn mount_records(paths: &Paths) -> io::Result<Vec<MountRecord>> {
    let dir = paths.runtime_dir();
    match crate::paths::check_private_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    let mut out: Vec<MountRecord> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<MountRecord>(&b).ok())
        .collect();
    out.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
    Ok(out)
}

/// The records of daemons that answer, from the runtime directory.
pub fn active_mounts(paths: &Paths) -> io::Result<Vec<MountRecord>> {
    Ok(mount_records(paths)?.into_iter().filter(answers).collect())
}

/// Whether the daemon of a record still listens on its socket.
pub fn answers(record: &MountRecord) -> bool {
    UnixStream::connect(&record.socket).is_ok()
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

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    /// A one-connection daemon that answers the first request line with `answer`.
    fn daemon(socket: &Path, answer: Option<&'static str>) -> std::thread::JoinHandle<String> {
        let listener = UnixListener::bind(socket).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut stream = BufReader::new(stream);
            let mut line = String::new();
            stream.read_line(&mut line).unwrap();
            if let Some(answer) = answer {
                stream.get_mut().write_all(answer.as_bytes()).unwrap();
            }
            line
        })
    }

    #[test]
    fn one_request_one_answer() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("d.sock");
        let served = daemon(&socket, Some("{\"kind\":\"done\"}\n"));
        let mut client = Client::connect(&socket).unwrap();
        assert_eq!(client.call(&Request::Unmount).unwrap(), Response::Done);
        assert_eq!(served.join().unwrap(), "{\"op\":\"unmount\"}\n");
    }

    #[test]
    fn failures_say_what_went_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("d.sock");
        let e = Client::connect(&socket).err().unwrap();
        assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
        assert_eq!(e.to_string(), format!("connecting to {}", socket.display()));

        let served = daemon(&socket, None);
        let mut client = Client::connect(&socket).unwrap();
        let e = client.call(&Request::Info).unwrap_err();
        assert!(matches!(e, ClientError::Closed), "{e:?}");
        served.join().unwrap();
    }

    #[test]
    fn only_answering_daemons_count_as_mounted() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::from_vars(|v| (v == "XDG_RUNTIME_DIR").then(|| dir.path().into()));
        let (live_socket, live_record) = record_paths(&paths, Path::new("/mnt/a"));
        let (dead_socket, dead_record) = record_paths(&paths, Path::new("/mnt/b"));
        assert_ne!(live_socket, dead_socket);
        crate::paths::make_private_dir(&paths.runtime_dir()).unwrap();
        let _listener = UnixListener::bind(&live_socket).unwrap();
        for (mountpoint, socket, record) in [
            ("/mnt/a", &live_socket, &live_record),
            ("/mnt/b", &dead_socket, &dead_record),
        ] {
            let r = MountRecord {
                mountpoint: mountpoint.into(),
                socket: socket.clone(),
                pid: 1,
            };
            std::fs::write(record, serde_json::to_vec(&r).unwrap()).unwrap();
        }
        let mounts = active_mounts(&paths).unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].mountpoint, Path::new("/mnt/a"));
        assert_eq!(
            mount_records(&paths).unwrap().len(),
            2,
            "the dead one is still recorded"
        );
    }

    #[test]
    fn a_runtime_dir_open_to_others_is_refused_and_a_missing_one_is_empty() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::from_vars(|v| (v == "XDG_RUNTIME_DIR").then(|| dir.path().into()));
        assert!(active_mounts(&paths).unwrap().is_empty());
        std::fs::create_dir(paths.runtime_dir()).unwrap();
        std::fs::set_permissions(paths.runtime_dir(), std::fs::Permissions::from_mode(0o777))
            .unwrap();
        let err = active_mounts(&paths).unwrap_err();
        assert!(err.to_string().contains("cannot be trusted"), "{err}");
    }
}
