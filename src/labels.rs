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
/// Annotation: the original `ContainerCreate` body, compact JSON, so `inspect` can answer after a
/// restart without any local state.
pub const ANNOTATION_CREATE_REQUEST: &str = "podbridge.io/create-request";
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
/// Annotation: the largest grace period (seconds) the policy allows this container, from a
/// `clamp` maximum on `/spec/terminationGracePeriodSeconds`; `docker stop -t` and
/// `restart -t` wait no longer than this.
pub const ANNOTATION_MAX_STOP_TIMEOUT: &str = "podbridge.io/max-stop-timeout";

/// [`ROLE`] value of the ConfigMap that *is* a created container: it stores the rendered objects
/// until `start` applies them, and outlives the pod so `inspect` keeps working after `stop`.
pub const ROLE_CONTAINER_SPEC: &str = "container-spec";
/// [`ROLE`] value of a ConfigMap recording a Docker network.
pub const ROLE_NETWORK: &str = "network";
/// [`ROLE`] value of a ConfigMap recording a Docker volume.
pub const ROLE_VOLUME: &str = "volume";
/// Annotation on a container-spec ConfigMap: JSON of the last exit (`ExitCode`, `StartedAt`,
/// `FinishedAt`, `OOMKilled`) when the pod had to be deleted to stop it.
pub const ANNOTATION_LAST_EXIT: &str = "podbridge.io/last-exit";
/// Annotation on network/volume ConfigMaps: the Docker object as JSON.
pub const ANNOTATION_OBJECT: &str = "podbridge.io/object";

/// Annotation: the networks the container joined and their aliases, compact JSON
/// (`{"demo_backend":["demo-web-1","web"]}`).
pub const ANNOTATION_NETWORKS: &str = "podbridge.io/networks";
/// Annotation: `"true"` when the Docker client asked for `AutoRemove` (`docker run --rm`).
pub const ANNOTATION_AUTO_REMOVE: &str = "podbridge.io/auto-remove";
/// Annotation: every mount and the pod volume that serves it, compact JSON, so the runtime knows
/// which client paths to copy into which emptyDir and which PersistentVolumeClaims to create.
pub const ANNOTATION_MOUNTS: &str = "podbridge.io/mounts";
/// Annotation: the requested host port bindings in Docker's shape
/// (`{"80/tcp":[{"HostIp":"","HostPort":"8080"}]}`), for the runtime's port forwarding.
pub const ANNOTATION_PORT_BINDINGS: &str = "podbridge.io/port-bindings";

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
