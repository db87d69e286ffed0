//! Telling the service manager how the daemon is doing, as `sd_notify(3)` does: systemd's
//! `Type=notify` waits for `READY=1` before it calls the unit started. The protocol is one
//! datagram of `KEY=VALUE` lines to the socket named by `NOTIFY_SOCKET`, which is a path or,
//! with a leading `@`, a name in the abstract namespace.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Where the service manager listens; nothing when the daemon was not started by one.
pub struct Notifier {
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` names, if it is set.
    pub fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        match address(name.as_bytes()) {
            Ok(addr) => Some(Notifier { addr }),
            Err(e) => {
                tracing::warn!(socket = ?name, error = %e, "NOTIFY_SOCKET cannot be used");
                None
            }
        }
    }

    /// Sends `state` (lines such as `READY=1`). A manager that went away is no reason to stop
    /// serving, so a failure is only logged.
    pub fn notify(&self, state: &str) {
        let sent =
            UnixDatagram::unbound().and_then(|s| s.send_to_addr(state.as_bytes(), &self.addr));
        if let Err(e) = sent {
            tracing::warn!(error = %e, "could not notify the service manager");
        }
    }
}

fn address(name: &[u8]) -> io::Result<SocketAddr> {
    match name {
        [] => Err(io::Error::new(io::ErrorKind::InvalidInput, "empty")),
        [b'@', abstract_name @ ..] => SocketAddr::from_abstract_name(abstract_name),
        path => SocketAddr::from_pathname(OsStr::from_bytes(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn notifies_a_socket_by_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        let notifier = Notifier {
            addr: address(path.as_os_str().as_bytes()).expect("a path address"),
        };
        notifier.notify("READY=1\nSTATUS=mounted");
        assert_eq!(received(&listener), "READY=1\nSTATUS=mounted");
    }

    #[test]
    fn notifies_an_abstract_socket() {
        let name = format!("snapfs-notify-test-{}", std::process::id());
        let bound = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
        let listener = UnixDatagram::bind_addr(&bound).expect("bind");
        let notifier = Notifier {
            addr: address(format!("@{name}").as_bytes()).expect("an abstract address"),
        };
        notifier.notify("STOPPING=1");
        assert_eq!(received(&listener), "STOPPING=1");
    }

    #[test]
    fn an_empty_name_is_refused() {
        assert!(address(b"").is_err());
    }
}
