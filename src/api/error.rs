//! The one place podbridge errors become Docker error responses (`{"message": "..."}`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::translate::TranslateError;
use crate::apply::ApplyError;
use crate::runtime::RuntimeError;

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// An error a Docker client sees; each variant fixes the status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// 401: a registry refused `docker login`'s credentials.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// 404 with no body: HEAD requests must not carry one.
    #[error("not found")]
    NotFoundNoBody,
    #[error("{0}")]
    Conflict(String),
    /// 304 with an empty body (start of a running container, stop of a stopped one).
    #[error("not modified")]
    NotModified,
    /// 413: a body above the route's limit (Docker has none; podbridge buffers bodies).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 429: too many concurrent requests of a kind (config `max_streams`,
    /// `max_concurrent_copies`); retrying later can succeed.
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    Unavailable(String),
    /// 503 that states what this daemon is, not a failure (not in a swarm): clients probe for
    /// it, so it is not logged as a server error.
    #[error("{0}")]
    SwarmInactive(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::NotFoundNoBody => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::NotModified => StatusCode::NOT_MODIFIED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable(_) | ApiError::SwarmInactive(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn no_such_container(name: &str) -> Self {
        ApiError::NotFound(format!("No such container: {name}"))
    }
}

/// Body of every Docker error response.
pub fn error_body(message: &str) -> String {
    serde_json::json!({ "message": message }).to_string()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        let expected = matches!(self, ApiError::SwarmInactive(_));
        let mut response = match self {
            ApiError::NotModified | ApiError::NotFoundNoBody => status.into_response(),
            other => (
                status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                error_body(&other.to_string()),
            )
                .into_response(),
        };
        if expected {
            response.extensions_mut().insert(NotAFault);
        } else if status.is_server_error() {
            response.extensions_mut().insert(LoggedError(message));
        }
        response
    }
}

/// Marker for a 5xx the logging middleware leaves alone (see `ApiError::SwarmInactive`).
#[derive(Clone, Copy, Debug)]
pub struct NotAFault;

/// Marker the logging middleware reads so a 5xx is logged once, with its message.
#[derive(Clone, Debug)]
pub struct LoggedError(pub String);

impl From<RuntimeError> for ApiError {
    fn from(error: RuntimeError) -> Self {
        match error {
            RuntimeError::NoSuchContainer(name) => ApiError::no_such_container(&name),
            RuntimeError::NoSuchExec(id) => {
                ApiError::NotFound(format!("No such exec instance: {id}"))
            }
            RuntimeError::NotRunning(id) => {
                ApiError::Conflict(format!("Container {id} is not running"))
            }
            RuntimeError::NameInUse { name, id } => ApiError::Conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". \
                 You have to remove (or rename) that container to be able to reuse that name."
            )),
            RuntimeError::Conflict(message) => ApiError::Conflict(message),
            RuntimeError::NotFound(message) => ApiError::NotFound(message),
            RuntimeError::BadRequest(message) => ApiError::BadRequest(message),
            RuntimeError::TooLarge(message) => ApiError::PayloadTooLarge(message),
            // 403, as Kubernetes answers an exceeded ResourceQuota: a 409 would read as "already
            // exists" to clients that reuse conflicting objects.
            RuntimeError::LimitReached { message } => ApiError::Forbidden(message),
            RuntimeError::Busy { message } => ApiError::TooManyRequests(message),
            RuntimeError::Forbidden(message) => ApiError::Forbidden(message),
            RuntimeError::NotReady => {
                ApiError::Unavailable("podbridge is not connected to the cluster yet".into())
            }
            RuntimeError::Apply(
                error @ (ApplyError::NotOwned { .. } | ApplyError::Contended { .. }),
            ) => ApiError::Conflict(error.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<TranslateError> for ApiError {
    fn from(error: TranslateError) -> Self {
        let message = error.to_string();
        match error.status() {
            403 => ApiError::Forbidden(message),
            400..=499 => ApiError::BadRequest(message),
            _ => ApiError::Internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_body_is_docker_json() {
        let response = ApiError::Conflict("busy".into()).into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn not_modified_has_no_body_type() {
        let response = ApiError::NotModified.into_response();
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert!(response.headers().get(header::CONTENT_TYPE).is_none());
    }

    #[test]
    fn swarm_inactive_is_503_and_not_logged() {
        let response = ApiError::SwarmInactive("not in a swarm".into()).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.extensions().get::<NotAFault>().is_some());
        assert!(response.extensions().get::<LoggedError>().is_none());
    }
}
