//! The TLS Secret in the operator's own namespace: where the CA bundle, the CA key and the
//! serving certificate live, so restarts and replicas share them.
//!
//! A Secret podbridge made carries its managed-by label and is renewed here (`certs::plan`),
//! writes guarded by the resourceVersion read, so two replicas renewing at once cannot both win.
//! A Secret without the label is the user's own (bring your own certificates, e.g. from
//! cert-manager): read, never written, and its `ca.crt` is the webhook's trust bundle.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use tracing::info;

use super::certs::{self, Material, Names, Plan};
use crate::labels;

/// Keys of the Secret (`kubernetes.io/tls` plus the CA's).
pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";
pub const CERT_KEY: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";

const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts of read-decide-write when another replica writes in between.
const ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading Secret {namespace}/{name}: {source}")]
    ReadFailed {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("writing Secret {namespace}/{name}: {source}")]
    WriteFailed {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "Secret {namespace}/{name} is not podbridge's (no {}={} label) and lacks {missing}: a \
         bring-your-own Secret needs ca.crt, tls.crt and tls.key; or delete it and podbridge makes \
         its own",
        labels::MANAGED_BY,
        labels::MANAGED_BY_OPERATOR
    )]
    BringYourOwnIncomplete {
        namespace: String,
        name: String,
        missing: String,
    },
    #[error("Secret {namespace}/{name} kept changing under concurrent writers")]
    Contended { namespace: String, name: String },
    #[error("{0}: no answer from the API server in time")]
    TimedOut(String),
    #[error(transparent)]
    Certificates(#[from] certs::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the Secret is: `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

impl std::str::FromStr for SecretRef {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => Ok(SecretRef {
                namespace: namespace.to_string(),
                name: name.to_string(),
            }),
            _ => Err(format!("{text:?} is not namespace/name")),
        }
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    data.get(key)
        .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
        .filter(|text| !text.trim().is_empty())
}

fn is_managed(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(labels::MANAGED_BY))
        .is_some_and(|value| value == labels::MANAGED_BY_OPERATOR)
}

/// The material of a managed Secret, as far as it is there (`certs::plan` judges the rest).
fn managed_material(secret: &Secret) -> Material {
    let data = secret.data.clone().unwrap_or_default();
    Material {
        ca_bundle: text(&data, CA_CERT_KEY).unwrap_or_default(),
        ca_key: text(&data, CA_KEY_KEY),
        cert: text(&data, CERT_KEY).unwrap_or_default(),
        key: text(&data, KEY_KEY).unwrap_or_default(),
    }
}

/// The material of a user's Secret: all three parts or an error naming what is missing.
fn own_material(secret: &Secret, reference: &SecretRef) -> Result<Material> {
    let data = secret.data.clone().unwrap_or_default();
    let parts = [CA_CERT_KEY, CERT_KEY, KEY_KEY].map(|key| (key, text(&data, key)));
    let missing: Vec<&str> = parts
        .iter()
        .filter(|(_, value)| value.is_none())
        .map(|(key, _)| *key)
        .collect();
    if !missing.is_empty() {
        return Err(Error::BringYourOwnIncomplete {
            namespace: reference.namespace.clone(),
            name: reference.name.clone(),
            missing: missing.join(", "),
        });
    }
    let [(_, ca), (_, cert), (_, key)] = parts;
    Ok(Material {
        ca_bundle: ca.unwrap_or_default(),
        ca_key: None,
        cert: cert.unwrap_or_default(),
        key: key.unwrap_or_default(),
    })
}

/// The managed Secret for `material`; `resource_version` makes the write conditional.
pub fn managed_secret(
    reference: &SecretRef,
    material: &Material,
    resource_version: Option<String>,
) -> Secret {
    let mut data = BTreeMap::from([
        (
            CA_CERT_KEY.to_string(),
            ByteString(material.ca_bundle.as_bytes().to_vec()),
        ),
        (
            CERT_KEY.to_string(),
            ByteString(material.cert.as_bytes().to_vec()),
        ),
        (
            KEY_KEY.to_string(),
            ByteString(material.key.as_bytes().to_vec()),
        ),
    ]);
    if let Some(ca_key) = &material.ca_key {
        data.insert(
            CA_KEY_KEY.to_string(),
            ByteString(ca_key.as_bytes().to_vec()),
        );
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(reference.name.clone()),
            namespace: Some(reference.namespace.clone()),
            labels: Some(BTreeMap::from([(
                labels::MANAGED_BY.to_string(),
                labels::MANAGED_BY_OPERATOR.to_string(),
            )])),
            resource_version,
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(data),
        ..Secret::default()
    }
}

async fn bounded<T>(
    what: String,
    future: impl std::future::Future<Output = Result<T, kube::Error>>,
    wrap: impl FnOnce(kube::Error) -> Error,
) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, future).await {
        Ok(result) => result.map_err(wrap),
        Err(_) => Err(Error::TimedOut(what)),
    }
}

/// 409: Conflict (stale resourceVersion) or AlreadyExists (created meanwhile).
fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Reads the Secret, renews or creates what `certs::plan` asks for, and returns the material
/// in force. Idempotent: every replica may call it at any time.
pub async fn ensure(api: &Api<Secret>, reference: &SecretRef, names: &Names) -> Result<Material> {
    let read_failed = |source| Error::ReadFailed {
        namespace: reference.namespace.clone(),
        name: reference.name.clone(),
        source: Box::new(source),
    };
    let write_failed = |source| Error::WriteFailed {
        namespace: reference.namespace.clone(),
        name: reference.name.clone(),
        source: Box::new(source),
    };
    for _ in 0..ATTEMPTS {
        let existing = bounded(
            format!("get Secret {reference}"),
            api.get_opt(&reference.name),
            read_failed,
        )
        .await?;
        if let Some(secret) = &existing {
            if !is_managed(secret) {
                return own_material(secret, reference);
            }
        }
        let current = existing.as_ref().map(managed_material);
        let (material, reasons) =
            match (certs::plan(current.as_ref(), names, certs::now())?, current) {
                (Plan::Keep, Some(current)) => return Ok(current),
                (Plan::Replace { material, reasons }, _) => (material, reasons),
                // A plan on nothing always replaces; read again rather than trust an empty Secret.
                (Plan::Keep, None) => continue,
            };
        let written = match &existing {
            None => {
                let secret = managed_secret(reference, &material, None);
                tokio::time::timeout(CALL_TIMEOUT, api.create(&PostParams::default(), &secret))
                    .await
            }
            Some(secret) => {
                // A merge patch carrying the resourceVersion read: refused (409) if another
                // replica wrote since.
                let patch = managed_secret(
                    reference,
                    &material,
                    secret.metadata.resource_version.clone(),
                );
                tokio::time::timeout(
                    CALL_TIMEOUT,
                    api.patch(
                        &reference.name,
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    ),
                )
                .await
            }
        };
        match written {
            Ok(Ok(_)) => {
                info!(secret = %reference, reasons = %reasons.join("; "), "TLS certificates written");
                return Ok(material);
            }
            // Another replica created or renewed it first: decide again on what it wrote.
            Ok(Err(error)) if is_conflict(&error) => continue,
            Ok(Err(error)) => return Err(write_failed(error)),
            Err(_) => return Err(Error::TimedOut(format!("write Secret {reference}"))),
        }
    }
    Err(Error::Contended {
        namespace: reference.namespace.clone(),
        name: reference.name.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> SecretRef {
        "podbridge-system/podbridge-operator-tls".parse().unwrap()
    }

    #[test]
    fn references_are_namespace_slash_name() {
        assert_eq!(reference().namespace, "podbridge-system");
        assert!("nope".parse::<SecretRef>().is_err());
        assert!("/x".parse::<SecretRef>().is_err());
    }

    #[test]
    fn a_managed_secret_round_trips_and_is_recognised() {
        let names = Names::for_service(Some(("podbridge-system", "podbridge-operator")), &[]);
        let Plan::Replace { material, .. } = certs::plan(None, &names, certs::now()).unwrap()
        else {
            panic!("first plan replaces");
        };
        let secret = managed_secret(&reference(), &material, Some("42".into()));
        assert!(is_managed(&secret));
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(secret.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(managed_material(&secret), material);
        // read back, the plan keeps it
        assert!(matches!(
            certs::plan(Some(&managed_material(&secret)), &names, certs::now()).unwrap(),
            Plan::Keep
        ));
    }

    #[test]
    fn a_users_secret_is_read_only_and_must_be_complete() {
        let names = Names::for_service(Some(("ns", "svc")), &[]);
        let Plan::Replace { material, .. } = certs::plan(None, &names, certs::now()).unwrap()
        else {
            panic!("first plan replaces");
        };
        let mut own = managed_secret(&reference(), &material, None);
        own.metadata.labels = None;
        assert!(!is_managed(&own));
        let read = own_material(&own, &reference()).unwrap();
        assert_eq!(read.ca_key, None);
        assert_eq!(read.cert, material.cert);
        own.data.as_mut().unwrap().remove(CA_CERT_KEY);
        let error = own_material(&own, &reference()).unwrap_err().to_string();
        assert!(error.contains("lacks ca.crt"), "{error}");
    }
}
