//! The agent's enrollment state in its state dir:
//!
//! | file | what |
//! |---|---|
//! | `identity.pem` (0600) | the agent's private key, then its certificate chain |
//! | `enrollment.toml` | controller URL, pinned CA fingerprint, site, agent id, validity |
//! | `keyring` (0600) | site master keys by epoch ([`nex_backup_shared::keyring`]) |
//!
//! The private key is generated here and never leaves the host; key and certificate are
//! written together in one atomic file so a renewal can never leave them mismatched.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow};
use nex_backup_shared::keyring::{KeyRing, write_private_file};
use nex_backup_shared::tls::{
    cert_pem, certs_from_pem, client_config, key_from_pem, parse_fingerprint,
};
use serde::{Deserialize, Serialize};

/// What `enrollment.toml` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    pub controller: String,
    pub ca_fingerprint: String,
    pub site: String,
    pub agent_id: String,
    /// When the current certificate was issued and when it expires (unix seconds).
    pub issued_unix: i64,
    pub not_after_unix: i64,
}

pub fn identity_path(state_dir: &Path) -> PathBuf {
    state_dir.join("identity.pem")
}

fn enrollment_path(state_dir: &Path) -> PathBuf {
    state_dir.join("enrollment.toml")
}

pub fn keyring_path(state_dir: &Path) -> PathBuf {
    state_dir.join("keyring")
}

/// A fresh key pair and a certificate request for it (DER).
pub fn new_key_and_csr() -> anyhow::Result<(rcgen::KeyPair, Vec<u8>)> {
    let key = rcgen::KeyPair::generate().context("generate agent key")?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .context("make certificate request")?;
    Ok((key, csr.der().to_vec()))
}

impl Enrollment {
    /// Load the enrollment of `state_dir`; a clear error when the agent is not enrolled.
    pub fn load(state_dir: &Path) -> anyhow::Result<Self> {
        let p = enrollment_path(state_dir);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(anyhow!(
                    "this agent is not enrolled ({} is missing): run `nex-backup-agent enroll --token … --ca-fingerprint …` first",
                    p.display()
                ));
            }
            Err(e) => return Err(e).with_context(|| format!("read {}", p.display())),
        };
        toml::from_str(&text).map_err(|e| anyhow!("{}: {}", p.display(), e.message()))
    }

    /// Save the identity (key + chain) and then this record, both atomically.
    pub fn save(
        &self,
        state_dir: &Path,
        key: &rcgen::KeyPair,
        chain_der: &[Vec<u8>],
    ) -> anyhow::Result<()> {
        let mut pem = key.serialize_pem();
        for c in chain_der {
            pem.push_str(&cert_pem(c));
        }
        let ip = identity_path(state_dir);
        write_private_file(&ip, pem.as_bytes())
            .with_context(|| format!("write {}", ip.display()))?;
        let ep = enrollment_path(state_dir);
        let text = toml::to_string(self).context("encode enrollment")?;
        write_private_file(&ep, text.as_bytes()).with_context(|| format!("write {}", ep.display()))
    }

    /// TLS client config presenting this agent's certificate, pinned to the controller CA.
    pub fn tls(&self, state_dir: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let p = identity_path(state_dir);
        let what = p.display().to_string();
        let pem = std::fs::read(&p).with_context(|| format!("read {what}"))?;
        let certs = certs_from_pem(&what, &pem)?;
        let key = key_from_pem(&what, &pem)?;
        Ok(client_config(
            parse_fingerprint(&self.ca_fingerprint)?,
            Some((certs, key)),
        )?)
    }

    /// Seconds the certificate has left, and its whole lifetime.
    pub fn remaining(&self, now_unix: i64) -> (i64, i64) {
        (
            self.not_after_unix - now_unix,
            (self.not_after_unix - self.issued_unix).max(1),
        )
    }
}

/// The key ring, or a clear error saying how to get one.
pub fn load_keyring(state_dir: &Path, site: &str) -> anyhow::Result<KeyRing> {
    let p = keyring_path(state_dir);
    let ring = KeyRing::load(&p)?.ok_or_else(|| {
        anyhow!(
            "this agent holds no key for site {site} ({} is missing): run `nex-backup-agent recover --recovery-key FILE`",
            p.display()
        )
    })?;
    if ring.site != site {
        return Err(anyhow!(
            "{} holds keys of site {}, but this agent is enrolled for site {site}",
            p.display(),
            ring.site
        ));
    }
    Ok(ring)
}

pub use nex_backup_shared::clock::unix_now;
