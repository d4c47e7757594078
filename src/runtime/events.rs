//! Docker events derived from the watch, and the reconciler that performs auto-remove.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug_span, info, warn, Instrument};

use super::{ContainerView, Runtime};

/// How long auto-remove waits for attached clients to drain a finished container's output.
const ATTACH_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Events kept for `/events?since=`: dockerd keeps its last 256 in memory, and so many are all a
/// client can count on; more would only hold on to removed containers' events.
pub const HISTORY: usize = 256;

/// One emitted event, kept as its JSON line. One allocation per event, not a tree of small
/// ones: the history outlives the containers it tells of, and a tree's many small allocations,
/// made amid a burst of watch objects, pinned the allocator's pages after the burst was freed.
#[derive(Debug)]
pub struct Event {
    /// `timeNano`, for `since`/`until`.
    pub time_nano: i64,
    /// The compact JSON, as `/events` sends it (without the newline).
    pub json: Box<str>,
}

impl Event {
    pub fn new(value: &serde_json::Value) -> Self {
        Event {
            time_nano: value["timeNano"].as_i64().unwrap_or_default(),
            json: value.to_string().into_boxed_str(),
        }
    }

    /// The event as JSON again, for filters.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(&self.json).unwrap_or_default()
    }
}

/// A non-container Docker event: `network`, `volume` or `image`, about the object `id`.
pub fn object_event(
    kind: &str,
    action: &str,
    id: &str,
    attributes: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let now = jiff::Timestamp::now();
    serde_json::json!({
        "Type": kind, "Action": action,
        "Actor": {"ID": id, "Attributes": attributes},
        "scope": "local", "time": now.as_second(), "timeNano": now.as_nanosecond() as i64,
    })
}

/// `{"name": name}` plus more pairs, the attributes of most object events.
pub fn named(name: &str, extra: &[(&str, &str)]) -> serde_json::Map<String, serde_json::Value> {
    let mut attributes = serde_json::Map::new();
    attributes.insert("name".into(), name.into());
    for (key, value) in extra {
        attributes.insert((*key).into(), (*value).into());
    }
    attributes
}

/// A Docker event (1.51 shape, with the legacy `status`/`id`/`from`).
pub fn container_event(
    view: &ContainerView,
    action: &str,
    extra: &[(&str, String)],
) -> serde_json::Value {
    let mut attributes = view.docker_labels();
    attributes.insert("image".into(), view.image.clone().into());
    attributes.insert("name".into(), view.name.clone().into());
    for (key, value) in extra {
        attributes.insert(key.to_string(), value.clone().into());
    }
    let now = jiff::Timestamp::now();
    serde_json::json!({
        "status": action, "id": view.id, "from": view.image,
        "Type": "container", "Action": action,
        "Actor": {"ID": view.id, "Attributes": attributes},
        "scope": "local", "time": now.as_second(), "timeNano": now.as_nanosecond() as i64,
    })
}

struct Seen {
    started: bool,
    health: Option<&'static str>,
    exit_key: Option<String>,
    view: ContainerView,
}

/// Diffs the container views on every watch change: emits create/start/die/destroy/health
/// events and removes exited auto-remove containers once their attach streams are done.
pub async fn reconcile(runtime: Arc<Runtime>) {
    let mut changes = runtime.subscribe_changes();
    let mut seen: HashMap<String, Seen> = HashMap::new();
    // Networks and volumes by id → name: their create/destroy events come from the same watch.
    let mut networks: HashMap<String, String> = HashMap::new();
    let mut volumes: HashMap<String, String> = HashMap::new();
    let mut first = true;
    let removing: Arc<parking_lot::Mutex<HashSet<String>>> = Arc::default();
    loop {
        changes.borrow_and_update();
        let views = runtime.containers();
        runtime.sync_ports(&views);
        runtime.sync_ryuks(&views);
        let mut next = HashMap::new();
        for view in views {
            let started = view.state.running && view.state.main_started;
            let current = Seen {
                started,
                health: view.state.health,
                exit_key: view.state.exit_key.clone(),
                view: view.clone(),
            };
            if !first {
                match seen.get(&view.id) {
                    None => {
                        runtime.emit(container_event(&view, "create", &[]));
                        if started {
                            runtime.emit(container_event(&view, "start", &[]));
                        }
                    }
                    Some(before) => {
                        if started && !before.started {
                            runtime.emit(container_event(&view, "start", &[]));
                        }
                        if view.state.is_exited() && before.exit_key != view.state.exit_key {
                            // A short run can end between two watch events: it still started.
                            if !before.started && view.state.started_at != super::state::ZERO_TIME {
                                runtime.emit(container_event(&view, "start", &[]));
                            }
                            runtime.emit(container_event(
                                &view,
                                "die",
                                &[("exitCode", view.state.exit_code.to_string())],
                            ));
                        }
                        if view.state.health != before.health {
                            if let Some(health) = view.state.health {
                                runtime.emit(container_event(
                                    &view,
                                    &format!("health_status: {health}"),
                                    &[],
                                ));
                            }
                        }
                    }
                }
            }
            // (a container podbridge is removing loses its pod first: not vanished)
            if let Some(exit) = seen
                .get(&view.id)
                .and_then(|before| vanished_exit(&before.view, &view))
                .filter(|_| runtime.removed_exit(&view.id).is_none())
            {
                spawn_once(
                    &removing,
                    &view.id,
                    record_vanished(runtime.clone(), view.clone(), exit),
                );
            }
            if let Some(pod) = view
                .pod
                .clone()
                .filter(|pod| main_exited_before_copy_back(pod))
            {
                let (runtime, id, record) = (runtime.clone(), view.id.clone(), view.record.clone());
                spawn_once(&removing, &view.id, async move {
                    runtime.copy_binds_back(&id, &record, &pod).await
                });
            }
            if view.state.status == "restarting" && view.retries_exhausted() {
                spawn_once(&removing, &view.id, give_up(runtime.clone(), view.clone()));
            }
            if view.auto_remove() && view.state.is_exited() && view.pod.is_some() {
                spawn_once(
                    &removing,
                    &view.id,
                    auto_remove(runtime.clone(), view.clone()),
                );
            }
            next.insert(view.id.clone(), current);
        }
        if !first {
            for (id, before) in &seen {
                if !next.contains_key(id) {
                    runtime.emit(container_event(&before.view, "destroy", &[]));
                    runtime.forget_container(id);
                }
            }
        }
        seen = next;
        let network_now = runtime.network_names();
        let volume_now = runtime.volume_names();
        if !first {
            diff_objects(&runtime, "network", &networks, &network_now);
            diff_objects(&runtime, "volume", &volumes, &volume_now);
        }
        networks = network_now;
        volumes = volume_now;
        first = false;
        // Recorded ports taken by someone else are tried again now and then, not only when the
        // cluster changes.
        let next_change = changes.changed();
        if runtime.has_pending_ports() {
            if let Ok(Err(_)) = tokio::time::timeout(PENDING_PORT_RETRY, next_change).await {
                return;
            }
        } else if next_change.await.is_err() {
            return;
        }
    }
}

/// How often recorded ports that could not be bound again are retried without a watch change.
const PENDING_PORT_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// `create` for objects that appeared, `destroy` for those that went.
fn diff_objects(
    runtime: &Runtime,
    kind: &str,
    before: &HashMap<String, String>,
    now: &HashMap<String, String>,
) {
    // Docker names volumes by name and networks by id in `Actor.ID`.
    let actor = |id: &str, name: &str| {
        if kind == "volume" {
            name.to_owned()
        } else {
            id.to_owned()
        }
    };
    for (id, name) in now {
        if !before.contains_key(id) {
            let extra: &[(&str, &str)] = if kind == "network" {
                &[("type", "bridge")]
            } else {
                &[("driver", "local")]
            };
            runtime.emit(object_event(
                kind,
                "create",
                &actor(id, name),
                named(name, extra),
            ));
        }
    }
    for (id, name) in before {
        if !now.contains_key(id) {
            runtime.emit(object_event(
                kind,
                "destroy",
                &actor(id, name),
                named(name, &[]),
            ));
        }
    }
}

/// The exit to record when a container's pod went without podbridge deleting it (someone else
/// deleted it, or the node lost it): it had run, nothing recorded its end, so it would otherwise
/// look "created" again. Docker reports such a container as exited — with its exit if it had
/// one, else as killed (137). A start that failed before `main` ran has nothing to record.
fn vanished_exit(before: &ContainerView, now: &ContainerView) -> Option<super::LastExit> {
    let had_run = before
        .pod
        .as_deref()
        .and_then(super::state::main_status)
        .and_then(|status| status.state.as_ref())
        .is_some_and(|state| state.running.is_some() || state.terminated.is_some());
    if !had_run || now.pod.is_some() || now.state.status != "created" {
        return None;
    }
    Some(match before.state.is_exited() {
        true => super::LastExit {
            exit_code: before.state.exit_code,
            started_at: before.state.started_at.clone(),
            finished_at: before.state.finished_at.clone(),
            oom_killed: before.state.oom_killed,
            restart_count: before.state.restart_count,
        },
        false => super::LastExit {
            exit_code: 137,
            started_at: before.state.started_at.clone(),
            finished_at: super::now_rfc3339(),
            oom_killed: false,
            restart_count: before.state.restart_count,
        },
    })
}

/// `main` exited and its writable binds wait to be copied back (the keeper still runs).
fn main_exited_before_copy_back(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    super::state::main_status(pod)
        .and_then(|s| s.state.as_ref())
        .is_some_and(|s| s.terminated.is_some())
        && super::state::copy_back_pending(pod)
}

/// Runs `task` for container `id` unless one already runs for it. The id leaves `busy` however
/// the task ends (even by a panic), so a later change can try again.
fn spawn_once(
    busy: &Arc<parking_lot::Mutex<HashSet<String>>>,
    id: &str,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) {
    struct Done(Arc<parking_lot::Mutex<HashSet<String>>>, String);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.lock().remove(&self.1);
        }
    }
    if !busy.lock().insert(id.to_string()) {
        return;
    }
    let done = Done(busy.clone(), id.to_string());
    tokio::spawn(async move {
        let _done = done;
        task.await
    });
}

async fn record_vanished(runtime: Arc<Runtime>, view: ContainerView, exit: super::LastExit) {
    warn!(container = %view.short_id(), exit_code = exit.exit_code, "Pod deleted behind podbridge's back; recording the container as exited");
    let result = match view.auto_remove() {
        true => runtime.remove_now(&view).await,
        false => runtime.record_exit(&view, &exit).await,
    };
    if let Err(error) = result {
        warn!(container = %view.short_id(), %error, "Recording the vanished pod's exit failed");
    }
}

/// `on-failure:N`: after N restarts the kubelet would go on; Docker stops, keeping the last exit.
async fn give_up(runtime: Arc<Runtime>, view: ContainerView) {
    match runtime.end_restarts(&view).await {
        Ok(()) => {
            info!(container = %view.short_id(), restarts = view.state.restart_count, "Restart policy's maximum retry count reached")
        }
        Err(error) => warn!(container = %view.short_id(), %error, "Ending the restarts failed"),
    }
}

async fn auto_remove(runtime: Arc<Runtime>, view: ContainerView) {
    let span = debug_span!(target: crate::TIMING, "remove.auto", container = %view.short_id());
    auto_remove_now(runtime, view).instrument(span).await
}

async fn auto_remove_now(runtime: Arc<Runtime>, view: ContainerView) {
    let id = view.id.clone();
    runtime
        .wait_until(ATTACH_DRAIN_TIMEOUT, |rt| rt.attached_count(&id) == 0)
        .instrument(debug_span!(target: crate::TIMING, "remove.attach_drain"))
        .await;
    match runtime.remove_now(&view).await {
        Ok(()) => info!(container = %view.short_id(), "Auto-removed"),
        Err(error) => warn!(container = %view.short_id(), %error, "Auto-remove failed"),
    }
}
