//! Cleanup over a target that exists only in tests: expired snapshots go, retention keeps what
//! it promises, leftovers are collected with what the job engine is running left alone, and a
//! target without the powers is left as it is.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use snapfs_fs::vfs::{Staging, UploadHooks};

use super::Lifecycle;
use crate::config::Retention;
use crate::fake_target::FakeTarget;
use crate::jobs::Jobs;
use crate::powers::{Powers, Progress};
use crate::registry::{Entry, NewTarget, Registry};

fn days(n: i64) -> chrono::Duration {
    chrono::Duration::days(n)
}

/// A job engine over `registry`, running, with no settle time.
fn running_jobs(dir: &Path, registry: &Arc<Registry>) -> (Arc<Jobs>, Arc<Staging>) {
    let staging = Arc::new(Staging::new(dir.join("staging")));
    let jobs = Jobs::new(
        registry.clone(),
        staging.clone(),
        dir.join("state"),
        Duration::ZERO,
        true,
        tokio::runtime::Handle::current(),
    );
    tokio::spawn(jobs.clone().run());
    (jobs, staging)
}

/// An upload `name` of one file, the way the VFS makes one.
async fn upload(jobs: &Jobs, staging: &Staging, entry: &Entry, name: &str) {
    jobs.admit(entry.id(), name).await.unwrap();
    let up = staging.target_dir(entry.path()).join(name);
    std::fs::create_dir_all(&up).unwrap();
    std::fs::write(up.join("f"), b"data").unwrap();
    staging.touch(entry.id(), name);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_written_in_a_test_takes_uploads_and_is_collected_by_gc() {
    let dir = tempfile::tempdir().unwrap();
    let (target, mut began) = FakeTarget::new();
    let registry = Registry::new(Vec::new());
    let retention = Retention {
        min_count: 1,
        min_days: None,
        max_days: Some(30),
    };
    let entry = registry.add(target.into_target("box", retention));
    // One more target with no power to delete or collect: cleanup leaves it alone.
    let (bare, _) = FakeTarget::new();
    registry.add(NewTarget {
        kind: "test",
        name: "bare".into(),
        description: "read only".into(),
        backend: bare.clone(),
        raw: None,
        powers: Powers::default(),
        retention: Retention::default(),
    });
    bare.put("old", Utc::now() - days(400), Some(Utc::now() - days(300)));
    let deleted = Arc::new(Mutex::new(Vec::new()));
    let seen = deleted.clone();
    registry.on_change(move |_, name| seen.lock().unwrap().push(name.to_string()));
    let (jobs, staging) = running_jobs(dir.path(), &registry);

    let t = entry.id();
    upload(&jobs, &staging, &entry, "fresh").await;
    let done = jobs.wait(t, "fresh").await.unwrap();
    assert_eq!(done.state, snapfs_fs::vfs::UploadState::Done);
    assert_eq!(began.recv().await.unwrap().name, "fresh");

    target.put("expired", Utc::now() - days(3), Some(Utc::now() - days(1)));
    target.put("ancient", Utc::now() - days(90), None);
    target.put("kept", Utc::now() - days(2), None);

    let gc = Lifecycle::new(jobs.clone(), registry.clone(), Duration::ZERO);
    let dry = gc.collect(None, true, &Progress::default()).await;
    let mut doomed: Vec<&str> = dry.deleted.iter().map(|d| d.name.as_str()).collect();
    doomed.sort();
    assert_eq!(doomed, ["ancient", "expired"]);
    assert!(dry.deleted.iter().all(|d| d.target == "test/box"));
    assert_eq!(target.names(), ["ancient", "expired", "fresh", "kept"]);
    assert_eq!(dry.leftovers, 1);
    assert!(dry.errors.is_empty(), "{:?}", dry.errors);

    let report = gc.collect(Some(&entry), false, &Progress::default()).await;
    assert_eq!(report.deleted.len(), 2);
    assert_eq!(target.names(), ["fresh", "kept"]);
    let mut told = deleted.lock().unwrap().clone();
    told.sort();
    assert_eq!(told, ["ancient", "expired", "fresh"]);
    assert_eq!(bare.names(), ["old"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn leftovers_of_a_running_upload_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (target, mut began) = FakeTarget::new();
    let registry = Registry::new(Vec::new());
    let entry = registry.add(target.into_target("box", Retention::default()));
    let (jobs, staging) = running_jobs(dir.path(), &registry);
    target.hold();
    let t = entry.id();
    upload(&jobs, &staging, &entry, "busy").await;
    let run = began.recv().await.unwrap().id;

    let gc = Lifecycle::new(jobs.clone(), registry, Duration::ZERO);
    gc.collect(None, false, &Progress::default()).await;
    assert_eq!(target.in_use_seen(), [[run].into_iter().collect()]);
    target.release();
    assert!(jobs.wait(t, "busy").await.is_some());
}
