//! render: THROWAWAY stub for the api branch until the model branch merges (take theirs on merge).

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};

use crate::model::ContainerId;

/// Docker-side identity of a container being created.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: ContainerId,
    pub created: String,
}

/// Typed objects for one container.
#[derive(Debug, Clone)]
pub struct RenderedObjects {
    pub pod: Pod,
    pub services: Vec<Service>,
    pub config_maps: Vec<ConfigMap>,
}
