//! Snapshot deletion, garbage collection, policies and schedule state on sled. Every commit bumps a
//! per-site sequence number (`meta` tree, `commit_seq/<site>`) in its transaction; GC
//! reads the sequence with the set of referenced chunks, and deletes chunks in a
//! transaction that aborts if the sequence moved. Together with the in-transaction chunk
//! check of `commit_snapshot`, a commit and a GC pass are serializable: no committed
//! snapshot can reference a deleted chunk.

use std::collections::HashMap;

use nex_backup_shared::ids::ChunkId;
use sled::Transactional;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};

use super::sled_catalog::{SledCatalog, decode, encode, key, storage};
use super::{GcView, PolicyRecord, Result, ScheduleRecord, SitePolicyRecord, SnapshotRecord};

pub(super) fn seq_key(site: &str) -> Vec<u8> {
    [b"commit_seq/".as_slice(), site.as_bytes()].concat()
}

fn read_seq(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| v.as_ref().try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

pub(super) fn bump_seq(
    meta: &TransactionalTree,
    k: &[u8],
) -> std::result::Result<(), UnabortableTransactionError> {
    let next = read_seq(meta.get(k)?) + 1;
    meta.insert(k, &next.to_le_bytes())?;
    Ok(())
}

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

    pub(super) fn gc_view_sync(&self, site: &str) -> Result<GcView> {
        loop {
            let seq = read_seq(self.meta.get(seq_key(site)).map_err(storage)?);
            let prefix = key(&[site.as_bytes(), b""]);
            let mut refs = HashMap::new();
            for kv in self.snapshot_chunks.scan_prefix(&prefix) {
                let (k, ids) = kv.map_err(storage)?;
                let snap = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                let ids = ids
                    .chunks_exact(32)
                    .map(|c| ChunkId(c.try_into().expect("32 bytes")))
                    .collect();
                refs.insert(snap, ids);
            }
            let mut chunks = vec![];
            for kv in self.chunks.scan_prefix(&prefix) {
                let (k, v) = kv.map_err(storage)?;
                let id =
                    ChunkId(k[prefix.len()..].try_into().map_err(|_| {
                        storage(format!("chunk key of site {site} has a bad length"))
                    })?);
                let len = v
                    .get(1..5)
                    .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4")));
                chunks.push((id, len));
            }
            // A commit between the reads would make the view inconsistent: read again.
            if read_seq(self.meta.get(seq_key(site)).map_err(storage)?) == seq {
                return Ok(GcView { seq, refs, chunks });
            }
        }
    }

    pub(super) fn delete_chunks_sync(&self, site: &str, ids: &[ChunkId], seq: u64) -> Result<bool> {
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
                TransactionError::Storage(e) => Err(storage(format!("delete chunks: {e}"))),
            })
    }

    pub(super) fn put_policy_sync(&self, rec: &PolicyRecord) -> Result<()> {
        let k = key(&[rec.site.as_bytes(), rec.target.as_bytes()]);
        self.policies.insert(k, encode(rec)).map_err(storage)?;
        Ok(())
    }

    pub(super) fn policies_sync(&self) -> Result<Vec<PolicyRecord>> {
        self.policies
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(storage)?;
                decode(&k, &v)
            })
            .collect()
    }

    pub(super) fn delete_policy_sync(&self, site: &str, target: Option<&str>) -> Result<bool> {
        let removed = match target {
            Some(t) => {
                let k = key(&[site.as_bytes(), t.as_bytes()]);
                self.schedules.remove(&k).map_err(storage)?;
                self.policies.remove(&k).map_err(storage)?
            }
            None => self
                .site_policies
                .remove(key(&[site.as_bytes()]))
                .map_err(storage)?,
        };
        Ok(removed.is_some())
    }

    pub(super) fn put_site_policy_sync(&self, rec: &SitePolicyRecord) -> Result<()> {
        let k = key(&[rec.site.as_bytes()]);
        self.site_policies.insert(k, encode(rec)).map_err(storage)?;
        Ok(())
    }

    pub(super) fn site_policies_sync(&self) -> Result<Vec<SitePolicyRecord>> {
        self.site_policies
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(storage)?;
                decode(&k, &v)
            })
            .collect()
    }

    pub(super) fn put_schedule_sync(&self, rec: &ScheduleRecord) -> Result<()> {
        let k = key(&[rec.site.as_bytes(), rec.target.as_bytes()]);
        self.schedules.insert(k, encode(rec)).map_err(storage)?;
        Ok(())
    }

    pub(super) fn schedules_sync(&self) -> Result<Vec<ScheduleRecord>> {
        self.schedules
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(storage)?;
                decode(&k, &v)
            })
            .collect()
    }

    pub(super) fn put_rpo_event_sync(&self, ev: &crate::rpo::RpoEvent) -> Result<()> {
        let k = key(&[
            ev.site.as_bytes(),
            ev.target.as_bytes(),
            &ev.at_unix_ms.to_be_bytes(),
        ]);
        self.rpo_events.insert(k, encode(ev)).map_err(storage)?;
        Ok(())
    }

    pub(super) fn rpo_events_sync(&self, site: Option<&str>) -> Result<Vec<crate::rpo::RpoEvent>> {
        let prefix = site.map_or_else(Vec::new, |s| key(&[s.as_bytes(), b""]));
        self.rpo_events
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv.map_err(storage)?;
                decode(&k, &v)
            })
            .collect()
    }
}
