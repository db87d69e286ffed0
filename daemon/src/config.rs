//! Configuration: `~/.config/snapfs/config.toml` (XDG) merged with defaults, so that no file is
//! needed. Every key is documented in snapfs.toml(5).

mod coordinates;
#[cfg(test)]
mod documented;
mod hivemq;
#[cfg(test)]
mod hostile;
#[cfg(test)]
mod keys;
mod kubernetes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use snapfs_control::paths::Paths;
use snapfs_control::units::{parse_duration, parse_size};

pub use coordinates::{Coordinates, Pods, PortRef, REST_PORT, REST_PORT_NAME, SecretRef};
pub use hivemq::{Cluster, Endpoint, Password, Secret};
pub use kubernetes::{
    KubeContext, PodOverrides, PodUid, escape_name, is_dns_label, is_dns_subdomain,
};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    cache: CacheSection,
    #[serde(default)]
    upload: UploadSection,
    #[serde(default)]
    list: ListSection,
    #[serde(default)]
    lifecycle: LifecycleSection,
    #[serde(default)]
    k8s: K8sSection,
    #[serde(default)]
    metrics: MetricsSection,
    #[serde(default)]
    remote: Vec<RemoteSection>,
    #[serde(default)]
    hivemq: Vec<hivemq::Section>,
    kubernetes: Option<Vec<kubernetes::Section>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheSection {
    dir: Option<String>,
    max_size: Option<String>,
    min_free: Option<String>,
    memory: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadSection {
    settle: Option<String>,
    early: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListSection {
    ttl: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct K8sSection {
    reader_idle: Option<String>,
    image: Option<String>,
    storage_class: Option<String>,
    snapshot_class: Option<String>,
    size_margin: Option<u64>,
    min_size: Option<String>,
    ready_timeout: Option<String>,
    pod_uid: Option<toml::Value>,
    all_contexts: Option<bool>,
}

/// The default image of upload and reader pods, pinned by digest so that every cluster runs
/// the same bytes (busybox 1.36.1, the multi-architecture index).
pub const DEFAULT_IMAGE: &str = "docker.io/library/busybox:1.36.1@sha256:73aaf090f3d85aa34ee199857f03fa3a95c8ede2ffd4cc2cdb5b94e566b11662";

/// How snapshots are made in a Kubernetes namespace (`[k8s]`, DESIGN §6).
#[derive(Debug, Clone, PartialEq)]
pub struct K8sSettings {
    /// Image of the upload and reader pods; it needs `sh`, `dd`, `gunzip`, `tar`, `find`,
    /// `stat`, `readlink`, `tail` and `head`, and uploads are smaller or faster where it has
    /// `zstd` or `lzop` (snapfs.toml(5)).
    pub image: String,
    /// StorageClass of the claims of uploads, restores and readers; None: the cluster's
    /// default class.
    pub storage_class: Option<String>,
    /// VolumeSnapshotClass; None: the default class for the storage class's driver.
    pub snapshot_class: Option<String>,
    /// Percent added to the staged bytes when sizing an upload claim.
    pub size_margin: u64,
    /// An upload claim is never asked smaller than this.
    pub min_size: u64,
    /// How long a new VolumeSnapshot may take to become ready.
    pub ready_timeout: Duration,
    /// The user upload and reader pods run as.
    pub pod_uid: PodUid,
    /// Without `[[kubernetes]]` tables, every context of the kubeconfig rather than the
    /// current one; with them, every other context besides.
    pub all_contexts: bool,
}

impl K8sSettings {
    /// These settings with what a `[[kubernetes]]` table sets for its context.
    pub fn for_context(&self, o: &PodOverrides) -> K8sSettings {
        K8sSettings {
            image: o.image.clone().unwrap_or_else(|| self.image.clone()),
            storage_class: o
                .storage_class
                .clone()
                .or_else(|| self.storage_class.clone()),
            snapshot_class: o
                .snapshot_class
                .clone()
                .or_else(|| self.snapshot_class.clone()),
            pod_uid: o.pod_uid.unwrap_or(self.pod_uid),
            ..self.clone()
        }
    }
}

impl Default for K8sSettings {
    fn default() -> Self {
        K8sSettings {
            image: DEFAULT_IMAGE.into(),
            storage_class: None,
            snapshot_class: None,
            size_margin: 20,
            min_size: 1 << 30,
            ready_timeout: Duration::from_secs(600),
            pod_uid: PodUid::Auto,
            all_contexts: false,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSection {
    listen: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LifecycleSection {
    interval: Option<String>,
    orphan_grace: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetentionSection {
    #[serde(default)]
    min_count: u64,
    min_days: Option<u64>,
    max_days: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteSection {
    name: String,
    url: String,
    #[serde(default)]
    options: BTreeMap<String, String>,
    ttl: Option<String>,
    retention: Option<RetentionSection>,
    max_snapshots: Option<u64>,
}

/// Which snapshots of a target cleanup must keep, and when it may delete them (snapfs.toml(5),
/// `retention`). The zero value keeps nothing back and deletes nothing for age.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// The newest this many are always kept.
    pub min_count: u64,
    /// Snapshots younger than this many days are always kept.
    pub min_days: Option<u64>,
    /// Snapshots older than this many days are deleted, unless kept by the two above.
    pub max_days: Option<u64>,
}

/// One configured bucket or prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct Remote {
    pub name: String,
    pub url: String,
    pub options: BTreeMap<String, String>,
    /// Snapshots expire this long after they are made; None = never.
    pub ttl: Option<Duration>,
    pub retention: Retention,
    pub max_snapshots: Option<u64>,
}

/// The whole configuration, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub cache_dir: PathBuf,
    pub cache_max: u64,
    pub cache_min_free: u64,
    pub cache_memory: u64,
    pub settle: Duration,
    /// Whether a bucket or a namespace stores the files of an upload while they are copied
    /// (`upload.early`).
    pub early: bool,
    pub list_ttl: Duration,
    /// How often expired and retired snapshots and orphan packs are cleaned up; None = never.
    pub lifecycle_interval: Option<Duration>,
    /// Packs no snapshot lists are collected only once their upload has been idle this long.
    pub orphan_grace: Duration,
    /// How long a Kubernetes snapshot reader (claim and pod) is kept without reads.
    pub reader_idle: Duration,
    pub k8s: K8sSettings,
    /// Where `/metrics` is served over HTTP; None: nowhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub remotes: Vec<Remote>,
    /// HiveMQ clusters, under `hivemq/<name>`.
    pub hivemq: Vec<Cluster>,
    /// Kubernetes contexts under `k8s/<name>` as `[[kubernetes]]` tables list them; None: no
    /// table, so the current context (or with `k8s.all_contexts` every context).
    pub kubernetes: Option<Vec<KubeContext>>,
}

impl Config {
    /// Reads `path` if it exists (a missing default file is fine; a missing named file is not).
    pub fn load(path: Option<&Path>, paths: &Paths) -> anyhow::Result<Config> {
        let (file, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (paths.config_file(), false),
        };
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            // Absent, not a link to nothing: a dangling link is a mistake to report.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && !explicit
                    && std::fs::symlink_metadata(&file).is_err() =>
            {
                String::new()
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        Self::parse(&text, paths).with_context(|| format!("in {}", file.display()))
    }

    pub fn parse(text: &str, paths: &Paths) -> anyhow::Result<Config> {
        let f: File = toml::from_str(text)?;
        let cache_dir = match f.cache.dir {
            Some(d) => paths.expand(&d),
            None => paths.cache_dir(),
        };
        let mut remotes = Vec::new();
        for r in f.remote {
            check_target_name(&r.name)?;
            if remotes.iter().any(|x: &Remote| x.name == r.name) {
                bail!("remote {:?} is configured twice", r.name);
            }
            let what = format!("remote {:?}", r.name);
            let (ttl, retention) = lifecycle(r.ttl.as_deref(), r.retention, &what)?;
            remotes.push(Remote {
                name: r.name,
                url: r.url,
                options: r.options,
                ttl,
                retention,
                max_snapshots: r.max_snapshots,
            });
        }
        if remotes.is_empty() {
            remotes.push(Remote {
                name: "local".into(),
                url: format!("file://{}", paths.data_dir().join("local").display()),
                options: BTreeMap::new(),
                ttl: None,
                retention: Retention::default(),
                max_snapshots: None,
            });
        }
        let mut clusters: Vec<Cluster> = Vec::new();
        for h in f.hivemq {
            let c = hivemq::cluster(h, paths)?;
            check_target_name(&c.name)?;
            if clusters.iter().any(|x| x.name == c.name) {
                bail!("hivemq {:?} is configured twice", c.name);
            }
            clusters.push(c);
        }
        let kubernetes = match f.kubernetes {
            None => None,
            Some(sections) => {
                let mut out: Vec<KubeContext> = Vec::new();
                for k in sections {
                    let c = kubernetes::context(k)?;
                    check_target_name(&c.name)?;
                    if out.iter().any(|x| x.name == c.name) {
                        bail!("kubernetes {:?} is configured twice", c.name);
                    }
                    out.push(c);
                }
                Some(out)
            }
        };
        let size = |v: Option<String>, default: u64, what: &str| -> anyhow::Result<u64> {
            v.map_or(Ok(default), |s| {
                parse_size(&s).with_context(|| format!("cache.{what}"))
            })
        };
        let dur = |v: Option<String>, default: Duration, what: &str| -> anyhow::Result<Duration> {
            v.map_or(Ok(default), |s| {
                parse_duration(&s).with_context(|| what.to_string())
            })
        };
        Ok(Config {
            cache_dir,
            cache_max: size(f.cache.max_size, 20 << 30, "max_size")?,
            cache_min_free: size(f.cache.min_free, 1 << 30, "min_free")?,
            cache_memory: size(f.cache.memory, 256 << 20, "memory")?,
            settle: dur(f.upload.settle, Duration::from_secs(2), "upload.settle")?,
            early: f.upload.early.unwrap_or(true),
            list_ttl: dur(f.list.ttl, Duration::from_secs(5), "list.ttl")?,
            lifecycle_interval: Some(dur(
                f.lifecycle.interval,
                Duration::from_secs(3600),
                "lifecycle.interval",
            )?)
            .filter(|d| !d.is_zero()),
            orphan_grace: dur(
                f.lifecycle.orphan_grace,
                Duration::from_secs(3600),
                "lifecycle.orphan_grace",
            )?,
            reader_idle: dur(
                f.k8s.reader_idle,
                Duration::from_secs(600),
                "k8s.reader_idle",
            )?,
            k8s: K8sSettings {
                image: f.k8s.image.unwrap_or_else(|| DEFAULT_IMAGE.into()),
                storage_class: f.k8s.storage_class,
                snapshot_class: f.k8s.snapshot_class,
                size_margin: f.k8s.size_margin.unwrap_or(20),
                min_size: f
                    .k8s
                    .min_size
                    .map_or(Ok(1 << 30), |s| parse_size(&s).context("k8s.min_size"))?,
                ready_timeout: dur(
                    f.k8s.ready_timeout,
                    Duration::from_secs(600),
                    "k8s.ready_timeout",
                )?,
                pod_uid: f
                    .k8s
                    .pod_uid
                    .map(|v| kubernetes::pod_uid(v, "k8s.pod_uid"))
                    .transpose()?
                    .unwrap_or_default(),
                all_contexts: f.k8s.all_contexts.unwrap_or(false),
            },
            metrics_listen: f
                .metrics
                .listen
                .map(|a| {
                    a.parse().with_context(|| {
                        format!("metrics.listen: {a:?} is not an IP address and port")
                    })
                })
                .transpose()?,
            remotes,
            hivemq: clusters,
            kubernetes,
        })
    }
}

/// A target's `ttl` (0 = never) and `retention`, checked.
fn lifecycle(
    ttl: Option<&str>,
    retention: Option<RetentionSection>,
    what: &str,
) -> anyhow::Result<(Option<Duration>, Retention)> {
    let ttl = match ttl {
        None => None,
        Some(t) => Some(parse_duration(t).with_context(|| format!("{what}: ttl"))?)
            .filter(|d| !d.is_zero()),
    };
    let retention = match retention {
        None => Retention::default(),
        Some(k) => {
            if let (Some(min), Some(max)) = (k.min_days, k.max_days)
                && max < min
            {
                bail!("{what}: retention.max_days ({max}) is less than min_days ({min})");
            }
            Retention {
                min_count: k.min_count,
                min_days: k.min_days,
                max_days: k.max_days,
            }
        }
    };
    Ok((ttl, retention))
}

/// A target's directory name: one plain path component.
fn check_target_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        bail!("{name:?} cannot be a directory name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths::for_home(Path::new("/home/u"))
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::parse("", &paths()).unwrap();
        assert_eq!(c.remotes.len(), 1);
        assert_eq!(c.remotes[0].name, "local");
        assert_eq!(c.remotes[0].url, "file:///home/u/.local/share/snapfs/local");
        assert_eq!(c.cache_dir, PathBuf::from("/home/u/.cache/snapfs"));
        assert!(c.early);
        assert_eq!(c.settle, Duration::from_secs(2));
        assert_eq!(c.cache_max, 20 << 30);
        assert_eq!(c.lifecycle_interval, Some(Duration::from_secs(3600)));
        assert_eq!(c.orphan_grace, Duration::from_secs(3600));
        assert_eq!(c.remotes[0].retention, Retention::default());
    }

    #[test]
    fn metrics_are_served_only_where_asked() {
        assert_eq!(Config::parse("", &paths()).unwrap().metrics_listen, None);
        let c = Config::parse("[metrics]\nlisten = \"127.0.0.1:9477\"\n", &paths()).unwrap();
        assert_eq!(c.metrics_listen, Some(([127, 0, 0, 1], 9477).into()));
        let err = Config::parse("[metrics]\nlisten = \"localhost\"\n", &paths()).unwrap_err();
        assert!(format!("{err:#}").contains("metrics.listen"), "{err:#}");
    }

    #[test]
    fn kubernetes_contexts_default_to_none_listed_and_may_be_listed() {
        assert_eq!(Config::parse("", &paths()).unwrap().kubernetes, None);
        let c = Config::parse(
            "[[kubernetes]]\ncontext = \"arn:aws:eks:eu-west-1:1:cluster/prod\"\n\
             [[kubernetes]]\ncontext = \"kind-dev\"\nname = \"dev\"\nnamespaces = [\"shop\"]\n",
            &paths(),
        )
        .unwrap();
        assert_eq!(c.reader_idle, Duration::from_secs(600));
        let k = c.kubernetes.unwrap();
        assert_eq!(k[0].name, "arn:aws:eks:eu-west-1:1:cluster%2Fprod");
        assert!(k[0].namespaces.is_empty());
        assert_eq!(
            (k[1].name.as_str(), k[1].namespaces.as_slice()),
            ("dev", &["shop".to_string()][..])
        );
        let twice =
            "[[kubernetes]]\ncontext = \"a\"\n[[kubernetes]]\ncontext = \"b\"\nname = \"a\"\n";
        assert!(Config::parse(twice, &paths()).is_err());
        assert!(
            Config::parse(
                "[[kubernetes]]\ncontext = \"a\"\nname = \"x/y\"\n",
                &paths()
            )
            .is_err()
        );
    }

    #[test]
    fn kubernetes_tables_override_k8s_for_their_context() {
        let c = Config::parse(
            "[k8s]\nstorage_class = \"gp3\"\npod_uid = 2000\nall_contexts = true\n\
             [[kubernetes]]\ncontext = \"ocp\"\npod_uid = \"namespace\"\n\
             image = \"quay.io/me/busybox@sha256:ab\"\nsnapshot_class = \"snap\"\n",
            &paths(),
        )
        .unwrap();
        assert!(c.k8s.all_contexts);
        assert_eq!(c.k8s.image, DEFAULT_IMAGE);
        assert!(DEFAULT_IMAGE.contains("@sha256:"));
        let k = c.kubernetes.unwrap();
        let s = c.k8s.for_context(&k[0].pods);
        assert_eq!(s.pod_uid, PodUid::Namespace);
        assert_eq!(s.image, "quay.io/me/busybox@sha256:ab");
        assert_eq!(s.storage_class.as_deref(), Some("gp3"));
        assert_eq!(s.snapshot_class.as_deref(), Some("snap"));
        let plain = c.k8s.for_context(&PodOverrides::default());
        assert_eq!(plain.pod_uid, PodUid::Fixed(2000));
        assert_eq!(plain, c.k8s);
        let e = format!(
            "{:#}",
            Config::parse("[k8s]\npod_uid = \"root\"", &paths()).unwrap_err()
        );
        assert!(e.starts_with("k8s.pod_uid: "), "{e}");
    }

    #[test]
    fn reads_remotes_and_sections() {
        let c = Config::parse(
            r#"
            [cache]
            dir = "~/c"
            max_size = "1GiB"
            [upload]
            settle = "500ms"
            early = false
            [[remote]]
            name = "prod"
            url = "memory://"
            ttl = "14d"
            max_snapshots = 3
            options = { region = "eu-west-1" }
            retention = { min_count = 5, min_days = 30, max_days = 90 }
            [lifecycle]
            interval = "0"
            orphan_grace = "10m"
            "#,
            &paths(),
        )
        .unwrap();
        assert_eq!(c.cache_dir, PathBuf::from("/home/u/c"));
        assert_eq!(c.cache_max, 1 << 30);
        assert_eq!(c.settle, Duration::from_millis(500));
        assert!(!c.early);
        assert_eq!(c.remotes[0].ttl, Some(Duration::from_secs(14 * 86400)));
        assert_eq!(c.remotes[0].max_snapshots, Some(3));
        assert_eq!(c.remotes[0].options["region"], "eu-west-1");
        assert_eq!(
            c.remotes[0].retention,
            Retention {
                min_count: 5,
                min_days: Some(30),
                max_days: Some(90)
            }
        );
        assert_eq!(c.lifecycle_interval, None);
        assert_eq!(c.orphan_grace, Duration::from_secs(600));
    }

    #[test]
    fn refuses_mistakes() {
        assert!(Config::parse("[cache]\nmax_sise = \"1G\"", &paths()).is_err());
        assert!(
            Config::parse("[[remote]]\nname = \"a/b\"\nurl = \"memory://\"", &paths()).is_err()
        );
        let remote = |retention: &str| {
            format!("[[remote]]\nname = \"a\"\nurl = \"memory://\"\nretention = {retention}")
        };
        assert!(Config::parse(&remote("{ min_days = 9, max_days = 3 }"), &paths()).is_err());
        assert!(Config::parse(&remote("{ keep = 3 }"), &paths()).is_err());
        assert!(Config::parse(&remote("{ min_days = \"3d\" }"), &paths()).is_err());
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = |text: &str| format!("{:#}", Config::parse(text, &paths()).unwrap_err());
        assert_eq!(
            err("[[remote]]\nname = \"prod\"\nurl = \"memory://\"\nttl = \"999999999999999d\""),
            "remote \"prod\": ttl: \"999999999999999d\" is not a duration: too long"
        );
        let e = err("[cache]\nmax_size = \"12 parsecs\"");
        assert!(
            e.starts_with("cache.max_size: \"12 parsecs\" is not a size"),
            "{e}"
        );
        let e = err("[upload]\nsettle = \"3 fortnights\"");
        assert!(
            e.starts_with("upload.settle: \"3 fortnights\" is not a duration"),
            "{e}"
        );
        let e = err("[k8s]\nmin_size = \"1gb\"");
        assert!(
            e.contains("k8s.min_size") && e.contains("did you mean \"GB\""),
            "{e}"
        );
    }

    #[test]
    fn sizes_are_those_of_kubernetes() {
        let c = Config::parse(
            "[cache]\nmax_size = \"1.5Gi\"\nmin_free = \"2G\"\nmemory = \"512 MiB\"\n[k8s]\nmin_size = \"1e9\"",
            &paths(),
        )
        .unwrap();
        assert_eq!(c.cache_max, 3 << 29);
        assert_eq!(c.cache_min_free, 2_000_000_000);
        assert_eq!(c.cache_memory, 512 << 20);
        assert_eq!(c.k8s.min_size, 1_000_000_000);
    }
}
