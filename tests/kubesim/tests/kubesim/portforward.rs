//! Port-forward with the kube client to an address a test registered for a pod port.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::support::{bounded, client, client_with_token, pod_spec, start, wait_for};

/// A one-request HTTP server "inside" the pod.
pub async fn http_server() -> std::net::SocketAddr {
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
        assert!(error.starts_with("error forwarding port 9999 to pod "), "{error}");
        assert!(
            error.contains("failed to connect to localhost:9999 inside namespace")
                && error.ends_with(
                    "IPv4: dial tcp4 127.0.0.1:9999: connect: connection refused IPv6 dial tcp6 [::1]:9999: connect: connection refused "
                ),
            "{error}"
        );
        forwarder.abort();
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portforward_is_denied_to_a_user_without_get_on_pods_portforward() {
    bounded(async {
        let sim = start().await;
        let admin = client(&sim).await;
        let pods: Api<Pod> = Api::namespaced(admin, "default");
        pods.create(&PostParams::default(), &pod_spec("web", None))
            .await
            .unwrap();
        wait_for(pods.clone(), "web", kube::runtime::conditions::is_pod_running()).await;
        sim.register_port("default", "web", 8888, http_server().await);
        sim.add_user("dev-token", "dev");
        // WebSocket upgrades are GETs: RBAC checks `get` on pods/portforward (and, as 1.35+
        // does, `create` too).
        for verb in ["get", "create"] {
            sim.allow_all();
            sim.deny("dev", verb, "pods/portforward", "default");
            let dev: Api<Pod> = Api::namespaced(client_with_token(&sim, "dev-token").await, "default");
            assert!(dev.get("web").await.is_ok(), "reading the pod is still allowed");
            match dev.portforward("web", &[8888]).await {
                Err(kube::Error::Api(e)) => {
                    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
                    assert_eq!(
                        e.message,
                        format!("pods \"web\" is forbidden: User \"dev\" cannot {verb} resource \"pods/portforward\" in API group \"\" in the namespace \"default\"")
                    );
                }
                Err(other) => panic!("expected 403, got {other:?}"),
                Ok(_) => panic!("expected 403"),
            }
        }
        sim.allow_all();
        let dev: Api<Pod> = Api::namespaced(client_with_token(&sim, "dev-token").await, "default");
        let forwarder = dev.portforward("web", &[8888]).await.expect("allowed again");
        forwarder.abort();
        sim.shutdown().await;
    })
    .await;
}
