//! The `hivemqsim` binary: prints its address, requires the configured user, serves until killed.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use hivemqsim::basic_auth;

use super::support::{BACKUPS, bounded, request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_with_basic_auth_until_sigterm() {
    bounded(async {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hivemqsim"))
            .args(["--user", "ops", "--password-env", "HIVEMQSIM_TEST_PASSWORD"])
            .env("HIVEMQSIM_TEST_PASSWORD", "from-env")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr: SocketAddr = line
            .trim()
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("{line}"))
            .parse()
            .unwrap();
        assert!(addr.ip().is_loopback());
        assert_eq!(request(addr, "GET", BACKUPS, &[]).await.status, 401);
        let auth = basic_auth("ops", "from-env");
        let reply = request(addr, "GET", BACKUPS, &[("Authorization", auth.as_str())]).await;
        assert_eq!(reply.status, 200);
        // SAFETY: sends a signal to a process this test started.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        assert!(child.wait().unwrap().success());

        // A password variable that is not set is an error, not an open server.
        let out = Command::new(env!("CARGO_BIN_EXE_hivemqsim"))
            .args(["--user", "ops", "--password-env", "HIVEMQSIM_TEST_UNSET"])
            .env_remove("HIVEMQSIM_TEST_UNSET")
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("HIVEMQSIM_TEST_UNSET"));
    })
    .await;
}
