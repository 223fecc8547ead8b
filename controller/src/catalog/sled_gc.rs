//! Snapshot deletion and garbage collection on sled. Every commit bumps a
//! per-site sequence number (`meta` tree, `commit_seq/<site>`) in its transaction; GC
//! reads the sequence with the set of referenced chunks, and deletes chunks in a
//! transaction that aborts (and reads again) if the sequence moved. Together with the in-transaction chunk
//! check of `commit_snapshot`, a commit and a GC pass are serializable: no committed
//! snapshot can reference a deleted chunk.

use std::collections::HashSet;

use nex_backup_shared::ids::ChunkId;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::sled_catalog::SledCatalog;
use super::sled_codec::{decode, key, read_seq, seq_key, sled_err, storage};
use super::{CatalogError, Result, SnapshotRecord};

impl SledCatalog {
    pub(super) fn delete_snapshot_sync(
        &self,
        site: &str,
        snapshot_id: &str,
    ) -> Result<Option<SnapshotRecord>> {
        let id_key = key(&[site.as_bytes(), snapshot_id.as_bytes()]);
        let Some(target) = self.snapshot_target.get(&id_key).map_err(storage)? else {
            return Ok(None);
        };
        let snap_key = key(&[site.as_bytes(), &target, snapshot_id.as_bytes()]);
        let Some(v) = self.snapshots.get(&snap_key).map_err(storage)? else {
            return Ok(None);
        };
        let rec: SnapshotRecord = decode(&snap_key, &v)?;
        let trees = (
            &self.snapshots,
            &self.snapshot_target,
            &self.manifests,
            &self.snapshot_chunks,
        );
        trees
            .transaction(|(snaps, targets, manifests, refs)| {
                snaps.remove(snap_key.as_slice())?;
                targets.remove(id_key.as_slice())?;
                manifests.remove(id_key.as_slice())?;
                refs.remove(id_key.as_slice())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e: TransactionError<()>| {
                storage(format!("delete snapshot {snapshot_id}: {e:?}"))
            })?;
        Ok(Some(rec))
    }

    /// Every chunk some snapshot of `site` references, except those of the snapshots in
    /// `except`, with the commit sequence it was read at. The embedded catalog keeps a
    /// snapshot's references as one packed value, so this is the site's referenced set
    /// in memory (32 bytes a chunk); the shared catalog answers with an index instead.
    fn referenced_sync(&self, site: &str, except: &[String]) -> Result<(u64, HashSet<ChunkId>)> {
        loop {
            let seq = read_seq(self.meta.get(seq_key(site)).map_err(storage)?);
            let prefix = key(&[site.as_bytes(), b""]);
            let mut refs = HashSet::new();
            for kv in self.snapshot_chunks.scan_prefix(&prefix) {
                let (k, ids) = kv.map_err(storage)?;
                let snap = String::from_utf8_lossy(&k[prefix.len()..]);
                if except.iter().any(|e| *e == snap) {
                    continue;
                }
                refs.extend(
                    ids.chunks_exact(32)
                        .map(|c| ChunkId(c.try_into().expect("32 bytes"))),
                );
            }
            // A commit between the reads would make the set inconsistent: read again.
            if read_seq(self.meta.get(seq_key(site)).map_err(storage)?) == seq {
                return Ok((seq, refs));
            }
        }
    }

    pub(super) fn unreferenced_chunks_sync(
        &self,
        site: &str,
        except: &[String],
        after: Option<&ChunkId>,
        limit: usize,
    ) -> Result<Vec<(ChunkId, u32)>> {
        let (_, refs) = self.referenced_sync(site, except)?;
        let prefix = key(&[site.as_bytes(), b""]);
        let start = after.map_or_else(|| prefix.clone(), |a| Self::chunk_key(site, a));
        let mut page = vec![];
        for kv in self.chunks.range(start..) {
            let (k, v) = kv.map_err(storage)?;
            if !k.starts_with(&prefix) || page.len() >= limit {
                break;
            }
            let id = ChunkId(
                k[prefix.len()..]
                    .try_into()
                    .map_err(|_| storage(format!("chunk key of site {site} has a bad length")))?,
            );
            if Some(&id) == after || refs.contains(&id) {
                continue;
            }
            let len = v
                .get(1..5)
                .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4")));
            page.push((id, len));
        }
        Ok(page)
    }

    pub(super) fn delete_unreferenced_sync(
        &self,
        site: &str,
        ids: &[ChunkId],
    ) -> Result<Vec<ChunkId>> {
        for _ in 0..100 {
            let (seq, refs) = self.referenced_sync(site, &[])?;
            let victims: Vec<ChunkId> = ids.iter().filter(|i| !refs.contains(i)).copied().collect();
            if self.delete_chunks_fenced(site, &victims, seq)? {
                return Ok(victims);
            }
        }
        Err(storage(format!(
            "collect chunks of site {site}: commits kept arriving; try again"
        )))
    }

    /// Delete chunk records in one transaction, only if no commit of the site happened
    /// since `seq` (false, nothing deleted, if one did).
    fn delete_chunks_fenced(&self, site: &str, ids: &[ChunkId], seq: u64) -> Result<bool> {
        let sk = seq_key(site);
        (&self.chunks, &self.meta)
            .transaction(|(chunks, meta)| {
                if read_seq(meta.get(&sk)?) != seq {
                    return Err(ConflictableTransactionError::Abort(()));
                }
                for id in ids {
                    chunks.remove(Self::chunk_key(site, id))?;
                }
                Ok(())
            })
            .map(|()| true)
            .or_else(|e: TransactionError<()>| match e {
                TransactionError::Abort(()) => Ok(false),
                // A full disk stays told apart: GC then frees space in small steps.
                TransactionError::Storage(e) => Err(match sled_err(e) {
                    CatalogError::DiskFull(m) => {
                        CatalogError::DiskFull(format!("delete chunks: {m}"))
                    }
                    other => storage(format!("delete chunks: {other}")),
                }),
            })
    }
}
