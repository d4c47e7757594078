//! Where `serve` gets its Kubernetes credentials: the environment (kubeconfig, in-cluster), or
//! the operator's session broker (`session_broker`), which hands this pod its session's
//! namespace, project and kubeconfig in exchange for a token bound to the pod.
//!
//! Broker credentials live in memory only: they are never written to a file or served on an
//! endpoint, because in the sidecar shape every file and port podbridge has is one step from the
//! job container.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::{info, warn};

use crate::config::PolicyProfile;

/// The credentials the broker gave, for every later client of this process.
static GRANTED: OnceLock<kube::Config> = OnceLock::new();

/// One step of the exchange (connect, handshake, answer).
const STEP_TIMEOUT: Duration = Duration::from_secs(100);
/// How long `serve` keeps asking while the broker is unreachable or the session not ready.
const RETRY_FOR: Duration = Duration::from_secs(180);
const MAX_ANSWER_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("session broker: {what} {path}: {reason}")]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("session broker: {url} is not an https:// URL with a host")]
    BadUrl { url: String },
    #[error("session broker {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("session broker {url} refused this pod ({status}): {message}")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    #[error("session broker {url}: the answer is not a session grant: {reason}")]
    BadAnswer { url: String, reason: String },
    #[error(
        "the session broker decides the {what} ({granted:?}); the configuration asks for \
         {configured:?}: remove `{what}` from podbridge's flags, file and environment"
    )]
    Conflict {
        what: &'static str,
        granted: String,
        configured: String,
    },
}

/// Where to ask and how to prove the pod.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub url: String,
    pub ca_file: Option<PathBuf>,
    pub token_file: PathBuf,
}

/// What the broker granted.
#[derive(Debug, Clone, Deserialize)]
pub struct Grant {
    pub session: String,
    pub namespace: String,
    pub project: String,
    /// The session's Pod Security profile; older brokers did not say (baseline).
    #[serde(default)]
    pub policy: PolicyProfile,
    pub kubeconfig: String,
}

/// The Kubernetes configuration every client of this process uses: the broker's grant once
/// there is one, else inferred from the environment.
pub async fn config() -> Result<kube::Config, kube::config::InferConfigError> {
    match GRANTED.get() {
        Some(config) => Ok(config.clone()),
        None => kube::Config::infer().await,
    }
}

/// How many idle connections to the API server a client keeps, and for how long. hyper's own
/// defaults (no bound, 90 s) kept every connection of a burst: 200 parallel `docker rm -f` left
/// ~200 TLS connections with their buffers in the resident set long after the burst.
const POOL_MAX_IDLE: usize = 16;
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for `config`, as `kube::Client::try_from` builds it (connect timeout, retry of
/// 429/503/504, auth, extra headers) but with a bounded connection pool. A configured proxy is
/// left to kube's own builder, which knows its protocols.
pub fn client(config: kube::Config) -> Result<kube::Client, kube::Error> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    use kube::client::retry::RetryPolicy;
    use kube::client::ConfigExt as _;

    if config.proxy_url.is_some() {
        return kube::Client::try_from(config);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    let https = config.rustls_https_connector_with_connector(http)?;
    let pooled = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(POOL_MAX_IDLE)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .build(https);
    let retry = config
        .default_retry
        .then(|| tower::retry::RetryLayer::new(RetryPolicy::server_retry()));
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(pooled);
    Ok(kube::Client::new(service, config.default_namespace))
}

/// Asks the broker until it grants a session, refuses, or [`RETRY_FOR`] runs out; a grant is
/// installed for [`config`].
pub async fn obtain(settings: &BrokerSettings) -> Result<Grant, ClusterError> {
    let deadline = tokio::time::Instant::now() + RETRY_FOR;
    let mut pause = Duration::from_millis(250);
    loop {
        match ask(settings).await {
            Ok(grant) => {
                install(&grant, &settings.url).await?;
                info!(session = %grant.session, namespace = %grant.namespace, project = %grant.project, "Session granted by the broker");
                return Ok(grant);
            }
            // The session may still be coming up, the broker restarting: ask again.
            Err(error @ (ClusterError::Unreachable { .. } | ClusterError::Refused { .. }))
                if retryable(&error) && tokio::time::Instant::now() < deadline =>
            {
                warn!(%error, "Session broker not answering yet; asking again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(error),
        }
    }
}

fn retryable(error: &ClusterError) -> bool {
    match error {
        ClusterError::Unreachable { .. } => true,
        ClusterError::Refused { status, .. } => *status >= 500,
        _ => false,
    }
}

async fn install(grant: &Grant, url: &str) -> Result<(), ClusterError> {
    let bad = |reason: String| ClusterError::BadAnswer {
        url: url.to_string(),
        reason,
    };
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&grant.kubeconfig).map_err(|e| bad(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| bad(e.to_string()))?;
    // A second grant in one process would be a bug; the first stays.
    let _ = GRANTED.set(config);
    Ok(())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ClusterError> {
    std::fs::read(path).map_err(|e| ClusterError::File {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, ClusterError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let bad = |reason: String| ClusterError::File {
                what: "CA file",
                path: path.to_path_buf(),
                reason,
            };
            let certs = crate::api::server::tls::read_certificates("CA certificate", path)
                .map_err(|e| bad(e.to_string()))?;
            for cert in certs {
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClusterError::File {
            what: "TLS settings",
            path: PathBuf::new(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One request: POST with the pod's token, the grant or the broker's `{"message"}`.
async fn ask(settings: &BrokerSettings) -> Result<Grant, ClusterError> {
    let url = settings.url.as_str();
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| ClusterError::BadUrl { url: url.into() })?;
    let (Some("https"), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return Err(ClusterError::BadUrl { url: url.into() });
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    // Read on every attempt: a projected token is rotated on disk by the kubelet.
    let token = String::from_utf8_lossy(&read("token file", &settings.token_file)?)
        .trim()
        .to_string();
    let tls = tls_config(settings.ca_file.as_deref())?;
    let unreachable = |reason: String| ClusterError::Unreachable {
        url: url.into(),
        reason,
    };
    let timed_out = |_| unreachable("no answer in time".into());
    let stream = timeout(STEP_TIMEOUT, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(timed_out)?
        .map_err(|e| unreachable(e.to_string()))?;
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| ClusterError::BadUrl { url: url.into() })?;
    let stream = timeout(
        STEP_TIMEOUT,
        tokio_rustls::TlsConnector::from(tls).connect(name, stream),
    )
    .await
    .map_err(timed_out)?
    .map_err(|e| unreachable(format!("TLS: {e}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(&host);
    let request = hyper::Request::post(path)
        .header(HOST, authority)
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .map_err(|e| unreachable(e.to_string()))?;
    let response = timeout(STEP_TIMEOUT, sender.send_request(request))
        .await
        .map_err(timed_out)?
        .map_err(|e| unreachable(e.to_string()))?;
    let status = response.status();
    let body = timeout(
        STEP_TIMEOUT,
        Limited::new(response.into_body(), MAX_ANSWER_BYTES).collect(),
    )
    .await
    .map_err(timed_out)?
    .map_err(|e| unreachable(e.to_string()))?
    .to_bytes();
    if status != StatusCode::OK {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
        return Err(ClusterError::Refused {
            url: url.into(),
            status: status.as_u16(),
            message,
        });
    }
    serde_json::from_slice(&body).map_err(|e| ClusterError::BadAnswer {
        url: url.into(),
        reason: e.to_string(),
    })
}

/// The granted namespace, project and policy profile replace unset configuration; a
/// configuration that names others is refused rather than silently overruled, so a
/// misconfigured sidecar is seen.
pub fn reconcile_with_config(
    grant: &Grant,
    namespace: &mut Option<String>,
    project: &mut Option<String>,
    profile: &mut Option<PolicyProfile>,
) -> Result<(), ClusterError> {
    for (what, granted, configured) in [
        ("namespace", &grant.namespace, &mut *namespace),
        ("project", &grant.project, &mut *project),
    ] {
        match configured {
            Some(value) if value != granted => {
                return Err(ClusterError::Conflict {
                    what,
                    granted: granted.clone(),
                    configured: value.clone(),
                })
            }
            _ => *configured = Some(granted.clone()),
        }
    }
    match profile {
        Some(value) if *value != grant.policy => Err(ClusterError::Conflict {
            what: "policy_profile",
            granted: grant.policy.as_str().into(),
            configured: value.as_str().into(),
        }),
        _ => {
            *profile = Some(grant.policy);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            session: "job-1".into(),
            namespace: "pb-job-1".into(),
            project: "42".into(),
            policy: PolicyProfile::Restricted,
            kubeconfig: String::new(),
        }
    }

    #[test]
    fn the_grant_fills_and_refuses_to_be_overruled() {
        let (mut namespace, mut project, mut profile) = (None, None, None);
        reconcile_with_config(&grant(), &mut namespace, &mut project, &mut profile).unwrap();
        assert_eq!(namespace.as_deref(), Some("pb-job-1"));
        assert_eq!(project.as_deref(), Some("42"));
        assert_eq!(profile, Some(PolicyProfile::Restricted));
        let (mut namespace, mut project) = (None, Some("other/team".to_string()));
        let error =
            reconcile_with_config(&grant(), &mut namespace, &mut project, &mut None).unwrap_err();
        assert!(error.to_string().contains("\"other/team\""), "{error}");
        let (mut namespace, mut project) = (Some("pb-job-1".to_string()), None);
        assert!(reconcile_with_config(&grant(), &mut namespace, &mut project, &mut None).is_ok());
        // a sidecar configured for a weaker profile than the session's does not start
        let mut weaker = Some(PolicyProfile::Baseline);
        let error = reconcile_with_config(&grant(), &mut None, &mut None, &mut weaker).unwrap_err();
        assert!(error.to_string().contains("policy_profile"), "{error}");
    }

    #[test]
    fn only_https_urls_and_readable_files() {
        let settings = BrokerSettings {
            url: "http://operator:8443/v1/session".into(),
            ca_file: None,
            token_file: "/nonexistent".into(),
        };
        let runtime = tokio::runtime::Runtime::new().unwrap();
        assert!(matches!(
            runtime.block_on(ask(&settings)),
            Err(ClusterError::BadUrl { .. })
        ));
        let settings = BrokerSettings {
            url: "https://127.0.0.1:1/v1/session".into(),
            ..settings
        };
        let error = runtime.block_on(ask(&settings)).unwrap_err();
        assert!(matches!(error, ClusterError::File { .. }), "{error}");
        assert!(!retryable(&error));
        assert!(retryable(&ClusterError::Refused {
            url: String::new(),
            status: 503,
            message: String::new()
        }));
        assert!(!retryable(&ClusterError::Refused {
            url: String::new(),
            status: 403,
            message: String::new()
        }));
    }
}
