//! Pages and history retention on PostgreSQL: keyset pages over indexes, and the
//! retention rule of [`crate::catalog::history`] as two statements.

use super::{PgCatalog, Result, from_json, pg_err};
use crate::catalog::history::{Cursor, Forgotten, JobFilter};
use crate::catalog::{JobKind, JobRecord, SnapshotRecord};

impl PgCatalog {
    pub(super) async fn jobs_page_sql(
        &self,
        f: &JobFilter,
        before: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<JobRecord>> {
        let c = self.client().await?;
        let (ms, id) = before.map_or((None, ""), |(ms, id)| (Some(*ms as i64), id.as_str()));
        let rows = c
            .query(
                "SELECT k, rec FROM docs WHERE kind = 'job'
                   AND ($1::text IS NULL OR site = $1)
                   AND ($2::text IS NULL OR rec->>'target' = $2)
                   AND (NOT $3 OR rec->>'state' = 'failed')
                   AND ($4::bigint IS NULL
                        OR ((rec->>'started_unix_ms')::bigint, k) < ($4, $5::text))
                 ORDER BY (rec->>'started_unix_ms')::bigint DESC, k DESC
                 LIMIT $6",
                &[
                    &f.site,
                    &f.target,
                    &f.failed_only,
                    &ms,
                    &id,
                    &(limit as i64),
                ],
            )
            .await
            .map_err(pg_err)?;
        rows.into_iter()
            .map(|r| from_json(r.get::<_, &str>(0), r.get(1)))
            .collect()
    }

    pub(super) async fn jobs_of_snapshots_sql(
        &self,
        snapshots: &[(String, String)],
    ) -> Result<Vec<JobRecord>> {
        let c = self.client().await?;
        let (sites, ids): (Vec<&str>, Vec<&str>) = snapshots
            .iter()
            .map(|(s, id)| (s.as_str(), id.as_str()))
            .unzip();
        let rows = c
            .query(
                "SELECT d.k, d.rec FROM unnest($1::text[], $2::text[]) AS w(site, snap)
                 JOIN docs d ON d.kind = 'job' AND d.site = w.site
                   AND d.rec->>'snapshot_id' = w.snap",
                &[&sites, &ids],
            )
            .await
            .map_err(pg_err)?;
        rows.into_iter()
            .map(|r| from_json(r.get::<_, &str>(0), r.get(1)))
            .collect()
    }

    pub(super) async fn newest_jobs_sql(&self, kind: JobKind) -> Result<Vec<JobRecord>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT DISTINCT ON (site, rec->>'target') k, rec FROM docs
                 WHERE kind = 'job' AND rec->>'kind' = $1
                 ORDER BY site, rec->>'target', (rec->>'started_unix_ms')::bigint DESC, k DESC",
                &[&kind.as_str()],
            )
            .await
            .map_err(pg_err)?;
        rows.into_iter()
            .map(|r| from_json(r.get::<_, &str>(0), r.get(1)))
            .collect()
    }

    pub(super) async fn snapshots_page_sql(
        &self,
        site: Option<&str>,
        target: Option<&str>,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<SnapshotRecord>> {
        let c = self.client().await?;
        let (ms, id) = after.map_or((None, ""), |(ms, id)| (Some(*ms as i64), id.as_str()));
        let rows = c
            .query(
                "SELECT snapshot_id, rec FROM snapshots
                 WHERE ($1::text IS NULL OR site = $1) AND ($2::text IS NULL OR target = $2)
                   AND ($3::bigint IS NULL OR (created, snapshot_id) > ($3, $4::text))
                 ORDER BY created, snapshot_id LIMIT $5",
                &[&site, &target, &ms, &id, &(limit as i64)],
            )
            .await
            .map_err(pg_err)?;
        rows.into_iter()
            .map(|r| from_json(r.get::<_, &str>(0), r.get(1)))
            .collect()
    }

    pub(super) async fn forget_history_sql(&self, before_ms: u64) -> Result<Forgotten> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let before = before_ms as i64;
        let jobs = tx
            .execute(
                "WITH newest AS (
                   SELECT DISTINCT ON (site, rec->>'target') k FROM docs WHERE kind = 'job'
                   ORDER BY site, rec->>'target', (rec->>'started_unix_ms')::bigint DESC, k DESC)
                 DELETE FROM docs d
                 WHERE d.kind = 'job' AND (d.rec->>'started_unix_ms')::bigint < $1
                   AND d.rec->>'state' <> 'running'
                   AND d.k NOT IN (SELECT k FROM newest)
                   AND NOT EXISTS (SELECT 1 FROM snapshots s
                                   WHERE s.site = d.site AND s.snapshot_id = d.rec->>'snapshot_id')",
                &[&before],
            )
            .await
            .map_err(pg_err)?;
        let rpo_events = tx
            .execute(
                "DELETE FROM rpo_events e WHERE e.at < $1
                   AND EXISTS (SELECT 1 FROM rpo_events n
                               WHERE n.site = e.site AND n.target = e.target
                                 AND n.at > e.at AND n.at < $1)",
                &[&before],
            )
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(Forgotten { jobs, rpo_events })
    }
}
