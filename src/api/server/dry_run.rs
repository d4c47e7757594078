//! The dry-run server (`podbridge serve --dry-run`, config `dry_run`): Docker clients talk to it
//! with no cluster at all. `create` runs the same [`Translator`] as the real server (policy
//! refusals answer 400/403 as usual); `start` applies nothing and prints the objects that would
//! be applied and the per-rule explanation to stdout, and that same text becomes the container's
//! `logs` and attach output; the container then counts as exited with code 0 — unless it has a
//! healthcheck: then it looks running and healthy until it is stopped, killed or removed, so
//! `docker compose up` gets past `depends_on: condition: service_healthy` and every service's
//! objects are printed.
//!
//! Its own small router over an in-memory store, but one Docker view with the real server: each
//! container, network and volume here is described to [`super::view`], which shapes inspect and
//! list answers, applies Docker's filters and lookup rules and checks create bodies for both
//! servers (`/info` is `system::info_json`), so the two answer alike wherever the dry run can
//! know the answer. What stays here is the store and what a dry run does instead of applying
//! (print, exit 0, stay healthy). A route outside the dry-run subset gets the real router's 404,
//! or 501 when the real server serves it (`compat::route_of`); swarm and plugin routes, the
//! version prefix and the header middleware are the real router's.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;

use parking_lot::Mutex;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::info;

use super::extract::{query_bool, DockerBytes, DockerJson, Query};
use super::stream::{frame, hijack, MULTIPLEXED, RAW, STDOUT};
use super::view::{self, ContainerFacts};
use super::ServeError;
use crate::api::error::{ApiError, Result};
use crate::api::translate::{objects_yaml, CreateRequest, Translator};
use crate::model::{ContainerId, Lookup};
use crate::render::Identity;
use crate::runtime::objects::image_id;
use crate::runtime::state::{ContainerState, ZERO_TIME};

/// One container as the dry-run server remembers it.
#[derive(Debug, Clone)]
struct DryContainer {
    id: String,
    name: String,
    created: String,
    /// The create body as the client sent it.
    request: Value,
    /// The same request as the one decode typed it (what the real server's runtime acts on).
    settings: crate::model::RuntimeSettings,
    /// What `start` prints and `logs` returns: the objects (YAML) and the explanation.
    report: String,
    /// The pod `start` would apply.
    pod_name: String,
    /// The Docker named volumes it mounts (in use while it exists, as in the real server).
    named_volumes: Vec<String>,
    started_at: Option<String>,
    /// When a long-running (healthchecked) container was stopped or killed.
    stopped_at: Option<String>,
}

impl DryContainer {
    fn image(&self) -> &str {
        self.request["Image"].as_str().unwrap_or_default()
    }

    fn tty(&self) -> bool {
        self.settings.tty
    }

    /// A container with a healthcheck runs (healthy) from start until stopped; others have done
    /// their one job, printing the report, at start.
    fn long_running(&self) -> bool {
        self.settings.healthcheck
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

    /// Docker's state of a container that never runs: exited 0 once started; a healthchecked one
    /// is running and healthy (nothing runs, so nothing is unhealthy) until stopped.
    fn state(&self) -> ContainerState {
        let status = self.status();
        let running = status == "running";
        let time = |at: Option<String>| at.unwrap_or_else(|| ZERO_TIME.to_string());
        ContainerState {
            status,
            running,
            exit_code: 0,
            started_at: time(self.started_at.clone()),
            finished_at: time(self.finished_at().filter(|_| !running)),
            oom_killed: false,
            error: String::new(),
            health: (self.long_running() && self.started_at.is_some()).then_some(if running {
                "healthy"
            } else {
                "unhealthy"
            }),
            exit_key: None,
            main_started: running,
            restart_count: 0,
        }
    }

    /// The container as Docker's view sees it; `networks` are those clients created here.
    fn facts(&self, networks: &[Value]) -> ContainerFacts<'_> {
        ContainerFacts {
            id: &self.id,
            name: &self.name,
            created: &self.created,
            image: self.image(),
            image_id: image_id(self.image()),
            request: &self.request,
            state: self.state(),
            error: String::new(),
            ip: String::new(),
            gateway: String::new(),
            networks: view::attachments(&self.request, networks),
            published: BTreeMap::new(),
            links: None,
            link_names: Vec::new(),
            labels: self.settings.docker_labels(),
            sandbox_id: String::new(),
            pod: &self.pod_name,
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

    /// Docker's container reference ([`crate::model::lookup`]), as the real server resolves it.
    fn find(&self, reference: &str) -> Result<DryContainer> {
        let containers: Vec<DryContainer> = self.containers.lock().values().cloned().collect();
        match crate::model::lookup(&containers, reference, |c| &c.id, |c| &c.name) {
            Lookup::Found(found) => Ok(found.clone()),
            Lookup::Ambiguous => Err(ApiError::BadRequest(format!(
                "multiple IDs found with provided prefix: {reference}"
            ))),
            Lookup::Missing => Err(ApiError::no_such_container(reference)),
        }
    }

    /// The networks clients created, in creation order.
    fn created_networks(&self) -> Vec<Value> {
        let mut networks: Vec<Value> = self.networks.lock().values().cloned().collect();
        networks.sort_by(|a, b| a["Created"].as_str().cmp(&b["Created"].as_str()));
        networks
    }

    /// Every container's facts, newest first, as the runtime lists them.
    fn with_facts<T>(&self, use_facts: impl FnOnce(&[ContainerFacts]) -> T) -> T {
        let networks = self.created_networks();
        let mut containers: Vec<DryContainer> = self.containers.lock().values().cloned().collect();
        containers.sort_by(|a, b| b.created.cmp(&a.created));
        let facts: Vec<ContainerFacts> = containers.iter().map(|c| c.facts(&networks)).collect();
        use_facts(&facts)
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
        .method_not_allowed_fallback(unsupported)
        .with_state(state);
    super::docker_service(routes)
}

/// Outside the dry-run subset: an operation the real server serves is 501 here; anything else
/// gets the real router's answer (Docker's 404 `page not found`).
async fn unsupported(request: Request) -> ApiError {
    outside_subset(request.method().as_str(), request.uri().path())
}

fn outside_subset(method: &str, path: &str) -> ApiError {
    match super::compat::route_of(method, path) {
        Some(route) if route.support != super::compat::Support::NotSupported => {
            ApiError::NotImplemented(format!(
                "{method} {path} is not supported by the podbridge dry-run server"
            ))
        }
        _ => ApiError::NotFound(format!("page not found: {path}")),
    }
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

/// `GET /info`: the real server's answer, about this store.
async fn info(State(state): State<DryRunState>) -> Json<Value> {
    let namespace = &state.translator.context().namespace;
    let mut daemon = super::system::DaemonFacts {
        id: "podbridge-dry-run".into(),
        name: "podbridge-dry-run".into(),
        operating_system: format!("podbridge dry run (namespace {namespace}, nothing is applied)"),
        containers: 0,
        running: 0,
        stopped: 0,
        images: 0,
    };
    let states: Vec<ContainerState> = state
        .containers
        .lock()
        .values()
        .map(DryContainer::state)
        .collect();
    daemon.count(states);
    Json(super::system::info_json(&daemon))
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
        request: translation.objects.record.request.clone(),
        settings: translation.objects.record.settings.clone(),
        report,
        pod_name: translation
            .objects
            .pod
            .metadata
            .name
            .clone()
            .unwrap_or_default(),
        named_volumes: translation.objects.record.named_volumes(),
        started_at: None,
        stopped_at: None,
    };
    for volume in &translation.named_volumes {
        let create = view::VolumeCreate {
            name: volume.clone(),
            driver: "local".into(),
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
        };
        create_volume(&state, &create);
    }
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
    let auto_remove = found.settings.auto_remove;
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

/// `GET /containers/json`: [`view::container_list`] over the store.
async fn container_list(State(state): State<DryRunState>, query: Query) -> Result<Json<Value>> {
    Ok(Json(state.with_facts(|containers| {
        view::container_list(containers, &query)
    })?))
}

async fn container_inspect(
    State(state): State<DryRunState>,
    Path(reference): Path<String>,
) -> Result<Json<Value>> {
    let found = state.find(&reference)?;
    Ok(Json(view::container_inspect(
        &found.facts(&state.created_networks()),
    )))
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
        return Err(outside_subset("GET", &format!("/images/{rest}")));
    };
    Ok(Json(json!({
        "Id": image_id(name), "RepoTags": [name], "RepoDigests": [], "Created": "1970-01-01T00:00:00Z",
        "Os": "linux", "Architecture": super::system::arch(), "Size": 0,
        "Config": {"Env": [], "Cmd": null, "Entrypoint": null, "Labels": {}},
        "RootFS": {"Type": "layers", "Layers": []},
    })))
}

fn all_networks(state: &DryRunState) -> Vec<Value> {
    view::all_networks(state.created_networks())
}

fn find_network(state: &DryRunState, reference: &str) -> Result<Value> {
    view::find_network(&all_networks(state), reference)
}

async fn network_list(State(state): State<DryRunState>, query: Query) -> Result<Json<Value>> {
    Ok(Json(view::network_list(all_networks(&state), &query)?))
}

async fn network_inspect(
    State(state): State<DryRunState>,
    Path(reference): Path<String>,
) -> Result<Json<Value>> {
    let network = find_network(&state, &reference)?;
    let containers: Vec<DryContainer> = state.containers.lock().values().cloned().collect();
    let endpoints: Vec<view::Endpoint> = containers
        .iter()
        .map(|container| view::Endpoint {
            id: &container.id,
            name: &container.name,
            request: &container.request,
            ip: None,
        })
        .collect();
    Ok(Json(view::network_inspect(network, &endpoints)))
}

async fn network_create(
    State(state): State<DryRunState>,
    DockerJson(body): DockerJson<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    let name = view::check_network_create(&body)?;
    if find_network(&state, name).is_ok() {
        return Err(ApiError::Conflict(format!(
            "network with name {name} already exists"
        )));
    }
    let network = view::new_network(name, &body);
    let id = network["Id"].as_str().unwrap_or_default().to_string();
    state.networks.lock().insert(id.clone(), network);
    Ok((StatusCode::CREATED, Json(json!({"Id": id, "Warning": ""}))))
}

async fn network_delete(
    State(state): State<DryRunState>,
    Path(reference): Path<String>,
) -> Result<StatusCode> {
    let network = find_network(&state, &reference)?;
    view::check_network_delete(&network)?;
    if let Some(id) = network["Id"].as_str() {
        state.networks.lock().remove(id);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The network and the container a connect/disconnect body names.
fn endpoint_target(
    state: &DryRunState,
    reference: &str,
    body: &Value,
) -> Result<(Value, DryContainer)> {
    let network = find_network(state, reference)?;
    let container = state.find(body["Container"].as_str().unwrap_or_default())?;
    Ok((network, container))
}

fn store_request(state: &DryRunState, id: &str, request: Value) {
    if let Some(stored) = state.containers.lock().get_mut(id) {
        stored.request = request;
    }
}

async fn network_connect(
    State(state): State<DryRunState>,
    Path(reference): Path<String>,
    DockerJson(body): DockerJson<Value>,
) -> Result<StatusCode> {
    let (network, container) = endpoint_target(&state, &reference, &body)?;
    let request = view::connected_request(
        &container.request,
        &network,
        &body["EndpointConfig"],
        &container.name,
        container.status() == "running",
    )?;
    store_request(&state, &container.id, request);
    Ok(StatusCode::OK)
}

async fn network_disconnect(
    State(state): State<DryRunState>,
    Path(reference): Path<String>,
    DockerJson(body): DockerJson<Value>,
) -> Result<StatusCode> {
    let (network, container) = endpoint_target(&state, &reference, &body)?;
    let request = view::disconnected_request(
        &container.request,
        &network,
        &container.id,
        container.status() == "running",
    )?;
    store_request(&state, &container.id, request);
    Ok(StatusCode::OK)
}

/// The containers that mount the volume (the real server's rule: any container, running or
/// not).
fn volume_users(containers: &[DryContainer], volume: &Value) -> Vec<String> {
    let name = volume["Name"].as_str().unwrap_or_default();
    containers
        .iter()
        .filter(|container| container.named_volumes.iter().any(|v| v == name))
        .map(|container| container.id.clone())
        .collect()
}

fn volume_in_use(containers: &[DryContainer], volume: &Value) -> bool {
    !volume_users(containers, volume).is_empty()
}

/// Creates a volume record unless one has that name, as Docker's create (explicit, or of the
/// named volumes a new container mounts) does.
fn create_volume(state: &DryRunState, create: &view::VolumeCreate) -> Value {
    let created = crate::runtime::now_rfc3339();
    let request = crate::render::VolumeRequest {
        name: &create.name,
        driver: &create.driver,
        labels: &create.labels,
        options: &create.options,
        created: &created,
    };
    state
        .volumes
        .lock()
        .entry(create.name.clone())
        .or_insert_with(|| crate::runtime::volumes::volume_record(&request))
        .clone()
}

async fn volume_list(State(state): State<DryRunState>, query: Query) -> Result<Json<Value>> {
    let volumes: Vec<Value> = state.volumes.lock().values().cloned().collect();
    let containers: Vec<DryContainer> = state.containers.lock().values().cloned().collect();
    Ok(Json(view::volume_list(
        volumes,
        |volume| volume_in_use(&containers, volume),
        &query,
    )?))
}

/// Docker answers an existing name with that volume, not a conflict. The volume is a record,
/// as the real server keeps it with `named_volumes = "emptyDir"`.
async fn volume_create(
    State(state): State<DryRunState>,
    DockerJson(body): DockerJson<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    let create = view::volume_create(&body)?;
    Ok((StatusCode::CREATED, Json(create_volume(&state, &create))))
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

/// As the real server: refused while a container mounts it; `force` forgives a missing one.
async fn volume_delete(
    State(state): State<DryRunState>,
    Path(name): Path<String>,
    query: Query,
) -> Result<StatusCode> {
    let containers: Vec<DryContainer> = state.containers.lock().values().cloned().collect();
    let mut volumes = state.volumes.lock();
    match volumes.get(&name) {
        None if query_bool(&query, "force") => Ok(StatusCode::NO_CONTENT),
        None => Err(no_such_volume(&name)),
        Some(volume) if volume_in_use(&containers, volume) => Err(ApiError::Conflict(format!(
            "remove {name}: volume is in use - [{}]",
            volume_users(&containers, volume).join(", ")
        ))),
        Some(_) => {
            volumes.remove(&name);
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

async fn volume_prune(
    State(state): State<DryRunState>,
    version: Option<axum::Extension<super::ApiVersion>>,
    query: Query,
) -> Result<Json<Value>> {
    let prunable = view::volume_prune_rule(&query, version.is_some_and(|v| v.older_than("1.42")))?;
    let containers: Vec<DryContainer> = state.containers.lock().values().cloned().collect();
    let mut volumes = state.volumes.lock();
    let deleted: Vec<String> = volumes
        .iter()
        .filter(|(_, volume)| prunable(volume, volume_in_use(&containers, volume)))
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
    async fn routes_outside_the_subset_answer_as_the_real_server_or_501() {
        use super::super::compat::{Support, ROUTES};
        let app = app();
        let mut wrong = Vec::new();
        for route in ROUTES {
            let uri = route
                .path
                .split('/')
                .map(|part| if part.starts_with('{') { "x" } else { part })
                .collect::<Vec<_>>()
                .join("/");
            let answer = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                call(&app, route.method, &format!("/v1.51{uri}"), ""),
            )
            .await;
            // Only a handler waits (wait, attach); the fallback answers at once.
            let Ok((status, body)) = answer else { continue };
            let body = String::from_utf8_lossy(&body);
            let fallback = status == StatusCode::METHOD_NOT_ALLOWED
                || (status == StatusCode::NOT_FOUND && body.contains("\"page not found"));
            let refused = status == StatusCode::NOT_IMPLEMENTED && body.contains("dry-run server");
            let right = match route.support {
                Support::NotSupported => fallback,
                _ => !fallback || refused,
            };
            if !right || (refused && route.support == Support::NotSupported) {
                wrong.push(format!("{} {}: {status} {body}", route.method, route.path));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        let (status, body) = call(&app, "GET", "/v1.51/nothing/here", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(String::from_utf8_lossy(&body).contains("page not found"));
        let (status, _) = call(&app, "POST", "/v1.51/containers/x/exec", "{}").await;
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
    }

    #[tokio::test]
    async fn mounted_volumes_are_created_and_in_use_as_in_the_real_server() {
        let app = app();
        let (status, body) = call(
            &app,
            "POST",
            "/containers/create?name=db",
            r#"{"Image":"redis","HostConfig":{"Binds":["data:/data"]}}"#,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&body)
        );
        let (_, list) = call(
            &app,
            "GET",
            "/volumes?filters=%7B%22dangling%22%3A%5B%22false%22%5D%7D",
            "",
        )
        .await;
        let list: Value = serde_json::from_slice(&list).unwrap();
        assert_eq!(list["Volumes"][0]["Name"], "data");
        let (status, body) = call(&app, "DELETE", "/volumes/data", "").await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(String::from_utf8_lossy(&body).contains("volume is in use"));
        let (_, pruned) = call(
            &app,
            "POST",
            "/volumes/prune?filters=%7B%22all%22%3A%5B%22true%22%5D%7D",
            "",
        )
        .await;
        assert_eq!(
            serde_json::from_slice::<Value>(&pruned).unwrap()["VolumesDeleted"],
            json!([])
        );
        call(&app, "DELETE", "/containers/db", "").await;
        let (status, _) = call(&app, "DELETE", "/volumes/data", "").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = call(&app, "DELETE", "/volumes/data?force=1", "").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = call(&app, "DELETE", "/volumes/data", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
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
