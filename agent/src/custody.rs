//! Key custody: the site key is sealed to the controller's recovery keys before any
//! backup may use it, so that a restore never depends on this host surviving.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use nex_backup_shared::pb;
use tracing::warn;

use crate::ctx::Ctx;
use crate::trust;

/// Before a backup: if the keys are not known to be sealed (say `recover` ran while the
/// agent was up), ask the controller what it holds and seal what is missing.
pub async fn ensure_keys_sealed(ctx: &Arc<Ctx>) {
    if ctx.keys_sealed.load(Ordering::Acquire) {
        return;
    }
    let req = pb::GetSealedKeysRequest {
        site: ctx.site().into(),
    };
    match ctx.client().get_sealed_keys(req).await {
        Ok(r) => seal_keys(ctx, r.into_inner().custody.unwrap_or_default()).await,
        Err(s) => warn!(error = %s.message(), "fetch key custody"),
    }
}

pub async fn seal_keys(ctx: &Arc<Ctx>, custody: pb::KeyCustody) {
    let ring = match ctx.keyring() {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "no site key: backups are refused until the key is recovered");
            ctx.keys_sealed.store(false, Ordering::Release);
            return;
        }
    };
    let newest = custody.sealed.iter().map(|s| s.epoch).max().unwrap_or(0);
    if let Some((current, _)) = ring.current()
        && newest > current
    {
        warn!(
            current,
            newest,
            "the site has a newer key epoch than this agent holds; run `nex-backup-agent recover` to use it"
        );
    }
    match trust::ensure_sealed(&mut ctx.client(), &ring, &custody).await {
        Ok(_) => ctx.keys_sealed.store(true, Ordering::Release),
        Err(e) => {
            warn!(error = %format!("{e:#}"), "site key not sealed to the recovery keys; backups are refused");
            ctx.keys_sealed.store(false, Ordering::Release);
        }
    }
}
