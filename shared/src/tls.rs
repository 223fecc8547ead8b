//! Transport security shared by agent, CLI and controller: TLS 1.3 only, rustls with
//! aws-lc-rs, the controller pinned by the SHA-256 fingerprint of its CA certificate, and
//! the agent identity carried in the client certificate.
//!
//! Pinning: a client knows only `SHA256:<hex>` of the controller's CA (printed by
//! `nex-backup serve` and `nex-backup ca show`). On every handshake the certificate with
//! that fingerprint must be in the presented chain; it then becomes the only trust anchor
//! for ordinary WebPKI verification of the server certificate (signature, validity,
//! server name). Operator-provided server chains work the same way: pin their root.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint};

pub use crate::identity::AgentIdentity;

/// TLS setup failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("CA fingerprint {0:?}: expected SHA256: followed by 64 hex digits")]
    BadFingerprint(String),
    #[error("controller URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{what}: {reason}")]
    Pem { what: String, reason: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider used everywhere (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// `SHA256:<64 hex>` of a DER certificate.
pub fn fingerprint(cert_der: &[u8]) -> String {
    format!("SHA256:{}", hex::encode(Sha256::digest(cert_der)))
}

/// Parse `SHA256:<hex>` (colons between hex pairs and case are tolerated).
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], TlsError> {
    let bad = || TlsError::BadFingerprint(s.to_string());
    let hexpart = s
        .trim()
        .strip_prefix("SHA256:")
        .or_else(|| s.trim().strip_prefix("sha256:"))
        .ok_or_else(bad)?;
    let clean: String = hexpart.chars().filter(|c| *c != ':').collect();
    let v = hex::decode(clean).map_err(|_| bad())?;
    v.try_into().map_err(|_| bad())
}

/// PEM text of a DER certificate.
pub fn cert_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// An error and all its sources, `: `-joined (for one-line messages).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s = format!("{s}: {c}");
        cur = c.source();
    }
    s
}

/// Read every certificate of a PEM text.
pub fn certs_from_pem(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    let certs = certs.map_err(|e| TlsError::Pem {
        what: what.into(),
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: what.into(),
            reason: "no certificate found".into(),
        });
    }
    Ok(certs)
}

/// Read a PEM private key.
pub fn key_from_pem(what: &str, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        what: what.into(),
        reason: e.to_string(),
    })
}

/// Server verification pinned to one CA fingerprint (see module docs).
#[derive(Debug)]
pub struct PinnedVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl PinnedVerifier {
    pub fn new(pin: [u8; 32]) -> Self {
        PinnedVerifier {
            pin,
            provider: provider(),
        }
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let anchor = intermediates
            .iter()
            .find(|c| Sha256::digest(c.as_ref()).as_slice() == self.pin)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the controller's certificate chain does not contain the pinned CA \
                     (wrong --ca-fingerprint, or not the controller you enrolled with)"
                        .into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(anchor.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not accepted".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS 1.3 client config pinned to `pin`, presenting `identity` (cert chain, key) if any.
pub fn client_config(
    pin: [u8; 32],
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(pin)));
    let mut cfg = match identity {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key)?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Host and port of a controller URL (`https://host:port`, port defaults to 7420).
pub fn host_port(url: &str) -> Result<(String, u16), TlsError> {
    let bad = |reason: &str| TlsError::BadUrl {
        url: url.into(),
        reason: reason.into(),
    };
    let uri: tonic::codegen::http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some(other) => {
            return Err(bad(&format!(
                "scheme {other:?}: the controller only speaks https (mutual TLS)"
            )));
        }
        None => return Err(bad("missing https:// scheme")),
    }
    let host = uri.host().ok_or_else(|| bad("missing host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok((host, uri.port_u16().unwrap_or(7420)))
}

/// Dials TCP and runs the TLS handshake; what tonic calls for each new connection.
#[derive(Clone)]
pub struct TlsDialer {
    cfg: Arc<ClientConfig>,
    /// Every controller address, tried in turn from the one that answered last.
    targets: Arc<Vec<(ServerName<'static>, String, u16)>>,
    last_good: Arc<std::sync::atomic::AtomicUsize>,
}

/// How long one address may take to accept a connection before the next is tried.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

type DialFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = std::io::Result<
                    hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
                >,
            > + Send,
    >,
>;

impl tower::Service<tonic::codegen::http::Uri> for TlsDialer {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = DialFuture;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::codegen::http::Uri) -> Self::Future {
        let d = self.clone();
        Box::pin(async move {
            let n = d.targets.len();
            let first = d.last_good.load(std::sync::atomic::Ordering::Relaxed);
            let mut last_err = None;
            for i in (0..n).map(|k| (first + k) % n) {
                let (name, host, port) = &d.targets[i];
                let dial = async {
                    let tcp = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                    tcp.set_nodelay(true)?;
                    tokio_rustls::TlsConnector::from(d.cfg.clone())
                        .connect(name.clone(), tcp)
                        .await
                };
                match tokio::time::timeout(DIAL_TIMEOUT, dial).await {
                    Ok(Ok(tls)) => {
                        d.last_good.store(i, std::sync::atomic::Ordering::Relaxed);
                        return Ok(hyper_util::rt::TokioIo::new(tls));
                    }
                    Ok(Err(e)) => last_err = Some(e),
                    Err(_) => {
                        last_err = Some(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("{host}:{port} did not answer within {DIAL_TIMEOUT:?}"),
                        ))
                    }
                }
            }
            Err(last_err.unwrap_or_else(|| std::io::Error::other("no controller address")))
        })
    }
}

/// The controller URLs of a list (`https://a:7420, https://b:7420`): an agent fails over
/// between several controller replicas, trying them in turn.
pub fn url_list(urls: &str) -> impl Iterator<Item = &str> {
    urls.split(',').map(str::trim).filter(|u| !u.is_empty())
}

/// The endpoint (HTTP/2 settings) and dialer for a controller URL, or a comma-separated
/// list of them (see [`url_list`]).
pub fn endpoint(url: &str, cfg: Arc<ClientConfig>) -> Result<(Endpoint, TlsDialer), TlsError> {
    let mut targets = vec![];
    let mut authority = String::new();
    for one in url_list(url) {
        let (host, port) = host_port(one)?;
        let name = ServerName::try_from(host.clone()).map_err(|e| TlsError::BadUrl {
            url: one.into(),
            reason: e.to_string(),
        })?;
        if authority.is_empty() {
            authority = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
        }
        targets.push((name, host, port));
    }
    if targets.is_empty() {
        return Err(TlsError::BadUrl {
            url: url.into(),
            reason: "no controller address".into(),
        });
    }
    let endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| TlsError::BadUrl {
            url: url.into(),
            reason: e.to_string(),
        })?
        .connect_timeout(DIAL_TIMEOUT * targets.len() as u32)
        .http2_keep_alive_interval(Duration::from_secs(15))
        // The windows follow the bandwidth-delay product (restores from far away).
        .http2_adaptive_window(true)
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok((
        endpoint,
        TlsDialer {
            cfg,
            targets: Arc::new(targets),
            last_good: Default::default(),
        },
    ))
}

/// A lazily connecting gRPC channel to `url` over TLS with `cfg`.
pub fn channel(url: &str, cfg: Arc<ClientConfig>) -> Result<Channel, TlsError> {
    let (endpoint, dialer) = endpoint(url, cfg)?;
    Ok(endpoint.connect_with_connector_lazy(dialer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_common_spellings() {
        let fp = fingerprint(b"abc");
        let raw = parse_fingerprint(&fp).unwrap();
        assert_eq!(fingerprint(b"abc"), format!("SHA256:{}", hex::encode(raw)));
        let colons: Vec<String> = raw.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(
            parse_fingerprint(&format!("sha256:{}", colons.join(":"))).unwrap(),
            raw
        );
        for bad in ["", "SHA256:", "SHA256:zz", "MD5:00", &fp[..20]] {
            assert!(parse_fingerprint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_must_be_https() {
        assert_eq!(
            host_port("https://backup.example:9000").unwrap(),
            ("backup.example".into(), 9000)
        );
        assert_eq!(host_port("https://[::1]").unwrap(), ("::1".into(), 7420));
        let e = host_port("http://x:1").unwrap_err().to_string();
        assert!(e.contains("https"), "{e}");
    }
}
