//! `docker cp`: `HEAD`/`GET`/`PUT /containers/{id}/archive`.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::extract::{read_body, BodyLimit, Query};
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
    let copy = state.runtime.copy_permit()?;
    let (stat, tar) = state.runtime.archive_get(&view, &path).await?;
    // The slot is held until the tar has been sent.
    let body = futures::stream::once(async move {
        let _copy = copy;
        Ok::<_, std::convert::Infallible>(tar)
    });
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
        Body::from_stream(body),
    )
        .into_response())
}

/// `docker cp` into a container: the tar is held in memory while it goes to the pod (or, before
/// start, into an archive ConfigMap), so at most `max_concurrent_copies` bodies of at most
/// `max_archive_bytes` are read at once; the slot is taken before the body is read.
pub async fn container_archive_put(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Query,
    request: Request,
) -> Result<StatusCode> {
    let view = state.runtime.find(&id)?;
    let path = path_of(&query)?;
    let _copy = state.runtime.copy_permit()?;
    let limit = request
        .extensions()
        .get::<BodyLimit>()
        .copied()
        .unwrap_or_default();
    let body = read_body(request.into_body(), limit).await?;
    state.runtime.archive_put(&view, &path, body).await?;
    Ok(StatusCode::OK)
}
