//! JSON pointer helpers for rule authors' paths: set-if-absent with parent creation, and the `*`
//! wildcard that reaches every container (`/spec/containers/*/securityContext`).

use serde_json::{Map, Value};

/// One reference token of an RFC 6901 pointer, unescaped.
pub fn tokens(pointer: &str) -> Vec<String> {
    if pointer.is_empty() {
        return Vec::new();
    }
    pointer[1..]
        .split('/')
        .map(|t| {
            if t.contains('~') {
                t.replace("~1", "/").replace("~0", "~")
            } else {
                t.to_string()
            }
        })
        .collect()
}

/// `document.pointer(pointer)` without an allocation per token (serde_json unescapes every token
/// into a new string; rule paths rarely hold an escape): the lookup every condition and Pod
/// Security check makes.
pub fn get<'a>(document: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.is_empty() {
        return Some(document);
    }
    let rest = pointer.strip_prefix('/')?;
    let mut node = document;
    for token in rest.split('/') {
        node = if token.contains('~') {
            child(node, &token.replace("~1", "/").replace("~0", "~"))?
        } else {
            child(node, token)?
        };
    }
    Some(node)
}

pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Expands `*` tokens against the document: one concrete pointer per existing element.
/// Pointers without `*` come back unchanged, even when they do not exist yet.
pub fn expand(document: &Value, pointer: &str) -> Vec<String> {
    if !pointer.split('/').any(|token| token == "*") {
        return vec![pointer.to_string()];
    }
    let tokens: Vec<&str> = pointer[1..].split('/').collect();
    let mut concrete = String::with_capacity(pointer.len() + 8);
    let mut found = Vec::new();
    walk(Some(document), &tokens, &mut concrete, &mut found);
    found
}

/// Depth-first over the escaped tokens, reusing one buffer for the pointer being built.
fn walk(node: Option<&Value>, tokens: &[&str], concrete: &mut String, found: &mut Vec<String>) {
    let Some((token, rest)) = tokens.split_first() else {
        found.push(concrete.clone());
        return;
    };
    let length = concrete.len();
    if *token == "*" {
        match node {
            Some(Value::Array(items)) => {
                for (index, item) in items.iter().enumerate() {
                    concrete.push('/');
                    concrete.push_str(&index.to_string());
                    walk(Some(item), rest, concrete, found);
                    concrete.truncate(length);
                }
            }
            Some(Value::Object(map)) => {
                for (key, item) in map {
                    concrete.push('/');
                    concrete.push_str(&escape(key));
                    walk(Some(item), rest, concrete, found);
                    concrete.truncate(length);
                }
            }
            _ => {}
        }
    } else {
        concrete.push('/');
        concrete.push_str(token);
        let next = node.and_then(|n| {
            if token.contains('~') {
                child(n, &token.replace("~1", "/").replace("~0", "~"))
            } else {
                child(n, token)
            }
        });
        walk(next, rest, concrete, found);
        concrete.truncate(length);
    }
}

fn child<'a>(node: &'a Value, token: &str) -> Option<&'a Value> {
    match node {
        Value::Object(map) => map.get(token),
        Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    }
}

/// Why a value could not be written at a pointer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot write {pointer}: {reason}")]
pub struct WriteError {
    pub pointer: String,
    pub reason: String,
}

/// Writes `value` at `pointer`, creating missing parents (objects, or an array when the next token
/// is `0` or `-`). With `only_if_absent`, an existing value is kept and `Ok(false)` returned.
/// Returns the previous value when one was replaced.
pub fn write(
    document: &mut Value,
    pointer: &str,
    value: Value,
    only_if_absent: bool,
) -> Result<Written, WriteError> {
    let tokens = tokens(pointer);
    let error = |reason: String| WriteError {
        pointer: pointer.to_string(),
        reason,
    };
    let Some((last, parents)) = tokens.split_last() else {
        return Err(error("the whole document cannot be replaced".into()));
    };
    let mut node = document;
    for (depth, token) in parents.iter().enumerate() {
        let next_token = tokens.get(depth + 1).map(String::as_str);
        let fresh = || match next_token {
            Some("0") | Some("-") => Value::Array(Vec::new()),
            _ => Value::Object(Map::new()),
        };
        if node.is_null() {
            *node = Value::Object(Map::new());
        }
        node = match node {
            Value::Object(map) => map.entry(token.clone()).or_insert_with(fresh),
            Value::Array(items) => {
                let index = array_index(token, items.len()).ok_or_else(|| {
                    error(format!(
                        "{token:?} is not an index of an array of {}",
                        items.len()
                    ))
                })?;
                if index == items.len() {
                    items.push(fresh());
                }
                &mut items[index]
            }
            other => {
                return Err(error(format!(
                    "parent /{} is a {}, not an object or array",
                    tokens[..depth].join("/"),
                    kind(other)
                )))
            }
        };
        if node.is_null() {
            *node = fresh();
        }
    }
    match node {
        Value::Object(map) => match map.get_mut(last.as_str()) {
            Some(existing) if only_if_absent && !existing.is_null() => Ok(Written::Kept),
            Some(existing) => Ok(Written::Replaced(std::mem::replace(existing, value))),
            None => {
                map.insert(last.clone(), value);
                Ok(Written::Added)
            }
        },
        Value::Array(items) => {
            let index = array_index(last, items.len()).ok_or_else(|| {
                error(format!(
                    "{last:?} is not an index of an array of {}",
                    items.len()
                ))
            })?;
            if index == items.len() {
                items.push(value);
                Ok(Written::Added)
            } else if only_if_absent && !items[index].is_null() {
                Ok(Written::Kept)
            } else {
                Ok(Written::Replaced(std::mem::replace(
                    &mut items[index],
                    value,
                )))
            }
        }
        other => Err(error(format!(
            "parent is a {}, not an object or array",
            kind(other)
        ))),
    }
}

/// What [`write`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    Added,
    Replaced(Value),
    Kept,
}

fn array_index(token: &str, len: usize) -> Option<usize> {
    if token == "-" {
        return Some(len);
    }
    token.parse::<usize>().ok().filter(|&i| i <= len)
}

pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn write_creates_missing_parents() {
        let mut doc = json!({"spec": {"containers": [{"name": "main"}]}});
        let written = write(
            &mut doc,
            "/spec/containers/0/securityContext/capabilities/drop",
            json!(["ALL"]),
            true,
        )
        .unwrap();
        assert_eq!(written, Written::Added);
        assert_eq!(
            doc["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );
    }

    #[test]
    fn set_if_absent_keeps_existing_values() {
        let mut doc = json!({"spec": {"activeDeadlineSeconds": 5}});
        assert_eq!(
            write(&mut doc, "/spec/activeDeadlineSeconds", json!(9), true).unwrap(),
            Written::Kept
        );
        assert_eq!(doc["spec"]["activeDeadlineSeconds"], 5);
        assert_eq!(
            write(&mut doc, "/spec/activeDeadlineSeconds", json!(9), false).unwrap(),
            Written::Replaced(json!(5))
        );
    }

    #[test]
    fn write_through_a_scalar_is_an_error() {
        let mut doc = json!({"spec": {"hostname": "x"}});
        let error = write(&mut doc, "/spec/hostname/deeper", json!(1), true).unwrap_err();
        assert!(error.reason.contains("string"), "{error}");
    }

    #[test]
    fn wildcards_expand_over_existing_elements() {
        let doc = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(
            expand(&doc, "/spec/containers/*/securityContext"),
            vec![
                "/spec/containers/0/securityContext",
                "/spec/containers/1/securityContext"
            ]
        );
        assert!(expand(&doc, "/spec/initContainers/*/securityContext").is_empty());
        assert_eq!(
            expand(&doc, "/metadata/labels/a~1b"),
            vec!["/metadata/labels/a~1b"]
        );
    }
}
