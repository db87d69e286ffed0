//! Port-forward with the kube client to an address a test registered for a pod port.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::support::{bounded, client, pod_spec, start, wait_for};

/// A one-request HTTP server "inside" the pod.
async fn http_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1024];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let body = format!("you asked: {}", request.lines().next().unwrap_or(""));
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portforward_reaches_the_registered_address() {
    bounded(async {
        let sim = start().await;
        let client = client(&sim).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        pods.create(&PostParams::default(), &pod_spec("web", None))
            .await
            .unwrap();
        wait_for(
            pods.clone(),
            "web",
            kube::runtime::conditions::is_pod_running(),
        )
        .await;
        sim.register_port("default", "web", 8888, http_server().await);

        let mut forwarder = pods.portforward("web", &[8888]).await.unwrap();
        let mut stream = forwarder.take_stream(8888).unwrap();
        stream
            .write_all(b"GET /api/v1/management/backups HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.unwrap();
        let reply = String::from_utf8(reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        assert!(reply.ends_with("you asked: GET /api/v1/management/backups HTTP/1.1"));
        // The server closes the connection when the pod side closes; kube's join then reports
        // that it could not send its own close frame, which is harmless.
        drop(stream);
        let _ = forwarder.join().await;
        assert!(
            sim.counters().portforward_bytes_in() > 0 && sim.counters().portforward_bytes_out() > 0
        );

        // An unregistered port reports on the error channel.
        let mut forwarder = pods.portforward("web", &[9999]).await.unwrap();
        let error = forwarder
            .take_error(9999)
            .unwrap()
            .await
            .expect("error message");
        assert!(error.contains("error forwarding port 9999"), "{error}");
        forwarder.abort();
        sim.shutdown().await;
    })
    .await;
}
