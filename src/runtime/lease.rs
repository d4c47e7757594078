//! runtime::lease: one `coordination.k8s.io/v1` Lease held by one instance at a time, in two
//! uses. `serve`'s namespace lock (`lock = true`, [`NAMESPACE_LOCK`]): taken before any port is
//! bound, renewed while serving, deleted on shutdown; a second instance waits, saying who holds
//! it. The operator's leadership (`crate::operator::LEADERSHIP`): with several replicas only the
//! holder reconciles; a standby waits here and takes over once the leader releases the Lease or
//! stops renewing it.
//!
//! Every write is a `create` or a `replace` carrying the `resourceVersion` that was read, so two
//! instances racing for an expired Lease cannot both win: the loser gets 409 and reads again.
//! Expiry is judged from the Lease's `renewTime` against the local clock, so the instances' clocks
//! must agree to well within the Lease duration (NTP does that).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn, Instrument};

use crate::labels;

/// One kind of Lease: its name, what it guards (for messages) and its timings.
#[derive(Debug, Clone, Copy)]
pub struct LeaseKind {
    /// Name of the Lease in its namespace.
    pub name: &'static str,
    /// What holding it means, for log lines ("namespace lock", "operator leadership").
    pub purpose: &'static str,
    /// The same at the start of a line ("Namespace lock"): the log lines tests and operators
    /// grep for keep their words.
    pub title: &'static str,
    /// Value of `app.kubernetes.io/managed-by` on the Lease when it is created.
    pub managed_by: &'static str,
    /// How long a holder that stopped renewing keeps the Lease.
    pub duration: Duration,
    /// How often the holder renews.
    pub renew_period: Duration,
    /// The holder gives the Lease up when no renewal succeeded for this long; below `duration`
    /// it stops acting before anyone else may start.
    pub renew_deadline: Duration,
    /// How often a waiting instance reads the Lease again.
    pub retry_period: Duration,
}

/// `serve`'s namespace lock. Shorter than kubedock's 60 s so a crashed CI job's successor waits
/// at most ~15 s; the holder serves until no renewal succeeded for the whole duration (a lost lock
/// ends `serve`, so it is not given up early).
pub const NAMESPACE_LOCK: LeaseKind = LeaseKind {
    name: "podbridge-lock",
    purpose: "namespace lock",
    title: "Namespace lock",
    managed_by: labels::MANAGED_BY_VALUE,
    duration: Duration::from_secs(15),
    renew_period: Duration::from_secs(5),
    renew_deadline: Duration::from_secs(15),
    retry_period: Duration::from_secs(2),
};

/// Bound on every API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading Lease {lease}: {source}")]
    ReadFailed {
        lease: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("writing Lease {lease}: {source}")]
    WriteFailed {
        lease: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("releasing Lease {lease}: {source}")]
    ReleaseFailed {
        lease: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("{operation} Lease {lease} timed out after {}s", CALL_TIMEOUT.as_secs())]
    TimedOut {
        operation: &'static str,
        lease: &'static str,
    },
    #[error("Lease {lease} was lost while held (taken over, or not renewed in time)")]
    Lost { lease: &'static str },
}

/// What to do with the Lease as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// No Lease yet.
    Create,
    /// Free or expired: take it over.
    Take,
    /// Already ours (a restart with the same identity).
    Renew,
    /// Held by someone else who still renews.
    Wait { holder: String },
}

/// Decides from the Lease spec alone (no I/O).
pub fn decide(lease: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder.is_empty() {
        return Decision::Take;
    }
    if holder == me {
        return Decision::Renew;
    }
    let duration =
        SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as i64);
    match &spec.renew_time {
        Some(renewed) if renewed.0 + duration >= now => Decision::Wait { holder },
        _ => Decision::Take,
    }
}

/// Bounds one call on the Lease in time.
async fn bounded<T>(
    kind: &LeaseKind,
    operation: &'static str,
    call: impl std::future::Future<Output = std::result::Result<T, kube::Error>>,
) -> Result<std::result::Result<T, kube::Error>> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| Error::TimedOut {
            operation,
            lease: kind.name,
        })
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// The held Lease; renewed by a task until [`LeaseGuard::release`] or until it is lost.
pub struct LeaseGuard {
    kind: LeaseKind,
    api: Api<Lease>,
    identity: String,
    renewal: tokio::task::JoinHandle<()>,
    lost: watch::Receiver<bool>,
}

impl LeaseKind {
    /// Waits until `identity` holds this Lease in `namespace` (forever, if the holder keeps
    /// renewing).
    pub async fn acquire(
        &self,
        client: Client,
        namespace: &str,
        identity: &str,
    ) -> Result<LeaseGuard> {
        let kind = *self;
        let name = kind.name;
        let api: Api<Lease> = Api::namespaced(client, namespace);
        let mut announced: Option<String> = None;
        loop {
            let current = bounded(&kind, "reading", api.get_opt(name))
                .await?
                .map_err(|source| Error::ReadFailed {
                    lease: name,
                    source,
                })?;
            let now = Timestamp::now();
            let decision = decide(
                current.as_ref().and_then(|l| l.spec.as_ref()),
                identity,
                now,
            );
            let written = match (decision, current) {
                (Decision::Wait { holder }, _) => {
                    if announced.as_deref() != Some(holder.as_str()) {
                        info!(%namespace, %holder, lease = name, "Waiting for the {}", kind.purpose);
                        announced = Some(holder);
                    }
                    tokio::time::sleep(kind.retry_period).await;
                    continue;
                }
                (Decision::Create, _) | (_, None) => {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(name.into()),
                            labels: Some(
                                [(labels::MANAGED_BY.to_string(), kind.managed_by.to_string())]
                                    .into(),
                            ),
                            ..ObjectMeta::default()
                        },
                        spec: Some(kind.held_spec(identity, now, None)),
                    };
                    bounded(
                        &kind,
                        "creating",
                        api.create(&PostParams::default(), &lease),
                    )
                    .await?
                }
                (decision, Some(mut lease)) => {
                    let previous = lease.spec.take();
                    let mut spec = kind.held_spec(identity, now, previous.as_ref());
                    if decision == Decision::Renew {
                        spec.acquire_time = previous.as_ref().and_then(|p| p.acquire_time.clone());
                        spec.lease_transitions =
                            previous.as_ref().and_then(|p| p.lease_transitions);
                    }
                    lease.spec = Some(spec);
                    bounded(
                        &kind,
                        "taking over",
                        api.replace(name, &PostParams::default(), &lease),
                    )
                    .await?
                }
            };
            match written {
                Ok(_) => break,
                // someone else wrote first: read again
                Err(error) if is_conflict(&error) => continue,
                Err(source) => {
                    return Err(Error::WriteFailed {
                        lease: name,
                        source,
                    })
                }
            }
        }
        info!(%namespace, holder = %identity, lease = name, "{} acquired", kind.title);
        let (lost_sender, lost) = watch::channel(false);
        let span = tracing::info_span!("lease", %namespace, lease = name);
        let renewal = tokio::spawn(
            kind.renew_until_lost(api.clone(), identity.to_string(), lost_sender)
                .instrument(span),
        );
        Ok(LeaseGuard {
            kind,
            api,
            identity: identity.to_string(),
            renewal,
            lost,
        })
    }

    /// The spec of a Lease held by `identity` from `now`.
    fn held_spec(&self, identity: &str, now: Timestamp, previous: Option<&LeaseSpec>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(identity.into()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(
                previous
                    .and_then(|p| p.lease_transitions)
                    .map_or(0, |t| t + 1),
            ),
            ..LeaseSpec::default()
        }
    }

    /// Renews every `renew_period`; gives up, and says so on `lost`, when another holder took the
    /// Lease or no renewal succeeded for `renew_deadline`.
    async fn renew_until_lost(self, api: Api<Lease>, identity: String, lost: watch::Sender<bool>) {
        let name = self.name;
        let mut last_success = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.renew_period).await;
            let attempt = async {
                let mut lease =
                    bounded(&self, "reading", api.get(name))
                        .await?
                        .map_err(|source| Error::ReadFailed {
                            lease: name,
                            source,
                        })?;
                let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
                if holder.as_deref() != Some(identity.as_str()) {
                    return Ok(Some(holder.unwrap_or_default()));
                }
                if let Some(spec) = lease.spec.as_mut() {
                    spec.renew_time = Some(MicroTime(Timestamp::now()));
                }
                bounded(
                    &self,
                    "renewing",
                    api.replace(name, &PostParams::default(), &lease),
                )
                .await?
                .map_err(|source| Error::WriteFailed {
                    lease: name,
                    source,
                })?;
                Ok::<_, Error>(None)
            };
            match attempt.await {
                Ok(None) => last_success = tokio::time::Instant::now(),
                Ok(Some(holder)) => {
                    warn!(%holder, "{} taken by another instance", self.title);
                    let _ = lost.send(true);
                    return;
                }
                Err(error) if last_success.elapsed() >= self.renew_deadline => {
                    let deadline = self.renew_deadline.as_secs();
                    warn!(%error, "{} not renewed within {deadline}s; giving it up", self.title);
                    let _ = lost.send(true);
                    return;
                }
                Err(error) => warn!(%error, "{} renewal failed; retrying", self.title),
            }
        }
    }
}

impl LeaseGuard {
    /// Resolves if the Lease is lost while held.
    pub async fn lost(&self) {
        self.lost_signal().await
    }

    /// Like [`LeaseGuard::lost`], owning what it waits on, for tasks and shutdown triggers that
    /// outlive a borrow of the guard.
    pub fn lost_signal(&self) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
        let mut lost = self.lost.clone();
        async move {
            let _ = lost.wait_for(|lost| *lost).await;
        }
    }

    /// Stops renewing and deletes the Lease if it is still ours, so a waiter takes over at once.
    pub async fn release(self) -> Result<()> {
        self.renewal.abort();
        let kind = self.kind;
        let name = kind.name;
        let Some(lease) = bounded(&kind, "reading", self.api.get_opt(name))
            .await?
            .map_err(|source| Error::ReadFailed {
                lease: name,
                source,
            })?
        else {
            return Ok(());
        };
        let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
        if holder.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: lease.metadata.resource_version.clone(),
                uid: lease.metadata.uid.clone(),
            }),
            ..DeleteParams::default()
        };
        match bounded(&kind, "releasing", self.api.delete(name, &params)).await? {
            Ok(_) => {
                info!(holder = %self.identity, lease = name, "{} released", kind.title);
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
            Err(source) => Err(Error::ReleaseFailed {
                lease: name,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: &str, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(renewed.parse().unwrap())),
            lease_duration_seconds: Some(seconds),
            ..LeaseSpec::default()
        }
    }

    fn now() -> Timestamp {
        "2026-01-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn no_lease_is_created() {
        assert_eq!(decide(None, "me", now()), Decision::Create);
    }

    #[test]
    fn a_renewing_holder_is_waited_for() {
        let lease = spec("other", "2026-01-01T11:59:50Z", 15);
        assert_eq!(
            decide(Some(&lease), "me", now()),
            Decision::Wait {
                holder: "other".into()
            }
        );
    }

    #[test]
    fn an_expired_or_released_lease_is_taken_over() {
        let expired = spec("other", "2026-01-01T11:59:40Z", 15);
        assert_eq!(decide(Some(&expired), "me", now()), Decision::Take);
        let released = LeaseSpec::default();
        assert_eq!(decide(Some(&released), "me", now()), Decision::Take);
    }

    #[test]
    fn our_own_lease_is_renewed() {
        let lease = spec("me", "2026-01-01T11:59:59Z", 15);
        assert_eq!(decide(Some(&lease), "me", now()), Decision::Renew);
    }

    #[test]
    fn takeovers_count_transitions() {
        let previous = LeaseSpec {
            lease_transitions: Some(2),
            ..spec("other", "2026-01-01T11:00:00Z", 15)
        };
        let spec = NAMESPACE_LOCK.held_spec("me", now(), Some(&previous));
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(
            NAMESPACE_LOCK
                .held_spec("me", now(), None)
                .lease_transitions,
            Some(0)
        );
    }

    #[test]
    fn a_held_lease_states_its_kinds_duration() {
        let short = LeaseKind {
            duration: Duration::from_secs(7),
            ..NAMESPACE_LOCK
        };
        let spec = short.held_spec("me", now(), None);
        assert_eq!(spec.lease_duration_seconds, Some(7));
        // what others judge expiry by: a waiter 8 s later takes over, 6 s later it waits
        let later = |seconds: i64| now() + SignedDuration::from_secs(seconds);
        assert_eq!(decide(Some(&spec), "other", later(8)), Decision::Take);
        assert_eq!(
            decide(Some(&spec), "other", later(6)),
            Decision::Wait {
                holder: "me".into()
            }
        );
    }

    #[test]
    fn the_namespace_lock_keeps_its_timings() {
        // serve's behaviour since the lock exists: 15 s Lease, renewed every 5 s, kept until no
        // renewal succeeded for the whole duration
        assert_eq!(NAMESPACE_LOCK.name, "podbridge-lock");
        assert_eq!(NAMESPACE_LOCK.duration, Duration::from_secs(15));
        assert_eq!(NAMESPACE_LOCK.renew_period, Duration::from_secs(5));
        assert_eq!(NAMESPACE_LOCK.renew_deadline, NAMESPACE_LOCK.duration);
    }
}
