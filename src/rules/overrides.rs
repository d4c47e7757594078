//! Override labels: the only knobs a project may turn, each declared by a rule with its path, its
//! type and its bounds, and allowed only for the projects the policy names. The project is
//! podbridge's own configuration, so a client cannot widen its own rights.

use serde_json::Value;

use super::file::{OverrideSpec, OverrideType};
use super::glob::Glob;
use super::quantity::Quantity;

#[derive(Debug)]
pub struct Override {
    pub label: String,
    pub path: String,
    pub(crate) value_type: OverrideType,
    schema: Option<jsonschema::Validator>,
    min: Option<Quantity>,
    max: Option<Quantity>,
    allowed_projects: Option<Vec<Glob>>,
    /// The bound in words, repeated in every refusal so the user knows what is accepted.
    pub bound: String,
}

impl Override {
    pub fn compile(spec: &OverrideSpec) -> Result<Self, String> {
        let bound_value =
            |value: &Option<Value>, which: &str| -> Result<Option<Quantity>, String> {
                match value {
                    None => Ok(None),
                    Some(Value::Number(n)) => n
                        .as_i64()
                        .map(Quantity::from_integer)
                        .map(Some)
                        .ok_or_else(|| format!("{which} must be an integer or a quantity")),
                    Some(Value::String(s)) => Quantity::parse(s)
                        .map(Some)
                        .map_err(|e| format!("{which}: {e}")),
                    Some(_) => Err(format!("{which} must be an integer or a quantity")),
                }
            };
        let min = bound_value(&spec.min, "min")?;
        let max = bound_value(&spec.max, "max")?;
        if (min.is_some() || max.is_some())
            && !matches!(
                spec.value_type,
                OverrideType::Quantity | OverrideType::Integer
            )
        {
            return Err("min and max apply only to overrides of type quantity or integer".into());
        }
        let schema = match &spec.schema {
            Some(schema) => {
                Some(jsonschema::validator_for(schema).map_err(|e| format!("schema: {e}"))?)
            }
            None => None,
        };
        let mut bound = vec![type_words(spec.value_type).to_string()];
        if let Some(min) = &spec.min {
            bound.push(format!("at least {}", plain(min)));
        }
        if let Some(max) = &spec.max {
            bound.push(format!("at most {}", plain(max)));
        }
        if let Some(schema) = &spec.schema {
            bound.push(format!("matching {}", schema));
        }
        Ok(Override {
            label: spec.label.clone(),
            path: spec.path.clone(),
            value_type: spec.value_type,
            schema,
            min,
            max,
            allowed_projects: spec
                .allowed_for
                .as_ref()
                .map(|a| a.projects.iter().map(|p| Glob::new(p)).collect()),
            bound: bound.join(", "),
        })
    }

    /// Parses and checks a label value; `Err` carries the refusal message.
    pub fn resolve(&self, raw: &str, project: Option<&str>) -> Result<Value, String> {
        if let Some(projects) = &self.allowed_projects {
            let allowed = project.is_some_and(|p| projects.iter().any(|g| g.matches(p)));
            if !allowed {
                let names: Vec<&str> = projects.iter().map(Glob::as_str).collect();
                return Err(format!(
                    "label {}={raw:?} is not allowed for project {}: only projects matching {names:?} may set it",
                    self.label,
                    project.map(|p| format!("{p:?}")).unwrap_or_else(|| "(none configured)".into())
                ));
            }
        }
        let refuse = |why: String| {
            format!(
                "label {}={raw:?} refused: {why}; it must be {}",
                self.label, self.bound
            )
        };
        let value = match self.value_type {
            OverrideType::String => Value::String(raw.to_string()),
            OverrideType::Integer => {
                let number: i64 = raw
                    .trim()
                    .parse()
                    .map_err(|_| refuse("not an integer".into()))?;
                self.check_bounds(Quantity::from_integer(number))
                    .map_err(refuse)?;
                Value::from(number)
            }
            OverrideType::Boolean => match raw.trim() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(refuse("not true or false".into())),
            },
            OverrideType::Quantity => {
                let quantity = Quantity::parse(raw).map_err(|e| refuse(e.to_string()))?;
                self.check_bounds(quantity).map_err(refuse)?;
                Value::String(raw.trim().to_string())
            }
            OverrideType::KeyValues => {
                let mut map = serde_json::Map::new();
                for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let (key, value) = pair
                        .split_once('=')
                        .ok_or_else(|| refuse(format!("{pair:?} is not key=value")))?;
                    map.insert(
                        key.trim().to_string(),
                        Value::String(value.trim().to_string()),
                    );
                }
                Value::Object(map)
            }
        };
        if let Some(schema) = &self.schema {
            if let Some(error) = schema.iter_errors(&value).next() {
                return Err(refuse(error.to_string()));
            }
        }
        Ok(value)
    }

    fn check_bounds(&self, value: Quantity) -> Result<(), String> {
        if self.min.is_some_and(|min| value < min) {
            return Err("below the minimum".into());
        }
        if self.max.is_some_and(|max| value > max) {
            return Err("above the maximum".into());
        }
        Ok(())
    }
}

fn type_words(value_type: OverrideType) -> &'static str {
    match value_type {
        OverrideType::String => "a string",
        OverrideType::Integer => "an integer",
        OverrideType::Boolean => "a boolean (true or false)",
        OverrideType::Quantity => "a Kubernetes quantity",
        OverrideType::KeyValues => "a list of key=value pairs separated by commas",
    }
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(spec: Value) -> Override {
        Override::compile(&serde_json::from_value(spec).unwrap()).unwrap()
    }

    #[test]
    fn quantity_bounds_are_enforced_and_stated() {
        let memory = compile(
            json!({"label": "podbridge.io/memory-limit", "path": "/x", "type": "quantity", "max": "4Gi"}),
        );
        assert_eq!(memory.resolve("2Gi", None).unwrap(), json!("2Gi"));
        let refusal = memory.resolve("5000Mi", None).unwrap_err();
        assert_eq!(
            refusal,
            "label podbridge.io/memory-limit=\"5000Mi\" refused: above the maximum; it must be a Kubernetes quantity, at most 4Gi"
        );
        assert!(memory
            .resolve("lots", None)
            .unwrap_err()
            .contains("not a Kubernetes quantity"));
    }

    #[test]
    fn projects_outside_allowed_for_are_refused() {
        let selector = compile(
            json!({"label": "podbridge.io/node-selector", "path": "/spec/nodeSelector",
            "type": "keyValues", "allowedFor": {"projects": ["ml/*"]}}),
        );
        assert_eq!(
            selector
                .resolve("pool=gpu, zone=a", Some("ml/train"))
                .unwrap(),
            json!({"pool": "gpu", "zone": "a"})
        );
        let refusal = selector.resolve("pool=gpu", Some("web/site")).unwrap_err();
        assert!(
            refusal.contains("not allowed for project \"web/site\""),
            "{refusal}"
        );
        assert!(selector.resolve("pool=gpu", None).is_err());
    }

    #[test]
    fn schemas_constrain_string_values() {
        let pull = compile(
            json!({"label": "podbridge.io/pull-policy", "path": "/x", "type": "string",
            "schema": {"enum": ["Always", "IfNotPresent", "Never"]}}),
        );
        assert!(pull.resolve("Always", None).is_ok());
        let refusal = pull.resolve("Sometimes", None).unwrap_err();
        assert!(
            refusal.contains("Sometimes") && refusal.contains("IfNotPresent"),
            "{refusal}"
        );
    }
}
