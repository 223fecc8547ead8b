//! The sealed-object container shared by chunks and manifests (see `docs/format.md`).
//!
//! ```text
//! offset size field
//!  0      4   magic "NXBK"
//!  4      1   format version (1)
//!  5      1   kind (1 = chunk, 2 = manifest)
//!  6      1   flags (bit 0: body is zstd-compressed before sealing)
//!  7      1   reserved (0)
//!  8      8   key id (public, identifies the key epoch)
//! 16     32   object id (chunk id, or manifest object id)
//! 48     12   AES-GCM nonce (random)
//! 60      4   body length, little endian (ciphertext + 16-byte tag)
//! 64      n   body
//! ```
//! The whole 64-byte header is the AES-GCM associated data, so no header bit can be
//! changed undetected; the clear copies of key id and object id let a reader report a
//! wrong key or a swapped object distinctly from corruption.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

use crate::error::FormatError;
use crate::keys::SiteKeys;

pub const MAGIC: &[u8; 4] = b"NXBK";
pub const FORMAT_VERSION: u8 = 1;
pub const HEADER_LEN: usize = 64;
pub const TAG_LEN: usize = 16;
pub const FLAG_ZSTD: u8 = 1;

/// What a sealed object holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjectKind {
    Chunk = 1,
    Manifest = 2,
    /// The controller's own state copy (`statecopy`).
    ControllerState = 3,
}

/// The parsed clear header of a sealed object. Parsing checks shape only, not authenticity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub flags: u8,
    pub key_id: [u8; 8],
    pub object_id: [u8; 32],
    pub body_len: usize,
}

impl Header {
    /// Parse and check the framing of `blob`: magic, version, declared length.
    pub fn parse(blob: &[u8], what: &str) -> Result<Header, FormatError> {
        if blob.len() < MAGIC.len() || &blob[..4] != MAGIC {
            return Err(FormatError::BadMagic { what: what.into() });
        }
        if blob.len() < HEADER_LEN {
            return Err(FormatError::Truncated {
                what: what.into(),
                actual: blob.len(),
                expected: HEADER_LEN,
            });
        }
        if blob[4] != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: what.into(),
                version: blob[4],
            });
        }
        let body_len = u32::from_le_bytes(blob[60..64].try_into().expect("4 bytes")) as usize;
        let expected = HEADER_LEN + body_len;
        if blob.len() < expected {
            return Err(FormatError::Truncated {
                what: what.into(),
                actual: blob.len(),
                expected,
            });
        }
        if blob.len() > expected || body_len < TAG_LEN {
            return Err(FormatError::invalid(
                what,
                format!("length {} does not match header", blob.len()),
            ));
        }
        Ok(Header {
            kind: blob[5],
            flags: blob[6],
            key_id: blob[8..16].try_into().expect("8 bytes"),
            object_id: blob[16..48].try_into().expect("32 bytes"),
            body_len,
        })
    }
}

/// Seal `body` as an object of `kind` named `object_id`.
pub fn seal(
    keys: &SiteKeys,
    kind: ObjectKind,
    flags: u8,
    object_id: &[u8; 32],
    body: &[u8],
) -> Vec<u8> {
    let nonce: [u8; 12] = rand::random();
    let body_len = (body.len() + TAG_LEN) as u32;
    let mut out = Vec::with_capacity(HEADER_LEN + body_len as usize);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[FORMAT_VERSION, kind as u8, flags, 0]);
    out.extend_from_slice(&keys.key_id);
    out.extend_from_slice(object_id);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body_len.to_le_bytes());
    let cipher = Aes256Gcm::new_from_slice(&keys.enc_key).expect("32-byte key");
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: body,
                aad: &out,
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    out.extend_from_slice(&ct);
    out
}

/// Open a sealed object, checking every property in an order that gives the most
/// precise error: framing, kind, key, name, then authenticity. Returns (flags, body).
pub fn open(
    keys: &SiteKeys,
    kind: ObjectKind,
    expected_id: &[u8; 32],
    blob: &[u8],
    what: &str,
) -> Result<(u8, Vec<u8>), FormatError> {
    let h = Header::parse(blob, what)?;
    if h.kind != kind as u8 {
        return Err(FormatError::invalid(
            what,
            format!("object kind {} where {} was expected", h.kind, kind as u8),
        ));
    }
    if h.key_id != keys.key_id {
        return Err(FormatError::WrongKey {
            what: what.into(),
            found: hex::encode(h.key_id),
            ours: keys.key_id_hex(),
        });
    }
    if &h.object_id != expected_id {
        return Err(FormatError::Swapped {
            what: what.into(),
            found: hex::encode(&h.object_id[..6]),
        });
    }
    let cipher = Aes256Gcm::new_from_slice(&keys.enc_key).expect("32-byte key");
    let nonce = Nonce::from_slice(&blob[48..60]);
    let body = cipher
        .decrypt(
            nonce,
            Payload {
                msg: &blob[HEADER_LEN..],
                aad: &blob[..HEADER_LEN],
            },
        )
        .map_err(|_| FormatError::Corrupted { what: what.into() })?;
    Ok((h.flags, body))
}
