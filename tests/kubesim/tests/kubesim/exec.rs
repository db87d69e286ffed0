//! Exec over the WebSocket channel protocol with the kube client: stdout, stderr, stdin, exit
//! status, v5 and v4, real busybox output formats, and the dropped-stream fault.

use std::path::Path;
use std::process::Command;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::Api;
use kube::api::AttachParams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::{bounded, client, pod_with_volume, start};

/// Runs a command, feeding `input` on stdin when given; returns stdout, stderr and status.
async fn run(
    pods: &Api<Pod>,
    pod: &str,
    command: &[&str],
    input: Option<&[u8]>,
) -> (Vec<u8>, Vec<u8>, Option<Status>) {
    let params = AttachParams::default().stdin(input.is_some());
    let mut attached = pods
        .exec(pod, command.to_vec(), &params)
        .await
        .expect("exec starts");
    let mut stdout = attached.stdout().unwrap();
    let mut stderr = attached.stderr().unwrap();
    let status = attached.take_status().unwrap();
    if let Some(input) = input {
        let mut stdin = attached.stdin().unwrap();
        stdin.write_all(input).await.unwrap();
        stdin.flush().await.unwrap();
        // Keep stdin open: uploads must not depend on stdin EOF (v4 would close the socket).
        std::mem::forget(stdin);
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (a, b) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
    a.unwrap();
    b.unwrap();
    (out, err, status.await)
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_reports_output_and_exit_status() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        pod_with_volume(&client, "default", "box").await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let (out, err, status) = run(
            &pods,
            "box",
            &["sh", "-c", "echo out; echo err >&2; exit 2"],
            None,
        )
        .await;
        assert_eq!((text(&out), text(&err)), ("out\n", "err\n"));
        let status = status.expect("status frame");
        assert_eq!(status.status.as_deref(), Some("Failure"));
        assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
        let cause = &status.details.unwrap().causes.unwrap()[0];
        assert_eq!(
            (cause.reason.as_deref(), cause.message.as_deref()),
            (Some("ExitCode"), Some("2"))
        );

        let (_, _, ok) = run(&pods, "box", &["true"], None).await;
        assert_eq!(ok.unwrap().status.as_deref(), Some("Success"));

        let (_, _, missing) = run(&pods, "box", &["no-such-tool"], None).await;
        let missing = missing.unwrap();
        assert_eq!(missing.reason.as_deref(), Some("InternalError"));
        assert!(
            missing
                .message
                .unwrap()
                .contains("executable file not found in $PATH")
        );

        match pods
            .exec("ghost", vec!["ls"], &AttachParams::default())
            .await
        {
            Err(kube::Error::Api(e)) => assert_eq!(e.code, 404),
            Err(other) => panic!("expected 404, got {other:?}"),
            Ok(_) => panic!("expected 404"),
        }
        assert!(sim.counters().exec_sessions() >= 3);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busybox_formats_against_the_volume() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        pod_with_volume(&client, "default", "box").await;
        let volume = sim.volume_dir("default", "box-data").expect("bound volume");
        std::fs::write(volume.join("f"), "hello\n").unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let cases: &[(&[&str], &str)] = &[
            (&["stat", "-c", "%s %n", "/data/f"], "6 /data/f\n"),
            (&["find", "/data", "-type", "f"], "/data/f\n"),
            (&["ls", "/data"], "f\n"),
            (
                &["sh", "-c", "dd if=/data/f bs=1 skip=1 count=3 2>/dev/null"],
                "ell",
            ),
            (&["sh", "-c", "cat /data/f | head -c 2"], "he"),
        ];
        for (command, want) in cases {
            let (out, _, status) = run(&pods, "box", command, None).await;
            assert_eq!(text(&out), *want, "{command:?}");
            assert_eq!(status.unwrap().status.as_deref(), Some("Success"));
        }
        let (out, _, _) = run(&pods, "box", &["sha256sum", "/data/f"], None).await;
        let host = Command::new("sha256sum")
            .arg(volume.join("f"))
            .output()
            .unwrap();
        assert_eq!(
            text(&out).split(' ').next(),
            text(&host.stdout).split(' ').next()
        );
        sim.shutdown().await;
    })
    .await;
}

fn tar_of(dir: &Path) -> Vec<u8> {
    let out = Command::new("tar")
        .arg("-c")
        .arg("-C")
        .arg(dir)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
    std::fs::write(dir.path().join("a.txt"), "alpha\n").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.path().join("sub/big.bin"), big).unwrap();
    std::fs::write(dir.path().join("sub/deeper/z"), "").unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tar_upload_over_stdin_on_v5_and_v4() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        pod_with_volume(&client, "default", "box").await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let source = fixture();
        let tar = tar_of(source.path());
        for (v4, target) in [(false, "/data/v5"), (true, "/data/v4")] {
            sim.faults().set_exec_v4_only(v4);
            let script = format!(
                "mkdir -p {target} && head -c {} | tar -x -C {target}",
                tar.len()
            );
            let before = sim.counters().exec_bytes_in();
            let (_, err, status) = run(&pods, "box", &["sh", "-c", &script], Some(&tar)).await;
            assert_eq!(
                status.unwrap().status.as_deref(),
                Some("Success"),
                "{}",
                text(&err)
            );
            assert_eq!(sim.counters().exec_bytes_in() - before, tar.len() as u64);
            let landed = sim
                .volume_dir("default", "box-data")
                .unwrap()
                .join(target.trim_start_matches("/data/"));
            let diff = Command::new("diff")
                .arg("-r")
                .arg(source.path())
                .arg(&landed)
                .status()
                .unwrap();
            assert!(diff.success(), "diff -r {}", landed.display());
        }
        // Download the other way, as `tar -c` on stdout.
        let (out, _, status) = run(&pods, "box", &["tar", "-c", "-C", "/data/v5", "."], None).await;
        assert_eq!(status.unwrap().status.as_deref(), Some("Success"));
        let back = tempfile::tempdir().unwrap();
        let mut untar = Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(back.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(untar.stdin.as_mut().unwrap(), &out).unwrap();
        drop(untar.stdin.take());
        assert!(untar.wait().unwrap().success());
        let diff = Command::new("diff")
            .arg("-r")
            .arg(source.path())
            .arg(back.path())
            .status()
            .unwrap();
        assert!(diff.success());
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiation_follows_the_v4_switch() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        pod_with_volume(&client, "default", "box").await;
        for (v4, closable) in [(false, true), (true, false)] {
            sim.faults().set_exec_v4_only(v4);
            let request = kube::core::Request::new("/api/v1/namespaces/default/pods")
                .exec("box", vec!["true"], &AttachParams::default())
                .unwrap();
            let connection = client.connect(request).await.unwrap();
            assert_eq!(connection.supports_stream_close(), closable);
        }
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_stream_loses_the_status() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        pod_with_volume(&client, "default", "box").await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        sim.faults().set_exec_drop_after(Some(64 * 1024));
        let params = AttachParams::default().stderr(false);
        let mut attached = pods
            .exec(
                "box",
                vec!["sh", "-c", "dd if=/dev/zero bs=1024 count=4096 2>/dev/null"],
                &params,
            )
            .await
            .unwrap();
        let mut stdout = attached.stdout().unwrap();
        let status = attached.take_status().unwrap();
        // kube does not end stdout when the connection breaks: watch join() beside the read.
        let mut out = Vec::new();
        let read = stdout.read_to_end(&mut out);
        tokio::pin!(read);
        tokio::select! {
            _ = &mut read => {}
            joined = attached.join() => assert!(joined.is_err(), "the session fails"),
        }
        assert!(out.len() < 4096 * 1024, "got {} bytes", out.len());
        assert!(status.await.is_none(), "no status after a dropped stream");
        sim.faults().set_exec_drop_after(None);
        let (out, _, status) = run(&pods, "box", &["echo", "back"], None).await;
        assert_eq!(
            (text(&out), status.unwrap().status.as_deref()),
            ("back\n", Some("Success"))
        );
        sim.shutdown().await;
    })
    .await;
}
