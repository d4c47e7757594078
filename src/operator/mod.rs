//! The session operator (`podbridge operator`): gives each CI job a namespace of its own, with a
//! ServiceAccount limited to it, quotas, a NetworkPolicy and a kubeconfig, declared by a
//! cluster-scoped BridgeSession and removed with it.
//!
//! `crd` is the resource, `objects` builds the namespace's objects without I/O, `controller`
//! reconciles, `kubeconfig` writes the documents handed to jobs, `leader` lets only one of
//! several replicas reconcile.

pub mod controller;
pub mod crd;
pub mod kubeconfig;
pub mod leader;
pub mod objects;

pub use leader::LEADERSHIP;

use clap::Args;

/// Errors of the operator, named after the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no Kubernetes configuration (kubeconfig or in-cluster): {0}")]
    ConfigInferFailed(#[from] kube::config::InferConfigError),
    #[error("creating the Kubernetes client: {0}")]
    ClientBuildFailed(#[source] Box<kube::Error>),
    #[error(
        "the BridgeSession CRD is not installed or not readable: {source} (kubectl apply -f \
         deploy/crd.yaml)"
    )]
    CrdMissing {
        #[source]
        source: Box<kube::Error>,
    },
    #[error("applying {kind} {namespace}/{name}: {source}")]
    ApplyFailed {
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("reading {kind} {name}: {source}")]
    ReadFailed {
        kind: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("deleting {kind} {name}: {source}")]
    DeleteFailed {
        kind: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("patching the status of session {session}: {source}")]
    StatusPatchFailed {
        session: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("patching the finalizers of session {session}: {source}")]
    FinalizerPatchFailed {
        session: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("{operation}: no answer from the API server in time")]
    TimedOut { operation: String },
    #[error(
        "metrics endpoint: {0} (choose another address with --metrics-listen, or \"\" for none)"
    )]
    MetricsListenFailed(#[source] crate::readiness::Error),
    #[error("operator leadership: {0}")]
    LeadershipFailed(#[source] crate::runtime::lease::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `podbridge operator` flags.
#[derive(Debug, Clone, Args)]
pub struct OperatorArgs {
    /// Print the BridgeSession CRD (YAML) and exit.
    #[arg(long)]
    pub print_crd: bool,
    /// API server URL written into session kubeconfigs; default: the operator's own (in a pod:
    /// the `kubernetes` Service).
    #[arg(long, env = "PODBRIDGE_SESSION_SERVER")]
    pub session_server: Option<String>,
    /// Sessions reconciled at the same time.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,
    /// Address of `GET /metrics` (Prometheus text format: sessions by phase, reconciles by
    /// result); loopback unless widened, empty for none.
    #[arg(
        long,
        env = "PODBRIDGE_OPERATOR_METRICS_LISTEN",
        default_value = DEFAULT_METRICS_LISTEN
    )]
    pub metrics_listen: String,
    /// Namespace of the leadership Lease (in a pod: its own, from the downward API). With one,
    /// replicas elect a leader and only the leader reconciles; empty or unset, this process
    /// reconciles alone (one replica, or a run on a host).
    #[arg(long, env = "POD_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// This replica's name in the leadership Lease; default: the pod name (POD_NAME), else the
    /// host name and process ID.
    #[arg(long, env = "POD_NAME")]
    pub leader_election_identity: Option<String>,
}

impl OperatorArgs {
    /// The election this process takes part in, if any.
    fn election(&self) -> Option<leader::Election> {
        let namespace = self
            .leader_election_namespace
            .clone()
            .filter(|namespace| !namespace.is_empty())?;
        let identity = self
            .leader_election_identity
            .clone()
            .filter(|identity| !identity.is_empty())
            .unwrap_or_else(|| {
                let host = std::fs::read_to_string("/etc/hostname")
                    .map(|name| name.trim().to_string())
                    .unwrap_or_default();
                format!("{host}-{}", std::process::id())
            });
        Some(leader::Election {
            namespace,
            identity,
        })
    }
}

/// Where the operator's metrics are served unless `--metrics-listen` says otherwise: loopback,
/// two ports after the readiness endpoints' 2477 (2478 is where the e2e tests put a second readiness server).
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:2479";

/// Connects, checks that the CRD is served, and runs the controller until a signal.
pub async fn run(args: &OperatorArgs) -> Result<()> {
    let config = kube::Config::infer().await?;
    let server = args.session_server.clone().unwrap_or_else(|| {
        config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string()
    });
    let client =
        kube::Client::try_from(config).map_err(|e| Error::ClientBuildFailed(Box::new(e)))?;
    let sessions: kube::Api<crd::BridgeSession> = kube::Api::all(client.clone());
    let probe = kube::api::ListParams::default().limit(1);
    match tokio::time::timeout(std::time::Duration::from_secs(15), sessions.list(&probe)).await {
        Ok(Ok(_)) => {}
        Ok(Err(source)) => {
            return Err(Error::CrdMissing {
                source: Box::new(source),
            })
        }
        Err(_) => {
            return Err(Error::TimedOut {
                operation: "list BridgeSessions".into(),
            })
        }
    }
    // Bound before the controller runs, so a taken port stops the operator at once.
    if !args.metrics_listen.is_empty() {
        let listener = crate::readiness::bind(&args.metrics_listen)
            .await
            .map_err(Error::MetricsListenFailed)?;
        let listen = args.metrics_listen.clone();
        // Ends with the process: nothing to drain.
        tokio::spawn(async move {
            if let Err(error) = crate::readiness::serve_metrics(
                &listen,
                listener,
                crate::metrics::render_operator,
                std::future::pending(),
            )
            .await
            {
                tracing::error!(%error, "Metrics endpoint stopped");
            }
        });
    }
    let stopping = stop_on_signals();
    match args.election() {
        None => {
            tracing::info!(%server, concurrency = args.concurrency, "Operator started (no leader election: reconciling alone)");
            crate::metrics::operator().set_leader(true);
            let mut stopping = stopping;
            let stop = async move {
                let _ = stopping.wait_for(|stopping| *stopping).await;
            };
            controller::run(
                controller::Context::new(client, server),
                args.concurrency,
                stop,
            )
            .await;
        }
        Some(election) => {
            tracing::info!(%server, concurrency = args.concurrency, namespace = %election.namespace, identity = %election.identity, lease = LEADERSHIP.name, "Operator started (leader election)");
            leader::run_elected(client, server, args.concurrency, election, stopping).await?;
        }
    }
    tracing::info!("Operator stopped");
    Ok(())
}

/// Says true on the first SIGTERM or Ctrl-C (drain: reconciles in flight finish, the Lease is
/// released); a second one exits at once.
fn stop_on_signals() -> tokio::sync::watch::Receiver<bool> {
    let (sender, stopping) = tokio::sync::watch::channel(false);
    // Registered before this returns, so a SIGTERM from here on drains rather than kills.
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    tokio::spawn(async move {
        let Ok(mut terminate) = terminate else {
            tracing::error!("Cannot listen for SIGTERM; stop the operator with SIGKILL");
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("Stopping: finishing the reconciles in flight (signal again to abort)");
        let _ = sender.send(true);
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::warn!("Second signal: aborting");
        std::process::exit(130);
    });
    stopping
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(namespace: Option<&str>, identity: Option<&str>) -> OperatorArgs {
        OperatorArgs {
            print_crd: false,
            session_server: None,
            concurrency: 1,
            metrics_listen: String::new(),
            leader_election_namespace: namespace.map(str::to_string),
            leader_election_identity: identity.map(str::to_string),
        }
    }

    #[test]
    fn no_namespace_means_reconciling_alone() {
        assert!(args(None, Some("pod-a")).election().is_none());
        // POD_NAMESPACE="" (or the flag given empty) turns election off as well
        assert!(args(Some(""), Some("pod-a")).election().is_none());
    }

    #[test]
    fn a_namespace_elects_under_the_pod_name() {
        let election = args(Some("podbridge-system"), Some("pod-a"))
            .election()
            .unwrap();
        assert_eq!(election.namespace, "podbridge-system");
        assert_eq!(election.identity, "pod-a");
    }

    #[test]
    fn without_a_pod_name_the_identity_is_unique_per_process() {
        let election = args(Some("ns"), None).election().unwrap();
        assert!(
            election
                .identity
                .ends_with(&format!("-{}", std::process::id())),
            "{}",
            election.identity
        );
        let empty = args(Some("ns"), Some("")).election().unwrap();
        assert_eq!(empty.identity, election.identity);
    }
}
