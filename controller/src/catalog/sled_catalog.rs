//! The embedded catalog on sled. Key layout (all trees keyed by `site \0 ...`):
//!
//! | tree | key | value |
//! |---|---|---|
//! | `chunks` | site, 0, id(32) | `[2, stored_len u32 le, sha256(32) of the blob]` (v1: `[1, len]`) |
//! | `snapshots` | site, 0, target, 0, snapshot id | JSON [`SnapshotRecord`] |
//! | `snapshot_target` | site, 0, snapshot id | target |
//! | `manifests` | site, 0, snapshot id | sealed manifest |
//! | `snapshot_chunks` | site, 0, snapshot id | concatenated distinct chunk ids |
//! | `agents` | site, 0, agent id | JSON [`AgentRecord`] |
//! | `jobs` | job id | JSON [`JobRecord`] |
//! | `job_index` | see [`super::sled_jobs`] | empty |
//! | `audit`, `holds` | see [`super::sled_safety`] | JSON |
//!
//! Trust records live in further trees, see [`super::sled_trust`].

use std::path::Path;

use async_trait::async_trait;
use nex_backup_shared::ids::ChunkId;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::safety::{AuditEntry, HoldRecord};
use super::sled_codec::{decode, encode, key, sled_err, storage};
use super::sled_trust::TrustTrees;
use super::{
    AgentRecord, Catalog, CatalogError, IdentityRecord, JobRecord, NewSnapshot, PolicyRecord,
    Result, ScheduleRecord, SealedKeyRecord, SitePolicyRecord, SnapshotRecord, TokenRecord,
    TokenUse,
};

const CHUNK_RECORD_V2: u8 = 2;

/// A chunk record's stored length and blob checksum (v1 records have none).
pub(super) fn chunk_value(v: &[u8]) -> Option<(u32, Option<[u8; 32]>)> {
    let len = u32::from_le_bytes(v.get(1..5)?.try_into().ok()?);
    match (v[0], v.len()) {
        (1, 5) => Some((len, None)),
        (2, 37) => Some((len, Some(v[5..37].try_into().ok()?))),
        _ => None,
    }
}

/// Why a commit transaction gave up.
enum CommitAbort {
    Chunk(ChunkId),
    Job,
}

/// sled-backed [`Catalog`].
pub struct SledCatalog {
    pub(super) db: sled::Db,
    pub(super) chunks: sled::Tree,
    pub(super) snapshots: sled::Tree,
    pub(super) snapshot_target: sled::Tree,
    pub(super) manifests: sled::Tree,
    pub(super) snapshot_chunks: sled::Tree,
    agents: sled::Tree,
    pub(super) jobs: sled::Tree,
    pub(super) job_index: sled::Tree,
    /// `commit_seq/<site>`: bumped by every commit, read by garbage collection.
    pub(super) meta: sled::Tree,
    pub(super) policies: sled::Tree,
    pub(super) site_policies: sled::Tree,
    pub(super) schedules: sled::Tree,
    pub(super) rpo_events: sled::Tree,
    pub(super) audit: sled::Tree,
    pub(super) holds: sled::Tree,
    trust: TrustTrees,
}

impl SledCatalog {
    /// The alerting records, in the same database.
    pub fn alerts(&self) -> Result<super::sled_alerts::SledAlerts> {
        super::sled_alerts::SledAlerts::open(&self.db)
    }

    /// Open (or create) the catalog in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(256 * 1024 * 1024)
            .open()
            .map_err(|e| CatalogError::Storage(format!("open {}: {e}", dir.display())))?;
        let t = |name: &str| db.open_tree(name).map_err(storage);
        let catalog = SledCatalog {
            chunks: t("chunks")?,
            snapshots: t("snapshots")?,
            snapshot_target: t("snapshot_target")?,
            manifests: t("manifests")?,
            snapshot_chunks: t("snapshot_chunks")?,
            agents: t("agents")?,
            jobs: t("jobs")?,
            job_index: t("job_index")?,
            meta: t("meta")?,
            policies: t("policies")?,
            site_policies: t("site_policies")?,
            schedules: t("schedules")?,
            rpo_events: t("rpo_events")?,
            audit: t("audit")?,
            holds: t("holds")?,
            trust: TrustTrees::open(&db)?,
            db,
        };
        catalog.ensure_job_index()?;
        Ok(catalog)
    }

    /// Approximate bytes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    pub(super) fn chunk_key(site: &str, id: &ChunkId) -> Vec<u8> {
        key(&[site.as_bytes(), id.as_bytes()])
    }

    fn scan<T: serde::de::DeserializeOwned>(tree: &sled::Tree, prefix: &[u8]) -> Result<Vec<T>> {
        tree.scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv.map_err(storage)?;
                decode(&k, &v)
            })
            .collect()
    }

    fn check_chunks(&self, snap: &NewSnapshot) -> Result<(Vec<ChunkId>, u64)> {
        let site = &snap.record.site;
        let mut distinct = snap.chunk_ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let mut stored = 0u64;
        let mut missing = vec![];
        for id in &distinct {
            match self
                .chunks
                .get(Self::chunk_key(site, id))
                .map_err(storage)?
            {
                Some(v) if chunk_value(&v).is_some() => {
                    stored += u64::from(chunk_value(&v).map_or(0, |(len, _)| len))
                }
                _ => missing.push(*id),
            }
        }
        if let Some(first) = missing.first() {
            return Err(CatalogError::MissingChunks {
                snapshot: snap.record.snapshot_id.clone(),
                missing: missing.len(),
                first: first.short(),
            });
        }
        Ok((distinct, stored))
    }
}

#[async_trait]
impl Catalog for SledCatalog {
    async fn missing_chunks(&self, site: &str, ids: &[ChunkId]) -> Result<Vec<ChunkId>> {
        // Look up in key order: neighbouring lookups then share tree pages.
        let mut sorted: Vec<&ChunkId> = ids.iter().collect();
        sorted.sort_unstable();
        let mut missing = std::collections::HashSet::new();
        for id in sorted {
            if !self
                .chunks
                .contains_key(Self::chunk_key(site, id))
                .map_err(storage)?
            {
                missing.insert(*id);
            }
        }
        Ok(ids
            .iter()
            .filter(|id| missing.contains(*id))
            .copied()
            .collect())
    }

    async fn record_chunk(
        &self,
        site: &str,
        id: &ChunkId,
        stored_len: u32,
        sha256: &[u8; 32],
    ) -> Result<bool> {
        let mut v = vec![CHUNK_RECORD_V2];
        v.extend_from_slice(&stored_len.to_le_bytes());
        v.extend_from_slice(sha256);
        let prev = self
            .chunks
            .compare_and_swap(Self::chunk_key(site, id), None as Option<&[u8]>, Some(v))
            .map_err(storage)?;
        Ok(prev.is_ok())
    }

    async fn chunk_len(&self, site: &str, id: &ChunkId) -> Result<Option<u32>> {
        Ok(self
            .chunks
            .get(Self::chunk_key(site, id))
            .map_err(storage)?
            .and_then(|v| chunk_value(&v))
            .map(|(len, _)| len))
    }

    async fn commit_snapshot(&self, snap: NewSnapshot) -> Result<SnapshotRecord> {
        let r = &snap.record;
        if let Some(existing) = self.snapshot(&r.site, &r.snapshot_id).await? {
            let same = existing.target == r.target
                && self.manifest(&r.site, &r.snapshot_id).await?.as_deref()
                    == Some(&snap.manifest[..]);
            return if same {
                Ok(existing)
            } else {
                Err(CatalogError::Conflict {
                    snapshot: r.snapshot_id.clone(),
                })
            };
        }
        let (distinct, stored) = self.check_chunks(&snap)?;
        let mut record = r.clone();
        record.stored_bytes = stored;
        record.chunks = distinct.len() as u64;
        let id_key = key(&[r.site.as_bytes(), r.snapshot_id.as_bytes()]);
        let snap_key = key(&[
            r.site.as_bytes(),
            r.target.as_bytes(),
            r.snapshot_id.as_bytes(),
        ]);
        let ids: Vec<u8> = distinct.iter().flat_map(|i| i.0).collect();
        let value = encode(&record);
        let seq_key = super::sled_codec::seq_key(&r.site);
        if let Some(j) = &snap.settles {
            self.index_job(j)?;
        }
        let settle = snap.settles.as_ref().map(|j| (j.job_id.clone(), encode(j)));
        let trees = (
            &self.snapshots,
            &self.snapshot_target,
            &self.manifests,
            &self.snapshot_chunks,
            &self.chunks,
            &self.meta,
            &self.jobs,
        );
        trees
            .transaction(|(snaps, targets, manifests, refs, chunks, meta, jobs)| {
                // Re-checked inside the transaction: garbage collection deletes chunks in
                // transactions too, so a commit can never reference a deleted chunk.
                for id in &distinct {
                    if chunks.get(Self::chunk_key(&r.site, id))?.is_none() {
                        return Err(ConflictableTransactionError::Abort(CommitAbort::Chunk(*id)));
                    }
                }
                if let Some((job_id, settled)) = &settle {
                    let running = jobs.get(job_id.as_bytes())?.is_some_and(|v| {
                        decode::<JobRecord>(job_id.as_bytes(), &v)
                            .is_ok_and(|j| j.state == super::JobState::Running)
                    });
                    if !running {
                        return Err(ConflictableTransactionError::Abort(CommitAbort::Job));
                    }
                    jobs.insert(job_id.as_bytes(), settled.as_slice())?;
                }
                snaps.insert(snap_key.as_slice(), value.as_slice())?;
                targets.insert(id_key.as_slice(), r.target.as_bytes())?;
                manifests.insert(id_key.as_slice(), snap.manifest.as_slice())?;
                refs.insert(id_key.as_slice(), ids.as_slice())?;
                super::sled_codec::bump_seq(meta, &seq_key)?;
                Ok(())
            })
            .map_err(|e: TransactionError<CommitAbort>| match e {
                TransactionError::Abort(CommitAbort::Chunk(id)) => CatalogError::MissingChunks {
                    snapshot: r.snapshot_id.clone(),
                    missing: 1,
                    first: id.short(),
                },
                TransactionError::Abort(CommitAbort::Job) => CatalogError::JobNotRunning {
                    job: r.job_id.clone(),
                },
                TransactionError::Storage(e) => {
                    storage(format!("commit snapshot {}: {e}", r.snapshot_id))
                }
            })?;
        self.db.flush_async().await.map_err(sled_err)?;
        Ok(record)
    }

    async fn snapshots(
        &self,
        site: Option<&str>,
        target: Option<&str>,
    ) -> Result<Vec<SnapshotRecord>> {
        let prefix = match (site, target) {
            (Some(s), Some(t)) => key(&[s.as_bytes(), t.as_bytes(), b""]),
            (Some(s), None) => key(&[s.as_bytes(), b""]),
            _ => vec![],
        };
        let mut all: Vec<SnapshotRecord> = Self::scan(&self.snapshots, &prefix)?;
        if let (None, Some(t)) = (site, target) {
            all.retain(|r| r.target == t);
        }
        all.sort_by(|a, b| {
            (a.created_unix_ms, &a.snapshot_id).cmp(&(b.created_unix_ms, &b.snapshot_id))
        });
        Ok(all)
    }

    async fn snapshot(&self, site: &str, snapshot_id: &str) -> Result<Option<SnapshotRecord>> {
        let Some(target) = self
            .snapshot_target
            .get(key(&[site.as_bytes(), snapshot_id.as_bytes()]))
            .map_err(storage)?
        else {
            return Ok(None);
        };
        let k = key(&[site.as_bytes(), &target, snapshot_id.as_bytes()]);
        self.snapshots
            .get(&k)
            .map_err(storage)?
            .map(|v| decode(&k, &v))
            .transpose()
    }

    async fn manifest(&self, site: &str, snapshot_id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .manifests
            .get(key(&[site.as_bytes(), snapshot_id.as_bytes()]))
            .map_err(storage)?
            .map(|v| v.to_vec()))
    }

    async fn put_agent(&self, agent: &AgentRecord) -> Result<()> {
        let k = key(&[agent.site.as_bytes(), agent.agent_id.as_bytes()]);
        self.agents.insert(k, encode(agent)).map_err(storage)?;
        Ok(())
    }

    async fn agents(&self) -> Result<Vec<AgentRecord>> {
        Self::scan(&self.agents, b"")
    }

    async fn put_job(&self, job: &JobRecord) -> Result<()> {
        self.put_job_sync(job)
    }

    async fn update_job(&self, expected: &JobRecord, new: &JobRecord) -> Result<bool> {
        let k = expected.job_id.as_bytes();
        self.index_job(new)?;
        loop {
            let Some(old) = self.jobs.get(k).map_err(storage)? else {
                return Ok(false);
            };
            if decode::<JobRecord>(k, &old)? != *expected {
                return Ok(false);
            }
            let swapped = self
                .jobs
                .compare_and_swap(k, Some(old), Some(encode(new)))
                .map_err(storage)?;
            if swapped.is_ok() {
                self.db.flush_async().await.map_err(sled_err)?;
                return Ok(true);
            }
        }
    }

    async fn job(&self, job_id: &str) -> Result<Option<JobRecord>> {
        self.jobs
            .get(job_id.as_bytes())
            .map_err(storage)?
            .map(|v| decode(job_id.as_bytes(), &v))
            .transpose()
    }

    async fn forget_history(&self, before_ms: u64) -> Result<super::history::Forgotten> {
        self.forget_history_sync(before_ms)
    }

    async fn jobs(&self) -> Result<Vec<JobRecord>> {
        Self::scan(&self.jobs, b"")
    }

    async fn jobs_page(
        &self,
        filter: &super::history::JobFilter,
        before: Option<&super::history::Cursor>,
        limit: usize,
    ) -> Result<Vec<JobRecord>> {
        self.jobs_page_sync(filter, before, limit)
    }

    async fn site_jobs(&self, site: &str) -> Result<Vec<JobRecord>> {
        self.site_jobs_sync(site)
    }

    async fn put_admin(&self, a: &super::trust::AdminRecord) -> Result<()> {
        self.trust.put_admin(a)
    }

    async fn admins(&self) -> Result<Vec<super::trust::AdminRecord>> {
        self.trust.admins()
    }

    async fn put_account(&self, a: &super::trust::AccountRecord) -> Result<()> {
        self.trust.put_account(a)?;
        self.db.flush_async().await.map_err(sled_err)?;
        Ok(())
    }

    async fn account(&self, name: &str) -> Result<Option<super::trust::AccountRecord>> {
        self.trust.account(name)
    }

    async fn accounts(&self) -> Result<Vec<super::trust::AccountRecord>> {
        self.trust.accounts()
    }

    async fn put_token(&self, token: &TokenRecord) -> Result<()> {
        self.trust.put_token(token)
    }

    async fn consume_token(&self, hash: &str, now_ms: u64, agent_id: &str) -> Result<TokenUse> {
        self.trust.consume_token(hash, now_ms, agent_id)
    }

    async fn put_identity(&self, rec: &IdentityRecord) -> Result<()> {
        self.trust.put_identity(rec)
    }

    async fn identity(&self, site: &str, agent_id: &str) -> Result<Option<IdentityRecord>> {
        self.trust.identity(site, agent_id)
    }

    async fn identities(&self) -> Result<Vec<IdentityRecord>> {
        self.trust.identities()
    }

    async fn renew_identity(
        &self,
        site: &str,
        agent_id: &str,
        old_serial: &str,
        new_serial: &str,
        new_key_sha256: &str,
        not_after_unix: i64,
    ) -> Result<Option<IdentityRecord>> {
        self.trust.renew_identity(
            site,
            agent_id,
            old_serial,
            (new_serial, new_key_sha256),
            not_after_unix,
        )
    }

    async fn revoke_identity(
        &self,
        site: &str,
        agent_id: &str,
        now_ms: u64,
    ) -> Result<Option<IdentityRecord>> {
        self.trust.revoke_identity(site, agent_id, now_ms)
    }

    async fn put_sealed_key(&self, rec: &SealedKeyRecord) -> Result<bool> {
        self.trust.put_sealed_key(rec)
    }

    async fn sealed_keys(&self, site: &str) -> Result<Vec<SealedKeyRecord>> {
        self.trust.sealed_keys(site)
    }

    async fn delete_snapshot(
        &self,
        site: &str,
        snapshot_id: &str,
    ) -> Result<Option<SnapshotRecord>> {
        self.delete_snapshot_sync(site, snapshot_id)
    }

    async fn unreferenced_chunks(
        &self,
        site: &str,
        except: &[String],
        after: Option<&ChunkId>,
        limit: usize,
    ) -> Result<Vec<(ChunkId, u32)>> {
        self.unreferenced_chunks_sync(site, except, after, limit)
    }

    async fn delete_unreferenced(&self, site: &str, ids: &[ChunkId]) -> Result<Vec<ChunkId>> {
        self.delete_unreferenced_sync(site, ids)
    }

    async fn claim_orphans(&self, _site: &str, ids: &[ChunkId]) -> Result<Vec<ChunkId>> {
        Ok(ids.to_vec()) // one controller: its in-memory claims suffice
    }

    async fn purge_chunks(&self, _site: &str, _ids: &[ChunkId]) -> Result<()> {
        Ok(()) // records are deleted at once, no tombstones
    }

    async fn pending_deletions(&self, _site: &str) -> Result<Vec<ChunkId>> {
        Ok(vec![])
    }

    async fn put_policy(&self, rec: &PolicyRecord) -> Result<()> {
        self.put_policy_sync(rec)
    }

    async fn delete_policy(&self, site: &str, target: Option<&str>) -> Result<bool> {
        self.delete_policy_sync(site, target)
    }

    async fn policies(&self) -> Result<Vec<PolicyRecord>> {
        self.policies_sync()
    }

    async fn put_site_policy(&self, rec: &SitePolicyRecord) -> Result<()> {
        self.put_site_policy_sync(rec)
    }

    async fn site_policies(&self) -> Result<Vec<SitePolicyRecord>> {
        self.site_policies_sync()
    }

    async fn put_schedule(&self, rec: &ScheduleRecord) -> Result<()> {
        self.put_schedule_sync(rec)
    }

    async fn claim_schedule(
        &self,
        expected: Option<&ScheduleRecord>,
        new: &ScheduleRecord,
    ) -> Result<bool> {
        self.claim_schedule_sync(expected, new)
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRecord>> {
        self.schedules_sync()
    }

    async fn put_rpo_event(&self, ev: &crate::rpo::RpoEvent) -> Result<()> {
        self.put_rpo_event_sync(ev)
    }

    async fn rpo_events(&self, site: Option<&str>) -> Result<Vec<crate::rpo::RpoEvent>> {
        self.rpo_events_sync(site)
    }

    async fn put_audit(&self, e: &AuditEntry) -> Result<()> {
        self.put_audit_sync(e)
    }

    async fn audit(
        &self,
        site: Option<&str>,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        self.audit_sync(site, since_ms, limit)
    }

    async fn put_hold(&self, h: &HoldRecord) -> Result<()> {
        self.put_hold_sync(h)
    }

    async fn holds(&self) -> Result<Vec<HoldRecord>> {
        self.holds_sync()
    }

    async fn delete_hold(&self, site: &str, target: &str) -> Result<Option<HoldRecord>> {
        self.delete_hold_sync(site, target)
    }

    async fn chunk_totals(&self) -> Result<(u64, u64)> {
        let (mut n, mut bytes) = (0u64, 0u64);
        for kv in self.chunks.iter() {
            let (_, v) = kv.map_err(storage)?;
            if let Some(len) = v.get(1..5).and_then(|b| b.try_into().ok()) {
                n += 1;
                bytes += u32::from_le_bytes(len) as u64;
            }
        }
        Ok((n, bytes))
    }

    async fn flush(&self) -> Result<()> {
        self.db.flush_async().await.map_err(sled_err)?;
        Ok(())
    }
}

#[cfg(test)]
impl SledCatalog {
    /// Open `dir` again in the same process after dropping a catalog there: sled lets go
    /// of its file lock only when its background threads have stopped, a moment after the
    /// last handle is dropped (a new process, as in a restart, never waits).
    pub(crate) async fn reopen_when_released(dir: &Path) -> SledCatalog {
        for _ in 0..200 {
            match SledCatalog::open(dir) {
                Ok(c) => return c,
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
                Err(e) => panic!("reopen {}: {e}", dir.display()),
            }
        }
        panic!(
            "{}: the previous catalog never released its lock",
            dir.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sled_catalog_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let cat = SledCatalog::open(dir.path()).unwrap();
        super::super::conformance::run_all(&cat).await;
    }

    #[tokio::test]
    async fn sled_areas_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let cat = SledCatalog::open(dir.path()).unwrap();
        let (alerts, ints) = (cat.alerts().unwrap(), cat.integrity().unwrap());
        super::super::conformance_areas::run_all(&cat, &alerts, &ints).await;
    }

    #[tokio::test]
    async fn committed_snapshot_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let snap = super::super::conformance::sample_snapshot("s1", "db", 1);
        {
            let cat = SledCatalog::open(dir.path()).unwrap();
            for id in &snap.chunk_ids {
                cat.record_chunk("s1", id, 10, &[7; 32]).await.unwrap();
            }
            cat.commit_snapshot(snap.clone()).await.unwrap();
        }
        let cat = SledCatalog::reopen_when_released(dir.path()).await;
        let got = cat
            .snapshot("s1", &snap.record.snapshot_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.snapshot_id, snap.record.snapshot_id);
    }
}
