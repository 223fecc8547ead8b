//! Keys. A site has one 32-byte master key held by its agent; every working key derives
//! from it with HKDF-SHA256 so that one secret is all a restore needs.
//!
//! - `id key`: keys the HMAC-SHA256 that names chunks (controller can dedup, cannot guess).
//! - `enc key`: AES-256-GCM key sealing chunks and manifests.
//! - `key id`: 8 public bytes identifying the key epoch, written into every sealed header
//!   so that a wrong key is told apart from corruption.

use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ids::ChunkId;

const HKDF_SALT: &[u8] = b"nex-backup/v1/site-key";

/// The site master key. Never logged: its `Debug` is redacted.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    pub fn generate() -> Self {
        MasterKey(rand::random())
    }

    pub fn from_bytes(b: [u8; 32]) -> Self {
        MasterKey(b)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Derive the working keys.
    pub fn derive(&self) -> SiteKeys {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), &self.0);
        let mut id_key = [0u8; 32];
        let mut enc_key = [0u8; 32];
        let mut key_id = [0u8; 8];
        // expand() only fails for outputs longer than 255*32 bytes.
        hk.expand(b"chunk-id", &mut id_key).expect("hkdf length");
        hk.expand(b"encryption", &mut enc_key).expect("hkdf length");
        hk.expand(b"key-id", &mut key_id).expect("hkdf length");
        SiteKeys {
            id_key,
            enc_key,
            key_id,
        }
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Working keys derived from a [`MasterKey`].
#[derive(Clone)]
pub struct SiteKeys {
    id_key: [u8; 32],
    pub(crate) enc_key: [u8; 32],
    pub(crate) key_id: [u8; 8],
}

impl SiteKeys {
    /// The chunk id of a plaintext: HMAC-SHA256(id key, plaintext).
    pub fn chunk_id(&self, plaintext: &[u8]) -> ChunkId {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.id_key).expect("any key length");
        mac.update(plaintext);
        ChunkId(mac.finalize().into_bytes().into())
    }

    /// Public key identifier written into every sealed header.
    pub fn key_id(&self) -> [u8; 8] {
        self.key_id
    }

    /// Public key identifier, shown in errors to tell key epochs apart.
    pub fn key_id_hex(&self) -> String {
        hex::encode(self.key_id)
    }
}

impl fmt::Debug for SiteKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SiteKeys(key id {})", self.key_id_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_deterministic_and_separated() {
        let mk = MasterKey::from_bytes([7; 32]);
        let a = mk.derive();
        let b = mk.derive();
        assert_eq!(a.chunk_id(b"x"), b.chunk_id(b"x"));
        assert_ne!(a.id_key, a.enc_key);
        let other = MasterKey::from_bytes([8; 32]).derive();
        assert_ne!(a.chunk_id(b"x"), other.chunk_id(b"x"));
        assert_ne!(a.key_id, other.key_id);
        assert!(!format!("{mk:?}").contains('7'));
    }
}
