//! The PersistentVolumeClaim that backs a Docker named volume (`named_volumes = "claim"`).
//!
//! A claim is rendered once, when the volume is created (explicitly or by a container that
//! mounts it), and shaped by the policy chain like a pod (rules with `kinds:
//! [PersistentVolumeClaim]`): pods refer to it by its deterministic name, so containers created
//! later share it, and it outlives them until `docker volume rm`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use serde_json::{json, Value};

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

/// The claim document the policy chain shapes for `request`: podbridge's configured size,
/// access mode and StorageClass. The client's driver options (`size`, `storageclass`) are not
/// written here: they reach the chain as override labels ([`option_labels`]), so only a policy
/// rule that declares them, within its bounds, lets a client pick storage.
pub fn volume_claim_document(request: &VolumeRequest, ctx: &RenderContext) -> Value {
    let settings = &ctx.volumes;
    let mut spec = json!({
        "accessModes": [settings.access_mode.as_str()],
        "resources": {"requests": {"storage": settings.size}},
    });
    if let Some(class) = &settings.storage_class {
        spec["storageClassName"] = json!(class);
    }
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": volume_claim_name(&ctx.instance_id, request.name),
            "namespace": ctx.namespace,
            "labels": claim_labels(request, ctx),
        },
        "spec": spec,
    })
}

/// The driver options a policy may let a client set, as the override labels the chain knows:
/// `(option, label)`.
pub const OPTION_LABELS: [(&str, &str); 2] = [
    (DRIVER_OPT_SIZE, labels::VOLUME_SIZE_LABEL),
    (DRIVER_OPT_STORAGE_CLASS, labels::VOLUME_STORAGE_CLASS_LABEL),
];

/// The volume's Docker labels plus its storage options as override labels (see
/// [`volume_claim_document`]).
pub fn option_labels(request: &VolumeRequest) -> BTreeMap<String, String> {
    let mut all = request.labels.clone();
    for (option, label) in OPTION_LABELS {
        if let Some(value) = request.options.get(option).filter(|v| !v.is_empty()) {
            all.insert(label.to_owned(), value.clone());
        }
    }
    all
}

fn claim_labels(request: &VolumeRequest, ctx: &RenderContext) -> BTreeMap<String, String> {
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
    claim_labels
}

/// The typed claim from the policy-shaped `document`: podbridge's identity (name, namespace,
/// labels, the Docker volume in the `podbridge.io/object` annotation, which `volume ls` and
/// `inspect` answer from) is re-asserted, and the size and class are checked.
pub fn volume_claim_object(
    document: Value,
    request: &VolumeRequest,
    ctx: &RenderContext,
) -> Result<PersistentVolumeClaim> {
    let mut claim: PersistentVolumeClaim =
        serde_json::from_value(document).map_err(|error| RenderError::DeserializePodFailed {
            field: "(claim)".into(),
            message: error.to_string(),
        })?;
    let invalid = |option: &str, value: String, message: &str| RenderError::InvalidVolumeOption {
        volume: request.name.to_owned(),
        option: option.to_owned(),
        value,
        message: message.to_owned(),
    };
    let spec = claim.spec.get_or_insert_with(Default::default);
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_default();
    crate::rules::quantity::Quantity::parse(&size)
        .ok()
        .filter(|quantity| *quantity > crate::rules::quantity::Quantity::from_integer(0))
        .ok_or_else(|| {
            invalid(
                DRIVER_OPT_SIZE,
                size.clone(),
                "must be a positive Kubernetes quantity such as 512Mi or 5Gi",
            )
        })?;
    if let Some(class) = &spec.storage_class_name {
        if !class.split('.').all(super::is_dns1123_label) || class.len() > 253 {
            return Err(invalid(
                DRIVER_OPT_STORAGE_CLASS,
                class.clone(),
                "must be the name of a StorageClass (a DNS-1123 subdomain)",
            ));
        }
    }
    let metadata = &mut claim.metadata;
    metadata.name = Some(volume_claim_name(&ctx.instance_id, request.name));
    metadata.namespace = Some(ctx.namespace.clone());
    let labels = metadata.labels.get_or_insert_with(Default::default);
    for (key, value) in claim_labels(request, ctx) {
        if key.starts_with("app.kubernetes.io/") || key.starts_with("podbridge.io/") {
            labels.insert(key, value);
        }
    }
    let object = json!({
        "Name": request.name,
        "Driver": request.driver,
        "Labels": request.labels,
        "Options": request.options,
        "CreatedAt": request.created,
    });
    metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(labels::ANNOTATION_OBJECT.to_owned(), object.to_string());
    Ok(claim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{VolumeAccessMode, VolumeSettings};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    /// The claim as a policy that lets clients set both options would shape it.
    fn volume_claim(request: &VolumeRequest, ctx: &RenderContext) -> Result<PersistentVolumeClaim> {
        let mut document = volume_claim_document(request, ctx);
        if let Some(size) = request.options.get(DRIVER_OPT_SIZE) {
            document["spec"]["resources"]["requests"]["storage"] = json!(size);
        }
        if let Some(class) = request.options.get(DRIVER_OPT_STORAGE_CLASS) {
            document["spec"]["storageClassName"] = json!(class);
        }
        volume_claim_object(document, request, ctx)
    }

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
