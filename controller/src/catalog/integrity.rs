//! Store integrity records: the checksum of every stored chunk (recorded when it is
//! stored), the snapshots found damaged, and where the store verification stands. A
//! separate trait from [`super::Catalog`] (the catalog split by area); the sled catalog
//! implements both.

use async_trait::async_trait;
use nex_backup_shared::ids::ChunkId;
use serde::{Deserialize, Serialize};

use super::Result;

/// A stored chunk as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkEntry {
    pub id: ChunkId,
    pub stored_len: u32,
    /// SHA-256 of the sealed blob as stored; `None` for chunks stored before checksums
    /// were recorded (those are checked for structure only).
    pub sha256: Option<[u8; 32]>,
}

/// A stored object that failed verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadObject {
    /// The blob key (`chunks/<site>/<xx>/<id>`, `manifests/<site>/<snapshot>`).
    pub key: String,
    /// What is wrong: missing, size or checksum mismatch, bad header.
    pub problem: String,
    /// The chunk id, for chunks.
    #[serde(default)]
    pub chunk: Option<String>,
}

/// Where a damage finding came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DamageSource {
    /// The controller re-read the store against its own checksums.
    Store,
    /// The site's agent decrypted the snapshot (`verify --deep`).
    Deep,
}

/// A snapshot that needs an object that is missing or damaged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamageRecord {
    pub v: u32,
    pub site: String,
    pub target: String,
    pub snapshot_id: String,
    pub found_unix_ms: u64,
    pub source: DamageSource,
    /// The objects it needs that failed (at most [`MAX_OBJECTS_PER_RECORD`]).
    pub objects: Vec<BadObject>,
}

/// Objects named in one damage record; more are counted, not listed.
pub const MAX_OBJECTS_PER_RECORD: usize = 64;

/// Where the store verification stands: the scheduled pass walks the store a share at a
/// time and resumes here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct VerifyState {
    pub v: u32,
    /// The site and the last chunk checked of the pass in progress (`None`: at the start).
    pub cursor_site: Option<String>,
    pub cursor_chunk: Option<String>,
    /// When the pass in progress started.
    pub pass_started_unix_ms: u64,
    /// When the last complete pass ended.
    pub last_complete_unix_ms: Option<u64>,
    /// Objects and bytes checked in the pass in progress.
    pub objects: u64,
    pub bytes: u64,
    /// Damaged or missing objects found in the pass in progress.
    pub bad: u64,
}

/// See module docs.
#[async_trait]
pub trait IntegrityCatalog: Send + Sync + 'static {
    /// Chunk records of `site` after `after` (exclusive), in id order, at most `limit`.
    async fn chunk_page(
        &self,
        site: &str,
        after: Option<&ChunkId>,
        limit: usize,
    ) -> Result<Vec<ChunkEntry>>;
    /// One chunk record.
    async fn chunk_entry(&self, site: &str, id: &ChunkId) -> Result<Option<ChunkEntry>>;
    /// Snapshots of `site` after `after` (exclusive, in id order), each with its target
    /// and the distinct chunks it references; at most `limit`.
    async fn refs_page(
        &self,
        site: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String, Vec<ChunkId>)>>;
    /// Record a damaged snapshot (replacing an earlier record of it).
    async fn put_damage(&self, d: &DamageRecord) -> Result<()>;
    /// Forget a damage record (its objects verified whole again). Returns whether there was one.
    async fn clear_damage(&self, site: &str, snapshot_id: &str) -> Result<bool>;
    /// Damage records of `site` (or all).
    async fn damages(&self, site: Option<&str>) -> Result<Vec<DamageRecord>>;
    /// Forget a chunk record so the chunk is uploaded again; used only by the controller's
    /// own verification for a chunk whose blob is missing or fails its checksum.
    async fn forget_chunk(&self, site: &str, id: &ChunkId) -> Result<()>;
    async fn put_verify_state(&self, s: &VerifyState) -> Result<()>;
    async fn verify_state(&self) -> Result<VerifyState>;
}
