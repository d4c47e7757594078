//! Admission reviews and their verdicts, without I/O: what the operator's validating webhook
//! decides for a pod, Service or PersistentVolumeClaim written into a session namespace by
//! anyone — podbridge itself, or a leaked session token and `kubectl`.
//!
//! Pods meet the session's Pod Security Standard (its profile, carried by the namespace) and the
//! policy chain's validations (`rules::validate_only`), as `podbridge serve` would apply them;
//! Services and claims may only take the shapes podbridge renders itself. The review types are
//! written here (a dozen fields of `admission.k8s.io/v1`) rather than taken from kube's
//! `admission` feature, which would pull a second json-patch major version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::labels;
use crate::rules::file::PodSecurityLevel;
use crate::rules::{self, pss, ObjectKind, PolicySet, Problem, RequestBody, Subject};

/// Why a review could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the body is not an AdmissionReview: {0}")]
    ReviewUnreadable(String),
    #[error("the AdmissionReview carries no request")]
    RequestMissing,
    #[error("{operation} of {resource} carries no object")]
    ObjectMissing { operation: String, resource: String },
    #[error("{resource} {name:?} is not a JSON object")]
    ObjectNotAnObject { resource: String, name: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub const API_VERSION: &str = "admission.k8s.io/v1";

/// `admission.k8s.io/v1` AdmissionReview as the API server sends it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    #[serde(default)]
    pub request: Option<AdmissionRequest>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    pub resource: GroupVersionResource,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: String,
    #[serde(default)]
    pub user_info: UserInfo,
    #[serde(default)]
    pub object: Option<Value>,
    #[serde(default)]
    pub old_object: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GroupVersionResource {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    pub resource: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserInfo {
    #[serde(default)]
    pub username: Option<String>,
}

/// The answer, an AdmissionReview with `response` only.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReviewResponse {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub response: Response,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// kubectl prints these as `Warning:` lines (audit findings).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

/// What the webhook decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Allowed {
        warnings: Vec<String>,
    },
    Denied {
        message: String,
        warnings: Vec<String>,
    },
    /// The review itself was malformed: refused, never guessed at.
    Invalid {
        message: String,
    },
}

impl Verdict {
    pub fn into_response(self, uid: String) -> ReviewResponse {
        let (allowed, status, warnings) = match self {
            Verdict::Allowed { warnings } => (true, None, warnings),
            Verdict::Denied { message, warnings } => (
                false,
                Some(Status {
                    code: 403,
                    reason: "Forbidden",
                    message,
                }),
                warnings,
            ),
            Verdict::Invalid { message } => (
                false,
                Some(Status {
                    code: 400,
                    reason: "Invalid",
                    message,
                }),
                Vec::new(),
            ),
        };
        ReviewResponse {
            api_version: API_VERSION,
            kind: "AdmissionReview",
            response: Response {
                uid,
                allowed,
                status,
                warnings,
            },
        }
    }

    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allowed { .. })
    }
}

/// Reads a review body; on failure also returns whatever `request.uid` could be found, so the
/// API server can match the refusal to its request.
pub fn parse(body: &[u8]) -> Result<AdmissionRequest, (Error, String)> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| (Error::ReviewUnreadable(e.to_string()), String::new()))?;
    let uid = value
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let review: AdmissionReview = serde_json::from_value(value)
        .map_err(|e| (Error::ReviewUnreadable(e.to_string()), uid.clone()))?;
    review.request.ok_or((Error::RequestMissing, uid))
}

/// What the webhook knows of the session namespace a request writes into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionNamespace {
    pub name: String,
    /// The session's Pod Security Standard profile (the namespace's
    /// `pod-security.kubernetes.io/enforce` label).
    pub level: PodSecurityLevel,
    /// The session's CI project, for policy selectors (`projects:`).
    pub project: Option<String>,
}

impl SessionNamespace {
    /// From the namespace's labels and annotations as the operator wrote them. An unknown or
    /// missing profile is judged as `restricted`: a namespace the operator covers is never
    /// looser than asked.
    pub fn from_metadata(
        name: &str,
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
    ) -> Self {
        let level = match labels.get(labels::PSA_ENFORCE).map(String::as_str) {
            Some("baseline") => PodSecurityLevel::Baseline,
            _ => PodSecurityLevel::Restricted,
        };
        SessionNamespace {
            name: name.to_string(),
            level,
            project: annotations.get(labels::ANNOTATION_PROJECT).cloned(),
        }
    }
}

/// Users who may bind a pending claim to a volume: the PersistentVolume controller (its own
/// credentials or, with `--use-service-account-credentials`, a kube-system ServiceAccount).
fn is_volume_binder(user: Option<&str>) -> bool {
    user.is_some_and(|user| {
        user == "system:kube-controller-manager"
            || user.starts_with("system:serviceaccount:kube-system:")
    })
}

/// Decides one request. `today` dates policy exceptions.
pub fn decide(
    set: &PolicySet,
    request: &AdmissionRequest,
    namespace: &SessionNamespace,
    today: jiff::civil::Date,
) -> Verdict {
    match request.operation.as_str() {
        "CREATE" | "UPDATE" => {}
        // Nothing is written: deleting and connecting stay as RBAC allows.
        _ => return Verdict::Allowed { warnings: vec![] },
    }
    let sub_resource = request.sub_resource.as_deref().unwrap_or("");
    let resource = request.resource.resource.as_str();
    let Some(object) = request.object.as_ref() else {
        return Verdict::Invalid {
            message: Error::ObjectMissing {
                operation: request.operation.clone(),
                resource: resource.to_string(),
            }
            .to_string(),
        };
    };
    if !object.is_object() {
        return Verdict::Invalid {
            message: Error::ObjectNotAnObject {
                resource: resource.to_string(),
                name: request.name.clone().unwrap_or_default(),
            }
            .to_string(),
        };
    }
    let old = request.old_object.as_ref().filter(|old| old.is_object());
    match (resource, sub_resource) {
        ("pods", "") => pod(set, object, old, namespace, today),
        ("pods", "ephemeralcontainers") => {
            // Kubernetes before 1.22 sends an `EphemeralContainers` object, later ones the Pod.
            let document = if object.get("kind").and_then(Value::as_str) == Some("Pod") {
                object.clone()
            } else {
                let containers = object
                    .get("ephemeralContainers")
                    .cloned()
                    .unwrap_or(Value::Array(vec![]));
                serde_json::json!({"metadata": object.get("metadata").cloned().unwrap_or_default(),
                    "spec": {"ephemeralContainers": containers}})
            };
            pod(set, &document, None, namespace, today)
        }
        ("services", "") => service(object),
        ("persistentvolumeclaims", "") => claim(
            set,
            object,
            old,
            request.user_info.username.as_deref(),
            namespace,
            today,
        ),
        // Status and other subresources, and kinds the webhook is not registered for.
        _ => Verdict::Allowed { warnings: vec![] },
    }
}

fn object_name(object: &Value) -> String {
    object
        .pointer("/metadata/name")
        .or_else(|| object.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Annotations Pod Security reads (AppArmor, legacy seccomp): a change to them is a change to
/// the pod's security.
fn security_annotations(pod: &Value) -> BTreeMap<String, String> {
    string_map(pod.pointer("/metadata/annotations"))
        .into_iter()
        .filter(|(key, _)| {
            key.starts_with("container.apparmor.security.beta.kubernetes.io/")
                || key.starts_with("seccomp.security.alpha.kubernetes.io/")
                || key.starts_with("container.seccomp.security.alpha.kubernetes.io/")
        })
        .collect()
}

fn denied(what: &str, lines: Vec<String>, warnings: Vec<String>) -> Verdict {
    if lines.is_empty() {
        return Verdict::Allowed { warnings };
    }
    Verdict::Denied {
        message: format!("podbridge policy refuses {what}: {}", lines.join("; ")),
        warnings,
    }
}

fn at(message: String, pointer: &str) -> String {
    if pointer.is_empty() {
        message
    } else {
        format!("{message} (at {pointer})")
    }
}

/// The policy's validations on `document`, as denial lines naming policy, rule and file.
fn policy_lines(
    set: &PolicySet,
    document: &Value,
    kind: ObjectKind,
    subject: Subject<'_>,
    today: jiff::civil::Date,
) -> (Vec<String>, Vec<String>) {
    let request = Value::Object(Default::default());
    let evaluation = rules::validate_only(
        set,
        rules::Input {
            pod: document.clone(),
            kind,
            request: RequestBody::new(&request),
            image: None,
            subject,
            today,
        },
    );
    let lines = evaluation
        .problems
        .iter()
        .filter_map(|problem| match problem {
            Problem::Denied {
                policy,
                rule,
                file,
                message,
            } => Some(format!("policy {policy}, rule {rule} ({file}): {message}")),
            // A rule that cannot run refuses: the webhook fails closed, as `serve` does.
            Problem::RuleFailed {
                policy,
                rule,
                file,
                message,
            } => Some(format!(
                "policy {policy}, rule {rule} ({file}) could not run: {message}"
            )),
            Problem::OverrideRefused { .. } => None,
        })
        .collect();
    (lines, evaluation.warnings)
}

fn pod(
    set: &PolicySet,
    pod: &Value,
    old: Option<&Value>,
    namespace: &SessionNamespace,
    today: jiff::civil::Date,
) -> Verdict {
    if let Some(old) = old {
        // Label, annotation and finalizer updates (and the deletion of a pod admitted before
        // this webhook existed) do not change what the pod may do.
        let unchanged = old.get("spec") == pod.get("spec")
            && security_annotations(old) == security_annotations(pod);
        if unchanged || pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Verdict::Allowed { warnings: vec![] };
        }
    }
    let level_name = match namespace.level {
        PodSecurityLevel::Baseline => "baseline",
        PodSecurityLevel::Restricted => "restricted",
    };
    let mut lines: Vec<String> = pss::check(pod, namespace.level)
        .into_iter()
        .map(|violation| {
            at(
                format!(
                    "session profile {level_name:?} (namespace label {}): Pod Security Standard \
                     {level_name:?}: {}: {}",
                    labels::PSA_ENFORCE,
                    violation.control,
                    violation.message
                ),
                &violation.pointer,
            )
        })
        .collect();
    let image = pod
        .pointer("/spec/containers/0/image")
        .and_then(Value::as_str)
        .unwrap_or("");
    // Selectors see the first container's image, normalised, as for a Docker container.
    let image = crate::model::ImageRef::parse(image)
        .map(|reference| reference.normalised())
        .unwrap_or_else(|_| image.to_string());
    let pod_labels = string_map(pod.pointer("/metadata/labels"));
    let docker_name = pod
        .pointer(&format!(
            "/metadata/annotations/{}",
            rules::pointer::escape(labels::ANNOTATION_NAME)
        ))
        .and_then(Value::as_str);
    let (policy, warnings) = policy_lines(
        set,
        pod,
        ObjectKind::Pod,
        Subject {
            image: &image,
            name: docker_name,
            labels: &pod_labels,
            project: namespace.project.as_deref(),
            purpose: crate::model::Purpose::Container,
        },
        today,
    );
    lines.extend(policy);
    let what = format!("pod {}/{}", namespace.name, object_name(pod));
    denied(&what, lines, warnings)
}

/// podbridge renders ClusterIP and headless Services selecting its own pods (`render::objects`):
/// anything that reaches beyond the cluster network, or traffic meant for other addresses
/// (`externalIPs`, CVE-2020-8554), is refused.
fn service(service: &Value) -> Verdict {
    const RULE: &str = "rule services/cluster-ip-only (built into the podbridge operator)";
    let spec = service.get("spec").unwrap_or(&Value::Null);
    let mut lines = Vec::new();
    let service_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if service_type != "ClusterIP" {
        lines.push(at(
            format!(
                "{RULE}: type {service_type} is not allowed; podbridge only creates ClusterIP \
                 and headless Services (docker -p is served by podbridge's own port forwarding)"
            ),
            "/spec/type",
        ));
    }
    let non_empty = |field: &str| match spec.get(field) {
        None | Some(Value::Null) => false,
        Some(Value::Array(items)) => !items.is_empty(),
        Some(Value::String(text)) => !text.is_empty(),
        Some(_) => true,
    };
    for (field, why) in [
        (
            "externalIPs",
            "would capture traffic for addresses outside the session",
        ),
        ("externalName", "points the name outside the cluster"),
        ("loadBalancerIP", "asks for an external address"),
        (
            "loadBalancerSourceRanges",
            "belongs to external load balancers",
        ),
    ] {
        if non_empty(field) {
            lines.push(at(
                format!("{RULE}: {field} is not allowed: it {why}"),
                &format!("/spec/{field}"),
            ));
        }
    }
    for (index, port) in spec
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if port.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
            lines.push(at(
                format!("{RULE}: nodePort is not allowed: it opens a port on every node"),
                &format!("/spec/ports/{index}/nodePort"),
            ));
        }
    }
    let what = format!("service {}", object_name(service));
    denied(&what, lines, vec![])
}

/// Claims meet the policy's `kinds: [PersistentVolumeClaim]` validations, and may not pick a
/// PersistentVolume by name (podbridge's claims are provisioned): a named volume could be
/// another tenant's. The PersistentVolume controller still binds pending claims.
fn claim(
    set: &PolicySet,
    claim: &Value,
    old: Option<&Value>,
    user: Option<&str>,
    namespace: &SessionNamespace,
    today: jiff::civil::Date,
) -> Verdict {
    const RULE: &str = "rule claims/no-chosen-volume (built into the podbridge operator)";
    let volume = |claim: &Value| {
        claim
            .pointer("/spec/volumeName")
            .and_then(Value::as_str)
            .filter(|name| !name.is_empty())
            .map(str::to_string)
    };
    let mut lines = Vec::new();
    let newly_bound = volume(claim).is_some() && old.and_then(volume) != volume(claim);
    if newly_bound && !(old.is_some() && is_volume_binder(user)) {
        lines.push(at(
            format!(
                "{RULE}: volumeName is not allowed: podbridge's claims are provisioned, and a \
                 volume chosen by name may hold another tenant's data"
            ),
            "/spec/volumeName",
        ));
    }
    let name = object_name(claim);
    let claim_labels = string_map(claim.pointer("/metadata/labels"));
    let (policy, warnings) = policy_lines(
        set,
        claim,
        ObjectKind::PersistentVolumeClaim,
        Subject {
            image: "",
            name: Some(&name),
            labels: &claim_labels,
            project: namespace.project.as_deref(),
            purpose: crate::model::Purpose::Container,
        },
        today,
    );
    lines.extend(policy);
    denied(&format!("claim {}/{name}", namespace.name), lines, warnings)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn builtin() -> PolicySet {
        crate::policy_store::builtin(rules::Limits::default()).unwrap()
    }

    fn session(level: PodSecurityLevel) -> SessionNamespace {
        SessionNamespace {
            name: "pb-job-1".into(),
            level,
            project: Some("group/app".into()),
        }
    }

    fn review(resource: &str, operation: &str, object: Value) -> AdmissionRequest {
        let body = json!({
            "apiVersion": API_VERSION, "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": "X"},
                "resource": {"group": "", "version": "v1", "resource": resource},
                "namespace": "pb-job-1", "operation": operation,
                "userInfo": {"username": "system:serviceaccount:pb-job-1:podbridge"},
                "object": object,
            }
        });
        parse(body.to_string().as_bytes()).unwrap()
    }

    fn decide_builtin(request: &AdmissionRequest, level: PodSecurityLevel) -> Verdict {
        decide(
            &builtin(),
            request,
            &session(level),
            jiff::civil::date(2026, 1, 1),
        )
    }

    fn message(verdict: &Verdict) -> &str {
        match verdict {
            Verdict::Denied { message, .. } | Verdict::Invalid { message } => message,
            Verdict::Allowed { .. } => panic!("expected a refusal, got {verdict:?}"),
        }
    }

    /// A pod as `podbridge serve` writes it under the built-in policies, then defaulted by the
    /// API server (the webhook sees it after defaulting).
    fn podbridge_pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "pb-cache-0a1b2c", "namespace": "pb-job-1",
                "labels": {"app.kubernetes.io/managed-by": "podbridge", "podbridge.io/instance": "e2e",
                           "podbridge.io/role": "container", "podbridge.io/container-id": "0a1b2c3d4e5f"},
                "annotations": {"podbridge.io/name": "cache"}},
            "spec": {
                "serviceAccountName": "default", "automountServiceAccountToken": false,
                "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                "terminationGracePeriodSeconds": 10, "dnsPolicy": "ClusterFirst",
                "initContainers": [{"name": "unpack", "image": "docker.io/library/busybox:latest",
                    "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["NET_RAW"]}}}],
                "containers": [{"name": "main", "image": "docker.io/library/busybox:latest",
                    "imagePullPolicy": "IfNotPresent",
                    "ports": [{"containerPort": 6379, "protocol": "TCP"}],
                    "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 5},
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "2Gi"}},
                    "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["NET_RAW"]}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "bind-0", "mountPath": "/src"}]}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "pb-e2e-data"}},
                            {"name": "bind-0", "emptyDir": {}}]}})
    }

    #[test]
    fn podbridge_pods_are_admitted() {
        let verdict = decide_builtin(
            &review("pods", "CREATE", podbridge_pod()),
            PodSecurityLevel::Baseline,
        );
        assert!(verdict.is_allowed(), "{verdict:?}");
    }

    #[test]
    fn a_privileged_pod_is_refused_naming_file_rule_and_field() {
        let mut pod = podbridge_pod();
        pod["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
        let verdict = decide_builtin(&review("pods", "CREATE", pod), PodSecurityLevel::Baseline);
        let message = message(&verdict);
        assert!(
            message.contains("policy pod-security, rule standard"),
            "{message}"
        );
        assert!(
            message.contains("policies/baseline/90-pod-security.yaml"),
            "{message}"
        );
        assert!(message.contains("Privileged Containers"), "{message}");
        assert!(
            message.contains("/spec/containers/0/securityContext/privileged"),
            "{message}"
        );
    }

    #[test]
    fn host_namespaces_and_host_paths_are_refused() {
        let pod = json!({"metadata": {"name": "evil"}, "spec": {"hostPID": true,
            "containers": [{"name": "c", "image": "busybox"}],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}});
        let verdict = decide_builtin(&review("pods", "CREATE", pod), PodSecurityLevel::Baseline);
        let message = message(&verdict);
        assert!(message.contains("/spec/hostPID"), "{message}");
        assert!(
            message.contains("policy mounts, rule no-host-paths"),
            "{message}"
        );
        assert!(message.contains("/spec/volumes/0/hostPath"), "{message}");
        assert!(message.contains("pod pb-job-1/evil"), "{message}");
    }

    #[test]
    fn the_session_profile_applies_beyond_the_policy() {
        // The built-in policy checks baseline; a restricted session adds its own standard.
        let pod = podbridge_pod();
        let verdict = decide_builtin(&review("pods", "CREATE", pod), PodSecurityLevel::Restricted);
        let message = message(&verdict);
        assert!(
            message.contains("session profile \"restricted\""),
            "{message}"
        );
        assert!(message.contains("Running as Non-root"), "{message}");
        let hardened = json!({"metadata": {"name": "ok"}, "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "busybox", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}});
        let verdict = decide_builtin(
            &review("pods", "CREATE", hardened),
            PodSecurityLevel::Restricted,
        );
        assert!(verdict.is_allowed(), "{verdict:?}");
    }

    #[test]
    fn policy_deny_rules_see_the_first_image_normalised() {
        let pod = json!({"metadata": {"name": "bk"}, "spec": {
            "containers": [{"name": "c", "image": "moby/buildkit:latest"}]}});
        let verdict = decide_builtin(&review("pods", "CREATE", pod), PodSecurityLevel::Baseline);
        assert!(
            message(&verdict).contains("rule no-buildkit-container"),
            "{verdict:?}"
        );
    }

    #[test]
    fn metadata_updates_of_a_pod_are_admitted_spec_changes_are_checked() {
        let mut old = podbridge_pod();
        old["spec"]["hostNetwork"] = json!(true);
        let mut relabelled = old.clone();
        relabelled["metadata"]["labels"]["extra"] = json!("x");
        let mut request = review("pods", "UPDATE", relabelled);
        request.old_object = Some(old.clone());
        assert!(decide_builtin(&request, PodSecurityLevel::Baseline).is_allowed());
        let mut changed = old.clone();
        changed["spec"]["containers"][0]["image"] = json!("docker.io/library/alpine:3");
        let mut request = review("pods", "UPDATE", changed);
        request.old_object = Some(old);
        assert!(!decide_builtin(&request, PodSecurityLevel::Baseline).is_allowed());
    }

    #[test]
    fn ephemeral_containers_of_either_shape_are_checked() {
        let privileged =
            json!([{"name": "debug", "image": "busybox", "securityContext": {"privileged": true}}]);
        let legacy = json!({"kind": "EphemeralContainers", "metadata": {"name": "web"},
            "ephemeralContainers": privileged});
        let mut request = review("pods", "UPDATE", legacy);
        request.sub_resource = Some("ephemeralcontainers".into());
        let verdict = decide_builtin(&request, PodSecurityLevel::Baseline);
        assert!(
            message(&verdict).contains("/spec/ephemeralContainers/0/securityContext/privileged")
        );
        let mut pod = podbridge_pod();
        pod["spec"]["ephemeralContainers"] = privileged;
        let mut request = review("pods", "UPDATE", pod);
        request.sub_resource = Some("ephemeralcontainers".into());
        assert!(!decide_builtin(&request, PodSecurityLevel::Baseline).is_allowed());
    }

    #[test]
    fn services_podbridge_renders_pass_external_ones_do_not() {
        let cluster_ip = json!({"metadata": {"name": "cache"}, "spec": {"type": "ClusterIP",
            "clusterIP": "10.96.0.12", "selector": {"podbridge.io/container-id": "0a1b"},
            "ports": [{"port": 6379, "targetPort": 6379, "protocol": "TCP"}], "publishNotReadyAddresses": true}});
        assert!(decide_builtin(
            &review("services", "CREATE", cluster_ip),
            PodSecurityLevel::Baseline
        )
        .is_allowed());
        let headless = json!({"metadata": {"name": "alias"}, "spec": {"clusterIP": "None", "selector": {"a": "b"}}});
        assert!(decide_builtin(
            &review("services", "CREATE", headless),
            PodSecurityLevel::Baseline
        )
        .is_allowed());
        let node_port = json!({"metadata": {"name": "np"}, "spec": {"type": "NodePort",
            "ports": [{"port": 80, "nodePort": 30080}]}});
        let verdict = decide_builtin(
            &review("services", "CREATE", node_port),
            PodSecurityLevel::Baseline,
        );
        let message = message(&verdict);
        assert!(
            message.contains("type NodePort is not allowed"),
            "{message}"
        );
        assert!(message.contains("(at /spec/type)"), "{message}");
        assert!(message.contains("/spec/ports/0/nodePort"), "{message}");
        let external = json!({"metadata": {"name": "x"}, "spec": {"externalIPs": ["1.2.3.4"]}});
        let verdict = decide_builtin(
            &review("services", "CREATE", external),
            PodSecurityLevel::Baseline,
        );
        assert!(message_of(&verdict).contains("externalIPs"));
        for kind in ["LoadBalancer", "ExternalName"] {
            let service = json!({"metadata": {"name": "x"}, "spec": {"type": kind}});
            assert!(!decide_builtin(
                &review("services", "CREATE", service),
                PodSecurityLevel::Baseline
            )
            .is_allowed());
        }
    }

    fn message_of(verdict: &Verdict) -> String {
        message(verdict).to_string()
    }

    #[test]
    fn claims_may_not_choose_a_volume_but_the_binder_may_bind() {
        let provisioned = json!({"metadata": {"name": "pb-e2e-data", "labels": {"podbridge.io/role": "volume"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        assert!(decide_builtin(
            &review("persistentvolumeclaims", "CREATE", provisioned.clone()),
            PodSecurityLevel::Baseline
        )
        .is_allowed());
        let mut chosen = provisioned.clone();
        chosen["spec"]["volumeName"] = json!("someone-elses-pv");
        let verdict = decide_builtin(
            &review("persistentvolumeclaims", "CREATE", chosen.clone()),
            PodSecurityLevel::Baseline,
        );
        assert!(message_of(&verdict).contains("/spec/volumeName"));
        // binding a pending claim: the session's user may not, the controller may
        let mut update = review("persistentvolumeclaims", "UPDATE", chosen.clone());
        update.old_object = Some(provisioned.clone());
        assert!(!decide_builtin(&update, PodSecurityLevel::Baseline).is_allowed());
        update.user_info.username =
            Some("system:serviceaccount:kube-system:persistent-volume-binder".into());
        assert!(decide_builtin(&update, PodSecurityLevel::Baseline).is_allowed());
        // once bound, updates that keep the volume are fine for anyone
        let mut resized = chosen.clone();
        resized["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        let mut update = review("persistentvolumeclaims", "UPDATE", resized);
        update.old_object = Some(chosen);
        assert!(decide_builtin(&update, PodSecurityLevel::Baseline).is_allowed());
    }

    #[test]
    fn malformed_reviews_are_invalid_not_panics() {
        for body in [
            &b"not json"[..],
            b"{}",
            b"[]",
            b"{\"request\": 5}",
            b"{\"request\": {\"uid\": \"u\"}}",
        ] {
            assert!(parse(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
        let (_, uid) = parse(br#"{"request": {"uid": "u-9", "operation": 3}}"#).unwrap_err();
        assert_eq!(uid, "u-9");
        let mut no_object = review("pods", "CREATE", json!({}));
        no_object.object = None;
        assert!(matches!(
            decide_builtin(&no_object, PodSecurityLevel::Baseline),
            Verdict::Invalid { .. }
        ));
        let not_an_object = review("pods", "CREATE", json!("pod"));
        assert!(matches!(
            decide_builtin(&not_an_object, PodSecurityLevel::Baseline),
            Verdict::Invalid { .. }
        ));
        // odd shapes inside a pod are judged, not trusted and not a crash
        let odd = json!({"metadata": 7, "spec": {"containers": "x", "volumes": [1, null], "hostPID": "yes"}});
        let _ = decide_builtin(&review("pods", "CREATE", odd), PodSecurityLevel::Restricted);
    }

    #[test]
    fn deletes_and_other_subresources_pass() {
        let mut request = review("pods", "DELETE", json!({}));
        assert!(decide_builtin(&request, PodSecurityLevel::Restricted).is_allowed());
        request.operation = "UPDATE".into();
        request.sub_resource = Some("status".into());
        request.object = Some(json!({"spec": {"hostPID": true}}));
        assert!(decide_builtin(&request, PodSecurityLevel::Restricted).is_allowed());
    }

    #[test]
    fn responses_carry_the_uid_and_a_status() {
        let denied = Verdict::Denied {
            message: "no".into(),
            warnings: vec!["w".into()],
        };
        let response = serde_json::to_value(denied.into_response("u-1".into())).unwrap();
        assert_eq!(response["apiVersion"], API_VERSION);
        assert_eq!(response["response"]["uid"], "u-1");
        assert_eq!(response["response"]["allowed"], false);
        assert_eq!(response["response"]["status"]["code"], 403);
        assert_eq!(response["response"]["warnings"][0], "w");
        let allowed =
            serde_json::to_value(Verdict::Allowed { warnings: vec![] }.into_response("u".into()))
                .unwrap();
        assert_eq!(allowed["response"], json!({"uid": "u", "allowed": true}));
    }

    #[test]
    fn namespace_metadata_gives_the_profile_and_project() {
        let labels = BTreeMap::from([(labels::PSA_ENFORCE.to_string(), "baseline".to_string())]);
        let annotations = BTreeMap::from([(
            labels::ANNOTATION_PROJECT.to_string(),
            "group/app".to_string(),
        )]);
        let namespace = SessionNamespace::from_metadata("pb-x", &labels, &annotations);
        assert_eq!(namespace.level, PodSecurityLevel::Baseline);
        assert_eq!(namespace.project.as_deref(), Some("group/app"));
        let unknown = SessionNamespace::from_metadata("pb-x", &BTreeMap::new(), &BTreeMap::new());
        assert_eq!(unknown.level, PodSecurityLevel::Restricted);
    }
}
