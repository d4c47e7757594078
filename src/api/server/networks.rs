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
    networks.extend(
        state
            .runtime
            .stored_objects(ROLE_NETWORK)
            .into_iter()
            .map(with_docker_maps),
    );
    networks
}

/// `Options`, `Labels` and `Containers` are objects, never `null`: compose compares `Options`
/// with the compose file's `driver_opts`, and clients iterate the maps.
fn with_docker_maps(mut network: Value) -> Value {
    for key in ["Options", "Labels", "Containers"] {
        if !network[key].is_object() {
            network[key] = json!({});
        }
    }
    network
}

/// Docker's refusals of a `networks/create` before anything is stored: pre-defined names, the
/// single-instance `host` and `null` drivers, swarm-scoped `overlay`, and drivers it has no plugin
/// for (spec: 403 forbidden operation, 404 plugin not found).
pub(super) fn check_network_create(name: &str, driver: &str) -> Result<()> {
    if PREDEFINED_NETWORKS.contains(&name) {
        return Err(ApiError::Forbidden(format!(
            "operation is not permitted on predefined {name} network"
        )));
    }
    match driver {
        "" | "bridge" | "macvlan" | "ipvlan" => Ok(()),
        "host" | "null" => Err(ApiError::Forbidden(format!(
            "only one instance of \"{driver}\" network is allowed"
        ))),
        "overlay" => Err(ApiError::Forbidden(
            super::swarm::NOT_SWARM_MANAGER.to_string(),
        )),
        other => Err(super::swarm::plugin_not_found(other)),
    }
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

/// Adds the `Containers` map from the containers attached to this network.
fn with_members(state: &AppState, mut network: Value) -> Value {
    let name = network["Name"].as_str().unwrap_or_default().to_string();
    let id = network["Id"].as_str().unwrap_or_default().to_string();
    let mut members = serde_json::Map::new();
    for view in state.runtime.containers() {
        if is_attached(&view.record.request, &name, &id) {
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
    let driver = body["Driver"].as_str().unwrap_or_default();
    check_network_create(name, driver)?;
    if find_network(&state, name).is_ok() {
        return Err(ApiError::Conflict(format!(
            "network with name {name} already exists"
        )));
    }
    let id = object_id(
        "network",
        &format!("{name}/{}", jiff::Timestamp::now().as_nanosecond()),
    );
    let driver = if driver.is_empty() { "bridge" } else { driver };
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
    let network_id = network["Id"].as_str().unwrap_or_default();
    let endpoint = if body["EndpointConfig"].is_object() {
        body["EndpointConfig"].clone()
    } else {
        json!({})
    };
    let request = if is_attached(&view.record.request, &name, network_id) {
        // Docker refuses a running container's second endpoint (libnetwork, 403). A stopped one
        // answers 200; its new aliases are kept (testcontainers-node connects with aliases a
        // container created on that network).
        if view.state.running {
            return Err(ApiError::Forbidden(format!(
                "endpoint with name {} already exists in network {name}",
                view.name.trim_start_matches('/')
            )));
        }
        with_more_aliases(&view.record.request, &name, network_id, &endpoint)
    } else {
        with_endpoint(&view.record.request, &name, network_id, endpoint)
    };
    retranslate(&state, &view, &request).await?;
    emit_endpoint_event(&state, &network, "connect", &view.id);
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
    let (network, name, view) = endpoint_target(&state, &id, &body)?;
    let network_id = network["Id"].as_str().unwrap_or_default();
    if !is_attached(&view.record.request, &name, network_id) {
        return Err(not_connected(&view, &name));
    }
    let request = without_endpoint(&view.record.request, &name, network_id);
    retranslate(&state, &view, &request).await?;
    emit_endpoint_event(&state, &network, "disconnect", &view.id);
    Ok(StatusCode::OK)
}

/// Docker's message (its wording differs for a running container); 403 as the spec's only
/// client-error status for this route besides "not found".
fn not_connected(view: &crate::runtime::ContainerView, network: &str) -> ApiError {
    ApiError::Forbidden(if view.state.running {
        format!(
            "container {} is not connected to network {network}",
            view.id
        )
    } else {
        format!(
            "container {} is not connected to the network {network}",
            view.id
        )
    })
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
        let bridge_id = object_id("network", "bridge");
        let detached = without_endpoint(&created, "bridge", &bridge_id);
        assert!(attached_networks(&detached).is_empty(), "{detached}");
    }

    #[test]
    fn create_refusals_follow_docker() {
        let status = |name: &str, driver: &str| {
            check_network_create(name, driver)
                .err()
                .map(|error| (error.status().as_u16(), error.to_string()))
        };
        assert_eq!(status("n", ""), None);
        assert_eq!(status("n", "bridge"), None);
        assert_eq!(
            status("n", "host"),
            Some((
                403,
                "only one instance of \"host\" network is allowed".into()
            ))
        );
        assert_eq!(
            status("n", "null"),
            Some((
                403,
                "only one instance of \"null\" network is allowed".into()
            ))
        );
        assert_eq!(
            status("n", "none"),
            Some((404, "plugin \"none\" not found".into()))
        );
        assert_eq!(
            status("n", "weave"),
            Some((404, "plugin \"weave\" not found".into()))
        );
        assert_eq!(status("n", "overlay").map(|(code, _)| code), Some(403));
        assert_eq!(
            status("bridge", ""),
            Some((
                403,
                "operation is not permitted on predefined bridge network".into()
            ))
        );
    }

    #[test]
    fn options_labels_and_containers_are_never_null() {
        let network = with_docker_maps(json!({"Name": "n", "Options": null, "Labels": {"a": "b"}}));
        assert_eq!(network["Options"], json!({}));
        assert_eq!(network["Labels"], json!({"a": "b"}));
        assert_eq!(network["Containers"], json!({}));
    }
}
