//! runtime::reaper: each instance's liveness Lease (`podbridge-instance-<id>`, renewed while it
//! serves) and the sweep that deletes the objects of instances that stopped renewing theirs.
//!
//! An instance is *gone* when the newest sign of life it left in the namespace (its Lease's
//! `renewTime`, or the creation time of its newest object when it has no Lease) is older than
//! `reaper_idle_seconds` and older than the Lease duration the instance itself declared (so a
//! peer configured with a shorter idle time than our renewal period never reaps a live instance).
//! kubedock reaps by *creation* age, which kills long CI jobs and keeps a crashed job's pods for
//! an hour; this reaps by *idle* time of the owner.
//!
//! The live instance's own containers are never reaped, even when exited and unattached: Docker
//! keeps an exited container until `docker rm` (compose and testcontainers inspect, restart and
//! read logs of exited containers), an exited pod holds no CPU or memory, and a clean shutdown
//! removes them anyway (`cleanup_on_exit`). The reaper is for the objects nobody can remove any
//! more, not a second opinion on live clients.
//!
//! The sweep lists on a timer rather than watching: staleness is a function of the clock, not of
//! any change in the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ListParams, ObjectMeta, PatchParams};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tracing::{info, warn, Instrument};

use crate::apply::{Applier, ApplyError, FIELD_MANAGER};
use crate::labels;

/// Name prefix of the liveness Lease of each instance.
pub const HEARTBEAT_PREFIX: &str = "podbridge-instance-";
/// Longest renewal period, whatever the idle time: peers with a long idle time still see us often.
const MAX_PERIOD: Duration = Duration::from_secs(20);
/// Bound on every API call of the heartbeat and the sweep.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("renewing the liveness Lease {name}: {source}")]
    HeartbeatFailed { name: String, source: kube::Error },
    #[error("deleting the liveness Lease {name}: {source}")]
    HeartbeatDeleteFailed { name: String, source: kube::Error },
    #[error("listing {kind} labelled {selector}: {source}")]
    ListFailed {
        kind: &'static str,
        selector: String,
        source: kube::Error,
    },
    #[error("deleting the objects of instance {instance}: {source}")]
    ReapFailed {
        instance: String,
        source: ApplyError,
    },
    #[error("{operation} timed out after {}s", CALL_TIMEOUT.as_secs())]
    TimedOut { operation: String },
}

/// What one instance's liveness Lease says.
#[derive(Debug, Clone, PartialEq)]
pub struct Liveness {
    pub instance: String,
    pub renewed: Option<Timestamp>,
    /// The Lease duration the holder declared.
    pub duration: Duration,
}

/// One object of some instance, with its creation time.
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    pub instance: String,
    pub created: Option<Timestamp>,
}

/// The instances whose objects should go: not `me`, and silent for longer than `idle` (and than
/// the Lease duration they declared). An instance with no known time at all is left alone.
pub fn stale_instances(
    now: Timestamp,
    idle: Duration,
    me: &str,
    leases: &[Liveness],
    objects: &[Sighting],
) -> BTreeSet<String> {
    // instance → (newest sign of life, longest declared lease duration); None < Some, so `max`
    // keeps the newest known time.
    let mut seen: BTreeMap<&str, (Option<Timestamp>, Duration)> = BTreeMap::new();
    let signs = leases
        .iter()
        .map(|l| (l.instance.as_str(), l.renewed, l.duration))
        .chain(
            objects
                .iter()
                .map(|o| (o.instance.as_str(), o.created, Duration::ZERO)),
        );
    for (instance, at, duration) in signs {
        let entry = seen.entry(instance).or_insert((None, Duration::ZERO));
        entry.0 = entry.0.max(at);
        entry.1 = entry.1.max(duration);
    }
    seen.into_iter()
        .filter(|(instance, _)| *instance != me && !instance.is_empty())
        .filter_map(|(instance, (newest, duration))| {
            let silent = now.duration_since(newest?);
            let limit = idle.max(duration);
            (silent > jiff::SignedDuration::try_from(limit).ok()?).then(|| instance.to_string())
        })
        .collect()
}

/// How often the heartbeat renews and the sweep runs for a given idle time (0 = reaper off).
pub fn period(idle: Duration) -> Duration {
    if idle.is_zero() {
        return MAX_PERIOD;
    }
    (idle / 3).clamp(Duration::from_secs(1), MAX_PERIOD)
}

async fn bounded<T, E>(
    operation: impl Fn() -> String,
    call: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> Result<std::result::Result<T, E>> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| Error::TimedOut {
            operation: operation(),
        })
}

/// The heartbeat and the sweep of one instance.
pub struct Reaper {
    client: Client,
    namespace: String,
    instance: String,
    idle: Duration,
}

/// Running heartbeat and sweep; [`ReaperHandle::stop`] ends them.
pub struct ReaperHandle {
    reaper: std::sync::Arc<Reaper>,
    task: tokio::task::JoinHandle<()>,
}

impl Reaper {
    pub fn new(
        client: Client,
        namespace: impl Into<String>,
        instance: impl Into<String>,
        idle: Duration,
    ) -> Self {
        Reaper {
            client,
            namespace: namespace.into(),
            instance: instance.into(),
            idle,
        }
    }

    fn lease_name(&self) -> String {
        format!("{HEARTBEAT_PREFIX}{}", self.instance)
    }

    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Applies this instance's liveness Lease with `renewTime` = now.
    pub async fn renew(&self) -> Result<()> {
        let name = self.lease_name();
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(
                    [
                        (labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
                        (labels::INSTANCE, self.instance.as_str()),
                        (labels::ROLE, labels::ROLE_HEARTBEAT),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.instance.clone()),
                lease_duration_seconds: Some((period(self.idle).as_secs() * 3) as i32),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..LeaseSpec::default()
            }),
        };
        let params = PatchParams::apply(FIELD_MANAGER).force();
        bounded(
            || format!("renewing Lease {name}"),
            self.leases()
                .patch(&name, &params, &kube::api::Patch::Apply(&lease)),
        )
        .await?
        .map_err(|source| Error::HeartbeatFailed {
            name: name.clone(),
            source,
        })?;
        Ok(())
    }

    /// Deletes this instance's liveness Lease (clean shutdown after its objects were deleted).
    pub async fn retire(&self) -> Result<()> {
        let name = self.lease_name();
        match bounded(
            || format!("deleting Lease {name}"),
            self.leases().delete(&name, &Default::default()),
        )
        .await?
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(source) => Err(Error::HeartbeatDeleteFailed { name, source }),
        }
    }

    async fn list_sightings<K>(&self, selector: &str, into: &mut Vec<Sighting>) -> Result<()>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + k8s_openapi::Resource
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.namespace);
        let kind = <K as k8s_openapi::Resource>::KIND;
        let list = bounded(
            || format!("listing {kind}"),
            api.list_metadata(&ListParams::default().labels(selector)),
        )
        .await?
        .map_err(|source| Error::ListFailed {
            kind,
            selector: selector.to_string(),
            source,
        })?;
        into.extend(list.items.into_iter().filter_map(|item| {
            Some(Sighting {
                instance: item.metadata.labels?.get(labels::INSTANCE)?.clone(),
                created: item.metadata.creation_timestamp.map(|t| t.0),
            })
        }));
        Ok(())
    }

    /// One pass: find the gone instances and delete their objects and Lease.
    pub async fn sweep(&self) -> Result<BTreeSet<String>> {
        let managed = format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
        let heartbeats = format!("{managed},{}={}", labels::ROLE, labels::ROLE_HEARTBEAT);
        let leases = bounded(
            || "listing Leases".into(),
            self.leases()
                .list(&ListParams::default().labels(&heartbeats)),
        )
        .await?
        .map_err(|source| Error::ListFailed {
            kind: "Lease",
            selector: heartbeats.clone(),
            source,
        })?;
        let liveness: Vec<Liveness> = leases
            .items
            .into_iter()
            .filter_map(|lease| {
                let spec = lease.spec?;
                Some(Liveness {
                    instance: spec.holder_identity?,
                    renewed: spec.renew_time.map(|t| t.0),
                    duration: Duration::from_secs(
                        spec.lease_duration_seconds.unwrap_or(0).max(0) as u64
                    ),
                })
            })
            .collect();
        let mut objects = Vec::new();
        self.list_sightings::<Pod>(&managed, &mut objects).await?;
        self.list_sightings::<Service>(&managed, &mut objects)
            .await?;
        self.list_sightings::<ConfigMap>(&managed, &mut objects)
            .await?;
        self.list_sightings::<Secret>(&managed, &mut objects)
            .await?;
        self.list_sightings::<PersistentVolumeClaim>(&managed, &mut objects)
            .await?;
        let stale = stale_instances(
            Timestamp::now(),
            self.idle,
            &self.instance,
            &liveness,
            &objects,
        );
        for instance in &stale {
            self.reap(instance).await?;
        }
        Ok(stale)
    }

    /// Deletes every object of `instance`, then its Lease.
    async fn reap(&self, instance: &str) -> Result<()> {
        let applier = Applier::new(self.client.clone(), self.namespace.clone());
        let selector = format!(
            "{}={},{}={instance}",
            labels::MANAGED_BY,
            labels::MANAGED_BY_VALUE,
            labels::INSTANCE
        );
        let failed = |source| Error::ReapFailed {
            instance: instance.to_string(),
            source,
        };
        let client = &self.client;
        let namespace = &self.namespace;
        let all = async {
            applier
                .delete_labelled(&applier.pods(), &selector, Some(0))
                .await?;
            applier
                .delete_labelled(&applier.services(), &selector, None)
                .await?;
            applier
                .delete_labelled(&applier.config_maps(), &selector, None)
                .await?;
            applier
                .delete_labelled(
                    &Api::<Secret>::namespaced(client.clone(), namespace),
                    &selector,
                    None,
                )
                .await?;
            applier
                .delete_labelled(
                    &Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace),
                    &selector,
                    None,
                )
                .await?;
            applier
                .delete(
                    &Api::<Lease>::namespaced(client.clone(), namespace),
                    &format!("{HEARTBEAT_PREFIX}{instance}"),
                    None,
                )
                .await
        };
        tokio::time::timeout(CALL_TIMEOUT * 6, all)
            .await
            .map_err(|_| Error::TimedOut {
                operation: format!("deleting the objects of instance {instance}"),
            })?
            .map_err(failed)?;
        info!(namespace = %self.namespace, %instance, "Reaped the objects of a gone instance");
        Ok(())
    }

    /// Renews the heartbeat now (so peers see us before any port is bound), then keeps renewing
    /// and, unless the idle time is 0, sweeps, on one timer.
    pub async fn spawn(self) -> ReaperHandle {
        if let Err(error) = self.renew().await {
            warn!(%error, "Liveness Lease not written; retrying");
        }
        let reaper = std::sync::Arc::new(self);
        let span = tracing::info_span!("reaper", namespace = %reaper.namespace, instance = %reaper.instance);
        let task = tokio::spawn({
            let reaper = reaper.clone();
            async move {
                let mut ticks = tokio::time::interval(period(reaper.idle));
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks.tick().await;
                loop {
                    ticks.tick().await;
                    if let Err(error) = reaper.renew().await {
                        warn!(%error, "Liveness Lease not renewed");
                    }
                    if !reaper.idle.is_zero() {
                        if let Err(error) = reaper.sweep().await {
                            warn!(%error, "Reaper sweep failed");
                        }
                    }
                }
            }
            .instrument(span)
        });
        ReaperHandle { reaper, task }
    }
}

impl ReaperHandle {
    /// Stops renewing; with `retire`, also deletes the Lease (the objects are gone too).
    pub async fn stop(self, retire: bool) {
        self.task.abort();
        if retire {
            if let Err(error) = self.reaper.retire().await {
                warn!(%error, "Liveness Lease left behind; peers reap it after the idle time");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn lease(instance: &str, renewed: &str, seconds: u64) -> Liveness {
        Liveness {
            instance: instance.into(),
            renewed: Some(at(renewed)),
            duration: Duration::from_secs(seconds),
        }
    }

    fn object(instance: &str, created: &str) -> Sighting {
        Sighting {
            instance: instance.into(),
            created: Some(at(created)),
        }
    }

    const NOW: &str = "2026-01-01T12:00:00Z";
    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn an_instance_that_stopped_renewing_is_stale_and_a_renewing_one_is_not() {
        let leases = [
            lease("gone", "2026-01-01T11:58:00Z", 3),
            lease("alive", "2026-01-01T11:59:59Z", 3),
        ];
        let objects = [
            object("gone", "2026-01-01T11:00:00Z"),
            object("alive", "2026-01-01T09:00:00Z"),
        ];
        let stale = stale_instances(at(NOW), IDLE, "me", &leases, &objects);
        assert_eq!(stale, BTreeSet::from(["gone".to_string()]));
    }

    #[test]
    fn reaps_by_idle_time_not_by_creation_age() {
        // objects created hours ago by an instance that renewed a second ago stay
        let stale = stale_instances(
            at(NOW),
            IDLE,
            "me",
            &[lease("ci-1", "2026-01-01T11:59:59Z", 3)],
            &[object("ci-1", "2026-01-01T01:00:00Z")],
        );
        assert!(stale.is_empty());
    }

    #[test]
    fn never_reaps_itself() {
        let stale = stale_instances(
            at(NOW),
            IDLE,
            "me",
            &[lease("me", "2026-01-01T10:00:00Z", 3)],
            &[object("me", "2026-01-01T10:00:00Z")],
        );
        assert!(stale.is_empty());
    }

    #[test]
    fn without_a_lease_the_newest_object_counts() {
        let objects = [
            object("old", "2026-01-01T10:00:00Z"),
            object("recent", "2026-01-01T10:00:00Z"),
            object("recent", "2026-01-01T11:59:30Z"),
        ];
        let stale = stale_instances(at(NOW), IDLE, "me", &[], &objects);
        assert_eq!(stale, BTreeSet::from(["old".to_string()]));
    }

    #[test]
    fn the_holders_declared_duration_wins_over_a_shorter_idle_time() {
        // the peer renews every 20 s (duration 60 s); our idle time is 5 s
        let leases = [lease("peer", "2026-01-01T11:59:30Z", 60)];
        let stale = stale_instances(at(NOW), Duration::from_secs(5), "me", &leases, &[]);
        assert!(stale.is_empty());
        let leases = [lease("peer", "2026-01-01T11:58:30Z", 60)];
        let stale = stale_instances(at(NOW), Duration::from_secs(5), "me", &leases, &[]);
        assert_eq!(stale.len(), 1);
    }

    #[test]
    fn unknown_times_are_left_alone() {
        let objects = [Sighting {
            instance: "mystery".into(),
            created: None,
        }];
        assert!(stale_instances(at(NOW), IDLE, "me", &[], &objects).is_empty());
    }

    #[test]
    fn the_period_follows_the_idle_time_within_bounds() {
        assert_eq!(period(Duration::from_secs(6)), Duration::from_secs(2));
        assert_eq!(period(Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(period(Duration::from_secs(3600)), MAX_PERIOD);
        assert_eq!(period(Duration::ZERO), MAX_PERIOD);
    }
}
