//! podbridge's own configuration, layered with figment: built-in defaults < config file
//! (`--config`, TOML or YAML) < `PODBRIDGE_*` environment < command-line flags. The project and
//! namespace come from here, never from Docker clients, which is what makes override bounds hold.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml, Yaml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::render::{NamedVolumes, VolumeAccessMode};

/// Pod Security Standard profile.
// One type for the operator's sessions (it is part of the CRD schema, so its docs are the
// schema's) and for `policy_profile`, the built-in policies' profile the broker's grant sets.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PolicyProfile {
    /// Prevents known privilege escalations; what most Docker-based CI workloads need.
    #[default]
    Baseline,
    /// Hardened: non-root, no privilege escalation, dropped capabilities, seccomp.
    Restricted,
}

impl PolicyProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyProfile::Baseline => "baseline",
            PolicyProfile::Restricted => "restricted",
        }
    }
}

/// The shape of podbridge's log lines on stderr (config `log_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event, with the span's fields: what log pipelines (Loki, Elastic,
    /// Cloud Logging) parse without a grok pattern, and what `benches/docker_run.sh` reads the
    /// phase timings from.
    Json,
}

/// Errors building the configuration; figment's message already names the key and its source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    #[error("configuration file {path}: unknown extension (use .toml, .yaml or .yml)")]
    UnknownFormat { path: PathBuf },
    #[error("configuration file {path} does not exist")]
    MissingFile { path: PathBuf },
    #[error("configuration: volume_size {value:?} is not a positive Kubernetes quantity (examples: 512Mi, 1Gi, 10Gi)")]
    InvalidVolumeSize { value: String },
    #[error("configuration: {0} (bind roots are absolute directories on podbridge's host, such as \"/builds\")")]
    InvalidBindRoot(#[from] crate::model::binds::InvalidBindRoot),
    #[error("configuration: bind_size_limit {value:?} is not a positive Kubernetes quantity of bytes (examples: 256Mi, 1Gi)")]
    InvalidBindSizeLimit { value: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the readiness endpoints listen unless configured (`readiness.rs` serves them; the
/// configuration owns the default so neither module imports the other's internals; 2476 is
/// the test cluster's own readiness server).
pub const DEFAULT_READINESS_LISTEN: &str = "127.0.0.1:2477";

/// Where the projected token for the session broker is mounted unless configured.
pub const DEFAULT_SESSION_TOKEN_FILE: &str = "/var/run/secrets/podbridge.io/token";

/// The builder image `docker build` runs in unless configured (`build_image`).
pub const DEFAULT_BUILD_IMAGE: &str = "quay.io/buildah/stable:latest";

/// The top-level keys, so only `PODBRIDGE_<KEY>` variables that name one are read: the test
/// harness and the cluster scripts use other `PODBRIDGE_*` variables of their own, and
/// `PODBRIDGE_CONFIG` names the file (the `--config` flag), not a key.
const KEYS: [&str; 54] = [
    "namespace",
    "instance",
    "project",
    "policies",
    "policy_profile",
    "rules_dir",
    "name_prefix",
    "init_image",
    "labels",
    "annotations",
    "docker_host_for_pods",
    "listen",
    "unix_socket",
    "readiness_listen",
    "dry_run",
    "log",
    "log_format",
    "worker_threads",
    "scripts",
    "start_timeout_seconds",
    "cleanup_on_exit",
    "reaper_idle_seconds",
    "lock",
    "registry_lookup",
    "registry_mirrors",
    "registry_ca_files",
    "named_volumes",
    "volume_size",
    "volume_storage_class",
    "volume_access_mode",
    "max_containers",
    "max_stored_bytes",
    "max_archives_per_container",
    "max_streams",
    "max_json_body_bytes",
    "max_archive_bytes",
    "max_concurrent_copies",
    "unix_socket_mode",
    "bind_roots",
    "bind_size_limit",
    "builtin_ryuk",
    "ryuk_restart_grace_seconds",
    "tls_cert",
    "tls_key",
    "tls_ca",
    "insecure_tcp",
    "session_broker",
    "session_broker_ca",
    "session_token_file",
    "build_image",
    "build_registry",
    "build_pull_registry",
    "build_registry_insecure",
    "build_timeout_seconds",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Namespace podbridge creates its objects in; `None` means the kubeconfig's or in-cluster one.
    pub namespace: Option<String>,
    /// Identifies this podbridge among others sharing a namespace; derived from the host when unset.
    pub instance: Option<String>,
    /// The CI project (for example its path), matched by policy selectors and override bounds.
    pub project: Option<String>,
    /// Policy directories, overlaid in order (a later file with the same name replaces an earlier
    /// one); empty means the policies built into the binary.
    pub policies: Vec<PathBuf>,
    /// The built-in policies' profile when `policies` is empty (`restricted` adds the built-in
    /// `policies/restricted` overlay); `None` is baseline. The session broker's grant sets it, so
    /// the Docker API shapes pods the way the session namespace's admission webhook demands.
    pub policy_profile: Option<PolicyProfile>,
    /// Directory of Rhai files that rules name with `scriptFile`; built-in scripts fill the gaps.
    pub rules_dir: Option<PathBuf>,
    /// First part of every pod name.
    pub name_prefix: String,
    /// Image of the init container that holds `main` back until bind mounts are copied in.
    pub init_image: String,
    /// Labels and annotations added to every object (also from `K8S_LABEL_*` / `K8S_ANNOTATION_*`).
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// How pods reach podbridge (given to containers that bind the Docker socket, such as Ryuk).
    pub docker_host_for_pods: Option<String>,
    /// TCP address of the Docker API.
    pub listen: String,
    /// Optional unix socket for the Docker API, served beside TCP.
    pub unix_socket: Option<PathBuf>,
    /// Permission bits of the unix socket (octal in files, e.g. `0o600` or `"600"`); it never
    /// exists with wider ones. Default 0600: only the owner may connect.
    #[serde(with = "octal_mode")]
    pub unix_socket_mode: u32,
    /// Where `serve` also answers `/docker-ready`, `/kubernetes-ready` and `/metrics`, apart
    /// from the Docker API so its clients see no route Docker lacks; `None` turns them off.
    pub readiness_listen: Option<String>,
    /// Answer Docker clients without a cluster and print what would be applied.
    pub dry_run: bool,
    /// tracing filter, e.g. `info` or `podbridge=debug`.
    pub log: String,
    /// How log lines are written: for people (`text`) or for log pipelines (`json`).
    pub log_format: LogFormat,
    /// Threads that serve requests and watches. A bridge mostly waits for the API server, and
    /// every thread keeps allocator caches of its own: a small fixed number keeps its memory the
    /// same on a 2-core runner and on a 64-core node (tokio's default is one per core).
    pub worker_threads: NonZeroUsize,
    /// Limits on rule scripts.
    pub scripts: ScriptLimits,
    /// Seconds `start` waits for a pod to run before reporting the Kubernetes reason.
    pub start_timeout_seconds: u64,
    /// Delete what this instance created when it stops.
    pub cleanup_on_exit: bool,
    /// Remove objects of instances idle longer than this (seconds); 0 disables the reaper.
    pub reaper_idle_seconds: u64,
    /// Hold a Lease so only one podbridge works in the namespace at a time.
    pub lock: bool,
    /// Which registries image configs are read from: `all`, `loopback` (air-gapped runs and
    /// tests) or `off`.
    pub registry_lookup: crate::runtime::registry::Lookup,
    /// `REGISTRY=URL` entries: read that registry's configs from the mirror instead (a CI's
    /// pull-through cache); should match the mirrors the cluster's nodes pull through.
    pub registry_mirrors: Vec<String>,
    /// PEM files of CAs trusted for registries besides the system's roots.
    pub registry_ca_files: Vec<PathBuf>,
    /// What backs Docker named volumes: `claim` (a PersistentVolumeClaim per volume, shared and
    /// lasting as in Docker; needs a StorageClass that provisions) or `emptyDir` (per pod, for
    /// clusters without storage).
    pub named_volumes: NamedVolumes,
    /// Requested size of each volume's claim (a volume's `size` option overrides it).
    pub volume_size: String,
    /// StorageClass of the claims; unset means the cluster's default class.
    pub volume_storage_class: Option<String>,
    /// `ReadWriteOnce` (enough on one node) or `ReadWriteMany` (containers sharing a volume
    /// across nodes; the storage must support it).
    pub volume_access_mode: VolumeAccessMode,
    /// Containers this instance keeps (created or running); a create beyond answers 403.
    pub max_containers: usize,
    /// Bytes this instance keeps in ConfigMaps (container specs, files copied before start,
    /// networks, volumes); a write beyond answers 403.
    pub max_stored_bytes: u64,
    /// Files copied into one created container before it starts (one ConfigMap each).
    pub max_archives_per_container: usize,
    /// Streaming requests open at once (logs follow, attach, exec start, events, stats
    /// stream); one more answers 429.
    pub max_streams: usize,
    /// Largest JSON request body; a larger one answers 413.
    pub max_json_body_bytes: usize,
    /// Largest tar `docker cp` sends into or reads out of a container.
    pub max_archive_bytes: usize,
    /// `docker cp` transfers held in memory at once; one more answers 429.
    pub max_concurrent_copies: usize,
    /// Absolute directories on podbridge's host under which bind sources (`-v /src:/dst`,
    /// `--mount type=bind`) are allowed; every other bind is refused at create (403). Empty (the
    /// default) allows none. The Docker socket is not a bind: podbridge serves it itself.
    pub bind_roots: Vec<String>,
    /// Largest tar stream copied for one bind at start (a Kubernetes quantity of bytes); a
    /// larger source fails the start. A plain number is bytes.
    #[serde(deserialize_with = "quantity_text")]
    pub bind_size_limit: String,
    /// Serve testcontainers' reaper (`testcontainers/ryuk`) inside podbridge instead of as a
    /// pod: it then works with podbridge on loopback, and a session needs one pod fewer. `false`
    /// runs the image as any other (it needs `docker_host_for_pods`).
    pub builtin_ryuk: bool,
    /// After a restart of podbridge, how long a built-in Ryuk whose clients were connected waits
    /// for one to come back before it prunes (the restart cut their connections, not the end of
    /// their sessions).
    pub ryuk_restart_grace_seconds: u64,
    /// Serve the TCP listener over TLS with this certificate chain and key (PEM), requiring
    /// client certificates signed by `tls_ca`, as `dockerd --tlsverify` does. All three or none.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    /// Allow a TCP `listen` address off loopback without TLS: anyone who reaches it controls
    /// this namespace's containers (the Docker API has no authentication of its own).
    pub insecure_tcp: bool,
    /// The operator's session broker (`https://…/v1/session`): podbridge proves its pod with
    /// `session_token_file` and gets its session's namespace, project and credentials, which it
    /// keeps in memory. Set, it overrides the kubeconfig and refuses a conflicting `namespace` or
    /// `project`: the platform, not the job, decides them.
    pub session_broker: Option<String>,
    /// CA certificate (PEM) the broker's serving certificate is checked against (the operator
    /// publishes it as ConfigMap `podbridge-operator-ca` in each runner namespace).
    pub session_broker_ca: Option<PathBuf>,
    /// A token bound to this pod with audience `podbridge.io` (a projected serviceAccountToken
    /// volume mounted in podbridge's container alone).
    pub session_token_file: PathBuf,
    /// The builder image `docker build` runs in (buildah: `buildah bud`, `buildah push`).
    pub build_image: String,
    /// Repository prefix built images are pushed to, as builder pods reach the registry
    /// (`registry.example:5000/ci-builds`). Unset: `docker build` answers 501.
    pub build_registry: Option<String>,
    /// The same prefix as the nodes pull from it, when that name differs (a registry on the
    /// node's loopback, say); defaults to `build_registry`.
    pub build_pull_registry: Option<String>,
    /// The build registry is plain HTTP or its certificate is not trusted by the builder.
    pub build_registry_insecure: bool,
    /// How long one build may run before its builder pod is deleted.
    pub build_timeout_seconds: u64,
}

/// A quantity written as text (`256Mi`) or, from the environment or YAML, as a bare number.
fn quantity_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Text(String),
        Number(u64),
    }
    Ok(match Text::deserialize(deserializer)? {
        Text::Text(text) => text,
        Text::Number(number) => number.to_string(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptLimits {
    pub max_operations: u64,
    pub deadline_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        let limits = crate::runtime::limits::Limits::default();
        Config {
            namespace: None,
            instance: None,
            project: None,
            policies: Vec::new(),
            policy_profile: None,
            rules_dir: None,
            name_prefix: "podbridge".into(),
            init_image: "docker.io/library/busybox:latest".into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            docker_host_for_pods: None,
            listen: "127.0.0.1:2475".into(),
            unix_socket: None,
            readiness_listen: Some(DEFAULT_READINESS_LISTEN.into()),
            dry_run: false,
            log: "info".into(),
            log_format: LogFormat::Text,
            worker_threads: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
            scripts: ScriptLimits {
                max_operations: 100_000,
                deadline_ms: 50,
            },
            start_timeout_seconds: 120,
            cleanup_on_exit: true,
            reaper_idle_seconds: 3600,
            lock: false,
            registry_lookup: Default::default(),
            registry_mirrors: Vec::new(),
            registry_ca_files: Vec::new(),
            named_volumes: NamedVolumes::Claim,
            volume_size: "1Gi".into(),
            volume_storage_class: None,
            volume_access_mode: VolumeAccessMode::ReadWriteOnce,
            unix_socket_mode: 0o600,
            max_containers: limits.max_containers,
            max_stored_bytes: limits.max_stored_bytes,
            max_archives_per_container: limits.max_archives_per_container,
            max_streams: limits.max_streams,
            max_json_body_bytes: limits.max_json_body_bytes,
            max_archive_bytes: limits.max_archive_bytes,
            max_concurrent_copies: limits.max_concurrent_copies,
            bind_roots: Vec::new(),
            bind_size_limit: "256Mi".into(),
            builtin_ryuk: true,
            ryuk_restart_grace_seconds: 600,
            session_broker: None,
            session_broker_ca: None,
            session_token_file: DEFAULT_SESSION_TOKEN_FILE.into(),
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            insecure_tcp: false,
            build_image: DEFAULT_BUILD_IMAGE.into(),
            build_registry: None,
            build_pull_registry: None,
            build_registry_insecure: false,
            build_timeout_seconds: 1800,
        }
    }
}

impl Config {
    /// Layers the sources. `overrides` is the command line, serialized with `None` fields
    /// skipped, so an absent flag never hides the file or the environment.
    pub fn load<T: Serialize>(file: Option<&Path>, overrides: &T) -> Result<Self> {
        let config: Config = Self::figment(file, overrides)?
            .extract()
            .map_err(|e| Error::Invalid(Box::new(e)))?;
        // Checked here so a typo fails start-up, not the first `docker volume create`.
        let zero = crate::rules::quantity::Quantity::from_integer(0);
        match crate::rules::quantity::Quantity::parse(&config.volume_size) {
            Ok(size) if size > zero => {}
            _ => {
                return Err(Error::InvalidVolumeSize {
                    value: config.volume_size,
                })
            }
        }
        config.bind_roots()?;
        config.bind_size_limit_bytes()?;
        Ok(config)
    }

    /// The validated `bind_roots`.
    pub fn bind_roots(&self) -> Result<crate::model::BindRoots> {
        Ok(crate::model::BindRoots::new(&self.bind_roots)?)
    }

    /// `bind_size_limit` in bytes.
    pub fn bind_size_limit_bytes(&self) -> Result<u64> {
        let invalid = || Error::InvalidBindSizeLimit {
            value: self.bind_size_limit.clone(),
        };
        let quantity = crate::rules::quantity::Quantity::parse(&self.bind_size_limit)
            .map_err(|_| invalid())?;
        u64::try_from(quantity.whole_units())
            .ok()
            .filter(|bytes| *bytes > 0)
            .ok_or_else(invalid)
    }

    pub fn figment<T: Serialize>(file: Option<&Path>, overrides: &T) -> Result<Figment> {
        let mut figment = Figment::new().merge(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(Error::MissingFile { path: path.into() });
            }
            figment = match path.extension().and_then(|e| e.to_str()) {
                Some("toml") => figment.merge(Toml::file(path)),
                Some("yaml") | Some("yml") => figment.merge(Yaml::file(path)),
                _ => return Err(Error::UnknownFormat { path: path.into() }),
            };
        }
        figment = figment
            .merge(
                Env::prefixed("PODBRIDGE_")
                    .filter(|key| {
                        let key = key.as_str().to_ascii_lowercase();
                        KEYS.contains(&key.split("__").next().unwrap_or_default())
                    })
                    .split("__"),
            )
            .merge(Env::prefixed("K8S_LABEL_").map(|key| format!("labels.{key}").into()))
            .merge(Env::prefixed("K8S_ANNOTATION_").map(|key| format!("annotations.{key}").into()))
            .merge(Serialized::defaults(overrides));
        Ok(figment)
    }

    /// The per-instance caps the runtime enforces.
    pub fn limits(&self) -> crate::runtime::limits::Limits {
        crate::runtime::limits::Limits {
            max_containers: self.max_containers,
            max_stored_bytes: self.max_stored_bytes,
            max_archives_per_container: self.max_archives_per_container,
            max_streams: self.max_streams,
            max_json_body_bytes: self.max_json_body_bytes,
            max_archive_bytes: self.max_archive_bytes,
            max_concurrent_copies: self.max_concurrent_copies,
        }
    }

    pub fn script_limits(&self) -> crate::rules::Limits {
        crate::rules::Limits {
            max_operations: self.scripts.max_operations,
            deadline: std::time::Duration::from_millis(self.scripts.deadline_ms),
            ..crate::rules::Limits::default()
        }
    }

    /// The instance ID: configured, or derived from the host name so a restarted podbridge on the
    /// same host (the same CI job) finds its own objects again.
    pub fn instance_id(&self) -> String {
        if let Some(instance) = &self.instance {
            return instance.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "podbridge".into());
        crate::render::label_value(&host)
    }
}

/// Socket modes as people write them: `"0o600"`/`"0600"`/`"600"` strings, or a number whose
/// digits are read as octal (`600`; also what `0600` becomes through environment variables).
/// Serialized as `"0600"`.
mod octal_mode {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mode: &u32, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{mode:04o}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Text(String),
        }
        let mode = match Raw::deserialize(deserializer)? {
            Raw::Number(number) => u32::from_str_radix(&number.to_string(), 8).map_err(|_| {
                serde::de::Error::custom(format!(
                    "unix_socket_mode {number} is not an octal mode: write it as \"0600\""
                ))
            })?,
            Raw::Text(text) => {
                let digits = text.trim();
                let digits = digits.strip_prefix("0o").unwrap_or(digits);
                u32::from_str_radix(digits, 8).map_err(|_| {
                    serde::de::Error::custom(format!(
                        "unix_socket_mode {text:?} is not an octal mode such as 0600"
                    ))
                })?
            }
        };
        if mode > 0o777 {
            return Err(serde::de::Error::custom(format!(
                "unix_socket_mode {mode:o} has bits beyond 0777"
            )));
        }
        Ok(mode)
    }
}

#[cfg(test)]
// figment::Jail closures return figment::Error, which is large by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[derive(Serialize)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
    }

    #[test]
    fn layers_in_order_defaults_file_environment_flags() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "podbridge.toml",
                "namespace = \"from-file\"\nproject = \"file-project\"\nname_prefix = \"ci\"",
            )?;
            jail.set_env("PODBRIDGE_PROJECT", "env-project");
            jail.set_env("K8S_LABEL_TEAM", "blue");
            let path = Path::new("podbridge.toml");
            let config = Config::load(Some(path), &Flags { namespace: None }).unwrap();
            assert_eq!(config.namespace.as_deref(), Some("from-file"));
            assert_eq!(config.project.as_deref(), Some("env-project"));
            assert_eq!(config.name_prefix, "ci");
            assert_eq!(config.labels.get("team").map(String::as_str), Some("blue"));
            let config = Config::load(
                Some(path),
                &Flags {
                    namespace: Some("from-flag".into()),
                },
            )
            .unwrap();
            assert_eq!(config.namespace.as_deref(), Some("from-flag"));
            Ok(())
        });
    }

    #[test]
    fn every_key_can_come_from_the_environment() {
        let serialized = serde_json::to_value(Config::default()).unwrap();
        let mut fields: Vec<&str> = serialized
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort();
        let mut keys = KEYS.to_vec();
        keys.sort();
        assert_eq!(fields, keys);
    }

    #[test]
    fn the_config_file_variable_is_not_a_key() {
        Jail::expect_with(|jail| {
            jail.create_file("podbridge.yaml", "readiness_listen: 127.0.0.1:3999\n")?;
            jail.set_env("PODBRIDGE_CONFIG", "podbridge.yaml");
            let path = Path::new("podbridge.yaml");
            let config = Config::load(Some(path), &Flags { namespace: None }).unwrap();
            assert_eq!(config.readiness_listen.as_deref(), Some("127.0.0.1:3999"));
            Ok(())
        });
    }

    #[test]
    fn unrelated_podbridge_variables_are_ignored() {
        Jail::expect_with(|jail| {
            jail.set_env("PODBRIDGE_CLUSTER_STATE", "/var/lib/x");
            jail.set_env("PODBRIDGE_NAME_PREFIX", "ci");
            let config = Config::load(None, &Flags { namespace: None }).unwrap();
            assert_eq!(config.name_prefix, "ci");
            Ok(())
        });
    }

    #[test]
    fn log_format_is_text_or_json() {
        Jail::expect_with(|jail| {
            let config = Config::load(None, &Flags { namespace: None }).unwrap();
            assert_eq!(config.log_format, LogFormat::Text);
            jail.set_env("PODBRIDGE_LOG_FORMAT", "json");
            let config = Config::load(None, &Flags { namespace: None }).unwrap();
            assert_eq!(config.log_format, LogFormat::Json);
            jail.set_env("PODBRIDGE_LOG_FORMAT", "xml");
            let error = Config::load(None, &Flags { namespace: None }).unwrap_err();
            assert!(error.to_string().contains("LOG_FORMAT"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn named_volume_settings() {
        Jail::expect_with(|jail| {
            let config = Config::load(None, &Flags { namespace: None }).unwrap();
            assert_eq!(config.named_volumes, NamedVolumes::Claim);
            assert_eq!(config.volume_size, "1Gi");
            jail.set_env("PODBRIDGE_NAMED_VOLUMES", "emptyDir");
            jail.set_env("PODBRIDGE_VOLUME_ACCESS_MODE", "ReadWriteMany");
            jail.set_env("PODBRIDGE_VOLUME_STORAGE_CLASS", "fast");
            let config = Config::load(None, &Flags { namespace: None }).unwrap();
            assert_eq!(config.named_volumes, NamedVolumes::EmptyDir);
            assert_eq!(config.volume_access_mode, VolumeAccessMode::ReadWriteMany);
            assert_eq!(config.volume_storage_class.as_deref(), Some("fast"));
            jail.set_env("PODBRIDGE_VOLUME_SIZE", "big");
            let error = Config::load(None, &Flags { namespace: None }).unwrap_err();
            assert!(error.to_string().contains("volume_size \"big\""), "{error}");
            Ok(())
        });
    }

    #[test]
    fn limits_and_socket_mode_from_the_environment() {
        Jail::expect_with(|jail| {
            let config = Config::load(None, &Flags { namespace: None }).unwrap();
            assert_eq!(config.limits(), crate::runtime::limits::Limits::default());
            assert_eq!(config.unix_socket_mode, 0o600);
            jail.set_env("PODBRIDGE_MAX_CONTAINERS", "3");
            jail.set_env("PODBRIDGE_MAX_STREAMS", "5");
            jail.set_env("PODBRIDGE_UNIX_SOCKET_MODE", "0660");
            let config = Config::load(None, &Flags { namespace: None }).unwrap();
            assert_eq!(config.limits().max_containers, 3);
            assert_eq!(config.limits().max_streams, 5);
            assert_eq!(config.unix_socket_mode, 0o660);
            jail.set_env("PODBRIDGE_UNIX_SOCKET_MODE", "0999");
            assert!(Config::load(None, &Flags { namespace: None }).is_err());
            Ok(())
        });
    }

    #[test]
    fn bind_settings() {
        Jail::expect_with(|jail| {
            let config = Config::load(None, &Flags { namespace: None }).unwrap();
            assert!(config.bind_roots().unwrap().is_empty());
            assert_eq!(config.bind_size_limit_bytes().unwrap(), 256 << 20);
            jail.set_env("PODBRIDGE_BIND_ROOTS", "[\"/builds/\", \"/cache\"]");
            jail.set_env("PODBRIDGE_BIND_SIZE_LIMIT", "1Gi");
            let config = Config::load(None, &Flags { namespace: None }).unwrap();
            assert_eq!(config.bind_roots().unwrap().roots(), ["/builds", "/cache"]);
            assert_eq!(config.bind_size_limit_bytes().unwrap(), 1 << 30);
            jail.set_env("PODBRIDGE_BIND_ROOTS", "[\"builds\"]");
            let error = Config::load(None, &Flags { namespace: None }).unwrap_err();
            assert!(
                error.to_string().contains("bind_roots entry \"builds\""),
                "{error}"
            );
            jail.set_env("PODBRIDGE_BIND_ROOTS", "[]");
            jail.set_env("PODBRIDGE_BIND_SIZE_LIMIT", "4096");
            let config = Config::load(None, &Flags { namespace: None }).unwrap();
            assert_eq!(config.bind_size_limit_bytes().unwrap(), 4096);
            jail.set_env("PODBRIDGE_BIND_SIZE_LIMIT", "0");
            let error = Config::load(None, &Flags { namespace: None }).unwrap_err();
            assert!(
                error.to_string().contains("bind_size_limit \"0\""),
                "{error}"
            );
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_names_its_source() {
        Jail::expect_with(|jail| {
            jail.create_file("podbridge.yaml", "start_timeout_seconds: soon\n")?;
            let error = Config::load(
                Some(Path::new("podbridge.yaml")),
                &Flags { namespace: None },
            )
            .unwrap_err();
            let message = error.to_string();
            assert!(
                message.contains("start_timeout_seconds") && message.contains("podbridge.yaml"),
                "{message}"
            );
            Ok(())
        });
    }

    #[test]
    fn worker_threads_are_two_unless_set_and_never_zero() {
        Jail::expect_with(|jail| {
            let config = Config::load(None, &Flags { namespace: None }).unwrap();
            assert_eq!(config.worker_threads.get(), 2);
            jail.set_env("PODBRIDGE_WORKER_THREADS", "1");
            let config = Config::load(None, &Flags { namespace: None }).unwrap();
            assert_eq!(config.worker_threads.get(), 1);
            jail.set_env("PODBRIDGE_WORKER_THREADS", "0");
            let error = Config::load(None, &Flags { namespace: None }).unwrap_err();
            let message = error.to_string().to_lowercase();
            assert!(message.contains("worker_threads"), "{message}");
            Ok(())
        });
    }
}
