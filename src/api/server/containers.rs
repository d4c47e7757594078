//! Container handlers: create, inspect, list, start, stop, kill, restart, wait, remove, rename,
//! logs and attach.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde_json::{json, Value};
use tracing::{debug_span, Instrument};

use super::extract::{parse_filters, query_bool, query_i64, query_time, DockerBytes, Query};
use super::stream::{frame, hijack, MULTIPLEXED, RAW, STDOUT};
use super::view::{self, ContainerFacts};
use super::AppState;
use crate::api::error::{ApiError, Result};
use crate::api::translate::CreateRequest;
use crate::labels;
use crate::model::ContainerId;
use crate::render::Identity;
use crate::runtime::containers::{Outcome, WaitCondition};
use crate::runtime::logs::LogOptions;
use crate::runtime::objects::image_id;
use crate::runtime::ryuk;
use crate::runtime::stats::stats_json;
use crate::runtime::ContainerView;

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn generated_name(id: &str) -> String {
    const ADJECTIVES: [&str; 8] = [
        "brave", "calm", "eager", "fond", "keen", "lucid", "quirky", "zen",
    ];
    const NAMES: [&str; 8] = [
        "turing", "hopper", "lovelace", "knuth", "ritchie", "thompson", "liskov", "hamilton",
    ];
    let byte = u8::from_str_radix(&id[..2], 16).unwrap_or(0) as usize;
    format!(
        "{}_{}_{}",
        ADJECTIVES[byte % 8],
        NAMES[(byte / 8) % 8],
        &id[..6]
    )
}

/// The `name` query parameter of a create, without Docker's leading slash, checked against
/// Docker's name rule. Shared with the dry-run server.
pub(super) fn requested_name(query: &Query) -> Result<Option<String>> {
    let name = query
        .get("name")
        .map(|n| n.strip_prefix('/').unwrap_or(n).to_string())
        .filter(|n| !n.is_empty());
    if let Some(name) = &name {
        if !valid_name(name) {
            return Err(ApiError::BadRequest(format!(
                "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
    }
    Ok(name)
}

/// `POST /containers/create`: translate, then record the container as its spec ConfigMap.
pub async fn container_create(
    State(state): State<AppState>,
    query: Query,
    DockerBytes(body): DockerBytes,
) -> Result<Response> {
    let name = requested_name(&query)?;
    if let Some(name) = &name {
        if let Some(existing) = state
            .runtime
            .containers()
            .into_iter()
            .find(|c| &c.name == name)
        {
            return Err(crate::runtime::RuntimeError::NameInUse {
                name: name.clone(),
                id: existing.id,
            }
            .into());
        }
    }
    let id = ContainerId::random();
    let name = name.unwrap_or_else(|| generated_name(id.as_str()));
    let identity = Identity {
        id: id.clone(),
        created: crate::runtime::now_rfc3339(),
    };
    let requested_image = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|value| value["Image"].as_str().map(str::to_owned));
    if let Some(image) = requested_image
        .as_deref()
        .filter(|image| state.runtime.ryuk_settings().builtin && ryuk::is_ryuk_image(image))
    {
        return create_builtin_ryuk(&state, &name, &id, &identity.created, image, &body).await;
    }
    let with_links = link_targets(&state, &name, &body)?;
    let body: &[u8] = with_links.as_deref().unwrap_or(&body);
    let image_config = match requested_image {
        Some(image) => {
            super::images::config_for_create(&state, &image)
                .instrument(debug_span!(target: crate::TIMING, "create.image_config"))
                .await?
        }
        None => None,
    };
    let request = CreateRequest {
        start: crate::render::StartInputs::default(),
        purpose: Default::default(),
        body,
        name: Some(&name),
        image: image_config.as_ref(),
        identity,
    };
    let mut translation = debug_span!(target: crate::TIMING, "create.translate")
        .in_scope(|| state.translator.translate(&request))?;
    // The stored spec holds the request at least once.
    state.runtime.check_create_capacity(body.len() as u64)?;
    let shared = service_names_free(&state, &translation.objects.services).await?;
    translation.warnings.extend(shared);
    async {
        super::volumes::create_mounted_volumes(&state, &translation.named_volumes).await?;
        state
            .runtime
            .create_container(
                &name,
                id.as_str(),
                &translation.objects,
                image_config.as_ref(),
            )
            .await
            .map_err(ApiError::from)
    }
    .instrument(debug_span!(target: crate::TIMING, "create.record"))
    .await?;
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        if let Some(image) = value["Image"].as_str() {
            // Built images are listed from their records.
            if image_config
                .as_ref()
                .is_none_or(|c| c.pull_reference.is_none())
            {
                state.runtime.note_image(image);
            }
        }
    }
    tracing::info!(container = %id.short(), %name, "Container created");
    Ok((
        StatusCode::CREATED,
        Json(json!({"Id": id.as_str(), "Warnings": translation.warnings})),
    )
        .into_response())
}

/// Registers a create request's legacy links as dockerd does at create: every target must exist
/// (400 `could not get container for X: No such container: X` — dockerd's invalid-parameter
/// answer, not a 404, which the CLI would take for a missing image and pull), a target sharing
/// another container's network stands for that container, one on the host network cannot be
/// linked to, and one alias names one container (409, as dockerd's name registry answers).
///
/// Returns the body with each alias's target ID recorded ([`crate::model::LINK_TARGETS`]), so the link
/// follows the container as dockerd's does, or `None` when there is nothing to record (no links,
/// or a body or entry that decoding refuses with its own message).
fn link_targets(state: &AppState, name: &str, body: &[u8]) -> Result<Option<Vec<u8>>> {
    let Ok(mut request) = serde_json::from_slice::<Value>(body) else {
        return Ok(None);
    };
    let entries: Vec<&str> = request["HostConfig"]["Links"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if entries
        .iter()
        .any(|entry| crate::model::Link::parse(entry).is_err())
    {
        return Ok(None);
    }
    // dockerd registers links on the default bridge, `host` and `none` only (a user-defined
    // network takes them in `EndpointsConfig`; another container's network refuses them, which
    // decoding answers).
    let registered = matches!(
        request["HostConfig"]["NetworkMode"].as_str().unwrap_or(""),
        "" | "default" | "bridge" | "host" | "none"
    );
    let links: Vec<crate::model::Link> = entries
        .iter()
        .filter_map(|entry| crate::model::Link::parse(entry).ok())
        .collect();
    if links.is_empty() || !registered {
        return Ok(None);
    }
    let not_found = |reference: &str, error: crate::runtime::RuntimeError| {
        ApiError::BadRequest(format!("could not get container for {reference}: {error}"))
    };
    let mut targets = serde_json::Map::new();
    for link in links {
        let mut target = state
            .runtime
            .find(&link.target)
            .map_err(|error| not_found(&link.target, error))?;
        // A target on another container's network is reached through that container; dockerd
        // follows the chain (bounded here: a cycle cannot be created, but a record could say so).
        for _ in 0..16 {
            let Some(shared) = target.record.request["HostConfig"]["NetworkMode"]
                .as_str()
                .and_then(|mode| mode.strip_prefix("container:"))
                .map(str::to_owned)
            else {
                break;
            };
            target = state
                .runtime
                .find(&shared)
                .map_err(|error| not_found(&shared, error))?;
        }
        if target.record.request["HostConfig"]["NetworkMode"].as_str() == Some("host") {
            return Err(ApiError::BadRequest(
                "conflicting options: host type networking can't be used with links. This would result in undefined behavior".into(),
            ));
        }
        match targets.get(&link.alias).and_then(Value::as_str) {
            Some(known) if known != target.id => {
                return Err(crate::runtime::RuntimeError::NameInUse {
                    name: format!("{name}/{}", link.alias),
                    id: known.to_owned(),
                }
                .into())
            }
            _ => {
                targets.insert(link.alias.clone(), json!(target.id));
            }
        }
    }
    request[crate::model::LINK_TARGETS] = Value::Object(targets);
    serde_json::to_vec(&request)
        .map(Some)
        .map_err(|error| ApiError::Internal(error.to_string()))
}

/// Creates testcontainers' reaper as a container podbridge serves itself (`runtime/ryuk.rs`): no
/// pod, so nothing goes through the policy chain; what it may remove is what the client could
/// remove through the Docker API anyway. The body is still read as Docker would (a malformed one
/// is a 400).
async fn create_builtin_ryuk(
    state: &AppState,
    name: &str,
    id: &ContainerId,
    created: &str,
    image: &str,
    body: &[u8],
) -> Result<Response> {
    let decoded = crate::api::decode::decode_create(body, Some(name), None)
        .map_err(|error| ApiError::from(crate::api::translate::TranslateError::from(error)))?;
    let record = crate::model::ContainerRecord::of_workload(&decoded.workload);
    state
        .runtime
        .create_ryuk(name, id.as_str(), &record, image, created)
        .await?;
    state.runtime.note_image(image);
    tracing::info!(container = %id.short(), %name, "Container created (built-in Ryuk)");
    Ok((
        StatusCode::CREATED,
        Json(json!({"Id": id.as_str(), "Warnings": []})),
    )
        .into_response())
}

/// Refuses (409) a container whose Service names (its name, hostname and network aliases) are
/// taken by Services podbridge does not manage: the name would never reach this container, and
/// taking the Service over would redirect someone else's traffic. Names another podbridge
/// instance in the namespace serves stay with it (the first instance keeps a shared DNS name);
/// those come back as Docker `Warnings`.
pub(super) async fn service_names_free(
    state: &AppState,
    services: &[k8s_openapi::api::core::v1::Service],
) -> Result<Vec<String>> {
    let foreign = state
        .runtime
        .applier
        .foreign_services(services)
        .await
        .map_err(crate::runtime::RuntimeError::from)?;
    let mut warnings = Vec::new();
    for taken in foreign {
        if !taken.other_instance {
            return Err(ApiError::Conflict(format!(
                "alias {} is a Service not owned by this podbridge ({}): podbridge does not take over objects it does not own; choose another container name, hostname or network alias",
                taken.name, taken.owner
            )));
        }
        warnings.push(format!(
            "alias {} is already served by another podbridge in this namespace ({}); this container is not reachable under that name",
            taken.name, taken.owner
        ));
    }
    Ok(warnings)
}

fn find(state: &AppState, id: &str) -> Result<ContainerView> {
    Ok(state.runtime.find(id)?)
}

/// The ID `/images/{id}/json` resolves: the config digest when podbridge read the image's
/// config (Docker's ID), else the stable ID of the reference.
fn image_id_of(state: &AppState, view: &ContainerView) -> String {
    state
        .runtime
        .find_image(&view.image)
        .map(|record| record.id)
        .unwrap_or_else(|| image_id(&view.image))
}

/// What the runtime knows of a container, for Docker's view of it. `networks` are the stored
/// networks ([`labels::ROLE_NETWORK`]); `link_names` the link names naming each container.
fn facts<'a>(
    state: &AppState,
    view: &'a ContainerView,
    networks: &[Value],
    link_names: &HashMap<String, Vec<String>>,
) -> ContainerFacts<'a> {
    // A recorded port that could not be bound again after a restart is said here, not moved.
    let error = std::iter::once(view.state.error.clone())
        .chain(state.runtime.port_errors(&view.id))
        .filter(|e| !e.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    ContainerFacts {
        id: &view.id,
        name: &view.name,
        created: &view.created,
        image: &view.image,
        image_id: image_id_of(state, view),
        request: &view.record.request,
        state: view.state.clone(),
        error,
        ip: view.pod_ip().unwrap_or_default(),
        gateway: state.runtime.publish_ip().to_string(),
        networks: view::attachments(&view.record.request, networks),
        published: if view.state.running {
            state.runtime.published_ports(&view.id)
        } else {
            Default::default()
        },
        links: state.runtime.docker_links(view),
        link_names: link_names.get(&view.id).cloned().unwrap_or_default(),
        labels: view.docker_labels(),
        sandbox_id: view
            .pod
            .as_ref()
            .and_then(|p| p.metadata.uid.clone())
            .unwrap_or_default(),
        pod: &view.pod_name,
    }
}

pub async fn container_inspect(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let view = find(&state, &id)?;
    let networks = state.runtime.stored_objects(labels::ROLE_NETWORK);
    Ok(Json(view::container_inspect(&facts(
        &state,
        &view,
        &networks,
        &HashMap::new(),
    ))))
}

fn container_matches(
    state: &AppState,
    view: &ContainerView,
    filters: &HashMap<String, Vec<String>>,
) -> bool {
    let networks = state.runtime.stored_objects(labels::ROLE_NETWORK);
    view::container_matches(&facts(state, view, &networks, &HashMap::new()), filters)
}

pub async fn container_list(State(state): State<AppState>, query: Query) -> Result<Json<Value>> {
    let link_names = state.runtime.link_names();
    let networks = state.runtime.stored_objects(labels::ROLE_NETWORK);
    let views = state.runtime.containers();
    let containers: Vec<ContainerFacts> = views
        .iter()
        .map(|view| facts(&state, view, &networks, &link_names))
        .collect();
    Ok(Json(view::container_list(&containers, &query)?))
}

pub async fn container_start(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let view = find(&state, &id)?;
    if view.state.running {
        return Err(ApiError::NotModified);
    }
    if view.is_builtin_ryuk() {
        state.runtime.start_ryuk(&view).await?;
        return Ok(StatusCode::NO_CONTENT);
    }
    if let Err(error) = state.runtime.resolve_links(&view) {
        // dockerd removes an AutoRemove container whose start failed (`run --rm` waits for
        // that); the client still learns why the start failed.
        if view.auto_remove() {
            if let Err(cleanup) = state.runtime.remove_now(&view).await {
                return Err(ApiError::Internal(format!(
                    "{error}; removing the container failed too: {cleanup}"
                )));
            }
        }
        return Err(error.into());
    }
    let objects = debug_span!(target: crate::TIMING, "start.translate")
        .in_scope(|| start_objects(&state, &view, &view.record.request))?;
    no_content_unless_unchanged(state.runtime.start(&view, objects).await?)
}

/// Translates a stored container's request again, against the policy in force, with what the
/// container gained since create (`runtime.stored_translation`): what `start` applies is what the
/// chain saw, and a policy reloaded since create decides (a denial answers 403).
pub(super) fn translate_stored(
    state: &AppState,
    view: &ContainerView,
    request: &Value,
    for_start: bool,
) -> Result<(
    crate::api::translate::Translation,
    Option<crate::model::ImageConfig>,
)> {
    let body = serde_json::to_vec(request).map_err(|e| ApiError::Internal(e.to_string()))?;
    let id = ContainerId::parse(&view.id).map_err(|e| ApiError::Internal(e.to_string()))?;
    let stored = state.runtime.stored_translation(view, for_start)?;
    let create = CreateRequest {
        body: &body,
        name: Some(&stored.name),
        image: stored.image_config.as_ref(),
        identity: Identity {
            id,
            created: view.created.clone(),
        },
        start: stored.start,
        purpose: Default::default(),
    };
    let translation = state
        .translator
        .translate(&create)
        .map_err(|error| match error {
            crate::api::translate::TranslateError::Denied { message, results } => {
                crate::api::translate::TranslateError::Denied {
                    message: message.replacen(
                        "container create blocked",
                        "container start blocked",
                        1,
                    ),
                    results,
                }
            }
            other => other,
        })?;
    Ok((translation, stored.image_config))
}

fn start_objects(
    state: &AppState,
    view: &ContainerView,
    request: &Value,
) -> Result<crate::render::RenderedObjects> {
    Ok(translate_stored(state, view, request, true)?.0.objects)
}

pub async fn container_stop(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Query,
) -> Result<StatusCode> {
    let timeout = stop_timeout(&query)?;
    let view = find(&state, &id)?;
    no_content_unless_unchanged(state.runtime.stop(&view, timeout).await?)
}

/// Docker answers 304 when the container already was in the requested state.
fn no_content_unless_unchanged(outcome: Outcome) -> Result<StatusCode> {
    match outcome {
        Outcome::Done => Ok(StatusCode::NO_CONTENT),
        Outcome::AlreadyInState => Err(ApiError::NotModified),
    }
}

/// `t` (or `timeout`, API 1.42+): seconds to wait after the stop signal; an integer, as in
/// Docker (negative: wait as long as it takes).
fn stop_timeout(query: &Query) -> Result<Option<i64>> {
    Ok(match query_i64(query, "t")? {
        Some(t) => Some(t),
        None => query_i64(query, "timeout")?,
    })
}

pub async fn container_restart(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Query,
) -> Result<StatusCode> {
    let timeout = stop_timeout(&query)?;
    let view = find(&state, &id)?;
    state.runtime.stop(&view, timeout).await?;
    let view = find(&state, &id)?;
    if view.is_builtin_ryuk() {
        state.runtime.start_ryuk(&view).await?;
        return Ok(StatusCode::NO_CONTENT);
    }
    let objects = start_objects(&state, &view, &view.record.request)?;
    state.runtime.start(&view, objects).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn container_kill(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Query,
) -> Result<StatusCode> {
    let signal = query.get("signal").map(String::as_str).unwrap_or_default();
    if !signal.is_empty() {
        crate::runtime::containers::check_signal(signal)?;
    }
    let view = find(&state, &id)?;
    state.runtime.kill(&view, Some(signal)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /containers/{id}`. The path may hold a link name (`/self/alias`, or `self/alias` as
/// the CLI sends it), which names the link's target, as in dockerd.
pub async fn container_delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Query,
) -> Result<StatusCode> {
    if query_bool(&query, "link") {
        return link_delete(&state, &id).await;
    }
    let view = find(&state, &id)?;
    state
        .runtime
        .remove(&view, query_bool(&query, "force"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /containers/{link name}?link=true`: removes one legacy link, as dockerd's `rmLink`
/// does. The name must resolve (404 `No such container`), must be a link name, not a container's
/// own (dockerd's 500 `Conflict, cannot remove the default link name of the container`), and the
/// linking container forgets the link: its stored request loses the entry, and its next start
/// neither resolves the alias nor sets the link's variables. A running container keeps both
/// until then (a pod's `/etc/hosts` and environment cannot change; dockerd rewrites the hosts
/// file of a running container).
async fn link_delete(state: &AppState, reference: &str) -> Result<StatusCode> {
    find(state, reference)?;
    let name = format!("/{}", reference.trim_start_matches('/'));
    let (parent, _) = name.rsplit_once('/').unwrap_or(("", &name));
    if parent.is_empty() {
        return Err(ApiError::Internal(
            "Conflict, cannot remove the default link name of the container".into(),
        ));
    }
    let Some((linking, link)) = state.runtime.find_link(&name) else {
        return Err(ApiError::Internal(format!(
            "Cannot get parent {parent} for link name {name}"
        )));
    };
    let mut request = linking.record.request.clone();
    if let Some(entries) = request["HostConfig"]["Links"].as_array_mut() {
        entries.retain(|entry| {
            entry
                .as_str()
                .and_then(|entry| crate::model::Link::parse(entry).ok())
                .is_none_or(|parsed| parsed.alias != link.alias)
        });
    }
    if let Some(targets) = request[crate::model::LINK_TARGETS].as_object_mut() {
        targets.remove(&link.alias);
    }
    super::networks::retranslate(state, &linking, &request).await?;
    tracing::info!(container = %linking.short_id(), link = %name, "Link removed");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn container_rename(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Query,
) -> Result<StatusCode> {
    let view = find(&state, &id)?;
    let name = query.get("name").cloned().unwrap_or_default();
    state.runtime.rename(&view, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/wait`: headers at once, the body when the condition holds.
pub async fn container_wait(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Query,
) -> Result<Response> {
    let view = find(&state, &id)?;
    let condition = match query.get("condition").map(String::as_str) {
        None | Some("") | Some("not-running") => WaitCondition::NotRunning,
        Some("next-exit") => WaitCondition::NextExit,
        Some("removed") => WaitCondition::Removed,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "invalid condition: \"{other}\""
            )))
        }
    };
    let runtime = state.runtime.clone();
    // Evaluate the starting point now, so next-exit measures from this request.
    let id = view.id.clone();
    let waiter = async move { runtime.wait(&id, condition).await };
    let waiter = Box::pin(waiter);
    let body = futures::stream::once(async move {
        let body = match waiter.await {
            Ok(exit) => json!({"StatusCode": exit.exit_code, "Error": Value::Null}),
            Err(error) => json!({"StatusCode": -1, "Error": {"Message": error.to_string()}}),
        };
        Ok::<_, std::convert::Infallible>(Bytes::from(format!("{body}\n")))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Docker's log query; `since`/`until` that are not times are 400s, a `tail` that is not a
/// count means all lines, as in Docker.
fn log_options(query: &HashMap<String, String>) -> Result<LogOptions> {
    let seconds = |nanos: i64| nanos as f64 / 1e9;
    Ok(LogOptions {
        follow: query_bool(query, "follow"),
        since: query_time(query, "since")?.map(seconds),
        until: query_time(query, "until")?.map(seconds),
        tail: query
            .get("tail")
            .and_then(|t| t.parse::<i64>().ok())
            .filter(|t| *t >= 0),
        timestamps: query_bool(query, "timestamps"),
        next_run: false,
    })
}

/// `GET /containers/{id}/logs`: frames for non-TTY containers, raw bytes for TTY.
pub async fn container_logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Query,
) -> Result<Response> {
    let options = log_options(&query)?;
    let view = find(&state, &id)?;
    if !query_bool(&query, "stdout") && !query_bool(&query, "stderr") {
        return Err(ApiError::BadRequest(
            "Bad parameters: you must choose at least one stream".into(),
        ));
    }
    // A follower may stay open for the container's lifetime: it takes a stream slot.
    let permit = match options.follow {
        true => Some(state.runtime.stream_permit()?),
        false => None,
    };
    let tty = view.tty();
    let lines = state.runtime.logs(&view, options);
    let body = lines.map(move |line| {
        let _permit = &permit;
        Ok::<_, std::convert::Infallible>(if tty { line } else { frame(STDOUT, &line) })
    });
    let media = if tty { RAW } else { MULTIPLEXED };
    Ok(([(header::CONTENT_TYPE, media)], Body::from_stream(body)).into_response())
}

/// `POST /containers/{id}/attach`: the container's output over a hijacked connection (attach
/// usually precedes start); stdin is delivered via `pods/attach`. `logs=1` replays what was
/// written so far, `stream=1` follows; with `stream=0` the answer ends after the replay, as in
/// Docker (docker-py's `attach(stream=False)`).
pub async fn container_attach(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Query,
    request: Request,
) -> Result<Response> {
    let view = find(&state, &id)?;
    let (stream, logs) = (query_bool(&query, "stream"), query_bool(&query, "logs"));
    let permit = state.runtime.stream_permit()?;
    let tty = view.tty();
    let runtime = state.runtime.clone();
    let want_output =
        (stream || logs) && (query_bool(&query, "stdout") || query_bool(&query, "stderr"));
    let want_stdin = stream
        && query_bool(&query, "stdin")
        && view.record.request["OpenStdin"].as_bool().unwrap_or(false);
    // Before start, the next run's output from its beginning; while running, the replay only if
    // `logs`, then what comes.
    let next_run = stream && !view.state.running;
    let options = LogOptions {
        follow: stream,
        tail: if logs || next_run { None } else { Some(0) },
        next_run,
        ..Default::default()
    };
    Ok(hijack(request, tty, move |mut session| async move {
        let _permit = permit;
        let guard = runtime.attach_guard(&view.id);
        let mut watched = None;
        if want_stdin {
            if let Some(mut input) = session.input.take() {
                let runtime = runtime.clone();
                let view = view.clone();
                tokio::spawn(async move { runtime.attach_stdin(&view, &mut input).await });
            }
        } else {
            watched = session.input.take();
        }
        if want_output {
            let lines = runtime.logs(&view, options);
            futures::pin_mut!(lines);
            // A client that went away is only noticed by writing to it: once its side is closed
            // (the docker CLI half-closes at once, a cancelled docker-py closes all of it), a
            // multiplexed stream sends an empty frame now and then, which clients skip; the
            // write that fails ends the session and frees its stream slot.
            let mut closed = watched.is_none();
            // After the client's side closed: one probe at once (a client that is gone answers it
            // with a reset), a second shortly after (which then fails), then every few seconds.
            let mut probes = 0u32;
            let mut next_probe = closed.then(tokio::time::Instant::now);
            let mut scratch = [0u8; 512];
            loop {
                let probe_due = async {
                    match next_probe {
                        Some(at) if !tty => tokio::time::sleep_until(at).await,
                        _ => std::future::pending().await,
                    }
                };
                tokio::select! {
                    line = lines.next() => {
                        let Some(line) = line else { break };
                        let bytes = if tty { line } else { frame(STDOUT, &line) };
                        if !session.output.send(bytes).await {
                            break;
                        }
                    }
                    read = async {
                        match watched.as_mut() {
                            Some(input) if !closed => tokio::io::AsyncReadExt::read(input, &mut scratch).await,
                            _ => std::future::pending().await,
                        }
                    } => {
                        if !matches!(read, Ok(n) if n > 0) {
                            closed = true;
                            next_probe = Some(tokio::time::Instant::now());
                        }
                    }
                    _ = probe_due => {
                        if !session.output.send(frame(STDOUT, b"")).await {
                            break;
                        }
                        probes += 1;
                        let wait = if probes == 1 { ATTACH_PROBE_QUICK } else { ATTACH_PROBE };
                        next_probe = Some(tokio::time::Instant::now() + wait);
                    }
                }
            }
        }
        session.output.close().await;
        drop(guard);
    }))
}

/// How often an attach whose client closed its side checks that the client is still there, and
/// how soon the second check follows the first.
const ATTACH_PROBE: std::time::Duration = std::time::Duration::from_secs(2);
const ATTACH_PROBE_QUICK: std::time::Duration = std::time::Duration::from_millis(100);

/// `POST /containers/{id}/resize`: reaches the terminal of a `run -it` container through its
/// attach session (the size waits for the session when it comes first).
pub async fn container_resize(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Query,
) -> Result<StatusCode> {
    let (height, width) = (
        super::exec::terminal_dimension(&query, "h")?,
        super::exec::terminal_dimension(&query, "w")?,
    );
    let view = find(&state, &id)?;
    if view.tty() {
        state.runtime.container_resize(&view, width, height).await;
    }
    Ok(StatusCode::OK)
}

pub async fn container_top(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let view = find(&state, &id)?;
    view.require_process("top")?;
    let output = state
        .runtime
        .exec_capture(
            &view.pod_name,
            vec!["ps".into(), "-o".into(), "pid,user,args".into()],
            None,
        )
        .await?;
    let (titles, processes) = ps_table(&String::from_utf8_lossy(&output.stdout));
    Ok(Json(json!({"Titles": titles, "Processes": processes})))
}

/// `ps -o pid,user,args` output as Docker's `top` table: the last column keeps its spaces, and
/// the `ps` podbridge ran to list them is not one of the container's processes.
fn ps_table(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = text.lines();
    let titles: Vec<String> = lines
        .next()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let columns = titles.len().max(1);
    let processes = lines
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut rest = line.trim_start();
            let mut row = Vec::with_capacity(columns);
            for _ in 1..columns {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                row.push(rest[..end].to_string());
                rest = rest[end..].trim_start();
            }
            row.push(rest.to_string());
            row
        })
        .filter(|row| row.last().map(String::as_str) != Some("ps -o pid,user,args"))
        .collect();
    (titles, processes)
}

/// `GET /containers/{id}/stats`: samples read inside the container (see runtime::stats). A
/// stream sends one per second until the container stops; `stream=false` waits for a second
/// sample so CPU percentages can be computed, unless `one-shot`.
pub async fn container_stats(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Query,
) -> Result<Response> {
    let view = find(&state, &id)?;
    let stream = !query.contains_key("stream") || query_bool(&query, "stream");
    let one_shot = query_bool(&query, "one-shot");
    let runtime = state.runtime.clone();
    let sample = move |view: ContainerView| {
        let runtime = runtime.clone();
        async move {
            let at = crate::runtime::now_rfc3339();
            let sample = if view.state.running {
                runtime.stats_sample(&view).await.ok().flatten()
            } else {
                None
            };
            (at, sample)
        }
    };
    if !stream {
        let (at, first) = sample(view.clone()).await;
        if one_shot {
            return Ok(Json(stats_json(&view, &at, first.as_ref(), None)).into_response());
        }
        tokio::time::sleep(STATS_INTERVAL).await;
        let view = find(&state, &id)?;
        let (now, second) = sample(view.clone()).await;
        let previous = first.as_ref().map(|s| (at.as_str(), s));
        return Ok(Json(stats_json(&view, &now, second.as_ref(), previous)).into_response());
    }
    let permit = state.runtime.stream_permit()?;
    let body = async_stream::stream! {
        let _permit = permit;
        let mut previous: Option<(String, crate::runtime::stats::Sample)> = None;
        loop {
            let Ok(view) = state.runtime.find(&id) else { break };
            let (at, current) = sample(view.clone()).await;
            let json = stats_json(
                &view,
                &at,
                current.as_ref(),
                previous.as_ref().map(|(at, s)| (at.as_str(), s)),
            );
            yield Ok::<_, std::convert::Infallible>(Bytes::from(format!("{json}\n")));
            if !view.state.running {
                break;
            }
            previous = current.map(|s| (at, s));
            tokio::time::sleep(STATS_INTERVAL).await;
        }
    };
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Docker samples stats once a second.
const STATS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Resource fields of `POST /containers/{id}/update` (Docker's `Resources`).
const UPDATE_RESOURCE_FIELDS: [&str; 22] = [
    "CpuShares",
    "Memory",
    "CgroupParent",
    "BlkioWeight",
    "BlkioWeightDevice",
    "BlkioDeviceReadBps",
    "BlkioDeviceWriteBps",
    "BlkioDeviceReadIOps",
    "BlkioDeviceWriteIOps",
    "CpuPeriod",
    "CpuQuota",
    "CpuRealtimePeriod",
    "CpuRealtimeRuntime",
    "CpusetCpus",
    "CpusetMems",
    "Devices",
    "MemoryReservation",
    "MemorySwap",
    "NanoCpus",
    "PidsLimit",
    "KernelMemory",
    "CPUCount",
];

/// `POST /containers/{id}/update`: the restart policy is written into the stored request (the
/// `on-failure` limit applies at once, the policy itself from the next start: a running pod's is
/// fixed); resource limits cannot change on a running pod before Kubernetes 1.27 (in-place
/// resize), so asking for them is refused rather than answered 200 with nothing done.
pub async fn container_update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    super::extract::DockerJson(body): super::extract::DockerJson<Value>,
) -> Result<Json<Value>> {
    let view = find(&state, &id)?;
    // docker-py and the CLI send zero values for what they do not change
    let set = |value: &Value| match value {
        Value::Null => false,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => true,
    };
    let asked: Vec<&str> = UPDATE_RESOURCE_FIELDS
        .into_iter()
        .filter(|key| body.get(*key).is_some_and(set))
        .collect();
    if !asked.is_empty() {
        return Err(ApiError::NotImplemented(format!(
            "updating {} is not supported: a pod's resources cannot change while it exists on this cluster; remove and recreate the container with the new limits",
            asked.join(", ")
        )));
    }
    let mut warnings = Vec::new();
    // (the CLI sends an empty policy when --restart is not given)
    if let Some(policy) = body
        .get("RestartPolicy")
        .filter(|p| p["Name"].as_str().is_some_and(|name| !name.is_empty()))
    {
        if view.auto_remove()
            && policy["Name"]
                .as_str()
                .is_some_and(|n| !n.is_empty() && n != "no")
        {
            return Err(ApiError::BadRequest(
                "Cannot update restart policy to a container with AutoRemove enabled".into(),
            ));
        }
        let mut request = view.record.request.clone();
        request["HostConfig"]["RestartPolicy"] = policy.clone();
        let (translation, image_config) = translate_stored(&state, &view, &request, false)?;
        state
            .runtime
            .update_spec(&view, &translation.objects, image_config.as_ref())
            .await?;
        if view.state.running {
            warnings.push(
                "the restart policy applies from the next start: a running pod's own cannot change"
                    .to_string(),
            );
        }
    }
    Ok(Json(json!({"Warnings": warnings})))
}

pub async fn container_pause() -> ApiError {
    ApiError::NotImplemented("pause is not supported: Kubernetes pods cannot be frozen".into())
}

/// `GET /containers/{id}/changes`: a pod's filesystem is not diffable against its image from the
/// outside, so the answer is a daemon's 501 for a feature it lacks rather than a 404 that reads
/// as a missing route or container. Answered for any id: no lookup can make it succeed.
pub async fn container_changes() -> ApiError {
    ApiError::NotImplemented(
        "container changes are not supported by podbridge: a pod's filesystem changes cannot be listed".into(),
    )
}

pub async fn container_prune(State(state): State<AppState>, query: Query) -> Result<Json<Value>> {
    let filters = parse_filters(query.get("filters"))?;
    let mut deleted = Vec::new();
    for view in state.runtime.containers() {
        if view.state.running || !container_matches(&state, &view, &filters) {
            continue;
        }
        state.runtime.remove(&view, false).await?;
        deleted.push(view.id.clone());
    }
    Ok(Json(
        json!({"ContainersDeleted": deleted, "SpaceReclaimed": 0}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_lists_the_container_processes_only() {
        let (titles, processes) = ps_table(
            "PID   USER     COMMAND\n    1 root     sleep 300\n   12 nobody   sh -c while true; do :; done\n   20 root     ps -o pid,user,args\n",
        );
        assert_eq!(titles, ["PID", "USER", "COMMAND"]);
        assert_eq!(
            processes,
            [
                vec!["1", "root", "sleep 300"],
                vec!["12", "nobody", "sh -c while true; do :; done"]
            ]
        );
    }

    #[test]
    fn names_follow_docker_rules() {
        assert!(valid_name("web-1.a_b"));
        assert!(!valid_name("-web"));
        assert!(!valid_name("we b"));
        assert!(generated_name(&"ab".repeat(32)).ends_with("ababab"));
    }
}
