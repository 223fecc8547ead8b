//! `PutChunks`: an agent's sealed chunks, checked one by one and stored in groups.
//!
//! Each chunk is checked as it arrives (its site, its id, its size, a sealed header that
//! names it, a key the site owns) and skipped if the catalog already has it. The rest are
//! written to the blob store a group at a time ([`BlobStore::put_many`]: on the embedded
//! store one filesystem sync for the group instead of two fsyncs per chunk), and each is
//! recorded in the catalog only after the whole group is durable: acknowledged means
//! durable. A group is at most [`GROUP_CHUNKS`] chunks or [`GROUP_BYTES`] bytes, so one
//! upload holds a bounded amount in memory however long its stream is.
//!
//! [`BlobStore::put_many`]: crate::store::BlobStore::put_many

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use nex_backup_shared::chunk::MAX_CHUNK_LEN;
use nex_backup_shared::identity::AgentIdentity;
use nex_backup_shared::ids::ChunkId;
use nex_backup_shared::pb;
use nex_backup_shared::seal::{HEADER_LEN, Header, ObjectKind, TAG_LEN};
use tokio_stream::StreamExt;
use tonic::{Status, Streaming};

use super::agent::AgentApi;
use super::{catalog_status, chunk_ids, now_ms, parse_site, store_status};
use crate::service::auth::require_site;
use crate::store::chunk_key;

/// Most chunks written to the store together.
const GROUP_CHUNKS: usize = 64;
/// A group is written once it holds this many bytes (it may exceed it by one chunk).
const GROUP_BYTES: usize = 8 * 1024 * 1024;

/// A checked chunk that the catalog does not have yet.
struct Admitted {
    site: String,
    snapshot_id: String,
    id: ChunkId,
    key: String,
    blob: Bytes,
}

impl AgentApi {
    /// Store an upload stream's chunks; the answer counts what was new.
    pub(super) async fn store_chunks(
        &self,
        who: &AgentIdentity,
        mut inbound: Streaming<pb::PutChunkRequest>,
    ) -> Result<pb::PutChunksResponse, Status> {
        let keys = super::keys::site_key_ids(&self.state, &who.site).await?;
        self.state.reserve.check(&*self.state.store).await?;
        let mut resp = pb::PutChunksResponse::default();
        let (mut group, mut bytes) = (Vec::new(), 0);
        loop {
            let next = inbound.next().await.transpose()?;
            let end = next.is_none();
            if let Some(req) = next {
                match self.admit(who, &keys, req).await? {
                    Some(a) => {
                        bytes += a.blob.len();
                        group.push(a);
                    }
                    None => self.duplicate(&mut resp),
                }
            }
            if !group.is_empty() && (end || group.len() >= GROUP_CHUNKS || bytes >= GROUP_BYTES) {
                self.store_group(std::mem::take(&mut group), &mut resp)
                    .await?;
                bytes = 0;
            }
            if end {
                break;
            }
        }
        if resp.stored > 0 {
            super::durable(&self.state).await?;
        }
        Ok(resp)
    }

    fn duplicate(&self, resp: &mut pb::PutChunksResponse) {
        let stats = &self.state.hub.stats;
        stats
            .duplicate_chunks_received
            .fetch_add(1, Ordering::Relaxed);
        resp.already_present += 1;
    }

    /// Check one chunk; `None` if the catalog has it already.
    async fn admit(
        &self,
        who: &AgentIdentity,
        keys: &HashSet<[u8; 8]>,
        req: pb::PutChunkRequest,
    ) -> Result<Option<Admitted>, Status> {
        parse_site(&req.site)?;
        require_site(who, &req.site)?;
        let id = chunk_ids(std::slice::from_ref(&req.id), 1)?[0];
        if req.blob.len() > MAX_CHUNK_LEN + HEADER_LEN + TAG_LEN {
            return Err(Status::invalid_argument(format!(
                "chunk {}: blob of {} bytes is too large",
                id.short(),
                req.blob.len()
            )));
        }
        let what = format!("chunk {}", id.short());
        let h = Header::parse(&req.blob, &what).map_err(super::bad_input)?;
        if h.kind != ObjectKind::Chunk as u8 || h.object_id != id.0 {
            return Err(Status::invalid_argument(format!(
                "{what}: blob header does not name this chunk"
            )));
        }
        super::keys::check_key_id(keys, who, &what, h.key_id)?;
        if !self
            .state
            .hub
            .pin_upload(&req.site, &id, now_ms() + self.state.gc_grace_ms)
        {
            return Err(Status::unavailable(format!(
                "{what}: garbage collection is deleting an old copy of it; send it again"
            )));
        }
        let known = self.state.catalog.chunk_len(&req.site, &id).await;
        if known.map_err(catalog_status)?.is_some() {
            return Ok(None);
        }
        Ok(Some(Admitted {
            key: chunk_key(&req.site, &id),
            site: req.site,
            snapshot_id: req.snapshot_id,
            id,
            blob: Bytes::from(req.blob),
        }))
    }

    /// Write a group durably, then record each of its chunks.
    async fn store_group(
        &self,
        group: Vec<Admitted>,
        resp: &mut pb::PutChunksResponse,
    ) -> Result<(), Status> {
        let items = group.iter().map(|a| (a.key.clone(), a.blob.clone()));
        let wrote = (self.state.store.put_many(items.collect()).await).map_err(store_status)?;
        for (a, wrote) in group.into_iter().zip(wrote) {
            match self.record(a, wrote).await? {
                Some(len) => {
                    resp.stored += 1;
                    resp.bytes_stored += len;
                }
                None => self.duplicate(resp),
            }
        }
        Ok(())
    }

    /// Record a stored chunk; `None` if another upload recorded it first.
    async fn record(&self, a: Admitted, wrote: bool) -> Result<Option<u64>, Status> {
        // The checksum is of what the store holds: when another upload of the same chunk
        // (sealed with another nonce) won the write, that one's bytes.
        let (len, sha256) = match wrote {
            true => (a.blob.len(), sha256_of(&a.blob)),
            false => match self.state.store.get(&a.key).await.map_err(store_status)? {
                Some(stored) => (stored.len(), sha256_of(&stored)),
                None => {
                    return Err(Status::unavailable(format!(
                        "chunk {}: stored blob vanished; send it again",
                        a.id.short()
                    )));
                }
            },
        };
        // Two uploads of the same chunk may race past the check in `admit`; only the one
        // that records it counts as new.
        let cat = &self.state.catalog;
        let recorded = cat.record_chunk(&a.site, &a.id, len as u32, &sha256).await;
        if !recorded.map_err(catalog_status)? {
            return Ok(None);
        }
        let hub = &self.state.hub;
        hub.stats.chunks_received.fetch_add(1, Ordering::Relaxed);
        if !a.snapshot_id.is_empty() {
            hub.add_upload_bytes(&a.site, &a.snapshot_id, len as u64);
        }
        Ok(Some(len as u64))
    }
}

/// SHA-256 of a stored blob, recorded with its chunk and checked by `verify`.
fn sha256_of(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}
