//! Readiness HTTP endpoints beside the Docker API, for CI services and sidecars:
//! `GET /docker-ready`, `GET /kubernetes-ready` (default `127.0.0.1:2477`), and under
//! `podbridge serve` also `GET /metrics` (`crate::metrics`), which stays off the Docker API so
//! clients see no route Docker lacks. The operator's metrics listener is served from here too.
//!
//! No endpoint hands out credentials: in the sidecar shape the job shares podbridge's loopback,
//! so anything served here is the job's, and podbridge's Kubernetes credentials can do more than
//! the Docker API lets a job do (create any pod, bypassing the policy).
//!
//! Each answers 200 or 503 with a one-line reason. The Docker check is a [`DockerProbe`] so the
//! API server can plug in its own state; [`PingProbe`] asks `GET /_ping` over TCP.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use crate::config::DEFAULT_READINESS_LISTEN as DEFAULT_LISTEN;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Args;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::ListParams;
use kube::{Api, Client};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Upper bound for each check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Errors starting or running the endpoint server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("readiness endpoint: cannot listen on {listen}: {source}")]
    BindFailed {
        listen: String,
        #[source]
        source: std::io::Error,
    },
    #[error("readiness endpoint on {listen} stopped: {source}")]
    ServeFailed {
        listen: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed check result: `Err` carries the reason shown with the 503.
pub type Check = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Whether the Docker API answers.
pub trait DockerProbe: Send + Sync + 'static {
    fn check(&self) -> Check;
}

/// `GET /_ping` on the Docker API's TCP address must answer 200.
pub struct PingProbe {
    pub address: String,
}

impl DockerProbe for PingProbe {
    fn check(&self) -> Check {
        let address = self.address.clone();
        Box::pin(async move {
            match tokio::time::timeout(CHECK_TIMEOUT, ping(&address)).await {
                Ok(result) => result,
                Err(_) => Err(format!(
                    "Docker API at {address}: no answer to /_ping in time"
                )),
            }
        })
    }
}

async fn ping(address: &str) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("Docker API at {address}: {e}"))?;
    let request = format!("GET /_ping HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("Docker API at {address}: {e}"))?;
    let mut head = [0u8; 32];
    let read = stream
        .read(&mut head)
        .await
        .map_err(|e| format!("Docker API at {address}: {e}"))?;
    let line = String::from_utf8_lossy(&head[..read]);
    match line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        Some(code) => Err(format!("Docker API at {address}: /_ping answered {code}")),
        None => Err(format!("Docker API at {address}: not an HTTP answer")),
    }
}

/// A flag the Docker API server sets once it serves.
pub struct FlagProbe(pub Arc<AtomicBool>);

impl DockerProbe for FlagProbe {
    fn check(&self) -> Check {
        let up = self.0.load(Ordering::Acquire);
        Box::pin(async move {
            if up {
                Ok(())
            } else {
                Err("Docker API not serving yet".to_string())
            }
        })
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct ReadinessState {
    pub docker: Arc<dyn DockerProbe>,
    /// `None` when no Kubernetes configuration could be loaded (the reason is kept).
    pub kubernetes: std::result::Result<Client, String>,
    /// podbridge's namespace.
    pub namespace: String,
    /// The text of `/metrics`, when this process keeps metrics (`serve`; not `readiness`, which
    /// runs apart from the server it checks).
    pub metrics: Option<fn() -> String>,
}

pub fn router(state: ReadinessState) -> Router {
    let routes = Router::new()
        .route("/docker-ready", get(docker_ready))
        .route("/kubernetes-ready", get(kubernetes_ready));
    let routes = match state.metrics {
        Some(render) => routes.merge(metrics_router(render)),
        None => routes,
    };
    routes.with_state(state)
}

/// `GET /metrics` answering `render()` in the Prometheus text format.
pub fn metrics_router<S: Clone + Send + Sync + 'static>(render: fn() -> String) -> Router<S> {
    Router::new().route(
        "/metrics",
        get(move || async move {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    crate::metrics::CONTENT_TYPE,
                )],
                render(),
            )
        }),
    )
}

fn answer(result: Result<String, String>) -> Response {
    match result {
        Ok(text) => (StatusCode::OK, format!("{text}\n")).into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

async fn docker_ready(AxumState(state): AxumState<ReadinessState>) -> Response {
    answer(state.docker.check().await.map(|()| "ok".to_string()))
}

async fn kubernetes_ready(AxumState(state): AxumState<ReadinessState>) -> Response {
    let result = match &state.kubernetes {
        Err(reason) => Err(reason.clone()),
        Ok(client) => {
            match tokio::time::timeout(CHECK_TIMEOUT, check_kubernetes(client, &state.namespace))
                .await
            {
                Ok(result) => result,
                Err(_) => Err("Kubernetes API: no answer in time".to_string()),
            }
        }
    };
    answer(result.map(|()| format!("ok: namespace {}", state.namespace)))
}

/// The namespace exists and pods in it can be listed. Namespace-scoped credentials may not read
/// the Namespace object, so its existence is also shown by the `kube-root-ca.crt` ConfigMap that
/// Kubernetes (v1.20+) puts in every namespace.
async fn check_kubernetes(client: &Client, namespace: &str) -> Result<(), String> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let exists = match namespaces.get_opt(namespace).await {
        Ok(found) => found.is_some(),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            config_maps
                .get_opt("kube-root-ca.crt")
                .await
                .map_err(|e| format!("namespace {namespace}: {e}"))?
                .is_some()
        }
        Err(error) => return Err(format!("namespace {namespace}: {error}")),
    };
    if !exists {
        return Err(format!("namespace {namespace} does not exist"));
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    pods.list(&ListParams::default().limit(1))
        .await
        .map(drop)
        .map_err(|e| format!("cannot list pods in namespace {namespace}: {e}"))
}

/// Options of the endpoint server.
#[derive(Debug, Clone, Args)]
pub struct ReadinessArgs {
    /// Address of the readiness endpoints; default: the configured `readiness_listen`.
    #[arg(long = "readiness-listen")]
    pub listen: Option<String>,
    /// Docker API TCP address to ping; default: the configured `listen`.
    #[arg(long)]
    pub docker: Option<String>,
}

/// Builds the state from podbridge's configuration: the namespace it works in and a client.
pub async fn state(config: &crate::config::Config, docker: Arc<dyn DockerProbe>) -> ReadinessState {
    let inferred = crate::cluster::config().await.map_err(|e| e.to_string());
    let namespace = config.namespace.clone().unwrap_or_else(|| match &inferred {
        Ok(inferred) => inferred.default_namespace.clone(),
        Err(_) => "default".to_string(),
    });
    let kubernetes = inferred.and_then(|c| crate::cluster::client(c).map_err(|e| e.to_string()));
    ReadinessState {
        docker,
        kubernetes,
        namespace,
        metrics: None,
    }
}

/// Serves the endpoints until `shutdown` resolves.
pub async fn serve(
    listen: &str,
    state: ReadinessState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = bind(listen).await?;
    tracing::info!(%listen, namespace = %state.namespace, metrics = state.metrics.is_some(), "Readiness endpoints serving");
    serve_router(listen, listener, router(state), shutdown).await
}

/// Binds `listen` (an IP address and port).
pub async fn bind(listen: &str) -> Result<tokio::net::TcpListener> {
    let address: SocketAddr = listen.parse().map_err(|e| Error::BindFailed {
        listen: listen.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })?;
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| Error::BindFailed {
            listen: listen.to_string(),
            source,
        })
}

/// Serves only `GET /metrics` on a bound listener (the operator's metrics port) until
/// `shutdown` resolves.
pub async fn serve_metrics(
    listen: &str,
    listener: tokio::net::TcpListener,
    render: fn() -> String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    tracing::info!(%listen, "Metrics endpoint serving");
    serve_router(listen, listener, metrics_router(render), shutdown).await
}

async fn serve_router(
    listen: &str,
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::ServeFailed {
            listen: listen.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    fn state(up: bool) -> ReadinessState {
        ReadinessState {
            docker: Arc::new(FlagProbe(Arc::new(AtomicBool::new(up)))),
            kubernetes: Err("no cluster in unit tests".into()),
            namespace: "pb-test".into(),
            metrics: None,
        }
    }

    async fn status(state: ReadinessState, path: &str) -> (StatusCode, String) {
        let response = router(state)
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn docker_ready_follows_the_probe() {
        assert_eq!(status(state(true), "/docker-ready").await.0, StatusCode::OK);
        let (code, body) = status(state(false), "/docker-ready").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("not serving"), "{body}");
    }

    #[tokio::test]
    async fn no_credentials_are_served() {
        assert_eq!(
            status(state(true), "/kubeconfig").await.0,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn metrics_are_served_only_where_kept() {
        assert_eq!(
            status(state(true), "/metrics").await.0,
            StatusCode::NOT_FOUND
        );
        let with_metrics = ReadinessState {
            metrics: Some(|| "# TYPE podbridge_x counter\npodbridge_x 1\n".to_string()),
            ..state(true)
        };
        let response = router(with_metrics)
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[axum::http::header::CONTENT_TYPE],
            crate::metrics::CONTENT_TYPE
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        assert_eq!(&body[..], b"# TYPE podbridge_x counter\npodbridge_x 1\n");
    }

    #[tokio::test]
    async fn kubernetes_ready_says_why_not() {
        let (code, body) = status(state(true), "/kubernetes-ready").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("no cluster"), "{body}");
    }

    #[tokio::test]
    async fn ping_probe_reports_a_closed_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let probe = PingProbe { address };
        assert!(probe.check().await.is_err());
    }
}
