//! Fault switches: slow and failed backups, failed restores, 503s, dropped downloads.

use std::time::{Duration, Instant};

use hivemqsim::{BackupState, Seed};

use super::support::{BACKUPS, bounded, file, get, one, post, start, wait_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_failed_backups_and_failed_restores() {
    bounded(async {
        let sim = start().await;
        let addr = sim.addr();

        sim.faults()
            .set_slow_backup(Some(Duration::from_millis(600)));
        let started = Instant::now();
        let slow = post(addr, BACKUPS).await.backup();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sim.backup(&slow.id).unwrap().state, BackupState::InProgress);
        wait_state(addr, &slow.id, BackupState::Completed).await;
        assert!(started.elapsed() >= Duration::from_millis(600));
        sim.faults().set_slow_backup(None);

        sim.faults()
            .set_backup_failure(Some("Cluster topology changed"));
        let doomed = post(addr, BACKUPS).await.backup();
        let failed = wait_state(addr, &doomed.id, BackupState::Failed).await;
        assert_eq!(
            failed.fail_reason.as_deref(),
            Some("Cluster topology changed")
        );
        assert_eq!(failed.bytes, None);
        let raw = get(addr, &one(&doomed.id)).await.json();
        assert_eq!(raw["backup"]["failReason"], "Cluster topology changed");
        assert_eq!(get(addr, &file(&doomed.id)).await.status, 400);
        assert_eq!(post(addr, &one(&doomed.id)).await.status, 400);
        sim.faults().set_backup_failure(None);

        // A failed backup does not block the next one.
        sim.faults().set_restore_failure(Some("Restore aborted"));
        post(addr, &one(&slow.id)).await.backup();
        let broken = wait_state(addr, &slow.id, BackupState::RestoreFailed).await;
        assert_eq!(broken.fail_reason.as_deref(), Some("Restore aborted"));
        assert_eq!(get(addr, &file(&slow.id)).await.status, 200);
        sim.faults().set_restore_failure(None);
        post(addr, &one(&slow.id)).await.backup();
        let fixed = wait_state(addr, &slow.id, BackupState::RestoreCompleted).await;
        assert_eq!(fixed.fail_reason, None);
        assert_eq!(post(addr, BACKUPS).await.status, 200);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_answers_503_on_every_request_or_the_next_n() {
    bounded(async {
        let sim = start().await;
        let addr = sim.addr();
        let seeded = sim.seed(Seed::with_size(500)).unwrap();
        sim.faults().set_unavailable(true);
        for path in [BACKUPS.to_string(), one(&seeded.id), file(&seeded.id)] {
            let reply = get(addr, &path).await;
            assert_eq!(reply.status, 503, "{path}");
            assert_eq!(reply.error().0, "Temporarily not available");
        }
        assert_eq!(post(addr, BACKUPS).await.status, 503);
        assert_eq!(sim.counters().backups_created(), 0);
        sim.faults().set_unavailable(false);

        sim.faults().fail_next(2);
        assert_eq!(get(addr, BACKUPS).await.status, 503);
        assert_eq!(get(addr, &file(&seeded.id)).await.status, 503);
        assert_eq!(get(addr, BACKUPS).await.status, 200);
        assert_eq!(sim.counters().unavailable(), 6);
        assert_eq!(sim.counters().requests(), 7);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_downloads_end_short_of_their_length() {
    bounded(async {
        let sim = start().await;
        let addr = sim.addr();
        let size = 300_000;
        let seeded = sim.seed(Seed::with_size(size)).unwrap();
        let whole = sim.file(&seeded.id).unwrap();
        for limit in [0u64, 1000, 100_000] {
            sim.faults().set_drop_download_after(Some(limit));
            let reply = get(addr, &file(&seeded.id)).await;
            assert_eq!(reply.status, 200);
            assert_eq!(
                reply.header("content-length"),
                Some(size.to_string().as_str())
            );
            assert_eq!(reply.body.len() as u64, limit, "dropped after {limit}");
            assert_eq!(reply.body, whole[..limit as usize]);
        }
        // The limit counts from the start of a range.
        let range = [("Range", "bytes=1000-")];
        let reply = super::support::request(addr, "GET", &file(&seeded.id), &range).await;
        assert_eq!(reply.status, 206);
        assert_eq!(reply.body, whole[1000..101_000]);

        sim.faults().set_drop_download_after(None);
        assert_eq!(get(addr, &file(&seeded.id)).await.body, whole);
        assert_eq!(sim.counters().download_bytes(), 1000 + 2 * 100_000 + size);
        assert_eq!(sim.counters().downloads(), 5);
        sim.shutdown().await;
    })
    .await;
}
