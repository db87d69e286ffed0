//! The checks of the Pod Security Standards (latest version), one function per check, each
//! giving the reason and detail the PodSecurity admission plugin reports.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::Level;

mod baseline;
mod restricted;

/// One failed check: a short reason, and the detail shown in parentheses after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Violation {
    pub reason: String,
    pub detail: String,
}

fn violation(reason: &str, detail: String) -> Option<Violation> {
    Some(Violation {
        reason: reason.to_string(),
        detail,
    })
}

type Check = fn(&Pod) -> Option<Violation>;

/// Baseline checks in the order the plugin reports them (sorted by check ID), each with whether
/// a stricter restricted check takes its place at the restricted level.
const BASELINE: [(Check, bool); 11] = [
    (baseline::app_armor_profile, false),
    (baseline::capabilities_baseline, true),
    (baseline::host_namespaces, false),
    (baseline::host_path_volumes, true),
    (baseline::host_ports, false),
    (baseline::privileged, false),
    (baseline::proc_mount, false),
    (baseline::se_linux_options, false),
    (baseline::seccomp_profile_baseline, true),
    (baseline::sysctls, false),
    (baseline::windows_host_process, false),
];

/// Restricted checks, sorted by check ID; reported after the baseline ones.
const RESTRICTED: [Check; 6] = [
    restricted::allow_privilege_escalation,
    restricted::capabilities_restricted,
    restricted::restricted_volumes,
    restricted::run_as_non_root,
    restricted::run_as_user,
    restricted::seccomp_profile_restricted,
];

/// What `pod` violates at `level`, in report order.
pub(super) fn evaluate(level: Level, pod: &Value) -> Vec<Violation> {
    let pod = Pod::new(pod);
    let checks: Vec<Check> = match level {
        Level::Privileged => Vec::new(),
        Level::Baseline => BASELINE.iter().map(|(check, _)| *check).collect(),
        Level::Restricted => BASELINE
            .iter()
            .filter(|(_, replaced)| !replaced)
            .map(|(check, _)| *check)
            .chain(RESTRICTED)
            .collect(),
    };
    checks.iter().filter_map(|check| check(&pod)).collect()
}

static NULL: Value = Value::Null;

/// The parts of a pod the checks read.
struct Pod<'a> {
    annotations: Option<&'a Map<String, Value>>,
    spec: &'a Value,
    /// Init containers, containers, then ephemeral containers: the order names are reported in.
    containers: Vec<&'a Value>,
}

impl<'a> Pod<'a> {
    fn new(pod: &'a Value) -> Pod<'a> {
        let spec = pod.get("spec").unwrap_or(&NULL);
        let containers = ["initContainers", "containers", "ephemeralContainers"]
            .iter()
            .filter_map(|key| spec.get(key).and_then(Value::as_array))
            .flatten()
            .collect();
        Pod {
            annotations: pod
                .pointer("/metadata/annotations")
                .and_then(Value::as_object),
            spec,
            containers,
        }
    }

    /// A field of the pod's securityContext.
    fn security(&self, key: &str) -> Option<&'a Value> {
        at(self.spec, &["securityContext", key])
    }

    fn volumes(&self) -> impl Iterator<Item = &'a Value> + use<'a> {
        self.spec
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    }

    /// Windows pods are exempt from the checks of fields Windows has no use for.
    fn windows(&self) -> bool {
        text(at(self.spec, &["os", "name"])) == "windows"
    }
}

/// The value at `path`; JSON null counts as absent, as in the typed API.
fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    (!cur.is_null()).then_some(cur)
}

fn text(v: Option<&Value>) -> &str {
    v.and_then(Value::as_str).unwrap_or("")
}

fn is_true(v: Option<&Value>) -> bool {
    v.and_then(Value::as_bool) == Some(true)
}

fn name(v: &Value) -> String {
    text(v.get("name")).to_string()
}

/// A field of a container's securityContext.
fn security<'a>(container: &'a Value, key: &str) -> Option<&'a Value> {
    at(container, &["securityContext", key])
}

/// The capabilities a container adds.
fn added(container: &Value) -> impl Iterator<Item = &str> {
    at(container, &["securityContext", "capabilities", "add"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn plural<'s>(n: usize, one: &'s str, many: &'s str) -> &'s str {
    if n == 1 { one } else { many }
}

/// `"a", "b"`.
fn quoted<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    items
        .into_iter()
        .map(|s| format!("\"{}\"", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `container "a"` or `containers "a", "b"`.
fn containers_named(names: &[String]) -> String {
    format!(
        "{} {}",
        plural(names.len(), "container", "containers"),
        quoted(names)
    )
}

/// Who set a field: `pod`, then the containers, joined by "and".
fn setters(pod: bool, containers: &[String]) -> String {
    let mut who = Vec::new();
    if pod {
        who.push("pod".to_string());
    }
    if !containers.is_empty() {
        who.push(containers_named(containers));
    }
    who.join(" and ")
}

/// Checks seccomp profiles: a type other than RuntimeDefault or Localhost is refused; when
/// `required`, every container must also have one, its own or the pod's.
fn seccomp_profile(pod: &Pod, required: bool) -> Option<Violation> {
    let allowed = |p: &Value| matches!(text(p.get("type")), "RuntimeDefault" | "Localhost");
    let mut values = BTreeSet::new();
    let pod_profile = pod.security("seccompProfile");
    let bad_pod = pod_profile.is_some_and(|p| !allowed(p));
    if let Some(p) = pod_profile.filter(|_| bad_pod) {
        values.insert(text(p.get("type")).to_string());
    }
    let pod_set = pod_profile.is_some() && !bad_pod;
    let (mut bad, mut unset) = (Vec::new(), Vec::new());
    for c in &pod.containers {
        match security(c, "seccompProfile") {
            Some(p) if !allowed(p) => {
                bad.push(name(c));
                values.insert(text(p.get("type")).to_string());
            }
            Some(_) => {}
            None if !pod_set => unset.push(name(c)),
            None => {}
        }
    }
    if bad_pod || !bad.is_empty() {
        return violation(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters(bad_pod, &bad),
                quoted(&values)
            ),
        );
    }
    if required && !unset.is_empty() {
        return violation(
            "seccompProfile",
            format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers_named(&unset)
            ),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The report of `pod` at `level`, as the message lists it.
    fn report(level: Level, pod: Value) -> String {
        evaluate(level, &pod)
            .iter()
            .map(|v| format!("{} ({})", v.reason, v.detail))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec})
    }

    fn hardened() -> Value {
        pod(json!({
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "fsGroup": 2000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "busybox", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                        {"name": "scratch"}],
        }))
    }

    #[test]
    fn privileged_level_checks_nothing() {
        let anything = pod(json!({"hostNetwork": true, "containers": [
            {"name": "c", "securityContext": {"privileged": true}}]}));
        assert!(evaluate(Level::Privileged, &anything).is_empty());
    }

    #[test]
    fn a_root_pod_fails_restricted_in_check_order() {
        let root = pod(json!({"containers": [{"name": "c", "image": "busybox"}]}));
        assert_eq!(
            report(Level::Restricted, root.clone()),
            "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), \
             unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), \
             runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), \
             seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
        assert!(evaluate(Level::Baseline, &root).is_empty());
    }

    #[test]
    fn a_hardened_pod_passes_restricted() {
        assert_eq!(report(Level::Restricted, hardened()), "");
    }

    #[test]
    fn baseline_violations_come_first_and_sorted() {
        let p = pod(json!({
            "hostPID": true, "hostNetwork": true,
            "initContainers": [{"name": "init", "securityContext": {"privileged": true}}],
            "containers": [{"name": "a", "securityContext": {"privileged": true,
                             "capabilities": {"add": ["SYS_ADMIN", "NET_RAW", "CHOWN"]}},
                            "ports": [{"containerPort": 80, "hostPort": 80},
                                      {"containerPort": 443, "hostPort": 443}]}],
            "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        }));
        assert_eq!(
            report(Level::Baseline, p.clone()),
            "non-default capabilities (container \"a\" must not include \"NET_RAW\", \"SYS_ADMIN\" in securityContext.capabilities.add), \
             host namespaces (hostNetwork, hostPID), \
             hostPath volumes (volume \"host\"), \
             hostPort (container \"a\" uses hostPorts 443, 80), \
             privileged (containers \"init\", \"a\" must not set securityContext.privileged=true)"
        );
        // The restricted checks on capabilities and volumes replace the baseline ones.
        let restricted = report(Level::Restricted, p);
        assert!(
            !restricted.contains("non-default capabilities"),
            "{restricted}"
        );
        assert!(!restricted.contains("hostPath volumes"), "{restricted}");
        assert!(
            restricted.contains(
                "restricted volume types (volume \"host\" uses restricted volume type \"hostPath\")"
            ),
            "{restricted}"
        );
        assert!(
            restricted.contains("unrestricted capabilities (containers \"init\", \"a\" must set securityContext.capabilities.drop=[\"ALL\"]; \
                                 container \"a\" must not include \"CHOWN\", \"NET_RAW\", \"SYS_ADMIN\" in securityContext.capabilities.add)"),
            "{restricted}"
        );
    }

    #[test]
    fn baseline_allows_default_capabilities_for_root() {
        let capabilities = json!({"drop": ["ALL"], "add": ["CHOWN", "FOWNER", "DAC_OVERRIDE"]});
        let p = pod(
            json!({"containers": [{"name": "c", "securityContext": {"capabilities": capabilities}}]}),
        );
        assert_eq!(report(Level::Baseline, p), "");
    }

    #[test]
    fn explicit_bad_values_are_named_with_their_setters() {
        let p = pod(json!({
            "securityContext": {"runAsNonRoot": false, "runAsUser": 0,
                                "seccompProfile": {"type": "Unconfined"}},
            "containers": [{"name": "c", "securityContext": {
                "runAsNonRoot": false, "runAsUser": 0, "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                "seccompProfile": {"type": "Localhost"}}}],
        }));
        assert_eq!(
            report(Level::Restricted, p.clone()),
            "runAsNonRoot != true (pod and container \"c\" must not set securityContext.runAsNonRoot=false), \
             runAsUser=0 (pod and container \"c\" must not set runAsUser=0), \
             seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")"
        );
        assert_eq!(
            report(Level::Baseline, p),
            "seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")"
        );
    }

    #[test]
    fn other_baseline_checks() {
        let p = json!({
            "metadata": {"annotations": {
                "container.apparmor.security.beta.kubernetes.io/c": "unconfined",
                "container.apparmor.security.beta.kubernetes.io/d": "runtime/default"}},
            "spec": {
                "securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"},
                                                {"name": "net.ipv4.tcp_syncookies", "value": "1"}],
                                    "seLinuxOptions": {"type": "spc_t", "user": "root"},
                                    "windowsOptions": {"hostProcess": true}},
                "containers": [{"name": "c", "securityContext": {
                    "procMount": "Unmasked", "appArmorProfile": {"type": "Unconfined"},
                    "seLinuxOptions": {"type": "container_t"}}}],
            },
        });
        assert_eq!(
            report(Level::Baseline, p),
            "forbidden AppArmor profiles (container \"c\" and annotation must not set AppArmor profile type to \
             \"Unconfined\", \"container.apparmor.security.beta.kubernetes.io/c=\"unconfined\"\"), \
             procMount (container \"c\" must not set securityContext.procMount to \"Unmasked\"), \
             seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: type \"spc_t\"; user may not be set), \
             forbidden sysctls (kernel.msgmax), \
             hostProcess (pod must not set securityContext.windowsOptions.hostProcess=true)"
        );
    }

    #[test]
    fn restricted_volume_types() {
        let p = pod(json!({"volumes": [
            {"name": "a", "nfs": {"server": "x", "path": "/"}},
            {"name": "b", "configMap": {"name": "cm"}},
            {"name": "c", "somethingNew": {}},
        ]}));
        assert_eq!(
            report(Level::Restricted, p),
            "restricted volume types (volumes \"a\", \"c\" use restricted volume types \"nfs\", \"unknown\")"
        );
    }

    #[test]
    fn windows_pods_skip_linux_only_checks() {
        let spec = json!({"os": {"name": "windows"}, "securityContext": {"runAsNonRoot": true},
                          "containers": [{"name": "c"}]});
        let p = pod(spec);
        assert_eq!(report(Level::Restricted, p), "");
    }
}
