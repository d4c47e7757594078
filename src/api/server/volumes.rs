//! Volume handlers: Docker volumes as the runtime keeps them (PersistentVolumeClaims, or
//! ConfigMap records with `named_volumes = "emptyDir"`).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::extract::{query_bool, DockerJson, Query};
use super::view;
use super::AppState;
use crate::api::error::{ApiError, Result};
use crate::render::VolumeRequest;

fn in_use(state: &AppState, volume: &Value) -> bool {
    volume["Name"]
        .as_str()
        .is_some_and(|name| !state.runtime.volume_users(name).is_empty())
}

pub async fn volume_list(State(state): State<AppState>, query: Query) -> Result<Json<Value>> {
    let volumes = state.runtime.volumes();
    Ok(Json(view::volume_list(
        volumes,
        |volume| in_use(&state, volume),
        &query,
    )?))
}

pub async fn volume_inspect(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    Ok(Json(state.runtime.find_volume(&name)?))
}

pub async fn volume_create(
    State(state): State<AppState>,
    DockerJson(body): DockerJson<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    let create = view::volume_create(&body)?;
    let created = crate::runtime::now_rfc3339();
    let request = VolumeRequest {
        name: &create.name,
        driver: &create.driver,
        labels: &create.labels,
        options: &create.options,
        created: &created,
    };
    let volume = create_volume(&state, &request).await?;
    Ok((StatusCode::CREATED, Json(volume)))
}

/// Docker answers an existing volume's create with the volume; a new one's claim is shaped and
/// checked by the policy chain first (a refused size or class is a 400, a denial a 403).
async fn create_volume(state: &AppState, request: &VolumeRequest<'_>) -> Result<Value> {
    if let Ok(existing) = state.runtime.find_volume(request.name) {
        return Ok(existing);
    }
    let claim = if state.runtime.uses_claims() {
        Some(state.translator.translate_volume(request)?.claim)
    } else {
        None
    };
    Ok(state.runtime.create_volume(request, claim).await?)
}

/// Creates the named volumes a new container mounts that do not exist yet, as Docker does.
pub async fn create_mounted_volumes(state: &AppState, names: &[String]) -> Result<()> {
    let none = BTreeMap::new();
    for name in names {
        let created = crate::runtime::now_rfc3339();
        let request = VolumeRequest {
            name,
            driver: "local",
            labels: &none,
            options: &none,
            created: &created,
        };
        create_volume(state, &request).await?;
    }
    Ok(())
}

pub async fn volume_delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Query,
) -> Result<StatusCode> {
    match state.runtime.remove_volume(&name).await {
        // `volume rm -f` of a volume that does not exist succeeds, as in Docker.
        Err(crate::runtime::RuntimeError::NotFound(_)) if query_bool(&query, "force") => {}
        result => result?,
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `volumes/prune` (`view::volume_prune_rule`). A volume a container mounts is never pruned.
pub async fn volume_prune(
    State(state): State<AppState>,
    version: Option<axum::Extension<super::ApiVersion>>,
    query: Query,
) -> Result<Json<Value>> {
    let prunable = view::volume_prune_rule(&query, version.is_some_and(|v| v.older_than("1.42")))?;
    let mut deleted = Vec::new();
    for volume in state.runtime.volumes() {
        if !prunable(&volume, in_use(&state, &volume)) {
            continue;
        }
        let Some(name) = volume["Name"].as_str() else {
            continue;
        };
        match state.runtime.remove_volume(name).await {
            Ok(()) => deleted.push(json!(name)),
            // Mounted by a container created meanwhile: Docker skips it too.
            Err(crate::runtime::RuntimeError::Conflict(_)) => {}
            Err(error) => return Err(ApiError::from(error)),
        }
    }
    Ok(Json(
        json!({"VolumesDeleted": deleted, "SpaceReclaimed": 0}),
    ))
}
