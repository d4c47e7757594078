//! `POST /build`, the classic build API, run by a builder pod (`runtime/build.rs`). As dockerd
//! does, nothing is answered until the whole context has been read: errors up to then (policy,
//! a builder that cannot run, a bad context) are real HTTP statuses with Docker's body; after
//! that the answer is 200 and a failure is the stream's last message (`errorDetail` and `error`,
//! which the docker CLI and docker-py read respectively).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::AppState;
use crate::api::error::{ApiError, Result};
use crate::api::translate::CreateRequest;
use crate::model::{ContainerId, ImageRef, Purpose};
use crate::render::Identity;
use crate::runtime::build::{self, BuildOptions, BuildSettings, Builder};
use crate::runtime::objects::normalise_image;

/// One classic build request, decoded from the query.
#[derive(Debug, Default, PartialEq)]
pub(super) struct BuildRequest {
    pub options: BuildOptions,
    /// Tags as given (`-t`), in order, without duplicates.
    pub tags: Vec<String>,
    pub quiet: bool,
    pub extra_hosts: Vec<String>,
    /// From `X-Registry-Config`: for `FROM` images in registries that need them.
    pub credentials: Vec<(String, crate::runtime::registry::Credentials)>,
}

/// Docker's `BoolValue`: anything but empty, `0`, `no`, `false` and `none` is true.
fn bool_value(value: &str) -> bool {
    !matches!(
        value.to_ascii_lowercase().as_str(),
        "" | "0" | "no" | "false" | "none"
    )
}

/// A JSON object of strings (`buildargs` may hold nulls: "take it from the environment",
/// which a remote daemon has none of, so they are left out).
fn string_map(name: &str, raw: &str) -> Result<BTreeMap<String, String>> {
    if raw.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let map: BTreeMap<String, Option<String>> = serde_json::from_str(raw)
        .map_err(|e| ApiError::BadRequest(format!("invalid {name}: {e}")))?;
    Ok(map
        .into_iter()
        .filter_map(|(key, value)| value.map(|value| (key, value)))
        .collect())
}

pub(super) fn decode(query: &str) -> Result<BuildRequest> {
    let mut request = BuildRequest {
        options: BuildOptions {
            dockerfile: "Dockerfile".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "dockerfile" if !value.is_empty() => request.options.dockerfile = value,
            "t" if !value.is_empty() => {
                ImageRef::parse(&value).map_err(|e| ApiError::BadRequest(e.to_string()))?;
                if !request.tags.contains(&value) {
                    request.tags.push(value);
                }
            }
            "q" => request.quiet = bool_value(&value),
            "nocache" => request.options.no_cache = bool_value(&value),
            "pull" => request.options.pull = bool_value(&value),
            "target" if !value.is_empty() => request.options.target = Some(value),
            "buildargs" => request.options.build_args = string_map("buildargs", &value)?,
            "labels" => request.options.labels = string_map("labels", &value)?,
            "extrahosts" if !value.is_empty() => request.extra_hosts.push(value),
            "remote" if !value.is_empty() => {
                return Err(ApiError::NotImplemented(
                    "remote build contexts (a Git or tarball URL) are not supported by podbridge: send the context as the request body".into(),
                ))
            }
            "version" if value == "2" => {
                return Err(ApiError::BadRequest(
                    "BuildKit builds (version=2) are not supported by podbridge: use the classic builder (DOCKER_BUILDKIT=0)".into(),
                ))
            }
            "platform" if !value.is_empty() && !value.starts_with("linux") => {
                return Err(ApiError::BadRequest(format!(
                    "platform {value} is not supported by podbridge: builds run on linux nodes"
                )))
            }
            _ => {}
        }
    }
    if !build::dockerfile_in_context(&request.options.dockerfile) {
        return Err(ApiError::BadRequest(format!(
            "the Dockerfile ({}) must be within the build context",
            request.options.dockerfile
        )));
    }
    Ok(request)
}

/// The builder pod, as a Docker create request of the builder image translated with
/// `Purpose::Build`: the policy chain shapes and checks it like any pod (a denial is 403
/// naming the rule). The dry-run server prints the same translation.
pub(super) fn builder_translation(
    translator: &crate::api::translate::Translator,
    settings: &BuildSettings,
    extra_hosts: &[String],
) -> Result<crate::api::translate::Translation> {
    let id = ContainerId::random();
    let name = format!("build-{}", id.short());
    let body = json!({
        "Image": settings.image,
        "Entrypoint": ["sh", "-c"],
        "Cmd": [format!("mkdir -p {} && exec sleep {}", build::CONTEXT_DIR, settings.timeout.as_secs() + 60)],
        "WorkingDir": build::WORKSPACE,
        "Env": ["STORAGE_DRIVER=vfs", "BUILDAH_ISOLATION=chroot"],
        "HostConfig": {"ExtraHosts": extra_hosts},
    });
    let body = serde_json::to_vec(&body).map_err(|e| ApiError::Internal(e.to_string()))?;
    let translation = translator
        .translate(&CreateRequest {
            body: &body,
            name: Some(&name),
            image: None,
            identity: Identity {
                id,
                created: crate::runtime::now_rfc3339(),
            },
            start: Default::default(),
            purpose: Purpose::Build,
        })
        .map_err(|error| match error {
            crate::api::translate::TranslateError::Denied { message, results } => {
                crate::api::translate::TranslateError::Denied {
                    message: message.replacen(
                        "container create blocked",
                        "docker build blocked",
                        1,
                    ),
                    results,
                }
            }
            other => other,
        })?;
    Ok(translation)
}

/// A stream slot (a build, push, save or load holds one while it runs) and the builder pod,
/// as the policy chain rendered it, running.
async fn start_builder(
    state: &AppState,
    settings: &BuildSettings,
    extra_hosts: &[String],
) -> Result<(crate::runtime::limits::StreamPermit, Builder)> {
    let permit = state.runtime.stream_permit()?;
    let pod = builder_translation(&state.translator, settings, extra_hosts)?
        .objects
        .pod;
    let builder = state.runtime.start_builder(pod).await?;
    Ok((permit, builder))
}

/// `POST /build/prune`: the layer cache lives in the build registry (`<repository>/cache`),
/// shared by this instance's builds; nothing in podbridge holds build cache.
pub async fn build_prune() -> axum::Json<Value> {
    axum::Json(json!({"CachesDeleted": [], "SpaceReclaimed": 0}))
}

/// `POST /build`.
pub async fn build(
    State(state): State<AppState>,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response> {
    let settings = state.runtime.build_settings();
    if settings.registry.is_none() {
        return Err(ApiError::NotImplemented(
            "docker build needs a registry for the images it builds: configure build_registry (see the README, \"docker build\")".into(),
        ));
    }
    let mut request = decode(uri.query().unwrap_or_default())?;
    request.credentials = headers
        .get("x-registry-config")
        .and_then(|value| value.to_str().ok())
        .map(build::registry_config)
        .unwrap_or_default();
    let (permit, builder) = start_builder(&state, &settings, &request.extra_hosts).await?;
    let max_bytes = state.runtime.limits().max_archive_bytes as u64;
    let size = builder
        .upload_context(body.into_data_stream(), max_bytes)
        .await?;
    tracing::info!(pod = builder.pod(), size, tags = ?request.tags, "Build context unpacked");
    let (messages, stream) = mpsc::channel::<Value>(64);
    tokio::spawn(async move {
        let _permit = permit;
        run(state, builder, request, settings, messages).await;
    });
    Ok(json_lines(stream))
}

/// A failed step as the classic builder words it (`The command '/bin/sh -c …' returned a
/// non-zero code: N`), which CI logs and some clients look for; buildah's own line otherwise.
fn failed_step_message(last: &str, code: i64) -> String {
    let line = last.strip_prefix("Error: ").unwrap_or(last);
    let run = line
        .strip_prefix("building at STEP \"RUN ")
        .and_then(|rest| rest.rsplit_once("\": exit status "))
        .map(|(command, _)| command.trim());
    match run {
        Some(command) if command.starts_with('[') => {
            let argv: Vec<String> = serde_json::from_str(command).unwrap_or_default();
            format!(
                "The command '[{}]' returned a non-zero code: {code}",
                argv.join(" ")
            )
        }
        Some(command) => {
            format!("The command '/bin/sh -c {command}' returned a non-zero code: {code}")
        }
        None => line.to_string(),
    }
}

/// `POST /images/{name}/push`: a builder pod pulls the image (a built one from this instance's
/// repository, by digest; another from its registry) and pushes it to `name:tag`, with the
/// client's `X-Registry-Auth` and the CA certificates podbridge trusts. Progress as dockerd
/// streams it: `status` lines, the digest line, `aux` with tag and digest; a failure is the
/// stream's last message.
pub(super) async fn push(
    state: AppState,
    name: &str,
    tag: Option<&str>,
    headers: &axum::http::HeaderMap,
) -> Result<Response> {
    let settings = registry_settings(&state, "docker push")?;
    let reference = match tag.filter(|t| !t.is_empty()) {
        Some(tag) => format!("{name}:{tag}"),
        None => name.to_string(),
    };
    let target = ImageRef::parse(&reference)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?
        .normalised();
    let built = state.runtime.find_built_image(&reference);
    // A pulled image tagged for the push (`docker tag busybox reg/x`) is pushed from its source.
    let pulled_source = match &built {
        Some(_) => None,
        None => {
            let record = state
                .runtime
                .find_image(&reference)
                .ok_or_else(|| ApiError::NotFound(format!("No such image: {reference}")))?;
            let source = state
                .runtime
                .images()
                .into_iter()
                .find(|other| {
                    other.id == record.id
                        && normalise_image(&other.reference) != normalise_image(&reference)
                })
                .map(|other| other.reference)
                .ok_or_else(|| {
                    ApiError::NotFound(format!("No such image: {reference} (no registry holds it)"))
                })?;
            Some(
                ImageRef::parse(&source)
                    .map_err(|e| ApiError::BadRequest(e.to_string()))?
                    .normalised(),
            )
        }
    };
    let credentials: Vec<_> = headers
        .get("x-registry-auth")
        .and_then(|value| value.to_str().ok())
        .and_then(crate::runtime::registry::Credentials::from_registry_auth)
        .map(|credentials| {
            vec![(
                build::registry_host(target.split('/').next().unwrap_or_default()),
                credentials,
            )]
        })
        .unwrap_or_default();
    let (permit, builder) = start_builder(&state, &settings, &[]).await?;
    let source = match (&built, pulled_source) {
        (Some(image), _) => builder
            .source_of(&settings, image)
            .ok_or_else(|| ApiError::Internal(format!("{reference} has no pushed digest")))?,
        (None, Some(source)) => source,
        (None, None) => return Err(ApiError::NotFound(format!("No such image: {reference}"))),
    };
    let repository = target
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or(target.as_str(), |(repository, _)| repository)
        .to_string();
    let pushed_tag = target
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or("latest", |(_, tag)| tag)
        .to_string();
    let (messages, stream) = mpsc::channel::<Value>(64);
    tokio::spawn(async move {
        let _permit = permit;
        let _ = messages
            .send(json!({"status": format!("The push refers to repository [{repository}]")}))
            .await;
        let access = match builder.prepare_access(&settings, &credentials).await {
            Ok(access) => access,
            Err(error) => {
                let _ = messages
                    .send(failure_without_code(&error.to_string()))
                    .await;
                return;
            }
        };
        let (lines, mut received) = mpsc::channel::<String>(64);
        let forward_to = messages.clone();
        let forwarder = tokio::spawn(async move {
            let mut last = String::new();
            while let Some(line) = received.recv().await {
                let line = line.trim().to_string();
                if line.is_empty() {
                    continue;
                }
                last = line.clone();
                if forward_to.send(json!({"status": line})).await.is_err() {
                    break;
                }
            }
            last
        });
        let outcome = builder
            .push_to(&settings, &source, &target, &access, &lines)
            .await;
        drop(lines);
        let last = forwarder.await.unwrap_or_default();
        match outcome {
            Ok(Ok(digest)) => {
                builder.finish().await;
                let _ = messages
                    .send(json!({"status": format!("{pushed_tag}: digest: {digest} size: 0")}))
                    .await;
                let _ = messages
                    .send(json!({"progressDetail": {}, "aux": {"Tag": pushed_tag, "Digest": digest, "Size": 0}}))
                    .await;
            }
            Ok(Err(reason)) => {
                let message = if last.is_empty() {
                    reason
                } else {
                    last.strip_prefix("Error: ").unwrap_or(&last).to_string()
                };
                let _ = messages.send(failure_without_code(&message)).await;
            }
            Err(error) => {
                let _ = messages
                    .send(failure_without_code(&error.to_string()))
                    .await;
            }
        }
    });
    Ok(json_lines(stream))
}

/// The build settings, when a build registry is configured; `what` is 501 otherwise.
fn registry_settings(state: &AppState, what: &str) -> Result<BuildSettings> {
    let settings = state.runtime.build_settings();
    if settings.registry.is_none() {
        return Err(ApiError::NotImplemented(format!(
            "{what} runs in a builder pod, which needs build_registry configured (see the README, \"docker build\")"
        )));
    }
    Ok(settings)
}

/// `POST /images/load`: a builder pod takes the archive (what `docker save` writes) and
/// pushes each of its images to this instance's repository, recorded as built images are, so
/// `docker run` of a loaded tag pulls exactly the loaded image. Docker's answer: one
/// `Loaded image: <tag>` line per tag (`Loaded image ID: <id>` for an untagged image); a
/// failure once the archive has been read is the stream's last message, as dockerd's.
pub async fn load(State(state): State<AppState>, body: Body) -> Result<Response> {
    let settings = registry_settings(&state, "docker load")?;
    let (permit, builder) = start_builder(&state, &settings, &[]).await?;
    let max_bytes = state.runtime.limits().max_archive_bytes as u64;
    let size = builder
        .upload_archive(body.into_data_stream(), max_bytes)
        .await?;
    tracing::info!(pod = builder.pod(), size, "Image archive uploaded");
    let (messages, stream) = mpsc::channel::<Value>(64);
    tokio::spawn(async move {
        let _permit = permit;
        let loaded = match builder.load_archive(&settings).await {
            Ok(loaded) => loaded,
            Err(error) => {
                let _ = messages
                    .send(failure_without_code(&error.to_string()))
                    .await;
                return;
            }
        };
        for (result, tags) in loaded {
            let image = match state.runtime.record_result(&result, &tags).await {
                Ok(image) => image,
                Err(error) => {
                    let _ = messages
                        .send(failure_without_code(&error.to_string()))
                        .await;
                    return;
                }
            };
            let attributes = crate::runtime::events::named(&image.image_id, &[]);
            state.runtime.emit(crate::runtime::events::object_event(
                "image",
                "load",
                &image.image_id,
                attributes,
            ));
            let lines: Vec<String> = if tags.is_empty() {
                vec![format!("Loaded image ID: {}\n", image.image_id)]
            } else {
                tags.iter()
                    .map(|tag| format!("Loaded image: {}\n", normalise_image(tag)))
                    .collect()
            };
            for line in lines {
                if messages.send(json!({"stream": line})).await.is_err() {
                    return;
                }
            }
        }
        builder.finish().await;
    });
    Ok(json_lines(stream))
}

/// `GET /images/get?names=…` (the docker CLI's `docker save`).
pub async fn save_many(State(state): State<AppState>, uri: Uri) -> Result<Response> {
    let names: Vec<String> = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .filter(|(key, _)| key == "names")
        .map(|(_, value)| value.into_owned())
        .filter(|value| !value.is_empty())
        .collect();
    save(state, names).await
}

/// `docker save`: a builder pod pulls each image (a built or loaded one from this instance's
/// repository, by digest; a pulled one from its registry) and writes them as one archive in
/// Docker's format, streamed to the client. Each image carries the tags it was asked by (none
/// when asked by ID), as in Docker.
pub(super) async fn save(state: AppState, names: Vec<String>) -> Result<Response> {
    let settings = registry_settings(&state, "docker save")?;
    if names.is_empty() {
        return Err(ApiError::BadRequest("no image names given".into()));
    }
    if names.len() > build::MAX_ARCHIVE_IMAGES {
        return Err(ApiError::BadRequest(format!(
            "{} images asked for, more than the {} one save may hold",
            names.len(),
            build::MAX_ARCHIVE_IMAGES
        )));
    }
    enum Source {
        Built(Box<build::BuiltImage>),
        Registry(String),
    }
    // One entry per image ID, with every tag it was asked by.
    let mut images: Vec<(String, Source, Vec<String>)> = Vec::new();
    for name in &names {
        let (id, source) = match state.runtime.find_built_image(name) {
            Some(built) => (built.image_id.clone(), Source::Built(Box::new(built))),
            None => {
                let record = state
                    .runtime
                    .find_image(name)
                    .ok_or_else(|| ApiError::NotFound(format!("No such image: {name}")))?;
                // A tag made here (`docker tag busybox x`) is saved from the reference a
                // registry holds.
                let mut candidates = vec![record.reference.clone()];
                candidates.extend(
                    state
                        .runtime
                        .images()
                        .into_iter()
                        .filter(|other| other.id == record.id)
                        .map(|other| other.reference),
                );
                let source = candidates
                    .iter()
                    .find(|candidate| state.runtime.registry.cached(candidate).is_some())
                    .unwrap_or(&record.reference);
                let source = ImageRef::parse(source)
                    .map_err(|e| ApiError::BadRequest(e.to_string()))?
                    .normalised();
                (record.id.clone(), Source::Registry(source))
            }
        };
        let tag = asked_by_tag(name, &id).then(|| normalise_image(name));
        match images.iter_mut().find(|(known, _, _)| *known == id) {
            Some((_, _, tags)) => tags.extend(tag.filter(|t| !tags.contains(t))),
            None => images.push((id, source, tag.into_iter().collect())),
        }
    }
    let (permit, builder) = start_builder(&state, &settings, &[]).await?;
    let mut sources = Vec::new();
    for (id, source, tags) in images {
        let source = match source {
            Source::Built(image) => builder
                .source_of(&settings, &image)
                .ok_or_else(|| ApiError::Internal(format!("{id} has no pushed digest")))?,
            Source::Registry(reference) => reference,
        };
        sources.push((source, tags));
    }
    builder.save_archive(&settings, &[], &sources).await?;
    let stream = builder.stream_saved().await?.map(move |chunk| {
        let _ = &permit;
        chunk
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Whether `name` names an image by tag (it goes into the archive's `RepoTags`) rather than by
/// its ID or an ID prefix.
fn asked_by_tag(name: &str, id: &str) -> bool {
    !build::names_id(name, id) && !name.contains('@')
}

/// A progress stream as dockerd sends it: one JSON message per line, `\r\n`-terminated.
fn json_lines(stream: mpsc::Receiver<Value>) -> Response {
    let body = futures::stream::unfold(stream, |mut stream| async move {
        let message = stream.recv().await?;
        Some((
            Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(format!("{message}\r\n"))),
            stream,
        ))
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response()
}

/// A push failure as dockerd ends its stream (no code).
fn failure_without_code(message: &str) -> Value {
    json!({"errorDetail": {"message": message}, "error": message})
}

/// Docker's failure message, ending the stream.
fn failure(code: i64, message: &str) -> Value {
    json!({"errorDetail": {"code": code, "message": message}, "error": message})
}

async fn run(
    state: AppState,
    builder: Builder,
    request: BuildRequest,
    settings: BuildSettings,
    messages: mpsc::Sender<Value>,
) {
    let (lines, mut received) = mpsc::channel::<String>(64);
    let quiet = request.quiet;
    let forward_to = messages.clone();
    let forwarder = tokio::spawn(async move {
        let mut last = String::new();
        while let Some(line) = received.recv().await {
            // buildah names the image by the builder's own tag (or a cache tag); Docker's tags
            // follow at the end.
            if line.starts_with("Successfully tagged ") {
                continue;
            }
            if !line.trim().is_empty() {
                last = line.trim().to_string();
            }
            if !quiet && forward_to.send(json!({"stream": line})).await.is_err() {
                break;
            }
        }
        last
    });
    // Images this instance built earlier, named by a FROM line, come from its own repository.
    if let Ok(dockerfile) = builder.dockerfile(&request.options.dockerfile).await {
        let earlier: Vec<_> = build::from_images(&dockerfile, &request.options.build_args)
            .into_iter()
            .filter_map(|name| {
                state
                    .runtime
                    .find_built_image(&name)
                    .map(|image| (name, image))
            })
            .collect();
        if let Err(error) = builder.preload(&settings, &earlier).await {
            let _ = messages.send(failure(1, &error.to_string())).await;
            return;
        }
    }
    let access = match builder
        .prepare_access(&settings, &request.credentials)
        .await
    {
        Ok(access) => access,
        Err(error) => {
            let _ = messages.send(failure(1, &error.to_string())).await;
            return;
        }
    };
    let cache = builder.cache_repository(&settings);
    let argv = builder.build_argv(&request.options, &settings, cache.as_deref(), &access);
    // A client that hangs up ends the build: dropping the builder deletes its pod.
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(settings.timeout, builder.run(&argv, &lines)) => outcome,
        () = messages.closed() => {
            tracing::info!(pod = builder.pod(), "Build abandoned by its client");
            return;
        }
    };
    drop(lines);
    let last = forwarder.await.unwrap_or_default();
    let code = match outcome {
        Err(_) => {
            let message = format!(
                "the build did not finish within {}s (config build_timeout_seconds)",
                settings.timeout.as_secs()
            );
            let _ = messages.send(failure(1, &message)).await;
            return;
        }
        Ok(Err(error)) => {
            let _ = messages.send(failure(1, &error.to_string())).await;
            return;
        }
        Ok(Ok(code)) => code,
    };
    if messages.is_closed() {
        return;
    }
    if code != 0 {
        let message = failed_step_message(&last, code);
        let _ = messages.send(failure(code, &message)).await;
        return;
    }
    let result = match builder.push_and_inspect(&settings, &access).await {
        Ok(result) => result,
        Err(error) => {
            let _ = messages.send(failure(1, &error.to_string())).await;
            return;
        }
    };
    let image = match state.runtime.record_result(&result, &request.tags).await {
        Ok(image) => image,
        Err(error) => {
            let _ = messages.send(failure(1, &error.to_string())).await;
            return;
        }
    };
    builder.finish().await;
    let short = image
        .image_id
        .trim_start_matches("sha256:")
        .get(..12)
        .unwrap_or_default()
        .to_string();
    for tag in &request.tags {
        let attributes = crate::runtime::events::named(&normalise_image(tag), &[]);
        state.runtime.emit(crate::runtime::events::object_event(
            "image",
            "tag",
            &image.image_id,
            attributes,
        ));
    }
    tracing::info!(image = %image.image_id, reference = %image.pull_reference, "Image built");
    if quiet {
        let _ = messages
            .send(json!({"stream": format!("{}\n", image.image_id)}))
            .await;
        return;
    }
    let mut ending = vec![
        json!({"aux": {"ID": image.image_id}}),
        json!({"stream": format!("Successfully built {short}\n")}),
    ];
    for tag in &request.tags {
        ending.push(json!({"stream": format!("Successfully tagged {}\n", normalise_image(tag))}));
    }
    for message in ending {
        if messages.send(message).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_as_dockerd_reads_them() {
        let request = decode("dockerfile=app.Dockerfile&t=app&t=app:2&t=app&q=False&nocache=1&pull=True&target=final&buildargs=%7B%22A%22%3A%20%22b%22%2C%20%22E%22%3A%20null%7D&labels=%7B%22l%22%3A%22v%22%7D&version=1&rm=0").unwrap();
        assert_eq!(request.options.dockerfile, "app.Dockerfile");
        assert_eq!(request.tags, ["app", "app:2"]);
        assert!(!request.quiet && request.options.no_cache && request.options.pull);
        assert_eq!(request.options.target.as_deref(), Some("final"));
        assert_eq!(
            request.options.build_args,
            BTreeMap::from([("A".to_string(), "b".to_string())])
        );
        assert_eq!(request.options.labels["l"], "v");
        assert_eq!(decode("").unwrap().options.dockerfile, "Dockerfile");
    }

    #[test]
    fn saved_images_carry_the_tags_they_were_asked_by() {
        let id = format!("sha256:{}", "ab12".repeat(16));
        assert!(asked_by_tag("busybox", &id));
        assert!(asked_by_tag("reg.example:5000/app:1", &id));
        assert!(!asked_by_tag("ab12ab", &id));
        assert!(!asked_by_tag(&id, &id));
        assert!(!asked_by_tag("busybox@sha256:00", &id));
        // Hexadecimal that is not this image's ID is a name.
        assert!(asked_by_tag("cafe", &id));
    }

    #[test]
    fn failed_steps_are_worded_as_docker_words_them() {
        assert_eq!(
            failed_step_message(
                "Error: building at STEP \"RUN echo x && exit 7\": exit status 7",
                7
            ),
            "The command '/bin/sh -c echo x && exit 7' returned a non-zero code: 7"
        );
        assert_eq!(
            failed_step_message(
                "Error: building at STEP \"RUN [\"false\", \"x\"]\": exit status 1",
                1
            ),
            "The command '[false x]' returned a non-zero code: 1"
        );
        assert_eq!(
            failed_step_message("Error: no such file", 125),
            "no such file"
        );
    }

    #[test]
    fn unsupported_and_hostile_queries_are_refused() {
        for (query, status) in [
            ("version=2", 400),
            ("dockerfile=../../etc/passwd", 400),
            ("dockerfile=/etc/passwd", 400),
            ("t=Not%20A%20Tag", 400),
            ("buildargs=%5B1%5D", 400),
            ("remote=https://example.invalid/x.git", 501),
            ("platform=windows/amd64", 400),
        ] {
            let error = decode(query).unwrap_err();
            assert_eq!(error.status().as_u16(), status, "{query}");
        }
    }
}
