//! The job engine over a target that exists only in tests, with no mount: the tests play the
//! VFS's part (admit, stage files, record activity) and step the engine themselves (`due`,
//! `start`), so nothing depends on how long anything takes.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use snapfs_fs::vfs::{Mark, Staging, TargetId, UploadHooks, UploadState};
use tokio::sync::mpsc;

use super::Jobs;
use crate::config::Retention;
use crate::fake_target::{Began, FakeTarget};
use crate::registry::Registry;

struct Engine {
    jobs: Arc<Jobs>,
    staging: Arc<Staging>,
    target: Arc<FakeTarget>,
    began: mpsc::UnboundedReceiver<Began>,
    t: TargetId,
    /// Snapshot names the mount was told of.
    changed: Arc<Mutex<Vec<String>>>,
}

impl Engine {
    /// A job engine over one test target, keeping its state and staging in `dir`.
    fn new(dir: &Path) -> Engine {
        let (target, began) = FakeTarget::new();
        Engine::with(dir, target, began)
    }

    /// No settle time: an upload with no open handle is settled.
    fn with(dir: &Path, target: Arc<FakeTarget>, began: mpsc::UnboundedReceiver<Began>) -> Engine {
        Engine::settling(dir, target, began, Duration::ZERO)
    }

    fn settling(
        dir: &Path,
        target: Arc<FakeTarget>,
        began: mpsc::UnboundedReceiver<Began>,
        settle: Duration,
    ) -> Engine {
        let registry = Registry::new(Vec::new());
        let t = registry
            .add(target.into_target("box", Retention::default()))
            .id();
        let changed = Arc::new(Mutex::new(Vec::new()));
        let seen = changed.clone();
        registry.on_change(move |_, name| seen.lock().unwrap().push(name.to_string()));
        let staging = Arc::new(Staging::new(dir.join("staging")));
        let jobs = Jobs::new(
            registry,
            staging.clone(),
            dir.join("state"),
            settle,
            true,
            tokio::runtime::Handle::current(),
        );
        Engine {
            jobs,
            staging,
            target,
            began,
            t,
            changed,
        }
    }

    /// What the VFS does for `mkdir uploads/NAME` and writing `file` in it, handle left open.
    async fn stage(&self, name: &str, file: &str, data: &[u8]) {
        self.jobs.admit(self.t, name).await.unwrap();
        let dir = self.staging.target_dir("test/box").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), data).unwrap();
        self.staging.opened(self.t, name);
    }

    fn close(&self, name: &str) {
        self.staging.closed(self.t, name);
    }

    /// A write under `uploads/NAME` after the job started.
    fn rewrite(&self, name: &str, file: &str, data: &[u8]) {
        let path = self.staging.target_dir("test/box").join(name).join(file);
        std::fs::write(path, data).unwrap();
        self.staging.touch(self.t, name);
    }

    /// Starts whatever is due now; answers the names started.
    fn step(&self) -> Vec<String> {
        let due = self.jobs.due();
        let names = due.iter().map(|(_, n)| n.clone()).collect();
        for (t, name) in due {
            self.jobs.start(t, name);
        }
        names
    }

    fn state(&self, name: &str) -> Option<UploadState> {
        self.jobs
            .all()
            .into_iter()
            .find(|s| s.snapshot == name)
            .map(|s| s.state)
    }

    async fn ended(&self, name: &str) -> super::UploadStatus {
        self.jobs.wait(self.t, name).await.unwrap()
    }

    fn changed(&self) -> Vec<String> {
        self.changed.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_starts_only_once_settled_and_becomes_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Engine::new(dir.path());
    e.stage("db-1", "a.txt", b"hello").await;
    assert_eq!(e.state("db-1"), Some(UploadState::Staging));
    // A handle is open: not settled, nothing starts.
    assert!(e.step().is_empty());
    e.close("db-1");
    assert_eq!(e.step(), ["db-1"]);
    let began = e.began.recv().await.unwrap();
    assert_eq!(began.files, [("a.txt".to_string(), b"hello".to_vec())]);
    let end = e.ended("db-1").await;
    assert_eq!(end.state, UploadState::Done);
    assert_eq!((end.bytes_done, end.bytes_total), (5, 5));
    assert_eq!(e.target.names(), ["db-1"]);
    assert_eq!(e.changed(), ["db-1"]);
    // The staged copy is gone by the time the job is seen done.
    assert!(!e.staging.target_dir("test/box").join("db-1").exists());
    assert!(e.staging.activity(e.t, "db-1").is_none());
    // A name that is taken now is refused before anything is staged.
    assert!(e.jobs.admit(e.t, "db-1").await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_engine_looks_again_when_a_closed_upload_settles() {
    let dir = tempfile::tempdir().unwrap();
    let (target, began) = FakeTarget::new();
    let settle = Duration::from_secs(3600);
    let e = Engine::settling(dir.path(), target, began, settle);
    e.stage("db-1", "a.txt", b"hello").await;
    // A handle is open: no time to settle is known.
    assert_eq!(e.jobs.next_settle(Instant::now()), None);
    e.close("db-1");
    let quiet_since = e.staging.activity(e.t, "db-1").unwrap().last_change;
    assert_eq!(
        e.jobs.next_settle(Instant::now()),
        Some(quiet_since + settle)
    );
    // Once that time has come, the upload is due, not a time to wake for.
    assert_eq!(e.jobs.next_settle(quiet_since + settle), None);
    assert!(
        e.step().is_empty(),
        "nothing settled in the real time that passed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_during_the_run_cancels_it_and_the_upload_settles_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Engine::new(dir.path());
    e.target.hold();
    e.stage("db-1", "a.txt", b"old").await;
    e.close("db-1");
    assert_eq!(e.step(), ["db-1"]);
    e.began.recv().await.unwrap();
    assert_eq!(e.state("db-1"), Some(UploadState::Uploading));
    e.rewrite("db-1", "a.txt", b"new");
    // The engine sees the new generation and tells the run to stop; nothing new starts
    // while it is still running.
    assert!(e.step().is_empty());
    e.target.release();
    let mut rx = e.jobs.changed.subscribe();
    while e.state("db-1") != Some(UploadState::Staging) {
        rx.changed().await.unwrap();
    }
    assert!(e.target.names().is_empty());
    // Settled again: a new run takes the new content.
    assert_eq!(e.step(), ["db-1"]);
    let began = e.began.recv().await.unwrap();
    assert_eq!(began.files, [("a.txt".to_string(), b"new".to_vec())]);
    e.target.release();
    assert_eq!(e.ended("db-1").await.state, UploadState::Done);
    assert_eq!(e.target.names(), ["db-1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_upload_waits_for_new_writes_then_retries() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Engine::new(dir.path());
    e.target.fail_next();
    e.stage("db-1", "a.txt", b"x").await;
    e.close("db-1");
    assert_eq!(e.step(), ["db-1"]);
    let end = e.ended("db-1").await;
    assert_eq!(end.state, UploadState::Failed);
    assert!(end.error.unwrap().contains("told to fail"));
    e.began.recv().await.unwrap();
    // The same files failed: not tried again until they change.
    assert!(e.step().is_empty());
    assert_eq!(e.state("db-1"), Some(UploadState::Failed));
    e.rewrite("db-1", "a.txt", b"y");
    // Written to since it failed: staging again at once, as users see it.
    assert_eq!(e.state("db-1"), Some(UploadState::Staging));
    assert_eq!(e.step(), ["db-1"]);
    assert_eq!(e.ended("db-1").await.state, UploadState::Done);
    assert_eq!(e.began.recv().await.unwrap().files[0].1, b"y");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_outlives_its_upload_never_touches_the_next_one_of_that_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Engine::new(dir.path());
    e.target.hold();
    e.stage("db-1", "a.txt", b"first").await;
    e.close("db-1");
    assert_eq!(e.step(), ["db-1"]);
    e.began.recv().await.unwrap();
    let old_run = super::lock(&e.jobs.jobs)[&super::key(e.t, "db-1")].run;
    // `rm -r uploads/db-1` while the run is held, then a new upload of the same name.
    e.jobs.discarded(e.t, "db-1");
    std::fs::remove_dir_all(e.staging.target_dir("test/box").join("db-1")).unwrap();
    e.staging.forget(e.t, "db-1");
    e.stage("db-1", "b.txt", b"second").await;
    // The old run ends late and, at worst, says it made its snapshot.
    let made = snapfs_fs::backend::SnapshotInfo {
        name: "db-1".into(),
        created: chrono::Utc::now(),
        state: snapfs_fs::backend::SnapshotState::Ready,
        is_file: false,
        size: 5,
        files: 1,
        crc32c: None,
        expires: None,
        id: "db-1".into(),
    };
    let source = super::Source::Staged;
    e.jobs
        .finish(e.t, "db-1", old_run, &source, Ok(made), false)
        .await;
    assert_eq!(e.state("db-1"), Some(UploadState::Staging));
    assert!(e.changed().is_empty(), "the mount was told of nothing");
    let staged = e.staging.target_dir("test/box").join("db-1/b.txt");
    assert!(staged.exists(), "the new upload's files are kept");
    // The held run itself was told to stop by the discard.
    e.target.release();
    e.close("db-1");
    assert_eq!(e.step(), ["db-1"]);
    e.target.release();
    assert_eq!(e.ended("db-1").await.state, UploadState::Done);
    let began = e.began.recv().await.unwrap();
    assert_eq!(began.files, [("b.txt".to_string(), b"second".to_vec())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_resumes_staged_uploads_and_abandons_interrupted_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (target, began) = FakeTarget::new();
    let run_id = {
        let mut e = Engine::with(dir.path(), target.clone(), began);
        // As the daemon does at start: this boot of the machine is written down.
        e.jobs.recover();
        e.target.hold();
        // One upload running when the daemon stops, one still being written.
        e.stage("db-1", "a.txt", b"one").await;
        e.close("db-1");
        assert_eq!(e.step(), ["db-1"]);
        let id = e.began.recv().await.unwrap().id;
        e.stage("db-2", "b.txt", b"two").await;
        id
    };
    // A new daemon over the same folders.
    let (target, began) = FakeTarget::new();
    let mut e = Engine::with(dir.path(), target, began);
    e.jobs.recover();
    assert_eq!(e.state("db-1"), Some(UploadState::Queued));
    let db2 = e.jobs.all().into_iter().find(|s| s.snapshot == "db-2");
    let db2 = db2.unwrap();
    assert_eq!(db2.state, UploadState::Failed);
    assert!(db2.error.unwrap().contains("still being written"));
    assert_eq!(e.step(), ["db-1"]);
    assert_eq!(e.ended("db-1").await.state, UploadState::Done);
    assert_eq!(e.began.recv().await.unwrap().files[0].1, b"one");
    // What the interrupted run made is removed on the side; wait for that to be done.
    while e.target.abandoned().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(e.target.abandoned(), [run_id]);
    assert_eq!(e.target.names(), ["db-1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn names_the_target_refuses_are_refused_before_staging() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::new(dir.path());
    assert!(e.jobs.admit(e.t, "bad_name").await.is_err());
    assert!(e.jobs.all().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_resumes_a_copy_marked_complete_but_not_one_written_since() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = Engine::new(dir.path());
        e.jobs.recover();
        for name in ["copied", "rewritten"] {
            e.stage(name, "a.txt", b"one").await;
            e.close(name);
            e.staging
                .mark_complete(e.t, "test/box", name, Duration::ZERO)
                .unwrap();
        }
        // A write after the mark takes it away at once.
        e.rewrite("rewritten", "a.txt", b"two");
        // As if the daemon went away before the files were flushed: in the same boot of the
        // machine the page cache still holds them, and the mark is enough.
        std::fs::write(dir.path().join("staging/.complete/test/box/copied"), "").unwrap();
    }
    let e = Engine::new(dir.path());
    e.jobs.recover();
    assert_eq!(e.state("copied"), Some(UploadState::Queued));
    let rewritten = e.jobs.all().into_iter().find(|s| s.snapshot == "rewritten");
    let rewritten = rewritten.unwrap();
    assert_eq!(rewritten.state, UploadState::Failed);
    assert!(rewritten.error.unwrap().contains("still being written"));
    assert_eq!(e.step(), ["copied"]);
    assert_eq!(e.ended("copied").await.state, UploadState::Done);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_the_machine_restarted_only_copies_marked_on_disk_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (target, began) = FakeTarget::new();
    {
        let mut e = Engine::with(dir.path(), target.clone(), began);
        e.jobs.recover();
        e.target.hold();
        // Settled and running, but never marked: its files may not have reached the disk.
        e.stage("running", "a.txt", b"one").await;
        e.close("running");
        assert_eq!(e.step(), ["running"]);
        e.began.recv().await.unwrap();
        // Marked, and its files flushed to the disk.
        e.stage("marked", "b.txt", b"two").await;
        e.close("marked");
        e.staging
            .mark_complete(e.t, "test/box", "marked", Duration::ZERO)
            .unwrap();
        // Marked, but the daemon went away before its files were flushed.
        e.stage("seen", "c.txt", b"three").await;
        e.close("seen");
        e.staging
            .mark_complete(e.t, "test/box", "seen", Duration::ZERO)
            .unwrap();
        let mark = dir.path().join("staging/.complete/test/box/seen");
        std::fs::write(&mark, "").unwrap();
        assert_eq!(e.staging.mark("test/box", "seen"), Mark::Seen);
        assert_eq!(e.staging.mark("test/box", "marked"), Mark::OnDisk);
        // A clean stop marks what was complete: the machine may go down next.
        e.stage("stopped", "d.txt", b"four").await;
        e.close("stopped");
        e.jobs.shutdown();
    }
    // The machine starts again: another boot than the one the daemon wrote down.
    std::fs::write(dir.path().join("state/jobs/.boot_id"), "another boot\n").unwrap();
    let (target, began) = FakeTarget::new();
    let e = Engine::with(dir.path(), target, began);
    e.jobs.recover();
    assert_eq!(e.state("marked"), Some(UploadState::Queued));
    assert_eq!(e.state("stopped"), Some(UploadState::Queued));
    let all = e.jobs.all();
    let error = |name: &str| {
        let s = all.iter().find(|s| s.snapshot == name).unwrap();
        assert_eq!(s.state, UploadState::Failed, "{name}");
        s.error.clone().unwrap()
    };
    for name in ["running", "seen"] {
        assert!(error(name).contains("machine restarted"), "{}", error(name));
    }
    let mut started = e.step();
    started.sort();
    assert_eq!(started, ["marked", "stopped"]);
    assert_eq!(e.ended("marked").await.state, UploadState::Done);
    assert_eq!(e.ended("stopped").await.state, UploadState::Done);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_that_lost_an_entry_fails_naming_it_when_it_settles() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Engine::new(dir.path());
    e.stage("piped", "a.txt", b"one").await;
    e.jobs
        .refused(e.t, "piped", Path::new("deep/pipe"), "a FIFO");
    e.close("piped");
    // Nothing starts while it is written; once settled it fails instead of starting.
    assert_eq!(e.step(), ["piped"]);
    let s = e.ended("piped").await;
    assert_eq!(s.state, UploadState::Failed);
    assert!(s.error.unwrap().contains("deep/pipe (a FIFO)"));
    assert!(e.began.try_recv().is_err(), "no run began");
    // Written again, it settles again and fails again: the entry is still lost.
    e.rewrite("piped", "b.txt", b"two");
    assert_eq!(e.state("piped"), Some(UploadState::Staging));
    assert_eq!(e.step(), ["piped"]);
    assert_eq!(e.ended("piped").await.state, UploadState::Failed);
    assert!(e.began.try_recv().is_err(), "no run began");
}
