//! The pure half of the pipeline for one Docker create request: decode (`api::decode`) → pod
//! document (`render::pod_document`) → policy chain (`rules`) → typed objects
//! (`render::objects`). The server, `podbridge translate` and `podbridge policy test` all call it,
//! so what a security team tests offline is exactly what the bridge applies.

use serde_json::Value;

use crate::api::decode::{self, DecodeError};
use crate::labels;
use crate::model::ImageConfig;
use crate::render::{self, Identity, RenderContext, RenderError, RenderedObjects};
use crate::rules::{self, Problem, RuleResult, SharedPolicySet, Subject};

/// The pod field `StopTimeout` becomes; a policy `clamp` maximum on it also bounds
/// `docker stop -t` (see [`labels::ANNOTATION_MAX_STOP_TIMEOUT`]).
const GRACE_PERIOD_POINTER: &str = "/spec/terminationGracePeriodSeconds";

/// One create request as the bridge received it.
pub struct CreateRequest<'a> {
    pub body: &'a [u8],
    pub name: Option<&'a str>,
    pub image: Option<&'a ImageConfig>,
    pub identity: Identity,
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
            TranslateError::Denied { .. } => 403,
            TranslateError::PolicyFailed { .. } | TranslateError::Render { .. } => 500,
        }
    }

    /// The per-rule trace up to the refusal (empty when decoding failed).
    pub fn results(&self) -> &[RuleResult] {
        match self {
            TranslateError::Decode(_) => &[],
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
        let image_json = request
            .image
            .and_then(|image| serde_json::to_value(image).ok());
        let pod = render::pod_document(workload, &request.identity, &self.context);
        let image = workload.image.normalised();
        let policies = self.policies.load();
        let evaluation = rules::evaluate(
            &policies,
            rules::Input {
                pod,
                // Decoding succeeded, so the body is JSON; rules see it as the client sent it.
                request: rules::RequestBody::new(request.body),
                image: image_json.as_ref(),
                subject: Subject {
                    image: &image,
                    name: workload.name.as_deref(),
                    labels: &workload.labels,
                    project: self.context.project.as_deref(),
                },
                today: self.today.unwrap_or_else(|| jiff::Zoned::now().date()),
            },
        );
        if let Some(error) = refusal(&evaluation.problems, &evaluation.results) {
            return Err(error);
        }
        let applied = evaluation.applied_rules();
        let max_stop_timeout = evaluation
            .maximums
            .get(GRACE_PERIOD_POINTER)
            .map(|max| max.to_string());
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
            if let Some(max) = max_stop_timeout {
                annotations.insert(
                    labels::ANNOTATION_MAX_STOP_TIMEOUT.into(),
                    Value::String(max),
                );
            }
        }
        let objects =
            render::objects(workload, &request.identity, pod, &self.context).map_err(|source| {
                TranslateError::Render {
                    source,
                    results: evaluation.results.clone(),
                }
            })?;
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
