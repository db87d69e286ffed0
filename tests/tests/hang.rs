//! Nothing a remote does hangs a reader: a HiveMQ broker that accepts connections and never
//! answers fails a listing with EIO, and every later listing tries it again; a reader killed
//! while it waits on such a broker is let go at once, not when the broker's timeout runs out;
//! and a configuration cannot make a wait longer than its documented limits.
//! No test here measures time: waits end when what they wait for happens, and the test
//! harness's own timeout is the only bound.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use snapfs_tests::{Mount, binary, fuse_available};

/// A "broker" that accepts TCP connections and never says a word; it holds each connection
/// until the other side closes it, counting those it accepted and those that were closed.
struct Silent {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    closed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Silent {
    fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        let accepted = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, closed, stop) = (accepted.clone(), closed.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut conn) = conn else { continue };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let closed = closed.clone();
                    // Reads (and ignores) the request until the client goes away.
                    std::thread::spawn(move || {
                        let mut sink = [0u8; 4096];
                        while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
                        closed.fetch_add(1, Ordering::SeqCst);
                    });
                }
            })
        };
        Silent {
            addr,
            accepted,
            closed,
            stop,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// A mount whose cluster `silent` is this broker, each try waiting `timeout` for a byte.
    fn mount(&self, timeout: &str) -> Mount {
        Mount::start_with(&format!(
            "[list]\nttl = \"100ms\"\n\
             [[hivemq]]\nname = \"silent\"\nurl = \"http://{}\"\ntimeout = \"{timeout}\"\n\
             retry_start = \"20ms\"\nretry_max = 3\n",
            self.addr
        ))
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn snapshots(m: &Mount) -> PathBuf {
    m.mountpoint.join("hivemq/silent/snapshots")
}

/// Waits until `cond` holds; only the harness's timeout bounds the wait.
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let mut rounds = 0u64;
    while !cond() {
        rounds += 1;
        if rounds.is_multiple_of(500) {
            eprintln!("still waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_broker_that_never_answers_fails_each_listing_with_eio() {
    if !fuse_available() {
        return;
    }
    let broker = Silent::start();
    let m = broker.mount("1s");
    for round in 1..=2 {
        let before = broker.accepted();
        let out = Command::new("ls")
            .arg(snapshots(&m))
            .output()
            .expect("run ls");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "listing {round} succeeded");
        assert!(
            stderr.contains("Input/output error"),
            "listing {round}: {stderr}"
        );
        // Every listing asks the broker again: a failure is not kept as the answer.
        assert!(broker.accepted() > before, "listing {round} asked nobody");
    }
    let log = m.log();
    assert!(
        log.contains("hivemq/silent: no answer within 1s"),
        "the log names the target and the cause:\n{log}"
    );
}

#[test]
fn a_reader_killed_while_a_broker_is_silent_is_let_go() {
    if !fuse_available() {
        return;
    }
    let broker = Silent::start();
    // A try may wait as long as the configuration allows: only the kill can end these reads
    // soon, and the log tells which did.
    let m = broker.mount("60s");
    let readers = [
        ("ls", snapshots(&m), libc::SIGKILL),
        ("cat", snapshots(&m).join("x.backup"), libc::SIGINT),
    ];
    for (round, (tool, path, signal)) in readers.into_iter().enumerate() {
        let before = broker.accepted();
        let mut child = Command::new(tool)
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the reader");
        // The daemon is asking the broker for the reader: the reader waits in the kernel.
        until("the reader's request to reach the broker", || {
            broker.accepted() > before
        });
        // SAFETY: a signal to our own child, not yet reaped.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().expect("reap the reader");
        assert_eq!(status.signal(), Some(signal), "{tool}: {status}");
        until("the daemon to log the ended request", || {
            m.log()
                .matches("the caller was killed; request ended")
                .count()
                > round
        });
        // The request's call to the broker was dropped with it.
        until("the daemon to close its connection", || {
            broker.closed.load(Ordering::SeqCst) >= broker.accepted()
        });
    }
    // The rest of the mount goes on answering.
    assert!(std::fs::read_dir(m.mountpoint.join("hivemq")).is_ok());
}

#[test]
fn a_huge_retry_start_is_refused_at_start_naming_its_key() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    let config = r.join("config.toml");
    std::fs::write(
        &config,
        "[[hivemq]]\nname = \"b\"\nurl = \"http://127.0.0.1:9\"\nretry_start = \"100000d\"\n",
    )
    .expect("config");
    // Refused before anything is mounted: the mount point need not exist.
    let out = Command::new(binary("snapfsd"))
        .arg("--mountpoint")
        .arg(r.join("mnt"))
        .arg("--config")
        .arg(&config)
        .env("HOME", r)
        .env("XDG_CONFIG_HOME", r.join("config"))
        .env("XDG_DATA_HOME", r.join("data"))
        .env("XDG_CACHE_HOME", r.join("cache"))
        .env("XDG_STATE_HOME", r.join("state"))
        .env("XDG_RUNTIME_DIR", r.join("run"))
        .output()
        .expect("run snapfsd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("retry_start = 100000d is above the largest allowed, 10s"),
        "{stderr}"
    );
}
