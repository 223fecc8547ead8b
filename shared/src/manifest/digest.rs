//! What a stream's digest covers.
//!
//! A stream is the ordered list of its chunks, and each chunk's id is the HMAC-SHA256 of
//! its plaintext under the site's key, checked when the chunk is opened. So a digest of
//! the chunk list (ids and lengths, in order, and the total length) pins every byte of
//! the stream as firmly as a SHA-256 of the bytes themselves, at no cost per byte: the
//! backup hashes each byte once (for its chunk's id) instead of twice, and the restore
//! checks the list before it fetches anything. Manifests written before this carry a
//! plain SHA-256 of the stream ([`StreamDigest::Plain`]); restores still check those
//! byte by byte.

use sha2::{Digest, Sha256};

use crate::ids::ChunkId;

/// The kind of a stream's `sha256` (format field `StreamEntry.digest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamDigest {
    /// SHA-256 of the plaintext stream (0; manifests of earlier versions).
    Plain = 0,
    /// [`chunk_list_digest`] of the stream's chunk list (1).
    ChunkList = 1,
}

impl TryFrom<u32> for StreamDigest {
    /// The unknown kind, from a newer version.
    type Error = u32;

    fn try_from(n: u32) -> Result<Self, u32> {
        match n {
            0 => Ok(StreamDigest::Plain),
            1 => Ok(StreamDigest::ChunkList),
            n => Err(n),
        }
    }
}

/// SHA-256 of `"nex-backup stream chunk list\0"`, then each chunk's id (32 bytes) and
/// length (u32, little-endian) in order, then the stream's length (u64, little-endian).
pub fn chunk_list_digest(chunks: &[(ChunkId, u32)], length: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"nex-backup stream chunk list\0");
    for (id, len) in chunks {
        h.update(id.0);
        h.update(len.to_le_bytes());
    }
    h.update(length.to_le_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_pins_order_ids_and_lengths() {
        let (a, b) = (ChunkId([1; 32]), ChunkId([2; 32]));
        let base = chunk_list_digest(&[(a, 10), (b, 20)], 30);
        assert_ne!(base, chunk_list_digest(&[(b, 20), (a, 10)], 30), "order");
        assert_ne!(base, chunk_list_digest(&[(a, 10), (a, 20)], 30), "ids");
        assert_ne!(base, chunk_list_digest(&[(a, 11), (b, 19)], 30), "lengths");
        assert_ne!(base, chunk_list_digest(&[(a, 10)], 10), "a chunk dropped");
        assert_eq!(
            hex::encode(chunk_list_digest(&[], 0)),
            hex::encode(Sha256::digest(
                b"nex-backup stream chunk list\0\0\0\0\0\0\0\0\0"
            )),
            "the documented layout"
        );
        assert_eq!(StreamDigest::try_from(1), Ok(StreamDigest::ChunkList));
        assert_eq!(StreamDigest::try_from(7), Err(7));
    }
}
