//! Image references and image configuration: what the Docker client named, normalised the way
//! dockerd does, and the image defaults a create request inherits.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ModelError, Result};

/// Registry Docker Hub references resolve to.
const DOCKER_HUB: &str = "docker.io";
/// Legacy spelling of Docker Hub, rewritten to [`DOCKER_HUB`] like dockerd does.
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// Namespace of Docker Hub's official images (`busybox` is `library/busybox`).
const OFFICIAL_NAMESPACE: &str = "library";
/// Docker's limit on the repository part of a reference.
const MAX_REPOSITORY_LENGTH: usize = 255;

/// A parsed image reference, e.g. `localhost:5000/team/app:1.0@sha256:…`.
///
/// Kubernetes resolves short names with the node's container runtime configuration, which may not
/// default to Docker Hub, so podbridge always hands it the fully qualified form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host, with port if any (`docker.io`, `localhost:5000`).
    pub registry: String,
    /// Repository path inside the registry (`library/busybox`).
    pub repository: String,
    /// Tag; `latest` when the reference named neither a tag nor a digest.
    pub tag: Option<String>,
    /// Digest (`sha256:<64 hex>`), kept verbatim.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses a reference with Docker's normalisation rules (`distribution/reference`
    /// `ParseNormalizedNamed` followed by `TagNameOnly`).
    pub fn parse(reference: &str) -> Result<Self> {
        let fail = |reason: &str| ModelError::ParseImageReferenceFailed {
            reference: reference.to_owned(),
            reason: reason.to_owned(),
        };
        if reference.is_empty() {
            return Err(fail("empty reference"));
        }
        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) => (
                name,
                Some(parse_digest(digest).ok_or_else(|| fail("invalid digest"))?),
            ),
            None => (reference, None),
        };
        let (name, tag) = match name.rfind(':') {
            Some(colon) if !name[colon..].contains('/') => {
                let tag = &name[colon + 1..];
                if !valid_tag(tag) {
                    return Err(fail("invalid tag"));
                }
                (&name[..colon], Some(tag.to_owned()))
            }
            _ => (name, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|byte| byte.is_ascii_uppercase()) =>
            {
                if !valid_registry(first) {
                    return Err(fail("invalid registry host"));
                }
                (first.to_owned(), rest.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let registry = if registry == DOCKER_HUB_LEGACY {
            DOCKER_HUB.to_owned()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("{OFFICIAL_NAMESPACE}/{repository}")
        } else {
            repository
        };
        if repository.bytes().any(|byte| byte.is_ascii_uppercase()) {
            return Err(fail(&format!(
                "repository name ({repository}) must be lowercase"
            )));
        }
        if repository.len() > MAX_REPOSITORY_LENGTH {
            return Err(fail("repository name must not be more than 255 characters"));
        }
        if !repository.split('/').all(valid_path_component) {
            return Err(fail("invalid repository name"));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_owned())
        } else {
            tag
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The fully qualified reference: `registry/repository[:tag][@digest]`.
    pub fn normalised(&self) -> String {
        let mut text = format!("{}/{}", self.registry, self.repository);
        if let Some(tag) = &self.tag {
            text.push(':');
            text.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            text.push('@');
            text.push_str(digest);
        }
        text
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.normalised())
    }
}

/// `algorithm:encoded`; sha256 must be 64 lowercase hex characters.
fn parse_digest(digest: &str) -> Option<String> {
    let (algorithm, encoded) = digest.split_once(':')?;
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"+._-".contains(&byte)
        });
    let encoded_ok = encoded.len() >= 32 && encoded.bytes().all(|byte| byte.is_ascii_hexdigit());
    let sha256_ok = algorithm != "sha256"
        || (encoded.len() == 64 && !encoded.bytes().any(|byte| byte.is_ascii_uppercase()));
    (algorithm_ok && encoded_ok && sha256_ok).then(|| digest.to_owned())
}

/// `[\w][\w.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let word = |byte: u8| byte.is_ascii_alphanumeric() || byte == b'_';
    let mut bytes = tag.bytes();
    tag.len() <= 128
        && bytes.next().is_some_and(word)
        && bytes.all(|byte| word(byte) || byte == b'.' || byte == b'-')
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alphanumeric = |byte: &u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
    if bytes.is_empty() || !alphanumeric(&bytes[0]) || !alphanumeric(&bytes[bytes.len() - 1]) {
        return false;
    }
    let mut index = 0;
    while index < bytes.len() {
        if alphanumeric(&bytes[index]) {
            index += 1;
            continue;
        }
        let start = index;
        while index < bytes.len() && !alphanumeric(&bytes[index]) {
            index += 1;
        }
        let separator = &component[start..index];
        let valid =
            matches!(separator, "." | "_" | "__") || separator.bytes().all(|byte| byte == b'-');
        if !valid {
            return false;
        }
    }
    true
}

/// `host[:port]`, the host being dot-separated DNS labels or a bracketed IPv6 address.
fn valid_registry(registry: &str) -> bool {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        match rest.split_once(']') {
            Some((address, after)) => {
                if !address
                    .bytes()
                    .all(|byte| byte.is_ascii_hexdigit() || byte == b':')
                {
                    return false;
                }
                if !after.is_empty() && !after.starts_with(':') {
                    return false;
                }
                (None, after.strip_prefix(':'))
            }
            None => return false,
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        }
    };
    let port_ok =
        port.is_none_or(|port| !port.is_empty() && port.bytes().all(|byte| byte.is_ascii_digit()));
    let host_ok = host.is_none_or(|host| {
        host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        })
    });
    port_ok && host_ok
}

/// The `Config` object of an image (`GET /images/{name}/json`), the defaults a container inherits
/// when its create request leaves a field empty.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageConfig {
    pub user: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    pub healthcheck: Option<ImageHealthcheck>,
    pub labels: Option<BTreeMap<String, String>>,
    pub stop_signal: Option<String>,
    /// Where the nodes pull the image from, when that is not the name the client used: an
    /// image built by `docker build` is pushed to the build registry under a digest, while the
    /// client keeps calling it by its tag. Not part of Docker's shape (never sent to clients).
    #[serde(
        rename = "PodbridgePullReference",
        skip_serializing_if = "Option::is_none"
    )]
    pub pull_reference: Option<String>,
}

/// An image's `HEALTHCHECK`, in Docker's wire shape (durations in nanoseconds).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageHealthcheck {
    pub test: Option<Vec<String>>,
    pub interval: Option<i64>,
    pub timeout: Option<i64>,
    pub start_period: Option<i64>,
    pub retries: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_table() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            ("index.docker.io/busybox:1.36", "docker.io/library/busybox:1.36"),
            ("quay.io/x/y:tag", "quay.io/x/y:tag"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            ("localhost/x", "localhost/x:latest"),
            ("testcontainers/ryuk:0.14.0", "docker.io/testcontainers/ryuk:0.14.0"),
            ("redis:7", "docker.io/library/redis:7"),
            (
                "host:5000/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "host:5000/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            ),
            (
                "nginx:1.27@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "docker.io/library/nginx:1.27@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            ),
            ("[::1]:5000/app", "[::1]:5000/app:latest"),
        ];
        for (input, expected) in cases {
            let parsed = ImageRef::parse(input).unwrap_or_else(|error| panic!("{input}: {error}"));
            assert_eq!(parsed.normalised(), expected, "{input}");
        }
    }

    #[test]
    fn parts_are_split() {
        let parsed = ImageRef::parse("localhost:5000/a/b").unwrap();
        assert_eq!(parsed.registry, "localhost:5000");
        assert_eq!(parsed.repository, "a/b");
        assert_eq!(parsed.tag.as_deref(), Some("latest"));
        assert_eq!(parsed.digest, None);
    }

    #[test]
    fn invalid_references_are_rejected() {
        for input in [
            "Busybox",
            "library/BusyBox",
            "",
            "busybox:",
            "busy box",
            "a//b",
            "-a",
            "x@sha256:short",
            "x@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            let error = ImageRef::parse(input).expect_err(input);
            assert!(
                error.to_string().starts_with("invalid reference format"),
                "{error}"
            );
        }
        let error = ImageRef::parse("Busybox").unwrap_err().to_string();
        assert!(error.contains("must be lowercase"), "{error}");
        assert!(ImageRef::parse("[::1]evil/app").is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn component() -> impl Strategy<Value = String> {
            "[a-z0-9]{1,6}(([._]|__|-{1,2})[a-z0-9]{1,6}){0,2}"
        }

        /// References built from Docker's grammar, with and without registry, tag and digest.
        fn valid_reference() -> impl Strategy<Value = String> {
            (
                prop::option::of(prop_oneof![
                    Just("localhost".to_string()),
                    Just("localhost:5000".to_string()),
                    Just("[::1]:5000".to_string()),
                    "[a-z0-9]{1,8}\\.[a-z]{2,4}(:[0-9]{1,5})?",
                ]),
                prop::collection::vec(component(), 1..4),
                prop::option::of("[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,20}"),
                prop::option::of("[0-9a-f]{64}"),
            )
                .prop_map(|(registry, mut path, tag, digest)| {
                    // Docker reads a first component with a dot as a registry host.
                    if registry.is_none() && path.len() > 1 {
                        path[0] = path[0].replace('.', "_");
                    }
                    let mut text = path.join("/");
                    if let Some(registry) = registry {
                        text = format!("{registry}/{text}");
                    }
                    if let Some(tag) = tag {
                        text = format!("{text}:{tag}");
                    }
                    if let Some(digest) = digest {
                        text = format!("{text}@sha256:{digest}");
                    }
                    text
                })
        }

        proptest! {
            #![proptest_config(crate::proptest_cases::config(512))]

            #[test]
            fn arbitrary_strings_never_panic_and_normalise_to_a_fixed_point(text in any::<String>()) {
                if let Ok(parsed) = ImageRef::parse(&text) {
                    prop_assert_eq!(ImageRef::parse(&parsed.normalised()).ok(), Some(parsed));
                }
            }

            #[test]
            fn reference_like_strings_normalise_to_a_fixed_point(
                text in "[a-zA-Z0-9:/@._\\[\\]-]{0,40}",
            ) {
                if let Ok(parsed) = ImageRef::parse(&text) {
                    let normalised = parsed.normalised();
                    prop_assert_eq!(ImageRef::parse(&normalised).ok(), Some(parsed));
                    prop_assert!(normalised.contains('/'));
                }
            }

            #[test]
            fn valid_references_are_accepted_and_keep_their_parts(text in valid_reference()) {
                let parsed = ImageRef::parse(&text);
                prop_assert!(parsed.is_ok(), "{}: {:?}", text, parsed);
                let parsed = parsed.unwrap();
                prop_assert!(parsed.tag.is_some() || parsed.digest.is_some());
                prop_assert_eq!(ImageRef::parse(&parsed.normalised()).ok(), Some(parsed));
            }
        }
    }

    #[test]
    fn image_config_reads_docker_json() {
        let config: ImageConfig = serde_json::from_str(
            r#"{"User":"redis","Cmd":["redis-server"],"Entrypoint":null,"Env":["PATH=/bin"],
                "ExposedPorts":{"6379/tcp":{}},"Healthcheck":{"Test":["CMD","true"],"Interval":1000000000},
                "Unknown":1}"#,
        )
        .unwrap();
        assert_eq!(config.user.as_deref(), Some("redis"));
        assert_eq!(config.entrypoint, None);
        assert!(config.exposed_ports.unwrap().contains_key("6379/tcp"));
        assert_eq!(config.healthcheck.unwrap().interval, Some(1_000_000_000));
    }
}
