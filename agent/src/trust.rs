//! Enrollment, key custody and certificate renewal on the agent.
//!
//! - [`enroll`]: new key pair and certificate request, token spent over TLS pinned to the
//!   controller CA; the first agent of a site generates the site master key (epoch 1).
//! - [`ensure_sealed`]: every epoch this agent holds is sealed to every recovery key the
//!   controller lists; run at enrollment and at the start of every session.
//! - [`recover`]: unseal the site's keys with the offline recovery key.
//! - [`rotate_key`]: start a new key epoch, sealed before it is ever used.
//! - [`renew_if_due`]: a fresh certificate once two thirds of its lifetime have passed.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use nex_backup_shared::identity::AgentIdentity;
use nex_backup_shared::keyring::KeyRing;
use nex_backup_shared::keys::MasterKey;
use nex_backup_shared::pb::{
    self, agent_service_client::AgentServiceClient, enroll_service_client::EnrollServiceClient,
};
use nex_backup_shared::recovery::{
    RecoveryPublicKey, RecoverySecret, open_into_ring, seal_master_key,
};
use nex_backup_shared::tls::{
    client_config, endpoint, error_chain, fingerprint, parse_fingerprint,
};
use tonic::transport::Channel;
use tracing::info;

use crate::enrollment::{Enrollment, keyring_path, load_keyring, new_key_and_csr, unix_now};

/// What `enroll` needs.
#[derive(Debug, Clone)]
pub struct EnrollArgs {
    pub state_dir: PathBuf,
    pub controller: String,
    pub token: String,
    pub ca_fingerprint: String,
    pub agent_id: String,
}

async fn dial(
    controller: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> anyhow::Result<Channel> {
    let (ep, dialer) = endpoint(controller, tls)?;
    ep.connect_with_connector(dialer).await.map_err(|e| {
        anyhow!(
            "cannot reach controller at {controller}: {}",
            error_chain(&e)
        )
    })
}

/// Connect as this (enrolled) agent.
pub async fn agent_client(
    state_dir: &Path,
) -> anyhow::Result<(Enrollment, AgentServiceClient<Channel>)> {
    let e = Enrollment::load(state_dir)?;
    let ch = dial(&e.controller, e.tls(state_dir)?).await?;
    Ok((e, AgentServiceClient::new(ch)))
}

/// Enroll this host. Returns a summary for the operator.
pub async fn enroll(a: &EnrollArgs) -> anyhow::Result<String> {
    let pin = parse_fingerprint(&a.ca_fingerprint)?;
    let existing = KeyRing::load(&keyring_path(&a.state_dir))?;
    let ch = dial(&a.controller, client_config(pin, None)?).await?;
    let (key, csr) = new_key_and_csr()?;
    let resp = EnrollServiceClient::new(ch)
        .enroll(pb::EnrollRequest {
            token: a.token.clone(),
            csr_der: csr,
            agent_id: a.agent_id.clone(),
            version: nex_backup_shared::VERSION.into(),
        })
        .await
        .map_err(|s| anyhow!("enrollment refused by the controller: {}", s.message()))?
        .into_inner();
    let leaf = resp
        .chain_der
        .first()
        .ok_or_else(|| anyhow!("enrollment answer has no certificate"))?;
    let id = AgentIdentity::from_cert_der(leaf)?;
    if id.site != resp.site || id.agent_id != a.agent_id {
        return Err(anyhow!(
            "the controller issued a certificate for another identity"
        ));
    }
    if let Some(ring) = &existing
        && ring.site != id.site
    {
        return Err(anyhow!(
            "{} holds keys of site {}; use another state dir for site {}",
            keyring_path(&a.state_dir).display(),
            ring.site,
            id.site
        ));
    }
    let enrollment = Enrollment {
        controller: a.controller.clone(),
        ca_fingerprint: format!("SHA256:{}", hex::encode(pin)),
        site: id.site.clone(),
        agent_id: id.agent_id.clone(),
        issued_unix: unix_now(),
        not_after_unix: id.not_after_unix,
    };
    enrollment.save(&a.state_dir, &key, &resp.chain_der)?;
    let custody = resp.custody.unwrap_or_default();
    let mut summary = format!(
        "enrolled as agent {} of site {} (certificate valid until {}, CA {})",
        id.agent_id,
        id.site,
        jiff::Timestamp::from_second(id.not_after_unix)
            .map_or_else(|_| id.not_after_unix.to_string(), |t| t.to_string()),
        fingerprint(&resp.chain_der[resp.chain_der.len() - 1])
    );
    let ring = match existing {
        Some(ring) => Some(ring),
        None if custody.sealed.is_empty() => {
            let mut ring = KeyRing::new(&id.site);
            ring.insert(1, MasterKey::generate());
            ring.save(&keyring_path(&a.state_dir))?;
            summary.push_str("; generated the site master key (epoch 1)");
            Some(ring)
        }
        None => {
            summary.push_str(&format!(
                "; site {} already has keys ({} sealed copies): run `nex-backup-agent recover --recovery-key FILE` before backing up",
                id.site,
                custody.sealed.len()
            ));
            None
        }
    };
    if let Some(ring) = ring {
        let (_, mut client) = agent_client(&a.state_dir).await?;
        let n = ensure_sealed(&mut client, &ring, &custody).await?;
        summary.push_str(&format!("; {n} sealed key copies uploaded"));
    }
    Ok(summary)
}

/// Seal every epoch of `ring` to every recovery key in `custody` that lacks it.
pub async fn ensure_sealed(
    client: &mut AgentServiceClient<Channel>,
    ring: &KeyRing,
    custody: &pb::KeyCustody,
) -> anyhow::Result<usize> {
    let rks: Vec<RecoveryPublicKey> = custody
        .recovery_keys
        .iter()
        .map(|k| RecoveryPublicKey::parse(k))
        .collect::<Result<_, _>>()
        .context("recovery key sent by the controller")?;
    if rks.is_empty() {
        return Err(anyhow!(
            "the controller lists no recovery key; keys stay unsealed"
        ));
    }
    let mut sealed = vec![];
    for (epoch, key) in ring.epochs() {
        for rk in &rks {
            let have = custody
                .sealed
                .iter()
                .any(|s| s.epoch == epoch && s.recipient == rk.tag());
            if !have {
                sealed.push(seal_master_key(&ring.site, epoch, key, rk));
            }
        }
    }
    if sealed.is_empty() {
        return Ok(0);
    }
    let n = sealed.len();
    client
        .put_sealed_keys(pb::PutSealedKeysRequest {
            site: ring.site.clone(),
            sealed,
        })
        .await
        .map_err(|s| anyhow!("store sealed keys: {}", s.message()))?;
    info!(site = %ring.site, copies = n, "site keys sealed to recovery keys");
    Ok(n)
}

/// Unseal the site's keys with the offline recovery key in `key_file`.
pub async fn recover(state_dir: &Path, key_file: &Path) -> anyhow::Result<String> {
    let secret = RecoverySecret::read_file(key_file)?;
    let (e, mut client) = agent_client(state_dir).await?;
    let resp = client
        .get_sealed_keys(pb::GetSealedKeysRequest {
            site: e.site.clone(),
        })
        .await
        .map_err(|s| anyhow!("fetch sealed keys: {}", s.message()))?
        .into_inner();
    let mut ring = match KeyRing::load(&keyring_path(state_dir))? {
        Some(r) if r.site == e.site => r,
        _ => KeyRing::new(&e.site),
    };
    let opened = open_into_ring(
        &e.site,
        resp.sealed.iter().map(Vec::as_slice),
        &secret,
        &mut ring,
        " by the controller",
    )?;
    ring.save(&keyring_path(state_dir))?;
    Ok(format!(
        "recovered key epochs {:?} of site {}; every snapshot sealed with them can be restored",
        opened, e.site
    ))
}

/// Start a new key epoch: generated, sealed to every recovery key and stored by the
/// controller, and only then made current.
pub async fn rotate_key(state_dir: &Path) -> anyhow::Result<String> {
    let (e, mut client) = agent_client(state_dir).await?;
    let mut ring = load_keyring(state_dir, &e.site)?;
    let resp = client
        .get_sealed_keys(pb::GetSealedKeysRequest {
            site: e.site.clone(),
        })
        .await
        .map_err(|s| anyhow!("fetch key custody: {}", s.message()))?
        .into_inner();
    let custody = resp.custody.unwrap_or_default();
    let newest_known = custody.sealed.iter().map(|s| s.epoch).max().unwrap_or(0);
    let epoch = ring.current().map_or(0, |(e, _)| e).max(newest_known) + 1;
    let mut next = KeyRing::new(&e.site);
    next.insert(epoch, MasterKey::generate());
    let n = ensure_sealed(&mut client, &next, &custody).await?;
    let key = next.current().expect("one epoch").1.clone();
    ring.insert(epoch, key.clone());
    ring.save(&keyring_path(state_dir))?;
    Ok(format!(
        "key epoch {epoch} (key id {}) of site {} is current; sealed to {n} recovery key(s); older epochs stay for restores",
        key.derive().key_id_hex(),
        e.site
    ))
}

/// Renew the certificate when less than a third of its lifetime is left. Returns the new
/// channel to use, if it was renewed.
pub async fn renew_if_due(
    state_dir: &Path,
    current: &Enrollment,
    client: &mut AgentServiceClient<Channel>,
) -> anyhow::Result<Option<(Enrollment, Channel)>> {
    let (left, lifetime) = current.remaining(unix_now());
    if left > lifetime / 3 {
        return Ok(None);
    }
    let (key, csr) = new_key_and_csr()?;
    let resp = client
        .renew_certificate(pb::RenewRequest { csr_der: csr })
        .await
        .map_err(|s| anyhow!("renew certificate: {}", s.message()))?
        .into_inner();
    let mut next = current.clone();
    next.issued_unix = unix_now();
    next.not_after_unix = resp.not_after_unix;
    next.save(state_dir, &key, &resp.chain_der)?;
    let ch = nex_backup_shared::tls::channel(&next.controller, next.tls(state_dir)?)?;
    info!(not_after = resp.not_after_unix, "agent certificate renewed");
    Ok(Some((next, ch)))
}
