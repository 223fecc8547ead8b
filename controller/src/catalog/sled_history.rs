//! History retention on sled: the rule of [`super::history`] over the job and RPO
//! event trees.

use super::history::{Forgotten, forgettable_events, forgettable_jobs};
use super::sled_catalog::SledCatalog;
use super::sled_codec::{key, storage};
use super::{JobRecord, Result};

impl SledCatalog {
    pub(super) fn forget_history_sync(&self, before_ms: u64) -> Result<Forgotten> {
        let jobs: Vec<JobRecord> = self
            .jobs
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(storage)?;
                super::sled_codec::decode(&k, &v)
            })
            .collect::<Result<_>>()?;
        let exists = |site: &str, snap: &str| {
            self.snapshot_target
                .contains_key(key(&[site.as_bytes(), snap.as_bytes()]))
                .unwrap_or(true) // unsure: keep the job
        };
        let mut out = Forgotten::default();
        for id in forgettable_jobs(&jobs, exists, before_ms) {
            if self.remove_job(id)? {
                out.jobs += 1;
            }
        }
        let events = self.rpo_events_sync(None)?;
        for e in forgettable_events(&events, before_ms) {
            let k = key(&[
                e.site.as_bytes(),
                e.target.as_bytes(),
                &e.at_unix_ms.to_be_bytes(),
            ]);
            self.rpo_events.remove(k).map_err(storage)?;
            out.rpo_events += 1;
        }
        Ok(out)
    }
}
