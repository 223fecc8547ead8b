//! Reading one file of a set's archive from only the chunks that hold it (each chunk
//! verified as always), by the content offset the manifest records.

use std::sync::Arc;

use nex_backup_shared::chunk::ChunkCodec;
use nex_backup_shared::files::FileEntry;
use nex_backup_shared::manifest::StreamEntry;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::error::AgentError;
use crate::restore::feed::ChunkSource;

/// The content of `e` (at most `max` bytes), checked against its SHA-256.
pub async fn read_file<S: ChunkSource>(
    src: &Arc<S>,
    codec: &ChunkCodec,
    s: &StreamEntry,
    e: &FileEntry,
    max: u64,
) -> Result<Vec<u8>, AgentError> {
    if e.size > max {
        return Err(format!("{} is {} bytes, over {max}", e.path, e.size).into());
    }
    let (start, end) = (e.data_offset, e.data_offset + e.size);
    let mut pos = 0u64;
    let mut first = None;
    let mut wanted = vec![];
    for &(id, len) in &s.chunks {
        let next = pos + u64::from(len);
        if next > start && pos < end.max(start + 1) {
            first.get_or_insert(pos);
            wanted.push((id, len));
        }
        pos = next;
    }
    let first = first.unwrap_or(start);
    let (tx, mut rx) = mpsc::channel(4);
    let fetch = tokio::spawn(src.clone().fetch_all(wanted, tx));
    let mut buf = Vec::new();
    while let Some((id, len, blob)) = rx.recv().await {
        let plain = codec
            .decode(&id, &blob, len as usize)
            .map_err(|err| AgentError::from(err.to_string()))?;
        buf.extend_from_slice(&plain);
    }
    fetch
        .await
        .map_err(|err| AgentError::from(format!("fetch task: {err}")))??;
    let from = usize::try_from(start - first).unwrap_or(usize::MAX);
    let content = buf
        .get(from..from + e.size as usize)
        .ok_or_else(|| format!("{}: the archive ends before its content", e.path))?
        .to_vec();
    let sum: [u8; 32] = Sha256::digest(&content).into();
    if Some(sum) != e.sha256 {
        return Err(format!("{}: content does not match its SHA-256", e.path).into());
    }
    Ok(content)
}
