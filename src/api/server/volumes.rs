//! Volume handlers: named volumes recorded as labelled ConfigMaps.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::extract::{labels_match, parse_filters, query_bool, DockerJson, Query};
use super::AppState;
use crate::api::error::{ApiError, Result};
use crate::labels::ROLE_VOLUME;
use crate::runtime::objects::object_id;

fn volume_matches(
    volume: &Value,
    filters: &std::collections::HashMap<String, Vec<String>>,
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
                _ => true,
            }
    })
}

pub async fn volume_list(State(state): State<AppState>, query: Query) -> Result<Json<Value>> {
    let filters = parse_filters(query.get("filters"))?;
    let volumes: Vec<Value> = state
        .runtime
        .stored_objects(ROLE_VOLUME)
        .into_iter()
        .filter(|v| volume_matches(v, &filters))
        .collect();
    Ok(Json(json!({"Volumes": volumes, "Warnings": []})))
}

pub async fn volume_inspect(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    Ok(Json(state.runtime.find_object(ROLE_VOLUME, &name)?))
}

pub async fn volume_create(
    State(state): State<AppState>,
    DockerJson(body): DockerJson<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    let name = body["Name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(String::from)
        .unwrap_or_else(|| hex::encode(rand::random::<[u8; 32]>()));
    if let Ok(existing) = state.runtime.find_object(ROLE_VOLUME, &name) {
        return Ok((StatusCode::CREATED, Json(existing)));
    }
    let id = object_id("volume", &name);
    let volume = json!({"Name": name, "Id": id, "Driver": body["Driver"].as_str().filter(|d| !d.is_empty()).unwrap_or("local"),
        "Mountpoint": format!("/var/lib/docker/volumes/{name}/_data"), "CreatedAt": crate::runtime::now_rfc3339(),
        "Labels": if body["Labels"].is_object() { body["Labels"].clone() } else { json!({}) },
        "Options": if body["DriverOpts"].is_object() { body["DriverOpts"].clone() } else { json!({}) }, "Scope": "local"});
    state
        .runtime
        .store_object(ROLE_VOLUME, &id, &volume)
        .await?;
    let mut answer = volume;
    if let Some(map) = answer.as_object_mut() {
        map.remove("Id");
    }
    Ok((StatusCode::CREATED, Json(answer)))
}

pub async fn volume_delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Query,
) -> Result<StatusCode> {
    let _ = query_bool(&query, "force");
    let volume = state
        .runtime
        .find_object(ROLE_VOLUME, &name)
        .map_err(|_| ApiError::NotFound(format!("get {name}: no such volume")))?;
    let id = volume["Id"].as_str().unwrap_or_default().to_string();
    state.runtime.delete_object(ROLE_VOLUME, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn volume_prune(State(state): State<AppState>, query: Query) -> Result<Json<Value>> {
    let filters = parse_filters(query.get("filters"))?;
    let mut deleted = Vec::new();
    for volume in state.runtime.stored_objects(ROLE_VOLUME) {
        if !volume_matches(&volume, &filters) {
            continue;
        }
        if let Some(id) = volume["Id"].as_str() {
            state.runtime.delete_object(ROLE_VOLUME, id).await?;
            deleted.push(volume["Name"].clone());
        }
    }
    Ok(Json(
        json!({"VolumesDeleted": deleted, "SpaceReclaimed": 0}),
    ))
}
