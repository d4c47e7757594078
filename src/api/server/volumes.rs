//! Volume handlers: Docker volumes as the runtime keeps them (PersistentVolumeClaims, or
//! ConfigMap records with `named_volumes = "emptyDir"`).

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::extract::{labels_match, parse_filters, query_bool, DockerJson, Query};
use super::AppState;
use crate::api::error::{ApiError, Result};
use crate::render::VolumeRequest;

/// Label Docker puts on anonymous volumes; plain `volume prune` removes only those.
const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// Docker's volume filters; the dry-run server uses them too (nothing is in use there).
pub(super) fn volume_matches(
    volume: &Value,
    in_use: bool,
    filters: &HashMap<String, Vec<String>>,
) -> bool {
    filters.iter().all(|(key, values)| {
        values.is_empty()
            || match key.as_str() {
                "name" => values.iter().any(|v| {
                    volume["Name"]
                        .as_str()
                        .is_some_and(|n| n.contains(v.as_str()))
                }),
                "label" => labels_match(
                    &volume["Labels"].as_object().cloned().unwrap_or_default(),
                    values,
                ),
                "driver" => values.iter().any(|v| volume["Driver"].as_str() == Some(v)),
                "dangling" => values
                    .iter()
                    .any(|v| matches!(v.as_str(), "true" | "1") != in_use),
                _ => true,
            }
    })
}

fn in_use(state: &AppState, volume: &Value) -> bool {
    volume["Name"]
        .as_str()
        .is_some_and(|name| !state.runtime.volume_users(name).is_empty())
}

pub async fn volume_list(State(state): State<AppState>, query: Query) -> Result<Json<Value>> {
    let filters = parse_filters(query.get("filters"))?;
    let volumes: Vec<Value> = state
        .runtime
        .volumes()
        .into_iter()
        .filter(|v| volume_matches(v, in_use(&state, v), &filters))
        .collect();
    Ok(Json(json!({"Volumes": volumes, "Warnings": []})))
}

pub async fn volume_inspect(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    Ok(Json(state.runtime.find_volume(&name)?))
}

/// `{"Labels": {...}}` → a string map; Docker ignores values that are not strings.
fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

pub async fn volume_create(
    State(state): State<AppState>,
    DockerJson(body): DockerJson<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    let named = body["Name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(String::from);
    let mut labels = string_map(&body["Labels"]);
    // A volume created without a name is anonymous, as Docker marks it: `prune` takes it.
    if named.is_none() {
        labels.insert(ANONYMOUS_LABEL.into(), String::new());
    }
    let name = named.unwrap_or_else(|| hex::encode(rand::random::<[u8; 32]>()));
    let options = string_map(&body["DriverOpts"]);
    let driver = body["Driver"]
        .as_str()
        .filter(|d| !d.is_empty())
        .unwrap_or("local");
    // Docker looks a non-local driver up as a plugin; podbridge has none, so it answers as a
    // daemon without that plugin instead of creating a claim the client did not ask for.
    if driver != "local" {
        return Err(super::swarm::plugin_not_found(driver));
    }
    let created = crate::runtime::now_rfc3339();
    let request = VolumeRequest {
        name: &name,
        driver,
        labels: &labels,
        options: &options,
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

/// Docker (API 1.42+): unused anonymous volumes, or every unused volume with the `all=true`
/// filter. A volume a container mounts is never pruned.
///
/// Clients speaking an API before 1.42 get the old meaning: every unused volume.
pub async fn volume_prune(
    State(state): State<AppState>,
    version: Option<axum::Extension<super::ApiVersion>>,
    query: Query,
) -> Result<Json<Value>> {
    let mut filters = parse_filters(query.get("filters"))?;
    let all = filters
        .remove("all")
        .is_some_and(|values| values.iter().any(|v| matches!(v.as_str(), "true" | "1")))
        || version.is_some_and(|v| v.older_than("1.42"));
    let mut deleted = Vec::new();
    for volume in state.runtime.volumes() {
        if in_use(&state, &volume) || !volume_matches(&volume, false, &filters) {
            continue;
        }
        let anonymous = volume["Labels"].get(ANONYMOUS_LABEL).is_some();
        let Some(name) = volume["Name"].as_str().filter(|_| all || anonymous) else {
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
