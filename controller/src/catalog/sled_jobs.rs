//! Jobs on sled, with an index by start time: a page of jobs (newest first, of the
//! fleet or of one site) and a site's jobs are read from the index's keys instead of by
//! decoding every job. The `job_index` tree holds two families of empty-valued keys:
//!
//! | key | order |
//! |---|---|
//! | `t`, started ms (u64 be), job id | every job by start |
//! | `s`, site, 0, started ms (u64 be), job id | a site's jobs by start |
//!
//! The job record stays the truth: index keys are written before the record and removed
//! after it, and every key read is checked against the record it names, so a crash
//! between the two writes leaves at most a stale key, which readers skip, never a job
//! the index misses. A catalog from before the index is indexed when it is opened
//! (marked done in `meta` under [`BUILT`]).

use super::history::{Cursor, JobFilter};
use super::sled_catalog::SledCatalog;
use super::sled_codec::{decode, encode, sled_err, storage};
use super::{JobRecord, Result};

/// The `meta` key that says every job has its index keys.
const BUILT: &[u8] = b"job_index/v1";

fn time_prefix() -> Vec<u8> {
    vec![b't']
}

fn site_prefix(site: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(site.len() + 2);
    k.push(b's');
    k.extend_from_slice(site.as_bytes());
    k.push(0);
    k
}

fn with_position(mut prefix: Vec<u8>, started_ms: u64, job_id: &str) -> Vec<u8> {
    prefix.extend_from_slice(&started_ms.to_be_bytes());
    prefix.extend_from_slice(job_id.as_bytes());
    prefix
}

/// A job's two index keys.
fn index_keys(j: &JobRecord) -> [Vec<u8>; 2] {
    [
        with_position(time_prefix(), j.started_unix_ms, &j.job_id),
        with_position(site_prefix(&j.site), j.started_unix_ms, &j.job_id),
    ]
}

/// The job id of an index key under `prefix_len` bytes of prefix.
fn job_id_of(k: &[u8], prefix_len: usize) -> Option<&str> {
    std::str::from_utf8(k.get(prefix_len + 8..)?).ok()
}

impl SledCatalog {
    /// Index every job once, for a catalog written before the index existed.
    pub(super) fn ensure_job_index(&self) -> Result<()> {
        if self.meta.contains_key(BUILT).map_err(storage)? {
            return Ok(());
        }
        for kv in self.jobs.iter() {
            let (k, v) = kv.map_err(storage)?;
            let job: JobRecord = decode(&k, &v)?;
            for ik in index_keys(&job) {
                self.job_index.insert(ik, &[]).map_err(storage)?;
            }
        }
        self.meta.insert(BUILT, &[1]).map_err(storage)?;
        self.db.flush().map_err(sled_err)?;
        Ok(())
    }

    pub(super) fn put_job_sync(&self, job: &JobRecord) -> Result<()> {
        self.index_job(job)?;
        self.jobs
            .insert(job.job_id.as_bytes(), encode(job))
            .map_err(storage)?;
        Ok(())
    }

    /// Write `job`'s index keys (before its record is written).
    pub(super) fn index_job(&self, job: &JobRecord) -> Result<()> {
        for ik in index_keys(job) {
            self.job_index.insert(ik, &[]).map_err(storage)?;
        }
        Ok(())
    }

    /// Remove a job and then its index keys.
    pub(super) fn remove_job(&self, job_id: &str) -> Result<bool> {
        let Some(old) = self.jobs.remove(job_id.as_bytes()).map_err(storage)? else {
            return Ok(false);
        };
        if let Ok(job) = decode::<JobRecord>(job_id.as_bytes(), &old) {
            for ik in index_keys(&job) {
                self.job_index.remove(ik).map_err(storage)?;
            }
        }
        Ok(true)
    }

    /// Walk index keys under `prefix`, newest first, strictly before `before`, and
    /// give each current job record to `take` until it returns false.
    fn walk_jobs(
        &self,
        prefix: Vec<u8>,
        before: Option<&Cursor>,
        mut take: impl FnMut(JobRecord) -> bool,
    ) -> Result<()> {
        let plen = prefix.len();
        let upper = match before {
            Some((ms, id)) => with_position(prefix.clone(), *ms, id),
            None => {
                let mut end = prefix.clone();
                end.push(0xff);
                end
            }
        };
        for kv in self.job_index.range(prefix..upper).rev() {
            let (k, _) = kv.map_err(storage)?;
            let Some(id) = job_id_of(&k, plen) else {
                continue;
            };
            let Some(v) = self.jobs.get(id.as_bytes()).map_err(storage)? else {
                continue; // removed after its key was read
            };
            let job: JobRecord = decode(id.as_bytes(), &v)?;
            if !index_keys(&job).iter().any(|ik| ik[..] == k[..]) {
                continue; // a stale key
            }
            if !take(job) {
                break;
            }
        }
        Ok(())
    }

    pub(super) fn jobs_page_sync(
        &self,
        filter: &JobFilter,
        before: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<JobRecord>> {
        let prefix = match &filter.site {
            Some(site) => site_prefix(site),
            None => time_prefix(),
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        if limit == 0 {
            return Ok(out);
        }
        self.walk_jobs(prefix, before, |j| {
            if filter.matches(&j) {
                out.push(j);
            }
            out.len() < limit
        })?;
        Ok(out)
    }

    pub(super) fn site_jobs_sync(&self, site: &str) -> Result<Vec<JobRecord>> {
        let mut out = vec![];
        self.walk_jobs(site_prefix(site), None, |j| {
            out.push(j);
            true
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn job(id: &str, site: &str, at: u64) -> JobRecord {
        crate::catalog::conformance::running_backup(id, site, at)
    }

    /// A catalog written before the index existed is indexed when opened, and a stale
    /// key (its job removed behind the index's back) is skipped.
    #[tokio::test]
    async fn an_old_catalog_is_indexed_on_open_and_stale_keys_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cat = SledCatalog::open(dir.path()).unwrap();
            for (i, site) in ["a", "b", "a"].into_iter().enumerate() {
                cat.put_job(&job(&format!("j{i}"), site, 100 + i as u64))
                    .await
                    .unwrap();
            }
            // As an older version left it: jobs, no index.
            cat.job_index.clear().unwrap();
            cat.meta.remove(BUILT).unwrap();
            cat.db.flush().unwrap();
        }
        let cat = SledCatalog::reopen_when_released(dir.path()).await;
        let ids = |v: Vec<JobRecord>| v.into_iter().map(|j| j.job_id).collect::<Vec<_>>();
        assert_eq!(ids(cat.site_jobs("a").await.unwrap()), ["j2", "j0"]);
        let all = cat.jobs_page(&JobFilter::default(), None, 10).await;
        assert_eq!(ids(all.unwrap()), ["j2", "j1", "j0"]);
        cat.jobs.remove("j1").unwrap();
        let all = cat.jobs_page(&JobFilter::default(), None, 10).await;
        assert_eq!(ids(all.unwrap()), ["j2", "j0"], "the stale key is skipped");
    }
}
