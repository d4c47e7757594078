//! The record of one created container: what the runtime needs to serve it after podbridge
//! restarts, kept in one typed value.
//!
//! `render` builds it from the [`Workload`](super::Workload) (only rendering knows which pod
//! volume serves which mount), the runtime stores it in the container's spec ConfigMap and
//! decodes it once per view. Networks, port bindings and the auto-remove flag are not copied
//! out of the request: the request is the one place they live, and every reader derives them
//! from it, so a `network connect` that rewrites the request cannot leave a stale copy behind.

use serde::{Deserialize, Serialize};

/// The state of one created container that is not in its Kubernetes objects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    /// The `ContainerCreate` body as the client sent it (updated by `network connect`,
    /// `disconnect`, `update` and link removal), so `inspect` answers in Docker's words.
    pub request: serde_json::Value,
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
    /// A record of `request` with nothing else known yet.
    pub fn of_request(request: serde_json::Value) -> Self {
        ContainerRecord {
            request,
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

    pub fn tty(&self) -> bool {
        self.request["Tty"].as_bool().unwrap_or(false)
    }

    /// `docker run --rm`.
    pub fn auto_remove(&self) -> bool {
        self.request["HostConfig"]["AutoRemove"]
            .as_bool()
            .unwrap_or(false)
    }

    /// Whether the request configures a healthcheck (`NONE` disables it).
    pub fn has_healthcheck(&self) -> bool {
        has_healthcheck(&self.request)
    }

    /// Docker labels from the create request.
    pub fn docker_labels(&self) -> serde_json::Map<String, serde_json::Value> {
        self.request["Labels"]
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    /// The signal `stop` sends first (`SIGTERM` unless the request names one).
    pub fn stop_signal(&self) -> String {
        self.request["StopSignal"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("SIGTERM")
            .to_string()
    }
}

/// Whether a create request configures a healthcheck (`NONE` disables it).
pub fn has_healthcheck(request: &serde_json::Value) -> bool {
    match request["Healthcheck"]["Test"].as_array() {
        Some(test) => !test.is_empty() && test[0].as_str() != Some("NONE"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ContainerRecord {
        ContainerRecord {
            request: serde_json::json!({"Image": "nginx", "Tty": true,
                "HostConfig": {"AutoRemove": true}, "Labels": {"a": "b"}}),
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
        let minimal = ContainerRecord::of_request(serde_json::json!({"Image": "busybox"}));
        let json = serde_json::to_string(&minimal).unwrap();
        assert_eq!(json, r#"{"request":{"Image":"busybox"}}"#);
        assert_eq!(
            serde_json::from_str::<ContainerRecord>(&json).unwrap(),
            minimal
        );
    }

    #[test]
    fn accessors_read_the_request_and_mounts() {
        let record = record();
        assert!(record.tty() && record.auto_remove() && !record.has_healthcheck());
        assert_eq!(record.docker_labels()["a"], "b");
        assert_eq!(record.stop_signal(), "SIGTERM");
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

    #[test]
    fn healthchecks_of_none_are_off() {
        assert!(has_healthcheck(
            &serde_json::json!({"Healthcheck": {"Test": ["CMD", "true"]}})
        ));
        assert!(!has_healthcheck(
            &serde_json::json!({"Healthcheck": {"Test": ["NONE"]}})
        ));
        assert!(!has_healthcheck(&serde_json::json!({})));
    }
}
