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

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let limit = request
            .extensions()
            .get::<BodyLimit>()
            .copied()
            .unwrap_or_default();
        read_body(request.into_body(), limit).await.map(DockerBytes)
    }
}

/// Reads a whole body of at most `limit` bytes; a larger one is Docker's error body with 413.
pub async fn read_body(body: axum::body::Body, limit: BodyLimit) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit.bytes)
        .await
        .map_err(|error| {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::PayloadTooLarge(format!(
                    "request body is larger than {} bytes, the limit for this request (config {})",
                    limit.bytes, limit.key
                ))
            } else {
                ApiError::BadRequest(format!("reading request body: {error}"))
            }
        })
}

/// Limit for bodies that are JSON documents (create, network, exec, ...) unless configured
/// (`max_json_body_bytes`): far above any real request, low enough that a runaway client cannot
/// make podbridge buffer much.
pub const JSON_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The body limit a route set (request extension) and its config key, so the 413 message can
/// state both.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    pub bytes: usize,
    pub key: &'static str,
}

impl Default for BodyLimit {
    fn default() -> Self {
        BodyLimit {
            bytes: JSON_BODY_LIMIT,
            key: "max_json_body_bytes",
        }
    }
}

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

/// An integer query parameter, as Docker reads them (`strconv.Atoi`): absent or empty is `None`,
/// anything but a 64-bit integer is a 400 naming the parameter.
pub fn query_i64(query: &HashMap<String, String>, key: &str) -> Result<Option<i64>, ApiError> {
    match query.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(raw) => raw.parse::<i64>().map(Some).map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid value for {key}: {raw:?} is not an integer"
            ))
        }),
    }
}

/// A point in time as Docker clients send `since`/`until`: Unix seconds with an optional
/// fraction of up to nine digits (`1700000000.123456789`) or RFC 3339; in nanoseconds since
/// the epoch. Absent or empty is `None`; anything else, or a time outside what 64-bit
/// nanoseconds hold (1677–2262), is a 400 naming the parameter.
pub fn query_time(query: &HashMap<String, String>, key: &str) -> Result<Option<i64>, ApiError> {
    let Some(raw) = query.get(key).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::BadRequest(format!(
            "invalid {key} {raw:?}: expected Unix seconds (with up to 9 decimals) or RFC 3339"
        ))
    };
    if let Ok(at) = raw.parse::<jiff::Timestamp>() {
        return i64::try_from(at.as_nanosecond())
            .map(Some)
            .map_err(|_| bad());
    }
    let (seconds, fraction) = raw.split_once('.').unwrap_or((raw, ""));
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let seconds: i64 = seconds.parse().map_err(|_| bad())?;
    let nanos: i64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().map_err(|_| bad())?
    };
    let nanos = if seconds < 0 || raw.starts_with('-') {
        -nanos
    } else {
        nanos
    };
    seconds
        .checked_mul(1_000_000_000)
        .and_then(|at| at.checked_add(nanos))
        .map(Some)
        .ok_or_else(bad)
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

    fn one(key: &str, value: &str) -> HashMap<String, String> {
        HashMap::from([(key.to_owned(), value.to_owned())])
    }

    #[test]
    fn integers_are_strict() {
        assert_eq!(query_i64(&one("t", "5"), "t").unwrap(), Some(5));
        assert_eq!(query_i64(&one("t", "-1"), "t").unwrap(), Some(-1));
        assert_eq!(query_i64(&one("t", ""), "t").unwrap(), None);
        for hostile in ["1e300", "1.5", "NaN", "inf", "99999999999999999999", "é"] {
            let error = query_i64(&one("t", hostile), "t").unwrap_err();
            assert!(matches!(error, ApiError::BadRequest(_)), "{hostile}");
        }
    }

    #[test]
    fn times_in_every_client_spelling() {
        let at = |v: &str| query_time(&one("since", v), "since").unwrap();
        assert_eq!(at("1700000000"), Some(1_700_000_000_000_000_000));
        assert_eq!(at("1700000000.5"), Some(1_700_000_000_500_000_000));
        assert_eq!(at("1700000000.000000001"), Some(1_700_000_000_000_000_001));
        assert_eq!(at("2023-11-14T22:13:20Z"), Some(1_700_000_000_000_000_000));
        assert_eq!(at(""), None);
        assert_eq!(at("-1.5"), Some(-1_500_000_000));
    }

    #[test]
    fn hostile_times_are_400s_not_panics() {
        for hostile in [
            "1.ééééé",
            "1.é",
            "é.1",
            "1.1234567890",
            "9223372036854775807",
            "-9223372036854775808.5",
            "9999-12-31T23:59:59Z",
            "soon",
            "1.-5",
        ] {
            let error = query_time(&one("since", hostile), "since").unwrap_err();
            assert!(
                matches!(&error, ApiError::BadRequest(m) if m.contains("since")),
                "{hostile}: {error}"
            );
        }
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
