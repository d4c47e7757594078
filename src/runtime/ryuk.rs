//! Ryuk built in: testcontainers' reaper served by podbridge itself instead of as a pod.
//!
//! Every testcontainers client starts `testcontainers/ryuk`, binds the Docker socket into it and
//! connects to its port 8080, sending label filters; when the last connection has been gone for
//! the reconnection timeout, Ryuk removes everything matching. As a pod, that Ryuk must reach the
//! Docker API over the cluster network, which a sidecar podbridge on loopback does not offer (and
//! should not: the API has no authentication). So when a client creates the Ryuk image, podbridge
//! records the container as usual (its spec ConfigMap, so `ps`, `inspect`, `logs`, `wait`, events
//! and the name work) but runs no pod: `start` binds the published port on podbridge's own
//! publish address and speaks Ryuk's line protocol there, and the prune removes containers,
//! networks and volumes from podbridge's own view.
//!
//! State lives in the cluster: the filters, the bound port and the log are the record's data, so
//! a restarted podbridge serves the same port again with the same filters (see
//! [`Runtime::sync_ryuks`]). A restart of podbridge cuts the clients' connections without their
//! test session having ended, so it does not count as "the last client left": the reaper waits
//! for a new connection and prunes only after `ryuk_restart_grace_seconds` without one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, LinesCodec};
use tracing::{info, warn};

use super::state::LastExit;
use super::{ContainerView, Result, Runtime, RuntimeError};
use crate::labels;
use crate::model::ContainerRecord;

/// The repository testcontainers' reaper comes from, any tag (normalised, without registry
/// prefix as [`super::objects::normalise_image`] writes it).
pub const RYUK_REPOSITORY: &str = "testcontainers/ryuk";
/// Key of the record's data holding [`Record`].
pub const RECORD_KEY: &str = "ryuk.json";
/// Ryuk's own defaults (`RYUK_CONNECTION_TIMEOUT`, `RYUK_RECONNECTION_TIMEOUT`).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
const RECONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Hostile-input bounds: a protocol line, distinct filter sets, open connections, log lines.
const MAX_LINE: usize = 4096;
const MAX_FILTERS: usize = 64;
const MAX_CONNECTIONS: usize = 64;
const MAX_LOG_LINES: usize = 100;
/// Removal passes: a volume still mounted by a container being removed is tried again.
const PRUNE_PASSES: usize = 3;

/// Whether a create request's image is testcontainers' reaper.
pub fn is_ryuk_image(image: &str) -> bool {
    let normalised = super::objects::normalise_image(image);
    let name = normalised.split('@').next().unwrap_or_default();
    let repository = name
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or(name, |(repository, _)| repository);
    repository == RYUK_REPOSITORY
}

/// How podbridge treats the Ryuk image (config `builtin_ryuk`, `ryuk_restart_grace_seconds`).
#[derive(Debug, Clone, Copy)]
pub struct RyukSettings {
    pub builtin: bool,
    pub restart_grace: Duration,
}

impl Default for RyukSettings {
    fn default() -> Self {
        RyukSettings {
            builtin: true,
            restart_grace: Duration::from_secs(600),
        }
    }
}

/// One protocol line: Docker filters, all of which must hold (`label=a=b&label=c&name=x`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// `key` (present) or `key=value`.
    #[serde(default)]
    pub labels: Vec<(String, Option<String>)>,
    /// Any of these names (Docker's `name` filter is a substring match; Ryuk's clients send
    /// exact names, which match too).
    #[serde(default)]
    pub names: Vec<String>,
    /// Any of these ID prefixes.
    #[serde(default)]
    pub ids: Vec<String>,
}

impl Filter {
    /// Parses a line as Ryuk does (a URL query string of Docker filters). Unknown keys and a line
    /// without any condition are refused: a filter that matches everything is never a client's
    /// intent.
    pub fn parse(line: &str) -> std::result::Result<Filter, String> {
        let mut filter = Filter::default();
        for (key, value) in form_urlencoded::parse(line.trim().as_bytes()) {
            match key.as_ref() {
                "label" => filter.labels.push(match value.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (value.to_string(), None),
                }),
                "name" => filter.names.push(value.trim_start_matches('/').to_string()),
                "id" => filter.ids.push(value.to_string()),
                other => return Err(format!("unsupported filter {other:?}")),
            }
        }
        if filter.labels.iter().any(|(key, _)| key.is_empty())
            || filter.names.iter().chain(&filter.ids).any(String::is_empty)
        {
            return Err("empty filter value".into());
        }
        if filter == Filter::default() {
            return Err("no filter".into());
        }
        Ok(filter)
    }

    /// Whether an object with these Docker labels, name and ID matches every condition.
    pub fn matches(
        &self,
        object_labels: &serde_json::Map<String, serde_json::Value>,
        name: &str,
        id: &str,
    ) -> bool {
        let labels_hold = self.labels.iter().all(|(key, value)| {
            match (object_labels.get(key).and_then(|v| v.as_str()), value) {
                (Some(found), Some(wanted)) => found == wanted,
                (Some(_), None) => true,
                (None, _) => false,
            }
        });
        let name = name.trim_start_matches('/');
        labels_hold
            && (self.names.is_empty() || self.names.iter().any(|n| name.contains(n.as_str())))
            && (self.ids.is_empty() || self.ids.iter().any(|i| id.starts_with(i.as_str())))
    }
}

/// One log line of the reaper, as `docker logs` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub time: String,
    pub message: String,
}

/// What a built-in Ryuk keeps in the cluster (the record's [`RECORD_KEY`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The host port it serves; 0 before the first start.
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub log: Vec<LogLine>,
}

impl Record {
    pub fn of(view: &ContainerView) -> Record {
        view.spec
            .data
            .as_ref()
            .and_then(|data| data.get(RECORD_KEY))
            .and_then(|raw| serde_json::from_str(raw).ok())
            .unwrap_or_default()
    }

    fn say(&mut self, message: impl Into<String>) {
        if self.log.len() >= MAX_LOG_LINES {
            self.log.remove(0);
        }
        self.log.push(LogLine {
            time: super::now_rfc3339(),
            message: message.into(),
        });
    }
}

/// Timeouts from the container's environment, as Ryuk reads them (Go durations).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Timeouts {
    connection: Duration,
    reconnection: Duration,
}

impl Timeouts {
    fn of(settings: &crate::model::RuntimeSettings) -> Timeouts {
        let env = |name: &str| settings.env_value(name).and_then(go_duration);
        Timeouts {
            connection: env("RYUK_CONNECTION_TIMEOUT").unwrap_or(CONNECTION_TIMEOUT),
            reconnection: env("RYUK_RECONNECTION_TIMEOUT").unwrap_or(RECONNECTION_TIMEOUT),
        }
    }
}

/// A Go duration (`10s`, `1m30s`, `500ms`, `2h`) up to a day; `None` if malformed.
fn go_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(Duration::try_from_secs_f64(number * seconds).ok()?)?;
    }
    (total <= Duration::from_secs(86_400)).then_some(total)
}

/// How a running reaper is told to end.
enum Control {
    /// `stop` or a terminating signal: prune now, then exit 0, as at the end of a session.
    Finish { done: oneshot::Sender<()> },
    /// SIGKILL or `rm -f`: exit 137 without pruning.
    Kill { done: oneshot::Sender<()> },
}

/// A reaper this process serves.
pub(crate) struct Served {
    /// Between the task's spawn and the watch showing the record running: kept whatever the
    /// view says meanwhile.
    starting: bool,
    control: mpsc::Sender<Control>,
    task: JoinHandle<()>,
    pub address: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ContainerView {
    /// Whether this container is a built-in Ryuk (no pod; podbridge serves its port).
    pub fn is_builtin_ryuk(&self) -> bool {
        self.spec
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(labels::ANNOTATION_BUILTIN))
            .is_some_and(|kind| kind == labels::BUILTIN_RYUK)
    }

    /// Refuses what needs a process in the container (exec, copy, top, stats) for a built-in
    /// Ryuk, which has none.
    pub fn require_process(&self, what: &str) -> Result<()> {
        if self.is_builtin_ryuk() {
            return Err(RuntimeError::Conflict(format!(
                "{what} is not available in container {}: it is podbridge's built-in Ryuk reaper, which has no processes (set builtin_ryuk = false to run Ryuk as a pod)",
                self.short_id()
            )));
        }
        Ok(())
    }
}

impl Runtime {
    pub fn set_ryuk_settings(&self, settings: RyukSettings) {
        *self.ryuk_settings.lock() = settings;
    }

    pub fn ryuk_settings(&self) -> RyukSettings {
        *self.ryuk_settings.lock()
    }

    /// Records a created built-in Ryuk: a spec ConfigMap with the create request and an empty
    /// [`Record`], and no rendered objects (nothing is applied at start).
    pub async fn create_ryuk(
        &self,
        name: &str,
        id: &str,
        container: &ContainerRecord,
        image: &str,
        created: &str,
    ) -> Result<()> {
        let short_id = id.get(..12).unwrap_or(id);
        let pod_name = crate::render::pod_name("podbridge", Some(name), short_id);
        let record = serde_json::to_string(&Record::default()).unwrap_or_default();
        let annotations = BTreeMap::from([
            (labels::ANNOTATION_CONTAINER_ID.to_string(), id.to_string()),
            (labels::ANNOTATION_NAME.to_string(), name.to_string()),
            (labels::ANNOTATION_CREATED.to_string(), created.to_string()),
            (labels::ANNOTATION_IMAGE.to_string(), image.to_string()),
            (
                labels::ANNOTATION_BUILTIN.to_string(),
                labels::BUILTIN_RYUK.to_string(),
            ),
        ]);
        let spec = k8s_openapi::api::core::v1::ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(pod_name),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (labels::MANAGED_BY.into(), labels::MANAGED_BY_VALUE.into()),
                    (labels::INSTANCE.into(), self.instance.clone()),
                    (labels::CONTAINER_ID.into(), short_id.to_string()),
                    (labels::ROLE.into(), labels::ROLE_CONTAINER_SPEC.into()),
                ])),
                annotations: Some(annotations),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                (RECORD_KEY.to_string(), record),
                (
                    super::record::RECORD_DATA_KEY.to_string(),
                    super::record::encode(container),
                ),
            ])),
            ..Default::default()
        };
        self.store_new_spec(name, id, &spec).await
    }

    /// Starts serving a created (or exited) built-in Ryuk: binds its port (the one it had, if
    /// any), records it as running and waits until the watch shows that.
    pub async fn start_ryuk(self: &Arc<Self>, view: &ContainerView) -> Result<()> {
        if view.state.running {
            return Ok(());
        }
        let mut record = Record::of(view);
        let listener = self.bind_ryuk(view, record.port).await?;
        let address = listener.local_addr().map_err(|error| {
            RuntimeError::Conflict(format!("cannot bind the Ryuk port: {error}"))
        })?;
        record.port = address.port();
        record.filters.clear();
        record.say(format!(
            "podbridge built-in Ryuk: Started! (serving {address})"
        ));
        // Served (as starting) before the record says running, so a watch change in between
        // does not serve it a second time.
        self.serve_ryuk(view, listener, record.clone(), false, true);
        if let Err(error) = self.write_ryuk(view, &record, true, None).await {
            drop(self.ryuks.lock().remove(&view.id));
            return Err(error);
        }
        let id = view.id.clone();
        self.wait_until(Duration::from_secs(10), |rt| {
            rt.find(&id).map(|v| v.state.running).unwrap_or(true)
        })
        .await;
        if let Some(served) = self.ryuks.lock().get_mut(&view.id) {
            served.starting = false;
        }
        info!(container = %view.short_id(), %address, "Built-in Ryuk started");
        Ok(())
    }

    /// Ends a running built-in Ryuk: `prune` as at the end of a session (stop, SIGTERM), or
    /// not (SIGKILL, `rm -f`).
    pub async fn end_ryuk(&self, view: &ContainerView, prune: bool) -> Result<()> {
        let control = self.ryuks.lock().get(&view.id).map(|s| s.control.clone());
        let (done, finished) = oneshot::channel();
        let sent = match control {
            Some(control) => control
                .send(match prune {
                    true => Control::Finish { done },
                    false => Control::Kill { done },
                })
                .await
                .is_ok(),
            None => false,
        };
        if sent {
            // The task ends by recording the exit; a dropped sender means it was aborted.
            let _ = finished.await;
        } else if view.state.running {
            // Not served here (its port could not be bound again): record the exit.
            let mut record = Record::of(view);
            record.say("Stopped");
            self.write_ryuk(view, &record, false, Some(if prune { 0 } else { 137 }))
                .await?;
        }
        let id = view.id.clone();
        self.wait_until(Duration::from_secs(10), |rt| {
            rt.find(&id).map(|v| !v.state.running).unwrap_or(true)
        })
        .await;
        Ok(())
    }

    /// Serves the port of every running built-in Ryuk that this process does not serve yet (a
    /// restart), and forgets those that exited or were removed. Called on every watch change.
    pub fn sync_ryuks(self: &Arc<Self>, views: &[ContainerView]) {
        let resume: Vec<&ContainerView> = {
            let mut served = self.ryuks.lock();
            served.retain(|id, served| {
                served.starting
                    || views
                        .iter()
                        .any(|v| &v.id == id && v.is_builtin_ryuk() && !v.state.is_exited())
            });
            views
                .iter()
                .filter(|v| v.is_builtin_ryuk() && v.state.running && !served.contains_key(&v.id))
                .collect()
        };
        for view in resume {
            let mut record = Record::of(view);
            let bind = |port: u16| {
                std::net::TcpListener::bind(SocketAddr::new(self.publish_ip(), port)).and_then(
                    |listener| {
                        listener.set_nonblocking(true)?;
                        TcpListener::from_std(listener)
                    },
                )
            };
            // The same port, so clients that know it can come back; if it was taken meanwhile,
            // another one (inspect and the log say so), so the session still ends by itself.
            let listener = match bind(record.port) {
                Ok(listener) => listener,
                Err(error) => match bind(0) {
                    Ok(listener) => {
                        let now = listener.local_addr().map(|a| a.port()).unwrap_or_default();
                        warn!(container = %view.short_id(), was = record.port, now, %error, "The built-in Ryuk's port was taken during the restart; serving another");
                        record.say(format!(
                            "port {} could not be bound again after a restart ({error}); serving port {now}",
                            record.port
                        ));
                        record.port = now;
                        listener
                    }
                    Err(error) => {
                        warn!(container = %view.short_id(), %error, "Cannot serve the built-in Ryuk after a restart");
                        continue;
                    }
                },
            };
            info!(container = %view.short_id(), port = record.port, filters = record.filters.len(), "Built-in Ryuk served again after a restart");
            self.serve_ryuk(view, listener, record, true, false);
        }
    }

    /// Host addresses of a built-in Ryuk's port, for `inspect` and `ps`.
    pub fn ryuk_ports(&self, id: &str) -> Option<SocketAddr> {
        self.ryuks.lock().get(id).map(|served| served.address)
    }

    async fn bind_ryuk(&self, view: &ContainerView, stored_port: u16) -> Result<TcpListener> {
        // The client's own binding for 8080 wins (TESTCONTAINERS_RYUK_PORT), then the port this
        // container had, then any.
        let requested = super::ports::requested_bindings(&view.record.settings.ports)
            .get("8080/tcp")
            .and_then(|b| b.first().copied());
        let ip = requested
            .and_then(|b| b.host_ip)
            .unwrap_or_else(|| self.publish_ip());
        let port = requested
            .map(|b| b.host_port)
            .filter(|p| *p != 0)
            .unwrap_or(stored_port);
        match TcpListener::bind(SocketAddr::new(ip, port)).await {
            Ok(listener) => Ok(listener),
            Err(_) if port == stored_port && port != 0 => TcpListener::bind(SocketAddr::new(ip, 0))
                .await
                .map_err(|e| RuntimeError::Conflict(format!("cannot bind the Ryuk port: {e}"))),
            Err(error) => Err(RuntimeError::Conflict(format!(
                "driver failed programming external connectivity on endpoint {}: Bind for {ip}:{port} failed: {error}",
                view.name
            ))),
        }
    }

    fn serve_ryuk(
        self: &Arc<Self>,
        view: &ContainerView,
        listener: TcpListener,
        record: Record,
        resumed: bool,
        starting: bool,
    ) {
        let address = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::new(self.publish_ip(), record.port));
        let (control, commands) = mpsc::channel(4);
        let task = tokio::spawn(serve(
            self.clone(),
            view.id.clone(),
            listener,
            Timeouts::of(&view.record.settings),
            record,
            resumed,
            commands,
        ));
        self.ryuks.lock().insert(
            view.id.clone(),
            Served {
                starting,
                control,
                task,
                address,
            },
        );
    }

    /// Writes the record and the running state: `running` sets the start time, an `exit` code
    /// records the exit. The uid is a precondition: only this container's own record is written.
    async fn write_ryuk(
        &self,
        view: &ContainerView,
        record: &Record,
        running: bool,
        exit: Option<i64>,
    ) -> Result<()> {
        let now = super::now_rfc3339();
        let mut annotations = serde_json::Map::new();
        let mut container = (*view.record).clone();
        if running {
            annotations.insert(labels::ANNOTATION_RUNNING_SINCE.into(), now.clone().into());
            container.last_exit = None;
        }
        if let Some(exit_code) = exit {
            let started_at = view.state.started_at.clone();
            container.last_exit = Some(LastExit {
                exit_code,
                started_at,
                finished_at: now,
                oom_killed: false,
                restart_count: 0,
            });
            annotations.insert(
                labels::ANNOTATION_RUNNING_SINCE.into(),
                serde_json::Value::Null,
            );
        }
        // A record an earlier version kept in annotations moves to the data with this write.
        for key in labels::legacy::ALL {
            if view
                .spec
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(key))
            {
                annotations.insert(key.into(), serde_json::Value::Null);
            }
        }
        let mut metadata = serde_json::json!({ "annotations": annotations });
        if let Some(uid) = view.spec.metadata.uid.as_deref() {
            metadata["uid"] = uid.into();
        }
        let patch = serde_json::json!({
            "metadata": metadata,
            "data": {
                RECORD_KEY: serde_json::to_string(record).unwrap_or_default(),
                super::record::RECORD_DATA_KEY: super::record::encode(&container),
            },
        });
        self.applier
            .config_maps()
            .patch(
                &view.pod_name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .map_err(|source| RuntimeError::Kube {
                operation: "record the built-in Ryuk",
                pod: view.pod_name.clone(),
                source,
            })?;
        Ok(())
    }

    /// Removes every container (but `own`), network and volume a filter matches; returns how
    /// many of each.
    async fn prune_ryuk(&self, own: &str, filters: &[Filter]) -> (usize, usize, usize) {
        let matches =
            |labels: &serde_json::Map<String, serde_json::Value>, name: &str, id: &str| {
                filters.iter().any(|f| f.matches(labels, name, id))
            };
        let stored_labels =
            |object: &serde_json::Value| object["Labels"].as_object().cloned().unwrap_or_default();
        let (mut containers, mut networks, mut volumes) = (0, 0, 0);
        for _ in 0..PRUNE_PASSES {
            let doomed: Vec<ContainerView> = self
                .containers()
                .into_iter()
                .filter(|v| v.id != own && matches(&v.docker_labels(), &v.name, &v.id))
                .collect();
            let removals = doomed.iter().map(|view| async move {
                match self.remove_now(view).await {
                    Ok(()) => true,
                    Err(error) => {
                        warn!(container = %view.short_id(), %error, "Ryuk could not remove a container");
                        false
                    }
                }
            });
            containers += futures::future::join_all(removals)
                .await
                .into_iter()
                .filter(|removed| *removed)
                .count();
            for network in self.stored_objects(labels::ROLE_NETWORK) {
                let (name, id) = (
                    network["Name"].as_str().unwrap_or_default(),
                    network["Id"].as_str().unwrap_or_default(),
                );
                if !id.is_empty()
                    && matches(&stored_labels(&network), name, id)
                    && self.delete_object(labels::ROLE_NETWORK, id).await.is_ok()
                {
                    networks += 1;
                }
            }
            let mut left = 0;
            for volume in self.volumes() {
                let name = volume["Name"].as_str().unwrap_or_default();
                if name.is_empty() || !matches(&stored_labels(&volume), name, name) {
                    continue;
                }
                match self.remove_volume(name).await {
                    Ok(()) => volumes += 1,
                    Err(_) => left += 1,
                }
            }
            if left == 0 {
                break;
            }
        }
        (containers, networks, volumes)
    }
}

/// Events from the connections to the reaper's loop.
enum Event {
    Filter(Filter, oneshot::Sender<bool>),
    Closed,
}

/// The reaper: accepts connections, collects filters (each written to the record before its
/// `ACK`), and prunes once no client has been connected for the reconnection timeout (or none
/// came within the connection timeout), then exits.
async fn serve(
    runtime: Arc<Runtime>,
    id: String,
    listener: TcpListener,
    timeouts: Timeouts,
    mut record: Record,
    resumed: bool,
    mut control: mpsc::Receiver<Control>,
) {
    if resumed {
        // The port may have changed, and the log says so.
        if let Ok(view) = runtime.find(&id) {
            if let Err(error) = runtime.write_ryuk(&view, &record, false, None).await {
                warn!(container = %&id[..12], %error, "Ryuk record not updated");
            }
        }
    }
    let (events_tx, mut events) = mpsc::channel::<Event>(16);
    let mut connections = 0usize;
    let grace = runtime.ryuk_settings().restart_grace;
    let mut deadline = Some(
        Instant::now()
            + match resumed && !record.filters.is_empty() {
                true => grace,
                false => timeouts.connection,
            },
    );
    let ended: (i64, bool, Option<oneshot::Sender<()>>) = loop {
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if connections >= MAX_CONNECTIONS {
                    continue;
                }
                connections += 1;
                deadline = None;
                tracing::debug!(container = %&id[..12], %peer, "Ryuk client connected");
                tokio::spawn(connection(stream, events_tx.clone()));
            }
            Some(event) = events.recv() => match event {
                Event::Filter(filter, ack) => {
                    let known = record.filters.contains(&filter);
                    let room = record.filters.len() < MAX_FILTERS;
                    if !known && room {
                        record.filters.push(filter);
                        record.say(format!("Adding filter set {}", record.filters.len()));
                        if let Ok(view) = runtime.find(&id) {
                            if let Err(error) = runtime.write_ryuk(&view, &record, false, None).await {
                                warn!(container = %&id[..12], %error, "Ryuk filters not recorded");
                            }
                        }
                    }
                    let _ = ack.send(known || room);
                }
                Event::Closed => {
                    connections = connections.saturating_sub(1);
                    if connections == 0 {
                        deadline = Some(Instant::now() + timeouts.reconnection);
                    }
                }
            },
            _ = timer => break (0, true, None),
            Some(command) = control.recv() => match command {
                Control::Finish { done } => break (0, true, Some(done)),
                Control::Kill { done } => break (137, false, Some(done)),
            },
        }
    };
    let (exit_code, prune, done) = ended;
    drop(listener);
    if prune && !record.filters.is_empty() {
        let (containers, networks, volumes) = runtime.prune_ryuk(&id, &record.filters).await;
        record.say(format!(
            "Removed {containers} container(s), {networks} network(s), {volumes} volume(s)"
        ));
        info!(container = %&id[..12], containers, networks, volumes, "Built-in Ryuk pruned");
    }
    if let Ok(view) = runtime.find(&id) {
        // Its own container matches the session's filter (testcontainers-node labels it) or
        // asked for AutoRemove (testcontainers-python): it goes with the rest, as Ryuk's does.
        let own = record
            .filters
            .iter()
            .any(|f| f.matches(&view.docker_labels(), &view.name, &view.id));
        let result = if prune && (own || view.auto_remove()) {
            runtime.remove_now(&view).await
        } else {
            record.say("Exited");
            runtime
                .write_ryuk(&view, &record, false, Some(exit_code))
                .await
        };
        if let Err(error) = result {
            warn!(container = %view.short_id(), %error, "Built-in Ryuk's exit not recorded");
        }
    }
    if let Some(done) = done {
        let _ = done.send(());
    }
}

/// A built-in Ryuk's log from its record, with Docker's tail, since, until and timestamps;
/// `follow` goes on until it exits.
pub fn log_lines(
    runtime: Arc<Runtime>,
    id: String,
    options: super::logs::LogOptions,
) -> impl futures::Stream<Item = bytes::Bytes> + Send + 'static {
    let seconds = |time: &str| {
        time.parse::<jiff::Timestamp>()
            .map(|t| t.as_nanosecond() as f64 / 1e9)
            .unwrap_or(0.0)
    };
    async_stream::stream! {
        let mut changes = runtime.subscribe_changes();
        let mut last: Option<LogLine> = None;
        let mut first = true;
        loop {
            changes.borrow_and_update();
            let Ok(view) = runtime.find(&id) else { return };
            let log = Record::of(&view).log;
            let start = match &last {
                // Lines after the last one sent (the log may have rotated under it).
                Some(sent) => log.iter().rposition(|l| l == sent).map_or(0, |i| i + 1),
                None => match options.tail.filter(|t| *t >= 0 && first) {
                    Some(tail) => log.len().saturating_sub(tail as usize),
                    None => 0,
                },
            };
            first = false;
            for line in &log[start..] {
                let at = seconds(&line.time);
                if options.since.is_some_and(|since| since > 0.0 && at < since) {
                    continue;
                }
                if options.until.is_some_and(|until| until > 0.0 && at > until) {
                    return;
                }
                yield bytes::Bytes::from(match options.timestamps {
                    true => format!("{} {}\n", line.time, line.message),
                    false => format!("{}\n", line.message),
                });
            }
            last = log.last().cloned().or(last);
            if !options.follow || view.state.is_exited() {
                return;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    }
}

/// One client: a line of filters in, `ACK` out once it is recorded.
async fn connection(stream: TcpStream, events: mpsc::Sender<Event>) {
    let (read, mut write) = stream.into_split();
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_LINE));
    while let Some(Ok(line)) = lines.next().await {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match Filter::parse(line) {
            Ok(filter) => {
                let (ack, acked) = oneshot::channel();
                if events.send(Event::Filter(filter, ack)).await.is_err() {
                    break;
                }
                if acked.await == Ok(true) {
                    use tokio::io::AsyncWriteExt;
                    if write.write_all(b"ACK\n").await.is_err() {
                        break;
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "Ryuk line refused"),
        }
    }
    let _ = events.send(Event::Closed).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ryuk_images_are_recognised_by_repository() {
        assert!(is_ryuk_image("testcontainers/ryuk:0.8.1"));
        assert!(is_ryuk_image("docker.io/testcontainers/ryuk:0.14.0"));
        assert!(is_ryuk_image("testcontainers/ryuk"));
        assert!(is_ryuk_image("testcontainers/ryuk@sha256:abcd"));
        assert!(!is_ryuk_image("testcontainers/ryuk-extra:1"));
        assert!(!is_ryuk_image("example.com/testcontainers/ryuk:1"));
        assert!(!is_ryuk_image("busybox"));
    }

    #[test]
    fn filters_parse_as_ryuk_lines() {
        let filter =
            Filter::parse("label=org.testcontainers.session-id=abc&label=flag&name=%2Fdb").unwrap();
        assert_eq!(
            filter.labels,
            vec![
                ("org.testcontainers.session-id".into(), Some("abc".into())),
                ("flag".into(), None)
            ]
        );
        assert_eq!(filter.names, vec!["db".to_string()]);
        assert!(Filter::parse("").is_err());
        assert!(Filter::parse("label=").is_err());
        assert!(Filter::parse("volume=x").is_err());
    }

    #[test]
    fn every_condition_must_hold() {
        let filter = Filter::parse("label=s=1&label=keep").unwrap();
        let labels = |v: serde_json::Value| v.as_object().unwrap().clone();
        assert!(filter.matches(&labels(json!({"s": "1", "keep": ""})), "x", "id"));
        assert!(!filter.matches(&labels(json!({"s": "1"})), "x", "id"));
        assert!(!filter.matches(&labels(json!({"s": "2", "keep": "y"})), "x", "id"));
        let by_name = Filter::parse("name=web").unwrap();
        assert!(by_name.matches(&labels(json!({})), "/proj-web-1", "id"));
        assert!(!by_name.matches(&labels(json!({})), "db", "id"));
    }

    #[test]
    fn timeouts_come_from_the_environment() {
        let env = |entries: &[(&str, &str)]| crate::model::RuntimeSettings {
            env: entries
                .iter()
                .map(|(name, value)| crate::model::EnvVar {
                    name: name.to_string(),
                    value: Some(value.to_string()),
                })
                .collect(),
            ..Default::default()
        };
        let settings = env(&[
            ("RYUK_RECONNECTION_TIMEOUT", "2s"),
            ("RYUK_CONNECTION_TIMEOUT", "1m30s"),
        ]);
        assert_eq!(
            Timeouts::of(&settings),
            Timeouts {
                connection: Duration::from_secs(90),
                reconnection: Duration::from_secs(2)
            }
        );
        let defaults = Timeouts::of(&env(&[("RYUK_RECONNECTION_TIMEOUT", "soon")]));
        assert_eq!(defaults.reconnection, RECONNECTION_TIMEOUT);
        assert_eq!(go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(go_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(go_duration("1000h"), None);
        assert_eq!(go_duration("10"), None);
    }

    #[test]
    fn the_log_is_bounded() {
        let mut record = Record::default();
        for i in 0..(MAX_LOG_LINES + 5) {
            record.say(format!("line {i}"));
        }
        assert_eq!(record.log.len(), MAX_LOG_LINES);
        assert_eq!(record.log[0].message, "line 5");
    }
}
