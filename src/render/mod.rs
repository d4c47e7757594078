//! render: the neutral [`crate::model::Workload`] → Kubernetes objects.
//!
//! Rendering happens in two steps around the policy chain: [`pod_document`] builds a Pod-shaped
//! JSON document that rules transform with JSON pointers, then [`objects`] turns the transformed
//! document into typed objects, re-asserting podbridge's identity metadata and deriving Services
//! from the final pod. Only this module uses k8s-openapi types.

mod names;
mod objects;
mod pod;
mod volume;

use std::collections::BTreeMap;

use crate::model::ContainerId;

pub use names::{
    dns_label, is_dns1035_label, is_dns1123_label, label_value, pod_name, volume_claim_name,
};
pub use objects::{objects, RenderedObjects};
pub use pod::{
    pod_document, warnings, ARCHIVE_DATA_KEY, ARCHIVE_INIT_CONTAINER, BIND_KEEPER_CONTAINER,
    BIND_MOUNT_ROOT, INIT_CONTAINER, MAIN_CONTAINER, READY_MARKER, RELEASED_MARKER,
    SYNC_MOUNT_PATH, SYNC_VOLUME,
};
pub use volume::{
    option_labels, volume_claim_document, volume_claim_object, VolumeRequest, DRIVER_OPT_SIZE,
    DRIVER_OPT_STORAGE_CLASS,
};

/// Per-instance settings that shape every rendered object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenderContext {
    /// Value of the `podbridge.io/instance` label.
    pub instance_id: String,
    pub namespace: String,
    /// Project (CI job path); becomes the `podbridge.io/project` label, sanitised.
    pub project: Option<String>,
    /// First part of every pod name, e.g. `pb`.
    pub name_prefix: String,
    /// Image of the init container that waits for bind content (needs `sh`).
    pub init_image: String,
    /// Extra labels on every object (identity labels win over these).
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the pod (identity annotations win over these).
    pub annotations: BTreeMap<String, String>,
    /// `DOCKER_HOST` value that reaches podbridge from inside a pod; given to containers that
    /// bind the Docker socket (Ryuk, dind clients).
    pub docker_host_for_pods: Option<String>,
    /// What backs Docker named volumes, and the claims' shape.
    pub volumes: VolumeSettings,
    /// Directories bind sources may come from (config `bind_roots`); checked before rendering.
    pub bind_roots: crate::model::BindRoots,
}

/// What a Docker named volume becomes in the cluster (config `named_volumes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NamedVolumes {
    /// A PersistentVolumeClaim per volume: Docker's semantics (shared between containers,
    /// outlives them until `docker volume rm`), but the cluster needs a provisioner.
    #[default]
    #[serde(rename = "claim")]
    Claim,
    /// An emptyDir of each container's pod: works on clusters without storage, but the data lives
    /// as long as that pod and is not shared.
    #[serde(rename = "emptyDir")]
    EmptyDir,
}

/// Access mode of the claims (config `volume_access_mode`). ReadWriteOnce suffices on one node
/// (it limits nodes, not pods); a multi-node cluster whose containers share volumes across nodes
/// needs ReadWriteMany and storage that offers it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VolumeAccessMode {
    #[default]
    ReadWriteOnce,
    ReadWriteMany,
}

impl VolumeAccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeAccessMode::ReadWriteOnce => "ReadWriteOnce",
            VolumeAccessMode::ReadWriteMany => "ReadWriteMany",
        }
    }
}

/// The configured shape of named volumes.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeSettings {
    pub backing: NamedVolumes,
    /// Requested size of each claim (a Kubernetes quantity), unless the volume's `size` option
    /// says otherwise.
    pub size: String,
    /// StorageClass of the claims; `None` leaves the choice to the cluster's default class.
    pub storage_class: Option<String>,
    pub access_mode: VolumeAccessMode,
}

impl Default for VolumeSettings {
    fn default() -> Self {
        VolumeSettings {
            backing: NamedVolumes::Claim,
            size: "1Gi".into(),
            storage_class: None,
            access_mode: VolumeAccessMode::ReadWriteOnce,
        }
    }
}

/// What exists only when a created container starts, rendered with the request so the policy
/// chain sees it (nothing is added to a pod after the rules ran).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StartInputs {
    /// Files copied into the container before it started (`docker cp` into a created
    /// container), in the order they were copied.
    pub archives: Vec<PrestartArchive>,
    /// Bind sources that are single files (mounted with `subPath`), not directories, each
    /// with the name of the file in its volume.
    pub file_binds: std::collections::BTreeMap<String, String>,
    /// The targets of the workload's legacy links, by alias, as they are at this start (Docker
    /// resolves links when the linking container starts, from the running target).
    pub links: std::collections::BTreeMap<String, crate::model::LinkedContainer>,
}

/// One `docker cp` into a created container, as stored in its ConfigMap.
#[derive(Debug, Clone, PartialEq)]
pub struct PrestartArchive {
    pub config_map: String,
    /// Destination directory in the container.
    pub path: String,
    /// Top-level names in the tar, each mounted at `path/name`.
    pub entries: Vec<String>,
}

/// Who the container is on the Docker side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: ContainerId,
    /// RFC 3339 creation time.
    pub created: String,
}

/// What can go wrong turning a (policy-modified) pod document into objects. Every variant names
/// the field, so a policy author sees which rule output to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The document's shape is not a Pod's (e.g. `metadata` is not an object).
    #[error("the pod document is invalid at {field}: {message}")]
    InvalidDocument { field: String, message: String },
    /// The pod name is not a DNS-1123 label.
    #[error("the pod document is invalid at {field}: {name:?} is not a lowercase DNS-1123 label (at most 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit)")]
    InvalidName { field: String, name: String },
    /// The document does not deserialize into a Pod.
    #[error("the pod document is not a valid Pod at {field}: {message}")]
    DeserializePodFailed { field: String, message: String },
    /// A volume option (or the configured default) is not usable for a claim.
    #[error("volume {volume}: option {option}={value:?} is invalid: {message}")]
    InvalidVolumeOption {
        volume: String,
        option: String,
        value: String,
        message: String,
    },
}

/// Result type of the render module.
pub type Result<T, E = RenderError> = std::result::Result<T, E>;
