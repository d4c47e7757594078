//! api: Docker's view of containers, networks and volumes, one copy for both servers. Each
//! backend describes what it holds in neutral terms ([`ContainerFacts`], network and volume
//! documents, [`Endpoint`]s) — the real server from the watch-fed [`crate::runtime::Runtime`],
//! the dry-run server from its in-memory store — and these functions turn that into Docker's
//! JSON and apply Docker's filter and lookup rules. What a backend cannot know (a pod IP, a
//! published port) it leaves empty; how Docker shows an empty one is decided here.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use serde_json::{json, Map, Value};

use super::extract::{labels_match, parse_filters, query_bool, query_i64};
use crate::api::error::{ApiError, Result};
use crate::runtime::objects::{image_id, normalise_image, object_id, PREDEFINED_NETWORKS};
use crate::runtime::state::ContainerState;

/// Docker's `filters` query parameter, parsed.
pub type Filters = HashMap<String, Vec<String>>;

/// One container as a backend knows it: everything Docker's inspect and list entries show.
#[derive(Debug, Clone)]
pub struct ContainerFacts<'a> {
    pub id: &'a str,
    pub name: &'a str,
    /// RFC 3339 creation time.
    pub created: &'a str,
    /// The image reference the container records (`Config.Image` when the request has none).
    pub image: &'a str,
    /// The ID `/images/{id}/json` resolves.
    pub image_id: String,
    /// The create request as updated since (network endpoints, restart policy).
    pub request: &'a Value,
    pub state: ContainerState,
    /// `State.Error`: the state's own error and anything else the backend must say.
    pub error: String,
    /// The container's address, empty while it has none.
    pub ip: String,
    /// Where its published ports are reached from the client's side.
    pub gateway: String,
    /// The networks it is on, as [`attachments`] names them.
    pub networks: Vec<Attachment>,
    /// Bound host addresses by `port/proto`, shown while the container runs.
    pub published: BTreeMap<String, Vec<SocketAddr>>,
    /// `HostConfig.Links` as dockerd shows them (`/target:/self/alias`), or `None`.
    pub links: Option<Vec<String>>,
    /// Link names that also name this container (`/other/alias`), listed after its own.
    pub link_names: Vec<String>,
    /// Docker labels.
    pub labels: Map<String, Value>,
    /// `NetworkSettings.SandboxID`.
    pub sandbox_id: String,
    /// The pod that runs (or would run) the container.
    pub pod: &'a str,
}

impl ContainerFacts<'_> {
    fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }
}

/// One network a container is on: the name and Id clients compare against `/networks`, and the
/// endpoint settings of the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub name: String,
    pub id: String,
    pub endpoint: Value,
}

/// The networks a create request attaches, resolved against the networks clients created
/// (`known`, by name or Id); any other is a predefined one, whose Id derives from its name.
pub fn attachments(request: &Value, known: &[Value]) -> Vec<Attachment> {
    super::networks::attached_networks(request)
        .into_iter()
        .map(|(name, endpoint)| {
            let found = known
                .iter()
                .find(|n| n["Name"].as_str() == Some(&name) || n["Id"].as_str() == Some(&name));
            match found {
                Some(network) => Attachment {
                    name: network["Name"].as_str().unwrap_or(&name).to_string(),
                    id: network["Id"].as_str().unwrap_or_default().to_string(),
                    endpoint,
                },
                None => Attachment {
                    id: object_id("network", &name),
                    name,
                    endpoint,
                },
            }
        })
        .collect()
}

fn strings_or_null(value: &Value) -> Value {
    match value {
        Value::String(s) => json!([s]),
        Value::Array(_) => value.clone(),
        _ => Value::Null,
    }
}

/// Docker `Path` and `Args`: the entrypoint, then the command.
pub fn command_of(request: &Value) -> (String, Vec<Value>) {
    let mut argv: Vec<Value> = Vec::new();
    for key in ["Entrypoint", "Cmd"] {
        match &request[key] {
            Value::Array(items) => argv.extend(items.iter().cloned()),
            Value::String(s) => argv.push(json!(s)),
            _ => {}
        }
    }
    let path = argv
        .first()
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    (path, argv.into_iter().skip(1).collect())
}

/// Docker `Config`: the create request with Docker's defaults filled in.
fn config_json(facts: &ContainerFacts) -> Value {
    let request = facts.request;
    let pick = |key: &str, default: Value| -> Value {
        match request.get(key) {
            Some(v) if !v.is_null() => v.clone(),
            _ => default,
        }
    };
    json!({
        "Hostname": request["Hostname"].as_str().filter(|h| !h.is_empty()).unwrap_or(facts.short_id()),
        "Domainname": pick("Domainname", json!("")), "User": pick("User", json!("")),
        "AttachStdin": pick("AttachStdin", json!(false)), "AttachStdout": pick("AttachStdout", json!(false)),
        "AttachStderr": pick("AttachStderr", json!(false)), "ExposedPorts": pick("ExposedPorts", Value::Null),
        "Tty": pick("Tty", json!(false)), "OpenStdin": pick("OpenStdin", json!(false)),
        "StdinOnce": pick("StdinOnce", json!(false)), "Env": pick("Env", json!([])),
        "Cmd": strings_or_null(&request["Cmd"]), "Healthcheck": pick("Healthcheck", Value::Null),
        "Image": pick("Image", json!(facts.image)), "Volumes": pick("Volumes", Value::Null),
        "WorkingDir": pick("WorkingDir", json!("")), "Entrypoint": strings_or_null(&request["Entrypoint"]),
        "OnBuild": Value::Null, "Labels": pick("Labels", json!({})), "StopSignal": pick("StopSignal", Value::Null),
        "StopTimeout": pick("StopTimeout", Value::Null),
    })
}

/// Docker `HostConfig`: the request's, with the fields clients read always present, and the
/// links as dockerd shows them (`/target:/self/alias`, or `null`), whatever form the client sent.
fn host_config_json(facts: &ContainerFacts) -> Value {
    let mut host = match &facts.request["HostConfig"] {
        Value::Object(map) => Value::Object(map.clone()),
        _ => json!({}),
    };
    if host["LogConfig"]["Type"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        host["LogConfig"] = json!({"Type": "json-file", "Config": {}});
    }
    let mode = host["NetworkMode"].as_str().unwrap_or_default();
    if mode.is_empty() || mode == "default" {
        host["NetworkMode"] = json!("bridge");
    }
    for (key, default) in [
        ("PortBindings", json!({})),
        (
            "RestartPolicy",
            json!({"Name": "no", "MaximumRetryCount": 0}),
        ),
        ("AutoRemove", json!(false)),
        ("Binds", Value::Null),
        ("Privileged", json!(false)),
        ("Memory", json!(0)),
        ("NanoCpus", json!(0)),
    ] {
        if host.get(key).is_none_or(Value::is_null) && !default.is_null() {
            host[key] = default;
        }
    }
    host["Links"] = json!(facts.links);
    host
}

/// `NetworkSettings.Ports`: every exposed or published port; `null` until published.
fn ports_json(facts: &ContainerFacts) -> Value {
    let mut ports = Map::new();
    if let Some(exposed) = facts.request["ExposedPorts"].as_object() {
        for port in exposed.keys() {
            ports.insert(port.clone(), Value::Null);
        }
    }
    if let Some(bindings) = facts.request["HostConfig"]["PortBindings"].as_object() {
        for port in bindings.keys() {
            ports.insert(port.clone(), Value::Null);
        }
    }
    if facts.state.running {
        for (port, hosts) in &facts.published {
            let list: Vec<Value> = hosts
                .iter()
                .map(|h| json!({"HostIp": h.ip().to_string(), "HostPort": h.port().to_string()}))
                .collect();
            ports.insert(port.clone(), Value::Array(list));
        }
    }
    Value::Object(ports)
}

/// `NetworkSettings.Networks`, keyed by network name, with the Id clients compare against
/// `/networks`.
///
/// `Gateway` is where this container's published ports are reached from the client's side (the
/// address podbridge publishes on): a client in a container (testcontainers' Docker-in-Docker
/// mode) connects to mapped ports through the gateway, as it would through Docker's bridge.
fn networks_json(facts: &ContainerFacts) -> Value {
    let ip = facts.ip.as_str();
    let mut networks = Map::new();
    for attachment in &facts.networks {
        let config = &attachment.endpoint;
        networks.insert(
            attachment.name.clone(),
            json!({"IPAMConfig": config.get("IPAMConfig").cloned().unwrap_or(Value::Null), "Links": Value::Null,
                "Aliases": config.get("Aliases").cloned().unwrap_or(Value::Null), "MacAddress": "",
                "NetworkID": attachment.id, "EndpointID": if ip.is_empty() { "" } else { facts.id },
                "Gateway": facts.gateway, "IPAddress": ip, "IPPrefixLen": if ip.is_empty() { 0 } else { 24 },
                "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "DriverOpts": Value::Null,
                "DNSNames": config.get("Aliases").cloned().unwrap_or(Value::Null), "GwPriority": 0}),
        );
    }
    Value::Object(networks)
}

/// Docker `Mounts`: binds and mounts as the request names them.
fn mounts_json(request: &Value) -> Value {
    let mut mounts = Vec::new();
    if let Some(binds) = request["HostConfig"]["Binds"].as_array() {
        for bind in binds.iter().filter_map(Value::as_str) {
            let parts: Vec<&str> = bind.split(':').collect();
            if parts.len() < 2 {
                continue;
            }
            let named = !parts[0].starts_with('/');
            mounts.push(json!({"Type": if named { "volume" } else { "bind" }, "Name": if named { parts[0] } else { "" },
                "Source": parts[0], "Destination": parts[1], "Driver": if named { "local" } else { "" },
                "Mode": parts.get(2).copied().unwrap_or(""), "RW": parts.get(2) != Some(&"ro"), "Propagation": ""}));
        }
    }
    if let Some(list) = request["HostConfig"]["Mounts"].as_array() {
        for mount in list {
            mounts.push(json!({"Type": mount["Type"], "Name": if mount["Type"] == "volume" { mount["Source"].clone() } else { json!("") },
                "Source": mount["Source"], "Destination": mount["Target"], "Driver": "local", "Mode": "",
                "RW": !mount["ReadOnly"].as_bool().unwrap_or(false), "Propagation": ""}));
        }
    }
    Value::Array(mounts)
}

/// `GET /containers/{id}/json`.
pub fn container_inspect(facts: &ContainerFacts) -> Value {
    let (path, args) = command_of(facts.request);
    let s = &facts.state;
    let mut state_json = json!({
        "Status": s.status, "Running": s.running, "Paused": false, "Restarting": s.status == "restarting",
        "OOMKilled": s.oom_killed, "Dead": s.status == "dead", "Pid": if s.running { 1 } else { 0 },
        "ExitCode": s.exit_code, "Error": facts.error, "StartedAt": s.started_at, "FinishedAt": s.finished_at,
    });
    if let Some(health) = s.health {
        state_json["Health"] = json!({"Status": health, "FailingStreak": 0, "Log": []});
    }
    let ip = facts.ip.as_str();
    json!({
        "Id": facts.id, "Created": facts.created, "Path": path, "Args": args, "State": state_json,
        "Image": facts.image_id, "ResolvConfPath": "", "HostnamePath": "", "HostsPath": "", "LogPath": "",
        "Name": format!("/{}", facts.name), "RestartCount": s.restart_count, "Driver": "overlay2", "Platform": "linux",
        "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "", "ExecIDs": Value::Null,
        "HostConfig": host_config_json(facts), "GraphDriver": {"Name": "overlay2", "Data": {}},
        "Mounts": mounts_json(facts.request), "Config": config_json(facts),
        "NetworkSettings": {
            "Bridge": "", "SandboxID": facts.sandbox_id,
            "SandboxKey": "", "HairpinMode": false, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
            "Ports": ports_json(facts), "SecondaryIPAddresses": Value::Null, "SecondaryIPv6Addresses": Value::Null,
            "EndpointID": "", "Gateway": facts.gateway, "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "IPAddress": ip, "IPPrefixLen": if ip.is_empty() { 0 } else { 24 }, "IPv6Gateway": "", "MacAddress": "",
            "Networks": networks_json(facts),
        },
        "Pod": facts.pod,
    })
}

/// One `GET /containers/json` entry; `now` dates the human `Status`.
pub fn container_list_entry(facts: &ContainerFacts, now: jiff::Timestamp) -> Value {
    let (path, args) = command_of(facts.request);
    let command = std::iter::once(path)
        .chain(args.iter().filter_map(|a| a.as_str().map(String::from)))
        .collect::<Vec<_>>()
        .join(" ");
    let mut ports = Vec::new();
    if let Some(map) = ports_json(facts).as_object() {
        for (key, bindings) in map {
            let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
            let private: u16 = port.parse().unwrap_or(0);
            match bindings.as_array() {
                Some(list) => {
                    for binding in list {
                        let public: u16 = binding["HostPort"]
                            .as_str()
                            .and_then(|p| p.parse().ok())
                            .unwrap_or(0);
                        ports.push(json!({"IP": binding["HostIp"], "PrivatePort": private, "PublicPort": public, "Type": proto}));
                    }
                }
                None => ports.push(json!({"PrivatePort": private, "Type": proto})),
            }
        }
    }
    let created = facts
        .created
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .unwrap_or(0);
    let names: Vec<String> = std::iter::once(format!("/{}", facts.name))
        .chain(facts.link_names.iter().cloned())
        .collect();
    json!({
        "Id": facts.id, "Names": names,
        // as the client asked for it (`alpine`), as Docker lists it
        "Image": facts.request["Image"].as_str().unwrap_or(facts.image), "ImageID": facts.image_id,
        "Command": command, "Created": created, "Ports": ports, "Labels": facts.labels,
        "State": facts.state.status, "Status": facts.state.human_status(now),
        "HostConfig": {"NetworkMode": host_config_json(facts)["NetworkMode"]},
        "NetworkSettings": {"Networks": networks_json(facts)}, "Mounts": mounts_json(facts.request),
    })
}

/// Docker's container filters (`ps --filter`, `container prune`).
pub fn container_matches(facts: &ContainerFacts, filters: &Filters) -> bool {
    filters.iter().all(|(key, values)| {
        values.is_empty()
            || match key.as_str() {
                "label" => labels_match(&facts.labels, values),
                "name" => values.iter().any(|v| {
                    let pattern = v.strip_prefix('/').unwrap_or(v);
                    regex::Regex::new(pattern)
                        .map(|re| re.is_match(facts.name))
                        .unwrap_or_else(|_| facts.name.contains(pattern))
                }),
                "id" => values.iter().any(|v| facts.id.starts_with(v.as_str())),
                "status" => values.iter().any(|v| v == facts.state.status),
                "exited" => values.iter().any(|v| {
                    facts.state.is_exited() && v.parse::<i64>().ok() == Some(facts.state.exit_code)
                }),
                "ancestor" => values.iter().any(|v| {
                    normalise_image(v) == normalise_image(facts.image)
                        || image_id(facts.image).starts_with(v.as_str())
                }),
                "network" => values.iter().any(|v| {
                    facts
                        .networks
                        .iter()
                        .any(|network| &network.name == v || &network.id == v)
                }),
                "health" => values
                    .iter()
                    .any(|v| facts.state.health.unwrap_or("none") == v),
                _ => true,
            }
    })
}

/// `GET /containers/json` over a backend's containers (newest first): running ones unless
/// `all` or a state filter, Docker's filters, `limit`.
pub fn container_list(
    containers: &[ContainerFacts],
    query: &HashMap<String, String>,
) -> Result<Value> {
    let filters = parse_filters(query.get("filters"))?;
    let all = query_bool(query, "all")
        || filters.contains_key("status")
        || filters.contains_key("exited");
    let limit = query_i64(query, "limit")?.filter(|l| *l > 0);
    let now = jiff::Timestamp::now();
    let mut list: Vec<Value> = containers
        .iter()
        .filter(|facts| all || facts.state.running)
        .filter(|facts| container_matches(facts, &filters))
        .map(|facts| container_list_entry(facts, now))
        .collect();
    if let Some(limit) = limit {
        list.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    Ok(Value::Array(list))
}

/// A network Docker defines itself (`bridge`, `host`, `none`).
pub fn predefined_network(name: &str) -> Value {
    json!({"Name": name, "Id": object_id("network", name), "Created": "1970-01-01T00:00:00Z", "Scope": "local",
        "Driver": match name { "bridge" => "bridge", "host" => "host", _ => "null" }, "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": Value::Null, "Config": if name == "bridge" { json!([{"Subnet": "10.244.0.0/16", "Gateway": "10.244.0.1"}]) } else { json!([]) }},
        "Internal": false, "Attachable": false, "Ingress": false, "ConfigFrom": {"Network": ""}, "ConfigOnly": false,
        "Containers": {}, "Options": {}, "Labels": {}})
}

/// The predefined networks, then those clients created (as [`new_network`] made them).
pub fn all_networks(created: impl IntoIterator<Item = Value>) -> Vec<Value> {
    let mut networks: Vec<Value> = PREDEFINED_NETWORKS
        .iter()
        .map(|n| predefined_network(n))
        .collect();
    networks.extend(created.into_iter().map(with_docker_maps));
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

/// Docker's refusals of a `networks/create` before anything is stored: no name, pre-defined
/// names, the single-instance `host` and `null` drivers, swarm-scoped `overlay`, and drivers it
/// has no plugin for (spec: 403 forbidden operation, 404 plugin not found). Returns the name.
pub fn check_network_create(body: &Value) -> Result<&str> {
    let name = body["Name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest("Name is required".into()))?;
    if PREDEFINED_NETWORKS.contains(&name) {
        return Err(ApiError::Forbidden(format!(
            "operation is not permitted on predefined {name} network"
        )));
    }
    match body["Driver"].as_str().unwrap_or_default() {
        "" | "bridge" | "macvlan" | "ipvlan" => Ok(name),
        driver @ ("host" | "null") => Err(ApiError::Forbidden(format!(
            "only one instance of \"{driver}\" network is allowed"
        ))),
        "overlay" => Err(ApiError::Forbidden(
            super::swarm::NOT_SWARM_MANAGER.to_string(),
        )),
        other => Err(super::swarm::plugin_not_found(other)),
    }
}

/// The network a checked `networks/create` body makes (a fresh Id: a network created again
/// under the same name is another network, as in Docker).
pub fn new_network(name: &str, body: &Value) -> Value {
    let id = object_id(
        "network",
        &format!("{name}/{}", jiff::Timestamp::now().as_nanosecond()),
    );
    let driver = body["Driver"]
        .as_str()
        .filter(|d| !d.is_empty())
        .unwrap_or("bridge");
    json!({"Name": name, "Id": id, "Created": crate::runtime::now_rfc3339(), "Scope": "local",
        "Driver": driver, "EnableIPv6": body["EnableIPv6"].as_bool().unwrap_or(false),
        "IPAM": if body["IPAM"].is_object() { body["IPAM"].clone() } else { json!({"Driver": "default", "Options": {}, "Config": []}) },
        "Internal": body["Internal"].as_bool().unwrap_or(false), "Attachable": body["Attachable"].as_bool().unwrap_or(false),
        "Ingress": false, "ConfigFrom": {"Network": ""}, "ConfigOnly": false, "Containers": {},
        "Options": if body["Options"].is_object() { body["Options"].clone() } else { json!({}) },
        "Labels": if body["Labels"].is_object() { body["Labels"].clone() } else { json!({}) }})
}

/// Docker's network reference: the full name or Id, else the first Id starting with at least
/// three characters of it.
pub fn find_network(networks: &[Value], reference: &str) -> Result<Value> {
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

/// A predefined network cannot be removed.
pub fn check_network_delete(network: &Value) -> Result<()> {
    let name = network["Name"].as_str().unwrap_or_default();
    if PREDEFINED_NETWORKS.contains(&name) {
        return Err(ApiError::Forbidden(format!(
            "{name} is a pre-defined network and cannot be removed"
        )));
    }
    Ok(())
}

/// A container as a network's member.
#[derive(Debug, Clone)]
pub struct Endpoint<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub request: &'a Value,
    pub ip: Option<String>,
}

/// `GET /networks/{id}`: the network with the `Containers` attached to it.
pub fn network_inspect(mut network: Value, containers: &[Endpoint]) -> Value {
    let name = network["Name"].as_str().unwrap_or_default().to_string();
    let id = network["Id"].as_str().unwrap_or_default().to_string();
    let mut members = Map::new();
    for container in containers {
        if super::networks::is_attached(container.request, &name, &id) {
            members.insert(container.id.to_string(), json!({"Name": container.name, "EndpointID": container.id, "MacAddress": "",
                "IPv4Address": container.ip.as_ref().map(|ip| format!("{ip}/24")).unwrap_or_default(), "IPv6Address": ""}));
        }
    }
    network["Containers"] = Value::Object(members);
    network
}

/// Docker's network filters.
pub fn network_matches(network: &Value, filters: &Filters) -> bool {
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

/// `GET /networks`.
pub fn network_list(networks: Vec<Value>, query: &HashMap<String, String>) -> Result<Value> {
    let filters = parse_filters(query.get("filters"))?;
    Ok(Value::Array(
        networks
            .into_iter()
            .filter(|n| network_matches(n, &filters))
            .collect(),
    ))
}

/// The request after `networks/{id}/connect` of a container (Docker refuses a running
/// container's second endpoint, as libnetwork, 403; a stopped one answers 200 and its new
/// aliases are kept: testcontainers-node connects with aliases a container created on that
/// network).
pub fn connected_request(
    request: &Value,
    network: &Value,
    endpoint: &Value,
    container_name: &str,
    running: bool,
) -> Result<Value> {
    let name = network["Name"].as_str().unwrap_or_default();
    let id = network["Id"].as_str().unwrap_or_default();
    let endpoint = if endpoint.is_object() {
        endpoint.clone()
    } else {
        json!({})
    };
    if !super::networks::is_attached(request, name, id) {
        return Ok(super::networks::with_endpoint(request, name, id, endpoint));
    }
    if running {
        return Err(ApiError::Forbidden(format!(
            "endpoint with name {} already exists in network {name}",
            container_name.trim_start_matches('/')
        )));
    }
    Ok(super::networks::with_more_aliases(
        request, name, id, &endpoint,
    ))
}

/// The request after `networks/{id}/disconnect`; Docker's refusal (its wording differs for a
/// running container; 403, the spec's only client error for this route besides not found) when
/// the container is not on the network.
pub fn disconnected_request(
    request: &Value,
    network: &Value,
    container_id: &str,
    running: bool,
) -> Result<Value> {
    let name = network["Name"].as_str().unwrap_or_default();
    let id = network["Id"].as_str().unwrap_or_default();
    if !super::networks::is_attached(request, name, id) {
        return Err(ApiError::Forbidden(if running {
            format!("container {container_id} is not connected to network {name}")
        } else {
            format!("container {container_id} is not connected to the network {name}")
        }));
    }
    Ok(super::networks::without_endpoint(request, name, id))
}

/// Label Docker puts on anonymous volumes; plain `volume prune` removes only those.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// Docker's volume filters; `in_use`: a container mounts the volume.
pub fn volume_matches(volume: &Value, in_use: bool, filters: &Filters) -> bool {
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

/// A `volumes/create` body as Docker reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeCreate {
    pub name: String,
    pub driver: String,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
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

/// Reads a `volumes/create` body: a volume without a name is anonymous, as Docker marks it
/// (`prune` takes it); a driver other than `local` is looked up as a plugin by Docker, and
/// podbridge has none, so it answers as a daemon without that plugin.
pub fn volume_create(body: &Value) -> Result<VolumeCreate> {
    let named = body["Name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(String::from);
    let mut labels = string_map(&body["Labels"]);
    if named.is_none() {
        labels.insert(ANONYMOUS_LABEL.into(), String::new());
    }
    let driver = body["Driver"]
        .as_str()
        .filter(|d| !d.is_empty())
        .unwrap_or("local");
    if driver != "local" {
        return Err(super::swarm::plugin_not_found(driver));
    }
    Ok(VolumeCreate {
        name: named.unwrap_or_else(|| hex::encode(rand::random::<[u8; 32]>())),
        driver: driver.to_owned(),
        labels,
        options: string_map(&body["DriverOpts"]),
    })
}

/// `GET /volumes`; `in_use` says whether a container mounts a volume.
pub fn volume_list(
    volumes: Vec<Value>,
    in_use: impl Fn(&Value) -> bool,
    query: &HashMap<String, String>,
) -> Result<Value> {
    let filters = parse_filters(query.get("filters"))?;
    let volumes: Vec<Value> = volumes
        .into_iter()
        .filter(|v| volume_matches(v, in_use(v), &filters))
        .collect();
    Ok(json!({"Volumes": volumes, "Warnings": []}))
}

/// What `volumes/prune` removes (Docker, API 1.42+): unused anonymous volumes, or every unused
/// volume with the `all=true` filter; clients speaking an API before 1.42 get the old meaning,
/// every unused volume. Returns a test for (volume, in use).
pub fn volume_prune_rule(
    query: &HashMap<String, String>,
    before_1_42: bool,
) -> Result<impl Fn(&Value, bool) -> bool> {
    let mut filters = parse_filters(query.get("filters"))?;
    let all = filters
        .remove("all")
        .is_some_and(|values| values.iter().any(|v| matches!(v.as_str(), "true" | "1")))
        || before_1_42;
    Ok(move |volume: &Value, in_use: bool| {
        !in_use
            && volume_matches(volume, false, &filters)
            && (all || volume["Labels"].get(ANONYMOUS_LABEL).is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Value {
        json!({"Image": "redis", "Cmd": "redis-server", "Labels": {"app": "db"},
            "ExposedPorts": {"6379/tcp": {}},
            "HostConfig": {"NetworkMode": "backnet", "Binds": ["data:/data:ro", "/src:/src"]},
            "NetworkingConfig": {"EndpointsConfig": {"backnet": {"Aliases": ["cache"]}}}})
    }

    fn facts<'a>(request: &'a Value, state: ContainerState) -> ContainerFacts<'a> {
        let known = [json!({"Name": "back", "Id": "backnet"})];
        ContainerFacts {
            id: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            name: "db",
            created: "2026-01-01T00:00:00Z",
            image: "redis",
            image_id: image_id("redis"),
            request,
            state,
            error: String::new(),
            ip: "10.244.0.7".into(),
            gateway: "127.0.0.1".into(),
            networks: attachments(request, &known),
            published: BTreeMap::from([(
                "6379/tcp".to_string(),
                vec!["127.0.0.1:32768".parse().unwrap()],
            )]),
            links: None,
            link_names: vec!["/web/db".into()],
            labels: request["Labels"].as_object().cloned().unwrap(),
            sandbox_id: "uid-1".into(),
            pod: "podbridge-db-0123456789ab",
        }
    }

    fn running() -> ContainerState {
        ContainerState {
            status: "running",
            running: true,
            exit_code: 0,
            started_at: "2026-01-01T00:00:01Z".into(),
            finished_at: crate::runtime::state::ZERO_TIME.into(),
            oom_killed: false,
            error: String::new(),
            health: Some("healthy"),
            exit_key: None,
            main_started: true,
            restart_count: 0,
        }
    }

    fn exited(code: i64) -> ContainerState {
        ContainerState {
            status: "exited",
            running: false,
            exit_code: code,
            health: None,
            finished_at: "2026-01-01T00:00:02Z".into(),
            ..running()
        }
    }

    fn filters(key: &str, values: &[&str]) -> Filters {
        HashMap::from([(
            key.to_string(),
            values.iter().map(|v| v.to_string()).collect(),
        )])
    }

    #[test]
    fn attachments_name_created_networks_and_give_predefined_ones_their_id() {
        let known = [json!({"Name": "back", "Id": "backnet"})];
        let request = json!({"HostConfig": {"NetworkMode": "default"},
            "NetworkingConfig": {"EndpointsConfig": {"backnet": {"Aliases": ["a"]}}}});
        assert_eq!(
            attachments(&request, &known),
            [
                Attachment {
                    name: "bridge".into(),
                    id: object_id("network", "bridge"),
                    endpoint: json!({})
                },
                Attachment {
                    name: "back".into(),
                    id: "backnet".into(),
                    endpoint: json!({"Aliases": ["a"]})
                },
            ]
        );
        assert_eq!(
            predefined_network("bridge")["Id"],
            json!(object_id("network", "bridge"))
        );
    }

    #[test]
    fn inspect_shows_the_request_with_docker_defaults_and_the_backend_facts() {
        let request = request();
        let inspect = container_inspect(&facts(&request, running()));
        assert_eq!(inspect["Name"], "/db");
        assert_eq!(inspect["Path"], "redis-server");
        assert_eq!(inspect["Args"], json!([]));
        assert_eq!(inspect["Config"]["Cmd"], json!(["redis-server"]));
        assert_eq!(inspect["Config"]["Hostname"], "0123456789ab");
        assert_eq!(inspect["Config"]["Tty"], false);
        assert_eq!(inspect["HostConfig"]["LogConfig"]["Type"], "json-file");
        assert_eq!(inspect["HostConfig"]["RestartPolicy"]["Name"], "no");
        assert_eq!(inspect["HostConfig"]["Links"], Value::Null);
        assert_eq!(inspect["State"]["Health"]["Status"], "healthy");
        assert_eq!(inspect["State"]["Pid"], 1);
        let ports = &inspect["NetworkSettings"]["Ports"];
        assert_eq!(
            ports["6379/tcp"],
            json!([{"HostIp": "127.0.0.1", "HostPort": "32768"}])
        );
        let back = &inspect["NetworkSettings"]["Networks"]["back"];
        assert_eq!(back["NetworkID"], "backnet");
        assert_eq!(back["Aliases"], json!(["cache"]));
        assert_eq!(back["IPAddress"], "10.244.0.7");
        assert_eq!(back["EndpointID"], inspect["Id"]);
        assert_eq!(inspect["Mounts"][0]["Type"], "volume");
        assert_eq!(inspect["Mounts"][0]["RW"], false);
        assert_eq!(inspect["Mounts"][1]["Type"], "bind");
        assert_eq!(inspect["Pod"], "podbridge-db-0123456789ab");

        // Not running: published ports are not shown, and nothing is invented for them.
        let stopped = container_inspect(&facts(&request, exited(3)));
        assert_eq!(
            stopped["NetworkSettings"]["Ports"],
            json!({"6379/tcp": null})
        );
        assert_eq!(stopped["State"]["ExitCode"], 3);
        assert!(stopped["State"].get("Health").is_none());
    }

    #[test]
    fn list_entries_read_like_docker_ps() {
        let request = request();
        let now: jiff::Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let entry = container_list_entry(&facts(&request, exited(3)), now);
        assert_eq!(entry["Names"], json!(["/db", "/web/db"]));
        assert_eq!(entry["Image"], "redis");
        assert_eq!(entry["Command"], "redis-server");
        assert_eq!(entry["Created"], 1767225600);
        assert_eq!(entry["Status"], "Exited (3) 9 minutes ago");
        assert_eq!(
            entry["Ports"],
            json!([{"PrivatePort": 6379, "Type": "tcp"}])
        );
        assert_eq!(entry["HostConfig"]["NetworkMode"], "backnet");
        let entry = container_list_entry(&facts(&request, running()), now);
        assert_eq!(
            entry["Ports"],
            json!([{"IP": "127.0.0.1", "PrivatePort": 6379, "PublicPort": 32768, "Type": "tcp"}])
        );
    }

    #[test]
    fn container_filters_follow_docker() {
        let request = request();
        let db = facts(&request, exited(3));
        let matches = |key: &str, values: &[&str]| container_matches(&db, &filters(key, values));
        assert!(matches("name", &["^d"]));
        assert!(matches("name", &["/db"]));
        assert!(!matches("name", &["^b"]));
        assert!(matches("id", &["0123"]));
        assert!(!matches("id", &["123"]));
        assert!(matches("label", &["app=db"]));
        assert!(matches("status", &["exited"]));
        assert!(matches("exited", &["3"]));
        assert!(!matches("exited", &["0"]));
        assert!(matches("ancestor", &["redis:latest"]));
        assert!(matches("network", &["back"]));
        assert!(matches("network", &["backnet"]));
        assert!(!matches("network", &["bridge"]));
        assert!(matches("health", &["none"]));
        assert!(matches("anything", &["else"]));
    }

    #[test]
    fn lists_show_running_containers_unless_all_or_a_state_filter() {
        let request = request();
        let containers = [facts(&request, running()), facts(&request, exited(0))];
        let count = |query: &[(&str, &str)]| {
            let query = query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            container_list(&containers, &query)
                .unwrap()
                .as_array()
                .unwrap()
                .len()
        };
        assert_eq!(count(&[]), 1);
        assert_eq!(count(&[("all", "1")]), 2);
        assert_eq!(count(&[("all", "1"), ("limit", "1")]), 1);
        assert_eq!(count(&[("filters", r#"{"status":["exited"]}"#)]), 1);
        assert_eq!(count(&[("filters", r#"{"exited":["0"]}"#)]), 1);
        let bad = HashMap::from([("filters".to_string(), "{".to_string())]);
        assert!(container_list(&containers, &bad).is_err());
    }

    #[test]
    fn create_refusals_follow_docker() {
        let status = |name: &str, driver: &str| {
            check_network_create(&json!({"Name": name, "Driver": driver}))
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
        assert_eq!(status("", ""), Some((400, "Name is required".into())));
        assert_eq!(
            check_network_delete(&predefined_network("host"))
                .unwrap_err()
                .to_string(),
            "host is a pre-defined network and cannot be removed"
        );
    }

    #[test]
    fn new_networks_have_docker_fields_and_fresh_ids() {
        let body = json!({"Name": "n", "Labels": {"a": "b"}, "Options": null});
        let network = new_network("n", &body);
        assert_eq!(network["Driver"], "bridge");
        assert_eq!(network["Labels"], json!({"a": "b"}));
        assert_eq!(network["Options"], json!({}));
        assert_eq!(network["Containers"], json!({}));
        assert_eq!(network["Id"].as_str().unwrap().len(), 64);
        assert_ne!(network["Id"], new_network("n", &body)["Id"]);
        let keys = |value: &Value| {
            value
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&network), keys(&predefined_network("bridge")));
    }

    #[test]
    fn options_labels_and_containers_are_never_null() {
        let network = with_docker_maps(json!({"Name": "n", "Options": null, "Labels": {"a": "b"}}));
        assert_eq!(network["Options"], json!({}));
        assert_eq!(network["Labels"], json!({"a": "b"}));
        assert_eq!(network["Containers"], json!({}));
    }

    #[test]
    fn networks_are_found_by_name_id_or_an_id_prefix_of_three() {
        let networks = all_networks([json!({"Name": "abc", "Id": "fedcba"})]);
        let found = |reference: &str| {
            find_network(&networks, reference)
                .ok()
                .map(|n| n["Name"].clone())
        };
        assert_eq!(found("abc"), Some(json!("abc")));
        assert_eq!(found("fedcba"), Some(json!("abc")));
        assert_eq!(found("fed"), Some(json!("abc")));
        assert_eq!(found("fe"), None);
        assert_eq!(found("none"), Some(json!("none")));
        let bridge = object_id("network", "bridge");
        assert_eq!(found(&bridge[..3]), Some(json!("bridge")));
        assert_eq!(
            find_network(&networks, "x").unwrap_err().to_string(),
            "network x not found"
        );
    }

    #[test]
    fn network_filters_follow_docker() {
        let networks = all_networks([json!({"Name": "front", "Id": "f00", "Driver": "bridge",
            "Labels": {"tier": "web"}})]);
        let names = |key: &str, values: &[&str]| -> Vec<String> {
            networks
                .iter()
                .filter(|n| network_matches(n, &filters(key, values)))
                .map(|n| n["Name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names("name", &["ro"]), ["front"]);
        assert_eq!(names("driver", &["null"]), ["none"]);
        assert_eq!(names("type", &["custom"]), ["front"]);
        assert_eq!(names("type", &["builtin"]), ["bridge", "host", "none"]);
        assert_eq!(names("label", &["tier=web"]), ["front"]);
        assert_eq!(names("id", &["f0"]), ["front"]);
    }

    #[test]
    fn network_members_are_the_attached_containers() {
        let network = json!({"Name": "back", "Id": "backnet", "Containers": {}});
        let attached = request();
        let elsewhere = json!({"Image": "busybox"});
        let members = network_inspect(
            network,
            &[
                Endpoint {
                    id: "c1",
                    name: "db",
                    request: &attached,
                    ip: Some("10.244.0.7".into()),
                },
                Endpoint {
                    id: "c2",
                    name: "other",
                    request: &elsewhere,
                    ip: None,
                },
            ],
        );
        assert_eq!(
            members["Containers"],
            json!({"c1": {"Name": "db", "EndpointID": "c1", "MacAddress": "",
                "IPv4Address": "10.244.0.7/24", "IPv6Address": ""}})
        );
    }

    #[test]
    fn connect_and_disconnect_answer_as_docker() {
        let network = json!({"Name": "back", "Id": "backnet"});
        let attached = request();
        let again = connected_request(
            &attached,
            &network,
            &json!({"Aliases": ["more"]}),
            "/db",
            false,
        )
        .unwrap();
        assert_eq!(
            again["NetworkingConfig"]["EndpointsConfig"]["backnet"]["Aliases"],
            json!(["cache", "more"])
        );
        assert_eq!(
            connected_request(&attached, &network, &Value::Null, "/db", true)
                .unwrap_err()
                .to_string(),
            "endpoint with name db already exists in network back"
        );
        let other = json!({"Name": "other", "Id": "otherid"});
        for (running, message) in [
            (true, "container c1 is not connected to network other"),
            (false, "container c1 is not connected to the network other"),
        ] {
            let error = disconnected_request(&attached, &other, "c1", running).unwrap_err();
            assert_eq!(
                (error.status().as_u16(), error.to_string()),
                (403, message.into())
            );
        }
        let gone = disconnected_request(&attached, &network, "c1", false).unwrap();
        assert!(!super::super::networks::is_attached(
            &gone, "back", "backnet"
        ));
    }

    #[test]
    fn volume_create_reads_the_body_as_docker() {
        let named = volume_create(&json!({"Name": "data", "Labels": {"a": "b", "n": 1},
            "DriverOpts": {"size": "1Gi"}}))
        .unwrap();
        assert_eq!(named.name, "data");
        assert_eq!(named.driver, "local");
        assert_eq!(named.labels, BTreeMap::from([("a".into(), "b".into())]));
        assert_eq!(named.options["size"], "1Gi");
        let anonymous = volume_create(&json!({})).unwrap();
        assert_eq!(anonymous.name.len(), 64);
        assert!(anonymous.labels.contains_key(ANONYMOUS_LABEL));
        let refused = volume_create(&json!({"Name": "v", "Driver": "nfs"})).unwrap_err();
        assert_eq!(
            (refused.status().as_u16(), refused.to_string()),
            (404, "plugin \"nfs\" not found".into())
        );
    }

    #[test]
    fn prune_takes_unused_anonymous_volumes_unless_all() {
        let anonymous = json!({"Name": "a", "Labels": {ANONYMOUS_LABEL: ""}});
        let named = json!({"Name": "n", "Labels": {}});
        let query = |filters: &str| HashMap::from([("filters".to_string(), filters.to_string())]);
        let plain = volume_prune_rule(&query(""), false).unwrap();
        assert!(plain(&anonymous, false));
        assert!(!plain(&anonymous, true));
        assert!(!plain(&named, false));
        let all = volume_prune_rule(&query(r#"{"all":["true"]}"#), false).unwrap();
        assert!(all(&named, false));
        assert!(!all(&named, true));
        let old_client = volume_prune_rule(&query(""), true).unwrap();
        assert!(old_client(&named, false));
        let filtered = volume_prune_rule(&query(r#"{"all":["1"],"name":["x"]}"#), false).unwrap();
        assert!(!filtered(&named, false));
    }

    #[test]
    fn volume_filters_follow_docker() {
        let volume = json!({"Name": "data", "Driver": "local", "Labels": {"a": "b"}});
        assert!(volume_matches(&volume, false, &filters("name", &["at"])));
        assert!(volume_matches(
            &volume,
            false,
            &filters("dangling", &["true"])
        ));
        assert!(!volume_matches(
            &volume,
            true,
            &filters("dangling", &["true"])
        ));
        assert!(volume_matches(&volume, true, &filters("label", &["a"])));
        assert!(!volume_matches(&volume, true, &filters("driver", &["nfs"])));
    }
}
