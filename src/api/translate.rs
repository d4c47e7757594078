//! The pure half of the pipeline for one Docker create request: decode (`api::decode`) → pod
//! document (`render::pod_document`) → policy chain (`rules`) → typed objects
//! (`render::objects`). The server, `podbridge translate` and `podbridge policy test` all call it,
//! so what a security team tests offline is exactly what the bridge applies.

use serde_json::Value;

use super::decode::{self, DecodeError};
use crate::labels;
use crate::model::ImageConfig;
use crate::render::{self, Identity, RenderContext, RenderError, RenderedObjects, StartInputs};
use crate::rules::{self, Problem, RuleResult, SharedPolicySet, Subject};

/// The pod field `StopTimeout` becomes; a policy `clamp` maximum on it also bounds
/// `docker stop -t` (see [`crate::model::ContainerRecord::max_stop_timeout`]).
const GRACE_PERIOD_POINTER: &str = "/spec/terminationGracePeriodSeconds";

/// One create request as the bridge received it.
pub struct CreateRequest<'a> {
    pub body: &'a [u8],
    pub name: Option<&'a str>,
    pub image: Option<&'a ImageConfig>,
    pub identity: Identity,
    /// Empty at create; at start, what the created container has gained since.
    pub start: StartInputs,
    /// A Docker container, or the builder pod podbridge runs for `docker build`.
    pub purpose: crate::model::Purpose,
}

/// The objects to apply, what to tell the client, and why.
#[derive(Debug, Clone)]
pub struct Translation {
    pub objects: RenderedObjects,
    /// Docker's `Warnings`: fields podbridge cannot honour and `Audit` policy findings.
    pub warnings: Vec<String>,
    pub results: Vec<RuleResult>,
    /// Docker named volumes the container mounts: Docker creates the missing ones with the
    /// container, and so does the server.
    pub named_volumes: Vec<String>,
}

impl Translation {
    /// The human-readable per-rule report (`--explain`), built on demand: the server only needs
    /// it for dry runs.
    pub fn explain(&self) -> String {
        rules::report::explain(&self.results)
    }
}

/// Why a create request is refused; each maps to one Docker status in `api::error`.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    /// The request itself is malformed (400).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A container label asked for a value the policy does not allow (400).
    #[error("{message}")]
    OverrideRefused {
        message: String,
        results: Vec<RuleResult>,
    },
    /// An `Enforce` rule denied the container (403).
    #[error("{message}")]
    Denied {
        message: String,
        results: Vec<RuleResult>,
    },
    /// A bind source is outside the directories podbridge may copy from (config
    /// `bind_roots`) (403). Decided before the policy chain: no policy can allow it.
    #[error("{message}")]
    BindRefused { message: String },
    /// A rule failed to run: the policy needs fixing (500).
    #[error("{message}")]
    PolicyFailed {
        message: String,
        results: Vec<RuleResult>,
    },
    /// The rules produced something that is not a valid Pod (500).
    #[error("after the policy chain, {source}")]
    Render {
        source: RenderError,
        results: Vec<RuleResult>,
    },
}

impl TranslateError {
    /// The Docker HTTP status this refusal is reported with.
    pub fn status(&self) -> u16 {
        match self {
            TranslateError::Decode(error) => error.status(),
            TranslateError::OverrideRefused { .. } => 400,
            TranslateError::Denied { .. } | TranslateError::BindRefused { .. } => 403,
            // A volume option the policy passed but Kubernetes cannot take is the client's.
            TranslateError::Render {
                source: RenderError::InvalidVolumeOption { .. },
                ..
            } => 400,
            TranslateError::PolicyFailed { .. } | TranslateError::Render { .. } => 500,
        }
    }

    /// The per-rule trace up to the refusal (empty when decoding failed or a bind was refused).
    pub fn results(&self) -> &[RuleResult] {
        match self {
            TranslateError::Decode(_) | TranslateError::BindRefused { .. } => &[],
            TranslateError::OverrideRefused { results, .. }
            | TranslateError::Denied { results, .. }
            | TranslateError::PolicyFailed { results, .. }
            | TranslateError::Render { results, .. } => results,
        }
    }
}

/// Holds the live policy set (swapped on reload) and the per-instance render settings.
#[derive(Clone)]
pub struct Translator {
    policies: SharedPolicySet,
    context: RenderContext,
    /// Fixed "today" for exception expiry in tests; the real date otherwise.
    today: Option<jiff::civil::Date>,
}

impl Translator {
    pub fn new(policies: SharedPolicySet, context: RenderContext) -> Self {
        Translator {
            policies,
            context,
            today: None,
        }
    }

    pub fn with_today(mut self, today: jiff::civil::Date) -> Self {
        self.today = Some(today);
        self
    }

    pub fn context(&self) -> &RenderContext {
        &self.context
    }

    pub fn policies(&self) -> &SharedPolicySet {
        &self.policies
    }

    pub fn translate(&self, request: &CreateRequest<'_>) -> Result<Translation, TranslateError> {
        let decoded = decode::decode_create(request.body, request.name, request.image)?;
        let workload = &decoded.workload;
        let bind_roots = &self.context.bind_roots;
        let refused = bind_roots.refusals(&workload.mounts);
        if !refused.is_empty() {
            return Err(TranslateError::BindRefused {
                message: crate::model::binds::refusal_message(bind_roots, &refused),
            });
        }
        let image_json = request
            .image
            .and_then(|image| serde_json::to_value(image).ok());
        let pod = render::pod_document(workload, &request.identity, &self.context, &request.start);
        let image = workload.image.normalised();
        let policies = self.policies.load();
        let evaluation = rules::evaluate(
            &policies,
            rules::Input {
                pod,
                kind: rules::ObjectKind::Pod,
                request: rules::RequestBody::new(&decoded.request),
                image: image_json.as_ref(),
                subject: Subject {
                    image: &image,
                    name: workload.name.as_deref(),
                    labels: &workload.labels,
                    project: self.context.project.as_deref(),
                    purpose: request.purpose,
                },
                today: self.today.unwrap_or_else(|| jiff::Zoned::now().date()),
            },
        );
        crate::metrics::serve().record_policy_results(&evaluation.results);
        if let Some(error) = refusal(&evaluation.problems, &evaluation.results) {
            return Err(error);
        }
        let applied = evaluation.applied_rules();
        let mut pod = evaluation.pod;
        if let Some(annotations) = pod
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            if !applied.is_empty() {
                annotations.insert(
                    labels::ANNOTATION_APPLIED_RULES.into(),
                    Value::String(applied.join(",")),
                );
            }
        }
        let mut objects = render::objects(workload, &request.identity, pod, &self.context)
            .map_err(|source| TranslateError::Render {
                source,
                results: evaluation.results.clone(),
            })?;
        objects.record.max_stop_timeout = evaluation.maximums.get(GRACE_PERIOD_POINTER).copied();
        let mut warnings = decoded.warnings;
        warnings.extend(render::warnings(workload, &self.context));
        warnings.extend(evaluation.warnings);
        let mut named_volumes: Vec<String> = Vec::new();
        for mount in &workload.mounts {
            if let crate::model::MountSource::Volume { name } = &mount.source {
                if !named_volumes.contains(name) {
                    named_volumes.push(name.clone());
                }
            }
        }
        Ok(Translation {
            objects,
            warnings,
            results: evaluation.results,
            named_volumes,
        })
    }
}

/// A Docker named volume's claim, shaped and checked by the policy chain.
#[derive(Debug, Clone)]
pub struct VolumeTranslation {
    pub claim: k8s_openapi::api::core::v1::PersistentVolumeClaim,
    pub results: Vec<RuleResult>,
    pub warnings: Vec<String>,
}

impl Translator {
    /// Runs the rules of kind PersistentVolumeClaim on the volume's claim. The client's `size`
    /// and `storageclass` options reach the chain only as override labels
    /// (`podbridge.io/volume-size`, `podbridge.io/storage-class`): honoured where a rule declares
    /// them, within its bounds, refused (400) otherwise.
    pub fn translate_volume(
        &self,
        request: &render::VolumeRequest<'_>,
    ) -> Result<VolumeTranslation, TranslateError> {
        let document = render::volume_claim_document(request, &self.context);
        let labels = render::option_labels(request);
        let docker = serde_json::json!({
            "Name": request.name,
            "Driver": request.driver,
            "Labels": request.labels,
            "DriverOpts": request.options,
        });
        let policies = self.policies.load();
        let evaluation = rules::evaluate(
            &policies,
            rules::Input {
                pod: document,
                kind: rules::ObjectKind::PersistentVolumeClaim,
                request: rules::RequestBody::new(&docker),
                image: None,
                subject: Subject {
                    image: "",
                    name: Some(request.name),
                    labels: &labels,
                    project: self.context.project.as_deref(),
                    purpose: crate::model::Purpose::Container,
                },
                today: self.today.unwrap_or_else(|| jiff::Zoned::now().date()),
            },
        );
        crate::metrics::serve().record_policy_results(&evaluation.results);
        if let Some(error) = refusal(&evaluation.problems, &evaluation.results) {
            return Err(match error {
                TranslateError::Denied { message, results } => TranslateError::Denied {
                    message: message.replacen("container create", "volume create", 1),
                    results,
                },
                other => other,
            });
        }
        let claim = render::volume_claim_object(evaluation.pod, request, &self.context).map_err(
            |source| TranslateError::Render {
                source,
                results: evaluation.results.clone(),
            },
        )?;
        Ok(VolumeTranslation {
            claim,
            results: evaluation.results,
            warnings: evaluation.warnings,
        })
    }
}

/// Picks the refusal a client should see first: its own label mistakes (400), then policy
/// denials (403), then broken rules (500). Every message of the chosen kind is included.
fn refusal(problems: &[Problem], results: &[RuleResult]) -> Option<TranslateError> {
    let gather = |pick: fn(&Problem) -> bool| -> Vec<String> {
        problems
            .iter()
            .filter(|p| pick(p))
            .map(|p| p.to_string())
            .collect()
    };
    let refused = gather(|p| matches!(p, Problem::OverrideRefused { .. }));
    if !refused.is_empty() {
        return Some(TranslateError::OverrideRefused {
            message: refused.join("\n"),
            results: results.to_vec(),
        });
    }
    let denied = gather(|p| matches!(p, Problem::Denied { .. }));
    if !denied.is_empty() {
        return Some(TranslateError::Denied {
            message: format!(
                "container create blocked by policy:\n  {}",
                denied.join("\n  ")
            ),
            results: results.to_vec(),
        });
    }
    let failed = gather(|p| matches!(p, Problem::RuleFailed { .. }));
    if !failed.is_empty() {
        return Some(TranslateError::PolicyFailed {
            message: format!("policy error:\n  {}", failed.join("\n  ")),
            results: results.to_vec(),
        });
    }
    None
}

/// Kubernetes YAML for the objects, one document each, in the order they are applied, ready for
/// `kubectl apply -f -`.
pub fn objects_yaml(objects: &RenderedObjects) -> String {
    let mut documents: Vec<String> = Vec::new();
    let mut push = |value: Result<Value, serde_json::Error>| {
        if let Ok(value) = value {
            documents.push(serde_yaml::to_string(&value).unwrap_or_default());
        }
    };
    for config_map in &objects.config_maps {
        push(serde_json::to_value(config_map));
    }
    push(serde_json::to_value(&objects.pod));
    for service in &objects.services {
        push(serde_json::to_value(service));
    }
    documents.join("---\n")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::model::ContainerId;
    use crate::render::PrestartArchive;

    fn translator(dirs: &[&str]) -> Translator {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let paths: Vec<PathBuf> = dirs.iter().map(|d| root.join(d)).collect();
        let set = crate::policy_store::load_paths(
            &paths,
            Some(&root.join("rules")),
            rules::Limits::default(),
        )
        .expect("shipped policies compile");
        let context = RenderContext {
            instance_id: "t".into(),
            namespace: "ns".into(),
            name_prefix: "pb".into(),
            init_image: "busybox:latest".into(),
            ..Default::default()
        };
        Translator::new(crate::policy_store::shared(set), context)
    }

    fn request<'a>(body: &'a [u8], start: StartInputs) -> CreateRequest<'a> {
        CreateRequest {
            body,
            name: Some("web"),
            image: None,
            identity: Identity {
                id: ContainerId::random(),
                created: "2026-01-01T00:00:00Z".into(),
            },
            start,
            purpose: Default::default(),
        }
    }

    fn containers(
        pod: &k8s_openapi::api::core::v1::Pod,
    ) -> Vec<k8s_openapi::api::core::v1::Container> {
        let spec = pod.spec.clone().unwrap_or_default();
        spec.init_containers
            .unwrap_or_default()
            .into_iter()
            .chain(spec.containers)
            .collect()
    }

    /// Files copied in before start are unpacked by a helper container that the policy chain
    /// shapes like `main`: it exists in the document before the rules run.
    #[test]
    fn prestart_archives_are_rendered_before_the_rules() {
        let start = StartInputs {
            archives: vec![PrestartArchive {
                config_map: "pb-web-archive-0".into(),
                path: "/etc".into(),
                entries: vec!["app.conf".into(), "..".into()],
            }],
            ..Default::default()
        };
        for (dirs, restricted) in [
            (&["policies/baseline"][..], false),
            (&["policies/baseline", "policies/restricted"][..], true),
        ] {
            let translation = translator(dirs)
                .translate(&request(
                    br#"{"Image":"busybox","Cmd":["true"]}"#,
                    start.clone(),
                ))
                .expect("translates");
            let all = containers(&translation.objects.pod);
            let helper = all
                .iter()
                .find(|c| c.name == crate::render::ARCHIVE_INIT_CONTAINER)
                .expect("archive init container rendered");
            assert_eq!(helper.image.as_deref(), Some("busybox:latest"));
            for container in &all {
                let context = container.security_context.clone().unwrap_or_default();
                assert_eq!(
                    context.allow_privilege_escalation,
                    Some(false),
                    "{}",
                    container.name
                );
                let limits = container.resources.clone().unwrap_or_default().limits;
                assert!(
                    limits.is_some_and(|l| l.contains_key("memory")),
                    "{}",
                    container.name
                );
                if restricted {
                    assert_eq!(context.run_as_non_root, Some(true), "{}", container.name);
                }
            }
            let main = all.iter().find(|c| c.name == "main").unwrap();
            let mounts = main.volume_mounts.clone().unwrap_or_default();
            assert!(mounts
                .iter()
                .any(|m| m.mount_path == "/etc/app.conf"
                    && m.sub_path.as_deref() == Some("0/app.conf")));
            assert!(!mounts.iter().any(|m| m.mount_path.ends_with("..")));
        }
    }

    /// What the policy bounds for the runtime (the grace period's maximum) goes into the
    /// container's record; the pod shows only what the policy shaped.
    #[test]
    fn the_policy_bound_on_stop_goes_to_the_record_not_the_pod() {
        let translation = translator(&["policies/baseline"])
            .translate(&request(
                br#"{"Image":"busybox","Cmd":["true"],"StopTimeout":5}"#,
                StartInputs::default(),
            ))
            .expect("translates");
        let record = &translation.objects.record;
        assert_eq!(record.max_stop_timeout, Some(300));
        assert_eq!(record.request["StopTimeout"], 5);
        let annotations = translation.objects.pod.metadata.annotations.unwrap();
        assert!(annotations.contains_key(labels::ANNOTATION_APPLIED_RULES));
        for key in labels::legacy::ALL {
            assert!(!annotations.contains_key(key), "{key} on the pod");
        }
    }

    /// A body the typed decoder would accept but the rules could not read is refused, so a
    /// deny rule cannot fail open on it.
    #[test]
    fn only_podbridge_makes_a_builder_pod() {
        let translator = translator(&["policies/baseline"]);
        let seccomp = |body: &[u8], purpose| {
            let mut create = request(body, StartInputs::default());
            create.purpose = purpose;
            let translation = translator.translate(&create).expect("admitted");
            let applied: Vec<String> = translation
                .results
                .iter()
                .filter(|r| r.result == rules::Outcome::Applied)
                .map(|r| format!("{}/{}", r.policy, r.rule))
                .collect();
            let pod = translation.objects.pod;
            (
                pod.spec
                    .and_then(|s| s.security_context)
                    .and_then(|s| s.seccomp_profile)
                    .map(|p| p.type_),
                applied,
            )
        };
        let builder = br#"{"Image":"docker.io/podbridge/buildah:1.28","Cmd":["sleep","60"]}"#;
        let (profile, applied) = seccomp(builder, crate::model::Purpose::Build);
        assert_eq!(profile, None);
        assert!(applied.contains(&"builds/builder-seccomp".to_string()));
        // the same request from a client, even labelled as a build, keeps the default profile
        let forged = br#"{"Image":"docker.io/podbridge/buildah:1.28","Labels":{"purpose":"build","purposes":"build"}}"#;
        let (profile, applied) = seccomp(forged, crate::model::Purpose::Container);
        assert_eq!(profile.as_deref(), Some("RuntimeDefault"));
        assert!(!applied.iter().any(|rule| rule.starts_with("builds/")));
        // buildx's docker-container driver gets the way out, not a bare Pod Security message
        let buildkit =
            br#"{"Image":"moby/buildkit:buildx-stable-1","HostConfig":{"Privileged":true}}"#;
        let error = translator
            .translate(&request(buildkit, StartInputs::default()))
            .unwrap_err();
        assert!(error.to_string().contains("DOCKER_BUILDKIT=0"), "{error}");
    }

    #[test]
    fn rules_never_see_a_null_request() {
        let translator = translator(&["policies/baseline", "policies/optional"]);
        let body = br#"{"Image":"busybox","X":"\ud800","HostConfig":{"Binds":["/var/run/docker.sock:/var/run/docker.sock"]}}"#;
        let error = translator
            .translate(&request(body, StartInputs::default()))
            .expect_err("refused");
        assert_eq!(error.status(), 400);
        let clean = br#"{"Image":"busybox","HostConfig":{"Binds":["/var/run/docker.sock:/var/run/docker.sock"]}}"#;
        let error = translator
            .translate(&request(clean, StartInputs::default()))
            .expect_err("denied");
        assert_eq!(error.status(), 403, "{error}");
    }

    fn volume<'a>(
        options: &'a std::collections::BTreeMap<String, String>,
        labels: &'a std::collections::BTreeMap<String, String>,
    ) -> render::VolumeRequest<'a> {
        render::VolumeRequest {
            name: "data",
            driver: "local",
            labels,
            options,
            created: "2026-01-01T00:00:00Z",
        }
    }

    /// Named-volume claims pass through the chain: the client's size only within the policy's
    /// bounds, its storage class only where a rule offers it.
    #[test]
    fn volume_claims_are_shaped_by_the_policy() {
        use std::collections::BTreeMap;
        let baseline = translator(&["policies/baseline"]);
        let none = BTreeMap::new();
        let options = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let storage = |claim: &k8s_openapi::api::core::v1::PersistentVolumeClaim| {
            claim
                .spec
                .as_ref()
                .unwrap()
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"]
                .0
                .clone()
        };
        let default = baseline.translate_volume(&volume(&none, &none)).unwrap();
        assert_eq!(storage(&default.claim), "1Gi");
        let sized = options(&[("size", "5Gi")]);
        let claim = baseline
            .translate_volume(&volume(&sized, &none))
            .unwrap()
            .claim;
        assert_eq!(storage(&claim), "5Gi");
        assert_eq!(
            claim.metadata.labels.as_ref().unwrap()[labels::INSTANCE],
            "t"
        );
        for (pairs, needle) in [
            (&[("size", "900Ti")][..], "podbridge.io/volume-size"),
            (
                &[("size", "99999999999999999999Ei")][..],
                "podbridge.io/volume-size",
            ),
            (
                &[("storageclass", "premium")][..],
                "podbridge.io/storage-class",
            ),
        ] {
            let options = options(pairs);
            let error = baseline
                .translate_volume(&volume(&options, &none))
                .expect_err("refused");
            assert_eq!(error.status(), 400, "{error}");
            assert!(error.to_string().contains(needle), "{error}");
        }
        // a client label cannot pose as the option either
        let spoof = options(&[(labels::VOLUME_STORAGE_CLASS_LABEL, "premium")]);
        assert_eq!(
            baseline
                .translate_volume(&volume(&none, &spoof))
                .expect_err("refused")
                .status(),
            400
        );
        let offered = translator(&["policies/baseline", "tests/e2e/policies"]);
        let class = options(&[("storageclass", "podbridge-local")]);
        let claim = offered
            .translate_volume(&volume(&class, &none))
            .unwrap()
            .claim;
        assert_eq!(
            claim.spec.unwrap().storage_class_name.as_deref(),
            Some("podbridge-local")
        );
        let other = options(&[("storageclass", "premium")]);
        assert_eq!(
            offered
                .translate_volume(&volume(&other, &none))
                .expect_err("not offered")
                .status(),
            400
        );
    }
}
