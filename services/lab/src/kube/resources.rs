//! The resource types the lab's apiserver serves: one static table that drives routing, discovery,
//! field-selector support and error messages, so a new type is one entry here.

/// One served resource type.
#[derive(Debug)]
pub struct ResourceDef {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// Plural name used in paths.
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Subresources (`status`, `eviction`).
    pub subresources: &'static [&'static str],
    /// Field labels accepted by field selectors besides `metadata.name` and `metadata.namespace`.
    pub field_labels: &'static [&'static str],
    /// Categories (`all`).
    pub categories: &'static [&'static str],
}

impl ResourceDef {
    /// `apiVersion` of objects of this type.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural[.group]`, as apiserver messages name a resource.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether a field selector may use `field`.
    pub fn supports_field(&self, field: &str) -> bool {
        field == "metadata.name"
            || (self.namespaced && field == "metadata.namespace")
            || self.field_labels.contains(&field)
    }
}

macro_rules! res {
    ($group:expr, $version:expr, $plural:expr, $singular:expr, $kind:expr, $ns:expr, $short:expr, $sub:expr, $fields:expr, $cat:expr) => {
        ResourceDef {
            group: $group,
            version: $version,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
            short_names: $short,
            subresources: $sub,
            field_labels: $fields,
            categories: $cat,
        }
    };
}

/// Every stored resource type.
pub static RESOURCES: &[ResourceDef] = &[
    res!(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
        &["status"],
        &["status.phase"],
        &[]
    ),
    res!(
        "",
        "v1",
        "nodes",
        "node",
        "Node",
        false,
        &["no"],
        &["status"],
        &["spec.unschedulable"],
        &[]
    ),
    res!(
        "",
        "v1",
        "pods",
        "pod",
        "Pod",
        true,
        &["po"],
        &["status", "eviction"],
        &[
            "spec.nodeName",
            "status.phase",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.podIP",
            "status.nominatedNodeName"
        ],
        &["all"]
    ),
    res!(
        "",
        "v1",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
        &["status"],
        &[],
        &[]
    ),
    res!(
        "",
        "v1",
        "persistentvolumes",
        "persistentvolume",
        "PersistentVolume",
        false,
        &["pv"],
        &["status"],
        &[],
        &[]
    ),
    res!(
        "",
        "v1",
        "resourcequotas",
        "resourcequota",
        "ResourceQuota",
        true,
        &["quota"],
        &["status"],
        &[],
        &[]
    ),
    res!(
        "",
        "v1",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        &[],
        &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type"
        ],
        &[]
    ),
    res!(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        &[],
        &[],
        &[]
    ),
    res!(
        "",
        "v1",
        "secrets",
        "secret",
        "Secret",
        true,
        &[],
        &[],
        &["type"],
        &[]
    ),
    res!(
        "apps",
        "v1",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        true,
        &["ds"],
        &["status"],
        &[],
        &["all"]
    ),
    res!(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        &["status"],
        &[],
        &[]
    ),
    res!(
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "storageclass",
        "StorageClass",
        false,
        &["sc"],
        &[],
        &[],
        &[]
    ),
    res!(
        "snapshot.storage.k8s.io",
        "v1",
        "volumesnapshots",
        "volumesnapshot",
        "VolumeSnapshot",
        true,
        &["vs"],
        &["status"],
        &[],
        &[]
    ),
    res!(
        "snapshot.storage.k8s.io",
        "v1",
        "volumesnapshotclasses",
        "volumesnapshotclass",
        "VolumeSnapshotClass",
        false,
        &["vsclass", "vsclasses"],
        &[],
        &[],
        &[]
    ),
    res!(
        "snapshot.storage.k8s.io",
        "v1",
        "volumesnapshotcontents",
        "volumesnapshotcontent",
        "VolumeSnapshotContent",
        false,
        &["vsc", "vscs"],
        &["status"],
        &[],
        &[]
    ),
    res!(
        "kubevirt.io",
        "v1",
        "kubevirts",
        "kubevirt",
        "KubeVirt",
        true,
        &["kv", "kvs"],
        &["status"],
        &[],
        &["all"]
    ),
    res!(
        "kubevirt.io",
        "v1",
        "virtualmachines",
        "virtualmachine",
        "VirtualMachine",
        true,
        &["vm", "vms"],
        &["status"],
        &[],
        &["all"]
    ),
    res!(
        "kubevirt.io",
        "v1",
        "virtualmachineinstances",
        "virtualmachineinstance",
        "VirtualMachineInstance",
        true,
        &["vmi", "vmis"],
        &["status"],
        &[],
        &["all"]
    ),
    res!(
        "kubevirt.io",
        "v1",
        "virtualmachineinstancemigrations",
        "virtualmachineinstancemigration",
        "VirtualMachineInstanceMigration",
        true,
        &["vmim", "vmims"],
        &["status"],
        &[],
        &["all"]
    ),
    res!(
        "cdi.kubevirt.io",
        "v1beta1",
        "datavolumes",
        "datavolume",
        "DataVolume",
        true,
        &["dv", "dvs"],
        &["status"],
        &[],
        &["all"]
    ),
    res!(
        "upload.cdi.kubevirt.io",
        "v1beta1",
        "uploadtokenrequests",
        "uploadtokenrequest",
        "UploadTokenRequest",
        true,
        &["utr", "utrs"],
        &[],
        &[],
        &[]
    ),
    res!(
        "k8s.cni.cncf.io",
        "v1",
        "network-attachment-definitions",
        "network-attachment-definition",
        "NetworkAttachmentDefinition",
        true,
        &["net-attach-def"],
        &[],
        &[],
        &[]
    ),
    res!(
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
        &["token"],
        &[],
        &[]
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        &[],
        &[],
        &[],
        &[]
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        &[],
        &[],
        &[],
        &[]
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "role",
        "Role",
        true,
        &[],
        &[],
        &[],
        &[]
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        &[],
        &[],
        &[],
        &[]
    ),
];

/// Store keys (`plural[.group]`) of the types the simulator drives.
pub mod keys {
    pub const NAMESPACES: &str = "namespaces";
    pub const NODES: &str = "nodes";
    pub const PODS: &str = "pods";
    pub const PVCS: &str = "persistentvolumeclaims";
    pub const PVS: &str = "persistentvolumes";
    pub const EVENTS: &str = "events";
    pub const QUOTAS: &str = "resourcequotas";
    pub const STORAGE_CLASSES: &str = "storageclasses.storage.k8s.io";
    pub const SNAPSHOTS: &str = "volumesnapshots.snapshot.storage.k8s.io";
    pub const SNAPSHOT_CLASSES: &str = "volumesnapshotclasses.snapshot.storage.k8s.io";
    pub const KUBEVIRTS: &str = "kubevirts.kubevirt.io";
    pub const DAEMONSETS: &str = "daemonsets.apps";
    pub const VMS: &str = "virtualmachines.kubevirt.io";
    pub const VMIS: &str = "virtualmachineinstances.kubevirt.io";
    pub const VMIMS: &str = "virtualmachineinstancemigrations.kubevirt.io";
    pub const DATAVOLUMES: &str = "datavolumes.cdi.kubevirt.io";
    pub const NADS: &str = "network-attachment-definitions.k8s.cni.cncf.io";
    pub const SERVICE_ACCOUNTS: &str = "serviceaccounts";
    pub const CLUSTER_ROLES: &str = "clusterroles.rbac.authorization.k8s.io";
    pub const CLUSTER_ROLE_BINDINGS: &str = "clusterrolebindings.rbac.authorization.k8s.io";
    pub const ROLES: &str = "roles.rbac.authorization.k8s.io";
    pub const ROLE_BINDINGS: &str = "rolebindings.rbac.authorization.k8s.io";
}

/// The KubeVirt subresource verbs served under `subresources.kubevirt.io/v1`.
pub static KUBEVIRT_SUBRESOURCES: &[(&str, &str)] = &[
    ("virtualmachines", "start"),
    ("virtualmachines", "stop"),
    ("virtualmachines", "restart"),
    ("virtualmachines", "migrate"),
    ("virtualmachines", "addvolume"),
    ("virtualmachines", "removevolume"),
    ("virtualmachineinstances", "addvolume"),
    ("virtualmachineinstances", "removevolume"),
    ("virtualmachineinstances", "pause"),
    ("virtualmachineinstances", "unpause"),
];

/// Look a resource up by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Look a resource up by its `plural[.group]` store key.
pub fn by_key(key: &str) -> Option<&'static ResourceDef> {
    RESOURCES.iter().find(|r| r.qualified() == key)
}

/// The distinct (group, version) pairs served, in discovery order.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out.push(("subresources.kubevirt.io", "v1"));
    out
}
