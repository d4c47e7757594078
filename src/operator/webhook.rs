//! The admission webhook at the Kubernetes edge: the axum route the API server posts
//! AdmissionReviews to, the session-namespace index it reads profiles from, and the upkeep task
//! that keeps the TLS Secret, the served certificate and the webhook configuration in step.
//!
//! Decisions themselves are `admission::decide` (no I/O); this file only finds the inputs.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use futures::future::BoxFuture;
use futures::StreamExt as _;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, ResourceExt as _};
use tracing::{debug, info, warn};

use super::admission::{self, SessionNamespace, Verdict};
use super::certs::{Material, Names};
use super::https::{certified_key, ServingCertificate};
use super::tls_secret::{self, SecretRef};
use super::webhook_config::{self, Target, WEBHOOK_PATH};
use crate::labels;
use crate::rules::SharedPolicySet;

/// How often certificates are looked at without any event (renewal is decided in days; an hour
/// keeps a replica that missed a watch event close behind).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// Upper bound for reading a namespace the index does not hold yet.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Secret(#[from] tls_secret::Error),
    #[error(transparent)]
    Configuration(#[from] webhook_config::Error),
    #[error("the certificate in Secret {secret} cannot be served: {source}")]
    CertificateUnusable {
        secret: String,
        #[source]
        source: super::https::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a namespace's session profile comes from: the cluster (`ClusterNamespaces`), or a
/// fixed map in tests.
pub trait NamespaceSource: Send + Sync {
    /// `Ok(None)` when the namespace is not one of this operator's sessions.
    fn session(&self, name: &str) -> BoxFuture<'_, Result<Option<SessionNamespace>, String>>;
}

/// What the webhook route shares.
#[derive(Clone)]
pub struct WebhookState {
    pub policies: SharedPolicySet,
    pub namespaces: Arc<dyn NamespaceSource>,
}

/// The webhook's routes, to be merged into the operator's HTTPS router.
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(validate))
        .with_state(state)
}

/// `POST /validate/sessions`: one AdmissionReview in, one out, always HTTP 200 — a refusal is
/// an answer, not a transport error (the API server would otherwise report its own message).
async fn validate(
    State(state): State<WebhookState>,
    body: Bytes,
) -> Json<admission::ReviewResponse> {
    let request = match admission::parse(&body) {
        Ok(request) => request,
        Err((error, uid)) => {
            warn!(%error, "AdmissionReview refused as invalid");
            return Json(
                Verdict::Invalid {
                    message: error.to_string(),
                }
                .into_response(uid),
            );
        }
    };
    let uid = request.uid.clone();
    let Some(namespace_name) = request.namespace.clone().filter(|n| !n.is_empty()) else {
        return Json(
            Verdict::Invalid {
                message: "the request names no namespace; this webhook covers session \
                          namespaces only"
                    .into(),
            }
            .into_response(uid),
        );
    };
    let namespace = match state.namespaces.session(&namespace_name).await {
        Ok(Some(namespace)) => namespace,
        // Not (or no longer) a session of this operator: the API server's selector and our
        // index disagree for a moment (label just removed); nothing of ours to enforce.
        Ok(None) => {
            return Json(Verdict::Allowed { warnings: vec![] }.into_response(uid));
        }
        Err(error) => {
            warn!(namespace = %namespace_name, %error, "Session namespace unknown; refusing");
            return Json(
                Verdict::Denied {
                    message: format!(
                        "podbridge cannot read session namespace {namespace_name} ({error}); \
                         retry"
                    ),
                    warnings: vec![],
                }
                .into_response(uid),
            );
        }
    };
    let policies = state.policies.load_full();
    let verdict = admission::decide(&policies, &request, &namespace, jiff::Zoned::now().date());
    match &verdict {
        Verdict::Denied { message, .. } => info!(
            namespace = %namespace_name,
            resource = %request.resource.resource,
            name = request.name.as_deref().unwrap_or(""),
            operation = %request.operation,
            user = request.user_info.username.as_deref().unwrap_or(""),
            %message,
            "Admission denied"
        ),
        Verdict::Invalid { message } => warn!(%message, "Admission request invalid"),
        Verdict::Allowed { .. } => debug!(
            namespace = %namespace_name,
            resource = %request.resource.resource,
            "Admission allowed"
        ),
    }
    Json(verdict.into_response(uid))
}

/// Session namespaces of this operator from a watch-fed index, read from the API server only
/// when the index does not hold the namespace yet (just created, watch behind).
pub struct ClusterNamespaces {
    store: Store<PartialObjectMeta<Namespace>>,
    api: Api<PartialObjectMeta<Namespace>>,
    operator_id: String,
}

impl ClusterNamespaces {
    /// Starts the index (a metadata watch of namespaces labelled with this operator's id).
    pub fn start(client: Client, operator_id: &str) -> Self {
        let api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
        let config =
            watcher::Config::default().labels(&format!("{}={operator_id}", labels::OPERATOR));
        let (store, writer) = reflector::store();
        let stream = watcher::watcher(api.clone(), config)
            .default_backoff()
            .reflect(writer)
            .applied_objects();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                if let Err(error) = event {
                    debug!(%error, "Session namespace watch interrupted; retrying");
                }
            }
        });
        ClusterNamespaces {
            store,
            api,
            operator_id: operator_id.to_string(),
        }
    }

    fn judge(&self, namespace: &PartialObjectMeta<Namespace>) -> Option<SessionNamespace> {
        let labels = namespace.labels();
        (labels.get(labels::OPERATOR) == Some(&self.operator_id)).then(|| {
            SessionNamespace::from_metadata(&namespace.name_any(), labels, namespace.annotations())
        })
    }
}

impl NamespaceSource for ClusterNamespaces {
    fn session(&self, name: &str) -> BoxFuture<'_, Result<Option<SessionNamespace>, String>> {
        let name = name.to_string();
        Box::pin(async move {
            if let Some(namespace) = self.store.get(&ObjectRef::new(&name)) {
                return Ok(self.judge(&namespace));
            }
            match tokio::time::timeout(LOOKUP_TIMEOUT, self.api.get_opt(&name)).await {
                Ok(Ok(Some(namespace))) => Ok(self.judge(&namespace)),
                Ok(Ok(None)) => Ok(None),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err("no answer from the API server in time".to_string()),
            }
        })
    }
}

/// Everything the upkeep needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    pub operator_id: String,
    pub target: Target,
    pub secret: SecretRef,
    pub names: Names,
}

/// Reads or makes the certificates, and returns what to serve plus the upkeep task's inputs.
/// Fails when the Secret cannot be read or written, or holds an unusable certificate: before
/// any port is bound.
pub async fn prepare(
    client: &Client,
    settings: &Settings,
) -> Result<(Arc<ServingCertificate>, Material)> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &settings.secret.namespace);
    let material = tls_secret::ensure(&secrets, &settings.secret, &settings.names).await?;
    let key = certified_key(&material.cert, &material.key).map_err(|source| {
        Error::CertificateUnusable {
            secret: settings.secret.to_string(),
            source,
        }
    })?;
    Ok((Arc::new(ServingCertificate::new(key)), material))
}

/// One pass: Secret (renewed if due) → webhook configuration (its bundle) → served certificate,
/// in that order, so the API server trusts a new CA before any server presents a leaf it signed.
async fn upkeep_once(
    client: &Client,
    settings: &Settings,
    served: &ServingCertificate,
    last: &mut Option<Material>,
) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &settings.secret.namespace);
    let material = tls_secret::ensure(&secrets, &settings.secret, &settings.names).await?;
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let wanted =
        webhook_config::desired(&settings.operator_id, &settings.target, &material.ca_bundle);
    webhook_config::reconcile(&configurations, &wanted).await?;
    if last.as_ref().map(|m| &m.cert) != Some(&material.cert) {
        let key = certified_key(&material.cert, &material.key).map_err(|source| {
            Error::CertificateUnusable {
                secret: settings.secret.to_string(),
                source,
            }
        })?;
        served.replace(key);
        if last.is_some() {
            info!(secret = %settings.secret, "Serving the renewed certificate");
        }
    }
    *last = Some(material);
    Ok(())
}

/// Runs for the life of the operator: a pass at start, on every change of the Secret or the
/// configuration (someone edited or deleted it; another replica renewed), and hourly.
pub async fn upkeep(
    client: Client,
    settings: Settings,
    served: Arc<ServingCertificate>,
    initial: Material,
) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &settings.secret.namespace);
    let by_name = |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
    let secret_events = watcher::watcher(secrets, by_name(&settings.secret.name))
        .default_backoff()
        .map(|_| ());
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let configuration_events = watcher::watcher(
        configurations,
        by_name(&webhook_config::configuration_name(&settings.operator_id)),
    )
    .default_backoff()
    .map(|_| ());
    let ticks = tokio_stream_interval(UPKEEP_INTERVAL);
    let mut triggers = std::pin::pin!(futures::stream::select(
        futures::stream::select(secret_events, configuration_events),
        ticks,
    ));
    let mut last = Some(initial);
    let mut retry = Duration::from_secs(1);
    // The first pass writes the configuration right away, before any event arrives.
    loop {
        match upkeep_once(&client, &settings, &served, &mut last).await {
            Ok(()) => {
                if retry > Duration::from_secs(1) {
                    info!("Webhook upkeep recovered");
                }
                retry = Duration::from_secs(1);
                if triggers.next().await.is_none() {
                    return;
                }
            }
            Err(error) => {
                // Logged once per failing spell, retried with a growing pause.
                if retry == Duration::from_secs(1) {
                    warn!(%error, "Webhook upkeep failed; retrying");
                }
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(60));
            }
        }
    }
}

fn tokio_stream_interval(period: Duration) -> impl futures::Stream<Item = ()> {
    futures::stream::unfold(
        tokio::time::interval_at(tokio::time::Instant::now() + period, period),
        |mut interval| async move {
            interval.tick().await;
            Some(((), interval))
        },
    )
}

#[cfg(test)]
mod tests {
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt as _;
    use serde_json::{json, Value};
    use tower::ServiceExt as _;

    use super::*;
    use std::collections::BTreeMap;

    use crate::rules::file::PodSecurityLevel;

    /// A fixed namespace map, for tests of the route.
    pub struct FixedNamespaces(pub BTreeMap<String, SessionNamespace>);

    impl NamespaceSource for FixedNamespaces {
        fn session(&self, name: &str) -> BoxFuture<'_, Result<Option<SessionNamespace>, String>> {
            let found = self.0.get(name).cloned();
            Box::pin(async move { Ok(found) })
        }
    }

    fn app() -> Router {
        let set = crate::policy_store::builtin(crate::rules::Limits::default()).unwrap();
        let namespaces = BTreeMap::from([(
            "pb-job-1".to_string(),
            SessionNamespace {
                name: "pb-job-1".into(),
                level: PodSecurityLevel::Baseline,
                project: None,
            },
        )]);
        router(WebhookState {
            policies: crate::policy_store::shared(set),
            namespaces: Arc::new(FixedNamespaces(namespaces)),
        })
    }

    async fn post(body: Vec<u8>) -> (StatusCode, Value) {
        let response = app()
            .oneshot(
                Request::post(WEBHOOK_PATH)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn review(namespace: &str, pod: Value) -> Vec<u8> {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u-7", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace, "operation": "CREATE", "userInfo": {"username": "x"},
            "object": pod}})
        .to_string()
        .into_bytes()
    }

    #[tokio::test]
    async fn the_route_answers_reviews() {
        let hostile = json!({"metadata": {"name": "p"}, "spec": {"hostPID": true,
            "containers": [{"name": "c", "image": "busybox"}]}});
        let (status, answer) = post(review("pb-job-1", hostile.clone())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["response"]["uid"], "u-7");
        assert_eq!(answer["response"]["allowed"], false);
        assert!(answer["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("/spec/hostPID"));
        let plain = json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "c", "image": "busybox"}]}});
        let (_, answer) = post(review("pb-job-1", plain)).await;
        assert_eq!(answer["response"]["allowed"], true);
        // a namespace that is no session of this operator is not judged
        let (_, answer) = post(review("elsewhere", hostile)).await;
        assert_eq!(answer["response"]["allowed"], true);
    }

    #[tokio::test]
    async fn malformed_bodies_are_answered_as_invalid() {
        for body in [
            b"garbage".to_vec(),
            b"{}".to_vec(),
            br#"{"request": {"uid": "u-3"}}"#.to_vec(),
        ] {
            let (status, answer) = post(body).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(answer["response"]["allowed"], false);
            assert_eq!(answer["response"]["status"]["reason"], "Invalid");
        }
        let (_, answer) = post(br#"{"request": {"uid": "u-3"}}"#.to_vec()).await;
        assert_eq!(answer["response"]["uid"], "u-3");
    }
}
