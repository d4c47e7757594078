//! Label and annotation keys podbridge writes on every Kubernetes object it creates.
//!
//! They are the only link between a Docker-side identity and the cluster: a restarted podbridge
//! rebuilds its whole view from them, and the reaper finds leftovers through them. Keep them in
//! this one module so a reader can grep for every key in one place.

/// Standard Kubernetes label naming the tool that manages the object.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY`] on every object podbridge creates.
pub const MANAGED_BY_VALUE: &str = "podbridge";
/// Label: the podbridge instance that owns the object (several may share one namespace).
pub const INSTANCE: &str = "podbridge.io/instance";
/// Label: the 12-character short Docker container ID (label values are limited to 63 chars).
pub const CONTAINER_ID: &str = "podbridge.io/container-id";
/// Label: what the object is for (`container`, `alias-service`, `bind-file`, `volume`, `network`).
pub const ROLE: &str = "podbridge.io/role";
/// Label: the project (CI job path) podbridge was configured with, sanitised to a label value.
pub const PROJECT: &str = "podbridge.io/project";

/// Annotation: the full 64-hex Docker container ID.
pub const ANNOTATION_CONTAINER_ID: &str = "podbridge.io/container-id";
/// Annotation: the Docker container name, without the leading slash.
pub const ANNOTATION_NAME: &str = "podbridge.io/name";
/// Annotation: RFC 3339 time the container was created on the Docker side.
pub const ANNOTATION_CREATED: &str = "podbridge.io/created";
/// Annotation: short list of the rules that changed the pod (`policy/rule: op path, ...`).
pub const ANNOTATION_APPLIED_RULES: &str = "podbridge.io/applied-rules";
/// Annotation: the normalised image reference the Docker client asked for, before any rewrite.
pub const ANNOTATION_IMAGE: &str = "podbridge.io/image";

/// Prefix of the container labels a policy may declare as override knobs.
pub const OVERRIDE_LABEL_PREFIX: &str = "podbridge.io/";
/// Label key prefixes (DNS domains) no client label may carry onto a pod whatever the policy
/// says: Kubernetes' own (`kubernetes.io`, `k8s.io` and their subdomains) and podbridge's. The
/// Docker view keeps such labels; the pod never gets them.
pub const RESERVED_LABEL_DOMAINS: [&str; 3] = ["kubernetes.io", "k8s.io", "podbridge.io"];

/// [`ROLE`] value of the ConfigMap that *is* a created container: it stores the rendered objects
/// until `start` applies them and the container's record (`runtime::record`), and outlives the
/// pod so `inspect` keeps working after `stop`.
pub const ROLE_CONTAINER_SPEC: &str = "container-spec";
/// [`ROLE`] value of a ConfigMap recording a Docker network.
pub const ROLE_NETWORK: &str = "network";
/// [`ROLE`] value of a ConfigMap recording a Docker volume.
pub const ROLE_VOLUME: &str = "volume";
/// Annotation on network/volume ConfigMaps: the Docker object as JSON.
pub const ANNOTATION_OBJECT: &str = "podbridge.io/object";

/// [`ROLE`] of the pod that runs a Docker container.
pub const ROLE_CONTAINER: &str = "container";
/// [`ROLE`] of the Service named after the pod, exposing its ports.
pub const ROLE_CONTAINER_SERVICE: &str = "container-service";
/// [`ROLE`] of a Service that makes a Docker network alias, hostname or name resolvable.
pub const ROLE_ALIAS_SERVICE: &str = "alias-service";

/// Label on every object the operator creates for a session: the BridgeSession's name.
pub const SESSION: &str = "podbridge.io/session";
/// Label on a session namespace: the CI job ID from the session spec, sanitised.
pub const JOB_ID: &str = "podbridge.io/job-id";
/// Label on a session namespace (and the operator's webhook configuration): the operator
/// deployment (`--operator-id`) that manages it. Its admission webhook selects namespaces by it,
/// so another operator's sessions are never covered by this one's webhook.
pub const OPERATOR: &str = "podbridge.io/operator";
/// Annotation on a session namespace: the session's CI project as written in its spec (labels
/// carry it sanitised), for policy selectors in the admission webhook.
pub const ANNOTATION_PROJECT: &str = "podbridge.io/project";
/// Value of [`MANAGED_BY`] on objects the operator creates.
pub const MANAGED_BY_OPERATOR: &str = "podbridge-operator";
/// Finalizer the operator puts on each BridgeSession so its namespace goes with it.
pub const SESSION_FINALIZER: &str = "podbridge.io/session-cleanup";
/// Pod Security Admission labels on a session namespace (the standard keys; enforced from v1.23).
pub const PSA_ENFORCE: &str = "pod-security.kubernetes.io/enforce";
pub const PSA_ENFORCE_VERSION: &str = "pod-security.kubernetes.io/enforce-version";
pub const PSA_AUDIT: &str = "pod-security.kubernetes.io/audit";
pub const PSA_WARN: &str = "pod-security.kubernetes.io/warn";
/// Label the API server (v1.21+) puts on every namespace with its name; NetworkPolicies select
/// the job's namespace by it.
pub const NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";

/// [`ROLE`] of a ConfigMap holding a tar copied into a container before it started.
pub const ROLE_ARCHIVE: &str = "archive";
/// Annotation on an archive ConfigMap: the directory the tar is unpacked into.
pub const ANNOTATION_ARCHIVE_PATH: &str = "podbridge.io/archive-path";

/// [`ROLE`] of an instance's liveness Lease (`podbridge-instance-<id>`), renewed while it serves;
/// the reaper removes the objects of instances whose Lease went quiet.
pub const ROLE_HEARTBEAT: &str = "heartbeat";

/// Override label a volume's `size` driver option becomes in the policy chain: a policy rule of
/// kind PersistentVolumeClaim declares it, with bounds, to let clients size their volumes.
pub const VOLUME_SIZE_LABEL: &str = "podbridge.io/volume-size";
/// Override label a volume's `storageclass` driver option becomes in the policy chain.
pub const VOLUME_STORAGE_CLASS_LABEL: &str = "podbridge.io/storage-class";

/// Annotation on a container-spec ConfigMap of a container podbridge serves itself, with no
/// pod: its kind ([`BUILTIN_RYUK`]).
pub const ANNOTATION_BUILTIN: &str = "podbridge.io/builtin";
/// [`ANNOTATION_BUILTIN`] value of testcontainers' reaper served by podbridge (`runtime/ryuk.rs`).
pub const BUILTIN_RYUK: &str = "ryuk";
/// Annotation on a built-in container's spec: RFC 3339 time it started; absent when not running.
pub const ANNOTATION_RUNNING_SINCE: &str = "podbridge.io/running-since";
/// Annotation on a container-spec ConfigMap: the host addresses its pod's ports were published
/// on, and the pod's uid (`runtime/ports.rs` `RecordedPorts`), so a restarted podbridge binds
/// the same ones.
pub const ANNOTATION_PUBLISHED: &str = "podbridge.io/published-ports";

/// Annotations earlier versions wrote on pods and container-spec ConfigMaps, where the container's
/// record (`runtime::record`) now keeps the same state in the ConfigMap's data. A spec ConfigMap
/// an earlier version made is read from them, and they are removed when its record is written.
pub mod legacy {
    /// The original `ContainerCreate` body, compact JSON.
    pub const CREATE_REQUEST: &str = "podbridge.io/create-request";
    /// Every mount and the pod volume that serves it, compact JSON.
    pub const MOUNTS: &str = "podbridge.io/mounts";
    /// The largest grace period (seconds) the policy allowed.
    pub const MAX_STOP_TIMEOUT: &str = "podbridge.io/max-stop-timeout";
    /// JSON of the last exit (`ExitCode`, `StartedAt`, `FinishedAt`, `OOMKilled`).
    pub const LAST_EXIT: &str = "podbridge.io/last-exit";
    /// The networks joined and their aliases (never read: the request says).
    pub const NETWORKS: &str = "podbridge.io/networks";
    /// Whether `AutoRemove` was asked (never read: the request says).
    pub const AUTO_REMOVE: &str = "podbridge.io/auto-remove";
    /// The requested host port bindings (never read: the request says).
    pub const PORT_BINDINGS: &str = "podbridge.io/port-bindings";

    /// Every key above, to remove when the record is written in its new place.
    pub const ALL: [&str; 7] = [
        CREATE_REQUEST,
        MOUNTS,
        MAX_STOP_TIMEOUT,
        LAST_EXIT,
        NETWORKS,
        AUTO_REMOVE,
        PORT_BINDINGS,
    ];
}
