//! The policy engine: compiled policy sets and the rule chain that mutates and validates the
//! Pod-shaped document of each Docker request. No I/O here: callers hand in sources and get
//! back a verdict with a per-rule trace.

mod compile;
mod condition;
mod engine;
pub mod file;
pub mod glob;
mod matcher;
mod overrides;
pub mod pointer;
pub mod pss;
pub mod quantity;
pub mod report;
mod request;
pub mod script;

pub use compile::{compile, PolicySet, SharedPolicySet, Source};
pub use engine::{evaluate, labels_of, validate_only, Evaluation, Input};
pub use file::ObjectKind;
pub use matcher::Subject;
pub use report::{Change, Outcome, Problem, RuleResult};
pub use request::RequestBody;
pub use script::Limits;

/// Errors in policy files, each naming the file, the rule and the field to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{file}: not valid YAML: {message}")]
    Yaml { file: String, message: String },
    #[error("{file}: kind {kind:?} is not a podbridge policy document (expected Policy or PolicyException)")]
    UnknownKind { file: String, kind: String },
    #[error("{file}{}: {message} (at {})", rule.as_ref().map(|r| format!(", rule {r}")).unwrap_or_default(), if pointer.is_empty() { "/" } else { pointer })]
    Schema {
        file: String,
        rule: Option<String>,
        pointer: String,
        message: String,
    },
    #[error("{file}, policy {policy}, rule {rule}: {message}{}", if pointer.is_empty() { String::new() } else { format!(" (at {pointer})") })]
    Rule {
        file: String,
        policy: String,
        rule: String,
        pointer: String,
        message: String,
    },
    #[error("{file}: policy {policy} has two rules named {rule}")]
    DuplicateRule {
        file: String,
        policy: String,
        rule: String,
    },
    #[error("policy {name} is defined twice: in {first} and in {second}")]
    DuplicatePolicy {
        name: String,
        first: String,
        second: String,
    },
    #[error("{file}: exception {exception} names {policy}/{rule}, which is not a validation rule of any loaded policy")]
    UnknownExemptedRule {
        file: String,
        exception: String,
        policy: String,
        rule: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
