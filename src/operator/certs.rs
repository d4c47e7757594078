//! The operator's own certificates, without I/O: a self-signed CA and the serving certificate it
//! signs, and the decision when to renew either.
//!
//! Kyverno's approach (no cert-manager): the trust bundle the API server gets (`caBundle`) keeps
//! every CA that is still valid, newest first, so rotating the CA never breaks a handshake in
//! flight. A new CA is made well before the old one ends ([`CA_RENEW_BEFORE`]) while the serving
//! certificate, which never outlives its CA, stays signed by the old one until it is due itself
//! ([`LEAF_RENEW_BEFORE`]): the new CA has then been in the bundle for at least the difference,
//! so every replica and the API server trust it before any server presents a leaf it signed.

use std::collections::BTreeSet;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

const DAY: i64 = 24 * 60 * 60;
/// How long a new CA is valid.
pub const CA_VALIDITY: i64 = 365 * DAY;
/// How long a new serving certificate is valid (never beyond its CA).
pub const LEAF_VALIDITY: i64 = 90 * DAY;
/// A CA this close to its end is replaced (the old one stays in the bundle until it expires).
pub const CA_RENEW_BEFORE: i64 = 60 * DAY;
/// A serving certificate this close to its end is replaced.
pub const LEAF_RENEW_BEFORE: i64 = 30 * DAY;
/// New certificates start this far in the past, so a node whose clock lags still accepts them.
const BACKDATE: i64 = 60 * 60;

/// Why certificates could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generating a key: {0}")]
    KeyGenerationFailed(#[source] rcgen::Error),
    #[error("signing the {what} certificate: {source}")]
    SigningFailed {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("serving name {name:?} is not a valid DNS name or IP address: {source}")]
    InvalidName {
        name: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("time {0} is outside what a certificate can carry")]
    TimeOutOfRange(i64),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The names the serving certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Names {
    pub dns: BTreeSet<String>,
    pub ips: BTreeSet<IpAddr>,
}

impl Names {
    /// `<service>.<namespace>.svc` and `.svc.cluster.local` (what the API server dials for a
    /// `clientConfig.service`), plus extra names or addresses (`--tls-extra-san`).
    pub fn for_service(service: Option<(&str, &str)>, extra: &[String]) -> Self {
        let mut names = Names::default();
        if let Some((namespace, name)) = service {
            names.dns.insert(format!("{name}.{namespace}.svc"));
            names
                .dns
                .insert(format!("{name}.{namespace}.svc.cluster.local"));
        }
        for entry in extra {
            match entry.parse::<IpAddr>() {
                Ok(ip) => {
                    names.ips.insert(ip);
                }
                Err(_) => {
                    names.dns.insert(entry.clone());
                }
            }
        }
        names
    }

    fn subject_alt_names(&self) -> Result<Vec<SanType>> {
        let mut all = Vec::new();
        for name in &self.dns {
            let ia5 = name
                .clone()
                .try_into()
                .map_err(|source| Error::InvalidName {
                    name: name.clone(),
                    source,
                })?;
            all.push(SanType::DnsName(ia5));
        }
        all.extend(self.ips.iter().copied().map(SanType::IpAddress));
        Ok(all)
    }
}

/// What the TLS Secret holds, as PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    /// Every trusted CA, newest first: the webhook's `caBundle` (`ca.crt`).
    pub ca_bundle: String,
    /// The newest CA's key (`ca.key`); absent in a bring-your-own Secret.
    pub ca_key: Option<String>,
    /// The serving certificate (`tls.crt`).
    pub cert: String,
    /// Its key (`tls.key`).
    pub key: String,
}

/// The parts of a certificate the renewal decision looks at.
#[derive(Debug, Clone)]
struct Inspected {
    pem: String,
    subject: Vec<u8>,
    issuer: Vec<u8>,
    not_after: i64,
    public_key: Vec<u8>,
    names: Names,
}

fn inspect_bundle(pem: &str) -> Vec<Inspected> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(|der| der.ok())
        .filter_map(|der| inspect(&der))
        .collect()
}

fn inspect(der: &CertificateDer<'_>) -> Option<Inspected> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut names = Names::default();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    names.dns.insert((*dns).to_string());
                }
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    names.ips.extend(ip);
                }
                _ => {}
            }
        }
    }
    Some(Inspected {
        pem: to_pem(der.as_ref()),
        subject: cert.subject().as_raw().to_vec(),
        issuer: cert.issuer().as_raw().to_vec(),
        not_after: cert.validity().not_after.timestamp(),
        public_key: cert.public_key().raw.to_vec(),
        names,
    })
}

fn to_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// What to do with the Secret's certificates.
#[derive(Debug)]
pub enum Plan {
    /// Everything is valid for long enough and carries the wanted names.
    Keep,
    /// Write this material; `reasons` says why, for the log.
    Replace {
        material: Material,
        reasons: Vec<String>,
    },
}

/// Decides, at unix time `now`, whether `existing` (the managed Secret's content, if any) can
/// stay, and makes what replaces it. Unreadable parts are replaced, never trusted.
pub fn plan(existing: Option<&Material>, names: &Names, now: i64) -> Result<Plan> {
    let mut reasons = Vec::new();
    let bundle = existing
        .map(|m| inspect_bundle(&m.ca_bundle))
        .unwrap_or_default();
    let before = bundle.len();
    // Every CA still valid, newest (last issued) first as the bundle holds them.
    let mut cas: Vec<Inspected> = bundle.into_iter().filter(|ca| ca.not_after > now).collect();
    if cas.len() < before {
        reasons.push("an expired CA leaves the bundle".to_string());
    }
    let newest_key = existing
        .and_then(|m| m.ca_key.as_deref())
        .and_then(|pem| KeyPair::from_pem(pem).ok());
    let kept = match (cas.first(), newest_key) {
        (Some(ca), Some(key)) if key.subject_public_key_info() != ca.public_key => {
            reasons.push("the CA key does not match the newest CA".to_string());
            None
        }
        (Some(ca), Some(_)) if ca.not_after - now <= CA_RENEW_BEFORE => {
            reasons.push(format!("the CA ends within {} days", CA_RENEW_BEFORE / DAY));
            None
        }
        (Some(ca), Some(key)) => {
            let ca_key = key.serialize_pem();
            Issuer::from_ca_cert_pem(&ca.pem, key)
                .ok()
                .map(|issuer| (issuer, ca_key))
        }
        _ => {
            reasons.push("no usable CA".to_string());
            None
        }
    };
    let (issuer, ca_key) = match kept {
        Some(kept) => kept,
        None => {
            let key = KeyPair::generate().map_err(Error::KeyGenerationFailed)?;
            let params = ca_params(now)?;
            let cert = params
                .self_signed(&key)
                .map_err(|source| Error::SigningFailed { what: "CA", source })?;
            let inspected = inspect(cert.der()).ok_or(Error::SigningFailed {
                what: "CA",
                source: rcgen::Error::CouldNotParseCertificate,
            })?;
            cas.insert(0, inspected);
            let ca_key = key.serialize_pem();
            (Issuer::new(params, key), ca_key)
        }
    };

    let leaf = existing.and_then(|m| {
        inspect_bundle(&m.cert)
            .into_iter()
            .next()
            .filter(|_| KeyPair::from_pem(&m.key).is_ok())
    });
    let leaf_reason = match &leaf {
        None => Some("no readable serving certificate".to_string()),
        Some(leaf) if !cas.iter().any(|ca| ca.subject == leaf.issuer) => {
            Some("the serving certificate's CA is no longer trusted".to_string())
        }
        Some(leaf) if leaf.not_after - now <= LEAF_RENEW_BEFORE => Some(format!(
            "the serving certificate ends within {} days",
            LEAF_RENEW_BEFORE / DAY
        )),
        Some(leaf) if &leaf.names != names => Some(format!(
            "the serving names changed (have {:?} {:?}, want {:?} {:?})",
            leaf.names.dns, leaf.names.ips, names.dns, names.ips
        )),
        Some(_) => None,
    };
    let (cert, key) = match (leaf_reason, leaf, existing) {
        (None, Some(leaf), Some(existing)) => (leaf.pem, existing.key.clone()),
        (reason, _, _) => {
            reasons.extend(reason);
            let key = KeyPair::generate().map_err(Error::KeyGenerationFailed)?;
            let params = leaf_params(names, now, cas[0].not_after)?;
            let cert = params
                .signed_by(&key, &issuer)
                .map_err(|source| Error::SigningFailed {
                    what: "serving",
                    source,
                })?;
            (cert.pem(), key.serialize_pem())
        }
    };
    if reasons.is_empty() {
        return Ok(Plan::Keep);
    }
    let material = Material {
        ca_bundle: cas.iter().map(|ca| ca.pem.as_str()).collect(),
        ca_key: Some(ca_key),
        cert,
        key,
    };
    Ok(Plan::Replace { material, reasons })
}

fn ca_key_usages() -> Vec<KeyUsagePurpose> {
    vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ]
}

fn time(unix: i64) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(unix).map_err(|_| Error::TimeOutOfRange(unix))
}

fn ca_params(now: i64) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "podbridge");
    // A distinct subject per CA, so a leaf's issuer names exactly one CA of the bundle.
    name.push(DnType::CommonName, format!("podbridge operator CA {now}"));
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = ca_key_usages();
    params.not_before = time(now - BACKDATE)?;
    params.not_after = time(now + CA_VALIDITY)?;
    Ok(params)
}

fn leaf_params(names: &Names, now: i64, ca_end: i64) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    let common = names
        .dns
        .iter()
        .next()
        .cloned()
        .or_else(|| names.ips.iter().next().map(IpAddr::to_string))
        .unwrap_or_else(|| "podbridge-operator".to_string());
    name.push(DnType::CommonName, common);
    params.distinguished_name = name;
    params.subject_alt_names = names.subject_alt_names()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = time(now - BACKDATE)?;
    params.not_after = time((now + LEAF_VALIDITY).min(ca_end))?;
    Ok(params)
}

/// Unix time `now`, for callers.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names::for_service(
            Some(("podbridge-system", "podbridge-operator")),
            &["10.244.0.1".to_string()],
        )
    }

    fn replaced(plan: Plan) -> (Material, Vec<String>) {
        match plan {
            Plan::Replace { material, reasons } => (material, reasons),
            Plan::Keep => panic!("expected a replacement"),
        }
    }

    const T0: i64 = 1_800_000_000;

    #[test]
    fn names_cover_both_service_forms_and_extras() {
        let names = names();
        assert!(names
            .dns
            .contains("podbridge-operator.podbridge-system.svc"));
        assert!(names
            .dns
            .contains("podbridge-operator.podbridge-system.svc.cluster.local"));
        assert!(names.ips.contains(&"10.244.0.1".parse::<IpAddr>().unwrap()));
    }

    #[test]
    fn first_plan_makes_a_ca_and_a_leaf_it_signed_with_the_names() {
        let (material, reasons) = replaced(plan(None, &names(), T0).unwrap());
        assert!(
            reasons.iter().any(|r| r.contains("no usable CA")),
            "{reasons:?}"
        );
        let cas = inspect_bundle(&material.ca_bundle);
        assert_eq!(cas.len(), 1);
        let leaf = &inspect_bundle(&material.cert)[0];
        assert_eq!(leaf.issuer, cas[0].subject);
        assert_eq!(leaf.names, names());
        assert_eq!(leaf.not_after, T0 + LEAF_VALIDITY);
        // the same material, a day later: nothing to do
        assert!(matches!(
            plan(Some(&material), &names(), T0 + DAY).unwrap(),
            Plan::Keep
        ));
    }

    #[test]
    fn the_leaf_verifies_against_the_bundle() {
        let (material, _) = replaced(plan(None, &names(), certs_now()).unwrap());
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(material.ca_bundle.as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let leaf = CertificateDer::pem_slice_iter(material.cert.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        use rustls::client::danger::ServerCertVerifier as _;
        for name in ["podbridge-operator.podbridge-system.svc", "10.244.0.1"] {
            let server_name = rustls::pki_types::ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(
                    &leaf,
                    &[],
                    &server_name,
                    &[],
                    rustls::pki_types::UnixTime::now(),
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = rustls::pki_types::ServerName::try_from("evil.example").unwrap();
        assert!(verifier
            .verify_server_cert(&leaf, &[], &other, &[], rustls::pki_types::UnixTime::now())
            .is_err());
    }

    fn certs_now() -> i64 {
        now()
    }

    #[test]
    fn the_leaf_is_renewed_before_it_ends_by_the_same_ca() {
        let (first, _) = replaced(plan(None, &names(), T0).unwrap());
        let later = T0 + LEAF_VALIDITY - LEAF_RENEW_BEFORE + 1;
        let (second, reasons) = replaced(plan(Some(&first), &names(), later).unwrap());
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("serving certificate ends")),
            "{reasons:?}"
        );
        assert_eq!(second.ca_bundle, first.ca_bundle);
        assert_eq!(second.ca_key, first.ca_key);
        assert_ne!(second.cert, first.cert);
    }

    #[test]
    fn a_name_change_reissues_the_leaf_only() {
        let (first, _) = replaced(plan(None, &names(), T0).unwrap());
        let wider = Names::for_service(
            Some(("podbridge-system", "podbridge-operator")),
            &["10.244.0.1".into(), "webhook.example".into()],
        );
        let (second, reasons) = replaced(plan(Some(&first), &wider, T0 + DAY).unwrap());
        assert!(
            reasons.iter().any(|r| r.contains("names changed")),
            "{reasons:?}"
        );
        assert_eq!(second.ca_bundle, first.ca_bundle);
        assert!(inspect_bundle(&second.cert)[0]
            .names
            .dns
            .contains("webhook.example"));
    }

    #[test]
    fn ca_rotation_keeps_the_old_ca_and_the_old_leaf_until_it_is_due() {
        let (mut current, _) = replaced(plan(None, &names(), T0).unwrap());
        // walk through time the way the hourly check would, renewing as told
        let mut time = T0;
        let mut rotated_at = None;
        while time < T0 + 2 * CA_VALIDITY {
            time += DAY;
            if let Plan::Replace { material, reasons } =
                plan(Some(&current), &names(), time).unwrap()
            {
                if reasons.iter().any(|r| r.contains("CA ends")) && rotated_at.is_none() {
                    rotated_at = Some(time);
                    let cas = inspect_bundle(&material.ca_bundle);
                    assert_eq!(cas.len(), 2, "old CA kept beside the new one");
                    // the leaf signed by the old CA is kept: still trusted, not yet due
                    let leaf = &inspect_bundle(&material.cert)[0];
                    assert_eq!(leaf.issuer, cas[1].subject);
                    assert_eq!(material.cert, current.cert);
                }
                current = material;
            }
            // at every moment the serving leaf is trusted by the bundle and not expired
            let cas = inspect_bundle(&current.ca_bundle);
            let leaf = &inspect_bundle(&current.cert)[0];
            assert!(leaf.not_after > time, "leaf expired at {time}");
            assert!(cas.iter().any(|ca| ca.subject == leaf.issuer));
            assert!(cas.iter().all(|ca| ca.not_after > time));
        }
        let rotated_at = rotated_at.expect("the CA rotated");
        assert_eq!(rotated_at, T0 + CA_VALIDITY - CA_RENEW_BEFORE);
    }

    #[test]
    fn a_mismatched_or_unreadable_secret_is_replaced_not_trusted() {
        let (first, _) = replaced(plan(None, &names(), T0).unwrap());
        let (other, _) = replaced(plan(None, &names(), T0 + 1).unwrap());
        let mixed = Material {
            ca_key: other.ca_key.clone(),
            ..first.clone()
        };
        let (_, reasons) = replaced(plan(Some(&mixed), &names(), T0 + DAY).unwrap());
        assert!(
            reasons.iter().any(|r| r.contains("does not match")),
            "{reasons:?}"
        );
        let garbage = Material {
            ca_bundle: "not pem".into(),
            ca_key: Some("nope".into()),
            cert: String::new(),
            key: String::new(),
        };
        let (fresh, _) = replaced(plan(Some(&garbage), &names(), T0).unwrap());
        assert_eq!(inspect_bundle(&fresh.ca_bundle).len(), 1);
    }
}
