//! Policies, site settings, schedule state and RPO events on sled.

use super::sled_catalog::SledCatalog;
use super::sled_codec::{decode, encode, key, storage};
use super::{PolicyRecord, Result, ScheduleRecord, SitePolicyRecord};

impl SledCatalog {
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

    pub(super) fn claim_schedule_sync(
        &self,
        expected: Option<&ScheduleRecord>,
        new: &ScheduleRecord,
    ) -> Result<bool> {
        let k = key(&[new.site.as_bytes(), new.target.as_bytes()]);
        loop {
            let old = self.schedules.get(&k).map_err(storage)?;
            let current: Option<ScheduleRecord> =
                old.as_ref().map(|v| decode(&k, v)).transpose()?;
            if current.as_ref() != expected {
                return Ok(false);
            }
            let swapped = self
                .schedules
                .compare_and_swap(&k, old, Some(encode(new)))
                .map_err(storage)?;
            if swapped.is_ok() {
                return Ok(true);
            }
        }
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
