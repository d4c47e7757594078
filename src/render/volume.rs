//! The PersistentVolumeClaim that backs a Docker named volume (`named_volumes = "claim"`).
//!
//! A claim is rendered from the volume's Docker fields alone, once, when the volume is created
//! (explicitly or by a container that mounts it): pods refer to it by its deterministic name, so
//! containers created later share it, and it outlives them until `docker volume rm`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use super::names::{is_copyable_label, label_value, volume_claim_name};
use super::{RenderContext, RenderError, Result};
use crate::labels;

/// Driver option (`docker volume create -o size=5Gi`, compose `driver_opts`) that sets the
/// claim's requested size for this volume instead of `volume_size`.
pub const DRIVER_OPT_SIZE: &str = "size";
/// Driver option that sets the claim's StorageClass for this volume instead of
/// `volume_storage_class`.
pub const DRIVER_OPT_STORAGE_CLASS: &str = "storageclass";

/// A Docker volume as the client described it.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeRequest<'a> {
    pub name: &'a str,
    pub driver: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub options: &'a BTreeMap<String, String>,
    /// RFC 3339 creation time, Docker's `CreatedAt`.
    pub created: &'a str,
}

/// The claim for `request`: podbridge's identity labels (so cleanup and the reaper find it), the
/// Docker labels that are valid Kubernetes labels, and the whole Docker volume (name, driver,
/// labels, options, creation time) in the `podbridge.io/object` annotation, which `volume ls` and
/// `inspect` answer from.
pub fn volume_claim(request: &VolumeRequest, ctx: &RenderContext) -> Result<PersistentVolumeClaim> {
    let settings = &ctx.volumes;
    let option = |key: &str| request.options.get(key).filter(|value| !value.is_empty());
    let size = option(DRIVER_OPT_SIZE).unwrap_or(&settings.size);
    crate::rules::quantity::Quantity::parse(size)
        .ok()
        .filter(|quantity| *quantity > crate::rules::quantity::Quantity::from_integer(0))
        .ok_or_else(|| RenderError::InvalidVolumeOption {
            volume: request.name.to_owned(),
            option: DRIVER_OPT_SIZE.to_owned(),
            value: size.clone(),
            message: "must be a positive Kubernetes quantity such as 512Mi or 5Gi".into(),
        })?;
    let storage_class = option(DRIVER_OPT_STORAGE_CLASS)
        .or(settings.storage_class.as_ref())
        .cloned();
    if let Some(class) = &storage_class {
        if !class.split('.').all(super::is_dns1123_label) || class.len() > 253 {
            return Err(RenderError::InvalidVolumeOption {
                volume: request.name.to_owned(),
                option: DRIVER_OPT_STORAGE_CLASS.to_owned(),
                value: class.clone(),
                message: "must be the name of a StorageClass (a DNS-1123 subdomain)".into(),
            });
        }
    }
    let mut claim_labels: BTreeMap<String, String> = request
        .labels
        .iter()
        .filter(|(key, value)| is_copyable_label(key, value))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    claim_labels.extend(ctx.labels.clone());
    claim_labels.insert(labels::MANAGED_BY.into(), labels::MANAGED_BY_VALUE.into());
    claim_labels.insert(labels::INSTANCE.into(), label_value(&ctx.instance_id));
    claim_labels.insert(labels::ROLE.into(), labels::ROLE_VOLUME.into());
    if let Some(project) = ctx.project.as_deref().map(label_value) {
        if !project.is_empty() {
            claim_labels.insert(labels::PROJECT.into(), project);
        }
    }
    let object = json!({
        "Name": request.name,
        "Driver": request.driver,
        "Labels": request.labels,
        "Options": request.options,
        "CreatedAt": request.created,
    });
    Ok(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(volume_claim_name(&ctx.instance_id, request.name)),
            namespace: Some(ctx.namespace.clone()),
            labels: Some(claim_labels),
            annotations: Some(BTreeMap::from([(
                labels::ANNOTATION_OBJECT.to_owned(),
                object.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![settings.access_mode.as_str().to_owned()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(size.clone()),
                )])),
                ..Default::default()
            }),
            storage_class_name: storage_class,
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{VolumeAccessMode, VolumeSettings};

    fn request<'a>(
        labels: &'a BTreeMap<String, String>,
        options: &'a BTreeMap<String, String>,
    ) -> VolumeRequest<'a> {
        VolumeRequest {
            name: "pbe2e_data",
            driver: "local",
            labels,
            options,
            created: "2025-01-01T00:00:00Z",
        }
    }

    #[test]
    fn claims_carry_identity_docker_labels_and_the_docker_object() {
        let ctx = crate::render::pod::tests::context();
        let docker_labels = BTreeMap::from([
            ("com.docker.compose.project".to_owned(), "pbe2e".to_owned()),
            (
                "app.kubernetes.io/name".to_owned(),
                "kept-in-annotation".to_owned(),
            ),
        ]);
        let claim = volume_claim(&request(&docker_labels, &BTreeMap::new()), &ctx).unwrap();
        let value = serde_json::to_value(&claim).unwrap();
        assert_eq!(
            value["metadata"]["name"].as_str().unwrap(),
            volume_claim_name("ci-42", "pbe2e_data")
        );
        assert_eq!(value["metadata"]["namespace"], "builds");
        let claim_labels = &value["metadata"]["labels"];
        assert_eq!(claim_labels[labels::MANAGED_BY], "podbridge");
        assert_eq!(claim_labels[labels::INSTANCE], "ci-42");
        assert_eq!(claim_labels[labels::ROLE], "volume");
        assert_eq!(claim_labels[labels::PROJECT], "group-project");
        assert_eq!(claim_labels["team"], "infra");
        assert_eq!(claim_labels["com.docker.compose.project"], "pbe2e");
        assert!(claim_labels.get("app.kubernetes.io/name").is_none());
        let object: serde_json::Value = serde_json::from_str(
            value["metadata"]["annotations"][labels::ANNOTATION_OBJECT]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(object["Name"], "pbe2e_data");
        assert_eq!(
            object["Labels"]["app.kubernetes.io/name"],
            "kept-in-annotation"
        );
        assert_eq!(
            value["spec"],
            json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}})
        );
    }

    #[test]
    fn options_and_settings_shape_the_claim() {
        let mut ctx = crate::render::pod::tests::context();
        ctx.volumes = VolumeSettings {
            storage_class: Some("fast".into()),
            access_mode: VolumeAccessMode::ReadWriteMany,
            ..VolumeSettings::default()
        };
        let no_labels = BTreeMap::new();
        let claim = volume_claim(&request(&no_labels, &BTreeMap::new()), &ctx).unwrap();
        let spec = claim.spec.unwrap();
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(spec.access_modes.unwrap(), vec!["ReadWriteMany"]);
        let options = BTreeMap::from([
            (DRIVER_OPT_SIZE.to_owned(), "5Gi".to_owned()),
            (DRIVER_OPT_STORAGE_CLASS.to_owned(), "slow".to_owned()),
        ]);
        let spec = volume_claim(&request(&no_labels, &options), &ctx)
            .unwrap()
            .spec
            .unwrap();
        assert_eq!(spec.storage_class_name.as_deref(), Some("slow"));
        assert_eq!(
            spec.resources.unwrap().requests.unwrap()["storage"],
            Quantity("5Gi".into())
        );
    }

    #[test]
    fn bad_options_name_the_volume_and_option() {
        let ctx = crate::render::pod::tests::context();
        let no_labels = BTreeMap::new();
        for (key, value) in [
            (DRIVER_OPT_SIZE, "lots"),
            (DRIVER_OPT_SIZE, "0"),
            (DRIVER_OPT_STORAGE_CLASS, "Fast_SSD"),
        ] {
            let options = BTreeMap::from([(key.to_owned(), value.to_owned())]);
            let error = volume_claim(&request(&no_labels, &options), &ctx).unwrap_err();
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("volume pbe2e_data: option {key}=")),
                "{message}"
            );
        }
    }
}
