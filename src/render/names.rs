//! Kubernetes names derived from Docker names: deterministic, valid whatever the client sent.

use crate::labels;
use sha2::{Digest, Sha256};

/// Kubernetes' limit on a DNS label (pod hostnames, Service names, label values).
pub const MAX_LABEL_LENGTH: usize = 63;
/// Prefix of the PersistentVolumeClaim that backs a Docker named volume.
const VOLUME_CLAIM_PREFIX: &str = "podbridge-volume-";

/// Lowercases and replaces every run of characters outside `[a-z0-9]` by one `-`, trimming `-`
/// at both ends: the closest DNS label to a Docker name (`My_Container.1` → `my-container-1`).
/// The result may be empty and is not truncated.
pub fn dns_label(text: &str) -> String {
    let mut label = String::with_capacity(text.len());
    for character in text.chars() {
        let lower = character.to_ascii_lowercase();
        if lower.is_ascii_lowercase() || lower.is_ascii_digit() {
            label.push(lower);
        } else if !label.is_empty() && !label.ends_with('-') {
            label.push('-');
        }
    }
    label.trim_end_matches('-').to_owned()
}

/// Cuts to `length` characters (all ASCII here) without leaving a trailing `-`.
fn truncate_label(label: &str, length: usize) -> String {
    label[..label.len().min(length)]
        .trim_end_matches('-')
        .to_owned()
}

/// `{prefix}-{docker name}-{short id}`, or `{prefix}-{short id}` without a name, always a DNS-1123
/// label of at most 63 characters. The short ID keeps truncated names unique.
pub fn pod_name(prefix: &str, docker_name: Option<&str>, short_id: &str) -> String {
    let prefix = truncate_label(&dns_label(prefix), 20);
    let name = docker_name.map(dns_label).unwrap_or_default();
    let fixed = short_id.len()
        + 1
        + if prefix.is_empty() {
            0
        } else {
            prefix.len() + 1
        };
    let name = truncate_label(&name, MAX_LABEL_LENGTH.saturating_sub(fixed));
    [prefix.as_str(), name.as_str(), short_id]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// Pod hostname: the Docker `Hostname`, else the Docker name, as a DNS label; else the short ID
/// (what Docker itself uses as hostname).
pub fn hostname(
    docker_hostname: Option<&str>,
    docker_name: Option<&str>,
    short_id: &str,
) -> String {
    [docker_hostname, docker_name]
        .into_iter()
        .flatten()
        .map(|text| truncate_label(&dns_label(text), MAX_LABEL_LENGTH))
        .find(|label| !label.is_empty())
        .unwrap_or_else(|| short_id.to_owned())
}

/// PersistentVolumeClaim name for a Docker named volume of one podbridge instance:
/// `podbridge-volume-{name as a DNS label}-{hash}`. The hash covers the instance and the exact
/// Docker name, so instances sharing a namespace each have their own `data`, and `a_b` and `a-b`
/// (both `a-b` as labels) stay apart.
pub fn volume_claim_name(instance: &str, volume: &str) -> String {
    let hash = &hex::encode(Sha256::digest(format!("{instance}/{volume}").as_bytes()))[..8];
    let room = MAX_LABEL_LENGTH - VOLUME_CLAIM_PREFIX.len() - hash.len() - 1;
    let label = truncate_label(&dns_label(volume), room);
    if label.is_empty() {
        format!("{VOLUME_CLAIM_PREFIX}{hash}")
    } else {
        format!("{VOLUME_CLAIM_PREFIX}{label}-{hash}")
    }
}

/// RFC 1123 label: pod names and hostnames.
pub fn is_dns1123_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    let inner = |byte: &u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= MAX_LABEL_LENGTH
        && inner(&bytes[0])
        && inner(&bytes[bytes.len() - 1])
        && bytes.iter().all(|byte| inner(byte) || *byte == b'-')
}

/// DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253 characters (what Kubernetes
/// accepts as a `hostAliases` hostname).
pub fn is_dns1123_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_dns1123_label)
}

/// RFC 1035 label: Service names (must start with a letter).
pub fn is_dns1035_label(text: &str) -> bool {
    is_dns1123_label(text) && text.as_bytes()[0].is_ascii_lowercase()
}

/// A label value (`podbridge.io/project`): at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
pub fn label_value(text: &str) -> String {
    let replaced: String = text
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || "._-".contains(character) {
                character
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = replaced.trim_matches(|character: char| !character.is_ascii_alphanumeric());
    trimmed[..trimmed.len().min(MAX_LABEL_LENGTH)]
        .trim_end_matches(|character: char| !character.is_ascii_alphanumeric())
        .to_owned()
}

/// Whether a Docker label can be copied onto Kubernetes objects as is. Keys in Kubernetes' own
/// prefixes are left out: they mean something to the cluster.
pub fn is_copyable_label(key: &str, value: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|prefix| {
        prefix.len() <= 253
            && !is_reserved_label_domain(prefix)
            && prefix.split('.').all(is_dns1123_label)
    });
    prefix_ok && is_label_name(name) && (value.is_empty() || is_label_name(value))
}

/// `kubernetes.io`, `k8s.io`, `podbridge.io` or a subdomain of one (case-insensitively, as DNS).
fn is_reserved_label_domain(prefix: &str) -> bool {
    let prefix = prefix.to_ascii_lowercase();
    labels::RESERVED_LABEL_DOMAINS.iter().any(|domain| {
        prefix == *domain
            || prefix
                .strip_suffix(domain)
                .is_some_and(|rest| rest.ends_with('.'))
    })
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63.
fn is_label_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LABEL_LENGTH
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(byte))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: &str = "0123456789ab";

    #[test]
    fn pod_names_for_nasty_docker_names() {
        assert_eq!(
            pod_name("pb", Some("My_Container.1"), SHORT),
            "pb-my-container-1-0123456789ab"
        );
        assert_eq!(pod_name("pb", Some("__x"), SHORT), "pb-x-0123456789ab");
        assert_eq!(pod_name("pb", None, SHORT), "pb-0123456789ab");
        assert_eq!(pod_name("", Some("9lives"), SHORT), "9lives-0123456789ab");
        assert_eq!(pod_name("pb", Some("___"), SHORT), "pb-0123456789ab");
        let long = pod_name("pb", Some(&"Ab_".repeat(27)), SHORT);
        assert!(long.len() <= 63 && is_dns1123_label(&long), "{long}");
        assert!(long.ends_with(SHORT));
        let long_prefix = pod_name(&"P".repeat(80), Some(&"n".repeat(80)), SHORT);
        assert!(is_dns1123_label(&long_prefix), "{long_prefix}");
    }

    #[test]
    fn hostnames_fall_back_to_name_then_short_id() {
        assert_eq!(hostname(Some("DB.local"), Some("x"), SHORT), "db-local");
        assert_eq!(hostname(None, Some("demo_db_1"), SHORT), "demo-db-1");
        assert_eq!(hostname(Some(""), None, SHORT), SHORT);
    }

    #[test]
    fn claim_names_stay_distinct() {
        let data = volume_claim_name("ci-1", "data");
        assert!(data.starts_with("podbridge-volume-data-"), "{data}");
        assert_eq!(data, volume_claim_name("ci-1", "data"));
        assert_ne!(data, volume_claim_name("ci-2", "data"));
        assert_ne!(volume_claim_name("i", "a_b"), volume_claim_name("i", "a-b"));
        assert!(is_dns1123_label(&volume_claim_name(
            "i",
            &"Vol_".repeat(30)
        )));
        assert!(is_dns1123_label(&volume_claim_name("i", "___")));
    }

    #[test]
    fn label_checks() {
        assert!(is_copyable_label("com.docker.compose.project", "demo"));
        assert!(is_copyable_label("org.testcontainers", "true"));
        assert!(!is_copyable_label(
            "com.docker.compose.project.config_files",
            "/home/ci/compose.yaml"
        ));
        assert!(!is_copyable_label("app.kubernetes.io/name", "x"));
        assert!(!is_copyable_label("kubernetes.io/metadata.name", "x"));
        assert!(!is_copyable_label("node-role.k8s.io/x", "x"));
        assert!(!is_copyable_label("podbridge.io/instance", "other"));
        assert!(!is_copyable_label("podbridge.io/pull-policy", "Always"));
        assert!(!is_copyable_label("sub.PODBRIDGE.io/x", "y"));
        // Only the domain and its subdomains are reserved, not look-alikes.
        assert!(is_copyable_label("mykubernetes.io/x", "y"));
        assert!(!is_copyable_label("x", &"v".repeat(64)));
        assert_eq!(label_value("group/project: main"), "group-project--main");
        assert!(
            is_dns1035_label("web") && !is_dns1035_label("1web") && !is_dns1035_label("demo_db")
        );
    }
}
