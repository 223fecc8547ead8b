//! Placing objects in a copy: copied once, and under S3 Object Lock, written locked and
//! kept locked while a kept snapshot needs them.
//!
//! Each pass sets two times from its start: `needed` (now + the lock period), the least
//! every object of a kept snapshot must stay locked until, and `until` (a quarter of a
//! period later), what a PUT or an extension sets. Extending only below `needed` to
//! `until` spaces a chunk's extensions a quarter period apart, however many snapshots
//! share it, while every kept snapshot stays locked at least a full period ahead.

use std::collections::HashMap;

use bytes::Bytes;
use futures::StreamExt;
use nex_backup_shared::ids::ChunkId;

use crate::state::State;
use crate::store::objectlock::ObjectLock;
use crate::store::{BlobStore, chunk_key};

/// Chunk requests one copy keeps in flight.
const IN_FLIGHT: usize = 8;

/// The lock times of one pass over one destination.
pub struct LockPass<'a> {
    pub client: &'a ObjectLock,
    pub needed: u64,
    pub until: u64,
}

impl<'a> LockPass<'a> {
    pub fn new(client: &'a ObjectLock, now_ms: u64) -> Self {
        let period = u64::try_from(client.period.as_millis()).unwrap_or(u64::MAX / 4);
        LockPass {
            client,
            needed: now_ms.saturating_add(period),
            until: now_ms.saturating_add(period).saturating_add(period / 4),
        }
    }
}

/// One destination's store and, under Object Lock, this pass's lock times.
pub struct Placer<'a> {
    pub state: &'a State,
    pub dest: &'a dyn BlobStore,
    pub lock: Option<LockPass<'a>>,
}

impl Placer<'_> {
    /// Write `key` (locked when the copy is).
    pub async fn put(&self, key: &str, data: Bytes) -> anyhow::Result<()> {
        match &self.lock {
            Some(l) => l.client.put(key, data, l.until).await?,
            None => {
                self.dest.put(key, data).await?;
            }
        }
        Ok(())
    }

    /// Copy `key` from the primary unless the copy holds it; when it does and its lock
    /// (`locked_until`, as far as the copy's indexes tell) ends before `needed`, extend it.
    pub async fn place(&self, key: &str, locked_until: u64) -> anyhow::Result<()> {
        if self.dest.exists(key).await? {
            if let Some(l) = &self.lock
                && locked_until < l.needed
            {
                l.client.extend(key, l.until).await?;
            }
            return Ok(());
        }
        let data = self
            .state
            .store
            .get(key)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{key} is missing from the primary store"))?;
        self.put(key, data).await
    }

    async fn place_owned(&self, key: String, locked_until: u64) -> anyhow::Result<()> {
        self.place(&key, locked_until).await
    }

    /// Place every chunk of `chunks`, a few at a time, and record their new locks.
    pub async fn place_chunks(
        &self,
        site: &str,
        chunks: &[ChunkId],
        locks: &mut HashMap<ChunkId, u64>,
    ) -> anyhow::Result<()> {
        let work: Vec<(String, u64)> = chunks
            .iter()
            .map(|c| (chunk_key(site, c), locks.get(c).copied().unwrap_or(0)))
            .collect();
        let mut results = futures::stream::iter(work)
            .map(|(key, known)| self.place_owned(key, known))
            .buffer_unordered(IN_FLIGHT);
        while let Some(r) = results.next().await {
            r?;
        }
        if let Some(l) = &self.lock {
            for c in chunks {
                let e = locks.entry(*c).or_default();
                *e = (*e).max(l.until);
            }
        }
        Ok(())
    }
}
