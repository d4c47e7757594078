//! Decoding of `ContainerCreate`: Docker wire JSON → validated [`Workload`].
//!
//! Errors here are the client's fault and carry dockerd's wording where dockerd has one, because
//! tools match on it. Settings podbridge cannot honour become Docker-style warnings returned with
//! the create response; settings it can honour but that policy may refuse (privileged, host
//! namespaces, host paths, the Docker socket) are carried through untouched: deciding is policy's
//! job, not the decoder's.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::wire::{self, ContainerCreateBody, HostConfig};
use crate::model::{
    self, EnvVar, ExtraHost, HealthTest, Healthcheck, HostBinding, ImageConfig, ImageRef, Link,
    Mount, MountSource, NamespaceMode, Network, NetworkAttachment, NetworkMode, PortSpec, Protocol,
    Resources, RestartPolicy, SeLinux, Security, Stdio, User, Workload,
};

/// A decoded create request and the warnings Docker would print for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub workload: Workload,
    /// Docker-style warnings for settings podbridge ignored, returned in the create response.
    pub warnings: Vec<String>,
    /// The request as one JSON document (with the image's exposed ports merged in): what the
    /// rules read and what is stored.
    pub request: std::sync::Arc<serde_json::Value>,
}

/// A create request the client must fix. All map to HTTP 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("config cannot be empty in order to create a container")]
    EmptyBody,
    /// The body is not JSON, or a field has the wrong type.
    #[error("invalid JSON: {message} (field {field}) at line {line} column {column}")]
    ParseJsonFailed {
        field: String,
        message: String,
        line: usize,
        column: usize,
    },
    #[error("config.Image is required")]
    ImageMissing,
    #[error("{0}")]
    ParseImageFailed(#[from] model::ModelError),
    #[error("Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName { name: String },
    #[error("invalid port specification: {spec:?}: {reason}")]
    InvalidPortSpec { spec: String, reason: String },
    #[error("invalid mount config: {spec:?}: {reason}")]
    InvalidMount { spec: String, reason: String },
    #[error("Duplicate mount point: {target}")]
    DuplicateMountPoint { target: String },
    #[error("invalid environment variable: {entry:?}")]
    InvalidEnv { entry: String },
    #[error("invalid resources: {0}")]
    InvalidResources(String),
    #[error("invalid healthcheck: {0}")]
    InvalidHealthcheck(String),
    #[error("invalid restart policy: {0}")]
    InvalidRestartPolicy(String),
    #[error("invalid IP address in add-host: {entry:?}")]
    InvalidExtraHost { entry: String },
    #[error("logger: no log driver named '{name}' is registered")]
    UnknownLogDriver { name: String },
    /// A `HostConfig.Links` entry dockerd cannot read; `reason` is its message.
    #[error("{reason}")]
    InvalidLink { entry: String, reason: String },
    /// Links with `NetworkMode: container:…`: the container has no network of its own to add
    /// the target's name to.
    #[error("conflicting options: container type network can't be used with links. This would result in undefined behavior")]
    ContainerNetworkAndLinks,
}

impl DecodeError {
    /// HTTP status the server answers with: every decode error is a bad request.
    pub fn status(&self) -> u16 {
        400
    }
}

type Result<T, E = DecodeError> = std::result::Result<T, E>;

/// Docker's smallest accepted memory limit and reservation.
const MINIMUM_MEMORY_BYTES: i64 = 6 * 1024 * 1024;
/// Docker's healthcheck defaults (`HEALTHCHECK` without options).
const DEFAULT_HEALTH_INTERVAL_SECONDS: i64 = 30;
const DEFAULT_HEALTH_TIMEOUT_SECONDS: i64 = 30;
const DEFAULT_HEALTH_RETRIES: i64 = 3;
/// An `ExposedPorts` range larger than this is a mistake, not a request.
const MAXIMUM_PORT_RANGE: u32 = 1024;

/// Decodes a `POST /containers/create` body. `name` is the `name` query parameter; `image` is the
/// image's config when the server has it, used for what Docker inherits at create time (exposed
/// ports, healthcheck, user, stop signal).
pub fn decode_create(
    body: &[u8],
    name: Option<&str>,
    image: Option<&ImageConfig>,
) -> Result<Decoded> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::EmptyBody);
    }
    // One parse decides what the request is: the generic view refuses what the typed decoder
    // would skip unread (invalid UTF-8, lone surrogate escapes inside unknown fields), so the
    // rules never see a different request (or `null`) than the one decoded.
    let mut request: serde_json::Value = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(_) => {
            // Name the field where a parser can: the typed one for a wrong type, the generic
            // one for a fault in a field the typed parser skips (refused all the same).
            parse_body(body)?;
            return Err(parse_generic(body)
                .err()
                .unwrap_or(DecodeError::ParseJsonFailed {
                    field: ".".to_owned(),
                    message: "not a JSON document".to_owned(),
                    line: 0,
                    column: 0,
                }));
        }
    };
    let merged;
    let typed_from = if merge_image_exposed_ports(&mut request, image) {
        merged = serde_json::to_vec(&request).unwrap_or_default();
        &merged[..]
    } else {
        body
    };
    let wire = parse_body(typed_from)?;
    let request = std::sync::Arc::new(request);
    let mut decoder = Decoder {
        warnings: Vec::new(),
        image,
    };
    let mut workload = decoder.workload(wire, name, request.clone())?;
    for link in &mut workload.links {
        link.target_id = request[crate::model::LINK_TARGETS][&link.alias]
            .as_str()
            .map(str::to_owned);
    }
    Ok(Decoded {
        workload,
        warnings: decoder.warnings,
        request,
    })
}

/// `HostConfig.Links`, read as dockerd reads them. On a user-defined network dockerd ignores
/// them (the CLI sends them in `EndpointsConfig` too, as that network's links); with another
/// container's network they are refused, as dockerd refuses them.
fn links(host: &HostConfig, mode: &NetworkMode) -> Result<Vec<Link>> {
    let entries = host.links.as_deref().unwrap_or_default();
    match mode {
        _ if entries.is_empty() => Ok(Vec::new()),
        NetworkMode::Container(_) => Err(DecodeError::ContainerNetworkAndLinks),
        NetworkMode::Named(_) => Ok(Vec::new()),
        NetworkMode::Bridge | NetworkMode::Host | NetworkMode::None => entries
            .iter()
            .map(|entry| {
                Link::parse(entry).map_err(|error| DecodeError::InvalidLink {
                    entry: entry.clone(),
                    reason: error.to_string(),
                })
            })
            .collect(),
    }
}

/// Docker's container `Config.ExposedPorts` includes the image's: merged into the request itself,
/// so inspect shows them, `-P` publishes them, and the rules read the same request that is
/// stored. Returns whether anything was added.
fn merge_image_exposed_ports(request: &mut serde_json::Value, image: Option<&ImageConfig>) -> bool {
    let Some(image_ports) = image.and_then(|config| config.exposed_ports.as_ref()) else {
        return false;
    };
    let Some(object) = request.as_object_mut() else {
        return false;
    };
    let exposed = object
        .entry("ExposedPorts")
        .or_insert_with(|| serde_json::json!({}));
    if exposed.is_null() {
        *exposed = serde_json::json!({});
    }
    let Some(exposed) = exposed.as_object_mut() else {
        return false;
    };
    let mut added = false;
    for port in image_ports.keys() {
        if !exposed.contains_key(port) {
            exposed.insert(port.clone(), serde_json::json!({}));
            added = true;
        }
    }
    added
}

fn parse_body(body: &[u8]) -> Result<ContainerCreateBody> {
    // Fast path; the path-tracking parser runs only to explain a failure.
    if let Ok(parsed) = serde_json::from_slice(body) {
        return Ok(parsed);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed: ContainerCreateBody =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let field = error.path().to_string();
            let inner = error.into_inner();
            DecodeError::ParseJsonFailed {
                field,
                message: strip_position(&inner.to_string()),
                line: inner.line(),
                column: inner.column(),
            }
        })?;
    deserializer
        .end()
        .map_err(|error| DecodeError::ParseJsonFailed {
            field: ".".to_owned(),
            message: strip_position(&error.to_string()),
            line: error.line(),
            column: error.column(),
        })?;
    Ok(parsed)
}

/// The body as the generic JSON value rules see, or why it is not one.
fn parse_generic(body: &[u8]) -> Result<serde_json::Value> {
    let failed = |field: String, error: serde_json::Error| DecodeError::ParseJsonFailed {
        field,
        message: strip_position(&error.to_string()),
        line: error.line(),
        column: error.column(),
    };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed: serde_json::Value = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|error| failed(error.path().to_string(), error.into_inner()))?;
    deserializer
        .end()
        .map_err(|error| failed(".".to_owned(), error))?;
    Ok(parsed)
}

/// serde_json appends " at line L column C"; the error reports those separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

struct Decoder<'a> {
    warnings: Vec<String>,
    image: Option<&'a ImageConfig>,
}

impl Decoder<'_> {
    fn warn(&mut self, warning: impl Into<String>) {
        self.warnings.push(warning.into());
    }

    /// The standard warning for a setting Kubernetes has no equivalent for.
    fn unsupported(&mut self, field: &str) {
        self.warn(format!(
            "{field} is not supported by podbridge on Kubernetes and was ignored"
        ));
    }

    fn workload(
        &mut self,
        wire: ContainerCreateBody,
        name: Option<&str>,
        create_request: std::sync::Arc<serde_json::Value>,
    ) -> Result<Workload> {
        let host = wire.host_config.clone().unwrap_or_default();
        let name = decode_name(name)?;
        let image = match wire.image.as_deref().map(str::trim) {
            None | Some("") => return Err(DecodeError::ImageMissing),
            Some(reference) => ImageRef::parse(reference)?,
        };
        let env = self.env(wire.env.as_deref().unwrap_or_default())?;
        let user = self.user(wire.user.as_deref());
        let ports = self.ports(&wire, &host)?;
        let mounts = self.mounts(&wire, &host)?;
        let resources = self.resources(&host)?;
        let network = self.network(&wire, &host);
        let links = links(&host, &network.mode)?;
        let healthcheck = self.healthcheck(wire.healthcheck.as_ref())?;
        let restart = self.restart(&host)?;
        log_driver(&host)?;
        let security = self.security(&host);
        let extra_hosts = self.extra_hosts(host.extra_hosts.as_deref().unwrap_or_default())?;
        let dns = model::Dns {
            servers: host.dns.clone().unwrap_or_default(),
            search: host.dns_search.clone().unwrap_or_default(),
            options: host
                .dns_options
                .iter()
                .flatten()
                .map(|option| match option.split_once(':') {
                    Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                    None => (option.clone(), None),
                })
                .collect(),
        };
        let shm_size_bytes = match host.shm_size {
            Some(size) if size < 0 => {
                return Err(DecodeError::InvalidResources(
                    "SHM size can not be less than 0".to_owned(),
                ))
            }
            Some(0) | None => None,
            Some(size) => Some(size),
        };
        let stop_signal = wire.stop_signal.clone().filter(|signal| !signal.is_empty());
        let effective_signal = stop_signal
            .clone()
            .or_else(|| self.image.and_then(|image| image.stop_signal.clone()));
        if let Some(signal) = effective_signal.filter(|signal| !is_sigterm(signal)) {
            self.warn(format!(
                "StopSignal {signal} is not supported by podbridge: Kubernetes stops containers with SIGTERM"
            ));
        }
        if let Some(timeout) = wire.stop_timeout.filter(|timeout| *timeout < 0) {
            self.warn(format!(
                "StopTimeout {timeout} (wait forever) is not supported by podbridge; Docker's default of 10 seconds applies"
            ));
        }
        let supplemental_groups = self.groups(host.group_add.as_deref().unwrap_or_default());
        let pid_mode = self.namespace_mode("PidMode", host.pid_mode.as_deref());
        let ipc_mode = self.namespace_mode("IpcMode", host.ipc_mode.as_deref());
        self.unsupported_fields(&wire, &host);
        Ok(Workload {
            name,
            image,
            pull_image: self.image.and_then(|image| image.pull_reference.clone()),
            entrypoint: wire.entrypoint.clone(),
            cmd: wire.cmd.clone(),
            env,
            working_dir: wire.working_dir.clone().filter(|dir| !dir.is_empty()),
            user,
            stdio: Stdio {
                tty: wire.tty.unwrap_or(false),
                open_stdin: wire.open_stdin.unwrap_or(false),
                stdin_once: wire.stdin_once.unwrap_or(false),
                attach_stdin: wire.attach_stdin.unwrap_or(false),
                attach_stdout: wire.attach_stdout.unwrap_or(false),
                attach_stderr: wire.attach_stderr.unwrap_or(false),
            },
            ports,
            publish_all_ports: host.publish_all_ports.unwrap_or(false),
            mounts,
            labels: wire.labels.clone().unwrap_or_default(),
            resources,
            network,
            healthcheck,
            restart,
            security,
            extra_hosts,
            links,
            dns,
            shm_size_bytes,
            stop_signal,
            stop_timeout_seconds: wire.stop_timeout.filter(|timeout| *timeout >= 0),
            init: host.init.unwrap_or(false),
            auto_remove: host.auto_remove.unwrap_or(false),
            sysctls: host.sysctls.clone().unwrap_or_default(),
            supplemental_groups,
            pid_mode,
            ipc_mode,
            create_request,
        })
    }

    fn env(&mut self, entries: &[String]) -> Result<Vec<EnvVar>> {
        let mut env = Vec::with_capacity(entries.len());
        for entry in entries {
            match entry.split_once('=') {
                Some(("", _)) => {
                    return Err(DecodeError::InvalidEnv {
                        entry: entry.clone(),
                    })
                }
                Some((name, value)) => env.push(EnvVar {
                    name: name.to_owned(),
                    value: Some(value.to_owned()),
                }),
                None if entry.is_empty() => {
                    return Err(DecodeError::InvalidEnv {
                        entry: entry.clone(),
                    })
                }
                None => {
                    self.warn(format!(
                        "Env {entry} without a value (unset the image's variable) is not supported by podbridge; the image's value, if any, is kept"
                    ));
                    env.push(EnvVar {
                        name: entry.clone(),
                        value: None,
                    });
                }
            }
        }
        Ok(env)
    }

    /// Numeric users map to `runAsUser`/`runAsGroup`; a user name cannot be resolved without the
    /// image's `/etc/passwd`, so the container runs as the image's user and the client is told.
    fn user(&mut self, requested: Option<&str>) -> Option<User> {
        let image_user = self
            .image
            .and_then(|image| image.user.as_deref())
            .filter(|user| !user.is_empty());
        let (raw, from_request) = match requested.filter(|user| !user.is_empty()) {
            Some(user) => (user, true),
            None => (image_user?, false),
        };
        let (user_part, group_part) = match raw.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (raw, None),
        };
        let numeric = |part: &str| match part {
            "root" => Some(0),
            _ => part.parse::<i64>().ok().filter(|id| *id >= 0),
        };
        let uid = numeric(user_part);
        let gid = group_part.and_then(numeric);
        let unresolved = uid.is_none() || (group_part.is_some() && gid.is_none());
        if unresolved && from_request && image_user != Some(raw) {
            self.warn(format!(
                "User {raw:?} is not numeric: podbridge cannot resolve names, the container runs as the image's user"
            ));
        }
        Some(User {
            raw: raw.to_owned(),
            uid,
            gid,
        })
    }

    fn ports(&mut self, wire: &ContainerCreateBody, host: &HostConfig) -> Result<Vec<PortSpec>> {
        let mut ports: BTreeMap<(u16, Protocol), Vec<HostBinding>> = BTreeMap::new();
        let image_ports = self
            .image
            .and_then(|image| image.exposed_ports.as_ref())
            .into_iter()
            .flat_map(|ports| ports.keys());
        for spec in image_ports.chain(wire.exposed_ports.iter().flat_map(|ports| ports.keys())) {
            for key in parse_port_key(spec)? {
                ports.entry(key).or_default();
            }
        }
        for (spec, bindings) in host.port_bindings.iter().flatten() {
            let keys = parse_port_key(spec)?;
            for key in &keys {
                let entry = ports.entry(*key).or_default();
                for binding in bindings.iter().flatten() {
                    let decoded = self.host_binding(spec, binding)?;
                    entry.push(decoded);
                }
            }
        }
        // `-P`: every exposed port (the image's included) without a binding gets a free host port.
        if host.publish_all_ports.unwrap_or(false) {
            for bindings in ports.values_mut().filter(|bindings| bindings.is_empty()) {
                bindings.push(HostBinding {
                    host_ip: None,
                    host_port: None,
                });
            }
        }
        Ok(ports
            .into_iter()
            .map(|((port, protocol), bindings)| PortSpec {
                port,
                protocol,
                bindings,
            })
            .collect())
    }

    fn host_binding(&mut self, spec: &str, binding: &wire::PortBinding) -> Result<HostBinding> {
        let invalid = |reason: &str| DecodeError::InvalidPortSpec {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let host_ip = match binding.host_ip.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(ip) => {
                let bare = ip.trim_start_matches('[').trim_end_matches(']');
                bare.parse::<IpAddr>()
                    .map_err(|_| invalid(&format!("invalid host IP {ip:?}")))?;
                Some(bare.to_owned())
            }
        };
        let host_port = match binding.host_port.as_deref().map(str::trim) {
            None | Some("") | Some("0") => None,
            Some(port) => {
                let (start, end) = parse_port_range(port)
                    .ok_or_else(|| invalid(&format!("invalid host port {port:?}")))?;
                if end != start {
                    self.warn(format!(
                        "host port range {port} for {spec}: podbridge binds the first port of the range"
                    ));
                }
                Some(start)
            }
        };
        Ok(HostBinding { host_ip, host_port })
    }

    fn mounts(&mut self, wire: &ContainerCreateBody, host: &HostConfig) -> Result<Vec<Mount>> {
        let mut mounts: Vec<Mount> = Vec::new();
        let mut add = |mount: Mount| -> Result<()> {
            if mounts
                .iter()
                .any(|existing| existing.target == mount.target)
            {
                return Err(DecodeError::DuplicateMountPoint {
                    target: mount.target,
                });
            }
            mounts.push(mount);
            Ok(())
        };
        let mut warnings = Vec::new();
        for (index, spec) in host.binds.iter().flatten().enumerate() {
            let mut mount = parse_bind(spec, &mut warnings)?;
            mount.field = format!("/HostConfig/Binds/{index}");
            add(mount)?;
        }
        for (index, mount) in host.mounts.iter().flatten().enumerate() {
            if let Some(mut mount) = convert_mount(mount, &mut warnings)? {
                mount.field = format!("/HostConfig/Mounts/{index}");
                add(mount)?;
            }
        }
        for (target, options) in host.tmpfs.iter().flatten() {
            let mut mount = parse_tmpfs(target, options)?;
            mount.field = format!("/HostConfig/Tmpfs/{}", pointer_token(target));
            add(mount)?;
        }
        for key in wire.volumes.iter().flat_map(|volumes| volumes.keys()) {
            let target = mount_target(key, key)?;
            // Docker lets a bind or named volume at the same path replace the anonymous one.
            if !mounts.iter().any(|existing| existing.target == target) {
                mounts.push(Mount {
                    target,
                    source: MountSource::Anonymous,
                    read_only: false,
                    field: format!("/Volumes/{}", pointer_token(key)),
                });
            }
        }
        for warning in warnings {
            self.warn(warning);
        }
        Ok(mounts)
    }

    fn resources(&mut self, host: &HostConfig) -> Result<Resources> {
        let invalid = |message: &str| Err(DecodeError::InvalidResources(message.to_owned()));
        let positive = |value: Option<i64>| value.filter(|value| *value > 0);
        for (field, value) in [
            ("Memory", host.memory),
            ("MemoryReservation", host.memory_reservation),
            ("NanoCpus", host.nano_cpus),
            ("CpuShares", host.cpu_shares),
            ("CpuPeriod", host.cpu_period),
        ] {
            if value.is_some_and(|value| value < 0) {
                return Err(DecodeError::InvalidResources(format!(
                    "{field} can not be negative"
                )));
            }
        }
        let memory = positive(host.memory);
        let reservation = positive(host.memory_reservation);
        if memory.is_some_and(|memory| memory < MINIMUM_MEMORY_BYTES) {
            return invalid("Minimum memory limit allowed is 6MB");
        }
        if reservation.is_some_and(|reservation| reservation < MINIMUM_MEMORY_BYTES) {
            return invalid("Minimum memory reservation allowed is 6MB");
        }
        if let (Some(memory), Some(reservation)) = (memory, reservation) {
            if memory < reservation {
                return invalid(
                    "Minimum memory limit can not be less than memory reservation limit, see usage",
                );
            }
        }
        let nano_cpus = positive(host.nano_cpus);
        let cpu_quota = positive(host.cpu_quota);
        let cpu_period = positive(host.cpu_period);
        if nano_cpus.is_some_and(|nano| nano < 10_000_000) {
            return invalid("Range of CPUs is from 0.01 and up");
        }
        if nano_cpus.is_some() && cpu_quota.is_some() {
            return invalid("Conflicting options: Nano CPUs and CPU Quota cannot both be set");
        }
        if nano_cpus.is_some() && cpu_period.is_some() {
            return invalid("Conflicting options: Nano CPUs and CPU Period cannot both be set");
        }
        if cpu_period.is_some_and(|period| !(1000..=1_000_000).contains(&period)) {
            return invalid(
                "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
            );
        }
        if cpu_quota.is_some_and(|quota| quota < 1000) {
            return invalid("CPU cfs quota can not be less than 1ms (i.e. 1000)");
        }
        Ok(Resources {
            memory_bytes: memory,
            memory_reservation_bytes: reservation,
            nano_cpus,
            cpu_shares: positive(host.cpu_shares),
            cpu_quota,
            cpu_period: cpu_period.filter(|_| cpu_quota.is_some()),
        })
    }

    fn network(&mut self, wire: &ContainerCreateBody, host: &HostConfig) -> Network {
        let mode = match host.network_mode.as_deref().unwrap_or("") {
            "" | "default" | "bridge" => NetworkMode::Bridge,
            "host" => NetworkMode::Host,
            "none" => {
                self.warn("NetworkMode none is not supported by podbridge: the pod keeps its cluster network");
                NetworkMode::None
            }
            other => match other.strip_prefix("container:") {
                Some(container) => {
                    self.warn(format!(
                        "NetworkMode {other} is not supported by podbridge: pods cannot share another pod's network namespace"
                    ));
                    NetworkMode::Container(container.to_owned())
                }
                None => NetworkMode::Named(other.to_owned()),
            },
        };
        if wire.network_disabled == Some(true) {
            self.unsupported("NetworkDisabled");
        }
        let mut attachments = Vec::new();
        let endpoints = wire
            .networking_config
            .as_ref()
            .and_then(|config| config.endpoints_config.as_ref());
        for (network, settings) in endpoints.into_iter().flatten() {
            let settings = settings.clone().unwrap_or_default();
            if settings
                .links
                .as_ref()
                .is_some_and(|links| !links.is_empty())
            {
                self.unsupported("EndpointsConfig.Links");
            }
            let network = if network == "default" {
                "bridge".to_owned()
            } else {
                network.clone()
            };
            attachments.push(NetworkAttachment {
                network,
                aliases: settings.aliases.unwrap_or_default(),
            });
        }
        let primary = match &mode {
            NetworkMode::Bridge => Some("bridge"),
            NetworkMode::Named(name) => Some(name.as_str()),
            _ => None,
        };
        let detached = wire
            .podbridge_detached_networks
            .as_deref()
            .unwrap_or_default();
        if let Some(primary) = primary.filter(|primary| !detached.iter().any(|d| d == primary)) {
            if !attachments
                .iter()
                .any(|attachment| attachment.network == primary)
            {
                attachments.insert(
                    0,
                    NetworkAttachment {
                        network: primary.to_owned(),
                        aliases: Vec::new(),
                    },
                );
            }
        }
        Network {
            mode,
            attachments,
            hostname: wire
                .hostname
                .clone()
                .filter(|hostname| !hostname.is_empty()),
        }
    }

    /// Docker merges the request's healthcheck over the image's field by field; `NONE` disables it.
    fn healthcheck(
        &mut self,
        requested: Option<&wire::HealthConfig>,
    ) -> Result<Option<Healthcheck>> {
        let image = self.image.and_then(|image| image.healthcheck.as_ref());
        let requested_test = requested
            .and_then(|health| health.test.clone())
            .filter(|test| !test.is_empty());
        let Some(test) = requested_test.or_else(|| image.and_then(|health| health.test.clone()))
        else {
            return Ok(None);
        };
        let test = match test.first().map(String::as_str) {
            None | Some("NONE") => return Ok(None),
            Some("CMD") if test.len() > 1 => HealthTest::Exec(test[1..].to_vec()),
            Some("CMD-SHELL") if test.len() == 2 => HealthTest::Shell(test[1].clone()),
            _ => {
                return Err(DecodeError::InvalidHealthcheck(format!(
                    "Test must be [\"NONE\"], [\"CMD\", args...] or [\"CMD-SHELL\", command], got {test:?}"
                )))
            }
        };
        let pick =
            |field: &str, requested: Option<i64>, image: Option<i64>| -> Result<Option<i64>> {
                match requested {
                    Some(value) if value < 0 => Err(DecodeError::InvalidHealthcheck(format!(
                        "{field} in Healthcheck cannot be negative"
                    ))),
                    Some(value) if value > 0 => Ok(Some(value)),
                    _ => Ok(image.filter(|value| *value > 0)),
                }
            };
        // Rounded up without overflow near i64::MAX, and within what a probe field holds.
        let seconds = |nanoseconds: i64| {
            (nanoseconds / 1_000_000_000 + i64::from(nanoseconds % 1_000_000_000 > 0))
                .min(i64::from(i32::MAX))
        };
        let interval = pick(
            "Interval",
            requested.and_then(|health| health.interval),
            image.and_then(|health| health.interval),
        )?;
        let timeout = pick(
            "Timeout",
            requested.and_then(|health| health.timeout),
            image.and_then(|health| health.timeout),
        )?;
        let start_period = pick(
            "StartPeriod",
            requested.and_then(|health| health.start_period),
            image.and_then(|health| health.start_period),
        )?;
        let retries = pick(
            "Retries",
            requested.and_then(|health| health.retries),
            image.and_then(|health| health.retries),
        )?;
        for (field, value) in [("Interval", interval), ("Timeout", timeout)] {
            if value.is_some_and(|value| value < 1_000_000) {
                return Err(DecodeError::InvalidHealthcheck(format!(
                    "{field} in Healthcheck cannot be less than 1ms"
                )));
            }
        }
        Ok(Some(Healthcheck {
            test,
            interval_seconds: interval.map_or(DEFAULT_HEALTH_INTERVAL_SECONDS, seconds),
            timeout_seconds: timeout.map_or(DEFAULT_HEALTH_TIMEOUT_SECONDS, seconds),
            start_period_seconds: start_period.map_or(0, seconds),
            retries: i32::try_from(retries.unwrap_or(DEFAULT_HEALTH_RETRIES)).unwrap_or(i32::MAX),
        }))
    }

    fn restart(&mut self, host: &HostConfig) -> Result<RestartPolicy> {
        let policy = host.restart_policy.clone().unwrap_or_default();
        let retries = policy.maximum_retry_count.unwrap_or(0);
        let name = policy.name.unwrap_or_default();
        // Docker's checks and wording (moby `ValidateRestartPolicy`): clients match on them, and
        // an empty name takes any count, as daemons before v25 stored it.
        let restart = match name.as_str() {
            "" => RestartPolicy::No,
            "no" | "always" | "unless-stopped" if retries != 0 => {
                let negative = if retries < 0 { " and cannot be negative" } else { "" };
                return Err(DecodeError::InvalidRestartPolicy(format!(
                    "maximum retry count can only be used with 'on-failure'{negative}"
                )));
            }
            "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" if retries < 0 => {
                return Err(DecodeError::InvalidRestartPolicy(
                    "maximum retry count cannot be negative".to_owned(),
                ))
            }
            "on-failure" => RestartPolicy::OnFailure {
                maximum_retry_count: retries,
            },
            other => {
                return Err(DecodeError::InvalidRestartPolicy(format!(
                    "unknown policy '{other}'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'"
                )))
            }
        };
        if restart != RestartPolicy::No && host.auto_remove == Some(true) {
            return Err(DecodeError::InvalidRestartPolicy(
                "can't create 'AutoRemove' container with restart policy".to_owned(),
            ));
        }
        // `on-failure:N`: the kubelet has no retry limit; the runtime stops the container after
        // N restarts (runtime/events.rs).
        Ok(restart)
    }

    fn security(&mut self, host: &HostConfig) -> Security {
        let capability = |name: &String| {
            let upper = name.trim().to_ascii_uppercase();
            upper
                .strip_prefix("CAP_")
                .map(str::to_owned)
                .unwrap_or(upper)
        };
        let mut security = Security {
            privileged: host.privileged.unwrap_or(false),
            cap_add: host.cap_add.iter().flatten().map(capability).collect(),
            cap_drop: host.cap_drop.iter().flatten().map(capability).collect(),
            read_only_root_filesystem: host.readonly_rootfs.unwrap_or(false),
            ..Security::default()
        };
        for option in host.security_opt.iter().flatten() {
            if option == "no-new-privileges" {
                security.no_new_privileges = true;
                continue;
            }
            // Docker accepts `key=value` and the legacy `key:value`.
            let Some((key, value)) = option.split_once('=').or_else(|| option.split_once(':'))
            else {
                self.warn(format!(
                    "SecurityOpt {option:?} is not supported by podbridge and was ignored"
                ));
                continue;
            };
            match (key, value) {
                ("no-new-privileges", value) => {
                    security.no_new_privileges = value.parse::<bool>().unwrap_or(false)
                }
                ("seccomp", "unconfined") => security.seccomp_unconfined = true,
                ("seccomp", "builtin") => {}
                ("apparmor", "unconfined") => security.apparmor_unconfined = true,
                ("systempaths", "unconfined") => security.unmasked_system_paths = true,
                ("label", value) => {
                    let selinux = security.selinux.get_or_insert_with(SeLinux::default);
                    match value.split_once(':') {
                        _ if value == "disable" => selinux.disabled = true,
                        Some(("user", user)) => selinux.user = Some(user.to_owned()),
                        Some(("role", role)) => selinux.role = Some(role.to_owned()),
                        Some(("type", kind)) => selinux.type_ = Some(kind.to_owned()),
                        Some(("level", level)) => selinux.level = Some(level.to_owned()),
                        _ => self.warn(format!(
                            "SecurityOpt {option:?} is not supported by podbridge and was ignored"
                        )),
                    }
                }
                _ => self.warn(format!(
                    "SecurityOpt {option:?} is not supported by podbridge and was ignored"
                )),
            }
        }
        security
    }

    fn extra_hosts(&mut self, entries: &[String]) -> Result<Vec<ExtraHost>> {
        let mut hosts = Vec::new();
        for entry in entries {
            let Some((hostname, ip)) = entry.split_once([':', '=']) else {
                return Err(DecodeError::InvalidExtraHost {
                    entry: entry.clone(),
                });
            };
            if ip == "host-gateway" {
                self.warn(format!(
                    "ExtraHosts {entry}: host-gateway has no meaning in a Kubernetes pod and was ignored"
                ));
                continue;
            }
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            if hostname.is_empty() || ip.parse::<IpAddr>().is_err() {
                return Err(DecodeError::InvalidExtraHost {
                    entry: entry.clone(),
                });
            }
            hosts.push(ExtraHost {
                hostname: hostname.to_owned(),
                ip: ip.to_owned(),
            });
        }
        Ok(hosts)
    }

    fn groups(&mut self, groups: &[String]) -> Vec<i64> {
        let mut numeric = Vec::new();
        for group in groups {
            match group.parse::<i64>() {
                Ok(id) if id >= 0 => numeric.push(id),
                _ => self.warn(format!(
                    "GroupAdd {group:?} is not numeric: podbridge cannot resolve group names and ignored it"
                )),
            }
        }
        numeric
    }

    fn namespace_mode(&mut self, field: &str, mode: Option<&str>) -> NamespaceMode {
        match mode.unwrap_or("") {
            "" | "private" | "shareable" | "none" => NamespaceMode::Private,
            "host" => NamespaceMode::Host,
            other => match other.strip_prefix("container:") {
                Some(container) => {
                    self.warn(format!(
                        "{field} {other} is not supported by podbridge: pods cannot join another pod's namespaces"
                    ));
                    NamespaceMode::Container(container.to_owned())
                }
                None => {
                    self.warn(format!(
                        "{field} {other:?} is not supported by podbridge and was ignored"
                    ));
                    NamespaceMode::Private
                }
            },
        }
    }

    /// Settings with no Kubernetes equivalent: each one set gets a warning, none is dropped silently.
    fn unsupported_fields(&mut self, wire: &ContainerCreateBody, host: &HostConfig) {
        let non_empty =
            |value: &Option<String>| value.as_deref().is_some_and(|value| !value.is_empty());
        let some_list = |value: &Option<Vec<serde_json::Value>>| {
            value.as_ref().is_some_and(|list| !list.is_empty())
        };
        let some_strings =
            |value: &Option<Vec<String>>| value.as_ref().is_some_and(|list| !list.is_empty());
        let positive = |value: Option<i64>| value.is_some_and(|value| value > 0);
        let checks = [
            ("Domainname", non_empty(&wire.domainname)),
            ("MacAddress", non_empty(&wire.mac_address)),
            ("HostConfig.Devices", some_list(&host.devices)),
            (
                "HostConfig.DeviceRequests",
                some_list(&host.device_requests),
            ),
            ("HostConfig.Ulimits", some_list(&host.ulimits)),
            ("HostConfig.VolumesFrom", some_strings(&host.volumes_from)),
            ("HostConfig.CgroupParent", non_empty(&host.cgroup_parent)),
            ("HostConfig.CpusetCpus", non_empty(&host.cpuset_cpus)),
            ("HostConfig.CpusetMems", non_empty(&host.cpuset_mems)),
            ("HostConfig.BlkioWeight", positive(host.blkio_weight)),
            (
                "HostConfig.CpuRealtimePeriod",
                positive(host.cpu_realtime_period),
            ),
            (
                "HostConfig.CpuRealtimeRuntime",
                positive(host.cpu_realtime_runtime),
            ),
            ("HostConfig.PidsLimit", positive(host.pids_limit)),
            (
                "HostConfig.OomKillDisable",
                host.oom_kill_disable == Some(true),
            ),
            (
                "HostConfig.OomScoreAdj",
                host.oom_score_adj.is_some_and(|value| value != 0),
            ),
            (
                "HostConfig.MemorySwap",
                positive(host.memory_swap) && host.memory_swap != host.memory,
            ),
            (
                "HostConfig.MemorySwappiness",
                host.memory_swappiness.is_some_and(|value| value >= 0),
            ),
            (
                "HostConfig.StorageOpt",
                host.storage_opt.as_ref().is_some_and(|map| !map.is_empty()),
            ),
            (
                "HostConfig.Annotations",
                host.annotations.as_ref().is_some_and(|map| !map.is_empty()),
            ),
            ("HostConfig.UsernsMode", non_empty(&host.userns_mode)),
            ("HostConfig.UTSMode", non_empty(&host.uts_mode)),
            (
                "HostConfig.Runtime",
                host.runtime
                    .as_deref()
                    .is_some_and(|runtime| !runtime.is_empty() && runtime != "runc"),
            ),
            (
                "HostConfig.Isolation",
                host.isolation
                    .as_deref()
                    .is_some_and(|isolation| !isolation.is_empty() && isolation != "default"),
            ),
            (
                "HostConfig.VolumeDriver",
                host.volume_driver
                    .as_deref()
                    .is_some_and(|driver| !driver.is_empty() && driver != "local"),
            ),
            (
                "HostConfig.LogConfig",
                host.log_config
                    .as_ref()
                    .and_then(|config| config.kind.as_deref())
                    .is_some_and(|kind| !matches!(kind, "" | "json-file" | "local")),
            ),
            ("HostConfig.MaskedPaths", some_strings(&host.masked_paths)),
            (
                "HostConfig.ReadonlyPaths",
                some_strings(&host.readonly_paths),
            ),
        ];
        for (field, set) in checks {
            if set {
                self.unsupported(field);
            }
        }
    }
}

/// The log drivers a Linux Docker daemon registers (podbridge reports `Ostype: linux`, so the
/// Windows-only `etwlogs` is unknown, as there). Any other `LogConfig.Type` is refused at create
/// as Docker refuses it; the known ones other than `json-file`/`local` only warn (the pod's log
/// is what `logs` reads).
const LOG_DRIVERS: &[&str] = &[
    "",
    "json-file",
    "local",
    "none",
    "syslog",
    "journald",
    "gelf",
    "fluentd",
    "awslogs",
    "splunk",
    "gcplogs",
    "logentries",
];

fn log_driver(host: &HostConfig) -> Result<()> {
    match host
        .log_config
        .as_ref()
        .and_then(|config| config.kind.as_deref())
    {
        Some(name) if !LOG_DRIVERS.contains(&name) => Err(DecodeError::UnknownLogDriver {
            name: name.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Docker's container-name rule: `/?[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn decode_name(name: Option<&str>) -> Result<Option<String>> {
    let Some(raw) = name.filter(|name| !name.is_empty()) else {
        return Ok(None);
    };
    let bare = raw.strip_prefix('/').unwrap_or(raw);
    let mut bytes = bare.bytes();
    let valid = bare.len() >= 2
        && bytes
            .next()
            .is_some_and(|byte| byte.is_ascii_alphanumeric())
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || b"_.-".contains(&byte));
    if valid {
        Ok(Some(bare.to_owned()))
    } else {
        Err(DecodeError::InvalidName {
            name: raw.to_owned(),
        })
    }
}

fn is_sigterm(signal: &str) -> bool {
    matches!(
        signal.to_ascii_uppercase().as_str(),
        "SIGTERM" | "TERM" | "15"
    )
}

/// `80`, `80/tcp`, `53/udp`, `8000-8010/tcp` → one key per port.
fn parse_port_key(spec: &str) -> Result<Vec<(u16, Protocol)>> {
    let invalid = |reason: &str| DecodeError::InvalidPortSpec {
        spec: spec.to_owned(),
        reason: reason.to_owned(),
    };
    let (ports, protocol) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let protocol = match protocol.to_ascii_lowercase().as_str() {
        "tcp" | "" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        _ => return Err(invalid("protocol must be tcp, udp or sctp")),
    };
    let (start, end) = parse_port_range(ports).ok_or_else(|| invalid("invalid port number"))?;
    if u32::from(end - start) >= MAXIMUM_PORT_RANGE {
        return Err(invalid("port range too large"));
    }
    Ok((start..=end).map(|port| (port, protocol)).collect())
}

/// `N` or `N-M`, 1..=65535, N ≤ M.
fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let parse = |part: &str| part.parse::<u16>().ok().filter(|port| *port > 0);
    match text.split_once('-') {
        Some((start, end)) => {
            let (start, end) = (parse(start)?, parse(end)?);
            (start <= end).then_some((start, end))
        }
        None => parse(text).map(|port| (port, port)),
    }
}

/// A mount target must be absolute and not `/`; trailing slashes are dropped so duplicates match.
fn mount_target(spec: &str, target: &str) -> Result<String> {
    let invalid = |reason: &str| DecodeError::InvalidMount {
        spec: spec.to_owned(),
        reason: reason.to_owned(),
    };
    if !target.starts_with('/') {
        return Err(invalid("mount path must be absolute"));
    }
    let trimmed = target.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(invalid("invalid specification: destination can't be '/'"));
    }
    Ok(trimmed.to_owned())
}

/// One JSON pointer token (RFC 6901): `~` and `/` escaped.
fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Where a source path points at: the Docker socket is special, every other absolute path is a bind.
fn host_path_source(path: &str) -> MountSource {
    if model::DOCKER_SOCKET_PATHS.contains(&path) {
        MountSource::DockerSocket {
            path: path.to_owned(),
        }
    } else {
        MountSource::Bind {
            path: path.to_owned(),
        }
    }
}

/// Docker's volume-name rule, the same as the container-name rule.
fn valid_volume_name(name: &str) -> bool {
    decode_name(Some(name)).is_ok() && !name.starts_with('/')
}

/// `HostConfig.Binds` entry: `src:dst[:options]`, or `dst` alone for an anonymous volume.
///
/// `z`/`Z` (SELinux relabelling) and `consistent`/`cached`/`delegated` (macOS file sharing) have
/// no effect on copied content and are accepted without a warning.
fn parse_bind(spec: &str, warnings: &mut Vec<String>) -> Result<Mount> {
    let invalid = |reason: String| DecodeError::InvalidMount {
        spec: spec.to_owned(),
        reason,
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, options) = match parts.as_slice() {
        [target] => (None, *target, ""),
        [source, target] => (Some(*source), *target, ""),
        [source, target, options] => (Some(*source), *target, *options),
        _ => return Err(invalid("too many colons".to_owned())),
    };
    let target = mount_target(spec, target)?;
    let mut read_only = false;
    for option in options.split(',').filter(|option| !option.is_empty()) {
        match option {
            "ro" => read_only = true,
            "rw" | "z" | "Z" | "nocopy" | "consistent" | "cached" | "delegated" | "private"
            | "rprivate" => {}
            "shared" | "rshared" | "slave" | "rslave" => warnings.push(format!(
                "bind propagation {option} in {spec:?} is not supported by podbridge: content is copied"
            )),
            other => return Err(invalid(format!("invalid mode: {other}"))),
        }
    }
    let source = match source {
        None => MountSource::Anonymous,
        Some(path) if path.starts_with('/') => host_path_source(path),
        Some(name) if valid_volume_name(name) => MountSource::Volume {
            name: name.to_owned(),
        },
        Some(name) => {
            return Err(invalid(format!(
                "{name:?} includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
            )))
        }
    };
    Ok(Mount {
        target,
        source,
        read_only,
        // Set by the caller, which knows the entry's index.
        field: String::new(),
    })
}

/// `HostConfig.Mounts` entry; types podbridge cannot provide produce a warning and no mount.
fn convert_mount(mount: &wire::Mount, warnings: &mut Vec<String>) -> Result<Option<Mount>> {
    let kind = mount.kind.as_deref().unwrap_or("");
    let spec = format!(
        "type={kind},source={},target={}",
        mount.source.as_deref().unwrap_or(""),
        mount.target.as_deref().unwrap_or("")
    );
    let invalid = |reason: &str| DecodeError::InvalidMount {
        spec: spec.clone(),
        reason: reason.to_owned(),
    };
    let target = match mount.target.as_deref() {
        None | Some("") => return Err(invalid("Target must not be empty")),
        Some(target) => mount_target(&spec, target)?,
    };
    let source = mount.source.as_deref().filter(|source| !source.is_empty());
    let source = match kind {
        "bind" => match source {
            Some(path) if path.starts_with('/') => host_path_source(path),
            Some(_) => return Err(invalid("bind source path must be absolute")),
            None => return Err(invalid("bind source path must not be empty")),
        },
        "volume" => match source {
            None => MountSource::Anonymous,
            Some(name) if valid_volume_name(name) => MountSource::Volume {
                name: name.to_owned(),
            },
            Some(_) => return Err(invalid("invalid volume name")),
        },
        "tmpfs" => {
            if source.is_some() {
                return Err(invalid("Source must not be specified for tmpfs"));
            }
            let size = mount
                .tmpfs_options
                .as_ref()
                .and_then(|options| options.size_bytes)
                .filter(|size| *size > 0);
            MountSource::Tmpfs { size_bytes: size }
        }
        "" => return Err(invalid("Type must be set")),
        other => {
            warnings.push(format!(
                "mount type {other} at {target} is not supported by podbridge and was ignored"
            ));
            return Ok(None);
        }
    };
    Ok(Some(Mount {
        target,
        source,
        read_only: mount.read_only.unwrap_or(false),
        field: String::new(),
    }))
}

/// `HostConfig.Tmpfs` entry: target → `rw,noexec,size=64m`. Only `ro` and `size` change the pod:
/// an emptyDir in memory is already `nosuid,nodev`, and `mode`/`noexec` have no pod equivalent
/// but do not change what a well-behaved program sees.
fn parse_tmpfs(target: &str, options: &str) -> Result<Mount> {
    let spec = format!("{target}:{options}");
    let target = mount_target(&spec, target)?;
    let mut read_only = false;
    let mut size_bytes = None;
    for option in options.split(',').map(str::trim) {
        if option == "ro" {
            read_only = true;
        } else if let Some(size) = option.strip_prefix("size=") {
            size_bytes = Some(parse_size(size).ok_or_else(|| DecodeError::InvalidMount {
                spec: spec.clone(),
                reason: format!("invalid size {size:?}"),
            })?);
        }
    }
    Ok(Mount {
        target,
        source: MountSource::Tmpfs { size_bytes },
        read_only,
        field: String::new(),
    })
}

/// Docker's RAM size syntax: bytes, or a number with `b`, `k`, `m`, `g`, `t` (binary units).
fn parse_size(text: &str) -> Option<i64> {
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower
        .strip_suffix('b')
        .filter(|rest| !rest.is_empty())
        .unwrap_or(&lower);
    let (number, multiplier) = match lower.chars().last()? {
        'k' => (&lower[..lower.len() - 1], 1i64 << 10),
        'm' => (&lower[..lower.len() - 1], 1 << 20),
        'g' => (&lower[..lower.len() - 1], 1 << 30),
        't' => (&lower[..lower.len() - 1], 1 << 40),
        _ => (lower, 1),
    };
    let bytes = number.parse::<f64>().ok()? * multiplier as f64;
    // `inf`, `nan` and sizes beyond i64 are mistakes, not requests for "as much as possible".
    (bytes.is_finite() && (0.0..i64::MAX as f64).contains(&bytes)).then_some(bytes as i64)
}

/// Decodes an `ExecConfig` (`POST /containers/{id}/exec`) as dockerd reads it: `Cmd` and `Env`
/// as lists (a lone string is one entry), the attach flags defaulting as the CLI leaves them.
pub fn decode_exec(config: &serde_json::Value) -> crate::model::ExecRequest {
    let text = |key: &str| config[key].as_str().unwrap_or_default().to_owned();
    let flag = |key: &str, default: bool| config[key].as_bool().unwrap_or(default);
    crate::model::ExecRequest {
        cmd: string_list(&config["Cmd"]),
        env: string_list(&config["Env"]),
        working_dir: text("WorkingDir"),
        user: text("User"),
        tty: flag("Tty", false),
        attach_stdin: flag("AttachStdin", false),
        attach_stdout: flag("AttachStdout", true),
        attach_stderr: flag("AttachStderr", true),
        console_size: console_size(config),
    }
}

/// Decodes an `ExecStartConfig` (`POST /exec/{id}/start`); a body that is not JSON reads as
/// empty, as the CLI sends none at times.
pub fn decode_exec_start(body: &[u8]) -> crate::model::ExecStart {
    let config: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    crate::model::ExecStart {
        detach: config["Detach"].as_bool().unwrap_or(false),
        tty: config["Tty"].as_bool(),
        console_size: console_size(&config),
    }
}

fn string_list(value: &serde_json::Value) -> Vec<String> {
    match value {
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(|item| item.as_str().map(String::from))
            .collect(),
        serde_json::Value::String(item) => vec![item.clone()],
        _ => Vec::new(),
    }
}

/// Docker's `ConsoleSize` (`[height, width]`, exec create and start since API 1.42); a 0x0 size
/// means unknown.
fn console_size(config: &serde_json::Value) -> Option<crate::model::ConsoleSize> {
    let size = config["ConsoleSize"].as_array()?;
    let dimension = |i: usize| size.get(i)?.as_u64()?.try_into().ok();
    let (height, width): (u16, u16) = (dimension(0)?, dimension(1)?);
    (width > 0 && height > 0).then_some(crate::model::ConsoleSize { width, height })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthchecks_of_none_are_off() {
        let has_healthcheck = |request: serde_json::Value| {
            let workload = decode_create(request.to_string().as_bytes(), None, None)
                .unwrap()
                .workload;
            crate::model::RuntimeSettings::of(&workload).healthcheck
        };
        assert!(has_healthcheck(
            serde_json::json!({"Image": "a", "Healthcheck": {"Test": ["CMD", "true"]}})
        ));
        assert!(!has_healthcheck(
            serde_json::json!({"Image": "a", "Healthcheck": {"Test": ["NONE"]}})
        ));
        assert!(!has_healthcheck(serde_json::json!({"Image": "a"})));
    }

    #[test]
    fn exec_configs_decode_as_dockerd_reads_them() {
        let request = decode_exec(&serde_json::json!({"Cmd": "ls", "Env": ["A=1"],
            "User": "postgres", "AttachStdin": true, "ConsoleSize": [24, 80]}));
        assert_eq!(request.cmd, ["ls"]);
        assert_eq!(request.env, ["A=1"]);
        assert_eq!(request.user, "postgres");
        assert!(request.attach_stdin && request.attach_stdout && !request.tty);
        assert_eq!(
            request.console_size,
            Some(crate::model::ConsoleSize {
                width: 80,
                height: 24
            })
        );
        let size = |v| console_size(&serde_json::json!({ "ConsoleSize": v }));
        assert_eq!(size(serde_json::json!([0, 0])), None);
        assert_eq!(size(serde_json::json!([70000, 80])), None);
        let start = decode_exec_start(br#"{"Detach":true}"#);
        assert!(start.detach && start.tty.is_none());
        assert_eq!(
            decode_exec_start(b"not json"),
            crate::model::ExecStart::default()
        );
    }

    const BUSYBOX: &str = include_str!("../../tests/fixtures/create/docker-run-busybox.json");
    const REDIS: &str = include_str!("../../tests/fixtures/create/testcontainers-redis.json");
    const COMPOSE: &str = include_str!("../../tests/fixtures/create/compose-web.json");
    const PRIVILEGED: &str = include_str!("../../tests/fixtures/create/privileged.json");

    fn decode(body: &str) -> Decoded {
        decode_create(body.as_bytes(), None, None).unwrap_or_else(|error| panic!("{error}"))
    }

    fn decode_error(body: &str) -> DecodeError {
        decode_create(body.as_bytes(), None, None).expect_err("should fail")
    }

    #[test]
    fn docker_run_body() {
        let decoded = decode_create(BUSYBOX.as_bytes(), Some("/hello"), None).unwrap();
        let workload = decoded.workload;
        assert!(decoded.warnings.is_empty(), "{:?}", decoded.warnings);
        assert_eq!(workload.name.as_deref(), Some("hello"));
        assert_eq!(
            workload.image.normalised(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(workload.entrypoint, None);
        assert_eq!(workload.cmd.as_ref().unwrap()[0], "sh");
        assert_eq!(workload.env[0].value.as_deref(), Some("hello"));
        assert!(workload.auto_remove);
        assert!(workload.stdio.attach_stdout && !workload.stdio.tty);
        assert_eq!(workload.restart, RestartPolicy::No);
        assert_eq!(workload.network.mode, NetworkMode::Bridge);
        assert_eq!(workload.network.attachments[0].network, "bridge");
        assert_eq!(workload.resources, Resources::default());
        assert!(workload
            .create_request
            .to_string()
            .starts_with("{\"Hostname\":\"\""));
    }

    #[test]
    fn testcontainers_body() {
        let decoded = decode(REDIS);
        let workload = decoded.workload;
        assert_eq!(workload.image.normalised(), "docker.io/library/redis:7");
        assert_eq!(workload.ports.len(), 1);
        assert_eq!(workload.ports[0].port, 6379);
        assert_eq!(
            workload.ports[0].bindings,
            vec![HostBinding {
                host_ip: None,
                host_port: None
            }]
        );
        assert_eq!(workload.labels["org.testcontainers.lang"], "python");
        assert!(decoded.warnings.is_empty(), "{:?}", decoded.warnings);
    }

    #[test]
    fn compose_body() {
        let decoded = decode_create(COMPOSE.as_bytes(), Some("demo-web-1"), None).unwrap();
        let workload = decoded.workload;
        assert!(decoded.warnings.is_empty(), "{:?}", decoded.warnings);
        assert_eq!(
            workload.network.mode,
            NetworkMode::Named("demo_backend".into())
        );
        assert_eq!(
            workload.network.aliases(),
            ["demo-web-1", "web", "frontend"]
        );
        assert_eq!(workload.ports[0].bindings[0].host_port, Some(8080));
        assert_eq!(workload.restart, RestartPolicy::UnlessStopped);
        assert!(workload.init);
        let health = workload.healthcheck.unwrap();
        assert_eq!(
            health.test,
            HealthTest::Shell("curl -fsS http://localhost/ || exit 1".into())
        );
        assert_eq!(
            (
                health.interval_seconds,
                health.timeout_seconds,
                health.start_period_seconds,
                health.retries
            ),
            (5, 2, 10, 5)
        );
        assert_eq!(workload.resources.memory_bytes, Some(268_435_456));
        assert_eq!(workload.resources.cpu_limit_millicores(), Some(500));
        assert_eq!(
            workload.mounts,
            vec![
                Mount {
                    target: "/usr/share/nginx/html".into(),
                    source: MountSource::Bind {
                        path: "/home/ci/demo/site".into()
                    },
                    read_only: true,
                    field: "/HostConfig/Binds/0".into(),
                },
                Mount {
                    target: "/var/cache/nginx".into(),
                    source: MountSource::Volume {
                        name: "demo_cache".into()
                    },
                    read_only: false,
                    field: "/HostConfig/Binds/1".into(),
                },
                Mount {
                    target: "/run".into(),
                    source: MountSource::Tmpfs {
                        size_bytes: Some(64 << 20)
                    },
                    read_only: false,
                    field: "/HostConfig/Tmpfs/~1run".into(),
                },
            ]
        );
        assert_eq!(workload.extra_hosts[0].ip, "10.0.0.5");
    }

    #[test]
    fn a_detached_network_mode_network_is_not_attached() {
        let body = r#"{"Image":"a","HostConfig":{"NetworkMode":"front"},
            "NetworkingConfig":{"EndpointsConfig":{"back":{"Aliases":["db"]}}},
            "PodbridgeDetachedNetworks":["front","front-id"]}"#;
        let decoded = decode_create(body.as_bytes(), Some("svc"), None).unwrap();
        let networks: Vec<&str> = decoded
            .workload
            .network
            .attachments
            .iter()
            .map(|attachment| attachment.network.as_str())
            .collect();
        assert_eq!(networks, ["back"]);
        assert!(decoded.warnings.is_empty(), "{:?}", decoded.warnings);
    }

    #[test]
    fn privileged_body_is_carried_with_warnings() {
        let decoded = decode(PRIVILEGED);
        let workload = &decoded.workload;
        assert!(workload.security.privileged);
        assert_eq!(workload.security.cap_add, ["SYS_ADMIN", "NET_ADMIN"]);
        assert!(workload.security.seccomp_unconfined && workload.security.apparmor_unconfined);
        assert!(workload.security.selinux.as_ref().unwrap().disabled);
        assert!(workload.security.unmasked_system_paths && !workload.security.no_new_privileges);
        assert_eq!(workload.network.mode, NetworkMode::Host);
        assert_eq!(
            (workload.pid_mode.clone(), workload.ipc_mode.clone()),
            (NamespaceMode::Host, NamespaceMode::Host)
        );
        assert_eq!(
            workload.mounts[0].source,
            MountSource::DockerSocket {
                path: "/var/run/docker.sock".into()
            }
        );
        assert_eq!(
            workload.mounts[3].source,
            MountSource::Tmpfs {
                size_bytes: Some(104_857_600)
            }
        );
        assert_eq!(
            workload.user.as_ref().map(|user| (user.uid, user.gid)),
            Some((Some(1000), Some(1000)))
        );
        assert_eq!(workload.supplemental_groups, [2375]);
        assert_eq!(workload.resources.cpu_limit_millicores(), Some(1500));
        assert_eq!(workload.resources.cpu_request_millicores(), Some(500));
        assert_eq!(
            workload.dns.options[0],
            ("ndots".to_owned(), Some("2".to_owned()))
        );
        let warnings = decoded.warnings.join("\n");
        // on-failure:3 is honoured (the runtime stops after 3 restarts): nothing to warn about
        assert!(!warnings.contains("on-failure"), "{warnings}");
        for expected in [
            "HostConfig.Devices",
            "HostConfig.Ulimits",
            "StopSignal SIGINT",
            "GroupAdd \"docker\"",
            "Env HTTP_PROXY",
        ] {
            assert!(
                warnings.contains(expected),
                "missing {expected} in {warnings}"
            );
        }
    }

    #[test]
    fn lone_surrogate_in_an_unknown_field_is_refused() {
        // The typed decoder skips unknown fields unread; the rules' view would be null.
        let error = decode_error(r#"{"Image":"busybox","X":"\ud800"}"#);
        assert!(
            matches!(error, DecodeError::ParseJsonFailed { .. }),
            "{error}"
        );
        let error = decode_create(b"{\"Image\":\"busybox\",\"X\":\"\xff\"}", None, None)
            .expect_err("invalid UTF-8");
        assert_eq!(error.status(), 400);
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        let error = decode_error("{\n  \"Image\": \"alpine\",\n  oops\n}");
        let message = error.to_string();
        assert!(message.starts_with("invalid JSON:"), "{message}");
        assert!(message.contains("line 3 column 3"), "{message}");
        assert_eq!(error.status(), 400);
        let typed =
            decode_error(r#"{"Image":"alpine","HostConfig":{"Memory":"lots"}}"#).to_string();
        assert!(typed.contains("HostConfig.Memory"), "{typed}");
        assert!(matches!(decode_error("  "), DecodeError::EmptyBody));
    }

    #[test]
    fn missing_image_is_an_error() {
        assert_eq!(
            decode_error(r#"{"Cmd":["true"]}"#).to_string(),
            "config.Image is required"
        );
        assert_eq!(decode_error(r#"{"Image":""}"#), DecodeError::ImageMissing);
        let uppercase = decode_error(r#"{"Image":"Alpine"}"#).to_string();
        assert!(
            uppercase.starts_with("invalid reference format"),
            "{uppercase}"
        );
    }

    #[test]
    fn names_follow_docker_rule() {
        for good in ["ab", "/web", "My_Container.1", "0abc"] {
            assert!(decode_name(Some(good)).is_ok(), "{good}");
        }
        for bad in ["a", "_x", "with space", "a/b", "-a"] {
            let error = decode_create(br#"{"Image":"alpine"}"#, Some(bad), None).unwrap_err();
            assert!(
                error.to_string().starts_with("Invalid container name"),
                "{error}"
            );
        }
        assert_eq!(decode_name(Some("")).unwrap(), None);
    }

    #[test]
    fn bind_variants() {
        let mut warnings = Vec::new();
        let bind = |spec: &str, warnings: &mut Vec<String>| parse_bind(spec, warnings);
        assert!(bind("/src:/dst:ro,Z", &mut warnings).unwrap().read_only);
        assert_eq!(
            bind("data:/var/lib/data", &mut warnings).unwrap().source,
            MountSource::Volume {
                name: "data".into()
            }
        );
        assert_eq!(
            bind("/data", &mut warnings).unwrap().source,
            MountSource::Anonymous
        );
        assert_eq!(
            bind("/run/docker.sock:/var/run/docker.sock:rw", &mut warnings)
                .unwrap()
                .source,
            MountSource::DockerSocket {
                path: "/run/docker.sock".into()
            }
        );
        assert_eq!(
            bind("/etc/app.conf:/etc/app.conf", &mut warnings)
                .unwrap()
                .source,
            MountSource::Bind {
                path: "/etc/app.conf".into()
            }
        );
        assert_eq!(bind("/a:/b/", &mut warnings).unwrap().target, "/b");
        assert!(warnings.is_empty());
        bind("/a:/b:rshared", &mut warnings).unwrap();
        assert_eq!(warnings.len(), 1);
        for bad in [
            "./rel:/dst",
            "/a:relative",
            "/a:/b:bogus",
            "/a:/",
            "a:b:c:d",
        ] {
            assert!(
                matches!(
                    bind(bad, &mut warnings),
                    Err(DecodeError::InvalidMount { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn mounts_and_tmpfs_variants() {
        let decoded = decode(
            r#"{"Image":"alpine","Volumes":{"/anon":{},"/data":{}},"HostConfig":{
                "Mounts":[{"Type":"bind","Source":"/host","Target":"/data","ReadOnly":true},
                          {"Type":"volume","Target":"/v"},
                          {"Type":"npipe","Source":"x","Target":"/p"}],
                "Tmpfs":{"/tmp":"size=1g,mode=1777","/cache":""}}}"#,
        );
        let sources: Vec<(&str, &MountSource)> = decoded
            .workload
            .mounts
            .iter()
            .map(|mount| (mount.target.as_str(), &mount.source))
            .collect();
        assert_eq!(
            sources,
            [
                (
                    "/data",
                    &MountSource::Bind {
                        path: "/host".into()
                    }
                ),
                ("/v", &MountSource::Anonymous),
                ("/cache", &MountSource::Tmpfs { size_bytes: None }),
                (
                    "/tmp",
                    &MountSource::Tmpfs {
                        size_bytes: Some(1 << 30)
                    }
                ),
                ("/anon", &MountSource::Anonymous),
            ]
        );
        assert!(
            decoded.warnings[0].contains("npipe"),
            "{:?}",
            decoded.warnings
        );
        let duplicate =
            decode_error(r#"{"Image":"a","HostConfig":{"Binds":["/x:/d"],"Tmpfs":{"/d":""}}}"#);
        assert_eq!(
            duplicate,
            DecodeError::DuplicateMountPoint {
                target: "/d".into()
            }
        );
    }

    #[test]
    fn invalid_ports_resources_and_policies() {
        for body in [
            r#"{"Image":"a","ExposedPorts":{"abc/tcp":{}}}"#,
            r#"{"Image":"a","ExposedPorts":{"80/icmp":{}}}"#,
            r#"{"Image":"a","HostConfig":{"PortBindings":{"80/tcp":[{"HostPort":"x"}]}}}"#,
        ] {
            assert!(
                matches!(decode_error(body), DecodeError::InvalidPortSpec { .. }),
                "{body}"
            );
        }
        for body in [
            r#"{"Image":"a","HostConfig":{"Memory":1024}}"#,
            r#"{"Image":"a","HostConfig":{"Memory":-5}}"#,
            r#"{"Image":"a","HostConfig":{"NanoCpus":1000000000,"CpuQuota":50000}}"#,
            r#"{"Image":"a","HostConfig":{"Memory":10000000,"MemoryReservation":20000000}}"#,
        ] {
            assert!(
                matches!(decode_error(body), DecodeError::InvalidResources(_)),
                "{body}"
            );
        }
        assert!(matches!(
            decode_error(
                r#"{"Image":"a","HostConfig":{"AutoRemove":true,"RestartPolicy":{"Name":"always"}}}"#
            ),
            DecodeError::InvalidRestartPolicy(_)
        ));
        for (body, message) in [
            (
                r#"{"Image":"a","HostConfig":{"RestartPolicy":{"Name":"sometimes"}}}"#,
                "invalid restart policy: unknown policy 'sometimes'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'",
            ),
            (
                r#"{"Image":"a","HostConfig":{"RestartPolicy":{"Name":"always","MaximumRetryCount":3}}}"#,
                "invalid restart policy: maximum retry count can only be used with 'on-failure'",
            ),
            (
                r#"{"Image":"a","HostConfig":{"RestartPolicy":{"Name":"no","MaximumRetryCount":-1}}}"#,
                "invalid restart policy: maximum retry count can only be used with 'on-failure' and cannot be negative",
            ),
            (
                r#"{"Image":"a","HostConfig":{"RestartPolicy":{"Name":"on-failure","MaximumRetryCount":-1}}}"#,
                "invalid restart policy: maximum retry count cannot be negative",
            ),
            (
                r#"{"Image":"a","HostConfig":{"LogConfig":{"Type":"nonsense"}}}"#,
                "logger: no log driver named 'nonsense' is registered",
            ),
            (
                r#"{"Image":"a","HostConfig":{"LogConfig":{"Type":"etwlogs"}}}"#,
                "logger: no log driver named 'etwlogs' is registered",
            ),
        ] {
            let error = decode_error(body);
            assert_eq!(error.to_string(), message, "{body}");
            assert_eq!(error.status(), 400);
        }
        // Pre-v25 daemons stored an empty name with a count; Docker still accepts it.
        decode(
            r#"{"Image":"a","HostConfig":{"RestartPolicy":{"Name":"","MaximumRetryCount":2},"LogConfig":{"Type":"gelf"}}}"#,
        );
        assert!(matches!(
            decode_error(r#"{"Image":"a","Healthcheck":{"Test":["BOGUS"]}}"#),
            DecodeError::InvalidHealthcheck(_)
        ));
    }

    #[test]
    fn ports_merge_exposed_bound_and_image_ports() {
        let image: ImageConfig =
            serde_json::from_str(r#"{"ExposedPorts":{"9000/tcp":{}}}"#).unwrap();
        let body = r#"{"Image":"a","ExposedPorts":{"53/udp":{},"80":{}},
            "HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"127.0.0.1","HostPort":"8080"},{"HostIp":"::1","HostPort":"8080"}],"443/tcp":null}}}"#;
        let workload = decode_create(body.as_bytes(), None, Some(&image))
            .unwrap()
            .workload;
        let keys: Vec<(u16, Protocol, usize)> = workload
            .ports
            .iter()
            .map(|port| (port.port, port.protocol, port.bindings.len()))
            .collect();
        assert_eq!(
            keys,
            [
                (53, Protocol::Udp, 0),
                (80, Protocol::Tcp, 2),
                (443, Protocol::Tcp, 0),
                (9000, Protocol::Tcp, 0)
            ]
        );
        assert_eq!(
            workload.ports[1].bindings[0].host_ip.as_deref(),
            Some("127.0.0.1")
        );
    }

    #[test]
    fn publish_all_binds_every_exposed_port_including_the_images() {
        let image: ImageConfig =
            serde_json::from_str(r#"{"ExposedPorts":{"6379/tcp":{}}}"#).unwrap();
        let body = r#"{"Image":"a","HostConfig":{"PublishAllPorts":true,"PortBindings":{"80/tcp":[{"HostPort":"8080"}]}}}"#;
        let workload = decode_create(body.as_bytes(), None, Some(&image))
            .unwrap()
            .workload;
        let bindings: Vec<(u16, Option<u16>)> = workload
            .ports
            .iter()
            .flat_map(|port| port.bindings.iter().map(|b| (port.port, b.host_port)))
            .collect();
        assert_eq!(bindings, [(80, Some(8080)), (6379, None)]);
    }

    #[test]
    fn huge_numbers_in_a_create_do_not_overflow() {
        let body = format!(
            r#"{{"Image":"busybox","Healthcheck":{{"Test":["CMD","true"],"Interval":{max},"Timeout":{max},"StartPeriod":{max}}},"HostConfig":{{"CpuQuota":{max},"CpuPeriod":100000,"CpuShares":{max},"Memory":{max}}},"StopTimeout":{max}}}"#,
            max = i64::MAX
        );
        let workload = decode_create(body.as_bytes(), None, None).unwrap().workload;
        let health = workload.healthcheck.unwrap();
        assert_eq!(health.interval_seconds, i64::from(i32::MAX));
        assert_eq!(health.start_period_seconds, i64::from(i32::MAX));
        assert!(workload.resources.cpu_limit_millicores().is_some());
    }

    #[test]
    fn healthcheck_merges_with_image_and_none_disables() {
        let image: ImageConfig = serde_json::from_str(
            r#"{"Healthcheck":{"Test":["CMD","redis-cli","ping"],"Interval":2000000000,"Retries":7}}"#,
        )
        .unwrap();
        let inherited = decode_create(
            br#"{"Image":"redis","Healthcheck":{"Interval":1500000000}}"#,
            None,
            Some(&image),
        )
        .unwrap()
        .workload
        .healthcheck
        .unwrap();
        assert_eq!(
            inherited.test,
            HealthTest::Exec(vec!["redis-cli".into(), "ping".into()])
        );
        assert_eq!(
            (
                inherited.interval_seconds,
                inherited.timeout_seconds,
                inherited.retries
            ),
            (2, 30, 7)
        );
        let disabled = decode_create(
            br#"{"Image":"redis","Healthcheck":{"Test":["NONE"]}}"#,
            None,
            Some(&image),
        )
        .unwrap();
        assert_eq!(disabled.workload.healthcheck, None);
    }

    #[test]
    fn user_names_warn_unless_the_image_has_the_same_user() {
        let image: ImageConfig = serde_json::from_str(r#"{"User":"redis"}"#).unwrap();
        let same =
            decode_create(br#"{"Image":"redis","User":"redis"}"#, None, Some(&image)).unwrap();
        assert!(same.warnings.is_empty());
        let other =
            decode_create(br#"{"Image":"redis","User":"nobody"}"#, None, Some(&image)).unwrap();
        assert_eq!(other.warnings.len(), 1);
        let inherited = decode_create(br#"{"Image":"redis"}"#, None, Some(&image)).unwrap();
        assert_eq!(inherited.workload.user.unwrap().raw, "redis");
        let root = decode(r#"{"Image":"a","User":"root"}"#)
            .workload
            .user
            .unwrap();
        assert_eq!((root.uid, root.gid), (Some(0), None));
    }

    #[test]
    fn unsupported_settings_warn() {
        let decoded = decode(
            r#"{"Image":"a","MacAddress":"02:42:ac:11:00:02","HostConfig":{"NetworkMode":"container:db",
                "SecurityOpt":["seccomp=/profile.json","mask=/x"],"ExtraHosts":["gw:host-gateway"],"PidMode":"container:db",
                "LogConfig":{"Type":"syslog"},"PidsLimit":100}}"#,
        );
        let warnings = decoded.warnings.join("\n");
        // on-failure:3 is honoured (the runtime stops after 3 restarts): nothing to warn about
        assert!(!warnings.contains("on-failure"), "{warnings}");
        for expected in [
            "MacAddress",
            "container:db",
            "seccomp=/profile.json",
            "mask=/x",
            "host-gateway",
            "PidMode",
            "LogConfig",
            "PidsLimit",
        ] {
            assert!(
                warnings.contains(expected),
                "missing {expected} in {warnings}"
            );
        }
        assert_eq!(
            decoded.workload.network.mode,
            NetworkMode::Container("db".into())
        );
    }

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(parse_size("65536k"), Some(64 << 20));
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("inf"), None);
        assert_eq!(parse_size("1e400"), None);
        assert_eq!(parse_size("99999999999t"), None);
    }

    #[test]
    fn bodies_the_rules_cannot_read_are_refused() {
        for body in [
            r#"{"Image":"busybox","X":"\ud800"}"#.as_bytes(),
            r#"{"Image":"busybox","X":{"Y":["\udc00"]}}"#.as_bytes(),
            b"{\"Image\":\"busybox\",\"X\":\"\xff\"}",
        ] {
            let error = decode_create(body, None, None).expect_err("should fail");
            assert!(
                matches!(error, DecodeError::ParseJsonFailed { .. }),
                "{error}"
            );
        }
        assert!(decode_create(
            r#"{"Image":"busybox","X":"\ud83d\ude00"}"#.as_bytes(),
            None,
            None
        )
        .is_ok());
    }

    #[test]
    fn huge_healthcheck_durations_do_not_overflow() {
        let decoded = decode(
            r#"{"Image":"busybox","Healthcheck":{"Test":["CMD","true"],"Interval":9223372036854775807,"Timeout":9223372036854775807}}"#,
        );
        let health = decoded.workload.healthcheck.unwrap();
        assert_eq!(health.interval_seconds, i64::from(i32::MAX));
        assert_eq!(health.timeout_seconds, i64::from(i32::MAX));
    }

    #[test]
    fn links_are_read_in_every_form_clients_send() {
        // The CLI's `--link srv:db --link cache`, docker-py's `links={"srv": "db"}`, and
        // dockerd's own inspect form fed back into a create.
        let workload = decode(
            r#"{"Image":"busybox","HostConfig":{"Links":["srv:db","cache","/queue:/web/q"]}}"#,
        );
        let links: Vec<(&str, &str)> = workload
            .workload
            .links
            .iter()
            .map(|link| (link.target.as_str(), link.alias.as_str()))
            .collect();
        assert_eq!(links, [("srv", "db"), ("cache", "cache"), ("queue", "q")]);
        assert!(workload.warnings.is_empty(), "{:?}", workload.warnings);
    }

    #[test]
    fn malformed_links_are_refused_with_dockerds_message() {
        for (links, message) in [
            (r#"["a:b:c"]"#, "bad format for links: a:b:c"),
            (r#"[""]"#, "empty string specified for links"),
            (r#"["srv:"]"#, "bad format for links: srv:"),
        ] {
            let body = format!(r#"{{"Image":"busybox","HostConfig":{{"Links":{links}}}}}"#);
            let error = decode_error(&body);
            assert!(
                matches!(error, DecodeError::InvalidLink { .. }),
                "{error:?}"
            );
            assert_eq!(error.to_string(), message);
            assert_eq!(error.status(), 400);
        }
    }

    #[test]
    fn links_follow_the_network_mode_as_in_dockerd() {
        let error = decode_error(
            r#"{"Image":"busybox","HostConfig":{"NetworkMode":"container:db","Links":["srv:db"]}}"#,
        );
        assert_eq!(error, DecodeError::ContainerNetworkAndLinks);
        // On a user-defined network dockerd ignores HostConfig.Links (the CLI sends them as the
        // endpoint's links too).
        let named = decode(
            r#"{"Image":"busybox","HostConfig":{"NetworkMode":"front","Links":["srv:db"]}}"#,
        );
        assert!(named.workload.links.is_empty());
        assert!(named.warnings.is_empty(), "{:?}", named.warnings);
        let endpoint = decode(
            r#"{"Image":"busybox","HostConfig":{"NetworkMode":"front"},
                "NetworkingConfig":{"EndpointsConfig":{"front":{"Links":["srv:db"]}}}}"#,
        );
        assert!(endpoint.warnings[0].starts_with("EndpointsConfig.Links is not supported"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// JSON string contents as hostile clients write them: escapes (lone and paired
        /// surrogates, NUL), multi-byte characters and raw bytes that are not UTF-8.
        fn string_body() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                "[a-zA-Z0-9/:.=_-]{0,8}".prop_map(String::into_bytes),
                prop::sample::select(vec![
                    "\\ud800",
                    "\\udbff",
                    "\\udc00",
                    "\\ud83d\\ude00",
                    "\\u0000",
                    "\\u00e9",
                    "\\n",
                    "\\\"",
                    "\\\\",
                    "é",
                    "\u{1F600}",
                ])
                .prop_map(|escape| escape.as_bytes().to_vec()),
                (0x80u8..=0xff).prop_map(|byte| vec![byte]),
            ];
            prop::collection::vec(piece, 0..6).prop_map(|pieces| {
                let mut out = vec![b'"'];
                out.extend(pieces.concat());
                out.push(b'"');
                out
            })
        }

        fn json_value() -> impl Strategy<Value = Vec<u8>> {
            let leaf = prop_oneof![
                string_body(),
                any::<i64>().prop_map(|n| n.to_string().into_bytes()),
                any::<f64>().prop_map(|n| format!("{n:e}").into_bytes()),
                prop::sample::select(vec!["true", "false", "null", "1e400", "-0"])
                    .prop_map(|word| word.as_bytes().to_vec()),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(|items| {
                        let mut out = b"[".to_vec();
                        out.extend(items.join(&b","[..]));
                        out.push(b']');
                        out
                    }),
                    prop::collection::vec((string_body(), inner), 0..4).prop_map(|fields| {
                        let mut out = b"{".to_vec();
                        let fields: Vec<Vec<u8>> = fields
                            .into_iter()
                            .map(|(key, value)| [key, b":".to_vec(), value].concat())
                            .collect();
                        out.extend(fields.join(&b","[..]));
                        out.push(b'}');
                        out
                    }),
                ]
            })
        }

        /// A create body: the image, then known and unknown fields with hostile values.
        fn create_body() -> impl Strategy<Value = Vec<u8>> {
            let key = prop::sample::select(vec![
                "Cmd",
                "Entrypoint",
                "Env",
                "Labels",
                "User",
                "WorkingDir",
                "StopSignal",
                "StopTimeout",
                "ExposedPorts",
                "Volumes",
                "Healthcheck",
                "HostConfig",
                "NetworkingConfig",
                "Hostname",
                "Tty",
                "X",
                "x-unknown",
                "image",
            ]);
            let host_config = prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "Binds",
                        "Tmpfs",
                        "PortBindings",
                        "Memory",
                        "NanoCpus",
                        "Privileged",
                        "CapAdd",
                        "Mounts",
                        "RestartPolicy",
                        "ShmSize",
                        "Ulimits",
                        "Sysctls",
                        "ExtraHosts",
                        "NetworkMode",
                        "Unknown",
                    ]),
                    json_value(),
                ),
                0..4,
            )
            .prop_map(|fields| {
                let fields: Vec<Vec<u8>> = fields
                    .into_iter()
                    .map(|(key, value)| [format!("\"{key}\":").into_bytes(), value].concat())
                    .collect();
                [b"{".to_vec(), fields.join(&b","[..]), b"}".to_vec()].concat()
            });
            let healthcheck = (any::<i64>(), any::<i64>(), any::<i64>()).prop_map(
                |(interval, timeout, retries)| {
                    format!(
                        r#"{{"Test":["CMD","true"],"Interval":{interval},"Timeout":{timeout},"Retries":{retries}}}"#
                    )
                    .into_bytes()
                },
            );
            let value = prop_oneof![json_value(), host_config, healthcheck];
            prop::collection::vec((key, value), 0..5).prop_map(|fields| {
                let mut out = br#"{"Image":"busybox""#.to_vec();
                for (key, value) in fields {
                    out.extend(format!(",\"{key}\":").into_bytes());
                    out.extend(value);
                }
                out.push(b'}');
                out
            })
        }

        /// What an accepted body must satisfy: UTF-8 JSON whose generic reading succeeds and
        /// is exactly what the rules and the kept request see.
        fn check_accepted(body: &[u8]) -> Result<(), TestCaseError> {
            if let Ok(decoded) = decode_create(body, None, None) {
                prop_assert!(std::str::from_utf8(body).is_ok(), "accepted non-UTF-8 body");
                let generic = serde_json::from_slice::<serde_json::Value>(body);
                prop_assert!(
                    generic.is_ok(),
                    "accepted a body serde_json::Value refuses: {}",
                    String::from_utf8_lossy(body)
                );
                let generic = generic.unwrap();
                // the rules read the decoder's own document
                let request = crate::rules::RequestBody::new(&decoded.request);
                prop_assert_eq!(request.get(), &generic);
                prop_assert_eq!(&*decoded.workload.create_request, &generic);
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(crate::proptest_cases::config(512))]

            #[test]
            fn option_parsers_never_panic(text in any::<String>(), spec in "[0-9a-z/:,=.-]{0,24}") {
                let mut warnings = Vec::new();
                for input in [text.as_str(), spec.as_str()] {
                    if let Ok(ports) = parse_port_key(input) {
                        prop_assert!(!ports.is_empty() && ports.len() <= MAXIMUM_PORT_RANGE as usize);
                    }
                    if let Some(size) = parse_size(input) {
                        prop_assert!(size >= 0);
                    }
                    let _ = parse_tmpfs("/tmp", input);
                    let _ = parse_tmpfs(input, "size=64m");
                    if let Ok(mount) = parse_bind(input, &mut warnings) {
                        prop_assert!(mount.target.starts_with('/') && mount.target.len() > 1);
                    }
                    if let Ok(Some(name)) = decode_name(Some(input)) {
                        prop_assert!(!name.starts_with('/'));
                    }
                }
            }
        }

        proptest! {
            #![proptest_config(crate::proptest_cases::config(256))]

            #[test]
            fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
                check_accepted(&body)?;
            }

            #[test]
            fn accepted_bodies_are_what_the_rules_see(body in create_body()) {
                check_accepted(&body)?;
            }
        }
    }
}
