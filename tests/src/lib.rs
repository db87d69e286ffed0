//! The harness for end-to-end tests: a real `snapfsd` serving a real FUSE mount in a private
//! home directory, driven with real tools. Every mount a test makes is unmounted when the
//! harness is dropped, also when the test fails.

pub mod conformance;
pub mod dying;
pub mod emulators;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use object_store::{ObjectMeta, ObjectStore};
use snapfs_control::client::Client;
use snapfs_control::wire::{Request, Response, StatusReport, TargetMetrics};

/// Settle time used by tests: short, so uploads start quickly.
pub const TEST_SETTLE: &str = "300ms";

/// Random numbers from a seed (xorshift64; the seed must not be 0), so a test's random choices
/// are the same on every run.
pub struct Dice(pub u64);

impl Dice {
    /// A number below `n`, which must not be 0.
    pub fn roll(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    /// An index below `n`, which must not be 0.
    pub fn pick(&mut self, n: usize) -> usize {
        self.roll(n as u64) as usize
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.roll(256) as u8).collect()
    }
}

/// The files below `prefix` of a bucket folder (none if it is not there).
pub fn files_under(bucket: &Path, prefix: &str) -> std::collections::BTreeSet<PathBuf> {
    let dir = bucket.join(prefix);
    if !dir.exists() {
        return std::collections::BTreeSet::new();
    }
    sh(&format!("find '{}' -type f", dir.display()))
        .lines()
        .map(PathBuf::from)
        .collect()
}

/// Checks that the bucket folder holds exactly the packs its manifests list and no lease, as
/// it must after a final cleanup; answers how many manifests it holds.
pub fn only_listed_packs_left(bucket: &Path) -> usize {
    use snapfs_fs::format::{LEASE_PREFIX, MANIFEST_PREFIX, Manifest, PACK_PREFIX};
    let manifests = files_under(bucket, MANIFEST_PREFIX);
    let mut listed = std::collections::BTreeSet::new();
    for path in &manifests {
        let bytes = std::fs::read(path).expect("read a manifest");
        let m = Manifest::from_bytes(&bytes).expect("a manifest reads");
        listed.extend(m.packs.iter().map(|p| bucket.join(p)));
    }
    assert_eq!(
        files_under(bucket, PACK_PREFIX),
        listed,
        "packs left that no manifest lists, or listed packs missing"
    );
    let leases = files_under(bucket, LEASE_PREFIX);
    assert!(leases.is_empty(), "leases left: {leases:?}");
    let retired = files_under(bucket, snapfs_fs::format::RETIRED_PREFIX);
    assert!(
        retired.is_empty(),
        "records of retired packs left: {retired:?}"
    );
    manifests.len()
}

/// A built binary of the workspace (`snapfsd`, `snapfs`), beside the test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so binaries are built",
        path.display()
    );
    path
}

/// Whether this machine can mount FUSE file systems here; tests print why they skip if not.
pub fn fuse_available() -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok();
    if !ok {
        eprintln!("skipping: /dev/fuse cannot be opened (FUSE not available or not permitted)");
    }
    ok
}

/// Runs a shell command line, panicking with its output if it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "command failed: {cmd}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The standard output of a command that must have succeeded; panics with all it said if not.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `len` random bytes to `path`.
pub fn random_file(path: &Path, len: u64) {
    sh(&format!(
        "head -c {len} /dev/urandom > '{}'",
        path.display()
    ));
}

/// Makes a SQLite database at `path` of `rows` rows of 10 KB random blobs, indexed by id, in
/// 4 KiB pages: a point query touches a handful of them.
pub fn sqlite_db(path: &Path, rows: u32) {
    sh(&format!(
        "sqlite3 '{}' \"PRAGMA page_size=4096; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < {rows})
         INSERT INTO t SELECT i, randomblob(10000) FROM n;\"",
        path.display()
    ));
}

/// The objects of `store` under `prefix`.
pub fn list_objects(store: &dyn ObjectStore, prefix: &str) -> Vec<ObjectMeta> {
    conformance::runtime()
        .block_on(futures::TryStreamExt::try_collect(
            store.list(Some(&prefix.into())),
        ))
        .expect("list the store")
}

pub struct Mount {
    pub root: tempfile::TempDir,
    pub mountpoint: PathBuf,
    config: PathBuf,
    /// The remote `target()`, `wait()` and `store_metrics()` are about.
    remote: String,
    /// Extra arguments and environment of the daemon, set before [`Mount::launch`].
    pub daemon_args: Vec<std::ffi::OsString>,
    pub daemon_env: Vec<(String, std::ffi::OsString)>,
    child: Option<Child>,
}

impl Mount {
    /// A daemon on the embedded default remote (`cloud/local`), with a short settle time.
    pub fn start() -> Mount {
        Mount::start_with(&format!("[upload]\nsettle = \"{TEST_SETTLE}\"\n"))
    }

    /// As `start`, but staged files are not stored while they are copied: the run after
    /// settling reads them all, so it lasts long enough to be interrupted.
    pub fn start_storing_late() -> Mount {
        Mount::start_with(&format!(
            "[upload]\nsettle = \"{TEST_SETTLE}\"\nearly = false\n"
        ))
    }

    pub fn start_with(config: &str) -> Mount {
        Mount::start_remote("local", config)
    }

    /// A daemon with `config` whose private home holds `files` (path below home, content) from
    /// the start, such as a kubeconfig at `.kube/config`.
    pub fn start_with_home(config: &str, files: &[(&str, &str)]) -> Mount {
        Mount::start_prepared("local", config, files)
    }

    /// A daemon with `config`, whose remote `remote` is the one tests talk about.
    pub fn start_remote(remote: &str, config: &str) -> Mount {
        Mount::start_prepared(remote, config, &[])
    }

    fn start_prepared(remote: &str, config: &str, files: &[(&str, &str)]) -> Mount {
        let mut m = Mount::prepared(remote, config, files);
        m.launch();
        m
    }

    /// A mount with `config` on the default remote whose daemon is not started yet: set
    /// `daemon_args` and `daemon_env`, then [`Mount::launch`] it.
    pub fn unstarted(config: &str) -> Mount {
        Mount::prepared("local", config, &[])
    }

    fn prepared(remote: &str, config: &str, files: &[(&str, &str)]) -> Mount {
        let root = tempfile::Builder::new()
            .prefix("snapfs-e2e-")
            .tempdir()
            .expect("tempdir");
        let mountpoint = root.path().join("mnt");
        std::fs::create_dir_all(&mountpoint).expect("mountpoint");
        std::fs::create_dir_all(root.path().join("home")).expect("home");
        for (path, content) in files {
            let path = root.path().join("home").join(path);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).expect("a folder in home");
            }
            std::fs::write(&path, content).expect("a file in home");
        }
        let config_path = root.path().join("config.toml");
        std::fs::write(&config_path, config).expect("config");
        Mount {
            root,
            mountpoint,
            config: config_path,
            remote: remote.to_string(),
            daemon_args: Vec::new(),
            daemon_env: Vec::new(),
            child: None,
        }
    }

    pub fn home(&self) -> PathBuf {
        self.root.path().join("home")
    }

    /// Environment every process of this mount runs with: a private home and XDG dirs.
    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        let r = self.root.path();
        vec![
            ("HOME", self.home()),
            ("XDG_CONFIG_HOME", r.join("config")),
            ("XDG_DATA_HOME", r.join("data")),
            ("XDG_CACHE_HOME", r.join("cache")),
            ("XDG_STATE_HOME", r.join("state")),
            ("XDG_RUNTIME_DIR", r.join("run")),
        ]
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("snapfsd.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The directory of the remote in the mount.
    pub fn target(&self) -> PathBuf {
        self.mountpoint.join("cloud").join(&self.remote)
    }

    /// Where the default remote keeps its objects on disk.
    pub fn store_dir(&self) -> PathBuf {
        self.root.path().join("data/snapfs/local")
    }

    fn record(&self) -> PathBuf {
        let paths = self.paths();
        snapfs_control::client::record_paths(&paths, &self.mountpoint).1
    }

    /// The paths the daemon derives from this mount's environment.
    fn paths(&self) -> snapfs_control::paths::Paths {
        let env = self.env();
        snapfs_control::paths::Paths::from_vars(|var| {
            env.iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| v.clone().into_os_string())
        })
    }

    fn socket(&self) -> PathBuf {
        snapfs_control::client::record_paths(&self.paths(), &self.mountpoint).0
    }

    /// Starts the daemon and waits until it has mounted.
    pub fn launch(&mut self) {
        // A daemon killed with SIGKILL leaves its record behind; readiness is the new one.
        let _ = std::fs::remove_file(self.record());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = Command::new(binary("snapfsd"))
            .arg("--mountpoint")
            .arg(&self.mountpoint)
            .arg("--config")
            .arg(&self.config)
            .envs(self.env())
            // The developer's own clusters stay out of the tests: only the private home counts.
            .env_remove("KUBECONFIG")
            .env("SNAPFS_LOG", "info,snapfs_fs=debug")
            .args(&self.daemon_args)
            .envs(self.daemon_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start snapfsd");
        self.child = Some(child);
        let record = self.record();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !record.exists() {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("snapfsd exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "snapfsd did not mount in time:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asks the daemon to stop and waits for it; the mount is gone afterwards.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        self.detach();
    }

    /// Kills the daemon with SIGKILL, as a crash would, and clears the dead mount.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.detach();
    }

    /// Removes whatever is still mounted at the mount point (a dead mount after a crash).
    fn detach(&self) {
        let c =
            std::ffi::CString::new(self.mountpoint.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: c is a NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Starts the daemon again after `kill9`.
    pub fn relaunch(&mut self) {
        self.launch();
    }

    pub fn call(&self, req: &Request) -> Response {
        self.call_watching(req, |_, _| {})
    }

    /// Like [`Mount::call`], for a request that asked for progress: each (done, total) line
    /// goes to `progress`.
    pub fn call_watching(&self, req: &Request, progress: impl FnMut(u64, u64)) -> Response {
        let mut client = Client::connect(&self.socket()).expect("connect to snapfsd");
        client.call_watching(req, progress).expect("control call")
    }

    pub fn status(&self) -> StatusReport {
        match self.call(&Request::Status) {
            Response::Status(s) => s,
            other => panic!("unexpected answer {other:?}"),
        }
    }

    /// What went to the store for the remote so far.
    pub fn store_metrics(&self) -> TargetMetrics {
        let target = format!("cloud/{}", self.remote);
        self.status()
            .metrics
            .targets
            .into_iter()
            .find(|t| t.target == target)
            .expect("the remote's metrics")
    }

    /// Runs the `snapfs` CLI with this mount's environment.
    pub fn snapfs(&self, args: &[&str]) -> Output {
        Command::new(binary("snapfs"))
            .args(args)
            .envs(self.env())
            .output()
            .expect("run snapfs")
    }

    /// Copies `src` (a file or a folder) to the remote's `uploads/name` and waits for the
    /// snapshot.
    pub fn upload(&self, src: &Path, name: &str) {
        sh(&format!(
            "cp -r '{}' '{}/uploads/{name}'",
            src.display(),
            self.target().display()
        ));
        self.wait(name);
    }

    /// Uploads as `c` a folder of a 3 MB random `victim.bin`, whose frame sits first in the
    /// only pack, and an `other.txt` holding "fine"; answers the snapshot's path.
    pub fn upload_victim_tree(&self) -> PathBuf {
        let src = self.root.path().join("src");
        sh(&format!(
            "mkdir -p '{s}' && head -c 3000000 /dev/urandom > '{s}/victim.bin' && echo fine > '{s}/other.txt'",
            s = src.display()
        ));
        self.upload(&src, "c");
        self.target().join("snapshots/c")
    }

    /// Runs `f`; answers what it gave and how many bytes the remote's store served meanwhile.
    pub fn get_bytes_during<T>(&self, f: impl FnOnce() -> T) -> (T, u64) {
        let before = self.store_metrics().get_bytes;
        let out = f();
        (out, self.store_metrics().get_bytes - before)
    }

    /// Waits for the upload `name` of the remote to end, asserting it succeeded.
    pub fn wait(&self, name: &str) {
        let req = Request::Wait {
            target: format!("cloud/{}", self.remote),
            name: name.into(),
        };
        match self.call(&req) {
            Response::Job(s) if s.state == snapfs_control::wire::UploadState::Done => {}
            other => panic!(
                "upload {name} did not succeed: {other:?}\nlog:\n{}",
                self.log()
            ),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.stop();
    }
}
