//! runtime: podbridge's live view of its containers, fed by watches of the pods, ConfigMaps and
//! Services labelled with its instance, and the container lifecycle built on that view.
//!
//! No state lives only in this process: a created container is a ConfigMap holding the rendered
//! objects (role `container-spec`), a started one also has its pod, and a restarted podbridge
//! rebuilds everything here from the watches.

pub mod archive;
pub mod binds;
pub mod build;
pub mod containers;
pub mod events;
pub mod exec;
pub mod lease;
pub mod limits;
pub mod links;
pub mod logs;
pub mod objects;
pub mod ports;
pub mod prestart;
pub mod reaper;
pub mod record;
pub mod registry;
pub mod remote_command;
pub mod ryuk;
pub mod spdy;
pub mod state;
pub mod stats;
pub mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};

use crate::apply::{Applier, ApplyError};
use crate::labels;
use crate::render::NamedVolumes;
pub use state::{ContainerState, ContainerView, LastExit};

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    #[error("No such exec instance: {0}")]
    NoSuchExec(String),
    #[error("Container {0} is not running")]
    NotRunning(String),
    #[error("name {name} in use by {id}")]
    NameInUse { name: String, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// A request body beyond its configured cap (413).
    #[error("{0}")]
    TooLarge(String),
    #[error("the cluster view is not synced yet")]
    NotReady,
    /// An instance cap (config `max_*`) would be exceeded; the message names the key.
    #[error("{message}")]
    LimitReached { message: String },
    /// Too many concurrent requests of one kind; retrying later can succeed.
    #[error("{message}")]
    Busy { message: String },
    /// Refused by a podbridge setting, such as a bind outside `bind_roots` (403).
    #[error("{0}")]
    Forbidden(String),
    #[error("container {id} failed to start: {reason}")]
    StartFailed { id: String, reason: String },
    /// A legacy link's target is not running when the linking container starts (dockerd's
    /// message, and its 500).
    #[error("Cannot link to a non running container: {target} AS {link}")]
    LinkTargetNotRunning { target: String, link: String },
    /// A step in a builder pod (`docker save`/`load`) failed.
    #[error("{reason} (builder pod {pod})")]
    BuilderFailed { pod: String, reason: String },
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("{operation} on pod {pod}: {}", crate::apply::explain(.source))]
    Kube {
        operation: &'static str,
        pod: String,
        source: kube::Error,
    },
    #[error("{operation} on pod {pod}: {source}")]
    RemoteCommand {
        operation: &'static str,
        pod: String,
        source: remote_command::RemoteCommandError,
    },
    #[error("{operation} on pod {pod} timed out after {seconds}s")]
    Timeout {
        operation: &'static str,
        pod: String,
        seconds: u64,
    },
    #[error("stored container spec {name} is unreadable: {reason}")]
    BadSpec { name: String, reason: String },
}

/// Retry delays of a failed watch: 100 ms doubling up to 2 s, back to 100 ms after any event.
///
/// kube's default (800 ms doubling up to 30 s, client-go's, kind to a struggling API server
/// with thousands of clients) left the caches blind for up to half a minute after a short
/// outage, while writes already succeeded again: a container created then was missing from its
/// own attach. A bridge is one client with a handful of watches on its namespace, so a retry
/// every 2 s at most costs the API server little.
#[derive(Debug, Clone)]
pub(crate) struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(2);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (delay * 2).min(Self::MAX);
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

type Writers = (
    reflector::store::Writer<Pod>,
    reflector::store::Writer<ConfigMap>,
    reflector::store::Writer<Service>,
    reflector::store::Writer<PersistentVolumeClaim>,
);

/// The watch-fed index and everything that acts on it.
pub struct Runtime {
    pub client: Client,
    pub namespace: String,
    pub instance: String,
    pub applier: Applier,
    pods: Store<Pod>,
    config_maps: Store<ConfigMap>,
    services: Store<Service>,
    /// Claims of named volumes; watched only with `named_volumes = "claim"`.
    claims: Store<PersistentVolumeClaim>,
    /// What backs named volumes (config `named_volumes`); set before the watchers start.
    named_volumes: Mutex<NamedVolumes>,
    /// Roots and size cap of bind copies (config `bind_roots`, `bind_size_limit`).
    bind_settings: Mutex<binds::BindSettings>,
    writers: Mutex<Option<Writers>>,
    changes: watch::Sender<u64>,
    /// Events are shared, not copied: the history and every slot of the channel hold the same
    /// allocation.
    events: broadcast::Sender<Arc<events::Event>>,
    /// The last [`events::HISTORY`] events, for `since`; its lock also orders sending, so a
    /// subscriber that snapshots it misses nothing and sees nothing twice.
    history: Mutex<std::collections::VecDeque<Arc<events::Event>>>,
    ready: AtomicBool,
    pub(crate) execs: Mutex<HashMap<String, exec::ExecRecord>>,
    /// Decoded records by spec ConfigMap uid, with the resourceVersion they were decoded from:
    /// views are rebuilt on every watch change, and decoding every record each time made a
    /// burst of N containers cost N² JSON parses.
    records: Mutex<HashMap<String, (String, Arc<crate::model::ContainerRecord>)>>,
    /// Exit of containers that auto-remove deleted, for `wait?condition=removed`.
    last_exits: Mutex<HashMap<String, (u64, LastExit)>>,
    /// Number of attach streams per container id; auto-remove waits for them to drain.
    attached: Mutex<HashMap<String, usize>>,
    /// TTY size and resize handle of each container's attach session (`docker run -it`), by id.
    pub(crate) terminals: Mutex<HashMap<String, exec::Terminal>>,
    /// Caps of this instance (config `max_*`) and the semaphores enforcing them.
    gates: arc_swap::ArcSwap<limits::Gates>,
    /// Creates and ConfigMap writes in flight, counted against the caps until the watch shows
    /// them.
    pending: Mutex<limits::Pending>,
    pub(crate) images: Mutex<BTreeMap<String, objects::ImageRecord>>,
    /// Image configs read from registries.
    pub registry: registry::RegistryClient,
    /// How long `start` waits for `main` to run before answering anyway (config
    /// `start_timeout_seconds`).
    start_timeout_seconds: std::sync::atomic::AtomicU64,
    /// Kinds whose watch is failing (cluster unreachable): `_ping` answers 503 meanwhile.
    failing_watches: Mutex<HashSet<String>>,
    /// Port forwards of running containers, by container id.
    published: Mutex<HashMap<String, ports::Published>>,
    /// Where published ports bind when a binding names no `HostIp` (config `listen`'s host).
    publish_ip: Mutex<std::net::IpAddr>,
    /// Built-in Ryuk reapers this process serves, by container id.
    ryuks: Mutex<HashMap<String, ryuk::Served>>,
    ryuk_settings: Mutex<ryuk::RyukSettings>,
    /// Where `docker build` runs and pushes (config `build_*`).
    build_settings: Mutex<build::BuildSettings>,
}

impl Runtime {
    /// A runtime over `client`; nothing is watched until [`Runtime::spawn_watchers`].
    pub fn new(
        client: Client,
        namespace: impl Into<String>,
        instance: impl Into<String>,
    ) -> Arc<Self> {
        let namespace = namespace.into();
        let (pods, pod_writer) = reflector::store();
        let (config_maps, config_map_writer) = reflector::store();
        let (services, service_writer) = reflector::store();
        let (claims, claim_writer) = reflector::store();
        Arc::new(Runtime {
            applier: Applier::new(client.clone(), namespace.clone()),
            client,
            namespace,
            instance: instance.into(),
            pods,
            config_maps,
            services,
            claims,
            named_volumes: Mutex::new(NamedVolumes::Claim),
            bind_settings: Mutex::default(),
            writers: Mutex::new(Some((
                pod_writer,
                config_map_writer,
                service_writer,
                claim_writer,
            ))),
            changes: watch::channel(0).0,
            events: broadcast::channel(1024).0,
            history: Mutex::default(),
            ready: AtomicBool::new(false),
            execs: Mutex::default(),
            records: Mutex::default(),
            last_exits: Mutex::default(),
            attached: Mutex::default(),
            terminals: Mutex::default(),
            gates: arc_swap::ArcSwap::from_pointee(limits::Gates::new(limits::Limits::default())),
            pending: Mutex::default(),
            images: Mutex::default(),
            registry: registry::RegistryClient::new(),
            published: Mutex::default(),
            publish_ip: Mutex::new(std::net::Ipv4Addr::LOCALHOST.into()),
            ryuks: Mutex::default(),
            ryuk_settings: Mutex::default(),
            build_settings: Mutex::default(),
            failing_watches: Mutex::default(),
            start_timeout_seconds: std::sync::atomic::AtomicU64::new(120),
        })
    }

    /// Starts one watcher per kind and, once all stores are synced, the reconciler that
    /// derives Docker events and performs auto-remove. Claims are watched only when they back
    /// named volumes, so `emptyDir` works with a Role that has no claim permissions.
    pub fn spawn_watchers(self: &Arc<Self>) {
        let Some((pod_writer, config_map_writer, service_writer, claim_writer)) =
            self.writers.lock().take()
        else {
            return;
        };
        let watch_claims = self.uses_claims();
        let selector = format!("{}={}", labels::INSTANCE, self.instance);
        let config = watcher::Config::default().labels(&selector);
        tokio::spawn(self.clone().watch_kind(
            Api::<Pod>::namespaced(self.client.clone(), &self.namespace),
            pod_writer,
            config.clone(),
        ));
        tokio::spawn(self.clone().watch_kind(
            Api::<ConfigMap>::namespaced(self.client.clone(), &self.namespace),
            config_map_writer,
            config.clone(),
        ));
        tokio::spawn(self.clone().watch_kind(
            Api::<Service>::namespaced(self.client.clone(), &self.namespace),
            service_writer,
            config.clone(),
        ));
        if watch_claims {
            tokio::spawn(self.clone().watch_kind(
                Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &self.namespace),
                claim_writer,
                config,
            ));
        }
        let runtime = self.clone();
        tokio::spawn(async move {
            let synced = async {
                runtime.pods.wait_until_ready().await.ok();
                runtime.config_maps.wait_until_ready().await.ok();
                runtime.services.wait_until_ready().await.ok();
                if watch_claims {
                    runtime.claims.wait_until_ready().await.ok();
                }
            };
            synced.await;
            runtime.ready.store(true, Ordering::SeqCst);
            info!(namespace = %runtime.namespace, instance = %runtime.instance, "Watch caches synced");
            events::reconcile(runtime).await;
        });
    }

    async fn watch_kind<K>(
        self: Arc<Self>,
        api: Api<K>,
        writer: reflector::store::Writer<K>,
        config: watcher::Config,
    ) where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let kind = K::kind(&()).to_string();
        crate::metrics::serve().watch_started(&kind);
        // managedFields are the API server's bookkeeping, a large part of every object and read
        // by nothing here: the caches keep objects without them.
        let stream = reflector::reflector(
            writer,
            watcher(api, config)
                .backoff(WatchBackoff::default())
                .modify(|object| object.meta_mut().managed_fields = None),
        );
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    if self.failing_watches.lock().remove(&kind) {
                        info!(%kind, "Watch recovered");
                    }
                    self.changes.send_modify(|generation| *generation += 1);
                }
                Err(error) => {
                    crate::metrics::serve().watch_failed(&kind);
                    // Retried every 2 s at most: a lasting failure (a Role without `watch`) is
                    // logged once as a warning, its retries at debug.
                    if self.failing_watches.lock().insert(kind.clone()) {
                        warn!(%kind, %error, "Watch failed; retrying");
                    } else {
                        debug!(%kind, %error, "Watch failed again; retrying");
                    }
                }
            }
        }
    }

    pub fn set_start_timeout(&self, timeout: Duration) {
        self.start_timeout_seconds
            .store(timeout.as_secs().max(1), Ordering::Relaxed);
    }

    /// Chooses what backs named volumes; call before [`Runtime::spawn_watchers`].
    pub fn set_named_volumes(&self, backing: NamedVolumes) {
        *self.named_volumes.lock() = backing;
    }

    /// True when named volumes are PersistentVolumeClaims.
    pub fn uses_claims(&self) -> bool {
        *self.named_volumes.lock() == NamedVolumes::Claim
    }

    pub fn start_timeout(&self) -> Duration {
        Duration::from_secs(self.start_timeout_seconds.load(Ordering::Relaxed))
    }

    /// Deletes every object of this instance (`cleanup_on_exit`).
    pub async fn delete_everything(&self) -> Result<()> {
        let selector = crate::apply::owned_selector(&self.instance);
        self.applier
            .delete_labelled(&self.applier.pods(), &selector, Some(0))
            .await?;
        self.applier
            .delete_labelled(&self.applier.services(), &selector, None)
            .await?;
        self.applier
            .delete_labelled(&self.applier.config_maps(), &selector, None)
            .await?;
        if self.uses_claims() {
            // Named volumes last as long as this Docker "daemon": with cleanup_on_exit, that ends
            // here. A claim still mounted by a terminating pod goes once the pod has.
            self.applier
                .delete_labelled(&self.applier.claims(), &selector, None)
                .await?;
        }
        info!(namespace = %self.namespace, instance = %self.instance, "Deleted this instance's objects");
        Ok(())
    }

    /// True once the cluster answered and every store holds a complete list, and while no watch
    /// is failing.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && self.failing_watches.lock().is_empty()
    }

    /// A receiver that changes whenever any watched object changes.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The events kept so far and a receiver for every later one.
    pub fn subscribe_events(
        &self,
    ) -> (
        Vec<Arc<events::Event>>,
        broadcast::Receiver<Arc<events::Event>>,
    ) {
        let history = self.history.lock();
        (history.iter().cloned().collect(), self.events.subscribe())
    }

    pub fn pods_api(&self) -> Api<Pod> {
        self.applier.pods()
    }

    /// Waits until `done` holds on the current view, waking on every watch change.
    pub async fn wait_until<F: Fn(&Runtime) -> bool>(&self, timeout: Duration, done: F) -> bool {
        let mut changes = self.subscribe_changes();
        let deadline = deadline_after(timeout);
        loop {
            changes.borrow_and_update();
            if done(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return done(self),
            }
        }
    }

    /// The Docker state of every container (`podbridge_containers`, at scrape time).
    pub fn container_states(&self) -> Vec<&'static str> {
        self.containers()
            .iter()
            .map(|view| view.state.status)
            .collect()
    }

    /// Every container, newest first.
    pub fn containers(&self) -> Vec<ContainerView> {
        let pods: HashMap<String, Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter_map(|pod| {
                Some((
                    pod.metadata
                        .labels
                        .as_ref()?
                        .get(labels::CONTAINER_ID)?
                        .clone(),
                    pod,
                ))
            })
            .collect();
        let mut records = self.records.lock();
        let mut current = HashMap::with_capacity(records.len());
        let mut views: Vec<ContainerView> = self
            .config_maps
            .state()
            .into_iter()
            .filter(|cm| has_role(&cm.metadata, labels::ROLE_CONTAINER_SPEC))
            .filter_map(|cm| {
                let short = cm
                    .metadata
                    .labels
                    .as_ref()?
                    .get(labels::CONTAINER_ID)?
                    .clone();
                let key = cm
                    .metadata
                    .uid
                    .clone()
                    .or_else(|| cm.metadata.name.clone())?;
                let version = cm.metadata.resource_version.clone().unwrap_or_default();
                let record = match records.remove(&key) {
                    Some((seen, record)) if seen == version && !version.is_empty() => record,
                    _ => Arc::new(record::read_record(&cm)),
                };
                current.insert(key, (version, record.clone()));
                ContainerView::with_record(cm, pods.get(&short).cloned(), record)
            })
            .collect();
        // Only what the cache holds now stays: nothing of a removed container.
        *records = current;
        drop(records);
        views.sort_by(|a, b| b.created.cmp(&a.created));
        views
    }

    /// A runtime with no cluster whose watch caches hold `config_maps` and `pods`, for tests
    /// of what handlers answer from the caches.
    #[cfg(test)]
    pub fn with_cached(config_maps: Vec<ConfigMap>, pods: Vec<Pod>) -> Arc<Self> {
        use kube::runtime::watcher::Event;
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let runtime = Runtime::new(Client::try_from(config).unwrap(), "test", "unit");
        let (mut pod_writer, mut config_map_writer, _, _) = runtime.writers.lock().take().unwrap();
        for config_map in config_maps {
            config_map_writer.apply_watcher_event(&Event::Apply(config_map));
        }
        for pod in pods {
            pod_writer.apply_watcher_event(&Event::Apply(pod));
        }
        runtime
    }

    /// Finds a container by full ID, name (with or without `/`) or unique ID prefix.
    pub fn find(&self, reference: &str) -> Result<ContainerView> {
        let containers = self.containers();
        match crate::model::lookup(&containers, reference, |c| &c.id, |c| &c.name) {
            crate::model::Lookup::Found(view) => Ok(view.clone()),
            crate::model::Lookup::Ambiguous => Err(RuntimeError::BadRequest(format!(
                "multiple IDs found with provided prefix: {reference}"
            ))),
            // dockerd's names include link names (`/self/alias`): they name the link's target.
            crate::model::Lookup::Missing => self
                .find_link(reference)
                .and_then(|(_, link)| self.link_target(&link))
                .ok_or_else(|| RuntimeError::NoSuchContainer(reference.to_string())),
        }
    }

    pub fn services_of(&self, short_id: &str) -> Vec<Arc<Service>> {
        self.services
            .state()
            .into_iter()
            .filter(|s| {
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(labels::CONTAINER_ID))
                    .map(String::as_str)
                    == Some(short_id)
            })
            .collect()
    }

    /// ConfigMaps podbridge keeps for networks or volumes (`role`).
    pub fn objects_with_role(&self, role: &str) -> Vec<Arc<ConfigMap>> {
        self.config_maps
            .state()
            .into_iter()
            .filter(|cm| has_role(&cm.metadata, role))
            .collect()
    }

    pub fn emit(&self, event: serde_json::Value) {
        // serialised before the lock: the lock only orders keeping and sending
        let event = Arc::new(events::Event::new(&event));
        let mut history = self.history.lock();
        if history.len() == events::HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        let _ = self.events.send(event);
    }

    /// Networks this instance created, id → name.
    pub fn network_names(&self) -> HashMap<String, String> {
        self.stored_objects(crate::labels::ROLE_NETWORK)
            .into_iter()
            .filter_map(|n| Some((n["Id"].as_str()?.to_owned(), n["Name"].as_str()?.to_owned())))
            .collect()
    }

    /// Registers an attach stream so auto-remove waits for its output to drain.
    pub fn attach_guard(self: &Arc<Self>, id: &str) -> AttachGuard {
        *self.attached.lock().entry(id.to_string()).or_default() += 1;
        AttachGuard {
            runtime: self.clone(),
            id: id.to_string(),
        }
    }

    fn attached_count(&self, id: &str) -> usize {
        self.attached.lock().get(id).copied().unwrap_or(0)
    }

    /// Keeps the exit of a removed container for `wait?condition=removed`; only the latest
    /// [`limits::MAX_REMOVED_EXITS`] are kept.
    pub(crate) fn record_removed_exit(&self, id: &str, exit: LastExit) {
        let mut exits = self.last_exits.lock();
        while exits.len() >= limits::MAX_REMOVED_EXITS && !exits.contains_key(id) {
            let oldest = exits
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(oldest) => exits.remove(&oldest),
                None => break,
            };
        }
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        exits.insert(id.to_string(), (sequence, exit));
    }

    pub(crate) fn removed_exit(&self, id: &str) -> Option<LastExit> {
        self.last_exits.lock().get(id).map(|(_, exit)| exit.clone())
    }
}

/// Drop guard of [`Runtime::attach_guard`].
pub struct AttachGuard {
    runtime: Arc<Runtime>,
    id: String,
}

impl Drop for AttachGuard {
    fn drop(&mut self) {
        let mut attached = self.runtime.attached.lock();
        if let Some(count) = attached.get_mut(&self.id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                attached.remove(&self.id);
            }
        }
        drop(attached);
        self.runtime
            .changes
            .send_modify(|generation| *generation += 1);
    }
}

fn has_role(meta: &kube::api::ObjectMeta, role: &str) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(labels::ROLE))
        .map(String::as_str)
        == Some(role)
}

/// The instant `timeout` from now; a timeout too long to represent (a client's `t=1e18`) is a
/// century, which no request outlives.
pub fn deadline_after(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// Current time as RFC 3339 with nanoseconds, Docker's timestamp format.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff;

    #[test]
    fn watch_backoff_is_short_and_resets() {
        let mut backoff = WatchBackoff::default();
        let delays: Vec<u64> = backoff
            .by_ref()
            .take(7)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
        backoff.reset();
        assert_eq!(backoff.next(), Some(Duration::from_millis(100)));
    }

    #[tokio::test]
    async fn removed_exits_are_bounded() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let runtime = Runtime::new(Client::try_from(config).unwrap(), "test", "unit");
        for index in 0..limits::MAX_REMOVED_EXITS + 10 {
            runtime.record_removed_exit(&format!("c{index}"), LastExit::default());
        }
        assert_eq!(runtime.last_exits.lock().len(), limits::MAX_REMOVED_EXITS);
        assert!(runtime.removed_exit("c0").is_none());
        let last = format!("c{}", limits::MAX_REMOVED_EXITS + 9);
        assert!(runtime.removed_exit(&last).is_some());
    }

    /// A spec ConfigMap of container `id` at `version`, recording `image`.
    fn spec(id: &str, version: &str, image: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({"metadata": {
            "name": format!("pb-{id}"), "namespace": "test", "uid": format!("uid-{id}"),
            "resourceVersion": version,
            "labels": {labels::ROLE: labels::ROLE_CONTAINER_SPEC, labels::CONTAINER_ID: id},
            "annotations": {labels::ANNOTATION_CONTAINER_ID: id, labels::ANNOTATION_NAME: id}},
            "data": {record::RECORD_DATA_KEY: serde_json::json!({"request": {"Image": image}}).to_string()}}))
        .unwrap()
    }

    #[tokio::test]
    async fn records_are_decoded_once_per_version_and_forgotten_with_their_container() {
        use kube::runtime::watcher::Event;
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let runtime = Runtime::new(Client::try_from(config).unwrap(), "test", "unit");
        let (_, mut config_maps, _, _) = runtime.writers.lock().take().unwrap();
        config_maps.apply_watcher_event(&Event::Apply(spec("aaaaaaaaaaaa", "1", "redis")));
        config_maps.apply_watcher_event(&Event::Apply(spec("bbbbbbbbbbbb", "1", "busybox")));
        let first = runtime.find("aaaaaaaaaaaa").unwrap();
        let again = runtime.find("aaaaaaaaaaaa").unwrap();
        assert!(Arc::ptr_eq(&first.record, &again.record));
        // a new version of the spec is decoded again
        config_maps.apply_watcher_event(&Event::Apply(spec("aaaaaaaaaaaa", "2", "nginx")));
        let changed = runtime.find("aaaaaaaaaaaa").unwrap();
        assert_eq!(changed.record.request["Image"], "nginx");
        assert!(!Arc::ptr_eq(&first.record, &changed.record));
        // a removed container leaves nothing behind
        config_maps.apply_watcher_event(&Event::Delete(spec("bbbbbbbbbbbb", "1", "busybox")));
        assert_eq!(runtime.containers().len(), 1);
        assert_eq!(runtime.records.lock().len(), 1);
    }

    #[test]
    fn deadlines_never_overflow() {
        let now = tokio::time::Instant::now();
        assert!(deadline_after(Duration::MAX) > now);
        assert!(deadline_after(Duration::from_secs(u64::MAX)) > now);
        assert!(deadline_after(Duration::from_secs(5)) <= now + Duration::from_secs(6));
    }
}
