//! Request extraction in Docker's conventions: lenient JSON bodies whose rejection is a Docker
//! error, query booleans in every spelling clients use, and both `filters` encodings.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::api::error::ApiError;

/// A whole request body whose rejection (too large, broken) is a Docker error body.
pub struct DockerBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for DockerBytes {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = request
            .extensions()
            .get::<BodyLimit>()
            .map_or(JSON_BODY_LIMIT, |limit| limit.0);
        Bytes::from_request(request, state)
            .await
            .map(DockerBytes)
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(format!(
                        "request body is larger than {} bytes, the limit for this request",
                        limit
                    ))
                } else {
                    ApiError::BadRequest(format!("reading request body: {}", rejection.body_text()))
                }
            })
    }
}

/// Limit for bodies that are JSON documents (create, network, exec, ...): far above any real
/// request, low enough that a runaway client cannot make podbridge buffer much.
pub const JSON_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The body limit a route set (request extension), so the 413 message can state it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON body; an empty body is `{}`. Content-Type is not checked (clients send `text/plain`).
pub struct DockerJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for DockerJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let DockerBytes(bytes) = DockerBytes::from_request(request, state).await?;
        let bytes: &[u8] = if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes)
            .map(DockerJson)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON in request body: {e}")))
    }
}

/// Query string as a map (last value wins).
pub type Query = axum::extract::Query<HashMap<String, String>>;

/// `1`, `true`, `True`, `yes` are true; absent, ``, `0`, `false`, `no`, `none` are false.
pub fn query_bool(query: &HashMap<String, String>, key: &str) -> bool {
    query.get(key).is_some_and(|value| {
        !matches!(
            value.to_ascii_lowercase().as_str(),
            "" | "0" | "false" | "no" | "none"
        )
    })
}

pub fn query_i64(query: &HashMap<String, String>, key: &str) -> Option<i64> {
    query
        .get(key)
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as i64)
}

/// Parses Docker `filters`: `{"k":{"v":true}}` (Go) or `{"k":["v"]}` (everyone else).
pub fn parse_filters(raw: Option<&String>) -> Result<HashMap<String, Vec<String>>, ApiError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(HashMap::new());
    };
    let value: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| ApiError::BadRequest(format!("invalid filter '{raw}': {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| ApiError::BadRequest(format!("invalid filter '{raw}'")))?;
    let mut filters = HashMap::new();
    for (key, values) in object {
        let list: Vec<String> = match values {
            serde_json::Value::Array(items) => items
                .iter()
                .filter_map(|i| i.as_str().map(String::from))
                .collect(),
            serde_json::Value::Object(map) => map
                .iter()
                .filter(|(_, on)| on.as_bool().unwrap_or(true))
                .map(|(k, _)| k.clone())
                .collect(),
            serde_json::Value::String(s) => vec![s.clone()],
            _ => Vec::new(),
        };
        filters.insert(key.clone(), list);
    }
    Ok(filters)
}

/// Whether Docker `labels` satisfy every `key` / `key=value` in `wanted`.
pub fn labels_match(
    labels: &serde_json::Map<String, serde_json::Value>,
    wanted: &[String],
) -> bool {
    wanted.iter().all(|filter| match filter.split_once('=') {
        Some((key, value)) => labels.get(key).and_then(|v| v.as_str()) == Some(value),
        None => labels.contains_key(filter.as_str()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_filter_encodings() {
        let go = parse_filters(Some(&r#"{"label":{"a=b":true,"c":true}}"#.to_string())).unwrap();
        let mut labels = go["label"].clone();
        labels.sort();
        assert_eq!(labels, vec!["a=b", "c"]);
        let py = parse_filters(Some(&r#"{"label":["a=b"],"id":["12"]}"#.to_string())).unwrap();
        assert_eq!(py["label"], vec!["a=b"]);
        assert_eq!(py["id"], vec!["12"]);
        assert!(parse_filters(Some(&"nope".to_string())).is_err());
    }

    #[test]
    fn query_booleans() {
        let query: HashMap<String, String> = [
            ("a", "1"),
            ("b", "True"),
            ("c", "false"),
            ("d", "0"),
            ("e", ""),
        ]
        .map(|(k, v)| (k.into(), v.into()))
        .into();
        assert!(query_bool(&query, "a") && query_bool(&query, "b"));
        assert!(
            !query_bool(&query, "c")
                && !query_bool(&query, "d")
                && !query_bool(&query, "e")
                && !query_bool(&query, "z")
        );
    }

    #[test]
    fn label_filters() {
        let labels = serde_json::json!({"a": "b", "c": ""})
            .as_object()
            .unwrap()
            .clone();
        assert!(labels_match(&labels, &["a=b".into(), "c".into()]));
        assert!(!labels_match(&labels, &["a=x".into()]));
        assert!(!labels_match(&labels, &["missing".into()]));
    }
}
