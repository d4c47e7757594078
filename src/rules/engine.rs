//! Runs the compiled chain on one pod document: every mutation (files in order, rules in file
//! order), then every rule's allowed override labels, then every validation, once.

use std::collections::BTreeMap;

use serde_json::Value;

use super::compile::{
    Bound, Check, ClientLabels, Exception, Mutation, PolicySet, Rule, RuleKind, Validation,
};
use super::file::{Action, ObjectKind, OverrideType};
use super::matcher::Subject;
use super::pointer::{self, Written};
use super::pss;
use super::report::{Change, Outcome, Problem, RuleResult};
use super::request::RequestBody;
use super::script::{self, Ran};

/// One request as the rules see it.
pub struct Input<'a> {
    /// The document: a Pod, or a claim when `kind` says so. Only rules of that kind run.
    pub pod: Value,
    pub kind: ObjectKind,
    /// The original Docker create body, read-only.
    pub request: RequestBody<'a>,
    /// The image's config (User, Entrypoint, ExposedPorts...) when known.
    pub image: Option<&'a Value>,
    pub subject: Subject<'a>,
    /// Exceptions expire at the end of their `expires` day.
    pub today: jiff::civil::Date,
}

/// The chain's verdict and its trace.
#[derive(Debug)]
pub struct Evaluation {
    pub pod: Value,
    pub results: Vec<RuleResult>,
    /// `Audit` findings, for the create response's `Warnings`.
    pub warnings: Vec<String>,
    pub problems: Vec<Problem>,
    /// The smallest `clamp` maximum that ran on each concrete pointer, so bounds that also apply
    /// outside the pod (the grace of `docker stop -t`) can be honoured by the runtime.
    pub maximums: BTreeMap<String, i64>,
}

impl Evaluation {
    /// `policy/rule` of every rule that changed the pod, for the pod's annotation.
    pub fn applied_rules(&self) -> Vec<String> {
        self.results
            .iter()
            .filter(|r| r.result == Outcome::Applied)
            .map(|r| format!("{}/{}", r.policy, r.rule))
            .collect()
    }
}

struct RuleRef<'a> {
    policy: &'a str,
    file: &'a str,
    rule: &'a Rule,
}

impl RuleRef<'_> {
    fn failed(&self, message: String) -> Problem {
        Problem::RuleFailed {
            policy: self.policy.to_string(),
            rule: self.rule.name.clone(),
            file: self.file.to_string(),
            message,
        }
    }

    fn denied(&self, message: String) -> Problem {
        Problem::Denied {
            policy: self.policy.to_string(),
            rule: self.rule.name.clone(),
            file: self.file.to_string(),
            message,
        }
    }

    fn result(&self, result: Outcome, reason: impl Into<String>) -> RuleResult {
        RuleResult {
            policy: self.policy.to_string(),
            rule: self.rule.name.clone(),
            file: self.file.to_string(),
            result,
            reason: reason.into(),
            changes: Vec::new(),
            prints: Vec::new(),
        }
    }
}

/// The evaluation an input starts from: its document, nothing decided yet.
fn start(input: &mut Input<'_>) -> Evaluation {
    Evaluation {
        pod: std::mem::take(&mut input.pod),
        results: Vec::new(),
        warnings: Vec::new(),
        problems: Vec::new(),
        maximums: BTreeMap::new(),
    }
}

/// Every rule of the set for this kind of object, in chain order.
fn rules_for<'a>(set: &'a PolicySet, kind: ObjectKind) -> Vec<RuleRef<'a>> {
    set.policies
        .iter()
        .flat_map(|p| {
            p.rules.iter().map(move |rule| RuleRef {
                policy: &p.name,
                file: &p.file,
                rule,
            })
        })
        .filter(|r| r.rule.kinds.contains(&kind))
        .collect()
}

/// The validation pass, the last of the chain, over `rules` in order.
fn validations(
    set: &PolicySet,
    rules: &[RuleRef<'_>],
    context: &LazyContext<'_>,
    input: &Input<'_>,
    evaluation: &mut Evaluation,
) {
    for rule in rules {
        let RuleKind::Validate(validation) = &rule.rule.kind else {
            continue;
        };
        if let Some(skip) = selection(rule, &input.subject, &evaluation.pod, &input.request) {
            evaluation.results.push(skip);
            continue;
        }
        let result = validate(set, rule, validation, context, input, evaluation);
        evaluation.results.push(result);
    }
}

pub fn evaluate(set: &PolicySet, mut input: Input<'_>) -> Evaluation {
    let mut evaluation = start(&mut input);
    let context = LazyContext {
        request: &input.request,
        image: input.image,
        project: input.subject.project,
        converted: std::cell::OnceCell::new(),
    };
    refuse_unknown_labels(set, input.kind, &input.subject, &mut evaluation);

    let rules = rules_for(set, input.kind);
    // Three passes over the same order: every mutation, then every rule's override labels,
    // then every validation. Overrides come after all mutations so that no default written by
    // a later rule can be pre-empted by a label, and a label cannot replace what another rule
    // wrote (`Writers`).
    let mut writers = Writers::default();
    let mut mutated: Vec<Option<usize>> = vec![None; rules.len()];
    for (index, rule) in rules.iter().enumerate() {
        let RuleKind::Mutate(mutation) = &rule.rule.kind else {
            continue;
        };
        if let Some(skip) = selection(rule, &input.subject, &evaluation.pod, &input.request) {
            evaluation.results.push(skip);
            continue;
        }
        let result = mutate(
            set,
            rule,
            mutation,
            &context,
            &input.subject,
            &mut evaluation,
        );
        for change in &result.changes {
            writers.record(&change.pointer, index);
        }
        mutated[index] = Some(evaluation.results.len());
        evaluation.results.push(result);
    }
    for (index, rule) in rules.iter().enumerate() {
        let Some(at) = mutated[index] else {
            continue;
        };
        let mut result = std::mem::replace(
            &mut evaluation.results[at],
            rule.result(Outcome::Pass, String::new()),
        );
        apply_overrides(
            rule,
            index,
            &rules,
            &writers,
            &input.subject,
            &mut evaluation,
            &mut result,
        );
        if result.result == Outcome::Pass && !result.changes.is_empty() {
            result.result = Outcome::Applied;
        }
        evaluation.results[at] = result;
    }
    validations(set, &rules, &context, &input, &mut evaluation);
    evaluation
}

/// Only the validations of the chain, on a document nobody may change any more: what the
/// operator's admission webhook checks on objects written straight to the API server (a leaked
/// token, `kubectl`), so they meet the same `validate` rules as the Docker API's. Mutations,
/// override labels and client-label filters do not run: they shape what podbridge writes, and
/// a pod podbridge wrote already went through them.
pub fn validate_only(set: &PolicySet, mut input: Input<'_>) -> Evaluation {
    let mut evaluation = start(&mut input);
    let context = LazyContext {
        request: &input.request,
        image: input.image,
        project: input.subject.project,
        converted: std::cell::OnceCell::new(),
    };
    let rules = rules_for(set, input.kind);
    validations(set, &rules, &context, &input, &mut evaluation);
    evaluation
}

/// Which rule's mutation wrote each JSON pointer, so an override label can be refused where it
/// would replace another rule's value.
#[derive(Default)]
struct Writers {
    by_pointer: BTreeMap<String, usize>,
}

impl Writers {
    fn record(&mut self, pointer: &str, rule: usize) {
        self.by_pointer.insert(pointer.to_string(), rule);
    }

    /// A rule other than `rule` whose value at `pointer` a write there would replace: it wrote
    /// `pointer` itself, something below it, or a parent whose value includes it (`exists`).
    /// Adding a field beside another rule's fields (a node-selector key next to the policy's
    /// pool) replaces nothing of theirs.
    fn other_writer(&self, pointer: &str, rule: usize, exists: bool) -> Option<usize> {
        self.by_pointer.iter().find_map(|(written, &writer)| {
            let related = written == pointer
                || written
                    .strip_prefix(pointer)
                    .is_some_and(|rest| rest.starts_with('/'))
                || (exists
                    && pointer
                        .strip_prefix(written.as_str())
                        .is_some_and(|rest| rest.starts_with('/')));
            (related && writer != rule).then_some(writer)
        })
    }
}

/// The read-only script inputs, converted to Rhai values only if some script runs: most
/// requests under the default policy run none, and the conversion is the costly part.
struct LazyContext<'a> {
    request: &'a RequestBody<'a>,
    image: Option<&'a Value>,
    project: Option<&'a str>,
    converted: std::cell::OnceCell<script::Context<'a>>,
}

impl<'a> LazyContext<'a> {
    fn get(&self) -> &script::Context<'a> {
        self.converted
            .get_or_init(|| script::Context::new(self.request.get(), self.image, self.project))
    }
}

fn selection(
    rule: &RuleRef<'_>,
    subject: &Subject<'_>,
    pod: &Value,
    request: &RequestBody<'_>,
) -> Option<RuleResult> {
    if let Some(selector) = &rule.rule.selector {
        if !selector.matches(subject) {
            return Some(rule.result(Outcome::Skip, "not selected by match"));
        }
    }
    if let Some(exclude) = &rule.rule.exclude {
        if exclude.matches(subject) {
            return Some(rule.result(Outcome::Skip, "excluded by exclude"));
        }
    }
    if let Some(preconditions) = &rule.rule.preconditions {
        if !preconditions.hold(pod, request) {
            return Some(rule.result(Outcome::Skip, "preconditions not met"));
        }
    }
    None
}

fn refuse_unknown_labels(
    set: &PolicySet,
    kind: ObjectKind,
    subject: &Subject<'_>,
    evaluation: &mut Evaluation,
) {
    let empty = std::collections::BTreeSet::new();
    let declared = set.declared_labels.get(&kind).unwrap_or(&empty);
    for (label, value) in subject.labels {
        if label.starts_with(crate::labels::OVERRIDE_LABEL_PREFIX) && !declared.contains(label) {
            let known: Vec<&str> = declared.iter().map(String::as_str).collect();
            evaluation.problems.push(Problem::OverrideRefused {
                policy: String::new(),
                rule: String::new(),
                label: label.clone(),
                message: format!(
                    "label {label}={value:?} refused: no policy rule lets projects set it; the override labels in force are {known:?}"
                ),
            });
        }
    }
}

fn mutate(
    set: &PolicySet,
    rule: &RuleRef<'_>,
    mutation: &Mutation,
    context: &LazyContext<'_>,
    subject: &Subject<'_>,
    evaluation: &mut Evaluation,
) -> RuleResult {
    let mut result = rule.result(Outcome::Pass, "nothing to change");
    let fail = |evaluation: &mut Evaluation, result: &mut RuleResult, message: String| {
        evaluation.problems.push(rule.failed(message.clone()));
        result.result = Outcome::Error;
        result.reason = message;
    };
    if let Some(base) = &mutation.base {
        let before = evaluation.pod.clone();
        merge_under(&mut evaluation.pod, base);
        record_diff(&before, &evaluation.pod, &mut result.changes);
    }
    for (path, value) in &mutation.set_defaults {
        for concrete in pointer::expand(&evaluation.pod, path) {
            match pointer::write(&mut evaluation.pod, &concrete, value.clone(), true) {
                Ok(Written::Added) => result.changes.push(Change {
                    pointer: concrete,
                    before: None,
                    after: Some(value.clone()),
                    label: None,
                }),
                Ok(Written::Replaced(before)) => result.changes.push(Change {
                    pointer: concrete,
                    before: Some(before),
                    after: Some(value.clone()),
                    label: None,
                }),
                Ok(Written::Kept) => {}
                Err(error) => {
                    fail(
                        evaluation,
                        &mut result,
                        format!("setDefaults {path}: {error}"),
                    );
                    return result;
                }
            }
        }
    }
    if let Some(patches) = &mutation.patches {
        let before = evaluation.pod.clone();
        if let Err(error) = json_patch::patch(&mut evaluation.pod, patches) {
            let failed_a_test = matches!(error.kind, json_patch::PatchErrorKind::TestFailed)
                || matches!(
                    patches.0.get(error.operation),
                    Some(json_patch::PatchOperation::Test(_))
                );
            if failed_a_test {
                // RFC 6902 patches are atomic: the document is back as it was.
                result.result = Outcome::Skip;
                result.reason = format!("test operation at {} did not match", error.path);
                result.changes.clear();
                return result;
            }
            let op = patches.0.get(error.operation);
            let described = op
                .map(|op| {
                    serde_json::to_value(op)
                        .map(|v| v.to_string())
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            fail(
                evaluation,
                &mut result,
                format!(
                    "patch operation {} {described} failed at {}: {}{}",
                    error.operation,
                    error.path,
                    error.kind,
                    if matches!(error.kind, json_patch::PatchErrorKind::InvalidPointer) {
                        " (the path does not exist; use setDefaults to create missing parents)"
                    } else {
                        ""
                    }
                ),
            );
            return result;
        }
        record_diff(&before, &evaluation.pod, &mut result.changes);
    }
    if let Some(compiled) = &mutation.script {
        let before = evaluation.pod.clone();
        let pod = script::to_dynamic(&evaluation.pod);
        let run = script::run(
            &set.engine,
            compiled,
            &set.limits,
            context.get(),
            &rule.rule.params,
            pod,
        );
        result.prints = run.printed;
        match run.ended {
            Ok(Ran::Value(value)) => match script::from_dynamic(&value) {
                Ok(Value::Object(map)) => {
                    evaluation.pod = Value::Object(map);
                    record_diff(&before, &evaluation.pod, &mut result.changes);
                }
                Ok(other) => fail(
                    evaluation,
                    &mut result,
                    format!(
                        "script must return the pod (an object), returned a {}",
                        pointer::kind(&other)
                    ),
                ),
                Err(message) => fail(evaluation, &mut result, message),
            },
            Ok(Ran::Denied(why)) => {
                evaluation.problems.push(rule.denied(why.clone()));
                result.result = Outcome::Fail;
                result.reason = why;
            }
            Err(message) => fail(evaluation, &mut result, format!("script error: {message}")),
        }
    }
    if result.result == Outcome::Pass {
        if let Some(client_labels) = &mutation.client_labels {
            drop_client_labels(client_labels, subject, evaluation, &mut result);
        }
        clamp(rule, &mutation.clamp, evaluation, &mut result);
    }
    if result.result == Outcome::Pass && !result.changes.is_empty() {
        result.reason = format!("changed {} field(s)", result.changes.len());
    }
    result
}

/// Removes from the pod's labels the client labels `client_labels` does not keep. Only labels
/// the client set (same key and value as in the request) are touched: podbridge's own and the
/// configured ones are not the client's to lose.
fn drop_client_labels(
    client_labels: &ClientLabels,
    subject: &Subject<'_>,
    evaluation: &mut Evaluation,
    result: &mut RuleResult,
) {
    let Some(pod_labels) = evaluation
        .pod
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (key, value) in subject.labels {
        if client_labels.keeps(key) {
            continue;
        }
        if pod_labels.get(key).and_then(Value::as_str) == Some(value.as_str()) {
            let before = pod_labels.remove(key);
            result.changes.push(Change {
                pointer: format!("/metadata/labels/{}", pointer::escape(key)),
                before,
                after: None,
                label: None,
            });
        }
    }
}

/// Moves integer fields outside their bounds to the bound, each with a Docker warning naming
/// the rule, and records every maximum for [`Evaluation::maximums`].
fn clamp(
    rule: &RuleRef<'_>,
    bounds: &[Bound],
    evaluation: &mut Evaluation,
    result: &mut RuleResult,
) {
    for bound in bounds {
        for concrete in pointer::expand(&evaluation.pod, &bound.pointer) {
            if let Some(max) = bound.max {
                evaluation
                    .maximums
                    .entry(concrete.clone())
                    .and_modify(|known| *known = (*known).min(max))
                    .or_insert(max);
            }
            let Some(field) = evaluation.pod.pointer_mut(&concrete) else {
                continue;
            };
            // Integers beyond i64 arrive as floats; they are above any maximum all the same.
            let Some(value) = field.as_i64().or_else(|| {
                field
                    .as_f64()
                    .map(|f| if f > 0.0 { i64::MAX } else { i64::MIN })
            }) else {
                continue;
            };
            let (bounded, which) = match (bound.min, bound.max) {
                (_, Some(max)) if value > max => (max, "maximum"),
                (Some(min), _) if value < min => (min, "minimum"),
                _ => continue,
            };
            let before = std::mem::replace(field, Value::from(bounded));
            evaluation.warnings.push(format!(
                "policy {}/{}: {concrete} {before} is beyond the {which} of {bounded}; {bounded} is used",
                rule.policy, rule.rule.name
            ));
            result.changes.push(Change {
                pointer: concrete,
                before: Some(before),
                after: Some(Value::from(bounded)),
                label: None,
            });
        }
    }
}

/// A label the client must fix (400): recorded as a problem and as the rule's result.
fn refuse_override(
    rule: &RuleRef<'_>,
    label: &str,
    message: String,
    evaluation: &mut Evaluation,
    result: &mut RuleResult,
) {
    evaluation.problems.push(Problem::OverrideRefused {
        policy: rule.policy.to_string(),
        rule: rule.rule.name.clone(),
        label: label.to_string(),
        message: message.clone(),
    });
    result.result = Outcome::Error;
    result.reason = message;
}

fn apply_overrides(
    rule: &RuleRef<'_>,
    index: usize,
    rules: &[RuleRef<'_>],
    writers: &Writers,
    subject: &Subject<'_>,
    evaluation: &mut Evaluation,
    result: &mut RuleResult,
) {
    if matches!(result.result, Outcome::Error | Outcome::Fail) {
        return;
    }
    for declared in &rule.rule.overrides {
        let Some(raw) = subject.labels.get(&declared.label) else {
            continue;
        };
        let value = match declared.resolve(raw, subject.project) {
            Ok(value) => value,
            Err(message) => {
                refuse_override(rule, &declared.label, message, evaluation, result);
                continue;
            }
        };
        // A key/value label adds keys to the object at its path; any other label sets the path.
        let writes: Vec<(String, Value)> = match &value {
            Value::Object(map) if declared.value_type == OverrideType::KeyValues => map
                .iter()
                .map(|(key, value)| {
                    (
                        format!("{}/{}", declared.path, pointer::escape(key)),
                        value.clone(),
                    )
                })
                .collect(),
            _ => vec![(declared.path.clone(), value)],
        };
        for (path, value) in writes {
            let current = pointer::get(&evaluation.pod, &path).cloned();
            if current.as_ref() == Some(&value) {
                continue;
            }
            if let Some(writer) = writers.other_writer(&path, index, current.is_some()) {
                let owner = &rules[writer];
                let message = format!(
                    "label {}={raw:?} refused: {path} is set by policy {} rule {} ({}), which does not let this label change it",
                    declared.label, owner.policy, owner.rule.name, owner.file
                );
                refuse_override(rule, &declared.label, message, evaluation, result);
                continue;
            }
            match pointer::write(&mut evaluation.pod, &path, value.clone(), false) {
                Ok(written) => {
                    let before = match written {
                        Written::Replaced(before) => Some(before),
                        _ => None,
                    };
                    result.changes.push(Change {
                        pointer: path,
                        before,
                        after: Some(value),
                        label: Some(declared.label.clone()),
                    });
                    if result.result == Outcome::Skip {
                        result.result = Outcome::Pass;
                    }
                    result.reason = format!("{}; label {} applied", result.reason, declared.label);
                }
                Err(error) => {
                    evaluation
                        .problems
                        .push(rule.failed(format!("override {}: {error}", declared.label)));
                    result.result = Outcome::Error;
                }
            }
        }
    }
}

fn validate(
    set: &PolicySet,
    rule: &RuleRef<'_>,
    validation: &Validation,
    context: &LazyContext<'_>,
    input: &Input<'_>,
    evaluation: &mut Evaluation,
) -> RuleResult {
    let exceptions: Vec<&Exception> = set
        .exceptions
        .iter()
        .filter(|e| {
            e.rules
                .contains(&(rule.policy.to_string(), rule.rule.name.clone()))
        })
        .filter(|e| e.selector.matches(&input.subject))
        .collect();
    let active: Vec<&Exception> = exceptions
        .iter()
        .copied()
        .filter(|e| input.today <= e.expires)
        .collect();
    let expired: Vec<String> = exceptions
        .iter()
        .filter(|e| input.today > e.expires)
        .map(|e| format!("exception {} ({}) expired on {}", e.name, e.file, e.expires))
        .collect();
    let whole_rule_exempt = active.iter().find(|e| e.controls.is_empty());
    if let Some(exception) = whole_rule_exempt {
        return rule.result(
            Outcome::Skip,
            format!(
                "exempted by {} ({}) until {}: {}",
                exception.name, exception.file, exception.expires, exception.reason
            ),
        );
    }
    let mut violations: Vec<(String, String)> = Vec::new();
    let mut prints = Vec::new();
    match &validation.check {
        Check::PodSecurity(level) => {
            let exempt_controls: Vec<&str> = active
                .iter()
                .flat_map(|e| e.controls.iter().map(String::as_str))
                .collect();
            for violation in pss::check(&evaluation.pod, *level) {
                if !exempt_controls.contains(&violation.control) {
                    violations.push((
                        violation.pointer,
                        format!("{}: {}", violation.control, violation.message),
                    ));
                }
            }
        }
        Check::Forbid(patterns) => {
            for pattern in patterns {
                for concrete in pointer::expand(&evaluation.pod, pattern) {
                    if pointer::get(&evaluation.pod, &concrete).is_some_and(|v| !v.is_null()) {
                        violations.push((
                            concrete,
                            validation
                                .message
                                .clone()
                                .unwrap_or_else(|| "forbidden".into()),
                        ));
                    }
                }
            }
        }
        Check::Deny(expression) => {
            let pod = script::to_dynamic(&evaluation.pod);
            let run = script::run(
                &set.engine,
                expression,
                &set.limits,
                context.get(),
                &rule.rule.params,
                pod,
            );
            prints = run.printed;
            match run.ended {
                Ok(Ran::Value(value)) => match value.as_bool() {
                    Ok(true) => violations.push((
                        validation.field.clone().unwrap_or_default(),
                        validation
                            .message
                            .clone()
                            .unwrap_or_else(|| "denied".into()),
                    )),
                    Ok(false) => {}
                    Err(kind) => {
                        let message =
                            format!("deny expression must be true or false, returned {kind}");
                        evaluation.problems.push(rule.failed(message.clone()));
                        return rule.result(Outcome::Error, message);
                    }
                },
                Ok(Ran::Denied(why)) => {
                    violations.push((validation.field.clone().unwrap_or_default(), why))
                }
                Err(message) => {
                    let message = format!("deny expression error: {message}");
                    evaluation.problems.push(rule.failed(message.clone()));
                    return rule.result(Outcome::Error, message);
                }
            }
        }
    }
    let mut result = if violations.is_empty() {
        rule.result(Outcome::Pass, "no violation")
    } else {
        let described: Vec<String> = violations
            .iter()
            .map(|(pointer, message)| {
                if pointer.is_empty() {
                    message.clone()
                } else {
                    format!("{message} (at {pointer})")
                }
            })
            .collect();
        let described = match (&validation.check, &validation.message) {
            (Check::PodSecurity(_), Some(prefix)) => {
                vec![format!("{prefix}: {}", described.join("; "))]
            }
            _ => described,
        };
        let mut message = described.join("; ");
        if !expired.is_empty() {
            message = format!("{message} [{}]", expired.join("; "));
        }
        match validation.action {
            Action::Enforce => {
                evaluation.problems.push(rule.denied(message.clone()));
                rule.result(Outcome::Fail, message)
            }
            Action::Audit => {
                evaluation.warnings.push(format!(
                    "policy {}/{} (audit): {message}",
                    rule.policy, rule.rule.name
                ));
                rule.result(Outcome::Warn, message)
            }
        }
    };
    if !expired.is_empty() && result.result == Outcome::Pass {
        result.reason = format!("{}; {}", result.reason, expired.join("; "));
    }
    result.prints = prints;
    result
}

/// Deep-merges `base` under `target`: the target's own values win; objects merge key by key and
/// arrays merge element by element, so a template's first container shapes `main`.
fn merge_under(target: &mut Value, base: &Value) {
    match (target, base) {
        (Value::Object(target), Value::Object(base)) => {
            for (key, base_value) in base {
                match target.get_mut(key) {
                    Some(existing) if !existing.is_null() => merge_under(existing, base_value),
                    _ => {
                        target.insert(key.clone(), base_value.clone());
                    }
                }
            }
        }
        (Value::Array(target), Value::Array(base)) => {
            for (index, base_value) in base.iter().enumerate() {
                if let Some(existing) = target.get_mut(index) {
                    merge_under(existing, base_value);
                }
            }
        }
        _ => {}
    }
}

/// Turns a structural diff into field changes with their old and new values.
fn record_diff(before: &Value, after: &Value, changes: &mut Vec<Change>) {
    if before == after {
        return;
    }
    let patch = json_patch::diff(before, after);
    for operation in patch.0 {
        let (path, value) = match &operation {
            json_patch::PatchOperation::Add(op) => (op.path.to_string(), Some(op.value.clone())),
            json_patch::PatchOperation::Replace(op) => {
                (op.path.to_string(), Some(op.value.clone()))
            }
            json_patch::PatchOperation::Remove(op) => (op.path.to_string(), None),
            other => (
                other.path().to_string(),
                pointer::get(after, other.path().as_ref()).cloned(),
            ),
        };
        changes.push(Change {
            before: pointer::get(before, &path).cloned(),
            after: value,
            pointer: path,
            label: None,
        });
    }
}

/// Labels that are not podbridge override knobs, for callers building a [`Subject`].
pub fn labels_of(request: &Value) -> BTreeMap<String, String> {
    request
        .get("Labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rules::{compile, Limits, Source};

    fn run(policy: &str, pod: Value, labels: &[(&str, &str)]) -> Evaluation {
        let set = compile(
            &[Source {
                path: "test.yaml".into(),
                text: policy.into(),
            }],
            &BTreeMap::new(),
            Limits::default(),
        )
        .unwrap();
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let request = json!({});
        evaluate(
            &set,
            Input {
                kind: ObjectKind::Pod,
                pod,
                request: RequestBody::new(&request),
                image: None,
                subject: Subject {
                    image: "docker.io/library/busybox:latest",
                    name: None,
                    labels: &labels,
                    project: None,
                    purpose: crate::model::Purpose::Container,
                },
                today: jiff::civil::date(2026, 1, 1),
            },
        )
    }

    #[test]
    fn validate_only_runs_no_mutation_and_still_denies() {
        let policy = r#"
apiVersion: podbridge.io/v1alpha1
kind: Policy
metadata: {name: p}
spec:
  rules:
  - name: default-sa
    mutate:
      setDefaults: {/spec/serviceAccountName: default}
  - name: no-host-network
    validate:
      action: Enforce
      message: no host network
      forbid: [/spec/hostNetwork]
"#;
        let set = compile(
            &[Source {
                path: "p.yaml".into(),
                text: policy.into(),
            }],
            &BTreeMap::new(),
            Limits::default(),
        )
        .unwrap();
        let labels = BTreeMap::new();
        let request = json!({});
        let input = |pod| Input {
            kind: ObjectKind::Pod,
            pod,
            request: RequestBody::new(&request),
            image: None,
            subject: Subject {
                image: "docker.io/library/busybox:latest",
                name: None,
                labels: &labels,
                project: None,
                purpose: crate::model::Purpose::Container,
            },
            today: jiff::civil::date(2026, 1, 1),
        };
        let host = validate_only(&set, input(json!({"spec": {"hostNetwork": true}})));
        assert_eq!(host.pod, json!({"spec": {"hostNetwork": true}}));
        assert_eq!(host.results.len(), 1);
        assert!(matches!(
            &host.problems[..],
            [Problem::Denied { rule, .. }] if rule == "no-host-network"
        ));
        let plain = validate_only(&set, input(json!({"spec": {}})));
        assert!(plain.problems.is_empty());
        assert_eq!(plain.pod, json!({"spec": {}}));
    }

    const CLIENT_LABELS: &str = r#"
apiVersion: podbridge.io/v1alpha1
kind: Policy
metadata: {name: labels}
spec:
  rules:
  - name: deny
    mutate:
      clientLabels: {deny: [app, "*.istio.io/*"]}
"#;

    #[test]
    fn client_labels_drop_only_what_the_client_set() {
        let pod = json!({"metadata": {"labels": {
            "app": "web", "sidecar.istio.io/inject": "false", "team": "infra", "keep": "me"}}});
        // `team` has another value on the pod than in the request: configured, not the client's.
        let evaluation = run(
            CLIENT_LABELS,
            pod,
            &[
                ("app", "web"),
                ("sidecar.istio.io/inject", "false"),
                ("keep", "me"),
                ("team", "evil"),
            ],
        );
        assert_eq!(
            evaluation.pod["metadata"]["labels"],
            json!({"team": "infra", "keep": "me"})
        );
        assert_eq!(evaluation.results[0].result, Outcome::Applied);
        let removed: Vec<&str> = evaluation.results[0]
            .changes
            .iter()
            .map(|c| c.pointer.as_str())
            .collect();
        assert_eq!(
            removed,
            [
                "/metadata/labels/app",
                "/metadata/labels/sidecar.istio.io~1inject"
            ]
        );
    }

    #[test]
    fn client_label_allow_list_keeps_only_its_globs() {
        let policy = CLIENT_LABELS.replace(
            r#"{deny: [app, "*.istio.io/*"]}"#,
            r#"{allow: ["com.docker.compose.*"]}"#,
        );
        let pod =
            json!({"metadata": {"labels": {"app": "web", "com.docker.compose.service": "db"}}});
        let evaluation = run(
            &policy,
            pod,
            &[("app", "web"), ("com.docker.compose.service", "db")],
        );
        assert_eq!(
            evaluation.pod["metadata"]["labels"],
            json!({"com.docker.compose.service": "db"})
        );
    }

    const CLAMP: &str = r#"
apiVersion: podbridge.io/v1alpha1
kind: Policy
metadata: {name: durations}
spec:
  rules:
  - name: bounds
    mutate:
      clamp:
        /spec/terminationGracePeriodSeconds: {min: 0, max: 300}
        /spec/containers/*/readinessProbe/periodSeconds: {min: 1, max: 60}
"#;

    #[test]
    fn clamp_bounds_values_warns_and_records_the_maximum() {
        let pod = json!({"spec": {"terminationGracePeriodSeconds": 1e30,
            "containers": [{"readinessProbe": {"periodSeconds": 0}}, {"name": "no-probe"}]}});
        let evaluation = run(CLAMP, pod, &[]);
        assert_eq!(evaluation.pod["spec"]["terminationGracePeriodSeconds"], 300);
        assert_eq!(
            evaluation.pod["spec"]["containers"][0]["readinessProbe"]["periodSeconds"],
            1
        );
        // A missing field stays missing.
        assert_eq!(
            evaluation.pod["spec"]["containers"][1],
            json!({"name": "no-probe"})
        );
        assert_eq!(evaluation.warnings.len(), 2, "{:?}", evaluation.warnings);
        assert!(evaluation.warnings[1].contains("beyond the maximum of 300"));
        assert_eq!(
            evaluation
                .maximums
                .get("/spec/terminationGracePeriodSeconds"),
            Some(&300)
        );
        let within = run(
            CLAMP,
            json!({"spec": {"terminationGracePeriodSeconds": 30}}),
            &[],
        );
        assert_eq!(within.results[0].result, Outcome::Pass);
        assert!(within.warnings.is_empty());
    }

    #[test]
    fn clamp_min_above_max_is_refused_at_load() {
        let error = compile(
            &[Source {
                path: "bad.yaml".into(),
                text: CLAMP.replace("{min: 0, max: 300}", "{min: 10, max: 5}"),
            }],
            &BTreeMap::new(),
            Limits::default(),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("min 10 is above max 5"),
            "{error}"
        );
    }
}
