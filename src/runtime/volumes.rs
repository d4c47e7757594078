//! Docker volumes in the cluster. With `named_volumes = "claim"` a volume *is* its
//! PersistentVolumeClaim (the Docker object rides in its `podbridge.io/object` annotation), so
//! it is shared by the pods that mount it and lasts until `docker volume rm`, prune or
//! cleanup; with `emptyDir` it is only a labelled ConfigMap record and each pod gets an emptyDir.
//! Either way Docker's rules hold: creating an existing volume returns it, and a volume that a
//! container (running or not) mounts cannot be removed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim};
use kube::api::ListParams;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use serde_json::{json, Value};
use tracing::info;

use super::objects::object_id;
use super::{Result, Runtime, RuntimeError};
use crate::labels;
use crate::render::VolumeRequest;

/// How long `volume rm` waits for the cluster to confirm a claim is gone (it answers anyway:
/// a terminating claim is no longer listed).
const CLAIM_GONE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a create waits for its claim to reach the watch store.
const CLAIM_SEEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the one-off event lookups that explain a claim that never bound.
const EVENT_LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// A claim a pod waits for, with the Docker volume it backs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingClaim {
    pub volume: String,
    pub claim: String,
    pub uid: String,
}

/// The Docker volume a claim holds, or `None` if it is not one of podbridge's volumes or is
/// being deleted (Docker forgets a volume the moment `rm` answers).
pub fn docker_volume(
    claim: &PersistentVolumeClaim,
    namespace: &str,
    users: usize,
) -> Option<Value> {
    if claim.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let annotations = claim.metadata.annotations.as_ref()?;
    let mut volume: Value =
        serde_json::from_str(annotations.get(labels::ANNOTATION_OBJECT)?).ok()?;
    let name = claim.metadata.name.clone().unwrap_or_default();
    let status = claim.status.as_ref();
    let spec = claim.spec.as_ref();
    let object = volume.as_object_mut()?;
    object.insert(
        "Mountpoint".into(),
        json!(format!("persistentvolumeclaim/{namespace}/{name}")),
    );
    object.insert("Scope".into(), json!("local"));
    object.insert(
        "Status".into(),
        json!({
            "PersistentVolumeClaim": name,
            "Phase": status.and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into()),
            "PersistentVolume": spec.and_then(|s| s.volume_name.clone()).unwrap_or_default(),
            "StorageClass": spec.and_then(|s| s.storage_class_name.clone()).unwrap_or_default(),
        }),
    );
    // Size is unknown to podbridge (it would need to exec into a pod): -1, as Docker says when
    // it cannot tell.
    object.insert("UsageData".into(), json!({"Size": -1, "RefCount": users}));
    Some(volume)
}

/// A Docker volume that is only a record (`named_volumes = "emptyDir"`, and the dry-run server):
/// what `volume inspect` shows of it.
pub fn volume_record(request: &VolumeRequest<'_>) -> Value {
    json!({"Name": request.name, "Driver": request.driver,
        "Mountpoint": format!("/var/lib/docker/volumes/{}/_data", request.name),
        "CreatedAt": request.created, "Labels": request.labels, "Options": request.options,
        "Scope": "local"})
}

impl Runtime {
    /// Every Docker volume, oldest first.
    pub fn volumes(&self) -> Vec<Value> {
        let mut volumes: Vec<Value> = if self.uses_claims() {
            let users = self.volume_user_counts();
            self.claims
                .state()
                .iter()
                .filter(|claim| super::has_role(&claim.metadata, labels::ROLE_VOLUME))
                .filter_map(|claim| {
                    let name = docker_volume_name(claim)?;
                    docker_volume(
                        claim,
                        &self.namespace,
                        users.get(&name).copied().unwrap_or(0),
                    )
                })
                .collect()
        } else {
            self.stored_objects(labels::ROLE_VOLUME)
                .into_iter()
                .map(|mut volume| {
                    if let Some(object) = volume.as_object_mut() {
                        object.remove("Id");
                    }
                    volume
                })
                .collect()
        };
        volumes.sort_by(|a, b| {
            (a["CreatedAt"].as_str(), a["Name"].as_str())
                .cmp(&(b["CreatedAt"].as_str(), b["Name"].as_str()))
        });
        volumes
    }

    /// Names of this instance's volumes, name → name (the events diff keys objects by id and
    /// volumes have none): read straight from the stores, as this runs on every watch change.
    pub fn volume_names(&self) -> HashMap<String, String> {
        let names: Vec<String> = if self.uses_claims() {
            self.claims
                .state()
                .iter()
                .filter(|claim| super::has_role(&claim.metadata, labels::ROLE_VOLUME))
                .filter_map(|claim| docker_volume_name(claim))
                .collect()
        } else {
            self.stored_objects(labels::ROLE_VOLUME)
                .iter()
                .filter_map(|volume| volume["Name"].as_str().map(str::to_owned))
                .collect()
        };
        names.into_iter().map(|n| (n.clone(), n)).collect()
    }

    /// A volume by its (exact) name, Docker's only handle on a volume.
    pub fn find_volume(&self, name: &str) -> Result<Value> {
        self.volumes()
            .into_iter()
            .find(|volume| volume["Name"].as_str() == Some(name))
            .ok_or_else(|| RuntimeError::NotFound(format!("get {name}: no such volume")))
    }

    /// IDs of the containers that mount volume `name`.
    pub fn volume_users(&self, name: &str) -> Vec<String> {
        self.containers()
            .into_iter()
            .filter(|container| container.named_volumes().iter().any(|v| v == name))
            .map(|container| container.id)
            .collect()
    }

    fn volume_user_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for container in self.containers() {
            for volume in container.named_volumes() {
                *counts.entry(volume).or_default() += 1;
            }
        }
        counts
    }

    /// Docker's volume create: the existing volume if there is one, else a new claim (or
    /// ConfigMap record). Also called for every named volume a container mounts, as Docker
    /// creates those with the container.
    /// `claim` is the policy-shaped claim (`Translator::translate_volume`), needed only when
    /// volumes are claims.
    pub async fn create_volume(
        &self,
        request: &VolumeRequest<'_>,
        claim: Option<PersistentVolumeClaim>,
    ) -> Result<Value> {
        if let Ok(existing) = self.find_volume(request.name) {
            return Ok(existing);
        }
        if !self.uses_claims() {
            return self.create_volume_record(request).await;
        }
        let Some(claim) = claim else {
            return Err(RuntimeError::BadRequest(format!(
                "volume {}: no claim was rendered for it",
                request.name
            )));
        };
        let claim_name = claim.metadata.name.clone().unwrap_or_default();
        // A claim of the same name still terminating (just removed, its last pod going) would
        // swallow the create: wait for it to go first.
        let terminating = |rt: &Runtime| {
            rt.claims.state().iter().any(|c| {
                c.metadata.name.as_deref() == Some(claim_name.as_str())
                    && c.metadata.deletion_timestamp.is_some()
            })
        };
        if terminating(self)
            && !self
                .wait_until(CLAIM_GONE_TIMEOUT, |rt| !terminating(rt))
                .await
        {
            return Err(RuntimeError::Conflict(format!(
                "volume {}: PersistentVolumeClaim {claim_name} is still being deleted; try again",
                request.name
            )));
        }
        if self
            .applier
            .create_if_absent(&self.applier.claims(), &claim)
            .await?
        {
            info!(volume = %request.name, claim = %claim_name, "Volume claim created");
        }
        let name = request.name.to_owned();
        self.wait_until(CLAIM_SEEN_TIMEOUT, |rt| rt.find_volume(&name).is_ok())
            .await;
        self.find_volume(request.name)
    }

    /// `emptyDir` mode: the volume is only a record, so `volume ls` shows what clients created.
    /// The record's name derives from this instance and the volume, so another instance's
    /// volume of the same Docker name is a different record, never adopted.
    async fn create_volume_record(&self, request: &VolumeRequest<'_>) -> Result<Value> {
        let id = object_id("volume", &format!("{}/{}", self.instance, request.name));
        let mut record = volume_record(request);
        record["Id"] = json!(id);
        self.store_object(labels::ROLE_VOLUME, &id, &record).await?;
        self.find_volume(request.name)
    }

    /// Docker's volume rm: refused while a container mounts the volume, as Docker does.
    pub async fn remove_volume(&self, name: &str) -> Result<()> {
        self.find_volume(name)?;
        let users = self.volume_users(name);
        if !users.is_empty() {
            return Err(RuntimeError::Conflict(format!(
                "remove {name}: volume is in use - [{}]",
                users.join(", ")
            )));
        }
        if !self.uses_claims() {
            return self.delete_object(labels::ROLE_VOLUME, name).await;
        }
        let Some(claim) = self.volume_claim(name) else {
            return Ok(());
        };
        let claim_name = claim.metadata.name.clone().unwrap_or_default();
        self.applier
            .delete_exact(
                &self.applier.claims(),
                &claim_name,
                claim.metadata.uid.as_deref(),
                None,
            )
            .await?;
        info!(volume = %name, claim = %claim_name, "Volume claim deleted");
        self.wait_until(CLAIM_GONE_TIMEOUT, |rt| {
            !rt.claims
                .state()
                .iter()
                .any(|c| c.metadata.name.as_deref() == Some(claim_name.as_str()))
        })
        .await;
        Ok(())
    }

    /// The live claim of volume `name`.
    fn volume_claim(&self, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.claims.state().into_iter().find(|claim| {
            claim.metadata.deletion_timestamp.is_none()
                && docker_volume_name(claim).as_deref() == Some(name)
        })
    }

    /// Claims named in a container's mount records that are not Bound yet. A claim that does
    /// not exist at all is an error: the pod would wait for it forever.
    pub(crate) fn pending_claims(
        &self,
        record: &crate::model::ContainerRecord,
    ) -> Result<Vec<PendingClaim>> {
        if !self.uses_claims() {
            return Ok(Vec::new());
        }
        let mut pending = Vec::new();
        for mount in record.claim_mounts() {
            let (volume, claim_name) = (mount.volume.as_str(), mount.claim.as_str());
            let claim = self.claims.state().into_iter().find(|c| {
                c.metadata.name.as_deref() == Some(claim_name)
                    && c.metadata.deletion_timestamp.is_none()
            });
            let Some(claim) = claim else {
                return Err(RuntimeError::NotFound(format!(
                    "volume {volume}: its PersistentVolumeClaim {claim_name} does not exist (was it deleted outside Docker?)"
                )));
            };
            if claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
                pending.push(PendingClaim {
                    volume: volume.to_owned(),
                    claim: claim_name.to_owned(),
                    uid: claim.metadata.uid.clone().unwrap_or_default(),
                });
            }
        }
        Ok(pending)
    }

    /// Resolves with the first Warning event of one of `claims` while it is still unbound: the
    /// Kubernetes reason it cannot bind (no such StorageClass, provisioning failed). Docker fails
    /// such a start at once rather than after the start timeout. Watch-driven; never resolves if
    /// there is nothing to watch or no warning comes.
    pub(crate) async fn claim_warning(&self, claims: &[PendingClaim]) -> String {
        if claims.is_empty() {
            return futures::future::pending().await;
        }
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let config = watcher::Config::default().fields("involvedObject.kind=PersistentVolumeClaim");
        let stream = watcher(api, config)
            .backoff(super::WatchBackoff::default())
            .applied_objects();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let Ok(event) = event else { continue };
            if event.type_.as_deref() != Some("Warning") {
                continue;
            }
            let involved = &event.involved_object;
            let Some(claim) = claims
                .iter()
                .find(|c| involved.uid.as_deref() == Some(c.uid.as_str()))
            else {
                continue;
            };
            let still_pending = self.claims.state().iter().any(|c| {
                c.metadata.uid.as_deref() == Some(claim.uid.as_str())
                    && c.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound")
            });
            if still_pending {
                return claim_reason(claim, Some(&event));
            }
        }
        futures::future::pending().await
    }

    /// Why claims still are not bound, for a start that timed out: each claim with its latest
    /// event (one list call per claim, at failure time only).
    pub(crate) async fn unbound_claims_reason(&self, claims: &[PendingClaim]) -> Option<String> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut reasons = Vec::new();
        for claim in claims {
            let bound = self.claims.state().iter().any(|c| {
                c.metadata.uid.as_deref() == Some(claim.uid.as_str())
                    && c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
            });
            if bound {
                continue;
            }
            let params = ListParams::default().fields(&format!(
                "involvedObject.kind=PersistentVolumeClaim,involvedObject.uid={}",
                claim.uid
            ));
            let latest = tokio::time::timeout(EVENT_LIST_TIMEOUT, api.list(&params))
                .await
                .ok()
                .and_then(|listed| listed.ok())
                .and_then(|list| {
                    list.items.into_iter().max_by_key(|event| {
                        event
                            .last_timestamp
                            .as_ref()
                            .map(|t| t.0)
                            .or(event.event_time.as_ref().map(|t| t.0))
                    })
                });
            reasons.push(claim_reason(claim, latest.as_ref()));
        }
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }
}

/// `volume data: PersistentVolumeClaim podbridge-volume-data-… is not bound: Reason: message`.
fn claim_reason(claim: &PendingClaim, event: Option<&Event>) -> String {
    let detail = match event {
        Some(event) => format!(
            "{}: {}",
            event.reason.as_deref().unwrap_or("Pending"),
            event.message.as_deref().unwrap_or_default()
        ),
        None => {
            "no event from the cluster (is there a StorageClass that provisions volumes?)".into()
        }
    };
    format!(
        "volume {}: PersistentVolumeClaim {} is not bound: {detail}",
        claim.volume, claim.claim
    )
}

/// The Docker name recorded on a claim.
fn docker_volume_name(claim: &PersistentVolumeClaim) -> Option<String> {
    let raw = claim
        .metadata
        .annotations
        .as_ref()?
        .get(labels::ANNOTATION_OBJECT)?;
    let object: Value = serde_json::from_str(raw).ok()?;
    object["Name"].as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(deleting: bool) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {
                "name": "podbridge-volume-data-12345678",
                "annotations": {labels::ANNOTATION_OBJECT: r#"{"Name":"data","Driver":"local","Labels":{"a":"b"},"Options":{},"CreatedAt":"2025-01-01T00:00:00Z"}"#},
                "deletionTimestamp": if deleting { json!("2025-01-01T00:00:01Z") } else { Value::Null },
            },
            "spec": {"volumeName": "pvc-1", "storageClassName": "podbridge-local"},
            "status": {"phase": "Bound"},
        }))
        .unwrap()
    }

    #[test]
    fn a_claim_is_a_docker_volume() {
        let volume = docker_volume(&claim(false), "ci", 2).unwrap();
        assert_eq!(volume["Name"], "data");
        assert_eq!(volume["Labels"], json!({"a": "b"}));
        assert_eq!(
            volume["Mountpoint"],
            "persistentvolumeclaim/ci/podbridge-volume-data-12345678"
        );
        assert_eq!(volume["Status"]["Phase"], "Bound");
        assert_eq!(volume["Status"]["PersistentVolume"], "pvc-1");
        assert_eq!(volume["UsageData"], json!({"Size": -1, "RefCount": 2}));
        assert_eq!(docker_volume_name(&claim(false)).as_deref(), Some("data"));
    }

    #[test]
    fn a_terminating_claim_is_no_volume() {
        assert_eq!(docker_volume(&claim(true), "ci", 0), None);
    }

    #[test]
    fn unbound_claims_say_which_volume_and_why() {
        let pending = PendingClaim {
            volume: "data".into(),
            claim: "podbridge-volume-data-12345678".into(),
            uid: "u".into(),
        };
        let event: Event = serde_json::from_value(json!({
            "metadata": {"name": "e"}, "involvedObject": {},
            "type": "Warning", "reason": "ProvisioningFailed",
            "message": "storageclass.storage.k8s.io \"missing\" not found",
        }))
        .unwrap();
        assert_eq!(
            claim_reason(&pending, Some(&event)),
            "volume data: PersistentVolumeClaim podbridge-volume-data-12345678 is not bound: ProvisioningFailed: storageclass.storage.k8s.io \"missing\" not found"
        );
        assert!(claim_reason(&pending, None).contains("is there a StorageClass"));
    }
}
