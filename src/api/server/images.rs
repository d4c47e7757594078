//! Image handlers. The cluster pulls images itself: a pull reads only the image's config from its
//! registry (when podbridge can reach it), and inspect answers from the references podbridge has
//! seen with that config.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

use super::extract::{parse_filters, query_bool, Query};
use super::AppState;
use crate::api::error::{ApiError, Result};
use crate::model::ImageConfig;
use crate::runtime::build::BuiltImage;
use crate::runtime::objects::{image_id, normalise_image, ImageRecord};
use crate::runtime::registry::{Credentials, ImageDetails, RegistryError};

/// How long `create` and inspect wait for an image config before going on without it.
const QUICK_LOOKUP: Duration = Duration::from_secs(2);
/// How long a pull waits for the image config.
const PULL_LOOKUP: Duration = Duration::from_secs(20);

/// The image's details from the registry client: for a pull, asked anew within
/// [`PULL_LOOKUP`]; otherwise from the cache while fresh, within [`QUICK_LOOKUP`].
async fn lookup(
    state: &AppState,
    reference: &str,
    credentials: Option<&Credentials>,
    pull: bool,
) -> std::result::Result<Arc<ImageDetails>, RegistryError> {
    let limit = if pull { PULL_LOOKUP } else { QUICK_LOOKUP };
    match tokio::time::timeout(
        limit,
        state.runtime.registry.details(reference, credentials, pull),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(RegistryError::RequestTimedOut {
            url: reference.to_owned(),
        }),
    }
}

/// The config `create` translates with: known quickly, or not at all (the translation then
/// leaves the image's defaults to the cluster, as it always did). An image its registry says
/// does not exist (the manifest is unknown) and that podbridge has no record of is Docker's
/// 404 `No such image`, on which the docker CLI and docker-py pull and report the pull's error,
/// instead of a pod that can never start. A registry that only refuses access says nothing: the
/// nodes may hold credentials podbridge lacks.
pub(super) async fn config_for_create(
    state: &AppState,
    reference: &str,
) -> Result<Option<ImageConfig>> {
    if let Some(built) = state.runtime.find_built_image(reference) {
        return Ok(Some(built.image_config()));
    }
    match lookup(state, reference, None, false).await {
        Ok(details) => {
            state.runtime.note_image_with_id(reference, &details.id);
            Ok(Some(details.config.clone()))
        }
        Err(RegistryError::ManifestNotFound { .. })
            if state.runtime.find_image(reference).is_none() =>
        {
            Err(ApiError::NotFound(format!(
                "No such image: {}",
                normalise_image(reference)
            )))
        }
        Err(error) => {
            tracing::warn!(%reference, %error, "Image config unknown, translating without it");
            Ok(None)
        }
    }
}

fn inspect_json(
    reference: &str,
    record: Option<&ImageRecord>,
    details: Option<&ImageDetails>,
) -> Value {
    let normalised = normalise_image(reference);
    let id = details
        .map(|d| d.id.clone())
        .or_else(|| record.map(|r| r.id.clone()))
        .unwrap_or_else(|| image_id(&normalised));
    let created = details
        .and_then(|d| d.created.clone())
        .or_else(|| {
            record
                .and_then(|r| jiff::Timestamp::from_second(r.created).ok())
                .map(|t| t.to_string())
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into());
    let mut inspect = json!({
        "Id": id, "RepoTags": [normalised], "RepoDigests": [], "Parent": "", "Comment": "", "Created": created,
        "DockerVersion": "", "Author": "", "Architecture": super::system::arch(), "Os": "linux",
        "Size": 0, "VirtualSize": 0, "GraphDriver": {"Name": "overlay2", "Data": {}},
        "RootFS": {"Type": "layers", "Layers": []}, "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        "Config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": Value::Null,
            "Entrypoint": Value::Null, "ExposedPorts": Value::Null, "Labels": {}, "WorkingDir": "", "Volumes": Value::Null},
    });
    if let Some(details) = details {
        if let Ok(Value::Object(config)) = serde_json::to_value(&details.config) {
            for (key, value) in config.into_iter().filter(|(_, value)| !value.is_null()) {
                inspect["Config"][key] = value;
            }
        }
        if let Some(architecture) = &details.architecture {
            inspect["Architecture"] = json!(architecture);
        }
        if let Some(os) = &details.os {
            inspect["Os"] = json!(os);
        }
        inspect["Size"] = json!(details.size);
        if let Some(digest) = &details.manifest_digest {
            let repository = normalised
                .rsplit_once(':')
                .map_or(normalised.as_str(), |(name, _)| name);
            inspect["RepoDigests"] = json!([format!("{repository}@{digest}")]);
        }
    }
    inspect
}

/// Inspect of an image `docker build` made here: its recorded config, every tag.
fn inspect_built(image: &BuiltImage) -> Value {
    let mut config = json!({"Env": [], "Cmd": Value::Null, "Entrypoint": Value::Null, "ExposedPorts": Value::Null,
        "Labels": {}, "WorkingDir": "", "Volumes": Value::Null, "User": ""});
    if let Value::Object(recorded) = &image.config {
        for (key, value) in recorded {
            config[key] = value.clone();
        }
    }
    let tags: Vec<String> = image.tags.iter().map(|tag| normalise_image(tag)).collect();
    json!({
        "Id": image.image_id, "RepoTags": tags, "RepoDigests": [], "Parent": "", "Comment": "",
        "Created": image.created, "DockerVersion": "", "Author": "", "Architecture": image.architecture,
        "Os": image.os, "Size": image.size, "VirtualSize": 0, "GraphDriver": {"Name": "overlay2", "Data": {}},
        "RootFS": {"Type": "layers", "Layers": []}, "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        "Config": config,
    })
}

/// `GET /images/{name}/json` (and `/history`).
pub async fn image_get(
    State(state): State<AppState>,
    Path(rest): Path<String>,
) -> Result<Response> {
    if let Some(name) = rest.strip_suffix("/json") {
        if let Some(built) = state.runtime.find_built_image(name) {
            return Ok(Json(inspect_built(&built)).into_response());
        }
        // Only images podbridge has seen (pulled, or used by a container): clients pull on 404,
        // which records the reference, and `docker inspect` falls through to "No such object".
        let record = state
            .runtime
            .find_image(name)
            .ok_or_else(|| ApiError::NotFound(format!("No such image: {name}")))?;
        let details = lookup(&state, &record.reference, None, false).await.ok();
        return Ok(Json(inspect_json(
            &record.reference,
            Some(&record),
            details.as_deref(),
        ))
        .into_response());
    }
    if let Some(name) = rest.strip_suffix("/get") {
        return super::build::save(state, vec![name.to_string()]).await;
    }
    if let Some(name) = rest.strip_suffix("/history") {
        return Ok(Json(json!([{"Id": image_id(name), "Created": 0, "CreatedBy": "", "Tags": [normalise_image(name)], "Size": 0, "Comment": ""}])).into_response());
    }
    Err(ApiError::NotFound(format!(
        "page not found: /images/{rest}"
    )))
}

/// `POST /images/{name}/tag` and `/push`.
pub async fn image_post(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    query: Query,
) -> Result<Response> {
    if let Some(name) = rest.strip_suffix("/tag") {
        let repo = query.get("repo").cloned().unwrap_or_default();
        let tag = query
            .get("tag")
            .filter(|t| !t.is_empty())
            .cloned()
            .unwrap_or_else(|| "latest".into());
        let target = format!("{repo}:{tag}");
        if let Some(mut built) = state.runtime.find_built_image(name) {
            let normalised = crate::model::ImageRef::parse(&target)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?
                .normalised();
            if !built.tags.contains(&normalised) {
                built.tags.push(normalised);
            }
            state.runtime.record_built_image(&built).await?;
            emit_image_event(&state, "tag", &built.image_id, &normalise_image(&target));
            return Ok(StatusCode::CREATED.into_response());
        }
        let Some(source) = state.runtime.find_image(name) else {
            return Err(ApiError::NotFound(format!("No such image: {name}")));
        };
        // A tag names the same image: it shares the source's ID, as in Docker.
        let record = state
            .runtime
            .note_image_with_id(&format!("{repo}:{tag}"), &source.id);
        emit_image_event(&state, "tag", &record.id, &record.reference);
        return Ok(StatusCode::CREATED.into_response());
    }
    if let Some(name) = rest.strip_suffix("/push") {
        return super::build::push(state, name, query.get("tag").map(String::as_str), &headers)
            .await;
    }
    Err(ApiError::NotFound(format!(
        "page not found: /images/{rest}"
    )))
}

/// Image events carry the image's ID and its reference as `name`.
fn emit_image_event(state: &AppState, action: &str, id: &str, reference: &str) {
    let attributes = crate::runtime::events::named(reference, &[]);
    state.runtime.emit(crate::runtime::events::object_event(
        "image", action, id, attributes,
    ));
}

pub async fn image_delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    let in_use = state
        .runtime
        .containers()
        .iter()
        .any(|c| normalise_image(&c.image) == normalise_image(&name));
    if in_use {
        return Err(ApiError::Conflict(format!("conflict: unable to remove repository reference \"{name}\" - container is using its referenced image")));
    }
    if let Some(mut built) = state.runtime.find_built_image(&name) {
        // A tag is untagged; the image goes with its last tag, or when named by ID.
        let normalised = crate::model::ImageRef::parse(&name)
            .map(|r| r.normalised())
            .unwrap_or_default();
        let mut answer = Vec::new();
        if built.tags.contains(&normalised) {
            built.tags.retain(|tag| *tag != normalised);
            emit_image_event(&state, "untag", &built.image_id, &normalise_image(&name));
            answer.push(json!({"Untagged": normalise_image(&name)}));
        } else {
            for tag in &built.tags {
                answer.push(json!({"Untagged": normalise_image(tag)}));
            }
            built.tags.clear();
        }
        if built.tags.is_empty() {
            state.runtime.delete_built_image(&built).await?;
            emit_image_event(&state, "delete", &built.image_id, &built.image_id);
            answer.push(json!({"Deleted": built.image_id}));
        } else {
            state.runtime.record_built_image(&built).await?;
        }
        return Ok(Json(Value::Array(answer)));
    }
    match state.runtime.forget_image(&name) {
        Some(record) => {
            emit_image_event(&state, "untag", &record.id, &record.reference);
            emit_image_event(&state, "delete", &record.id, &record.reference);
            Ok(Json(
                json!([{"Untagged": record.reference}, {"Deleted": record.id}]),
            ))
        }
        None => Err(ApiError::NotFound(format!("No such image: {name}"))),
    }
}

pub async fn image_list(State(state): State<AppState>, query: Query) -> Result<Json<Value>> {
    let filters = parse_filters(query.get("filters"))?;
    let references = filters.get("reference").cloned().unwrap_or_default();
    let mut list: Vec<Value> = state
        .runtime
        .built_images()
        .into_iter()
        .map(|image| {
            let tags: Vec<String> = image.tags.iter().map(|tag| normalise_image(tag)).collect();
            (image, tags)
        })
        .filter(|(_, tags)| {
            references.is_empty()
                || references.iter().any(|r| tags.iter().any(|t| *t == normalise_image(r) || t.starts_with(r.as_str())))
        })
        .map(|(image, tags)| {
            let created = image.created.parse::<jiff::Timestamp>().map(|t| t.as_second()).unwrap_or_default();
            let labels = image.config.get("Labels").cloned().filter(|l| l.is_object()).unwrap_or_else(|| json!({}));
            json!({"Id": image.image_id, "ParentId": "", "RepoTags": tags, "RepoDigests": [], "Created": created,
                "Size": image.size, "SharedSize": -1, "VirtualSize": 0, "Labels": labels, "Containers": -1})
        })
        .collect();
    let built = state.runtime.built_images();
    list.extend(state
        .runtime
        .images()
        .into_iter()
        .filter(|image| !built.iter().any(|b| b.matches(&image.reference)))
        .filter(|image| references.is_empty() || references.iter().any(|r| normalise_image(r) == image.reference || image.reference.starts_with(r.as_str())))
        .map(|image| {
            // what the registry said when it was pulled or inspected (no call here)
            let size = state.runtime.registry.cached(&image.reference).map_or(0, |d| d.size);
            json!({"Id": image.id, "ParentId": "", "RepoTags": [image.reference], "RepoDigests": [], "Created": image.created,
                "Size": size, "SharedSize": -1, "VirtualSize": 0, "Labels": {}, "Containers": -1})
        })
        .collect::<Vec<Value>>());
    Ok(Json(Value::Array(list)))
}

/// `POST /images/create`: a progress stream every client accepts as a completed pull.
pub async fn image_create(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Query,
) -> Result<Response> {
    let from = query.get("fromImage").cloned().unwrap_or_default();
    if from.is_empty() {
        return Err(ApiError::NotImplemented(
            "image import is not supported by podbridge".into(),
        ));
    }
    let tag = query.get("tag").filter(|t| !t.is_empty()).cloned();
    let reference = match tag {
        Some(tag)
            if !from.contains('@')
                && !from.rsplit('/').next().unwrap_or_default().contains(':') =>
        {
            if tag.starts_with("sha256:") {
                format!("{from}@{tag}")
            } else {
                format!("{from}:{tag}")
            }
        }
        _ => from,
    };
    let credentials = headers
        .get("x-registry-auth")
        .and_then(|value| value.to_str().ok())
        .and_then(Credentials::from_registry_auth);
    let normalised = normalise_image(&reference);
    let (name, tag) = normalised
        .rsplit_once(':')
        .unwrap_or((&normalised, "latest"));
    let pulling = json!({"status": format!("Pulling from {name}"), "id": tag});
    // The built-in Ryuk runs no pod: its image is never pulled, so no registry needs to hold it
    // (an air-gapped cluster, a mirror without it).
    let builtin_ryuk =
        state.runtime.ryuk_settings().builtin && crate::runtime::ryuk::is_ryuk_image(&reference);
    let noted_without_config = |pulling: Value| {
        let record = state.runtime.note_image(&reference);
        emit_image_event(&state, "pull", &record.id, &record.reference);
        vec![
            pulling,
            json!({"status": format!("Digest: {}", record.id)}),
            json!({"status": format!("Status: Image is up to date for {}", record.reference)}),
        ]
    };
    let lookup_result = if builtin_ryuk {
        None
    } else {
        Some(lookup(&state, &reference, credentials.as_ref(), true).await)
    };
    let lines = match lookup_result {
        None => noted_without_config(pulling),
        Some(result) => match result {
            Ok(details) => {
                let record = state.runtime.note_image_with_id(&reference, &details.id);
                emit_image_event(&state, "pull", &record.id, &record.reference);
                let digest = details.manifest_digest.clone().unwrap_or(record.id);
                vec![
                    pulling,
                    json!({"status": format!("Digest: {digest}")}),
                    json!({"status": format!("Status: Image is up to date for {}", record.reference)}),
                ]
            }
            Err(error) if error.is_missing_image() => {
                tracing::info!(%reference, %error, "Pull of a missing image");
                let message = error.to_string();
                vec![
                    pulling,
                    json!({"errorDetail": {"message": message}, "error": message}),
                ]
            }
            Err(error) => {
                tracing::warn!(%reference, %error, "Image config unknown, the cluster pulls the image itself");
                noted_without_config(pulling)
            }
        },
    };
    let chunks: Vec<Result<axum::body::Bytes, std::convert::Infallible>> = lines
        .iter()
        .map(|l| Ok(axum::body::Bytes::from(format!("{l}\r\n"))))
        .collect();
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(futures::stream::iter(chunks)),
    )
        .into_response())
}

pub async fn image_prune(query: Query) -> Json<Value> {
    let _ = query_bool(&query, "dangling");
    Json(json!({"ImagesDeleted": [], "SpaceReclaimed": 0}))
}
