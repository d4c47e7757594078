//! apply: the cluster writes — create-or-apply of rendered objects under one field manager,
//! never over an object this instance does not own (`ownership`), deletes by label or by exact
//! object, and a dry-run printer that shows the same objects without a cluster.

pub mod ownership;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::{Client, Resource};
use serde::{de::DeserializeOwned, Serialize};
use tracing::warn;

use crate::labels;
use crate::render::RenderedObjects;
pub use ownership::foreign_owner;

/// How often a write retries when the object changed between its look-up and its write.
const WRITE_ATTEMPTS: usize = 3;

/// The field manager of every server-side apply podbridge makes.
pub const FIELD_MANAGER: &str = "podbridge";

pub type Result<T, E = ApplyError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("applying {kind} {name}: {}", explain(.source))]
    ApplyFailed {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("creating {kind} {name}: {}", explain(.source))]
    CreateFailed {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("deleting {kind} {name}: {}", explain(.source))]
    DeleteFailed {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("listing {kind} labelled {selector}: {}", explain(.source))]
    ListFailed {
        kind: &'static str,
        selector: String,
        source: kube::Error,
    },
    #[error("reading {kind} {name}: {}", explain(.source))]
    ReadFailed {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    /// The name is taken by an object another tool or another podbridge instance made.
    #[error(
        "{kind} {name} exists and is {owner}; podbridge does not take over objects it does not own"
    )]
    NotOwned {
        kind: &'static str,
        name: String,
        owner: String,
    },
    /// The object kept changing under the write (another writer racing for the name).
    #[error(
        "{kind} {name} changed {WRITE_ATTEMPTS} times while podbridge was writing it; try again"
    )]
    Contended { kind: &'static str, name: String },
    #[error("object has no name")]
    Unnamed,
}

/// What [`Applier::write_owned`] did.
#[derive(Debug)]
pub enum Write<K> {
    /// Created, or applied over this instance's own object.
    Written(K),
    /// Left alone: the name belongs to someone else.
    Foreign {
        owner: String,
        /// The owner is another podbridge instance (shared DNS names: the first keeps them).
        other_instance: bool,
    },
}

/// A Kubernetes client error in words a Docker user can act on: a cut or refused connection
/// says that the API server is unreachable rather than only "client error (Connect)".
pub fn explain(error: &kube::Error) -> String {
    match error {
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            format!("the Kubernetes API server is unreachable ({error})")
        }
        other => other.to_string(),
    }
}

/// Writes podbridge's objects into one namespace.
#[derive(Clone)]
pub struct Applier {
    client: Client,
    namespace: String,
}

impl Applier {
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        Applier {
            client,
            namespace: namespace.into(),
        }
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Writes `object` unless its name belongs to someone else: creates it when the name is free
    /// (a create fails on an existing object, so a racing writer cannot be overwritten), or
    /// server-side applies it over this instance's own object at the resource version that was
    /// checked (so an object replaced in between is not overwritten either). "Own" is judged by
    /// [`foreign_owner`] against `object`'s own labels.
    pub async fn write_owned<K>(&self, api: &Api<K>, object: &K) -> Result<Write<K>>
    where
        K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let name = object.meta().name.clone().ok_or(ApplyError::Unnamed)?;
        let kind = kind_of::<K>();
        let params = kube::api::PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        // Most writes make a new object (a container's first pod, its spec): the create is tried
        // first, so those take one round trip; a 409 means the name is held and is read below.
        let mut try_create = true;
        for _ in 0..WRITE_ATTEMPTS {
            if try_create {
                match timed(kind, "create", api.create(&params, object)).await {
                    Ok(created) => return Ok(Write::Written(created)),
                    Err(kube::Error::Api(status)) if status.code == 409 => {}
                    Err(source) => return Err(ApplyError::CreateFailed { kind, name, source }),
                }
            }
            let existing = api
                .get_opt(&name)
                .await
                .map_err(|source| ApplyError::ReadFailed {
                    kind,
                    name: name.clone(),
                    source,
                })?;
            let Some(existing) = existing else {
                // deleted between the create and the read: create again
                try_create = true;
                continue;
            };
            try_create = false;
            if let Some(owner) = foreign_owner(existing.meta(), object.meta()) {
                return Ok(Write::Foreign {
                    owner,
                    other_instance: ownership::is_other_instance(existing.meta()),
                });
            }
            let version = existing.meta().resource_version.clone();
            match self.apply_at(api, &name, object, version).await {
                Ok(applied) => return Ok(Write::Written(applied)),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(source) => return Err(ApplyError::ApplyFailed { kind, name, source }),
            }
        }
        Err(ApplyError::Contended { kind, name })
    }

    /// [`Applier::write_owned`], with a foreign owner as [`ApplyError::NotOwned`]: for objects
    /// whose name podbridge derived itself (pods, spec and record ConfigMaps), where a foreign
    /// object of that name can only be a collision or an attack.
    pub async fn apply_owned<K>(&self, api: &Api<K>, object: &K) -> Result<K>
    where
        K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        match self.write_owned(api, object).await? {
            Write::Written(written) => Ok(written),
            Write::Foreign { owner, .. } => Err(ApplyError::NotOwned {
                kind: kind_of::<K>(),
                name: object.meta().name.clone().unwrap_or_default(),
                owner,
            }),
        }
    }

    /// Server-side apply of one object podbridge owns (forced: it owns what it renders), with
    /// `resource_version` as a precondition when given.
    async fn apply_at<K>(
        &self,
        api: &Api<K>,
        name: &str,
        object: &K,
        resource_version: Option<String>,
    ) -> Result<K, kube::Error>
    where
        K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut body = serde_json::to_value(object).map_err(kube::Error::SerdeError)?;
        body["apiVersion"] = K::api_version(&Default::default()).into_owned().into();
        body["kind"] = K::kind(&Default::default()).into_owned().into();
        if let Some(meta) = body["metadata"].as_object_mut() {
            meta.remove("uid");
            meta.remove("creationTimestamp");
            meta.remove("managedFields");
            match resource_version {
                Some(version) => meta.insert("resourceVersion".into(), version.into()),
                None => meta.remove("resourceVersion"),
            };
        }
        timed(
            kind_of::<K>(),
            "apply",
            api.patch(name, &params, &Patch::Apply(&body)),
        )
        .await
    }

    /// Creates an object unless one of that name exists; `false` when this instance's own
    /// object was there already. For objects whose spec must not change once made (a volume's
    /// claim: a later `create` of the same volume, or a changed `volume_size`, must not try to
    /// resize it). An existing object of that name that is not ours is [`ApplyError::NotOwned`].
    pub async fn create_if_absent<K>(&self, api: &Api<K>, object: &K) -> Result<bool>
    where
        K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let name = object.meta().name.clone().ok_or(ApplyError::Unnamed)?;
        let kind = kind_of::<K>();
        let params = kube::api::PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        match timed(kind, "create", api.create(&params, object)).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let existing =
                    api.get_opt(&name)
                        .await
                        .map_err(|source| ApplyError::ReadFailed {
                            kind,
                            name: name.clone(),
                            source,
                        })?;
                match existing.and_then(|e| foreign_owner(e.meta(), object.meta())) {
                    Some(owner) => Err(ApplyError::NotOwned { kind, name, owner }),
                    // Ours, or deleted meanwhile: the caller waits for its watch either way.
                    None => Ok(false),
                }
            }
            Err(source) => Err(ApplyError::CreateFailed { kind, name, source }),
        }
    }

    /// Applies the pod's ConfigMaps, then the pod and its Services together. A Service whose
    /// name is taken by an object this instance does not own is left alone (logged, and
    /// returned with its owner): `create` and `network connect` refuse such names up front, so
    /// this only happens when the name was taken between create and start. The pod itself must
    /// be ours.
    ///
    /// The ConfigMaps go first because the kubelet mounts them: a pod that names a missing one
    /// waits for the kubelet's retry. A Service needs nothing from the pod, and the pod's
    /// process runs hundreds of milliseconds after its create, long after its names exist;
    /// written one after another they cost a round trip each on every start (compose gives
    /// each container two: its own name and its service's). When a Service fails, the pod just
    /// created is deleted, so a failed start leaves no running process behind, as before.
    pub async fn apply_rendered(&self, objects: &RenderedObjects) -> Result<Vec<(String, String)>> {
        let config_maps = self.config_maps();
        futures::future::try_join_all(
            objects
                .config_maps
                .iter()
                .map(|config_map| self.apply_owned(&config_maps, config_map)),
        )
        .await?;
        let pods = self.pods();
        let (taken, pod) = futures::future::join(
            self.write_services(&objects.services),
            self.apply_owned(&pods, &objects.pod),
        )
        .await;
        match (taken, pod) {
            (Ok(taken), Ok(_)) => Ok(taken),
            (Err(error), Ok(pod)) => {
                let name = pod.metadata.name.unwrap_or_default();
                if let Err(cleanup) = self.delete(&pods, &name, Some(0)).await {
                    warn!(pod = %name, %cleanup, "Could not delete the pod of a start whose Service failed");
                }
                Err(error)
            }
            (_, Err(error)) => Err(error),
        }
    }

    /// Writes every Service at once unless its name belongs to someone else; returns the names
    /// left out and their owners.
    pub async fn write_services(&self, services: &[Service]) -> Result<Vec<(String, String)>> {
        let api = self.services();
        let writes = futures::future::try_join_all(
            services
                .iter()
                .map(|service| self.write_owned(&api, service)),
        )
        .await?;
        let mut taken = Vec::new();
        for (service, write) in services.iter().zip(writes) {
            if let Write::Foreign { owner, .. } = write {
                let name = service.metadata.name.clone().unwrap_or_default();
                warn!(service = %name, %owner, "Service name taken by an object this podbridge does not own; not taking it over");
                taken.push((name, owner));
            }
        }
        Ok(taken)
    }

    /// For each Service: the owner of an existing object of that name that is not ours, so a
    /// route can refuse (or warn) before it records anything. `other_instance` tells shared
    /// podbridge DNS names from foreign infrastructure.
    pub async fn foreign_services(&self, services: &[Service]) -> Result<Vec<ForeignName>> {
        let mut foreign = Vec::new();
        for service in services {
            let name = service.metadata.name.clone().ok_or(ApplyError::Unnamed)?;
            let existing =
                self.services()
                    .get_opt(&name)
                    .await
                    .map_err(|source| ApplyError::ReadFailed {
                        kind: "Service",
                        name: name.clone(),
                        source,
                    })?;
            if let Some(existing) = existing {
                if let Some(owner) = foreign_owner(&existing.metadata, &service.metadata) {
                    foreign.push(ForeignName {
                        other_instance: ownership::is_other_instance(&existing.metadata),
                        name,
                        owner,
                    });
                }
            }
        }
        Ok(foreign)
    }

    /// Deletes one object; already gone is success.
    pub async fn delete<K>(
        &self,
        api: &Api<K>,
        name: &str,
        grace_seconds: Option<u32>,
    ) -> Result<()>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        self.delete_exact(api, name, None, grace_seconds).await
    }

    /// Deletes one object, only if it still is the one with `uid` (when given): an object of the
    /// same name made by someone else after podbridge looked is left alone (the API server
    /// answers 409). Already gone is success.
    pub async fn delete_exact<K>(
        &self,
        api: &Api<K>,
        name: &str,
        uid: Option<&str>,
        grace_seconds: Option<u32>,
    ) -> Result<()>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        match self.delete_if_same(api, name, uid, grace_seconds).await? {
            Deletion::Done => Ok(()),
            // Ours is gone; the object now under that name is someone else's.
            Deletion::Replaced => {
                warn!(kind = kind_of::<K>(), %name, "Object replaced by another before podbridge deleted it; left alone");
                Ok(())
            }
        }
    }

    /// Deletes `name` if it is still the object with `uid`; says whether another object has
    /// taken the name since (409 on the uid precondition).
    async fn delete_if_same<K>(
        &self,
        api: &Api<K>,
        name: &str,
        uid: Option<&str>,
        grace_seconds: Option<u32>,
    ) -> Result<Deletion>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let params = DeleteParams {
            grace_period_seconds: grace_seconds,
            preconditions: uid.map(|uid| Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match timed(kind_of::<K>(), "delete", api.delete(name, &params)).await {
            Ok(_) => Ok(Deletion::Done),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(Deletion::Done),
            Err(kube::Error::Api(status)) if status.code == 409 && uid.is_some() => {
                Ok(Deletion::Replaced)
            }
            Err(source) => Err(ApplyError::DeleteFailed {
                kind: kind_of::<K>(),
                name: name.to_string(),
                source,
            }),
        }
    }

    /// Deletes the object the caller knows (from its watch) by name and uid, without a list; if
    /// it is not known, or another object has taken its name since (a pod made again under the
    /// same deterministic name), every object matching `selector` instead.
    async fn delete_known_or_labelled<K>(
        &self,
        api: &Api<K>,
        known: Option<&KnownObject>,
        selector: &str,
        grace_seconds: Option<u32>,
    ) -> Result<()>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        if let Some(known) = known {
            let uid = Some(known.uid.as_str());
            if self
                .delete_if_same(api, &known.name, uid, grace_seconds)
                .await?
                == Deletion::Done
            {
                return Ok(());
            }
        }
        self.delete_labelled(api, selector, grace_seconds).await
    }

    /// Deletes every pod, service and ConfigMap of one container (by its short-id label).
    ///
    /// Two round trips where a list-then-delete per kind took four, on the path every
    /// `docker run --rm` takes: the pod the watch shows (`known`) is deleted by name and uid while
    /// the Services go and the ConfigMaps (the spec, files copied in before start) are listed;
    /// then the ConfigMaps go. A pod the watch has not shown yet (`known_pod` is `None`: applied a
    /// moment ago) is found by its labels.
    pub async fn delete_container(
        &self,
        instance: &str,
        short_id: &str,
        grace_seconds: Option<u32>,
        known_pod: Option<&KnownObject>,
    ) -> Result<()> {
        let selector = format!(
            "{},{}={short_id}",
            owned_selector(instance),
            labels::CONTAINER_ID
        );
        // Pod and Services together; the spec ConfigMap, the container's record, last, so a
        // removal cut short never leaves a pod without the record that names it.
        let (pods, services, config_maps) = (self.pods(), self.services(), self.config_maps());
        let (_, _, listed) = futures::try_join!(
            self.delete_known_or_labelled(&pods, known_pod, &selector, grace_seconds),
            self.delete_labelled(&services, &selector, grace_seconds),
            self.list_labelled(&config_maps, &selector),
        )?;
        let deletions = listed.iter().filter_map(|meta| {
            let name = meta.name.as_deref()?;
            Some(self.delete_exact(&config_maps, name, meta.uid.as_deref(), grace_seconds))
        });
        futures::future::try_join_all(deletions).await?;
        Ok(())
    }

    /// The metadata of every object of kind `K` matching `selector`.
    async fn list_labelled<K>(
        &self,
        api: &Api<K>,
        selector: &str,
    ) -> Result<Vec<kube::api::ObjectMeta>>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let list = api
            .list_metadata(&ListParams::default().labels(selector))
            .await
            .map_err(|source| ApplyError::ListFailed {
                kind: kind_of::<K>(),
                selector: selector.to_string(),
                source,
            })?;
        Ok(list.items.into_iter().map(|item| item.metadata).collect())
    }

    /// Deletes every object of kind `K` matching `selector`.
    pub async fn delete_labelled<K>(
        &self,
        api: &Api<K>,
        selector: &str,
        grace_seconds: Option<u32>,
    ) -> Result<()>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        for meta in self.list_labelled(api, selector).await? {
            if let Some(name) = meta.name {
                self.delete_exact(api, &name, meta.uid.as_deref(), grace_seconds)
                    .await?;
            }
        }
        Ok(())
    }
}

/// What a uid-guarded delete found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deletion {
    /// Deleted, or already gone.
    Done,
    /// Another object holds the name now.
    Replaced,
}

/// An object as the watch shows it: enough to delete exactly it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownObject {
    pub name: String,
    pub uid: String,
}

impl KnownObject {
    pub fn of(meta: &kube::api::ObjectMeta) -> Option<Self> {
        Some(KnownObject {
            name: meta.name.clone()?,
            uid: meta.uid.clone()?,
        })
    }
}

/// A Service name a route wanted that belongs to someone else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignName {
    pub name: String,
    pub owner: String,
    pub other_instance: bool,
}

/// Label selector of every object `instance` owns: the manager label and the instance label
/// together, so an object that merely copies the instance label is never listed for deletion.
pub fn owned_selector(instance: &str) -> String {
    format!(
        "{}={},{}={instance}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_VALUE,
        labels::INSTANCE
    )
}

/// Runs one cluster write and records its duration (`podbridge_apply_duration_seconds`).
async fn timed<T>(
    kind: &'static str,
    operation: &'static str,
    write: impl std::future::Future<Output = T>,
) -> T {
    let started = std::time::Instant::now();
    let result = write.await;
    crate::metrics::serve().observe_apply(kind, operation, started.elapsed());
    result
}

fn kind_of<K: Resource>() -> &'static str
where
    K::DynamicType: Default,
{
    match K::kind(&Default::default()).as_ref() {
        "Pod" => "Pod",
        "Service" => "Service",
        "ConfigMap" => "ConfigMap",
        "PersistentVolumeClaim" => "PersistentVolumeClaim",
        _ => "object",
    }
}

/// The objects as a multi-document YAML stream, as `--dry-run` prints them.
pub fn dry_run_yaml(objects: &RenderedObjects) -> String {
    fn document<K: Serialize + Resource>(object: &K) -> String
    where
        K::DynamicType: Default,
    {
        let mut value = serde_json::to_value(object).unwrap_or_default();
        value["apiVersion"] = K::api_version(&Default::default()).into_owned().into();
        value["kind"] = K::kind(&Default::default()).into_owned().into();
        format!("---\n{}", serde_yaml::to_string(&value).unwrap_or_default())
    }
    let mut out = String::new();
    for config_map in &objects.config_maps {
        out.push_str(&document(config_map));
    }
    for service in &objects.services {
        out.push_str(&document(service));
    }
    out.push_str(&document(&objects.pod));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_prints_kind_and_api_version() {
        let pod: Pod =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}})).unwrap();
        let yaml = dry_run_yaml(&RenderedObjects {
            pod,
            services: vec![],
            config_maps: vec![],
            record: Default::default(),
        });
        assert!(yaml.starts_with("---\n"));
        assert!(yaml.contains("kind: Pod"));
        assert!(yaml.contains("apiVersion: v1"));
    }
}
