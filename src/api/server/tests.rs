//! Router-level tests that need no cluster: `router(state).oneshot(request)`.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;

pub(super) fn state() -> AppState {
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    AppState {
        runtime: Runtime::new(client, "test", "unit"),
        translator: Arc::new(Translator::new(
            crate::policy_store::shared(
                crate::policy_store::builtin(crate::rules::Limits::default()).unwrap(),
            ),
            crate::cli::render_context(&crate::config::Config::default()),
        )),
    }
}

async fn call(method: &str, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let response = router(state()).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn every_response_carries_docker_headers() {
    for uri in ["/version", "/v1.51/version", "/nope"] {
        let (_, headers, _) = call("GET", uri).await;
        assert_eq!(headers["api-version"], API_VERSION, "{uri}");
        assert_eq!(headers["ostype"], "linux");
        assert_eq!(headers["docker-experimental"], "false");
        assert!(headers["server"].to_str().unwrap().starts_with("Docker/"));
    }
}

#[tokio::test]
async fn versions_above_advertised_are_routed() {
    let (status, _, body) = call("GET", "/v1.53/version").await;
    assert_eq!(status, StatusCode::OK);
    let version: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(version["ApiVersion"], API_VERSION);
    assert_eq!(version["MinAPIVersion"], MIN_API_VERSION);
}

#[tokio::test]
async fn old_versions_are_refused_like_docker() {
    let (status, headers, body) = call("GET", "/v1.23/version").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(headers["content-type"], "application/json");
    assert!(
        body.contains("client version 1.23 is too old. Minimum supported API version is 1.24"),
        "{body}"
    );
}

#[tokio::test]
async fn ping_is_503_until_synced() {
    let (status, headers, _) = call("GET", "/_ping").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["api-version"], API_VERSION);
    assert_eq!(headers["builder-version"], "1");
    let (status, _, body) = call("HEAD", "/v1.44/_ping").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.is_empty());
}

#[tokio::test]
async fn unknown_routes_are_docker_404s() {
    let (status, headers, body) = call("GET", "/v1.51/nothing/here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(body["message"].as_str().unwrap().contains("/nothing/here"));
}

#[tokio::test]
async fn unsupported_routes_are_501() {
    let (status, _, body) = call("POST", "/v1.51/build").await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
    assert!(body.contains("message"));
}

#[tokio::test]
async fn info_has_mem_total() {
    let (status, _, body) = call("GET", "/info").await;
    assert_eq!(status, StatusCode::OK);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(info["MemTotal"].as_i64().unwrap() > 0);
    assert_eq!(info["OSType"], "linux");
    assert_ne!(info["OperatingSystem"], "Docker Desktop");
}

#[tokio::test]
async fn unknown_container_is_404_with_docker_message() {
    let (status, _, body) = call("GET", "/v1.51/containers/nope/json").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("No such container: nope"), "{body}");
}

#[tokio::test]
async fn images_with_slashes_route_to_inspect() {
    let app = router(state());
    let pull = Request::post("/images/create?fromImage=testcontainers%2Fryuk&tag=0.14.0")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app.clone().oneshot(pull).await.unwrap().status(),
        StatusCode::OK
    );
    let inspect = Request::get("/images/testcontainers/ryuk:0.14.0/json")
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(inspect).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let image: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(image["RepoTags"][0], "testcontainers/ryuk:0.14.0");
    let (status, _, body) = call("GET", "/images/never-seen:1/json").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("No such image: never-seen:1"));
}

#[tokio::test]
async fn the_builtin_ryuk_image_is_pulled_without_a_registry() {
    // A registry (docker.io's mirror) that has no image at all.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let registry = axum::Router::new().fallback(|| async {
        (
            StatusCode::NOT_FOUND,
            [("content-type", "application/json")],
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        )
    });
    tokio::spawn(async move { axum::serve(listener, registry).await });
    let state = state();
    state.runtime.registry.set_access(
        crate::runtime::registry::RegistryAccess::new(
            crate::runtime::registry::Lookup::Loopback,
            &[format!("docker.io=http://{address}")],
            &[],
        )
        .unwrap(),
    );
    let app = router(state);
    let pull = |image: &str| {
        Request::post(format!("/v1.51/images/create?fromImage={image}&tag=0.8.1"))
            .body(Body::empty())
            .unwrap()
    };
    let body = |response: axum::response::Response| async move {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let missing = body(app.clone().oneshot(pull("busybox")).await.unwrap()).await;
    assert!(missing.contains("errorDetail"), "{missing}");
    let ryuk = body(
        app.clone()
            .oneshot(pull("testcontainers%2Fryuk"))
            .await
            .unwrap(),
    )
    .await;
    assert!(!ryuk.contains("errorDetail"), "{ryuk}");
    let inspect = Request::get("/v1.51/images/testcontainers/ryuk:0.8.1/json")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.oneshot(inspect).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn pull_ends_with_up_to_date_status() {
    let (status, _, body) = call(
        "POST",
        "/v1.51/images/create?fromImage=docker.io%2Flibrary%2Falpine&tag=latest",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let last: serde_json::Value =
        serde_json::from_str(body.trim_end().lines().last().unwrap()).unwrap();
    assert_eq!(
        last["status"],
        "Status: Image is up to date for alpine:latest"
    );
}

#[test]
fn version_prefix_split() {
    assert_eq!(
        split_version("/v1.44/_ping"),
        Some(("1.44".to_string(), "/_ping"))
    );
    assert_eq!(split_version("/v1.5"), Some(("1.5".to_string(), "/")));
    assert_eq!(split_version("/volumes"), None);
    assert!(version_lt("1.9", "1.24"));
    assert!(!version_lt("1.53", "1.24"));
}

/// A state whose runtime has `limits`.
fn limited(limits: crate::runtime::limits::Limits) -> AppState {
    let state = state();
    state.runtime.set_limits(limits);
    state
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The `message` of a Docker error body.
fn message(body: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{body}"));
    value["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn hostile_query_values_are_docker_400s() {
    for (method, uri, key) in [
        (
            "GET",
            "/events?since=1.%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9",
            "since",
        ),
        ("GET", "/v1.51/events?until=99999999999999999999", "until"),
        ("GET", "/events?since=9223372036854775807", "since"),
        ("POST", "/containers/any/stop?t=1e300", "t"),
        ("POST", "/containers/any/stop?timeout=-1e300", "timeout"),
        ("POST", "/containers/any/restart?t=NaN", "t"),
        ("GET", "/containers/json?limit=1e300", "limit"),
        (
            "GET",
            "/containers/any/logs?stdout=1&since=1.%C3%A9",
            "since",
        ),
        ("POST", "/containers/any/kill?signal=99999999999", "signal"),
        ("POST", "/containers/any/resize?h=70000&w=1", "h"),
    ] {
        let (status, headers, body) = call(method, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(headers["content-type"], "application/json", "{uri}");
        let text = message(&body).to_ascii_lowercase();
        assert!(
            text.contains(key) || text.contains("signal"),
            "{uri}: {body}"
        );
    }
}

#[tokio::test]
async fn a_large_integer_stop_timeout_reaches_the_container_lookup() {
    // An integer `t` far beyond any real wait is valid: it must not overflow a deadline.
    let (status, _, body) = call("POST", "/containers/any/stop?t=9223372036854775807").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn streams_beyond_max_streams_are_429_until_one_closes() {
    let app = router(limited(crate::runtime::limits::Limits {
        max_streams: 1,
        ..Default::default()
    }));
    let events = || Request::get("/events").body(Body::empty()).unwrap();
    let open = app.clone().oneshot(events()).await.unwrap();
    assert_eq!(open.status(), StatusCode::OK);
    let (status, body) = send(&app, events()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(message(&body).contains("max_streams"), "{body}");
    drop(open);
    let again = app.clone().oneshot(events()).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test]
async fn json_bodies_beyond_max_json_body_bytes_are_413() {
    let app = router(limited(crate::runtime::limits::Limits {
        max_json_body_bytes: 64,
        ..Default::default()
    }));
    let body = format!(r#"{{"Name":"{}"}}"#, "n".repeat(200));
    let request = Request::post("/networks/create")
        .body(Body::from(body))
        .unwrap();
    let (status, body) = send(&app, request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(message(&body).contains("max_json_body_bytes"), "{body}");
}

#[tokio::test]
async fn creates_beyond_the_instance_caps_are_403_naming_the_key() {
    for (limits, key) in [
        (
            crate::runtime::limits::Limits {
                max_containers: 0,
                ..Default::default()
            },
            "max_containers",
        ),
        (
            crate::runtime::limits::Limits {
                max_stored_bytes: 10,
                ..Default::default()
            },
            "max_stored_bytes",
        ),
    ] {
        let app = router(limited(limits));
        let request = Request::post("/containers/create?name=capped")
            .body(Body::from(r#"{"Image":"busybox","Cmd":["true"]}"#))
            .unwrap();
        let (status, body) = send(&app, request).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(message(&body).contains(key), "{body}");
    }
}

#[tokio::test]
async fn a_cancelled_create_releases_its_name() {
    // An API server that accepts connections and never answers: the create hangs in `apply`.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let config = kube::Config::new(format!("http://{address}").parse().unwrap());
    let runtime = Runtime::new(kube::Client::try_from(config).unwrap(), "test", "unit");
    let translator = state().translator;
    let id = crate::model::ContainerId::random();
    let translation = translator
        .translate(&crate::api::translate::CreateRequest {
            body: br#"{"Image":"busybox"}"#,
            name: Some("web"),
            image: None,
            identity: crate::render::Identity {
                id: id.clone(),
                created: crate::runtime::now_rfc3339(),
            },
            start: crate::render::StartInputs::default(),
            purpose: Default::default(),
        })
        .unwrap();
    let create = runtime.create_container("web", id.as_str(), &translation.objects, None);
    let timed_out = tokio::time::timeout(std::time::Duration::from_millis(200), create).await;
    assert!(
        timed_out.is_err(),
        "the silent API server must hold the create"
    );
    assert_eq!(runtime.pending_names(), 0);
    assert_eq!(runtime.stored_bytes(), 0);
    let _again = runtime.reserve_create("web", 100).unwrap();
}

#[test]
fn the_unix_socket_is_never_wider_than_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docker.sock");
    std::fs::write(&path, b"stale").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for mode in [0o600, 0o660] {
            let listener = bind_unix_socket(&path, mode).unwrap();
            let metadata = std::fs::metadata(&path).unwrap();
            assert_eq!(metadata.permissions().mode() & 0o777, mode);
            assert!(std::os::unix::fs::FileTypeExt::is_socket(
                &metadata.file_type()
            ));
            let client = tokio::net::UnixStream::connect(&path).await;
            assert!(client.is_ok());
            listener.accept().await.unwrap();
        }
    });
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("docker.sock")]);
}

#[tokio::test]
async fn swarm_manager_routes_are_503_not_a_manager() {
    for (method, uri) in [
        ("GET", "/swarm"),
        ("GET", "/v1.51/swarm"),
        ("POST", "/v1.44/swarm/update"),
        ("GET", "/swarm/unlockkey"),
        ("GET", "/v1.51/nodes"),
        ("GET", "/nodes/abc"),
        ("GET", "/services"),
        ("POST", "/v1.51/services/create"),
        ("DELETE", "/services/web"),
        ("GET", "/tasks"),
        ("GET", "/secrets"),
        ("POST", "/secrets/create"),
        ("GET", "/v1.51/configs"),
        ("POST", "/configs/abc/update"),
    ] {
        let (status, headers, body) = call(method, uri).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{method} {uri}");
        assert_eq!(headers["content-type"], "application/json");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["message"], swarm::NOT_SWARM_MANAGER, "{method} {uri}");
    }
}

#[tokio::test]
async fn swarm_leave_is_503_not_part_of_a_swarm() {
    let (status, _, body) = call("POST", "/v1.51/swarm/leave?force=1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["message"], "This node is not part of a swarm");
}

#[tokio::test]
async fn plugins_are_an_empty_list_and_named_plugins_404() {
    let (status, _, body) = call("GET", "/v1.51/plugins").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "[]");
    for (method, uri, name) in [
        (
            "GET",
            "/v1.51/plugins/vieux/sshfs:latest/json",
            "vieux/sshfs:latest",
        ),
        ("DELETE", "/plugins/foo", "foo"),
        ("POST", "/plugins/foo/enable", "foo"),
        ("POST", "/v1.51/plugins/foo/set", "foo"),
    ] {
        let (status, _, body) = call(method, uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["message"], format!("plugin \"{name}\" not found"));
    }
    let (status, _, _) = call("POST", "/plugins/pull?remote=vieux/sshfs").await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
}

#[tokio::test]
async fn info_says_swarm_inactive() {
    let (_, _, body) = call("GET", "/info").await;
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["Swarm"]["LocalNodeState"], "inactive");
}

#[tokio::test]
async fn network_create_refuses_host_and_unknown_drivers() {
    for (driver, status, message) in [
        (
            "host",
            StatusCode::FORBIDDEN,
            "only one instance of \"host\" network is allowed",
        ),
        ("foo", StatusCode::NOT_FOUND, "plugin \"foo\" not found"),
    ] {
        let request = Request::post("/v1.51/networks/create")
            .header("content-type", "application/json")
            .body(Body::from(format!(r#"{{"Name":"n","Driver":"{driver}"}}"#)))
            .unwrap();
        let response = router(state()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), status, "{driver}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["message"], message);
    }
}

#[tokio::test]
async fn container_changes_is_501_not_a_missing_route() {
    let (status, _, body) = call("GET", "/v1.51/containers/web/changes").await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
    assert!(
        message(&body).contains("container changes are not supported"),
        "{body}"
    );
}

#[tokio::test]
async fn volume_create_refuses_drivers_other_than_local() {
    let request = Request::post("/v1.51/volumes/create")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"Name":"v","Driver":"nfs"}"#))
        .unwrap();
    let (status, body) = send(&router(state()), request).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(message(&body), "plugin \"nfs\" not found");
}

/// dockerd routes `DELETE /containers/{name:.*}`: the CLI's `rm --link web/db` sends the link
/// name with its slash, and an unknown one is dockerd's 404.
#[tokio::test]
async fn link_names_with_a_slash_reach_container_delete() {
    for uri in [
        "/v1.51/containers/web/db?link=1",
        "/containers//web/db?link=True",
    ] {
        let (status, _, body) = call("DELETE", uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {body}");
        assert!(body.contains("No such container: "), "{uri}: {body}");
        assert!(body.contains("web/db"), "{uri}: {body}");
    }
}

/// The value of one `podbridge_requests_total` series in the process's metrics (0 if absent).
fn requests_total(method: &str, route: &str, status: u16) -> u64 {
    let series = format!(
        "podbridge_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} "
    );
    crate::metrics::render_serve()
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |value| value.parse().unwrap())
}

#[tokio::test]
async fn requests_are_recorded_by_templated_route() {
    // Other tests share the process's metrics: counts only grow, so compare before and after.
    let cases = [
        (
            "GET",
            "/v1.51/containers/metrics-probe-id/json",
            "/containers/{id}/json",
            404,
        ),
        (
            "POST",
            "/containers/metrics-probe-id/start",
            "/containers/{id}/start",
            404,
        ),
        ("GET", "/v1.51/metrics-probe/nowhere", "unmatched", 404),
        ("GET", "/v1.12/version", "unmatched", 400),
        (
            "DELETE",
            "/containers/metrics-probe/link",
            "/containers/{name}",
            404,
        ),
    ];
    for (method, uri, route, status) in cases {
        let before = requests_total(method, route, status);
        let (answered, _, _) = call(method, uri).await;
        assert_eq!(answered.as_u16(), status, "{method} {uri}");
        assert!(
            requests_total(method, route, status) > before,
            "{method} {uri} not counted as {route} {status}"
        );
    }
    let text = crate::metrics::render_serve();
    assert!(
        !text.contains("metrics-probe"),
        "a concrete path leaked:\n{text}"
    );
    assert!(text.contains(
        "podbridge_request_duration_seconds_count{method=\"GET\",route=\"/containers/{id}/json\"}"
    ));
}

#[test]
fn unknown_methods_share_one_label() {
    let custom = axum::http::Method::from_bytes(b"FROBNICATE").unwrap();
    assert_eq!(method_label(&custom), "other");
    assert_eq!(method_label(&axum::http::Method::POST), "POST");
}

/// One Docker view over two backends: the same containers and network, created through the
/// dry-run router and described to the real router's watch caches as the real server stores
/// them, answer inspect, list and network routes with the same keys and values, but for what
/// only one backend knows.
mod one_view {
    use serde_json::{json, Value};

    use super::*;
    use crate::labels;

    async fn send(app: &Router, method: &str, uri: &str, body: &Value) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(if body.is_null() {
                String::new()
            } else {
                body.to_string()
            }))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(bytes.to_vec())),
        )
    }

    async fn get(app: &Router, uri: &str) -> Value {
        let (status, body) = send(app, "GET", uri, &Value::Null).await;
        assert_eq!(status, StatusCode::OK, "GET {uri}: {body}");
        body
    }

    /// Where two documents differ, by JSON pointer: a key only one has, keys in another order,
    /// or another value.
    fn differences(dry: &Value, real: &Value, at: &str, found: &mut Vec<String>) {
        match (dry, real) {
            (Value::Object(left), Value::Object(right)) => {
                if !left.keys().eq(right.keys()) {
                    found.push(format!(
                        "{at}: keys {:?} != {:?}",
                        left.keys().collect::<Vec<_>>(),
                        right.keys().collect::<Vec<_>>()
                    ));
                }
                for (key, value) in left {
                    if let Some(other) = right.get(key) {
                        differences(value, other, &format!("{at}/{key}"), found);
                    }
                }
            }
            (Value::Array(left), Value::Array(right)) if left.len() == right.len() => {
                for (index, (value, other)) in left.iter().zip(right).enumerate() {
                    differences(value, other, &format!("{at}/{index}"), found);
                }
            }
            _ if dry == real => {}
            _ => found.push(format!("{at}: {dry} != {real}")),
        }
    }

    /// The differences outside `backend_facts`, what only one backend can know: JSON pointers,
    /// or pointer suffixes after `*`.
    fn drift(dry: &Value, real: &Value, backend_facts: &[&str]) -> Vec<String> {
        let mut found = Vec::new();
        differences(dry, real, "", &mut found);
        found.retain(|difference| {
            let pointer = difference.split(':').next().unwrap_or_default();
            !backend_facts
                .iter()
                .any(|fact| match fact.strip_prefix('*') {
                    Some(suffix) => pointer.ends_with(suffix),
                    None => pointer == *fact,
                })
        });
        found
    }

    /// A container's spec ConfigMap as the real server writes it, from the dry run's inspect.
    fn spec(inspect: &Value, request: &Value, last_exit: Option<Value>) -> ConfigMap {
        let id = inspect["Id"].as_str().unwrap();
        // the record as create writes it: the request and its one decode
        let decoded =
            crate::api::decode::decode_create(request.to_string().as_bytes(), None, None).unwrap();
        let mut record = serde_json::to_value(crate::model::ContainerRecord::of_workload(
            &decoded.workload,
        ))
        .unwrap();
        if let Some(last_exit) = last_exit {
            record["lastExit"] = last_exit;
        }
        serde_json::from_value(json!({"metadata": {
            "name": inspect["Pod"], "namespace": "test",
            "labels": {labels::ROLE: labels::ROLE_CONTAINER_SPEC, labels::CONTAINER_ID: &id[..12]},
            "annotations": {labels::ANNOTATION_CONTAINER_ID: id,
                labels::ANNOTATION_NAME: inspect["Name"].as_str().unwrap().trim_start_matches('/'),
                labels::ANNOTATION_CREATED: inspect["Created"],
                labels::ANNOTATION_IMAGE: request["Image"]}},
            "data": {crate::runtime::record::RECORD_DATA_KEY: record.to_string()}}))
        .unwrap()
    }

    fn stored_network(network: &Value) -> ConfigMap {
        serde_json::from_value(json!({"metadata": {
            "name": format!("pb-network-{}", &network["Id"].as_str().unwrap()[..12]), "namespace": "test",
            "labels": {labels::ROLE: labels::ROLE_NETWORK},
            "annotations": {labels::ANNOTATION_OBJECT: network.to_string()}}}))
        .unwrap()
    }

    use k8s_openapi::api::core::v1::ConfigMap;

    #[tokio::test]
    async fn inspect_list_and_networks_answer_alike_from_both_backends() {
        let config = crate::config::Config::default();
        let translator = Arc::new(Translator::new(
            crate::policy_store::shared(crate::policy_store::load(&config).unwrap()),
            crate::cli::render_context(&config),
        ));
        let dry = super::super::dry_run::router(super::super::dry_run::DryRunState::new(
            translator.clone(),
        ));

        let (status, created) = send(
            &dry,
            "POST",
            "/v1.51/networks/create",
            &json!({"Name": "front", "Labels": {"tier": "web"}, "Options": {"mtu": "1400"}}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let web_request = json!({"Image": "nginx:1.27", "Entrypoint": ["/docker-entrypoint.sh"],
            "Cmd": ["nginx", "-g", "daemon off;"], "Labels": {"app": "web"}, "Env": ["A=1"],
            "ExposedPorts": {"80/tcp": {}},
            "HostConfig": {"NetworkMode": "front", "Binds": ["data:/data:ro"],
                "PortBindings": {"80/tcp": [{"HostPort": ""}]}},
            "NetworkingConfig": {"EndpointsConfig": {"front": {"Aliases": ["www"]}}}});
        let job_request = json!({"Image": "busybox", "Cmd": ["true"]});
        for (name, request) in [("web", &web_request), ("job", &job_request)] {
            let (status, body) = send(
                &dry,
                "POST",
                &format!("/v1.51/containers/create?name={name}"),
                request,
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        let (status, _) = send(&dry, "POST", "/v1.51/containers/job/start", &Value::Null).await;
        assert_eq!(status, StatusCode::NO_CONTENT);

        // The real server's caches hold the same network and containers (`job` has exited 0,
        // as the dry run says once it printed).
        let network = get(
            &dry,
            "/v1.51/networks?filters=%7B%22name%22%3A%5B%22front%22%5D%7D",
        )
        .await[0]
            .clone();
        let web = get(&dry, "/v1.51/containers/web/json").await;
        let job = get(&dry, "/v1.51/containers/job/json").await;
        let job_exit = json!({"ExitCode": 0, "StartedAt": job["State"]["StartedAt"],
            "FinishedAt": job["State"]["FinishedAt"], "OOMKilled": false});
        let real = router(AppState {
            runtime: Runtime::with_cached(
                vec![
                    stored_network(&network),
                    spec(&web, &web_request, None),
                    spec(&job, &job_request, Some(job_exit)),
                ],
                Vec::new(),
            ),
            translator,
        });

        // The gateway is where the real server publishes ports; the dry run publishes none.
        let backend_facts = ["*/Gateway"];
        let uris = [
            "/v1.51/containers/web/json",
            "/v1.51/containers/job/json",
            &format!(
                "/v1.51/containers/{}/json",
                &job["Id"].as_str().unwrap()[..8]
            ),
            "/v1.51/networks",
            "/v1.51/networks/front",
            "/v1.51/networks/bridge",
            "/v1.51/networks/none",
            &format!("/v1.51/networks/{}", &network["Id"].as_str().unwrap()[..5]),
            "/v1.51/containers/json",
            "/v1.51/containers/json?filters=%7B%22network%22%3A%5B%22front%22%5D%7D",
            "/v1.51/containers/json?all=1&filters=%7B%22name%22%3A%5B%22%5Ej%22%5D%7D",
            "/v1.51/containers/json?all=1&filters=%7B%22label%22%3A%5B%22app%3Dweb%22%5D%7D",
            "/v1.51/containers/json?filters=%7B%22status%22%3A%5B%22exited%22%5D%7D",
        ];
        for uri in uris {
            let (dry_answer, real_answer) = (get(&dry, uri).await, get(&real, uri).await);
            let drift = drift(&dry_answer, &real_answer, &backend_facts);
            assert!(drift.is_empty(), "GET {uri}:\n{}", drift.join("\n"));
        }
        // A daemon's name and description are its own; its counts are of what it holds.
        let uri = "/v1.51/info";
        let (dry_info, real_info) = (get(&dry, uri).await, get(&real, uri).await);
        let info_drift = drift(
            &dry_info,
            &real_info,
            &["/ID", "/Name", "/OperatingSystem", "/Images"],
        );
        assert!(
            info_drift.is_empty(),
            "GET {uri}:\n{}",
            info_drift.join("\n")
        );
        assert_eq!(
            (
                dry_info["Containers"].clone(),
                dry_info["ContainersStopped"].clone()
            ),
            (json!(2), json!(1))
        );
        // Lists date `Status` when they answer: compared without the clock.
        let list = |mut answer: Value| {
            for entry in answer.as_array_mut().unwrap() {
                let status = entry["Status"].as_str().unwrap_or_default();
                entry["Status"] = json!(status.split(')').next().unwrap_or_default());
            }
            answer
        };
        let uri = "/v1.51/containers/json?all=1";
        let (dry_list, real_list) = (list(get(&dry, uri).await), list(get(&real, uri).await));
        let drift = drift(&dry_list, &real_list, &backend_facts);
        assert!(drift.is_empty(), "GET {uri}:\n{}", drift.join("\n"));
        assert_eq!(dry_list.as_array().unwrap().len(), 2);

        // What both know, spelled out: Docker's answers, not the dry run's former own.
        assert_eq!(
            web["NetworkSettings"]["Networks"]["front"]["NetworkID"],
            network["Id"]
        );
        assert_eq!(
            web["NetworkSettings"]["Networks"]["front"]["Aliases"],
            json!(["www"])
        );
        assert_eq!(job["State"]["Status"], "exited");
        assert_eq!(job["Driver"], "overlay2");
        let none = get(&dry, "/v1.51/networks/none").await;
        assert_eq!(
            (none["Driver"].clone(), none["Id"].clone()),
            (
                json!("null"),
                json!(crate::runtime::objects::object_id("network", "none"))
            )
        );
        let members = get(&dry, "/v1.51/networks/front").await["Containers"].clone();
        assert_eq!(members.as_object().unwrap().len(), 1, "{members}");
        // the same refusals
        for (method, uri, body) in [
            ("DELETE", "/v1.51/networks/bridge", Value::Null),
            ("GET", "/v1.51/networks/fr", Value::Null),
            ("POST", "/v1.51/networks/create", json!({"Name": "front"})),
            (
                "POST",
                "/v1.51/networks/create",
                json!({"Name": "x", "Driver": "none"}),
            ),
            ("POST", "/v1.51/networks/create", json!({})),
            (
                "POST",
                "/v1.51/networks/front/disconnect",
                json!({"Container": "job"}),
            ),
            (
                "POST",
                "/v1.51/volumes/create",
                json!({"Name": "v", "Driver": "nfs"}),
            ),
        ] {
            let (dry_status, dry_body) = send(&dry, method, uri, &body).await;
            let (real_status, real_body) = send(&real, method, uri, &body).await;
            assert_eq!(
                (dry_status, &dry_body),
                (real_status, &real_body),
                "{method} {uri}"
            );
            assert!(dry_status.is_client_error(), "{method} {uri}: {dry_status}");
        }
    }
}
