//! Native preconditions (`path`, `operator`, `value`): the cheap way to say "only for
//! unprivileged containers" without running a script on every request.

use serde_json::Value;

use super::file::{ConditionOperator, ConditionSpec, PreconditionsSpec};
use super::pointer;
use super::request::RequestBody;

#[derive(Debug, Clone)]
enum Target {
    Pod(String),
    Request(String),
}

#[derive(Debug, Clone)]
pub struct Condition {
    target: Target,
    operator: ConditionOperator,
    value: Value,
}

#[derive(Debug, Clone)]
pub enum Preconditions {
    All(Vec<Condition>),
    Any(Vec<Condition>),
}

impl Condition {
    fn compile(spec: &ConditionSpec) -> Self {
        let target = match (&spec.path, &spec.request_path) {
            (Some(path), _) => Target::Pod(path.clone()),
            (None, Some(path)) => Target::Request(path.clone()),
            (None, None) => Target::Pod(String::new()),
        };
        Condition {
            target,
            operator: spec.operator,
            value: spec.value.clone().unwrap_or(Value::Null),
        }
    }

    /// With a `*` in the path, the condition holds when it holds for any element.
    fn holds(&self, pod: &Value, request: &RequestBody<'_>) -> bool {
        let (document, path) = match &self.target {
            Target::Pod(path) => (pod, path),
            Target::Request(path) => (request.get(), path),
        };
        let found: Vec<Option<&Value>> = if path.contains('*') {
            pointer::expand(document, path)
                .iter()
                .map(|p| pointer::get(document, p))
                .collect()
        } else {
            vec![pointer::get(document, path)]
        };
        let test = |actual: Option<&Value>| match self.operator {
            ConditionOperator::Exists => actual.is_some_and(|v| !v.is_null()),
            ConditionOperator::NotExists => actual.is_none_or(Value::is_null),
            ConditionOperator::Equals => actual == Some(&self.value),
            ConditionOperator::NotEquals => actual != Some(&self.value),
            ConditionOperator::In => {
                actual.is_some_and(|v| self.value.as_array().is_some_and(|a| a.contains(v)))
            }
            ConditionOperator::NotIn => {
                !actual.is_some_and(|v| self.value.as_array().is_some_and(|a| a.contains(v)))
            }
        };
        match self.operator {
            // "not there anywhere" must hold for every element.
            ConditionOperator::NotExists
            | ConditionOperator::NotEquals
            | ConditionOperator::NotIn => found.into_iter().all(test),
            _ => found.into_iter().any(test),
        }
    }
}

impl Preconditions {
    pub fn compile(spec: &PreconditionsSpec) -> Self {
        let compile = |list: &Vec<ConditionSpec>| list.iter().map(Condition::compile).collect();
        match (&spec.all, &spec.any) {
            (Some(all), _) => Preconditions::All(compile(all)),
            (None, Some(any)) => Preconditions::Any(compile(any)),
            (None, None) => Preconditions::All(Vec::new()),
        }
    }

    pub fn hold(&self, pod: &Value, request: &RequestBody<'_>) -> bool {
        match self {
            Preconditions::All(conditions) => conditions.iter().all(|c| c.holds(pod, request)),
            Preconditions::Any(conditions) => conditions.iter().any(|c| c.holds(pod, request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn preconditions(spec: Value) -> Preconditions {
        Preconditions::compile(&serde_json::from_value(spec).unwrap())
    }

    #[test]
    fn operators_on_pod_and_request() {
        let pod = json!({"spec": {"containers": [{"securityContext": {"privileged": true}}, {"name": "b"}]}});
        let body = json!({"HostConfig": {"NetworkMode": "bridge"}});
        let request = RequestBody::new(&body);
        let not_privileged = preconditions(json!({"all": [
            {"path": "/spec/containers/*/securityContext/privileged", "operator": "NotEquals", "value": true}]}));
        assert!(!not_privileged.hold(&pod, &request));
        assert!(not_privileged.hold(&json!({"spec": {"containers": [{}]}}), &request));
        let network = preconditions(json!({"any": [
            {"requestPath": "/HostConfig/NetworkMode", "operator": "In", "value": ["bridge", "default"]}]}));
        assert!(network.hold(&pod, &request));
        let exists =
            preconditions(json!({"all": [{"path": "/spec/hostNetwork", "operator": "NotExists"}]}));
        assert!(exists.hold(&pod, &request));
    }
}
