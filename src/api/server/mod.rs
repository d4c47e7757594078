//! The Docker Engine API server: the axum router, version-prefix handling, the headers every
//! response carries, and the listeners (TCP and unix socket).

mod archive;
mod build;
pub mod compat;
mod containers;
pub mod dry_run;
mod exec;
mod extract;
mod images;
mod networks;
mod stream;
mod swarm;
mod system;
pub mod tls;
mod view;
mod volumes;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, head, post};
use axum::{Extension, Router};
use tower::Layer;
use tracing::{error, info, Instrument};

use self::extract::BodyLimit;
use crate::api::error::{ApiError, LoggedError, NotAFault};
use crate::api::translate::Translator;
use crate::runtime::Runtime;

/// API version podbridge advertises.
pub const API_VERSION: &str = "1.51";
/// Oldest API version podbridge accepts.
pub const MIN_API_VERSION: &str = "1.24";
/// How long a shutdown waits for open connections.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Engine version reported by `/version`.
pub const ENGINE_VERSION: &str = "28.3.0";

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub runtime: Arc<Runtime>,
    pub translator: Arc<Translator>,
}

/// Every Docker route, unversioned; `/v1.NN/...` is stripped before routing.
pub fn router(state: AppState) -> Router {
    let limits = state.runtime.limits();
    let routes = Router::new()
        .route("/_ping", get(system::ping).head(system::ping_head))
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .route("/events", get(system::events))
        .route("/system/df", get(system::disk_usage))
        .route("/containers/create", post(containers::container_create))
        .route("/containers/json", get(containers::container_list))
        .route("/containers/prune", post(containers::container_prune))
        .route("/containers/{id}/json", get(containers::container_inspect))
        .route("/containers/{id}/start", post(containers::container_start))
        .route("/containers/{id}/stop", post(containers::container_stop))
        .route(
            "/containers/{id}/restart",
            post(containers::container_restart),
        )
        .route("/containers/{id}/kill", post(containers::container_kill))
        .route("/containers/{id}/wait", post(containers::container_wait))
        .route(
            "/containers/{id}/rename",
            post(containers::container_rename),
        )
        .route(
            "/containers/{id}/resize",
            post(containers::container_resize),
        )
        .route("/containers/{id}/logs", get(containers::container_logs))
        .route(
            "/containers/{id}/attach",
            post(containers::container_attach),
        )
        .route("/containers/{id}/top", get(containers::container_top))
        .route(
            "/containers/{id}/changes",
            get(containers::container_changes),
        )
        .route("/containers/{id}/stats", get(containers::container_stats))
        .route(
            "/containers/{id}/update",
            post(containers::container_update),
        )
        .route("/containers/{id}/pause", post(containers::container_pause))
        .route(
            "/containers/{id}/unpause",
            post(containers::container_pause),
        )
        .route(
            "/containers/{id}",
            axum::routing::delete(containers::container_delete),
        )
        .route("/containers/{id}/exec", post(exec::exec_create))
        .route(
            "/containers/{id}/archive",
            get(archive::container_archive_get)
                .put(archive::container_archive_put)
                .head(archive::container_archive_head)
                .route_layer(DefaultBodyLimit::max(limits.max_archive_bytes))
                .route_layer(Extension(BodyLimit {
                    bytes: limits.max_archive_bytes,
                    key: "max_archive_bytes",
                })),
        )
        .route("/exec/{id}/start", post(exec::exec_start))
        .route("/exec/{id}/resize", post(exec::exec_resize))
        .route("/exec/{id}/json", get(exec::exec_inspect))
        .route("/images/json", get(images::image_list))
        .route("/images/create", post(images::image_create))
        .route("/images/prune", post(images::image_prune))
        .route("/images/get", get(build::save_many))
        .route(
            "/images/load",
            post(build::load)
                .route_layer(DefaultBodyLimit::max(limits.max_archive_bytes))
                .route_layer(Extension(BodyLimit {
                    bytes: limits.max_archive_bytes,
                    key: "max_archive_bytes",
                })),
        )
        .route(
            "/images/{*rest}",
            get(images::image_get)
                .delete(images::image_delete)
                .post(images::image_post),
        )
        .route("/networks", get(networks::network_list))
        .route("/networks/create", post(networks::network_create))
        .route("/networks/prune", post(networks::network_prune))
        .route(
            "/networks/{id}",
            get(networks::network_inspect).delete(networks::network_delete),
        )
        .route("/networks/{id}/connect", post(networks::network_connect))
        .route(
            "/networks/{id}/disconnect",
            post(networks::network_disconnect),
        )
        .route("/volumes", get(volumes::volume_list))
        .route("/volumes/create", post(volumes::volume_create))
        .route("/volumes/prune", post(volumes::volume_prune))
        .route(
            "/volumes/{name}",
            get(volumes::volume_inspect).delete(volumes::volume_delete),
        )
        .route(
            "/build",
            post(build::build).route_layer(DefaultBodyLimit::max(limits.max_archive_bytes)),
        )
        .route("/build/prune", post(build::build_prune))
        .route("/commit", post(unsupported))
        .route("/auth", post(system::auth))
        .route("/distribution/{*rest}", get(unsupported))
        .route("/_nothing", head(unsupported))
        .merge(swarm::routes())
        .route_layer(middleware::from_fn(keep_matched_route))
        .fallback(not_found_or_link_delete)
        .layer(DefaultBodyLimit::max(limits.max_json_body_bytes))
        .layer(Extension(BodyLimit {
            bytes: limits.max_json_body_bytes,
            key: "max_json_body_bytes",
        }))
        .with_state(state);
    docker_service(routes)
}

/// Wraps Docker routes in the version-prefix stripping, 5xx logging, request metrics and Docker
/// headers.
fn docker_service(routes: Router) -> Router {
    let versioned = middleware::from_fn(strip_version).layer(routes);
    Router::new()
        .fallback_service(versioned)
        .layer(middleware::from_fn(log_server_errors))
        .layer(middleware::from_fn(record_request))
        .layer(middleware::from_fn(docker_headers))
}

/// The templated route that answered a request (`/containers/{id}/start`), carried out on the
/// response: only the router knows it, and the layers that record metrics run outside it (they
/// also see requests no route matched).
#[derive(Clone)]
enum RouteLabel {
    Matched(MatchedPath),
    /// A route a fallback served.
    Fallback(&'static str),
}

/// Inside the router (`route_layer`): hands the matched route to [`record_request`].
async fn keep_matched_route(request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(matched) = matched {
        response
            .extensions_mut()
            .insert(RouteLabel::Matched(matched));
    }
    response
}

/// Counts each request by method, templated route and status, and times it to its response head
/// (`podbridge_requests_total`, `podbridge_request_duration_seconds`).
async fn record_request(request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let route = match response.extensions().get::<RouteLabel>() {
        Some(RouteLabel::Matched(matched)) => matched.as_str(),
        Some(RouteLabel::Fallback(route)) => route,
        None => crate::metrics::UNMATCHED_ROUTE,
    };
    crate::metrics::serve().record_request(
        method,
        route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The method as a metric label: the standard ones by name, any other as `other`, so a client
/// cannot grow the label set.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("page not found: {}", uri.path()))
}

/// The fallback: Docker's 404 `page not found`, except for `DELETE /containers/<a>/<b>`. dockerd
/// routes `DELETE /containers/{name:.*}` because a link name holds a slash (`docker rm --link
/// web/db` sends it as is, docker-py as `//web/db`); no route here can take a slash beside
/// `/containers/{id}/…`, so such a delete arrives here and goes to the container delete.
async fn not_found_or_link_delete(
    state: axum::extract::State<AppState>,
    method: axum::http::Method,
    uri: Uri,
) -> Response {
    let link_name = uri
        .path()
        .strip_prefix("/containers/")
        .filter(|name| name.contains('/') && method == axum::http::Method::DELETE)
        .map(|name| percent_encoding::percent_decode_str(name).decode_utf8_lossy());
    let Some(name) = link_name else {
        return not_found(uri).await.into_response();
    };
    let query = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let mut response = containers::container_delete(
        state,
        axum::extract::Path(name.into_owned()),
        axum::extract::Query(query),
    )
    .await
    .into_response();
    response
        .extensions_mut()
        .insert(RouteLabel::Fallback("/containers/{name}"));
    response
}

async fn unsupported(uri: Uri) -> ApiError {
    ApiError::NotImplemented(format!("{} is not supported by podbridge", uri.path()))
}

/// The API version a request named (`/v1.NN/...`), for the few answers that depend on it.
#[derive(Debug, Clone)]
pub struct ApiVersion(pub String);

impl ApiVersion {
    /// Whether the request asked for an API version older than `version`.
    pub fn older_than(&self, version: &str) -> bool {
        version_lt(&self.0, version)
    }
}

/// `/v1.NN/rest` → `/rest`; versions below the minimum get Docker's 400.
async fn strip_version(mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if let Some((version, rest)) = split_version(&path) {
        request.extensions_mut().insert(ApiVersion(version.clone()));
        if version_lt(&version, MIN_API_VERSION) {
            return ApiError::BadRequest(format!(
                "client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, \
                 please upgrade your client to a newer version"
            ))
            .into_response();
        }
        let rest = rest.to_string();
        let path_and_query = match request.uri().query() {
            Some(query) => format!("{rest}?{query}"),
            None => rest,
        };
        if let Ok(uri) = Uri::builder().path_and_query(path_and_query).build() {
            *request.uri_mut() = uri;
        }
    }
    next.run(request).await
}

/// `/v1.44/_ping` → `("1.44", "/_ping")`.
fn split_version(path: &str) -> Option<(String, &str)> {
    let after = path.strip_prefix("/v")?;
    let end = after.find('/').unwrap_or(after.len());
    let version = &after[..end];
    let (major, minor) = version.split_once('.')?;
    if major.is_empty()
        || minor.is_empty()
        || !major.bytes().all(|b| b.is_ascii_digit())
        || !minor.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let rest = &after[end..];
    Some((
        version.to_string(),
        if rest.is_empty() { "/" } else { rest },
    ))
}

fn version_lt(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> (u32, u32) {
        let (major, minor) = v.split_once('.').unwrap_or((v, "0"));
        (major.parse().unwrap_or(0), minor.parse().unwrap_or(0))
    };
    parse(a) < parse(b)
}

/// The headers Docker puts on every response.
async fn docker_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    headers.insert("Ostype", HeaderValue::from_static("linux"));
    headers.insert("Docker-Experimental", HeaderValue::from_static("false"));
    headers.insert(
        header::SERVER,
        HeaderValue::from_static(concat!(
            "Docker/28.3.0 (linux) podbridge/",
            env!("CARGO_PKG_VERSION")
        )),
    );
    response
}

/// Logs every 5xx once, with the request line and the message the client got.
async fn log_server_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    // Closes when the handler has its answer (a stream's body goes on after it).
    let span = tracing::debug_span!(target: crate::TIMING, "request", %method, %path);
    let response = next.run(request).instrument(span).await;
    if response.status().is_server_error()
        && response.status() != StatusCode::NOT_IMPLEMENTED
        && response.extensions().get::<NotAFault>().is_none()
    {
        let message = response
            .extensions()
            .get::<LoggedError>()
            .map(|e| e.0.clone())
            .unwrap_or_default();
        error!(%method, %path, status = response.status().as_u16(), %message, "Request failed");
    }
    response
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("loading the Kubernetes client configuration (kubeconfig or in-cluster): {0}")]
    KubeConfig(#[from] kube::config::InferConfigError),
    #[error("building the Kubernetes client: {0}")]
    KubeClient(#[from] kube::Error),
    #[error("listen address {address:?} is invalid: {source}")]
    BadListenAddress {
        address: String,
        source: std::net::AddrParseError,
    },
    #[error("binding {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("namespace lock: {0}")]
    Lock(#[from] crate::runtime::lease::Error),
    #[error("registry settings: {0}")]
    Registry(#[from] crate::runtime::registry::RegistryError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// No source: the reason is already one line, and the way forward must end it.
    #[error(
        "no Kubernetes cluster reachable ({reason}). Start the test cluster with \
         tests/cluster/up.sh (or point KUBECONFIG at yours), or run `podbridge serve --dry-run` to \
         answer Docker clients without a cluster and print what would be applied"
    )]
    NoCluster { reason: String },
}

/// How long `serve` waits for the API server's first answer before saying there is no cluster.
const CLUSTER_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The innermost cause of `error`, the part a user can act on.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// A client for a cluster that answers, or [`ServeError::NoCluster`] in one line.
async fn reachable_cluster() -> Result<kube::Client, ServeError> {
    let kube_config = crate::cluster::config().await.map_err(|error| {
        let reason = match std::env::var("KUBECONFIG").ok().filter(|p| !p.is_empty()) {
            Some(path) => format!("KUBECONFIG={path}: {}", root_cause(&error)),
            None => "no kubeconfig at ~/.kube/config and not running in a cluster".into(),
        };
        ServeError::NoCluster { reason }
    })?;
    let url = kube_config.cluster_url.to_string();
    let client = crate::cluster::client(kube_config)?;
    match tokio::time::timeout(CLUSTER_PROBE_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(error)) => Err(ServeError::NoCluster {
            reason: format!("{url}: {}", root_cause(&error)),
        }),
        Err(_) => Err(ServeError::NoCluster {
            reason: format!(
                "{url} did not answer within {}s",
                CLUSTER_PROBE_TIMEOUT.as_secs()
            ),
        }),
    }
}

/// The Docker API's listeners: TCP on `listen`, and the unix socket when one is configured.
pub(super) struct Listeners {
    tcp: tokio::net::TcpListener,
    /// Set when the TCP listener speaks TLS with client certificates (`tls_*`).
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    unix: Option<tokio::net::UnixListener>,
}

impl Listeners {
    /// The TCP address, for the start-up log.
    pub(super) fn tcp_address(&self) -> std::io::Result<std::net::SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Binds every listener, so both the real and the dry-run server fail the same way on a bad
/// address or a port in use.
pub(super) async fn bind_listeners(
    config: &crate::config::Config,
) -> Result<Listeners, ServeError> {
    let listen: std::net::SocketAddr =
        config
            .listen
            .parse()
            .map_err(|source| ServeError::BadListenAddress {
                address: config.listen.clone(),
                source,
            })?;
    let tls_files = tls::TlsFiles::from_parts(
        config.tls_cert.as_deref(),
        config.tls_key.as_deref(),
        config.tls_ca.as_deref(),
    )?;
    tls::check_listener(&listen, tls_files.as_ref(), config.insecure_tcp)?;
    if !listen.ip().is_loopback() && tls_files.is_none() {
        tracing::warn!(address = %listen, "insecure_tcp: the Docker API is served without authentication off loopback");
    }
    let tls = tls_files.as_ref().map(tls::server_config).transpose()?;
    let tcp = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            address: config.listen.clone(),
            source,
        })?;
    let unix = match &config.unix_socket {
        Some(path) => Some(
            bind_unix_socket(path, config.unix_socket_mode).map_err(|source| ServeError::Bind {
                address: path.display().to_string(),
                source,
            })?,
        ),
        None => None,
    };
    Ok(Listeners { tcp, tls, unix })
}

/// Binds the unix socket at `path` with permission bits `mode`, never wider: it is bound inside
/// a fresh 0700 directory beside `path` (nobody else can reach it there), given `mode`, and only
/// then renamed into place, replacing a stale socket. The process umask plays no part.
fn bind_unix_socket(
    path: &std::path::Path,
    mode: u32,
) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => std::path::Path::new("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "socket path has no file name",
        )
    })?;
    let private = parent.join(format!(
        ".{}.{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        hex::encode(rand::random::<[u8; 6]>())
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("socket");
    let bound = (|| {
        let listener = tokio::net::UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&staged, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    bound
}

/// Serves `app` on every listener until the shutdown signal, one task per listener.
pub(super) fn serve_on(
    listeners: Listeners,
    app: Router,
) -> Vec<tokio::task::JoinHandle<std::io::Result<()>>> {
    let mut tasks = vec![match listeners.tls {
        None => tokio::spawn({
            let app = app.clone();
            async move {
                axum::serve(listeners.tcp, app)
                    .with_graceful_shutdown(shutdown_signal())
                    .await
            }
        }),
        Some(config) => tokio::spawn({
            let app = app.clone();
            async move {
                let listener = tls::TlsListener::new(listeners.tcp, config)?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown_signal())
                    .await
            }
        }),
    }];
    if let Some(unix) = listeners.unix {
        tasks.push(tokio::spawn(async move {
            axum::serve(unix, app)
                .with_graceful_shutdown(shutdown_signal())
                .await
        }));
    }
    tasks
}

/// Builds the runtime from `config` and serves on its TCP address and optional unix socket.
pub async fn run(
    config: &crate::config::Config,
    policies: crate::rules::SharedPolicySet,
    mut context: crate::render::RenderContext,
) -> Result<(), ServeError> {
    let client = reachable_cluster().await?;
    let namespace = config
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    context.namespace = namespace.clone();
    let instance = crate::render::label_value(&context.instance_id);
    // lifecycle (src/runtime/lease.rs): with `lock`, hold the namespace Lease before binding.
    let lock = match config.lock {
        false => None,
        true => tokio::select! {
            lock = crate::runtime::lease::NAMESPACE_LOCK.acquire(client.clone(), &namespace, &instance) => Some(lock?),
            _ = shutdown_signal() => return Ok(()),
        },
    };
    // lifecycle (src/runtime/reaper.rs): liveness Lease first, so peers see this instance.
    let reaper = crate::runtime::reaper::Reaper::new(
        client.clone(),
        namespace.clone(),
        instance.clone(),
        std::time::Duration::from_secs(config.reaper_idle_seconds),
    )
    .spawn()
    .await;
    let runtime = Runtime::new(client, namespace.clone(), instance.clone());
    let translator = Arc::new(Translator::new(policies, context));
    runtime.set_limits(config.limits());
    let listeners = bind_listeners(config).await?;
    runtime.set_start_timeout(std::time::Duration::from_secs(config.start_timeout_seconds));
    runtime.set_named_volumes(config.named_volumes);
    // `Config::load` validated both; an unvalidated config allows no binds.
    runtime.set_bind_settings(crate::runtime::binds::BindSettings {
        roots: config.bind_roots().unwrap_or_default(),
        size_limit_bytes: config
            .bind_size_limit_bytes()
            .unwrap_or(crate::runtime::binds::DEFAULT_SIZE_LIMIT_BYTES),
    });
    runtime.set_publish_ip(crate::runtime::ports::publish_ip(&config.listen));
    runtime.set_ryuk_settings(crate::runtime::ryuk::RyukSettings {
        builtin: config.builtin_ryuk,
        restart_grace: std::time::Duration::from_secs(config.ryuk_restart_grace_seconds),
    });
    runtime.set_build_settings(crate::runtime::build::BuildSettings {
        image: config.build_image.clone(),
        registry: config.build_registry.clone().filter(|r| !r.is_empty()),
        pull_registry: config.build_pull_registry.clone().filter(|r| !r.is_empty()),
        insecure: config.build_registry_insecure,
        timeout: std::time::Duration::from_secs(config.build_timeout_seconds),
        // the registry client below refuses to start on an unreadable file
        ca_pem: (!config.registry_ca_files.is_empty()).then(|| {
            config
                .registry_ca_files
                .iter()
                .filter_map(|path| std::fs::read_to_string(path).ok())
                .collect::<Vec<_>>()
                .join("\n")
        }),
    });
    runtime
        .registry
        .set_access(crate::runtime::registry::RegistryAccess::new(
            config.registry_lookup,
            &config.registry_mirrors,
            &config.registry_ca_files,
        )?);
    runtime.spawn_watchers();
    let watched = Arc::downgrade(&runtime);
    crate::metrics::serve().set_container_states(Box::new(move || {
        watched
            .upgrade()
            .map_or_else(Vec::new, |runtime| runtime.container_states())
    }));
    info!(%namespace, %instance, address = %listeners.tcp_address()?, tls = listeners.tls.is_some(), "Serving the Docker API");
    let app = router(AppState {
        runtime: runtime.clone(),
        translator,
    });
    let tasks = serve_on(listeners, app);
    let serving = async {
        for task in tasks {
            task.await.map_err(std::io::Error::other)??;
        }
        Ok::<_, ServeError>(())
    };
    // The first signal drains; followers, waits and hijacked streams may never end, so a second
    // signal or the drain limit stops waiting for them.
    let drain_limit = async {
        shutdown_signal().await;
        tokio::select! {
            _ = tokio::time::sleep(DRAIN_LIMIT) => {}
            _ = shutdown_signal() => {}
        }
    };
    let lock_lost = async {
        match &lock {
            Some(lock) => lock.lost().await,
            None => std::future::pending().await,
        }
    };
    let lost = tokio::select! {
        result = serving => { result?; false }
        _ = drain_limit => { info!("Open connections closed at the drain limit"); false }
        _ = lock_lost => true,
    };
    if config.cleanup_on_exit {
        let cleanup = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            runtime.delete_everything(),
        );
        match cleanup.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => error!(%error, "Cleanup on exit failed"),
            Err(_) => error!("Cleanup on exit timed out"),
        }
    }
    reaper.stop(config.cleanup_on_exit).await;
    if lost {
        return Err(crate::runtime::lease::Error::Lost {
            lease: crate::runtime::lease::NAMESPACE_LOCK.name,
        }
        .into());
    }
    if let Some(lock) = lock {
        lock.release().await?;
    }
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        if let Ok(mut signal) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            signal.recv().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

#[cfg(test)]
mod tests;
