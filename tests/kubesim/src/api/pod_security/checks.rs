//! The checks of the Pod Security Standards (latest version), one function per check, each
//! giving the reason and detail the PodSecurity admission plugin reports.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::Level;

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
    (app_armor_profile, false),
    (capabilities_baseline, true),
    (host_namespaces, false),
    (host_path_volumes, true),
    (host_ports, false),
    (privileged, false),
    (proc_mount, false),
    (se_linux_options, false),
    (seccomp_profile_baseline, true),
    (sysctls, false),
    (windows_host_process, false),
];

/// Restricted checks, sorted by check ID; reported after the baseline ones.
const RESTRICTED: [Check; 6] = [
    allow_privilege_escalation,
    capabilities_restricted,
    restricted_volumes,
    run_as_non_root,
    run_as_user,
    seccomp_profile_restricted,
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

const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

fn app_armor_profile(pod: &Pod) -> Option<Violation> {
    let allowed = |p: &Value| matches!(text(p.get("type")), "RuntimeDefault" | "Localhost");
    let mut values = BTreeSet::new();
    let bad_profile = pod.security("appArmorProfile").filter(|p| !allowed(p));
    if let Some(p) = bad_profile {
        values.insert(text(p.get("type")).to_string());
    }
    let bad_pod = bad_profile.is_some();
    let mut bad = Vec::new();
    for c in &pod.containers {
        if let Some(p) = security(c, "appArmorProfile")
            && !allowed(p)
        {
            bad.push(name(c));
            values.insert(text(p.get("type")).to_string());
        }
    }
    let mut annotations: Vec<String> = pod
        .annotations
        .into_iter()
        .flatten()
        .filter(|(key, _)| key.starts_with(APPARMOR_ANNOTATION_PREFIX))
        .map(|(key, value)| (key, value.as_str().unwrap_or("")))
        .filter(|(_, value)| {
            !(value.is_empty() || *value == "runtime/default" || value.starts_with("localhost/"))
        })
        .map(|(key, value)| format!("{key}={value:?}"))
        .collect();
    annotations.sort();
    let mut who = setters(bad_pod, &bad);
    let mut values: Vec<String> = values.into_iter().collect();
    if !annotations.is_empty() {
        let noun = plural(annotations.len(), "annotation", "annotations");
        who = if who.is_empty() {
            noun.to_string()
        } else {
            format!("{who} and {noun}")
        };
        values.extend(annotations);
    }
    if who.is_empty() {
        return None;
    }
    violation(
        plural(
            values.len(),
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
        ),
        format!(
            "{who} must not set AppArmor profile type to {}",
            quoted(&values)
        ),
    )
}

/// The capabilities a container runtime grants by default.
const DEFAULT_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn capabilities_baseline(pod: &Pod) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut capabilities = BTreeSet::new();
    for c in &pod.containers {
        let extra: Vec<&str> = added(c)
            .filter(|cap| !DEFAULT_CAPABILITIES.contains(cap))
            .collect();
        if !extra.is_empty() {
            bad.push(name(c));
            capabilities.extend(extra);
        }
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "non-default capabilities",
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_named(&bad),
            quoted(&capabilities)
        ),
    )
}

fn host_namespaces(pod: &Pod) -> Option<Violation> {
    let shared: BTreeSet<&str> = ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .filter(|key| is_true(at(pod.spec, &[*key])))
        .collect();
    if shared.is_empty() {
        return None;
    }
    violation(
        "host namespaces",
        shared.into_iter().collect::<Vec<_>>().join(", "),
    )
}

fn host_path_volumes(pod: &Pod) -> Option<Violation> {
    let bad: Vec<String> = pod
        .volumes()
        .filter(|v| at(v, &["hostPath"]).is_some())
        .map(name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "hostPath volumes",
        format!(
            "{} {}",
            plural(bad.len(), "volume", "volumes"),
            quoted(&bad)
        ),
    )
}

fn host_ports(pod: &Pod) -> Option<Violation> {
    let mut bad = Vec::new();
    // Sorted as text, as the plugin sorts them.
    let mut ports = BTreeSet::new();
    for c in &pod.containers {
        let used: Vec<String> = c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("hostPort").and_then(Value::as_i64))
            .filter(|port| *port != 0)
            .map(|port| port.to_string())
            .collect();
        if !used.is_empty() {
            bad.push(name(c));
            ports.extend(used);
        }
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "hostPort",
        format!(
            "{} {} {} {}",
            containers_named(&bad),
            plural(bad.len(), "uses", "use"),
            plural(ports.len(), "hostPort", "hostPorts"),
            ports.into_iter().collect::<Vec<_>>().join(", ")
        ),
    )
}

fn privileged(pod: &Pod) -> Option<Violation> {
    let bad: Vec<String> = pod
        .containers
        .iter()
        .filter(|c| is_true(security(c, "privileged")))
        .map(|c| name(c))
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "privileged",
        format!(
            "{} must not set securityContext.privileged=true",
            containers_named(&bad)
        ),
    )
}

fn proc_mount(pod: &Pod) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for c in &pod.containers {
        if let Some(kind) = security(c, "procMount").and_then(Value::as_str)
            && kind != "Default"
        {
            bad.push(name(c));
            types.insert(kind);
        }
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            containers_named(&bad),
            quoted(&types)
        ),
    )
}

const SELINUX_TYPES: [&str; 5] = [
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

fn se_linux_options(pod: &Pod) -> Option<Violation> {
    let mut types = BTreeSet::new();
    let (mut user, mut role) = (false, false);
    let mut allowed = |options: &Value| {
        let kind = text(options.get("type"));
        let bad_type = !SELINUX_TYPES.contains(&kind);
        if bad_type {
            types.insert(kind.to_string());
        }
        let set_user = !text(options.get("user")).is_empty();
        let set_role = !text(options.get("role")).is_empty();
        user |= set_user;
        role |= set_role;
        !(bad_type || set_user || set_role)
    };
    let bad_pod = pod.security("seLinuxOptions").is_some_and(|o| !allowed(o));
    let bad: Vec<String> = pod
        .containers
        .iter()
        .filter(|c| security(c, "seLinuxOptions").is_some_and(|o| !allowed(o)))
        .map(|c| name(c))
        .collect();
    if !bad_pod && bad.is_empty() {
        return None;
    }
    let mut problems = Vec::new();
    if !types.is_empty() {
        problems.push(format!(
            "{} {}",
            plural(types.len(), "type", "types"),
            quoted(&types)
        ));
    }
    if user {
        problems.push("user may not be set".to_string());
    }
    if role {
        problems.push("role may not be set".to_string());
    }
    violation(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters(bad_pod, &bad),
            problems.join("; ")
        ),
    )
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

fn seccomp_profile_baseline(pod: &Pod) -> Option<Violation> {
    seccomp_profile(pod, false)
}

/// Namespaced sysctls isolated from other pods.
const SAFE_SYSCTLS: [&str; 12] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

fn sysctls(pod: &Pod) -> Option<Violation> {
    let bad: Vec<&str> = pod
        .security("sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| text(s.get("name")))
        .filter(|name| !SAFE_SYSCTLS.contains(name))
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation("forbidden sysctls", bad.join(", "))
}

fn windows_host_process(pod: &Pod) -> Option<Violation> {
    let host_process = |ctx: Option<&Value>| is_true(ctx.and_then(|w| w.get("hostProcess")));
    let bad_pod = host_process(pod.security("windowsOptions"));
    let bad: Vec<String> = pod
        .containers
        .iter()
        .filter(|c| host_process(security(c, "windowsOptions")))
        .map(|c| name(c))
        .collect();
    if !bad_pod && bad.is_empty() {
        return None;
    }
    violation(
        "hostProcess",
        format!(
            "{} must not set securityContext.windowsOptions.hostProcess=true",
            setters(bad_pod, &bad)
        ),
    )
}

fn allow_privilege_escalation(pod: &Pod) -> Option<Violation> {
    if pod.windows() {
        return None;
    }
    let bad: Vec<String> = pod
        .containers
        .iter()
        .filter(|c| security(c, "allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false))
        .map(|c| name(c))
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers_named(&bad)
        ),
    )
}

fn capabilities_restricted(pod: &Pod) -> Option<Violation> {
    if pod.windows() {
        return None;
    }
    let (mut keep_some, mut adding) = (Vec::new(), Vec::new());
    let mut capabilities = BTreeSet::new();
    for c in &pod.containers {
        let drops_all = at(c, &["securityContext", "capabilities", "drop"])
            .and_then(Value::as_array)
            .is_some_and(|drop| drop.iter().any(|cap| cap.as_str() == Some("ALL")));
        if !drops_all {
            keep_some.push(name(c));
        }
        let extra: Vec<&str> = added(c).filter(|cap| *cap != "NET_BIND_SERVICE").collect();
        if !extra.is_empty() {
            adding.push(name(c));
            capabilities.extend(extra);
        }
    }
    let mut details = Vec::new();
    if !keep_some.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_named(&keep_some)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_named(&adding),
            quoted(&capabilities)
        ));
    }
    if details.is_empty() {
        return None;
    }
    violation("unrestricted capabilities", details.join("; "))
}

/// Inline volume sources the restricted level allows.
const ALLOWED_VOLUMES: [&str; 9] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Inline volume sources the restricted level refuses by name; others are reported as
/// "unknown".
const RESTRICTED_VOLUMES: [&str; 21] = [
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
];

fn restricted_volumes(pod: &Pod) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for v in pod.volumes() {
        let sources: Vec<&str> = v
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(key, value)| *key != "name" && !value.is_null())
            .map(|(key, _)| key.as_str())
            .collect();
        // A volume without a source is defaulted to an emptyDir.
        if sources.is_empty() || sources.iter().any(|s| ALLOWED_VOLUMES.contains(s)) {
            continue;
        }
        bad.push(name(v));
        types.insert(
            RESTRICTED_VOLUMES
                .into_iter()
                .find(|t| sources.contains(t))
                .unwrap_or("unknown"),
        );
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "restricted volume types",
        format!(
            "{} {} {} {} {}",
            plural(bad.len(), "volume", "volumes"),
            quoted(&bad),
            plural(bad.len(), "uses", "use"),
            plural(
                types.len(),
                "restricted volume type",
                "restricted volume types"
            ),
            quoted(&types)
        ),
    )
}

fn run_as_non_root(pod: &Pod) -> Option<Violation> {
    let pod_value = pod.security("runAsNonRoot").and_then(Value::as_bool);
    let (mut bad, mut unset) = (Vec::new(), Vec::new());
    for c in &pod.containers {
        match security(c, "runAsNonRoot").and_then(Value::as_bool) {
            Some(false) => bad.push(name(c)),
            Some(true) => {}
            None if pod_value != Some(true) => unset.push(name(c)),
            None => {}
        }
    }
    let bad_pod = pod_value == Some(false);
    if bad_pod || !bad.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters(bad_pod, &bad)
            ),
        );
    }
    if unset.is_empty() {
        return None;
    }
    violation(
        "runAsNonRoot != true",
        format!(
            "pod or {} must set securityContext.runAsNonRoot=true",
            containers_named(&unset)
        ),
    )
}

fn run_as_user(pod: &Pod) -> Option<Violation> {
    let root = |v: Option<&Value>| v.and_then(Value::as_i64) == Some(0);
    let bad_pod = root(pod.security("runAsUser"));
    let bad: Vec<String> = pod
        .containers
        .iter()
        .filter(|c| root(security(c, "runAsUser")))
        .map(|c| name(c))
        .collect();
    if !bad_pod && bad.is_empty() {
        return None;
    }
    violation(
        "runAsUser=0",
        format!("{} must not set runAsUser=0", setters(bad_pod, &bad)),
    )
}

fn seccomp_profile_restricted(pod: &Pod) -> Option<Violation> {
    if pod.windows() {
        return None;
    }
    seccomp_profile(pod, true)
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
