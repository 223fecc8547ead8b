//! Checking one stored object against what the controller recorded when it stored it,
//! and setting a bad one aside so the next backup can store it again.

use nex_backup_shared::ids::ChunkId;
use nex_backup_shared::seal::{Header, ObjectKind};
use sha2::{Digest, Sha256};

use crate::catalog::integrity::{BadObject, ChunkEntry};
use crate::state::State;
use crate::store::{StoreError, chunk_key, manifest_key};

/// What checking a chunk found: the bytes read, and the problem if any.
pub struct Checked {
    pub bytes: u64,
    pub bad: Option<BadObject>,
}

fn bad(key: &str, id: Option<&ChunkId>, problem: String) -> Option<BadObject> {
    Some(BadObject {
        key: key.into(),
        problem,
        chunk: id.map(ChunkId::to_hex),
    })
}

/// Re-read a chunk and check it against its record: present, the recorded size, the
/// recorded SHA-256 (or, for records from before checksums, a header naming this chunk).
/// A store that cannot be read is an error, not a damaged object.
pub async fn chunk(state: &State, site: &str, e: &ChunkEntry) -> Result<Checked, StoreError> {
    let key = chunk_key(site, &e.id);
    let Some(blob) = state.store.get(&key).await? else {
        return Ok(Checked {
            bytes: 0,
            bad: bad(&key, Some(&e.id), "missing from the store".into()),
        });
    };
    let bytes = blob.len() as u64;
    let problem = if blob.len() != e.stored_len as usize {
        Some(format!(
            "{} bytes, but {} were stored",
            blob.len(),
            e.stored_len
        ))
    } else if let Some(sum) = e.sha256 {
        let actual: [u8; 32] = Sha256::digest(&blob).into();
        (actual != sum).then(|| {
            format!(
                "checksum mismatch: SHA-256 {} but {} was recorded when it was stored",
                &hex::encode(actual)[..16],
                &hex::encode(sum)[..16]
            )
        })
    } else {
        match Header::parse(&blob, "chunk") {
            Ok(h) if h.kind == ObjectKind::Chunk as u8 && h.object_id == e.id.0 => None,
            Ok(_) => Some("header names another object".into()),
            Err(err) => Some(format!("bad header: {err}")),
        }
    };
    Ok(Checked {
        bytes,
        bad: problem.and_then(|p| bad(&key, Some(&e.id), p)),
    })
}

/// The stored manifest of a snapshot against the catalog's copy. A missing or different
/// store copy is replaced by the catalog's (kept aside first): the catalog's copy is the
/// one the commit checked. Returns what was wrong, if anything, and whether it was repaired.
pub async fn manifest(
    state: &State,
    site: &str,
    snapshot: &str,
) -> Result<Option<(BadObject, bool)>, anyhow::Error> {
    let key = manifest_key(site, snapshot);
    let Some(ours) = state.catalog.manifest(site, snapshot).await? else {
        return Ok(None); // deleted meanwhile
    };
    let stored = state.store.get(&key).await?;
    let problem = match &stored {
        None => "missing from the store",
        Some(b) if b[..] != ours[..] => "differs from the catalog's copy",
        Some(_) => return Ok(None),
    };
    if stored.is_some() {
        set_aside(state, site, &key).await?;
    }
    let repaired = state.store.put(&key, ours.into()).await?;
    Ok(Some((
        BadObject {
            key,
            problem: problem.into(),
            chunk: None,
        },
        repaired,
    )))
}

/// Move a bad blob out of the way (`quarantine/<site>/…`), so the write-once store can
/// take a good copy under its key.
pub async fn set_aside(state: &State, site: &str, key: &str) -> Result<(), StoreError> {
    if let Some(b) = state.store.get(key).await? {
        let name = key.rsplit('/').next().unwrap_or("object");
        let aside = format!(
            "quarantine/{site}/{name}.{}",
            nex_backup_shared::clock::now_ms()
        );
        state.store.put(&aside, b).await?;
        state.store.delete(key).await?;
    }
    Ok(())
}

/// A chunk that failed: set its blob aside and forget its record, so the agent's next
/// backup finds it missing and uploads it again (its id is its content's, so the
/// snapshots that need it become whole again).
pub async fn release_chunk(state: &State, site: &str, id: &ChunkId) -> anyhow::Result<()> {
    set_aside(state, site, &chunk_key(site, id)).await?;
    state.integrity.forget_chunk(site, id).await?;
    Ok(())
}
