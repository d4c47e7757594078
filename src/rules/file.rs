//! Policy documents as their authors write them (`Policy`, `PolicyException`), parsed close to
//! the YAML and checked against the JSON Schemas in `schemas/` before anything is compiled.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// The API group and version every policy document declares.
pub const API_VERSION: &str = "podbridge.io/v1alpha1";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyDocument {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: PolicySpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    #[serde(default)]
    pub description: Option<String>,
    pub rules: Vec<RuleSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The kinds of object the rule shapes; `[Pod]` when absent.
    #[serde(default)]
    pub kinds: Option<Vec<ObjectKind>>,
    #[serde(default, rename = "match")]
    pub match_: Option<SelectorSpec>,
    #[serde(default)]
    pub exclude: Option<SelectorSpec>,
    #[serde(default)]
    pub params: Option<Value>,
    #[serde(default)]
    pub preconditions: Option<PreconditionsSpec>,
    #[serde(default)]
    pub mutate: Option<MutateSpec>,
    #[serde(default)]
    pub validate: Option<ValidateSpec>,
    #[serde(default)]
    pub overrides: Vec<OverrideSpec>,
}

/// Conditions on the pod or the request, checked natively (no script) before a rule runs; a
/// rule whose preconditions do not hold is skipped, as in Kyverno.
/// The objects the chain evaluates: every pod podbridge applies, and the claim of every Docker
/// named volume (`named_volumes = "claim"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
pub enum ObjectKind {
    Pod,
    PersistentVolumeClaim,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreconditionsSpec {
    #[serde(default)]
    pub all: Option<Vec<ConditionSpec>>,
    #[serde(default)]
    pub any: Option<Vec<ConditionSpec>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConditionSpec {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub request_path: Option<String>,
    pub operator: ConditionOperator,
    #[serde(default)]
    pub value: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ConditionOperator {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    NotExists,
}

/// `any` (OR) or `all` (AND) of filters, as in Kyverno.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorSpec {
    #[serde(default)]
    pub any: Option<Vec<FilterSpec>>,
    #[serde(default)]
    pub all: Option<Vec<FilterSpec>>,
}

/// Every listed field must match (AND); each list matches if any of its globs does.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    #[serde(default)]
    pub images: Option<Vec<String>>,
    #[serde(default)]
    pub names: Option<Vec<String>>,
    #[serde(default)]
    pub projects: Option<Vec<String>>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// `container` or `build` (see `model::Purpose`).
    #[serde(default)]
    pub purposes: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MutateSpec {
    #[serde(default)]
    pub base: Option<Value>,
    /// Kept in file order: later defaults may rely on parents created by earlier ones.
    #[serde(default)]
    pub set_defaults: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub patches: Option<Value>,
    #[serde(default)]
    pub script: Option<String>,
    #[serde(default)]
    pub script_file: Option<String>,
    #[serde(default)]
    pub client_labels: Option<ClientLabelsSpec>,
    /// Pointer (with `*`) → bounds; entries are independent, so their order does not matter.
    #[serde(default)]
    pub clamp: Option<BTreeMap<String, BoundSpec>>,
}

/// Which of the client's (Docker) labels may stay on the pod: a label is removed when its key
/// matches a `deny` glob, or when `allow` is given and no `allow` glob matches it. The Docker
/// view (`inspect`, `ps --filter label=`) keeps every client label either way.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientLabelsSpec {
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub allow: Option<Vec<String>>,
}

/// Integer bounds on a pod field (a duration in seconds, usually): a value outside them is
/// moved to the bound and the client told in Docker's `Warnings`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundSpec {
    #[serde(default)]
    pub min: Option<i64>,
    #[serde(default)]
    pub max: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Action {
    Enforce,
    Audit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurityLevel {
    Baseline,
    Restricted,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSecuritySpec {
    pub level: PodSecurityLevel,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ValidateSpec {
    pub action: Action,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub pod_security: Option<PodSecuritySpec>,
    #[serde(default)]
    pub deny: Option<String>,
    #[serde(default)]
    pub forbid: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OverrideType {
    String,
    Integer,
    Boolean,
    Quantity,
    KeyValues,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedFor {
    pub projects: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OverrideSpec {
    pub label: String,
    pub path: String,
    #[serde(rename = "type")]
    pub value_type: OverrideType,
    #[serde(default)]
    pub schema: Option<Value>,
    #[serde(default)]
    pub min: Option<Value>,
    #[serde(default)]
    pub max: Option<Value>,
    #[serde(default)]
    pub allowed_for: Option<AllowedFor>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExceptionDocument {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: ExceptionSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionSpec {
    pub exceptions: Vec<ExemptedRules>,
    #[serde(rename = "match")]
    pub match_: SelectorSpec,
    #[serde(default)]
    pub controls: Vec<String>,
    pub reason: String,
    pub expires: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExemptedRules {
    pub policy: String,
    pub rules: Vec<String>,
}
