//! A copy of the controller's blob store on disk, read without the controller: the
//! layout of `docs/format.md` (`manifests/<site>/<snapshot>`, `chunks/<site>/<xx>/<id>`,
//! `keys/<site>/<epoch>-<recipient>`). Every read is bounded by the format's limits.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nex_backup_shared::chunk::MAX_CHUNK_LEN;
use nex_backup_shared::ids::{ChunkId, SiteId, SnapshotId};
use nex_backup_shared::manifest::MAX_MANIFEST_LEN;
use nex_backup_shared::seal::{HEADER_LEN, TAG_LEN};
use tokio::sync::mpsc;

use crate::error::AgentError;
use crate::restore::feed::{ChunkSource, Fetched};

/// A sealed key is 120 bytes; anything much larger in `keys/` is not one.
const MAX_SEALED_KEY_LEN: u64 = 4096;

/// The store copy: a controller's `blobs` directory, or its data directory holding one.
#[derive(Debug, Clone)]
pub struct StoreCopy {
    root: PathBuf,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> AgentError {
    AgentError::from(format!("{what} {}: {e}", path.display()))
}

/// Names of the entries of `dir` (files or directories), sorted; none if it is missing.
fn names(dir: &Path) -> Result<Vec<String>, AgentError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(io_err("read directory", dir, e)),
    };
    let mut out = vec![];
    for entry in rd {
        let entry = entry.map_err(|e| io_err("read directory", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.contains(".tmp.") {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Read a whole file of at most `max` bytes.
fn read_bounded(path: &Path, max: u64, what: &str) -> Result<Vec<u8>, AgentError> {
    let len = std::fs::metadata(path)
        .map_err(|e| io_err(&format!("read {what}"), path, e))?
        .len();
    if len > max {
        return Err(format!(
            "{what} {} is {len} bytes, more than the format allows ({max}); it is not a NEX object",
            path.display()
        )
        .into());
    }
    std::fs::read(path).map_err(|e| io_err(&format!("read {what}"), path, e))
}

impl StoreCopy {
    /// Open the store copy at `path` (the `blobs` directory or the data directory above it).
    pub fn open(path: &Path) -> Result<StoreCopy, AgentError> {
        let nested = path.join("blobs");
        let root = if !path.join("manifests").is_dir() && nested.join("manifests").is_dir() {
            nested
        } else {
            path.to_path_buf()
        };
        if !root.join("manifests").is_dir() {
            return Err(format!(
                "{} is not a copy of a NEX blob store: it has no manifests/ directory (give the \
                 controller's blobs directory, e.g. /var/lib/nex-backup/blobs)",
                path.display()
            )
            .into());
        }
        Ok(StoreCopy { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Sites that have snapshots in the store.
    pub fn sites(&self) -> Result<Vec<SiteId>, AgentError> {
        Ok(names(&self.root.join("manifests"))?
            .into_iter()
            .filter_map(|n| SiteId::try_from(n.as_str()).ok())
            .collect())
    }

    /// Snapshot ids of `site`, oldest first (ids sort by time).
    pub fn snapshot_ids(&self, site: &SiteId) -> Result<Vec<SnapshotId>, AgentError> {
        Ok(names(&self.root.join("manifests").join(&**site))?
            .into_iter()
            .filter_map(|n| SnapshotId::try_from(n.as_str()).ok())
            .collect())
    }

    /// The sealed manifest of a snapshot.
    pub fn manifest(&self, site: &SiteId, snapshot: &SnapshotId) -> Result<Vec<u8>, AgentError> {
        let path = self.root.join("manifests").join(&**site).join(&**snapshot);
        read_bounded(&path, MAX_MANIFEST_LEN as u64, "manifest")
    }

    /// Every sealed copy of `site`'s master keys held in the store.
    pub fn sealed_keys(&self, site: &SiteId) -> Result<Vec<Vec<u8>>, AgentError> {
        let dir = self.root.join("keys").join(&**site);
        names(&dir)?
            .into_iter()
            .map(|n| read_bounded(&dir.join(n), MAX_SEALED_KEY_LEN, "sealed key"))
            .collect()
    }

    fn chunk_path(&self, site: &SiteId, id: &ChunkId) -> PathBuf {
        let hex = id.to_hex();
        self.root
            .join("chunks")
            .join(&**site)
            .join(&hex[..2])
            .join(hex)
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
        for (i, (id, len)) in chunks.into_iter().enumerate() {
            let path = self.store.chunk_path(&self.site, &id);
            let blob = tokio::task::spawn_blocking(move || {
                read_bounded(&path, max, "chunk").map_err(|e| {
                    format!(
                        "chunk {i} ({}) of the snapshot is missing or unreadable in the store copy: {e}",
                        id.short()
                    )
                })
            })
            .await
            .map_err(|e| AgentError::from(format!("read worker: {e}")))??;
            if tx.send((id, len, blob)).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }

    fn progress(&self, _job_id: &str, phase: &str, bytes: u64, chunks: u64, detail: String) {
        tracing::info!(phase, bytes, chunks, %detail, "restore progress");
    }
}
