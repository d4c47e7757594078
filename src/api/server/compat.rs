//! The route-by-route compatibility table: every operation of the Docker Engine API (spec
//! v1.51) with what podbridge answers. `podbridge compat` prints it and README.md embeds it.
//!
//! Why it cannot drift: the table lists the spec's operations, and its tests (below) fail when
//! (1) an operation of the stored spec is missing from the table or the table names one the spec
//! lacks, (2) a row's support level disagrees with the router — every row is sent to `router()`
//! and a row marked [`Support::NotSupported`] must get the router's fallback answer (404 `page not
//! found` or 405), any other row must reach a handler — and (3) README.md's section between the
//! markers differs from [`markdown`].

use std::fmt::Write as _;

/// How far podbridge follows Docker on one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Answers as Docker does for what clients send.
    Supported,
    /// Routed, but differs from Docker in a way the note states (often Docker's own refusal).
    Partial,
    /// Not routed: the client gets the router's fallback (404 `page not found`).
    NotSupported,
}

impl Support {
    fn label(self) -> &'static str {
        match self {
            Support::Supported => "supported",
            Support::Partial => "partial",
            Support::NotSupported => "not supported",
        }
    }
}

/// One operation of the Docker API as podbridge answers it.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    /// The spec's path, parameters in braces (`/containers/{id}/json`).
    pub path: &'static str,
    pub support: Support,
    /// What differs from Docker, or what answer a client gets.
    pub note: &'static str,
}

const fn route(
    method: &'static str,
    path: &'static str,
    support: Support,
    note: &'static str,
) -> Route {
    Route {
        method,
        path,
        support,
        note,
    }
}

use Support::{NotSupported as No, Partial, Supported as Yes};

const SWARM_503: &str = "503 `This node is not a swarm manager`, as an inactive-swarm daemon";
const NOT_FOUND: &str = "404 `page not found`";

/// Every operation of the Docker Engine API v1.51, in the spec's order.
pub const ROUTES: &[Route] = &[
    route("GET", "/containers/json", Yes, "Pods podbridge manages; Docker's filters"),
    route("POST", "/containers/create", Partial, "translated to a pod by the policy chain; fields a policy refuses answer 400/403; unknown log drivers and restart policies 400 as in Docker; an image its registry does not have 404 `No such image`; `testcontainers/ryuk` is served by podbridge itself (no pod); legacy links (`HostConfig.Links`, default bridge): a missing target 400 `could not get container for X` as dockerd, resolved at start into the pod's `hostAliases` (alias, target's hostname and name) and Docker's link variables; `EndpointsConfig.Links` ignored with a warning"),
    route("GET", "/containers/{id}/json", Yes, "Docker's shape, from the stored request and the pod's status"),
    route("GET", "/containers/{id}/top", Partial, "`ps -o pid,user,args` inside the container (`ps_args` ignored); 409 for the built-in Ryuk"),
    route("GET", "/containers/{id}/logs", Partial, "from the pod's log: stdout and stderr arrive merged, framed as stdout; once podbridge deleted the pod (kill, stop past its grace), its last 2000 lines / 128 KiB"),
    route("GET", "/containers/{id}/changes", Partial, "501: a pod's filesystem changes cannot be listed"),
    route("GET", "/containers/{id}/export", No, NOT_FOUND),
    route("GET", "/containers/{id}/stats", Partial, "samples read inside the container, once a second"),
    route("POST", "/containers/{id}/resize", Yes, "through the attach session's resize stream"),
    route("POST", "/containers/{id}/start", Yes, "applies the pod (re-translated against the policy in force); a link whose target is not running 500 `Cannot link to a non running container` as dockerd"),
    route("POST", "/containers/{id}/stop", Yes, "304 when already stopped, as Docker"),
    route("POST", "/containers/{id}/restart", Yes, "recreates the pod"),
    route("POST", "/containers/{id}/kill", Yes, ""),
    route("POST", "/containers/{id}/update", Partial, "restart policy stored (the on-failure limit at once, the policy from the next start); resource changes 501: a pod cannot be resized here"),
    route("POST", "/containers/{id}/rename", Yes, ""),
    route("POST", "/containers/{id}/pause", Partial, "501: Kubernetes pods cannot be frozen"),
    route("POST", "/containers/{id}/unpause", Partial, "501: Kubernetes pods cannot be frozen"),
    route("POST", "/containers/{id}/attach", Partial, "hijacked stream of the pod's log (stdout and stderr merged); stdin through `pods/attach`; `stream=0` replays and ends"),
    route("GET", "/containers/{id}/attach/ws", No, NOT_FOUND),
    route("POST", "/containers/{id}/wait", Yes, "headers at once, body when the condition holds"),
    route("DELETE", "/containers/{id}", Partial, "`link=true` removes a legacy link (`/self/alias`) as dockerd; a running container keeps the link's hosts entry and variables until its next start (a pod cannot change them)"),
    route("HEAD", "/containers/{id}/archive", Yes, "`docker cp`; bodies capped by `max_archive_bytes`"),
    route("GET", "/containers/{id}/archive", Partial, "`docker cp`; bodies capped by `max_archive_bytes`; 409 once the container exited (its filesystem went with the pod)"),
    route("PUT", "/containers/{id}/archive", Yes, "`docker cp`; before start, kept in a ConfigMap"),
    route("POST", "/containers/prune", Yes, "SpaceReclaimed is always 0"),
    route("GET", "/images/json", Partial, "images podbridge has pulled, used or built; `Size` of a built image is its layers as the builder stored them, of a pulled one the registry's (compressed) layer sizes once its config was read, else 0"),
    route("POST", "/build", Partial, "classic builder only (BuildKit `version=2` 400): a builder pod (buildah) shaped by the policy, pushed to `build_registry`; no remote contexts; 501 while `build_registry` is unset"),
    route("POST", "/build/prune", Partial, "nothing to prune (the layer cache lives in the build registry): empty answer"),
    route("POST", "/images/create", Partial, "pull: the manifest is looked up, the cluster pulls; `testcontainers/ryuk` with the built-in Ryuk needs no registry; import (no `fromImage`) 501"),
    route("GET", "/images/{name}/json", Partial, "only images podbridge has seen; config from the registry when reachable, or as built; `Size` as in `/images/json`"),
    route("GET", "/images/{name}/history", Partial, "one synthetic layer"),
    route("POST", "/images/{name}/push", Partial, "a builder pod pushes a built image (or a pulled one, from its registry) with `X-Registry-Auth` and `registry_ca_files`; needs `build_registry` (else 501); `Size` 0"),
    route("POST", "/images/{name}/tag", Partial, "records the new reference only (a built image's tags are kept in its record)"),
    route("DELETE", "/images/{name}", Partial, "forgets the reference (a built image: its tag, or its record with the last tag); the registry keeps the content; 409 while a container uses it"),
    route("GET", "/images/search", No, NOT_FOUND),
    route("POST", "/images/prune", Partial, "nothing to prune: empty answer"),
    route("POST", "/auth", Yes, "checked against the registry when podbridge may contact it"),
    route("GET", "/info", Partial, "counts from the namespace; CPU, memory and kernel of podbridge's host; storage and cgroup fields fixed; swarm `inactive`"),
    route("GET", "/version", Yes, "engine 28.3.0, API 1.51"),
    route("GET", "/_ping", Yes, "503 until the watch caches are synced"),
    route("HEAD", "/_ping", Yes, "503 until the watch caches are synced"),
    route("POST", "/commit", Partial, "501: podbridge cannot commit containers"),
    route("GET", "/events", Yes, "derived from the watch; Docker's filters, `since`/`until`"),
    route("GET", "/system/df", Partial, "volumes only, size -1"),
    route("GET", "/images/{name}/get", Partial, "a builder pod pulls the image (built or loaded: from `build_registry`; pulled: from its registry) and streams Docker's archive format (`manifest.json`, config and uncompressed layers by digest; no legacy `repositories`); `platform` ignored; needs `build_registry` (else 501)"),
    route("GET", "/images/get", Partial, "as `/images/{name}/get` for every `names` (one entry per image, with the tags it was asked by), at most 64"),
    route("POST", "/images/load", Partial, "a builder pod pushes each image of a `docker save` archive (`manifest.json`; at most 64 images, `max_archive_bytes`) to `build_registry`, recorded as built images; `Loaded image: …` lines; no progress bars (`quiet` ignored); needs `build_registry` (else 501)"),
    route("POST", "/containers/{id}/exec", Yes, "runs through `pods/exec`; `User` and `WorkingDir` applied inside the container (setpriv or su; a missing directory is made)"),
    route("POST", "/exec/{id}/start", Yes, "hijacked, streamed or detached; the start's `Tty` decides the framing, as in Docker"),
    route("POST", "/exec/{id}/resize", Yes, "TTY execs only"),
    route("GET", "/exec/{id}/json", Yes, ""),
    route("GET", "/volumes", Yes, "PersistentVolumeClaims (or ConfigMap records with `named_volumes = \"emptyDir\"`)"),
    route("POST", "/volumes/create", Partial, "driver `local` only; another answers 404 `plugin \"X\" not found` as Docker without the plugin"),
    route("GET", "/volumes/{name}", Yes, ""),
    route("PUT", "/volumes/{name}", No, "405: cluster volumes are a swarm feature"),
    route("DELETE", "/volumes/{name}", Yes, ""),
    route("POST", "/volumes/prune", Yes, "API 1.42+: anonymous only unless `all=true`; before 1.42 every unused volume"),
    route("GET", "/networks", Yes, "labelled ConfigMaps; the cluster network is flat"),
    route("GET", "/networks/{id}", Yes, ""),
    route("DELETE", "/networks/{id}", Yes, ""),
    route("POST", "/networks/create", Partial, "aliases become Services; `host`, `null`, `overlay` and unknown drivers refused as Docker"),
    route("POST", "/networks/{id}/connect", Yes, "the pod is re-translated so alias Services follow"),
    route("POST", "/networks/{id}/disconnect", Yes, ""),
    route("POST", "/networks/prune", Yes, ""),
    route("GET", "/plugins", Yes, "always empty"),
    route("GET", "/plugins/privileges", Partial, "501: plugins cannot be installed"),
    route("POST", "/plugins/pull", Partial, "501: plugins cannot be installed"),
    route("GET", "/plugins/{name}/json", Yes, "404 `plugin \"X\" not found`, as a daemon without plugins"),
    route("DELETE", "/plugins/{name}", Yes, "404 `plugin \"X\" not found`, as a daemon without plugins"),
    route("POST", "/plugins/{name}/enable", Yes, "404 `plugin \"X\" not found`, as a daemon without plugins"),
    route("POST", "/plugins/{name}/disable", Yes, "404 `plugin \"X\" not found`, as a daemon without plugins"),
    route("POST", "/plugins/{name}/upgrade", Yes, "404 `plugin \"X\" not found`, as a daemon without plugins"),
    route("POST", "/plugins/create", Partial, "501: plugins cannot be installed"),
    route("POST", "/plugins/{name}/push", Yes, "404 `plugin \"X\" not found`, as a daemon without plugins"),
    route("POST", "/plugins/{name}/set", Yes, "404 `plugin \"X\" not found`, as a daemon without plugins"),
    route("GET", "/nodes", Yes, SWARM_503),
    route("GET", "/nodes/{id}", Yes, SWARM_503),
    route("DELETE", "/nodes/{id}", Yes, SWARM_503),
    route("POST", "/nodes/{id}/update", Yes, SWARM_503),
    route("GET", "/swarm", Yes, SWARM_503),
    route("POST", "/swarm/init", Partial, "501: podbridge cannot become a swarm node"),
    route("POST", "/swarm/join", Partial, "501: podbridge cannot become a swarm node"),
    route("POST", "/swarm/leave", Yes, "503 `This node is not part of a swarm`"),
    route("POST", "/swarm/update", Yes, SWARM_503),
    route("GET", "/swarm/unlockkey", Yes, SWARM_503),
    route("POST", "/swarm/unlock", Yes, "503 `This node is not part of a swarm`"),
    route("GET", "/services", Yes, SWARM_503),
    route("POST", "/services/create", Yes, SWARM_503),
    route("GET", "/services/{id}", Yes, SWARM_503),
    route("DELETE", "/services/{id}", Yes, SWARM_503),
    route("POST", "/services/{id}/update", Yes, SWARM_503),
    route("GET", "/services/{id}/logs", Yes, SWARM_503),
    route("GET", "/tasks", Yes, SWARM_503),
    route("GET", "/tasks/{id}", Yes, SWARM_503),
    route("GET", "/tasks/{id}/logs", Yes, SWARM_503),
    route("GET", "/secrets", Yes, SWARM_503),
    route("POST", "/secrets/create", Yes, SWARM_503),
    route("GET", "/secrets/{id}", Yes, SWARM_503),
    route("DELETE", "/secrets/{id}", Yes, SWARM_503),
    route("POST", "/secrets/{id}/update", Yes, SWARM_503),
    route("GET", "/configs", Yes, SWARM_503),
    route("POST", "/configs/create", Yes, SWARM_503),
    route("GET", "/configs/{id}", Yes, SWARM_503),
    route("DELETE", "/configs/{id}", Yes, SWARM_503),
    route("POST", "/configs/{id}/update", Yes, SWARM_503),
    route("GET", "/distribution/{name}/json", Partial, "501: registry lookups are not offered"),
    route("POST", "/session", No, "404 `page not found`, as a daemon without BuildKit: buildx and compose fall back to the classic builder's request or stop with their own message"),
];

/// The table's row for a request, if the spec has that operation: `{name}` of an image spans
/// segments (`library/redis`), any other parameter one.
pub fn route_of(method: &str, path: &str) -> Option<&'static Route> {
    fn matches(template: &[&str], path: &[&str]) -> bool {
        match (template.split_first(), path.split_first()) {
            (None, None) => true,
            (Some((&"{name}", rest)), Some((segment, _))) if !segment.is_empty() => {
                (1..=path.len()).any(|taken| matches(rest, &path[taken..]))
            }
            (Some((part, rest)), Some((segment, remaining))) => {
                let parameter = part.starts_with('{') && !segment.is_empty();
                (parameter || part == segment) && matches(rest, remaining)
            }
            _ => false,
        }
    }
    let path: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    ROUTES.iter().find(|route| {
        route.method.eq_ignore_ascii_case(method)
            && matches(&route.path.split('/').collect::<Vec<_>>(), &path)
    })
}

/// README.md's markers around the generated table.
pub const BEGIN_MARKER: &str =
    "<!-- compat:begin (generated by `podbridge compat`; do not edit) -->";
pub const END_MARKER: &str = "<!-- compat:end -->";

/// The table as Markdown, between (and including) the README markers.
pub fn markdown() -> String {
    let mut out = String::new();
    out.push_str(BEGIN_MARKER);
    out.push_str("\n| Method | Path | Support | Notes |\n|---|---|---|---|\n");
    for route in ROUTES {
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} |",
            route.method,
            route.path,
            route.support.label(),
            route.note.replace('|', "\\|")
        );
    }
    out.push_str(END_MARKER);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    /// The Docker Engine API spec the table follows: the workplace's `shared/` folder beside the
    /// repository (where CI lays it too).
    const SPEC: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/docker-engine-api/v1.51.yaml"
    );

    #[test]
    fn table_lists_every_operation_of_the_spec() {
        let text = std::fs::read_to_string(SPEC)
            .unwrap_or_else(|error| panic!("reading the Docker API spec {SPEC}: {error}"));
        let spec: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let mut operations = BTreeSet::new();
        for (path, item) in spec["paths"].as_mapping().unwrap() {
            for method in item.as_mapping().unwrap().keys() {
                let method = method.as_str().unwrap().to_uppercase();
                if ["GET", "POST", "PUT", "DELETE", "HEAD"].contains(&method.as_str()) {
                    operations.insert((method, path.as_str().unwrap().to_string()));
                }
            }
        }
        let table: BTreeSet<_> = ROUTES
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        assert_eq!(table.len(), ROUTES.len(), "a route is listed twice");
        let missing: Vec<_> = operations.difference(&table).collect();
        let extra: Vec<_> = table.difference(&operations).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "missing from the table: {missing:?}; not in the spec: {extra:?}"
        );
    }

    /// Whether the router's fallback answered: axum's 405 for a known path, or `page not found`.
    async fn unrouted(method: &str, path: &str) -> bool {
        let uri = path
            .split('/')
            .map(|part| if part.starts_with('{') { "x" } else { part })
            .collect::<Vec<_>>()
            .join("/");
        let request = Request::builder()
            .method(method)
            .uri(&uri)
            .body(Body::empty())
            .unwrap();
        let router = super::super::router(super::super::tests::state());
        let response =
            match tokio::time::timeout(std::time::Duration::from_secs(5), router.oneshot(request))
                .await
            {
                Ok(response) => response.unwrap(),
                // Only a handler waits; the fallback answers at once.
                Err(_) => return false,
            };
        match response.status() {
            StatusCode::METHOD_NOT_ALLOWED => true,
            StatusCode::NOT_FOUND => {
                let body = response.into_body().collect().await.unwrap().to_bytes();
                String::from_utf8_lossy(&body).contains("\"page not found")
            }
            _ => false,
        }
    }

    #[tokio::test]
    async fn support_levels_agree_with_the_router() {
        let mut wrong = Vec::new();
        for route in ROUTES {
            let unrouted = unrouted(route.method, route.path).await;
            if unrouted != (route.support == Support::NotSupported) {
                wrong.push(format!(
                    "{} {} is {} but the router {}",
                    route.method,
                    route.path,
                    route.support.label(),
                    if unrouted {
                        "does not serve it"
                    } else {
                        "serves it"
                    }
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn requests_find_their_row() {
        let path = |method: &str, uri: &str| route_of(method, uri).map(|route| route.path);
        assert_eq!(
            path("GET", "/containers/abc/json"),
            Some("/containers/{id}/json")
        );
        assert_eq!(path("get", "/containers/json"), Some("/containers/json"));
        assert_eq!(
            path("GET", "/images/library/redis/json"),
            Some("/images/{name}/json")
        );
        assert_eq!(
            path("GET", "/containers/abc/export"),
            Some("/containers/{id}/export")
        );
        assert_eq!(path("POST", "/containers/abc/json"), None);
        assert_eq!(path("GET", "/nothing/here"), None);
        assert_eq!(path("GET", "/containers//json"), None);
    }

    #[test]
    fn readme_table_is_the_generated_one() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find(BEGIN_MARKER)
            .expect("README.md has no compat:begin marker");
        let end = readme[start..]
            .find(END_MARKER)
            .map(|end| start + end + END_MARKER.len())
            .expect("README.md has no compat:end marker");
        let generated = markdown();
        assert!(
            readme[start..end] == generated[..generated.len() - 1],
            "README.md's compatibility table is stale; regenerate it with \
             `cargo run -- compat` and paste the output over the section between the markers"
        );
    }
}
