//! The policy-modified pod document → typed Kubernetes objects, ready for `apply`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value};

use super::names::{is_dns1035_label, is_dns1123_label, MAX_LABEL_LENGTH};
use super::pod::{container_record, identity_annotations, identity_labels, INIT_CONTAINER};
use super::{Identity, RenderContext, RenderError, Result};
use crate::labels;
use crate::model::{ContainerRecord, Workload};

/// Everything one Docker container needs in the cluster at create time.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedObjects {
    pub pod: Pod,
    /// The pod-named Service (when the pod has ports) and one Service per alias.
    pub services: Vec<Service>,
    /// Empty for now: single-file binds are copied like directories.
    pub config_maps: Vec<ConfigMap>,
    /// What the runtime keeps about the container beside its objects (the create request,
    /// the mounts): stored in the spec ConfigMap, never applied to any object.
    pub record: ContainerRecord,
}

/// Finishes rendering after policy: re-asserts identity metadata (rules cannot strip it), checks
/// the name, converts to a typed Pod and derives Services from the final pod, so a rule that
/// renames the pod or changes its ports is honoured.
pub fn objects(
    workload: &Workload,
    identity: &Identity,
    mut pod: Value,
    ctx: &RenderContext,
) -> Result<RenderedObjects> {
    reassert_identity(workload, identity, &mut pod, ctx)?;
    let name = match pod.pointer("/metadata/name") {
        Some(Value::String(name)) if is_dns1123_label(name) => name.clone(),
        Some(Value::String(name)) => {
            return Err(RenderError::InvalidName {
                field: "metadata.name".into(),
                name: name.clone(),
            })
        }
        _ => {
            return Err(RenderError::InvalidDocument {
                field: "metadata.name".into(),
                message: "must be a string".into(),
            })
        }
    };
    // Fast path; the path-tracking deserializer runs only to name the field of a failure.
    let pod: Pod = match serde::Deserialize::deserialize(&pod) {
        Ok(pod) => pod,
        Err(_) => serde_path_to_error::deserialize(&pod).map_err(|error| {
            RenderError::DeserializePodFailed {
                field: error.path().to_string(),
                message: error.into_inner().to_string(),
            }
        })?,
    };
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| ctx.namespace.clone());
    let ports = service_ports(&pod);
    let selector = BTreeMap::from([(
        labels::CONTAINER_ID.to_owned(),
        identity.id.short().to_owned(),
    )]);
    let service = |service_name: String, role: &str| {
        let mut labels = ctx.labels.clone();
        labels.extend(identity_labels(identity, ctx, role));
        Service {
            metadata: ObjectMeta {
                name: Some(service_name),
                namespace: Some(namespace.clone()),
                labels: Some(labels),
                annotations: Some(BTreeMap::from([(
                    labels::ANNOTATION_CONTAINER_ID.to_owned(),
                    identity.id.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(selector.clone()),
                ports: (!ports.is_empty()).then(|| ports.clone()),
                // Without ports only a headless Service makes the name resolve to the pod.
                cluster_ip: ports.is_empty().then(|| "None".to_owned()),
                // Docker's DNS answers before a healthcheck passes; so must the Service.
                publish_not_ready_addresses: Some(true),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    };
    let mut services = Vec::new();
    let main_service_name = service_name_for_pod(&name);
    if !ports.is_empty() {
        services.push(service(
            main_service_name.clone(),
            labels::ROLE_CONTAINER_SERVICE,
        ));
    }
    for alias in aliases(workload) {
        if alias != main_service_name {
            services.push(service(alias, labels::ROLE_ALIAS_SERVICE));
        }
    }
    Ok(RenderedObjects {
        pod,
        services,
        config_maps: Vec::new(),
        record: container_record(workload, ctx),
    })
}

/// Writes podbridge's labels and annotations over whatever the rules left.
fn reassert_identity(
    workload: &Workload,
    identity: &Identity,
    pod: &mut Value,
    ctx: &RenderContext,
) -> Result<()> {
    let document = object_at(pod, "")?;
    let metadata = document
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let metadata = object_at(metadata, "metadata")?;
    for (field, configured, entries) in [
        (
            "labels",
            &ctx.labels,
            identity_labels(identity, ctx, labels::ROLE_CONTAINER),
        ),
        (
            "annotations",
            &ctx.annotations,
            identity_annotations(workload, identity),
        ),
    ] {
        let map = metadata
            .entry(field)
            .or_insert_with(|| Value::Object(Map::new()));
        if map.is_null() {
            *map = Value::Object(Map::new());
        }
        let map = object_at(map, &format!("metadata.{field}"))?;
        // Configured entries come back if a rule removed them (a `clientLabels` rule drops a
        // client label of the same key and value); a value a rule changed is kept.
        for (key, value) in configured {
            map.entry(key.clone())
                .or_insert_with(|| Value::String(value.clone()));
        }
        for (key, value) in entries {
            map.insert(key, Value::String(value));
        }
    }
    Ok(())
}

fn object_at<'a>(value: &'a mut Value, field: &str) -> Result<&'a mut Map<String, Value>> {
    value
        .as_object_mut()
        .ok_or_else(|| RenderError::InvalidDocument {
            field: if field.is_empty() {
                ".".into()
            } else {
                field.into()
            },
            message: "must be an object".into(),
        })
}

/// Every port of every (non-init) container, once per port and protocol.
fn service_ports(pod: &Pod) -> Vec<ServicePort> {
    let mut ports: Vec<ServicePort> = Vec::new();
    let containers = pod.spec.iter().flat_map(|spec| &spec.containers);
    for container in containers.filter(|container| container.name != INIT_CONTAINER) {
        for port in container.ports.iter().flatten() {
            let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".to_owned());
            let duplicate = ports.iter().any(|existing| {
                existing.port == port.container_port
                    && existing.protocol.as_deref() == Some(protocol.as_str())
            });
            if duplicate {
                continue;
            }
            let name = port.name.clone().unwrap_or_else(|| {
                format!("{}-{}", protocol.to_ascii_lowercase(), port.container_port)
            });
            ports.push(ServicePort {
                name: Some(name),
                port: port.container_port,
                target_port: Some(IntOrString::Int(port.container_port)),
                protocol: Some(protocol),
                ..ServicePort::default()
            });
        }
    }
    ports
}

/// Service names must be DNS-1035 labels (start with a letter); pod names need not.
fn service_name_for_pod(pod_name: &str) -> String {
    if is_dns1035_label(pod_name) {
        pod_name.to_owned()
    } else {
        let name = format!("svc-{pod_name}");
        // A policy may have set any pod name: cut at a character boundary.
        let mut end = name.len().min(MAX_LABEL_LENGTH);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name[..end].trim_end_matches('-').to_owned()
    }
}

/// Names other containers may use to reach this one: network aliases, the Docker hostname and the
/// Docker name, lowercased. Names that cannot be Service names are skipped.
fn aliases(workload: &Workload) -> Vec<String> {
    let candidates = workload
        .network
        .aliases()
        .into_iter()
        .chain(workload.network.hostname.clone())
        .chain(workload.name.clone());
    let mut aliases: Vec<String> = Vec::new();
    for alias in candidates.map(|alias| alias.to_ascii_lowercase()) {
        if is_dns1035_label(&alias) && !aliases.contains(&alias) {
            aliases.push(alias);
        }
    }
    aliases
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn service_names_cut_at_character_boundaries() {
        let name = super::service_name_for_pod(&format!("1{}", "é".repeat(40)));
        assert!(name.len() <= super::MAX_LABEL_LENGTH);
        assert!(name.starts_with("svc-1é"));
    }

    use super::*;
    use crate::render::pod::tests::{context, identity, workload};
    use crate::render::pod_document;
    use crate::render::StartInputs;

    fn render(
        body: &str,
        name: Option<&str>,
        edit: impl FnOnce(&mut Value),
    ) -> Result<RenderedObjects> {
        let workload = workload(body, name);
        let mut pod = pod_document(&workload, &identity(), &context(), &StartInputs::default());
        edit(&mut pod);
        objects(&workload, &identity(), pod, &context())
    }

    fn service_names(rendered: &RenderedObjects) -> Vec<String> {
        rendered
            .services
            .iter()
            .map(|service| service.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn ports_become_a_service_named_after_the_pod() {
        let body = include_str!("../../tests/fixtures/create/testcontainers-redis.json");
        let rendered = render(body, Some("testcontainers-ryuk-1"), |_| {}).unwrap();
        let pod_name = rendered.pod.metadata.name.clone().unwrap();
        assert_eq!(
            service_names(&rendered),
            [pod_name.clone(), "testcontainers-ryuk-1".to_owned()]
        );
        let spec = rendered.services[0].spec.as_ref().unwrap();
        assert_eq!(
            spec.selector.as_ref().unwrap()[labels::CONTAINER_ID],
            identity().id.short()
        );
        let port = &spec.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.port, port.protocol.as_deref(), port.name.as_deref()),
            (6379, Some("TCP"), Some("tcp-6379"))
        );
        assert_eq!(spec.cluster_ip, None);
        let labels = rendered.services[0].metadata.labels.as_ref().unwrap();
        assert_eq!(labels[labels::ROLE], labels::ROLE_CONTAINER_SERVICE);
        assert_eq!(labels[labels::INSTANCE], "ci-42");
        assert!(rendered.config_maps.is_empty());
    }

    #[test]
    fn the_record_travels_beside_the_pod_not_on_it() {
        let body = include_str!("../../tests/fixtures/create/compose-web.json");
        let rendered = render(body, Some("demo-web-1"), |_| {}).unwrap();
        let annotations = rendered.pod.metadata.annotations.as_ref().unwrap();
        for key in labels::legacy::ALL {
            assert!(!annotations.contains_key(key), "{key} on the pod");
        }
        assert_eq!(annotations[labels::ANNOTATION_NAME], "demo-web-1");
        assert_eq!(rendered.record.request["Image"], "nginx:latest");
        assert_eq!(rendered.record.bind_copies()[0].volume, "bind-0");
        assert_eq!(rendered.record.last_exit, None);
    }

    #[test]
    fn aliases_become_services_and_invalid_ones_are_skipped() {
        let body = include_str!("../../tests/fixtures/create/compose-web.json");
        let rendered = render(body, Some("demo-web-1"), |_| {}).unwrap();
        let names = service_names(&rendered);
        assert_eq!(&names[1..], ["demo-web-1", "web", "frontend"]);
        let headless = render(
            r#"{"Image":"a","Hostname":"DB","NetworkingConfig":{"EndpointsConfig":{"net":{"Aliases":["Cache","bad_alias","9x","cache"]}}}}"#,
            Some("the_db"),
            |_| {},
        )
        .unwrap();
        assert_eq!(service_names(&headless), ["cache", "db"]);
        let spec = headless.services[0].spec.as_ref().unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.ports, None);
        assert_eq!(
            headless.services[0].metadata.labels.as_ref().unwrap()[labels::ROLE],
            labels::ROLE_ALIAS_SERVICE
        );
    }

    #[test]
    fn identity_is_reasserted_after_rules_strip_it() {
        let body = include_str!("../../tests/fixtures/create/docker-run-busybox.json");
        let rendered = render(body, Some("x1"), |pod| {
            pod["metadata"]["labels"] = json!({"extra": "kept"});
            pod["metadata"]["annotations"] = Value::Null;
        })
        .unwrap();
        let labels = rendered.pod.metadata.labels.unwrap();
        assert_eq!(labels[labels::MANAGED_BY], "podbridge");
        assert_eq!(labels[labels::CONTAINER_ID], identity().id.short());
        assert_eq!(labels["extra"], "kept");
        let annotations = rendered.pod.metadata.annotations.unwrap();
        assert_eq!(
            annotations[labels::ANNOTATION_CONTAINER_ID],
            identity().id.as_str()
        );
        assert_eq!(annotations[labels::ANNOTATION_NAME], "x1");
    }

    #[test]
    fn renamed_pod_names_its_service() {
        let body = include_str!("../../tests/fixtures/create/testcontainers-redis.json");
        let rendered = render(body, None, |pod| {
            pod["metadata"]["name"] = json!("renamed-by-rule")
        })
        .unwrap();
        assert_eq!(service_names(&rendered), ["renamed-by-rule"]);
        let invalid = render(body, None, |pod| {
            pod["metadata"]["name"] = json!("Not_Valid")
        })
        .unwrap_err();
        assert!(
            matches!(&invalid, RenderError::InvalidName { field, .. } if field == "metadata.name"),
            "{invalid}"
        );
        let digit = render(body, None, |pod| pod["metadata"]["name"] = json!("1abc")).unwrap();
        assert_eq!(service_names(&digit), ["svc-1abc"]);
    }

    #[test]
    fn invalid_pod_documents_name_the_field() {
        let body = include_str!("../../tests/fixtures/create/docker-run-busybox.json");
        let error =
            render(body, None, |pod| pod["spec"]["containers"] = json!("main")).unwrap_err();
        assert!(
            matches!(&error, RenderError::DeserializePodFailed { field, .. } if field == "spec.containers"),
            "{error}"
        );
        assert!(error.to_string().contains("spec.containers"));
        let error = render(body, None, |pod| {
            pod["spec"]["containers"][0]["ports"] = json!([{"containerPort": "http"}])
        })
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("spec.containers[0].ports[0].containerPort"),
            "{error}"
        );
        let error = render(body, None, |pod| pod["metadata"] = json!([])).unwrap_err();
        assert!(
            matches!(&error, RenderError::InvalidDocument { field, .. } if field == "metadata"),
            "{error}"
        );
    }

    #[test]
    fn fixtures_render_to_typed_objects() {
        for (body, name) in [
            (
                include_str!("../../tests/fixtures/create/docker-run-busybox.json"),
                None,
            ),
            (
                include_str!("../../tests/fixtures/create/testcontainers-redis.json"),
                Some("redis"),
            ),
            (
                include_str!("../../tests/fixtures/create/compose-web.json"),
                Some("demo-web-1"),
            ),
            (
                include_str!("../../tests/fixtures/create/privileged.json"),
                Some("dind"),
            ),
        ] {
            let rendered = render(body, name, |_| {}).unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(rendered.pod.spec.unwrap().containers[0].name, "main");
        }
    }
}
