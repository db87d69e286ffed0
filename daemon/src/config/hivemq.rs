//! `[[hivemq]]` sections: HiveMQ clusters reached by the URL of their REST API or by
//! Kubernetes coordinates (DESIGN §7), with optional basic auth whose password comes from an
//! environment variable, a file or a Kubernetes Secret, never from argv.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use snapfs_control::paths::Paths;
use snapfs_control::units::{format_duration, parse_duration};

use super::coordinates::{self, Coordinates, CoordinatesSection, SecretRef, SecretSection};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Section {
    name: String,
    url: Option<String>,
    username: Option<String>,
    password_env: Option<String>,
    password_file: Option<String>,
    password_secret: Option<SecretSection>,
    kubernetes: Option<CoordinatesSection>,
    timeout: Option<String>,
    retry_max: Option<u32>,
    retry_start: Option<String>,
    poll_start: Option<String>,
    poll_max: Option<String>,
}

/// A password, kept out of Debug output and so out of every log line.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The largest values accepted, so that no setting makes a reader wait for minutes on a broker
/// that does not answer (DESIGN §7): a try's `timeout`, the first wait between tries, their
/// count, and the longest wait between two polls of a running backup.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_RETRY_START: Duration = Duration::from_secs(10);
const MAX_RETRIES: u32 = 20;
const MAX_POLL: Duration = Duration::from_secs(600);

/// Where the REST API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Its base URL (`http://127.0.0.1:8888`).
    Url(String),
    /// A pod found by these coordinates, reached by port-forward.
    Kubernetes(Coordinates),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Url(u) => f.write_str(u),
            Endpoint::Kubernetes(k) => write!(f, "{k}"),
        }
    }
}

/// Where the password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    /// Read at start from `password_env` or `password_file`.
    Given(Secret),
    /// Read from the cluster when first needed, and again after the broker refuses it.
    InSecret(SecretRef),
}

/// One configured HiveMQ cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: String,
    pub endpoint: Endpoint,
    pub username: Option<String>,
    pub password: Option<Password>,
    /// How long one try waits to connect, for the answer's first byte, and for each next byte
    /// of its body; tries of one request start only within this long of the first.
    pub timeout: Duration,
    /// Retries of a request that failed in a way that can pass (5xx, connection, cut off).
    pub retry_max: u32,
    /// The first wait between those retries; it doubles, up to 16 times this.
    pub retry_start: Duration,
    /// How a running backup or restore is polled: first wait, doubling up to `poll_max`.
    pub poll_start: Duration,
    pub poll_max: Duration,
}

pub(super) fn cluster(s: Section, paths: &Paths) -> anyhow::Result<Cluster> {
    let name = s.name;
    let endpoint = match (s.url, s.kubernetes) {
        (Some(_), Some(_)) => {
            bail!("hivemq {name:?}: give `url` or `kubernetes`, not both")
        }
        (None, None) => bail!(
            "hivemq {name:?}: `url` is missing (the REST API, e.g. http://127.0.0.1:8888), or give `kubernetes = {{ statefulset = \"…\" }}` to reach its pods by port-forward"
        ),
        (Some(url), None) => Endpoint::Url(url_of(&name, url)?),
        (None, Some(k)) => Endpoint::Kubernetes(coordinates::coordinates(&name, k)?),
    };
    let given = [
        s.password_env.is_some(),
        s.password_file.is_some(),
        s.password_secret.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        bail!("hivemq {name:?}: give one of password_env, password_file and password_secret");
    }
    let password = match (s.password_env, s.password_file, s.password_secret) {
        (Some(var), _, _) => Some(Password::Given(Secret(std::env::var(&var).map_err(
            |_| {
                anyhow::anyhow!(
                    "hivemq {name:?}: environment variable {var} (password_env) is not set"
                )
            },
        )?))),
        (_, Some(file), _) => {
            let path: PathBuf = paths.expand(&file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("hivemq {name:?}: password_file {}", path.display()))?;
            Some(Password::Given(Secret(
                text.trim_end_matches(['\r', '\n']).to_string(),
            )))
        }
        (_, _, Some(secret)) => {
            if !matches!(endpoint, Endpoint::Kubernetes(_)) {
                bail!(
                    "hivemq {name:?}: password_secret is read from the cluster's namespace, so it needs `kubernetes` coordinates rather than a url"
                );
            }
            Some(Password::InSecret(coordinates::secret(&name, secret)?))
        }
        (None, None, None) => None,
    };
    if password.is_some() && s.username.is_none() {
        bail!("hivemq {name:?}: a password is given but no username");
    }
    let dur = |v: Option<String>, default: Duration, key: &str, max: Duration| {
        let d = v.map_or(Ok(default), |t| {
            parse_duration(&t).with_context(|| format!("hivemq {name:?}: {key}"))
        })?;
        if d > max {
            bail!(
                "hivemq {name:?}: {key} = {} is above the largest allowed, {}",
                format_duration(d),
                format_duration(max)
            );
        }
        Ok(d)
    };
    let timeout = dur(s.timeout, Duration::from_secs(10), "timeout", MAX_TIMEOUT)?;
    if timeout.is_zero() {
        bail!("hivemq {name:?}: timeout must be above zero");
    }
    let retry_start = dur(
        s.retry_start,
        Duration::from_millis(200),
        "retry_start",
        MAX_RETRY_START,
    )?;
    let retry_max = s.retry_max.unwrap_or(4);
    if retry_max > MAX_RETRIES {
        bail!(
            "hivemq {name:?}: retry_max = {retry_max} is above the largest allowed, {MAX_RETRIES}"
        );
    }
    let poll_start = dur(s.poll_start, Duration::from_secs(2), "poll_start", MAX_POLL)?;
    let poll_max = dur(s.poll_max, Duration::from_secs(30), "poll_max", MAX_POLL)?;
    if poll_start.is_zero() || poll_max < poll_start {
        bail!("hivemq {name:?}: poll_start must be above zero and at most poll_max");
    }
    Ok(Cluster {
        timeout,
        retry_max,
        retry_start,
        poll_start,
        poll_max,
        name,
        endpoint,
        username: s.username,
        password,
    })
}

/// A REST API base URL as given, checked.
fn url_of(name: &str, url: String) -> anyhow::Result<String> {
    let parsed = url::Url::parse(&url).with_context(|| format!("hivemq {name:?}: url {url:?}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        bail!("hivemq {name:?}: url {url:?} is not an http:// or https:// address");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        bail!(
            "hivemq {name:?}: put credentials in `username` and `password_env`/`password_file`, not in the url"
        );
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::*;

    fn paths() -> Paths {
        Paths::for_home(Path::new("/home/u"))
    }

    #[test]
    fn reads_a_cluster_with_a_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let text = format!(
            "[[hivemq]]\nname = \"broker\"\nurl = \"http://127.0.0.1:8888\"\nusername = \"admin\"\npassword_file = {:?}\npoll_start = \"50ms\"\npoll_max = \"1s\"\n",
            file.display().to_string()
        );
        let c = Config::parse(&text, &paths()).unwrap();
        let h = &c.hivemq[0];
        assert_eq!(h.name, "broker");
        assert_eq!(h.username.as_deref(), Some("admin"));
        assert_eq!(h.password, Some(Password::Given(Secret("s3cret".into()))));
        assert_eq!(h.poll_start, Duration::from_millis(50));
        assert_eq!(h.poll_max, Duration::from_secs(1));
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "the password is never shown"
        );
    }

    #[test]
    fn defaults_poll_from_two_to_thirty_seconds() {
        let c = Config::parse(
            "[[hivemq]]\nname = \"b\"\nurl = \"http://127.0.0.1:8888\"",
            &paths(),
        )
        .unwrap();
        assert_eq!(c.hivemq[0].poll_start, Duration::from_secs(2));
        assert_eq!(c.hivemq[0].poll_max, Duration::from_secs(30));
        assert_eq!(c.hivemq[0].password, None);
        assert_eq!(c.hivemq[0].timeout, Duration::from_secs(10));
        assert_eq!(c.hivemq[0].retry_start, Duration::from_millis(200));
        assert_eq!(c.hivemq[0].retry_max, 4);
        // A HiveMQ cluster does not stand in for the default remote.
        assert_eq!(c.remotes[0].name, "local");
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        let err = |extra: &str| {
            let text = format!("[[hivemq]]\nname = \"b\"\n{extra}");
            format!("{:#}", Config::parse(&text, &paths()).unwrap_err())
        };
        assert!(err("").contains("`url` is missing"));
        let e = err("url = \"http://x\"\nkubernetes = { statefulset = \"hivemq\" }");
        assert!(e.contains("not both"), "{e}");
        let e = err("context = \"prod\"\nurl = \"http://x\"");
        assert!(e.contains("unknown field `context`"), "{e}");
        let e = err("url = \"http://x\"\npassword_secret = { name = \"s\" }");
        assert!(e.contains("needs `kubernetes`"), "{e}");
        assert!(err("url = \"ftp://x\"").contains("not an http"));
        assert!(err("url = \"http://u:p@x\"").contains("not in the url"));
        let e = err(
            "url = \"http://x\"\nusername = \"a\"\npassword_env = \"SNAPFS_TEST_SURELY_UNSET\"",
        );
        assert!(
            e.contains("SNAPFS_TEST_SURELY_UNSET") && e.contains("not set"),
            "{e}"
        );
        assert!(
            err("url = \"http://x\"\npassword_file = \"/nonexistent\"\npassword_env = \"X\"")
                .contains("give one of")
        );
        assert!(err("url = \"http://x\"\npoll_start = \"0\"").contains("poll_start"));
        assert!(err("url = \"http://x\"\npasword = \"x\"").contains("unknown field"));
        let twice = "[[hivemq]]\nname = \"b\"\nurl = \"http://x\"\n[[hivemq]]\nname = \"b\"\nurl = \"http://y\"";
        assert!(Config::parse(twice, &paths()).is_err());
    }

    #[test]
    fn reads_a_cluster_by_kubernetes_coordinates() {
        let text = "[[hivemq]]\nname = \"mq\"\nkubernetes = { context = \"prod\", namespace = \"mq\", statefulset = \"hivemq\", port = \"rest-8888\" }\nusername = \"admin\"\npassword_secret = { name = \"hivemq-auth\", key = \"password\" }\n";
        let c = Config::parse(text, &paths()).unwrap();
        let h = &c.hivemq[0];
        let Endpoint::Kubernetes(k) = &h.endpoint else {
            panic!("{:?}", h.endpoint)
        };
        assert_eq!(k.namespace.as_deref(), Some("mq"));
        assert_eq!(
            k.pods,
            super::super::coordinates::Pods::StatefulSet("hivemq".into())
        );
        assert_eq!(
            h.password,
            Some(Password::InSecret(SecretRef {
                name: "hivemq-auth".into(),
                key: "password".into()
            }))
        );
    }

    #[test]
    fn waits_past_their_limit_are_refused_by_name() {
        let err = |extra: &str| {
            let text = format!("[[hivemq]]\nname = \"b\"\nurl = \"http://x\"\n{extra}");
            format!("{:#}", Config::parse(&text, &paths()).unwrap_err())
        };
        assert_eq!(
            err("retry_start = \"100000d\""),
            "hivemq \"b\": retry_start = 100000d is above the largest allowed, 10s"
        );
        assert_eq!(
            err("timeout = \"1h\""),
            "hivemq \"b\": timeout = 1h is above the largest allowed, 1m"
        );
        assert!(err("timeout = \"0\"").contains("timeout must be above zero"));
        assert_eq!(
            err("retry_max = 4000000000"),
            "hivemq \"b\": retry_max = 4000000000 is above the largest allowed, 20"
        );
        assert!(err("poll_max = \"2w\"").contains("poll_max = 14d is above"));
        let edge = "[[hivemq]]\nname = \"b\"\nurl = \"http://x\"\ntimeout = \"60s\"\nretry_start = \"10s\"\nretry_max = 20\npoll_max = \"10m\"";
        let c = Config::parse(edge, &paths()).unwrap();
        assert_eq!(c.hivemq[0].timeout, Duration::from_secs(60));
    }
}
