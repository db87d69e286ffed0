//! A daemon killed with SIGKILL at each step of an upload (DESIGN §3, §6): started again and
//! followed by `snapfs gc --yes`, the upload ends as a whole snapshot, no upload pod or claim
//! survives, and `snapshots/` never shows anything half-made on the way.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubesim::Timings;
use snapfs_tests::{Mount, binary, fuse_available, sh};

use super::cluster::{Cluster, assert_same_tree, cp_a, names, ns_dir, sample_tree};

/// Where the daemon is killed: after the step named, before the next one is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// 2: the claim exists, the pod does not yet.
    ClaimCreated,
    /// 3: the pod is made and starting.
    PodStarting,
    /// 4: part of the tar stream went into the pod.
    MidTransfer,
    /// 5: the pod is being deleted.
    PodDeleting,
    /// 6: the VolumeSnapshot exists and is not ready yet.
    SnapshotNotReady,
    /// 8: the snapshot is ready and the claim is being deleted.
    ClaimDeleting,
}

const STEPS: [Step; 6] = [
    Step::ClaimCreated,
    Step::PodStarting,
    Step::MidTransfer,
    Step::PodDeleting,
    Step::SnapshotNotReady,
    Step::ClaimDeleting,
];

/// The server's counters before a run.
#[derive(Debug, Clone, Copy)]
struct Counts {
    claims: u64,
    pods: u64,
    snapshots: u64,
    exec_in: u64,
    pods_deleted: u64,
    claims_deleted: u64,
}

fn counts(cluster: &Cluster) -> Counts {
    let c = cluster.sim().counters();
    Counts {
        claims: c.created("persistentvolumeclaims"),
        pods: c.created("pods"),
        snapshots: c.created("volumesnapshots"),
        exec_in: c.exec_bytes_in(),
        pods_deleted: c.deleted("pods"),
        claims_deleted: c.deleted("persistentvolumeclaims"),
    }
}

/// Whether the upload has got to `step`, by the server's counters (which, unlike a listing,
/// cost the upload no time).
fn reached(step: Step, base: Counts, now: Counts) -> bool {
    match step {
        Step::ClaimCreated => now.claims > base.claims,
        Step::PodStarting => now.pods > base.pods,
        Step::MidTransfer => now.exec_in > base.exec_in + (4 << 20),
        Step::PodDeleting => now.pods_deleted > base.pods_deleted,
        Step::SnapshotNotReady => now.snapshots > base.snapshots,
        Step::ClaimDeleting => now.claims_deleted > base.claims_deleted,
    }
}

#[test]
fn a_daemon_killed_at_any_step_of_an_upload_finishes_it_and_leaves_nothing() {
    if !fuse_available() {
        return;
    }
    // Slow enough that each step lasts a while, fast enough for six uploads and more.
    let cluster = Cluster::start_with(Timings {
        pod_start: Duration::from_millis(500),
        pod_stop: Duration::from_millis(500),
        pvc_bind: Duration::from_millis(50),
        snapshot_ready: Duration::from_millis(700),
        bookmark_interval: Duration::from_millis(200),
    });
    // The steps are those of a run that starts once the copy settled; one that starts during
    // the copy, and a kill then, are in tests/tests/k8s/early.rs.
    let mut m = cluster.mount_with("early = false\n");
    let ns = ns_dir(&m);
    let src = tempfile::tempdir().expect("tempdir");
    sample_tree(src.path());
    sh(&format!(
        "head -c 48M /dev/urandom > '{}/volume.bin'",
        src.path().display()
    ));
    let tar_bytes = 48 << 20;
    let mut made = vec!["db-1".to_string()];

    for (i, step) in STEPS.into_iter().enumerate() {
        let name = format!("crash-{i}");
        let upload = ns.join("uploads").join(&name);
        let base = counts(&cluster);
        cp_a(src.path(), &upload);
        if step == Step::ClaimCreated {
            // Holds the pod's creation back long enough to be killed before it.
            cluster
                .sim()
                .faults()
                .set_latency(Duration::from_millis(250));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while !reached(step, base, counts(&cluster)) {
            assert!(Instant::now() < deadline, "{step:?} never reached");
            std::thread::sleep(Duration::from_millis(2));
        }
        m.kill9();
        cluster.sim().faults().set_latency(Duration::ZERO);
        let at_kill = counts(&cluster);
        match step {
            Step::ClaimCreated => assert_eq!(at_kill.pods, base.pods, "{step:?}"),
            Step::MidTransfer => {
                assert!(at_kill.exec_in < base.exec_in + tar_bytes, "{step:?}")
            }
            Step::SnapshotNotReady => assert!(!cluster.ready("shop", &name), "{step:?}"),
            _ => {}
        }

        m.relaunch();
        let snapshots = ns.join("snapshots");
        if upload.exists() {
            wait_checking_snapshots(&cluster, &m, &upload, &snapshots);
        }
        let gc = m.snapfs(&["gc", "--yes"]);
        assert!(
            gc.status.success(),
            "{step:?}: {}",
            String::from_utf8_lossy(&gc.stderr)
        );

        // Whole, once, visible, and nothing else of it anywhere.
        cluster.wait_no_upload_objects("shop");
        assert!(cluster.ready("shop", &name), "{step:?}: {}", m.log());
        made.push(name.clone());
        made.sort();
        assert_eq!(cluster.snapshot_names("shop"), made, "{step:?}");
        assert!(names(&snapshots).contains(&name), "{step:?}");
        assert!(!names(&ns.join("uploads")).contains(&name), "{step:?}");
        let data = cluster
            .sim()
            .snapshot_dir("shop", &name)
            .expect("snapshot data");
        assert_same_tree(src.path(), &data);
    }
}

/// Runs `snapfs wait` on `upload`, asserting meanwhile that every snapshot `snapshots/` shows is
/// ready in the cluster.
fn wait_checking_snapshots(cluster: &Cluster, m: &Mount, upload: &Path, snapshots: &Path) {
    let mut wait = Command::new(binary("snapfs"))
        .arg("wait")
        .arg(upload)
        .envs(m.env())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("snapfs wait runs");
    let status = loop {
        for name in names(snapshots).iter().filter(|n| *n != "latest") {
            assert!(
                cluster.ready("shop", name),
                "{name} shown before it is ready"
            );
        }
        if let Some(status) = wait.try_wait().expect("snapfs wait") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = wait.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        panic!("{} did not end well: {err}\n{}", upload.display(), m.log());
    }
}
