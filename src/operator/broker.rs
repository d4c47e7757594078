//! The session broker: the platform, not the job, makes a CI job's session.
//!
//! A job pod's podbridge proves which pod it runs in with a ServiceAccount token bound to that
//! pod (a projected volume with audience [`AUDIENCE`], mounted in the podbridge container
//! alone). The operator has the API server review the token, reads the pod, finds the
//! [`BridgeRunner`] that covers it, makes the session on the runner's terms and answers with the
//! session's namespace, project and kubeconfig. The job container holds no token, so it can
//! neither ask for a session nor read one; the credentials exist only in podbridge's memory and
//! in the session namespace's token Secret.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt as _};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::controller::{FIELD_MANAGER, TOKEN_SECRET};
use super::crd::{
    BridgeRunner, BridgeSession, BridgeSessionSpec, CredentialDelivery, JobPod, SessionPhase,
    ValueSource,
};
use super::objects::SERVICE_ACCOUNT;

/// The audience the job pod's projected token must be issued for; a token for the API server
/// (or any other audience) is refused, so a leaked ordinary token cannot ask for sessions.
pub const AUDIENCE: &str = "podbridge.io";
/// The broker's route on the operator's HTTPS server.
pub const PATH: &str = "/v1/session";
/// Label on sessions the broker made: the BridgeRunner whose terms they got.
pub const RUNNER_LABEL: &str = "podbridge.io/runner";
/// How long a request waits for its session to become Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Upper bound of one API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// The ServiceAccount token's pod claims, as the API server's TokenReview reports them.
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("no bearer token: send the pod's projected token (audience {AUDIENCE}) as `Authorization: Bearer`")]
    NoToken,
    #[error("token refused by the API server{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Unauthenticated { reason: Option<String> },
    #[error(
        "the token is not bound to a pod: mount a projected serviceAccountToken with audience \
         {AUDIENCE} in podbridge's container"
    )]
    NotPodBound,
    #[error("pod {namespace}/{name} is gone, finished or replaced")]
    PodGone { namespace: String, name: String },
    #[error("no BridgeRunner covers pod {namespace}/{name} ({reason})")]
    NoRunner {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("BridgeRunner {runner}: pod {pod} has no label {label}, which the runner's {field} comes from")]
    MissingLabel {
        runner: String,
        pod: String,
        label: String,
        field: &'static str,
    },
    #[error("BridgeRunner {runner}: {field} is empty (set `value` or `fromLabel`)")]
    NoValue { runner: String, field: &'static str },
    #[error("session {session}: {message}")]
    SessionFailed { session: String, message: String },
    #[error("session {session} was not ready within {}s", READY_TIMEOUT.as_secs())]
    NotReady { session: String },
    #[error("{operation}: {source}")]
    Kube {
        operation: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("{operation}: no answer from the API server in time")]
    TimedOut { operation: String },
}

impl BrokerError {
    fn status(&self) -> StatusCode {
        match self {
            BrokerError::NoToken | BrokerError::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            BrokerError::NotPodBound
            | BrokerError::PodGone { .. }
            | BrokerError::NoRunner { .. }
            | BrokerError::MissingLabel { .. } => StatusCode::FORBIDDEN,
            BrokerError::NoValue { .. } | BrokerError::SessionFailed { .. } => StatusCode::CONFLICT,
            BrokerError::NotReady { .. }
            | BrokerError::Kube { .. }
            | BrokerError::TimedOut { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for BrokerError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            warn!(error = %self, "Session broker request not served");
        } else {
            info!(error = %self, "Session broker request refused");
        }
        (
            status,
            Json(serde_json::json!({ "message": self.to_string() })),
        )
            .into_response()
    }
}

/// ConfigMap in every runner namespace holding the CA that signs the broker's certificate
/// (`ca.crt`), for job pods to mount into podbridge's container: public, so any container of
/// the pod may see it.
pub const CA_CONFIG_MAP: &str = "podbridge-operator-ca";
/// Key of the CA bundle in [`CA_CONFIG_MAP`].
pub const CA_KEY: &str = "ca.crt";
/// How often the CA ConfigMaps are written again without a runner event (CA rotation).
const CA_REFRESH: Duration = Duration::from_secs(600);

/// What the broker answers: everything podbridge needs to serve the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionGrant {
    pub session: String,
    pub namespace: String,
    pub project: String,
    /// The session's Pod Security profile (`baseline`, `restricted`): podbridge's built-in
    /// policies follow it, so what it writes passes the namespace's admission webhook.
    pub policy: super::crd::PolicyProfile,
    /// A kubeconfig for the session's ServiceAccount, limited to `namespace`.
    pub kubeconfig: String,
}

/// The pod a token was bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    pub namespace: String,
    pub service_account: String,
    pub name: String,
    pub uid: String,
}

/// What the broker route shares.
#[derive(Clone)]
pub struct BrokerState {
    pub client: Client,
    /// API server URL written into the kubeconfigs it hands out.
    pub server: String,
}

/// The broker's routes, for the operator's HTTPS server.
pub fn router(state: BrokerState) -> Router {
    Router::new()
        .route(PATH, post(grant))
        .with_state(Arc::new(state))
}

async fn grant(
    State(state): State<Arc<BrokerState>>,
    headers: HeaderMap,
) -> Result<Json<SessionGrant>, BrokerError> {
    let token = bearer(&headers).ok_or(BrokerError::NoToken)?;
    let identity = review(&state.client, token).await?;
    let pods: Api<Pod> = Api::namespaced(state.client.clone(), &identity.namespace);
    let pod = call("read the job pod", pods.get_opt(&identity.name))
        .await?
        .filter(|pod| live_pod_of(pod, &identity))
        .ok_or_else(|| BrokerError::PodGone {
            namespace: identity.namespace.clone(),
            name: identity.name.clone(),
        })?;
    let runners: Api<BridgeRunner> = Api::all(state.client.clone());
    let runners = call("list BridgeRunners", runners.list(&ListParams::default()))
        .await?
        .items;
    let runner = select_runner(&runners, &identity, &pod)?;
    let session = session_for(runner, &identity, &pod)?;
    let name = session.name_any();
    let sessions: Api<BridgeSession> = Api::all(state.client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    call(
        "apply the BridgeSession",
        sessions.patch(&name, &params, &Patch::Apply(&session)),
    )
    .await?;
    let namespace = await_ready(&sessions, &name).await?;
    let kubeconfig = session_kubeconfig(&state, &namespace).await?;
    info!(session = %name, %namespace, pod = %format!("{}/{}", identity.namespace, identity.name), runner = %runner.name_any(), "Session granted");
    Ok(Json(SessionGrant {
        session: name,
        namespace,
        project: session.spec.project,
        policy: session.spec.policy,
        kubeconfig,
    }))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Bounds a Kubernetes call in time.
async fn call<T>(
    operation: &str,
    future: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(CALL_TIMEOUT, future).await {
        Ok(result) => result.map_err(|source| BrokerError::Kube {
            operation: operation.to_string(),
            source: Box::new(source),
        }),
        Err(_) => Err(BrokerError::TimedOut {
            operation: operation.to_string(),
        }),
    }
}

async fn review(client: &Client, token: &str) -> Result<PodIdentity, BrokerError> {
    let request = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_string(),
            audiences: Some(vec![AUDIENCE.to_string()]),
        },
        ..TokenReview::default()
    };
    let reviews: Api<TokenReview> = Api::all(client.clone());
    let answer = call(
        "review the token",
        reviews.create(&PostParams::default(), &request),
    )
    .await?;
    pod_identity(answer.status.as_ref())
}

/// The pod a reviewed token belongs to; only an authenticated ServiceAccount token issued for
/// [`AUDIENCE`] and bound to a pod passes.
pub fn pod_identity(status: Option<&TokenReviewStatus>) -> Result<PodIdentity, BrokerError> {
    let status = status.ok_or(BrokerError::Unauthenticated { reason: None })?;
    if status.authenticated != Some(true) {
        return Err(BrokerError::Unauthenticated {
            reason: status.error.clone(),
        });
    }
    // The API server checks the audience; an answer that does not name ours is not trusted.
    if !status
        .audiences
        .as_ref()
        .is_some_and(|audiences| audiences.iter().any(|a| a == AUDIENCE))
    {
        return Err(BrokerError::Unauthenticated {
            reason: Some(format!("not issued for audience {AUDIENCE}")),
        });
    }
    let user = status
        .user
        .as_ref()
        .ok_or(BrokerError::Unauthenticated { reason: None })?;
    let username = user.username.as_deref().unwrap_or_default();
    let (namespace, service_account) = username
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(|| BrokerError::Unauthenticated {
            reason: Some(format!("{username:?} is not a ServiceAccount")),
        })?;
    let extra = |key: &str| {
        user.extra
            .as_ref()
            .and_then(|extra| extra.get(key))
            .and_then(|values| values.first())
            .filter(|value| !value.is_empty())
            .cloned()
    };
    let (Some(name), Some(uid)) = (extra(POD_NAME_EXTRA), extra(POD_UID_EXTRA)) else {
        return Err(BrokerError::NotPodBound);
    };
    Ok(PodIdentity {
        namespace: namespace.to_string(),
        service_account: service_account.to_string(),
        name,
        uid,
    })
}

/// The token's pod, still the same pod (UID) and not finished.
fn live_pod_of(pod: &Pod, identity: &PodIdentity) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.uid.as_deref() == Some(identity.uid.as_str())
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded") | Some("Failed"))
}

/// The runner whose terms the pod's session gets: namespace, ServiceAccount and labels must
/// match. Several matching runners: the first by name, so the choice never depends on list order.
pub fn select_runner<'a>(
    runners: &'a [BridgeRunner],
    identity: &PodIdentity,
    pod: &Pod,
) -> Result<&'a BridgeRunner, BrokerError> {
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let mut in_namespace = runners
        .iter()
        .filter(|runner| runner.spec.namespace == identity.namespace)
        .peekable();
    let refused = |reason: String| BrokerError::NoRunner {
        namespace: identity.namespace.clone(),
        name: identity.name.clone(),
        reason,
    };
    if in_namespace.peek().is_none() {
        return Err(refused(format!(
            "no runner names namespace {}",
            identity.namespace
        )));
    }
    in_namespace
        .filter(|runner| {
            runner.spec.service_accounts.is_empty()
                || runner
                    .spec
                    .service_accounts
                    .contains(&identity.service_account)
        })
        .filter(|runner| {
            runner
                .spec
                .match_labels
                .iter()
                .all(|(key, value)| labels.get(key) == Some(value))
        })
        .min_by_key(|runner| runner.name_any())
        .ok_or_else(|| {
            refused(format!(
                "ServiceAccount {} or the pod's labels match none of the namespace's runners",
                identity.service_account
            ))
        })
}

/// One session per job pod, named after the pod's UID: a restarted podbridge gets the same one.
pub fn session_name(uid: &str) -> String {
    format!("job-{}", uid.to_ascii_lowercase())
}

fn value_of(
    source: &ValueSource,
    runner: &BridgeRunner,
    pod: &Pod,
    field: &'static str,
) -> Result<Option<String>, BrokerError> {
    if let Some(label) = &source.from_label {
        return pod
            .labels()
            .get(label)
            .filter(|value| !value.is_empty())
            .cloned()
            .map(Some)
            .ok_or_else(|| BrokerError::MissingLabel {
                runner: runner.name_any(),
                pod: pod.name_any(),
                label: label.clone(),
                field,
            });
    }
    Ok(source.value.clone().filter(|value| !value.is_empty()))
}

/// The session the runner's terms give this pod.
pub fn session_for(
    runner: &BridgeRunner,
    identity: &PodIdentity,
    pod: &Pod,
) -> Result<BridgeSession, BrokerError> {
    let project =
        value_of(&runner.spec.project, runner, pod, "project")?.ok_or(BrokerError::NoValue {
            runner: runner.name_any(),
            field: "project",
        })?;
    let job_id =
        value_of(&runner.spec.job_id, runner, pod, "jobId")?.unwrap_or(identity.name.clone());
    let mut session = BridgeSession::new(
        &session_name(&identity.uid),
        BridgeSessionSpec {
            project,
            job_id,
            job_pod: Some(JobPod {
                namespace: identity.namespace.clone(),
                name: identity.name.clone(),
                uid: Some(identity.uid.clone()),
            }),
            policy: runner.spec.policy,
            ttl_seconds: runner.spec.ttl_seconds,
            resource_quota: runner.spec.resource_quota.clone(),
            limit_range: runner.spec.limit_range.clone(),
            credentials: CredentialDelivery::Broker,
        },
    );
    session.metadata.labels = Some(BTreeMap::from([(
        RUNNER_LABEL.to_string(),
        runner.name_any(),
    )]));
    Ok(session)
}

/// Waits for the controller to make the session Ready; its namespace.
async fn await_ready(sessions: &Api<BridgeSession>, name: &str) -> Result<String, BrokerError> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let session = call("read the BridgeSession", sessions.get_opt(name)).await?;
        let status = session.as_ref().and_then(|s| s.status.as_ref());
        match status.and_then(|s| s.phase) {
            Some(SessionPhase::Ready) => {
                if let Some(namespace) = status.and_then(|s| s.namespace.clone()) {
                    return Ok(namespace);
                }
            }
            Some(SessionPhase::Failed) => {
                let message = status
                    .and_then(|s| s.conditions.first())
                    .map(|c| c.message.clone())
                    .unwrap_or_else(|| "failed".into());
                return Err(BrokerError::SessionFailed {
                    session: name.to_string(),
                    message,
                });
            }
            Some(SessionPhase::Terminating) => {
                return Err(BrokerError::SessionFailed {
                    session: name.to_string(),
                    message: "is being deleted".into(),
                })
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BrokerError::NotReady {
                session: name.to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The session ServiceAccount's kubeconfig, read from the token Secret the controller asked for.
async fn session_kubeconfig(state: &BrokerState, namespace: &str) -> Result<String, BrokerError> {
    let secrets: Api<Secret> = Api::namespaced(state.client.clone(), namespace);
    let secret = call("read the session token", secrets.get_opt(TOKEN_SECRET)).await?;
    let data = secret.and_then(|s| s.data).unwrap_or_default();
    let (Some(token), Some(ca)) = (data.get("token"), data.get("ca.crt")) else {
        return Err(BrokerError::NotReady {
            session: namespace.to_string(),
        });
    };
    Ok(super::kubeconfig::token_kubeconfig(
        &state.server,
        &ca.0,
        &format!("{SERVICE_ACCOUNT}@{namespace}"),
        &String::from_utf8_lossy(&token.0),
        namespace,
    ))
}

/// The CA ConfigMap for one runner namespace.
pub fn ca_config_map(namespace: &str, bundle: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(CA_CONFIG_MAP.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                crate::labels::MANAGED_BY.to_string(),
                crate::labels::MANAGED_BY_OPERATOR.to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(CA_KEY.to_string(), bundle.to_string())])),
        ..ConfigMap::default()
    }
}

/// Keeps [`CA_CONFIG_MAP`] current in every BridgeRunner's namespace: at once for a new or
/// changed runner, and every [`CA_REFRESH`] for all (the bundle changes when the CA rotates).
/// The bundle is read from the operator's TLS Secret (`ca.crt`), which every replica shares.
pub async fn publish_ca(client: Client, tls_secret: super::tls_secret::SecretRef) {
    use futures::StreamExt as _;
    use kube::runtime::watcher;
    let runners: Api<BridgeRunner> = Api::all(client.clone());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &tls_secret.namespace);
    let bundle = || async {
        let secret = call("read the TLS Secret", secrets.get_opt(&tls_secret.name)).await;
        match secret {
            Ok(secret) => secret
                .and_then(|s| s.data)
                .and_then(|data| data.get(CA_KEY).cloned())
                .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned()),
            Err(error) => {
                warn!(%error, "Broker CA not read");
                None
            }
        }
    };
    let publish = |namespace: String, bundle: Option<String>| {
        let client = client.clone();
        async move {
            let Some(bundle) = bundle else { return };
            let maps: Api<ConfigMap> = Api::namespaced(client, &namespace);
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let object = ca_config_map(&namespace, &bundle);
            match call(
                "publish the broker CA",
                maps.patch(CA_CONFIG_MAP, &params, &Patch::Apply(&object)),
            )
            .await
            {
                Ok(_) => tracing::debug!(%namespace, "Broker CA published"),
                Err(error) => warn!(%namespace, %error, "Broker CA not published"),
            }
        }
    };
    let mut events = watcher(runners.clone(), watcher::Config::default()).boxed();
    let mut refresh = tokio::time::interval(CA_REFRESH);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(runner) | watcher::Event::InitApply(runner))) => {
                    publish(runner.spec.namespace.clone(), bundle().await).await;
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    warn!(%error, "BridgeRunner watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                None => return,
            },
            _ = refresh.tick() => {
                if let Ok(list) = call("list BridgeRunners", runners.list(&ListParams::default())).await {
                    let namespaces: std::collections::BTreeSet<String> =
                        list.items.into_iter().map(|r| r.spec.namespace).collect();
                    let current = bundle().await;
                    for namespace in namespaces {
                        publish(namespace, current.clone()).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::crd::{BridgeRunnerSpec, PolicyProfile};
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;

    fn reviewed(extra: &[(&str, &str)], audiences: &[&str]) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            user: Some(UserInfo {
                username: Some("system:serviceaccount:ci:runner-job".into()),
                extra: Some(
                    extra
                        .iter()
                        .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                        .collect(),
                ),
                ..UserInfo::default()
            }),
            error: None,
        }
    }

    fn identity() -> PodIdentity {
        PodIdentity {
            namespace: "ci".into(),
            service_account: "runner-job".into(),
            name: "runner-abc-project-7".into(),
            uid: "5C1E0F3A-0000-4000-8000-000000000001".into(),
        }
    }

    fn pod(labels: &[(&str, &str)]) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some("runner-abc-project-7".into());
        pod.metadata.namespace = Some("ci".into());
        pod.metadata.uid = Some("5C1E0F3A-0000-4000-8000-000000000001".into());
        pod.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        pod
    }

    fn runner(name: &str, namespace: &str) -> BridgeRunner {
        BridgeRunner::new(
            name,
            BridgeRunnerSpec {
                namespace: namespace.into(),
                service_accounts: Vec::new(),
                match_labels: BTreeMap::new(),
                project: ValueSource {
                    value: None,
                    from_label: Some("project.runner.gitlab.com/id".into()),
                },
                job_id: ValueSource::default(),
                policy: PolicyProfile::Restricted,
                ttl_seconds: Some(3600),
                resource_quota: Some(BTreeMap::from([("pods".into(), "20".into())])),
                limit_range: None,
            },
        )
    }

    #[test]
    fn only_pod_bound_tokens_for_our_audience_pass() {
        let bound = [
            (POD_NAME_EXTRA, "runner-abc-project-7"),
            (POD_UID_EXTRA, "uid-1"),
        ];
        let identity = pod_identity(Some(&reviewed(&bound, &[AUDIENCE]))).unwrap();
        assert_eq!(identity.namespace, "ci");
        assert_eq!(identity.service_account, "runner-job");
        assert_eq!(identity.name, "runner-abc-project-7");
        assert_eq!(identity.uid, "uid-1");

        assert!(matches!(
            pod_identity(Some(&reviewed(&[], &[AUDIENCE]))),
            Err(BrokerError::NotPodBound)
        ));
        assert!(matches!(
            pod_identity(Some(&reviewed(&bound, &["https://kubernetes.default.svc"]))),
            Err(BrokerError::Unauthenticated { .. })
        ));
        let mut refused = reviewed(&bound, &[AUDIENCE]);
        refused.authenticated = Some(false);
        refused.error = Some("token has expired".into());
        let error = pod_identity(Some(&refused)).unwrap_err();
        assert!(error.to_string().contains("token has expired"), "{error}");
        assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
        let mut user = reviewed(&bound, &[AUDIENCE]);
        user.user.as_mut().unwrap().username = Some("alice".into());
        assert!(pod_identity(Some(&user)).is_err());
        assert!(pod_identity(None).is_err());
    }

    #[test]
    fn the_runner_decides_the_terms_and_the_pod_label_the_project() {
        let runners = [runner("gitlab", "ci"), runner("other", "elsewhere")];
        let pod = pod(&[("project.runner.gitlab.com/id", "42")]);
        let chosen = select_runner(&runners, &identity(), &pod).unwrap();
        assert_eq!(chosen.name_any(), "gitlab");
        let session = session_for(chosen, &identity(), &pod).unwrap();
        assert_eq!(
            session.name_any(),
            "job-5c1e0f3a-0000-4000-8000-000000000001"
        );
        assert!(super::super::objects::namespace_name(&session.name_any()).is_ok());
        assert_eq!(session.spec.project, "42");
        assert_eq!(session.spec.job_id, "runner-abc-project-7");
        assert_eq!(session.spec.policy, PolicyProfile::Restricted);
        assert_eq!(session.spec.ttl_seconds, Some(3600));
        assert_eq!(session.spec.credentials, CredentialDelivery::Broker);
        let job = session.spec.job_pod.unwrap();
        assert_eq!(job.uid.as_deref(), Some(identity().uid.as_str()));
        assert_eq!(
            session.metadata.labels.unwrap().get(RUNNER_LABEL),
            Some(&"gitlab".to_string())
        );
    }

    #[test]
    fn pods_outside_every_runner_are_refused() {
        let mut picky = runner("gitlab", "ci");
        picky.spec.service_accounts = vec!["gitlab-job".into()];
        let error = select_runner(&[picky.clone()], &identity(), &pod(&[])).unwrap_err();
        assert_eq!(error.status(), StatusCode::FORBIDDEN);
        let error = select_runner(&[runner("x", "other")], &identity(), &pod(&[])).unwrap_err();
        assert!(
            error.to_string().contains("no runner names namespace ci"),
            "{error}"
        );
        picky.spec.service_accounts.clear();
        picky
            .spec
            .match_labels
            .insert("podbridge.io/sidecar".into(), "true".into());
        assert!(select_runner(&[picky.clone()], &identity(), &pod(&[])).is_err());
        assert!(select_runner(
            &[picky],
            &identity(),
            &pod(&[("podbridge.io/sidecar", "true")])
        )
        .is_ok());
        // the project label is the runner's to require: without it there is no session
        let error = session_for(&runner("gitlab", "ci"), &identity(), &pod(&[])).unwrap_err();
        assert!(matches!(error, BrokerError::MissingLabel { .. }), "{error}");
    }

    #[test]
    fn several_matching_runners_pick_the_first_by_name() {
        let runners = [runner("zeta", "ci"), runner("alpha", "ci")];
        let pod = pod(&[("project.runner.gitlab.com/id", "1")]);
        assert_eq!(
            select_runner(&runners, &identity(), &pod)
                .unwrap()
                .name_any(),
            "alpha"
        );
    }

    #[test]
    fn bearer_tokens_are_read_strictly() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
        headers.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer(&headers), None);
        headers.insert("authorization", "Bearer tok.en".parse().unwrap());
        assert_eq!(bearer(&headers), Some("tok.en"));
    }
}
