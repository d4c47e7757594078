//! From policy sources to the compiled `PolicySet` the hot path uses: YAML parsed, checked
//! against the JSON Schemas, scripts compiled, patches parsed, selectors and bounds built, all
//! before any request is served, so a broken policy is refused at load and never half-applied.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use rhai::{Dynamic, Engine};
use serde_json::Value;

use super::condition::Preconditions;
use super::file::{
    Action, ExceptionDocument, MutateSpec, ObjectKind, PodSecurityLevel, PolicyDocument, RuleSpec,
    ValidateSpec, API_VERSION,
};
use super::glob::Glob;
use super::matcher::Selector;
use super::overrides::Override;
use super::script::{self, Limits, Script};
use super::Error;

/// One policy file as read from disk (or embedded), named by its display path.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: String,
    pub text: String,
}

/// Everything a policy directory compiles to. Cheap to share: the server swaps whole sets.
pub struct PolicySet {
    pub(super) policies: Vec<Policy>,
    pub(super) exceptions: Vec<Exception>,
    pub(super) engine: Engine,
    pub(super) limits: Limits,
    /// Every override label some rule declares, to refuse unknown `podbridge.io/` labels.
    /// Override labels the rules of each kind declare; any other `podbridge.io/` label is refused.
    pub(super) declared_labels: BTreeMap<ObjectKind, BTreeSet<String>>,
    pub(super) files: Vec<String>,
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl PolicySet {
    pub fn files(&self) -> &[String] {
        &self.files
    }

    pub fn rule_count(&self) -> usize {
        self.policies.iter().map(|p| p.rules.len()).sum()
    }

    pub fn exception_count(&self) -> usize {
        self.exceptions.len()
    }
}

pub(super) struct Policy {
    pub name: String,
    pub file: String,
    pub rules: Vec<Rule>,
}

pub(super) struct Rule {
    pub name: String,
    pub kinds: Vec<ObjectKind>,
    pub selector: Option<Selector>,
    pub exclude: Option<Selector>,
    pub params: Dynamic,
    pub preconditions: Option<Preconditions>,
    pub kind: RuleKind,
    pub overrides: Vec<Override>,
}

pub(super) enum RuleKind {
    Mutate(Mutation),
    Validate(Validation),
}

pub(super) struct Mutation {
    pub base: Option<Value>,
    pub set_defaults: Vec<(String, Value)>,
    pub patches: Option<json_patch::Patch>,
    pub script: Option<Script>,
    pub client_labels: Option<ClientLabels>,
    pub clamp: Vec<Bound>,
}

/// Compiled `clientLabels`: which client label keys may stay on the pod.
pub(super) struct ClientLabels {
    pub deny: Vec<Glob>,
    pub allow: Option<Vec<Glob>>,
}

impl ClientLabels {
    pub fn keeps(&self, key: &str) -> bool {
        !self.deny.iter().any(|glob| glob.matches(key))
            && self
                .allow
                .as_ref()
                .is_none_or(|allow| allow.iter().any(|glob| glob.matches(key)))
    }
}

/// One compiled `clamp` entry.
pub(super) struct Bound {
    pub pointer: String,
    pub min: Option<i64>,
    pub max: Option<i64>,
}

pub(super) struct Validation {
    pub action: Action,
    pub message: Option<String>,
    pub field: Option<String>,
    pub check: Check,
}

pub(super) enum Check {
    PodSecurity(PodSecurityLevel),
    Deny(Script),
    /// Pointers (with `*`) that must not exist in the pod.
    Forbid(Vec<String>),
}

pub(super) struct Exception {
    pub name: String,
    pub file: String,
    pub rules: BTreeSet<(String, String)>,
    pub selector: Selector,
    pub controls: Vec<String>,
    pub reason: String,
    pub expires: jiff::civil::Date,
}

fn schema(which: &str) -> &'static jsonschema::Validator {
    static POLICY: OnceLock<jsonschema::Validator> = OnceLock::new();
    static EXCEPTION: OnceLock<jsonschema::Validator> = OnceLock::new();
    let (cell, text) = match which {
        "Policy" => (&POLICY, include_str!("../../schemas/policy.schema.json")),
        _ => (
            &EXCEPTION,
            include_str!("../../schemas/exception.schema.json"),
        ),
    };
    cell.get_or_init(|| {
        let schema: Value = serde_json::from_str(text).expect("embedded schema is JSON");
        jsonschema::validator_for(&schema).expect("embedded schema compiles")
    })
}

/// Compiles policy files (in the order given: callers sort them) and the Rhai files they may
/// name with `scriptFile`.
pub fn compile(
    sources: &[Source],
    script_files: &BTreeMap<String, String>,
    limits: Limits,
) -> Result<PolicySet, Error> {
    let engine = script::engine(limits);
    let mut policies: Vec<Policy> = Vec::new();
    let mut exception_documents = Vec::new();
    for source in sources {
        for (index, document) in serde_yaml::Deserializer::from_str(&source.text).enumerate() {
            let yaml = serde_yaml::Value::deserialize(document).map_err(|e| Error::Yaml {
                file: source.path.clone(),
                message: e.to_string(),
            })?;
            if yaml.is_null() {
                continue;
            }
            let json: Value = serde_json::to_value(&yaml).map_err(|e| Error::Yaml {
                file: source.path.clone(),
                message: format!("document {}: {e}", index + 1),
            })?;
            let kind = json
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            match kind.as_str() {
                "Policy" | "PolicyException" => validate_schema(&source.path, &kind, &json)?,
                other => {
                    return Err(Error::UnknownKind {
                        file: source.path.clone(),
                        kind: other.to_string(),
                    })
                }
            }
            if kind == "Policy" {
                let document: PolicyDocument =
                    serde_json::from_value(json).map_err(|e| Error::Schema {
                        file: source.path.clone(),
                        rule: None,
                        pointer: String::new(),
                        message: e.to_string(),
                    })?;
                debug_assert_eq!(document.api_version, API_VERSION);
                if let Some(first) = policies.iter().find(|p| p.name == document.metadata.name) {
                    return Err(Error::DuplicatePolicy {
                        name: document.metadata.name.clone(),
                        first: first.file.clone(),
                        second: source.path.clone(),
                    });
                }
                policies.push(compile_policy(
                    &engine,
                    &source.path,
                    document,
                    script_files,
                )?);
            } else {
                let document: ExceptionDocument =
                    serde_json::from_value(json).map_err(|e| Error::Schema {
                        file: source.path.clone(),
                        rule: None,
                        pointer: String::new(),
                        message: e.to_string(),
                    })?;
                exception_documents.push((source.path.clone(), document));
            }
        }
    }
    let mut exceptions = Vec::new();
    for (file, document) in exception_documents {
        exceptions.push(compile_exception(&file, document, &policies)?);
    }
    let declared_labels = [ObjectKind::Pod, ObjectKind::PersistentVolumeClaim]
        .into_iter()
        .map(|kind| {
            let labels = policies
                .iter()
                .flat_map(|p| p.rules.iter())
                .filter(|r| r.kinds.contains(&kind))
                .flat_map(|r| r.overrides.iter().map(|o| o.label.clone()))
                .collect();
            (kind, labels)
        })
        .collect();
    Ok(PolicySet {
        policies,
        exceptions,
        engine,
        limits,
        declared_labels,
        files: sources.iter().map(|s| s.path.clone()).collect(),
    })
}

use serde::Deserialize as _;

fn validate_schema(file: &str, kind: &str, json: &Value) -> Result<(), Error> {
    let Some(error) = schema(kind).iter_errors(json).next() else {
        return Ok(());
    };
    let pointer = error.instance_path().to_string();
    Err(Error::Schema {
        file: file.to_string(),
        rule: rule_name_at(json, &pointer),
        pointer,
        message: error.to_string(),
    })
}

/// The name of the rule a JSON pointer points into, so schema errors say "rule X".
fn rule_name_at(json: &Value, pointer: &str) -> Option<String> {
    let rest = pointer.strip_prefix("/spec/rules/")?;
    let index = rest.split('/').next()?;
    json.pointer(&format!("/spec/rules/{index}/name"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn compile_policy(
    engine: &Engine,
    file: &str,
    document: PolicyDocument,
    script_files: &BTreeMap<String, String>,
) -> Result<Policy, Error> {
    let policy = document.metadata.name;
    let mut rules: Vec<Rule> = Vec::new();
    for spec in document.spec.rules {
        if rules.iter().any(|r| r.name == spec.name) {
            return Err(Error::DuplicateRule {
                file: file.to_string(),
                policy: policy.clone(),
                rule: spec.name,
            });
        }
        rules.push(compile_rule(engine, file, &policy, spec, script_files)?);
    }
    Ok(Policy {
        name: policy,
        file: file.to_string(),
        rules,
    })
}

fn compile_rule(
    engine: &Engine,
    file: &str,
    policy: &str,
    spec: RuleSpec,
    script_files: &BTreeMap<String, String>,
) -> Result<Rule, Error> {
    let invalid = |pointer: &str, message: String| Error::Rule {
        file: file.to_string(),
        policy: policy.to_string(),
        rule: spec.name.clone(),
        pointer: pointer.to_string(),
        message,
    };
    let kind = match (&spec.mutate, &spec.validate) {
        (Some(mutate), None) => {
            RuleKind::Mutate(compile_mutation(engine, mutate, script_files, &invalid)?)
        }
        (None, Some(validate)) => {
            RuleKind::Validate(compile_validation(engine, validate, &invalid)?)
        }
        (None, None) if !spec.overrides.is_empty() => RuleKind::Mutate(Mutation {
            base: None,
            set_defaults: Vec::new(),
            patches: None,
            script: None,
            client_labels: None,
            clamp: Vec::new(),
        }),
        _ => {
            return Err(invalid(
                "",
                "a rule has exactly one of mutate, validate, or only overrides".into(),
            ))
        }
    };
    let mut overrides = Vec::new();
    for (index, override_spec) in spec.overrides.iter().enumerate() {
        overrides.push(
            Override::compile(override_spec)
                .map_err(|message| invalid(&format!("/overrides/{index}"), message))?,
        );
    }
    Ok(Rule {
        kinds: spec.kinds.clone().unwrap_or_else(|| vec![ObjectKind::Pod]),
        selector: spec.match_.as_ref().map(Selector::compile),
        exclude: spec.exclude.as_ref().map(Selector::compile),
        params: script::params_dynamic(spec.params.as_ref()),
        preconditions: spec.preconditions.as_ref().map(Preconditions::compile),
        kind,
        overrides,
        name: spec.name,
    })
}

fn compile_mutation(
    engine: &Engine,
    spec: &MutateSpec,
    script_files: &BTreeMap<String, String>,
    invalid: &impl Fn(&str, String) -> Error,
) -> Result<Mutation, Error> {
    let patches = match &spec.patches {
        Some(value) => Some(
            serde_json::from_value::<json_patch::Patch>(value.clone())
                .map_err(|e| invalid("/mutate/patches", e.to_string()))?,
        ),
        None => None,
    };
    let script = match (&spec.script, &spec.script_file) {
        (Some(text), _) => Some(
            script::compile(engine, text)
                .map_err(|e| invalid("/mutate/script", format!("script does not compile: {e}")))?,
        ),
        (None, Some(name)) => {
            let text = script_files.get(name).ok_or_else(|| {
                invalid(
                    "/mutate/scriptFile",
                    format!(
                        "script file {name:?} not found among the rule scripts ({:?})",
                        script_files.keys().collect::<Vec<_>>()
                    ),
                )
            })?;
            Some(script::compile(engine, text).map_err(|e| {
                invalid(
                    "/mutate/scriptFile",
                    format!("{name} does not compile: {e}"),
                )
            })?)
        }
        (None, None) => None,
    };
    let mut clamp = Vec::new();
    for (pointer, bound) in spec.clamp.iter().flatten() {
        if let (Some(min), Some(max)) = (bound.min, bound.max) {
            if min > max {
                return Err(invalid(
                    &format!("/mutate/clamp/{}", super::pointer::escape(pointer)),
                    format!("min {min} is above max {max}"),
                ));
            }
        }
        clamp.push(Bound {
            pointer: pointer.clone(),
            min: bound.min,
            max: bound.max,
        });
    }
    let globs = |patterns: &[String]| patterns.iter().map(|p| Glob::new(p)).collect();
    Ok(Mutation {
        client_labels: spec.client_labels.as_ref().map(|labels| ClientLabels {
            deny: globs(&labels.deny),
            allow: labels.allow.as_deref().map(globs),
        }),
        clamp,
        base: spec.base.clone(),
        set_defaults: spec
            .set_defaults
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        patches,
        script,
    })
}

fn compile_validation(
    engine: &Engine,
    spec: &ValidateSpec,
    invalid: &impl Fn(&str, String) -> Error,
) -> Result<Validation, Error> {
    let check = match (&spec.pod_security, &spec.deny, &spec.forbid) {
        (Some(pss), None, None) => Check::PodSecurity(pss.level),
        (None, Some(expression), None) => {
            Check::Deny(script::compile_expression(engine, expression).map_err(|e| {
                invalid(
                    "/validate/deny",
                    format!("expression does not compile: {e}"),
                )
            })?)
        }
        (None, None, Some(paths)) => Check::Forbid(paths.clone()),
        _ => {
            return Err(invalid(
                "/validate",
                "exactly one of podSecurity, deny or forbid".into(),
            ))
        }
    };
    Ok(Validation {
        action: spec.action,
        message: spec.message.clone(),
        field: spec.field.clone(),
        check,
    })
}

fn compile_exception(
    file: &str,
    document: ExceptionDocument,
    policies: &[Policy],
) -> Result<Exception, Error> {
    let mut rules = BTreeSet::new();
    for exempted in &document.spec.exceptions {
        for rule in &exempted.rules {
            let known = policies
                .iter()
                .find(|p| p.name == exempted.policy)
                .is_some_and(|p| {
                    p.rules
                        .iter()
                        .any(|r| &r.name == rule && matches!(r.kind, RuleKind::Validate(_)))
                });
            if !known {
                return Err(Error::UnknownExemptedRule {
                    file: file.to_string(),
                    exception: document.metadata.name.clone(),
                    policy: exempted.policy.clone(),
                    rule: rule.clone(),
                });
            }
            rules.insert((exempted.policy.clone(), rule.clone()));
        }
    }
    let expires: jiff::civil::Date =
        document
            .spec
            .expires
            .parse()
            .map_err(|e: jiff::Error| Error::Schema {
                file: file.to_string(),
                rule: None,
                pointer: "/spec/expires".into(),
                message: format!(
                    "{:?} is not a date (YYYY-MM-DD): {e}",
                    document.spec.expires
                ),
            })?;
    Ok(Exception {
        name: document.metadata.name,
        file: file.to_string(),
        rules,
        selector: Selector::compile(&document.spec.match_),
        controls: document.spec.controls,
        reason: document.spec.reason,
        expires,
    })
}

/// Shared, swappable handle on the live policy set.
pub type SharedPolicySet = Arc<arc_swap::ArcSwap<PolicySet>>;
