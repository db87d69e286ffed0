//! The baseline checks: known privilege escalations, refused whoever the pod runs as.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{
    Pod, Violation, added, at, containers_named, is_true, name, plural, quoted, seccomp_profile,
    security, setters, text, violation,
};

const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

pub(super) fn app_armor_profile(pod: &Pod) -> Option<Violation> {
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

pub(super) fn capabilities_baseline(pod: &Pod) -> Option<Violation> {
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

pub(super) fn host_namespaces(pod: &Pod) -> Option<Violation> {
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

pub(super) fn host_path_volumes(pod: &Pod) -> Option<Violation> {
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

pub(super) fn host_ports(pod: &Pod) -> Option<Violation> {
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

pub(super) fn privileged(pod: &Pod) -> Option<Violation> {
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

pub(super) fn proc_mount(pod: &Pod) -> Option<Violation> {
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

pub(super) fn se_linux_options(pod: &Pod) -> Option<Violation> {
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

pub(super) fn seccomp_profile_baseline(pod: &Pod) -> Option<Violation> {
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

pub(super) fn sysctls(pod: &Pod) -> Option<Violation> {
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

pub(super) fn windows_host_process(pod: &Pod) -> Option<Violation> {
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
