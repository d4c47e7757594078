//! The dry-run server (`podbridge serve --dry-run`, config `dry_run`): Docker clients talk to it
//! with no cluster at all. `create` runs the same [`Translator`] as the real server (policy
//! refusals answer 400/403 as usual); `start` applies nothing and prints the objects that would
//! be applied and the per-rule explanation to stdout, and that same text becomes the container's
//! `logs` and attach output; the container then counts as exited with code 0 — unless it has a
//! healthcheck: then it looks running and healthy until it is stopped, killed or removed, so
//! `docker compose up` gets past `depends_on: condition: service_healthy` and every service's
//! objects are printed.
//!
//! A separate small router over an in-memory store, rather than a backend trait under the real
//! handlers: the real handlers read the watch-fed [`crate::runtime::Runtime`] in many places, and
//! the dry-run subset (containers, images, networks) is small enough to answer directly. It shares
//! the version prefix and header middleware of the real router.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::sync::Arc;

use parking_lot::Mutex;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tracing::info;

use super::extract::{labels_match, parse_filters, query_bool, DockerBytes, DockerJson, Query};
use super::stream::{frame, hijack, MULTIPLEXED, RAW, STDOUT};
use super::{ServeError, ENGINE_VERSION};
use crate::api::error::{ApiError, Result};
use crate::api::translate::{objects_yaml, CreateRequest, Translator};
use crate::model::ContainerId;
use crate::render::Identity;
use crate::runtime::objects::image_id;

/// One container as the dry-run server remembers it.
#[derive(Debug, Clone)]
struct DryContainer {
    id: String,
    name: String,
    created: String,
    /// The create body as the client sent it.
    request: Value,
    /// What `start` prints and `logs` returns: the objects (YAML) and the explanation.
    report: String,
    started_at: Option<String>,
    /// When a long-running (healthchecked) container was stopped or killed.
    stopped_at: Option<String>,
}

impl DryContainer {
    fn image(&self) -> &str {
        self.request["Image"].as_str().unwrap_or_default()
    }

    fn labels(&self) -> Map<String, Value> {
        self.request["Labels"]
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    fn tty(&self) -> bool {
        self.request["Tty"].as_bool().unwrap_or(false)
    }

    /// A container with a healthcheck runs (healthy) from start until stopped; others have done
    /// their one job, printing the report, at start.
    fn long_running(&self) -> bool {
        crate::runtime::state::has_healthcheck(&self.request)
    }

    fn status(&self) -> &'static str {
        match (&self.started_at, &self.stopped_at) {
            (None, _) => "created",
            (Some(_), None) if self.long_running() => "running",
            _ => "exited",
        }
    }

    fn finished_at(&self) -> Option<String> {
        match self.long_running() {
            true => self.stopped_at.clone(),
            false => self.started_at.clone(),
        }
    }
}

/// The in-memory store; `changes` wakes `wait` and attach when a container starts or goes.
#[derive(Clone)]
pub struct DryRunState {
    /// What `docker build` would run (configuration `build_*`).
    build: crate::runtime::build::BuildSettings,
    translator: Arc<Translator>,
    containers: Arc<Mutex<BTreeMap<String, DryContainer>>>,
    networks: Arc<Mutex<BTreeMap<String, Value>>>,
    /// Docker volumes by name: nothing backs them, but compose inspects and creates them.
    volumes: Arc<Mutex<BTreeMap<String, Value>>>,
    changes: Arc<watch::Sender<u64>>,
}

impl DryRunState {
    pub fn new(translator: Arc<Translator>) -> Self {
        DryRunState {
            build: crate::runtime::build::BuildSettings::default(),
            translator,
            containers: Arc::default(),
            networks: Arc::default(),
            volumes: Arc::default(),
            changes: Arc::new(watch::channel(0).0),
        }
    }

    /// By full ID, name (with or without `/`) or unique ID prefix.
    fn find(&self, reference: &str) -> Result<DryContainer> {
        let containers = self.containers.lock();
        let wanted = reference.strip_prefix('/').unwrap_or(reference);
        if let Some(found) = containers
            .values()
            .find(|c| c.id == reference || c.name == wanted)
        {
            return Ok(found.clone());
        }
        let mut matches = containers
            .values()
            .filter(|c| !reference.is_empty() && c.id.starts_with(reference));
        match (matches.next(), matches.next()) {
            (Some(found), None) => Ok(found.clone()),
            (Some(_), Some(_)) => Err(ApiError::BadRequest(format!(
                "multiple IDs found with provided prefix: {reference}"
            ))),
            _ => Err(ApiError::no_such_container(reference)),
        }
    }

    fn changed(&self) {
        self.changes.send_modify(|generation| *generation += 1);
    }

    /// Waits until `done` holds for the container `id` (`None`: it is gone).
    async fn wait_for(&self, id: &str, done: impl Fn(Option<&DryContainer>) -> bool) {
        let mut changes = self.changes.subscribe();
        loop {
            changes.borrow_and_update();
            if done(self.containers.lock().get(id)) {
                return;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    }
}

/// The dry-run subset of the Docker API; everything else answers 501.
pub fn router(state: DryRunState) -> Router {
    let routes = Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(super::system::version))
        .route("/info", get(info))
        .route("/containers/create", post(container_create))
        .route("/containers/json", get(container_list))
        .route("/containers/{id}/json", get(container_inspect))
        .route("/containers/{id}/start", post(container_start))
        .route("/containers/{id}/wait", post(container_wait))
        .route("/containers/{id}/logs", get(container_logs))
        .route("/containers/{id}/attach", post(container_attach))
        .route("/containers/{id}/stop", post(container_stop))
        .route("/containers/{id}/kill", post(container_stop))
        .route("/containers/{id}/resize", post(container_no_op))
        .route("/containers/{id}", axum::routing::delete(container_delete))
        .route("/build", post(build))
        .route("/images/create", post(image_create))
        .route("/images/{*rest}", get(image_inspect))
        .route("/networks", get(network_list))
        .route("/networks/create", post(network_create))
        .route(
            "/networks/{id}",
            get(network_inspect).delete(network_delete),
        )
        .route("/networks/{id}/connect", post(network_connect))
        .route("/networks/{id}/disconnect", post(network_disconnect))
        .route("/volumes", get(volume_list))
        .route("/volumes/create", post(volume_create))
        .route("/volumes/prune", post(volume_prune))
        .route("/volumes/{name}", get(volume_inspect).delete(volume_delete))
        .merge(super::swarm::routes())
        .route_layer(axum::middleware::from_fn(super::keep_matched_route))
        .fallback(unsupported)
        .with_state(state);
    super::docker_service(routes)
}

async fn unsupported(request: Request) -> ApiError {
    ApiError::NotImplemented(format!(
        "{} {} is not supported by the podbridge dry-run server",
        request.method(),
        request.uri().path()
    ))
}

/// `POST /build`: prints the builder pod the policy would produce (and why), streams the same
/// text to the client, and ends with an error, since no image is built.
async fn build(
    State(state): State<DryRunState>,
    uri: axum::http::Uri,
    body: axum::body::Body,
) -> Result<Response> {
    let request = super::build::decode(uri.query().unwrap_or_default())?;
    // As dockerd, answer once the context has been read (it is not kept).
    use futures::StreamExt as _;
    let mut context = body.into_data_stream();
    while let Some(chunk) = context.next().await {
        chunk.map_err(|e| ApiError::BadRequest(format!("reading the build context: {e}")))?;
    }
    let translation =
        super::build::builder_translation(&state.translator, &state.build, &request.extra_hosts)?;
    let mut text = format!(
        "# podbridge dry run: docker build (tags {:?}) would run this builder pod, in namespace {}:\n",
        request.tags,
        state.translator.context().namespace
    );
    text.push_str(&objects_yaml(&translation.objects));
    text.push_str("# policy rules:\n");
    text.push_str(&translation.explain());
    if !text.ends_with('\n') {
        text.push('\n');
    }
    print!("{text}");
    let _ = std::io::stdout().flush();
    let mut lines: Vec<Value> = text
        .lines()
        .map(|line| json!({"stream": format!("{line}\n")}))
        .collect();
    let message = "dry run: nothing was built";
    lines.push(json!({"errorDetail": {"message": message}, "error": message}));
    let body: String = lines.iter().map(|line| format!("{line}\r\n")).collect();
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn ping() -> Response {
    super::system::ping_response(true, "OK")
}

async fn info(State(state): State<DryRunState>) -> Json<Value> {
    let containers = state.containers.lock().len();
    let namespace = &state.translator.context().namespace;
    Json(json!({
        "ID": "podbridge-dry-run", "Name": "podbridge-dry-run", "ServerVersion": ENGINE_VERSION,
        "OperatingSystem": format!("podbridge dry run (namespace {namespace}, nothing is applied)"),
        "OSType": "linux", "Architecture": std::env::consts::ARCH, "NCPU": 1, "MemTotal": 0,
        "Containers": containers, "ContainersRunning": 0, "ContainersPaused": 0,
        "ContainersStopped": containers, "Images": 0, "Driver": "none", "DriverStatus": [],
        "Plugins": {"Volume": [], "Network": ["bridge"], "Log": ["json-file"]},
        "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "", "ControlAvailable": false},
        "SecurityOptions": [], "Runtimes": {}, "DefaultRuntime": "runc", "Labels": [],
        "LoggingDriver": "json-file", "CgroupDriver": "none", "Warnings": [],
        "IndexServerAddress": "https://index.docker.io/v1/", "DockerRootDir": "/var/lib/docker",
    }))
}

/// The text `start` prints and `logs` returns.
fn report(
    name: &str,
    id: &ContainerId,
    namespace: &str,
    translation: &crate::api::translate::Translation,
) -> String {
    let mut text = format!(
        "# podbridge dry run: container {name} ({}) would apply, in namespace {namespace}:\n",
        id.short()
    );
    text.push_str(&objects_yaml(&translation.objects));
    for warning in &translation.warnings {
        text.push_str(&format!("# warning: {warning}\n"));
    }
    text.push_str("# policy rules:\n");
    text.push_str(&translation.explain());
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// `POST /containers/create`: translate exactly as the real server does; remember the result.
async fn container_create(
    State(state): State<DryRunState>,
    query: Query,
    DockerBytes(body): DockerBytes,
) -> Result<Response> {
    let name = super::containers::requested_name(&query)?;
    if let Some(name) = &name {
        let existing = state
            .containers
            .lock()
            .values()
            .find(|c| &c.name == name)
            .map(|c| c.id.clone());
        if let Some(id) = existing {
            return Err(crate::runtime::RuntimeError::NameInUse {
                name: name.clone(),
                id,
            }
            .into());
        }
    }
    let id = ContainerId::random();
    let name = name.unwrap_or_else(|| format!("dry-run-{}", id.short()));
    let created = crate::runtime::now_rfc3339();
    let request = CreateRequest {
        start: crate::render::StartInputs::default(),
        purpose: Default::default(),
        body: &body,
        name: Some(&name),
        image: None,
        identity: Identity {
            id: id.clone(),
            created: created.clone(),
        },
    };
    let translation = state.translator.translate(&request)?;
    let report = report(
        &name,
        &id,
        &state.translator.context().namespace,
        &translation,
    );
    let container = DryContainer {
        id: id.as_str().to_string(),
        name: name.clone(),
        created,
        request: serde_json::from_slice(&body).unwrap_or(Value::Null),
        report,
        started_at: None,
        stopped_at: None,
    };
    state
        .containers
        .lock()
        .insert(container.id.clone(), container);
    state.changed();
    info!(container = %id.short(), %name, "Container created (dry run)");
    Ok((
        StatusCode::CREATED,
        Json(json!({"Id": id.as_str(), "Warnings": translation.warnings})),
    )
        .into_response())
}

/// `POST /containers/{id}/start`: print what would be applied; the container has then exited 0.
async fn container_start(
    State(state): State<DryRunState>,
    Path(reference): Path<String>,
) -> Result<StatusCode> {
    let found = state.find(&reference)?;
    {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(found.report.as_bytes());
        let _ = stdout.flush();
    }
    let auto_remove = found.request["HostConfig"]["AutoRemove"]
        .as_bool()
        .unwrap_or(false);
    {
        let mut containers = state.containers.lock();
        if let Some(container) = containers.get_mut(&found.id) {
            container.started_at = Some(crate::runtime::now_rfc3339());
        }
    }
    state.changed();
    if auto_remove {
        // attach and `wait?condition=removed` see the start before the removal
        let state = state.clone();
        let id = found.id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            state.containers.lock().remove(&id);
            state.changed();
        });
    }
    info!(container = %&found.id[..12], name = %found.name, "Container started (dry run: nothing applied)");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/wait`: exit code 0 as soon as the container started (or went). The
/// headers go out at once: clients send `wait` before `start` and block until they arrive.
async fn container_wait(
    State(state): State<DryRunState>,
    Path(reference): Path<String>,
    query: Query,
) -> Result<Response> {
    let found = state.find(&reference)?;
    let removed = query.get("condition").map(String::as_str) == Some("removed");
    let body = futures::stream::once(async move {
        state
            .wait_for(&found.id, |container| match container {
                None => true,
                Some(_) if removed => false,
                Some(container) => container.status() == "exited",
            })
            .await;
        Ok::<_, std::convert::Infallible>(Bytes::from("{\"StatusCode\":0,\"Error\":null}\n"))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

fn report_bytes(container: &DryContainer) -> Bytes {
    if container.tty() {
        Bytes::from(container.report.replace('\n', "\r\n"))
    } else {
        frame(STDOUT, container.report.as_bytes())
    }
}

/// `GET /containers/{id}/logs`: the dry-run report, once the container started.
async fn container_logs(
    State(state): State<DryRunState>,
    Path(reference): Path<String>,
    query: Query,
) -> Result<Response> {
    let found = state.find(&reference)?;
    let wants_stdout = query_bool(&query, "stdout") || !query.contains_key("stdout");
    let body = if found.started_at.is_some() && wants_stdout {
        report_bytes(&found)
    } else {
        Bytes::new()
    };
    let media = if found.tty() { RAW } else { MULTIPLEXED };
    Ok(([(header::CONTENT_TYPE, media)], body).into_response())
}

/// `POST /containers/{id}/attach`: the report once the container starts, then end of stream.
async fn container_attach(
    State(state): State<DryRunState>,
    Path(reference): Path<String>,
    request: Request,
) -> Result<Response> {
    let found = state.find(&reference)?;
    let tty = found.tty();
    Ok(hijack(request, tty, move |mut hijacked| async move {
        state
            .wait_for(&found.id, |container| {
                container.is_none_or(|c| c.started_at.is_some())
            })
            .await;
        let started = state.containers.lock().get(&found.id).cloned();
        if let Some(container) = started.or(Some(found)) {
            hijacked.output.send(report_bytes(&container)).await;
        }
        hijacked.output.close().await;
    }))
}

async fn container_no_op() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `stop` and `kill`: a running (healthchecked) container exits 0; Docker answers 304 to a stop
/// of a container that is not running.
async fn container_stop(
    State(state): State<DryRunState>,
    Path(reference): Path<String>,
) -> Result<StatusCode> {
    let found = state.find(&reference)?;
    if found.status() != "running" {
        return Ok(StatusCode::NOT_MODIFIED);
    }
    if let Some(container) = state.containers.lock().get_mut(&found.id) {
        container.stopped_at = Some(crate::runtime::now_rfc3339());
    }
    state.changed();
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /containers/{id}`: forget it (`force` is moot: nothing runs).
async fn container_delete(
    State(state): State<DryRunState>,
    Path(reference): Path<String>,
) -> Result<StatusCode> {
    let found = state.find(&reference)?;
    state.containers.lock().remove(&found.id);
    state.changed();
    Ok(StatusCode::NO_CONTENT)
}

fn command_of(container: &DryContainer) -> (String, Vec<Value>) {
    let mut argv: Vec<Value> = Vec::new();
    for key in ["Entrypoint", "Cmd"] {
        match &container.request[key] {
            Value::Array(items) => argv.extend(items.iter().cloned()),
            Value::String(text) => argv.push(Value::String(text.clone())),
            _ => {}
        }
    }
    let path = argv
        .first()
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    (path, argv.into_iter().skip(1).collect())
}

fn networks_of(container: &DryContainer) -> Value {
    let mut networks = Map::new();
    for (name, mut endpoint) in super::networks::attached_networks(&container.request) {
        if let Some(fields) = endpoint.as_object_mut() {
            fields.entry("IPAddress").or_insert(json!(""));
            fields.entry("Aliases").or_insert(Value::Null);
        }
        networks.insert(name, endpoint);
    }
    Value::Object(networks)
}

fn inspect_json(container: &DryContainer) -> Value {
    let (path, args) = command_of(container);
    let started = container.started_at.clone().unwrap_or_default();
    let finished = container.finished_at().unwrap_or_default();
    let running = container.status() == "running";
    let request = &container.request;
    let mut host_config = request["HostConfig"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    host_config
        .entry("LogConfig")
        .or_insert(json!({"Type": "json-file", "Config": {}}));
    host_config.entry("NetworkMode").or_insert(json!("bridge"));
    let mut config = request.as_object().cloned().unwrap_or_default();
    config.remove("HostConfig");
    config.remove("NetworkingConfig");
    config.entry("Tty").or_insert(json!(false));
    config.entry("OpenStdin").or_insert(json!(false));
    config.entry("Labels").or_insert(json!({}));
    config.entry("Env").or_insert(json!([]));
    let zero = |t: String| {
        if t.is_empty() {
            "0001-01-01T00:00:00Z".to_string()
        } else {
            t
        }
    };
    let mut state = json!({
        "Status": container.status(), "Running": running, "Paused": false, "Restarting": false,
        "OOMKilled": false, "Dead": false, "Pid": if running { 1 } else { 0 }, "ExitCode": 0, "Error": "",
        "StartedAt": zero(started), "FinishedAt": zero(if running { String::new() } else { finished }),
    });
    if container.long_running() && container.started_at.is_some() {
        // nothing runs, so nothing is unhealthy: healthy while "running"
        state["Health"] = json!({"Status": if running { "healthy" } else { "unhealthy" }, "FailingStreak": 0, "Log": []});
    }
    json!({
        "Id": container.id, "Created": container.created, "Path": path, "Args": args,
        "State": state,
        "Image": image_id(container.image()), "Name": format!("/{}", container.name),
        "RestartCount": 0, "Driver": "none", "Platform": "linux", "ExecIDs": null,
        "HostConfig": host_config, "Config": config, "Mounts": [],
        "NetworkSettings": {"Ports": {}, "IPAddress": "", "Networks": networks_of(container)},
    })
}

fn list_json(container: &DryContainer) -> Value {
    let (path, args) = command_of(container);
    let command = std::iter::once(path)
        .chain(args.iter().filter_map(|a| a.as_str().map(String::from)))
        .collect::<Vec<_>>()
        .join(" ");
    let created = container
        .created
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .unwrap_or(0);
    let status = match container.status() {
        "exited" => "Exited (0) (dry run: printed, nothing applied)",
        "running" => "Up (healthy) (dry run: printed, nothing applied)",
        _ => "Created",
    };
    json!({
        "Id": container.id, "Names": [format!("/{}", container.name)], "Image": container.image(),
        "ImageID": image_id(container.image()), "Command": command, "Created": created,
        "Ports": [], "Labels": container.labels(), "State": container.status(), "Status": status,
        "HostConfig": {"NetworkMode": "bridge"}, "NetworkSettings": {"Networks": networks_of(container)},
        "Mounts": [],
    })
}

fn matches(container: &DryContainer, filters: &HashMap<String, Vec<String>>) -> bool {
    filters.iter().all(|(key, wanted)| match key.as_str() {
        "label" => labels_match(&container.labels(), wanted),
        "name" => wanted
            .iter()
            .any(|w| container.name.contains(w.strip_prefix('/').unwrap_or(w))),
        "id" => wanted.iter().any(|w| container.id.starts_with(w.as_str())),
        "status" => wanted.iter().any(|w| w == container.status()),
        _ => true,
    })
}

/// `GET /containers/json`: nothing ever runs, so only `all` lists anything.
async fn container_list(State(state): State<DryRunState>, query: Query) -> Result<Json<Value>> {
    let filters = parse_filters(query.get("filters"))?;
    let all = query_bool(&query, "all");
    let mut containers: Vec<DryContainer> = state.containers.lock().values().cloned().collect();
    containers.sort_by(|a, b| b.created.cmp(&a.created));
    Ok(Json(Value::Array(
        containers
            .iter()
            .filter(|_| all || filters.contains_key("status"))
            .filter(|c| matches(c, &filters))
            .map(list_json)
            .collect(),
    )))
}

async fn container_inspect(
    State(state): State<DryRunState>,
    Path(reference): Path<String>,
) -> Result<Json<Value>> {
    Ok(Json(inspect_json(&state.find(&reference)?)))
}

/// `POST /images/create`: nothing to pull; report success in Docker's progress format.
async fn image_create(query: Query) -> Response {
    let image = query.get("fromImage").cloned().unwrap_or_default();
    let tag = query.get("tag").cloned().unwrap_or_default();
    let body = format!(
        "{}\n{}\n",
        json!({"status": format!("Pulling from {image}"), "id": tag}),
        json!({"status": format!("Status: dry run, {image}:{tag} not pulled")})
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `GET /images/{name}/json`: every image "exists", with an empty config.
async fn image_inspect(Path(rest): Path<String>) -> Result<Json<Value>> {
    let Some(name) = rest.strip_suffix("/json") else {
        return Err(ApiError::NotImplemented(format!(
            "/images/{rest} is not supported by the podbridge dry-run server"
        )));
    };
    Ok(Json(json!({
        "Id": image_id(name), "RepoTags": [name], "RepoDigests": [], "Created": "1970-01-01T00:00:00Z",
        "Os": "linux", "Architecture": super::system::arch(), "Size": 0,
        "Config": {"Env": [], "Cmd": null, "Entrypoint": null, "Labels": {}},
        "RootFS": {"Type": "layers", "Layers": []},
    })))
}

fn default_networks() -> Vec<Value> {
    ["bridge", "host", "none"]
        .iter()
        .map(|name| {
            json!({"Name": name, "Id": name, "Driver": if *name == "none" { "null" } else { *name },
                "Scope": "local", "Labels": {}, "Options": {}, "IPAM": {"Driver": "default", "Config": []},
                "Containers": {}, "Internal": false, "Attachable": false})
        })
        .collect()
}

async fn network_list(State(state): State<DryRunState>, query: Query) -> Result<Json<Value>> {
    let filters = parse_filters(query.get("filters"))?;
    let mut networks = default_networks();
    networks.extend(state.networks.lock().values().cloned());
    Ok(Json(Value::Array(
        networks
            .into_iter()
            .filter(|network| {
                filters.iter().all(|(key, wanted)| match key.as_str() {
                    "label" => {
                        labels_match(network["Labels"].as_object().unwrap_or(&Map::new()), wanted)
                    }
                    "name" => wanted
                        .iter()
                        .any(|w| network["Name"].as_str() == Some(w.as_str())),
                    "id" => wanted.iter().any(|w| {
                        network["Id"]
                            .as_str()
                            .is_some_and(|id| id.starts_with(w.as_str()))
                    }),
                    _ => true,
                })
            })
            .collect(),
    )))
}

async fn network_create(
    State(state): State<DryRunState>,
    Json(body): Json<Value>,
) -> Result<Response> {
    let name = body["Name"].as_str().unwrap_or_default().to_string();
    if name.is_empty() {
        return Err(ApiError::BadRequest("network name is required".into()));
    }
    let driver = body["Driver"].as_str().unwrap_or_default();
    super::networks::check_network_create(&name, driver)?;
    let driver = if driver.is_empty() { "bridge" } else { driver };
    let id = ContainerId::from_seed(name.as_bytes()).as_str().to_string();
    let network = json!({"Name": name, "Id": id, "Driver": driver,
        "Scope": "local", "Labels": body["Labels"].as_object().cloned().unwrap_or_default(),
        "Options": body["Options"].as_object().cloned().unwrap_or_default(),
        "IPAM": {"Driver": "default", "Config": []}, "Containers": {}, "Internal": false,
        "Attachable": body["Attachable"].as_bool().unwrap_or(false), "Created": crate::runtime::now_rfc3339()});
    let mut networks = state.networks.lock();
    if networks.contains_key(&name) {
        return Err(ApiError::Conflict(format!(
            "network with name {name} already exists"
        )));
    }
    networks.insert(name, network);
    Ok((StatusCode::CREATED, Json(json!({"Id": id, "Warning": ""}))).into_response())
}

fn find_network(state: &DryRunState, reference: &str) -> Result<Value> {
    default_networks()
        .into_iter()
        .chain(state.networks.lock().values().cloned())
        .find(|n| {
            n["Name"].as_str() == Some(reference)
                || n["Id"].as_str().is_some_and(|id| id.starts_with(reference))
        })
        .ok_or_else(|| ApiError::NotFound(format!("network {reference} not found")))
}

async fn network_inspect(
    State(state): State<DryRunState>,
    Path(reference): Path<String>,
) -> Result<Json<Value>> {
    Ok(Json(find_network(&state, &reference)?))
}

async fn network_delete(
    State(state): State<DryRunState>,
    Path(reference): Path<String>,
) -> Result<StatusCode> {
    let network = find_network(&state, &reference)?;
    if let Some(name) = network["Name"].as_str() {
        state.networks.lock().remove(name);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The network's name and Id and the container a connect/disconnect body names.
fn endpoint_target(
    state: &DryRunState,
    reference: &str,
    body: &Value,
) -> Result<(String, String, DryContainer)> {
    let network = find_network(state, reference)?;
    let container = state.find(body["Container"].as_str().unwrap_or_default())?;
    let name = network["Name"].as_str().unwrap_or_default().to_string();
    let id = network["Id"].as_str().unwrap_or_default().to_string();
    Ok((name, id, container))
}

/// Connect a (never running) container: when already attached, its aliases grow (200, as
/// Docker answers for a stopped container).
async fn network_connect(
    State(state): State<DryRunState>,
    Path(reference): Path<String>,
    Json(body): Json<Value>,
) -> Result<StatusCode> {
    let (name, id, container) = endpoint_target(&state, &reference, &body)?;
    let endpoint = if body["EndpointConfig"].is_object() {
        body["EndpointConfig"].clone()
    } else {
        json!({})
    };
    let request = if super::networks::is_attached(&container.request, &name, &id) {
        super::networks::with_more_aliases(&container.request, &name, &id, &endpoint)
    } else {
        super::networks::with_endpoint(&container.request, &name, &id, endpoint)
    };
    if let Some(stored) = state.containers.lock().get_mut(&container.id) {
        stored.request = request;
    }
    Ok(StatusCode::OK)
}

async fn network_disconnect(
    State(state): State<DryRunState>,
    Path(reference): Path<String>,
    Json(body): Json<Value>,
) -> Result<StatusCode> {
    let (name, id, container) = endpoint_target(&state, &reference, &body)?;
    if !super::networks::is_attached(&container.request, &name, &id) {
        return Err(ApiError::Forbidden(format!(
            "container {} is not connected to the network {name}",
            container.id
        )));
    }
    let request = super::networks::without_endpoint(&container.request, &name, &id);
    if let Some(stored) = state.containers.lock().get_mut(&container.id) {
        stored.request = request;
    }
    Ok(StatusCode::OK)
}

async fn volume_list(State(state): State<DryRunState>, query: Query) -> Result<Json<Value>> {
    let filters = parse_filters(query.get("filters"))?;
    let volumes: Vec<Value> = state
        .volumes
        .lock()
        .values()
        .filter(|v| super::volumes::volume_matches(v, false, &filters))
        .cloned()
        .collect();
    Ok(Json(json!({"Volumes": volumes, "Warnings": []})))
}

/// Docker answers an existing name with that volume, not a conflict.
async fn volume_create(
    State(state): State<DryRunState>,
    DockerJson(body): DockerJson<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    let name = match body["Name"].as_str().filter(|n| !n.is_empty()) {
        Some(name) => name.to_owned(),
        None => ContainerId::random().as_str().to_owned(),
    };
    let mut volumes = state.volumes.lock();
    let volume = volumes.entry(name.clone()).or_insert_with(|| {
        json!({"Name": name, "Driver": body["Driver"].as_str().unwrap_or("local"),
            "Mountpoint": format!("dry-run: volume {name} (nothing is created)"),
            "Labels": body["Labels"].as_object().cloned().unwrap_or_default(),
            "Options": body["DriverOpts"].as_object().cloned().unwrap_or_default(),
            "Scope": "local", "CreatedAt": crate::runtime::now_rfc3339()})
    });
    Ok((StatusCode::CREATED, Json(volume.clone())))
}

fn no_such_volume(name: &str) -> ApiError {
    ApiError::NotFound(format!("get {name}: no such volume"))
}

async fn volume_inspect(
    State(state): State<DryRunState>,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    let volumes = state.volumes.lock();
    volumes
        .get(&name)
        .cloned()
        .map(Json)
        .ok_or_else(|| no_such_volume(&name))
}

async fn volume_delete(
    State(state): State<DryRunState>,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    match state.volumes.lock().remove(&name) {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(no_such_volume(&name)),
    }
}

async fn volume_prune(State(state): State<DryRunState>, query: Query) -> Result<Json<Value>> {
    let filters = parse_filters(query.get("filters"))?;
    let mut volumes = state.volumes.lock();
    let deleted: Vec<String> = volumes
        .iter()
        .filter(|(_, v)| super::volumes::volume_matches(v, false, &filters))
        .map(|(name, _)| name.clone())
        .collect();
    for name in &deleted {
        volumes.remove(name);
    }
    Ok(Json(
        json!({"VolumesDeleted": deleted, "SpaceReclaimed": 0}),
    ))
}

/// Serves the dry-run router on the configured TCP address (and unix socket) until a signal.
pub async fn run(
    config: &crate::config::Config,
    policies: crate::rules::SharedPolicySet,
    context: crate::render::RenderContext,
) -> Result<(), ServeError> {
    let translator = Arc::new(Translator::new(policies, context));
    let mut state = DryRunState::new(translator);
    state.build = crate::runtime::build::BuildSettings {
        image: config.build_image.clone(),
        timeout: std::time::Duration::from_secs(config.build_timeout_seconds),
        ..Default::default()
    };
    let app = router(state);
    let listeners = super::bind_listeners(config).await?;
    info!(address = %listeners.tcp_address()?, "Serving the Docker API as a dry run: nothing is applied, no cluster is used");
    let tasks = super::serve_on(listeners, app);
    for task in tasks {
        task.await.map_err(std::io::Error::other)??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    fn app() -> Router {
        let set = crate::policy_store::load(&crate::config::Config::default()).unwrap();
        let context = crate::cli::render_context(&crate::config::Config::default());
        router(DryRunState::new(Arc::new(Translator::new(
            crate::policy_store::shared(set),
            context,
        ))))
    }

    async fn call(app: &Router, method: &str, uri: &str, body: &str) -> (StatusCode, Vec<u8>) {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, bytes.to_vec())
    }

    #[tokio::test]
    async fn build_prints_the_builder_pod() {
        let app = app();
        let (status, body) = call(&app, "POST", "/v1.51/build?t=app", "").await;
        assert_eq!(status, StatusCode::OK);
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("would run this builder pod"), "{text}");
        assert!(text.contains("builds/builder-seccomp"), "{text}");
        assert!(text.contains("nothing was built"), "{text}");
        let (status, _) = call(&app, "POST", "/v1.51/build?version=2", "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn create_start_logs_list_and_remove_without_a_cluster() {
        let app = app();
        let (status, _) = call(&app, "GET", "/v1.44/_ping", "").await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = call(
            &app,
            "POST",
            "/v1.44/containers/create?name=web",
            r#"{"Image":"busybox","Cmd":["sleep","1"]}"#,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&body)
        );
        let (status, _) = call(&app, "POST", "/containers/web/start", "").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, body) = call(&app, "POST", "/containers/web/wait", "").await;
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["StatusCode"],
            0
        );
        let (_, logs) = call(&app, "GET", "/containers/web/logs?stdout=1", "").await;
        let text = String::from_utf8_lossy(&logs);
        assert!(text.contains("kind: Pod"), "{text}");
        assert!(text.contains("# policy rules:"), "{text}");
        let (_, list) = call(&app, "GET", "/containers/json?all=1", "").await;
        let list: Value = serde_json::from_slice(&list).unwrap();
        assert_eq!(list[0]["Names"][0], "/web");
        assert_eq!(list[0]["State"], "exited");
        let (status, _) = call(&app, "DELETE", "/containers/web", "").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = call(&app, "GET", "/containers/web/json", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_healthchecked_container_runs_healthy_until_stopped() {
        let app = app();
        let (status, _) = call(
            &app,
            "POST",
            "/containers/create?name=db",
            r#"{"Image":"redis","Healthcheck":{"Test":["CMD","redis-cli","ping"]}}"#,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        call(&app, "POST", "/containers/db/start", "").await;
        let (_, body) = call(&app, "GET", "/containers/db/json", "").await;
        let inspect: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(inspect["State"]["Status"], "running");
        assert_eq!(inspect["State"]["Running"], true);
        assert_eq!(inspect["State"]["Health"]["Status"], "healthy");
        // wait blocks while it runs
        let waiting = tokio::spawn({
            let app = app.clone();
            async move { call(&app, "POST", "/containers/db/wait", "").await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!waiting.is_finished());
        let (status, _) = call(&app, "POST", "/containers/db/stop", "").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, body) = waiting.await.unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["StatusCode"],
            0
        );
        let (_, body) = call(&app, "GET", "/containers/db/json", "").await;
        let inspect: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(inspect["State"]["Status"], "exited");
        let (status, _) = call(&app, "POST", "/containers/db/stop", "").await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
    }

    #[tokio::test]
    async fn policy_refusals_answer_as_the_real_server_does() {
        let app = app();
        let (status, body) = call(
            &app,
            "POST",
            "/containers/create",
            r#"{"Image":"busybox","HostConfig":{"Privileged":true}}"#,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert!(String::from_utf8_lossy(&body).contains("blocked by policy"));
        let (_, list) = call(&app, "GET", "/containers/json?all=1", "").await;
        assert_eq!(list, b"[]");
    }

    #[tokio::test]
    async fn swarm_and_plugin_routes_answer_as_the_real_server_does() {
        let app = app();
        let (status, body) = call(&app, "GET", "/v1.51/nodes", "").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["message"],
            super::super::swarm::NOT_SWARM_MANAGER
        );
        let (status, _) = call(&app, "POST", "/swarm/leave", "").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, body) = call(&app, "GET", "/plugins", "").await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"[]"[..]));
    }

    #[tokio::test]
    async fn network_connect_and_disconnect_track_endpoints() {
        let app = app();
        let (status, _) = call(&app, "POST", "/networks/create", r#"{"Name":"net"}"#).await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, body) = call(
            &app,
            "POST",
            "/containers/create?name=cx",
            r#"{"Image":"busybox","Cmd":["true"]}"#,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&body)
        );
        let (status, body) = call(
            &app,
            "POST",
            "/networks/net/disconnect",
            r#"{"Container":"cx"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(String::from_utf8_lossy(&body).contains("is not connected to the network net"));
        for _ in 0..2 {
            let (status, _) = call(
                &app,
                "POST",
                "/networks/net/connect",
                r#"{"Container":"cx"}"#,
            )
            .await;
            assert_eq!(status, StatusCode::OK);
        }
        let (_, inspect) = call(&app, "GET", "/containers/cx/json", "").await;
        let inspect: Value = serde_json::from_slice(&inspect).unwrap();
        let networks = inspect["NetworkSettings"]["Networks"].as_object().unwrap();
        assert_eq!(networks.keys().collect::<Vec<_>>(), ["bridge", "net"]);
        let (status, _) = call(
            &app,
            "POST",
            "/networks/bridge/disconnect",
            r#"{"Container":"cx"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (_, inspect) = call(&app, "GET", "/containers/cx/json", "").await;
        let inspect: Value = serde_json::from_slice(&inspect).unwrap();
        let networks = inspect["NetworkSettings"]["Networks"].as_object().unwrap();
        assert_eq!(networks.keys().collect::<Vec<_>>(), ["net"]);
        let (status, body) = call(
            &app,
            "POST",
            "/networks/create",
            r#"{"Name":"h","Driver":"host"}"#,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{}",
            String::from_utf8_lossy(&body)
        );
        let (_, list) = call(&app, "GET", "/networks", "").await;
        let list: Value = serde_json::from_slice(&list).unwrap();
        assert!(list
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["Options"].is_object()));
    }
}
