//! [`IntegrityCatalog`] on sled, in the catalog's database. It reads the catalog's
//! `chunks`, `snapshot_chunks` and `snapshot_target` trees, and keeps:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `damaged` | site, 0, snapshot id | JSON [`DamageRecord`] |
//! | `verify_meta` | `state` | JSON [`VerifyState`] |

use async_trait::async_trait;
use nex_backup_shared::ids::ChunkId;

use super::Result;
use super::integrity::{ChunkEntry, DamageRecord, IntegrityCatalog, VerifyState};
use super::sled_catalog::{SledCatalog, chunk_value};
use super::sled_codec::{decode, encode, key, storage};

/// See module docs.
#[derive(Clone)]
pub struct SledIntegrity {
    chunks: sled::Tree,
    snapshot_chunks: sled::Tree,
    snapshot_target: sled::Tree,
    damaged: sled::Tree,
    meta: sled::Tree,
}

impl SledCatalog {
    /// The integrity records, in the same database.
    pub fn integrity(&self) -> Result<SledIntegrity> {
        let t = |name: &str| self.db.open_tree(name).map_err(storage);
        Ok(SledIntegrity {
            chunks: self.chunks.clone(),
            snapshot_chunks: self.snapshot_chunks.clone(),
            snapshot_target: self.snapshot_target.clone(),
            damaged: t("damaged")?,
            meta: t("verify_meta")?,
        })
    }
}

/// Keys of `site`'s entries strictly after `after` (or from the first).
fn range_after(site: &str, after: Option<&[u8]>) -> (Vec<u8>, std::ops::RangeFrom<Vec<u8>>) {
    let prefix = key(&[site.as_bytes(), b""]);
    let start = match after {
        Some(a) => {
            let mut k = key(&[site.as_bytes(), a]);
            k.push(0); // the smallest key after `a` itself
            k
        }
        None => prefix.clone(),
    };
    (prefix, start..)
}

#[async_trait]
impl IntegrityCatalog for SledIntegrity {
    async fn chunk_page(
        &self,
        site: &str,
        after: Option<&ChunkId>,
        limit: usize,
    ) -> Result<Vec<ChunkEntry>> {
        let (prefix, range) = range_after(site, after.map(|a| a.as_bytes().as_slice()));
        let mut out = vec![];
        for kv in self.chunks.range(range) {
            let (k, v) = kv.map_err(storage)?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let Ok(id) = <[u8; 32]>::try_from(&k[prefix.len()..]) else {
                continue;
            };
            let (stored_len, sha256) = chunk_value(&v).unwrap_or((0, None));
            out.push(ChunkEntry {
                id: ChunkId(id),
                stored_len,
                sha256,
            });
        }
        Ok(out)
    }

    async fn chunk_entry(&self, site: &str, id: &ChunkId) -> Result<Option<ChunkEntry>> {
        let v = self
            .chunks
            .get(SledCatalog::chunk_key(site, id))
            .map_err(storage)?;
        Ok(v.and_then(|v| chunk_value(&v))
            .map(|(stored_len, sha256)| ChunkEntry {
                id: *id,
                stored_len,
                sha256,
            }))
    }

    async fn refs_page(
        &self,
        site: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String, Vec<ChunkId>)>> {
        let (prefix, range) = range_after(site, after.map(str::as_bytes));
        let mut out = vec![];
        for kv in self.snapshot_chunks.range(range) {
            let (k, ids) = kv.map_err(storage)?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let snap = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let target = self
                .snapshot_target
                .get(&k)
                .map_err(storage)?
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            let ids = ids
                .chunks_exact(32)
                .map(|c| ChunkId(c.try_into().expect("32 bytes")))
                .collect();
            out.push((snap, target, ids));
        }
        Ok(out)
    }

    async fn put_damage(&self, d: &DamageRecord) -> Result<()> {
        let k = key(&[d.site.as_bytes(), d.snapshot_id.as_bytes()]);
        self.damaged.insert(k, encode(d)).map_err(storage)?;
        Ok(())
    }

    async fn clear_damage(&self, site: &str, snapshot_id: &str) -> Result<bool> {
        let k = key(&[site.as_bytes(), snapshot_id.as_bytes()]);
        Ok(self.damaged.remove(k).map_err(storage)?.is_some())
    }

    async fn damages(&self, site: Option<&str>) -> Result<Vec<DamageRecord>> {
        let prefix = site.map_or_else(Vec::new, |s| key(&[s.as_bytes(), b""]));
        self.damaged
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv.map_err(storage)?;
                decode(&k, &v)
            })
            .collect()
    }

    async fn forget_chunk(&self, site: &str, id: &ChunkId) -> Result<()> {
        self.chunks
            .remove(SledCatalog::chunk_key(site, id))
            .map_err(storage)?;
        Ok(())
    }

    async fn put_verify_state(&self, s: &VerifyState) -> Result<()> {
        self.meta.insert("state", encode(s)).map_err(storage)?;
        Ok(())
    }

    async fn verify_state(&self) -> Result<VerifyState> {
        match self.meta.get("state").map_err(storage)? {
            Some(v) => decode(b"state", &v),
            None => Ok(VerifyState::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::catalog::integrity::{BadObject, DamageSource};

    #[tokio::test]
    async fn chunk_pages_resume_after_the_cursor_and_stay_in_the_site() {
        let dir = tempfile::tempdir().unwrap();
        let cat = SledCatalog::open(dir.path()).unwrap();
        let ints = cat.integrity().unwrap();
        let ids: Vec<ChunkId> = (0..10u8).map(|i| ChunkId([i; 32])).collect();
        for id in &ids {
            cat.record_chunk("s1", id, 5, &[id.0[0]; 32]).await.unwrap();
            cat.record_chunk("s10", id, 5, &[0; 32]).await.unwrap();
        }
        let first = ints.chunk_page("s1", None, 4).await.unwrap();
        assert_eq!(first.len(), 4);
        assert_eq!(first[0].id, ids[0]);
        assert_eq!(first[3].sha256, Some([3; 32]));
        let rest = ints
            .chunk_page("s1", Some(&first[3].id), 100)
            .await
            .unwrap();
        assert_eq!(rest.len(), 6, "only s1's chunks, after the cursor");
        assert_eq!(rest[0].id, ids[4]);
        ints.forget_chunk("s1", &ids[4]).await.unwrap();
        assert_eq!(cat.chunk_len("s1", &ids[4]).await.unwrap(), None);
        assert_eq!(cat.chunk_len("s10", &ids[4]).await.unwrap(), Some(5));
    }

    #[tokio::test]
    async fn damage_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let cat = SledCatalog::open(dir.path()).unwrap();
        let ints = cat.integrity().unwrap();
        let d = DamageRecord {
            v: 1,
            site: "s1".into(),
            target: "db".into(),
            snapshot_id: "snap".into(),
            found_unix_ms: 1,
            source: DamageSource::Store,
            objects: vec![BadObject {
                key: "chunks/s1/00/00".into(),
                problem: "missing".into(),
                chunk: None,
            }],
        };
        ints.put_damage(&d).await.unwrap();
        assert_eq!(ints.damages(Some("s1")).await.unwrap(), vec![d.clone()]);
        assert!(ints.damages(Some("s")).await.unwrap().is_empty());
        assert!(ints.clear_damage("s1", "snap").await.unwrap());
        assert!(ints.damages(None).await.unwrap().is_empty());
        let mut st = ints.verify_state().await.unwrap();
        st.objects = 3;
        ints.put_verify_state(&st).await.unwrap();
        assert_eq!(ints.verify_state().await.unwrap().objects, 3);
    }
}
