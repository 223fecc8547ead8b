//! The orphan sweeper: objects in the blob store that no catalog record references,
//! such as a chunk left by a crash between its PUT and its record, or a manifest copy
//! whose deletion failed after its snapshot was pruned.
//!
//! Safety, because the sweeper deletes from the store:
//! - only objects older than the GC grace are looked at (an upload in flight is younger);
//! - a chunk is deleted only under a deletion claim ([`crate::hub::Hub::claim_delete`]):
//!   an upload of the same chunk cannot start relying on it meanwhile, and a chunk
//!   pinned by a recent FindMissing or upload is left alone;
//! - only sites the catalog holds snapshots of are swept, and a batch where nearly every
//!   old object looks orphaned stops the site's sweep: that is a catalog that does not
//!   belong to this store (a wrong `--data-dir` against a shared bucket), not garbage;
//! - sealed key copies (`keys/`) and the controller's state copies are never touched.

use futures::StreamExt;
use nex_backup_shared::ids::ChunkId;
use serde::Serialize;
use tracing::{info, warn};

use crate::catalog::CatalogError;
use crate::state::State;
use crate::store::{BlobMeta, StoreError, chunk_key};

/// Objects looked at per catalog query.
const BATCH: usize = 1000;
/// A batch with at least this many old objects, nearly all orphaned, stops the sweep.
const SUSPICIOUS_MIN: usize = 200;

/// What a sweep of one site found and did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SweepReport {
    /// Old enough objects looked at.
    pub examined: u64,
    /// Orphans deleted (dry run: that would be deleted).
    pub deleted: u64,
    pub deleted_bytes: u64,
    /// Why the site's sweep stopped early, if it did.
    pub refused: Option<String>,
}

/// Sweep failures, naming the site.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("sweep site {site}: {source}")]
    Catalog {
        site: String,
        #[source]
        source: CatalogError,
    },
    #[error("sweep site {site}: {source}")]
    Store {
        site: String,
        #[source]
        source: StoreError,
    },
}

/// Sweep `site`'s chunks and manifests (see module docs). A dry run only counts.
pub async fn sweep_site(
    state: &State,
    site: &str,
    now_ms: u64,
    dry_run: bool,
) -> Result<SweepReport, SweepError> {
    let cat = |source| SweepError::Catalog {
        site: site.into(),
        source,
    };
    let mut report = SweepReport::default();
    if state
        .catalog
        .snapshots(Some(site), None)
        .await
        .map_err(cat)?
        .is_empty()
    {
        return Ok(report); // nothing proves this catalog knows the site's objects
    }
    let old_before = now_ms.saturating_sub(state.gc_grace_ms);
    let sweep = Sweep {
        state,
        site,
        now_ms,
        dry_run,
    };
    let prefix = format!("chunks/{site}/");
    let mut listing = state
        .store
        .list(&prefix)
        .filter(|m| {
            let old = m.as_ref().map_or(true, |m| {
                m.modified_unix_ms > 0 && m.modified_unix_ms < old_before
            });
            futures::future::ready(old)
        })
        .chunks(BATCH);
    while let Some(batch) = listing.next().await {
        let batch = batch
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SweepError::Store {
                site: site.into(),
                source: e,
            })?;
        if !sweep.chunks(&batch, &mut report).await? {
            break;
        }
    }
    if report.refused.is_none() {
        sweep.manifests(old_before, &mut report).await?;
    }
    if report.deleted > 0 && !dry_run {
        info!(%site, orphans = report.deleted, bytes = report.deleted_bytes, "orphaned objects swept");
    }
    Ok(report)
}

struct Sweep<'a> {
    state: &'a State,
    site: &'a str,
    now_ms: u64,
    dry_run: bool,
}

impl Sweep<'_> {
    fn store_err(&self, source: StoreError) -> SweepError {
        SweepError::Store {
            site: self.site.into(),
            source,
        }
    }

    /// One batch of old chunk objects. False when the sweep must stop.
    async fn chunks(
        &self,
        batch: &[BlobMeta],
        report: &mut SweepReport,
    ) -> Result<bool, SweepError> {
        let mut sizes = std::collections::HashMap::new();
        for m in batch {
            let hex = m.key.rsplit('/').next().unwrap_or_default();
            match ChunkId::from_hex(hex) {
                Ok(id) if chunk_key(self.site, &id) == m.key => {
                    sizes.insert(id, m.size);
                }
                _ => warn!(site = %self.site, key = %m.key, "not a chunk key; left alone"),
            }
        }
        report.examined += batch.len() as u64;
        let ids: Vec<ChunkId> = sizes.keys().copied().collect();
        let orphans = self
            .state
            .catalog
            .missing_chunks(self.site, &ids)
            .await
            .map_err(|source| SweepError::Catalog {
                site: self.site.into(),
                source,
            })?;
        if batch.len() >= SUSPICIOUS_MIN && orphans.len() * 10 >= batch.len() * 9 {
            let why = format!(
                "{} of {} old chunk objects have no catalog record: this catalog does not look like the one that wrote this store, so nothing was swept; check --data-dir and --store",
                orphans.len(),
                batch.len()
            );
            warn!(site = %self.site, "{why}");
            report.refused = Some(why);
            return Ok(false);
        }
        if self.dry_run {
            report.deleted += orphans.len() as u64;
            report.deleted_bytes += orphans.iter().map(|id| sizes[id]).sum::<u64>();
            return Ok(true);
        }
        let claimed = self
            .state
            .hub
            .claim_delete(self.site, &orphans, self.now_ms);
        let outcome = self.delete_claimed(&claimed, &sizes, report).await;
        self.state.hub.release_delete(self.site, &claimed);
        outcome.map(|()| true)
    }

    async fn delete_claimed(
        &self,
        claimed: &[ChunkId],
        sizes: &std::collections::HashMap<ChunkId, u64>,
        report: &mut SweepReport,
    ) -> Result<(), SweepError> {
        // Claimed, so no upload can record one of them now: check once more that none
        // was recorded between the query and the claim.
        let still = self
            .state
            .catalog
            .missing_chunks(self.site, claimed)
            .await
            .map_err(|source| SweepError::Catalog {
                site: self.site.into(),
                source,
            })?;
        // Tombstoned in a shared catalog, so no other replica records one meanwhile.
        let cat = |source| SweepError::Catalog {
            site: self.site.into(),
            source,
        };
        let doomed = self
            .state
            .catalog
            .claim_orphans(self.site, &still)
            .await
            .map_err(cat)?;
        for id in &doomed {
            self.state
                .store
                .delete(&chunk_key(self.site, id))
                .await
                .map_err(|e| self.store_err(e))?;
            report.deleted += 1;
            report.deleted_bytes += sizes[id];
        }
        self.state
            .catalog
            .purge_chunks(self.site, &doomed)
            .await
            .map_err(cat)
    }

    /// Manifest copies of snapshots the catalog no longer (or never) held.
    async fn manifests(&self, old_before: u64, report: &mut SweepReport) -> Result<(), SweepError> {
        let prefix = format!("manifests/{}/", self.site);
        let mut listing = self.state.store.list(&prefix);
        while let Some(m) = listing.next().await {
            let m = m.map_err(|e| self.store_err(e))?;
            if m.modified_unix_ms == 0 || m.modified_unix_ms >= old_before {
                continue;
            }
            report.examined += 1;
            let snap = m.key.rsplit('/').next().unwrap_or_default();
            let known = self
                .state
                .catalog
                .snapshot(self.site, snap)
                .await
                .map_err(|source| SweepError::Catalog {
                    site: self.site.into(),
                    source,
                })?;
            if known.is_some() {
                continue;
            }
            if !self.dry_run {
                self.state
                    .store
                    .delete(&m.key)
                    .await
                    .map_err(|e| self.store_err(e))?;
            }
            report.deleted += 1;
            report.deleted_bytes += m.size;
        }
        Ok(())
    }
}
