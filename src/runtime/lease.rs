//! runtime::lease: the namespace lock (`lock = true`). `serve` takes the `coordination.k8s.io/v1`
//! Lease `podbridge-lock` before binding any port, renews it while serving and deletes it on
//! shutdown; a second instance waits, saying who holds it, and takes over once the holder
//! releases it or stops renewing for the Lease duration.
//!
//! Every write is a `create` or a `replace` carrying the `resourceVersion` that was read, so two
//! instances racing for an expired lock cannot both win: the loser gets 409 and reads again.
//! Timings follow client-go's leader election, shorter than kubedock's 60 s so a crashed CI job's
//! successor waits at most ~15 s.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn, Instrument};

use crate::labels;

/// Name of the lock Lease in the namespace.
pub const LOCK_NAME: &str = "podbridge-lock";
/// How long a holder that stopped renewing keeps the lock.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews.
const RENEW_PERIOD: Duration = Duration::from_secs(5);
/// How often a waiting instance reads the Lease again.
const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Bound on every API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading Lease {LOCK_NAME}: {0}")]
    ReadFailed(#[source] kube::Error),
    #[error("writing Lease {LOCK_NAME}: {0}")]
    WriteFailed(#[source] kube::Error),
    #[error("releasing Lease {LOCK_NAME}: {0}")]
    ReleaseFailed(#[source] kube::Error),
    #[error("{operation} Lease {LOCK_NAME} timed out after {}s", CALL_TIMEOUT.as_secs())]
    TimedOut { operation: &'static str },
    #[error("Lease {LOCK_NAME} was lost while serving (taken over, or not renewed in time)")]
    Lost,
}

/// What to do with the Lease as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// No Lease yet.
    Create,
    /// Free or expired: take it over.
    Take,
    /// Already ours (a restart with the same instance ID).
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

async fn bounded<T>(
    operation: &'static str,
    call: impl std::future::Future<Output = std::result::Result<T, kube::Error>>,
) -> Result<std::result::Result<T, kube::Error>> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| Error::TimedOut { operation })
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// The held lock; renewed by a task until [`LockGuard::release`].
pub struct LockGuard {
    api: Api<Lease>,
    identity: String,
    renewal: tokio::task::JoinHandle<()>,
    lost: watch::Receiver<bool>,
}

/// Waits until this instance holds the lock (forever, if the holder keeps renewing).
pub async fn acquire(client: Client, namespace: &str, identity: &str) -> Result<LockGuard> {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let mut announced: Option<String> = None;
    loop {
        let current = bounded("reading", api.get_opt(LOCK_NAME))
            .await?
            .map_err(Error::ReadFailed)?;
        let now = Timestamp::now();
        let decision = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            identity,
            now,
        );
        let written = match (decision, current) {
            (Decision::Wait { holder }, _) => {
                if announced.as_deref() != Some(holder.as_str()) {
                    info!(%namespace, %holder, lease = LOCK_NAME, "Waiting for the namespace lock");
                    announced = Some(holder);
                }
                tokio::time::sleep(RETRY_PERIOD).await;
                continue;
            }
            (Decision::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LOCK_NAME.into()),
                        labels: Some(
                            [(
                                labels::MANAGED_BY.to_string(),
                                labels::MANAGED_BY_VALUE.to_string(),
                            )]
                            .into(),
                        ),
                        ..ObjectMeta::default()
                    },
                    spec: Some(held_spec(identity, now, None)),
                };
                bounded("creating", api.create(&PostParams::default(), &lease)).await?
            }
            (decision, Some(mut lease)) => {
                let previous = lease.spec.take();
                let mut spec = held_spec(identity, now, previous.as_ref());
                if decision == Decision::Renew {
                    spec.acquire_time = previous.as_ref().and_then(|p| p.acquire_time.clone());
                    spec.lease_transitions = previous.as_ref().and_then(|p| p.lease_transitions);
                }
                lease.spec = Some(spec);
                bounded(
                    "taking over",
                    api.replace(LOCK_NAME, &PostParams::default(), &lease),
                )
                .await?
            }
        };
        match written {
            Ok(_) => break,
            // someone else wrote first: read again
            Err(error) if is_conflict(&error) => continue,
            Err(error) => return Err(Error::WriteFailed(error)),
        }
    }
    info!(%namespace, holder = %identity, lease = LOCK_NAME, "Namespace lock acquired");
    let (lost_sender, lost) = watch::channel(false);
    let span = tracing::info_span!("lock", %namespace, lease = LOCK_NAME);
    let renewal = tokio::spawn(
        renew_until_lost(api.clone(), identity.to_string(), lost_sender).instrument(span),
    );
    Ok(LockGuard {
        api,
        identity: identity.to_string(),
        renewal,
        lost,
    })
}

/// The spec of a Lease held by `identity` from `now`.
fn held_spec(identity: &str, now: Timestamp, previous: Option<&LeaseSpec>) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(identity.into()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
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

/// Renews every [`RENEW_PERIOD`]; gives up, and says so on `lost`, when another holder took the
/// Lease or no renewal succeeded for [`LEASE_DURATION`].
async fn renew_until_lost(api: Api<Lease>, identity: String, lost: watch::Sender<bool>) {
    let mut last_success = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(RENEW_PERIOD).await;
        let attempt = async {
            let mut lease = bounded("reading", api.get(LOCK_NAME))
                .await?
                .map_err(Error::ReadFailed)?;
            let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
            if holder.as_deref() != Some(identity.as_str()) {
                return Ok(Some(holder.unwrap_or_default()));
            }
            if let Some(spec) = lease.spec.as_mut() {
                spec.renew_time = Some(MicroTime(Timestamp::now()));
            }
            bounded(
                "renewing",
                api.replace(LOCK_NAME, &PostParams::default(), &lease),
            )
            .await?
            .map_err(Error::WriteFailed)?;
            Ok::<_, Error>(None)
        };
        match attempt.await {
            Ok(None) => last_success = tokio::time::Instant::now(),
            Ok(Some(holder)) => {
                warn!(%holder, "Namespace lock taken by another instance");
                let _ = lost.send(true);
                return;
            }
            Err(error) if last_success.elapsed() >= LEASE_DURATION => {
                warn!(%error, "Namespace lock not renewed within the lease duration");
                let _ = lost.send(true);
                return;
            }
            Err(error) => warn!(%error, "Namespace lock renewal failed; retrying"),
        }
    }
}

impl LockGuard {
    /// Resolves if the lock is lost while serving.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        let _ = lost.wait_for(|lost| *lost).await;
    }

    /// Stops renewing and deletes the Lease if it is still ours, so a waiter takes over at once.
    pub async fn release(self) -> Result<()> {
        self.renewal.abort();
        let Some(lease) = bounded("reading", self.api.get_opt(LOCK_NAME))
            .await?
            .map_err(Error::ReadFailed)?
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
        match bounded("releasing", self.api.delete(LOCK_NAME, &params)).await? {
            Ok(_) => {
                info!(holder = %self.identity, lease = LOCK_NAME, "Namespace lock released");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
            Err(error) => Err(Error::ReleaseFailed(error)),
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
        let spec = held_spec("me", now(), Some(&previous));
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(held_spec("me", now(), None).lease_transitions, Some(0));
    }
}
