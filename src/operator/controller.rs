//! The BridgeSession controller: reconciles each session into its namespace and objects, expires
//! it, follows its job pod, and tears it all down behind a finalizer.
//!
//! Everything it knows is in the cluster (session spec and status, labels, owner references), so a
//! restarted operator simply reconciles every session again. Time-based work (TTL, token not yet
//! issued, namespace still terminating) is a requeue, never a sleep or a task per session.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, info, warn};

use super::crd::{
    BridgeSession, BridgeSessionStatus, CredentialDelivery, SecretReference, SessionCondition,
    SessionPhase,
};
use super::objects::{self, SERVICE_ACCOUNT};
use super::{Error, Result};
use crate::labels;

/// The one field manager for everything the operator applies.
pub const FIELD_MANAGER: &str = "podbridge-operator";
/// The Secret of type `kubernetes.io/service-account-token` the operator asks the token
/// controller to fill (works on v1.20, where one is also auto-created, and on v1.24+, where none
/// is).
pub const TOKEN_SECRET: &str = "podbridge-token";
/// Upper bound for one API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a Ready session is looked at again without any event (missed watch events, job
/// pods that vanished while the operator was down are also caught at start-up).
const RESYNC: Duration = Duration::from_secs(300);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    /// API server URL written into session kubeconfigs.
    pub server: String,
    /// This operator deployment's id (`--operator-id`), labelled on its session namespaces.
    pub operator_id: String,
}

impl Context {
    pub fn new(client: Client, server: String, operator_id: String) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            server,
            operator_id,
        }
    }
}

/// Runs the controller until `stop` resolves, then lets the reconciles in flight finish (they
/// write idempotently, so one that overlaps a successor's is harmless).
pub async fn run(
    context: Context,
    concurrency: u16,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    let sessions: Api<BridgeSession> = Api::all(client.clone());
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_OPERATOR
    ));
    let controller = Controller::new(sessions, watcher::Config::default())
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency));
    let store = controller.store();
    let cached = store.clone();
    crate::metrics::operator().set_session_phases(Box::new(move || {
        cached
            .state()
            .iter()
            .map(|session| phase_label(session))
            .collect()
    }));
    // Metadata only: a pod's name is all the mapping needs; the reconcile reads the pod itself.
    let job_pods: Api<PartialObjectMeta<Pod>> = Api::all(client.clone());
    // Children are mapped by their session label rather than `owns`: the owner-reference mapping
    // would give a namespaced child's namespace to the cluster-scoped session's reference.
    controller
        .watches(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            owned.clone(),
            session_of_child,
        )
        .watches(
            Api::<PartialObjectMeta<Secret>>::all(client.clone()),
            owned,
            session_of_child,
        )
        .watches(job_pods, watcher::Config::default(), move |pod| {
            sessions_of_job_pod(&store, &pod)
        })
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, Arc::new(context))
        .for_each(|result| async move {
            crate::metrics::operator().record_reconcile(result.is_ok());
            match result {
                Ok((session, _)) => debug!(session = %session.name, "Reconciled"),
                Err(error) => debug!(%error, "Reconcile did not complete"),
            }
        })
        .await;
}

/// A session's phase as the sessions gauge labels it; one not reconciled yet is `Pending`.
fn phase_label(session: &BridgeSession) -> &'static str {
    match session.status.as_ref().and_then(|status| status.phase) {
        None | Some(SessionPhase::Pending) => "Pending",
        Some(SessionPhase::Ready) => "Ready",
        Some(SessionPhase::Failed) => "Failed",
        Some(SessionPhase::Terminating) => "Terminating",
    }
}

/// The sessions whose job pod this is (a linear scan of the local store: cheap next to the API
/// call it may save, and sessions number in the hundreds).
fn sessions_of_job_pod(
    store: &Store<BridgeSession>,
    pod: &PartialObjectMeta<Pod>,
) -> Vec<ObjectRef<BridgeSession>> {
    let (namespace, name) = (pod.namespace(), pod.name_any());
    store
        .state()
        .iter()
        .filter(|session| {
            session
                .spec
                .job_pod
                .as_ref()
                .is_some_and(|job| Some(&job.namespace) == namespace.as_ref() && job.name == name)
        })
        .map(|session| ObjectRef::from_obj(session.as_ref()))
        .collect()
}

fn session_of_child<K: Resource>(child: PartialObjectMeta<K>) -> Option<ObjectRef<BridgeSession>> {
    child
        .labels()
        .get(labels::SESSION)
        .map(|name| ObjectRef::new(name))
}

fn error_policy(session: Arc<BridgeSession>, error: &Error, _: Arc<Context>) -> Action {
    warn!(session = %session.name_any(), %error, "Reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Bounds a Kubernetes call in time.
async fn call<T>(
    operation: &str,
    future: impl std::future::Future<Output = Result<T, kube::Error>>,
    wrap: impl FnOnce(kube::Error) -> Error,
) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, future).await {
        Ok(result) => result.map_err(wrap),
        Err(_) => Err(Error::TimedOut {
            operation: operation.to_string(),
        }),
    }
}

/// Server-side apply of one object.
async fn apply<K>(api: &Api<K>, object: &K) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let namespace = object.meta().namespace.clone().unwrap_or_default();
    let kind = K::kind(&()).to_string();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    // SSA wants apiVersion and kind in the body; k8s-openapi's Serialize writes them.
    call(
        &format!("apply {kind} {namespace}/{name}"),
        api.patch(&name, &params, &Patch::Apply(object)),
        |source| Error::ApplyFailed {
            kind,
            namespace,
            name: name.clone(),
            source: Box::new(source),
        },
    )
    .await
}

async fn get_opt<K>(api: &Api<K>, name: &str) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let kind = K::kind(&()).to_string();
    call(&format!("get {kind} {name}"), api.get_opt(name), |source| {
        Error::ReadFailed {
            kind: kind.clone(),
            name: name.to_string(),
            source: Box::new(source),
        }
    })
    .await
}

/// When the session's TTL runs out.
fn expiry(session: &BridgeSession) -> Option<Timestamp> {
    let created = session.metadata.creation_timestamp.as_ref()?.0;
    let ttl = session.spec.ttl_seconds?;
    created
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(
            ttl.min(i64::MAX as u64) as i64,
        ))
        .ok()
}

async fn reconcile(session: Arc<BridgeSession>, context: Arc<Context>) -> Result<Action> {
    let name = session.name_any();
    let sessions: Api<BridgeSession> = Api::all(context.client.clone());
    if session.metadata.deletion_timestamp.is_some() {
        return cleanup(&session, &context).await;
    }
    if !session
        .finalizers()
        .iter()
        .any(|f| f == labels::SESSION_FINALIZER)
    {
        add_finalizer(&sessions, &session).await?;
    }

    let now = Timestamp::now();
    let expires_at = expiry(&session);
    if expires_at.is_some_and(|at| at <= now) {
        publish(
            &context,
            &session,
            EventType::Normal,
            "Expired",
            "Delete",
            format!(
                "ttlSeconds={} ran out; deleting the session and its namespace",
                session.spec.ttl_seconds.unwrap_or_default()
            ),
        )
        .await;
        return delete_session(&sessions, &name).await;
    }

    let job_pod = match &session.spec.job_pod {
        None => None,
        Some(reference) => {
            let pods: Api<Pod> = Api::namespaced(context.client.clone(), &reference.namespace);
            let pod = get_opt(&pods, &reference.name).await?;
            let finished = |pod: &Pod| {
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                matches!(phase, Some("Succeeded") | Some("Failed"))
            };
            let replaced = |pod: &Pod| {
                reference.uid.is_some() && pod.metadata.uid.as_ref() != reference.uid.as_ref()
            };
            match pod {
                Some(pod) if !finished(&pod) && !replaced(&pod) => Some(pod),
                _ => {
                    publish(
                        &context,
                        &session,
                        EventType::Normal,
                        "JobPodGone",
                        "Delete",
                        format!(
                            "job pod {}/{} is gone or finished; deleting the session and its \
                             namespace",
                            reference.namespace, reference.name
                        ),
                    )
                    .await;
                    return delete_session(&sessions, &name).await;
                }
            }
        }
    };

    let namespace = match objects::namespace_name(&name) {
        Ok(namespace) => namespace,
        Err(error) => {
            let status = status(&session, None, SessionPhase::Failed, "InvalidName", &error);
            patch_status(&sessions, &session, status).await?;
            return Ok(Action::await_change());
        }
    };

    let namespaces: Api<Namespace> = Api::all(context.client.clone());
    if let Some(existing) = get_opt(&namespaces, &namespace).await? {
        let ours = existing.labels().get(labels::SESSION) == Some(&name);
        if !ours {
            let message = format!(
                "namespace {namespace} exists and does not belong to this session (no {}={name} \
                 label); delete it or rename the session",
                labels::SESSION
            );
            let status = status(
                &session,
                Some(&namespace),
                SessionPhase::Failed,
                "NamespaceTaken",
                &message,
            );
            patch_status(&sessions, &session, status).await?;
            return Ok(Action::requeue(RESYNC));
        }
        if existing.metadata.deletion_timestamp.is_some() {
            let status = status(
                &session,
                Some(&namespace),
                SessionPhase::Pending,
                "NamespaceTerminating",
                &"the namespace of an earlier session of this name is still being deleted",
            );
            patch_status(&sessions, &session, status).await?;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    }

    let built = objects::build(&session, &namespace, job_pod.as_ref(), &context.operator_id);
    let client = &context.client;
    apply(&namespaces, &built.namespace).await?;
    apply(
        &Api::<ServiceAccount>::namespaced(client.clone(), &namespace),
        &built.service_account,
    )
    .await?;
    apply(&Api::namespaced(client.clone(), &namespace), &built.role).await?;
    apply(
        &Api::namespaced(client.clone(), &namespace),
        &built.role_binding,
    )
    .await?;
    apply(
        &Api::namespaced(client.clone(), &namespace),
        &built.resource_quota,
    )
    .await?;
    apply(
        &Api::namespaced(client.clone(), &namespace),
        &built.limit_range,
    )
    .await?;
    apply(
        &Api::namespaced(client.clone(), &namespace),
        &built.network_policy,
    )
    .await?;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let token_secret = apply(&secrets, &token_secret_request(&session, &namespace)).await?;
    let data = token_secret.data.unwrap_or_default();
    let (Some(token), Some(ca)) = (data.get("token"), data.get("ca.crt")) else {
        let status = status(
            &session,
            Some(&namespace),
            SessionPhase::Pending,
            "WaitingForToken",
            &"waiting for Kubernetes to issue the ServiceAccount token",
        );
        patch_status(&sessions, &session, status).await?;
        // The Secret watch wakes us when the token controller fills it; the requeue is a backstop.
        return Ok(Action::requeue(Duration::from_secs(5)));
    };
    // Broker sessions: the operator reads the token again when the job's podbridge asks for it;
    // nothing is written outside the session's namespace.
    let secret_ref = match session.spec.credentials {
        CredentialDelivery::Broker => None,
        CredentialDelivery::Secret => {
            let token = String::from_utf8_lossy(&token.0).into_owned();
            let kubeconfig = super::kubeconfig::token_kubeconfig(
                &context.server,
                &ca.0,
                &format!("{SERVICE_ACCOUNT}@{namespace}"),
                &token,
                &namespace,
            );
            let secret_namespace = objects::kubeconfig_secret_namespace(&session, &namespace);
            let secret = objects::kubeconfig_secret(&session, &secret_namespace, &kubeconfig);
            apply(
                &Api::<Secret>::namespaced(client.clone(), &secret_namespace),
                &secret,
            )
            .await?;
            Some(SecretReference {
                namespace: secret_namespace,
                name: objects::kubeconfig_secret_name(&name),
            })
        }
    };

    let was_ready = session.status.as_ref().is_some_and(|s| {
        s.phase == Some(SessionPhase::Ready)
            && s.conditions
                .iter()
                .any(|c| c.observed_generation == session.metadata.generation)
    });
    let delivered = match &secret_ref {
        Some(secret) => format!("kubeconfig in Secret {}/{}", secret.namespace, secret.name),
        None => "credentials handed to the job pod's podbridge by the session broker".into(),
    };
    let mut ready = status(
        &session,
        Some(&namespace),
        SessionPhase::Ready,
        "NamespaceReady",
        &format!("namespace {namespace} is ready; {delivered}"),
    );
    ready.kubeconfig_secret = secret_ref;
    ready.expires_at = expires_at.map(|at| at.to_string());
    patch_status(&sessions, &session, ready).await?;
    if !was_ready {
        info!(session = %name, %namespace, "Session ready");
        publish(
            &context,
            &session,
            EventType::Normal,
            "Ready",
            "Reconcile",
            format!("namespace {namespace} is ready"),
        )
        .await;
    }

    let mut next = RESYNC;
    if let Some(at) = expires_at {
        let left = now.duration_until(at).unsigned_abs();
        next = next.min(left + Duration::from_millis(50));
    }
    Ok(Action::requeue(next))
}

/// The token Secret the token controller fills with the ServiceAccount's token and the CA.
fn token_secret_request(session: &BridgeSession, namespace: &str) -> Secret {
    let mut meta = ObjectMeta {
        name: Some(TOKEN_SECRET.into()),
        namespace: Some(namespace.into()),
        labels: Some(objects::common_labels(session)),
        owner_references: objects::owner_reference(session).map(|o| vec![o]),
        ..ObjectMeta::default()
    };
    meta.annotations = Some(
        [(
            "kubernetes.io/service-account.name".to_string(),
            SERVICE_ACCOUNT.to_string(),
        )]
        .into(),
    );
    Secret {
        metadata: meta,
        type_: Some("kubernetes.io/service-account-token".into()),
        ..Secret::default()
    }
}

/// A status with one Ready condition.
fn status(
    session: &BridgeSession,
    namespace: Option<&str>,
    phase: SessionPhase,
    reason: &str,
    message: &dyn std::fmt::Display,
) -> BridgeSessionStatus {
    let ready = if phase == SessionPhase::Ready {
        "True"
    } else {
        "False"
    };
    let previous = session.status.as_ref();
    // lastTransitionTime changes only when the condition's status does.
    let last_transition_time = previous
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status == ready)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Timestamp::now().to_string());
    BridgeSessionStatus {
        namespace: namespace.map(str::to_string),
        phase: Some(phase),
        conditions: vec![SessionCondition {
            type_: "Ready".into(),
            status: ready.into(),
            reason: reason.into(),
            message: message.to_string(),
            observed_generation: session.metadata.generation,
            last_transition_time,
        }],
        kubeconfig_secret: previous.and_then(|s| s.kubeconfig_secret.clone()),
        expires_at: previous.and_then(|s| s.expires_at.clone()),
    }
}

async fn patch_status(
    sessions: &Api<BridgeSession>,
    session: &BridgeSession,
    status: BridgeSessionStatus,
) -> Result<()> {
    if session.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let name = session.name_any();
    let patch = serde_json::json!({
        "apiVersion": BridgeSession::api_version(&()),
        "kind": BridgeSession::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    call(
        &format!("patch status of session {name}"),
        sessions.patch_status(&name, &params, &Patch::Apply(&patch)),
        |source| Error::StatusPatchFailed {
            session: name.clone(),
            source: Box::new(source),
        },
    )
    .await
    .map(drop)
}

/// Adds the finalizer with the resourceVersion as precondition, so a concurrent change to the
/// list is a conflict (retried) rather than lost.
async fn add_finalizer(sessions: &Api<BridgeSession>, session: &BridgeSession) -> Result<()> {
    let mut finalizers = session.finalizers().to_vec();
    finalizers.push(labels::SESSION_FINALIZER.into());
    set_finalizers(sessions, session, finalizers).await
}

async fn set_finalizers(
    sessions: &Api<BridgeSession>,
    session: &BridgeSession,
    finalizers: Vec<String>,
) -> Result<()> {
    let name = session.name_any();
    let patch = serde_json::json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": session.resource_version(),
    }});
    call(
        &format!("patch finalizers of session {name}"),
        sessions.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
        |source| Error::FinalizerPatchFailed {
            session: name.clone(),
            source: Box::new(source),
        },
    )
    .await
    .map(drop)
}

async fn delete_session(sessions: &Api<BridgeSession>, name: &str) -> Result<Action> {
    delete(sessions, name, "BridgeSession", name).await?;
    Ok(Action::await_change())
}

/// Deletes `name` in the background; already gone is success. `shown` names it in messages
/// (with its namespace where it has one).
async fn delete<K>(api: &Api<K>, name: &str, kind: &str, shown: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let deleted = call(
        &format!("delete {kind} {shown}"),
        api.delete(name, &DeleteParams::background()),
        |source| Error::DeleteFailed {
            kind: kind.into(),
            name: shown.to_string(),
            source: Box::new(source),
        },
    )
    .await;
    match deleted {
        Err(Error::DeleteFailed { source, .. }) if is_not_found(&source) => Ok(()),
        other => other.map(drop),
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Deletes the kubeconfig Secret and the namespace; keeps the finalizer until the namespace is
/// gone, so a session of the same name created right after does not meet a terminating one.
async fn cleanup(session: &BridgeSession, context: &Context) -> Result<Action> {
    let name = session.name_any();
    let sessions: Api<BridgeSession> = Api::all(context.client.clone());
    if !session
        .finalizers()
        .iter()
        .any(|f| f == labels::SESSION_FINALIZER)
    {
        return Ok(Action::await_change());
    }
    let namespace = objects::namespace_name(&name).ok();
    if let Some(namespace) = &namespace {
        let status = status(
            session,
            Some(namespace),
            SessionPhase::Terminating,
            "Deleting",
            &format!("deleting namespace {namespace}"),
        );
        patch_status(&sessions, session, status).await?;
        let secret_namespace = objects::kubeconfig_secret_namespace(session, namespace);
        let secrets: Api<Secret> = Api::namespaced(context.client.clone(), &secret_namespace);
        let secret_name = objects::kubeconfig_secret_name(&name);
        let shown = format!("{secret_namespace}/{secret_name}");
        delete(&secrets, &secret_name, "Secret", &shown).await?;

        let namespaces: Api<Namespace> = Api::all(context.client.clone());
        if let Some(existing) = get_opt(&namespaces, namespace).await? {
            if existing.labels().get(labels::SESSION) == Some(&name) {
                if existing.metadata.deletion_timestamp.is_none() {
                    info!(session = %name, %namespace, "Deleting namespace");
                    delete(&namespaces, namespace, "Namespace", namespace).await?;
                }
                // The namespace watch wakes us when it is gone; the requeue is a backstop.
                return Ok(Action::requeue(Duration::from_secs(5)));
            }
        }
    }
    let remaining: Vec<String> = session
        .finalizers()
        .iter()
        .filter(|f| *f != labels::SESSION_FINALIZER)
        .cloned()
        .collect();
    set_finalizers(&sessions, session, remaining).await?;
    info!(session = %name, "Session cleaned up");
    Ok(Action::await_change())
}

/// Publishes an event on the session; a failure is logged, never fatal.
async fn publish(
    context: &Context,
    session: &BridgeSession,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    let mut reference = session.object_ref(&());
    // Events of a cluster-scoped object live in `default`; v1.20's validation wants the reference
    // to name that namespace too.
    reference.namespace = Some("default".into());
    let outcome =
        tokio::time::timeout(CALL_TIMEOUT, context.recorder.publish(&event, &reference)).await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            warn!(session = %session.name_any(), reason, %error, "Could not publish event")
        }
        Err(_) => warn!(session = %session.name_any(), reason, "Publishing event timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::crd::BridgeSessionSpec;

    #[test]
    fn expiry_counts_from_creation() {
        let mut session = BridgeSession::new(
            "s",
            BridgeSessionSpec {
                project: "p".into(),
                job_id: "1".into(),
                job_pod: None,
                policy: Default::default(),
                ttl_seconds: Some(30),
                resource_quota: None,
                limit_range: None,
                credentials: Default::default(),
            },
        );
        assert_eq!(expiry(&session), None);
        let created: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        session.metadata.creation_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(created),
        );
        assert_eq!(
            expiry(&session).unwrap().to_string(),
            "2024-01-01T00:00:30Z"
        );
    }

    #[test]
    fn unchanged_status_keeps_its_transition_time() {
        let mut session = BridgeSession::new(
            "s",
            BridgeSessionSpec {
                project: "p".into(),
                job_id: "1".into(),
                job_pod: None,
                policy: Default::default(),
                ttl_seconds: None,
                resource_quota: None,
                limit_range: None,
                credentials: Default::default(),
            },
        );
        let first = status(&session, Some("pb-s"), SessionPhase::Ready, "R", &"m");
        session.status = Some(first.clone());
        let second = status(&session, Some("pb-s"), SessionPhase::Ready, "R", &"m");
        assert_eq!(first, second);
    }
}
