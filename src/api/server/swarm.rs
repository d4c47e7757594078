//! Swarm and plugin routes, answered as a Docker daemon that is not in a swarm and has no plugins
//! answers them, so clients that probe (docker-py's `leave_swarm(force=True)`, `docker info`,
//! `docker plugin ls`) see the errors they handle instead of a 404 for the route itself. Shared by
//! the cluster router and the dry-run router.

use axum::extract::Path;
use axum::http::Method;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::api::error::ApiError;

/// Docker's answer (503) to manager-only swarm routes on a node whose swarm state is `inactive`.
pub const NOT_SWARM_MANAGER: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \
                                     \"docker swarm join\" to connect this node to swarm and try again.";

/// Docker's answer (503) to `swarm/leave` and `swarm/unlock` outside a swarm.
pub const NOT_IN_SWARM: &str = "This node is not part of a swarm";

/// The swarm and plugin routes (spec v1.51: `/swarm*`, `/nodes*`, `/services*`, `/tasks*`,
/// `/secrets*`, `/configs*`, `/plugins*`), for any router state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new()
        .route("/swarm", get(not_swarm_manager))
        .route("/swarm/init", post(swarm_unsupported))
        .route("/swarm/join", post(swarm_unsupported))
        .route("/swarm/leave", post(not_in_swarm))
        .route("/swarm/update", post(not_swarm_manager))
        .route("/swarm/unlockkey", get(not_swarm_manager))
        .route("/swarm/unlock", post(not_in_swarm))
        .route("/tasks", get(not_swarm_manager))
        .route("/tasks/{id}", get(not_swarm_manager))
        .route("/tasks/{id}/logs", get(not_swarm_manager))
        .route("/services/{id}/logs", get(not_swarm_manager))
        .route("/plugins", get(plugin_list))
        .route(
            "/plugins/{*rest}",
            get(plugin_operation)
                .post(plugin_operation)
                .delete(plugin_operation),
        );
    // The swarm's object kinds share one shape: list, inspect, remove, update (and create,
    // but for nodes, which join instead).
    for kind in ["nodes", "services", "secrets", "configs"] {
        router = router
            .route(&format!("/{kind}"), get(not_swarm_manager))
            .route(
                &format!("/{kind}/{{id}}"),
                get(not_swarm_manager).delete(not_swarm_manager),
            )
            .route(&format!("/{kind}/{{id}}/update"), post(not_swarm_manager));
        if kind != "nodes" {
            router = router.route(&format!("/{kind}/create"), post(not_swarm_manager));
        }
    }
    router
}

async fn not_swarm_manager() -> ApiError {
    ApiError::SwarmInactive(NOT_SWARM_MANAGER.into())
}

async fn not_in_swarm() -> ApiError {
    ApiError::SwarmInactive(NOT_IN_SWARM.into())
}

/// `swarm init`/`join` would succeed on Docker; podbridge cannot become a swarm node.
async fn swarm_unsupported() -> ApiError {
    ApiError::NotImplemented(
        "swarm mode is not supported by podbridge: containers run as Kubernetes pods".into(),
    )
}

async fn plugin_list() -> Json<Value> {
    Json(json!([]))
}

/// `/plugins/{name}/{operation}` (names may hold `/`), `DELETE /plugins/{name}`, and the routes
/// that would install a plugin (`pull`, `create`, `privileges`).
async fn plugin_operation(method: Method, Path(rest): Path<String>) -> ApiError {
    if matches!(rest.as_str(), "pull" | "create" | "privileges") {
        return ApiError::NotImplemented(format!(
            "plugins are not supported by podbridge: /plugins/{rest} cannot install one"
        ));
    }
    let name = if method == Method::DELETE {
        Some(rest.as_str())
    } else {
        let operations: &[&str] = if method == Method::GET {
            &["json"]
        } else {
            &["enable", "disable", "upgrade", "push", "set"]
        };
        rest.rsplit_once('/')
            .filter(|(_, operation)| operations.contains(operation))
            .map(|(name, _)| name)
    };
    match name.filter(|name| !name.is_empty()) {
        Some(name) => plugin_not_found(name),
        None => ApiError::NotFound(format!("page not found: /plugins/{rest}")),
    }
}

/// Docker's 404 for a plugin it does not have; also its answer to an unknown network driver.
pub fn plugin_not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("plugin \"{name}\" not found"))
}
