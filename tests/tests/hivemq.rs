//! HiveMQ clusters through a real mount, against the HiveMQ REST test server (hivemqsim)
//! running in this process: backups listed, read through the cache, created, restored, and
//! every failure turned into the errno and message DESIGN §10 asks for.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use hivemqsim::{Access, BackupState, Config, HiveMqSim, Seed};
use snapfs_tests::{Mount, TEST_SETTLE, fuse_available, sh};

/// A test server on its own runtime; dropping it stops the server, then the runtime.
struct Broker {
    sim: Option<HiveMqSim>,
    rt: tokio::runtime::Runtime,
    /// Holds the password file the mount's configuration names.
    secrets: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let sim = rt
            .block_on(HiveMqSim::start(Config::default()))
            .expect("hivemqsim starts");
        Broker {
            sim: Some(sim),
            rt,
            secrets: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn sim(&self) -> &HiveMqSim {
        self.sim.as_ref().expect("running")
    }

    /// A mount with cluster `broker` at this server (logging in as `admin` with `password`,
    /// if given) beside the default `cloud/local`, polling and retrying in milliseconds.
    fn mount(&self, password: Option<&str>) -> Mount {
        let auth = match password {
            Some(pw) => {
                let file = self.secrets.path().join("password");
                std::fs::write(&file, format!("{pw}\n")).expect("password file");
                format!(
                    "username = \"admin\"\npassword_file = {:?}\n",
                    file.display().to_string()
                )
            }
            None => String::new(),
        };
        Mount::start_with(&format!(
            "[upload]\nsettle = \"{TEST_SETTLE}\"\n[list]\nttl = \"100ms\"\n\
             [[hivemq]]\nname = \"broker\"\nurl = \"{}\"\n{auth}\
             poll_start = \"50ms\"\npoll_max = \"200ms\"\nretry_start = \"20ms\"\nretry_max = 3\n",
            self.sim().url()
        ))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(sim) = self.sim.take() {
            self.rt.block_on(sim.shutdown());
        }
    }
}

/// A test server, or `None` where FUSE is not available and the test has nothing to mount.
fn broker() -> Option<Broker> {
    if !fuse_available() {
        return None;
    }
    Some(Broker::start())
}

fn cluster(m: &Mount) -> PathBuf {
    m.mountpoint.join("hivemq/broker")
}

/// Runs a command line, expecting it to fail; answers its standard error.
fn sh_fails(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(!out.status.success(), "{cmd} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `snapfs` with `args`, expecting it to exit with 1; answers its standard error.
fn snapfs_fails(m: &Mount, args: &[&str]) -> String {
    let out = m.snapfs(args);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn seed(b: &Broker, size: u64, minute: u32) -> String {
    let at = Utc.with_ymd_and_hms(2026, 11, 22, 10, minute, 0).unwrap();
    b.sim()
        .seed(Seed::with_size(size).created_at(at))
        .expect("seeded")
        .id
}

#[test]
fn backups_are_files_read_once_through_the_cache() {
    let Some(b) = broker() else { return };
    let old = seed(&b, 5 << 20, 0);
    let new = seed(&b, 70_000, 5);
    let m = b.mount(None);
    let dir = cluster(&m);
    assert_eq!(sh(&format!("ls {}", dir.display())), "snapshots\n");
    let listing = sh(&format!("ls -l {}/snapshots", dir.display()));
    for want in [
        "5242880 ",
        "70000 ",
        &format!("{old}.backup"),
        &format!("{new}.backup"),
    ] {
        assert!(listing.contains(want), "{want} in {listing}");
    }
    let latest = std::fs::read_link(dir.join("snapshots/latest")).unwrap();
    assert_eq!(latest, Path::new(&format!("{new}.backup")));

    let local = m.root.path().join("old.backup");
    let path = dir.join(format!("snapshots/{old}.backup"));
    sh(&format!("cp {} {}", path.display(), local.display()));
    assert_eq!(std::fs::read(&local).unwrap(), b.sim().file(&old).unwrap());
    sh(&format!("unzip -tq {}", local.display()));
    let fetched = b.sim().counters().downloads();
    assert!(fetched >= 2, "two blocks, {fetched} downloads");
    // The second read comes from the cache: the broker is not asked again.
    sh(&format!("cmp {} {}", path.display(), local.display()));
    let latest_copy = sh(&format!("cat {}/snapshots/latest | wc -c", dir.display()));
    assert_eq!(latest_copy.trim(), "70000");
    sh(&format!("cmp {} {}", path.display(), local.display()));
    assert_eq!(b.sim().counters().downloads(), fetched + 1);

    let list = m.snapfs(&["list", "hivemq/broker"]);
    let (stdout, stderr) = text(&list);
    assert!(list.status.success(), "{stderr}");
    assert!(
        stdout.find(&new) < stdout.find(&old),
        "newest first:\n{stdout}"
    );
}

#[test]
fn snapshot_makes_a_backup_and_follows_it() {
    let Some(b) = broker() else { return };
    let m = b.mount(None);
    b.sim()
        .faults()
        .set_slow_backup(Some(Duration::from_millis(1500)));
    let child = Command::new(snapfs_tests::binary("snapfs"))
        .args(["snapshot", "hivemq/broker", "--json"])
        .envs(m.env())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("snapfs snapshot");
    // While it runs, `snapfs status` shows the job and `snapfs list` the backup as creating.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = m.status();
        if let Some(job) = status.jobs.iter().find(|j| j.target == "hivemq/broker") {
            assert_eq!(job.state, snapfs_control::wire::UploadState::Uploading);
            break;
        }
        assert!(Instant::now() < deadline, "no job in status");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (list, _) = text(&m.snapfs(&["list", "hivemq/broker"]));
    assert!(list.contains("creating"), "{list}");
    let out = child.wait_with_output().unwrap();
    let (stdout, _) = text(&out);
    assert!(out.status.success(), "{stdout}\n{}", m.log());
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["state"], "done", "{v}");
    let name = v["snapshot"].as_str().unwrap().to_string();
    let id = name.strip_suffix(".backup").unwrap();
    assert_eq!(b.sim().backup(id).unwrap().state, BackupState::Completed);
    let made = cluster(&m).join("snapshots").join(&name);
    assert_eq!(std::fs::metadata(&made).unwrap().len(), 64 * 1024);
    assert_eq!(std::fs::read(&made).unwrap(), b.sim().file(id).unwrap());
    assert_eq!(b.sim().counters().backups_created(), 1);

    // A failed backup says why.
    b.sim().faults().set_slow_backup(None);
    b.sim()
        .faults()
        .set_backup_failure(Some("disk full on node 2"));
    let stderr = snapfs_fails(&m, &["snapshot", "hivemq/broker"]);
    assert!(stderr.contains("FAILED: disk full on node 2"), "{stderr}");
}

#[test]
fn a_second_backup_while_one_runs_is_refused_clearly() {
    let Some(b) = broker() else { return };
    let m = b.mount(None);
    b.sim()
        .faults()
        .set_slow_backup(Some(Duration::from_secs(2)));
    let req = snapfs_control::wire::Request::Backup {
        target: "hivemq/broker".into(),
    };
    assert!(matches!(
        m.call(&req),
        snapfs_control::wire::Response::Job(_)
    ));
    let stderr = snapfs_fails(&m, &["snapshot", "hivemq/broker"]);
    assert!(
        stderr.contains("another backup or restore is running"),
        "{stderr}"
    );
    // SOURCE and --name belong to buckets.
    let out = m.snapfs(&["snapshot", "hivemq/broker", "--name", "x"]);
    assert_eq!(out.status.code(), Some(2));
    let out = m.snapfs(&["snapshot", "hivemq/broker", "/etc/hostname"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);
}

#[test]
fn restore_follows_the_broker_and_copies_locally() {
    let Some(b) = broker() else { return };
    let id = seed(&b, 100_000, 0);
    let m = b.mount(None);
    let snap = format!("hivemq/broker/snapshots/{id}.backup");
    let out = m.snapfs(&["restore", &snap]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("restored"), "{stdout}");
    assert_eq!(
        b.sim().backup(&id).unwrap().state,
        BackupState::RestoreCompleted
    );
    assert_eq!(b.sim().counters().restores(), 1);

    b.sim()
        .faults()
        .set_restore_failure(Some("cluster too small"));
    let stderr = snapfs_fails(&m, &["restore", &snap]);
    assert!(stderr.contains("cluster too small"), "{stderr}");
    // A restored (and a failed-restore) backup is still a file that can be copied out.
    let dest = m.root.path().join("copy.zip");
    let out = m.snapfs(&["restore", &snap, dest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(std::fs::read(&dest).unwrap(), b.sim().file(&id).unwrap());
    // Buckets restore to a DEST only.
    let out = m.snapfs(&["restore", "cloud/local/snapshots/x"]);
    assert_ne!(out.status.code(), Some(0));
    snapfs_fails(&m, &["restore", "hivemq/broker/snapshots/nope.backup"]);
}

#[test]
fn a_wrong_password_is_eacces_with_a_readable_reason() {
    let Some(b) = broker() else { return };
    b.sim().add_user("admin", "right", Access::Full);
    seed(&b, 1000, 0);
    let m = b.mount(Some("wrong"));
    let stderr = sh_fails(&format!("ls {}/snapshots", cluster(&m).display()));
    assert!(stderr.contains("Permission denied"), "{stderr}");
    let stderr = snapfs_fails(&m, &["list", "hivemq/broker"]);
    assert!(
        stderr.contains("credentials rejected (401 Unauthorized"),
        "{stderr}"
    );
    assert!(!m.log().contains("wrong"), "the password is never logged");
    drop(m);
    let m = b.mount(Some("right"));
    assert_eq!(
        sh(&format!("ls {}/snapshots | wc -l", cluster(&m).display())).trim(),
        "2"
    );
}

#[test]
fn a_broker_down_is_eio_after_retries_and_the_rest_keeps_working() {
    let Some(b) = broker() else { return };
    let id = seed(&b, 1000, 0);
    b.sim().faults().set_unavailable(true);
    let m = b.mount(None);
    let stderr = sh_fails(&format!("ls {}/snapshots", cluster(&m).display()));
    assert!(stderr.contains("Input/output error"), "{stderr}");
    assert!(b.sim().counters().unavailable() >= 4, "retried");
    // The bucket beside it does not notice.
    let local = m.mountpoint.join("cloud/local");
    sh(&format!("ls {}/snapshots", local.display()));
    sh(&format!("echo hi > {}/uploads/note", local.display()));
    m.wait("note");
    assert_eq!(
        sh(&format!("cat {}/snapshots/note", local.display())),
        "hi\n"
    );
    // A short storm is ridden out by the retries.
    b.sim().faults().set_unavailable(false);
    b.sim().faults().fail_next(2);
    std::thread::sleep(Duration::from_millis(200));
    let listing = sh(&format!("ls {}/snapshots", cluster(&m).display()));
    assert!(listing.contains(&format!("{id}.backup")), "{listing}");
}

#[test]
fn dropped_downloads_never_give_wrong_bytes() {
    let Some(b) = broker() else { return };
    let id = seed(&b, 200_000, 0);
    let m = b.mount(None);
    let path = cluster(&m).join(format!("snapshots/{id}.backup"));
    b.sim().faults().set_drop_download_after(Some(4096));
    let stderr = sh_fails(&format!("cat {} > /dev/null", path.display()));
    assert!(stderr.contains("Input/output error"), "{stderr}");
    assert!(b.sim().counters().downloads() >= 2, "retried");
    b.sim().faults().set_drop_download_after(None);
    let copy = m.root.path().join("copy");
    sh(&format!("cp {} {}", path.display(), copy.display()));
    assert_eq!(std::fs::read(&copy).unwrap(), b.sim().file(&id).unwrap());
}

#[test]
fn nothing_under_a_cluster_can_be_written() {
    let Some(b) = broker() else { return };
    let id = seed(&b, 1000, 0);
    let m = b.mount(None);
    let dir = cluster(&m);
    for cmd in [
        format!("touch {}/new", dir.display()),
        format!("mkdir {}/uploads", dir.display()),
        format!("cp /etc/hostname {}/snapshots/", dir.display()),
        format!("sh -c 'echo x >> {}/snapshots/{id}.backup'", dir.display()),
        format!("rm {}/snapshots/{id}.backup", dir.display()),
    ] {
        let stderr = sh_fails(&cmd);
        assert!(stderr.contains("Read-only file system"), "{cmd}: {stderr}");
    }
    let out = m.snapfs(&[
        "rm",
        "--yes",
        &format!("hivemq/broker/snapshots/{id}.backup"),
    ]);
    let (_, stderr) = text(&out);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr.contains("cannot delete backups"), "{stderr}");
}
