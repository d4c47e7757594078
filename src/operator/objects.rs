//! The objects a session's namespace holds, built from the session alone (no I/O), so the same
//! session always yields the same objects and server-side apply makes reconciling idempotent.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, Pod, ResourceQuota, ResourceQuotaSpec,
    Secret, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use kube::Resource as _;

use super::crd::{BridgeSession, ContainerLimits};
use crate::labels;

/// The minimal Role podbridge needs, the very file the test harness applies: one source.
const ROLE_YAML: &str = include_str!("../../tests/cluster/podbridge-role.yaml");

/// Name of the ServiceAccount, Role and RoleBinding in every session namespace.
pub const SERVICE_ACCOUNT: &str = "podbridge";
/// Key of the kubeconfig in the published Secret.
pub const KUBECONFIG_KEY: &str = "kubeconfig";

const DEFAULT_QUOTA: [(&str, &str); 8] = [
    ("pods", "100"),
    ("services", "100"),
    ("persistentvolumeclaims", "20"),
    ("requests.cpu", "4"),
    ("requests.memory", "8Gi"),
    ("limits.cpu", "8"),
    ("limits.memory", "16Gi"),
    ("requests.storage", "50Gi"),
];
const DEFAULT_LIMIT: [(&str, &str); 2] = [("cpu", "1"), ("memory", "1Gi")];
const DEFAULT_REQUEST: [(&str, &str); 2] = [("cpu", "50m"), ("memory", "64Mi")];

/// Why a session cannot have a namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "namespace name {namespace:?} (from the session name) is not a DNS-1123 label of at most \
         63 characters: name the session with at most 60 lowercase letters, digits and '-'"
    )]
    InvalidNamespaceName { namespace: String },
}

/// `pb-<session name>`, checked to be a valid namespace name.
pub fn namespace_name(session: &str) -> Result<String, NameError> {
    let namespace = format!("pb-{session}");
    let valid = namespace.len() <= 63
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !namespace.ends_with('-');
    if valid {
        Ok(namespace)
    } else {
        Err(NameError::InvalidNamespaceName { namespace })
    }
}

/// Name of the Secret holding the session's kubeconfig.
pub fn kubeconfig_secret_name(session: &str) -> String {
    format!("podbridge-kubeconfig-{session}")
}

/// Namespace the kubeconfig Secret goes to: the job pod's, so the job can mount it, else the
/// session's own.
pub fn kubeconfig_secret_namespace(session: &BridgeSession, namespace: &str) -> String {
    session
        .spec
        .job_pod
        .as_ref()
        .map(|pod| pod.namespace.clone())
        .unwrap_or_else(|| namespace.to_string())
}

/// Everything the operator applies into the namespace, in apply order.
pub struct SessionObjects {
    pub namespace: Namespace,
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub resource_quota: ResourceQuota,
    pub limit_range: LimitRange,
    pub network_policy: NetworkPolicy,
}

fn session_name(session: &BridgeSession) -> String {
    session.metadata.name.clone().unwrap_or_default()
}

/// Labels on every object of a session.
pub fn common_labels(session: &BridgeSession) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_OPERATOR.to_string(),
        ),
        (labels::SESSION.to_string(), session_name(session)),
    ])
}

/// The session as the controlling owner, so the garbage collector removes what the finalizer
/// might miss.
pub fn owner_reference(session: &BridgeSession) -> Option<OwnerReference> {
    session.controller_owner_ref(&())
}

fn meta(session: &BridgeSession, name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(common_labels(session)),
        owner_references: owner_reference(session).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}

fn quantities<'a>(
    defaults: impl IntoIterator<Item = (&'a str, &'a str)>,
    overrides: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, Quantity> {
    let mut merged: BTreeMap<String, Quantity> = defaults
        .into_iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect();
    for (key, value) in overrides.into_iter().flatten() {
        merged.insert(key.clone(), Quantity(value.clone()));
    }
    merged
}

/// Builds the namespace's objects. `job_pod` is the job's pod as last read (for its labels and
/// IP in the NetworkPolicy), if the session names one and it exists. `operator_id` labels the
/// namespace for this operator's admission webhook.
pub fn build(
    session: &BridgeSession,
    namespace: &str,
    job_pod: Option<&Pod>,
    operator_id: &str,
) -> SessionObjects {
    let spec = &session.spec;
    let profile = spec.policy.as_str();
    let mut namespace_labels = common_labels(session);
    namespace_labels.extend([
        (
            labels::PROJECT.to_string(),
            crate::render::label_value(&spec.project),
        ),
        (
            labels::JOB_ID.to_string(),
            crate::render::label_value(&spec.job_id),
        ),
        (labels::PSA_ENFORCE.to_string(), profile.to_string()),
        (
            labels::PSA_ENFORCE_VERSION.to_string(),
            "latest".to_string(),
        ),
        (labels::PSA_AUDIT.to_string(), profile.to_string()),
        (labels::PSA_WARN.to_string(), profile.to_string()),
        (labels::OPERATOR.to_string(), operator_id.to_string()),
    ]);
    let namespace_object = Namespace {
        metadata: ObjectMeta {
            labels: Some(namespace_labels),
            annotations: Some(BTreeMap::from([(
                labels::ANNOTATION_PROJECT.to_string(),
                spec.project.clone(),
            )])),
            ..meta(session, namespace, None)
        },
        ..Namespace::default()
    };

    let service_account = ServiceAccount {
        metadata: meta(session, SERVICE_ACCOUNT, Some(namespace)),
        ..ServiceAccount::default()
    };

    let template: Role = serde_yaml::from_str(ROLE_YAML).unwrap_or_default();
    let role = Role {
        metadata: meta(session, SERVICE_ACCOUNT, Some(namespace)),
        rules: template.rules,
    };

    let role_binding = RoleBinding {
        metadata: meta(session, SERVICE_ACCOUNT, Some(namespace)),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: SERVICE_ACCOUNT.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: SERVICE_ACCOUNT.into(),
            namespace: Some(namespace.into()),
            ..Subject::default()
        }]),
    };

    let resource_quota = ResourceQuota {
        metadata: meta(session, "podbridge", Some(namespace)),
        spec: Some(ResourceQuotaSpec {
            hard: Some(quantities(DEFAULT_QUOTA, spec.resource_quota.as_ref())),
            ..ResourceQuotaSpec::default()
        }),
        ..ResourceQuota::default()
    };

    let limits = spec.limit_range.clone().unwrap_or_default();
    let limit_range = LimitRange {
        metadata: meta(session, "podbridge", Some(namespace)),
        spec: Some(LimitRangeSpec {
            limits: vec![container_limits(&limits)],
        }),
    };

    let network_policy = NetworkPolicy {
        metadata: meta(session, "podbridge", Some(namespace)),
        spec: Some(network_policy_spec(session, job_pod)),
    };

    SessionObjects {
        namespace: namespace_object,
        service_account,
        role,
        role_binding,
        resource_quota,
        limit_range,
        network_policy,
    }
}

fn container_limits(limits: &ContainerLimits) -> LimitRangeItem {
    LimitRangeItem {
        type_: "Container".into(),
        default: Some(quantities(DEFAULT_LIMIT, Some(&limits.default))),
        default_request: Some(quantities(DEFAULT_REQUEST, Some(&limits.default_request))),
        max: (!limits.max.is_empty()).then(|| quantities([], Some(&limits.max))),
        ..LimitRangeItem::default()
    }
}

/// Ingress only from the namespace's own pods and from the job's pod: by namespace and pod
/// labels (namespaces carry their name as a label from v1.21) and by the pod's IP (which works on
/// older clusters and for pods without labels). Egress stays open: containers pull and download.
fn network_policy_spec(session: &BridgeSession, job_pod: Option<&Pod>) -> NetworkPolicySpec {
    let mut from = vec![NetworkPolicyPeer {
        pod_selector: Some(LabelSelector::default()),
        ..NetworkPolicyPeer::default()
    }];
    if let Some(reference) = &session.spec.job_pod {
        let pod_labels = job_pod
            .and_then(|pod| pod.metadata.labels.clone())
            .filter(|labels| !labels.is_empty());
        if let Some(pod_labels) = pod_labels {
            from.push(NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        labels::NAMESPACE_NAME.to_string(),
                        reference.namespace.clone(),
                    )])),
                    ..LabelSelector::default()
                }),
                pod_selector: Some(LabelSelector {
                    match_labels: Some(pod_labels),
                    ..LabelSelector::default()
                }),
                ..NetworkPolicyPeer::default()
            });
        }
        let pod_ip = job_pod
            .and_then(|pod| pod.status.as_ref())
            .and_then(|status| status.pod_ip.clone());
        if let Some(ip) = pod_ip {
            let cidr = if ip.contains(':') {
                format!("{ip}/128")
            } else {
                format!("{ip}/32")
            };
            from.push(NetworkPolicyPeer {
                ip_block: Some(IPBlock { cidr, except: None }),
                ..NetworkPolicyPeer::default()
            });
        }
    }
    NetworkPolicySpec {
        pod_selector: Some(LabelSelector::default()),
        policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
        ingress: Some(vec![NetworkPolicyIngressRule {
            from: Some(from),
            ports: None,
        }]),
        egress: Some(vec![NetworkPolicyEgressRule {
            to: Some(egress_peers()),
            ports: None,
        }]),
    }
}

/// Cloud instance-metadata addresses (AWS, GCP, Azure, OpenStack share the IPv4 one; AWS's
/// IPv6 one): a container that reaches them may read the node's cloud credentials.
const METADATA_ADDRESSES: [(&str, &str); 2] = [
    ("0.0.0.0/0", "169.254.169.254/32"),
    ("::/0", "fd00:ec2::254/128"),
];

/// Where session pods may connect: anywhere but the metadata addresses, and every pod of the
/// cluster (DNS; plugins that do not apply `ipBlock` to pod addresses need this peer). Other
/// sessions stay out of reach all the same: each session's ingress admits only its own namespace
/// and its job pod.
fn egress_peers() -> Vec<NetworkPolicyPeer> {
    let mut peers: Vec<NetworkPolicyPeer> = METADATA_ADDRESSES
        .iter()
        .map(|(cidr, metadata)| NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: (*cidr).to_owned(),
                except: Some(vec![(*metadata).to_owned()]),
            }),
            ..NetworkPolicyPeer::default()
        })
        .collect();
    peers.push(NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::default()),
        ..NetworkPolicyPeer::default()
    });
    peers
}

/// The Secret that carries the session's kubeconfig to the job.
pub fn kubeconfig_secret(
    session: &BridgeSession,
    secret_namespace: &str,
    kubeconfig: &str,
) -> Secret {
    Secret {
        metadata: meta(
            session,
            &kubeconfig_secret_name(&session_name(session)),
            Some(secret_namespace),
        ),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            KUBECONFIG_KEY.to_string(),
            ByteString(kubeconfig.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::crd::{BridgeSessionSpec, JobPod, PolicyProfile};
    use super::*;

    fn session(job_pod: bool) -> BridgeSession {
        let mut session = BridgeSession::new(
            "job-42",
            BridgeSessionSpec {
                project: "group/app".into(),
                job_id: "42".into(),
                job_pod: job_pod.then(|| JobPod {
                    namespace: "ci".into(),
                    name: "runner-42".into(),
                    uid: None,
                }),
                policy: PolicyProfile::Restricted,
                ttl_seconds: Some(600),
                resource_quota: Some(BTreeMap::from([("pods".into(), "7".into())])),
                limit_range: None,
                credentials: Default::default(),
            },
        );
        session.metadata.uid = Some("0000-1111".into());
        session
    }

    #[test]
    fn namespace_names_are_checked() {
        assert_eq!(namespace_name("job-42").unwrap(), "pb-job-42");
        assert!(namespace_name(&"a".repeat(61)).is_err());
        assert!(namespace_name("Job").is_err());
        assert!(namespace_name("a.b").is_err());
    }

    #[test]
    fn the_role_is_the_harness_role() {
        let objects = build(&session(false), "pb-job-42", None, "blue");
        let harness: Role = serde_yaml::from_str(ROLE_YAML).unwrap();
        assert!(harness.rules.as_ref().is_some_and(|r| r.len() == 4));
        assert_eq!(objects.role.rules, harness.rules);
        assert_eq!(
            objects.role.metadata.namespace.as_deref(),
            Some("pb-job-42")
        );
        let subject = &objects.role_binding.subjects.as_ref().unwrap()[0];
        assert_eq!(subject.namespace.as_deref(), Some("pb-job-42"));
    }

    #[test]
    fn labels_quota_and_owner() {
        let objects = build(&session(false), "pb-job-42", None, "blue");
        let labels = objects.namespace.metadata.labels.unwrap();
        assert_eq!(labels[labels::PSA_ENFORCE], "restricted");
        assert_eq!(labels[labels::PROJECT], "group-app");
        assert_eq!(labels[labels::SESSION], "job-42");
        // the webhook of operator "blue" covers this namespace, and sees the raw project
        assert_eq!(labels[labels::OPERATOR], "blue");
        let annotations = objects.namespace.metadata.annotations.unwrap();
        assert_eq!(annotations[labels::ANNOTATION_PROJECT], "group/app");
        let hard = objects.resource_quota.spec.unwrap().hard.unwrap();
        assert_eq!(hard["pods"].0, "7");
        assert_eq!(hard["limits.memory"].0, "16Gi");
        let owner = &objects.namespace.metadata.owner_references.unwrap()[0];
        assert_eq!(owner.kind, "BridgeSession");
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn egress_keeps_the_metadata_address_out() {
        let spec = build(&session(true), "pb-job-42", None, "blue")
            .network_policy
            .spec
            .unwrap();
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_string(), "Egress".to_string()][..])
        );
        let to = spec.egress.unwrap()[0].to.clone().unwrap();
        let blocks: Vec<_> = to.iter().filter_map(|peer| peer.ip_block.clone()).collect();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].cidr, "0.0.0.0/0");
        assert_eq!(
            blocks[0].except.as_deref(),
            Some(&["169.254.169.254/32".to_string()][..])
        );
        assert_eq!(blocks[1].cidr, "::/0");
        // pods of the cluster (DNS) stay reachable; sessions keep each other out by ingress
        assert!(to
            .iter()
            .any(|peer| peer.namespace_selector == Some(LabelSelector::default())));
    }

    #[test]
    fn network_policy_admits_the_job_pod() {
        let mut pod = Pod::default();
        pod.metadata.labels = Some(BTreeMap::from([("job".into(), "42".into())]));
        pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
            pod_ip: Some("10.244.0.9".into()),
            ..Default::default()
        });
        let objects = build(&session(true), "pb-job-42", Some(&pod), "blue");
        let spec = objects.network_policy.spec.unwrap();
        let from = spec.ingress.unwrap()[0].from.clone().unwrap();
        assert_eq!(from.len(), 3);
        assert_eq!(from[2].ip_block.as_ref().unwrap().cidr, "10.244.0.9/32");
        let without_job = build(&session(false), "pb-job-42", None, "blue");
        let from = without_job.network_policy.spec.unwrap().ingress.unwrap()[0]
            .from
            .clone()
            .unwrap();
        assert_eq!(from.len(), 1);
    }
}
