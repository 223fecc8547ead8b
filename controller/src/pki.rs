//! The controller's PKI, kept in `<data dir>/pki`:
//!
//! | file | what |
//! |---|---|
//! | `ca.key` (0600), `ca.crt` | the CA that signs agent certificates and, by default, the server's |
//! | `server.key` (0600), `server.crt` | server certificate + CA, for the configured names |
//! | `server.names` | names the server certificate was made for (regenerated when they change) |
//!
//! Operator-provided server certificates (`--tls-cert/--tls-key`) replace `server.*`; agents
//! then pin the last certificate of that chain. Agent certificates are always ours.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use nex_backup_shared::identity::AgentIdentity;
use nex_backup_shared::keyring::write_private_file;
use nex_backup_shared::tls::{cert_pem, certs_from_pem, fingerprint, key_from_pem, provider};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use time::OffsetDateTime;

/// Where the server certificate comes from.
#[derive(Debug, Clone, Default)]
pub struct ServerCertSource {
    /// Names and addresses for a generated certificate.
    pub names: Vec<String>,
    /// Operator-provided chain and key (PEM) instead.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// A certificate issued to an agent.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Client certificate, then the CA certificate.
    pub chain_der: Vec<Vec<u8>>,
    pub identity: AgentIdentity,
}

/// Loaded PKI material. See module docs.
pub struct Pki {
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
    /// Fingerprint clients pin: the CA, or the root of an operator-provided chain.
    pub pin_fingerprint: String,
    /// The key dashboard sessions are signed with, derived from the CA key: every
    /// replica (they share the CA) accepts the others' sessions.
    pub session_secret: [u8; 32],
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("read {}", path.display()))
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "NEX Backup controller CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(365 * 20);
    p
}

fn random_serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    b[0] = (b[0] & 0x7f).max(1);
    SerialNumber::from_slice(&b)
}

/// A certificate request that does not parse or whose signature does not verify.
#[derive(Debug, thiserror::Error)]
#[error("certificate request: {0}")]
pub struct BadCsr(#[source] rcgen::Error);

impl Pki {
    /// The fingerprint clients pin, from the files alone (for `nex-backup ca show`).
    pub fn show(data_dir: &Path, src: &ServerCertSource) -> anyhow::Result<String> {
        let anchor = match &src.cert_file {
            Some(f) => certs_from_pem(&f.display().to_string(), &read(f)?)?
                .pop()
                .expect("non-empty chain"),
            None => {
                let p = data_dir.join("pki/ca.crt");
                certs_from_pem(&p.display().to_string(), &read(&p)?)?.remove(0)
            }
        };
        Ok(fingerprint(&anchor))
    }

    /// Load the PKI from `data_dir/pki`, creating what is missing.
    pub fn load_or_create(data_dir: &Path, src: &ServerCertSource) -> anyhow::Result<Self> {
        let dir = data_dir.join("pki");
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let (ca_key_path, ca_crt_path) = (dir.join("ca.key"), dir.join("ca.crt"));
        if !ca_key_path.exists() {
            let key = KeyPair::generate().context("generate CA key")?;
            let cert = ca_params().self_signed(&key).context("sign CA")?;
            write_private_file(&ca_key_path, key.serialize_pem().as_bytes())
                .with_context(|| format!("write {}", ca_key_path.display()))?;
            write_private_file(&ca_crt_path, cert.pem().as_bytes())
                .with_context(|| format!("write {}", ca_crt_path.display()))?;
            tracing::info!(path = %ca_crt_path.display(), "created controller CA");
        }
        let ca_key_pem = String::from_utf8(read(&ca_key_path)?).context("CA key is not PEM")?;
        let ca_key = KeyPair::from_pem(&ca_key_pem)
            .map_err(|e| anyhow!("{}: {e}", ca_key_path.display()))?;
        let ca_der =
            certs_from_pem(&ca_crt_path.display().to_string(), &read(&ca_crt_path)?)?.remove(0);
        let issuer = Issuer::from_ca_cert_der(&ca_der, ca_key)
            .map_err(|e| anyhow!("{}: {e}", ca_crt_path.display()))?;
        let (server_chain, server_key) = match (&src.cert_file, &src.key_file) {
            (Some(c), Some(k)) => (
                certs_from_pem(&c.display().to_string(), &read(c)?)?,
                key_from_pem(&k.display().to_string(), &read(k)?)?,
            ),
            (None, None) => generated_server_cert(&dir, &src.names, &issuer, &ca_der)?,
            _ => anyhow::bail!("--tls-cert and --tls-key must be given together"),
        };
        let pin_fingerprint = fingerprint(server_chain.last().expect("non-empty chain"));
        let session_secret: [u8; 32] = {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(b"nex-backup dashboard sessions v1\0");
            h.update(ca_key_pem.as_bytes());
            h.finalize().into()
        };
        Ok(Pki {
            session_secret,
            ca_der,
            issuer,
            server_chain,
            server_key,
            pin_fingerprint,
        })
    }

    /// TLS 1.3 server config: client certificates of our CA are verified when presented
    /// (enrollment comes without one; every agent call then requires it).
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .context("client certificate verifier")?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.server_chain.clone(), self.server_key.clone_key())
            .context("server certificate and key")?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// TLS server config for the dashboard: the same server certificate, no client
    /// certificate (browsers have none), HTTP/1.1.
    pub fn web_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(self.server_chain.clone(), self.server_key.clone_key())
            .context("server certificate and key")?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// Check a certificate request's encoding and signature without issuing anything.
    pub fn check_csr(csr_der: &[u8]) -> Result<CertificateSigningRequestParams, BadCsr> {
        CertificateSigningRequestParams::from_der(&csr_der.to_vec().into()).map_err(BadCsr)
    }

    /// Sign a client certificate for `site`/`agent_id` over the key in `csr`.
    pub fn issue(
        &self,
        mut csr: CertificateSigningRequestParams,
        site: &str,
        agent_id: &str,
        lifetime: Duration,
    ) -> anyhow::Result<Issued> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, agent_id);
        dn.push(DnType::OrganizationName, site);
        p.distinguished_name = dn;
        p.subject_alt_names = vec![SanType::URI(AgentIdentity::uri(site, agent_id).try_into()?)];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::minutes(5);
        p.not_after = now + time::Duration::try_from(lifetime)?;
        csr.params = p;
        let cert = csr
            .signed_by(&self.issuer)
            .context("sign agent certificate")?;
        let identity = AgentIdentity::from_cert_der(cert.der())?;
        Ok(Issued {
            chain_der: vec![cert.der().to_vec(), self.ca_der.to_vec()],
            identity,
        })
    }
}

fn generated_server_cert(
    dir: &Path,
    names: &[String],
    issuer: &Issuer<'static, KeyPair>,
    ca_der: &CertificateDer<'static>,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let (key_path, crt_path, names_path) = (
        dir.join("server.key"),
        dir.join("server.crt"),
        dir.join("server.names"),
    );
    let wanted = names.join("\n");
    let current = std::fs::read_to_string(&names_path).unwrap_or_default();
    if current != wanted || !crt_path.exists() || !key_path.exists() {
        let mut p = CertificateParams::default();
        for n in names {
            p.subject_alt_names.push(match n.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.clone().try_into()?),
            });
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "NEX Backup controller");
        p.distinguished_name = dn;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(825);
        let key = KeyPair::generate().context("generate server key")?;
        let cert = p
            .signed_by(&key, issuer)
            .context("sign server certificate")?;
        let chain_pem = format!(
            "{}{}",
            cert.pem(),
            cert_pem(ca_der.as_ref()) // CA second, so clients can find the pinned anchor
        );
        write_private_file(&key_path, key.serialize_pem().as_bytes())
            .with_context(|| format!("write {}", key_path.display()))?;
        write_private_file(&crt_path, chain_pem.as_bytes())
            .with_context(|| format!("write {}", crt_path.display()))?;
        write_private_file(&names_path, wanted.as_bytes())
            .with_context(|| format!("write {}", names_path.display()))?;
        tracing::info!(names = %names.join(","), "created server certificate");
    }
    let chain = certs_from_pem(&crt_path.display().to_string(), &read(&crt_path)?)?;
    let key = key_from_pem(&key_path.display().to_string(), &read(&key_path)?)?;
    Ok((chain, key))
}

pub use nex_backup_shared::clock::unix_now;

#[cfg(test)]
mod tests;
