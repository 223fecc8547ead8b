//! Trust records on sled (see [`super::trust`]). Key layout:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `tokens` | token hash (hex) | JSON [`TokenRecord`] |
//! | `identities` | site, 0, agent id | JSON [`IdentityRecord`] |
//! | `sealed_keys` | site, 0, epoch (u32 BE), recipient tag (8) | sealed key |
//!
//! Read-modify-write records (token use, renewal, revocation) go through compare-and-swap
//! loops so that a renewal racing a revocation can never undo it.

use super::sled_codec::{decode, encode, storage};
use super::trust::{IdentityRecord, SealedKeyRecord, TokenRecord, TokenUse};
use super::{CatalogError, Result};

fn ident_key(site: &str, agent_id: &str) -> Vec<u8> {
    [site.as_bytes(), agent_id.as_bytes()].join(&0u8)
}

/// The trust trees of a [`super::sled_catalog::SledCatalog`].
pub(super) struct TrustTrees {
    tokens: sled::Tree,
    identities: sled::Tree,
    sealed: sled::Tree,
    admins: sled::Tree,
    accounts: sled::Tree,
}

impl TrustTrees {
    pub(super) fn open(db: &sled::Db) -> Result<Self> {
        Ok(TrustTrees {
            tokens: db.open_tree("tokens").map_err(storage)?,
            identities: db.open_tree("identities").map_err(storage)?,
            sealed: db.open_tree("sealed_keys").map_err(storage)?,
            admins: db.open_tree("admins").map_err(storage)?,
            accounts: db.open_tree("accounts").map_err(storage)?,
        })
    }

    pub(super) fn put_admin(&self, a: &super::trust::AdminRecord) -> Result<()> {
        self.admins
            .insert(a.name.as_bytes(), encode(a))
            .map_err(storage)?;
        Ok(())
    }

    pub(super) fn admins(&self) -> Result<Vec<super::trust::AdminRecord>> {
        self.admins
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(storage)?;
                decode(&k, &v)
            })
            .collect()
    }

    pub(super) fn put_account(&self, a: &super::trust::AccountRecord) -> Result<()> {
        self.accounts
            .insert(a.name.as_bytes(), encode(a))
            .map_err(storage)?;
        Ok(())
    }

    pub(super) fn account(&self, name: &str) -> Result<Option<super::trust::AccountRecord>> {
        self.accounts
            .get(name.as_bytes())
            .map_err(storage)?
            .map(|v| decode(name.as_bytes(), &v))
            .transpose()
    }

    pub(super) fn accounts(&self) -> Result<Vec<super::trust::AccountRecord>> {
        self.accounts
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(storage)?;
                decode(&k, &v)
            })
            .collect()
    }

    pub(super) fn put_token(&self, t: &TokenRecord) -> Result<()> {
        self.tokens
            .insert(t.hash.as_bytes(), encode(t))
            .map_err(storage)?;
        Ok(())
    }

    pub(super) fn consume_token(&self, hash: &str, now_ms: u64, agent: &str) -> Result<TokenUse> {
        loop {
            let Some(old) = self.tokens.get(hash.as_bytes()).map_err(storage)? else {
                return Ok(TokenUse::Unknown);
            };
            let mut rec: TokenRecord = decode(hash.as_bytes(), &old)?;
            if rec.used_unix_ms.is_some() {
                return Ok(TokenUse::AlreadyUsed(rec));
            }
            if now_ms >= rec.expires_unix_ms {
                return Ok(TokenUse::Expired(rec));
            }
            rec.used_unix_ms = Some(now_ms);
            rec.used_by = Some(agent.into());
            let swapped = self
                .tokens
                .compare_and_swap(hash.as_bytes(), Some(old), Some(encode(&rec)))
                .map_err(storage)?;
            if swapped.is_ok() {
                return Ok(TokenUse::Accepted(rec));
            }
        }
    }

    pub(super) fn put_identity(&self, rec: &IdentityRecord) -> Result<()> {
        self.identities
            .insert(ident_key(&rec.site, &rec.agent_id), encode(rec))
            .map_err(storage)?;
        Ok(())
    }

    pub(super) fn identity(&self, site: &str, agent_id: &str) -> Result<Option<IdentityRecord>> {
        let k = ident_key(site, agent_id);
        self.identities
            .get(&k)
            .map_err(storage)?
            .map(|v| decode(&k, &v))
            .transpose()
    }

    pub(super) fn identities(&self) -> Result<Vec<IdentityRecord>> {
        self.identities
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(storage)?;
                decode(&k, &v)
            })
            .collect()
    }

    /// Compare-and-swap loop applying `f` to the identity; `f` returns `None` to abort.
    fn update_identity(
        &self,
        site: &str,
        agent_id: &str,
        f: impl Fn(IdentityRecord) -> Option<IdentityRecord>,
    ) -> Result<Option<IdentityRecord>> {
        let k = ident_key(site, agent_id);
        loop {
            let Some(old) = self.identities.get(&k).map_err(storage)? else {
                return Ok(None);
            };
            let Some(new) = f(decode(&k, &old)?) else {
                return Ok(None);
            };
            let swapped = self
                .identities
                .compare_and_swap(&k, Some(old), Some(encode(&new)))
                .map_err(storage)?;
            if swapped.is_ok() {
                return Ok(Some(new));
            }
        }
    }

    pub(super) fn renew_identity(
        &self,
        site: &str,
        agent_id: &str,
        old_serial: &str,
        (new_serial, new_key): (&str, &str),
        not_after: i64,
    ) -> Result<Option<IdentityRecord>> {
        self.update_identity(site, agent_id, |mut r| {
            if r.revoked_unix_ms.is_some() || r.serial != old_serial {
                return None;
            }
            r.prev_serial = Some(std::mem::replace(&mut r.serial, new_serial.into()));
            r.prev_key_sha256 = std::mem::replace(&mut r.key_sha256, new_key.into());
            r.prev_not_after_unix = r.not_after_unix;
            r.not_after_unix = not_after;
            Some(r)
        })
    }

    pub(super) fn revoke_identity(
        &self,
        site: &str,
        agent_id: &str,
        now_ms: u64,
    ) -> Result<Option<IdentityRecord>> {
        self.update_identity(site, agent_id, |mut r| {
            r.revoked_unix_ms.get_or_insert(now_ms);
            Some(r)
        })
    }

    pub(super) fn put_sealed_key(&self, rec: &SealedKeyRecord) -> Result<bool> {
        for other in self.sealed_keys(&rec.site)? {
            if other.epoch == rec.epoch && other.key_id != rec.key_id {
                return Err(CatalogError::KeyEpochConflict {
                    site: rec.site.clone(),
                    epoch: rec.epoch,
                });
            }
        }
        let k = [
            rec.site.as_bytes(),
            &[&rec.epoch.to_be_bytes()[..], &rec.recipient[..]].concat(),
        ]
        .join(&0u8);
        let swapped = self
            .sealed
            .compare_and_swap(k, None as Option<&[u8]>, Some(rec.blob.as_slice()))
            .map_err(storage)?;
        Ok(swapped.is_ok())
    }

    pub(super) fn sealed_keys(&self, site: &str) -> Result<Vec<SealedKeyRecord>> {
        let prefix = [site.as_bytes(), &[0u8]].concat();
        self.sealed
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv.map_err(storage)?;
                let info = nex_backup_shared::recovery::sealed_info(&v).map_err(|e| {
                    CatalogError::Corrupt {
                        key: String::from_utf8_lossy(&k).into_owned(),
                        reason: e.to_string(),
                    }
                })?;
                Ok(SealedKeyRecord {
                    site: site.into(),
                    epoch: info.epoch,
                    key_id: info.key_id,
                    recipient: info.recipient,
                    blob: v.to_vec(),
                })
            })
            .collect()
    }
}
