//! apply: the cluster writes — server-side apply of rendered objects under one field manager,
//! deletes by label, and a dry-run printer that shows the same objects without a cluster.

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde::{de::DeserializeOwned, Serialize};

use crate::labels;
use crate::render::RenderedObjects;

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
    #[error("object has no name")]
    Unnamed,
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

    /// Server-side apply of one object (forced: podbridge owns what it renders).
    pub async fn apply<K>(&self, api: &Api<K>, object: &K) -> Result<K>
    where
        K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let name = object.meta().name.clone().ok_or(ApplyError::Unnamed)?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut body = serde_json::to_value(object).map_err(|_| ApplyError::Unnamed)?;
        body["apiVersion"] = K::api_version(&Default::default()).into_owned().into();
        body["kind"] = K::kind(&Default::default()).into_owned().into();
        if let Some(meta) = body["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
            meta.remove("uid");
            meta.remove("creationTimestamp");
            meta.remove("managedFields");
        }
        api.patch(&name, &params, &Patch::Apply(&body))
            .await
            .map_err(|source| ApplyError::ApplyFailed {
                kind: kind_of::<K>(),
                name,
                source,
            })
    }

    /// Creates an object unless one of that name exists; `false` when it did. For objects whose
    /// spec must not change once made (a volume's claim: a later `create` of the same volume, or
    /// a changed `volume_size`, must not try to resize it).
    pub async fn create_if_absent<K>(&self, api: &Api<K>, object: &K) -> Result<bool>
    where
        K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let name = object.meta().name.clone().ok_or(ApplyError::Unnamed)?;
        let params = kube::api::PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        match api.create(&params, object).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(source) => Err(ApplyError::CreateFailed {
                kind: kind_of::<K>(),
                name,
                source,
            }),
        }
    }

    /// Applies the pod's companions and then the pod. Returns the aliases left out because
    /// another podbridge instance in the namespace already answers to them.
    pub async fn apply_rendered(&self, objects: &RenderedObjects) -> Result<Vec<String>> {
        for config_map in &objects.config_maps {
            self.apply(&self.config_maps(), config_map).await?;
        }
        let mut taken = Vec::new();
        for service in &objects.services {
            if let Some(owner) = self.alias_taken_by_other_instance(service).await? {
                let name = service.metadata.name.clone().unwrap_or_default();
                tracing::warn!(alias = %name, %owner, "Alias already served by another podbridge instance in this namespace; not taking it over");
                taken.push(name);
                continue;
            }
            self.apply(&self.services(), service).await?;
        }
        self.apply(&self.pods(), &objects.pod).await?;
        Ok(taken)
    }

    /// An alias Service is a name in the namespace's DNS, which every instance in the namespace
    /// shares: the first instance keeps it, so one job cannot redirect another's traffic. The
    /// owning instance when it is not `service`'s own.
    async fn alias_taken_by_other_instance(&self, service: &Service) -> Result<Option<String>> {
        let label =
            |s: &Service, key: &str| s.metadata.labels.as_ref().and_then(|l| l.get(key)).cloned();
        if label(service, labels::ROLE).as_deref() != Some(labels::ROLE_ALIAS_SERVICE) {
            return Ok(None);
        }
        let name = service.metadata.name.clone().ok_or(ApplyError::Unnamed)?;
        let existing =
            self.services()
                .get_opt(&name)
                .await
                .map_err(|source| ApplyError::ApplyFailed {
                    kind: "Service",
                    name,
                    source,
                })?;
        let ours = label(service, labels::INSTANCE);
        Ok(existing
            .and_then(|existing| label(&existing, labels::INSTANCE))
            .filter(|owner| Some(owner) != ours.as_ref()))
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
        let params = DeleteParams {
            grace_period_seconds: grace_seconds,
            ..DeleteParams::background()
        };
        match api.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(source) => Err(ApplyError::DeleteFailed {
                kind: kind_of::<K>(),
                name: name.to_string(),
                source,
            }),
        }
    }

    /// Deletes every pod, service and ConfigMap of one container (by its short-id label).
    pub async fn delete_container(
        &self,
        instance: &str,
        short_id: &str,
        grace_seconds: Option<u32>,
    ) -> Result<()> {
        let selector = format!(
            "{}={instance},{}={short_id}",
            labels::INSTANCE,
            labels::CONTAINER_ID
        );
        self.delete_labelled(&self.pods(), &selector, grace_seconds)
            .await?;
        self.delete_labelled(&self.services(), &selector, grace_seconds)
            .await?;
        self.delete_labelled(&self.config_maps(), &selector, grace_seconds)
            .await?;
        Ok(())
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
        let list = api
            .list_metadata(&ListParams::default().labels(selector))
            .await
            .map_err(|source| ApplyError::ListFailed {
                kind: kind_of::<K>(),
                selector: selector.to_string(),
                source,
            })?;
        for item in list.items {
            if let Some(name) = item.metadata.name {
                self.delete(api, &name, grace_seconds).await?;
            }
        }
        Ok(())
    }
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
        });
        assert!(yaml.starts_with("---\n"));
        assert!(yaml.contains("kind: Pod"));
        assert!(yaml.contains("apiVersion: v1"));
    }
}
