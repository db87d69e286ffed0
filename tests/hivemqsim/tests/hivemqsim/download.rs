//! The download endpoint: range requests, and the file being a valid ZIP.

use std::process::Command;

use hivemqsim::{BackupState, Seed};

use super::support::{BACKUPS, bounded, file, post, request, start, wait_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_answer_206_with_content_range() {
    bounded(async {
        let sim = start().await;
        let addr = sim.addr();
        let seeded = sim.seed(Seed::with_size(10_000)).unwrap();
        let whole = sim.file(&seeded.id).unwrap();
        let path = file(&seeded.id);
        for (range, start, end) in [
            ("bytes=0-99", 0, 99),
            ("bytes=9990-", 9990, 9999),
            ("bytes=-10", 9990, 9999),
            ("bytes=5000-20000", 5000, 9999),
        ] {
            let reply = request(addr, "GET", &path, &[("Range", range)]).await;
            assert_eq!(reply.status, 206, "{range}");
            let want = format!("bytes {start}-{end}/10000");
            assert_eq!(reply.header("content-range"), Some(want.as_str()));
            assert_eq!(
                reply.header("content-length"),
                Some((end - start + 1).to_string().as_str())
            );
            assert_eq!(reply.body, whole[start..=end], "{range}");
        }
        let full = request(addr, "GET", &path, &[]).await;
        assert_eq!(full.header("accept-ranges"), Some("bytes"));
        assert_eq!(full.header("content-range"), None);

        let outside = request(addr, "GET", &path, &[("Range", "bytes=10000-")]).await;
        assert_eq!(outside.status, 416);
        assert_eq!(outside.header("content-range"), Some("bytes */10000"));

        // Several ranges, or a malformed header, are ignored: the whole file.
        for range in ["bytes=0-1,5-6", "bytes=9-2", "pages=1-2"] {
            let reply = request(addr, "GET", &path, &[("Range", range)]).await;
            assert_eq!((reply.status, reply.body.len()), (200, 10_000), "{range}");
        }
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_files_pass_unzip_test() {
    if Command::new("unzip").arg("-v").output().is_err() {
        println!("skipped: `unzip` is not installed (apt-get install unzip)");
        return;
    }
    bounded(async {
        let sim = start().await;
        let addr = sim.addr();
        let made = post(addr, BACKUPS).await.backup();
        wait_state(addr, &made.id, BackupState::Completed).await;
        let seeded = sim.seed(Seed::with_size(200_000)).unwrap();
        let dir = std::env::temp_dir().join(format!("hivemqsim-zip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for id in [&made.id, &seeded.id] {
            let body = request(addr, "GET", &file(id), &[]).await.body;
            let path = dir.join(format!("{id}.zip"));
            std::fs::write(&path, &body).unwrap();
            let out = Command::new("unzip").arg("-t").arg(&path).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{text}");
            assert!(text.contains("testing: backup.json") && text.contains("testing: data.bin"));
            assert!(text.contains("No errors detected"), "{text}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
        sim.shutdown().await;
    })
    .await;
}
