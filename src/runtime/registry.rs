//! runtime: a small Registry HTTP API v2 client that reads an image's config (manifest, then
//! config blob), with token auth and a bounded in-memory cache by normalised reference.
//!
//! Registries on loopback are spoken to in plain HTTP (as Docker treats `localhost`), every
//! other one over TLS with the system's roots plus configured CA files. Which registries may be
//! contacted at all is [`Lookup`]; a mirror can stand in for a registry (a CI's pull-through
//! cache, or the test cluster's local registry for docker.io). When a registry may not be
//! contacted the config is unknown and callers translate without it.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, HOST, LOCATION, WWW_AUTHENTICATE};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::model::{ImageConfig, ImageRef};

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Manifest media types podbridge understands, in the order it asks for them.
const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.index.v1+json";
/// Platform picked from a manifest list or index.
const PLATFORM_OS: &str = "linux";
const PLATFORM_ARCHITECTURE: &str = "amd64";
/// How long one network step (connect, request, body) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest manifest, config or token response read.
const MAX_BODY: usize = 8 * 1024 * 1024;
/// Configs kept in memory; the oldest is evicted first.
const CACHE_CAPACITY: usize = 256;
/// How long a tag's config is trusted before the registry is asked again (a tag can move).
const CACHE_TTL: Duration = Duration::from_secs(600);
/// Redirects followed for one request (blob stores may redirect).
const MAX_REDIRECTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid reference format: {reference}: {reason}")]
    ParseReferenceFailed { reference: String, reason: String },
    #[error("registry {registry} is not contacted (registry_lookup = {lookup}): the image config is unknown")]
    RegistryNotSupported { registry: String, lookup: Lookup },
    #[error("registry mirror `{entry}`: {reason} (expected REGISTRY=URL, e.g. docker.io=https://mirror.example)")]
    BadMirror { entry: String, reason: String },
    #[error("login attempt to {url} failed with status: {status}")]
    LoginFailed { url: String, status: StatusCode },
    #[error("registry CA file {path}: {reason}")]
    BadCaFile { path: String, reason: String },
    #[error("manifest for {reference} not found: manifest unknown: manifest unknown")]
    ManifestNotFound { reference: String },
    #[error("pull access denied for {reference}, repository does not exist or may require 'docker login'")]
    AccessDenied { reference: String },
    #[error("request to {url} failed: {reason}")]
    RequestFailed { url: String, reason: String },
    #[error("request to {url} timed out")]
    RequestTimedOut { url: String },
    #[error("{url} answered {status}")]
    UnexpectedStatus { url: String, status: StatusCode },
    #[error("cannot parse {what} of {reference}: {reason}")]
    ParseFailed {
        what: &'static str,
        reference: String,
        reason: String,
    },
    #[error("{reference} has no {PLATFORM_OS}/{PLATFORM_ARCHITECTURE} image")]
    NoMatchingPlatform { reference: String },
    #[error("config blob of {reference} does not match its digest {digest}")]
    DigestMismatch { reference: String, digest: String },
}

impl RegistryError {
    /// Errors that mean the image does not exist (or is not readable), as opposed to a registry
    /// podbridge cannot talk to.
    pub fn is_missing_image(&self) -> bool {
        matches!(
            self,
            RegistryError::ManifestNotFound { .. } | RegistryError::AccessDenied { .. }
        )
    }
}

/// Basic credentials for a registry, from the `X-Registry-Auth` header of a pull.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Credentials {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
}

impl Credentials {
    /// Decodes `X-Registry-Auth`: base64url JSON `{username, password, serveraddress}`. Empty or
    /// unreadable headers mean no credentials (Docker sends `e30=`, i.e. `{}`, when logged out).
    pub fn from_registry_auth(header: &str) -> Option<Self> {
        let header = header.trim();
        let engines = [
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
            base64::engine::general_purpose::STANDARD,
        ];
        let raw = engines
            .iter()
            .find_map(|engine| engine.decode(header).ok())?;
        let credentials: Credentials = serde_json::from_slice(&raw).ok()?;
        (!credentials.username.is_empty() || !credentials.password.is_empty())
            .then_some(credentials)
    }

    fn basic(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// What the registry says about an image: its config and where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageDetails {
    /// The config digest, Docker's image ID.
    pub id: String,
    /// The manifest digest (`RepoDigests`), when the registry reported it.
    pub manifest_digest: Option<String>,
    pub config: ImageConfig,
    pub created: Option<String>,
    pub architecture: Option<String>,
    pub os: Option<String>,
    /// The sum of the manifest's layer sizes: what the registry stores (compressed), the
    /// closest figure to Docker's `Size` that podbridge can know without pulling.
    pub size: u64,
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq)]
pub enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

/// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_once(',').map_or((after, ""), |(v, r)| (v, r))
        };
        params.insert(key, value.to_owned());
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

/// What a manifest points to next.
#[derive(Debug, PartialEq)]
enum ManifestTarget {
    /// The config digest, and the sum of the layer sizes.
    Config(String, u64),
    Manifest(String),
}

fn parse_manifest(reference: &str, body: &[u8]) -> Result<ManifestTarget> {
    let manifest: Manifest =
        serde_json::from_slice(body).map_err(|error| RegistryError::ParseFailed {
            what: "manifest",
            reference: reference.to_owned(),
            reason: error.to_string(),
        })?;
    if let Some(manifests) = manifest.manifests {
        return manifests
            .into_iter()
            .find(|entry| {
                entry.platform.as_ref().is_some_and(|platform| {
                    platform.os == PLATFORM_OS && platform.architecture == PLATFORM_ARCHITECTURE
                })
            })
            .map(|entry| ManifestTarget::Manifest(entry.digest))
            .ok_or_else(|| RegistryError::NoMatchingPlatform {
                reference: reference.to_owned(),
            });
    }
    let size = manifest
        .layers
        .iter()
        .flatten()
        .fold(0u64, |sum, layer| sum.saturating_add(layer.size));
    match manifest.config {
        Some(config) => Ok(ManifestTarget::Config(config.digest, size)),
        None => Err(RegistryError::ParseFailed {
            what: "manifest",
            reference: reference.to_owned(),
            reason: format!(
                "no config descriptor (media type {})",
                manifest.media_type.as_deref().unwrap_or("unknown")
            ),
        }),
    }
}

#[derive(Debug, Deserialize)]
struct ConfigBlob {
    #[serde(default)]
    config: Option<ImageConfig>,
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
}

fn parse_config_blob(reference: &str, digest: &str, body: &[u8]) -> Result<ImageDetails> {
    if let Some(expected) = digest.strip_prefix("sha256:") {
        if hex::encode(Sha256::digest(body)) != expected {
            return Err(RegistryError::DigestMismatch {
                reference: reference.to_owned(),
                digest: digest.to_owned(),
            });
        }
    }
    let blob: ConfigBlob =
        serde_json::from_slice(body).map_err(|error| RegistryError::ParseFailed {
            what: "image config",
            reference: reference.to_owned(),
            reason: error.to_string(),
        })?;
    Ok(ImageDetails {
        id: digest.to_owned(),
        manifest_digest: None,
        config: blob.config.unwrap_or_default(),
        created: blob.created,
        architecture: blob.architecture,
        os: blob.os,
        size: 0,
    })
}

/// `http://host[:port]/path?query`, split for a request.
#[derive(Debug, Clone, PartialEq)]
struct Url {
    tls: bool,
    host: String,
    port: u16,
    authority: String,
    path_and_query: String,
}

impl Url {
    fn parse(url: &str) -> Result<Self> {
        let unusable = |reason: &str| RegistryError::RequestFailed {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(unusable("only http and https URLs are followed"));
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        let (host, port) = split_host_port(authority).ok_or_else(|| unusable("bad host"))?;
        if host.is_empty() {
            return Err(unusable("no host"));
        }
        // Only DNS names and IP addresses: no user info (`user@host`), no query or fragment
        // glued to the host, nothing a resolver or the Host header would read differently.
        let host_ok = if authority.starts_with('[') {
            host.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            host.bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.')
        };
        if !host_ok {
            return Err(unusable("bad host"));
        }
        Ok(Url {
            tls,
            host,
            port: port.unwrap_or(if tls { 443 } else { 80 }),
            authority: authority.to_owned(),
            path_and_query: path.to_owned(),
        })
    }

    fn text(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.path_and_query)
    }

    /// Same scheme, host and port: where credentials meant for `self` may also go.
    fn same_origin(&self, other: &Url) -> bool {
        self.tls == other.tls
            && self.port == other.port
            && self.host.eq_ignore_ascii_case(&other.host)
    }
}

/// The `Authorization` a request to `url` carries when it was meant for `origin`: none once a
/// redirect left the origin (another host, another port, or TLS dropped on the same host).
fn credentials_for<'a>(origin: &Url, url: &Url, authorization: Option<&'a str>) -> Option<&'a str> {
    authorization.filter(|_| origin.same_origin(url))
}

/// A token realm named by a registry's challenge, refused when it would send the user's
/// credentials in clear text while the registry itself is spoken to over TLS.
fn token_realm(registry: &Url, realm: &str) -> Result<Url> {
    let url = Url::parse(realm)?;
    if registry.tls && !url.tls && !is_loopback(&url.host) {
        return Err(RegistryError::RequestFailed {
            url: url.text(),
            reason: format!(
                "the token realm of {} is plain HTTP; credentials are sent only over TLS",
                registry.authority
            ),
        });
    }
    Ok(url)
}

fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match authority.split_once(':') {
        Some((host, port)) => Some((host.to_owned(), Some(port.parse().ok()?))),
        None => Some((authority.to_owned(), None)),
    }
}

/// Registries spoken to in plain HTTP: this machine's loopback, as Docker allows for localhost.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// `application/x-www-form-urlencoded` value encoding for token query parameters.
fn encode_query_value(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

struct Reply {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
}

/// Which registries podbridge reads image configs from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lookup {
    /// Any registry (the cluster pulls from them anyway).
    #[default]
    All,
    /// Registries (and mirrors) on this machine's loopback only: air-gapped runs and tests.
    Loopback,
    /// None: image configs are never known (kubedock's behaviour).
    Off,
}

impl std::fmt::Display for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Lookup::All => "all",
            Lookup::Loopback => "loopback",
            Lookup::Off => "off",
        })
    }
}

/// Docker Hub's other host names, as image references and `docker login` spell them.
fn canonical_registry(host: &str) -> &str {
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        other => other,
    }
}

/// A registry served from another base URL (`docker.io=http://127.0.0.1:5000`).
#[derive(Debug, Clone, PartialEq)]
struct Mirror {
    registry: String,
    base: String,
}

impl Mirror {
    fn parse(entry: &str) -> Result<Self> {
        let bad = |reason: &str| RegistryError::BadMirror {
            entry: entry.to_owned(),
            reason: reason.to_owned(),
        };
        let (registry, base) = entry.split_once('=').ok_or_else(|| bad("no `=`"))?;
        let base = base.trim().trim_end_matches('/');
        Url::parse(base).map_err(|_| bad("the URL must start with http:// or https://"))?;
        let registry = match registry.trim() {
            "" => return Err(bad("no registry before `=`")),
            other => canonical_registry(other),
        };
        Ok(Mirror {
            registry: registry.to_owned(),
            base: base.to_owned(),
        })
    }
}

/// Where and how image configs may be read: set once from podbridge's configuration.
pub struct RegistryAccess {
    lookup: Lookup,
    mirrors: Vec<Mirror>,
    /// The CAs of `registry_ca_files`, read and checked at start.
    extra_roots: rustls::RootCertStore,
    /// TLS settings without their roots yet, checked at start.
    tls_settings: rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>,
    /// Built at the first HTTPS request: the system's roots are some 150 certificates parsed
    /// into memory, which a bridge reading configs from a loopback or plain-HTTP mirror never
    /// needs.
    tls: std::sync::OnceLock<Arc<rustls::ClientConfig>>,
}

impl RegistryAccess {
    /// `mirrors` are `REGISTRY=URL` entries; `ca_files` are PEM bundles trusted besides the
    /// system's roots (a private registry's CA).
    pub fn new(lookup: Lookup, mirrors: &[String], ca_files: &[PathBuf]) -> Result<Self> {
        let mirrors = mirrors
            .iter()
            .map(|entry| Mirror::parse(entry))
            .collect::<Result<Vec<_>>>()?;
        let mut extra_roots = rustls::RootCertStore::empty();
        for path in ca_files {
            let bad = |reason: String| RegistryError::BadCaFile {
                path: path.display().to_string(),
                reason,
            };
            use rustls::pki_types::pem::PemObject;
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|error| bad(error.to_string()))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|error| bad(error.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no PEM certificate in it".into()));
            }
            // a certificate that does not parse fails here, at start, not at the first pull
            for cert in certs {
                extra_roots
                    .add(cert)
                    .map_err(|error| bad(error.to_string()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls_settings = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| RegistryError::BadCaFile {
                path: String::new(),
                reason: error.to_string(),
            })?;
        Ok(RegistryAccess {
            lookup,
            mirrors,
            extra_roots,
            tls_settings,
            tls: std::sync::OnceLock::new(),
        })
    }

    /// The TLS client settings: the system's roots (unreadable ones only mean fewer trusted
    /// registries) and the configured CAs.
    fn tls(&self) -> Arc<rustls::ClientConfig> {
        self.tls
            .get_or_init(|| {
                let mut roots = self.extra_roots.clone();
                if self.lookup != Lookup::Off {
                    for cert in rustls_native_certs::load_native_certs().certs {
                        let _ = roots.add(cert);
                    }
                }
                let config = self
                    .tls_settings
                    .clone()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Arc::new(config)
            })
            .clone()
    }

    /// Base URL serving `registry`'s `/v2/` API.
    fn base(&self, registry: &str) -> String {
        if let Some(mirror) = self.mirrors.iter().find(|m| m.registry == registry) {
            return mirror.base.clone();
        }
        let registry = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        let host = split_host_port(registry).map(|(host, _)| host);
        let scheme = if host.as_deref().is_some_and(is_loopback) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{registry}")
    }

    /// Whether `url` (a registry, a mirror, a token realm or a redirect) may be contacted.
    fn allows(&self, url: &Url) -> bool {
        match self.lookup {
            Lookup::All => true,
            Lookup::Loopback => is_loopback(&url.host),
            Lookup::Off => false,
        }
    }
}

/// Reads image configs from registries and remembers them.
pub struct RegistryClient {
    cache: Mutex<Cache>,
    access: Mutex<Arc<RegistryAccess>>,
}

/// Contacts nothing until [`RegistryClient::set_access`] says where it may go, so a runtime
/// built without configuration (tests, tools) never reaches out.
impl Default for RegistryClient {
    fn default() -> Self {
        let off = RegistryAccess::new(Lookup::Off, &[], &[]).expect("no CA files to read");
        RegistryClient {
            cache: Mutex::default(),
            access: Mutex::new(Arc::new(off)),
        }
    }
}

#[derive(Default)]
struct Cache {
    entries: HashMap<String, Cached>,
    order: VecDeque<String>,
}

struct Cached {
    details: Arc<ImageDetails>,
    fetched: std::time::Instant,
    /// Pinned by digest: the content can never change, so the entry never goes stale.
    pinned: bool,
}

impl Cached {
    fn fresh(&self) -> bool {
        self.pinned || self.fetched.elapsed() < CACHE_TTL
    }
}

impl RegistryClient {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces where configs are read from; the cache is kept (an image's config is the same
    /// whichever mirror served it).
    pub fn set_access(&self, access: RegistryAccess) {
        *self.access.lock() = Arc::new(access);
    }

    /// The cached details of `reference`, without any network call.
    pub fn cached(&self, reference: &str) -> Option<Arc<ImageDetails>> {
        let key = ImageRef::parse(reference).ok()?.normalised();
        let cache = self.cache.lock();
        cache.entries.get(&key).map(|entry| entry.details.clone())
    }

    /// The details of `reference`: from the cache while fresh, else from the registry. `pull`
    /// always asks the registry for a tag, as `docker pull` does.
    pub async fn details(
        &self,
        reference: &str,
        credentials: Option<&Credentials>,
        pull: bool,
    ) -> Result<Arc<ImageDetails>> {
        let image =
            ImageRef::parse(reference).map_err(|error| RegistryError::ParseReferenceFailed {
                reference: reference.to_owned(),
                reason: error.to_string(),
            })?;
        let key = image.normalised();
        let pinned = image.digest.is_some();
        if let Some(entry) = self.cache.lock().entries.get(&key) {
            if entry.fresh() && (pinned || !pull) {
                return Ok(entry.details.clone());
            }
        }
        let access = self.access.lock().clone();
        let details = Arc::new(fetch(&access, &image, credentials).await?);
        let mut cache = self.cache.lock();
        if !cache.entries.contains_key(&key) {
            cache.order.push_back(key.clone());
            while cache.order.len() > CACHE_CAPACITY {
                if let Some(oldest) = cache.order.pop_front() {
                    cache.entries.remove(&oldest);
                }
            }
        }
        cache.entries.insert(
            key,
            Cached {
                details: details.clone(),
                fetched: std::time::Instant::now(),
                pinned,
            },
        );
        Ok(details)
    }
}

/// Outcome of `docker login`.
#[derive(Debug, PartialEq, Eq)]
pub enum Login {
    /// The registry accepted the credentials (or asks for none).
    Accepted,
    /// The registry may not be contacted ([`Lookup`]), so the credentials were not checked.
    Unchecked,
}

impl RegistryClient {
    /// Checks credentials as `docker login` does: `/v2/` with them, through a token realm if
    /// the registry has one. `server` is the client's `serveraddress` (`https://index.docker.io/v1/`,
    /// `localhost:5000`, ...).
    pub async fn login(&self, server: &str, credentials: &Credentials) -> Result<Login> {
        let access = self.access.lock().clone();
        let host = server
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        let registry = match host {
            "" => "docker.io",
            other => canonical_registry(other),
        };
        let url = Url::parse(&format!("{}/v2/", access.base(registry)))?;
        if !access.allows(&url) {
            return Ok(Login::Unchecked);
        }
        let failed = |status| RegistryError::LoginFailed {
            url: url.text(),
            status,
        };
        let reply = request(&access, &url, None, None).await?;
        if reply.status != StatusCode::UNAUTHORIZED {
            return Ok(Login::Accepted);
        }
        let challenge = reply
            .headers
            .get(WWW_AUTHENTICATE)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_challenge);
        let basic = credentials.basic();
        let reply = match challenge {
            Some(Challenge::Bearer { realm, service, .. }) => {
                let query = service
                    .map(|service| format!("?service={}", encode_query_value(&service)))
                    .unwrap_or_default();
                let realm = token_realm(&url, &format!("{realm}{query}"))?;
                request(&access, &realm, None, Some(&basic)).await?
            }
            _ => request(&access, &url, None, Some(&basic)).await?,
        };
        if reply.status.is_success() {
            Ok(Login::Accepted)
        } else {
            Err(failed(reply.status))
        }
    }
}

/// Manifest (following an index to its linux/amd64 entry), then config blob.
async fn fetch(
    access: &RegistryAccess,
    image: &ImageRef,
    credentials: Option<&Credentials>,
) -> Result<ImageDetails> {
    let base = access.base(&image.registry);
    if !Url::parse(&base).is_ok_and(|url| access.allows(&url)) {
        return Err(RegistryError::RegistryNotSupported {
            registry: image.registry.clone(),
            lookup: access.lookup,
        });
    }
    let reference = image.normalised();
    let mut session = Session {
        access,
        base,
        image,
        credentials,
        token: None,
    };
    let mut target = image
        .digest
        .clone()
        .or_else(|| image.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let mut manifest_digest = None;
    for _ in 0..2 {
        let reply = session
            .get(&format!("manifests/{target}"), Some(MANIFEST_ACCEPT))
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Err(RegistryError::ManifestNotFound { reference });
        }
        manifest_digest = reply
            .headers
            .get("docker-content-digest")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .or(manifest_digest);
        match parse_manifest(&reference, &reply.body)? {
            ManifestTarget::Manifest(digest) => target = digest,
            ManifestTarget::Config(config_digest, size) => {
                let reply = session.get(&format!("blobs/{config_digest}"), None).await?;
                let mut details = parse_config_blob(&reference, &config_digest, &reply.body)?;
                details.manifest_digest = manifest_digest;
                details.size = size;
                return Ok(details);
            }
        }
    }
    Err(RegistryError::ParseFailed {
        what: "manifest",
        reference,
        reason: "an index points to another index".into(),
    })
}

/// The requests for one image, carrying the token once one was issued.
struct Session<'a> {
    access: &'a RegistryAccess,
    /// The registry's (or its mirror's) base URL.
    base: String,
    image: &'a ImageRef,
    credentials: Option<&'a Credentials>,
    token: Option<String>,
}

impl Session<'_> {
    /// `GET /v2/<repository>/<path>`; 2xx and 404 are answers, 401 authenticates once.
    async fn get(&mut self, path: &str, accept: Option<&str>) -> Result<Reply> {
        let url = Url::parse(&format!(
            "{}/v2/{}/{path}",
            self.base, self.image.repository
        ))?;
        let mut reply = request(self.access, &url, accept, self.token.as_deref()).await?;
        if reply.status == StatusCode::UNAUTHORIZED {
            let challenge = reply
                .headers
                .get(WWW_AUTHENTICATE)
                .and_then(|value| value.to_str().ok())
                .and_then(parse_challenge);
            let authorization = match challenge {
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope,
                }) => {
                    let scope = scope
                        .unwrap_or_else(|| format!("repository:{}:pull", self.image.repository));
                    format!(
                        "Bearer {}",
                        self.fetch_token(&url, &realm, service.as_deref(), &scope)
                            .await?
                    )
                }
                Some(Challenge::Basic) if self.credentials.is_some() => {
                    self.credentials.map(Credentials::basic).unwrap_or_default()
                }
                _ => {
                    return Err(RegistryError::AccessDenied {
                        reference: self.image.normalised(),
                    })
                }
            };
            self.token = Some(authorization);
            reply = request(self.access, &url, accept, self.token.as_deref()).await?;
            if reply.status == StatusCode::UNAUTHORIZED || reply.status == StatusCode::FORBIDDEN {
                return Err(RegistryError::AccessDenied {
                    reference: self.image.normalised(),
                });
            }
        }
        if reply.status.is_success() || reply.status == StatusCode::NOT_FOUND {
            Ok(reply)
        } else {
            Err(RegistryError::UnexpectedStatus {
                url: url.text(),
                status: reply.status,
            })
        }
    }

    async fn fetch_token(
        &self,
        registry: &Url,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String> {
        let mut query = vec![format!("scope={}", encode_query_value(scope))];
        if let Some(service) = service {
            query.push(format!("service={}", encode_query_value(service)));
        }
        let separator = if realm.contains('?') { '&' } else { '?' };
        let url = token_realm(registry, &format!("{realm}{separator}{}", query.join("&")))?;
        let basic = self.credentials.map(Credentials::basic);
        let reply = request(self.access, &url, None, basic.as_deref()).await?;
        if !reply.status.is_success() {
            return Err(RegistryError::AccessDenied {
                reference: self.image.normalised(),
            });
        }
        #[derive(Deserialize)]
        struct TokenReply {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let parsed: TokenReply =
            serde_json::from_slice(&reply.body).map_err(|error| RegistryError::ParseFailed {
                what: "token reply",
                reference: self.image.normalised(),
                reason: error.to_string(),
            })?;
        parsed
            .token
            .or(parsed.access_token)
            .ok_or_else(|| RegistryError::ParseFailed {
                what: "token reply",
                reference: self.image.normalised(),
                reason: "no token".into(),
            })
    }
}

/// One GET over a fresh HTTP/1.1 connection, following redirects the access allows; every step
/// is bounded by [`STEP_TIMEOUT`].
async fn request(
    access: &RegistryAccess,
    url: &Url,
    accept: Option<&str>,
    authorization: Option<&str>,
) -> Result<Reply> {
    let origin = url.clone();
    let mut url = url.clone();
    for _ in 0..=MAX_REDIRECTS {
        if !access.allows(&url) {
            return Err(RegistryError::RequestFailed {
                url: url.text(),
                reason: format!("not contacted (registry_lookup = {})", access.lookup),
            });
        }
        // Credentials go only to the origin they were meant for: a blob store a registry
        // redirects to gets none (and signed URLs refuse requests that carry them), nor does
        // the same host over plain HTTP.
        let authorization = credentials_for(&origin, &url, authorization);
        let reply = request_once(access, &url, accept, authorization).await?;
        if reply.status.is_redirection() {
            if let Some(location) = reply
                .headers
                .get(LOCATION)
                .and_then(|value| value.to_str().ok())
            {
                url = if location.starts_with('/') {
                    Url {
                        path_and_query: location.to_owned(),
                        ..url
                    }
                } else {
                    Url::parse(location)?
                };
                continue;
            }
        }
        return Ok(reply);
    }
    Err(RegistryError::RequestFailed {
        url: url.text(),
        reason: "too many redirects".into(),
    })
}

/// A connection to a registry, plain or TLS.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

async fn request_once(
    access: &RegistryAccess,
    url: &Url,
    accept: Option<&str>,
    authorization: Option<&str>,
) -> Result<Reply> {
    let failed = |reason: String| RegistryError::RequestFailed {
        url: url.text(),
        reason,
    };
    let timed_out = |_| RegistryError::RequestTimedOut { url: url.text() };
    let stream = timeout(
        STEP_TIMEOUT,
        TcpStream::connect((url.host.as_str(), url.port)),
    )
    .await
    .map_err(timed_out)?
    .map_err(|error| failed(error.to_string()))?;
    let stream: Box<dyn Connection> = if url.tls {
        let name = rustls::pki_types::ServerName::try_from(url.host.clone())
            .map_err(|error| failed(error.to_string()))?;
        let connector = tokio_rustls::TlsConnector::from(access.tls());
        Box::new(
            timeout(STEP_TIMEOUT, connector.connect(name, stream))
                .await
                .map_err(timed_out)?
                .map_err(|error| failed(format!("TLS: {error}")))?,
        )
    } else {
        Box::new(stream)
    };
    let (mut sender, connection) = timeout(
        STEP_TIMEOUT,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(timed_out)?
    .map_err(|error| failed(error.to_string()))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "Registry connection ended");
        }
    });
    let mut builder = hyper::Request::get(url.path_and_query.as_str()).header(HOST, &url.authority);
    if let Some(accept) = accept {
        builder = builder.header(ACCEPT, accept);
    }
    if let Some(authorization) = authorization {
        let value =
            HeaderValue::from_str(authorization).map_err(|error| failed(error.to_string()))?;
        builder = builder.header(AUTHORIZATION, value);
    }
    let request = builder
        .body(Empty::<Bytes>::new())
        .map_err(|error| failed(error.to_string()))?;
    let response = timeout(STEP_TIMEOUT, sender.send_request(request))
        .await
        .map_err(timed_out)?
        .map_err(|error| failed(error.to_string()))?;
    let (parts, body) = response.into_parts();
    let body = timeout(STEP_TIMEOUT, Limited::new(body, MAX_BODY).collect())
        .await
        .map_err(timed_out)?
        .map_err(|error| failed(error.to_string()))?
        .to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_ca_file_fails_at_start_and_good_settings_build_tls_on_first_use() {
        let dir = tempfile::tempdir().unwrap();
        let no_pem = dir.path().join("no-pem.crt");
        std::fs::write(&no_pem, "not a certificate\n").unwrap();
        let not_a_cert = dir.path().join("garbage.crt");
        std::fs::write(
            &not_a_cert,
            "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for (path, reason) in [(&no_pem, "no PEM certificate"), (&not_a_cert, "")] {
            let error = RegistryAccess::new(Lookup::All, &[], std::slice::from_ref(path))
                .err()
                .unwrap_or_else(|| panic!("{} was accepted", path.display()));
            let message = error.to_string();
            assert!(
                message.contains(&path.display().to_string()) && message.contains(reason),
                "{message}"
            );
        }
        let access = RegistryAccess::new(Lookup::All, &[], &[]).unwrap();
        assert!(
            access.tls.get().is_none(),
            "roots loaded before any HTTPS request"
        );
        assert!(Arc::ptr_eq(&access.tls(), &access.tls()));
    }

    #[test]
    fn bearer_challenge_is_parsed() {
        let challenge = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/redis:pull""#,
        );
        assert_eq!(
            challenge,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/redis:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge("Bearer realm=http://127.0.0.1:5001/token, service=local"),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:5001/token".into(),
                service: Some("local".into()),
                scope: None,
            })
        );
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None);
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    #[test]
    fn registry_auth_header_is_decoded() {
        let encoded = base64::engine::general_purpose::URL_SAFE
            .encode(r#"{"username":"me","password":"s3cr?t>","serveraddress":"127.0.0.1:5000"}"#);
        let credentials = Credentials::from_registry_auth(&encoded).unwrap();
        assert_eq!(credentials.username, "me");
        assert_eq!(credentials.password, "s3cr?t>");
        assert_eq!(credentials.basic(), "Basic bWU6czNjcj90Pg==");
        assert_eq!(Credentials::from_registry_auth("e30="), None);
        assert_eq!(Credentials::from_registry_auth("not base64!"), None);
    }

    #[test]
    fn manifest_points_to_config() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":7,"digest":"sha256:abc"},
            "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":1000,"digest":"sha256:l1"},
                      {"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":234,"digest":"sha256:l2"}]}"#;
        assert_eq!(
            parse_manifest("r", body).unwrap(),
            ManifestTarget::Config("sha256:abc".into(), 1234)
        );
    }

    #[test]
    fn index_picks_linux_amd64() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"digest":"sha256:arm","platform":{"architecture":"arm64","os":"linux"}},
            {"digest":"sha256:att","platform":{"architecture":"unknown","os":"unknown"}},
            {"digest":"sha256:amd","platform":{"architecture":"amd64","os":"linux"}}]}"#;
        assert_eq!(
            parse_manifest("r", body).unwrap(),
            ManifestTarget::Manifest("sha256:amd".into())
        );
        let arm_only =
            br#"{"manifests":[{"digest":"sha256:arm","platform":{"architecture":"arm64","os":"linux"}}]}"#;
        assert!(matches!(
            parse_manifest("r", arm_only),
            Err(RegistryError::NoMatchingPlatform { .. })
        ));
        assert!(parse_manifest("r", b"{}").is_err());
        assert!(parse_manifest("r", b"not json").is_err());
    }

    #[test]
    fn config_blob_is_parsed_and_verified() {
        let body = br#"{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z",
            "config":{"Cmd":["redis-server"],"Entrypoint":["docker-entrypoint.sh"],"Env":["PATH=/bin"],
            "ExposedPorts":{"6379/tcp":{}},"WorkingDir":"/data","Labels":{"a":"b"}},"rootfs":{"type":"layers"}}"#;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(body)));
        let details = parse_config_blob("r", &digest, body).unwrap();
        assert_eq!(details.id, digest);
        assert_eq!(details.config.cmd, Some(vec!["redis-server".to_owned()]));
        assert!(details
            .config
            .exposed_ports
            .as_ref()
            .unwrap()
            .contains_key("6379/tcp"));
        assert_eq!(details.config.working_dir.as_deref(), Some("/data"));
        assert_eq!(details.architecture.as_deref(), Some("amd64"));
        assert!(matches!(
            parse_config_blob("r", "sha256:0000", body),
            Err(RegistryError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn urls_and_what_may_be_contacted() {
        let parsed = Url::parse("https://quay.io/v2/x").unwrap();
        assert!(parsed.tls && parsed.port == 443 && parsed.host == "quay.io");
        let parsed = Url::parse("http://[::1]:5000/v2/").unwrap();
        assert!(!parsed.tls && parsed.port == 5000 && parsed.host == "::1");
        assert!(Url::parse("ftp://x/").is_err());
        let loopback = RegistryAccess::new(Lookup::Loopback, &[], &[]).unwrap();
        for (url, allowed) in [
            ("http://127.0.0.1:5000/v2/", true),
            ("https://localhost/v2/", true),
            ("http://[::1]:5000/v2/", true),
            ("https://registry-1.docker.io/v2/", false),
        ] {
            assert_eq!(loopback.allows(&Url::parse(url).unwrap()), allowed, "{url}");
        }
        let all = RegistryAccess::new(Lookup::All, &[], &[]).unwrap();
        assert!(all.allows(&Url::parse("https://registry-1.docker.io/v2/").unwrap()));
        let off = RegistryAccess::new(Lookup::Off, &[], &[]).unwrap();
        assert!(!off.allows(&Url::parse("http://127.0.0.1:5000/v2/").unwrap()));
        assert_eq!(
            encode_query_value("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }

    #[test]
    fn registries_map_to_base_urls_and_mirrors() {
        let access = RegistryAccess::new(
            Lookup::All,
            &["index.docker.io=http://127.0.0.1:5000/".into()],
            &[],
        )
        .unwrap();
        assert_eq!(access.base("docker.io"), "http://127.0.0.1:5000");
        assert_eq!(access.base("quay.io"), "https://quay.io");
        assert_eq!(access.base("localhost:5000"), "http://localhost:5000");
        assert_eq!(access.base("127.0.0.1:5443"), "http://127.0.0.1:5443");
        let plain = RegistryAccess::new(Lookup::All, &[], &[]).unwrap();
        assert_eq!(plain.base("docker.io"), "https://registry-1.docker.io");
        for bad in ["docker.io", "=http://x", "docker.io=mirror.example"] {
            let error = RegistryAccess::new(Lookup::All, &[bad.into()], &[])
                .err()
                .unwrap();
            assert!(
                matches!(error, RegistryError::BadMirror { .. }),
                "{bad}: {error}"
            );
        }
        let error = RegistryAccess::new(Lookup::All, &[], &["/nonexistent/ca.pem".into()])
            .err()
            .unwrap();
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
    }

    #[test]
    fn credentials_stay_with_their_origin_and_off_plain_http() {
        let origin = Url::parse("https://auth.example.com/token").unwrap();
        for (location, forwarded) in [
            ("https://auth.example.com/other?x=1", true),
            ("https://AUTH.example.com:443/other", true),
            ("http://auth.example.com/token", false),
            ("https://auth.example.com:8443/token", false),
            ("https://evil.example/token", false),
        ] {
            let url = Url::parse(location).unwrap();
            assert_eq!(
                credentials_for(&origin, &url, Some("Basic x")).is_some(),
                forwarded,
                "{location}"
            );
        }
        let registry = Url::parse("https://registry.example.com/v2/").unwrap();
        assert!(token_realm(&registry, "https://auth.example.com/token").is_ok());
        assert!(token_realm(&registry, "http://127.0.0.1:5001/token").is_ok());
        assert!(token_realm(&registry, "http://auth.example.com/token").is_err());
        let plain = Url::parse("http://127.0.0.1:5000/v2/").unwrap();
        assert!(token_realm(&plain, "http://127.0.0.1:5001/token").is_ok());
        for bad in [
            "https://user:pw@evil.example/token",
            "https://evil.example@good.example/token",
            "https://good.example?@evil.example/",
            "http://[::1]evil:5000/v2/",
            "https://[nothex]/",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn host() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("registry.example".to_string()),
                Just("REGISTRY.example".to_string()),
                Just("evil.example".to_string()),
                Just("127.0.0.1".to_string()),
                Just("[::1]".to_string()),
                "[a-z]{1,6}\\.[a-z]{2,3}",
            ]
        }

        fn url_text() -> impl Strategy<Value = String> {
            (
                prop::sample::select(vec!["http://", "https://"]),
                host(),
                prop::option::of(prop::sample::select(vec![80u16, 443, 5000, 8443])),
                "(/[a-z0-9?=&%]{0,8}){0,3}",
            )
                .prop_map(|(scheme, host, port, path)| {
                    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                    format!("{scheme}{host}{port}{path}")
                })
        }

        proptest! {
            #![proptest_config(crate::proptest_cases::config(512))]

            #[test]
            fn challenges_never_panic(header in any::<String>()) {
                let _ = parse_challenge(&header);
            }

            #[test]
            fn bearer_challenges_keep_their_parameters(
                realm in "[!#-~]{1,40}",
                service in prop::option::of("[!#-+--~]{0,20}"),
                scope in prop::option::of("[!#-~]{0,20}"),
                spaces in " {0,2}",
            ) {
                let mut header = format!("Bearer realm=\"{realm}\"");
                if let Some(service) = &service {
                    header.push_str(&format!(",{spaces}service={service}"));
                }
                if let Some(scope) = &scope {
                    header.push_str(&format!(",{spaces}scope=\"{scope}\""));
                }
                prop_assert_eq!(
                    parse_challenge(&header),
                    Some(Challenge::Bearer { realm, service, scope })
                );
            }

            #[test]
            fn urls_never_panic_and_round_trip(text in any::<String>()) {
                for text in [text.clone(), format!("https://{text}"), format!("http://{text}")] {
                    if let Ok(url) = Url::parse(&text) {
                        prop_assert!(!url.host.contains(['@', '/', '?', '#', ' ']), "{:?}", url);
                        prop_assert_eq!(Url::parse(&url.text()).ok(), Some(url));
                    }
                }
            }

            /// Whatever a hostile registry puts in a realm or a redirect, the user's credentials
            /// reach only the origin they were sent to, over the same scheme.
            #[test]
            fn credentials_never_follow_to_another_origin(
                origin in url_text(),
                location in prop_oneof![url_text(), any::<String>()],
            ) {
                let origin = Url::parse(&origin).unwrap();
                if let Ok(next) = Url::parse(&location) {
                    if credentials_for(&origin, &next, Some("Basic secret")).is_some() {
                        prop_assert_eq!(origin.tls, next.tls);
                        prop_assert_eq!(origin.port, next.port);
                        prop_assert_eq!(origin.host.to_ascii_lowercase(), next.host.to_ascii_lowercase());
                    }
                }
            }

            #[test]
            fn realms_of_tls_registries_are_tls_or_loopback(
                realm in prop_oneof![url_text(), any::<String>()],
            ) {
                let registry = Url::parse("https://registry.example/v2/").unwrap();
                if let Ok(url) = token_realm(&registry, &realm) {
                    prop_assert!(url.tls || is_loopback(&url.host), "{:?}", url);
                }
            }

            #[test]
            fn registry_auth_never_panics_and_round_trips(
                header in any::<String>(),
                username in "\\PC{0,12}",
                password in "\\PC{1,12}",
            ) {
                let _ = Credentials::from_registry_auth(&header);
                let json = serde_json::json!({"username": username, "password": password});
                let encoded = base64::engine::general_purpose::URL_SAFE.encode(json.to_string());
                prop_assert_eq!(
                    Credentials::from_registry_auth(&encoded),
                    Some(Credentials { username, password })
                );
            }
        }
    }

    #[tokio::test]
    async fn registries_not_allowed_fail_fast() {
        let client = RegistryClient::new();
        client.set_access(RegistryAccess::new(Lookup::Loopback, &[], &[]).unwrap());
        let started = std::time::Instant::now();
        for reference in [
            "busybox",
            "quay.io/x/y:1",
            "ghcr.io/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            let error = client.details(reference, None, false).await.unwrap_err();
            assert!(
                matches!(error, RegistryError::RegistryNotSupported { .. }),
                "{error}"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
