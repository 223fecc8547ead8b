//! [`AlertCatalog`] on sled, in the catalog's database. Trees:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `alert_channels` | name | JSON [`ChannelRecord`] |
//! | `alert_rules` | rule, 0, site | JSON [`RuleRecord`] |
//! | `incidents` | id (u64 be) | JSON [`IncidentRecord`] |
//! | `incident_open` | rule, 0, site, 0, subject | id of the open incident |
//! | `outbox` | id (u64 be) | JSON [`OutboxEntry`] |
//! | `alert_meta` | `summary` | JSON [`SummaryRecord`] |

use async_trait::async_trait;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::Result;
use super::alerts::{
    AlertCatalog, ChannelRecord, IncidentChange, IncidentRecord, OutboxEntry, RuleRecord,
    SummaryRecord,
};
use super::sled_codec::{decode, encode, key, sled_err, storage};

/// See module docs.
#[derive(Clone)]
pub struct SledAlerts {
    db: sled::Db,
    channels: sled::Tree,
    rules: sled::Tree,
    incidents: sled::Tree,
    open: sled::Tree,
    outbox: sled::Tree,
    meta: sled::Tree,
}

impl SledAlerts {
    pub(super) fn open(db: &sled::Db) -> Result<Self> {
        let t = |name: &str| db.open_tree(name).map_err(storage);
        Ok(SledAlerts {
            db: db.clone(),
            channels: t("alert_channels")?,
            rules: t("alert_rules")?,
            incidents: t("incidents")?,
            open: t("incident_open")?,
            outbox: t("outbox")?,
            meta: t("alert_meta")?,
        })
    }

    fn all<T: serde::de::DeserializeOwned>(tree: &sled::Tree) -> Result<Vec<T>> {
        tree.iter()
            .map(|kv| {
                let (k, v) = kv.map_err(storage)?;
                decode(&k, &v)
            })
            .collect()
    }

    fn apply_sync(&self, c: &IncidentChange) -> Result<bool> {
        let i = &c.incident;
        let open_key = key(&[i.rule.as_bytes(), i.site.as_bytes(), i.subject.as_bytes()]);
        let id = i.id.to_be_bytes();
        let r = (&self.incidents, &self.open, &self.outbox).transaction(|(inc, open, out)| {
            let current = open.get(&open_key)?;
            if i.is_open() {
                if current.as_ref().is_some_and(|v| v.as_ref() != id) {
                    return Err(ConflictableTransactionError::Abort(()));
                }
                open.insert(open_key.as_slice(), &id)?;
            } else if current.as_ref().is_some_and(|v| v.as_ref() == id) {
                open.remove(open_key.as_slice())?;
            }
            inc.insert(&id, encode(i))?;
            for n in &c.notices {
                out.insert(&n.id.to_be_bytes(), encode(n))?;
            }
            Ok(())
        });
        match r {
            Ok(()) => Ok(true),
            Err(TransactionError::Abort(())) => Ok(false),
            Err(TransactionError::Storage(e)) => Err(sled_err(e)),
        }
    }
}

#[async_trait]
impl AlertCatalog for SledAlerts {
    async fn put_channel(&self, c: &ChannelRecord) -> Result<()> {
        self.channels
            .insert(c.name.as_bytes(), encode(c))
            .map_err(sled_err)?;
        Ok(())
    }

    async fn channels(&self) -> Result<Vec<ChannelRecord>> {
        Self::all(&self.channels)
    }

    async fn delete_channel(&self, name: &str) -> Result<bool> {
        Ok(self
            .channels
            .remove(name.as_bytes())
            .map_err(sled_err)?
            .is_some())
    }

    async fn put_rule(&self, r: &RuleRecord) -> Result<()> {
        let k = key(&[r.rule.as_bytes(), r.site.as_bytes()]);
        self.rules.insert(k, encode(r)).map_err(sled_err)?;
        Ok(())
    }

    async fn rules(&self) -> Result<Vec<RuleRecord>> {
        Self::all(&self.rules)
    }

    async fn next_id(&self) -> Result<u64> {
        // sled's ids survive restarts and are never handed out twice; 0 means "none".
        Ok(self.db.generate_id().map_err(sled_err)? + 1)
    }

    async fn apply_incident(&self, change: IncidentChange) -> Result<bool> {
        let ok = self.apply_sync(&change)?;
        self.db.flush_async().await.map_err(sled_err)?;
        Ok(ok)
    }

    async fn incidents(&self) -> Result<Vec<IncidentRecord>> {
        Self::all(&self.incidents)
    }

    async fn incident(&self, id: u64) -> Result<Option<IncidentRecord>> {
        let k = id.to_be_bytes();
        self.incidents
            .get(k)
            .map_err(sled_err)?
            .map(|v| decode(&k, &v))
            .transpose()
    }

    async fn enqueue(&self, e: &OutboxEntry) -> Result<()> {
        self.outbox
            .insert(e.id.to_be_bytes(), encode(e))
            .map_err(sled_err)?;
        self.db.flush_async().await.map_err(sled_err)?;
        Ok(())
    }

    async fn outbox(&self) -> Result<Vec<OutboxEntry>> {
        Self::all(&self.outbox)
    }

    async fn put_outbox(&self, e: &OutboxEntry) -> Result<()> {
        // Only an entry still queued is updated: a delivered one stays delivered.
        let k = e.id.to_be_bytes();
        let v = encode(e);
        self.outbox
            .update_and_fetch(k, |old| old.map(|_| v.clone()))
            .map_err(sled_err)?;
        Ok(())
    }

    async fn delivered(&self, id: u64) -> Result<()> {
        self.outbox.remove(id.to_be_bytes()).map_err(sled_err)?;
        self.db.flush_async().await.map_err(sled_err)?;
        Ok(())
    }

    async fn summary(&self) -> Result<Option<SummaryRecord>> {
        self.meta
            .get(b"summary")
            .map_err(sled_err)?
            .map(|v| decode(b"summary", &v))
            .transpose()
    }

    async fn put_summary(&self, s: Option<&SummaryRecord>) -> Result<()> {
        match s {
            Some(s) => self.meta.insert(b"summary", encode(s)).map_err(sled_err)?,
            None => self.meta.remove(b"summary").map_err(sled_err)?,
        };
        self.db.flush_async().await.map_err(sled_err)?;
        Ok(())
    }
}
