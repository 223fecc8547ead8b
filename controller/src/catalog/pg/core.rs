//! [`Catalog`] on PostgreSQL (see the module docs of [`super`]).

use std::collections::HashSet;

use async_trait::async_trait;
use nex_backup_shared::ids::ChunkId;

use super::{PgCatalog, dkey, from_json, is_unique_violation, pg_err, to_json};
use crate::catalog::safety::{AuditEntry, HoldRecord};
use crate::catalog::trust::{AccountRecord, AdminRecord};
use crate::catalog::{
    AgentRecord, Catalog, CatalogError, IdentityRecord, JobRecord, JobState, NewSnapshot,
    PolicyRecord, Result, ScheduleRecord, SealedKeyRecord, SitePolicyRecord, SnapshotRecord,
    TokenRecord, TokenUse,
};

pub(super) fn id_of(b: &[u8]) -> Result<ChunkId> {
    <[u8; 32]>::try_from(b)
        .map(ChunkId)
        .map_err(|_| CatalogError::Corrupt {
            key: "chunks".into(),
            reason: format!("a chunk id of {} bytes", b.len()),
        })
}

fn id_bytes(ids: &[ChunkId]) -> Vec<&[u8]> {
    ids.iter().map(|i| i.0.as_slice()).collect()
}

/// Why a commit transaction gave up, or that it must run again.
enum CommitOutcome {
    Done(SnapshotRecord),
    /// Another commit of the same snapshot won the insert: look again.
    Raced,
}

impl PgCatalog {
    async fn commit_once(&self, snap: &NewSnapshot) -> Result<CommitOutcome> {
        let r = &snap.record;
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        // The site's sequence row, locked: garbage collection locks it too before it
        // deletes chunks, so the chunk check below cannot be overtaken.
        tx.execute(
            "INSERT INTO site_seq (site, seq) VALUES ($1, 1)
             ON CONFLICT (site) DO UPDATE SET seq = site_seq.seq + 1",
            &[&r.site],
        )
        .await
        .map_err(pg_err)?;
        // Idempotency, checked inside the transaction.
        if let Some(row) = tx
            .query_opt(
                "SELECT target, manifest, rec FROM snapshots WHERE site = $1 AND snapshot_id = $2",
                &[&r.site, &r.snapshot_id],
            )
            .await
            .map_err(pg_err)?
        {
            let same = row.get::<_, &str>(0) == r.target
                && row.get::<_, &[u8]>(1) == snap.manifest.as_slice();
            if !same {
                return Err(CatalogError::Conflict {
                    snapshot: r.snapshot_id.clone(),
                });
            }
            return Ok(CommitOutcome::Done(from_json(&r.snapshot_id, row.get(2))?));
        }
        let mut distinct = snap.chunk_ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let ids = id_bytes(&distinct);
        let rows = tx
            .query(
                "SELECT id, len FROM chunks WHERE site = $1 AND id = ANY($2) AND NOT deleting",
                &[&r.site, &ids],
            )
            .await
            .map_err(pg_err)?;
        if rows.len() < distinct.len() {
            let present: HashSet<&[u8]> = rows.iter().map(|r| r.get::<_, &[u8]>(0)).collect();
            let missing: Vec<&ChunkId> = distinct
                .iter()
                .filter(|i| !present.contains(i.0.as_slice()))
                .collect();
            return Err(CatalogError::MissingChunks {
                snapshot: r.snapshot_id.clone(),
                missing: missing.len(),
                first: missing[0].short(),
            });
        }
        let stored: u64 = rows.iter().map(|r| r.get::<_, i32>(1) as u64).sum();
        if let Some(settled) = &snap.settles {
            let row = tx
                .query_opt(
                    "SELECT rec FROM docs WHERE kind = 'job' AND k = $1 FOR UPDATE",
                    &[&settled.job_id],
                )
                .await
                .map_err(pg_err)?;
            let running = row
                .map(|row| from_json::<JobRecord>(&settled.job_id, row.get(0)))
                .transpose()?
                .is_some_and(|j| j.state == JobState::Running);
            if !running {
                return Err(CatalogError::JobNotRunning {
                    job: r.job_id.clone(),
                });
            }
            tx.execute(
                "UPDATE docs SET rec = $2 WHERE kind = 'job' AND k = $1",
                &[&settled.job_id, &to_json(settled)],
            )
            .await
            .map_err(pg_err)?;
        }
        let mut record = r.clone();
        record.stored_bytes = stored;
        record.chunks = distinct.len() as u64;
        let inserted = tx
            .execute(
                "INSERT INTO snapshots (site, snapshot_id, target, created, rec, manifest)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &r.site,
                    &r.snapshot_id,
                    &r.target,
                    &(r.created_unix_ms as i64),
                    &to_json(&record),
                    &snap.manifest,
                ],
            )
            .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Ok(CommitOutcome::Raced),
            other => other.map_err(pg_err)?,
        };
        tx.execute(
            "INSERT INTO snapshot_chunks (site, snapshot_id, chunk)
             SELECT $1, $2, unnest($3::bytea[])",
            &[&r.site, &r.snapshot_id, &ids],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(CommitOutcome::Done(record))
    }

    async fn snapshot_rows(
        &self,
        site: Option<&str>,
        target: Option<&str>,
    ) -> Result<Vec<SnapshotRecord>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT snapshot_id, rec FROM snapshots
                 WHERE ($1::text IS NULL OR site = $1) AND ($2::text IS NULL OR target = $2)
                 ORDER BY created, snapshot_id",
                &[&site, &target],
            )
            .await
            .map_err(pg_err)?;
        rows.into_iter()
            .map(|r| from_json(r.get::<_, &str>(0), r.get(1)))
            .collect()
    }
}

#[async_trait]
impl Catalog for PgCatalog {
    async fn missing_chunks(&self, site: &str, ids: &[ChunkId]) -> Result<Vec<ChunkId>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id FROM chunks WHERE site = $1 AND id = ANY($2) AND NOT deleting",
                &[&site, &id_bytes(ids)],
            )
            .await
            .map_err(pg_err)?;
        let present: HashSet<ChunkId> = rows
            .iter()
            .map(|r| id_of(r.get(0)))
            .collect::<Result<_>>()?;
        Ok(ids
            .iter()
            .filter(|i| !present.contains(i))
            .copied()
            .collect())
    }

    async fn record_chunk(
        &self,
        site: &str,
        id: &ChunkId,
        stored_len: u32,
        sha256: &[u8; 32],
    ) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "INSERT INTO chunks (site, id, len, sha) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[
                    &site,
                    &id.0.as_slice(),
                    &(stored_len as i32),
                    &sha256.as_slice(),
                ],
            )
            .await
            .map_err(pg_err)?;
        if n == 1 {
            return Ok(true);
        }
        let deleting = c
            .query_opt(
                "SELECT deleting FROM chunks WHERE site = $1 AND id = $2",
                &[&site, &id.0.as_slice()],
            )
            .await
            .map_err(pg_err)?
            .is_some_and(|r| r.get::<_, bool>(0));
        if deleting {
            return Err(CatalogError::ChunkBeingDeleted {
                site: site.into(),
                chunk: id.short(),
            });
        }
        Ok(false)
    }

    async fn chunk_len(&self, site: &str, id: &ChunkId) -> Result<Option<u32>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT len FROM chunks WHERE site = $1 AND id = $2 AND NOT deleting",
                &[&site, &id.0.as_slice()],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.map(|r| r.get::<_, i32>(0) as u32))
    }

    async fn commit_snapshot(&self, snap: NewSnapshot) -> Result<SnapshotRecord> {
        for _ in 0..3 {
            if let CommitOutcome::Done(rec) = self.commit_once(&snap).await? {
                return Ok(rec);
            }
        }
        Err(CatalogError::Storage(format!(
            "commit snapshot {}: concurrent commits of it kept racing",
            snap.record.snapshot_id
        )))
    }

    async fn snapshots(
        &self,
        site: Option<&str>,
        target: Option<&str>,
    ) -> Result<Vec<SnapshotRecord>> {
        self.snapshot_rows(site, target).await
    }

    async fn newest_snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT DISTINCT ON (site, target) snapshot_id, rec FROM snapshots
                 ORDER BY site, target, created DESC, snapshot_id DESC",
                &[],
            )
            .await
            .map_err(pg_err)?;
        rows.into_iter()
            .map(|r| from_json(r.get::<_, &str>(0), r.get(1)))
            .collect()
    }

    async fn snapshot(&self, site: &str, snapshot_id: &str) -> Result<Option<SnapshotRecord>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT rec FROM snapshots WHERE site = $1 AND snapshot_id = $2",
                &[&site, &snapshot_id],
            )
            .await
            .map_err(pg_err)?;
        row.map(|r| from_json(snapshot_id, r.get(0))).transpose()
    }

    async fn manifest(&self, site: &str, snapshot_id: &str) -> Result<Option<Vec<u8>>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT manifest FROM snapshots WHERE site = $1 AND snapshot_id = $2",
                &[&site, &snapshot_id],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn put_agent(&self, a: &AgentRecord) -> Result<()> {
        let k = dkey(&[&a.site, &a.agent_id]);
        self.put_doc("agent", &k, Some(&a.site), a).await
    }

    async fn agents(&self) -> Result<Vec<AgentRecord>> {
        self.docs("agent", None).await
    }

    async fn put_job(&self, job: &JobRecord) -> Result<()> {
        self.put_doc("job", &job.job_id, Some(&job.site), job).await
    }

    async fn update_job(&self, expected: &JobRecord, new: &JobRecord) -> Result<bool> {
        let r = self
            .update_doc("job", &expected.job_id, |cur: JobRecord| {
                if cur == *expected {
                    (Some(new.clone()), true)
                } else {
                    (None, false)
                }
            })
            .await?;
        Ok(r.unwrap_or(false))
    }

    async fn jobs_page(
        &self,
        filter: &crate::catalog::history::JobFilter,
        before: Option<&crate::catalog::history::Cursor>,
        limit: usize,
    ) -> Result<Vec<JobRecord>> {
        self.jobs_page_sql(filter, before, limit).await
    }

    async fn jobs_of_snapshots(&self, snapshots: &[(String, String)]) -> Result<Vec<JobRecord>> {
        self.jobs_of_snapshots_sql(snapshots).await
    }

    async fn newest_jobs(&self, kind: crate::catalog::JobKind) -> Result<Vec<JobRecord>> {
        self.newest_jobs_sql(kind).await
    }

    async fn site_jobs(&self, site: &str) -> Result<Vec<JobRecord>> {
        self.docs("job", Some(site)).await
    }

    async fn forget_history(&self, before_ms: u64) -> Result<crate::catalog::history::Forgotten> {
        self.forget_history_sql(before_ms).await
    }

    async fn snapshots_page(
        &self,
        site: Option<&str>,
        target: Option<&str>,
        after: Option<&crate::catalog::history::Cursor>,
        limit: usize,
    ) -> Result<Vec<SnapshotRecord>> {
        self.snapshots_page_sql(site, target, after, limit).await
    }

    async fn job(&self, job_id: &str) -> Result<Option<JobRecord>> {
        self.get_doc("job", job_id).await
    }

    async fn jobs(&self) -> Result<Vec<JobRecord>> {
        self.docs("job", None).await
    }

    async fn put_admin(&self, a: &AdminRecord) -> Result<()> {
        self.put_doc("admin", &a.name, None, a).await
    }

    async fn admins(&self) -> Result<Vec<AdminRecord>> {
        self.docs("admin", None).await
    }

    async fn put_account(&self, a: &AccountRecord) -> Result<()> {
        self.put_doc("account", &a.name, None, a).await
    }

    async fn account(&self, name: &str) -> Result<Option<AccountRecord>> {
        self.get_doc("account", name).await
    }

    async fn accounts(&self) -> Result<Vec<AccountRecord>> {
        self.docs("account", None).await
    }

    async fn put_token(&self, t: &TokenRecord) -> Result<()> {
        self.put_doc("token", &t.hash, None, t).await
    }

    async fn consume_token(&self, hash: &str, now_ms: u64, agent_id: &str) -> Result<TokenUse> {
        let used = self
            .update_doc("token", hash, |mut rec: TokenRecord| {
                if rec.used_unix_ms.is_some() {
                    return (None, TokenUse::AlreadyUsed(rec));
                }
                if now_ms >= rec.expires_unix_ms {
                    return (None, TokenUse::Expired(rec));
                }
                rec.used_unix_ms = Some(now_ms);
                rec.used_by = Some(agent_id.into());
                (Some(rec.clone()), TokenUse::Accepted(rec))
            })
            .await?;
        Ok(used.unwrap_or(TokenUse::Unknown))
    }

    async fn put_identity(&self, rec: &IdentityRecord) -> Result<()> {
        let k = dkey(&[&rec.site, &rec.agent_id]);
        self.put_doc("identity", &k, Some(&rec.site), rec).await
    }

    async fn identity(&self, site: &str, agent_id: &str) -> Result<Option<IdentityRecord>> {
        self.get_doc("identity", &dkey(&[site, agent_id])).await
    }

    async fn identities(&self) -> Result<Vec<IdentityRecord>> {
        self.docs("identity", None).await
    }

    async fn renew_identity(
        &self,
        site: &str,
        agent_id: &str,
        old_serial: &str,
        new_serial: &str,
        new_key_sha256: &str,
        not_after_unix: i64,
    ) -> Result<Option<IdentityRecord>> {
        let k = dkey(&[site, agent_id]);
        let r = self
            .update_doc("identity", &k, |mut r: IdentityRecord| {
                if r.revoked_unix_ms.is_some() || r.serial != old_serial {
                    return (None, None);
                }
                r.prev_serial = Some(std::mem::replace(&mut r.serial, new_serial.into()));
                r.prev_key_sha256 = std::mem::replace(&mut r.key_sha256, new_key_sha256.into());
                r.prev_not_after_unix = r.not_after_unix;
                r.not_after_unix = not_after_unix;
                (Some(r.clone()), Some(r))
            })
            .await?;
        Ok(r.flatten())
    }

    async fn revoke_identity(
        &self,
        site: &str,
        agent_id: &str,
        now_ms: u64,
    ) -> Result<Option<IdentityRecord>> {
        let k = dkey(&[site, agent_id]);
        self.update_doc("identity", &k, |mut r: IdentityRecord| {
            r.revoked_unix_ms.get_or_insert(now_ms);
            (Some(r.clone()), r)
        })
        .await
    }

    async fn put_sealed_key(&self, rec: &SealedKeyRecord) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        // One writer per site at a time: the epoch check and the insert are one step.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('sealed_keys' || $1))",
            &[&rec.site],
        )
        .await
        .map_err(pg_err)?;
        let other = tx
            .query_opt(
                "SELECT 1 FROM sealed_keys WHERE site = $1 AND epoch = $2 AND key_id <> $3 LIMIT 1",
                &[&rec.site, &i64::from(rec.epoch), &rec.key_id.as_slice()],
            )
            .await
            .map_err(pg_err)?;
        if other.is_some() {
            return Err(CatalogError::KeyEpochConflict {
                site: rec.site.clone(),
                epoch: rec.epoch,
            });
        }
        let n = tx
            .execute(
                "INSERT INTO sealed_keys (site, epoch, recipient, key_id, blob)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[
                    &rec.site,
                    &i64::from(rec.epoch),
                    &rec.recipient.as_slice(),
                    &rec.key_id.as_slice(),
                    &rec.blob,
                ],
            )
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(n == 1)
    }

    async fn sealed_keys(&self, site: &str) -> Result<Vec<SealedKeyRecord>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT blob FROM sealed_keys WHERE site = $1 ORDER BY epoch, recipient",
                &[&site],
            )
            .await
            .map_err(pg_err)?;
        rows.into_iter()
            .map(|r| {
                let blob: Vec<u8> = r.get(0);
                let info = nex_backup_shared::recovery::sealed_info(&blob).map_err(|e| {
                    CatalogError::Corrupt {
                        key: format!("sealed key of {site}"),
                        reason: e.to_string(),
                    }
                })?;
                Ok(SealedKeyRecord {
                    site: site.into(),
                    epoch: info.epoch,
                    key_id: info.key_id,
                    recipient: info.recipient,
                    blob,
                })
            })
            .collect()
    }

    async fn delete_snapshot(
        &self,
        site: &str,
        snapshot_id: &str,
    ) -> Result<Option<SnapshotRecord>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let row = tx
            .query_opt(
                "DELETE FROM snapshots WHERE site = $1 AND snapshot_id = $2 RETURNING rec",
                &[&site, &snapshot_id],
            )
            .await
            .map_err(pg_err)?;
        tx.execute(
            "DELETE FROM snapshot_chunks WHERE site = $1 AND snapshot_id = $2",
            &[&site, &snapshot_id],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        row.map(|r| from_json(snapshot_id, r.get(0))).transpose()
    }

    async fn unreferenced_chunks(
        &self,
        site: &str,
        except: &[String],
        after: Option<&ChunkId>,
        limit: usize,
    ) -> Result<Vec<(ChunkId, u32)>> {
        let c = self.client().await?;
        let after: &[u8] = after.map_or(&[], |a| a.0.as_slice());
        // The primary key walks the site's chunks in id order; the chunk index of
        // snapshot_chunks answers each "is it referenced" probe.
        let rows = c
            .query(
                "SELECT c.id, c.len FROM chunks c
                 WHERE c.site = $1 AND c.id > $2 AND NOT c.deleting
                   AND NOT EXISTS (SELECT 1 FROM snapshot_chunks s
                                   WHERE s.site = c.site AND s.chunk = c.id
                                     AND s.snapshot_id <> ALL($3))
                 ORDER BY c.id LIMIT $4",
                &[&site, &after, &except, &(limit as i64)],
            )
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| Ok((id_of(r.get(0))?, r.get::<_, i32>(1) as u32)))
            .collect()
    }

    async fn delete_unreferenced(&self, site: &str, ids: &[ChunkId]) -> Result<Vec<ChunkId>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        // Commits of the site bump its sequence row first; holding that row's lock
        // orders this deletion wholly before or after each of them. The row must exist
        // to be locked (a first commit creating it meanwhile makes the insert wait).
        tx.execute(
            "INSERT INTO site_seq (site, seq) VALUES ($1, 0) ON CONFLICT DO NOTHING",
            &[&site],
        )
        .await
        .map_err(pg_err)?;
        tx.execute(
            "SELECT 1 FROM site_seq WHERE site = $1 FOR UPDATE",
            &[&site],
        )
        .await
        .map_err(pg_err)?;
        let rows = tx
            .query(
                "UPDATE chunks c SET deleting = true
                 WHERE c.site = $1 AND c.id = ANY($2) AND NOT c.deleting
                   AND NOT EXISTS (SELECT 1 FROM snapshot_chunks s
                                   WHERE s.site = c.site AND s.chunk = c.id)
                 RETURNING c.id",
                &[&site, &id_bytes(ids)],
            )
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        rows.iter().map(|r| id_of(r.get(0))).collect()
    }

    async fn claim_orphans(&self, site: &str, ids: &[ChunkId]) -> Result<Vec<ChunkId>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "INSERT INTO chunks (site, id, len, sha, deleting)
                 SELECT $1, u, 0, NULL, true FROM unnest($2::bytea[]) AS u
                 ON CONFLICT DO NOTHING RETURNING id",
                &[&site, &id_bytes(ids)],
            )
            .await
            .map_err(pg_err)?;
        rows.iter().map(|r| id_of(r.get(0))).collect()
    }

    async fn purge_chunks(&self, site: &str, ids: &[ChunkId]) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM chunks WHERE site = $1 AND id = ANY($2) AND deleting",
            &[&site, &id_bytes(ids)],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn pending_deletions(&self, site: &str) -> Result<Vec<ChunkId>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id FROM chunks WHERE site = $1 AND deleting",
                &[&site],
            )
            .await
            .map_err(pg_err)?;
        rows.iter().map(|r| id_of(r.get(0))).collect()
    }

    async fn put_policy(&self, rec: &PolicyRecord) -> Result<()> {
        let k = dkey(&[&rec.site, &rec.target]);
        self.put_doc("policy", &k, Some(&rec.site), rec).await
    }

    async fn delete_policy(&self, site: &str, target: Option<&str>) -> Result<bool> {
        Ok(match target {
            Some(t) => {
                let k = dkey(&[site, t]);
                self.take_doc::<serde_json::Value>("schedule", &k).await?;
                self.take_doc::<serde_json::Value>("policy", &k)
                    .await?
                    .is_some()
            }
            None => self
                .take_doc::<serde_json::Value>("site_policy", site)
                .await?
                .is_some(),
        })
    }

    async fn put_schedule(&self, rec: &ScheduleRecord) -> Result<()> {
        let k = dkey(&[&rec.site, &rec.target]);
        self.put_doc("schedule", &k, Some(&rec.site), rec).await
    }

    async fn claim_schedule(
        &self,
        expected: Option<&ScheduleRecord>,
        new: &ScheduleRecord,
    ) -> Result<bool> {
        let k = dkey(&[&new.site, &new.target]);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let row = tx
            .query_opt(
                "SELECT rec FROM docs WHERE kind = 'schedule' AND k = $1 FOR UPDATE",
                &[&k],
            )
            .await
            .map_err(pg_err)?;
        let current: Option<ScheduleRecord> = row.map(|r| from_json(&k, r.get(0))).transpose()?;
        if current.as_ref() != expected {
            return Ok(false);
        }
        let written = match current {
            // Two first claims of a target: no row to lock, so the key decides.
            None => {
                tx.execute(
                    "INSERT INTO docs (kind, k, site, rec) VALUES ('schedule', $1, $2, $3)",
                    &[&k, &new.site, &to_json(new)],
                )
                .await
            }
            Some(_) => {
                tx.execute(
                    "UPDATE docs SET rec = $2 WHERE kind = 'schedule' AND k = $1",
                    &[&k, &to_json(new)],
                )
                .await
            }
        };
        match written {
            Err(e) if is_unique_violation(&e) => return Ok(false),
            other => other.map_err(pg_err)?,
        };
        tx.commit().await.map_err(pg_err)?;
        Ok(true)
    }

    async fn put_rpo_event(&self, ev: &crate::rpo::RpoEvent) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO rpo_events (site, target, at, rec) VALUES ($1, $2, $3, $4)
             ON CONFLICT (site, target, at) DO UPDATE SET rec = EXCLUDED.rec",
            &[&ev.site, &ev.target, &(ev.at_unix_ms as i64), &to_json(ev)],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn rpo_events(&self, site: Option<&str>) -> Result<Vec<crate::rpo::RpoEvent>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT rec FROM rpo_events WHERE ($1::text IS NULL OR site = $1)
                 ORDER BY site, target, at",
                &[&site],
            )
            .await
            .map_err(pg_err)?;
        rows.into_iter()
            .map(|r| from_json("rpo_events", r.get(0)))
            .collect()
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRecord>> {
        self.docs("schedule", None).await
    }

    async fn policies(&self) -> Result<Vec<PolicyRecord>> {
        self.docs("policy", None).await
    }

    async fn put_site_policy(&self, rec: &SitePolicyRecord) -> Result<()> {
        self.put_doc("site_policy", &rec.site, Some(&rec.site), rec)
            .await
    }

    async fn site_policies(&self) -> Result<Vec<SitePolicyRecord>> {
        self.docs("site_policy", None).await
    }

    async fn put_audit(&self, e: &AuditEntry) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO audit (at, site, rec) VALUES ($1, $2, $3)",
            &[&(e.unix_ms as i64), &e.site, &to_json(e)],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn audit(
        &self,
        site: Option<&str>,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT rec FROM audit WHERE at >= $1 AND ($2::text IS NULL OR site = $2)
                 ORDER BY at DESC, id DESC LIMIT $3",
                &[&(since_ms as i64), &site, &(limit as i64)],
            )
            .await
            .map_err(pg_err)?;
        let mut out: Vec<AuditEntry> = rows
            .into_iter()
            .map(|r| from_json("audit", r.get(0)))
            .collect::<Result<_>>()?;
        out.reverse();
        Ok(out)
    }

    async fn put_hold(&self, h: &HoldRecord) -> Result<()> {
        let k = dkey(&[&h.site, &h.target]);
        self.put_doc("hold", &k, Some(&h.site), h).await
    }

    async fn holds(&self) -> Result<Vec<HoldRecord>> {
        self.docs("hold", None).await
    }

    async fn delete_hold(&self, site: &str, target: &str) -> Result<Option<HoldRecord>> {
        self.take_doc("hold", &dkey(&[site, target])).await
    }

    async fn chunk_totals(&self) -> Result<(u64, u64)> {
        let c = self.client().await?;
        let r = c
            .query_one(
                "SELECT count(*), coalesce(sum(len), 0)::bigint FROM chunks WHERE NOT deleting",
                &[],
            )
            .await
            .map_err(pg_err)?;
        Ok((r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
    }

    async fn flush(&self) -> Result<()> {
        Ok(()) // every write above is a committed transaction
    }
}
