//! Request paths of the Kubernetes API, parsed into what they address.

use crate::resources::{self, ResourceType};

#[derive(Debug)]
pub(crate) enum Route {
    Version,
    Health,
    /// `/api`
    CoreVersions,
    /// `/api/v1`
    CoreResources,
    /// `/apis`
    Groups,
    /// `/apis/{group}`
    Group(String),
    /// `/apis/{group}/{version}`
    GroupResources(String, String),
    /// `/openapi/v3`
    OpenApiRoot,
    /// `/openapi/v3/api/v1`, `/openapi/v3/apis/{group}/{version}`
    OpenApi(String, String),
    Resource(Target),
}

/// An object or collection: `namespace` is None for cluster-scoped types and for lists across
/// all namespaces.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub rt: &'static ResourceType,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

impl Target {
    pub fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }

    /// `pods` or `pods/exec`, as RBAC names it.
    pub fn rbac_resource(&self) -> String {
        match &self.sub {
            Some(sub) => format!("{}/{sub}", self.rt.plural),
            None => self.rt.plural.to_string(),
        }
    }
}

pub(crate) fn parse(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => Some(Route::Version),
        ["healthz" | "readyz" | "livez"] => Some(Route::Health),
        ["openapi", "v3"] => Some(Route::OpenApiRoot),
        ["openapi", "v3", "api", "v1"] => Some(Route::OpenApi(String::new(), "v1".into())),
        ["openapi", "v3", "apis", group, version] => {
            Some(Route::OpenApi(group.to_string(), version.to_string()))
        }
        ["api"] => Some(Route::CoreVersions),
        ["api", "v1"] => Some(Route::CoreResources),
        ["apis"] => Some(Route::Groups),
        ["apis", group] => Some(Route::Group(group.to_string())),
        ["apis", group, version] => Some(Route::GroupResources(
            group.to_string(),
            version.to_string(),
        )),
        ["api", "v1", rest @ ..] => resource("", "v1", rest).map(Route::Resource),
        ["apis", group, version, rest @ ..] => resource(group, version, rest).map(Route::Resource),
        _ => None,
    }
}

fn resource(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let owned = |s: &&str| s.to_string();
    if let ["namespaces", ns, plural, tail @ ..] = rest
        && !matches!(*plural, "status" | "finalize")
    {
        let rt = resources::lookup(group, version, plural).filter(|rt| rt.namespaced)?;
        return match tail {
            [] => Some(Target {
                rt,
                namespace: Some(ns.to_string()),
                name: None,
                sub: None,
            }),
            [name] | [name, _] => Some(Target {
                rt,
                namespace: Some(ns.to_string()),
                name: Some(name.to_string()),
                sub: tail.get(1).map(owned),
            }),
            _ => None,
        };
    }
    let (plural, tail) = rest.split_first()?;
    let rt = resources::lookup(group, version, plural)?;
    if rt.namespaced && !tail.is_empty() {
        return None;
    }
    match tail {
        [] | [_] | [_, _] => Some(Target {
            rt,
            namespace: None,
            name: tail.first().map(owned),
            sub: tail.get(1).map(owned),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let Some(Route::Resource(t)) = parse("/api/v1/namespaces/ns/pods/p/exec") else {
            panic!()
        };
        assert_eq!(
            (t.rt.plural, t.ns(), t.name.as_deref(), t.sub.as_deref()),
            ("pods", "ns", Some("p"), Some("exec"))
        );
        let Some(Route::Resource(t)) = parse("/api/v1/namespaces/ns") else {
            panic!()
        };
        assert_eq!((t.rt.plural, t.name.as_deref()), ("namespaces", Some("ns")));
        let Some(Route::Resource(t)) = parse("/api/v1/namespaces/ns/status") else {
            panic!()
        };
        assert_eq!(t.sub.as_deref(), Some("status"));
        let Some(Route::Resource(t)) = parse("/api/v1/pods") else {
            panic!()
        };
        assert!(t.namespace.is_none() && t.name.is_none());
        let Some(Route::Resource(t)) =
            parse("/apis/snapshot.storage.k8s.io/v1/namespaces/a/volumesnapshots/s")
        else {
            panic!()
        };
        assert_eq!(t.rt.kind, "VolumeSnapshot");
        assert!(parse("/api/v1/namespaces/ns/storageclasses").is_none());
        assert!(parse("/api/v1/pods/p").is_none());
    }
}
