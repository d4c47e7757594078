//! System endpoints: `_ping`, `version`, `info`, `events`, `system/df`, `auth`.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::extract::{labels_match, parse_filters, query_time, DockerJson, Query};
use super::{AppState, API_VERSION, ENGINE_VERSION, MIN_API_VERSION};
use crate::api::error::{ApiError, Result};
use crate::runtime::events::Event;
use crate::runtime::registry::{Credentials, RegistryError};

/// `_ping` as Docker answers it, with the headers Go clients read; 503 without a body until
/// `ready` (the dry-run server is always ready).
pub(super) fn ping_response(ready: bool, body: &'static str) -> Response {
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = (status, if ready { body } else { "" }).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert("Builder-Version", HeaderValue::from_static("1"));
    headers.insert("Swarm", HeaderValue::from_static("inactive"));
    response
}

/// `GET /_ping`: `OK` once the watch caches are synced, 503 before.
pub async fn ping(State(state): State<AppState>) -> Response {
    ping_response(state.runtime.is_ready(), "OK")
}

pub async fn ping_head(State(state): State<AppState>) -> Response {
    ping_response(state.runtime.is_ready(), "")
}

pub(super) fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub async fn version() -> Json<serde_json::Value> {
    let details = json!({"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux", "Arch": arch(),
        "GitCommit": "podbridge", "GoVersion": "go1.24", "KernelVersion": kernel_version(), "Experimental": "false",
        "BuildTime": "2026-01-01T00:00:00.000000000+00:00"});
    Json(json!({
        "Platform": {"Name": "podbridge (Docker Engine API on Kubernetes)"},
        "Components": [{"Name": "Engine", "Version": ENGINE_VERSION, "Details": details}],
        "Version": ENGINE_VERSION, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "podbridge", "GoVersion": "go1.24", "Os": "linux", "Arch": arch(),
        "KernelVersion": kernel_version(), "BuildTime": "2026-01-01T00:00:00.000000000+00:00",
    }))
}

fn mem_total() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<i64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(8 << 30)
}

/// What `GET /info` says of a daemon: who it is and how many containers it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonFacts {
    pub id: String,
    pub name: String,
    pub operating_system: String,
    pub containers: usize,
    pub running: usize,
    pub stopped: usize,
    pub images: usize,
}

impl DaemonFacts {
    /// Counts of `states` (running, exited or dead).
    pub fn count(
        &mut self,
        states: impl IntoIterator<Item = crate::runtime::state::ContainerState>,
    ) {
        for state in states {
            self.containers += 1;
            self.running += usize::from(state.running);
            self.stopped += usize::from(state.is_exited());
        }
    }
}

/// `GET /info` of a daemon; CPU, memory and kernel are podbridge's host's. Shared with the
/// dry-run server.
pub fn info_json(daemon: &DaemonFacts) -> serde_json::Value {
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    json!({
        "ID": daemon.id, "Name": daemon.name,
        "ServerVersion": ENGINE_VERSION, "OperatingSystem": daemon.operating_system,
        "OSType": "linux", "OSVersion": "", "Architecture": std::env::consts::ARCH, "NCPU": ncpu, "MemTotal": mem_total(),
        "KernelVersion": kernel_version(), "IndexServerAddress": "https://index.docker.io/v1/",
        "DockerRootDir": "/var/lib/docker", "Driver": "overlay2", "DriverStatus": [], "Labels": [],
        "SecurityOptions": [], "Runtimes": {"runc": {"path": "runc"}}, "DefaultRuntime": "runc",
        "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "", "ControlAvailable": false},
        "Containers": daemon.containers, "ContainersRunning": daemon.running, "ContainersPaused": 0,
        "ContainersStopped": daemon.stopped, "Images": daemon.images, "Debug": false,
        "LoggingDriver": "json-file", "CgroupDriver": "systemd", "CgroupVersion": "2",
        "Plugins": {"Volume": ["local"], "Network": ["bridge"], "Log": ["json-file"]},
        "RegistryConfig": {"IndexConfigs": {}, "InsecureRegistryCIDRs": [], "Mirrors": []},
        "ExperimentalBuild": false, "HttpProxy": "", "HttpsProxy": "", "NoProxy": "", "Warnings": [],
    })
}

pub async fn info(State(state): State<AppState>) -> Json<serde_json::Value> {
    let runtime = &state.runtime;
    let mut daemon = DaemonFacts {
        id: format!("podbridge-{}", runtime.instance),
        name: format!("podbridge-{}", runtime.namespace),
        operating_system: format!("Kubernetes namespace {}", runtime.namespace),
        containers: 0,
        running: 0,
        stopped: 0,
        images: runtime.images().len(),
    };
    daemon.count(runtime.containers().into_iter().map(|view| view.state));
    Json(info_json(&daemon))
}

/// `GET /events`: NDJSON of events derived from the watch, filtered like Docker: the kept ones
/// from `since` on, then live ones until `until` (or until the client goes).
pub async fn events(State(state): State<AppState>, query: Query) -> Result<Response> {
    let filters = parse_filters(query.get("filters"))?;
    let since = query_time(&query, "since")?;
    let until = query_time(&query, "until")?;
    let permit = state.runtime.stream_permit()?;
    let (past, mut receiver) = state.runtime.subscribe_events();
    let in_window = move |event: &Event| {
        since.is_none_or(|since| event.time_nano >= since)
            && until.is_none_or(|until| event.time_nano <= until)
    };
    // Most clients filter by nothing (the CLI) or by a label or two (testcontainers, compose):
    // the JSON is parsed again only when a filter must look inside.
    let wanted = move |event: &Event| filters.is_empty() || event_matches(&event.value(), &filters);
    let line = |event: &Event| {
        let mut line = String::with_capacity(event.json.len() + 1);
        line.push_str(&event.json);
        line.push('\n');
        axum::body::Bytes::from(line)
    };
    let stream = async_stream::stream! {
        let _permit = permit;
        if since.is_some() {
            for event in past.iter().filter(|e| in_window(e) && wanted(e)) {
                yield Ok::<_, std::convert::Infallible>(line(event));
            }
        }
        let now = jiff::Timestamp::now().as_nanosecond() as i64;
        let deadline = until.map(|until| {
            let wait = u64::try_from(until.saturating_sub(now)).unwrap_or(0);
            crate::runtime::deadline_after(std::time::Duration::from_nanos(wait))
        });
        loop {
            let next = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, receiver.recv()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
                None => receiver.recv().await,
            };
            match next {
                Ok(event) => {
                    if wanted(&event) {
                        yield Ok(line(&event));
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
    };
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

fn event_matches(event: &serde_json::Value, filters: &HashMap<String, Vec<String>>) -> bool {
    let attributes = event["Actor"]["Attributes"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    filters.iter().all(|(key, values)| {
        values.is_empty()
            || match key.as_str() {
                "type" => values.iter().any(|v| event["Type"].as_str() == Some(v)),
                "event" => values.iter().any(|v| {
                    event["Action"]
                        .as_str()
                        .is_some_and(|a| a == v || a.starts_with(&format!("{v}:")))
                }),
                "label" => labels_match(&attributes, values),
                "container" => values.iter().any(|v| {
                    event["Actor"]["ID"]
                        .as_str()
                        .is_some_and(|id| id.starts_with(v.as_str()))
                        || attributes.get("name").and_then(|n| n.as_str()) == Some(v)
                }),
                "image" => values.iter().any(|v| {
                    attributes.get("image").and_then(|n| n.as_str()) == Some(v)
                        || (event["Type"] == "image"
                            && (event["Actor"]["ID"].as_str() == Some(v)
                                || attributes.get("name").and_then(|n| n.as_str()) == Some(v)))
                }),
                "network" | "volume" => values.iter().any(|v| {
                    event["Type"].as_str() == Some(key.as_str())
                        && (event["Actor"]["ID"]
                            .as_str()
                            .is_some_and(|id| id.starts_with(v.as_str()))
                            || attributes.get("name").and_then(|n| n.as_str()) == Some(v))
                }),
                _ => true,
            }
    })
}

/// `system df`: only volumes are listed (size unknown, -1; reference counts real).
pub async fn disk_usage(State(state): State<AppState>) -> Json<serde_json::Value> {
    let volumes: Vec<serde_json::Value> = state
        .runtime
        .volumes()
        .into_iter()
        .map(|mut volume| {
            let users = volume["Name"]
                .as_str()
                .map(|name| state.runtime.volume_users(name).len())
                .unwrap_or(0);
            volume["UsageData"] = json!({"Size": -1, "RefCount": users});
            volume
        })
        .collect();
    Json(
        json!({"LayersSize": 0, "Images": [], "Containers": [], "Volumes": volumes, "BuildCache": []}),
    )
}

/// `POST /auth` (`docker login`): the credentials are checked against the registry when
/// podbridge may contact it; the client keeps them and sends them with each pull.
pub async fn auth(
    State(state): State<AppState>,
    DockerJson(body): DockerJson<AuthBody>,
) -> Result<Json<serde_json::Value>> {
    let credentials = Credentials {
        username: body.username,
        password: body.password,
    };
    match state
        .runtime
        .registry
        .login(&body.serveraddress, &credentials)
        .await
    {
        Ok(_) => Ok(Json(
            json!({"Status": "Login Succeeded", "IdentityToken": ""}),
        )),
        Err(error @ RegistryError::LoginFailed { .. }) => {
            Err(ApiError::Unauthorized(error.to_string()))
        }
        Err(error) => Err(ApiError::Internal(error.to_string())),
    }
}

/// The body of `POST /auth`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct AuthBody {
    username: String,
    password: String,
    serveraddress: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_filters_match_their_type_only() {
        let event = crate::runtime::events::object_event(
            "volume",
            "create",
            "data",
            crate::runtime::events::named("data", &[("driver", "local")]),
        );
        let filters = |k: &str, v: &str| HashMap::from([(k.to_owned(), vec![v.to_owned()])]);
        assert!(event_matches(&event, &filters("volume", "data")));
        assert!(event_matches(&event, &filters("type", "volume")));
        assert!(!event_matches(&event, &filters("network", "data")));
        assert!(!event_matches(&event, &filters("volume", "other")));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn query(key: &str, value: &str) -> HashMap<String, String> {
            HashMap::from([(key.to_owned(), value.to_owned())])
        }

        fn event_time(
            query: &HashMap<String, String>,
            key: &str,
        ) -> Result<Option<i64>, crate::api::error::ApiError> {
            crate::api::server::extract::query_time(query, key)
        }

        proptest! {
            #![proptest_config(crate::proptest_cases::config(512))]

            #[test]
            fn event_times_never_panic(raw in any::<String>(), shaped in "-?[0-9]{0,22}(\\.[0-9a-z]{0,12})?") {
                for raw in [raw, shaped] {
                    let _ = event_time(&query("since", &raw), "since");
                }
            }

            #[test]
            fn event_times_are_monotone(a in any::<i64>(), b in any::<i64>(), fa in 0u32..1_000_000_000, fb in 0u32..1_000_000_000) {
                // Times outside 64-bit nanoseconds are refused; the others keep their order.
                let at = |seconds: i64, fraction: u32| {
                    event_time(&query("since", &format!("{seconds}.{fraction:09}")), "since")
                        .ok()
                        .flatten()
                };
                if let (true, Some(x), Some(y)) = ((a, fa) <= (b, fb) && a >= 0, at(a, fa), at(b, fb)) {
                    prop_assert!(x <= y);
                }
            }

            #[test]
            fn filters_never_panic(raw in any::<String>(), key in "[a-z]{1,6}", value in any::<String>()) {
                let _ = parse_filters(Some(&raw));
                let go = serde_json::json!({ key.clone(): { value.clone(): true } }).to_string();
                let listed = serde_json::json!({ key.clone(): [value.clone()] }).to_string();
                for encoded in [go, listed] {
                    let filters = parse_filters(Some(&encoded)).unwrap();
                    prop_assert_eq!(&filters[&key], &vec![value.clone()]);
                }
            }
        }
    }
}
