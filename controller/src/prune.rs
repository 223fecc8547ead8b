//! Rotation and garbage collection.
//!
//! 1. **Plan**: for every (site, target) in scope, the policy's keep set
//!    ([`crate::policy::retention::plan`]) over its committed snapshots, counting only
//!    good ones ([`crate::fleet::standing`]); then the guards no policy overrides: nothing
//!    younger than the site's retention lock, and nothing of a target on anomaly hold,
//!    is deleted. The rest is to be deleted.
//! 2. **Delete** those snapshots from the catalog (atomically each), then their manifest
//!    copies from the blob store.
//! 3. **Collect** every chunk of the site that no snapshot references, except chunks
//!    *pinned* because an agent was recently told they exist (FindMissing) or uploaded
//!    them: an upload in flight never loses a chunk it relies on. The catalog answers
//!    the unreferenced chunks a page at a time (a query, never the site in memory);
//!    each page's records are deleted serialized with commits (a chunk a commit took
//!    meanwhile stays), then the blobs. Pins live in memory, so no chunk is collected
//!    during the grace period after a controller start; and no chunk of a site is
//!    collected while the catalog records a backup of it running (on whichever replica:
//!    a replica's pins are its own, the catalog is everyone's).
//!
//! 4. **Sweep** each site's objects no record references ([`crate::sweep`]).
//!
//! A dry run does step 1 and reports what steps 2 to 4 would free.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono_tz::Tz;
use nex_backup_shared::ids::ChunkId;
use serde::Serialize;
use tracing::{info, warn};

use crate::catalog::safety::HoldRecord;
use crate::catalog::{CatalogError, SnapshotRecord};
use crate::fleet::standing::Standing;
use crate::policy::Policy;
use crate::policy::retention::{Guards, Snap, Spared, plan};
use crate::policy::site::DEFAULT_RETENTION_LOCK_SECS;
use crate::state::State;
use crate::store::{chunk_key, manifest_key};

/// What to prune.
#[derive(Debug, Clone, Default)]
pub struct PruneScope {
    pub site: Option<String>,
    pub target: Option<String>,
    pub dry_run: bool,
    /// Only the plan: no snapshot deleted, no garbage collection looked at.
    pub plan_only: bool,
}

/// The plan and outcome for one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetPrune {
    pub site: String,
    pub target: String,
    pub keep: Vec<String>,
    pub delete: Vec<String>,
    /// Kept only by the retention lock or an anomaly hold.
    pub spared: Vec<(String, &'static str)>,
    /// The standing of each kept snapshot, same order as `keep`.
    pub standing: Vec<&'static str>,
    /// The reason of the target's anomaly hold, if it is on one.
    pub hold: Option<String>,
}

/// What a prune did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub targets: Vec<TargetPrune>,
    pub deleted_snapshots: u64,
    pub deleted_chunks: u64,
    /// Sealed bytes freed (or that would be freed) in the blob store.
    pub freed_bytes: u64,
    /// Unreferenced chunks left alone because an upload may rely on them.
    pub pinned_chunks: u64,
    /// Set when garbage collection will not run yet, saying until when.
    pub gc_note: Option<String>,
    /// Store objects no record referenced, deleted by the sweeper (see [`crate::sweep`]).
    pub orphans_deleted: u64,
    pub orphan_bytes: u64,
    /// Sites whose sweep stopped, with why.
    pub sweep_refused: Vec<String>,
}

/// Prune failures, naming the site or snapshot.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("prune: {0}")]
    Catalog(#[from] CatalogError),
    #[error("prune site {site}: {reason}")]
    Site { site: String, reason: String },
    #[error("prune: {0}")]
    Sweep(#[from] crate::sweep::SweepError),
}

fn plan_target(
    snaps: &[SnapshotRecord],
    policy: &Policy,
    standing: &HashMap<String, Standing>,
    guards: Guards,
) -> TargetPrune {
    let tz: Tz = policy.timezone.parse().unwrap_or(Tz::UTC);
    let view: Vec<Snap> = snaps
        .iter()
        .map(|s| {
            let st = standing.get(&s.snapshot_id).copied().unwrap_or_default();
            Snap {
                id: s.snapshot_id.clone(),
                unix_ms: s.created_unix_ms,
                good: st.good,
                verified: st.verified,
            }
        })
        .collect();
    let (keep, delete, spared) = plan(&view, &policy.retention, &tz, guards);
    // A damaged snapshot is not counted, but not deleted either: its chunks may come back
    // with the next backup (verification heals it), and what is left of it is for a
    // person to judge.
    let (damaged, delete): (Vec<String>, Vec<String>) = delete
        .into_iter()
        .partition(|id| standing.get(id).is_some_and(|s| s.damaged));
    let label = |id: &String| standing.get(id).copied().unwrap_or_default().label();
    TargetPrune {
        site: snaps.first().map(|s| s.site.clone()).unwrap_or_default(),
        target: snaps.first().map(|s| s.target.clone()).unwrap_or_default(),
        standing: keep.iter().map(label).collect(),
        keep,
        delete,
        spared: spared
            .into_iter()
            .map(|(id, why)| {
                let why = match why {
                    Spared::Lock => "lock",
                    Spared::Hold => "hold",
                };
                (id, why)
            })
            .chain(damaged.into_iter().map(|id| (id, "damaged")))
            .collect(),
        hold: None,
    }
}

/// Plan, and unless dry, delete and collect. See module docs.
pub async fn prune(
    state: &State,
    scope: &PruneScope,
    now_ms: u64,
) -> Result<PruneReport, PruneError> {
    let mut report = PruneReport {
        dry_run: scope.dry_run,
        ..Default::default()
    };
    if !scope.dry_run && !scope.plan_only {
        // On a full disk, room for the catalog's deletions before the first of them.
        state.ballast.release_if_full();
    }
    let all = state
        .catalog
        .snapshots(scope.site.as_deref(), scope.target.as_deref())
        .await?;
    let mut by_target: BTreeMap<(String, String), Vec<SnapshotRecord>> = BTreeMap::new();
    for s in all {
        by_target
            .entry((s.site.clone(), s.target.clone()))
            .or_default()
            .push(s);
    }
    let mut doomed: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    let jobs = state.catalog.jobs().await?;
    let damaged = crate::fleet::standing::load_damaged(&*state.integrity).await?;
    let holds: HashMap<(String, String), HoldRecord> = state
        .catalog
        .holds()
        .await?
        .into_iter()
        .map(|h| ((h.site.clone(), h.target.clone()), h))
        .collect();
    let mut locks: HashMap<String, u64> = HashMap::new();
    for p in state.catalog.site_policies().await? {
        locks.insert(p.site, p.policy.retention_lock_secs);
    }
    let policies: HashMap<(String, String), Policy> = state
        .catalog
        .policies()
        .await?
        .into_iter()
        .map(|p| ((p.site, p.target), p.policy))
        .collect();
    for (key, snaps) in &by_target {
        let (site, target) = key;
        let policy = policies.get(key).unwrap_or(&state.default_policy);
        let hold = holds.get(key);
        let standing =
            crate::fleet::standing::of_target(snaps, &jobs, hold, &damaged, site, target);
        let lock_secs = locks
            .get(site)
            .copied()
            .unwrap_or(DEFAULT_RETENTION_LOCK_SECS);
        let guards = Guards {
            now_ms,
            lock_ms: lock_secs.saturating_mul(1000),
            held: hold.is_some(),
        };
        let mut t = plan_target(snaps, policy, &standing, guards);
        t.hold = hold.map(|h| h.reason.clone());
        doomed
            .entry(site.clone())
            .or_default()
            .extend(t.delete.iter().cloned());
        report.targets.push(t);
    }
    if gc_waits(state, now_ms) {
        let gc_from = state.started_ms + state.gc_grace_ms;
        report.gc_note = Some(format!(
            "garbage collection waits until {} (grace period after the controller started; uploads in flight may rely on unreferenced chunks)",
            chrono::DateTime::from_timestamp_millis(gc_from as i64)
                .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
                .unwrap_or_default()
        ));
    }
    if scope.plan_only {
        report.dry_run = true;
        return Ok(report);
    }
    // Every site in scope is collected, snapshots or not: chunks sent by a backup that
    // never committed (a full disk, a killed agent) are garbage too.
    match &scope.site {
        Some(site) => {
            doomed.entry(site.clone()).or_default();
        }
        None => {
            for id in state.catalog.identities().await? {
                doomed.entry(id.site).or_default();
            }
        }
    }
    for (site, delete) in &doomed {
        collect_site(state, site, delete, now_ms, &mut report).await?;
        if !gc_waits(state, now_ms) {
            let swept = crate::sweep::sweep_site(state, site, now_ms, scope.dry_run).await?;
            report.orphans_deleted += swept.deleted;
            report.orphan_bytes += swept.deleted_bytes;
            if let Some(why) = swept.refused {
                report.sweep_refused.push(format!("{site}: {why}"));
            }
        }
    }
    if !scope.dry_run {
        info!(
            snapshots = report.deleted_snapshots,
            chunks = report.deleted_chunks,
            freed_bytes = report.freed_bytes,
            pinned = report.pinned_chunks,
            orphans = report.orphans_deleted,
            "prune finished"
        );
        state.events.publish(crate::events::Event::PruneDone {
            deleted_snapshots: report.deleted_snapshots,
            deleted_chunks: report.deleted_chunks,
            freed_bytes: report.freed_bytes,
        });
    }
    Ok(report)
}

/// Whether garbage collection still waits out the grace period after the start (pins
/// live in memory, so until then an upload may rely on a chunk nobody references).
fn gc_waits(state: &State, now_ms: u64) -> bool {
    now_ms < state.started_ms + state.gc_grace_ms
}

/// Delete the records of those claimed chunks still unreferenced (serialized with
/// commits), then their blobs. Returns the chunks deleted.
async fn delete_claimed(
    state: &State,
    site: &str,
    victims: &[ChunkId],
) -> Result<Vec<ChunkId>, PruneError> {
    let deleted = match state.catalog.delete_unreferenced(site, victims).await {
        Ok(deleted) => deleted,
        // A full disk (where GC is how space comes back): the ballast's room, then small
        // steps, each freeing its blobs before the next needs room in the catalog.
        Err(CatalogError::DiskFull(_)) if !victims.is_empty() => {
            warn!(%site, chunks = victims.len(), "catalog disk full: collecting in small steps");
            state.ballast.release();
            let mut all = vec![];
            for step in victims.chunks(4) {
                let deleted = state.catalog.delete_unreferenced(site, step).await?;
                durable_on_full_disk(state).await?;
                delete_blobs(state, site, &deleted).await?;
                all.extend(deleted);
            }
            state.ballast.lay(); // room again, for the next time
            return Ok(all);
        }
        Err(e) => return Err(e.into()),
    };
    // Durable before any blob goes: a crash must never leave a chunk record whose
    // blob is gone (FindMissing would then call a lost chunk present).
    durable_on_full_disk(state).await?;
    delete_blobs(state, site, &deleted).await?;
    state.ballast.lay();
    Ok(deleted)
}

/// Make the catalog's deletions durable; on a full disk, with the ballast's room.
async fn durable_on_full_disk(state: &State) -> Result<(), PruneError> {
    match state.catalog.flush().await {
        Err(CatalogError::DiskFull(_)) if state.ballast.release() => {
            Ok(state.catalog.flush().await?)
        }
        r => Ok(r?),
    }
}

/// Delete the blobs of tombstoned chunks, then the tombstones.
async fn delete_blobs(state: &State, site: &str, ids: &[ChunkId]) -> Result<(), PruneError> {
    for id in ids {
        state
            .store
            .delete(&chunk_key(site, id))
            .await
            .map_err(|e| PruneError::Site {
                site: site.into(),
                reason: format!("delete chunk {}: {e}", id.short()),
            })?;
    }
    state.catalog.purge_chunks(site, ids).await?;
    Ok(())
}

/// Chunks garbage collection asks the catalog about at a time.
const GC_PAGE: usize = 10_000;

/// The cursor of the page after `page`, or none when `page` was the last.
fn next_page(page: &[(ChunkId, u32)]) -> Option<ChunkId> {
    match page.last() {
        Some((last, _)) if page.len() == GC_PAGE => Some(*last),
        _ => None,
    }
}

/// Delete `delete` snapshots of `site` (unless dry), then its unreferenced chunks.
async fn collect_site(
    state: &State,
    site: &str,
    delete: &HashSet<String>,
    now_ms: u64,
    report: &mut PruneReport,
) -> Result<(), PruneError> {
    let gc_waits = gc_waits(state, now_ms);
    if report.dry_run {
        report.deleted_snapshots += delete.len() as u64;
        if gc_waits {
            return Ok(()); // exactly what the real run does: no chunk is collected yet
        }
        let doomed: Vec<String> = delete.iter().cloned().collect();
        let mut after = None;
        loop {
            let page = state
                .catalog
                .unreferenced_chunks(site, &doomed, after.as_ref(), GC_PAGE)
                .await?;
            for (id, len) in &page {
                if !state.hub.pinned(site, id, now_ms) {
                    report.freed_bytes += u64::from(*len);
                    report.deleted_chunks += 1;
                }
            }
            match next_page(&page) {
                Some(last) => after = Some(last),
                None => return Ok(()),
            }
        }
    }
    for snap in delete {
        if state.catalog.delete_snapshot(site, snap).await?.is_some() {
            report.deleted_snapshots += 1;
            info!(%site, snapshot = %snap, "snapshot deleted by retention");
        }
        // The record's deletion is durable before its manifest copy goes.
        state.catalog.flush().await?;
        let key = manifest_key(site, snap);
        if let Err(e) = state.store.delete(&key).await {
            warn!(%site, snapshot = %snap, error = %e, "delete manifest copy");
        }
    }
    if gc_waits {
        info!(%site, "garbage collection skipped: within the grace period after start");
        return Ok(());
    }
    // A backup of the site running anywhere (any replica) may rely on chunks it was
    // told exist: the catalog, which every replica shares, says whether one runs.
    if let Some(job) = running_backup(state, site).await? {
        info!(%site, job = %job, "garbage collection of the site waits for its running backup");
        let note = format!("garbage collection of site {site} waits for its running backup {job}");
        report.gc_note = Some(match report.gc_note.take() {
            Some(n) => format!("{n}; {note}"),
            None => note,
        });
        return Ok(());
    }
    state.hub.expire_pins(now_ms);
    // Deletions a crash interrupted (shared catalogs keep tombstones until purged).
    let pending = state.catalog.pending_deletions(site).await?;
    if !pending.is_empty() {
        info!(%site, chunks = pending.len(), "finishing deletions interrupted earlier");
        delete_blobs(state, site, &pending).await?;
    }
    collect_unreferenced(state, site, now_ms, report).await
}

/// A backup job of `site` the catalog records as running, if any.
async fn running_backup(state: &State, site: &str) -> Result<Option<String>, PruneError> {
    Ok(state
        .catalog
        .site_jobs(site)
        .await?
        .into_iter()
        .find(|j| {
            j.state == crate::catalog::JobState::Running
                && j.kind == crate::catalog::JobKind::Backup
        })
        .map(|j| j.job_id))
}

/// Delete the site's unreferenced chunks, a page at a time: never the whole site in
/// memory, and a commit between pages only keeps the chunks it references.
async fn collect_unreferenced(
    state: &State,
    site: &str,
    now_ms: u64,
    report: &mut PruneReport,
) -> Result<(), PruneError> {
    let mut after = None;
    loop {
        let page = state
            .catalog
            .unreferenced_chunks(site, &[], after.as_ref(), GC_PAGE)
            .await?;
        let ids: Vec<ChunkId> = page.iter().map(|(id, _)| *id).collect();
        // Claimed chunks cannot be pinned by an upload until they are released.
        let victims = state.hub.claim_delete(site, &ids, now_ms);
        let outcome = delete_claimed(state, site, &victims).await;
        state.hub.release_delete(site, &victims);
        let deleted: HashSet<ChunkId> = outcome?.into_iter().collect();
        report.deleted_chunks += deleted.len() as u64;
        report.freed_bytes += page
            .iter()
            .filter(|(id, _)| deleted.contains(id))
            .map(|(_, len)| u64::from(*len))
            .sum::<u64>();
        report.pinned_chunks += (ids.len() - victims.len()) as u64;
        match next_page(&page) {
            Some(last) => after = Some(last),
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: &str, day: u64) -> SnapshotRecord {
        SnapshotRecord {
            v: 1,
            site: "s".into(),
            target: "t".into(),
            snapshot_id: id.into(),
            job_id: String::new(),
            created_unix_ms: day * 86_400_000,
            committed_unix_ms: day * 86_400_000,
            logical_bytes: 1,
            stored_bytes: 1,
            new_bytes: 1,
            duration_ms: 1,
            chunks: 1,
        }
    }

    #[test]
    fn retention_spares_damaged_snapshots_it_does_not_count() {
        let snaps: Vec<_> = (1..=10).map(|d| snap(&format!("d{d:02}"), d)).collect();
        let mut standing = HashMap::new();
        for s in &snaps {
            let good = Standing {
                good: true,
                ..Default::default()
            };
            standing.insert(s.snapshot_id.clone(), good);
        }
        // Old and damaged: a policy keeping 2 would delete it.
        standing.insert(
            "d01".into(),
            Standing {
                damaged: true,
                ..Default::default()
            },
        );
        let mut policy = Policy::default();
        policy.retention.keep_daily = 2;
        policy.retention.keep_weekly = 0;
        policy.retention.keep_monthly = 0;
        policy.retention.keep_last = 0;
        policy.retention.keep_verified = 0;
        let guards = Guards {
            now_ms: 30 * 86_400_000,
            lock_ms: 0,
            held: false,
        };
        let t = plan_target(&snaps, &policy, &standing, guards);
        assert!(t.delete.contains(&"d02".to_string()), "{:?}", t.delete);
        assert!(!t.delete.contains(&"d01".to_string()), "{:?}", t.delete);
        assert!(t.spared.contains(&("d01".to_string(), "damaged")));
    }
}
