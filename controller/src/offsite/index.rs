//! The copy index, `copyindex/<site>/<snapshot>` beside each copied manifest: what the
//! snapshot needs in the copy, so the copy keeps its own retention after the primary
//! has rotated the snapshot away.
//!
//! Text, one item a line: the target; then `lock-until <ms>` when the copy is under S3
//! Object Lock (the time every object the snapshot needs is locked until, at least);
//! `created <ms>`, the snapshot's creation time as the primary recorded it (ids name
//! only the second, so two snapshots of one second are ordered by it); then the hex id
//! of each chunk. Indexes written before locks existed have no `lock-until` line and
//! read as never locked; those without `created` are ordered by their id's second.

use bytes::Bytes;
use nex_backup_shared::ids::ChunkId;

use crate::store::BlobStore;

/// One snapshot's index.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Index {
    pub target: String,
    /// Ms since the epoch; 0 when not locked.
    pub lock_until: u64,
    /// Ms since the epoch; 0 when not recorded.
    pub created: u64,
    pub chunks: Vec<ChunkId>,
}

pub fn key(site: &str, id: &str) -> String {
    format!("copyindex/{site}/{id}")
}

impl Index {
    pub fn parse(text: &str) -> Index {
        let mut lines = text.lines();
        let target = lines.next().unwrap_or_default().to_string();
        let mut ix = Index {
            target,
            ..Index::default()
        };
        for l in lines {
            if let Some(ms) = l.strip_prefix("lock-until ") {
                ix.lock_until = ms.trim().parse().unwrap_or(0);
            } else if let Some(ms) = l.strip_prefix("created ") {
                ix.created = ms.trim().parse().unwrap_or(0);
            } else if let Ok(id) = ChunkId::from_hex(l) {
                ix.chunks.push(id);
            }
        }
        ix
    }

    pub fn encode(&self) -> Bytes {
        let mut out = format!("{}\n", self.target);
        if self.lock_until > 0 {
            out.push_str(&format!("lock-until {}\n", self.lock_until));
        }
        if self.created > 0 {
            out.push_str(&format!("created {}\n", self.created));
        }
        for c in &self.chunks {
            out.push_str(&c.to_hex());
            out.push('\n');
        }
        Bytes::from(out)
    }
}

/// The index of a copied snapshot, if the copy holds one.
pub async fn read(dest: &dyn BlobStore, site: &str, id: &str) -> anyhow::Result<Option<Index>> {
    let Some(b) = dest.get(&key(site, id)).await? else {
        return Ok(None);
    };
    Ok(Some(Index::parse(&String::from_utf8_lossy(&b))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_reads_back_and_an_old_one_reads_as_unlocked() {
        let ix = Index {
            target: "pg:main".into(),
            lock_until: 1_767_574_800_000,
            created: 1_767_574_700_123,
            chunks: vec![ChunkId::from_hex(&"ab".repeat(32)).unwrap()],
        };
        assert_eq!(Index::parse(&String::from_utf8_lossy(&ix.encode())), ix);
        let old = format!("pg:main\n{}\n", "ab".repeat(32));
        let read = Index::parse(&old);
        assert_eq!((read.lock_until, read.created), (0, 0));
        assert_eq!(read.chunks, ix.chunks);
    }
}
