//! What the rule chain did to one request: a result per rule with its reason and field changes,
//! printable as the `--explain` table and comparable in policy tests.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The result of one rule for one request, named as Kyverno reports name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A mutation changed the pod.
    Applied,
    /// A mutation had nothing to change, or a validation found no violation.
    Pass,
    /// An `Enforce` validation found a violation: the request is denied.
    Fail,
    /// An `Audit` validation found a violation: the request goes on with a warning.
    Warn,
    /// The rule did not select this request (match, exclude, a failed `test`, an exception).
    Skip,
    /// The rule could not run (script error, bad patch path, refused override label).
    Error,
}

impl Outcome {
    /// The name reports and metrics use (`podbridge_policy_decisions_total{result}`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Warn => "warn",
            Outcome::Skip => "skip",
            Outcome::Error => "error",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One field a rule (or an override label it allowed) changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub pointer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// The override label that made this change, when it was not the rule itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleResult {
    pub policy: String,
    pub rule: String,
    pub file: String,
    pub result: Outcome,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    /// What the rule's script printed, routed here instead of stdout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prints: Vec<String>,
}

/// A reason the request cannot go on, with the status class it maps to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Problem {
    /// An `Enforce` validation failed (Docker status 403).
    Denied {
        policy: String,
        rule: String,
        file: String,
        message: String,
    },
    /// A container label asked for a value outside what the policy allows (400).
    OverrideRefused {
        policy: String,
        rule: String,
        label: String,
        message: String,
    },
    /// A rule failed to run; the policy author must fix it (500).
    RuleFailed {
        policy: String,
        rule: String,
        file: String,
        message: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Denied {
                policy,
                rule,
                file,
                message,
            } => {
                write!(f, "{policy}/{rule} ({file}): {message}")
            }
            Problem::OverrideRefused { message, .. } => f.write_str(message),
            Problem::RuleFailed {
                policy,
                rule,
                file,
                message,
            } => {
                write!(f, "rule {policy}/{rule} in {file} failed: {message}")
            }
        }
    }
}

/// Totals per outcome, printed last as Kyverno's CLI does.
pub fn summary(results: &[RuleResult]) -> String {
    let count = |o: Outcome| results.iter().filter(|r| r.result == o).count();
    format!(
        "applied: {}, pass: {}, fail: {}, warn: {}, skip: {}, error: {}",
        count(Outcome::Applied),
        count(Outcome::Pass),
        count(Outcome::Fail),
        count(Outcome::Warn),
        count(Outcome::Skip),
        count(Outcome::Error)
    )
}

/// The `--explain` text: one line per rule, then each change as `+` added, `~` replaced,
/// `-` removed, then the totals.
pub fn explain(results: &[RuleResult]) -> String {
    let policy_width = results
        .iter()
        .map(|r| r.policy.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let rule_width = results
        .iter()
        .map(|r| r.rule.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:policy_width$}  {:rule_width$}  {:7}  REASON",
        "POLICY", "RULE", "RESULT"
    );
    for result in results {
        let _ = writeln!(
            out,
            "{:policy_width$}  {:rule_width$}  {:7}  {}",
            result.policy,
            result.rule,
            result.result.to_string(),
            result.reason
        );
        for change in &result.changes {
            let via = change
                .label
                .as_ref()
                .map(|l| format!("  (label {l})"))
                .unwrap_or_default();
            let line = match (&change.before, &change.after) {
                (None, Some(after)) => format!("+ {}: {}", change.pointer, compact(after)),
                (Some(before), Some(after)) => {
                    format!(
                        "~ {}: {} -> {}",
                        change.pointer,
                        compact(before),
                        compact(after)
                    )
                }
                (Some(before), None) => format!("- {}: {}", change.pointer, compact(before)),
                (None, None) => format!("? {}", change.pointer),
            };
            let _ = writeln!(out, "    {line}{via}");
        }
        for printed in &result.prints {
            let _ = writeln!(out, "    print: {printed}");
        }
    }
    let _ = writeln!(out, "{}", summary(results));
    out
}

fn compact(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 120 {
        format!(
            "{}…",
            &text[..text
                .char_indices()
                .nth(117)
                .map(|(i, _)| i)
                .unwrap_or(text.len())]
        )
    } else {
        text
    }
}
