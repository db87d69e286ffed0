//! The resource types this server knows, with what discovery says about them.

/// One resource type: where it lives in the API and how it behaves.
#[derive(Debug)]
pub(crate) struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Has a `/status` subresource: the main endpoint keeps the stored status.
    pub has_status: bool,
    /// Field labels a `fieldSelector` may use besides `metadata.name` and `metadata.namespace`.
    pub field_labels: &'static [&'static str],
    /// Compiled into the API server (not a CRD). Items of its lists carry no `kind`/`apiVersion`.
    pub builtin: bool,
    pub categories: &'static [&'static str],
    /// Subresources other than `status`.
    pub subresources: &'static [&'static str],
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods`, `deployments.apps`: how error messages name the resource.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn is(&self, plural: &str) -> bool {
        self.plural == plural
    }
}

pub(crate) const SNAPSHOT_GROUP: &str = "snapshot.storage.k8s.io";

const BASE: ResourceType = ResourceType {
    group: "",
    version: "v1",
    plural: "",
    singular: "",
    kind: "",
    namespaced: true,
    short_names: &[],
    has_status: false,
    field_labels: &[],
    builtin: true,
    categories: &[],
    subresources: &[],
};

pub(crate) static NAMESPACES: ResourceType = ResourceType {
    plural: "namespaces",
    singular: "namespace",
    kind: "Namespace",
    namespaced: false,
    short_names: &["ns"],
    has_status: true,
    field_labels: &["status.phase"],
    subresources: &["finalize"],
    ..BASE
};

pub(crate) static PODS: ResourceType = ResourceType {
    plural: "pods",
    singular: "pod",
    kind: "Pod",
    short_names: &["po"],
    has_status: true,
    field_labels: &[
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ],
    categories: &["all"],
    subresources: &["exec", "portforward"],
    ..BASE
};

pub(crate) static PVCS: ResourceType = ResourceType {
    plural: "persistentvolumeclaims",
    singular: "persistentvolumeclaim",
    kind: "PersistentVolumeClaim",
    short_names: &["pvc"],
    has_status: true,
    ..BASE
};

pub(crate) static PVS: ResourceType = ResourceType {
    plural: "persistentvolumes",
    singular: "persistentvolume",
    kind: "PersistentVolume",
    namespaced: false,
    short_names: &["pv"],
    has_status: true,
    ..BASE
};

pub(crate) static EVENTS: ResourceType = ResourceType {
    plural: "events",
    singular: "event",
    kind: "Event",
    short_names: &["ev"],
    field_labels: &[
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "type",
    ],
    ..BASE
};

pub(crate) static SECRETS: ResourceType = ResourceType {
    plural: "secrets",
    singular: "secret",
    kind: "Secret",
    field_labels: &["type"],
    ..BASE
};

pub(crate) static DEPLOYMENTS: ResourceType = ResourceType {
    group: "apps",
    plural: "deployments",
    singular: "deployment",
    kind: "Deployment",
    short_names: &["deploy"],
    has_status: true,
    categories: &["all"],
    ..BASE
};

pub(crate) static STATEFULSETS: ResourceType = ResourceType {
    group: "apps",
    plural: "statefulsets",
    singular: "statefulset",
    kind: "StatefulSet",
    short_names: &["sts"],
    has_status: true,
    categories: &["all"],
    ..BASE
};

pub(crate) static STORAGECLASSES: ResourceType = ResourceType {
    group: "storage.k8s.io",
    plural: "storageclasses",
    singular: "storageclass",
    kind: "StorageClass",
    namespaced: false,
    short_names: &["sc"],
    ..BASE
};

pub(crate) static VOLUMESNAPSHOTS: ResourceType = ResourceType {
    group: SNAPSHOT_GROUP,
    plural: "volumesnapshots",
    singular: "volumesnapshot",
    kind: "VolumeSnapshot",
    short_names: &["vs"],
    has_status: true,
    builtin: false,
    ..BASE
};

pub(crate) static VOLUMESNAPSHOTCONTENTS: ResourceType = ResourceType {
    group: SNAPSHOT_GROUP,
    plural: "volumesnapshotcontents",
    singular: "volumesnapshotcontent",
    kind: "VolumeSnapshotContent",
    namespaced: false,
    short_names: &["vsc", "vscs"],
    has_status: true,
    builtin: false,
    ..BASE
};

pub(crate) static VOLUMESNAPSHOTCLASSES: ResourceType = ResourceType {
    group: SNAPSHOT_GROUP,
    plural: "volumesnapshotclasses",
    singular: "volumesnapshotclass",
    kind: "VolumeSnapshotClass",
    namespaced: false,
    short_names: &["vsclass", "vsclasses"],
    builtin: false,
    ..BASE
};

pub(crate) static ALL: &[&ResourceType] = &[
    &NAMESPACES,
    &PODS,
    &PVCS,
    &PVS,
    &EVENTS,
    &SECRETS,
    &DEPLOYMENTS,
    &STATEFULSETS,
    &STORAGECLASSES,
    &VOLUMESNAPSHOTS,
    &VOLUMESNAPSHOTCONTENTS,
    &VOLUMESNAPSHOTCLASSES,
];

/// The API groups served under `/apis`, each with its one version.
pub(crate) const GROUPS: &[(&str, &str)] = &[
    ("apps", "v1"),
    ("storage.k8s.io", "v1"),
    (SNAPSHOT_GROUP, "v1"),
];

pub(crate) fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    ALL.iter()
        .copied()
        .find(|rt| rt.group == group && rt.version == version && rt.plural == plural)
}
