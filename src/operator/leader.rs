//! Leader election for the operator: with several replicas, only the holder of the Lease
//! [`LEADERSHIP`] in the operator's own namespace reconciles; the others keep serving what the
//! process serves (metrics, and whatever else `operator::run` started before the election) and
//! wait to take over. The Lease itself is `runtime::lease`, the one implementation `serve`'s
//! namespace lock uses too, here with client-go's leader-election timings.
//!
//! A leader that loses the Lease (taken over, or not renewed within the deadline) stops its
//! controller and stands by again rather than exiting: the process keeps its listeners, and a
//! controller started afresh lists everything again, so nothing a former term cached is trusted.

use std::time::Duration;

use kube::Client;
use tokio::sync::watch;
use tracing::{info, warn};

use super::controller::{self, Context};
use super::{Error, Result};
use crate::labels;
use crate::runtime::lease::LeaseKind;

/// The operator's leadership Lease. Timings are client-go's defaults (15 s Lease, 10 s renew
/// deadline, 2 s retry): a leader stops reconciling 5 s before a standby may start, and a
/// standby takes over within ~17 s of the leader's last renewal.
pub const LEADERSHIP: LeaseKind = LeaseKind {
    name: "podbridge-operator",
    purpose: "operator leadership",
    title: "Operator leadership",
    managed_by: labels::MANAGED_BY_OPERATOR,
    duration: Duration::from_secs(15),
    renew_period: Duration::from_secs(2),
    renew_deadline: Duration::from_secs(10),
    retry_period: Duration::from_secs(2),
};

/// Where and as whom this replica runs for leadership.
#[derive(Debug, Clone)]
pub struct Election {
    /// Namespace of the Lease: the operator's own.
    pub namespace: String,
    /// This replica's name in the Lease: its pod name.
    pub identity: String,
}

/// Resolves once `stopping` says true (at once if it already does).
async fn stopped(mut stopping: watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stopping| *stopping).await;
}

/// Stands by until this replica leads, reconciles until the Lease is lost, and again, until
/// `stopping`; then releases the Lease so a standby takes over at once.
pub async fn run_elected(
    client: Client,
    server: String,
    operator_id: String,
    concurrency: u16,
    election: Election,
    stopping: watch::Receiver<bool>,
) -> Result<()> {
    let metrics = crate::metrics::operator();
    let Election {
        namespace,
        identity,
    } = election;
    loop {
        metrics.set_leader(false);
        let acquired = tokio::select! {
            acquired = LEADERSHIP.acquire(client.clone(), &namespace, &identity) => acquired,
            _ = stopped(stopping.clone()) => return Ok(()),
        };
        let guard = match acquired {
            Ok(guard) => guard,
            // A standby outlives API server hiccups; a lasting refusal (RBAC) shows in the log.
            Err(error) => {
                warn!(%error, %namespace, "Standing for the operator leadership failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(LEADERSHIP.retry_period) => continue,
                    _ = stopped(stopping.clone()) => return Ok(()),
                }
            }
        };
        metrics.set_leader(true);
        info!(%identity, %namespace, lease = LEADERSHIP.name, "Leading: reconciling sessions");
        let lost = guard.lost_signal();
        let stop = stopped(stopping.clone());
        controller::run(
            Context::new(client.clone(), server.clone(), operator_id.clone()),
            concurrency,
            async move {
                tokio::select! {
                    _ = lost => {}
                    _ = stop => {}
                }
            },
        )
        .await;
        metrics.set_leader(false);
        metrics.clear_session_phases();
        if *stopping.borrow() {
            return guard.release().await.map_err(Error::LeadershipFailed);
        }
        warn!(%identity, lease = LEADERSHIP.name, "Leadership lost: reconciling stopped; standing by");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_stops_before_a_standby_may_start() {
        // the margin that keeps two replicas from reconciling at once
        assert!(LEADERSHIP.renew_deadline < LEADERSHIP.duration);
        // several renewals fit in the deadline, so one failed call does not cost the Lease
        assert!(LEADERSHIP.renew_period * 3 <= LEADERSHIP.renew_deadline);
        // a standby notices an expired Lease within the ~20 s a CI platform tolerates
        assert!(LEADERSHIP.duration + LEADERSHIP.retry_period <= Duration::from_secs(20));
    }

    #[tokio::test]
    async fn stopped_resolves_on_the_signal_and_after_it() {
        let (sender, receiver) = watch::channel(false);
        let waiting = tokio::spawn(stopped(receiver.clone()));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        sender.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("stopped() resolves once stopping is true")
            .unwrap();
        // a term that starts after the signal ends at once
        tokio::time::timeout(Duration::from_secs(1), stopped(receiver))
            .await
            .expect("stopped() resolves when stopping already is true");
    }
}
