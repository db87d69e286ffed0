//! Where a path below a context points: the routing table of the tree's layout.

use crate::k8s::reader;

/// Where a path of the tree points.
pub enum Place<'a> {
    Context,
    Namespace(&'a str),
    Snapshots(&'a str),
    Uploads(&'a str),
    Snapshot(&'a str, &'a str),
    /// A path inside a snapshot's content, absolute in its reader pod.
    InSnapshot {
        ns: &'a str,
        snap: &'a str,
        path: String,
    },
    Pods(&'a str),
    Pod(&'a str, &'a str),
    /// A path inside a container, absolute ("/" for its root).
    Container {
        ns: &'a str,
        pod: &'a str,
        container: &'a str,
        path: String,
    },
    Workloads(&'a str),
    Workload(&'a str, &'a str),
}

pub fn place(path: &str) -> Option<Place<'_>> {
    if path.is_empty() {
        return Some(Place::Context);
    }
    let parts: Vec<&str> = path.split('/').collect();
    Some(match parts.as_slice() {
        [ns] => Place::Namespace(ns),
        [ns, "snapshots"] => Place::Snapshots(ns),
        [ns, "uploads"] => Place::Uploads(ns),
        [ns, "snapshots", s] => Place::Snapshot(ns, s),
        [ns, "snapshots", snap, rest @ ..] => Place::InSnapshot {
            ns,
            snap,
            path: format!("{}/{}", reader::MOUNT, rest.join("/")),
        },
        [ns, "pods"] => Place::Pods(ns),
        [ns, "pods", pod] => Place::Pod(ns, pod),
        [ns, "pods", pod, container, rest @ ..] => Place::Container {
            ns,
            pod,
            container,
            path: format!("/{}", rest.join("/")),
        },
        [ns, "workloads"] => Place::Workloads(ns),
        [ns, "workloads", w] => Place::Workload(ns, w),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_places() {
        assert!(matches!(place(""), Some(Place::Context)));
        assert!(matches!(place("shop"), Some(Place::Namespace("shop"))));
        assert!(matches!(
            place("shop/snapshots/db"),
            Some(Place::Snapshot("shop", "db"))
        ));
        assert!(matches!(
            place("shop/workloads/web"),
            Some(Place::Workload("shop", "web"))
        ));
        match place("shop/pods/web-1/app/data/db.sqlite") {
            Some(Place::Container {
                pod,
                container,
                path,
                ..
            }) => {
                assert_eq!(
                    (pod, container, path.as_str()),
                    ("web-1", "app", "/data/db.sqlite")
                );
            }
            _ => panic!("not a container path"),
        }
        match place("shop/pods/web-1/app") {
            Some(Place::Container { path, .. }) => assert_eq!(path, "/"),
            _ => panic!("not a container path"),
        }
        assert!(place("shop/other").is_none());
        match place("shop/snapshots/db/x/y") {
            Some(Place::InSnapshot { snap, path, .. }) => {
                assert_eq!((snap, path.as_str()), ("db", "/data/x/y"));
            }
            _ => panic!("not a snapshot path"),
        }
    }
}
