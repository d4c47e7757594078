//! Network handlers. Networks are labelled ConfigMaps; the cluster network is flat, so a Docker
//! network is a name, an Id and a set of aliases that rendering turns into Services.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::extract::{parse_filters, DockerJson, Query};
use super::view;
use super::AppState;
use crate::api::error::{ApiError, Result};
use crate::labels::ROLE_NETWORK;
use crate::runtime::events::{named, object_event};

/// The predefined networks and those stored (labelled ConfigMaps).
fn all_networks(state: &AppState) -> Vec<Value> {
    view::all_networks(state.runtime.stored_objects(ROLE_NETWORK))
}

fn find_network(state: &AppState, reference: &str) -> Result<Value> {
    view::find_network(&all_networks(state), reference)
}

/// Key in the stored create request listing the networks the container was disconnected from
/// although its `HostConfig.NetworkMode` names them (Docker keeps `NetworkMode` as created);
/// decode reads it as `ContainerCreateBody::podbridge_detached_networks`, so rendering drops the
/// network's aliases too.
pub(super) const DETACHED_NETWORKS: &str = "PodbridgeDetachedNetworks";

/// The networks a stored create request attaches, as the request names them (name or Id), with
/// their endpoint settings: every `EndpointsConfig` entry (`default` is bridge) and the
/// `NetworkMode` network (`""`/`default` is bridge; `container:` shares another's), less those it
/// was disconnected from.
pub(super) fn attached_networks(request: &Value) -> Vec<(String, Value)> {
    let bridge = |name: &str| {
        if name.is_empty() || name == "default" {
            "bridge".to_string()
        } else {
            name.to_string()
        }
    };
    let mut attached: Vec<(String, Value)> = Vec::new();
    let mode = request["HostConfig"]["NetworkMode"]
        .as_str()
        .unwrap_or_default();
    let detached: Vec<&str> = request[DETACHED_NETWORKS]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !mode.starts_with("container:") && !detached.contains(&bridge(mode).as_str()) {
        attached.push((bridge(mode), json!({})));
    }
    if let Some(endpoints) = request["NetworkingConfig"]["EndpointsConfig"].as_object() {
        for (name, config) in endpoints {
            let config = if config.is_object() {
                config.clone()
            } else {
                json!({})
            };
            let name = bridge(name);
            match attached.iter_mut().find(|(known, _)| *known == name) {
                Some(entry) => entry.1 = config,
                None => attached.push((name, config)),
            }
        }
    }
    attached
}

/// Whether a stored create request attaches the network with this name and Id.
pub(super) fn is_attached(request: &Value, name: &str, id: &str) -> bool {
    attached_networks(request)
        .iter()
        .any(|(network, _)| network == name || network == id)
}

/// The network with the containers attached to it.
fn with_members(state: &AppState, network: Value) -> Value {
    let containers = state.runtime.containers();
    let endpoints: Vec<view::Endpoint> = containers
        .iter()
        .map(|container| view::Endpoint {
            id: &container.id,
            name: &container.name,
            request: &container.record.request,
            ip: container.pod_ip(),
        })
        .collect();
    view::network_inspect(network, &endpoints)
}

pub async fn network_list(State(state): State<AppState>, query: Query) -> Result<Json<Value>> {
    Ok(Json(view::network_list(all_networks(&state), &query)?))
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
    let name = view::check_network_create(&body)?;
    if find_network(&state, name).is_ok() {
        return Err(ApiError::Conflict(format!(
            "network with name {name} already exists"
        )));
    }
    let network = view::new_network(name, &body);
    let id = network["Id"].as_str().unwrap_or_default().to_string();
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
    view::check_network_delete(&network)?;
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
        if in_use || !view::network_matches(&network, &filters) {
            continue;
        }
        if let Some(id) = network["Id"].as_str() {
            state.runtime.delete_object(ROLE_NETWORK, id).await?;
            deleted.push(network["Name"].clone());
        }
    }
    Ok(Json(json!({"NetworksDeleted": deleted})))
}

/// The network and the container a connect or disconnect body names.
fn endpoint_target(
    state: &AppState,
    network: &str,
    body: &Value,
) -> Result<(Value, crate::runtime::ContainerView)> {
    let network = find_network(state, network)?;
    let container = state
        .runtime
        .find(body["Container"].as_str().unwrap_or_default())?;
    Ok((network, container))
}

/// Connect/disconnect: the endpoint is written into the stored create request and the container
/// translated again, so its alias Services follow (at once if it runs, else at start).
pub async fn network_connect(
    State(state): State<AppState>,
    Path(id): Path<String>,
    DockerJson(body): DockerJson<Value>,
) -> Result<StatusCode> {
    let (network, container) = endpoint_target(&state, &id, &body)?;
    let request = view::connected_request(
        &container.record.request,
        &network,
        &body["EndpointConfig"],
        &container.name,
        container.state.running,
    )?;
    retranslate(&state, &container, &request).await?;
    emit_endpoint_event(&state, &network, "connect", &container.id);
    Ok(StatusCode::OK)
}

/// The request with an `EndpointsConfig` entry for the network, no longer marked detached.
pub(super) fn with_endpoint(request: &Value, name: &str, id: &str, endpoint: Value) -> Value {
    let mut request = request.clone();
    if let Some(detached) = request[DETACHED_NETWORKS].as_array_mut() {
        detached.retain(|network| network != name && network != id);
    }
    if !request["NetworkingConfig"].is_object() {
        request["NetworkingConfig"] = json!({});
    }
    if !request["NetworkingConfig"]["EndpointsConfig"].is_object() {
        request["NetworkingConfig"]["EndpointsConfig"] = json!({});
    }
    request["NetworkingConfig"]["EndpointsConfig"][name] = endpoint;
    request
}

/// The request with the endpoint's aliases added to an attached network's entry (under the key
/// the request already uses for it, name or Id).
pub(super) fn with_more_aliases(request: &Value, name: &str, id: &str, endpoint: &Value) -> Value {
    let (key, mut merged) = attached_networks(request)
        .into_iter()
        .find(|(network, _)| network == name || network == id)
        .unwrap_or_else(|| (name.to_string(), json!({})));
    let mut aliases: Vec<Value> = merged["Aliases"].as_array().cloned().unwrap_or_default();
    for alias in endpoint["Aliases"].as_array().into_iter().flatten() {
        if !aliases.contains(alias) {
            aliases.push(alias.clone());
        }
    }
    merged["Aliases"] = Value::Array(aliases);
    let key = if key == "bridge"
        && request["NetworkingConfig"]["EndpointsConfig"]
            .get("default")
            .is_some()
    {
        "default".to_string()
    } else {
        key
    };
    let mut request = with_endpoint(request, name, id, json!({}));
    if let Some(endpoints) = request["NetworkingConfig"]["EndpointsConfig"].as_object_mut() {
        endpoints.remove(name);
        endpoints.insert(key, merged);
    }
    request
}

/// The request with no endpoint on the network; the `NetworkMode` network is marked detached.
pub(super) fn without_endpoint(request: &Value, name: &str, id: &str) -> Value {
    let mut request = request.clone();
    if let Some(endpoints) = request["NetworkingConfig"]["EndpointsConfig"].as_object_mut() {
        endpoints.retain(|network, _| {
            let network = if network == "default" {
                "bridge"
            } else {
                network
            };
            network != name && network != id
        });
    }
    if is_attached(&request, name, id) {
        if !request[DETACHED_NETWORKS].is_array() {
            request[DETACHED_NETWORKS] = json!([]);
        }
        if let Some(detached) = request[DETACHED_NETWORKS].as_array_mut() {
            detached.extend([json!(name), json!(id)]);
        }
    }
    request
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
    let (network, container) = endpoint_target(&state, &id, &body)?;
    let request = view::disconnected_request(
        &container.record.request,
        &network,
        &container.id,
        container.state.running,
    )?;
    retranslate(&state, &container, &request).await?;
    emit_endpoint_event(&state, &network, "disconnect", &container.id);
    Ok(StatusCode::OK)
}

/// Translates a container's changed request (without start inputs) and stores it as its spec.
pub(super) async fn retranslate(
    state: &AppState,
    view: &crate::runtime::ContainerView,
    request: &Value,
) -> Result<()> {
    let (translation, image_config) =
        super::containers::translate_stored(state, view, request, false)?;
    for warning in
        super::containers::service_names_free(state, &translation.objects.services).await?
    {
        tracing::warn!(container = %view.short_id(), %warning, "Network alias not taken over");
    }
    state
        .runtime
        .update_spec(view, &translation.objects, image_config.as_ref())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(request: Value) -> Vec<String> {
        attached_networks(&request)
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    #[test]
    fn attached_networks_are_the_mode_and_the_endpoints() {
        assert_eq!(attached(json!({"Image": "a"})), ["bridge"]);
        assert_eq!(
            attached(json!({"HostConfig": {"NetworkMode": "default"},
                "NetworkingConfig": {"EndpointsConfig": {"default": null}}})),
            ["bridge"]
        );
        assert_eq!(
            attached(json!({"HostConfig": {"NetworkMode": "front"},
                "NetworkingConfig": {"EndpointsConfig": {"front": {"Aliases": ["web"]}, "back": {}}}})),
            ["front", "back"]
        );
        assert!(attached(json!({"HostConfig": {"NetworkMode": "container:db"}})).is_empty());
        assert_eq!(
            attached(json!({"HostConfig": {"NetworkMode": "host"}})),
            ["host"]
        );
    }

    #[test]
    fn disconnect_then_connect_of_the_mode_network_round_trips() {
        let created = json!({"HostConfig": {"NetworkMode": "netid"},
            "NetworkingConfig": {"EndpointsConfig": {"net": {"Aliases": ["a"]}}}});
        assert!(is_attached(&created, "net", "netid"));
        assert!(!is_attached(&created, "other", "otherid"));
        let detached = without_endpoint(&created, "net", "netid");
        assert!(!is_attached(&detached, "net", "netid"), "{detached}");
        assert_eq!(detached["HostConfig"]["NetworkMode"], "netid");
        let again = with_endpoint(&detached, "net", "netid", json!({"Aliases": ["b"]}));
        assert!(is_attached(&again, "net", "netid"));
        assert_eq!(
            attached_networks(&again)
                .iter()
                .find(|(name, _)| name == "net")
                .map(|(_, endpoint)| endpoint["Aliases"].clone()),
            Some(json!(["b"]))
        );
    }

    #[test]
    fn connect_again_while_stopped_adds_aliases_under_the_existing_key() {
        let created = json!({"HostConfig": {"NetworkMode": "netid"}});
        let again = with_more_aliases(&created, "net", "netid", &json!({"Aliases": ["a"]}));
        assert_eq!(
            again["NetworkingConfig"]["EndpointsConfig"],
            json!({"netid": {"Aliases": ["a"]}})
        );
        let twice = with_more_aliases(&again, "net", "netid", &json!({"Aliases": ["a", "b"]}));
        assert_eq!(
            attached_networks(&twice),
            [("netid".to_string(), json!({"Aliases": ["a", "b"]}))]
        );
    }

    #[test]
    fn disconnect_of_the_default_bridge() {
        let created = json!({"HostConfig": {"NetworkMode": "default"},
            "NetworkingConfig": {"EndpointsConfig": {"default": {}}}});
        let bridge_id = crate::runtime::objects::object_id("network", "bridge");
        let detached = without_endpoint(&created, "bridge", &bridge_id);
        assert!(attached_networks(&detached).is_empty(), "{detached}");
    }
}
