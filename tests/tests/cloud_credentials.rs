//! S3 credentials found the way the AWS CLI finds them, each through a real mount on moto: a
//! `credential_process` script, a role assumed at moto's STS with the keys of a source profile,
//! a fake instance-metadata server, and nothing at all (EACCES, and one line naming every
//! place looked). Each daemon runs with a private home holding the AWS files of the test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutPayload};
use snapfs_tests::conformance::runtime;
use snapfs_tests::emulators::{BUCKET, Emulator, Kind};
use snapfs_tests::proxy::Proxy;
use snapfs_tests::{Mount, TEST_SETTLE, binary, fuse_available, sh};

/// A daemon whose remote `s3` is moto's bucket with no keys in its options, started with
/// `env` and the home `files` (path below home, content).
fn mount(moto: &Emulator, env: &[(&str, &str)], files: &[(&str, &str)]) -> Mount {
    let config = format!(
        "[upload]\nsettle = \"{TEST_SETTLE}\"\n[[remote]]\nname = \"s3\"\nurl = \"s3://{BUCKET}\"\n\
         options = {{ endpoint = \"{}\", allow_http = \"true\", region = \"us-east-1\", \
         retry_max = \"1\", retry_timeout = \"5s\" }}\n",
        moto.endpoint()
    );
    let mut m = Mount::unstarted(&config);
    for (path, content) in files {
        let path = m.home().join(path);
        std::fs::create_dir_all(path.parent().expect("a folder")).expect("a folder in home");
        std::fs::write(&path, content).expect("a file in home");
    }
    m.daemon_env = env
        .iter()
        .map(|(k, v)| (k.to_string(), std::ffi::OsString::from(*v)))
        .collect();
    m.launch();
    m
}

fn s3_dir(m: &Mount) -> PathBuf {
    m.mountpoint.join("cloud/s3")
}

/// The first entry of the remote's `snapshots/`, which lists the bucket.
fn list_snapshots(m: &Mount) -> std::io::Result<()> {
    let mut dir = std::fs::read_dir(s3_dir(m).join("snapshots"))?;
    dir.next().transpose()?;
    Ok(())
}

/// A file written through the mount as `name`, uploaded to moto, and read back the same.
fn round_trip(m: &Mount, name: &str) {
    let src = m.root.path().join(name);
    std::fs::write(&src, "signed by whoever the chain found\n").unwrap();
    sh(&format!(
        "cp '{}' '{}/uploads/{name}'",
        src.display(),
        s3_dir(m).display()
    ));
    let snapshot = s3_dir(m).join("snapshots").join(name);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !snapshot.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot:\n{}",
            m.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let back = std::fs::read_to_string(&snapshot).unwrap();
    assert_eq!(back, "signed by whoever the chain found\n");
}

/// `snapfs config check` for the mount's config, with the daemon's environment.
fn config_check(m: &Mount, env: &[(&str, &str)]) -> String {
    let out = Command::new(binary("snapfs"))
        .args(["config", "check", "--config"])
        .arg(m.root.path().join("config.toml"))
        .envs(m.env())
        .envs(env.iter().copied())
        .output()
        .expect("run snapfs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// An executable shell script at `path`.
fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The credential_process runs once without a shell (its quoted argument arrives whole), and
/// its credentials sign the requests; a process whose credentials expire within the refresh
/// margin runs again for later requests; a failing one's stderr is in the log.
#[test]
fn credential_process_reaches_moto() {
    if !fuse_available() {
        return;
    }
    let moto = Emulator::start(Kind::Moto);
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let creds = dir.path().join("creds.sh");
    script(
        &creds,
        &format!(
            "echo \"$1|$2\" >> '{}'\nexp=$3\n\
             printf '{{\"Version\": 1, \"AccessKeyId\": \"AKIDPROC\", \"SecretAccessKey\": \"s\", \
             \"SessionToken\": \"t\"%s}}' \"$exp\"\n",
            calls.display()
        ),
    );
    let config = format!(
        "[default]\ncredential_process = {} 'team a' \"b c\"\n",
        creds.display()
    );
    let m = mount(&moto, &[], &[(".aws/config", &config)]);
    round_trip(&m, "process.txt");
    let lines = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(lines, "team a|b c\n", "run once, its arguments whole");
    let check = config_check(&m, &[]);
    assert!(
        check.contains("would use the credential_process of AWS profile \"default\""),
        "{check}"
    );
    drop(m);

    // Credentials that expire in a minute are inside the five-minute margin: every request
    // fetches anew.
    std::fs::remove_file(&calls).unwrap();
    let soon = (chrono::Utc::now() + chrono::TimeDelta::minutes(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let config = format!(
        "[profile ci]\ncredential_process = {} x y ', \"Expiration\": \"{soon}\"'\n",
        creds.display()
    );
    let m = mount(&moto, &[("AWS_PROFILE", "ci")], &[(".aws/config", &config)]);
    round_trip(&m, "expiring.txt");
    let runs = std::fs::read_to_string(&calls).unwrap().lines().count();
    assert!(runs > 1, "the process ran {runs} time(s)");
    drop(m);

    let failing = dir.path().join("failing.sh");
    script(&failing, "echo 'the token broker is asleep' >&2\nexit 3\n");
    let config = format!("[default]\ncredential_process = {}\n", failing.display());
    let m = mount(&moto, &[], &[(".aws/credentials", &config)]);
    assert!(
        list_snapshots(&m).is_err(),
        "a listing without credentials must fail"
    );
    let log = m.log();
    assert!(log.contains("the token broker is asleep"), "{log}");
}

/// A role assumed at moto's STS (the profile's endpoint_url), signed with the source profile's
/// keys from the credentials file.
#[test]
fn assumed_role_reaches_moto() {
    if !fuse_available() {
        return;
    }
    let moto = Emulator::start(Kind::Moto);
    let config = format!(
        "[profile deploy]\nrole_arn = arn:aws:iam::123456789012:role/snapfs\n\
         source_profile = base\nrole_session_name = snapfs-test\nexternal_id = outside\n\
         duration_seconds = 900\nendpoint_url = {}\n",
        moto.endpoint()
    );
    let credentials = "[base]\naws_access_key_id = AKIDBASE\naws_secret_access_key = base\n";
    let env = [("AWS_PROFILE", "deploy")];
    let m = mount(
        &moto,
        &env,
        &[(".aws/config", &config), (".aws/credentials", credentials)],
    );
    round_trip(&m, "role.txt");
    let check = config_check(&m, &env);
    assert!(
        check.contains("would use role arn:aws:iam::123456789012:role/snapfs assumed at"),
        "{check}"
    );
    assert!(
        !check.contains("AKIDBASE") && !check.contains("= base"),
        "{check}"
    );
    drop(m);

    // The same role for a web identity token (an EKS service account's), asked unsigned.
    let token = oidc_token_file();
    let config = format!(
        "[default]\nrole_arn = arn:aws:iam::123456789012:role/snapfs\n\
         web_identity_token_file = {}\nendpoint_url = {}\n",
        token.path().display(),
        moto.endpoint()
    );
    let m = mount(&moto, &[], &[(".aws/config", &config)]);
    round_trip(&m, "web-identity.txt");
}

/// A file holding a (fake) OIDC token.
fn oidc_token_file() -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzbmFwZnMifQ.c2ln")
        .unwrap();
    f
}

/// A request as a fake server saw it: the request line, the headers, the body.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    headers: String,
    body: String,
}

impl Seen {
    fn path(&self) -> &str {
        self.line.split_whitespace().nth(1).unwrap_or("")
    }
}

/// A one-request-per-connection HTTP server on 127.0.0.1 that answers 200 with what `answer`
/// makes of each request, and keeps every request; stopped when dropped.
struct FakeServer {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    fn start(answer: impl Fn(&Seen) -> String + Send + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, s) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let Some(request) = FakeServer::read(&conn) else {
                    continue;
                };
                let body = answer(&request);
                log.lock().unwrap().push(request);
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        FakeServer {
            port,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn read(conn: &std::net::TcpStream) -> Option<Seen> {
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let mut headers = String::new();
        let mut length = 0;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).ok()? <= 2 {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().ok()?;
            }
            headers.push_str(&h);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        Some(Seen {
            line,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An RFC 3339 time `hours` from now.
fn in_hours(hours: i64) -> String {
    (chrono::Utc::now() + chrono::TimeDelta::hours(hours))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A fake instance-metadata service: the IMDSv2 token, the role's name, its credentials.
fn imds() -> FakeServer {
    FakeServer::start(|r| match r.path() {
        "/latest/api/token" => "imds-token".into(),
        "/latest/meta-data/iam/security-credentials/" => "snapfs-role".into(),
        _ => format!(
            r#"{{"Code":"Success","AccessKeyId":"AKIDIMDS","SecretAccessKey":"s","Token":"t","Expiration":"{}"}}"#,
            in_hours(6)
        ),
    })
}

/// With nothing else there, the instance's metadata service (AWS_EC2_METADATA_SERVICE_ENDPOINT)
/// gives the credentials.
#[test]
fn instance_metadata_reaches_moto() {
    if !fuse_available() {
        return;
    }
    let moto = Emulator::start(Kind::Moto);
    let imds = imds();
    let endpoint = imds.endpoint();
    let env = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint.as_str())];
    let m = mount(&moto, &env, &[]);
    round_trip(&m, "imds.txt");
    let paths: Vec<_> = imds.seen().iter().map(|r| r.path().to_string()).collect();
    assert!(
        paths.contains(&"/latest/api/token".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"/latest/meta-data/iam/security-credentials/snapfs-role".to_string()),
        "{paths:?}"
    );
    let check = config_check(&m, &env);
    assert!(
        check.contains(&format!("would use instance metadata at {endpoint}")),
        "{check}"
    );
}

/// No credentials anywhere: EACCES at the mount, one log line naming the remote and every
/// place looked, and `snapfs config check` says none were found.
#[test]
fn no_credentials_is_eacces_naming_every_source() {
    if !fuse_available() {
        return;
    }
    let moto = Emulator::start(Kind::Moto);
    let env = [("AWS_EC2_METADATA_DISABLED", "true")];
    let m = mount(&moto, &env, &[]);
    let e = list_snapshots(&m).expect_err("a listing without credentials must fail");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    let log = m.log();
    let line = log
        .lines()
        .find(|l| l.contains("no AWS credentials found"))
        .unwrap_or_else(|| panic!("no line in the log:\n{log}"));
    for source in [
        "cloud/s3",
        "$AWS_ACCESS_KEY_ID",
        "AWS profile \"default\"",
        ".aws/credentials",
        ".aws/config",
        "role_arn",
        "SSO",
        "credential_process",
        "$AWS_WEB_IDENTITY_TOKEN_FILE",
        "$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "instance metadata",
    ] {
        assert!(line.contains(source), "{source} is not named: {line}");
    }
    let check = config_check(&m, &env);
    assert!(check.contains("would use none found (tried"), "{check}");
}

/// A gcloud ADC file of type impersonated_service_account: the user's refresh token is traded
/// for a token (at the file's token_uri), which asks generateAccessToken for the impersonated
/// account's token, once for many requests to fake-gcs-server.
#[test]
fn impersonated_service_account_reaches_fake_gcs() {
    let gcs = Emulator::start(Kind::FakeGcs);
    let proxy = Proxy::start(gcs.port, true);
    let google = FakeServer::start(|r| match r.path() {
        "/token" => r#"{"access_token":"user-token","expires_in":3600}"#.into(),
        _ => format!(
            r#"{{"accessToken":"impersonated-token","expireTime":"{}"}}"#,
            in_hours(1)
        ),
    });
    let dir = tempfile::tempdir().unwrap();
    let adc = dir.path().join("adc.json");
    let sa = "backup@acme.iam.gserviceaccount.com";
    let impersonate = format!(
        "{}/v1/projects/-/serviceAccounts/{sa}:generateAccessToken",
        google.endpoint()
    );
    std::fs::write(
        &adc,
        format!(
            r#"{{"type":"impersonated_service_account","delegates":[],
                "service_account_impersonation_url":"{impersonate}",
                "source_credentials":{{"type":"authorized_user","client_id":"c",
                  "client_secret":"cs","refresh_token":"rt","token_uri":"{}/token"}}}}"#,
            google.endpoint()
        ),
    )
    .unwrap();
    let options: std::collections::BTreeMap<String, String> = [
        ("application_credentials", adc.display().to_string()),
        ("base_url", proxy.endpoint()),
        ("allow_http", "true".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let store =
        snapfsd::cloud::open_store(&format!("gs://{BUCKET}"), &options, &Default::default())
            .unwrap();
    runtime().block_on(async {
        for n in 0..3 {
            let at = StorePath::from(format!("impersonated/{n}"));
            store.put(&at, PutPayload::from("hello")).await.unwrap();
            let back = store.get(&at).await.unwrap().bytes().await.unwrap();
            assert_eq!(&back[..], b"hello");
        }
    });
    let seen = google.seen();
    assert_eq!(seen.len(), 2, "one refresh and one impersonation: {seen:?}");
    assert_eq!(seen[0].path(), "/token");
    assert!(seen[0].body.contains("refresh_token=rt"), "{:?}", seen[0]);
    assert!(
        seen[1].line.contains(":generateAccessToken"),
        "{:?}",
        seen[1]
    );
    assert!(
        seen[1]
            .headers
            .to_ascii_lowercase()
            .contains("authorization: bearer user-token"),
        "{:?}",
        seen[1]
    );
}

/// An SSO profile: the token `aws sso login` cached (named by the SHA-1 of the session's name)
/// is traded at the portal (AWS_ENDPOINT_URL_SSO) for the role's credentials; an expired token
/// is EACCES and says to log in again.
#[test]
fn sso_profile_reaches_moto() {
    if !fuse_available() {
        return;
    }
    let moto = Emulator::start(Kind::Moto);
    let portal = FakeServer::start(|_| {
        let ms = chrono::Utc::now().timestamp_millis() + 3_600_000;
        format!(
            r#"{{"roleCredentials":{{"accessKeyId":"ASIASSO","secretAccessKey":"s","sessionToken":"t","expiration":{ms}}}}}"#
        )
    });
    let config = "[profile dev]\nsso_session = corp\nsso_account_id = 123456789012\n\
                  sso_role_name = Backup\n[sso-session corp]\n\
                  sso_start_url = https://corp.awsapps.com/start\nsso_region = eu-west-1\n";
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, b"corp");
    let name: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let cache = format!(".aws/sso/cache/{name}.json");
    let token = |expires: &str| {
        format!(r#"{{"accessToken":"sso-token","expiresAt":"{expires}","region":"eu-west-1"}}"#)
    };
    let endpoint = portal.endpoint();
    let env = [
        ("AWS_PROFILE", "dev"),
        ("AWS_ENDPOINT_URL_SSO", endpoint.as_str()),
    ];
    let fresh = token(&in_hours(6));
    let m = mount(&moto, &env, &[(".aws/config", config), (&cache, &fresh)]);
    round_trip(&m, "sso.txt");
    let seen = portal.seen();
    let first = seen.first().expect("a request to the portal");
    assert!(first.line.contains("/federation/credentials?"), "{first:?}");
    assert!(first.line.contains("account_id=123456789012"), "{first:?}");
    assert!(first.line.contains("role_name=Backup"), "{first:?}");
    assert!(
        first
            .headers
            .to_ascii_lowercase()
            .contains("x-amz-sso_bearer_token: sso-token"),
        "{first:?}"
    );
    let check = config_check(&m, &env);
    assert!(
        check.contains("would use SSO role Backup of account 123456789012"),
        "{check}"
    );
    drop(m);

    let stale = token(&in_hours(-1));
    let m = mount(&moto, &env, &[(".aws/config", config), (&cache, &stale)]);
    let e = list_snapshots(&m).expect_err("an expired SSO token must fail");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    let log = m.log();
    assert!(log.contains("run `aws sso login --profile dev`"), "{log}");
}
