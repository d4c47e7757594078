//! The operator's HTTPS server: one `axum::Router` of every HTTPS route (the admission webhook
//! today; `mod.rs::https_router` is where further routes are mounted), served over rustls with
//! a certificate that can be swapped while the port stays bound, so renewals drop no
//! connection and need no restart.

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;

/// Why the HTTPS server could not start or a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the serving certificate (tls.crt) holds no readable certificate")]
    CertificateMissing,
    #[error("the serving key (tls.key): {0}")]
    KeyUnreadable(String),
    #[error("the serving key does not fit the certificate: {0}")]
    KeyMismatch(String),
    #[error("TLS configuration: {0}")]
    ConfigFailed(String),
    #[error("HTTPS listener: {0}")]
    ListenerFailed(#[source] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The serving certificate the handshakes use; `replace` swaps it for every later handshake.
#[derive(Debug)]
pub struct ServingCertificate {
    current: ArcSwap<CertifiedKey>,
}

impl ServingCertificate {
    pub fn new(key: CertifiedKey) -> Self {
        ServingCertificate {
            current: ArcSwap::from_pointee(key),
        }
    }

    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    /// The certificate currently served (DER), for tests and logs.
    pub fn current_der(&self) -> Option<Vec<u8>> {
        self.current
            .load()
            .cert
            .first()
            .map(|c| c.as_ref().to_vec())
    }
}

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A certificate chain and its key, from PEM, checked to belong together.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .filter_map(|cert| cert.ok())
        .collect();
    if chain.is_empty() {
        return Err(Error::CertificateMissing);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| Error::KeyUnreadable(e.to_string()))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| Error::KeyMismatch(e.to_string()))
}

/// rustls with the swappable certificate; no client certificates (the API server sends none
/// unless configured to), HTTP/1.1 only (what the API server's webhook client speaks first).
pub fn server_config(certificate: Arc<ServingCertificate>) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::ConfigFailed(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves (connections in flight
/// finish). Handshakes are bounded in time and number by the Docker listener's acceptor.
pub async fn serve_https(
    listener: TcpListener,
    router: Router,
    certificate: Arc<ServingCertificate>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let config = server_config(certificate)?;
    let listener = crate::api::server::tls::TlsListener::new(listener, config)
        .map_err(Error::ListenerFailed)?;
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::ListenerFailed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::certs;

    fn material(now: i64) -> certs::Material {
        let names = certs::Names::for_service(None, &["127.0.0.1".to_string()]);
        match certs::plan(None, &names, now).unwrap() {
            certs::Plan::Replace { material, .. } => material,
            certs::Plan::Keep => unreachable!("nothing to keep"),
        }
    }

    #[test]
    fn a_key_must_fit_its_certificate() {
        let first = material(certs::now());
        let second = material(certs::now());
        assert!(certified_key(&first.cert, &first.key).is_ok());
        let error = certified_key(&first.cert, &second.key).unwrap_err();
        assert!(matches!(error, Error::KeyMismatch(_)), "{error}");
        assert!(matches!(
            certified_key("", &first.key),
            Err(Error::CertificateMissing)
        ));
        assert!(matches!(
            certified_key(&first.cert, "junk"),
            Err(Error::KeyUnreadable(_))
        ));
    }

    /// A client trusting the bundle reaches the router; after `replace`, new handshakes see the
    /// new certificate on the same port.
    #[tokio::test]
    async fn serves_the_router_and_swaps_the_certificate() {
        let first = material(certs::now());
        let served = Arc::new(ServingCertificate::new(
            certified_key(&first.cert, &first.key).unwrap(),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let router = Router::new().route("/hello", axum::routing::get(|| async { "hi" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_https(listener, router, served.clone(), async {
            let _ = stopped.await;
        }));

        let fetch = |bundle: String| async move {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
                roots.add(ca.unwrap()).unwrap();
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let mut tls = connector.connect(name, tcp).await?;
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            tls.write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await?;
            let mut answer = String::new();
            tls.read_to_string(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = fetch(first.ca_bundle.clone()).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("hi"), "{answer}");

        let second = material(certs::now());
        served.replace(certified_key(&second.cert, &second.key).unwrap());
        assert!(
            fetch(first.ca_bundle.clone()).await.is_err(),
            "the old CA must not verify the new certificate"
        );
        let answer = fetch(second.ca_bundle.clone()).await.unwrap();
        assert!(answer.ends_with("hi"), "{answer}");
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
