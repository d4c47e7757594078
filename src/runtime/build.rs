//! `docker build` in the cluster: one builder pod per build (rendered and checked by the policy
//! chain like every pod, with `Purpose::Build`), driven by exec — the context is unpacked into
//! it, buildah builds and pushes to the build registry — and the result recorded as a built
//! image: a ConfigMap of this instance that maps the client's tags to the pushed digest and
//! keeps the image's config, so `docker run <tag>` pulls exactly what was built, and a
//! restarted podbridge still knows it.
//!
//! Everything in the builder pod is the client's: a `RUN` step runs as root beside buildah (its
//! chroot is no boundary for root), so it can write any output file. Nothing read back from the
//! pod decides where an image goes or comes from: the repository is podbridge's choice, only
//! the digest is read, and a digest only names content within that repository.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::registry::Credentials;
use super::remote_command::{Streams, Target};
use super::state::MAIN_CONTAINER;
use super::{Result, Runtime, RuntimeError};
use crate::labels;
use crate::model::ImageConfig;

/// The role of built-image records.
pub const ROLE_BUILT_IMAGE: &str = "built-image";
/// Where the context is unpacked in the builder, and where buildah's outputs go.
pub const WORKSPACE: &str = "/workspace";
pub const CONTEXT_DIR: &str = "/workspace/context";
const IID_FILE: &str = "/workspace/.podbridge-iid";
const CERT_DIR: &str = "/workspace/.podbridge-certs";
const AUTH_FILE: &str = "/workspace/.podbridge-auth.json";
const DIGEST_FILE: &str = "/workspace/.podbridge-digest";
/// The build context as uploaded, before it is unpacked.
const CONTEXT_FILE: &str = "/workspace/.podbridge-context";
/// How long an upload may take to reach its file once the client has sent it all.
const UPLOAD_SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// `docker load`'s archive, as uploaded.
const ARCHIVE_FILE: &str = "/workspace/.podbridge-load.tar";
/// Where `docker save` assembles its archive.
const SAVE_DIR: &str = "/workspace/save";
/// The most images one `docker load` archive or `docker save` request may hold.
pub const MAX_ARCHIVE_IMAGES: usize = 64;
/// The longest line of builder output passed on as one message; longer ones are split.
const MAX_LINE: usize = 64 * 1024;

/// Where builds run and where their images go (configuration `build_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct BuildSettings {
    /// The builder image (buildah).
    pub image: String,
    /// Repository prefix built images are pushed to, as the builder pod reaches the registry
    /// (`registry.example:5000/ci-builds`); `None` disables `docker build` (501).
    pub registry: Option<String>,
    /// The same prefix as the nodes pull from it, when they reach it under another name.
    pub pull_registry: Option<String>,
    /// The registry speaks plain HTTP or has a certificate the builder does not trust.
    pub insecure: bool,
    /// How long one build may run.
    pub timeout: Duration,
    /// CA certificates (PEM) the builder trusts for registries besides its own bundle: the
    /// same files podbridge trusts (`registry_ca_files`).
    pub ca_pem: Option<String>,
}

impl Default for BuildSettings {
    fn default() -> Self {
        BuildSettings {
            image: crate::config::DEFAULT_BUILD_IMAGE.into(),
            registry: None,
            pull_registry: None,
            insecure: false,
            timeout: Duration::from_secs(1800),
            ca_pem: None,
        }
    }
}

impl BuildSettings {
    /// Whether `reference` is in the build registry and that registry is insecure.
    fn insecure_for(&self, reference: &str) -> bool {
        let host = |r: &str| r.split('/').next().unwrap_or_default().to_string();
        self.insecure && self.registry.as_deref().map(host) == Some(host(reference))
    }

    /// The repository of this instance's builds: per namespace and instance, so one session
    /// never pulls or overwrites another's tags.
    fn repository(prefix: &str, namespace: &str, instance: &str) -> String {
        format!(
            "{}/{}/{}",
            prefix.trim_end_matches('/'),
            repository_component(namespace),
            repository_component(instance)
        )
    }
}

/// A name as a repository path component (`[a-z0-9]+([._-][a-z0-9]+)*`).
fn repository_component(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "x".into()
    } else {
        out
    }
}

/// The classic build API's options that reach the builder.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildOptions {
    /// Path of the Dockerfile inside the context.
    pub dockerfile: String,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub no_cache: bool,
    pub pull: bool,
}

/// One image `docker build` made, as recorded in its ConfigMap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BuiltImage {
    /// The record's key (per instance and image ID).
    pub id: String,
    /// Docker's image ID: the digest of the image config.
    pub image_id: String,
    /// What the nodes pull (`repository@sha256:…`).
    pub pull_reference: String,
    /// Normalised tags (`docker.io/library/app:latest`), each on at most one built image.
    pub tags: Vec<String>,
    /// RFC 3339.
    pub created: String,
    /// The image's `config` as the builder recorded it (Docker's shape).
    pub config: serde_json::Value,
    pub architecture: String,
    pub os: String,
    /// Bytes of the image's layers as the builder stored them (uncompressed), Docker's `Size`;
    /// 0 in records written before it was kept.
    #[serde(default)]
    pub size: u64,
}

impl BuiltImage {
    /// The config a container inherits, with where the pod pulls it from.
    pub fn image_config(&self) -> ImageConfig {
        let mut config: ImageConfig =
            serde_json::from_value(self.config.clone()).unwrap_or_default();
        config.pull_reference = Some(self.pull_reference.clone());
        config
    }

    /// Whether `reference` names this image: a tag, the ID, or an ID prefix (of at least 4
    /// hexadecimal digits, as Docker's short IDs).
    pub fn matches(&self, reference: &str) -> bool {
        let normalised = crate::model::ImageRef::parse(reference)
            .map(|r| r.normalised())
            .unwrap_or_default();
        if self.tags.contains(&normalised) {
            return true;
        }
        names_id(reference, &self.image_id)
    }
}

/// Whether `reference` is image ID `id` or a prefix of it (at least 4 hexadecimal digits, as
/// Docker's short IDs), with or without `sha256:`.
pub fn names_id(reference: &str, id: &str) -> bool {
    let wanted = reference.strip_prefix("sha256:").unwrap_or(reference);
    wanted.len() >= 4
        && wanted.bytes().all(|b| b.is_ascii_hexdigit())
        && id
            .trim_start_matches("sha256:")
            .starts_with(&wanted.to_ascii_lowercase())
}

/// What one finished build produced.
#[derive(Debug, Clone)]
pub struct BuildResult {
    pub image_id: String,
    pub manifest_digest: String,
    pub config: serde_json::Value,
    pub architecture: String,
    pub os: String,
    pub size: u64,
}

/// The builder pod of one build; dropping it deletes the pod (a client that hangs up ends its
/// build).
pub struct Builder {
    runtime: Arc<Runtime>,
    pod: String,
    uid: Option<String>,
    local_tag: String,
    finished: bool,
}

impl Drop for Builder {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let runtime = self.runtime.clone();
        let (pod, uid) = (self.pod.clone(), self.uid.clone());
        tokio::spawn(async move {
            if let Err(error) = runtime
                .applier
                .delete_exact(&runtime.applier.pods(), &pod, uid.as_deref(), Some(0))
                .await
            {
                tracing::warn!(%pod, %error, "Builder pod not deleted");
            }
        });
    }
}

/// Whether a Dockerfile path stays inside the context (no absolute path, no `..`).
pub fn dockerfile_in_context(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.split('/').any(|part| part == "..")
        && !path.contains('\0')
}

/// `tar` flags for a context by its first bytes: Docker accepts gzip, bzip2 and xz contexts.
pub fn tar_flags(first: &[u8]) -> &'static str {
    if first.starts_with(&[0x1f, 0x8b]) {
        "-xzf"
    } else if first.starts_with(b"BZh") {
        "-xjf"
    } else if first.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        "-xJf"
    } else {
        "-xf"
    }
}

impl Runtime {
    pub fn set_build_settings(&self, settings: BuildSettings) {
        *self.build_settings.lock() = settings;
    }

    pub fn build_settings(&self) -> BuildSettings {
        self.build_settings.lock().clone()
    }

    /// This instance's built images.
    pub fn built_images(&self) -> Vec<BuiltImage> {
        self.objects_with_role(ROLE_BUILT_IMAGE)
            .iter()
            .filter(|cm| {
                cm.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(labels::INSTANCE))
                    == Some(&self.instance)
            })
            .filter_map(|cm| {
                cm.metadata
                    .annotations
                    .as_ref()?
                    .get(labels::ANNOTATION_OBJECT)
            })
            .filter_map(|raw| serde_json::from_str(raw).ok())
            .collect()
    }

    /// The built image a reference names: tags first, then IDs.
    pub fn find_built_image(&self, reference: &str) -> Option<BuiltImage> {
        let images = self.built_images();
        let normalised = crate::model::ImageRef::parse(reference)
            .map(|r| r.normalised())
            .ok()?;
        images
            .iter()
            .find(|image| image.tags.contains(&normalised))
            .or_else(|| images.iter().find(|image| image.matches(reference)))
            .cloned()
    }

    /// Records a built image under `tags`, taking each tag off any other built image (a tag
    /// names one image, as in Docker); an image left without tags stays, found by ID.
    pub async fn record_built_image(&self, image: &BuiltImage) -> Result<()> {
        for mut other in self.built_images() {
            if other.id == image.id {
                continue;
            }
            let before = other.tags.len();
            other.tags.retain(|tag| !image.tags.contains(tag));
            if other.tags.len() != before {
                self.store_object(ROLE_BUILT_IMAGE, &other.id, &to_value(&other)?)
                    .await?;
            }
        }
        self.store_object(ROLE_BUILT_IMAGE, &image.id, &to_value(image)?)
            .await
    }

    /// Forgets a built image's record (the pushed content stays in the registry).
    pub async fn delete_built_image(&self, image: &BuiltImage) -> Result<()> {
        self.delete_object(ROLE_BUILT_IMAGE, &image.id).await
    }

    /// The record of a new build: keyed per instance and image ID.
    pub fn built_image(&self, result: &BuildResult, tags: Vec<String>) -> Result<BuiltImage> {
        let settings = self.build_settings();
        let pull_prefix = settings
            .pull_registry
            .or(settings.registry)
            .ok_or_else(|| RuntimeError::BadRequest("docker build is not configured".into()))?;
        let repository = BuildSettings::repository(&pull_prefix, &self.namespace, &self.instance);
        let id = super::objects::object_id(
            ROLE_BUILT_IMAGE,
            &format!("{}/{}", self.instance, result.image_id),
        );
        // The same image built again (every layer from the cache) keeps its earlier tags.
        let mut tags = tags;
        if let Some(earlier) = self.built_images().into_iter().find(|image| image.id == id) {
            for tag in earlier.tags {
                if !tags.contains(&tag) {
                    tags.push(tag);
                }
            }
        }
        Ok(BuiltImage {
            id,
            image_id: result.image_id.clone(),
            pull_reference: format!("{repository}@{}", result.manifest_digest),
            tags,
            created: super::now_rfc3339(),
            config: result.config.clone(),
            architecture: result.architecture.clone(),
            os: result.os.clone(),
            size: result.size,
        })
    }

    /// Records what a build or load produced under the client's `tags` (as given: normalised
    /// here; ones that do not parse are left out).
    pub async fn record_result(&self, result: &BuildResult, tags: &[String]) -> Result<BuiltImage> {
        let tags = tags
            .iter()
            .filter_map(|tag| {
                crate::model::ImageRef::parse(tag)
                    .ok()
                    .map(|r| r.normalised())
            })
            .collect();
        let image = self.built_image(result, tags)?;
        self.record_built_image(&image).await?;
        Ok(image)
    }

    /// Applies the builder pod (the policy chain's output, as is) and waits until `main` runs.
    pub async fn start_builder(self: &Arc<Self>, pod: Pod) -> Result<Builder> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let written = self.applier.apply_owned(&self.applier.pods(), &pod).await?;
        let builder = Builder {
            runtime: self.clone(),
            pod: name.clone(),
            uid: written.metadata.uid.clone(),
            local_tag: format!("localhost/podbridge-build/{name}"),
            finished: false,
        };
        let mut failure = None;
        let running = self
            .wait_until(self.start_timeout(), |rt| {
                let Some(pod) = rt
                    .pods
                    .state()
                    .into_iter()
                    .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
                else {
                    return false;
                };
                let status = super::state::main_status(&pod);
                let state = status.and_then(|s| s.state.as_ref());
                if state.and_then(|s| s.running.as_ref()).is_some() {
                    return true;
                }
                state.and_then(|s| s.waiting.as_ref()).is_some_and(|w| {
                    w.reason
                        .as_deref()
                        .is_some_and(super::state::is_start_failure)
                }) || state.and_then(|s| s.terminated.as_ref()).is_some()
            })
            .await;
        if running {
            if let Some(pod) = self
                .pods
                .state()
                .into_iter()
                .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
            {
                let status = super::state::main_status(&pod);
                let state = status.and_then(|s| s.state.as_ref());
                if state.and_then(|s| s.running.as_ref()).is_none() {
                    failure = Some(
                        state
                            .and_then(|s| s.waiting.as_ref())
                            .map(|w| {
                                format!(
                                    "{}: {}",
                                    w.reason.clone().unwrap_or_default(),
                                    w.message.clone().unwrap_or_default()
                                )
                            })
                            .unwrap_or_else(|| "the builder exited".into()),
                    );
                }
            }
        } else {
            // Why, in the scheduler's or kubelet's words (an unschedulable builder says which
            // constraint no node met), as a container's start reports it.
            let pod = self
                .pods
                .state()
                .into_iter()
                .find(|p| p.metadata.name.as_deref() == Some(name.as_str()));
            failure = Some(super::containers::not_started_reason(
                pod.as_deref(),
                self.start_timeout(),
            ));
        }
        match failure {
            None => Ok(builder),
            Some(reason) => Err(RuntimeError::StartFailed {
                id: name,
                reason: format!("docker build: {reason}"),
            }),
        }
    }
}

/// The sum of the layer sizes in the manifest `buildah inspect` reports (a JSON document in a
/// string: the image as the builder's storage holds it, layers uncompressed); 0 when absent.
fn layers_size(inspected: &serde_json::Value) -> u64 {
    inspected["Manifest"]
        .as_str()
        .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw).ok())
        .and_then(|manifest| {
            manifest["layers"].as_array().map(|layers| {
                layers
                    .iter()
                    .filter_map(|layer| layer["size"].as_u64())
                    .fold(0u64, u64::saturating_add)
            })
        })
        .unwrap_or(0)
}

fn to_value(image: &BuiltImage) -> Result<serde_json::Value> {
    serde_json::to_value(image).map_err(|e| RuntimeError::BadSpec {
        name: image.id.clone(),
        reason: e.to_string(),
    })
}

impl Builder {
    pub fn pod(&self) -> &str {
        &self.pod
    }

    /// Deletes the builder pod and waits until the watch no longer shows it.
    pub async fn finish(mut self) {
        self.finished = true;
        let runtime = self.runtime.clone();
        if let Err(error) = runtime
            .applier
            .delete_exact(
                &runtime.applier.pods(),
                &self.pod,
                self.uid.as_deref(),
                Some(0),
            )
            .await
        {
            tracing::warn!(pod = %self.pod, %error, "Builder pod not deleted");
            return;
        }
        let pod = self.pod.clone();
        runtime
            .wait_until(Duration::from_secs(30), |rt| {
                !rt.pods
                    .state()
                    .iter()
                    .any(|p| p.metadata.name.as_deref() == Some(pod.as_str()))
            })
            .await;
    }

    /// Unpacks the build context (a tar, possibly compressed) from the client's body into the
    /// builder, at most `max_bytes` of it. Returns the bytes read.
    pub async fn upload_context<S>(&self, body: S, max_bytes: u64) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, axum::Error>> + Unpin,
    {
        let (total, first) = self
            .upload(body, max_bytes, "build context", CONTEXT_FILE)
            .await?;
        let argv: Vec<String> = ["tar", tar_flags(&first), CONTEXT_FILE, "-C", CONTEXT_DIR]
            .map(String::from)
            .to_vec();
        let output = self
            .runtime
            .exec_capture_in(&self.pod, MAIN_CONTAINER, argv, None, 64 * 1024)
            .await?;
        if output.exit_code != 0 {
            let message = String::from_utf8_lossy(&output.stderr).trim().to_string();
            return Err(RuntimeError::BadRequest(format!(
                "the build context could not be unpacked: {}",
                if message.is_empty() {
                    format!("tar exited with {}", output.exit_code)
                } else {
                    message
                }
            )));
        }
        Ok(total)
    }

    /// Writes an image archive (`docker load`'s body) into the builder as [`ARCHIVE_FILE`], at
    /// most `max_bytes` of it. Returns the bytes read.
    pub async fn upload_archive<S>(&self, body: S, max_bytes: u64) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, axum::Error>> + Unpin,
    {
        Ok(self
            .upload(body, max_bytes, "image archive", ARCHIVE_FILE)
            .await?
            .0)
    }

    /// Streams the client's body into `file` in the builder. Returns the bytes read and the
    /// first bytes (which tell a compressed context).
    ///
    /// The shell keeps the exec's stdout open while `cat` writes the file: the test cluster's
    /// containerd stops passing stdin on to a process whose output streams are closed
    /// (`exec cat > file` keeps 32 KiB, with kubectl as well). And stdin is closed only once
    /// `file` holds every byte, so a runtime that drops what it still buffers at EOF cannot
    /// cut the upload short either.
    async fn upload<S>(
        &self,
        mut body: S,
        max_bytes: u64,
        what: &str,
        file: &str,
    ) -> Result<(u64, Bytes)>
    where
        S: Stream<Item = std::result::Result<Bytes, axum::Error>> + Unpin,
    {
        let first = loop {
            match body.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(chunk)) => break Some(chunk),
                Some(Err(error)) => {
                    return Err(RuntimeError::BadRequest(format!(
                        "reading the {what}: {error}"
                    )))
                }
                None => break None,
            }
        };
        let Some(first) = first else {
            return Err(RuntimeError::BadRequest(format!(
                "the {what} is empty: send a tar archive"
            )));
        };
        let argv: Vec<String> = [
            "sh",
            "-c",
            "umask 077 && cat > \"$0\"; status=$?; echo; exit $status",
            file,
        ]
        .map(String::from)
        .to_vec();
        let streams = Streams {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
            initial_size: None,
        };
        let mut session = self
            .runtime
            .remote_command(&self.pod, MAIN_CONTAINER, Target::Exec(&argv), streams)
            .await?;
        let mut stdin = session.stdin.take();
        let mut stderr = session.stderr.take();
        let errors = tokio::spawn(async move {
            let mut text = Vec::new();
            if let Some(stderr) = stderr.as_mut() {
                use tokio::io::AsyncReadExt;
                let _ = stderr.take(64 * 1024).read_to_end(&mut text).await;
            }
            String::from_utf8_lossy(&text).trim().to_string()
        });
        let mut stdout = session.stdout.take();
        let drain = tokio::spawn(async move {
            if let Some(stdout) = stdout.as_mut() {
                let _ = tokio::io::copy(stdout, &mut tokio::io::sink()).await;
            }
        });
        let mut total = first.len() as u64;
        let mut write_error = None;
        if let Some(writer) = stdin.as_mut() {
            let mut chunk = Some(first.clone());
            while let Some(data) = chunk.take() {
                if total > max_bytes {
                    return Err(RuntimeError::TooLarge(format!(
                        "the {what} is larger than {max_bytes} bytes, the limit for this request (config max_archive_bytes)"
                    )));
                }
                if let Err(error) = writer.write_all(&data).await {
                    write_error = Some(error.to_string());
                    break;
                }
                match body.next().await {
                    Some(Ok(next)) => {
                        total += next.len() as u64;
                        chunk = Some(next);
                    }
                    Some(Err(error)) => {
                        return Err(RuntimeError::BadRequest(format!(
                            "reading the {what}: {error}"
                        )))
                    }
                    None => {}
                }
            }
            if write_error.is_none() {
                self.await_size(file, total, what).await?;
            }
            let _ = writer.shutdown().await;
        }
        drop(stdin);
        let status = session
            .status()
            .await
            .map_err(|source| RuntimeError::RemoteCommand {
                operation: "upload",
                pod: self.pod.clone(),
                source,
            })?;
        let message = errors.await.unwrap_or_default();
        let _ = drain.await;
        let code = super::exec::exit_code_of(status.as_ref());
        if code != 0 || write_error.is_some() {
            return Err(RuntimeError::BadRequest(format!(
                "the {what} could not be written into the builder: {}",
                if message.is_empty() {
                    write_error.unwrap_or_else(|| format!("cat exited with {code}"))
                } else {
                    message
                }
            )));
        }
        Ok((total, first))
    }

    /// Waits until `file` in the builder holds `size` bytes (see [`Builder::upload`]).
    async fn await_size(&self, file: &str, size: u64, what: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + UPLOAD_SETTLE_TIMEOUT;
        let mut pause = Duration::from_millis(20);
        loop {
            let output = self
                .runtime
                .exec_capture_in(
                    &self.pod,
                    MAIN_CONTAINER,
                    vec!["stat".into(), "-c".into(), "%s".into(), file.into()],
                    None,
                    256,
                )
                .await?;
            let written: Option<u64> = String::from_utf8_lossy(&output.stdout).trim().parse().ok();
            if written == Some(size) {
                return Ok(());
            }
            if written.is_some_and(|w| w > size) || tokio::time::Instant::now() >= deadline {
                return Err(RuntimeError::BuilderFailed {
                    pod: self.pod.clone(),
                    reason: format!(
                        "the {what} did not reach the builder whole ({} of {size} bytes)",
                        written.unwrap_or(0)
                    ),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Runs `argv` in the builder, sending each output line (stdout and stderr, as they come)
    /// to `lines`; returns the exit code. Stops early when `lines` is closed (the client left).
    pub async fn run(&self, argv: &[String], lines: &mpsc::Sender<String>) -> Result<i64> {
        let streams = Streams {
            stdin: false,
            stdout: true,
            stderr: true,
            tty: false,
            initial_size: None,
        };
        let mut session = self
            .runtime
            .remote_command(&self.pod, MAIN_CONTAINER, Target::Exec(argv), streams)
            .await?;
        let forward = |reader: Option<tokio::io::DuplexStream>| {
            let lines = lines.clone();
            async move {
                let Some(reader) = reader else { return };
                let mut reader = tokio::io::BufReader::new(reader);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match (&mut reader)
                        .take(MAX_LINE as u64)
                        .read_until(b'\n', &mut line)
                        .await
                    {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            let text = String::from_utf8_lossy(&line).into_owned();
                            if lines.send(text).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        };
        use tokio::io::AsyncReadExt;
        tokio::join!(
            forward(session.stdout.take()),
            forward(session.stderr.take())
        );
        if lines.is_closed() {
            return Err(RuntimeError::Conflict("the client hung up".into()));
        }
        let status = session
            .status()
            .await
            .map_err(|source| RuntimeError::RemoteCommand {
                operation: "build",
                pod: self.pod.clone(),
                source,
            })?;
        Ok(super::exec::exit_code_of(status.as_ref()))
    }

    /// Gives the builder what registries need: the CA certificates podbridge trusts and the
    /// client's credentials (written into the builder only; a `RUN` step could read them, as
    /// in any builder that pulls with them). Returns buildah's flags for them.
    pub async fn prepare_access(
        &self,
        settings: &BuildSettings,
        credentials: &[(String, Credentials)],
    ) -> Result<Vec<String>> {
        let mut flags = Vec::new();
        let mut files: Vec<(String, String)> = Vec::new();
        if let Some(pem) = &settings.ca_pem {
            files.push((format!("{CERT_DIR}/ca.crt"), pem.clone()));
            flags.extend(["--cert-dir".to_string(), CERT_DIR.to_string()]);
        }
        if !credentials.is_empty() {
            files.push((AUTH_FILE.to_string(), auth_file(credentials)));
            flags.extend(["--authfile".to_string(), AUTH_FILE.to_string()]);
        }
        for (path, content) in files {
            self.write_file(&path, &content).await?;
        }
        Ok(flags)
    }

    /// Writes a small file (a few KiB) into the builder, whole or not at all: in the command
    /// line, not on stdin.
    async fn write_file(&self, path: &str, content: &str) -> Result<()> {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(content);
        let argv: Vec<String> = [
            "sh",
            "-c",
            "umask 077 && mkdir -p \"$(dirname \"$0\")\" && printf %s \"$1\" | base64 -d > \"$0\"",
            path,
            &encoded,
        ]
        .map(String::from)
        .to_vec();
        let output = self
            .runtime
            .exec_capture_in(&self.pod, MAIN_CONTAINER, argv, None, 4096)
            .await?;
        if output.exit_code != 0 {
            return Err(RuntimeError::StartFailed {
                id: self.pod.clone(),
                reason: format!("writing {path} into the builder failed"),
            });
        }
        Ok(())
    }

    /// Runs `argv` in the builder and returns its stdout; a non-zero exit is `failure` with the
    /// command's last line of stderr.
    async fn capture(&self, argv: Vec<String>, max_output: usize, failure: &str) -> Result<String> {
        let output = self
            .runtime
            .exec_capture_in(&self.pod, MAIN_CONTAINER, argv, None, max_output)
            .await?;
        if output.exit_code != 0 || output.truncated {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(RuntimeError::BuilderFailed {
                pod: self.pod.clone(),
                reason: format!(
                    "{failure}: {}",
                    last_line(&stderr).trim_start_matches("Error: ")
                ),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Pulls `source` into the builder's storage; returns the image ID (`sha256:…`).
    async fn pull(
        &self,
        settings: &BuildSettings,
        access: &[String],
        source: &str,
    ) -> Result<String> {
        let argv = pull_argv(settings, access, source);
        let stdout = self
            .capture(argv, 64 * 1024, &format!("{source} could not be pulled"))
            .await?;
        image_id_line(&stdout).ok_or_else(|| RuntimeError::BuilderFailed {
            pod: self.pod.clone(),
            reason: format!("buildah pull {source} printed no image ID"),
        })
    }

    /// `docker load`: every image of the uploaded archive (a `docker save` archive, read by
    /// its `manifest.json`) is pushed to this instance's repository, as a build's result is.
    /// Returns each image with the tags the archive gives it.
    pub async fn load_archive(
        &self,
        settings: &BuildSettings,
    ) -> Result<Vec<(BuildResult, Vec<String>)>> {
        let manifest = self
            .capture(
                ["tar", "-xOf", ARCHIVE_FILE, "manifest.json"]
                    .map(String::from)
                    .to_vec(),
                1024 * 1024,
                "the archive has no readable manifest.json (docker load takes what docker save writes)",
            )
            .await?;
        let entries = archive_entries(&manifest)?;
        let mut loaded = Vec::new();
        for (index, tags) in entries.into_iter().enumerate() {
            let source = format!("docker-archive:{ARCHIVE_FILE}:@{index}");
            let iid = self.pull(settings, &[], &source).await?;
            let local = iid.trim_start_matches("sha256:").to_string();
            let result = self.push_local(settings, &[], &local, iid).await?;
            loaded.push((result, tags));
        }
        Ok(loaded)
    }

    /// `docker save`: pulls each image into the builder and assembles one archive of them in
    /// [`SAVE_DIR`], as `docker save` writes it (`manifest.json` naming each image's tags,
    /// the configs and layers by digest). `images` are (where the builder pulls it, the tags
    /// to record in the archive).
    pub async fn save_archive(
        &self,
        settings: &BuildSettings,
        access: &[String],
        images: &[(String, Vec<String>)],
    ) -> Result<()> {
        let mut manifest = Vec::new();
        for (index, (source, tags)) in images.iter().enumerate() {
            let iid = self.pull(settings, access, source).await?;
            let part = format!("{WORKSPACE}/save-{index}.tar");
            self.capture(
                [
                    "buildah".to_string(),
                    "push".to_string(),
                    "-q".to_string(),
                    iid.trim_start_matches("sha256:").to_string(),
                    format!("docker-archive:{part}"),
                ]
                .to_vec(),
                64 * 1024,
                &format!("{source} could not be written as an archive"),
            )
            .await?;
            let entry = self
                .capture(
                    [
                        "sh",
                        "-c",
                        "mkdir -p \"$1\" && tar -xf \"$0\" -C \"$1\" && rm -f \"$0\" \"$1/repositories\" && cat \"$1/manifest.json\" && rm \"$1/manifest.json\"",
                        &part,
                        SAVE_DIR,
                    ]
                    .map(String::from)
                    .to_vec(),
                    1024 * 1024,
                    &format!("{source} could not be written as an archive"),
                )
                .await?;
            let mut entries: Vec<serde_json::Value> =
                serde_json::from_str(&entry).map_err(|e| RuntimeError::BuilderFailed {
                    pod: self.pod.clone(),
                    reason: format!("the archive of {source}: {e}"),
                })?;
            for mut entry in entries.drain(..) {
                entry["RepoTags"] = serde_json::json!(tags);
                manifest.push(entry);
            }
        }
        let text = serde_json::to_string(&manifest).map_err(|e| RuntimeError::BuilderFailed {
            pod: self.pod.clone(),
            reason: e.to_string(),
        })?;
        self.write_file(&format!("{SAVE_DIR}/manifest.json"), &text)
            .await
    }

    /// The archive [`Builder::save_archive`] assembled, as a stream of tar bytes; the builder
    /// pod goes when the stream ends or is dropped (the client hung up).
    pub async fn stream_saved(self) -> Result<impl Stream<Item = std::io::Result<Bytes>>> {
        let argv: Vec<String> = ["sh", "-c", "cd \"$0\" && exec tar -cf - -- *", SAVE_DIR]
            .map(String::from)
            .to_vec();
        let streams = Streams {
            stdin: false,
            stdout: true,
            stderr: false,
            tty: false,
            initial_size: None,
        };
        let mut session = self
            .runtime
            .remote_command(&self.pod, MAIN_CONTAINER, Target::Exec(&argv), streams)
            .await?;
        let stdout = session
            .stdout
            .take()
            .ok_or_else(|| RuntimeError::BuilderFailed {
                pod: self.pod.clone(),
                reason: "the builder gave no output stream".into(),
            })?;
        let reader = tokio_util::io::ReaderStream::new(stdout);
        // The session and the builder live as long as the stream.
        let keep = (session, self);
        Ok(reader.chain(futures::stream::once(async move {
            drop(keep);
            Ok(Bytes::new())
        })))
    }

    /// Pushes `source` (a reference the builder can pull: this instance's repository by
    /// digest, or a registry image) to `target`, streaming buildah's lines; returns the pushed
    /// manifest's digest, or why the push failed.
    pub async fn push_to(
        &self,
        settings: &BuildSettings,
        source: &str,
        target: &str,
        access: &[String],
        lines: &mpsc::Sender<String>,
    ) -> Result<std::result::Result<String, String>> {
        let pull = pull_argv(settings, access, source);
        let code = self.run(&pull, lines).await?;
        if code != 0 {
            return Ok(Err(format!(
                "the image could not be loaded into the builder (buildah pull exited with {code})"
            )));
        }
        let push = push_argv(access, settings.insecure_for(target), source, target);
        let code = self.run(&push, lines).await?;
        if code != 0 {
            return Ok(Err(format!(
                "push to {target} failed (buildah push exited with {code})"
            )));
        }
        Ok(Ok(self.read_digest(DIGEST_FILE).await?))
    }

    /// Where the builder pulls a built image from: this instance's repository, by digest.
    pub fn source_of(&self, settings: &BuildSettings, image: &BuiltImage) -> Option<String> {
        let prefix = settings.registry.as_ref()?;
        let (_, digest) = image.pull_reference.rsplit_once('@')?;
        Some(format!(
            "{}@{digest}",
            BuildSettings::repository(prefix, &self.runtime.namespace, &self.runtime.instance)
        ))
    }

    /// The `buildah bud` command line.
    pub fn build_argv(
        &self,
        options: &BuildOptions,
        settings: &BuildSettings,
        cache: Option<&str>,
        access: &[String],
    ) -> Vec<String> {
        let mut argv: Vec<String> = vec![
            "buildah".into(),
            "bud".into(),
            "--format".into(),
            "docker".into(),
            "--iidfile".into(),
            IID_FILE.into(),
            "-f".into(),
            format!("{CONTEXT_DIR}/{}", options.dockerfile),
            "-t".into(),
            self.local_tag.clone(),
        ];
        if settings.insecure {
            argv.push("--tls-verify=false".into());
        }
        for (key, value) in &options.build_args {
            argv.push("--build-arg".into());
            argv.push(format!("{key}={value}"));
        }
        if let Some(target) = &options.target {
            argv.push("--target".into());
            argv.push(target.clone());
        }
        for (key, value) in &options.labels {
            argv.push("--label".into());
            argv.push(format!("{key}={value}"));
        }
        if options.pull {
            argv.push("--pull-always".into());
        }
        if options.no_cache {
            argv.push("--no-cache".into());
        } else if let Some(cache) = cache {
            argv.extend([
                "--layers".into(),
                "--cache-from".into(),
                cache.into(),
                "--cache-to".into(),
                cache.into(),
            ]);
        }
        argv.extend(access.iter().cloned());
        argv.push("--".into());
        argv.push(CONTEXT_DIR.into());
        argv
    }

    /// Pushes the built image to this instance's repository and reads back what was built.
    pub async fn push_and_inspect(
        &self,
        settings: &BuildSettings,
        access: &[String],
    ) -> Result<BuildResult> {
        let iid = self.read_digest(IID_FILE).await?;
        let local = self.local_tag.clone();
        self.push_local(settings, access, &local, iid).await
    }

    /// Pushes `local` (an image in the builder's storage, whose ID is `iid`) to this
    /// instance's repository and reads back its config.
    async fn push_local(
        &self,
        settings: &BuildSettings,
        access: &[String],
        local: &str,
        iid: String,
    ) -> Result<BuildResult> {
        let prefix = settings
            .registry
            .clone()
            .ok_or_else(|| RuntimeError::BadRequest("docker build is not configured".into()))?;
        let repository =
            BuildSettings::repository(&prefix, &self.runtime.namespace, &self.runtime.instance);
        let destination = format!(
            "{repository}:{}",
            iid.trim_start_matches("sha256:")
                .get(..12)
                .unwrap_or_default()
        );
        let push = push_argv(access, settings.insecure, local, &destination);
        let (sink, mut drain) = mpsc::channel::<String>(256);
        let collected = tokio::spawn(async move {
            let mut text = String::new();
            while let Some(line) = drain.recv().await {
                if text.len() < 16 * 1024 {
                    text.push_str(&line);
                }
            }
            text
        });
        let code = self.run(&push, &sink).await?;
        drop(sink);
        let output = collected.await.unwrap_or_default();
        if code != 0 {
            return Err(RuntimeError::StartFailed {
                id: self.pod.clone(),
                reason: format!(
                    "pushing the built image to {repository} failed ({code}): {}",
                    last_line(&output)
                ),
            });
        }
        let manifest_digest = self.read_digest(DIGEST_FILE).await?;
        let inspect = self
            .runtime
            .exec_capture_in(
                &self.pod,
                MAIN_CONTAINER,
                vec![
                    "buildah".into(),
                    "inspect".into(),
                    "--type".into(),
                    "image".into(),
                    local.to_string(),
                ],
                None,
                4 * 1024 * 1024,
            )
            .await?;
        let inspected: serde_json::Value =
            serde_json::from_slice(&inspect.stdout).map_err(|e| RuntimeError::BadSpec {
                name: self.pod.clone(),
                reason: format!("buildah inspect: {e}"),
            })?;
        let docker = &inspected["Docker"];
        Ok(BuildResult {
            image_id: iid,
            manifest_digest,
            config: docker["config"].clone(),
            architecture: docker["architecture"]
                .as_str()
                .unwrap_or("amd64")
                .to_string(),
            os: docker["os"].as_str().unwrap_or("linux").to_string(),
            size: layers_size(&inspected),
        })
    }

    /// A `sha256:<64 hex>` written by buildah into the builder; anything else is refused.
    async fn read_digest(&self, path: &str) -> Result<String> {
        let output = self
            .runtime
            .exec_capture_in(
                &self.pod,
                MAIN_CONTAINER,
                vec!["cat".into(), path.into()],
                None,
                256,
            )
            .await?;
        let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
        let hex = text.strip_prefix("sha256:").unwrap_or_default();
        if output.exit_code == 0
            && hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            Ok(text)
        } else {
            Err(RuntimeError::BadSpec {
                name: self.pod.clone(),
                reason: format!("{path} does not hold a digest"),
            })
        }
    }

    /// Makes images built earlier by this instance available to `FROM` under the names the
    /// Dockerfile uses: pulled from this instance's repository by digest, tagged locally
    /// (buildah then takes the local image instead of asking a registry).
    pub async fn preload(
        &self,
        settings: &BuildSettings,
        images: &[(String, BuiltImage)],
    ) -> Result<()> {
        let Some(prefix) = settings.registry.as_ref() else {
            return Ok(());
        };
        let repository =
            BuildSettings::repository(prefix, &self.runtime.namespace, &self.runtime.instance);
        for (name, image) in images {
            let Some((_, digest)) = image.pull_reference.rsplit_once('@') else {
                continue;
            };
            let source = format!("{repository}@{digest}");
            let local = crate::model::ImageRef::parse(name)
                .map(|r| r.normalised())
                .map_err(|e| RuntimeError::BadRequest(e.to_string()))?;
            for argv in [
                pull_argv(settings, &[], &source),
                vec!["buildah".into(), "tag".into(), source.clone(), local],
            ] {
                let output = self
                    .runtime
                    .exec_capture_in(&self.pod, MAIN_CONTAINER, argv, None, 64 * 1024)
                    .await?;
                if output.exit_code != 0 {
                    return Err(RuntimeError::StartFailed {
                        id: self.pod.clone(),
                        reason: format!(
                            "docker build: the image {name} built here could not be loaded into the builder: {}",
                            last_line(&String::from_utf8_lossy(&output.stderr))
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// The Dockerfile as uploaded (for its `FROM` lines); at most 1 MiB.
    pub async fn dockerfile(&self, path: &str) -> Result<String> {
        let output = self
            .runtime
            .exec_capture_in(
                &self.pod,
                MAIN_CONTAINER,
                vec!["cat".into(), "--".into(), format!("{CONTEXT_DIR}/{path}")],
                None,
                1024 * 1024,
            )
            .await?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The cache repository of this instance's builds (`--cache-from`/`--cache-to`).
    pub fn cache_repository(&self, settings: &BuildSettings) -> Option<String> {
        settings.registry.as_ref().map(|prefix| {
            format!(
                "{}/cache",
                BuildSettings::repository(prefix, &self.runtime.namespace, &self.runtime.instance)
            )
        })
    }
}

/// The images a Dockerfile's `FROM` lines name, as the builder will resolve them: `ARG`s
/// declared before the first `FROM` (their defaults, or the build's `--build-arg`) are
/// substituted; names of earlier stages and `scratch` are not images.
pub fn from_images(dockerfile: &str, build_args: &BTreeMap<String, String>) -> Vec<String> {
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: Vec<String> = Vec::new();
    let mut images: Vec<String> = Vec::new();
    let mut seen_from = false;
    let joined = dockerfile.replace("\\\r\n", " ").replace("\\\n", " ");
    for line in joined.lines() {
        let line = line.trim();
        let mut words = line.split_whitespace();
        let Some(instruction) = words.next() else {
            continue;
        };
        if instruction.eq_ignore_ascii_case("ARG") && !seen_from {
            for declaration in words {
                let (name, default) = declaration
                    .split_once('=')
                    .map_or((declaration, None), |(n, d)| (n, Some(d.trim_matches('"'))));
                if let Some(value) = build_args.get(name).map(String::as_str).or(default) {
                    args.insert(name.to_string(), value.to_string());
                }
            }
        } else if instruction.eq_ignore_ascii_case("FROM") {
            seen_from = true;
            let rest: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
            let Some(image) = rest.first() else { continue };
            let mut name = (*image).to_string();
            for (key, value) in &args {
                name = name
                    .replace(&format!("${{{key}}}"), value)
                    .replace(&format!("${key}"), value);
            }
            if rest.len() >= 3 && rest[1].eq_ignore_ascii_case("AS") {
                stages.push(rest[2].to_ascii_lowercase());
            }
            if !name.contains('$')
                && !name.eq_ignore_ascii_case("scratch")
                && !stages[..stages.len().saturating_sub(usize::from(rest.len() >= 3))]
                    .contains(&name.to_ascii_lowercase())
                && !images.contains(&name)
            {
                images.push(name);
            }
        }
    }
    images
}

/// The tags of each image in a `docker save` archive's `manifest.json`, in order; refused when
/// it is not such a manifest or holds more than [`MAX_ARCHIVE_IMAGES`] images.
pub fn archive_entries(manifest: &str) -> Result<Vec<Vec<String>>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
    }
    let entries: Vec<Entry> = serde_json::from_str(manifest).map_err(|e| {
        RuntimeError::BadRequest(format!("the archive's manifest.json is not valid: {e}"))
    })?;
    if entries.is_empty() {
        return Err(RuntimeError::BadRequest(
            "the archive's manifest.json names no image".into(),
        ));
    }
    if entries.len() > MAX_ARCHIVE_IMAGES {
        return Err(RuntimeError::BadRequest(format!(
            "the archive holds {} images, more than the {MAX_ARCHIVE_IMAGES} one load may take",
            entries.len()
        )));
    }
    entries
        .into_iter()
        .map(|entry| {
            if entry.config.is_empty() {
                return Err(RuntimeError::BadRequest(
                    "the archive's manifest.json has an image without a config".into(),
                ));
            }
            let tags = entry.repo_tags.unwrap_or_default();
            for tag in &tags {
                crate::model::ImageRef::parse(tag).map_err(|e| {
                    RuntimeError::BadRequest(format!("the archive's tag {tag:?}: {e}"))
                })?;
            }
            Ok(tags)
        })
        .collect()
}

/// The image ID `buildah pull -q` prints (its last line: 64 hexadecimal digits).
fn image_id_line(stdout: &str) -> Option<String> {
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty())?.trim();
    let hex = line.strip_prefix("sha256:").unwrap_or(line);
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then(|| format!("sha256:{hex}"))
}

/// `buildah pull -q` of `source` (a registry reference or a `docker-archive:` path), with the
/// access flags and `--tls-verify=false` for an insecure build registry.
fn pull_argv(settings: &BuildSettings, access: &[String], source: &str) -> Vec<String> {
    let mut argv: Vec<String> = vec!["buildah".into(), "pull".into(), "-q".into()];
    argv.extend(access.iter().cloned());
    if settings.insecure_for(source) {
        argv.push("--tls-verify=false".into());
    }
    argv.push(source.into());
    argv
}

/// `buildah push` of `source` to `destination` (a registry reference), writing the pushed
/// manifest's digest to the digest file.
fn push_argv(access: &[String], insecure: bool, source: &str, destination: &str) -> Vec<String> {
    let mut argv: Vec<String> = [
        "buildah",
        "push",
        "--format",
        "docker",
        "--digestfile",
        DIGEST_FILE,
    ]
    .map(String::from)
    .to_vec();
    argv.extend(access.iter().cloned());
    if insecure {
        argv.push("--tls-verify=false".into());
    }
    argv.extend([source.to_string(), format!("docker://{destination}")]);
    argv
}

/// Registry credentials from `X-Registry-Config` (base64url, or standard as dockerode sends it,
/// of a JSON map server → `{username, password}` or `{auth}`); unreadable is none, as dockerd
/// ignores it.
pub fn registry_config(header: &str) -> Vec<(String, Credentials)> {
    use base64::Engine;
    let engines = [
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD,
    ];
    let Some(raw) = engines.iter().find_map(|e| e.decode(header.trim()).ok()) else {
        return Vec::new();
    };
    let Ok(map) = serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(&raw) else {
        return Vec::new();
    };
    map.into_iter()
        .filter_map(|(server, entry)| {
            let mut credentials = Credentials {
                username: entry["username"].as_str().unwrap_or_default().to_string(),
                password: entry["password"].as_str().unwrap_or_default().to_string(),
            };
            if credentials.username.is_empty() {
                let pair = entry["auth"]
                    .as_str()
                    .and_then(|auth| base64::engine::general_purpose::STANDARD.decode(auth).ok())?;
                let pair = String::from_utf8(pair).ok()?;
                let (user, password) = pair.split_once(':')?;
                credentials = Credentials {
                    username: user.to_string(),
                    password: password.to_string(),
                };
            }
            Some((registry_host(&server), credentials))
        })
        .collect()
}

/// The host of a registry as config files name it (`https://index.docker.io/v1/` → `docker.io`).
pub fn registry_host(server: &str) -> String {
    let host = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => host,
    }
}

/// buildah's auth file (`containers-auth.json`) for these credentials.
pub fn auth_file(entries: &[(String, Credentials)]) -> String {
    use base64::Engine;
    let auths: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(server, credentials)| {
            let pair = format!("{}:{}", credentials.username, credentials.password);
            (
                server.clone(),
                serde_json::json!({"auth": base64::engine::general_purpose::STANDARD.encode(pair)}),
            )
        })
        .collect();
    serde_json::json!({ "auths": auths }).to_string()
}

/// The last non-empty line of a text (an error's summary).
pub fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_archives_are_read_by_their_manifest() {
        let manifest = r#"[{"Config":"ab.json","RepoTags":["app:1","reg.example:5000/x/y:2"],"Layers":["l.tar"]},
            {"Config":"cd.json","RepoTags":null,"Layers":[]}]"#;
        assert_eq!(
            archive_entries(manifest).unwrap(),
            vec![
                vec!["app:1".to_string(), "reg.example:5000/x/y:2".to_string()],
                vec![]
            ]
        );
        for hostile in [
            "",
            "{}",
            "[]",
            r#"[{"Config":"","RepoTags":[]}]"#,
            r#"[{"Config":"a.json","RepoTags":["Not A Tag"]}]"#,
            r#"[{"RepoTags":["a"]}]"#,
        ] {
            assert!(
                matches!(archive_entries(hostile), Err(RuntimeError::BadRequest(_))),
                "{hostile}"
            );
        }
        let many = format!("[{}]", vec![r#"{"Config":"a.json"}"#; 65].join(","));
        assert!(archive_entries(&many).is_err());
    }

    #[test]
    fn pulled_image_ids_are_read_from_the_last_line_only() {
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(
            image_id_line(&format!("Getting image source signatures\n{hex}\n")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(
            image_id_line(&format!("sha256:{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(image_id_line(&format!("{hex}\nsomething else")), None);
        assert_eq!(image_id_line(&hex.to_uppercase()), None);
        assert_eq!(image_id_line(""), None);
    }

    #[test]
    fn repositories_are_per_namespace_and_instance() {
        assert_eq!(
            BuildSettings::repository("10.0.0.1:5000/builds/", "ci-42", "Runner_7.local"),
            "10.0.0.1:5000/builds/ci-42/runner-7-local"
        );
        assert_eq!(repository_component("--"), "x");
    }

    #[test]
    fn from_lines_name_images_not_stages() {
        let dockerfile = "ARG BASE=busybox\nARG TAG\nFROM ${BASE}:${TAG} AS one\nRUN x\nFROM --platform=linux/amd64 app-base \\\n  AS two\nFROM one\nFROM scratch\nFROM $BASE\nCOPY --from=two / /\n";
        let args = BTreeMap::from([("TAG".to_string(), "1".to_string())]);
        assert_eq!(
            from_images(dockerfile, &args),
            ["busybox:1", "app-base", "busybox"]
        );
        assert_eq!(
            from_images("FROM $UNSET\n", &BTreeMap::new()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn registry_config_and_auth_files() {
        use base64::Engine;
        // as the docker CLI sends it (base64url of server -> credentials), `auth` form too
        let header = base64::engine::general_purpose::URL_SAFE.encode(
            r#"{"https://index.docker.io/v1/":{"username":"u","password":"p"},"10.0.0.1:5443":{"auth":"ZTJlOnMzY3JldA=="}}"#,
        );
        let entries = registry_config(&header);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0, "10.0.0.1:5443");
        assert_eq!(
            (
                entries[0].1.username.as_str(),
                entries[0].1.password.as_str()
            ),
            ("e2e", "s3cret")
        );
        assert_eq!(entries[1].0, "docker.io");
        assert!(registry_config("not base64 !").is_empty());
        assert!(registry_config("e30=").is_empty());
        let file: serde_json::Value = serde_json::from_str(&auth_file(&entries)).unwrap();
        assert_eq!(file["auths"]["10.0.0.1:5443"]["auth"], "ZTJlOnMzY3JldA==");
        let argv = push_argv(&["--authfile".into(), "/a".into()], true, "src", "reg/x:1");
        assert_eq!(
            argv[argv.len() - 2..],
            ["src".to_string(), "docker://reg/x:1".to_string()]
        );
        assert!(
            argv.contains(&"--tls-verify=false".to_string())
                && argv.contains(&"--authfile".to_string())
        );
    }

    #[test]
    fn dockerfiles_stay_in_the_context() {
        assert!(dockerfile_in_context("Dockerfile"));
        assert!(dockerfile_in_context("docker/app.Dockerfile"));
        assert!(dockerfile_in_context(".dockerfile.0123456789abcdef0123"));
        assert!(!dockerfile_in_context("/etc/passwd"));
        assert!(!dockerfile_in_context("../Dockerfile"));
        assert!(!dockerfile_in_context("a/../../b"));
        assert!(!dockerfile_in_context(""));
    }

    #[test]
    fn compressed_contexts_are_recognised() {
        assert_eq!(tar_flags(&[0x1f, 0x8b, 8]), "-xzf");
        assert_eq!(tar_flags(b"BZh91AY"), "-xjf");
        assert_eq!(tar_flags(&[0xfd, b'7', b'z', b'X', b'Z', 0]), "-xJf");
        assert_eq!(tar_flags(b"Dockerfile\0\0"), "-xf");
    }

    #[test]
    fn size_is_the_sum_of_the_stored_layers() {
        let manifest = serde_json::json!({"schemaVersion": 2, "layers": [
            {"digest": "sha256:a", "size": 4_000_000}, {"digest": "sha256:b", "size": 1234}]});
        let inspected = serde_json::json!({"Manifest": manifest.to_string()});
        assert_eq!(layers_size(&inspected), 4_001_234);
        assert_eq!(layers_size(&serde_json::json!({"Manifest": "not json"})), 0);
        assert_eq!(layers_size(&serde_json::json!({})), 0);
        // records written before the size was kept still read
        let old: BuiltImage = serde_json::from_value(serde_json::json!({"Id": "k",
            "ImageId": "sha256:00", "PullReference": "r@sha256:00", "Tags": [], "Created": "",
            "Config": {}, "Architecture": "amd64", "Os": "linux"}))
        .unwrap();
        assert_eq!(old.size, 0);
    }

    #[test]
    fn built_images_match_tags_and_id_prefixes() {
        let image = BuiltImage {
            id: "k".into(),
            image_id: "sha256:2ed1650867dfe6dde28c78bde06afb6819dc6c4bbd80a71fcf7c3253568baac2"
                .into(),
            pull_reference: "r@sha256:00".into(),
            tags: vec![
                "docker.io/library/app:latest".into(),
                "localhost/x/y:z".into(),
            ],
            created: String::new(),
            config: serde_json::json!({"Cmd": ["true"]}),
            architecture: "amd64".into(),
            os: "linux".into(),
            size: 0,
        };
        assert!(image.matches("app"));
        assert!(image.matches("docker.io/library/app:latest"));
        assert!(image.matches("localhost/x/y:z"));
        assert!(image.matches("2ed1650867df"));
        assert!(image.matches("sha256:2ed1650867dfe6dd"));
        assert!(!image.matches("app:other"));
        assert!(!image.matches("2ed"));
        assert!(!image.matches("zzzz"));
        let config = image.image_config();
        assert_eq!(config.cmd, Some(vec!["true".to_string()]));
        assert_eq!(config.pull_reference.as_deref(), Some("r@sha256:00"));
    }
}
