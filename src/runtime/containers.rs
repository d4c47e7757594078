//! Container lifecycle on the cluster: create (spec ConfigMap), start (apply the pod), stop,
//! kill, remove, rename and wait — each idempotent, each reading state from the watch store.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{Patch, PatchParams};
use tracing::{debug_span, info, warn, Instrument};

use super::record::{encode as encode_record, RECORD_DATA_KEY};
use super::state::{LastExit, SPEC_DATA_KEY};
use super::{ContainerView, Result, Runtime, RuntimeError};
use crate::labels;
use crate::model::{ContainerRecord, ImageConfig};
use crate::render::{RenderedObjects, StartInputs};

/// How long a delete waits for the watch to confirm the objects are gone.
const GONE_TIMEOUT: Duration = Duration::from_secs(30);

/// Outcome of operations Docker answers with 304 when there is nothing to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    AlreadyInState,
}

/// What `wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCondition {
    NotRunning,
    NextExit,
    Removed,
}

/// The serialised form of [`RenderedObjects`] kept in a spec ConfigMap.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredObjects {
    pod: Pod,
    #[serde(default)]
    services: Vec<Service>,
    #[serde(default)]
    config_maps: Vec<ConfigMap>,
    /// The image config the request was translated with at create, so that `start` translates
    /// it again the same way without asking the registry.
    #[serde(default)]
    image_config: Option<ImageConfig>,
}

/// See [`Runtime::stored_translation`].
pub struct StoredTranslation {
    pub name: String,
    pub image_config: Option<ImageConfig>,
    pub start: StartInputs,
}

impl Runtime {
    /// Records a created container: a ConfigMap named like the pod, holding the rendered
    /// objects. Fails with a conflict if the Docker name is taken.
    pub async fn create_container(
        &self,
        name: &str,
        id: &str,
        objects: &RenderedObjects,
        image_config: Option<&ImageConfig>,
    ) -> Result<()> {
        let spec = self.spec_config_map(name, id, objects, &objects.record, image_config)?;
        self.store_new_spec(name, id, &spec).await
    }

    /// Writes a new container's spec ConfigMap and waits until the watch shows it.
    pub(crate) async fn store_new_spec(
        &self,
        name: &str,
        id: &str,
        spec: &ConfigMap,
    ) -> Result<()> {
        // Held until the watch shows the spec (or the request is dropped): the name and the
        // container slot cannot be taken twice, and a cancelled create frees both.
        let _reservation = self.reserve_create(name, super::limits::stored_size(spec))?;
        self.applier
            .apply_owned(&self.applier.config_maps(), spec)
            .await?;
        let id = id.to_string();
        self.wait_until(Duration::from_secs(10), |rt| {
            rt.containers().iter().any(|c| c.id == id)
        })
        .await;
        Ok(())
    }

    /// Replaces the stored objects of an existing container (network connect/disconnect on
    /// the create request); a running container also gets its Services updated at once. Names
    /// taken by objects this instance does not own are left alone (and returned with their
    /// owners); only this container's own Services are deleted.
    pub async fn update_spec(
        &self,
        view: &ContainerView,
        objects: &RenderedObjects,
        image_config: Option<&ImageConfig>,
    ) -> Result<Vec<(String, String)>> {
        self.write_spec(view, objects, image_config).await?;
        if !view.state.running {
            return Ok(Vec::new());
        }
        let wanted: Vec<String> = objects
            .services
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        let taken = self.applier.write_services(&objects.services).await?;
        for service in self.services_of(view.short_id()) {
            if let Some(name) = service
                .metadata
                .name
                .as_deref()
                .filter(|n| !wanted.iter().any(|w| w == n))
            {
                self.applier
                    .delete_exact(
                        &self.applier.services(),
                        name,
                        service.metadata.uid.as_deref(),
                        None,
                    )
                    .await?;
            }
        }
        Ok(taken)
    }

    /// Writes the spec of an existing container anew, within `max_stored_bytes`, and only over
    /// this instance's own spec. The record is the new translation's, with what the runtime
    /// recorded since create (the last exit) kept.
    async fn write_spec(
        &self,
        view: &ContainerView,
        objects: &RenderedObjects,
        image_config: Option<&ImageConfig>,
    ) -> Result<()> {
        let record = ContainerRecord {
            last_exit: view.record.last_exit.clone(),
            ..objects.record.clone()
        };
        let spec = self.spec_config_map(&view.name, &view.id, objects, &record, image_config)?;
        let _bytes = self.reserve_bytes(
            super::limits::stored_size(&spec),
            super::limits::stored_size(&view.spec),
        )?;
        self.applier
            .apply_owned(&self.applier.config_maps(), &spec)
            .await?;
        Ok(())
    }

    /// The spec ConfigMap of a container: named like the pod, holding the rendered objects and
    /// the container's record; annotated like the pod (who it is, what the policy did).
    fn spec_config_map(
        &self,
        name: &str,
        id: &str,
        objects: &RenderedObjects,
        record: &ContainerRecord,
        image_config: Option<&ImageConfig>,
    ) -> Result<ConfigMap> {
        let short_id = id.get(..12).unwrap_or(id);
        let pod_meta = &objects.pod.metadata;
        let pod_name = pod_meta
            .name
            .clone()
            .unwrap_or_else(|| format!("podbridge-{short_id}"));
        let mut spec_labels: BTreeMap<String, String> = pod_meta.labels.clone().unwrap_or_default();
        spec_labels.insert(labels::MANAGED_BY.into(), labels::MANAGED_BY_VALUE.into());
        spec_labels.insert(labels::INSTANCE.into(), self.instance.clone());
        spec_labels.insert(labels::CONTAINER_ID.into(), short_id.to_string());
        spec_labels.insert(labels::ROLE.into(), labels::ROLE_CONTAINER_SPEC.into());
        let mut annotations = pod_meta.annotations.clone().unwrap_or_default();
        annotations.insert(labels::ANNOTATION_CONTAINER_ID.into(), id.into());
        annotations.insert(labels::ANNOTATION_NAME.into(), name.into());
        let stored = StoredObjects {
            pod: objects.pod.clone(),
            services: objects.services.clone(),
            config_maps: objects.config_maps.clone(),
            image_config: image_config.cloned(),
        };
        let data = serde_json::to_string(&stored).map_err(|e| RuntimeError::BadSpec {
            name: pod_name.clone(),
            reason: e.to_string(),
        })?;
        Ok(ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(pod_name),
                namespace: Some(self.namespace.clone()),
                labels: Some(spec_labels),
                annotations: Some(annotations),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                (SPEC_DATA_KEY.to_string(), data),
                (RECORD_DATA_KEY.to_string(), encode_record(record)),
            ])),
            ..Default::default()
        })
    }

    /// The image config a container was created with, when its spec recorded one.
    pub(crate) fn stored_image_config(&self, view: &ContainerView) -> Option<ImageConfig> {
        self.stored_spec(view).ok()?.image_config
    }

    fn stored_spec(&self, view: &ContainerView) -> Result<StoredObjects> {
        let raw = view
            .spec
            .data
            .as_ref()
            .and_then(|d| d.get(SPEC_DATA_KEY))
            .ok_or_else(|| RuntimeError::BadSpec {
                name: view.pod_name.clone(),
                reason: format!("no {SPEC_DATA_KEY}"),
            })?;
        serde_json::from_str(raw).map_err(|e| RuntimeError::BadSpec {
            name: view.pod_name.clone(),
            reason: e.to_string(),
        })
    }

    /// What translating a stored container's request again needs, read from its spec once:
    /// the Docker name it was created with (names derived from it, pod and Services, stay as
    /// created across a rename), the image config stored at create (`None` when the registry
    /// was not asked), and, `for_start`, what it gained since create — files copied in, which
    /// bind sources are single files, and its links' running targets (a link to a container that
    /// is not running refuses the start, as in Docker) — so the policy chain sees everything
    /// applied.
    ///
    /// Bind sources are resolved here, on podbridge's filesystem: one outside `bind_roots`
    /// (a symbolic link leading out of a root) refuses the start before anything is applied.
    pub fn stored_translation(
        &self,
        view: &ContainerView,
        for_start: bool,
    ) -> Result<StoredTranslation> {
        let stored = self.stored_spec(view).ok();
        let name = stored
            .as_ref()
            .and_then(|s| {
                s.pod
                    .metadata
                    .annotations
                    .as_ref()?
                    .get(labels::ANNOTATION_NAME)
            })
            .cloned()
            .unwrap_or_else(|| view.name.clone());
        let start = if for_start {
            let binds = super::binds::resolve_binds(&view.record, &self.bind_settings().roots)
                .map_err(|error| error.for_container(&view.id))?;
            StartInputs {
                archives: self.prestart_archives(view.short_id()),
                file_binds: super::binds::file_binds(&binds),
                links: self.resolve_links(view)?,
            }
        } else {
            StartInputs::default()
        };
        Ok(StoredTranslation {
            name,
            image_config: stored.and_then(|s| s.image_config),
            start,
        })
    }

    /// Applies `objects` — the container's request translated for this start, against the
    /// policy in force (see `api::server::containers::start_objects`) — and waits until `main`
    /// runs (or already ended). Nothing is added to the objects here: what is applied is what
    /// the policy chain saw.
    pub async fn start(&self, view: &ContainerView, objects: RenderedObjects) -> Result<Outcome> {
        if view.state.running {
            return Ok(Outcome::AlreadyInState);
        }
        let short = view.short_id().to_string();
        if view.pod.is_some() {
            // A finished pod cannot run again: replace it under the same deterministic name.
            let uid = view.pod.as_ref().and_then(|pod| pod.metadata.uid.clone());
            self.applier
                .delete_exact(
                    &self.applier.pods(),
                    &view.pod_name,
                    uid.as_deref(),
                    Some(0),
                )
                .await?;
            let gone = self
                .wait_until(GONE_TIMEOUT, |rt| {
                    rt.find(&view.id).map(|v| v.pod.is_none()).unwrap_or(true)
                })
                .await;
            if !gone {
                return Err(RuntimeError::Timeout {
                    operation: "delete before restart",
                    pod: view.pod_name.clone(),
                    seconds: GONE_TIMEOUT.as_secs(),
                });
            }
        }
        if view.record.last_exit.is_some() {
            self.write_last_exit(view, None).await?;
        }
        let mut objects = objects;
        // The runtime addresses the pod by the spec's name, whatever the translation chose.
        objects.pod.metadata.name = Some(view.pod_name.clone());
        // The pod carries the current Docker name, which rename may have changed.
        objects
            .pod
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(labels::ANNOTATION_NAME.into(), view.name.clone());
        // Claims of named volumes that are not bound yet: a missing one fails now, one that
        // cannot bind fails as soon as the cluster says why.
        let pending_claims =
            self.pending_claims(&objects.record)
                .map_err(|error| RuntimeError::StartFailed {
                    id: view.id.clone(),
                    reason: error.to_string(),
                })?;
        // Checked again right before applying (`stored_translation` did at translation): a source
        // refused now fails the start with no pod created.
        let binds = super::binds::resolve_binds(&objects.record, &self.bind_settings().roots)
            .map_err(|error| error.for_container(&view.id))?;
        let taken = self
            .applier
            .apply_rendered(&objects)
            .instrument(debug_span!(target: crate::TIMING, "start.apply"))
            .await?;
        info!(container = %short, pod = %view.pod_name, ?taken, "Pod applied");
        if super::binds::has_init_container(&objects.pod) {
            if let Err(error) = self
                .copy_binds(&view.id, &view.pod_name, &binds, self.start_timeout())
                .await
            {
                warn!(container = %short, %error, "Bind copy failed; removing pod");
                self.applier
                    .delete(&self.applier.pods(), &view.pod_name, Some(0))
                    .await?;
                return Err(error);
            }
        }
        let id = view.id.clone();
        let settle = self.wait_until(self.start_timeout(), |rt| match rt.find(&id) {
            Ok(v) => {
                if !v.state.error.is_empty() && v.state.status == "running" {
                    return true;
                }
                let main_running = v
                    .pod
                    .as_deref()
                    .and_then(super::state::main_status)
                    .and_then(|s| s.state.as_ref())
                    .map(|s| s.running.is_some())
                    .unwrap_or(false);
                main_running || v.state.is_exited()
            }
            Err(_) => true,
        });
        let settle = settle.instrument(debug_span!(target: crate::TIMING, "start.until_running"));
        let (settled, claim_failure) = tokio::select! {
            settled = settle => (settled, None),
            reason = self.claim_warning(&pending_claims) => (false, Some(reason)),
        };
        self.sync_ports(&self.containers());
        let failure = match claim_failure {
            Some(reason) => Some(reason),
            None => match self.find(&id).ok().filter(|v| v.state.status == "running") {
                None => None,
                Some(v) if !v.state.error.is_empty() => Some(v.state.error),
                Some(_) if settled => None,
                // Never ran within the start timeout (unschedulable, a claim that never binds, a
                // slow pull): report why instead of a "running" container that isn't.
                Some(v) => Some(match self.unbound_claims_reason(&pending_claims).await {
                    Some(claims) => format!(
                        "container did not start within {}s: {claims}",
                        self.start_timeout().as_secs()
                    ),
                    None => not_started_reason(v.pod.as_deref(), self.start_timeout()),
                }),
            },
        };
        if let Some(reason) = failure {
            warn!(container = %short, %reason, "Start failed; removing pod");
            let cleanup = if view.auto_remove() {
                // Docker removes an AutoRemove container whose start failed; `run --rm` waits
                // for exactly that (`wait?condition=removed`).
                self.remove_now(view).await
            } else {
                self.applier
                    .delete(&self.applier.pods(), &view.pod_name, Some(0))
                    .await
                    .map_err(RuntimeError::from)
            };
            // The client needs why the start failed first; a failed cleanup comes second.
            let reason = match cleanup {
                Ok(()) => reason,
                Err(error) => format!("{reason}; removing its pod failed too: {error}"),
            };
            return Err(RuntimeError::StartFailed {
                id: view.id.clone(),
                reason,
            });
        }
        Ok(Outcome::Done)
    }

    /// Keeps the end of the container's output on its spec before podbridge deletes the pod (a
    /// kill, a stop past its grace, the end of restarts), so `logs` and `attach` still answer
    /// as Docker's do for a stopped container. Bounded by [`super::logs::KEPT_LOG_BYTES`] and
    /// by `max_stored_bytes`; without room, or if the log cannot be read in time, nothing is
    /// kept (logged).
    async fn keep_last_logs(&self, view: &ContainerView) {
        if view.pod.is_none() {
            return;
        }
        let params = kube::api::LogParams {
            container: Some(super::state::MAIN_CONTAINER.into()),
            timestamps: true,
            tail_lines: Some(super::logs::KEPT_LOG_LINES),
            limit_bytes: Some(super::logs::KEPT_LOG_BYTES as i64),
            ..Default::default()
        };
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            self.pods_api().logs(&view.pod_name, &params),
        )
        .await;
        let text = match read {
            Ok(Ok(text)) if !text.is_empty() => text,
            Ok(Ok(_)) => return,
            Ok(Err(error)) => {
                warn!(container = %view.short_id(), %error, "Output not kept before the pod's deletion");
                return;
            }
            Err(_) => {
                warn!(container = %view.short_id(), "Output not kept: the log did not answer in time");
                return;
            }
        };
        let replaced = view
            .spec
            .data
            .as_ref()
            .and_then(|d| d.get(super::logs::KEPT_LOG_KEY))
            .map_or(0, |old| old.len() as u64);
        let Ok(_bytes) = self.reserve_bytes(text.len() as u64, replaced) else {
            warn!(container = %view.short_id(), "Output not kept: max_stored_bytes reached");
            return;
        };
        let mut patch = serde_json::json!({"data": {super::logs::KEPT_LOG_KEY: text}});
        if let Some(uid) = view.spec.metadata.uid.as_deref() {
            patch["metadata"] = serde_json::json!({ "uid": uid });
        }
        if let Err(error) = self
            .applier
            .config_maps()
            .patch(
                &view.pod_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            warn!(container = %view.short_id(), %error, "Output not kept");
        }
    }

    /// Records an exit on the container's spec (its pod is gone).
    pub(crate) async fn record_exit(&self, view: &ContainerView, exit: &LastExit) -> Result<()> {
        self.write_last_exit(view, Some(exit)).await
    }

    /// Sends `signal` to the container's process 1 through an exec of `kill`.
    pub async fn signal(&self, view: &ContainerView, signal: &str) -> Result<()> {
        let name = signal_name(signal);
        let output = self
            .exec_capture(
                &view.pod_name,
                vec!["kill".into(), "-s".into(), name.clone(), "1".into()],
                None,
            )
            .await?;
        if output.exit_code != 0 {
            return Err(RuntimeError::Conflict(format!(
                "cannot send {name} to container {}: {}",
                view.short_id(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Ends a container whose restart policy has used its retries: the last run's exit stays.
    pub async fn end_restarts(&self, view: &ContainerView) -> Result<()> {
        let exit = LastExit {
            exit_code: view.state.exit_code,
            started_at: view.state.started_at.clone(),
            finished_at: view.state.finished_at.clone(),
            oom_killed: false,
            restart_count: view.state.restart_count,
        };
        self.end_pod(view, exit).await
    }

    /// Ends the container for good: records the exit (SIGKILL semantics, 137) and deletes the pod.
    async fn kill_pod(&self, view: &ContainerView) -> Result<()> {
        let exit = LastExit {
            exit_code: 137,
            started_at: view.state.started_at.clone(),
            finished_at: super::now_rfc3339(),
            oom_killed: false,
            restart_count: view.state.restart_count,
        };
        self.end_pod(view, exit).await
    }

    /// Records `exit` and deletes the pod, waiting until the watch shows it stopped.
    async fn end_pod(&self, view: &ContainerView, exit: LastExit) -> Result<()> {
        // What the container wrote to its binds so far reaches the client's side before the
        // pod (and its emptyDirs) go, as a killed Docker container's writes stay on the host.
        if let Some(pod) = view
            .pod
            .as_deref()
            .filter(|pod| super::state::copy_back_pending(pod))
        {
            self.copy_binds_back(&view.id, &view.record, pod).await;
        }
        self.keep_last_logs(view).await;
        self.write_last_exit(view, Some(&exit)).await?;
        let uid = view.pod.as_ref().and_then(|pod| pod.metadata.uid.clone());
        self.applier
            .delete_exact(
                &self.applier.pods(),
                &view.pod_name,
                uid.as_deref(),
                Some(0),
            )
            .await?;
        let id = view.id.clone();
        self.wait_until(GONE_TIMEOUT, |rt| {
            rt.find(&id).map(|v| !v.state.running).unwrap_or(true)
        })
        .await;
        Ok(())
    }

    /// Docker stop: the stop signal, `timeout` seconds of grace, then SIGKILL.
    pub async fn stop(&self, view: &ContainerView, timeout: Option<i64>) -> Result<Outcome> {
        if !view.state.running {
            return Ok(Outcome::AlreadyInState);
        }
        if view.is_builtin_ryuk() {
            self.end_ryuk(view, true).await?;
            return Ok(Outcome::Done);
        }
        let asked = timeout.unwrap_or_else(|| view.record.stop_timeout_seconds());
        let grace = bounded_grace(asked, view.max_stop_timeout());
        if grace != asked {
            warn!(container = %view.short_id(), asked, grace, "Stop timeout beyond the policy's maximum grace period; using the maximum");
        }
        if grace > 0 {
            if let Err(error) = self.signal(view, &view.stop_signal()).await {
                warn!(container = %view.short_id(), %error, "Stop signal not delivered; killing");
            } else {
                let id = view.id.clone();
                // Negative, as in Docker: no deadline (the client's disconnect ends the wait).
                let grace = u64::try_from(grace).map_or(Duration::MAX, Duration::from_secs);
                let stopped = self
                    .wait_until(grace, |rt| {
                        rt.find(&id).map(|v| !v.state.running).unwrap_or(true)
                    })
                    .await;
                if stopped {
                    return Ok(Outcome::Done);
                }
            }
        }
        self.kill_pod(view).await?;
        Ok(Outcome::Done)
    }

    /// Docker kill: any signal is delivered by exec; SIGKILL ends the pod.
    pub async fn kill(&self, view: &ContainerView, signal: Option<&str>) -> Result<()> {
        if !view.state.running {
            return Err(RuntimeError::Conflict(format!(
                "Cannot kill container: {}: Container {} is not running",
                view.short_id(),
                view.id
            )));
        }
        let signal = signal.filter(|s| !s.is_empty()).unwrap_or("SIGKILL");
        if view.is_builtin_ryuk() {
            // Ryuk ends its session on a terminating signal and dies on SIGKILL; it ignores
            // the rest.
            return match signal_name(signal).as_str() {
                "KILL" => self.end_ryuk(view, false).await,
                "TERM" | "INT" | "QUIT" => self.end_ryuk(view, true).await,
                _ => Ok(()),
            };
        }
        if signal_name(signal) == "KILL" {
            return self.kill_pod(view).await;
        }
        self.signal(view, signal).await
    }

    /// Docker remove: deletes the spec, pod, services and ConfigMaps of the container.
    pub async fn remove(&self, view: &ContainerView, force: bool) -> Result<()> {
        if view.state.running && !force {
            return Err(RuntimeError::Conflict(format!(
                "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                view.id
            )));
        }
        if view.is_builtin_ryuk() {
            // `rm -f` kills it: no prune (its task is aborted here, not by itself).
            drop(self.ryuks.lock().remove(&view.id));
        }
        self.remove_now(view).await
    }

    pub(crate) async fn remove_now(&self, view: &ContainerView) -> Result<()> {
        let exit = LastExit {
            exit_code: if view.state.running {
                137
            } else {
                view.state.exit_code
            },
            started_at: view.state.started_at.clone(),
            finished_at: if view.state.running {
                super::now_rfc3339()
            } else {
                view.state.finished_at.clone()
            },
            oom_killed: view.state.oom_killed,
            restart_count: view.state.restart_count,
        };
        self.record_removed_exit(&view.id, exit);
        let known_pod = view
            .pod
            .as_ref()
            .and_then(|pod| crate::apply::KnownObject::of(&pod.metadata));
        self.applier
            .delete_container(&self.instance, view.short_id(), Some(0), known_pod.as_ref())
            .instrument(debug_span!(target: crate::TIMING, "remove.delete"))
            .await?;
        let id = view.id.clone();
        self.wait_until(GONE_TIMEOUT, |rt| rt.find(&id).is_err())
            .instrument(debug_span!(target: crate::TIMING, "remove.until_gone"))
            .await;
        info!(container = %view.short_id(), "Container removed");
        Ok(())
    }

    /// Docker rename: the name annotation on the spec (and the pod, if any).
    pub async fn rename(&self, view: &ContainerView, new_name: &str) -> Result<()> {
        let new_name = new_name.strip_prefix('/').unwrap_or(new_name);
        if new_name.is_empty() {
            return Err(RuntimeError::BadRequest(
                "Error when allocating new name: Invalid container name".into(),
            ));
        }
        if let Some(other) = self
            .containers()
            .into_iter()
            .find(|c| c.name == new_name && c.id != view.id)
        {
            return Err(RuntimeError::NameInUse {
                name: new_name.into(),
                id: other.id,
            });
        }
        // uid preconditions: rename writes only this container's own spec and pod.
        let patch = |uid: Option<&str>| {
            merge_patch_of(uid, serde_json::json!({labels::ANNOTATION_NAME: new_name}))
        };
        let params = PatchParams::default();
        self.applier
            .config_maps()
            .patch(
                &view.pod_name,
                &params,
                &Patch::Merge(&patch(view.spec.metadata.uid.as_deref())),
            )
            .await
            .map_err(|source| RuntimeError::Kube {
                operation: "rename",
                pod: view.pod_name.clone(),
                source,
            })?;
        if let Some(pod) = &view.pod {
            let _ = self
                .applier
                .pods()
                .patch(
                    &view.pod_name,
                    &params,
                    &Patch::Merge(&patch(pod.metadata.uid.as_deref())),
                )
                .await;
        }
        let (id, wanted) = (view.id.clone(), new_name.to_string());
        self.wait_until(Duration::from_secs(10), |rt| {
            rt.find(&id).map(|v| v.name == wanted).unwrap_or(true)
        })
        .await;
        Ok(())
    }

    /// Docker wait: the exit code once `condition` holds. Watch-driven; cancellation-safe.
    pub async fn wait(&self, id: &str, condition: WaitCondition) -> Result<LastExit> {
        let initial = self.find(id)?;
        let initial_key = initial.state.exit_key.clone();
        let mut last_seen: Option<LastExit> = None;
        let mut changes = self.subscribe_changes();
        loop {
            changes.borrow_and_update();
            match self.find(id) {
                Err(_) => {
                    return Ok(self.removed_exit(id).or(last_seen).unwrap_or_default());
                }
                Ok(view) => {
                    let exit = view.state.is_exited().then(|| LastExit {
                        exit_code: view.state.exit_code,
                        started_at: view.state.started_at.clone(),
                        finished_at: view.state.finished_at.clone(),
                        oom_killed: view.state.oom_killed,
                        restart_count: view.state.restart_count,
                    });
                    let done = match condition {
                        WaitCondition::NotRunning => !view.state.running,
                        WaitCondition::NextExit => {
                            view.state.is_exited() && view.state.exit_key != initial_key
                        }
                        WaitCondition::Removed => false,
                    };
                    if exit.is_some() {
                        last_seen = exit;
                    }
                    if done {
                        return Ok(last_seen.unwrap_or_default());
                    }
                }
            }
            if changes.changed().await.is_err() {
                return Err(RuntimeError::NotReady);
            }
        }
    }
}

/// Docker's check of a `kill` signal: a number from 1 to 64 or a name (`SIGHUP`, `hup`,
/// `RTMIN+3`); anything else is a 400 before any exec.
pub fn check_signal(signal: &str) -> Result<()> {
    let name = signal_name(signal);
    let valid = match name.parse::<u32>() {
        Ok(number) => (1..=64).contains(&number),
        Err(_) => {
            name.starts_with(|c: char| c.is_ascii_uppercase())
                && name.len() <= 16
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'+' || b == b'-')
        }
    };
    if valid {
        Ok(())
    } else {
        Err(RuntimeError::BadRequest(format!(
            "Invalid signal: {signal}"
        )))
    }
}

/// The seconds `stop` waits after the stop signal: what the client asked, at most the policy's
/// maximum grace period. A negative wait is Docker's "wait forever", which becomes the maximum
/// when there is one (and, as before, an immediate kill when there is none).
fn bounded_grace(asked: i64, max: Option<i64>) -> i64 {
    match max {
        Some(max) if asked < 0 || asked > max => max.max(0),
        _ => asked,
    }
}

/// A merge patch of `annotations`; with `uid`, the API server applies it only to that very
/// object (a uid in a patch is a precondition), so a same-named object podbridge does not own is
/// never written.
fn merge_patch_of(uid: Option<&str>, annotations: serde_json::Value) -> serde_json::Value {
    let mut metadata = serde_json::json!({ "annotations": annotations });
    if let Some(uid) = uid {
        metadata["uid"] = uid.into();
    }
    serde_json::json!({ "metadata": metadata })
}

/// `SIGTERM`, `TERM`, `15` → the name busybox and coreutils `kill -s` accept.
pub fn signal_name(signal: &str) -> String {
    let upper = signal.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    match name.parse::<u32>() {
        Ok(number) => match number {
            1 => "HUP",
            2 => "INT",
            3 => "QUIT",
            6 => "ABRT",
            9 => "KILL",
            10 => "USR1",
            12 => "USR2",
            13 => "PIPE",
            14 => "ALRM",
            15 => "TERM",
            17 => "CHLD",
            18 => "CONT",
            19 => "STOP",
            20 => "TSTP",
            28 => "WINCH",
            _ => return number.to_string(),
        }
        .to_string(),
        Err(_) => name.to_string(),
    }
}

/// Why a pod has not started its main container: the scheduler's condition if it failed,
/// otherwise the pod phase.
pub(super) fn not_started_reason(pod: Option<&Pod>, timeout: Duration) -> String {
    let status = pod.and_then(|p| p.status.as_ref());
    let unscheduled = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| {
            c.iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        })
        .map(|c| {
            format!(
                "{}: {}",
                c.reason.as_deref().unwrap_or("Unscheduled"),
                c.message.as_deref().unwrap_or_default()
            )
        });
    let detail = unscheduled.unwrap_or_else(|| {
        format!(
            "pod phase {}",
            status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
        )
    });
    format!(
        "container did not start within {}s: {detail}",
        timeout.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_signals_are_refused() {
        for good in ["SIGTERM", "9", "hup", "RTMIN+3", "64"] {
            assert!(check_signal(good).is_ok(), "{good}");
        }
        for bad in [
            "0",
            "65",
            "99999999999999",
            "-1",
            "TERM; rm",
            "é",
            "SIG",
            &"A".repeat(40),
        ] {
            assert!(
                matches!(check_signal(bad), Err(RuntimeError::BadRequest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn stop_waits_at_most_the_policy_maximum() {
        assert_eq!(bounded_grace(10, Some(300)), 10);
        assert_eq!(bounded_grace(999_999_999, Some(300)), 300);
        assert_eq!(bounded_grace(-1, Some(300)), 300);
        assert_eq!(bounded_grace(999_999_999, None), 999_999_999);
        assert_eq!(bounded_grace(0, Some(300)), 0);
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name("SIGTERM"), "TERM");
        assert_eq!(signal_name("9"), "KILL");
        assert_eq!(signal_name("hup"), "HUP");
        assert_eq!(signal_name("SIGRTMIN"), "RTMIN");
    }

    #[test]
    fn not_started_reason_prefers_the_scheduler() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient memory."}]}
        }))
        .unwrap();
        assert_eq!(
            not_started_reason(Some(&pod), Duration::from_secs(30)),
            "container did not start within 30s: Unschedulable: 0/1 nodes are available: 1 Insufficient memory."
        );
        let pulling: Pod =
            serde_json::from_value(serde_json::json!({"status": {"phase": "Pending"}})).unwrap();
        assert_eq!(
            not_started_reason(Some(&pulling), Duration::from_secs(5)),
            "container did not start within 5s: pod phase Pending"
        );
    }
}
