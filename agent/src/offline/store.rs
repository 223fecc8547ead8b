//! A copy of the controller's blob store, read without the controller: a directory
//! (the controller's `blobs` directory, an off-site copy on disk) or an S3 bucket
//! (`s3://bucket/prefix?endpoint=...`, an off-site copy in object storage). The layout
//! is that of `docs/format.md` (`manifests/<site>/<snapshot>`,
//! `chunks/<site>/<xx>/<id>`, `keys/<site>/<epoch>-<recipient>`). Every read is bounded
//! by the format's limits; nothing is written.

use std::path::Path;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use nex_backup_shared::chunk::MAX_CHUNK_LEN;
use nex_backup_shared::ids::{ChunkId, SiteId, SnapshotId};
use nex_backup_shared::manifest::MAX_MANIFEST_LEN;
use nex_backup_shared::seal::{HEADER_LEN, TAG_LEN};
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::sync::mpsc;

use crate::error::AgentError;
use crate::restore::feed::{ChunkSource, Fetched};

/// A sealed key is 120 bytes; anything much larger in `keys/` is not one.
const MAX_SEALED_KEY_LEN: u64 = 4096;

/// Requests an offline restore keeps in flight to an object store.
const MAX_REQUESTS: usize = 16;

/// Chunk reads a restore keeps in flight (each at most a sealed chunk in memory).
const READS_IN_FLIGHT: usize = 8;

/// The store copy.
#[derive(Debug, Clone)]
pub struct StoreCopy {
    store: Arc<dyn ObjectStore>,
    /// Where it is, for messages: a directory or `s3://bucket/prefix`.
    shown: String,
}

impl StoreCopy {
    /// Open the store copy at `location`: `s3://bucket/prefix?...`, or a directory (the
    /// `blobs` directory or the data directory above it; `file://` is accepted).
    pub async fn open(location: &str) -> Result<StoreCopy, AgentError> {
        if location.starts_with("s3://") {
            let (store, shown) = nex_backup_shared::s3::open(location, MAX_REQUESTS)
                .map_err(|e| AgentError::from(format!("store {e}")))?;
            let copy = StoreCopy { store, shown };
            if copy.names("manifests").await?.is_empty() {
                return Err(format!(
                    "{} holds no NEX snapshots (no manifests/ under it): check the bucket and prefix",
                    copy.shown
                )
                .into());
            }
            return Ok(copy);
        }
        let path = Path::new(location.strip_prefix("file://").unwrap_or(location));
        let nested = path.join("blobs");
        let root = if !path.join("manifests").is_dir() && nested.join("manifests").is_dir() {
            nested
        } else {
            path.to_path_buf()
        };
        if !root.join("manifests").is_dir() {
            return Err(format!(
                "{} is not a copy of a NEX blob store: it has no manifests/ directory (give the \
                 controller's blobs directory, e.g. /var/lib/nex-backup/blobs, or an s3:// URL)",
                path.display()
            )
            .into());
        }
        let store = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| format!("open {}: {e}", root.display()))?;
        Ok(StoreCopy {
            store: Arc::new(store),
            shown: root.display().to_string(),
        })
    }

    /// Where the copy is, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Names of the entries under `prefix` (sub-"directories" and objects), sorted;
    /// none if there are none. Temporary files of a writer are skipped.
    async fn names(&self, prefix: &str) -> Result<Vec<String>, AgentError> {
        let listed = self
            .store
            .list_with_delimiter(Some(&Key::from(prefix)))
            .await;
        let listed = match listed {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(vec![]),
            Err(e) => return Err(format!("list {prefix} in {}: {e}", self.shown).into()),
        };
        let mut out: Vec<String> = listed
            .common_prefixes
            .iter()
            .chain(listed.objects.iter().map(|o| &o.location))
            .filter_map(|k| k.filename().map(str::to_string))
            .filter(|n| !n.contains(".tmp."))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Read a whole object of at most `max` bytes.
    async fn read_bounded(&self, key: &str, max: u64, what: &str) -> Result<Vec<u8>, AgentError> {
        let failed = |e: object_store::Error| format!("read {what} {key} in {}: {e}", self.shown);
        let got = self.store.get(&Key::from(key)).await.map_err(failed)?;
        if got.meta.size > max {
            return Err(format!(
                "{what} {key} in {} is {} bytes, more than the format allows ({max}); it is not a NEX object",
                self.shown, got.meta.size
            )
            .into());
        }
        let mut out = Vec::with_capacity(got.meta.size as usize);
        let mut body = got.into_stream();
        while let Some(part) = body.try_next().await.map_err(failed)? {
            out.extend_from_slice(&part);
            if out.len() as u64 > max {
                return Err(format!("{what} {key} grew past {max} bytes while read").into());
            }
        }
        Ok(out)
    }

    /// Sites that have snapshots in the store.
    pub async fn sites(&self) -> Result<Vec<SiteId>, AgentError> {
        Ok(self
            .names("manifests")
            .await?
            .into_iter()
            .filter_map(|n| SiteId::try_from(n.as_str()).ok())
            .collect())
    }

    /// Snapshot ids of `site`, oldest first (ids sort by time).
    pub async fn snapshot_ids(&self, site: &SiteId) -> Result<Vec<SnapshotId>, AgentError> {
        Ok(self
            .names(&format!("manifests/{}", &**site))
            .await?
            .into_iter()
            .filter_map(|n| SnapshotId::try_from(n.as_str()).ok())
            .collect())
    }

    /// The sealed manifest of a snapshot.
    pub async fn manifest(
        &self,
        site: &SiteId,
        snapshot: &SnapshotId,
    ) -> Result<Vec<u8>, AgentError> {
        let key = format!("manifests/{}/{}", &**site, &**snapshot);
        self.read_bounded(&key, MAX_MANIFEST_LEN as u64, "manifest")
            .await
    }

    /// Every sealed copy of `site`'s master keys held in the store.
    pub async fn sealed_keys(&self, site: &SiteId) -> Result<Vec<Vec<u8>>, AgentError> {
        let dir = format!("keys/{}", &**site);
        let mut out = vec![];
        for n in self.names(&dir).await? {
            let key = format!("{dir}/{n}");
            out.push(
                self.read_bounded(&key, MAX_SEALED_KEY_LEN, "sealed key")
                    .await?,
            );
        }
        Ok(out)
    }

    fn chunk_key(site: &SiteId, id: &ChunkId) -> String {
        let hex = id.to_hex();
        format!("chunks/{}/{}/{hex}", &**site, &hex[..2])
    }
}

/// The chunks of one site in a store copy, as a restore's source.
pub struct SiteChunks {
    pub store: StoreCopy,
    pub site: SiteId,
}

impl ChunkSource for SiteChunks {
    async fn fetch_all(
        self: Arc<Self>,
        chunks: Vec<(ChunkId, u32)>,
        tx: mpsc::Sender<Fetched>,
    ) -> Result<(), AgentError> {
        let max = (HEADER_LEN + MAX_CHUNK_LEN + TAG_LEN + 1024) as u64;
        // A few reads in flight (an object store far away answers each in a round
        // trip), delivered in order.
        let reads = futures::stream::iter(chunks.into_iter().enumerate())
            .map(|(i, (id, len))| {
                let this = self.clone();
                async move {
                    let key = StoreCopy::chunk_key(&this.site, &id);
                    let blob = this.store.read_bounded(&key, max, "chunk").await.map_err(|e| {
                        AgentError::from(format!(
                            "chunk {i} ({}) of the snapshot is missing or unreadable in the store copy: {e}",
                            id.short()
                        ))
                    })?;
                    Ok::<_, AgentError>((id, len, blob))
                }
            })
            .buffered(READS_IN_FLIGHT);
        futures::pin_mut!(reads);
        while let Some(fetched) = reads.try_next().await? {
            if tx.send(fetched).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }

    fn progress(&self, _job_id: &str, phase: &str, bytes: u64, chunks: u64, detail: String) {
        tracing::info!(phase, bytes, chunks, %detail, "restore progress");
    }
}
