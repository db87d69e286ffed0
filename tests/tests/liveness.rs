//! The mount never hangs: uploads made by several writers at once all end, and each snapshot is
//! there the moment `snapfs wait` returns; `snapfs unmount` with a request stuck on a server
//! that never answers ends it and really unmounts. A hang fails the test instead of hanging it: the
//! writers are child processes with a deadline, and on timeout the FUSE connection is aborted
//! so that nothing stays stuck in the kernel.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use snapfs_tests::{Mount, binary, fuse_available, sh};

/// A small xorshift generator: the timing differs from run to run, and the seed is printed so a
/// failing run can be told apart.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        eprintln!("seed {seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Frees a mount whose daemon no longer answers: every request waiting on it fails at once.
fn abort_connection(mountpoint: &Path) {
    let Ok(out) = Command::new("mountpoint")
        .arg("-d")
        .arg(mountpoint)
        .output()
    else {
        return;
    };
    let dev = String::from_utf8_lossy(&out.stdout);
    let minor = dev
        .trim()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let conns = Path::new("/sys/fs/fuse/connections");
    if !conns.join(&minor).exists() {
        let _ = Command::new("mount")
            .args(["-t", "fusectl", "none"])
            .arg(conns)
            .status();
    }
    let _ = std::fs::write(conns.join(&minor).join("abort"), "1");
}

/// Waits for every child until `deadline`; answers whether they all ended in time and
/// succeeded. On timeout the connection is aborted and the children are killed.
fn join_by(m: &Mount, children: &mut [Child], deadline: Instant) -> Result<(), String> {
    let mut failed = Vec::new();
    for (i, c) in children.iter_mut().enumerate() {
        loop {
            match c.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        failed.push(format!("writer {i} exited with {status}"));
                    }
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    abort_connection(&m.mountpoint);
                    for c in children.iter_mut() {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    return Err(format!("writer {i} still running at the deadline: hung"));
                }
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("\n"))
    }
}

#[test]
fn concurrent_uploads_never_hang() {
    if !fuse_available() {
        return;
    }
    const WRITERS: usize = 4;
    const ROUNDS: usize = 25;
    let m = Mount::start();
    let mut rng = Rng::new();
    let snapfs = binary("snapfs");
    let uploads = m.target().join("uploads");
    let snapshots = m.target().join("snapshots");
    let mut children = Vec::new();
    for w in 0..WRITERS {
        // A folder of a few small files per writer, copied again under a new name each round.
        let src = m.root.path().join(format!("src{w}"));
        sh(&format!(
            "mkdir -p '{s}/sub' && head -c {} /dev/urandom > '{s}/a.bin' && echo {w} > '{s}/sub/b.txt'",
            1 + rng.below(200_000),
            s = src.display()
        ));
        let mut script = String::from("exec 2>&1\n");
        for r in 0..ROUNDS {
            let name = format!("w{w}-r{r}");
            let pause = rng.below(100);
            script.push_str(&format!(
                "sleep 0.{pause:03}\n\
                 cp -r '{src}' '{up}/{name}' || {{ echo '{name}: cp failed'; exit 1; }}\n\
                 ls '{snaps}' > /dev/null || {{ echo '{name}: ls failed'; exit 1; }}\n\
                 '{snapfs}' wait '{up}/{name}' || {{ echo '{name}: wait failed'; exit 1; }}\n\
                 test -f '{snaps}/{name}/sub/b.txt' || {{ echo '{name}: not visible after wait'; exit 1; }}\n",
                src = src.display(),
                up = uploads.display(),
                snaps = snapshots.display(),
                snapfs = snapfs.display(),
            ));
        }
        children.push(
            Command::new("sh")
                .arg("-c")
                .arg(script)
                .envs(m.env())
                .stdin(Stdio::null())
                .stdout(
                    std::fs::File::create(m.root.path().join(format!("writer{w}.log")))
                        .expect("writer log"),
                )
                .spawn()
                .expect("start a writer"),
        );
    }
    // Meanwhile the status files are read over and over: lookups under uploads/ that ask the
    // job engine, while finished uploads make the kernel forget names in the same folder.
    let stop = m.root.path().join("stop");
    let mut poller = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while [ ! -e '{stop}' ]; do cat '{up}'/*.status > /dev/null 2>&1; done; exit 0",
            stop = stop.display(),
            up = uploads.display()
        ))
        .stdin(Stdio::null())
        .spawn()
        .expect("start the status reader");
    let deadline = Instant::now() + Duration::from_secs(120);
    let ended = join_by(&m, &mut children, deadline).and_then(|()| {
        std::fs::write(&stop, b"").expect("stop the status reader");
        join_by(
            &m,
            std::slice::from_mut(&mut poller),
            Instant::now() + Duration::from_secs(10),
        )
    });
    let _ = poller.kill();
    let _ = poller.wait();
    if let Err(e) = ended {
        let writers: String = (0..WRITERS)
            .map(|w| std::fs::read_to_string(m.root.path().join(format!("writer{w}.log"))))
            .filter_map(Result::ok)
            .flat_map(|out| {
                // `snapfs wait` prints a `ready` line per snapshot; anything else is news.
                out.lines()
                    .filter(|l| !l.starts_with("ready "))
                    .map(|l| format!("{l}\n"))
                    .collect::<Vec<_>>()
            })
            .collect();
        panic!("{e}\nwriters:\n{writers}\nlog:\n{}", m.log());
    }
    let listed = std::fs::read_dir(&snapshots)
        .expect("list snapshots")
        .filter_map(Result::ok)
        .filter(|e| e.file_name() != "latest")
        .count();
    assert_eq!(listed, WRITERS * ROUNDS, "every upload became a snapshot");
}

#[test]
fn unmount_ends_a_request_stuck_on_a_silent_server() {
    if !fuse_available() {
        return;
    }
    // Takes connections and reads what comes, but never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("address").port();
    let (asked, requests) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut conn in silent.incoming().flatten() {
            let mut buf = [0u8; 4096];
            if conn.read(&mut buf).is_ok_and(|n| n > 0) {
                let _ = asked.send(());
            }
            held.push(conn);
        }
    });
    let mut m = Mount::start_with(&format!(
        "[upload]\nsettle = \"300ms\"\n\
         [[hivemq]]\nname = \"silent\"\nurl = \"http://127.0.0.1:{port}\"\n"
    ));
    let mut reader = Command::new("ls")
        .arg(m.mountpoint.join("hivemq/silent/snapshots"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ls");
    requests
        .recv_timeout(Duration::from_secs(30))
        .expect("the listing reached the server");
    let mut unmount = Command::new(binary("snapfs"))
        .arg("unmount")
        .arg(&m.mountpoint)
        .envs(m.env())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start snapfs unmount");
    let deadline = Instant::now() + Duration::from_secs(60);
    let ended = join_by(&m, std::slice::from_mut(&mut unmount), deadline);
    let out = unmount.wait_with_output().expect("unmount output");
    let mounted = Command::new("mountpoint")
        .arg("-q")
        .arg(&m.mountpoint)
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        abort_connection(&m.mountpoint);
    }
    let reader_ended = join_by(
        &m,
        std::slice::from_mut(&mut reader),
        Instant::now() + Duration::from_secs(10),
    );
    m.kill9();
    let log = m.log();
    assert!(ended.is_ok(), "snapfs unmount: {ended:?}\n{log}");
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
    assert!(
        !mounted,
        "still mounted after `snapfs unmount` said {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unmounted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The stuck listing failed rather than waiting for the server.
    assert!(
        reader_ended.is_err(),
        "ls ended with an error, as it got none: {reader_ended:?}"
    );
}
