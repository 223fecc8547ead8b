//! Committing a snapshot: validate the request once, check every chunk, write the
//! self-describing manifest copy, then make the snapshot visible atomically.

use bytes::Bytes;
use nex_backup_shared::manifest::Manifest;
use nex_backup_shared::pb;
use nex_backup_shared::seal::{Header, ObjectKind};
use tonic::Status;
use tracing::{info, warn};

use super::agent::AgentApi;
use super::{
    bad_input, catalog_status, check_site, check_snapshot, check_target, chunk_ids, now_ms,
    store_status,
};
use crate::catalog::{CatalogError, NewSnapshot, SnapshotRecord};
use crate::store::manifest_key;

impl AgentApi {
    /// Turn a commit request into a [`NewSnapshot`], refusing anything malformed.
    pub(super) fn validate_commit(
        &self,
        who: &nex_backup_shared::identity::AgentIdentity,
        keys: &std::collections::HashSet<[u8; 8]>,
        req: pb::CommitSnapshotRequest,
    ) -> Result<NewSnapshot, Status> {
        check_site(&req.site)?;
        crate::auth::require_site(who, &req.site)?;
        check_target(&req.target)?;
        check_snapshot(&req.snapshot_id)?;
        let what = format!("manifest of snapshot {}", req.snapshot_id);
        let h = Header::parse(&req.manifest, &what).map_err(bad_input)?;
        if h.kind != ObjectKind::Manifest as u8
            || h.object_id != Manifest::object_id(&req.site, &req.snapshot_id)
        {
            return Err(Status::invalid_argument(format!(
                "{what}: header does not name this snapshot"
            )));
        }
        super::keys::check_key_id(keys, who, &what, h.key_id)?;
        let chunk_ids = chunk_ids(&req.chunk_ids, usize::MAX)?;
        let new_bytes = self.state.hub.upload_bytes(&req.site, &req.snapshot_id);
        Ok(NewSnapshot {
            record: SnapshotRecord {
                v: 1,
                site: req.site,
                target: req.target,
                snapshot_id: req.snapshot_id,
                job_id: req.job_id,
                created_unix_ms: req.started_unix_ms,
                committed_unix_ms: now_ms(),
                logical_bytes: req.logical_bytes,
                stored_bytes: 0,
                new_bytes,
                duration_ms: req.duration_ms,
                chunks: 0,
            },
            manifest: req.manifest,
            chunk_ids,
        })
    }

    /// Check chunks, store the manifest copy, commit to the catalog.
    pub(super) async fn commit(&self, snap: NewSnapshot) -> Result<SnapshotRecord, Status> {
        let state = &self.state;
        let (site, snapshot_id) = (snap.record.site.clone(), snap.record.snapshot_id.clone());
        // Chunks first, so that a refused commit leaves nothing in the store either.
        let missing = state
            .catalog
            .missing_chunks(&site, &snap.chunk_ids)
            .await
            .map_err(catalog_status)?;
        if let Some(first) = missing.first() {
            let e = CatalogError::MissingChunks {
                snapshot: snapshot_id,
                missing: missing.len(),
                first: first.short(),
            };
            warn!(error = %e, "commit refused");
            return Err(catalog_status(e));
        }
        // The store copy before the catalog: a crash between them leaves a complete but
        // unlisted manifest, never a catalog entry without its self-describing copy.
        let blob = Bytes::from(snap.manifest.clone());
        state
            .store
            .put(&manifest_key(&site, &snapshot_id), blob)
            .await
            .map_err(store_status)?;
        let rec = state.catalog.commit_snapshot(snap).await.map_err(|e| {
            warn!(error = %e, "commit refused");
            catalog_status(e)
        })?;
        super::durable(state).await?;
        state.hub.clear_upload_bytes(&site, &snapshot_id);
        info!(
            stored = rec.stored_bytes,
            new = rec.new_bytes,
            chunks = rec.chunks,
            "snapshot committed"
        );
        Ok(rec)
    }
}
