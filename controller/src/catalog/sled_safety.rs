//! Audit entries and anomaly holds on sled: `audit` keyed by `unix_ms (be) \0 random`,
//! `holds` keyed by `site \0 target`.

use super::Result;
use super::safety::{AuditEntry, HoldRecord};
use super::sled_catalog::SledCatalog;
use super::sled_codec::{decode, encode, key, storage};

impl SledCatalog {
    pub(super) fn put_audit_sync(&self, e: &AuditEntry) -> Result<()> {
        let mut k = e.unix_ms.to_be_bytes().to_vec();
        k.push(0);
        k.extend_from_slice(&rand::random::<u64>().to_be_bytes());
        self.audit.insert(k, encode(e)).map_err(storage)?;
        Ok(())
    }

    /// Newest first from the end of the range, so memory stays within `limit`.
    pub(super) fn audit_sync(
        &self,
        site: Option<&str>,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        let mut out = std::collections::VecDeque::new();
        for kv in self.audit.range(since_ms.to_be_bytes().to_vec()..).rev() {
            let (k, v) = kv.map_err(storage)?;
            let e: AuditEntry = decode(&k, &v)?;
            if site.is_none_or(|s| s == e.site) {
                out.push_front(e);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out.into())
    }

    pub(super) fn put_hold_sync(&self, h: &HoldRecord) -> Result<()> {
        let k = key(&[h.site.as_bytes(), h.target.as_bytes()]);
        self.holds.insert(k, encode(h)).map_err(storage)?;
        Ok(())
    }

    pub(super) fn holds_sync(&self) -> Result<Vec<HoldRecord>> {
        self.holds
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(storage)?;
                decode(&k, &v)
            })
            .collect()
    }

    pub(super) fn delete_hold_sync(&self, site: &str, target: &str) -> Result<Option<HoldRecord>> {
        let k = key(&[site.as_bytes(), target.as_bytes()]);
        self.holds
            .remove(&k)
            .map_err(storage)?
            .map(|v| decode(&k, &v))
            .transpose()
    }
}
