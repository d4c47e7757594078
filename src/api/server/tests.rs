//! Router-level tests that need no cluster: `router(state).oneshot(request)`.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;

fn state() -> AppState {
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
