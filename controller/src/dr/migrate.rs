//! `nex-backup migrate`: move a stopped embedded controller (sled catalog, blobs under the
//! data dir) onto a PostgreSQL catalog and an object store. Nothing is deleted: the old
//! catalog and blobs stay where they are until the operator removes them.
//!
//! Order, so that an interrupted run can simply be run again:
//! 1. the target catalog must hold no snapshot yet (a second run after a failure starts
//!    over on an emptied catalog; the store is write-once and already copied blobs are
//!    compared, not rewritten);
//! 2. every chunk blob is copied and read back, then recorded with the SHA-256 of what
//!    the target holds, so no record exists without its blob;
//! 3. sealed keys, manifests copies, then snapshots are committed (the catalog checks that
//!    every chunk they need is recorded), then everything else: agents, identities,
//!    jobs, policies, schedules, holds, RPO history, audit, alerting, damage marks;
//! 4. the counts of both sides are compared, and a mismatch fails the run.

use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use nex_backup_shared::ids::ChunkId;
use sha2::{Digest, Sha256};

use crate::catalog::alerts::{AlertCatalog, IncidentChange};
use crate::catalog::integrity::IntegrityCatalog;
use crate::catalog::pg::PgCatalog;
use crate::catalog::sled_catalog::SledCatalog;
use crate::catalog::{Catalog, NewSnapshot};
use crate::store::BlobStore;

/// Blobs copied at once.
const COPY_CONCURRENCY: usize = 16;
/// Chunk records read per page.
const PAGE: usize = 1000;

/// What a migration moved.
#[derive(Debug, Default, Clone)]
pub struct MigrateReport {
    pub sites: u64,
    pub snapshots: u64,
    pub chunks: u64,
    pub bytes: u64,
    pub jobs: u64,
    pub agents: u64,
}

/// The two sides of a migration.
pub struct Sides {
    pub from: SledCatalog,
    pub from_store: Arc<dyn BlobStore>,
    pub to: PgCatalog,
    pub to_store: Arc<dyn BlobStore>,
}

/// Run the migration (see module docs).
pub async fn migrate(s: &Sides) -> anyhow::Result<MigrateReport> {
    if !s.to.snapshots(None, None).await?.is_empty() {
        bail!(
            "the target catalog already holds snapshots; migrate only into an empty catalog (drop and recreate its database, then run again)"
        );
    }
    let from_ints = s.from.integrity().context("open integrity records")?;
    let mut sites: Vec<String> = s
        .from
        .identities()
        .await?
        .into_iter()
        .map(|i| i.site)
        .chain(
            s.from
                .snapshots(None, None)
                .await?
                .into_iter()
                .map(|r| r.site),
        )
        .collect();
    sites.sort();
    sites.dedup();
    let mut report = MigrateReport {
        sites: sites.len() as u64,
        ..Default::default()
    };
    for site in &sites {
        copy_chunks(s, &from_ints, site, &mut report).await?;
        copy_keys(s, site).await?;
        copy_snapshots(s, &from_ints, site, &mut report).await?;
    }
    copy_records(s, &mut report).await?;
    copy_alerts(s).await?;
    check_counts(s, &sites).await?;
    Ok(report)
}

/// Copy one blob; returns the bytes the target holds under `key`.
async fn copy_blob(s: &Sides, key: &str) -> anyhow::Result<Bytes> {
    let data = s
        .from_store
        .get(key)
        .await?
        .with_context(|| format!("blob {key} is recorded but missing from the old store"))?;
    if s.to_store.put(key, data.clone()).await? {
        let back = s.to_store.get(key).await?;
        if back.as_ref() != Some(&data) {
            bail!("blob {key} did not read back from the new store as written");
        }
        return Ok(data);
    }
    // Already there (an earlier run): what the target holds is what counts.
    s.to_store
        .get(key)
        .await?
        .with_context(|| format!("blob {key} vanished from the new store"))
}

async fn copy_chunks(
    s: &Sides,
    ints: &dyn IntegrityCatalog,
    site: &str,
    report: &mut MigrateReport,
) -> anyhow::Result<()> {
    let mut after: Option<ChunkId> = None;
    loop {
        let page = ints.chunk_page(site, after.as_ref(), PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.id);
        let copied: Vec<(ChunkId, Bytes)> = futures::stream::iter(page.iter().map(|e| {
            let key = crate::store::chunk_key(site, &e.id);
            async move { copy_blob(s, &key).await.map(|b| (e.id, b)) }
        }))
        .buffer_unordered(COPY_CONCURRENCY)
        .try_collect()
        .await?;
        for (id, blob) in copied {
            let sha: [u8; 32] = Sha256::digest(&blob).into();
            s.to.record_chunk(site, &id, blob.len() as u32, &sha)
                .await?;
            report.chunks += 1;
            report.bytes += blob.len() as u64;
        }
    }
}

async fn copy_keys(s: &Sides, site: &str) -> anyhow::Result<()> {
    for k in s.from.sealed_keys(site).await? {
        s.to.put_sealed_key(&k).await?;
        let key = crate::store::sealed_key_key(site, k.epoch, &k.recipient);
        if s.from_store.exists(&key).await? {
            copy_blob(s, &key).await?;
        } else {
            s.to_store.put(&key, Bytes::from(k.blob.clone())).await?;
        }
    }
    Ok(())
}

async fn copy_snapshots(
    s: &Sides,
    ints: &dyn IntegrityCatalog,
    site: &str,
    report: &mut MigrateReport,
) -> anyhow::Result<()> {
    let mut after: Option<String> = None;
    loop {
        let page = ints.refs_page(site, after.as_deref(), 100).await?;
        let Some((last, _, _)) = page.last() else {
            return Ok(());
        };
        after = Some(last.clone());
        for (snap_id, _target, chunk_ids) in page {
            let record = s.from.snapshot(site, &snap_id).await?.with_context(|| {
                format!("snapshot {site}/{snap_id} has references but no record")
            })?;
            let manifest = s
                .from
                .manifest(site, &snap_id)
                .await?
                .with_context(|| format!("snapshot {site}/{snap_id} has no manifest"))?;
            let key = crate::store::manifest_key(site, &snap_id);
            if s.from_store.exists(&key).await? {
                copy_blob(s, &key).await?;
            }
            let committed =
                s.to.commit_snapshot(NewSnapshot {
                    record: record.clone(),
                    manifest,
                    chunk_ids,
                    settles: None,
                })
                .await
                .with_context(|| format!("commit snapshot {site}/{snap_id} in the new catalog"))?;
            if committed.chunks != record.chunks || committed.stored_bytes != record.stored_bytes {
                bail!(
                    "snapshot {site}/{snap_id}: the new catalog counts {} chunks / {} bytes, the old {} / {}",
                    committed.chunks,
                    committed.stored_bytes,
                    record.chunks,
                    record.stored_bytes
                );
            }
            report.snapshots += 1;
        }
    }
}

async fn copy_records(s: &Sides, report: &mut MigrateReport) -> anyhow::Result<()> {
    let (from, to) = (&s.from, &s.to);
    for a in from.admins().await? {
        to.put_admin(&a).await?;
    }
    for a in from.accounts().await? {
        to.put_account(&a).await?;
    }
    for i in from.identities().await? {
        to.put_identity(&i).await?;
    }
    for a in from.agents().await? {
        to.put_agent(&a).await?;
        report.agents += 1;
    }
    for j in from.jobs().await? {
        to.put_job(&j).await?;
        report.jobs += 1;
    }
    for p in from.policies().await? {
        to.put_policy(&p).await?;
    }
    for p in from.site_policies().await? {
        to.put_site_policy(&p).await?;
    }
    for r in from.schedules().await? {
        to.put_schedule(&r).await?;
    }
    for h in from.holds().await? {
        to.put_hold(&h).await?;
    }
    for e in from.rpo_events(None).await? {
        to.put_rpo_event(&e).await?;
    }
    for e in from.audit(None, 0, usize::MAX).await? {
        to.put_audit(&e).await?;
    }
    let ints = from.integrity().context("open integrity records")?;
    for d in ints.damages(None).await? {
        to.put_damage(&d).await?;
    }
    to.put_verify_state(&ints.verify_state().await?).await?;
    Ok(())
}

async fn copy_alerts(s: &Sides) -> anyhow::Result<()> {
    let from = s.from.alerts().context("open alert records")?;
    let to = &s.to;
    for c in from.channels().await? {
        to.put_channel(&c).await?;
    }
    for r in from.rules().await? {
        to.put_rule(&r).await?;
    }
    let mut max_id = 0;
    for i in from.incidents().await? {
        max_id = max_id.max(i.id);
        to.apply_incident(IncidentChange {
            incident: i,
            notices: vec![],
        })
        .await?;
    }
    for e in from.outbox().await? {
        max_id = max_id.max(e.id);
        to.enqueue(&e).await?;
    }
    to.advance_ids(max_id).await?;
    if let Some(sum) = from.summary().await? {
        to.put_summary(Some(&sum)).await?;
    }
    Ok(())
}

async fn check_counts(s: &Sides, sites: &[String]) -> anyhow::Result<()> {
    for site in sites {
        let (a, b) = (
            s.from.snapshots(Some(site), None).await?.len(),
            s.to.snapshots(Some(site), None).await?.len(),
        );
        if a != b {
            bail!("site {site}: {a} snapshots in the old catalog, {b} in the new one");
        }
    }
    let (a, b) = (s.from.chunk_totals().await?, s.to.chunk_totals().await?);
    if a != b {
        bail!(
            "chunk records: {} ({} bytes) in the old catalog, {} ({} bytes) in the new one",
            a.0,
            a.1,
            b.0,
            b.1
        );
    }
    Ok(())
}
