//! `[[kubernetes]]` sections: which contexts of the user's kubeconfig appear under `k8s/`, and
//! the escaping that turns any context name into one directory name and back.

use anyhow::bail;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Section {
    context: String,
    name: Option<String>,
    #[serde(default)]
    namespaces: Vec<String>,
    ttl: Option<String>,
    retention: Option<super::RetentionSection>,
    max_snapshots: Option<u64>,
    image: Option<String>,
    storage_class: Option<String>,
    snapshot_class: Option<String>,
    pod_uid: Option<toml::Value>,
}

/// The user the upload pods run as (`pod_uid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodUid {
    /// Root where the namespace allows it (owners kept), else uid 1000.
    #[default]
    Auto,
    /// This uid (and gid and fsGroup); 0 is root.
    Fixed(u32),
    /// No uid at all, for the namespace to assign one (OpenShift's SCCs do).
    Namespace,
}

/// `pod_uid` as written: an integer, or "namespace".
pub(super) fn pod_uid(v: toml::Value, key: &str) -> anyhow::Result<PodUid> {
    match v {
        toml::Value::Integer(n) => match u32::try_from(n) {
            Ok(uid) if n <= i64::from(i32::MAX) => Ok(PodUid::Fixed(uid)),
            _ => bail!("{key}: {n} is not a uid (0 to {})", i32::MAX),
        },
        toml::Value::String(s) if s == "namespace" => Ok(PodUid::Namespace),
        other => bail!("{key}: {other} is neither a uid nor \"namespace\""),
    }
}

/// What a `[[kubernetes]]` table sets for its context instead of `[k8s]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodOverrides {
    pub image: Option<String>,
    pub storage_class: Option<String>,
    pub snapshot_class: Option<String>,
    pub pod_uid: Option<PodUid>,
}

/// One context of the kubeconfig, shown as `k8s/<name>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeContext {
    pub context: String,
    pub name: String,
    /// The namespaces shown; empty for every namespace of the cluster.
    pub namespaces: Vec<String>,
    /// What DESIGN §8 asks of its VolumeSnapshots, in every namespace.
    pub ttl: Option<std::time::Duration>,
    pub retention: super::Retention,
    pub max_snapshots: Option<u64>,
    pub pods: PodOverrides,
}

impl KubeContext {
    /// A context shown under its own (escaped) name, with every namespace.
    pub fn all_of(context: &str) -> KubeContext {
        KubeContext {
            context: context.to_string(),
            name: escape_name(context),
            namespaces: Vec::new(),
            ttl: None,
            retention: super::Retention::default(),
            max_snapshots: None,
            pods: PodOverrides::default(),
        }
    }
}

pub(super) fn context(s: Section) -> anyhow::Result<KubeContext> {
    if s.context.is_empty() {
        bail!("kubernetes: `context` is empty");
    }
    let name = s.name.unwrap_or_else(|| escape_name(&s.context));
    if let Some(ns) = s.namespaces.iter().find(|n| !is_dns_label(n)) {
        bail!("kubernetes {name:?}: {ns:?} is not a namespace name (RFC 1123 label)");
    }
    let (ttl, retention) = super::lifecycle(
        s.ttl.as_deref(),
        s.retention,
        &format!("kubernetes {name:?}"),
    )?;
    let pod_uid = s
        .pod_uid
        .map(|v| pod_uid(v, &format!("kubernetes {name:?}: pod_uid")))
        .transpose()?;
    Ok(KubeContext {
        context: s.context,
        name,
        namespaces: s.namespaces,
        ttl,
        retention,
        max_snapshots: s.max_snapshots,
        pods: PodOverrides {
            image: s.image,
            storage_class: s.storage_class,
            snapshot_class: s.snapshot_class,
            pod_uid,
        },
    })
}

/// A context name as one directory name: '%' and '/' (and control characters) become `%XX`,
/// so `arn:aws:eks:eu-west-1:1:cluster/prod` is `arn:aws:eks:eu-west-1:1:cluster%2Fprod`.
pub fn escape_name(context: &str) -> String {
    let mut out = String::with_capacity(context.len());
    for c in context.chars() {
        if c == '%' || c == '/' || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    // "." and ".." cannot be directory names; their first dot is escaped too.
    if out == "." || out == ".." {
        out.replace_range(0..1, "%2E");
    }
    out
}

/// The context name an escaped directory name stands for; None if it is not a valid escape.
/// The daemon maps directories to contexts through its configuration, so only the round-trip
/// tests need this; it documents that the escape loses nothing.
#[cfg(test)]
fn unescape_name(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// An RFC 1123 subdomain, as names of most objects are (a VolumeSnapshot's): dot-separated
/// labels, 253 bytes at most.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// An RFC 1123 label, as namespace names are.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_names_escape_reversibly() {
        let cases = [
            ("kubesim", "kubesim"),
            (
                "arn:aws:eks:eu-west-1:123:cluster/prod",
                "arn:aws:eks:eu-west-1:123:cluster%2Fprod",
            ),
            ("50%/x", "50%25%2Fx"),
            ("a\nb", "a%0Ab"),
            ("..", "%2E."),
            (".", "%2E"),
            ("gke_p_europe-west1_c", "gke_p_europe-west1_c"),
        ];
        for (context, dir) in cases {
            assert_eq!(escape_name(context), dir);
            assert_eq!(unescape_name(dir).as_deref(), Some(context));
            assert!(!dir.contains('/'));
        }
        assert_eq!(unescape_name("bad%2"), None);
        assert_eq!(unescape_name("bad%zz"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_context_round_trips(context in "\\PC*") {
            let dir = escape_name(&context);
            proptest::prop_assert!(!dir.contains('/'));
            proptest::prop_assert_eq!(unescape_name(&dir), Some(context));
        }
    }

    #[test]
    fn pod_uids_are_integers_or_namespace() {
        let uid = |v: toml::Value| pod_uid(v, "pod_uid");
        assert_eq!(
            uid(toml::Value::Integer(1000)).unwrap(),
            PodUid::Fixed(1000)
        );
        assert_eq!(uid(toml::Value::Integer(0)).unwrap(), PodUid::Fixed(0));
        assert_eq!(uid("namespace".into()).unwrap(), PodUid::Namespace);
        for bad in [
            toml::Value::Integer(-1),
            toml::Value::Integer(1 << 40),
            "1000".into(),
            toml::Value::Boolean(true),
        ] {
            let e = uid(bad).unwrap_err().to_string();
            assert!(e.starts_with("pod_uid: "), "{e}");
        }
    }

    #[test]
    fn sections_check_namespaces_and_name_the_directory() {
        let s = Section {
            context: "a/b".into(),
            name: None,
            namespaces: vec!["shop".into()],
            ttl: Some("14d".into()),
            retention: None,
            max_snapshots: Some(3),
            image: Some("registry.local/busybox@sha256:00".into()),
            storage_class: None,
            snapshot_class: Some("snap".into()),
            pod_uid: Some(toml::Value::String("namespace".into())),
        };
        let c = context(s).unwrap();
        assert_eq!((c.name.as_str(), c.namespaces.len()), ("a%2Fb", 1));
        assert_eq!(c.ttl, Some(std::time::Duration::from_secs(14 * 86400)));
        assert_eq!(c.max_snapshots, Some(3));
        assert_eq!(c.pods.pod_uid, Some(PodUid::Namespace));
        assert_eq!(c.pods.snapshot_class.as_deref(), Some("snap"));
        let bad = Section {
            context: "x".into(),
            name: Some("x".into()),
            namespaces: vec!["Shop".into()],
            ttl: None,
            retention: None,
            max_snapshots: None,
            image: None,
            storage_class: None,
            snapshot_class: None,
            pod_uid: None,
        };
        assert!(context(bad).is_err());
    }
}
