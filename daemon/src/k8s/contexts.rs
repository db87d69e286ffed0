//! The contexts of the user's kubeconfig (DESIGN §6): a client for each, its live tree under
//! `k8s/<context>/`, and its namespaces as upload targets.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DynamicObject, ListParams};
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use snapfs_fs::vfs::LiveMount;

use super::cluster::{self, Namespaces};
use super::credentials;
use super::kubeconfig;
use super::labels::MANAGED_BY;
use super::metered::{Meter, Metering};
use super::namespace::KubeTarget;
use super::reader::Readers;
use super::tree::{KubeTree, Scope};
use super::unavailable::Unavailable;
use crate::config::{K8sSettings, KubeContext, is_dns_label};
use snapfs_control::paths::Paths;

/// One context of the kubeconfig.
struct Context {
    config: KubeContext,
    client: Client,
    tree: Arc<KubeTree>,
    settings: Arc<K8sSettings>,
    meter: Arc<Meter>,
}

/// The Kubernetes contexts of the mount: their live trees under `k8s/`, and their namespaces as
/// upload targets.
pub struct Kube {
    contexts: Vec<Context>,
    /// Contexts whose client could not be made, shown with the reason.
    unavailable: Vec<(KubeContext, Arc<Unavailable>)>,
}

/// A client for `context`, counting its requests into the meter returned with it; or one line
/// saying why there is none.
async fn connect(kubeconfig: &Kubeconfig, context: &str) -> Result<(Client, Arc<Meter>), String> {
    let plugin = credentials::plugin_of(kubeconfig, context);
    if let Some(why) = plugin.and_then(|p| credentials::refuse(context, p)) {
        return Err(why);
    }
    let options = KubeConfigOptions {
        context: Some(context.to_string()),
        ..KubeConfigOptions::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &options)
        .await
        .map_err(|e| format!("context {context}: {e}"))?;
    let meter = Arc::new(Meter::default());
    let client = ClientBuilder::try_from(config)
        .map_err(|e| credentials::explain(context, plugin, &e))?
        .with_layer(&Metering(meter.clone()))
        .build();
    Ok((client, meter))
}

/// A client for `context` (None: the kubeconfig's current one), loading the kubeconfig as
/// kubectl does; or one line saying why there is none.
pub async fn client_for(context: Option<&str>, paths: &Paths) -> Result<Client, String> {
    let kubeconfig = match kubeconfig::load(std::env::var_os("KUBECONFIG").as_deref(), paths) {
        Ok(Some(k)) => k,
        Ok(None) => {
            return Err(
                "there is no kubeconfig (none of the files of $KUBECONFIG, nor ~/.kube/config, exists)".into(),
            );
        }
        Err(e) => return Err(e.to_string()),
    };
    let context = match context.or(kubeconfig.current_context.as_deref()) {
        Some(c) => c.to_string(),
        None => {
            return Err(
                "the kubeconfig has no current-context: set kubernetes.context, or choose one with `kubectl config use-context NAME`".into(),
            );
        }
    };
    Ok(connect(&kubeconfig, &context).await?.0)
}

impl Kube {
    /// Connects the configured contexts (`None`: the current context, or every context with
    /// `settings.all_contexts`). A context that cannot be set up stays as a directory that
    /// answers with the reason, logged once; it never stops the mount.
    pub async fn connect(
        configured: Option<&[KubeContext]>,
        paths: &Paths,
        list_ttl: Duration,
        reader_idle: Duration,
        settings: K8sSettings,
    ) -> Kube {
        let mut kube = Kube {
            contexts: Vec::new(),
            unavailable: Vec::new(),
        };
        let kubeconfig = match kubeconfig::load(std::env::var_os("KUBECONFIG").as_deref(), paths) {
            Ok(Some(k)) => k,
            Ok(None) => {
                if configured.is_some_and(|c| !c.is_empty()) {
                    tracing::warn!("[[kubernetes]] is configured but there is no kubeconfig");
                }
                return kube;
            }
            Err(e) => {
                tracing::warn!(error = %e, "kubeconfig unreadable; no k8s/");
                return kube;
            }
        };
        for c in kubeconfig::chosen(configured, settings.all_contexts, &kubeconfig) {
            let (client, meter) = match connect(&kubeconfig, &c.context).await {
                Ok(connected) => connected,
                Err(why) => {
                    tracing::warn!(context = c.context, "{why}");
                    kube.unavailable.push((c, Arc::new(Unavailable { why })));
                    continue;
                }
            };
            let home = client.default_namespace().to_string();
            let namespaces = if c.namespaces.is_empty() {
                Scope::All(Namespaces::watch(
                    client.clone(),
                    list_ttl,
                    c.context.clone(),
                    home,
                ))
            } else {
                Scope::Only(c.namespaces.clone())
            };
            let settings = Arc::new(settings.for_context(&c.pods));
            let readers = Readers::new(client.clone(), reader_idle, settings.clone());
            let tree = KubeTree::new(client.clone(), namespaces, list_ttl, readers, meter.clone());
            kube.contexts.push(Context {
                settings,
                config: c,
                client,
                tree,
                meter,
            });
        }
        kube
    }

    pub fn live_mounts(&self) -> Vec<LiveMount> {
        let working = self.contexts.iter().map(|c| LiveMount {
            kind: "k8s",
            name: c.config.name.clone(),
            description: format!("Kubernetes context {}", c.config.context),
            tree: c.tree.clone(),
        });
        let unavailable = self.unavailable.iter().map(|(c, tree)| LiveMount {
            kind: "k8s",
            name: c.name.clone(),
            description: format!("unavailable Kubernetes {}", tree.why),
            tree: tree.clone(),
        });
        working.chain(unavailable).collect()
    }

    /// The namespace at `k8s/<context>/<namespace>` as a target, if it can be one.
    pub fn target(&self, path: &str) -> Option<KubeTarget> {
        let rest = path.strip_prefix("k8s/")?;
        let (dir, ns) = rest.split_once('/')?;
        let c = self.contexts.iter().find(|c| c.config.name == dir)?;
        if !is_dns_label(ns) {
            return None;
        }
        if !c.tree.may_hold(ns) {
            return None;
        }
        Some(KubeTarget::new(
            path.to_string(),
            c.client.clone(),
            ns.to_string(),
            c.settings.clone(),
            &c.config,
            c.tree.readers().clone(),
            c.meter.of(ns),
        ))
    }

    /// Paths of the namespaces where snapfs made something (snapshots, claims, pods): what
    /// cleanup must look at. Where the whole cluster cannot be listed, the configured or
    /// known namespaces stand in.
    pub async fn namespaces_in_use(&self) -> Vec<String> {
        let mut out = BTreeSet::new();
        for c in &self.contexts {
            let lp = ListParams::default().labels(&format!("{MANAGED_BY}=snapfs"));
            let pods: Api<Pod> = Api::all(c.client.clone());
            let claims: Api<PersistentVolumeClaim> = Api::all(c.client.clone());
            let snaps: Api<DynamicObject> =
                Api::all_with(c.client.clone(), &cluster::snapshot_resource());
            let mut found: Vec<Option<String>> = Vec::new();
            let mut ok = true;
            match pods.list_metadata(&lp).await {
                Ok(l) => found.extend(l.items.into_iter().map(|o| o.metadata.namespace)),
                Err(_) => ok = false,
            }
            match claims.list_metadata(&lp).await {
                Ok(l) => found.extend(l.items.into_iter().map(|o| o.metadata.namespace)),
                Err(_) => ok = false,
            }
            // A cluster without the snapshot API has no snapshots to look at.
            if let Ok(l) = snaps.list(&lp).await {
                found.extend(l.items.into_iter().map(|o| o.metadata.namespace));
            }
            if !ok && let Ok(names) = c.tree.namespaces().await {
                found.extend(names.into_iter().map(Some));
            }
            for ns in found.into_iter().flatten() {
                out.insert(format!("k8s/{}/{ns}", c.config.name));
            }
        }
        out.into_iter().collect()
    }

    /// Removes every reader pod and claim, as the mount goes away.
    pub async fn shutdown(&self) {
        for c in &self.contexts {
            c.tree.readers().remove_all().await;
        }
    }
}
