//! The session operator (`podbridge operator`): gives each CI job a namespace of its own, with a
//! ServiceAccount limited to it, quotas, a NetworkPolicy and a kubeconfig, declared by a
//! cluster-scoped BridgeSession and removed with it.
//!
//! `crd` is the resource, `objects` builds the namespace's objects without I/O, `controller`
//! reconciles, `kubeconfig` writes the documents handed to jobs, `leader` lets only one of
//! several replicas reconcile.

pub mod admission;
pub mod broker;
pub mod certs;
pub mod controller;
pub mod crd;
pub mod https;
pub mod kubeconfig;
pub mod leader;
pub mod objects;
pub mod tls_secret;
pub mod webhook;
pub mod webhook_config;

use std::sync::Arc;

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
         deploy/base/crd.yaml)"
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
    #[error("webhook flags: {0}")]
    WebhookFlagsInvalid(String),
    #[error("policies for the admission webhook: {0}")]
    PoliciesInvalid(#[source] Box<crate::policy_store::Error>),
    #[error("admission webhook: {0}")]
    WebhookFailed(#[from] webhook::Error),
    #[error(
        "HTTPS endpoint: {0} (choose another address with --webhook-listen, or \"\" for none)"
    )]
    HttpsListenFailed(#[source] crate::readiness::Error),
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
    /// This operator deployment's id: labelled on its session namespaces
    /// (`podbridge.io/operator`) and part of its webhook configuration's name
    /// (`podbridge-sessions-<id>`), so operators sharing a cluster enforce only their own
    /// sessions. Lowercase letters, digits and '-', at most 40.
    #[arg(long, env = "PODBRIDGE_OPERATOR_ID", default_value = "default", value_parser = operator_id)]
    pub operator_id: String,
    /// Address of the operator's HTTPS server (the admission webhook and the session broker);
    /// empty: no HTTPS server, no webhook, no broker.
    #[arg(long, env = "PODBRIDGE_WEBHOOK_LISTEN", default_value = "")]
    pub webhook_listen: String,
    /// How the API server reaches the webhook inside the cluster: `namespace/service[:port]`
    /// (port 443 when absent). The certificate names `<service>.<namespace>.svc[.cluster.local]`.
    #[arg(
        long,
        env = "PODBRIDGE_WEBHOOK_SERVICE",
        conflicts_with = "webhook_url"
    )]
    pub webhook_service: Option<String>,
    /// How the API server reaches the webhook from outside the cluster: an https URL whose path
    /// is empty or `/validate/sessions`; its host joins the certificate's names.
    #[arg(long, env = "PODBRIDGE_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// Secret with the CA and serving certificate, `namespace/name`; made and renewed by the
    /// operator unless it exists without podbridge's managed-by label (bring your own: ca.crt,
    /// tls.crt, tls.key). Default: `$POD_NAMESPACE/podbridge-operator-tls`.
    #[arg(long, env = "PODBRIDGE_TLS_SECRET")]
    pub tls_secret: Option<String>,
    /// Further DNS names or IP addresses for the serving certificate (repeat, or comma-separate).
    #[arg(long, env = "PODBRIDGE_TLS_EXTRA_SAN", value_delimiter = ',')]
    pub tls_extra_san: Vec<String>,
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

fn operator_id(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 40
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?}: use 1 to 40 lowercase letters, digits and '-' (not at either end)"
        ))
    }
}

/// The webhook's settings from the flags, checked before the cluster is contacted; `None` when
/// `--webhook-listen` is empty.
fn webhook_settings(args: &OperatorArgs) -> Result<Option<(String, webhook::Settings)>> {
    if args.webhook_listen.is_empty() {
        return Ok(None);
    }
    let invalid = Error::WebhookFlagsInvalid;
    let target = match (&args.webhook_service, &args.webhook_url) {
        (Some(service), None) => webhook_config::Target::service(service).map_err(invalid)?,
        (None, Some(url)) => webhook_config::Target::Url(webhook_url(url).map_err(invalid)?),
        _ => {
            return Err(invalid(
                "--webhook-listen needs --webhook-service namespace/name[:port] or \
                 --webhook-url https://host:port (how the API server reaches the webhook)"
                    .into(),
            ))
        }
    };
    let secret: tls_secret::SecretRef = match &args.tls_secret {
        Some(text) => text.parse().map_err(invalid)?,
        None => match std::env::var("POD_NAMESPACE") {
            Ok(namespace) if !namespace.is_empty() => tls_secret::SecretRef {
                namespace,
                name: "podbridge-operator-tls".into(),
            },
            _ => {
                return Err(invalid(
                    "--tls-secret namespace/name is needed outside a pod (no POD_NAMESPACE)".into(),
                ))
            }
        },
    };
    let mut extra = args.tls_extra_san.clone();
    if let webhook_config::Target::Url(url) = &target {
        extra.extend(
            url.parse::<axum::http::Uri>()
                .ok()
                .and_then(|uri| uri.host().map(|h| h.trim_matches(['[', ']']).to_string())),
        );
    }
    let names = certs::Names::for_service(target.service_name(), &extra);
    Ok(Some((
        args.webhook_listen.clone(),
        webhook::Settings {
            operator_id: args.operator_id.clone(),
            target,
            secret,
            names,
        },
    )))
}

/// `--webhook-url` with the served path: an https URL with a host, whose path is empty (the
/// path is added) or the webhook's own.
fn webhook_url(text: &str) -> Result<String, String> {
    let uri: axum::http::Uri = text
        .parse()
        .map_err(|e| format!("--webhook-url {text:?}: {e}"))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        return Err(format!(
            "--webhook-url {text:?}: the API server calls webhooks over https://host[:port]"
        ));
    }
    match uri.path() {
        "" | "/" => Ok(format!(
            "{}{}",
            text.trim_end_matches('/'),
            webhook_config::WEBHOOK_PATH
        )),
        path if path == webhook_config::WEBHOOK_PATH => Ok(text.to_string()),
        path => Err(format!(
            "--webhook-url {text:?}: path {path} is not served; leave it out or use {}",
            webhook_config::WEBHOOK_PATH
        )),
    }
}

/// Every route of the operator's HTTPS server, composed in this one place: the admission
/// webhook and the session broker share its port, certificate and renewal.
pub fn https_router(webhook: webhook::WebhookState, broker: broker::BrokerState) -> axum::Router {
    axum::Router::new()
        .merge(webhook::router(webhook))
        .merge(broker::router(broker))
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

/// Connects, checks that the CRD is served, starts the HTTPS server and webhook when asked, and
/// runs the controller until a signal. `config` names the policies the webhook enforces (as for
/// `serve`: `--policies`, else the built-in set).
pub async fn run(args: &OperatorArgs, config: &crate::config::Config) -> Result<()> {
    let webhook = webhook_settings(args)?;
    let policies = match &webhook {
        Some(_) => Some(crate::policy_store::shared(
            crate::policy_store::load(config).map_err(|e| Error::PoliciesInvalid(Box::new(e)))?,
        )),
        None => None,
    };
    let policy_config = config.clone();
    let config = kube::Config::infer().await?;
    let server = args.session_server.clone().unwrap_or_else(|| {
        config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string()
    });
    let client =
        crate::cluster::client(config).map_err(|e| Error::ClientBuildFailed(Box::new(e)))?;
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
    // Kept alive for the life of the operator: dropping it stops policy reloads.
    let mut _policy_watcher = None;
    if let (Some((listen, settings)), Some(policies)) = (webhook, policies) {
        _policy_watcher = crate::policy_store::watch(policy_config, policies.clone())
            .map_err(|e| Error::PoliciesInvalid(Box::new(e)))?;
        let (served, material) = webhook::prepare(&client, &settings).await?;
        let listener = crate::readiness::bind(&listen)
            .await
            .map_err(Error::HttpsListenFailed)?;
        let namespaces = webhook::ClusterNamespaces::start(client.clone(), &args.operator_id);
        let router = https_router(
            webhook::WebhookState {
                policies,
                namespaces: Arc::new(namespaces),
            },
            broker::BrokerState {
                client: client.clone(),
                server: server.clone(),
            },
        );
        // Job pods' podbridge checks the broker's certificate against this CA.
        tokio::spawn(broker::publish_ca(client.clone(), settings.secret.clone()));
        let serving = served.clone();
        // Ends with the process: a webhook call in flight is retried by the API server.
        tokio::spawn(async move {
            if let Err(error) =
                https::serve_https(listener, router, serving, std::future::pending()).await
            {
                tracing::error!(%error, "HTTPS endpoint stopped");
            }
        });
        tracing::info!(
            %listen,
            configuration = %webhook_config::configuration_name(&settings.operator_id),
            secret = %settings.secret,
            "Admission webhook serving"
        );
        tokio::spawn(webhook::upkeep(client.clone(), settings, served, material));
    }
    let stopping = stop_on_signals();
    match args.election() {
        None => {
            tracing::info!(%server, concurrency = args.concurrency, operator_id = %args.operator_id, "Operator started (no leader election: reconciling alone)");
            crate::metrics::operator().set_leader(true);
            let mut stopping = stopping;
            let stop = async move {
                let _ = stopping.wait_for(|stopping| *stopping).await;
            };
            controller::run(
                controller::Context::new(client, server, args.operator_id.clone()),
                args.concurrency,
                stop,
            )
            .await;
        }
        Some(election) => {
            tracing::info!(%server, concurrency = args.concurrency, operator_id = %args.operator_id, namespace = %election.namespace, identity = %election.identity, lease = LEADERSHIP.name, "Operator started (leader election)");
            leader::run_elected(
                client,
                server,
                args.operator_id.clone(),
                args.concurrency,
                election,
                stopping,
            )
            .await?;
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
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Command {
        #[command(flatten)]
        args: OperatorArgs,
    }

    fn args(flags: &[&str]) -> Result<OperatorArgs, clap::Error> {
        let mut all = vec!["operator"];
        all.extend(flags);
        Command::try_parse_from(all).map(|c| c.args)
    }

    #[test]
    fn no_listen_no_webhook() {
        assert!(webhook_settings(&args(&[]).unwrap()).unwrap().is_none());
    }

    #[test]
    fn the_webhook_needs_exactly_one_target_and_a_secret() {
        let only_listen =
            args(&["--webhook-listen", "127.0.0.1:0", "--tls-secret", "ns/s"]).unwrap();
        assert!(webhook_settings(&only_listen).is_err());
        assert!(args(&[
            "--webhook-listen",
            "127.0.0.1:0",
            "--webhook-service",
            "a/b",
            "--webhook-url",
            "https://x"
        ])
        .is_err());
        let (listen, settings) = webhook_settings(
            &args(&[
                "--webhook-listen",
                "0.0.0.0:9443",
                "--webhook-url",
                "https://10.244.0.1:9443",
                "--tls-secret",
                "ns/tls",
                "--operator-id",
                "e2e-1",
                "--tls-extra-san",
                "a.example,10.0.0.1",
            ])
            .unwrap(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(listen, "0.0.0.0:9443");
        assert_eq!(
            settings.target,
            webhook_config::Target::Url("https://10.244.0.1:9443/validate/sessions".into())
        );
        assert!(settings.names.ips.contains(&"10.244.0.1".parse().unwrap()));
        assert!(settings.names.ips.contains(&"10.0.0.1".parse().unwrap()));
        assert!(settings.names.dns.contains("a.example"));
        assert_eq!(settings.secret.to_string(), "ns/tls");
    }

    #[test]
    fn urls_and_ids_are_checked() {
        assert!(webhook_url("http://x:1").is_err());
        assert!(webhook_url("https://x:1/other").is_err());
        assert_eq!(
            webhook_url("https://x:1/").unwrap(),
            "https://x:1/validate/sessions"
        );
        assert!(args(&["--operator-id", "Blue"]).is_err());
        assert!(args(&["--operator-id", "-x"]).is_err());
        assert_eq!(args(&[]).unwrap().operator_id, "default");
    }

    /// The flags of an election, as clap reads them (an empty value stays empty).
    fn election_args(namespace: Option<&str>, identity: Option<&str>) -> OperatorArgs {
        let mut flags = Vec::new();
        if let Some(namespace) = namespace {
            flags.extend(["--leader-election-namespace", namespace]);
        }
        if let Some(identity) = identity {
            flags.extend(["--leader-election-identity", identity]);
        }
        args(&flags).unwrap()
    }

    #[test]
    fn no_namespace_means_reconciling_alone() {
        assert!(election_args(None, Some("pod-a")).election().is_none());
        // POD_NAMESPACE="" (or the flag given empty) turns election off as well
        assert!(election_args(Some(""), Some("pod-a")).election().is_none());
    }

    #[test]
    fn a_namespace_elects_under_the_pod_name() {
        let election = election_args(Some("podbridge-system"), Some("pod-a"))
            .election()
            .unwrap();
        assert_eq!(election.namespace, "podbridge-system");
        assert_eq!(election.identity, "pod-a");
    }

    #[test]
    fn without_a_pod_name_the_identity_is_unique_per_process() {
        let election = election_args(Some("ns"), None).election().unwrap();
        assert!(
            election
                .identity
                .ends_with(&format!("-{}", std::process::id())),
            "{}",
            election.identity
        );
        let empty = election_args(Some("ns"), Some("")).election().unwrap();
        assert_eq!(empty.identity, election.identity);
    }
}
