//! The catalog: what the controller knows about sites, agents, chunks, snapshots and jobs.
//!
//! One small async trait, [`Catalog`], with the embedded [`sled_catalog::SledCatalog`] as
//! the default backend. Every backend must pass [`conformance::run_all`].
//! Records are versioned (`v` field) JSON so they can evolve on disk. [`history`] holds
//! the job filters and pages and the rule history retention follows; the `conformance*`
//! modules are the suites every backend runs (chunks and commits, trust, GC, races,
//! history, alert and integrity areas).

pub mod alerts;
pub mod conformance;
pub mod conformance_areas;
mod conformance_gc;
mod conformance_history;
mod conformance_race;
mod conformance_trust;
pub mod history;
pub mod integrity;
pub mod pg;
pub mod safety;
pub mod sled_alerts;
pub mod sled_catalog;
mod sled_codec;
mod sled_gc;
mod sled_history;
mod sled_integrity;
mod sled_jobs;
mod sled_policy;
mod sled_safety;
mod sled_trust;
pub mod trust;

pub use trust::{IdentityRecord, SealedKeyRecord, TokenRecord, TokenUse};

use async_trait::async_trait;
use nex_backup_shared::ids::ChunkId;
use serde::{Deserialize, Serialize};

/// Catalog failures.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog storage: {0}")]
    Storage(String),
    #[error("catalog disk full: {0}")]
    DiskFull(String),
    #[error("catalog record {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("snapshot {snapshot}: {missing} referenced chunk(s) are not stored, first {first}")]
    MissingChunks {
        snapshot: String,
        missing: usize,
        first: String,
    },
    #[error("snapshot {snapshot} already exists with different content")]
    Conflict { snapshot: String },
    #[error("job {job} is no longer running: a job commits one snapshot, while it runs")]
    JobNotRunning { job: String },
    #[error("site {site} already holds a different key for epoch {epoch}")]
    KeyEpochConflict { site: String, epoch: u32 },
    #[error(
        "chunk {chunk} of site {site} is being deleted by garbage collection; send it again shortly"
    )]
    ChunkBeingDeleted { site: String, chunk: String },
}

pub type Result<T> = std::result::Result<T, CatalogError>;

/// A committed snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub v: u32,
    pub site: String,
    pub target: String,
    pub snapshot_id: String,
    pub job_id: String,
    pub created_unix_ms: u64,
    pub committed_unix_ms: u64,
    pub logical_bytes: u64,
    /// Sum of the stored (sealed) sizes of the distinct chunks it references.
    pub stored_bytes: u64,
    /// Sealed bytes this snapshot's upload added to the store.
    pub new_bytes: u64,
    pub duration_ms: u64,
    /// Distinct chunks referenced.
    pub chunks: u64,
}

/// The last known state of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub v: u32,
    pub site: String,
    pub agent_id: String,
    pub version: String,
    pub last_seen_unix_ms: u64,
    /// (name, kind)
    pub targets: Vec<(String, String)>,
}

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
}

impl JobState {
    /// The word the operator API and CLI show.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }
}

pub use crate::job::{JobKind, Trigger};

/// A backup or restore job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub v: u32,
    pub job_id: String,
    pub site: String,
    pub target: String,
    pub kind: JobKind,
    pub state: JobState,
    pub started_unix_ms: u64,
    pub ended_unix_ms: Option<u64>,
    pub error: Option<String>,
    pub snapshot_id: Option<String>,
    /// What started it.
    #[serde(default)]
    pub trigger: Trigger,
    /// Logical bytes the job read or restored, as the agent reported.
    #[serde(default)]
    pub logical_bytes: u64,
    /// Sealed bytes a backup added to the store.
    #[serde(default)]
    pub new_bytes: u64,
    /// The agent the job was sent to.
    #[serde(default)]
    pub agent_id: String,
    /// For a backup: the snapshot id the controller assigned when it dispatched the job.
    /// Only a commit of exactly this snapshot, by that agent, can settle the job.
    #[serde(default)]
    pub expected_snapshot: Option<String>,
}

impl JobRecord {
    /// The first line of the job's error ("" for none): what lists and notices show.
    pub fn error_line(&self) -> &str {
        self.error
            .as_deref()
            .and_then(|e| e.lines().next())
            .unwrap_or("")
    }
}

/// The stored policy of a (site, target).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub v: u32,
    pub site: String,
    pub target: String,
    pub policy: crate::policy::Policy,
    pub updated_unix_ms: u64,
}

/// The stored settings of a site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SitePolicyRecord {
    pub v: u32,
    pub site: String,
    pub policy: crate::policy::site::SitePolicy,
    pub updated_unix_ms: u64,
}

/// The scheduler's durable state for one (site, target).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ScheduleRecord {
    pub v: u32,
    pub site: String,
    pub target: String,
    /// Next scheduled slot.
    pub next_due_unix_ms: u64,
    /// A slot came due and no job has been started for it yet (missed slots coalesce).
    pub pending_since_unix_ms: Option<u64>,
    /// The last job the scheduler started, and whether its outcome was handled.
    pub last_job: Option<String>,
    pub last_job_handled: bool,
    /// Consecutive failures of scheduled jobs; retries back off with it.
    pub failures: u32,
    pub retry_at_unix_ms: Option<u64>,
    /// The schedule (cron and zone) `next_due_unix_ms` was computed from; a changed
    /// policy recomputes it.
    #[serde(default)]
    pub schedule: String,
}

/// A snapshot about to be committed.
#[derive(Debug, Clone)]
pub struct NewSnapshot {
    pub record: SnapshotRecord,
    pub manifest: Vec<u8>,
    pub chunk_ids: Vec<ChunkId>,
    /// The job this commit settles, as it is to be stored (succeeded). The commit
    /// happens only if that job is still recorded as running, in the same transaction.
    pub settles: Option<JobRecord>,
}

/// Catalog backend. Implementations must make `commit_snapshot` atomic: after a crash
/// at any point the snapshot is either fully visible or not at all.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// The subset of `ids` not stored for `site`, in input order.
    async fn missing_chunks(&self, site: &str, ids: &[ChunkId]) -> Result<Vec<ChunkId>>;
    /// Record a stored chunk with the SHA-256 of its blob as stored. Returns false when
    /// it was already recorded.
    async fn record_chunk(
        &self,
        site: &str,
        id: &ChunkId,
        stored_len: u32,
        sha256: &[u8; 32],
    ) -> Result<bool>;
    /// Stored length of a chunk, if recorded.
    async fn chunk_len(&self, site: &str, id: &ChunkId) -> Result<Option<u32>>;
    /// Atomically make a snapshot visible, after checking every chunk is recorded and
    /// (with `settles`) that its job is still running; the job is settled in the same
    /// transaction. Committing the same snapshot again is a no-op returning the stored
    /// record.
    async fn commit_snapshot(&self, snap: NewSnapshot) -> Result<SnapshotRecord>;
    /// Snapshots, oldest first, optionally filtered.
    async fn snapshots(
        &self,
        site: Option<&str>,
        target: Option<&str>,
    ) -> Result<Vec<SnapshotRecord>>;
    /// The newest snapshot of every (site, target), ordered by site and target. The
    /// default reads every snapshot; engines with an index answer from it.
    async fn newest_snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        let mut newest: std::collections::BTreeMap<(String, String), SnapshotRecord> =
            Default::default();
        for s in self.snapshots(None, None).await? {
            newest.insert((s.site.clone(), s.target.clone()), s); // oldest first: last wins
        }
        Ok(newest.into_values().collect())
    }
    /// Snapshots oldest first (by creation time, then id), optionally filtered,
    /// strictly after `after`, at most `limit`.
    async fn snapshots_page(
        &self,
        site: Option<&str>,
        target: Option<&str>,
        after: Option<&history::Cursor>,
        limit: usize,
    ) -> Result<Vec<SnapshotRecord>> {
        let mut snaps = self.snapshots(site, target).await?;
        snaps.retain(|s| {
            after.is_none_or(|(ms, id)| (s.created_unix_ms, &s.snapshot_id) > (*ms, id))
        });
        snaps.truncate(limit);
        Ok(snaps)
    }
    async fn snapshot(&self, site: &str, snapshot_id: &str) -> Result<Option<SnapshotRecord>>;
    async fn manifest(&self, site: &str, snapshot_id: &str) -> Result<Option<Vec<u8>>>;
    async fn put_agent(&self, agent: &AgentRecord) -> Result<()>;
    async fn agents(&self) -> Result<Vec<AgentRecord>>;
    async fn put_job(&self, job: &JobRecord) -> Result<()>;
    /// Replace a job record only if the stored one still equals `expected` (compare and
    /// set, durable when it returns). False, writing nothing, when another writer (a
    /// stall check, an operator's cancel, a commit) changed it first.
    async fn update_job(&self, expected: &JobRecord, new: &JobRecord) -> Result<bool>;
    async fn job(&self, job_id: &str) -> Result<Option<JobRecord>>;
    /// Jobs matching `filter`, newest first (by start time, then id), strictly before
    /// `before`, at most `limit`. The default reads every job; engines with an index
    /// answer from it.
    async fn jobs_page(
        &self,
        filter: &history::JobFilter,
        before: Option<&history::Cursor>,
        limit: usize,
    ) -> Result<Vec<JobRecord>> {
        let mut jobs = self.jobs().await?;
        jobs.retain(|j| {
            filter.matches(j)
                && before.is_none_or(|(ms, id)| (j.started_unix_ms, &j.job_id) < (*ms, id))
        });
        jobs.sort_by(|a, b| (b.started_unix_ms, &b.job_id).cmp(&(a.started_unix_ms, &a.job_id)));
        jobs.truncate(limit);
        Ok(jobs)
    }
    /// Jobs about any of `snapshots` ((site, snapshot id) pairs): the backup that made
    /// one, its drills and verifications. What the standing of those snapshots is
    /// judged from, without reading every job.
    async fn jobs_of_snapshots(&self, snapshots: &[(String, String)]) -> Result<Vec<JobRecord>> {
        let wanted: std::collections::HashSet<(&str, &str)> = snapshots
            .iter()
            .map(|(s, id)| (s.as_str(), id.as_str()))
            .collect();
        let mut jobs = self.jobs().await?;
        jobs.retain(|j| {
            j.snapshot_id
                .as_deref()
                .is_some_and(|id| wanted.contains(&(j.site.as_str(), id)))
        });
        Ok(jobs)
    }
    /// The newest job of `kind` of every (site, target).
    async fn newest_jobs(&self, kind: JobKind) -> Result<Vec<JobRecord>> {
        let mut newest: std::collections::HashMap<(String, String), JobRecord> = Default::default();
        for j in self.jobs().await? {
            if j.kind != kind {
                continue;
            }
            let k = (j.site.clone(), j.target.clone());
            let newer = newest
                .get(&k)
                .is_none_or(|n| (j.started_unix_ms, &j.job_id) > (n.started_unix_ms, &n.job_id));
            if newer {
                newest.insert(k, j);
            }
        }
        Ok(newest.into_values().collect())
    }
    /// Every job of `site` (what a snapshot's standing is judged from).
    async fn site_jobs(&self, site: &str) -> Result<Vec<JobRecord>> {
        let mut jobs = self.jobs().await?;
        jobs.retain(|j| j.site == site);
        Ok(jobs)
    }
    /// Remove finished jobs and RPO events older than `before_ms` by the rule of
    /// [`history`]: never the job of a snapshot still held.
    async fn forget_history(&self, before_ms: u64) -> Result<history::Forgotten>;
    async fn jobs(&self) -> Result<Vec<JobRecord>>;
    /// Store a new enrollment token.
    async fn put_admin(&self, a: &trust::AdminRecord) -> Result<()>;
    /// Every admin credential, revoked ones included.
    async fn admins(&self) -> Result<Vec<trust::AdminRecord>>;
    /// Store a dashboard account (create or replace).
    async fn put_account(&self, a: &trust::AccountRecord) -> Result<()>;
    async fn account(&self, name: &str) -> Result<Option<trust::AccountRecord>>;
    /// Every dashboard account, disabled ones included, by name.
    async fn accounts(&self) -> Result<Vec<trust::AccountRecord>>;
    async fn put_token(&self, token: &TokenRecord) -> Result<()>;
    /// Atomically mark the token with `hash` used by `agent_id`, if it is usable at `now_ms`.
    async fn consume_token(&self, hash: &str, now_ms: u64, agent_id: &str) -> Result<TokenUse>;
    /// Record an enrollment (replaces any earlier identity of that agent).
    async fn put_identity(&self, rec: &IdentityRecord) -> Result<()>;
    async fn identity(&self, site: &str, agent_id: &str) -> Result<Option<IdentityRecord>>;
    async fn identities(&self) -> Result<Vec<IdentityRecord>>;
    /// Atomically swap in a renewed certificate unless the agent was revoked or its
    /// current serial is no longer `old_serial`. Returns the new record on success.
    async fn renew_identity(
        &self,
        site: &str,
        agent_id: &str,
        old_serial: &str,
        new_serial: &str,
        new_key_sha256: &str,
        not_after_unix: i64,
    ) -> Result<Option<IdentityRecord>>;
    /// Atomically revoke; returns the revoked record, `None` if unknown.
    async fn revoke_identity(
        &self,
        site: &str,
        agent_id: &str,
        now_ms: u64,
    ) -> Result<Option<IdentityRecord>>;
    /// Store a sealed key. Returns false if that (epoch, recipient) is already stored
    /// with the same key; a different key for a known epoch is a `KeyEpochConflict`.
    async fn put_sealed_key(&self, rec: &SealedKeyRecord) -> Result<bool>;
    async fn sealed_keys(&self, site: &str) -> Result<Vec<SealedKeyRecord>>;
    /// Atomically remove a snapshot (record, manifest, chunk references). Its chunks stay
    /// until garbage collection. Returns the removed record.
    async fn delete_snapshot(
        &self,
        site: &str,
        snapshot_id: &str,
    ) -> Result<Option<SnapshotRecord>>;
    /// A page of garbage collection's candidates: up to `limit` recorded chunks of
    /// `site` with ids after `after`, in id order, that no snapshot references except
    /// those in `except` (the snapshots a dry run would delete), with their stored
    /// lengths. Engines answer it with a query: nothing loads a site's chunks whole.
    async fn unreferenced_chunks(
        &self,
        site: &str,
        except: &[String],
        after: Option<&ChunkId>,
        limit: usize,
    ) -> Result<Vec<(ChunkId, u32)>>;
    /// Delete the records of those of `ids` that no snapshot references, serialized with
    /// commits: a commit needing one of them either comes first (and the chunk stays) or
    /// is refused for a missing chunk. Returns the ids deleted.
    ///
    /// The deletion protocol, for engines that several controllers share: a deleted
    /// record may stay behind as a *tombstone* until [`Catalog::purge_chunks`], and while
    /// it does the chunk counts as missing, a commit needing it is refused, and recording
    /// it again fails with [`CatalogError::ChunkBeingDeleted`] (the upload is retried).
    /// So no replica can record a chunk whose blob another replica is deleting.
    async fn delete_unreferenced(&self, site: &str, ids: &[ChunkId]) -> Result<Vec<ChunkId>>;
    /// Tombstone chunks that have no record (orphaned blobs about to be swept); returns
    /// those claimed. Engines for one controller return `ids` as they are.
    async fn claim_orphans(&self, site: &str, ids: &[ChunkId]) -> Result<Vec<ChunkId>>;
    /// Drop the tombstones of `ids` once their blobs are gone.
    async fn purge_chunks(&self, site: &str, ids: &[ChunkId]) -> Result<()>;
    /// Tombstones a crash left between a deletion and its purge.
    async fn pending_deletions(&self, site: &str) -> Result<Vec<ChunkId>>;
    async fn put_policy(&self, rec: &PolicyRecord) -> Result<()>;
    /// Remove the own policy of `target` (and its schedule state), or with no target the
    /// site's own settings. Returns whether there was one.
    async fn delete_policy(&self, site: &str, target: Option<&str>) -> Result<bool>;
    async fn put_schedule(&self, rec: &ScheduleRecord) -> Result<()>;
    /// Claim a schedule slot: store `new` only if the stored record of its target still
    /// equals `expected` (`None`: there is none). False, writing nothing, when another
    /// scheduler (an old leader during a failover) changed it first.
    async fn claim_schedule(
        &self,
        expected: Option<&ScheduleRecord>,
        new: &ScheduleRecord,
    ) -> Result<bool>;
    async fn put_rpo_event(&self, ev: &crate::rpo::RpoEvent) -> Result<()>;
    /// RPO events of `site` (or all), oldest first within each target.
    async fn rpo_events(&self, site: Option<&str>) -> Result<Vec<crate::rpo::RpoEvent>>;
    async fn schedules(&self) -> Result<Vec<ScheduleRecord>>;
    async fn policies(&self) -> Result<Vec<PolicyRecord>>;
    async fn put_site_policy(&self, rec: &SitePolicyRecord) -> Result<()>;
    async fn site_policies(&self) -> Result<Vec<SitePolicyRecord>>;
    /// Append an audit entry (operator actions that weaken protection).
    async fn put_audit(&self, e: &safety::AuditEntry) -> Result<()>;
    /// Audit entries of `site` (or all), oldest first.
    /// Audit entries at or after `since_ms`, oldest first: the newest `limit` of them.
    async fn audit(
        &self,
        site: Option<&str>,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<safety::AuditEntry>>;
    async fn put_hold(&self, h: &safety::HoldRecord) -> Result<()>;
    async fn holds(&self) -> Result<Vec<safety::HoldRecord>>;
    /// Remove a hold; returns it, `None` if there was none.
    async fn delete_hold(&self, site: &str, target: &str) -> Result<Option<safety::HoldRecord>>;
    /// Every site's chunk records: (count, sum of stored sizes). Reads every record.
    async fn chunk_totals(&self) -> Result<(u64, u64)>;
    /// Make everything written so far durable.
    async fn flush(&self) -> Result<()>;
}
