//! The alert and integrity areas of the catalog on PostgreSQL.

use async_trait::async_trait;
use nex_backup_shared::ids::ChunkId;

use super::{PgCatalog, dkey, is_unique_violation, pg_err, to_json};
use crate::catalog::Result;
use crate::catalog::alerts::{
    AlertCatalog, ChannelRecord, IncidentChange, IncidentRecord, OutboxEntry, RuleRecord,
    SummaryRecord,
};
use crate::catalog::integrity::{ChunkEntry, DamageRecord, IntegrityCatalog, VerifyState};

/// Ids as keys that sort in numeric order.
fn id_key(id: u64) -> String {
    format!("{id:020}")
}

fn sha_of(b: Option<&[u8]>) -> Option<[u8; 32]> {
    b.and_then(|b| <[u8; 32]>::try_from(b).ok())
}

#[async_trait]
impl AlertCatalog for PgCatalog {
    async fn put_channel(&self, c: &ChannelRecord) -> Result<()> {
        self.put_doc("channel", &c.name, None, c).await
    }

    async fn channels(&self) -> Result<Vec<ChannelRecord>> {
        self.docs("channel", None).await
    }

    async fn delete_channel(&self, name: &str) -> Result<bool> {
        Ok(self
            .take_doc::<serde_json::Value>("channel", name)
            .await?
            .is_some())
    }

    async fn put_rule(&self, r: &RuleRecord) -> Result<()> {
        self.put_doc("rule", &dkey(&[&r.rule, &r.site]), None, r)
            .await
    }

    async fn rules(&self) -> Result<Vec<RuleRecord>> {
        self.docs("rule", None).await
    }

    async fn next_id(&self) -> Result<u64> {
        let c = self.client().await?;
        let r = c
            .query_one("SELECT nextval('nexb_ids')", &[])
            .await
            .map_err(pg_err)?;
        Ok(r.get::<_, i64>(0) as u64)
    }

    async fn apply_incident(&self, change: IncidentChange) -> Result<bool> {
        let i = &change.incident;
        let open_key = dkey(&[&i.rule, &i.site, &i.subject]);
        let id = serde_json::Value::from(i.id);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let current = tx
            .query_opt(
                "SELECT rec FROM docs WHERE kind = 'incident_open' AND k = $1 FOR UPDATE",
                &[&open_key],
            )
            .await
            .map_err(pg_err)?
            .map(|r| r.get::<_, serde_json::Value>(0));
        if i.is_open() {
            if current.as_ref().is_some_and(|v| *v != id) {
                return Ok(false);
            }
            if current.is_none() {
                let opened = tx
                    .execute(
                        "INSERT INTO docs (kind, k, site, rec) VALUES ('incident_open', $1, $2, $3)",
                        &[&open_key, &i.site, &id],
                    )
                    .await;
                match opened {
                    // Another writer opened an incident of the same key meanwhile.
                    Err(e) if is_unique_violation(&e) => return Ok(false),
                    other => other.map_err(pg_err)?,
                };
            }
        } else if current.as_ref().is_some_and(|v| *v == id) {
            tx.execute(
                "DELETE FROM docs WHERE kind = 'incident_open' AND k = $1",
                &[&open_key],
            )
            .await
            .map_err(pg_err)?;
        }
        let upsert = "INSERT INTO docs (kind, k, site, rec) VALUES ($1, $2, $3, $4)
                      ON CONFLICT (kind, k) DO UPDATE SET rec = EXCLUDED.rec";
        tx.execute(upsert, &[&"incident", &id_key(i.id), &i.site, &to_json(i)])
            .await
            .map_err(pg_err)?;
        for n in &change.notices {
            tx.execute(
                upsert,
                &[&"outbox", &id_key(n.id), &None::<&str>, &to_json(n)],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(true)
    }

    async fn incidents(&self) -> Result<Vec<IncidentRecord>> {
        self.docs("incident", None).await
    }

    async fn incident(&self, id: u64) -> Result<Option<IncidentRecord>> {
        self.get_doc("incident", &id_key(id)).await
    }

    async fn enqueue(&self, e: &OutboxEntry) -> Result<()> {
        self.put_doc("outbox", &id_key(e.id), None, e).await
    }

    async fn outbox(&self) -> Result<Vec<OutboxEntry>> {
        self.docs("outbox", None).await
    }

    async fn put_outbox(&self, e: &OutboxEntry) -> Result<()> {
        // Only an entry still queued: one delivered meanwhile stays delivered.
        self.update_doc("outbox", &id_key(e.id), |_: OutboxEntry| {
            (Some(e.clone()), ())
        })
        .await?;
        Ok(())
    }

    async fn delivered(&self, id: u64) -> Result<()> {
        self.take_doc::<serde_json::Value>("outbox", &id_key(id))
            .await?;
        Ok(())
    }

    async fn summary(&self) -> Result<Option<SummaryRecord>> {
        self.get_doc("meta", "summary").await
    }

    async fn put_summary(&self, s: Option<&SummaryRecord>) -> Result<()> {
        match s {
            Some(s) => self.put_doc("meta", "summary", None, s).await,
            None => self
                .take_doc::<serde_json::Value>("meta", "summary")
                .await
                .map(|_| ()),
        }
    }
}

#[async_trait]
impl IntegrityCatalog for PgCatalog {
    async fn chunk_page(
        &self,
        site: &str,
        after: Option<&ChunkId>,
        limit: usize,
    ) -> Result<Vec<ChunkEntry>> {
        let c = self.client().await?;
        let after: &[u8] = after.map_or(&[], |a| a.0.as_slice());
        let rows = c
            .query(
                "SELECT id, len, sha FROM chunks WHERE site = $1 AND id > $2 AND NOT deleting
                 ORDER BY id LIMIT $3",
                &[&site, &after, &(limit as i64)],
            )
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                Ok(ChunkEntry {
                    id: super::core::id_of(r.get(0))?,
                    stored_len: r.get::<_, i32>(1) as u32,
                    sha256: sha_of(r.get(2)),
                })
            })
            .collect()
    }

    async fn chunk_entry(&self, site: &str, id: &ChunkId) -> Result<Option<ChunkEntry>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT len, sha FROM chunks WHERE site = $1 AND id = $2 AND NOT deleting",
                &[&site, &id.0.as_slice()],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.map(|r| ChunkEntry {
            id: *id,
            stored_len: r.get::<_, i32>(0) as u32,
            sha256: sha_of(r.get(1)),
        }))
    }

    async fn refs_page(
        &self,
        site: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String, Vec<ChunkId>)>> {
        let c = self.client().await?;
        let snaps = c
            .query(
                "SELECT snapshot_id, target FROM snapshots WHERE site = $1 AND snapshot_id > $2
                 ORDER BY snapshot_id LIMIT $3",
                &[&site, &after.unwrap_or(""), &(limit as i64)],
            )
            .await
            .map_err(pg_err)?;
        let mut out = Vec::with_capacity(snaps.len());
        for s in snaps {
            let id: String = s.get(0);
            let rows = c
                .query(
                    "SELECT chunk FROM snapshot_chunks WHERE site = $1 AND snapshot_id = $2
                     ORDER BY chunk",
                    &[&site, &id],
                )
                .await
                .map_err(pg_err)?;
            let ids = rows
                .iter()
                .map(|r| super::core::id_of(r.get(0)))
                .collect::<Result<_>>()?;
            out.push((id, s.get(1), ids));
        }
        Ok(out)
    }

    async fn put_damage(&self, d: &DamageRecord) -> Result<()> {
        let k = dkey(&[&d.site, &d.snapshot_id]);
        self.put_doc("damage", &k, Some(&d.site), d).await
    }

    async fn clear_damage(&self, site: &str, snapshot_id: &str) -> Result<bool> {
        Ok(self
            .take_doc::<serde_json::Value>("damage", &dkey(&[site, snapshot_id]))
            .await?
            .is_some())
    }

    async fn damages(&self, site: Option<&str>) -> Result<Vec<DamageRecord>> {
        self.docs("damage", site).await
    }

    async fn forget_chunk(&self, site: &str, id: &ChunkId) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM chunks WHERE site = $1 AND id = $2",
            &[&site, &id.0.as_slice()],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn put_verify_state(&self, s: &VerifyState) -> Result<()> {
        self.put_doc("meta", "verify_state", None, s).await
    }

    async fn verify_state(&self) -> Result<VerifyState> {
        Ok(self
            .get_doc("meta", "verify_state")
            .await?
            .unwrap_or_default())
    }
}
