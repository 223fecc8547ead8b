//! Key custody and certificate renewal for authenticated agents. Sealed master keys are
//! append-only: an agent can add a sealed copy, never replace or delete one.

use std::collections::HashSet;

use nex_backup_shared::identity::AgentIdentity;
use nex_backup_shared::pb;
use nex_backup_shared::recovery::sealed_info;
use tonic::Status;
use tracing::{info, warn};

use super::{State, catalog_status};
use crate::catalog::SealedKeyRecord;
use crate::pki::Pki;

/// At most this many sealed keys in one request.
const MAX_SEALED_PER_REQUEST: usize = 256;

/// Key ids of `site`: those of the epochs its agents sealed to the recovery keys. Every
/// chunk and manifest the site stores must be sealed under one of them, so nothing is
/// stored under a key nobody can recover, nor under another site's key.
pub(crate) async fn site_key_ids(st: &State, site: &str) -> Result<HashSet<[u8; 8]>, Status> {
    let sealed = st.catalog.sealed_keys(site).await.map_err(catalog_status)?;
    Ok(sealed.into_iter().map(|s| s.key_id).collect())
}

/// Refuse an object of `site` sealed under a key id the site has not registered.
pub(crate) fn check_key_id(
    keys: &HashSet<[u8; 8]>,
    who: &AgentIdentity,
    what: &str,
    key_id: [u8; 8],
) -> Result<(), Status> {
    if keys.contains(&key_id) {
        return Ok(());
    }
    warn!(site = %who.site, agent = %who.agent_id, key_id = %hex::encode(key_id), what,
        "object sealed with a key the site has not registered; refused");
    Err(Status::invalid_argument(format!(
        "{what}: sealed with key {}, which is not a registered key of site {} \
         (a key is registered by sealing it to the recovery keys)",
        hex::encode(key_id),
        who.site
    )))
}

/// The recovery keys and the sealed copies already held for `site`.
pub(crate) async fn custody(st: &State, site: &str) -> Result<pb::KeyCustody, Status> {
    let sealed = st.catalog.sealed_keys(site).await.map_err(catalog_status)?;
    Ok(pb::KeyCustody {
        recovery_keys: st.recovery_keys.iter().map(|k| k.to_string()).collect(),
        sealed: sealed
            .into_iter()
            .map(|s| pb::SealedKeyInfo {
                epoch: s.epoch,
                key_id: s.key_id.to_vec(),
                recipient: s.recipient.to_vec(),
            })
            .collect(),
    })
}

/// Most key epochs one site may hold.
const MAX_EPOCHS: usize = 1024;

/// Epochs grow one at a time: a new epoch must follow the site's newest by one (the
/// first is 1), and a site holds at most [`MAX_EPOCHS`]. An agent cannot bloat the key
/// list every upload is checked against by registering arbitrary epoch numbers.
async fn check_epochs(
    st: &State,
    who: &AgentIdentity,
    recs: &[SealedKeyRecord],
) -> Result<(), Status> {
    let mut known: std::collections::BTreeSet<u32> = st
        .catalog
        .sealed_keys(&who.site)
        .await
        .map_err(catalog_status)?
        .iter()
        .map(|r| r.epoch)
        .collect();
    let mut asked: Vec<u32> = recs.iter().map(|r| r.epoch).collect();
    asked.sort_unstable();
    for epoch in asked {
        if known.contains(&epoch) {
            continue;
        }
        let next = known.last().map_or(1, |e| e + 1);
        if epoch != next || known.len() >= MAX_EPOCHS {
            warn!(site = %who.site, agent = %who.agent_id, epoch, next, "sealed key for an out-of-sequence epoch refused");
            return Err(Status::invalid_argument(format!(
                "sealed key for epoch {epoch} refused: the next epoch of site {} is {next} (at most {MAX_EPOCHS})",
                who.site
            )));
        }
        known.insert(epoch);
    }
    Ok(())
}

pub(crate) async fn put_sealed(
    st: &State,
    who: &AgentIdentity,
    blobs: Vec<Vec<u8>>,
) -> Result<u32, Status> {
    if blobs.len() > MAX_SEALED_PER_REQUEST {
        return Err(Status::invalid_argument(format!(
            "{} sealed keys in one request, at most {MAX_SEALED_PER_REQUEST}",
            blobs.len()
        )));
    }
    // Validate all before storing any.
    let mut recs = vec![];
    for (i, blob) in blobs.into_iter().enumerate() {
        let info = sealed_info(&blob).map_err(|e| {
            warn!(site = %who.site, agent = %who.agent_id, error = %e, "malformed sealed key refused");
            Status::invalid_argument(format!("sealed key {i}: {e}"))
        })?;
        if !st.recovery_keys.iter().any(|k| k.tag() == info.recipient) {
            warn!(site = %who.site, agent = %who.agent_id, "sealed key for an unknown recovery key refused");
            return Err(Status::invalid_argument(format!(
                "sealed key {i}: sealed to rk:{}, which is not a recovery key of this controller",
                hex::encode(info.recipient)
            )));
        }
        recs.push(SealedKeyRecord {
            site: who.site.clone(),
            epoch: info.epoch,
            key_id: info.key_id,
            recipient: info.recipient,
            blob,
        });
    }
    check_epochs(st, who, &recs).await?;
    let mut stored = 0;
    for r in &recs {
        if st.catalog.put_sealed_key(r).await.map_err(|e| {
            warn!(site = %who.site, agent = %who.agent_id, epoch = r.epoch, error = %e, "sealed key refused");
            catalog_status(e)
        })? {
            info!(site = %who.site, agent = %who.agent_id, epoch = r.epoch,
                key_id = %hex::encode(r.key_id), recipient = %hex::encode(r.recipient), "sealed site key stored");
            stored += 1;
        }
    }
    if stored > 0 {
        super::durable(st).await?;
    }
    copy_to_store(st, &recs).await.map_err(|e| {
        tracing::error!(site = %who.site, error = %e, "copy sealed keys into the blob store");
        Status::unavailable(format!(
            "could not copy the sealed keys into the blob store: {e}"
        ))
    })?;
    Ok(stored)
}

/// Copy sealed keys into the blob store (write-once), beside the snapshots they open.
pub(crate) async fn copy_to_store(
    st: &State,
    recs: &[SealedKeyRecord],
) -> Result<(), crate::store::StoreError> {
    for r in recs {
        let key = crate::store::sealed_key_key(&r.site, r.epoch, &r.recipient);
        st.store.put(&key, r.blob.clone().into()).await?;
    }
    Ok(())
}

/// Make sure every sealed key the catalog holds has its copy in the blob store (keys
/// stored before copies existed, or a crash between the catalog and the store).
pub async fn copy_all_to_store(st: &State) -> anyhow::Result<usize> {
    let mut n = 0;
    for site in crate::state::enrolled_sites(st).await? {
        let recs = st.catalog.sealed_keys(&site).await?;
        copy_to_store(st, &recs).await?;
        n += recs.len();
    }
    Ok(n)
}

pub(crate) async fn renew(
    st: &State,
    who: &AgentIdentity,
    csr_der: &[u8],
) -> Result<pb::RenewResponse, Status> {
    let csr = Pki::check_csr(csr_der).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let issued = st
        .pki
        .issue(csr, &who.site, &who.agent_id, st.agent_cert_lifetime)
        .map_err(|e| {
            tracing::error!(error = %e, "issue renewed certificate");
            Status::internal("could not issue the certificate")
        })?;
    let id = &issued.identity;
    let swapped = st
        .catalog
        .renew_identity(
            &who.site,
            &who.agent_id,
            &who.serial,
            &id.serial,
            &id.key_sha256,
            id.not_after_unix,
        )
        .await
        .map_err(catalog_status)?;
    super::durable(st).await?;
    if swapped.is_none() {
        warn!(site = %who.site, agent = %who.agent_id, "renewal from a revoked or superseded certificate refused");
        return Err(Status::permission_denied(
            "certificate was revoked or superseded; enroll again",
        ));
    }
    info!(site = %who.site, agent = %who.agent_id, old_serial = %who.serial, serial = %id.serial,
        not_after = id.not_after_unix, "agent certificate renewed");
    st.audit_trust(
        &who.site,
        "agent certificate renewed",
        format!(
            "serial {} -> {}, until {}",
            who.serial, id.serial, id.not_after_unix
        ),
        format!("agent {}", who.agent_id),
    )
    .await;
    Ok(pb::RenewResponse {
        chain_der: issued.chain_der,
        not_after_unix: id.not_after_unix,
    })
}
