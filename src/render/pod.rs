//! The Pod-shaped JSON document for one workload: the input of the policy chain.
//!
//! It says exactly what the Docker client asked for, in Kubernetes terms, and nothing more:
//! defaults (resources, service account, node placement) and refusals (privileged, host paths)
//! are policy's business. It is plain JSON rather than a typed Pod so that rules can address any
//! field with a JSON pointer.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::names::{self, is_copyable_label, label_value};
use super::{Identity, NamedVolumes, RenderContext, StartInputs};
use crate::labels;
use crate::model::{
    ContainerRecord, HealthTest, LinkedContainer, MountKind, MountRecord, MountSource,
    NamespaceMode, NetworkMode, RestartPolicy, Workload,
};

/// Name of the container that runs the Docker container's process.
pub const MAIN_CONTAINER: &str = "main";
/// Name of the init container that holds `main` back until the runtime has copied bind content.
pub const INIT_CONTAINER: &str = "podbridge-init";
/// Small emptyDir shared with the init container; the runtime creates [`READY_MARKER`] in it.
pub const SYNC_VOLUME: &str = "podbridge-sync";
/// Where the init container mounts [`SYNC_VOLUME`].
pub const SYNC_MOUNT_PATH: &str = "/podbridge";
/// File whose creation releases the init container.
pub const READY_MARKER: &str = "/podbridge/ready";
/// Where the init container mounts each bind volume: `{BIND_MOUNT_ROOT}/{volume name}`. The
/// runtime copies the client's files there (e.g. `tar -x -C`).
pub const BIND_MOUNT_ROOT: &str = "/podbridge/binds";
/// Name of the container that keeps the writable binds' emptyDirs after `main` exits, until the
/// runtime has copied their content back to the client's side (Docker's binds are two-way).
pub const BIND_KEEPER_CONTAINER: &str = "podbridge-binds";
/// File whose creation ends [`BIND_KEEPER_CONTAINER`].
pub const RELEASED_MARKER: &str = "/podbridge/released";
/// Name of the init container that unpacks files copied in before the first start.
pub const ARCHIVE_INIT_CONTAINER: &str = "podbridge-archives";
/// The emptyDir the archives are unpacked into; `main` mounts each top-level entry from it.
const ARCHIVE_VOLUME: &str = "podbridge-archives";
/// Key of the tar inside an archive ConfigMap.
pub const ARCHIVE_DATA_KEY: &str = "archive.tar";
/// Docker's default grace period between SIGTERM and SIGKILL.
const DEFAULT_STOP_TIMEOUT_SECONDS: i64 = 10;
/// AppArmor annotation for the main container (the pre-1.30 form, still honoured).
const APPARMOR_ANNOTATION: &str = "container.apparmor.security.beta.kubernetes.io/main";
/// SELinux type for `label=disable`: the conventional "super privileged container" type.
const SELINUX_UNCONFINED_TYPE: &str = "spc_t";

/// Builds the Pod-shaped document policy rules transform.
///
/// `start` holds what only exists once a created container is started (files copied in before
/// the start, which bind sources are single files): rendered here, before the rules, so the
/// chain sees and shapes every container and mount that is applied.
pub fn pod_document(
    workload: &Workload,
    identity: &Identity,
    ctx: &RenderContext,
    start: &StartInputs,
) -> Value {
    let short_id = identity.id.short();
    let name = names::pod_name(&ctx.name_prefix, workload.name.as_deref(), short_id);
    let mut pod_labels: BTreeMap<String, String> = workload
        .labels
        .iter()
        .filter(|(key, value)| is_copyable_label(key, value))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    pod_labels.extend(ctx.labels.clone());
    pod_labels.extend(identity_labels(identity, ctx, labels::ROLE_CONTAINER));
    let mut annotations = ctx.annotations.clone();
    if workload.security.apparmor_unconfined {
        annotations.insert(APPARMOR_ANNOTATION.to_owned(), "unconfined".to_owned());
    }
    annotations.extend(identity_annotations(workload, identity));

    let mut volumes = Volumes::new(workload, ctx, start);
    let archive_init = volumes.add_archives(ctx, start);
    let mut spec = Map::new();
    spec.insert("restartPolicy".into(), json!(restart_policy(workload)));
    spec.insert(
        "hostname".into(),
        json!(names::hostname(
            workload.network.hostname.as_deref(),
            workload.name.as_deref(),
            short_id
        )),
    );
    // Docker containers see no Kubernetes service links and hold no cluster credentials.
    spec.insert("enableServiceLinks".into(), json!(false));
    spec.insert("automountServiceAccountToken".into(), json!(false));
    let init_containers: Vec<Value> = volumes
        .init_container(ctx)
        .into_iter()
        .chain(archive_init)
        .collect();
    if !init_containers.is_empty() {
        spec.insert("initContainers".into(), Value::Array(init_containers));
    }
    let links = linked_containers(workload, start);
    let mut containers = vec![main_container(workload, ctx, &volumes, &links)];
    // Only a pod that never restarts ends: a restarting one has no exit to copy back at.
    if workload.restart == RestartPolicy::No {
        containers.extend(volumes.keeper_container(ctx));
    }
    spec.insert("containers".into(), Value::Array(containers));
    if !volumes.volumes.is_empty() {
        spec.insert("volumes".into(), Value::Array(volumes.volumes.clone()));
    }
    spec.insert(
        "terminationGracePeriodSeconds".into(),
        json!(workload
            .stop_timeout_seconds
            .unwrap_or(DEFAULT_STOP_TIMEOUT_SECONDS)),
    );
    if workload.network.mode == NetworkMode::Host {
        spec.insert("hostNetwork".into(), json!(true));
    }
    if workload.pid_mode == NamespaceMode::Host {
        spec.insert("hostPID".into(), json!(true));
    }
    if workload.ipc_mode == NamespaceMode::Host {
        spec.insert("hostIPC".into(), json!(true));
    }
    if workload.init {
        // Docker's `--init` runs tini as PID 1 to reap zombies. With a shared process namespace
        // the pod's pause container is PID 1 and reaps them the same way.
        spec.insert("shareProcessNamespace".into(), json!(true));
    }
    insert_dns(&mut spec, workload, &links);
    let pod_security = pod_security_context(workload);
    if !pod_security.is_empty() {
        spec.insert("securityContext".into(), Value::Object(pod_security));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ctx.namespace,
            "labels": pod_labels,
            "annotations": annotations,
        },
        "spec": spec,
    })
}

/// Warnings only rendering can know, to add to the create response.
pub fn warnings(workload: &Workload, ctx: &RenderContext) -> Vec<String> {
    let socket = workload
        .mounts
        .iter()
        .find(|mount| matches!(mount.source, MountSource::DockerSocket { .. }));
    let mut warnings = match (socket, &ctx.docker_host_for_pods) {
        (Some(mount), None) => vec![format!(
            "the Docker socket bind at {} is not available: podbridge has no address reachable from pods configured",
            mount.target
        )],
        _ => Vec::new(),
    };
    for mount in &workload.mounts {
        if let (MountSource::Volume { name }, NamedVolumes::EmptyDir) =
            (&mount.source, ctx.volumes.backing)
        {
            warnings.push(format!(
                "volume {name} at {} is backed by an emptyDir: its data lives as long as this container and is not shared with other containers",
                mount.target
            ));
        }
    }
    warnings
}

/// Labels that identify an object as podbridge's; `objects` re-asserts them after policy.
pub(super) fn identity_labels(
    identity: &Identity,
    ctx: &RenderContext,
    role: &str,
) -> BTreeMap<String, String> {
    let mut identity_labels = BTreeMap::from([
        (
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        ),
        (labels::INSTANCE.to_owned(), label_value(&ctx.instance_id)),
        (
            labels::CONTAINER_ID.to_owned(),
            identity.id.short().to_owned(),
        ),
        (labels::ROLE.to_owned(), role.to_owned()),
    ]);
    if let Some(project) = ctx.project.as_deref().map(label_value) {
        if !project.is_empty() {
            identity_labels.insert(labels::PROJECT.to_owned(), project);
        }
    }
    identity_labels
}

/// Annotations that say whose container a pod is, for people reading the cluster and for a
/// restarted podbridge: the Docker ID, name, image and creation time. Everything else the
/// runtime keeps is in the container's record ([`container_record`]), never on the pod.
pub(super) fn identity_annotations(
    workload: &Workload,
    identity: &Identity,
) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::from([
        (
            labels::ANNOTATION_CONTAINER_ID.to_owned(),
            identity.id.to_string(),
        ),
        (
            labels::ANNOTATION_CREATED.to_owned(),
            identity.created.clone(),
        ),
        (
            labels::ANNOTATION_IMAGE.to_owned(),
            workload.image.normalised(),
        ),
    ]);
    if let Some(name) = &workload.name {
        annotations.insert(labels::ANNOTATION_NAME.to_owned(), name.clone());
    }
    annotations
}

/// The record the runtime keeps for a created container: the create request and which pod
/// volume serves each mount (named as in [`pod_document`]).
pub fn container_record(workload: &Workload, ctx: &RenderContext) -> ContainerRecord {
    ContainerRecord {
        mounts: Volumes::new(workload, ctx, &StartInputs::default()).records,
        ..ContainerRecord::of_workload(workload)
    }
}

fn restart_policy(workload: &Workload) -> &'static str {
    match workload.restart {
        RestartPolicy::No => "Never",
        RestartPolicy::OnFailure { .. } => "OnFailure",
        RestartPolicy::Always | RestartPolicy::UnlessStopped => "Always",
    }
}

/// Pod volumes, main-container mounts and the mount records for the container's record, built together
/// so names always agree.
///
/// A named volume mounts its PersistentVolumeClaim (`named_volumes = "claim"`): every pod that
/// mounts `data` names the same claim, which is what makes the volume shared and lasting. The
/// claim itself is created with the volume, not here. With `named_volumes = "emptyDir"` it is an
/// emptyDir of this pod, and `warnings` tells the client.
///
/// Every bind, whether directory or file, becomes an emptyDir that the runtime fills before
/// `main` starts: the client's paths live on the client's side, not on any node. The source stays
/// in the container's mount records, so a policy rule may swap the emptyDir for a hostPath
/// where the paths do exist on nodes. The Docker socket gets no volume: `DOCKER_HOST` points the
/// container at podbridge instead.
struct Volumes {
    volumes: Vec<Value>,
    mounts: Vec<Value>,
    /// Names of the emptyDirs the runtime must fill.
    bind_volumes: Vec<String>,
    /// Those of directory binds `main` may write to: copied back when it exits.
    writable_bind_volumes: Vec<String>,
    records: Vec<MountRecord>,
    docker_socket: bool,
}

/// A mount record before rendering names its pod volume and target.
fn mount_record(
    kind: MountKind,
    source: Option<&str>,
    name: Option<&str>,
    claim: Option<&str>,
) -> MountRecord {
    MountRecord {
        kind,
        source: source.map(str::to_owned),
        name: name.map(str::to_owned),
        claim: claim.map(str::to_owned),
        volume: None,
        target: String::new(),
        read_only: None,
    }
}

impl Volumes {
    fn new(workload: &Workload, ctx: &RenderContext, start: &StartInputs) -> Self {
        let mut volumes = Self {
            volumes: Vec::new(),
            mounts: Vec::new(),
            bind_volumes: Vec::new(),
            writable_bind_volumes: Vec::new(),
            records: Vec::new(),
            docker_socket: false,
        };
        for (index, mount) in workload.mounts.iter().enumerate() {
            let (volume_name, source, record) = match &mount.source {
                MountSource::Bind { path } => {
                    let name = format!("bind-{index}");
                    volumes.bind_volumes.push(name.clone());
                    (
                        name,
                        json!({"emptyDir": {}}),
                        mount_record(MountKind::Bind, Some(path), None, None),
                    )
                }
                MountSource::DockerSocket { path } => {
                    volumes.docker_socket = true;
                    volumes.records.push(MountRecord {
                        target: mount.target.clone(),
                        ..mount_record(MountKind::DockerSocket, Some(path), None, None)
                    });
                    continue;
                }
                MountSource::Volume { name } => match ctx.volumes.backing {
                    NamedVolumes::Claim => {
                        let claim = names::volume_claim_name(&ctx.instance_id, name);
                        (
                            format!("volume-{index}"),
                            json!({"persistentVolumeClaim": {"claimName": claim}}),
                            mount_record(MountKind::Volume, None, Some(name), Some(&claim)),
                        )
                    }
                    NamedVolumes::EmptyDir => (
                        format!("volume-{index}"),
                        json!({"emptyDir": {}}),
                        mount_record(MountKind::Volume, None, Some(name), None),
                    ),
                },
                MountSource::Anonymous => (
                    format!("anonymous-{index}"),
                    json!({"emptyDir": {}}),
                    mount_record(MountKind::Anonymous, None, None, None),
                ),
                MountSource::Tmpfs { size_bytes } => {
                    let mut empty_dir = json!({"medium": "Memory"});
                    if let Some(size) = size_bytes {
                        empty_dir["sizeLimit"] = json!(size.to_string());
                    }
                    (
                        format!("tmpfs-{index}"),
                        json!({"emptyDir": empty_dir}),
                        mount_record(MountKind::Tmpfs, None, None, None),
                    )
                }
            };
            let mut volume = json!({"name": volume_name});
            volume
                .as_object_mut()
                .expect("json! object")
                .extend(source.as_object().expect("json! object").clone());
            volumes.volumes.push(volume);
            let mut volume_mount = json!({"name": volume_name, "mountPath": mount.target});
            // Docker binds a single file over a path; the emptyDir holds the file under its
            // resolved name, so only that file is mounted.
            if let MountSource::Bind { path } = &mount.source {
                match start.file_binds.get(path) {
                    Some(name) => volume_mount["subPath"] = json!(name),
                    None if !mount.read_only => {
                        volumes.writable_bind_volumes.push(volume_name.clone())
                    }
                    None => {}
                }
            }
            if mount.read_only {
                volume_mount["readOnly"] = json!(true);
            }
            volumes.mounts.push(volume_mount);
            volumes.records.push(MountRecord {
                volume: Some(volume_name),
                target: mount.target.clone(),
                read_only: Some(mount.read_only),
                ..record
            });
        }
        let shm_taken = workload
            .mounts
            .iter()
            .any(|mount| mount.target == "/dev/shm");
        if let (Some(size), false) = (workload.shm_size_bytes, shm_taken) {
            volumes.volumes.push(json!({
                "name": "dev-shm",
                "emptyDir": {"medium": "Memory", "sizeLimit": size.to_string()},
            }));
            volumes
                .mounts
                .push(json!({"name": "dev-shm", "mountPath": "/dev/shm"}));
        }
        if !volumes.bind_volumes.is_empty() {
            volumes.volumes.push(json!({
                "name": SYNC_VOLUME,
                "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"},
            }));
        }
        volumes
    }

    /// Files copied in before the start: each archive ConfigMap is unpacked by an init container
    /// into one emptyDir, and `main` mounts each top-level entry at its destination (`subPath`),
    /// so the image's directories around them stay visible. Returns that init container.
    fn add_archives(&mut self, ctx: &RenderContext, start: &StartInputs) -> Option<Value> {
        if start.archives.is_empty() {
            return None;
        }
        self.volumes
            .push(json!({"name": ARCHIVE_VOLUME, "emptyDir": {}}));
        let mut init_mounts = vec![json!({"name": ARCHIVE_VOLUME, "mountPath": "/podbridge/out"})];
        let mut script = String::from("set -e\n");
        for (index, archive) in start.archives.iter().enumerate() {
            let volume = format!("podbridge-archive-{index}");
            self.volumes.push(json!({
                "name": volume,
                "configMap": {"name": archive.config_map},
            }));
            init_mounts.push(json!({
                "name": volume,
                "mountPath": format!("/podbridge/in/{index}"),
                "readOnly": true,
            }));
            script.push_str(&format!(
                "mkdir -p /podbridge/out/{index} && tar -xf /podbridge/in/{index}/{ARCHIVE_DATA_KEY} -C /podbridge/out/{index}\n"
            ));
            // A name the kubelet would refuse as a subPath (or that climbs out) is left in the
            // emptyDir, unmounted.
            for entry in archive
                .entries
                .iter()
                .filter(|e| !e.is_empty() && *e != "." && *e != ".." && !e.contains('/'))
            {
                let target = format!("{}/{entry}", archive.path.trim_end_matches('/'));
                self.mounts.retain(|m| m["mountPath"] != target.as_str());
                self.mounts.push(json!({
                    "name": ARCHIVE_VOLUME,
                    "mountPath": target,
                    "subPath": format!("{index}/{entry}"),
                }));
            }
        }
        Some(json!({
            "name": ARCHIVE_INIT_CONTAINER,
            "image": ctx.init_image,
            "command": ["sh", "-c", script],
            "volumeMounts": init_mounts,
        }))
    }

    /// The container that outlives `main` with the writable binds mounted, so the runtime can
    /// copy them back after the exit (a finished pod's emptyDirs are out of reach); it ends when
    /// the runtime creates [`RELEASED_MARKER`], or at once on SIGTERM (the pod is being deleted).
    fn keeper_container(&self, ctx: &RenderContext) -> Option<Value> {
        if self.writable_bind_volumes.is_empty() {
            return None;
        }
        let mut mounts = vec![json!({"name": SYNC_VOLUME, "mountPath": SYNC_MOUNT_PATH})];
        mounts.extend(self.writable_bind_volumes.iter().map(
            |volume| json!({"name": volume, "mountPath": format!("{BIND_MOUNT_ROOT}/{volume}")}),
        ));
        Some(json!({
            "name": BIND_KEEPER_CONTAINER,
            "image": ctx.init_image,
            "command": [
                "sh", "-c",
                format!("trap 'exit 0' TERM; until [ -f {RELEASED_MARKER} ]; do sleep 0.2; done"),
            ],
            "volumeMounts": mounts,
        }))
    }

    /// The init container that waits for the runtime's copy, when there is anything to copy.
    fn init_container(&self, ctx: &RenderContext) -> Option<Value> {
        if self.bind_volumes.is_empty() {
            return None;
        }
        let mut mounts = vec![json!({"name": SYNC_VOLUME, "mountPath": SYNC_MOUNT_PATH})];
        mounts.extend(self.bind_volumes.iter().map(
            |volume| json!({"name": volume, "mountPath": format!("{BIND_MOUNT_ROOT}/{volume}")}),
        ));
        Some(json!({
            "name": INIT_CONTAINER,
            "image": ctx.init_image,
            "command": [
                "sh", "-c",
                format!("until [ -f {READY_MARKER} ]; do sleep 0.1; done"),
            ],
            "volumeMounts": mounts,
        }))
    }
}

/// The resolved targets of the workload's links, in request order. Only on the default bridge
/// network: dockerd gives links nothing at start elsewhere (host network, `none`).
fn linked_containers<'a>(workload: &Workload, start: &'a StartInputs) -> Vec<&'a LinkedContainer> {
    if workload.network.mode != NetworkMode::Bridge {
        return Vec::new();
    }
    let mut links: Vec<&LinkedContainer> = Vec::new();
    for link in &workload.links {
        if let Some(target) = start.links.get(&link.alias) {
            if !links.iter().any(|known| std::ptr::eq(*known, target)) {
                links.push(target);
            }
        }
    }
    links
}

/// Docker's link variables for the main container: before the container's own variables, and
/// left out where the request sets the same name (dockerd lets the container's `Env` replace
/// them). A name Kubernetes refuses (an alias starting with a digit) is left out too, rather
/// than making the pod invalid.
fn link_environment(workload: &Workload, links: &[&LinkedContainer]) -> Vec<Value> {
    let mut env: Vec<Value> = Vec::new();
    let mut seen: Vec<String> = workload.env.iter().map(|var| var.name.clone()).collect();
    for (name, value) in links.iter().flat_map(|link| link.environment()) {
        if is_environment_name(&name) && !seen.contains(&name) {
            env.push(json!({"name": name, "value": value}));
            seen.push(name);
        }
    }
    env
}

/// Kubernetes' rule for an environment variable name: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
fn is_environment_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || "-._".contains(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

fn main_container(
    workload: &Workload,
    ctx: &RenderContext,
    volumes: &Volumes,
    links: &[&LinkedContainer],
) -> Value {
    let mut container = Map::new();
    container.insert("name".into(), json!(MAIN_CONTAINER));
    let image = workload
        .pull_image
        .clone()
        .unwrap_or_else(|| workload.image.normalised());
    container.insert("image".into(), json!(image));
    // Docker's Entrypoint/Cmd and Kubernetes' command/args have the same semantics, except that
    // Docker clears the image entrypoint with `[]` or `[""]`, which Kubernetes reads as "unset":
    // then Cmd becomes the whole command.
    let cleared_entrypoint = workload
        .entrypoint
        .as_ref()
        .is_some_and(|entrypoint| entrypoint.iter().all(String::is_empty));
    let cmd = workload.cmd.clone().filter(|cmd| !cmd.is_empty());
    match (&workload.entrypoint, cleared_entrypoint) {
        (_, true) => {
            if let Some(cmd) = cmd {
                container.insert("command".into(), json!(cmd));
            }
        }
        (Some(entrypoint), false) => {
            container.insert("command".into(), json!(entrypoint));
            if let Some(cmd) = cmd {
                container.insert("args".into(), json!(cmd));
            }
        }
        (None, false) => {
            if let Some(cmd) = cmd {
                container.insert("args".into(), json!(cmd));
            }
        }
    }
    let mut env = link_environment(workload, links);
    env.extend(workload.env.iter().filter_map(|var| {
        var.value
            .as_ref()
            .map(|value| json!({"name": var.name, "value": value}))
    }));
    let sets_docker_host = workload.env.iter().any(|var| var.name == "DOCKER_HOST");
    if let (true, Some(docker_host), false) = (
        volumes.docker_socket,
        &ctx.docker_host_for_pods,
        sets_docker_host,
    ) {
        env.push(json!({"name": "DOCKER_HOST", "value": docker_host}));
    }
    if !env.is_empty() {
        container.insert("env".into(), Value::Array(env));
    }
    if let Some(dir) = &workload.working_dir {
        container.insert("workingDir".into(), json!(dir));
    }
    if workload.stdio.tty {
        container.insert("tty".into(), json!(true));
    }
    if workload.stdio.open_stdin {
        container.insert("stdin".into(), json!(true));
    }
    if workload.stdio.stdin_once {
        container.insert("stdinOnce".into(), json!(true));
    }
    if !workload.ports.is_empty() {
        let ports: Vec<Value> = workload
            .ports
            .iter()
            .map(|port| {
                json!({
                    "name": format!("{}-{}", port.protocol.docker_name(), port.port),
                    "containerPort": port.port,
                    "protocol": port.protocol.kubernetes_name(),
                })
            })
            .collect();
        container.insert("ports".into(), Value::Array(ports));
    }
    let resources = resources(workload);
    if !resources.is_empty() {
        container.insert("resources".into(), Value::Object(resources));
    }
    let security = container_security_context(workload);
    if !security.is_empty() {
        container.insert("securityContext".into(), Value::Object(security));
    }
    if !volumes.mounts.is_empty() {
        container.insert("volumeMounts".into(), Value::Array(volumes.mounts.clone()));
    }
    if let Some(health) = &workload.healthcheck {
        let command = match &health.test {
            HealthTest::Exec(command) => command.clone(),
            HealthTest::Shell(script) => vec!["/bin/sh".into(), "-c".into(), script.clone()],
        };
        let mut probe = json!({
            "exec": {"command": command},
            "periodSeconds": health.interval_seconds.max(1),
            "timeoutSeconds": health.timeout_seconds.max(1),
            "failureThreshold": health.retries.max(1),
        });
        if health.start_period_seconds > 0 {
            probe["initialDelaySeconds"] = json!(health.start_period_seconds);
        }
        container.insert("readinessProbe".into(), probe);
    }
    Value::Object(container)
}

/// Only what the request set; memory in bytes, CPU in millicores.
fn resources(workload: &Workload) -> Map<String, Value> {
    let requested = &workload.resources;
    let mut limits = Map::new();
    let mut requests = Map::new();
    if let Some(memory) = requested.memory_bytes {
        limits.insert("memory".into(), json!(memory.to_string()));
    }
    if let Some(memory) = requested.memory_request_bytes() {
        requests.insert("memory".into(), json!(memory.to_string()));
    }
    if let Some(cpu) = requested.cpu_limit_millicores() {
        limits.insert("cpu".into(), json!(format!("{cpu}m")));
    }
    if let Some(cpu) = requested.cpu_request_millicores() {
        requests.insert("cpu".into(), json!(format!("{cpu}m")));
    }
    let mut resources = Map::new();
    if !limits.is_empty() {
        resources.insert("limits".into(), Value::Object(limits));
    }
    if !requests.is_empty() {
        resources.insert("requests".into(), Value::Object(requests));
    }
    resources
}

fn container_security_context(workload: &Workload) -> Map<String, Value> {
    let security = &workload.security;
    let mut context = Map::new();
    if security.privileged {
        context.insert("privileged".into(), json!(true));
    }
    if !security.cap_add.is_empty() || !security.cap_drop.is_empty() {
        let mut capabilities = Map::new();
        if !security.cap_add.is_empty() {
            capabilities.insert("add".into(), json!(security.cap_add));
        }
        if !security.cap_drop.is_empty() {
            capabilities.insert("drop".into(), json!(security.cap_drop));
        }
        context.insert("capabilities".into(), Value::Object(capabilities));
    }
    if let Some(user) = &workload.user {
        if let Some(uid) = user.uid {
            context.insert("runAsUser".into(), json!(uid));
        }
        if let Some(gid) = user.gid {
            context.insert("runAsGroup".into(), json!(gid));
        }
    }
    if security.read_only_root_filesystem {
        context.insert("readOnlyRootFilesystem".into(), json!(true));
    }
    // Kubernetes rejects allowPrivilegeEscalation=false on a privileged container; privileged wins.
    if security.no_new_privileges && !security.privileged {
        context.insert("allowPrivilegeEscalation".into(), json!(false));
    }
    if security.seccomp_unconfined {
        context.insert("seccompProfile".into(), json!({"type": "Unconfined"}));
    }
    if let Some(selinux) = &security.selinux {
        let mut options = Map::new();
        for (key, value) in [
            ("user", &selinux.user),
            ("role", &selinux.role),
            ("type", &selinux.type_),
            ("level", &selinux.level),
        ] {
            if let Some(value) = value {
                options.insert(key.into(), json!(value));
            }
        }
        if selinux.disabled {
            options.insert("type".into(), json!(SELINUX_UNCONFINED_TYPE));
        }
        if !options.is_empty() {
            context.insert("seLinuxOptions".into(), Value::Object(options));
        }
    }
    if security.unmasked_system_paths {
        context.insert("procMount".into(), json!("Unmasked"));
    }
    context
}

fn pod_security_context(workload: &Workload) -> Map<String, Value> {
    let mut context = Map::new();
    if !workload.sysctls.is_empty() {
        let sysctls: Vec<Value> = workload
            .sysctls
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect();
        context.insert("sysctls".into(), Value::Array(sysctls));
    }
    if !workload.supplemental_groups.is_empty() {
        context.insert(
            "supplementalGroups".into(),
            json!(workload.supplemental_groups),
        );
    }
    context
}

/// Links' targets and `ExtraHosts` → hostAliases (grouped by IP); `Dns*` → dnsConfig. Custom
/// servers replace the cluster's resolver (`dnsPolicy: None`), as they replace the daemon's in
/// Docker; search domains and options alone extend it.
///
/// A link's names go to `/etc/hosts`, as dockerd writes them there: visible to the linking
/// container only, unlike a Service. Lowercased (resolvers compare names without case), and a
/// name that is not a DNS-1123 subdomain (`my_db`), which Kubernetes refuses there, is left out.
fn insert_dns(spec: &mut Map<String, Value>, workload: &Workload, links: &[&LinkedContainer]) {
    let mut by_ip: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for link in links.iter().filter(|link| !link.ip.is_empty()) {
        let names = by_ip.entry(link.ip.clone()).or_default();
        for name in link
            .hostnames()
            .iter()
            .map(|name| name.to_ascii_lowercase())
        {
            if names::is_dns1123_subdomain(&name) && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    for host in &workload.extra_hosts {
        by_ip
            .entry(host.ip.clone())
            .or_default()
            .push(host.hostname.clone());
    }
    by_ip.retain(|_, hostnames| !hostnames.is_empty());
    if !by_ip.is_empty() {
        let aliases: Vec<Value> = by_ip
            .into_iter()
            .map(|(ip, hostnames)| json!({"ip": ip, "hostnames": hostnames}))
            .collect();
        spec.insert("hostAliases".into(), Value::Array(aliases));
    }
    let dns = &workload.dns;
    let host_network = workload.network.mode == NetworkMode::Host;
    let policy = if !dns.servers.is_empty() {
        "None"
    } else if host_network {
        "ClusterFirstWithHostNet"
    } else {
        "ClusterFirst"
    };
    if dns.is_empty() && !host_network {
        return;
    }
    spec.insert("dnsPolicy".into(), json!(policy));
    if dns.is_empty() {
        return;
    }
    let mut config = Map::new();
    if !dns.servers.is_empty() {
        config.insert("nameservers".into(), json!(dns.servers));
    }
    if !dns.search.is_empty() {
        config.insert("searches".into(), json!(dns.search));
    }
    if !dns.options.is_empty() {
        let options: Vec<Value> = dns
            .options
            .iter()
            .map(|(name, value)| match value {
                Some(value) => json!({"name": name, "value": value}),
                None => json!({"name": name}),
            })
            .collect();
        config.insert("options".into(), Value::Array(options));
    }
    spec.insert("dnsConfig".into(), Value::Object(config));
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::api::decode::decode_create;
    use crate::model::ContainerId;
    use crate::render::StartInputs;

    pub(crate) fn context() -> RenderContext {
        RenderContext {
            instance_id: "ci-42".into(),
            namespace: "builds".into(),
            project: Some("group/project".into()),
            name_prefix: "pb".into(),
            init_image: "busybox:1.36".into(),
            labels: BTreeMap::from([("team".to_owned(), "infra".to_owned())]),
            annotations: BTreeMap::from([("note".to_owned(), "x".to_owned())]),
            docker_host_for_pods: Some("tcp://podbridge.builds:2375".into()),
            volumes: super::super::VolumeSettings::default(),
            bind_roots: crate::model::BindRoots::new(["/home/ci"]).unwrap(),
        }
    }

    pub(crate) fn identity() -> Identity {
        Identity {
            id: ContainerId::from_seed(b"test"),
            created: "2025-01-01T00:00:00Z".into(),
        }
    }

    pub(crate) fn workload(body: &str, name: Option<&str>) -> Workload {
        decode_create(body.as_bytes(), name, None).unwrap().workload
    }

    /// The pod says whose container it is and what the policy did, nothing the runtime keeps.
    fn assert_no_bookkeeping(pod: &Value) {
        let annotations = pod["metadata"]["annotations"].as_object().unwrap();
        for key in labels::legacy::ALL {
            assert!(!annotations.contains_key(key), "{key} on the pod");
        }
        for key in annotations.keys() {
            assert!(
                !key.starts_with("podbridge.io/")
                    || [
                        labels::ANNOTATION_CONTAINER_ID,
                        labels::ANNOTATION_NAME,
                        labels::ANNOTATION_CREATED,
                        labels::ANNOTATION_IMAGE,
                    ]
                    .contains(&key.as_str()),
                "unexpected annotation {key} on the pod"
            );
        }
    }

    #[test]
    fn the_pod_carries_no_bookkeeping() {
        for body in [
            include_str!("../../tests/fixtures/create/docker-run-busybox.json"),
            include_str!("../../tests/fixtures/create/compose-web.json"),
            include_str!("../../tests/fixtures/create/privileged.json"),
        ] {
            let workload = workload(body, Some("web"));
            let pod = pod_document(&workload, &identity(), &context(), &StartInputs::default());
            assert_no_bookkeeping(&pod);
            let annotations = &pod["metadata"]["annotations"];
            assert_eq!(annotations[labels::ANNOTATION_NAME], "web");
            assert_eq!(annotations[labels::ANNOTATION_CREATED], identity().created);
        }
    }

    #[test]
    fn busybox_pod_document() {
        let body = include_str!("../../tests/fixtures/create/docker-run-busybox.json");
        let pod = pod_document(
            &workload(body, Some("My_Container.1")),
            &identity(),
            &context(),
            &StartInputs::default(),
        );
        let short = identity().id.short().to_owned();
        assert_eq!(
            pod["metadata"]["name"],
            format!("pb-my-container-1-{short}")
        );
        assert_eq!(pod["metadata"]["namespace"], "builds");
        let labels = &pod["metadata"]["labels"];
        assert_eq!(labels[labels::MANAGED_BY], "podbridge");
        assert_eq!(labels[labels::CONTAINER_ID], short.as_str());
        assert_eq!(labels[labels::PROJECT], "group-project");
        assert_eq!(labels["team"], "infra");
        let annotations = &pod["metadata"]["annotations"];
        assert_eq!(annotations[labels::ANNOTATION_NAME], "My_Container.1");
        assert_eq!(
            annotations[labels::ANNOTATION_IMAGE],
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            annotations[labels::ANNOTATION_CONTAINER_ID],
            identity().id.as_str()
        );
        // The request is in the container's record, not on the pod.
        let record = container_record(&workload(body, Some("My_Container.1")), &context());
        assert_eq!(record.request["Image"], "busybox");
        assert!(record.settings.auto_remove);
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["hostname"], "my-container-1");
        assert_eq!(spec["terminationGracePeriodSeconds"], 10);
        let main = &spec["containers"][0];
        assert_eq!(main["name"], "main");
        assert_eq!(main["image"], "docker.io/library/busybox:latest");
        assert_eq!(main.get("command"), None);
        assert_eq!(main["args"][0], "sh");
        assert_eq!(main["env"], json!([{"name": "GREETING", "value": "hello"}]));
        assert_eq!(main.get("securityContext"), None);
        assert_eq!(spec.get("initContainers"), None);
    }

    #[test]
    fn writable_directory_binds_are_kept_after_main_for_the_copy_back() {
        let body = r#"{"Image": "busybox", "HostConfig": {"Binds": [
            "/home/ci/out:/out", "/home/ci/site:/site:ro", "/home/ci/conf.txt:/etc/conf.txt"]}}"#;
        let start = StartInputs {
            file_binds: BTreeMap::from([("/home/ci/conf.txt".into(), "conf.txt".into())]),
            ..StartInputs::default()
        };
        let pod = pod_document(&workload(body, None), &identity(), &context(), &start);
        let containers = pod["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 2, "{containers:?}");
        let keeper = &containers[1];
        assert_eq!(keeper["name"], BIND_KEEPER_CONTAINER);
        // only the writable directory bind: not the read-only one, not the single file
        assert_eq!(
            keeper["volumeMounts"],
            json!([{"name": SYNC_VOLUME, "mountPath": SYNC_MOUNT_PATH},
                   {"name": "bind-0", "mountPath": "/podbridge/binds/bind-0"}])
        );
        assert!(keeper["command"][2]
            .as_str()
            .unwrap()
            .contains(RELEASED_MARKER));

        // nothing to copy back: read-only binds only, or a pod that restarts instead of ending
        let read_only =
            r#"{"Image": "busybox", "HostConfig": {"Binds": ["/home/ci/site:/site:ro"]}}"#;
        let pod = pod_document(&workload(read_only, None), &identity(), &context(), &start);
        assert_eq!(pod["spec"]["containers"].as_array().unwrap().len(), 1);
        let restarting = r#"{"Image": "busybox", "HostConfig": {"Binds": ["/home/ci/out:/out"],
            "RestartPolicy": {"Name": "always"}}}"#;
        let pod = pod_document(&workload(restarting, None), &identity(), &context(), &start);
        assert_eq!(pod["spec"]["containers"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn compose_pod_document() {
        let body = include_str!("../../tests/fixtures/create/compose-web.json");
        let pod = pod_document(
            &workload(body, Some("demo-web-1")),
            &identity(),
            &context(),
            &StartInputs::default(),
        );
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["shareProcessNamespace"], true);
        assert_eq!(
            spec["hostAliases"],
            json!([{"ip": "10.0.0.5", "hostnames": ["api.internal"]}])
        );
        let main = &spec["containers"][0];
        assert_eq!(
            main["ports"],
            json!([{"name": "tcp-80", "containerPort": 80, "protocol": "TCP"}])
        );
        assert_eq!(
            main["resources"],
            json!({"limits": {"memory": "268435456", "cpu": "500m"}, "requests": {"memory": "268435456"}})
        );
        assert_eq!(
            main["readinessProbe"],
            json!({"exec": {"command": ["/bin/sh", "-c", "curl -fsS http://localhost/ || exit 1"]},
                   "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 5, "initialDelaySeconds": 10})
        );
        assert_eq!(
            main["volumeMounts"][0],
            json!({"name": "bind-0", "mountPath": "/usr/share/nginx/html", "readOnly": true})
        );
        assert_eq!(
            spec["volumes"][0],
            json!({"name": "bind-0", "emptyDir": {}})
        );
        // the named volume mounts its claim, shared by every container that mounts it
        let claim = names::volume_claim_name("ci-42", "demo_cache");
        assert_eq!(
            spec["volumes"][1],
            json!({"name": "volume-1", "persistentVolumeClaim": {"claimName": claim}})
        );
        assert_eq!(
            spec["volumes"][2],
            json!({"name": "tmpfs-2", "emptyDir": {"medium": "Memory", "sizeLimit": "67108864"}})
        );
        let init = &spec["initContainers"][0];
        assert_eq!(init["name"], INIT_CONTAINER);
        assert_eq!(init["image"], "busybox:1.36");
        assert_eq!(
            init["volumeMounts"][1],
            json!({"name": "bind-0", "mountPath": "/podbridge/binds/bind-0"})
        );
        let record = container_record(&workload(body, Some("demo-web-1")), &context());
        assert_eq!(
            serde_json::to_value(&record.mounts[0]).unwrap(),
            json!({"type": "bind", "source": "/home/ci/demo/site", "volume": "bind-0", "target": "/usr/share/nginx/html", "readOnly": true})
        );
        assert_eq!(
            record.claim_mounts(),
            [crate::model::ClaimMount {
                volume: "demo_cache".into(),
                claim: claim.clone()
            }]
        );
        assert_eq!(
            record.request["HostConfig"]["PortBindings"],
            json!({"80/tcp": [{"HostIp": "", "HostPort": "8080"}]})
        );
        assert_no_bookkeeping(&pod);
        // Compose labels with valid values are copied; paths are not.
        assert_eq!(
            pod["metadata"]["labels"]["com.docker.compose.service"],
            "web"
        );
        assert_eq!(
            pod["metadata"]["labels"].get("com.docker.compose.project.working_dir"),
            None
        );
    }

    #[test]
    fn privileged_request_is_carried_through() {
        let body = include_str!("../../tests/fixtures/create/privileged.json");
        let pod = pod_document(
            &workload(body, None),
            &identity(),
            &context(),
            &StartInputs::default(),
        );
        let spec = &pod["spec"];
        assert_eq!(
            (&spec["hostNetwork"], &spec["hostPID"], &spec["hostIPC"]),
            (&json!(true), &json!(true), &json!(true))
        );
        assert_eq!(spec["dnsPolicy"], "None");
        assert_eq!(
            spec["dnsConfig"]["options"],
            json!([{"name": "ndots", "value": "2"}, {"name": "edns0"}])
        );
        assert_eq!(spec["restartPolicy"], "OnFailure");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(
            spec["securityContext"],
            json!({"sysctls": [{"name": "net.ipv4.ip_forward", "value": "1"}], "supplementalGroups": [2375]})
        );
        let main = &spec["containers"][0];
        assert_eq!(main["command"], json!(["dockerd-entrypoint.sh"]));
        assert_eq!(main["args"], json!(["--debug"]));
        assert_eq!(
            (&main["tty"], &main["stdin"], &main["stdinOnce"]),
            (&json!(true), &json!(true), &json!(true))
        );
        assert_eq!(
            main["securityContext"],
            json!({"privileged": true, "capabilities": {"add": ["SYS_ADMIN", "NET_ADMIN"], "drop": ["MKNOD"]},
                   "runAsUser": 1000, "runAsGroup": 1000, "seccompProfile": {"type": "Unconfined"},
                   "seLinuxOptions": {"type": "spc_t"}, "procMount": "Unmasked"})
        );
        assert_eq!(
            main["resources"],
            json!({"limits": {"cpu": "1500m"}, "requests": {"memory": "67108864", "cpu": "500m"}})
        );
        let env = main["env"].as_array().unwrap();
        assert!(
            env.contains(&json!({"name": "DOCKER_HOST", "value": "tcp://podbridge.builds:2375"}))
        );
        assert!(!main["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|mount| mount["mountPath"] == "/var/run/docker.sock"));
        assert!(main["volumeMounts"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "dev-shm", "mountPath": "/dev/shm"})));
        assert_eq!(
            pod["metadata"]["annotations"][APPARMOR_ANNOTATION],
            "unconfined"
        );
        let record = container_record(&workload(body, None), &context());
        assert!(record
            .mounts
            .iter()
            .any(|mount| mount.kind == MountKind::DockerSocket
                && mount.target == "/var/run/docker.sock"));
        assert_no_bookkeeping(&pod);
        // named volumes are claims: nothing to warn about ...
        assert_eq!(
            warnings(&workload(body, None), &context()),
            Vec::<String>::new()
        );
        // ... unless they are configured as emptyDirs
        let mut empty_dirs = context();
        empty_dirs.volumes.backing = NamedVolumes::EmptyDir;
        let found = warnings(&workload(body, None), &empty_dirs);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("volume dind-data at /var/lib/docker"),
            "{found:?}"
        );
        let volumes = &pod_document(
            &workload(body, None),
            &identity(),
            &empty_dirs,
            &StartInputs::default(),
        )["spec"]["volumes"];
        assert!(volumes
            .as_array()
            .unwrap()
            .iter()
            .any(|volume| volume["emptyDir"] == json!({})
                && volume["name"].as_str().unwrap().starts_with("volume-")));
        let no_host = RenderContext {
            docker_host_for_pods: None,
            ..context()
        };
        assert_eq!(warnings(&workload(body, None), &no_host).len(), 1);
    }

    #[test]
    fn cleared_entrypoint_runs_cmd_as_command() {
        let pod = pod_document(
            &workload(r#"{"Image":"a","Entrypoint":[""],"Cmd":["ls","/"]}"#, None),
            &identity(),
            &context(),
            &StartInputs::default(),
        );
        let main = &pod["spec"]["containers"][0];
        assert_eq!(main["command"], json!(["ls", "/"]));
        assert_eq!(main.get("args"), None);
    }

    #[test]
    fn host_network_keeps_cluster_dns() {
        let pod = pod_document(
            &workload(r#"{"Image":"a","HostConfig":{"NetworkMode":"host"}}"#, None),
            &identity(),
            &context(),
            &StartInputs::default(),
        );
        assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirstWithHostNet");
    }

    fn linked_redis() -> StartInputs {
        let target = crate::model::LinkedContainer {
            link_name: "/web/db".into(),
            target_name: "srv".into(),
            target_hostname: "0123456789ab".into(),
            ip: "10.244.0.7".into(),
            ports: vec![(6379, crate::model::Protocol::Tcp)],
            env: vec![("REDIS_VERSION".into(), "7.2".into())],
        };
        StartInputs {
            links: BTreeMap::from([("db".to_owned(), target)]),
            ..StartInputs::default()
        }
    }

    fn env_of(pod: &Value) -> Vec<String> {
        pod["spec"]["containers"][0]["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|var| {
                format!(
                    "{}={}",
                    var["name"].as_str().unwrap(),
                    var["value"].as_str().unwrap()
                )
            })
            .collect()
    }

    #[test]
    fn links_are_in_the_pod_document_the_rules_see() {
        let workload = workload(
            r#"{"Image":"busybox","Env":["DB_NAME=mine","A=1"],
                "HostConfig":{"Links":["srv:db"],"ExtraHosts":["gw:10.0.0.1"]}}"#,
            Some("web"),
        );
        let pod = pod_document(&workload, &identity(), &context(), &linked_redis());
        assert_eq!(
            env_of(&pod),
            [
                "DB_PORT=tcp://10.244.0.7:6379",
                "DB_PORT_6379_TCP=tcp://10.244.0.7:6379",
                "DB_PORT_6379_TCP_ADDR=10.244.0.7",
                "DB_PORT_6379_TCP_PORT=6379",
                "DB_PORT_6379_TCP_PROTO=tcp",
                // DB_NAME is the request's own: it replaces the link's, as in dockerd.
                "DB_ENV_REDIS_VERSION=7.2",
                "DB_NAME=mine",
                "A=1",
            ]
        );
        assert_eq!(
            pod["spec"]["hostAliases"],
            json!([
                {"ip": "10.0.0.1", "hostnames": ["gw"]},
                {"ip": "10.244.0.7", "hostnames": ["db", "0123456789ab", "srv"]},
            ])
        );
    }

    #[test]
    fn links_render_nothing_before_start_or_off_the_default_bridge() {
        let created = workload(
            r#"{"Image":"busybox","HostConfig":{"Links":["srv:db"]}}"#,
            None,
        );
        let pod = pod_document(&created, &identity(), &context(), &StartInputs::default());
        assert!(pod["spec"].get("hostAliases").is_none());
        assert!(env_of(&pod).is_empty());
        let host = workload(
            r#"{"Image":"busybox","HostConfig":{"NetworkMode":"host","Links":["srv:db"]}}"#,
            None,
        );
        let pod = pod_document(&host, &identity(), &context(), &linked_redis());
        assert!(pod["spec"].get("hostAliases").is_none());
        assert!(env_of(&pod).is_empty());
    }

    #[test]
    fn link_names_kubernetes_refuses_are_left_out() {
        let workload = workload(
            r#"{"Image":"busybox","HostConfig":{"Links":["My_Srv:1db"]}}"#,
            None,
        );
        let mut start = linked_redis();
        let mut target = start.links.remove("db").unwrap();
        target.link_name = "/web/1db".into();
        target.target_name = "My_Srv".into();
        start.links.insert("1db".into(), target);
        let pod = pod_document(&workload, &identity(), &context(), &start);
        // `1DB_…` is not an environment variable name Kubernetes takes, nor `my_srv` a hostname.
        assert!(env_of(&pod).is_empty(), "{:?}", env_of(&pod));
        assert_eq!(
            pod["spec"]["hostAliases"],
            json!([{"ip": "10.244.0.7", "hostnames": ["1db", "0123456789ab"]}])
        );
    }
}
