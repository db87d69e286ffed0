//! Every endpoint and its answers, and the one-operation-at-a-time rule.

use hivemqsim::{BackupState, Config, HiveMqSim, Seed};

use super::support::{BACKUPS, bounded, fast, file, get, one, post, request, start, wait_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_is_created_polled_listed_downloaded_and_restored() {
    bounded(async {
        let sim = start().await;
        let addr = sim.addr();

        let empty = get(addr, BACKUPS).await;
        assert_eq!(empty.status, 200);
        assert_eq!(empty.header("content-type"), Some("application/json"));
        assert_eq!(empty.json(), serde_json::json!({"items": []}));

        let created = post(addr, BACKUPS).await;
        let backup = created.backup();
        assert_eq!(backup.state, BackupState::InProgress);
        // `bytes` is absent while the backup runs, not null.
        let raw = &created.json()["backup"];
        assert!(
            raw.get("bytes").is_none() && raw.get("failReason").is_none(),
            "{raw}"
        );
        let created_at = raw["createdAt"].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(created_at).is_ok(),
            "{created_at}"
        );
        assert_eq!(
            backup.id,
            backup.created_at.format("%Y%m%d-%H%M%S").to_string()
        );

        // Nothing to download while it runs; a second backup must wait.
        let early = get(addr, &file(&backup.id)).await;
        assert_eq!(early.status, 400);
        assert!(
            early.error().1.contains("IN_PROGRESS"),
            "{:?}",
            early.error()
        );
        let busy = post(addr, BACKUPS).await;
        assert_eq!(busy.status, 409);
        assert_eq!(busy.error().0, "Conflict");

        let done = wait_state(addr, &backup.id, BackupState::Completed).await;
        assert_eq!(done.bytes, Some(fast().backup_size));
        let list = get(addr, BACKUPS).await.json();
        assert_eq!(list["items"][0]["id"], backup.id.as_str());
        assert_eq!(list["items"][0]["state"], "COMPLETED");
        assert_eq!(list["items"][0]["bytes"], fast().backup_size);

        let content = get(addr, &file(&backup.id)).await;
        assert_eq!(content.status, 200);
        assert_eq!(
            content.header("content-type"),
            Some("application/octet-stream")
        );
        assert_eq!(
            content.header("content-length"),
            Some(fast().backup_size.to_string().as_str())
        );
        assert_eq!(content.body, sim.file(&backup.id).unwrap());
        assert!(content.body.starts_with(b"PK\x03\x04"));

        let restoring = post(addr, &one(&backup.id)).await.backup();
        assert_eq!(restoring.state, BackupState::RestoreInProgress);
        assert_eq!(post(addr, BACKUPS).await.status, 409);
        assert_eq!(post(addr, &one(&backup.id)).await.status, 409);
        // Downloadable while it is being restored.
        assert_eq!(get(addr, &file(&backup.id)).await.status, 200);
        let restored = wait_state(addr, &backup.id, BackupState::RestoreCompleted).await;
        assert_eq!(restored.bytes, Some(fast().backup_size));
        assert_eq!(get(addr, &file(&backup.id)).await.status, 200);

        // A restored backup can be restored again, and a new backup may start.
        assert_eq!(post(addr, &one(&backup.id)).await.status, 200);
        wait_state(addr, &backup.id, BackupState::RestoreCompleted).await;
        let second = post(addr, BACKUPS).await.backup();
        assert_ne!(second.id, backup.id);

        let c = sim.counters();
        assert_eq!(
            (c.backups_created(), c.restores(), c.downloads()),
            (2, 2, 3)
        );
        assert_eq!(c.download_bytes(), 3 * fast().backup_size);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_bad_ids_and_paths() {
    bounded(async {
        let sim = start().await;
        let addr = sim.addr();
        for path in [one("20200101-000000"), file("20200101-000000")] {
            let reply = get(addr, &path).await;
            assert_eq!(reply.status, 404, "{path}");
            assert_eq!(reply.error().0, "Resource not found");
            assert!(reply.error().1.contains("20200101-000000"));
        }
        assert_eq!(post(addr, &one("20200101-000000")).await.status, 404);
        for bad in ["a%20b", "..", "%zz", "a%2Fb"] {
            for (method, path) in [("GET", one(bad)), ("POST", one(bad)), ("GET", file(bad))] {
                let reply = request(addr, method, &path, &[]).await;
                assert_eq!(reply.status, 400, "{method} {path}");
                assert_eq!(reply.error().0, "Bad request");
            }
        }
        // No delete and no upload endpoint.
        assert_eq!(request(addr, "DELETE", &one("x"), &[]).await.status, 405);
        assert_eq!(request(addr, "PUT", &file("x"), &[]).await.status, 405);
        assert_eq!(request(addr, "POST", &file("x"), &[]).await.status, 405);
        assert_eq!(
            get(addr, "/api/v1/management/trace-recordings")
                .await
                .status,
            404
        );
        assert_eq!(sim.counters().requests(), 19);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_backups_are_listed_oldest_first_and_restorable() {
    bounded(async {
        let sim = start().await;
        let addr = sim.addr();
        let late = chrono::DateTime::parse_from_rfc3339("2026-11-22T10:15:00Z")
            .unwrap()
            .to_utc();
        let early = late - chrono::Duration::days(1);
        let b = sim
            .seed(Seed::with_content(&b"raw bytes"[..]).created_at(late))
            .unwrap();
        let a = sim.seed(Seed::with_size(4096).created_at(early)).unwrap();
        assert_eq!(
            (a.id.as_str(), b.id.as_str()),
            ("20261121-101500", "20261122-101500")
        );
        assert_eq!((a.bytes, b.bytes), (Some(4096), Some(9)));
        let list = get(addr, BACKUPS).await.json();
        assert_eq!(list["items"][0]["id"], a.id.as_str());
        assert_eq!(list["items"][0]["createdAt"], "2026-11-21T10:15:00Z");
        assert_eq!(list["items"][1]["bytes"], 9);
        assert_eq!(get(addr, &file(&b.id)).await.body, b"raw bytes");
        assert_eq!(get(addr, &one(&a.id)).await.backup(), a);
        assert_eq!(sim.backups(), vec![a.clone(), b]);

        // A seeded backup blocks nothing; its restore blocks a new backup.
        post(addr, &one(&a.id)).await.backup();
        assert_eq!(post(addr, BACKUPS).await.status, 409);
        wait_state(addr, &a.id, BackupState::RestoreCompleted).await;
        assert_eq!(post(addr, BACKUPS).await.status, 200);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_busy_status_is_configurable() {
    bounded(async {
        let sim = HiveMqSim::start(Config {
            busy_status: 503,
            ..fast()
        })
        .await
        .unwrap();
        let addr = sim.addr();
        post(addr, BACKUPS).await.backup();
        let busy = post(addr, BACKUPS).await;
        assert_eq!(busy.status, 503);
        assert_eq!(busy.error().0, "Temporarily not available");
        assert!(busy.error().1.contains("in progress"), "{:?}", busy.error());
        sim.shutdown().await;
    })
    .await;
}
