//! The BridgeSession custom resource: one CI job's request for a namespace of its own.
//!
//! Cluster-scoped on purpose: a session owns a Namespace (a cluster-scoped object), and only a
//! cluster-scoped owner may own it, so Kubernetes' garbage collector is a backstop for the
//! operator's finalizer. It also keeps `pb-<session>` unique without encoding a namespace.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a CI job asks for.
// Each `printcolumn(..)` repeats `type_ = "string"`, which clippy takes for a duplicate attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "podbridge.io",
    version = "v1alpha1",
    kind = "BridgeSession",
    plural = "bridgesessions",
    shortname = "bsess",
    status = "BridgeSessionStatus",
    derive = "PartialEq",
    doc = "A CI job's podbridge session: the operator gives it a namespace of its own, a \
           ServiceAccount limited to that namespace and a kubeconfig for it.",
    printcolumn(name = "Namespace", type_ = "string", json_path = ".status.namespace"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Project", type_ = "string", json_path = ".spec.project"),
    printcolumn(name = "Job", type_ = "string", json_path = ".spec.jobId"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BridgeSessionSpec {
    /// The CI project (for example its path); copied into the namespace's labels.
    pub project: String,
    /// The CI job's ID; copied into the namespace's labels.
    pub job_id: String,
    /// The CI job's own pod. When it is gone (or has finished), the session is deleted; its
    /// namespace is where the kubeconfig Secret is written and the only other namespace whose
    /// pods may connect into the session's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_pod: Option<JobPod>,
    /// Pod Security Standard profile written as Pod Security Admission labels.
    #[serde(default)]
    pub policy: PolicyProfile,
    /// Delete the session this many seconds after it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub ttl_seconds: Option<u64>,
    /// ResourceQuota `hard` entries, merged over the defaults (same key: this value wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_quota: Option<BTreeMap<String, String>>,
    /// Container LimitRange entries, merged over the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_range: Option<ContainerLimits>,
    /// How the session's credentials reach its podbridge.
    #[serde(default, skip_serializing_if = "CredentialDelivery::is_default")]
    pub credentials: CredentialDelivery,
}

/// How a session's kubeconfig reaches the podbridge that uses it.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CredentialDelivery {
    /// A Secret in the job pod's namespace (else the session's), for whoever made the session to
    /// mount. Anything in that namespace allowed to read Secrets can read it too.
    #[default]
    Secret,
    /// Handed by the operator's session broker to the podbridge of the job pod, in memory, and
    /// written nowhere: sessions the operator makes for a BridgeRunner's job pods.
    Broker,
}

impl CredentialDelivery {
    fn is_default(&self) -> bool {
        *self == CredentialDelivery::default()
    }
}

/// A CI runner whose job pods get sessions on their podbridge's request: the platform admin's
/// terms for them (profile, quota, TTL, project), so that nothing the job itself controls decides
/// them.
// Each `printcolumn(..)` repeats `type_ = "string"`, which clippy takes for a duplicate attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "podbridge.io",
    version = "v1alpha1",
    kind = "BridgeRunner",
    plural = "bridgerunners",
    shortname = "brun",
    derive = "PartialEq",
    doc = "A CI runner namespace whose job pods' podbridge sidecars may ask the operator for a \
           session, and the terms those sessions get.",
    printcolumn(name = "Namespace", type_ = "string", json_path = ".spec.namespace"),
    printcolumn(name = "Policy", type_ = "string", json_path = ".spec.policy"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BridgeRunnerSpec {
    /// The namespace the runner creates job pods in.
    pub namespace: String,
    /// ServiceAccounts (in that namespace) the job pods run as; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    /// Labels a job pod must carry (set by the runner, e.g. from its pod template).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// The session's project: a fixed value, or a job pod label the runner sets.
    #[serde(default)]
    pub project: ValueSource,
    /// The session's job ID; default: the job pod's name.
    #[serde(default, skip_serializing_if = "ValueSource::is_unset")]
    pub job_id: ValueSource,
    /// Pod Security Standard profile of every session.
    #[serde(default)]
    pub policy: PolicyProfile,
    /// Sessions are deleted this many seconds after they were made (besides with their pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub ttl_seconds: Option<u64>,
    /// ResourceQuota `hard` entries for every session, merged over the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_quota: Option<BTreeMap<String, String>>,
    /// Container LimitRange entries for every session, merged over the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_range: Option<ContainerLimits>,
}

/// A value fixed by the admin, or read from a label of the job pod.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Label key on the job pod; only labels the job cannot set itself belong here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_label: Option<String>,
}

impl ValueSource {
    fn is_unset(&self) -> bool {
        self.value.is_none() && self.from_label.is_none()
    }
}

/// A pod, by namespace and name (and optionally UID, so a new pod of the same name is not
/// mistaken for the job's).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobPod {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

pub use crate::config::PolicyProfile;

/// Per-container LimitRange values; quantities as Kubernetes writes them (`500m`, `1Gi`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerLimits {
    /// Limits given to containers that set none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub default: BTreeMap<String, String>,
    /// Requests given to containers that set none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub default_request: BTreeMap<String, String>,
    /// Largest limit a container may set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub max: BTreeMap<String, String>,
}

/// What the operator reports.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BridgeSessionStatus {
    /// The session's namespace, `pb-<session name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SessionPhase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<SessionCondition>,
    /// Where the namespace-scoped kubeconfig is (key `kubeconfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret: Option<SecretReference>,
    /// When the TTL runs out (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SessionPhase {
    /// Objects are being created or the ServiceAccount token is not there yet.
    Pending,
    /// The namespace, its access rules and the kubeconfig are in place.
    Ready,
    /// The session cannot be served as asked (see the Ready condition).
    Failed,
    /// The session is being deleted with its namespace.
    Terminating,
}

/// A status condition in the shape of `metav1.Condition`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionCondition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// RFC 3339.
    pub last_transition_time: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretReference {
    pub namespace: String,
    pub name: String,
}

/// The CRDs as YAML, exactly as `deploy/base/crd.yaml` holds them.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt as _;
    format!(
        "# Generated by `podbridge operator --print-crd` from src/operator/crd.rs; do not edit.\n{}---\n{}",
        serde_yaml::to_string(&BridgeSession::crd()).unwrap_or_default(),
        serde_yaml::to_string(&BridgeRunner::crd()).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_crd_yaml_is_generated_from_the_type() {
        let shipped = include_str!("../../deploy/base/crd.yaml");
        assert!(
            shipped == crd_yaml(),
            "deploy/base/crd.yaml is stale: run `cargo run -- operator --print-crd > deploy/base/crd.yaml`"
        );
    }

    #[test]
    fn spec_defaults_and_names() {
        let spec: BridgeSessionSpec =
            serde_json::from_str(r#"{"project":"group/app","jobId":"42"}"#).unwrap();
        assert_eq!(spec.policy, PolicyProfile::Baseline);
        assert_eq!(spec.ttl_seconds, None);
        let yaml = crd_yaml();
        assert!(yaml.contains("scope: Cluster"), "{yaml}");
        assert!(yaml.contains("name: bridgesessions.podbridge.io"), "{yaml}");
    }
}
