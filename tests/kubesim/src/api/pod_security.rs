//! The PodSecurity admission plugin, enforce mode: a new pod is checked against the Pod Security
//! Standards level its namespace's `pod-security.kubernetes.io/enforce` label names, and refused
//! with the plugin's wording when it violates it.

mod checks;

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::meta;
use crate::resources::{NAMESPACES, PODS};
use crate::server::State;

const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";
const ENFORCE_VERSION_LABEL: &str = "pod-security.kubernetes.io/enforce-version";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// The enforced level and policy version of a namespace, from its labels.
struct Policy {
    level: Level,
    /// As labelled, for the message; the checks are always those of `latest`.
    version: String,
}

impl Policy {
    fn from_labels(labels: Option<&Map<String, Value>>) -> Policy {
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        // A label that does not parse falls back to restricted and latest, as the plugin does.
        let level = match label(ENFORCE_LABEL) {
            None | Some("privileged") => Level::Privileged,
            Some("baseline") => Level::Baseline,
            Some(_) => Level::Restricted,
        };
        let version = label(ENFORCE_VERSION_LABEL)
            .filter(|v| is_version(v))
            .unwrap_or("latest")
            .to_string();
        Policy { level, version }
    }
}

/// `latest` or `v1.N`, as policy versions are written.
fn is_version(v: &str) -> bool {
    v == "latest"
        || v.strip_prefix("v1.").is_some_and(|minor| {
            !minor.is_empty()
                && minor.bytes().all(|b| b.is_ascii_digit())
                && (minor == "0" || !minor.starts_with('0'))
        })
}

/// Why a pod may not be created in a namespace with these labels, if it may not: the text
/// after `pods "NAME" is forbidden: `.
fn refusal(labels: Option<&Map<String, Value>>, pod: &Value) -> Option<String> {
    let policy = Policy::from_labels(labels);
    let violations = checks::evaluate(policy.level, pod);
    if violations.is_empty() {
        return None;
    }
    let summary: Vec<String> = violations
        .iter()
        .map(|v| format!("{} ({})", v.reason, v.detail))
        .collect();
    Some(format!(
        "violates PodSecurity \"{}:{}\": {}",
        policy.level.as_str(),
        policy.version,
        summary.join(", ")
    ))
}

/// Refuses a new pod its namespace's enforced level forbids (403 Forbidden).
pub(super) fn admit_pod(state: &State, pod: &Value) -> Result<(), ApiError> {
    let namespace = state.store.get(&NAMESPACES, "", meta::namespace(pod));
    match refusal(namespace.as_ref().and_then(meta::labels), pod) {
        None => Ok(()),
        Some(why) => Err(ApiError::forbidden_object(&PODS, meta::name(pod), &why)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    fn root_pod() -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}})
    }

    #[test]
    fn unlabelled_and_privileged_namespaces_admit_anything() {
        let pod = json!({"spec": {"hostPID": true, "containers": [
            {"name": "c", "securityContext": {"privileged": true}}]}});
        assert_eq!(refusal(None, &pod), None);
        let privileged = labels(json!({ENFORCE_LABEL: "privileged"}));
        assert_eq!(refusal(Some(&privileged), &pod), None);
    }

    #[test]
    fn the_message_names_level_and_version() {
        let restricted = labels(json!({ENFORCE_LABEL: "restricted"}));
        let why = refusal(Some(&restricted), &root_pod()).unwrap_or_default();
        assert!(
            why.starts_with("violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"c\" must set"),
            "{why}"
        );
        let pinned = labels(json!({ENFORCE_LABEL: "baseline", ENFORCE_VERSION_LABEL: "v1.30"}));
        let privileged = json!({"spec": {"containers": [{"name": "c", "securityContext": {"privileged": true}}]}});
        assert_eq!(
            refusal(Some(&pinned), &privileged).as_deref(),
            Some(
                "violates PodSecurity \"baseline:v1.30\": privileged (container \"c\" must not set securityContext.privileged=true)"
            )
        );
    }

    #[test]
    fn unparseable_labels_fail_closed() {
        let bad = labels(json!({ENFORCE_LABEL: "Baseline", ENFORCE_VERSION_LABEL: "1.30"}));
        let why = refusal(Some(&bad), &root_pod()).unwrap_or_default();
        assert!(
            why.starts_with("violates PodSecurity \"restricted:latest\""),
            "{why}"
        );
    }

    #[test]
    fn versions() {
        for good in ["latest", "v1.0", "v1.33", "v1.100"] {
            assert!(is_version(good), "{good}");
        }
        for bad in ["", "v1.", "v1.033", "v2.1", "1.33", "v1.3a", "Latest"] {
            assert!(!is_version(bad), "{bad}");
        }
    }
}
