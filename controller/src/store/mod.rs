//! The blob store: sealed chunks and manifests, opaque bytes under string keys.
//!
//! One small async trait, [`BlobStore`], with [`fs::FsStore`] (files under the data
//! directory) as the embedded default and [`object::ObjectBlobStore`] (S3 and other object
//! stores through the `object_store` crate). Every backend must pass [`conformance::run_all`].
//! Keys are built only by [`chunk_key`], [`manifest_key`] and [`sealed_key_key`] from
//! validated names.

pub mod conformance;
pub mod fs;
pub mod layers;
pub mod object;
pub mod objectlock;
pub mod url;

use async_trait::async_trait;
use bytes::Bytes;
use nex_backup_shared::ids::ChunkId;

/// Blob store failures; each names the key.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob {key}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("blob key {key:?} is not valid")]
    BadKey { key: String },
    #[error("blob {key}: the store did not answer within {secs} s")]
    Timeout { key: String, secs: u64 },
}

impl StoreError {
    /// Whether trying again may succeed (a network or server fault), as opposed to a
    /// refused key or a full disk.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::BadKey { .. } => false,
            StoreError::Timeout { .. } => true,
            StoreError::Io { source, .. } => !is_disk_full(source),
        }
    }
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    pub key: String,
    pub size: u64,
    /// When it was written (ms since the epoch; 0 if the backend cannot tell).
    pub modified_unix_ms: u64,
}

/// A listing, streamed in key order: nothing holds a whole bucket's keys in memory.
pub type BlobStream<'a> = futures::stream::BoxStream<'a, Result<BlobMeta>>;

/// The keys under `prefix`, collected: only for listings known to be small (the
/// controller's state copies, tests).
pub async fn list_keys(store: &dyn BlobStore, prefix: &str) -> Result<Vec<String>> {
    use futures::TryStreamExt;
    store.list(prefix).map_ok(|m| m.key).try_collect().await
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Where a chunk of `site` lives.
pub fn chunk_key(site: &str, id: &ChunkId) -> String {
    let hex = id.to_hex();
    format!("chunks/{site}/{}/{hex}", &hex[..2])
}

/// Where the sealed manifest of a snapshot lives.
pub fn manifest_key(site: &str, snapshot_id: &str) -> String {
    format!("manifests/{site}/{snapshot_id}")
}

/// Where a site's master key of `epoch`, sealed to the recovery key whose tag is
/// `recipient`, lives: the store alone is then enough to restore (with a recovery key).
pub fn sealed_key_key(site: &str, epoch: u32, recipient: &[u8; 8]) -> String {
    format!("keys/{site}/{epoch:010}-{}", hex::encode(recipient))
}

/// A blob store backend. `put` must be atomic, durable and write-once: after it returns
/// the blob survives a crash, a crash during it leaves either nothing or the whole blob,
/// and it never replaces an object already stored under the key.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Store `data` under `key` unless something is stored there already (then nothing
    /// is written). Returns whether it wrote.
    async fn put(&self, key: &str, data: Bytes) -> Result<bool>;
    /// [`put`](Self::put) of several blobs, answered once all are durable: per item, in
    /// order, whether it wrote; of two items with one key, one writes. By default the
    /// puts overlap; a backend that can make a group durable at once (one filesystem
    /// sync instead of two per file) overrides it. An error may leave some items stored,
    /// each whole.
    async fn put_many(&self, items: Vec<(String, Bytes)>) -> Result<Vec<bool>> {
        use futures::{StreamExt, TryStreamExt};
        futures::stream::iter(items)
            .map(|(key, data)| async move { self.put(&key, data).await })
            .buffered(8)
            .try_collect()
            .await
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;
    async fn exists(&self, key: &str) -> Result<bool>;
    async fn delete(&self, key: &str) -> Result<()>;
    /// Objects under `prefix`, in key order, streamed.
    fn list<'a>(&'a self, prefix: &'a str) -> BlobStream<'a>;
    /// Where the store is, for messages (`/var/lib/nex-backup/blobs`, `s3://…`).
    fn location(&self) -> String;
    /// Bytes still free for new blobs, if the backend can tell.
    async fn free_bytes(&self) -> Result<Option<u64>>;
}

/// The free space the controller keeps in its store: below it, uploads and commits are
/// refused at once with a message naming the store, instead of failing slowly on a full
/// disk halfway through a blob.
#[derive(Debug, Clone, Copy)]
pub struct Reserve {
    pub min_free_bytes: u64,
}

/// The store is below its reserve.
#[derive(Debug, thiserror::Error)]
#[error(
    "the controller's blob store at {location} is full: {free} bytes free, below its reserve of {reserve} bytes; uploads are refused until space is freed (nex-backup prune) or the store is grown"
)]
pub struct StoreFull {
    pub location: String,
    pub free: u64,
    pub reserve: u64,
}

impl Reserve {
    /// Refuse when the store has less than the reserve free.
    pub async fn check(&self, store: &dyn BlobStore) -> std::result::Result<(), StoreFull> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        match store.free_bytes().await {
            Ok(Some(free)) if free < self.min_free_bytes => Err(StoreFull {
                location: store.location(),
                free,
                reserve: self.min_free_bytes,
            }),
            _ => Ok(()),
        }
    }
}

/// Whether an I/O error means the disk (or quota) is full.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.kind() == std::io::ErrorKind::QuotaExceeded
}
