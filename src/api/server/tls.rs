//! The Docker API over TLS with client certificates, as `dockerd --tlsverify` serves it.
//!
//! The Docker API has no authentication of its own: whoever reaches the listener controls every
//! container of the namespace. On loopback (the sidecar shape) that is the job itself; any other
//! address needs client certificates signed by `tls_ca` (the docker CLI, docker-py and compose
//! send them with `DOCKER_TLS_VERIFY=1` and `DOCKER_CERT_PATH`), or an explicit
//! `insecure_tcp = true` from whoever deploys podbridge.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

/// A handshake that has not finished by then is dropped (a silent client holds nothing).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; more wait in the kernel's accept queue.
const MAX_HANDSHAKES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls: cannot read {what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("tls: {path} holds no {what}")]
    Empty { what: &'static str, path: PathBuf },
    #[error("tls: {0}")]
    Config(String),
    #[error("tls: tls_cert, tls_key and tls_ca go together (set: {set}; missing: {missing})")]
    Incomplete { set: String, missing: String },
    #[error("listen {address} is not a loopback address and the Docker API has no authentication of its own: set tls_cert, tls_key and tls_ca (clients then need certificates signed by tls_ca, as with dockerd --tlsverify), listen on loopback or a unix socket, or set insecure_tcp = true to accept that anyone who reaches {address} controls this namespace's containers")]
    Unauthenticated { address: String },
}

/// The three files of a `--tlsverify` server.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates must chain to this CA.
    pub ca: PathBuf,
}

impl TlsFiles {
    /// All three or none; some but not all is a configuration error.
    pub fn from_parts(
        cert: Option<&Path>,
        key: Option<&Path>,
        ca: Option<&Path>,
    ) -> Result<Option<TlsFiles>, TlsError> {
        match (cert, key, ca) {
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
                ca: ca.into(),
            })),
            (None, None, None) => Ok(None),
            parts => {
                let named = [
                    ("tls_cert", parts.0),
                    ("tls_key", parts.1),
                    ("tls_ca", parts.2),
                ];
                let list = |present: bool| {
                    named
                        .iter()
                        .filter(|(_, p)| p.is_some() == present)
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                Err(TlsError::Incomplete {
                    set: list(true),
                    missing: list(false),
                })
            }
        }
    }
}

/// Whether plain TCP on `address` is allowed: loopback always; elsewhere only with TLS or the
/// deployer's explicit `insecure_tcp`.
pub fn check_listener(
    address: &SocketAddr,
    tls: Option<&TlsFiles>,
    insecure_tcp: bool,
) -> Result<(), TlsError> {
    if address.ip().is_loopback() || tls.is_some() || insecure_tcp {
        return Ok(());
    }
    Err(TlsError::Unauthenticated {
        address: address.to_string(),
    })
}

/// A server config that requires a client certificate signed by the CA.
/// The certificates of a PEM file; an unreadable file or one without any is an error naming it
/// (also how the session broker's CA is read, `cluster.rs`).
pub fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Read {
            what,
            path: path.into(),
            reason: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Read {
            what,
            path: path.into(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.into(),
        });
    }
    Ok(certs)
}

pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read = read_certificates;
    let chain = read("certificate", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Read {
        what: "private key",
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in read("CA certificate", &files.ca)? {
        roots
            .add(ca)
            .map_err(|e| TlsError::Config(format!("CA {}: {e}", files.ca.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsError::Config(e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("{}: {e}", files.cert.display())))?;
    Ok(Arc::new(config))
}

/// A TCP listener whose connections are handed to axum only after a TLS handshake with a valid
/// client certificate. Handshakes run beside each other, so a slow or silent client delays no
/// one.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    _acceptor_task: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (send, ready) = mpsc::channel(MAX_HANDSHAKES);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        let task = tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        debug!(%error, "Accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let send = send.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = send.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => debug!(%peer, %error, "TLS handshake refused"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            _acceptor_task: AbortOnDrop(task),
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The acceptor task only ends when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_needs_nothing_elsewhere_tls_or_consent() {
        let loopback: SocketAddr = "127.0.0.1:2475".parse().unwrap();
        let v6: SocketAddr = "[::1]:2475".parse().unwrap();
        let node: SocketAddr = "10.0.0.5:2475".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:2475".parse().unwrap();
        assert!(check_listener(&loopback, None, false).is_ok());
        assert!(check_listener(&v6, None, false).is_ok());
        let error = check_listener(&node, None, false).unwrap_err().to_string();
        assert!(error.contains("tls_cert, tls_key and tls_ca"), "{error}");
        assert!(check_listener(&any, None, false).is_err());
        assert!(check_listener(&node, None, true).is_ok());
        let files = TlsFiles {
            cert: "c".into(),
            key: "k".into(),
            ca: "a".into(),
        };
        assert!(check_listener(&node, Some(&files), false).is_ok());
    }

    #[test]
    fn the_three_files_go_together() {
        let error = TlsFiles::from_parts(Some(Path::new("c")), None, Some(Path::new("a")))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("set: tls_cert, tls_ca; missing: tls_key"),
            "{error}"
        );
        assert_eq!(TlsFiles::from_parts(None, None, None).unwrap(), None);
    }

    #[test]
    fn unreadable_files_are_named() {
        let files = TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            ca: "/nonexistent/ca.pem".into(),
        };
        let error = server_config(&files).unwrap_err().to_string();
        assert!(error.contains("/nonexistent/cert.pem"), "{error}");
    }
}
