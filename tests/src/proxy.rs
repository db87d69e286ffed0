//! A small HTTP proxy on 127.0.0.1 in front of an emulator, for what emulators cannot do:
//! answer 503 to the next N requests (a throttling storm), and, for fake-gcs-server, turn
//! object_store's XML-API uploads into JSON-API media uploads (upstream rejects the former).
//! One request per connection; stopped when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

#[derive(Default)]
struct Shared {
    /// Requests still to be answered with 503.
    fail_next: AtomicU64,
    /// 503 answers given so far.
    failed: AtomicU64,
    /// Requests passed on so far.
    forwarded: AtomicU64,
    stop: AtomicBool,
}

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Forwards to 127.0.0.1:`upstream`; `gcs_uploads` rewrites XML-API PUTs for fake-gcs-server.
    pub fn start(upstream: u16, gcs_uploads: bool) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("address").port();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    // A client that hangs up early is its own business.
                    let _ = serve(conn, upstream, gcs_uploads, &s);
                });
            }
        });
        Proxy {
            port,
            shared,
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next `n` requests get 503 Slow Down.
    pub fn fail_next(&self, n: u64) {
        self.shared.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::SeqCst)
    }

    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn read_request(r: &mut impl BufRead) -> std::io::Result<Request> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut body = Vec::new();
    if header(&headers, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(std::io::Error::other)?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case("transfer-encoding"));
    } else if let Some(n) = header(&headers, "content-length").and_then(|v| v.parse().ok()) {
        body = vec![0; n];
        r.read_exact(&mut body)?;
    }
    headers.retain(|(k, _)| {
        !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("connection")
    });
    Ok(Request {
        method,
        target,
        headers,
        body,
    })
}

/// `PUT /bucket/key` of GCS's XML API as a JSON-API media upload of fake-gcs-server.
fn to_gcs_media_upload(req: &mut Request) {
    if req.method != "PUT" || req.target.contains('?') {
        return;
    }
    let path = req.target.trim_start_matches('/');
    let Some((bucket, key)) = path.split_once('/') else {
        return;
    };
    // The key arrives percent-encoded per segment; as a query value '/' must be encoded too.
    let name = key.replace('/', "%2F");
    let mut target = format!("/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}");
    if let Some(g) = header(&req.headers, "x-goog-if-generation-match") {
        target.push_str(&format!("&ifGenerationMatch={g}"));
    }
    req.method = "POST".into();
    req.target = target;
}

fn serve(conn: TcpStream, upstream: u16, gcs: bool, s: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut req = read_request(&mut reader)?;
    let mut out = conn;
    let failing = s
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        s.failed.fetch_add(1, Ordering::SeqCst);
        let body = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
        return out.write_all(
            format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    s.forwarded.fetch_add(1, Ordering::SeqCst);
    let upload = gcs && req.method == "PUT";
    if gcs {
        to_gcs_media_upload(&mut req);
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    // fake-gcs-server routes by Host: it must be the emulator's own.
    req.headers.retain(|(k, _)| !k.eq_ignore_ascii_case("host"));
    head.push_str(&format!("Host: 127.0.0.1:{upstream}\r\n"));
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        req.body.len()
    ));
    up.write_all(head.as_bytes())?;
    up.write_all(&req.body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |p| p + 4);
    let (head, body) = answer.split_at(split);
    let head = String::from_utf8_lossy(head);
    let mut lines: Vec<String> = head
        .lines()
        .filter(|l| !l.is_empty())
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(str::to_string)
        .collect();
    if upload
        && !lines
            .iter()
            .any(|l| l.to_ascii_lowercase().starts_with("etag:"))
    {
        // object_store reads the new object's ETag from a header; the JSON API puts it in
        // the body.
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
            && let Some(etag) = v["etag"].as_str()
        {
            lines.push(format!("ETag: \"{etag}\""));
        }
    }
    lines.push("Connection: close".into());
    out.write_all(format!("{}\r\n\r\n", lines.join("\r\n")).as_bytes())?;
    out.write_all(body)
}
