//! Starting a server, a minimal HTTP/1.1 client, and bounded waits.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hivemqsim::{Backup, BackupState, Config, HiveMqSim, Timings};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A kube client with the admin token of `sim`.
pub async fn kube_client(sim: &kubesim::KubeSim) -> kube::Client {
    kube_client_with_token(sim, kubesim::ADMIN_TOKEN).await
}

pub async fn kube_client_with_token(sim: &kubesim::KubeSim, token: &str) -> kube::Client {
    let yaml = sim.kubeconfig().replace(kubesim::ADMIN_TOKEN, token);
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig loads");
    kube::Client::try_from(config).expect("client builds")
}

/// kubesim with quick pods.
pub async fn start_kube() -> kubesim::KubeSim {
    kubesim::KubeSim::start(kubesim::Config {
        timings: kubesim::Timings {
            pod_start: Duration::from_millis(50),
            pod_stop: Duration::from_millis(50),
            ..kubesim::Timings::default()
        },
        ..kubesim::Config::default()
    })
    .await
    .expect("kubesim starts")
}

/// A pod side that answers a request with `first` bytes, then holds the connection open, as a
/// download in progress.
pub async fn stalling_server(first: usize) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("has an address");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(&vec![b'x'; first]).await;
                std::future::pending::<()>().await;
                drop(conn);
            });
        }
    });
    addr
}

/// Every test body finishes within this.
pub const LIMIT: Duration = Duration::from_secs(20);

pub const BACKUPS: &str = "/api/v1/management/backups";

pub fn fast() -> Config {
    Config {
        timings: Timings {
            backup: Duration::from_millis(100),
            restore: Duration::from_millis(100),
        },
        ..Config::default()
    }
}

pub async fn start() -> HiveMqSim {
    HiveMqSim::start(fast()).await.expect("server starts")
}

/// Runs a test body under the time limit.
pub async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(LIMIT, body)
        .await
        .expect("test finished in time");
}

/// An HTTP answer, read until the server closed the connection.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }

    /// The `backup` of a 200 answer.
    pub fn backup(&self) -> Backup {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        serde_json::from_value(self.json()["backup"].clone()).expect("a Backup")
    }

    /// The `(title, detail)` of the first error of an error answer.
    pub fn error(&self) -> (String, String) {
        let json = self.json();
        let e = &json["errors"][0];
        (
            e["title"].as_str().expect("title").to_string(),
            e["detail"].as_str().expect("detail").to_string(),
        )
    }
}

/// Sends one request (`Connection: close`) on `stream` and reads the answer. A connection the
/// server drops mid-body gives what arrived.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: hivemq\r\nConnection: close\r\n");
    if method == "POST" {
        head.push_str("Content-Length: 0\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .expect("request sent");
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8(raw[..split].to_vec()).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines.next().expect("status line")[9..12]
        .parse()
        .expect("status code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    exchange(&mut stream, method, path, headers).await
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[]).await
}

pub async fn post(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "POST", path, &[]).await
}

pub fn one(id: &str) -> String {
    format!("{BACKUPS}/{id}")
}

pub fn file(id: &str) -> String {
    format!("/api/v1/management/files/backups/{id}")
}

/// Polls the get endpoint until the backup is in `state`.
pub async fn wait_state(addr: SocketAddr, id: &str, state: BackupState) -> Backup {
    loop {
        let backup = get(addr, &one(id)).await.backup();
        if backup.state == state {
            return backup;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
