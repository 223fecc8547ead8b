//! Committing a snapshot. An agent cannot make a snapshot appear on its own say-so: a
//! commit is accepted only as the result of a backup job the controller dispatched to
//! that very agent, for that target and snapshot id, while the job still runs; the job
//! is settled in the same catalog transaction, so a job commits at most one snapshot.
//! The snapshot's time comes from the controller's clock (the agent's start time is kept
//! only within the job's dispatch and now), and every size the controller can check
//! without keys is checked. The manifest copy in the blob store is write-once.

use bytes::Bytes;
use nex_backup_shared::chunk::MAX_CHUNK_LEN;
use nex_backup_shared::chunker::SMALLEST_MIN;
use nex_backup_shared::ids::ChunkId;
use nex_backup_shared::manifest::Manifest;
use nex_backup_shared::pb;
use nex_backup_shared::seal::{HEADER_LEN, Header, ObjectKind, TAG_LEN};
use tonic::Status;
use tracing::{info, warn};

use super::agent::AgentApi;
use super::{
    bad_input, catalog_status, chunk_ids, now_ms, parse_site, parse_snapshot, parse_target,
    store_status,
};
use crate::catalog::{CatalogError, JobRecord, JobState, NewSnapshot, SnapshotRecord};
use crate::store::manifest_key;

/// Most streams one snapshot may have.
const MAX_STREAMS: u32 = 64;
/// Most distinct chunks one snapshot may reference (32 TiB at the 8 MiB chunk ceiling).
const MAX_COMMIT_CHUNKS: usize = 4_000_000;

/// What a commit request claims, checked against what the controller dispatched.
pub(super) struct Claim {
    pub snap: NewSnapshot,
    /// The job as recorded when the commit arrived.
    pub job: JobRecord,
}

impl AgentApi {
    /// Turn a commit request into a [`Claim`], refusing anything malformed or anything
    /// the controller did not dispatch to this agent.
    pub(super) async fn validate_commit(
        &self,
        who: &nex_backup_shared::identity::AgentIdentity,
        keys: &std::collections::HashSet<[u8; 8]>,
        req: pb::CommitSnapshotRequest,
    ) -> Result<Claim, Status> {
        parse_site(&req.site)?;
        super::auth::require_site(who, &req.site)?;
        parse_target(&req.target)?;
        parse_snapshot(&req.snapshot_id)?;
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
        let ids = chunk_ids(&req.chunk_ids, MAX_COMMIT_CHUNKS)?;
        check_sizes(&req, &ids)?;
        let job = self.dispatched_job(who, &req).await?;
        let now = now_ms();
        // The controller's clock decides; the agent's start time only within the job.
        let created = req.started_unix_ms.clamp(job.started_unix_ms, now);
        let duration = req.duration_ms.min(now.saturating_sub(job.started_unix_ms));
        let new_bytes = self.state.hub.upload_bytes(&req.site, &req.snapshot_id);
        let record = SnapshotRecord {
            v: 1,
            site: req.site,
            target: req.target,
            snapshot_id: req.snapshot_id,
            job_id: req.job_id,
            created_unix_ms: created,
            committed_unix_ms: now,
            logical_bytes: req.logical_bytes,
            stored_bytes: 0,
            new_bytes,
            duration_ms: duration,
            chunks: 0,
        };
        let mut settled = job.clone();
        settled.state = JobState::Succeeded;
        settled.ended_unix_ms = Some(now);
        settled.snapshot_id = Some(record.snapshot_id.clone());
        settled.logical_bytes = record.logical_bytes;
        settled.new_bytes = new_bytes;
        Ok(Claim {
            snap: NewSnapshot {
                record,
                manifest: req.manifest,
                chunk_ids: ids,
                settles: Some(settled),
            },
            job,
        })
    }

    /// The backup job this commit answers: dispatched by the controller to this agent,
    /// for this target, with this snapshot id. Its state is checked by the caller.
    async fn dispatched_job(
        &self,
        who: &nex_backup_shared::identity::AgentIdentity,
        req: &pb::CommitSnapshotRequest,
    ) -> Result<JobRecord, Status> {
        let refuse = |why: &str| {
            warn!(site = %who.site, agent = %who.agent_id, job = ?req.job_id,
                snapshot = %req.snapshot_id, reason = why, "commit refused: not a dispatched job");
            Status::permission_denied(format!(
                "commit of snapshot {} refused: {why}; a snapshot is accepted only as the result of a backup job the controller sent to this agent",
                req.snapshot_id
            ))
        };
        if req.job_id.is_empty() || req.job_id.len() > 128 {
            return Err(refuse("the commit names no valid job"));
        }
        let job = self
            .state
            .catalog
            .job(&req.job_id)
            .await
            .map_err(catalog_status)?
            .ok_or_else(|| refuse("no such job"))?;
        if job.site != who.site
            || job.agent_id != who.agent_id
            || job.kind != crate::catalog::JobKind::Backup
        {
            return Err(refuse("the job was not sent to this agent as a backup"));
        }
        if job.target != req.target {
            return Err(refuse("the job backs up another target"));
        }
        if job.expected_snapshot.as_deref() != Some(req.snapshot_id.as_str()) {
            return Err(refuse("the job was given another snapshot id"));
        }
        Ok(job)
    }

    /// Check chunks, store the manifest copy (write-once), commit to the catalog and
    /// settle the job in the same transaction. A retry of a commit that already
    /// succeeded returns the stored snapshot.
    pub(super) async fn commit(&self, claim: Claim) -> Result<SnapshotRecord, Status> {
        let state = &self.state;
        let Claim { snap, job } = claim;
        let (site, snapshot_id) = (snap.record.site.clone(), snap.record.snapshot_id.clone());
        // The catalog first: an existing snapshot is never touched again.
        if let Some(existing) = state
            .catalog
            .snapshot(&site, &snapshot_id)
            .await
            .map_err(catalog_status)?
        {
            let same_manifest = state
                .catalog
                .manifest(&site, &snapshot_id)
                .await
                .map_err(catalog_status)?
                .is_some_and(|m| m == snap.manifest);
            if same_manifest && existing.job_id == job.job_id {
                return Ok(existing);
            }
            warn!(job = %job.job_id, "commit refused: snapshot exists with other content");
            return Err(catalog_status(CatalogError::Conflict {
                snapshot: snapshot_id,
            }));
        }
        if job.state != JobState::Running {
            let e = CatalogError::JobNotRunning { job: job.job_id };
            warn!(error = %e, "commit refused");
            return Err(catalog_status(e));
        }
        self.check_stored(&snap).await?;
        self.state.reserve.check(&*state.store).await?;
        let key = manifest_key(&site, &snapshot_id);
        let blob = Bytes::from(snap.manifest.clone());
        if !state.store.put(&key, blob).await.map_err(store_status)? {
            // Left by an earlier attempt whose catalog step failed: only the very same
            // bytes may be committed under it.
            let held = state.store.get(&key).await.map_err(store_status)?;
            if held.as_deref() != Some(&snap.manifest[..]) {
                warn!(job = %job.job_id, "commit refused: a different manifest copy is stored");
                return Err(catalog_status(CatalogError::Conflict {
                    snapshot: snapshot_id,
                }));
            }
        }
        let settles = snap.settles.clone();
        let rec = state.catalog.commit_snapshot(snap).await.map_err(|e| {
            warn!(error = %e, "commit refused");
            catalog_status(e)
        })?;
        super::durable(state).await?;
        state.hub.clear_upload_bytes(&site, &snapshot_id);
        crate::anomaly::check_commit(state, &rec).await;
        info!(
            stored = rec.stored_bytes,
            new = rec.new_bytes,
            chunks = rec.chunks,
            logical = rec.logical_bytes,
            "snapshot committed"
        );
        state
            .events
            .publish(crate::events::Event::SnapshotCommitted {
                site: rec.site.clone(),
                target: rec.target.clone(),
                snapshot_id: rec.snapshot_id.clone(),
                logical_bytes: rec.logical_bytes,
                new_bytes: rec.new_bytes,
                duration_ms: rec.duration_ms,
            });
        if let Some(job) = &settles {
            state.job_finished(job);
        }
        Ok(rec)
    }

    /// Every chunk is stored for the site, and the stored sizes fit the logical size:
    /// each distinct chunk appears at least once in the streams, so the sealed sizes can
    /// exceed the logical bytes only by the per-chunk framing and zstd's worst case.
    async fn check_stored(&self, snap: &NewSnapshot) -> Result<(), Status> {
        let r = &snap.record;
        let (mut stored, mut missing) = (0u64, Vec::<ChunkId>::new());
        for id in &snap.chunk_ids {
            match self
                .state
                .catalog
                .chunk_len(&r.site, id)
                .await
                .map_err(catalog_status)?
            {
                Some(len) => stored += u64::from(len),
                None => missing.push(*id),
            }
        }
        if let Some(first) = missing.first() {
            let e = CatalogError::MissingChunks {
                snapshot: r.snapshot_id.clone(),
                missing: missing.len(),
                first: first.short(),
            };
            warn!(error = %e, "commit refused");
            return Err(catalog_status(e));
        }
        let framing = (HEADER_LEN + TAG_LEN + 64) as u64;
        let ceiling =
            r.logical_bytes + r.logical_bytes / 128 + snap.chunk_ids.len() as u64 * framing;
        if stored > ceiling {
            warn!(
                stored,
                logical = r.logical_bytes,
                "commit refused: sizes do not fit"
            );
            return Err(Status::invalid_argument(format!(
                "snapshot {}: its chunks hold {stored} sealed bytes, more than {} logical bytes can produce",
                r.snapshot_id, r.logical_bytes
            )));
        }
        Ok(())
    }
}

/// Sizes a commit states, checked against each other without keys.
fn check_sizes(req: &pb::CommitSnapshotRequest, ids: &[ChunkId]) -> Result<(), Status> {
    let bad =
        |why: String| Status::invalid_argument(format!("snapshot {}: {why}", req.snapshot_id));
    if ids.is_empty() {
        return Err(bad("a snapshot must reference at least one chunk".into()));
    }
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(bad("chunk ids must be distinct".into()));
    }
    if req.streams == 0 || req.streams > MAX_STREAMS {
        return Err(bad(format!(
            "{} streams; a snapshot has 1 to {MAX_STREAMS}",
            req.streams
        )));
    }
    let (refs, logical) = (req.chunk_refs, req.logical_bytes);
    if refs < ids.len() as u64 {
        return Err(bad(format!(
            "{refs} chunk references cannot cover {} distinct chunks",
            ids.len()
        )));
    }
    let most = refs.saturating_mul(MAX_CHUNK_LEN as u64);
    let least = refs.saturating_sub(u64::from(req.streams)) * u64::from(SMALLEST_MIN);
    if logical == 0 || logical > most || logical < least {
        return Err(bad(format!(
            "{logical} logical bytes do not fit {refs} chunk references in {} streams",
            req.streams
        )));
    }
    Ok(())
}
