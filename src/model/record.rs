//! The record of one created container: what the runtime needs to serve it after podbridge
//! restarts, kept in one typed value.
//!
//! `render` builds it from the [`Workload`] (only rendering knows which pod volume serves which
//! mount), the runtime stores it in the container's spec ConfigMap and decodes it once per view.
//!
//! The create request is kept as the client sent it, for `inspect`; what the runtime acts on
//! (port bindings, restart policy, stop timeout, links, …) is [`RuntimeSettings`], typed by the
//! one decode of that request. Every change of the request (`network connect`, `update`, link
//! removal) is translated again, which writes both, so neither can go stale and no reader parses
//! the stored request a second time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{EnvVar, Link, NetworkMode, PortSpec, RestartPolicy, Workload};

/// The state of one created container that is not in its Kubernetes objects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    /// The `ContainerCreate` body as the client sent it (updated by `network connect`,
    /// `disconnect`, `update` and link removal), so `inspect` answers in Docker's words.
    pub request: serde_json::Value,
    /// The request as decoded: what the runtime acts on. A record written before these were
    /// kept reads Docker's defaults.
    #[serde(default)]
    pub settings: RuntimeSettings,
    /// Every mount and the pod volume that serves it: which client paths to copy into which
    /// emptyDir, which claims a start waits for, which volumes are in use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountRecord>,
    /// The largest grace period (seconds) the policy allows, from a `clamp` maximum on
    /// `/spec/terminationGracePeriodSeconds`: `docker stop -t` waits no longer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stop_timeout: Option<i64>,
    /// The last exit, recorded when the pod had to be deleted (stop, kill, end of restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<LastExit>,
}

/// The decoded create request, as far as the runtime acts on it after create.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeSettings {
    #[serde(default)]
    pub tty: bool,
    /// `docker run --rm`.
    #[serde(default)]
    pub auto_remove: bool,
    /// A healthcheck from the request or the image (`NONE` disables it).
    #[serde(default)]
    pub healthcheck: bool,
    /// Docker `StopSignal`; `None` is `SIGTERM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Docker `StopTimeout`; `None` is Docker's default of 10 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout_seconds: Option<i64>,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Every exposed or published port, with the host bindings asked for (`-P` included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// Legacy links as dockerd registers them (default bridge, `host`, `none`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    /// On Docker's default bridge network: the only place links give a container anything.
    #[serde(default)]
    pub default_bridge: bool,
    /// Docker `Hostname`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The request's `Env` (not the image's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Docker labels from the request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl RuntimeSettings {
    pub fn of(workload: &Workload) -> Self {
        RuntimeSettings {
            tty: workload.stdio.tty,
            auto_remove: workload.auto_remove,
            healthcheck: workload.healthcheck.is_some(),
            stop_signal: workload.stop_signal.clone().filter(|s| !s.is_empty()),
            stop_timeout_seconds: workload.stop_timeout_seconds,
            restart: workload.restart,
            ports: workload.ports.clone(),
            links: workload.links.clone(),
            default_bridge: workload.network.mode == NetworkMode::Bridge,
            hostname: workload.network.hostname.clone().filter(|h| !h.is_empty()),
            env: workload.env.clone(),
            labels: workload.labels.clone(),
        }
    }

    /// The labels in the shape Docker's JSON answers and filters use.
    pub fn docker_labels(&self) -> serde_json::Map<String, serde_json::Value> {
        self.labels
            .iter()
            .map(|(key, value)| (key.clone(), value.clone().into()))
            .collect()
    }

    /// The value of `name` in the request's `Env`, if set.
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|var| var.name == name)
            .and_then(|var| var.value.as_deref())
    }
}

/// One mount of the container and the pod volume that serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountRecord {
    #[serde(rename = "type")]
    pub kind: MountKind,
    /// The client's path (bind, Docker socket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The Docker volume's name (named volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The PersistentVolumeClaim of a named volume (`named_volumes = "claim"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// The pod volume (none for the Docker socket, which `DOCKER_HOST` replaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// What kind of source a [`MountRecord`] has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MountKind {
    Bind,
    DockerSocket,
    Volume,
    Anonymous,
    Tmpfs,
    /// A kind a later version wrote; read as nothing to do.
    #[serde(other)]
    Unknown,
}

/// One bind the runtime copies: the client path and the emptyDir volume that serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindCopy {
    pub source: String,
    pub volume: String,
}

/// A named volume the container mounts through a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMount {
    pub volume: String,
    pub claim: String,
}

/// What a stop recorded before it had to delete the pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LastExit {
    pub exit_code: i64,
    pub started_at: String,
    pub finished_at: String,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    /// Restarts by the restart policy before this exit.
    #[serde(default)]
    pub restart_count: i64,
}

impl ContainerRecord {
    /// A record of a decoded request with nothing else known yet: the request as the client
    /// sent it (the workload keeps it verbatim) and what the runtime acts on.
    pub fn of_workload(workload: &Workload) -> Self {
        ContainerRecord {
            request: (*workload.create_request).clone(),
            settings: RuntimeSettings::of(workload),
            ..ContainerRecord::default()
        }
    }

    /// The binds to copy into the pod before `main` starts.
    pub fn bind_copies(&self) -> Vec<BindCopy> {
        self.mounts
            .iter()
            .filter(|mount| mount.kind == MountKind::Bind)
            .filter_map(|mount| {
                Some(BindCopy {
                    source: mount.source.clone()?,
                    volume: mount.volume.clone()?,
                })
            })
            .collect()
    }

    /// Docker named volumes the container mounts: a volume is in use, and cannot be removed,
    /// while any container that mounts it exists, running or not.
    pub fn named_volumes(&self) -> Vec<String> {
        self.mounts
            .iter()
            .filter(|mount| mount.kind == MountKind::Volume)
            .filter_map(|mount| mount.name.clone())
            .collect()
    }

    /// The named volumes mounted through a PersistentVolumeClaim.
    pub fn claim_mounts(&self) -> Vec<ClaimMount> {
        self.mounts
            .iter()
            .filter(|mount| mount.kind == MountKind::Volume)
            .filter_map(|mount| {
                Some(ClaimMount {
                    volume: mount.name.clone()?,
                    claim: mount.claim.clone()?,
                })
            })
            .collect()
    }

    /// The signal `stop` sends first (`SIGTERM` unless the request names one).
    pub fn stop_signal(&self) -> String {
        self.settings
            .stop_signal
            .clone()
            .unwrap_or_else(|| "SIGTERM".to_string())
    }

    /// Seconds `stop` waits before it kills (Docker's default of 10 unless the request set one).
    pub fn stop_timeout_seconds(&self) -> i64 {
        self.settings.stop_timeout_seconds.unwrap_or(10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ContainerRecord {
        ContainerRecord {
            request: serde_json::json!({"Image": "nginx", "Tty": true,
                "HostConfig": {"AutoRemove": true}, "Labels": {"a": "b"}}),
            settings: RuntimeSettings {
                tty: true,
                auto_remove: true,
                stop_timeout_seconds: Some(3),
                restart: RestartPolicy::OnFailure {
                    maximum_retry_count: 2,
                },
                ports: vec![PortSpec {
                    port: 80,
                    protocol: super::super::Protocol::Udp,
                    bindings: vec![super::super::HostBinding {
                        host_ip: Some("::1".into()),
                        host_port: None,
                    }],
                }],
                links: vec![Link {
                    target: "db".into(),
                    alias: "database".into(),
                    target_id: Some("f00".into()),
                }],
                default_bridge: true,
                env: vec![
                    EnvVar {
                        name: "A".into(),
                        value: Some("1".into()),
                    },
                    EnvVar {
                        name: "GONE".into(),
                        value: None,
                    },
                ],
                labels: BTreeMap::from([("a".into(), "b".into())]),
                ..RuntimeSettings::default()
            },
            mounts: vec![
                MountRecord {
                    kind: MountKind::Bind,
                    source: Some("/src".into()),
                    name: None,
                    claim: None,
                    volume: Some("bind-0".into()),
                    target: "/dst".into(),
                    read_only: Some(false),
                },
                MountRecord {
                    kind: MountKind::Volume,
                    source: None,
                    name: Some("data".into()),
                    claim: Some("podbridge-volume-data-1".into()),
                    volume: Some("volume-1".into()),
                    target: "/data".into(),
                    read_only: Some(true),
                },
                MountRecord {
                    kind: MountKind::DockerSocket,
                    source: Some("/var/run/docker.sock".into()),
                    name: None,
                    claim: None,
                    volume: None,
                    target: "/var/run/docker.sock".into(),
                    read_only: None,
                },
            ],
            max_stop_timeout: Some(30),
            last_exit: Some(LastExit {
                exit_code: 3,
                started_at: "2025-01-01T00:00:00Z".into(),
                finished_at: "2025-01-01T00:00:05Z".into(),
                oom_killed: false,
                restart_count: 1,
            }),
        }
    }

    #[test]
    fn the_record_round_trips() {
        let record = record();
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            serde_json::from_str::<ContainerRecord>(&json).unwrap(),
            record
        );
        // The mounts keep the shape the annotation had, so old and new read alike.
        assert!(json.contains(r#"{"type":"bind","source":"/src","volume":"bind-0","target":"/dst","readOnly":false}"#), "{json}");
        assert!(
            json.contains(r#""restart":{"name":"onFailure","maximumRetryCount":2}"#),
            "{json}"
        );
        assert!(json.contains(r#""ports":[{"port":80,"protocol":"udp","bindings":[{"hostIp":"::1","hostPort":null}]}]"#), "{json}");
        // A record an earlier version wrote, without settings, reads Docker's defaults.
        let minimal: ContainerRecord =
            serde_json::from_str(r#"{"request":{"Image":"busybox"}}"#).unwrap();
        assert_eq!(minimal.settings, RuntimeSettings::default());
        assert_eq!(minimal.stop_timeout_seconds(), 10);
    }

    #[test]
    fn accessors_read_the_settings_and_mounts() {
        let record = record();
        assert_eq!(record.stop_signal(), "SIGTERM");
        assert_eq!(record.stop_timeout_seconds(), 3);
        assert_eq!(record.settings.env_value("A"), Some("1"));
        assert_eq!(record.settings.env_value("GONE"), None);
        assert_eq!(
            record.bind_copies(),
            [BindCopy {
                source: "/src".into(),
                volume: "bind-0".into()
            }]
        );
        assert_eq!(record.named_volumes(), ["data"]);
        assert_eq!(
            record.claim_mounts(),
            [ClaimMount {
                volume: "data".into(),
                claim: "podbridge-volume-data-1".into()
            }]
        );
    }

    #[test]
    fn an_unknown_mount_kind_is_read_as_nothing_to_do() {
        let mount: MountRecord =
            serde_json::from_str(r#"{"type":"image","target":"/x","volume":"image-0"}"#).unwrap();
        assert_eq!(mount.kind, MountKind::Unknown);
    }
}
