//! Docker container IDs: the identity a Docker client sees, mapped onto Kubernetes names and labels.

use sha2::{Digest, Sha256};

use super::{ModelError, Result};

/// A Docker container ID: 64 lowercase hexadecimal characters.
///
/// Clients address containers by the full ID or any unique prefix, and Kubernetes label values are
/// limited to 63 characters, so the 12-character [`ContainerId::short`] form is what goes into
/// labels and object names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerId(String);

/// Length of Docker's short ID form, as printed by `docker ps`.
const SHORT_LENGTH: usize = 12;

impl ContainerId {
    /// A fresh random ID. Like moby, IDs whose short form is all digits are skipped: tools parse a
    /// purely numeric short ID as a number and lose leading zeros.
    pub fn random() -> Self {
        loop {
            let bytes: [u8; 32] = rand::random();
            let id = Self(hex::encode(bytes));
            if !id.short().bytes().all(|byte| byte.is_ascii_digit()) {
                return id;
            }
        }
    }

    /// A deterministic ID (sha256 of the seed), for golden tests and dry runs whose output must
    /// not change between runs.
    pub fn from_seed(seed: &[u8]) -> Self {
        Self(hex::encode(Sha256::digest(seed)))
    }

    /// Parses a full ID, as read back from an annotation.
    pub fn parse(value: &str) -> Result<Self> {
        let valid = value.len() == 64
            && value
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(ModelError::ParseContainerIdFailed {
                value: value.to_owned(),
            })
        }
    }

    /// The full 64-character ID.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 12-character prefix Docker prints and podbridge puts into labels and names.
    pub fn short(&self) -> &str {
        &self.0[..SHORT_LENGTH]
    }
}

impl std::fmt::Display for ContainerId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// What a client's reference to a container names.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a, T> {
    Found(&'a T),
    /// More than one ID starts with the reference (Docker's 400 `multiple IDs found`).
    Ambiguous,
    Missing,
}

/// Docker's rule for a container reference, one copy for every store of containers: the full ID
/// or the name (with or without its leading `/`) first, then a unique ID prefix, compared in
/// lower case as IDs are written.
pub fn lookup<'a, T>(
    items: &'a [T],
    reference: &str,
    id: impl Fn(&T) -> &str,
    name: impl Fn(&T) -> &str,
) -> Lookup<'a, T> {
    let wanted = reference.strip_prefix('/').unwrap_or(reference);
    if let Some(found) = items
        .iter()
        .find(|item| id(item) == reference || name(item) == wanted)
    {
        return Lookup::Found(found);
    }
    let lower = reference.to_ascii_lowercase();
    let mut matches = items
        .iter()
        .filter(|item| !lower.is_empty() && id(item).starts_with(&lower));
    match (matches.next(), matches.next()) {
        (Some(found), None) => Lookup::Found(found),
        (Some(_), Some(_)) => Lookup::Ambiguous,
        _ => Lookup::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_follows_docker_references() {
        let items = [("abc123", "web"), ("abd456", "db"), ("ff0000", "abc")];
        let find = |reference: &str| match lookup(&items, reference, |i| i.0, |i| i.1) {
            Lookup::Found(found) => Some(found.1),
            Lookup::Ambiguous => Some("ambiguous"),
            Lookup::Missing => None,
        };
        assert_eq!(find("web"), Some("web"));
        assert_eq!(find("/web"), Some("web"));
        assert_eq!(find("abc123"), Some("web"));
        // a name wins over an ID prefix
        assert_eq!(find("abc"), Some("abc"));
        assert_eq!(find("ABD"), Some("db"));
        assert_eq!(find("ab"), Some("ambiguous"));
        assert_eq!(find(""), None);
        assert_eq!(find("nope"), None);
    }

    #[test]
    fn random_ids_are_64_lowercase_hex_and_distinct() {
        let first = ContainerId::random();
        let second = ContainerId::random();
        assert_ne!(first, second);
        assert!(ContainerId::parse(first.as_str()).is_ok());
        assert_eq!(first.short().len(), 12);
        assert!(first.as_str().starts_with(first.short()));
    }

    #[test]
    fn seeded_ids_are_deterministic() {
        assert_eq!(ContainerId::from_seed(b"a"), ContainerId::from_seed(b"a"));
        assert_ne!(ContainerId::from_seed(b"a"), ContainerId::from_seed(b"b"));
    }

    #[test]
    fn parse_rejects_uppercase_and_wrong_length() {
        assert!(ContainerId::parse(&"A".repeat(64)).is_err());
        assert!(ContainerId::parse("abc").is_err());
    }
}
