//! Contexts as kubectl reaches them: the current one by default, every one when asked, the
//! context's own namespace for a user who may not list namespaces, and credential plugins
//! that cannot run named in one line.

use std::os::unix::fs::PermissionsExt;

use kubesim::{ADMIN_TOKEN, ADMIN_USER};
use snapfs_tests::{Mount, fuse_available};

use super::cluster::{Cluster, errno, names, ns_dir};

#[test]
fn a_user_who_may_not_list_namespaces_sees_the_context_namespace() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    // Namespace-scoped RBAC, as shared clusters hand out: at home in `shop`, nothing else.
    cluster.sim().add_user("dev-token", "dev");
    for verb in ["list", "watch"] {
        cluster.sim().deny("dev", verb, "namespaces", "");
    }
    cluster.sim().deny("dev", "*", "*", "default");
    let kubeconfig = cluster
        .sim()
        .kubeconfig()
        .replace("namespace: default", "namespace: shop")
        .replace(&format!("token: {ADMIN_TOKEN}"), "token: dev-token");
    let m = Mount::start_with_home(
        "[list]\nttl = \"100ms\"\n",
        &[(".kube/config", kubeconfig.as_str())],
    );
    let ctx = m.mountpoint.join("k8s/kubesim");
    assert_eq!(names(&ctx), ["shop"]);
    assert!(names(&ns_dir(&m).join("snapshots")).contains(&"db-1".to_string()));
    assert_eq!(errno(std::fs::read_dir(ctx.join("default"))), libc::ENOENT);
    // Listed again past list.ttl: still the one namespace, and still one line saying why.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(names(&ctx), ["shop"]);
    let log = m.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("may not list namespaces"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("only the context's namespace shop is shown"),
        "{}",
        lines[0]
    );
}

/// kubesim's kubeconfig with two more contexts whose users run `missing` and `failing` as
/// credential plugins.
fn kubeconfig_with_plugins(cluster: &Cluster, missing: &str, failing: &str) -> String {
    let user = |name: &str, command: &str| {
        format!(
            "- name: {name}\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {command}\n      interactiveMode: Never\n"
        )
    };
    let context = |name: &str| {
        format!("- name: {name}\n  context:\n    cluster: kubesim\n    user: {name}\n")
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kubesim\n  cluster:\n    server: {url}\n\
         contexts:\n- name: kubesim\n  context:\n    cluster: kubesim\n    namespace: shop\n    user: {ADMIN_USER}\n{missing_ctx}{failing_ctx}\
         current-context: kubesim\nusers:\n- name: {ADMIN_USER}\n  user:\n    token: {ADMIN_TOKEN}\n{missing_user}{failing_user}",
        url = cluster.sim().url(),
        missing_ctx = context("missing"),
        failing_ctx = context("failing"),
        missing_user = user("missing", missing),
        failing_user = user("failing", failing),
    )
}

#[test]
fn credential_plugins_that_cannot_run_are_named_with_what_to_do() {
    if !fuse_available() {
        return;
    }
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let failing = dir.path().join("failing-plugin");
    std::fs::write(
        &failing,
        "#!/bin/sh\necho 'error: you are not logged in' >&2\nexit 3\n",
    )
    .expect("plugin written");
    std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let kubeconfig = kubeconfig_with_plugins(
        &cluster,
        "snapfs-test-plugin-not-on-path",
        &failing.display().to_string(),
    );
    let home = [(".kube/config", kubeconfig.as_str())];

    // By default only the current context is contacted, so the broken ones cost nothing.
    let m = Mount::start_with_home("", &home);
    assert_eq!(names(&m.mountpoint.join("k8s")), ["kubesim"]);
    assert!(!m.log().contains("credential plugin"), "{}", m.log());
    drop(m);

    let m = Mount::start_with_home("[k8s]\nall_contexts = true\n", &home);
    let k8s = m.mountpoint.join("k8s");
    assert_eq!(names(&k8s), ["failing", "kubesim", "missing"]);
    assert!(names(&k8s.join("kubesim")).contains(&"shop".to_string()));
    for ctx in ["failing", "missing"] {
        assert_eq!(
            errno(std::fs::read_dir(k8s.join(ctx))),
            libc::EACCES,
            "{ctx}"
        );
    }
    let log = m.log();
    assert!(
        log.contains("context missing: the credential plugin snapfs-test-plugin-not-on-path is not found on the daemon's PATH"),
        "{log}"
    );
    assert!(
        log.contains("context failing: the credential plugin failing-plugin failed (exit status: 3): error: you are not logged in; run `kubectl get ns --context failing` once in a terminal to log in"),
        "{log}"
    );
    let readme = std::fs::read_to_string(m.mountpoint.join("README")).expect("README");
    assert!(
        readme.contains(
            "unavailable Kubernetes context failing: the credential plugin failing-plugin failed"
        ),
        "{readme}"
    );
}
