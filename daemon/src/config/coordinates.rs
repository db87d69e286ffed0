//! A HiveMQ cluster found by Kubernetes coordinates (DESIGN §7): `kubernetes = { context,
//! namespace, statefulset | selector, port }`, and a password kept in a Kubernetes Secret
//! (`password_secret = { name, key }`).

use anyhow::bail;
use serde::Deserialize;

use super::kubernetes::{is_dns_label, is_dns_subdomain};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CoordinatesSection {
    context: Option<String>,
    namespace: Option<String>,
    statefulset: Option<String>,
    selector: Option<String>,
    port: Option<toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SecretSection {
    name: String,
    key: Option<String>,
}

/// Where the broker's pods are, as kubectl would be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinates {
    /// None: the kubeconfig's current context.
    pub context: Option<String>,
    /// None: the context's namespace.
    pub namespace: Option<String>,
    pub pods: Pods,
    pub port: PortRef,
}

impl std::fmt::Display for Coordinates {
    /// `StatefulSet hivemq in namespace mq of context prod, port rest-8888`, with "the
    /// context's namespace" and "the current context" where they are left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.pods {
            Pods::StatefulSet(s) => write!(f, "StatefulSet {s}")?,
            Pods::Selector(l) => write!(f, "pods {l}")?,
        }
        match &self.namespace {
            Some(ns) => write!(f, " in namespace {ns}")?,
            None => f.write_str(" in the context's namespace")?,
        }
        match &self.context {
            Some(c) => write!(f, " of context {c}")?,
            None => f.write_str(" of the current context")?,
        }
        match &self.port {
            PortRef::Number(n) => write!(f, ", port {n}"),
            PortRef::Name(n) => write!(f, ", port {n}"),
            PortRef::Default => write!(f, ", port {REST_PORT_NAME} or {REST_PORT}"),
        }
    }
}

/// Which pods serve the REST API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pods {
    StatefulSet(String),
    /// A label selector (`app=hivemq,release=prod`), as `kubectl get pods -l` takes it.
    Selector(String),
}

/// The container port of the REST API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    Number(u16),
    Name(String),
    /// The port named [`REST_PORT_NAME`] where a container declares it, else 8888.
    Default,
}

/// The REST API's container port name in the HiveMQ Platform Helm chart.
pub const REST_PORT_NAME: &str = "rest-8888";
/// The REST API listener's default port.
pub const REST_PORT: u16 = 8888;

/// A key of a Secret in the cluster's namespace, read with the user's own permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub name: String,
    pub key: String,
}

/// The key a `password_secret` without one names.
const DEFAULT_SECRET_KEY: &str = "password";

pub(super) fn coordinates(name: &str, s: CoordinatesSection) -> anyhow::Result<Coordinates> {
    if let Some(ns) = &s.namespace
        && !is_dns_label(ns)
    {
        bail!("hivemq {name:?}: kubernetes.namespace {ns:?} is not a namespace name");
    }
    if s.context.as_deref() == Some("") {
        bail!("hivemq {name:?}: kubernetes.context is empty (leave it out for the current one)");
    }
    let pods = match (s.statefulset, s.selector) {
        (Some(_), Some(_)) => {
            bail!("hivemq {name:?}: give kubernetes.statefulset or kubernetes.selector, not both")
        }
        (None, None) => bail!(
            "hivemq {name:?}: kubernetes needs `statefulset` (the broker's StatefulSet) or `selector` (labels of its pods)"
        ),
        (Some(sts), None) if is_dns_subdomain(&sts) => Pods::StatefulSet(sts),
        (Some(sts), None) => {
            bail!("hivemq {name:?}: kubernetes.statefulset {sts:?} is not a StatefulSet name")
        }
        (None, Some(sel)) => Pods::Selector(selector(name, &sel)?),
    };
    let port = match s.port {
        None => PortRef::Default,
        Some(toml::Value::Integer(n)) => match u16::try_from(n) {
            Ok(n) if n > 0 => PortRef::Number(n),
            _ => bail!("hivemq {name:?}: kubernetes.port {n} is not a port number (1-65535)"),
        },
        Some(toml::Value::String(p)) if is_port_name(&p) => PortRef::Name(p),
        Some(other) => bail!(
            "hivemq {name:?}: kubernetes.port {other} is neither a port number nor a container port name (such as \"{REST_PORT_NAME}\")"
        ),
    };
    Ok(Coordinates {
        context: s.context,
        namespace: s.namespace,
        pods,
        port,
    })
}

pub(super) fn secret(name: &str, s: SecretSection) -> anyhow::Result<SecretRef> {
    if !is_dns_subdomain(&s.name) {
        bail!(
            "hivemq {name:?}: password_secret.name {:?} is not a Secret name",
            s.name
        );
    }
    let key = s.key.unwrap_or_else(|| DEFAULT_SECRET_KEY.into());
    let key_ok = !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !key_ok {
        bail!("hivemq {name:?}: password_secret.key {key:?} is not a key a Secret can hold");
    }
    Ok(SecretRef { name: s.name, key })
}

/// An IANA service name, as container port names are: at most 15 lowercase letters, digits
/// and inner single hyphens, with at least one letter.
fn is_port_name(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 15
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && p.bytes().any(|b| b.is_ascii_lowercase())
        && !p.starts_with('-')
        && !p.ends_with('-')
        && !p.contains("--")
}

/// A selector of `key=value` (or `key==value`, `key!=value`) terms joined by commas; label
/// keys and values as Kubernetes allows them, so nothing else reaches the query string.
fn selector(name: &str, sel: &str) -> anyhow::Result<String> {
    let label_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let key_ok = |k: &str| {
        let (prefix, local) = k.rsplit_once('/').unwrap_or(("", k));
        (prefix.is_empty() || is_dns_subdomain(prefix))
            && !local.is_empty()
            && local.len() <= 63
            && local.bytes().all(label_char)
    };
    let value_ok = |v: &str| v.len() <= 63 && v.bytes().all(label_char);
    let terms: Vec<&str> = sel.split(',').map(str::trim).collect();
    let ok = terms.iter().all(|t| {
        let (k, v) = match t.split_once("!=").or_else(|| t.split_once("==")) {
            Some(kv) => kv,
            None => match t.split_once('=') {
                Some(kv) => kv,
                None => return false,
            },
        };
        key_ok(k.trim()) && value_ok(v.trim())
    });
    if !ok {
        bail!(
            "hivemq {name:?}: kubernetes.selector {sel:?} is not a label selector of key=value terms (such as \"app.kubernetes.io/name=hivemq\")"
        );
    }
    Ok(terms.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Coordinates> {
        coordinates("b", toml::from_str(text)?)
    }

    #[test]
    fn a_statefulset_with_defaults() {
        let c = parse("statefulset = \"hivemq\"").unwrap();
        assert_eq!(c.pods, Pods::StatefulSet("hivemq".into()));
        assert_eq!(
            (c.context, c.namespace, c.port),
            (None, None, PortRef::Default)
        );
        let c = parse("context = \"prod\"\nnamespace = \"mq\"\nstatefulset = \"hivemq\"\nport = \"rest-8888\"").unwrap();
        assert_eq!(c.port, PortRef::Name("rest-8888".into()));
        assert_eq!(c.context.as_deref(), Some("prod"));
        assert_eq!(
            parse("statefulset = \"h\"\nport = 9000").unwrap().port,
            PortRef::Number(9000)
        );
    }

    #[test]
    fn selectors_are_label_terms() {
        let c = parse("selector = \"app.kubernetes.io/name=hivemq, tier!=x\"").unwrap();
        assert_eq!(
            c.pods,
            Pods::Selector("app.kubernetes.io/name=hivemq,tier!=x".into())
        );
        for bad in ["app", "a=b&c=d", "a=b c", "=x", "a/=b", "a=b,,c=d"] {
            let e = format!("{:#}", parse(&format!("selector = {bad:?}")).unwrap_err());
            assert!(e.contains("not a label selector"), "{bad}: {e}");
        }
    }

    #[test]
    fn what_cannot_name_pods_is_refused() {
        let err = |t: &str| format!("{:#}", parse(t).unwrap_err());
        assert!(err("namespace = \"mq\"").contains("needs `statefulset`"));
        assert!(err("statefulset = \"a\"\nselector = \"a=b\"").contains("not both"));
        assert!(err("statefulset = \"A/b\"").contains("not a StatefulSet name"));
        assert!(err("statefulset = \"a\"\nnamespace = \"Mq\"").contains("not a namespace"));
        assert!(err("statefulset = \"a\"\ncontext = \"\"").contains("empty"));
        for port in [
            "0", "70000", "-1", "\"REST\"", "\"a--b\"", "\"1234\"", "1.5", "[1]",
        ] {
            let e = err(&format!("statefulset = \"a\"\nport = {port}"));
            assert!(e.contains("kubernetes.port"), "{port}: {e}");
        }
        assert!(err("statefulset = \"a\"\npods = 1").contains("unknown field"));
    }

    #[test]
    fn secrets_name_a_key() {
        let s = |t: &str| secret("b", toml::from_str(t).unwrap());
        let r = s("name = \"hivemq-auth\"").unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_str()),
            ("hivemq-auth", "password")
        );
        assert_eq!(
            s("name = \"a\"\nkey = \"admin.pw\"").unwrap().key,
            "admin.pw"
        );
        assert!(s("name = \"A b\"").is_err());
        assert!(s("name = \"a\"\nkey = \"a/b\"").is_err());
        assert!(s("name = \"a\"\nkey = \"\"").is_err());
    }
}
