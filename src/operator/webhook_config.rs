//! The ValidatingWebhookConfiguration the operator keeps: which requests the API server sends
//! to the webhook, where, and the CA bundle it verifies the webhook's certificate with.
//!
//! One configuration per operator deployment (`podbridge-sessions-<operator id>`), covering only
//! namespaces labelled `podbridge.io/operator=<operator id>` — the session namespaces this
//! operator made (`objects::build`). Session ServiceAccounts cannot label namespaces, so the
//! label is a boundary; `objectSelector` would not be (whoever creates a pod picks its labels).
//! Everything else — kube-system, the operator's own namespace, other operators' sessions —
//! never reaches this webhook, so `failurePolicy: Fail` can only block session namespaces.
//!
//! Written only when the server's copy, with the API server's defaults filled in, differs from
//! the wanted one: a reconcile that compared against the undefaulted object would rewrite it on
//! every pass.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    RuleWithOperations, ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration,
    WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams};
use kube::Api;
use tracing::info;

use crate::labels;

/// Path of the validating endpoint on the HTTPS server.
pub const WEBHOOK_PATH: &str = "/validate/sessions";
/// Name of the one webhook in the configuration (must have three DNS labels).
pub const WEBHOOK_NAME: &str = "sessions.podbridge.io";
/// The API server waits this long for a verdict (at most 30; the brief wants ≤ 5 so a slow
/// webhook cannot stall a CI job's pods for long).
pub const TIMEOUT_SECONDS: i32 = 5;
const FIELD_MANAGER: &str = super::controller::FIELD_MANAGER;
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading ValidatingWebhookConfiguration {name}: {source}")]
    ReadFailed {
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("applying ValidatingWebhookConfiguration {name}: {source}")]
    ApplyFailed {
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("{0}: no answer from the API server in time")]
    TimedOut(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the API server reaches the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `--webhook-service namespace/name[:port]` (in-cluster).
    Service {
        namespace: String,
        name: String,
        port: i32,
    },
    /// `--webhook-url https://host:port/path` (an operator outside the cluster; the path is
    /// taken as given).
    Url(String),
}

impl Target {
    /// Parses `namespace/name[:port]` (port 443 when absent).
    pub fn service(text: &str) -> Result<Self, String> {
        let (namespace, rest) = text
            .split_once('/')
            .filter(|(namespace, rest)| !namespace.is_empty() && !rest.is_empty())
            .ok_or_else(|| format!("{text:?} is not namespace/name[:port]"))?;
        let (name, port) = match rest.split_once(':') {
            Some((name, port)) => (
                name,
                port.parse::<u16>()
                    .ok()
                    .filter(|port| *port != 0)
                    .ok_or_else(|| format!("{port:?} in {text:?} is not a port"))?,
            ),
            None => (rest, 443),
        };
        Ok(Target::Service {
            namespace: namespace.to_string(),
            name: name.to_string(),
            port: i32::from(port),
        })
    }

    /// The `(namespace, name)` of the Service, for the certificate's names.
    pub fn service_name(&self) -> Option<(&str, &str)> {
        match self {
            Target::Service {
                namespace, name, ..
            } => Some((namespace, name)),
            Target::Url(_) => None,
        }
    }
}

/// The name of this deployment's configuration.
pub fn configuration_name(operator_id: &str) -> String {
    format!("podbridge-sessions-{operator_id}")
}

/// The wanted configuration: `ca_bundle` is PEM (every trusted CA).
pub fn desired(
    operator_id: &str,
    target: &Target,
    ca_bundle: &str,
) -> ValidatingWebhookConfiguration {
    let client_config = match target {
        Target::Service {
            namespace,
            name,
            port,
        } => WebhookClientConfig {
            ca_bundle: Some(ByteString(ca_bundle.as_bytes().to_vec())),
            service: Some(ServiceReference {
                namespace: namespace.clone(),
                name: name.clone(),
                path: Some(WEBHOOK_PATH.to_string()),
                port: Some(*port),
            }),
            url: None,
        },
        Target::Url(url) => WebhookClientConfig {
            ca_bundle: Some(ByteString(ca_bundle.as_bytes().to_vec())),
            service: None,
            url: Some(url.clone()),
        },
    };
    let selector = BTreeMap::from([(labels::OPERATOR.to_string(), operator_id.to_string())]);
    let webhook = ValidatingWebhook {
        name: WEBHOOK_NAME.to_string(),
        admission_review_versions: vec!["v1".to_string()],
        client_config,
        failure_policy: Some("Fail".to_string()),
        match_policy: Some("Equivalent".to_string()),
        namespace_selector: Some(LabelSelector {
            match_labels: Some(selector.clone()),
            ..LabelSelector::default()
        }),
        object_selector: Some(LabelSelector::default()),
        rules: Some(vec![RuleWithOperations {
            api_groups: Some(vec![String::new()]),
            api_versions: Some(vec!["v1".to_string()]),
            operations: Some(vec!["CREATE".to_string(), "UPDATE".to_string()]),
            resources: Some(
                [
                    "pods",
                    "pods/ephemeralcontainers",
                    "services",
                    "persistentvolumeclaims",
                ]
                .map(String::from)
                .to_vec(),
            ),
            scope: Some("Namespaced".to_string()),
        }]),
        side_effects: "None".to_string(),
        timeout_seconds: Some(TIMEOUT_SECONDS),
        match_conditions: None,
    };
    let mut config_labels = selector;
    config_labels.insert(
        labels::MANAGED_BY.to_string(),
        labels::MANAGED_BY_OPERATOR.to_string(),
    );
    ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(configuration_name(operator_id)),
            labels: Some(config_labels),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![webhook]),
    }
}

/// A webhook as the API server stores it: the `admissionregistration/v1` defaults filled in
/// (Kyverno's `defaults.go` does the same), so a server copy and a wanted one compare equal
/// when they mean the same.
fn defaulted(webhook: &ValidatingWebhook) -> ValidatingWebhook {
    let mut webhook = webhook.clone();
    webhook.failure_policy.get_or_insert_with(|| "Fail".into());
    webhook
        .match_policy
        .get_or_insert_with(|| "Equivalent".into());
    webhook
        .namespace_selector
        .get_or_insert_with(LabelSelector::default);
    webhook
        .object_selector
        .get_or_insert_with(LabelSelector::default);
    webhook.timeout_seconds.get_or_insert(10);
    if let Some(service) = webhook.client_config.service.as_mut() {
        service.port.get_or_insert(443);
    }
    for rule in webhook.rules.iter_mut().flatten() {
        rule.scope.get_or_insert_with(|| "*".into());
    }
    for selector in [
        webhook.namespace_selector.as_mut(),
        webhook.object_selector.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        if selector.match_labels.as_ref().is_some_and(|m| m.is_empty()) {
            selector.match_labels = None;
        }
        if selector
            .match_expressions
            .as_ref()
            .is_some_and(|m| m.is_empty())
        {
            selector.match_expressions = None;
        }
    }
    webhook
}

/// Whether `server` (the stored configuration, if any) must be written to become `wanted`.
pub fn needs_write(
    server: Option<&ValidatingWebhookConfiguration>,
    wanted: &ValidatingWebhookConfiguration,
) -> bool {
    let Some(server) = server else {
        return true;
    };
    let webhooks = |config: &ValidatingWebhookConfiguration| -> Vec<ValidatingWebhook> {
        config.webhooks.iter().flatten().map(defaulted).collect()
    };
    let labels_missing = wanted.metadata.labels.iter().flatten().any(|(key, value)| {
        server.metadata.labels.as_ref().and_then(|l| l.get(key)) != Some(value)
    });
    labels_missing || webhooks(server) != webhooks(wanted)
}

/// Applies the configuration when it is missing or differs; returns whether it wrote.
pub async fn reconcile(
    api: &Api<ValidatingWebhookConfiguration>,
    wanted: &ValidatingWebhookConfiguration,
) -> Result<bool> {
    let name = wanted.metadata.name.clone().unwrap_or_default();
    let server = match tokio::time::timeout(CALL_TIMEOUT, api.get_opt(&name)).await {
        Ok(result) => result.map_err(|source| Error::ReadFailed {
            name: name.clone(),
            source: Box::new(source),
        })?,
        Err(_) => return Err(Error::TimedOut(format!("get {name}"))),
    };
    if !needs_write(server.as_ref(), wanted) {
        return Ok(false);
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match tokio::time::timeout(
        CALL_TIMEOUT,
        api.patch(&name, &params, &Patch::Apply(wanted)),
    )
    .await
    {
        Ok(result) => {
            result.map_err(|source| Error::ApplyFailed {
                name: name.clone(),
                source: Box::new(source),
            })?;
        }
        Err(_) => return Err(Error::TimedOut(format!("apply {name}"))),
    }
    info!(configuration = %name, created = server.is_none(), "Webhook configuration written");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target::service("podbridge-system/podbridge-operator").unwrap()
    }

    #[test]
    fn service_targets_parse_with_a_default_port() {
        assert_eq!(
            target(),
            Target::Service {
                namespace: "podbridge-system".into(),
                name: "podbridge-operator".into(),
                port: 443
            }
        );
        assert!(matches!(
            Target::service("ns/svc:8443").unwrap(),
            Target::Service { port: 8443, .. }
        ));
        for bad in ["svc", "/svc", "ns/", "ns/svc:0", "ns/svc:x"] {
            assert!(Target::service(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_configuration_covers_only_this_operators_sessions_and_fails_closed() {
        let config = desired("blue", &target(), "PEM");
        assert_eq!(
            config.metadata.name.as_deref(),
            Some("podbridge-sessions-blue")
        );
        let webhook = &config.webhooks.as_ref().unwrap()[0];
        assert_eq!(
            webhook.namespace_selector.as_ref().unwrap().match_labels,
            Some(BTreeMap::from([(
                labels::OPERATOR.to_string(),
                "blue".to_string()
            )]))
        );
        assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"));
        assert_eq!(webhook.side_effects, "None");
        assert!(webhook.timeout_seconds.unwrap() <= 5);
        assert_eq!(webhook.admission_review_versions, ["v1"]);
        let rule = &webhook.rules.as_ref().unwrap()[0];
        for resource in [
            "pods",
            "pods/ephemeralcontainers",
            "services",
            "persistentvolumeclaims",
        ] {
            assert!(rule
                .resources
                .as_ref()
                .unwrap()
                .iter()
                .any(|r| r == resource));
        }
        assert_eq!(
            rule.operations.as_deref(),
            Some(&["CREATE".to_string(), "UPDATE".to_string()][..])
        );
        assert_eq!(
            webhook
                .client_config
                .ca_bundle
                .as_ref()
                .map(|b| b.0.clone()),
            Some(b"PEM".to_vec())
        );
        let service = webhook.client_config.service.as_ref().unwrap();
        assert_eq!(service.path.as_deref(), Some(WEBHOOK_PATH));
        let url = desired(
            "blue",
            &Target::Url("https://10.244.0.1:9443/x".into()),
            "PEM",
        );
        let client = &url.webhooks.unwrap()[0].client_config;
        assert_eq!(client.url.as_deref(), Some("https://10.244.0.1:9443/x"));
        assert!(client.service.is_none());
    }

    /// The server's copy as a 1.20 API server returns it: defaults filled in, empty selectors
    /// as `{}`, the JSON round trip.
    fn as_stored(config: &ValidatingWebhookConfiguration) -> ValidatingWebhookConfiguration {
        let mut json = serde_json::to_value(config).unwrap();
        let webhook = &mut json["webhooks"][0];
        webhook["objectSelector"] = serde_json::json!({});
        json["metadata"]["resourceVersion"] = "7".into();
        json["metadata"]["uid"] = "u".into();
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn only_real_differences_cause_a_write() {
        let wanted = desired("blue", &target(), "PEM");
        assert!(needs_write(None, &wanted));
        assert!(!needs_write(Some(&as_stored(&wanted)), &wanted));
        // a server copy written without the explicit defaults means the same
        let mut sparse = wanted.clone();
        let webhook = &mut sparse.webhooks.as_mut().unwrap()[0];
        webhook.match_policy = None;
        webhook.object_selector = None;
        webhook.failure_policy = None;
        assert!(!needs_write(Some(&sparse), &wanted));
        // a rotated bundle, a drifted failure policy or a lost label do
        assert!(needs_write(
            Some(&as_stored(&wanted)),
            &desired("blue", &target(), "PEM2")
        ));
        let mut ignore = as_stored(&wanted);
        ignore.webhooks.as_mut().unwrap()[0].failure_policy = Some("Ignore".into());
        assert!(needs_write(Some(&ignore), &wanted));
        let mut unlabelled = as_stored(&wanted);
        unlabelled.metadata.labels = None;
        assert!(needs_write(Some(&unlabelled), &wanted));
    }
}
