//! The kubeconfig as kubectl reads it: every file of `$KUBECONFIG` merged, else
//! `~/.kube/config`; and which of its contexts the mount shows.
//!
//! kube's `Kubeconfig::from_env` stops at the first missing file, where kubectl skips it, so
//! the files are read here one by one and merged with kube's `Kubeconfig::merge`, whose rules
//! are kubectl's: the first file to name a context, cluster or user wins it whole, and the
//! first to set `current-context` wins that.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use kube::config::{Kubeconfig, KubeconfigError};
use snapfs_control::paths::Paths;

use crate::config::{K8sSettings, KubeContext, PodUid};

/// A kubeconfig file that exists but cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("kubeconfig {}: {source}", path.display())]
pub struct LoadError {
    path: PathBuf,
    source: KubeconfigError,
}

/// The merged kubeconfig: from the files of `kubeconfig_var` (the value of `$KUBECONFIG`)
/// when it names any, else `~/.kube/config`. None when no file exists.
pub fn load(
    kubeconfig_var: Option<&OsStr>,
    paths: &Paths,
) -> Result<Option<Kubeconfig>, LoadError> {
    let mut files: Vec<PathBuf> = Vec::new();
    for p in kubeconfig_var
        .map(std::env::split_paths)
        .into_iter()
        .flatten()
    {
        // kubectl ignores empty entries and reads a file named twice once.
        if !p.as_os_str().is_empty() && !files.contains(&p) {
            files.push(p);
        }
    }
    if files.is_empty() {
        files.push(paths.expand("~/.kube/config"));
    }
    let mut merged: Option<Kubeconfig> = None;
    for path in files {
        if !path.exists() {
            tracing::debug!(path = %path.display(), "kubeconfig file missing; skipped as kubectl does");
            continue;
        }
        let mut next = Kubeconfig::read_from(&path).map_err(|source| LoadError {
            path: path.clone(),
            source,
        })?;
        // An empty current-context sets nothing, so a later file may still set it; kind and
        // apiVersion are not compared, as kubectl does not.
        next.current_context = next.current_context.filter(|c| !c.is_empty());
        next.kind = None;
        next.api_version = None;
        merged = Some(match merged {
            None => next,
            Some(m) => m.merge(next).map_err(|source| LoadError { path, source })?,
        });
    }
    Ok(merged)
}

/// The contexts to show: the configured ones, and with `all` every other context of the
/// kubeconfig; with neither, the current context alone, as kubectl uses it.
pub fn chosen(
    configured: Option<&[KubeContext]>,
    all: bool,
    kubeconfig: &Kubeconfig,
) -> Vec<KubeContext> {
    let mut out: Vec<KubeContext> = configured.unwrap_or_default().to_vec();
    if all {
        for c in &kubeconfig.contexts {
            if !out.iter().any(|x| x.context == c.name) {
                out.push(KubeContext::all_of(&c.name));
            }
        }
    } else if configured.is_none() {
        match &kubeconfig.current_context {
            Some(current) if kubeconfig.contexts.iter().any(|c| &c.name == current) => {
                out.push(KubeContext::all_of(current));
            }
            Some(current) => tracing::warn!(
                context = current,
                "the kubeconfig's current-context names no context; no k8s/ directory (choose one with `kubectl config use-context NAME`)"
            ),
            None if !kubeconfig.contexts.is_empty() => tracing::warn!(
                "the kubeconfig has no current-context; no k8s/ directory (choose one with `kubectl config use-context NAME`, list contexts in [[kubernetes]] tables, or set k8s.all_contexts = true)"
            ),
            None => {}
        }
    }
    out
}

/// One line per context the mount would show: its directory, server, namespace, where its
/// credentials come from (never the credentials) and its pod settings. For `snapfs config check`.
pub fn describe(
    configured: Option<&[KubeContext]>,
    settings: &K8sSettings,
    paths: &Paths,
) -> Vec<String> {
    let kubeconfig = match load(std::env::var_os("KUBECONFIG").as_deref(), paths) {
        Ok(Some(k)) => k,
        Ok(None) => {
            return vec![
                "k8s: no kubeconfig ($KUBECONFIG, ~/.kube/config): no k8s/ directory".into(),
            ];
        }
        Err(e) => return vec![format!("k8s: {e}")],
    };
    let mut out = Vec::new();
    for c in chosen(configured, settings.all_contexts, &kubeconfig) {
        let context = kubeconfig
            .contexts
            .iter()
            .find(|n| n.name == c.context)
            .and_then(|n| n.context.as_ref());
        let Some(context) = context else {
            out.push(format!(
                "k8s/{}: context {:?} is not in the kubeconfig",
                c.name, c.context
            ));
            continue;
        };
        let server = kubeconfig
            .clusters
            .iter()
            .find(|n| n.name == context.cluster)
            .and_then(|n| n.cluster.as_ref())
            .and_then(|c| c.server.clone())
            .unwrap_or_else(|| "(no server)".into());
        let user = context.user.as_deref().unwrap_or("");
        let auth = kubeconfig
            .auth_infos
            .iter()
            .find(|a| a.name == user)
            .and_then(|a| a.auth_info.as_ref());
        let credentials = match auth {
            None => "none".to_string(),
            Some(a) if a.exec.is_some() => {
                let command = a
                    .exec
                    .as_ref()
                    .and_then(|e| e.command.as_deref())
                    .unwrap_or("");
                let found = if runnable(command) {
                    ""
                } else {
                    ", not found on PATH"
                };
                format!("exec plugin {command}{found}")
            }
            Some(a) if a.auth_provider.is_some() => format!(
                "auth provider {}",
                a.auth_provider.as_ref().map_or("", |p| p.name.as_str())
            ),
            Some(a) if a.token.is_some() => "a bearer token in the kubeconfig".into(),
            Some(a) if a.token_file.is_some() => {
                format!("the token file {}", a.token_file.as_deref().unwrap_or(""))
            }
            Some(a) if a.client_certificate.is_some() || a.client_certificate_data.is_some() => {
                "a client certificate".into()
            }
            Some(a) if a.username.is_some() => "a username and password".into(),
            Some(_) => "none".into(),
        };
        let s = settings.for_context(&c.pods);
        let namespaces = if c.namespaces.is_empty() {
            format!(
                "every namespace and {}",
                context.namespace.as_deref().unwrap_or("default")
            )
        } else {
            c.namespaces.join(", ")
        };
        out.push(format!(
            "k8s/{}: context {}, server {server}, user {user} ({credentials}); namespaces: {namespaces}; image {}, storage class {}, snapshot class {}, pod uid {}",
            c.name,
            c.context,
            s.image,
            s.storage_class.as_deref().unwrap_or("(cluster default)"),
            s.snapshot_class.as_deref().unwrap_or("(default for the driver)"),
            match s.pod_uid {
                PodUid::Auto => "root, or 1000 under restricted".to_string(),
                PodUid::Fixed(uid) => uid.to_string(),
                PodUid::Namespace => "assigned by the namespace".to_string(),
            },
        ));
    }
    out
}

/// Whether `command` names a file that exists: as a path, or found on PATH.
fn runnable(command: &str) -> bool {
    if command.contains('/') {
        return Path::new(command).is_file();
    }
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|dir| !command.is_empty() && dir.join(command).is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, current: Option<&str>, contexts: &[(&str, &str)]) -> PathBuf {
        let mut text = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
        for (ctx, server) in contexts {
            text += &format!("- name: {ctx}-cluster\n  cluster:\n    server: {server}\n");
        }
        text += "contexts:\n";
        for (ctx, _) in contexts {
            text +=
                &format!("- name: {ctx}\n  context:\n    cluster: {ctx}-cluster\n    user: u\n");
        }
        if let Some(c) = current {
            text += &format!("current-context: \"{c}\"\n");
        }
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn server(k: &Kubeconfig, cluster: &str) -> String {
        let c = k.clusters.iter().find(|c| c.name == cluster).unwrap();
        c.cluster.as_ref().unwrap().server.clone().unwrap()
    }

    #[test]
    fn every_file_of_kubeconfig_is_merged_and_the_first_wins() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::for_home(dir.path());
        let a = file(dir.path(), "a", Some(""), &[("dev", "https://a.example")]);
        let b = file(
            dir.path(),
            "b",
            Some("prod"),
            &[("dev", "https://b.example"), ("prod", "https://b.example")],
        );
        let c = file(
            dir.path(),
            "c",
            Some("dev"),
            &[("stage", "https://c.example")],
        );
        let var = std::env::join_paths([&a, &dir.path().join("missing"), &b, &c, &a]).unwrap();
        let k = load(Some(&var), &paths).unwrap().unwrap();
        let names: Vec<&str> = k.contexts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["dev", "prod", "stage"]);
        // The first file to name a cluster wins it; the first to set current-context wins it.
        assert_eq!(server(&k, "dev-cluster"), "https://a.example");
        assert_eq!(k.current_context.as_deref(), Some("prod"));
    }

    #[test]
    fn without_kubeconfig_the_home_file_is_read_and_none_is_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::for_home(dir.path());
        assert!(load(None, &paths).unwrap().is_none());
        assert!(load(Some(OsStr::new("")), &paths).unwrap().is_none());
        std::fs::create_dir_all(dir.path().join(".kube")).unwrap();
        file(
            dir.path(),
            ".kube/config",
            Some("home"),
            &[("home", "https://h")],
        );
        let k = load(Some(OsStr::new("")), &paths).unwrap().unwrap();
        assert_eq!(k.current_context.as_deref(), Some("home"));
        let only_missing = dir.path().join("nope");
        assert!(
            load(Some(only_missing.as_os_str()), &paths)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_broken_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "contexts: [[[").unwrap();
        let e = load(Some(bad.as_os_str()), &Paths::for_home(dir.path())).unwrap_err();
        assert!(e.to_string().contains(&bad.display().to_string()), "{e}");
    }

    #[test]
    fn plugins_are_looked_for_as_the_daemon_runs_them() {
        assert!(runnable("sh"));
        assert!(runnable("/bin/sh"));
        assert!(!runnable("snapfs-no-such-plugin"));
        assert!(!runnable("/nonexistent/plugin"));
        assert!(!runnable(""));
    }

    #[test]
    fn contexts_are_described_without_their_secrets() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".kube")).unwrap();
        std::fs::write(
            dir.path().join(".kube/config"),
            "clusters:\n- name: k\n  cluster: {server: https://k.example}\ncontexts:\n- name: dev\n  context: {cluster: k, user: u, namespace: shop}\ncurrent-context: dev\nusers:\n- name: u\n  user: {token: s3cr3t}\n",
        )
        .unwrap();
        // describe() reads $KUBECONFIG as the daemon does; the tests leave it to the home.
        if std::env::var_os("KUBECONFIG").is_some() {
            return;
        }
        let lines = describe(None, &K8sSettings::default(), &Paths::for_home(dir.path()));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("k8s/dev: context dev, server https://k.example, user u (a bearer token in the kubeconfig); namespaces: every namespace and shop"), "{}", lines[0]);
        assert!(!lines[0].contains("s3cr3t"));
    }

    #[test]
    fn the_current_context_alone_unless_configured_or_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(
            dir.path(),
            "k",
            Some("b"),
            &[("a", "https://a"), ("b", "https://b"), ("c/x", "https://c")],
        );
        let k = load(Some(path.as_os_str()), &Paths::for_home(dir.path()))
            .unwrap()
            .unwrap();
        let names = |v: Vec<KubeContext>| v.into_iter().map(|c| c.name).collect::<Vec<_>>();
        assert_eq!(names(chosen(None, false, &k)), ["b"]);
        assert_eq!(names(chosen(None, true, &k)), ["a", "b", "c%2Fx"]);
        let mut mine = KubeContext::all_of("c/x");
        mine.name = "c".into();
        let configured = [mine];
        assert_eq!(names(chosen(Some(&configured), false, &k)), ["c"]);
        assert_eq!(names(chosen(Some(&configured), true, &k)), ["c", "a", "b"]);
        let mut none = k.clone();
        none.current_context = None;
        assert!(chosen(None, false, &none).is_empty());
        none.current_context = Some("gone".into());
        assert!(chosen(None, false, &none).is_empty());
    }
}
