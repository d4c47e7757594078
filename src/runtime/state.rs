//! Maps the cluster's view of one container (its spec ConfigMap and, once started, its Pod) to
//! Docker's container state. Pure: no I/O, so every mapping is unit-tested.

use std::sync::Arc;

use crate::labels;
use crate::model::ContainerRecord;
pub use crate::model::LastExit;
use k8s_openapi::api::core::v1::{ConfigMap, ContainerStatus, Pod};

/// Docker's zero time, which clients print as "never".
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
/// Key of the spec ConfigMap's data holding the rendered objects.
pub const SPEC_DATA_KEY: &str = "objects.json";
/// The one container podbridge runs the Docker process in.
pub const MAIN_CONTAINER: &str = "main";

/// Docker's `State` of one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerState {
    /// `created`, `running`, `restarting`, `removing`, `exited` or `dead`.
    pub status: &'static str,
    pub running: bool,
    pub exit_code: i64,
    pub started_at: String,
    pub finished_at: String,
    pub oom_killed: bool,
    pub error: String,
    /// `starting`, `healthy` or `unhealthy`; `None` without a healthcheck.
    pub health: Option<&'static str>,
    /// Identifies one exit (pod uid + finish time), so `wait?condition=next-exit` can tell a new
    /// exit from the one it saw when it began.
    pub exit_key: Option<String>,
    /// `main` has actually started (a pending pod already shows as running, as Docker shows a
    /// container between `start` and its process; the `start` event waits for this).
    pub main_started: bool,
    /// Restarts of `main` by its restart policy (the kubelet's `restartCount`).
    pub restart_count: i64,
}

impl ContainerState {
    fn created() -> Self {
        ContainerState {
            status: "created",
            running: false,
            exit_code: 0,
            started_at: ZERO_TIME.into(),
            finished_at: ZERO_TIME.into(),
            oom_killed: false,
            error: String::new(),
            health: None,
            exit_key: None,
            main_started: false,
            restart_count: 0,
        }
    }

    fn exited(last: &LastExit, key: String) -> Self {
        ContainerState {
            status: "exited",
            exit_code: last.exit_code,
            started_at: last.started_at.clone(),
            finished_at: last.finished_at.clone(),
            oom_killed: last.oom_killed,
            restart_count: last.restart_count,
            exit_key: Some(key),
            ..ContainerState::created()
        }
    }

    pub fn is_exited(&self) -> bool {
        matches!(self.status, "exited" | "dead")
    }

    /// Docker's list `Status` column: `Up …`, `Exited (N) …`, `Created`.
    pub fn human_status(&self, now: jiff::Timestamp) -> String {
        let ago = |at: &str| -> String {
            at.parse::<jiff::Timestamp>()
                .ok()
                .map(|t| human_duration((now.as_second() - t.as_second()).max(0)))
                .unwrap_or_else(|| "Less than a second".into())
        };
        match self.status {
            "running" => {
                let health = match self.health {
                    Some("healthy") => " (healthy)",
                    Some("unhealthy") => " (unhealthy)",
                    Some(_) => " (health: starting)",
                    None => "",
                };
                format!("Up {}{health}", ago(&self.started_at))
            }
            "exited" | "dead" => {
                format!("Exited ({}) {} ago", self.exit_code, ago(&self.finished_at))
            }
            "restarting" => {
                format!(
                    "Restarting ({}) {} ago",
                    self.exit_code,
                    ago(&self.finished_at)
                )
            }
            "removing" => "Removal In Progress".into(),
            _ => "Created".into(),
        }
    }
}

fn human_duration(seconds: i64) -> String {
    match seconds {
        s if s < 1 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "About a minute".into(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if s < 7200 => "About an hour".into(),
        s if s < 172_800 => format!("{} hours", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

/// The Docker state of a container from its pod (if started) and the last recorded exit.
pub fn container_state(
    pod: Option<&Pod>,
    last_exit: Option<&LastExit>,
    has_healthcheck: bool,
) -> ContainerState {
    let Some(pod) = pod else {
        return match last_exit {
            Some(last) => ContainerState::exited(last, format!("last/{}", last.finished_at)),
            None => ContainerState::created(),
        };
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let status = pod.status.as_ref();
    let main = main_status(pod);
    if let Some(terminated) = main
        .and_then(|s| s.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
    {
        let last = LastExit {
            exit_code: terminated.exit_code as i64,
            started_at: terminated
                .started_at
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_else(|| ZERO_TIME.into()),
            finished_at: terminated
                .finished_at
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_else(|| ZERO_TIME.into()),
            oom_killed: terminated.reason.as_deref() == Some("OOMKilled"),
            restart_count: main.map_or(0, |s| i64::from(s.restart_count)),
        };
        if copy_back_pending(pod) {
            // Docker's container has not exited until what it wrote to its binds is back on
            // the client's side: `wait`, `die` and `--rm` come after the copy.
            return ContainerState {
                status: "running",
                running: true,
                started_at: last.started_at,
                main_started: true,
                restart_count: last.restart_count,
                ..ContainerState::created()
            };
        }
        let key = format!("{uid}/{}", last.finished_at);
        let mut state = ContainerState::exited(&last, key);
        state.error = match terminated.reason.as_deref() {
            Some("Error" | "Completed" | "OOMKilled") | None => String::new(),
            Some(other) => terminated
                .message
                .clone()
                .unwrap_or_else(|| other.to_string()),
        };
        return state;
    }
    if pod.metadata.deletion_timestamp.is_some() {
        if let Some(last) = last_exit {
            return ContainerState::exited(last, format!("last/{}", last.finished_at));
        }
        return ContainerState {
            status: "removing",
            running: false,
            ..ContainerState::created()
        };
    }
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if matches!(phase, "Failed" | "Succeeded") {
        let last = LastExit {
            exit_code: if phase == "Succeeded" { 0 } else { 137 },
            started_at: status
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0.to_string())
                .unwrap_or_else(|| ZERO_TIME.into()),
            finished_at: ZERO_TIME.into(),
            oom_killed: false,
            restart_count: 0,
        };
        let mut state = ContainerState::exited(&last, format!("{uid}/phase"));
        state.status = "dead";
        state.error = status.and_then(|s| s.message.clone()).unwrap_or_default();
        return state;
    }
    let restart_count = main.map_or(0, |s| i64::from(s.restart_count));
    let restarts = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.restart_policy.as_deref())
        .is_some_and(|policy| policy != "Never");
    let waiting_reason = main
        .and_then(|s| s.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.as_deref());
    if let (true, Some("CrashLoopBackOff"), Some(last)) = (
        restarts,
        waiting_reason,
        main.and_then(|s| s.last_state.as_ref())
            .and_then(|s| s.terminated.as_ref()),
    ) {
        // Between two runs of a restart policy: Docker's "restarting", with the last exit.
        let at = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
            t.map(|t| t.0.to_string())
                .unwrap_or_else(|| ZERO_TIME.into())
        };
        return ContainerState {
            status: "restarting",
            running: true,
            exit_code: i64::from(last.exit_code),
            started_at: at(last.started_at.as_ref()),
            finished_at: at(last.finished_at.as_ref()),
            restart_count,
            main_started: true,
            ..ContainerState::created()
        };
    }
    let running = main
        .and_then(|s| s.state.as_ref())
        .and_then(|s| s.running.as_ref());
    let waiting_error = main
        .and_then(|s| s.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
        .filter(|w| is_start_failure(w.reason.as_deref().unwrap_or_default()))
        .map(|w| {
            format!(
                "{}: {}",
                w.reason.clone().unwrap_or_default(),
                w.message.clone().unwrap_or_default()
            )
        });
    let ready = main.map(|s| s.ready).unwrap_or(false);
    ContainerState {
        status: "running",
        running: true,
        started_at: running
            .and_then(|r| r.started_at.as_ref())
            .map(|t| t.0.to_string())
            .or_else(|| {
                pod.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
            })
            .unwrap_or_else(|| ZERO_TIME.into()),
        error: waiting_error.unwrap_or_default(),
        health: health_of(
            pod,
            has_healthcheck,
            ready,
            running.and_then(|r| r.started_at.as_ref()),
        ),
        main_started: running.is_some(),
        restart_count,
        ..ContainerState::created()
    }
}

/// Docker's health from the readiness probe the healthcheck became (the request's or the image's:
/// the probe is in the pod either way): `healthy` while ready; `starting` until the probe had
/// its start period and `failureThreshold` tries; `unhealthy` after that without being ready —
/// what Docker reports after `retries` failed checks.
fn health_of(
    pod: &Pod,
    requested: bool,
    ready: bool,
    started: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
) -> Option<&'static str> {
    let probe = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.containers.iter().find(|c| c.name == MAIN_CONTAINER))
        .and_then(|main| main.readiness_probe.as_ref());
    if probe.is_none() && !requested {
        return None;
    }
    if ready {
        return Some("healthy");
    }
    let (Some(probe), Some(started)) = (probe, started) else {
        return Some("starting");
    };
    // (the timeout bounds a check that hangs; a check that fails fails at once, as `false`)
    let window = i64::from(probe.initial_delay_seconds.unwrap_or(0))
        + i64::from(probe.period_seconds.unwrap_or(10)).max(1)
            * i64::from(probe.failure_threshold.unwrap_or(3)).max(1)
        + 1;
    let running_for = jiff::Timestamp::now().as_second() - started.0.as_second();
    Some(if running_for > window {
        "unhealthy"
    } else {
        "starting"
    })
}

/// Waiting reasons that mean the container will not start without intervention.
pub fn is_start_failure(reason: &str) -> bool {
    matches!(
        reason,
        "ErrImagePull"
            | "ImagePullBackOff"
            | "ErrImageNeverPull"
            | "InvalidImageName"
            | "CreateContainerError"
            | "CreateContainerConfigError"
            | "RunContainerError"
            | "CrashLoopBackOff"
    )
}

/// The container that keeps the writable binds after `main` exits (`render::pod`'s name).
pub const BIND_KEEPER_CONTAINER: &str = crate::render::BIND_KEEPER_CONTAINER;

/// Whether `main` has exited but its writable binds are still to be copied back: the keeper
/// runs (or has not been seen to start) and the pod is not being deleted.
pub fn copy_back_pending(pod: &Pod) -> bool {
    let has_keeper = pod.spec.as_ref().is_some_and(|spec| {
        spec.containers
            .iter()
            .any(|c| c.name == BIND_KEEPER_CONTAINER)
    });
    let keeper_ended = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == BIND_KEEPER_CONTAINER))
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.terminated.is_some());
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    has_keeper
        && !keeper_ended
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Status of the `main` container, if the kubelet reported one.
pub fn main_status(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == MAIN_CONTAINER))
}

/// One container as podbridge sees it: the spec ConfigMap, its record, the pod if any, and the
/// derived state.
#[derive(Debug, Clone)]
pub struct ContainerView {
    pub id: String,
    pub name: String,
    pub pod_name: String,
    pub created: String,
    pub image: String,
    /// The container's record (create request, mounts, last exit), decoded once per version of
    /// the spec and shared by every view of that version.
    pub record: Arc<ContainerRecord>,
    pub spec: Arc<ConfigMap>,
    pub pod: Option<Arc<Pod>>,
    pub state: ContainerState,
}

impl ContainerView {
    /// Builds the view; `None` if the ConfigMap is not a container spec.
    pub fn new(spec: Arc<ConfigMap>, pod: Option<Arc<Pod>>) -> Option<Self> {
        let record = Arc::new(super::record::read_record(&spec));
        Self::with_record(spec, pod, record)
    }

    /// As [`Self::new`], with the record already decoded (the runtime keeps them per version).
    pub fn with_record(
        spec: Arc<ConfigMap>,
        pod: Option<Arc<Pod>>,
        record: Arc<ContainerRecord>,
    ) -> Option<Self> {
        let annotations = spec.metadata.annotations.as_ref()?;
        let id = annotations.get(labels::ANNOTATION_CONTAINER_ID)?.clone();
        let mut state = container_state(
            pod.as_deref(),
            record.last_exit.as_ref(),
            record.settings.healthcheck,
        );
        // A container podbridge serves itself (built-in Ryuk) has no pod: its record says.
        if let Some(since) = annotations
            .get(labels::ANNOTATION_RUNNING_SINCE)
            .filter(|_| annotations.contains_key(labels::ANNOTATION_BUILTIN))
        {
            state = ContainerState {
                status: "running",
                running: true,
                started_at: since.clone(),
                main_started: true,
                ..ContainerState::created()
            };
        }
        Some(ContainerView {
            name: annotations
                .get(labels::ANNOTATION_NAME)
                .cloned()
                .unwrap_or_default(),
            created: annotations
                .get(labels::ANNOTATION_CREATED)
                .cloned()
                .unwrap_or_default(),
            image: annotations
                .get(labels::ANNOTATION_IMAGE)
                .cloned()
                .unwrap_or_default(),
            pod_name: spec.metadata.name.clone().unwrap_or_default(),
            id,
            record,
            spec,
            pod,
            state,
        })
    }

    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }

    pub fn tty(&self) -> bool {
        self.record.settings.tty
    }

    pub fn auto_remove(&self) -> bool {
        self.record.settings.auto_remove
    }

    /// Docker named volumes the container mounts: a volume is in use, and cannot be removed,
    /// while any container that mounts it exists, running or not.
    pub fn named_volumes(&self) -> Vec<String> {
        self.record.named_volumes()
    }

    /// Docker labels from the create request.
    pub fn docker_labels(&self) -> serde_json::Map<String, serde_json::Value> {
        self.record.settings.docker_labels()
    }

    pub fn pod_ip(&self) -> Option<String> {
        self.pod
            .as_ref()?
            .status
            .as_ref()?
            .pod_ip
            .clone()
            .filter(|ip| !ip.is_empty())
    }

    /// The policy's bound on this container's grace period (seconds), if a rule set one.
    pub fn max_stop_timeout(&self) -> Option<i64> {
        self.record.max_stop_timeout
    }

    /// Whether an `on-failure:N` restart policy has used its N restarts.
    pub fn retries_exhausted(&self) -> bool {
        match self.record.settings.restart {
            crate::model::RestartPolicy::OnFailure {
                maximum_retry_count,
            } => maximum_retry_count > 0 && self.state.restart_count >= maximum_retry_count,
            _ => false,
        }
    }

    pub fn stop_signal(&self) -> String {
        self.record.stop_signal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u1"},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn an_exit_waits_for_the_bind_copy_back() {
        let keeper_pod = |keeper_state: serde_json::Value, phase: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "uid": "u1"},
                "spec": {"containers": [{"name": "main", "image": "busybox"},
                                        {"name": BIND_KEEPER_CONTAINER, "image": "busybox"}]},
                "status": {"phase": phase, "containerStatuses": [
                    {"name": "main", "ready": false, "restartCount": 0, "image": "", "imageID": "",
                     "state": {"terminated": {"exitCode": 3, "startedAt": "2024-01-01T00:00:00Z",
                                              "finishedAt": "2024-01-01T00:00:05Z"}}},
                    {"name": BIND_KEEPER_CONTAINER, "ready": true, "restartCount": 0, "image": "",
                     "imageID": "", "state": keeper_state},
                ]},
            }))
            .unwrap()
        };
        let copying = keeper_pod(
            serde_json::json!({"running": {"startedAt": "2024-01-01T00:00:00Z"}}),
            "Running",
        );
        assert!(copy_back_pending(&copying));
        let state = container_state(Some(&copying), None, false);
        assert_eq!((state.status, state.running), ("running", true));
        assert_eq!(state.exit_key, None);

        let released = keeper_pod(serde_json::json!({"terminated": {"exitCode": 0}}), "Failed");
        assert!(!copy_back_pending(&released));
        let state = container_state(Some(&released), None, false);
        assert_eq!((state.status, state.exit_code), ("exited", 3));

        // a pod being deleted copies nothing back any more
        let mut deleting = copying.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2024-01-01T00:00:06Z".parse().unwrap(),
            ));
        assert!(!copy_back_pending(&deleting));
        assert!(!copy_back_pending(&pod(
            serde_json::json!({"phase": "Running"})
        )));
    }

    #[test]
    fn no_pod_is_created() {
        let state = container_state(None, None, false);
        assert_eq!(state.status, "created");
        assert!(!state.running);
        assert_eq!(state.finished_at, ZERO_TIME);
    }

    #[test]
    fn terminated_main_is_exited_with_its_code() {
        let p = pod(
            serde_json::json!({"phase": "Failed", "containerStatuses": [{
            "name": "main", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 3, "reason": "Error",
                "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:05Z"}}}]}),
        );
        let state = container_state(Some(&p), None, false);
        assert_eq!(state.status, "exited");
        assert_eq!(state.exit_code, 3);
        assert_eq!(state.finished_at, "2026-01-01T00:00:05Z");
        assert_eq!(state.exit_key.as_deref(), Some("u1/2026-01-01T00:00:05Z"));
    }

    #[test]
    fn oom_is_reported() {
        let p = pod(
            serde_json::json!({"phase": "Failed", "containerStatuses": [{
            "name": "main", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
        );
        assert!(container_state(Some(&p), None, false).oom_killed);
    }

    #[test]
    fn running_with_healthcheck_follows_readiness() {
        let p = pod(
            serde_json::json!({"phase": "Running", "containerStatuses": [{
            "name": "main", "image": "busybox", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}),
        );
        let state = container_state(Some(&p), None, true);
        assert!(state.running);
        assert_eq!(state.health, Some("healthy"));
        assert_eq!(container_state(Some(&p), None, false).health, None);
    }

    #[test]
    fn health_follows_the_probe_and_its_window() {
        let status = |ready: bool, started: &str| {
            serde_json::json!({"phase": "Running", "containerStatuses": [{
                "name": "main", "image": "redis", "imageID": "", "ready": ready, "restartCount": 0,
                "state": {"running": {"startedAt": started}}}]})
        };
        let mut p = pod(status(false, "2020-01-01T00:00:00Z"));
        // no probe, no healthcheck: no health
        assert_eq!(container_state(Some(&p), None, false).health, None);
        // the image's healthcheck became the probe: health without a request healthcheck
        p.spec.as_mut().unwrap().containers[0].readiness_probe = Some(
            serde_json::from_value(serde_json::json!({"periodSeconds": 1, "failureThreshold": 3}))
                .unwrap(),
        );
        assert_eq!(
            container_state(Some(&p), None, false).health,
            Some("unhealthy")
        );
        let now = jiff::Timestamp::now().to_string();
        p.status = pod(status(false, &now)).status;
        assert_eq!(
            container_state(Some(&p), None, false).health,
            Some("starting")
        );
        p.status = pod(status(true, "2020-01-01T00:00:00Z")).status;
        assert_eq!(
            container_state(Some(&p), None, false).health,
            Some("healthy")
        );
    }

    #[test]
    fn a_restart_policy_between_runs_is_restarting() {
        let mut p = pod(
            serde_json::json!({"phase": "Running", "containerStatuses": [{
            "name": "main", "image": "busybox", "imageID": "", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            "lastState": {"terminated": {"exitCode": 2, "reason": "Error",
                "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:01Z"}}}]}),
        );
        let never = container_state(Some(&p), None, false);
        assert_eq!(never.status, "running");
        assert!(
            never.error.starts_with("CrashLoopBackOff"),
            "{}",
            never.error
        );
        p.spec.as_mut().unwrap().restart_policy = Some("Always".into());
        let state = container_state(Some(&p), None, false);
        assert_eq!(
            (
                state.status,
                state.running,
                state.exit_code,
                state.restart_count
            ),
            ("restarting", true, 2, 3)
        );
        assert!(state.error.is_empty());
        let now: jiff::Timestamp = "2026-01-01T00:00:31Z".parse().unwrap();
        assert_eq!(state.human_status(now), "Restarting (2) 30 seconds ago");
    }

    #[test]
    fn recorded_exit_survives_pod_deletion() {
        let last = LastExit {
            exit_code: 137,
            finished_at: "2026-01-01T00:00:05Z".into(),
            ..Default::default()
        };
        let state = container_state(None, Some(&last), false);
        assert_eq!((state.status, state.exit_code), ("exited", 137));
    }

    #[test]
    fn human_status_reads_like_docker() {
        let now: jiff::Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let last = LastExit {
            exit_code: 1,
            finished_at: "2026-01-01T00:00:00Z".into(),
            ..Default::default()
        };
        assert_eq!(
            container_state(None, Some(&last), false).human_status(now),
            "Exited (1) 10 minutes ago"
        );
    }
}
