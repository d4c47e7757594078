//! Docker Engine API request shapes, mirrored field for field so decoding is a plain serde step.
//!
//! Every field is optional and `null` is accepted wherever Go clients send it; unknown fields are
//! ignored, as dockerd ignores them. Validation and meaning live in [`super::decode`].

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// Body of `POST /containers/create`: Docker's `ContainerConfig` with `HostConfig` and
/// `NetworkingConfig` nested.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerCreateBody {
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub user: Option<String>,
    pub attach_stdin: Option<bool>,
    pub attach_stdout: Option<bool>,
    pub attach_stderr: Option<bool>,
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    pub tty: Option<bool>,
    pub open_stdin: Option<bool>,
    pub stdin_once: Option<bool>,
    pub env: Option<Vec<String>>,
    #[serde(deserialize_with = "string_or_list")]
    pub cmd: Option<Vec<String>>,
    pub healthcheck: Option<HealthConfig>,
    pub image: Option<String>,
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    pub working_dir: Option<String>,
    #[serde(deserialize_with = "string_or_list")]
    pub entrypoint: Option<Vec<String>>,
    pub network_disabled: Option<bool>,
    /// Not Docker's: written by podbridge into the stored request when a container is
    /// disconnected from the network its `NetworkMode` names (names and Ids), which Docker keeps.
    pub podbridge_detached_networks: Option<Vec<String>>,
    pub mac_address: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<i64>,
    pub host_config: Option<HostConfig>,
    pub networking_config: Option<NetworkingConfig>,
}

/// Docker `HealthConfig`; durations in nanoseconds, 0 meaning "inherit".
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthConfig {
    pub test: Option<Vec<String>>,
    pub interval: Option<i64>,
    pub timeout: Option<i64>,
    pub retries: Option<i64>,
    pub start_period: Option<i64>,
    pub start_interval: Option<i64>,
}

/// Docker `HostConfig`, the part of the request that describes the sandbox.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    // Resources.
    pub cpu_shares: Option<i64>,
    pub memory: Option<i64>,
    pub cgroup_parent: Option<String>,
    pub blkio_weight: Option<i64>,
    pub cpu_period: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_realtime_period: Option<i64>,
    pub cpu_realtime_runtime: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub devices: Option<Vec<serde_json::Value>>,
    pub device_requests: Option<Vec<serde_json::Value>>,
    pub memory_reservation: Option<i64>,
    pub memory_swap: Option<i64>,
    pub memory_swappiness: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub oom_kill_disable: Option<bool>,
    pub init: Option<bool>,
    pub pids_limit: Option<i64>,
    pub ulimits: Option<Vec<serde_json::Value>>,
    // Sandbox.
    pub binds: Option<Vec<String>>,
    pub log_config: Option<LogConfig>,
    pub network_mode: Option<String>,
    pub port_bindings: Option<BTreeMap<String, Option<Vec<PortBinding>>>>,
    pub restart_policy: Option<RestartPolicy>,
    pub auto_remove: Option<bool>,
    pub volume_driver: Option<String>,
    pub volumes_from: Option<Vec<String>>,
    pub mounts: Option<Vec<Mount>>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub cap_add: Option<Vec<String>>,
    pub cap_drop: Option<Vec<String>>,
    pub dns: Option<Vec<String>>,
    pub dns_options: Option<Vec<String>>,
    pub dns_search: Option<Vec<String>>,
    pub extra_hosts: Option<Vec<String>>,
    pub group_add: Option<Vec<String>>,
    pub ipc_mode: Option<String>,
    pub links: Option<Vec<String>>,
    pub oom_score_adj: Option<i64>,
    pub pid_mode: Option<String>,
    pub privileged: Option<bool>,
    pub publish_all_ports: Option<bool>,
    pub readonly_rootfs: Option<bool>,
    pub security_opt: Option<Vec<String>>,
    pub storage_opt: Option<BTreeMap<String, String>>,
    pub tmpfs: Option<BTreeMap<String, String>>,
    #[serde(rename = "UTSMode")]
    pub uts_mode: Option<String>,
    pub userns_mode: Option<String>,
    pub shm_size: Option<i64>,
    pub sysctls: Option<BTreeMap<String, String>>,
    pub runtime: Option<String>,
    pub isolation: Option<String>,
    pub masked_paths: Option<Vec<String>>,
    pub readonly_paths: Option<Vec<String>>,
}

/// Docker `LogConfig`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct LogConfig {
    #[serde(rename = "Type")]
    pub kind: Option<String>,
}

/// One host binding of a container port.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    pub host_ip: Option<String>,
    pub host_port: Option<String>,
}

/// Docker `RestartPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicy {
    pub name: Option<String>,
    pub maximum_retry_count: Option<i64>,
}

/// One `HostConfig.Mounts` entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Mount {
    pub target: Option<String>,
    pub source: Option<String>,
    #[serde(rename = "Type")]
    pub kind: Option<String>,
    pub read_only: Option<bool>,
    pub bind_options: Option<serde_json::Value>,
    pub volume_options: Option<serde_json::Value>,
    pub tmpfs_options: Option<TmpfsOptions>,
}

/// `Mount.TmpfsOptions`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TmpfsOptions {
    pub size_bytes: Option<i64>,
    pub mode: Option<i64>,
}

/// Docker `NetworkingConfig`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkingConfig {
    /// Keyed by network name or ID; the CLI uses `default` for the default bridge.
    pub endpoints_config: Option<BTreeMap<String, Option<EndpointSettings>>>,
}

/// One network endpoint of the container.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointSettings {
    pub aliases: Option<Vec<String>>,
    #[serde(rename = "NetworkID")]
    pub network_id: Option<String>,
    pub links: Option<Vec<String>>,
    #[serde(rename = "IPAMConfig")]
    pub ipam_config: Option<serde_json::Value>,
}

/// Docker's `StrSlice`: `Cmd` and `Entrypoint` may be a single string (old clients) or a list.
fn string_or_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum StringOrList {
        One(String),
        Many(Vec<String>),
    }
    Ok(
        Option::<StringOrList>::deserialize(deserializer)?.map(|value| match value {
            StringOrList::One(one) => vec![one],
            StringOrList::Many(many) => many,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_and_unknown_fields_are_accepted() {
        let body: ContainerCreateBody = serde_json::from_str(
            r#"{"Image":"alpine","Cmd":null,"Env":null,"ConsoleSize":[0,0],
                "HostConfig":{"PortBindings":{"80/tcp":null},"LogConfig":{"Type":"","Config":{}}},
                "NetworkingConfig":{"EndpointsConfig":{"default":null}}}"#,
        )
        .unwrap();
        assert_eq!(body.cmd, None);
        let host = body.host_config.unwrap();
        assert_eq!(host.port_bindings.unwrap()["80/tcp"], None);
    }

    #[test]
    fn cmd_may_be_a_single_string() {
        let body: ContainerCreateBody =
            serde_json::from_str(r#"{"Cmd":"echo hi","Entrypoint":["sh","-c"]}"#).unwrap();
        assert_eq!(body.cmd, Some(vec!["echo hi".to_owned()]));
        assert_eq!(
            body.entrypoint,
            Some(vec!["sh".to_owned(), "-c".to_owned()])
        );
    }
}
