//! Network handlers. Networks are labelled ConfigMaps; the cluster network is flat, so a Docker
//! network is a name, an Id and a set of aliases that rendering turns into Services.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::extract::{labels_match, parse_filters, DockerJson, Query};
use super::AppState;
use crate::api::error::{ApiError, Result};
use crate::labels::ROLE_NETWORK;
use crate::runtime::events::{named, object_event};
use crate::runtime::objects::{object_id, PREDEFINED_NETWORKS};

fn predefined(name: &str) -> Value {
    json!({"Name": name, "Id": object_id("network", name), "Created": "1970-01-01T00:00:00Z", "Scope": "local",
        "Driver": match name { "bridge" => "bridge", "host" => "host", _ => "null" }, "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": Value::Null, "Config": if name == "bridge" { json!([{"Subnet": "10.244.0.0/16", "Gateway": "10.244.0.1"}]) } else { json!([]) }},
        "Internal": false, "Attachable": false, "Ingress": false, "ConfigFrom": {"Network": ""}, "ConfigOnly": false,
        "Containers": {}, "Options": {}, "Labels": {}})
}

fn all_networks(state: &AppState) -> Vec<Value> {
    let mut networks: Vec<Value> = PREDEFINED_NETWORKS.iter().map(|n| predefined(n)).collect();
    networks.extend(state.runtime.stored_objects(ROLE_NETWORK));
    networks
}

fn find_network(state: &AppState, reference: &str) -> Result<Value> {
    let networks = all_networks(state);
    networks
        .iter()
        .find(|n| n["Name"].as_str() == Some(reference) || n["Id"].as_str() == Some(reference))
        .or_else(|| {
            networks.iter().find(|n| {
                reference.len() >= 3 && n["Id"].as_str().is_some_and(|id| id.starts_with(reference))
            })
        })
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("network {reference} not found")))
}

/// Adds the `Containers` map from the containers that name this network.
fn with_members(state: &AppState, mut network: Value) -> Value {
    let name = network["Name"].as_str().unwrap_or_default().to_string();
    let id = network["Id"].as_str().unwrap_or_default().to_string();
    let mut members = serde_json::Map::new();
    for view in state.runtime.containers() {
        let endpoints = view.request["NetworkingConfig"]["EndpointsConfig"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mode = view.request["HostConfig"]["NetworkMode"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let on = endpoints.contains_key(&name)
            || endpoints.contains_key(&id)
            || mode == name
            || mode == id;
        if on {
            members.insert(view.id.clone(), json!({"Name": view.name, "EndpointID": view.id, "MacAddress": "",
                "IPv4Address": view.pod_ip().map(|ip| format!("{ip}/24")).unwrap_or_default(), "IPv6Address": ""}));
        }
    }
    network["Containers"] = Value::Object(members);
    network
}

fn network_matches(
    network: &Value,
    filters: &std::collections::HashMap<String, Vec<String>>,
) -> bool {
    filters.iter().all(|(key, values)| {
        values.is_empty()
            || match key.as_str() {
                "name" => values.iter().any(|v| {
                    network["Name"]
                        .as_str()
                        .is_some_and(|n| n.contains(v.as_str()))
                }),
                "id" => values.iter().any(|v| {
                    network["Id"]
                        .as_str()
                        .is_some_and(|n| n.starts_with(v.as_str()))
                }),
                "label" => labels_match(
                    &network["Labels"].as_object().cloned().unwrap_or_default(),
                    values,
                ),
                "driver" => values.iter().any(|v| network["Driver"].as_str() == Some(v)),
                "type" => values.iter().any(|v| {
                    let builtin =
                        PREDEFINED_NETWORKS.contains(&network["Name"].as_str().unwrap_or_default());
                    (v == "builtin") == builtin
                }),
                _ => true,
            }
    })
}

pub async fn network_list(State(state): State<AppState>, query: Query) -> Result<Json<Value>> {
    let filters = parse_filters(query.get("filters"))?;
    Ok(Json(Value::Array(
        all_networks(&state)
            .into_iter()
            .filter(|n| network_matches(n, &filters))
            .collect(),
    )))
}

pub async fn network_inspect(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let network = find_network(&state, &id)?;
    Ok(Json(with_members(&state, network)))
}

pub async fn network_create(
    State(state): State<AppState>,
    DockerJson(body): DockerJson<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    let name = body["Name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest("Name is required".into()))?;
    if find_network(&state, name).is_ok() {
        return Err(ApiError::Conflict(format!(
            "network with name {name} already exists"
        )));
    }
    let id = object_id(
        "network",
        &format!("{name}/{}", jiff::Timestamp::now().as_nanosecond()),
    );
    let driver = body["Driver"]
        .as_str()
        .filter(|d| !d.is_empty())
        .unwrap_or("bridge");
    let network = json!({"Name": name, "Id": id, "Created": crate::runtime::now_rfc3339(), "Scope": "local",
        "Driver": driver, "EnableIPv6": body["EnableIPv6"].as_bool().unwrap_or(false),
        "IPAM": if body["IPAM"].is_object() { body["IPAM"].clone() } else { json!({"Driver": "default", "Options": {}, "Config": []}) },
        "Internal": body["Internal"].as_bool().unwrap_or(false), "Attachable": body["Attachable"].as_bool().unwrap_or(false),
        "Ingress": false, "ConfigFrom": {"Network": ""}, "ConfigOnly": false, "Containers": {},
        "Options": if body["Options"].is_object() { body["Options"].clone() } else { json!({}) },
        "Labels": if body["Labels"].is_object() { body["Labels"].clone() } else { json!({}) }});
    state
        .runtime
        .store_object(ROLE_NETWORK, &id, &network)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"Id": id, "Warning": ""}))))
}

pub async fn network_delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let network = find_network(&state, &id)?;
    let name = network["Name"].as_str().unwrap_or_default();
    if PREDEFINED_NETWORKS.contains(&name) {
        return Err(ApiError::Forbidden(format!(
            "{name} is a pre-defined network and cannot be removed"
        )));
    }
    let network_id = network["Id"].as_str().unwrap_or_default().to_string();
    state
        .runtime
        .delete_object(ROLE_NETWORK, &network_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn network_prune(State(state): State<AppState>, query: Query) -> Result<Json<Value>> {
    let filters = parse_filters(query.get("filters"))?;
    let mut deleted = Vec::new();
    for network in state.runtime.stored_objects(ROLE_NETWORK) {
        let in_use = with_members(&state, network.clone())["Containers"]
            .as_object()
            .is_some_and(|m| !m.is_empty());
        if in_use || !network_matches(&network, &filters) {
            continue;
        }
        if let Some(id) = network["Id"].as_str() {
            state.runtime.delete_object(ROLE_NETWORK, id).await?;
            deleted.push(network["Name"].clone());
        }
    }
    Ok(Json(json!({"NetworksDeleted": deleted})))
}

/// The network (and its name) and the container a connect or disconnect body names.
fn endpoint_target(
    state: &AppState,
    network: &str,
    body: &Value,
) -> Result<(Value, String, crate::runtime::ContainerView)> {
    let network = find_network(state, network)?;
    let name = network["Name"].as_str().unwrap_or_default().to_string();
    let view = state
        .runtime
        .find(body["Container"].as_str().unwrap_or_default())?;
    Ok((network, name, view))
}

/// Connect/disconnect: the endpoint is written into the stored create request and the container
/// translated again, so its alias Services follow (at once if it runs, else at start).
pub async fn network_connect(
    State(state): State<AppState>,
    Path(id): Path<String>,
    DockerJson(body): DockerJson<Value>,
) -> Result<StatusCode> {
    let (network, name, view) = endpoint_target(&state, &id, &body)?;
    let mut request = view.request.clone();
    let endpoint = if body["EndpointConfig"].is_object() {
        body["EndpointConfig"].clone()
    } else {
        json!({})
    };
    if !request["NetworkingConfig"].is_object() {
        request["NetworkingConfig"] = json!({});
    }
    if !request["NetworkingConfig"]["EndpointsConfig"].is_object() {
        request["NetworkingConfig"]["EndpointsConfig"] = json!({});
    }
    let endpoints = &mut request["NetworkingConfig"]["EndpointsConfig"];
    if let Some(existing) = endpoints.get(&name).filter(|e| e.is_object()) {
        let mut merged = existing.clone();
        let mut aliases: Vec<Value> = merged["Aliases"].as_array().cloned().unwrap_or_default();
        for alias in endpoint["Aliases"].as_array().cloned().unwrap_or_default() {
            if !aliases.contains(&alias) {
                aliases.push(alias);
            }
        }
        merged["Aliases"] = Value::Array(aliases);
        endpoints[&name] = merged;
    } else {
        endpoints[&name] = endpoint;
    }
    retranslate(&state, &view, &request).await?;
    emit_endpoint_event(&state, &network, "connect", &view.id);
    Ok(StatusCode::OK)
}

/// Docker's `connect`/`disconnect` network events name the network and the container.
fn emit_endpoint_event(state: &AppState, network: &Value, action: &str, container: &str) {
    let name = network["Name"].as_str().unwrap_or_default();
    let attributes = named(name, &[("container", container), ("type", "bridge")]);
    let id = network["Id"].as_str().unwrap_or_default();
    state
        .runtime
        .emit(object_event("network", action, id, attributes));
}

pub async fn network_disconnect(
    State(state): State<AppState>,
    Path(id): Path<String>,
    DockerJson(body): DockerJson<Value>,
) -> Result<StatusCode> {
    let (network, name, view) = endpoint_target(&state, &id, &body)?;
    let network_id = network["Id"].as_str().unwrap_or_default().to_string();
    let mut request = view.request.clone();
    let mut changed = false;
    if let Some(endpoints) = request["NetworkingConfig"]["EndpointsConfig"].as_object_mut() {
        changed |= endpoints.remove(&name).is_some();
        changed |= endpoints.remove(&network_id).is_some();
    }
    if changed {
        retranslate(&state, &view, &request).await?;
        emit_endpoint_event(&state, &network, "disconnect", &view.id);
    }
    Ok(StatusCode::OK)
}

async fn retranslate(
    state: &AppState,
    view: &crate::runtime::ContainerView,
    request: &Value,
) -> Result<()> {
    let translation =
        super::containers::translate_stored(state, view, request, Default::default())?;
    for warning in
        super::containers::service_names_free(state, &translation.objects.services).await?
    {
        tracing::warn!(container = %view.short_id(), %warning, "Network alias not taken over");
    }
    let image_config = state.runtime.stored_image_config(view);
    state
        .runtime
        .update_spec(view, &translation.objects, image_config.as_ref())
        .await?;
    Ok(())
}
