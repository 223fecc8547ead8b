//! The blob store: sealed chunks and manifests, opaque bytes under string keys.
//!
//! One small async trait, [`BlobStore`], with [`fs::FsStore`] (files under the data
//! directory) as the embedded default. Every backend must pass [`conformance::run_all`].
//! Keys are built only by [`chunk_key`] and [`manifest_key`] from validated names.

pub mod conformance;
pub mod fs;

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

/// A blob store backend. `put` must be atomic and durable: after it returns the blob
/// survives a crash, and a crash during it leaves either the old state or the new blob.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;
    async fn exists(&self, key: &str) -> Result<bool>;
    async fn delete(&self, key: &str) -> Result<()>;
    /// Keys under `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
}
