//! The workload: one Docker container's request, decoded and validated, ready for rendering.

use std::collections::BTreeMap;

use super::ImageRef;

/// Everything podbridge understood from one `ContainerCreate` request.
///
/// Fields are what the client asked for, not what the cluster will allow: policy decides about
/// privileged containers, host namespaces and host paths after rendering.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Docker name without the leading slash, when the client gave one.
    pub name: Option<String>,
    /// The image the client asked for, normalised.
    pub image: ImageRef,
    /// The reference the pod pulls instead, for an image built by podbridge (its pushed
    /// digest in the build registry); `None` pulls `image`.
    pub pull_image: Option<String>,
    /// Docker `Entrypoint`; `None` keeps the image's.
    pub entrypoint: Option<Vec<String>>,
    /// Docker `Cmd`; `None` keeps the image's (unless an entrypoint was given, as in Docker).
    pub cmd: Option<Vec<String>>,
    pub env: Vec<EnvVar>,
    pub working_dir: Option<String>,
    pub user: Option<User>,
    pub stdio: Stdio,
    /// Every port that is exposed or published, sorted and without duplicates.
    pub ports: Vec<PortSpec>,
    /// `PublishAllPorts`: bind every exposed port to a random host port.
    pub publish_all_ports: bool,
    pub mounts: Vec<Mount>,
    /// Docker labels from the request (image labels are not copied).
    pub labels: BTreeMap<String, String>,
    pub resources: Resources,
    pub network: Network,
    pub healthcheck: Option<Healthcheck>,
    pub restart: RestartPolicy,
    pub security: Security,
    pub extra_hosts: Vec<ExtraHost>,
    /// Docker's legacy links (`HostConfig.Links`), on the default bridge network only (dockerd
    /// ignores them on another network). Resolved when the container starts
    /// ([`super::LinkedContainer`]).
    pub links: Vec<super::Link>,
    pub dns: Dns,
    pub shm_size_bytes: Option<i64>,
    /// Docker `StopSignal`, verbatim (Kubernetes always sends SIGTERM first).
    pub stop_signal: Option<String>,
    /// Docker `StopTimeout` in seconds; `None` means Docker's default of 10.
    pub stop_timeout_seconds: Option<i64>,
    /// Docker `--init`: run a reaper as PID 1.
    pub init: bool,
    /// Docker `--rm`: delete the container once it exits.
    pub auto_remove: bool,
    pub sysctls: BTreeMap<String, String>,
    /// Numeric `GroupAdd` entries (names cannot be resolved without the image's `/etc/group`).
    pub supplemental_groups: Vec<i64>,
    pub pid_mode: NamespaceMode,
    pub ipc_mode: NamespaceMode,
    /// The request as one JSON document (the one the rules read), kept so `inspect` can answer
    /// after a restart; shared, not copied, between the decoder's output and the workload.
    pub create_request: std::sync::Arc<serde_json::Value>,
}

/// One `Env` entry. `value: None` is Docker's `NAME` without `=`: remove the image's variable.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: Option<String>,
}

/// Docker `User`: the raw string plus the numeric IDs Kubernetes can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// As the client wrote it (`1000:1000`, `redis`, `root`).
    pub raw: String,
    /// Numeric user ID when the user part is a number or `root`.
    pub uid: Option<i64>,
    /// Numeric group ID when the group part is a number or `root`.
    pub gid: Option<i64>,
}

/// Terminal and standard-stream settings; the runtime needs the attach flags, the pod only the first three.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stdio {
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
}

/// Transport protocol of a port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Docker's spelling, as in `80/tcp`.
    pub fn docker_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// Kubernetes' spelling, as in `protocol: TCP`.
    pub fn kubernetes_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// A container port, with the host bindings the client asked for (empty: exposed only).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortSpec {
    pub port: u16,
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<HostBinding>,
}

/// One `PortBindings` entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostBinding {
    /// `HostIp`; `None` means all addresses.
    pub host_ip: Option<String>,
    /// `HostPort`; `None` means "pick a free port". For a range, its first port.
    pub host_port: Option<u16>,
}

/// A filesystem mount inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Absolute path inside the container.
    pub target: String,
    pub source: MountSource,
    pub read_only: bool,
    /// JSON pointer of the request field that asked for it (`/HostConfig/Binds/0`), so a
    /// refusal can say where to look.
    pub field: String,
}

/// Where a mount's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A path on the Docker client's side. The cluster cannot see it: the runtime copies it.
    Bind { path: String },
    /// A bind of the Docker socket itself (`/var/run/docker.sock`), served by podbridge instead.
    DockerSocket { path: String },
    /// A named volume; it outlives the container.
    Volume { name: String },
    /// An anonymous volume (`Volumes`, or a volume mount without a source): lives with the container.
    Anonymous,
    /// A tmpfs; `size_bytes` from `size=` or `TmpfsOptions.SizeBytes`.
    Tmpfs { size_bytes: Option<i64> },
}

/// Socket paths whose bind means "give the container the Docker API".
pub const DOCKER_SOCKET_PATHS: [&str; 2] = ["/var/run/docker.sock", "/run/docker.sock"];

/// Resource settings, only those the request set (defaults come from policy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub memory_bytes: Option<i64>,
    pub memory_reservation_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub cpu_shares: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<i64>,
}

/// Docker's CFS period when `CpuQuota` is given alone.
const DEFAULT_CPU_PERIOD: i64 = 100_000;

impl Resources {
    /// CPU limit in millicores, from `NanoCpus` or `CpuQuota`/`CpuPeriod`.
    pub fn cpu_limit_millicores(&self) -> Option<i64> {
        if let Some(nano) = self.nano_cpus.filter(|nano| *nano > 0) {
            return Some((nano / 1_000_000).max(1));
        }
        let quota = self.cpu_quota.filter(|quota| *quota > 0)?;
        let period = self
            .cpu_period
            .filter(|period| *period > 0)
            .unwrap_or(DEFAULT_CPU_PERIOD);
        Some((quota.saturating_mul(1000) / period).max(1))
    }

    /// CPU request in millicores from `CpuShares` (1024 shares = one core), never above the limit.
    pub fn cpu_request_millicores(&self) -> Option<i64> {
        let shares = self.cpu_shares.filter(|shares| *shares > 0)?;
        let request = (shares.saturating_mul(1000) / 1024).max(1);
        Some(match self.cpu_limit_millicores() {
            Some(limit) => request.min(limit),
            None => request,
        })
    }

    /// Memory request: the reservation if set, else the limit (Docker guarantees what it limits).
    pub fn memory_request_bytes(&self) -> Option<i64> {
        self.memory_reservation_bytes.or(self.memory_bytes)
    }
}

/// Networking as Docker sees it: one flat namespace in Kubernetes, so aliases become Services.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Network {
    pub mode: NetworkMode,
    /// Networks the container joins, by the name (or ID) the client used, with their aliases.
    pub attachments: Vec<NetworkAttachment>,
    /// Docker `Hostname`.
    pub hostname: Option<String>,
}

impl Network {
    /// All aliases over all networks, in request order, without duplicates.
    pub fn aliases(&self) -> Vec<String> {
        let mut aliases: Vec<String> = Vec::new();
        for alias in self.attachments.iter().flat_map(|network| &network.aliases) {
            if !aliases.contains(alias) {
                aliases.push(alias.clone());
            }
        }
        aliases
    }
}

/// One `EndpointsConfig` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkAttachment {
    pub network: String,
    pub aliases: Vec<String>,
}

/// Docker `NetworkMode`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// `""`, `default` or `bridge`.
    #[default]
    Bridge,
    Host,
    None,
    /// `container:<name|id>`: share another container's network namespace.
    Container(String),
    /// A user-defined network, by name or ID.
    Named(String),
}

/// Docker `PidMode` / `IpcMode`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NamespaceMode {
    #[default]
    Private,
    Host,
    /// `container:<name|id>`.
    Container(String),
}

/// A Docker healthcheck, durations already in whole seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    pub test: HealthTest,
    pub interval_seconds: i64,
    pub timeout_seconds: i64,
    pub start_period_seconds: i64,
    pub retries: i32,
}

/// What a healthcheck runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthTest {
    /// `["CMD", args...]`: exec directly.
    Exec(Vec<String>),
    /// `["CMD-SHELL", command]`: run with `/bin/sh -c`.
    Shell(String),
}

/// Docker restart policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", tag = "name")]
pub enum RestartPolicy {
    #[default]
    No,
    OnFailure {
        #[serde(rename = "maximumRetryCount")]
        maximum_retry_count: i64,
    },
    Always,
    UnlessStopped,
}

/// Security-relevant settings, as asked; policy decides whether they are allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    pub privileged: bool,
    /// Capability names without `CAP_`, uppercase.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub read_only_root_filesystem: bool,
    /// `no-new-privileges`.
    pub no_new_privileges: bool,
    /// `seccomp=unconfined`.
    pub seccomp_unconfined: bool,
    /// `apparmor=unconfined`.
    pub apparmor_unconfined: bool,
    /// `label=...` options.
    pub selinux: Option<SeLinux>,
    /// `systempaths=unconfined`: do not mask `/proc` paths.
    pub unmasked_system_paths: bool,
}

/// SELinux labelling asked with `label=` security options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeLinux {
    pub user: Option<String>,
    pub role: Option<String>,
    pub type_: Option<String>,
    pub level: Option<String>,
    /// `label=disable`: no confinement.
    pub disabled: bool,
}

/// An `ExtraHosts` entry (`name:ip`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraHost {
    pub hostname: String,
    pub ip: String,
}

/// DNS settings; empty vectors mean "as the cluster does it".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    pub servers: Vec<String>,
    pub search: Vec<String>,
    /// `name` or `name:value` options, split.
    pub options: Vec<(String, Option<String>)>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.search.is_empty() && self.options.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_cpu_numbers_saturate_instead_of_overflowing() {
        let resources = Resources {
            cpu_quota: Some(i64::MAX),
            cpu_period: Some(1),
            cpu_shares: Some(i64::MAX),
            ..Default::default()
        };
        assert_eq!(resources.cpu_limit_millicores(), Some(i64::MAX));
        assert_eq!(resources.cpu_request_millicores(), Some(i64::MAX / 1024));
    }

    #[test]
    fn cpu_limits_from_nano_cpus_and_quota() {
        let nano = Resources {
            nano_cpus: Some(1_500_000_000),
            ..Default::default()
        };
        assert_eq!(nano.cpu_limit_millicores(), Some(1500));
        let quota = Resources {
            cpu_quota: Some(50_000),
            ..Default::default()
        };
        assert_eq!(quota.cpu_limit_millicores(), Some(500));
        let quota_and_period = Resources {
            cpu_quota: Some(50_000),
            cpu_period: Some(200_000),
            ..Default::default()
        };
        assert_eq!(quota_and_period.cpu_limit_millicores(), Some(250));
    }

    #[test]
    fn cpu_request_from_shares_is_capped_by_the_limit() {
        let shares = Resources {
            cpu_shares: Some(512),
            ..Default::default()
        };
        assert_eq!(shares.cpu_request_millicores(), Some(500));
        let capped = Resources {
            cpu_shares: Some(4096),
            nano_cpus: Some(1_000_000_000),
            ..Default::default()
        };
        assert_eq!(capped.cpu_request_millicores(), Some(1000));
    }

    #[test]
    fn aliases_are_deduplicated_across_networks() {
        let network = Network {
            attachments: vec![
                NetworkAttachment {
                    network: "a".into(),
                    aliases: vec!["db".into(), "x".into()],
                },
                NetworkAttachment {
                    network: "b".into(),
                    aliases: vec!["db".into()],
                },
            ],
            ..Default::default()
        };
        assert_eq!(network.aliases(), vec!["db".to_owned(), "x".to_owned()]);
    }
}
