//! Basic authentication (401) and per-user permissions (403).

use hivemqsim::{Access, BackupState, Seed, basic_auth};

use super::support::{BACKUPS, bounded, file, one, request, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_permissions() {
    bounded(async {
        let sim = start().await;
        let addr = sim.addr();
        let seeded = sim.seed(Seed::with_size(1000)).unwrap();
        // Open until a user exists.
        assert_eq!(request(addr, "GET", BACKUPS, &[]).await.status, 200);
        sim.add_user("admin", "s3cret", Access::Full);
        sim.add_user("viewer", "look", Access::ReadOnly);
        sim.add_user("nobody", "none", Access::Denied);
        let admin = basic_auth("admin", "s3cret");
        let viewer = basic_auth("viewer", "look");
        let nobody = basic_auth("nobody", "none");

        let wrong = basic_auth("admin", "guess");
        for headers in [
            vec![],
            vec![("Authorization", wrong.as_str())],
            vec![("Authorization", "Bearer s3cret")],
        ] {
            let reply = request(addr, "GET", BACKUPS, &headers).await;
            assert_eq!(reply.status, 401, "{headers:?}");
            assert_eq!(reply.error().0, "Unauthorized");
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Basic realm=\"HiveMQ\"")
            );
        }

        // Read-only: list, get and download; no backup, no restore.
        let as_viewer = [("Authorization", viewer.as_str())];
        assert_eq!(request(addr, "GET", BACKUPS, &as_viewer).await.status, 200);
        assert_eq!(
            request(addr, "GET", &one(&seeded.id), &as_viewer)
                .await
                .status,
            200
        );
        assert_eq!(
            request(addr, "GET", &file(&seeded.id), &as_viewer)
                .await
                .status,
            200
        );
        for path in [BACKUPS.to_string(), one(&seeded.id)] {
            let reply = request(addr, "POST", &path, &as_viewer).await;
            assert_eq!(reply.status, 403, "{path}");
            assert_eq!(reply.error().0, "Forbidden");
        }
        assert_eq!(
            sim.backup(&seeded.id).unwrap().state,
            BackupState::Completed
        );

        let as_nobody = [("Authorization", nobody.as_str())];
        assert_eq!(request(addr, "GET", BACKUPS, &as_nobody).await.status, 403);
        assert_eq!(
            request(addr, "GET", &file(&seeded.id), &as_nobody)
                .await
                .status,
            403
        );

        let as_admin = [("Authorization", admin.as_str())];
        assert_eq!(request(addr, "POST", BACKUPS, &as_admin).await.status, 200);
        assert_eq!(sim.counters().backups_created(), 1);
        sim.shutdown().await;
    })
    .await;
}
