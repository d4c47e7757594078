//! `docker cp`: `HEAD`/`GET`/`PUT /containers/{id}/archive`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::extract::{DockerBytes, Query};
use super::AppState;
use crate::api::error::{ApiError, Result};
use crate::runtime::archive::PathStat;
use crate::runtime::RuntimeError;

const STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

fn stat_header(stat: &PathStat) -> HeaderValue {
    let json = serde_json::to_string(stat).unwrap_or_default();
    HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(json))
        .unwrap_or(HeaderValue::from_static(""))
}

fn path_of(query: &Query) -> Result<String> {
    query
        .get("path")
        .filter(|p| !p.is_empty())
        .cloned()
        .ok_or_else(|| ApiError::BadRequest("path is required".into()))
}

pub async fn container_archive_head(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Query,
) -> Result<Response> {
    let view = state
        .runtime
        .find(&id)
        .map_err(|_| ApiError::NotFoundNoBody)?;
    let path = path_of(&query)?;
    match state.runtime.stat_path(&view, &path).await {
        Ok(stat) => Ok(([(STAT_HEADER, stat_header(&stat))], StatusCode::OK).into_response()),
        Err(RuntimeError::NotFound(_)) => Err(ApiError::NotFoundNoBody),
        Err(other) => Err(other.into()),
    }
}

pub async fn container_archive_get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Query,
) -> Result<Response> {
    let view = state.runtime.find(&id)?;
    let path = path_of(&query)?;
    let (stat, tar) = state.runtime.archive_get(&view, &path).await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-tar"),
            ),
            (
                header::HeaderName::from_static("x-docker-container-path-stat"),
                stat_header(&stat),
            ),
        ],
        Body::from(tar),
    )
        .into_response())
}

/// Largest tar `docker cp` may send into a container: podbridge holds it in memory while it
/// streams it to the pod (or, before start, into archive ConfigMaps).
pub const ARCHIVE_BODY_LIMIT: usize = 512 * 1024 * 1024;

pub async fn container_archive_put(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Query,
    DockerBytes(body): DockerBytes,
) -> Result<StatusCode> {
    let view = state.runtime.find(&id)?;
    let path = path_of(&query)?;
    state.runtime.archive_put(&view, &path, body).await?;
    Ok(StatusCode::OK)
}
